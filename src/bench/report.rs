//! `pik bench report`: records from any number of results files (hosts), grouped by workload
//! (target, profile, source digest, config digest — records of different workloads are never
//! compared), each host × scenario reduced to its median and min–max, and ratios against a
//! baseline scenario (on each host) or a baseline host (per scenario). Rendered as a terminal
//! table, Markdown or JSON; [`super::chart`] draws the same numbers.

use super::record::{Host, Record, Workload};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The number a report compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Wall time, as a user waits for it.
    Wall,
    /// User + system CPU of the process tree.
    Cpu,
    /// make of the image, modules and DTBs alone.
    Make,
}

impl Metric {
    /// The metric's value in a record, seconds (None when the record has none).
    pub fn of(self, r: &Record) -> Option<f64> {
        match self {
            Metric::Wall => Some(r.wall_s),
            Metric::Cpu => Some(r.cpu.user_s + r.cpu.sys_s),
            Metric::Make => r.make_s,
        }
    }

    /// How the metric is named in tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Wall => "wall s",
            Metric::Cpu => "CPU s (user+sys)",
            Metric::Make => "make s",
        }
    }
}

/// What ratios are taken against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// This scenario on the same host.
    Scenario(String),
    /// The same scenario on this host.
    Host(String),
}

impl Baseline {
    /// `host:LABEL` is a host, anything else a scenario.
    pub fn parse(s: &str) -> Baseline {
        match s.strip_prefix("host:") {
            Some(h) => Baseline::Host(h.to_string()),
            None => Baseline::Scenario(s.to_string()),
        }
    }

    /// The ratio column's heading.
    fn heading(&self) -> String {
        match self {
            Baseline::Scenario(s) => format!("× {s}"),
            Baseline::Host(h) => format!("× host {h}"),
        }
    }
}

/// Median and range of one host × scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Runs.
    pub n: usize,
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// The median and range of `v`; None when empty.
pub fn stats(v: &[f64]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Stats {
        n,
        median,
        min: s[0],
        max: s[n - 1],
    })
}

/// One line of a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The host's label.
    pub host: String,
    /// The scenario.
    pub scenario: String,
    /// Its numbers.
    pub stats: Stats,
    /// Its median over the baseline's; None without a baseline or a baseline measurement.
    pub ratio: Option<f64>,
}

/// The rows of one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// What was built.
    pub workload: Workload,
    /// Hosts in the order the files named them.
    pub hosts: Vec<String>,
    /// Scenarios in the usual order.
    pub scenarios: Vec<String>,
    /// Host by host, scenario by scenario.
    pub rows: Vec<Row>,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What is compared.
    pub metric: Metric,
    /// What ratios are taken against.
    pub baseline: Option<Baseline>,
    /// One per workload.
    pub groups: Vec<Group>,
    /// Each host's fingerprint (from its latest record).
    pub hosts: BTreeMap<String, Host>,
    /// What a reader must know: workloads kept apart, baselines missing.
    pub notes: Vec<String>,
}

/// Scenarios in the order tables and charts show them; others follow by name.
const ORDER: &[&str] = &[
    "plain",
    "cold",
    "warm",
    "memo",
    "edit-set",
    "edit-patch",
    "kbuild-edit-set",
    "kbuild-edit-patch",
    "ccache-cold",
    "ccache-warm",
    "dist",
];

fn scenario_rank(s: &str) -> (usize, String) {
    (
        ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len()),
        s.to_string(),
    )
}

/// The report of `records` for `metric`, ratios against `baseline` (default: `plain` when
/// some record has it).
pub fn build(records: &[Record], metric: Metric, baseline: Option<Baseline>) -> Report {
    let baseline = baseline.or_else(|| {
        records
            .iter()
            .any(|r| r.scenario == "plain")
            .then(|| Baseline::Scenario("plain".into()))
    });
    let mut host_order: Vec<String> = Vec::new();
    let mut hosts = BTreeMap::new();
    // Workloads in the order they first appear.
    let mut workloads: Vec<Workload> = Vec::new();
    let mut values: BTreeMap<(usize, String, String), Vec<f64>> = BTreeMap::new();
    for r in records {
        if !host_order.contains(&r.label) {
            host_order.push(r.label.clone());
        }
        hosts.insert(r.label.clone(), r.host.clone());
        let w = match workloads.iter().position(|w| *w == r.workload) {
            Some(i) => i,
            None => {
                workloads.push(r.workload.clone());
                workloads.len() - 1
            }
        };
        if let Some(v) = metric.of(r) {
            let key = (w, r.label.clone(), r.scenario.clone());
            values.entry(key).or_default().push(v);
        }
    }
    let mut notes = Vec::new();
    let groups: Vec<Group> = workloads
        .into_iter()
        .enumerate()
        .map(|(i, w)| group(i, w, &host_order, &values, baseline.as_ref(), &mut notes))
        .collect();
    if groups.len() > 1 {
        notes.insert(
            0,
            format!(
                "{} workloads: records whose source or config digests differ are never compared \
                 as the same workload; each is reported apart",
                groups.len()
            ),
        );
    }
    Report {
        metric,
        baseline,
        groups,
        hosts,
        notes,
    }
}

fn group(
    i: usize,
    workload: Workload,
    host_order: &[String],
    values: &BTreeMap<(usize, String, String), Vec<f64>>,
    baseline: Option<&Baseline>,
    notes: &mut Vec<String>,
) -> Group {
    let mine: BTreeMap<(&str, &str), Stats> = values
        .iter()
        .filter(|((w, _, _), _)| *w == i)
        .filter_map(|((_, h, s), v)| Some(((h.as_str(), s.as_str()), stats(v)?)))
        .collect();
    let hosts: Vec<String> = host_order
        .iter()
        .filter(|h| mine.keys().any(|(mh, _)| mh == h))
        .cloned()
        .collect();
    let mut scenarios: Vec<String> = mine.keys().map(|(_, s)| s.to_string()).collect();
    scenarios.sort_by_key(|s| scenario_rank(s));
    scenarios.dedup();
    let mut rows = Vec::new();
    for h in &hosts {
        for s in &scenarios {
            let Some(st) = mine.get(&(h.as_str(), s.as_str())) else {
                continue;
            };
            let base = match baseline {
                Some(Baseline::Scenario(b)) => mine.get(&(h.as_str(), b.as_str())),
                Some(Baseline::Host(b)) => mine.get(&(b.as_str(), s.as_str())),
                None => None,
            };
            rows.push(Row {
                host: h.clone(),
                scenario: s.clone(),
                stats: *st,
                ratio: base.map(|b| st.median / b.median),
            });
        }
    }
    let label = describe(&workload);
    match baseline {
        Some(Baseline::Scenario(b)) => {
            for h in hosts
                .iter()
                .filter(|h| !mine.contains_key(&(h.as_str(), b.as_str())))
            {
                notes.push(format!("{label}: host {h} has no {b} runs, so no ratios"));
            }
        }
        Some(Baseline::Host(b)) if !hosts.contains(b) => {
            notes.push(format!(
                "{label}: baseline host {b} has no runs, so no ratios"
            ));
        }
        _ => {}
    }
    Group {
        workload,
        hosts,
        scenarios,
        rows,
    }
}

/// `bcm2712 mini, Linux 6.12.117, source 0123456789ab…, config 89abcdef0123…`.
pub fn describe(w: &Workload) -> String {
    format!(
        "{} {}, Linux {}, source {}, config {}",
        w.target,
        w.profile,
        w.kernel_version,
        short(&w.source_blake3),
        short(&w.config_blake3)
    )
}

fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

/// Seconds as a table shows them: two decimals below 10 s, one above.
fn secs(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

impl Row {
    fn cells(&self) -> [String; 5] {
        let s = &self.stats;
        [
            self.host.clone(),
            self.scenario.clone(),
            s.n.to_string(),
            secs(s.median),
            format!("{}–{}", secs(s.min), secs(s.max)),
        ]
    }

    fn ratio_cell(&self) -> String {
        self.ratio.map_or("–".into(), |r| format!("{r:.3}"))
    }
}

impl Report {
    fn headings(&self) -> Vec<String> {
        let mut h: Vec<String> = ["host", "scenario", "runs"].map(String::from).to_vec();
        h.push(format!("median {}", self.metric.label()));
        h.push("min–max".into());
        if let Some(b) = &self.baseline {
            h.push(b.heading());
        }
        h
    }

    fn table_rows(&self, g: &Group) -> Vec<Vec<String>> {
        g.rows
            .iter()
            .map(|r| {
                let mut c = r.cells().to_vec();
                if self.baseline.is_some() {
                    c.push(r.ratio_cell());
                }
                c
            })
            .collect()
    }

    /// The report as aligned columns for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, g) in self.groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "workload {}/{}: {}",
                i + 1,
                self.groups.len(),
                describe(&g.workload)
            );
            let mut rows = vec![self.headings()];
            rows.extend(self.table_rows(g));
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            for r in &rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(c, (cell, w))| {
                        let pad = w - cell.chars().count();
                        // Names left, numbers right.
                        if c < 2 {
                            format!("{cell}{}", " ".repeat(pad))
                        } else {
                            format!("{}{cell}", " ".repeat(pad))
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  {}", line.join("  ").trim_end());
            }
            out.push('\n');
        }
        for (label, h) in &self.hosts {
            let _ = writeln!(out, "host {label}: {}", host_line(h));
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The report as Markdown: a section per workload, a table of hosts, the notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let _ = writeln!(out, "### {}\n", describe(&g.workload));
            let h = self.headings();
            let _ = writeln!(out, "| {} |", h.join(" | "));
            let align: Vec<&str> = (0..h.len())
                .map(|c| if c < 2 { "---" } else { "---:" })
                .collect();
            let _ = writeln!(out, "|{}|", align.join("|"));
            for r in self.table_rows(g) {
                let _ = writeln!(out, "| {} |", r.join(" | "));
            }
            out.push('\n');
        }
        out.push_str("| host | CPU | cores | memory | OS | kernel | toolchain | pik |\n");
        out.push_str("|---|---|---:|---:|---|---|---|---|\n");
        for (label, h) in &self.hosts {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {:.1} GiB | {} | {} | {} | {} |",
                h.cpu_model,
                h.cores,
                h.memory_bytes as f64 / (1u64 << 30) as f64,
                h.os,
                h.kernel,
                h.toolchain,
                h.pik_version
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n> {n}");
        }
        out
    }
}

fn host_line(h: &Host) -> String {
    format!(
        "{}, {} cores, {:.1} GiB, {}, {}, {}, pik {}",
        h.cpu_model,
        h.cores,
        h.memory_bytes as f64 / (1u64 << 30) as f64,
        h.os,
        h.kernel,
        h.toolchain,
        h.pik_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let s = stats(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(stats(&[]).is_none());
        assert_eq!(Baseline::parse("host:a"), Baseline::Host("a".into()));
        assert_eq!(Baseline::parse("cold"), Baseline::Scenario("cold".into()));
    }
}
