//! `pik bench` and `pik bench report`: the record schema, reports of hand-made results from two
//! hosts (medians, ranges, ratios, workloads kept apart, a chart that parses and renders), the
//! checks made before anything runs, and one real short bench on the shared mini build.

mod common;

use common::*;
use pik::bench::record::{self, Cpu, Host, Jobs, Phases, Record, Workload};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn workload(config: &str) -> Workload {
    Workload {
        target: "bcm2712".into(),
        profile: "mini".into(),
        kernel_version: "6.12.117".into(),
        source_blake3: "5".repeat(64),
        config_blake3: config.repeat(64),
    }
}

/// A record of `scenario` on `label` taking `wall` seconds.
fn rec(label: &str, scenario: &str, run: u32, wall: f64, config: &str) -> Record {
    Record {
        schema: record::SCHEMA.into(),
        scenario: scenario.into(),
        run,
        runs: 3,
        started_unix: 1_800_000_000 + run as u64,
        label: label.into(),
        workload: workload(config),
        wall_s: wall,
        make_s: Some(wall * 0.9),
        cpu: Cpu {
            user_s: wall * 1.5,
            sys_s: wall * 0.25,
        },
        peak_rss_kib: 250_000,
        phases_s: Phases {
            config: Some(1.5),
            compile: Some(wall * 0.9),
            ..Phases::default()
        },
        cache: None,
        jobs: Jobs {
            slots: 2,
            local: 930,
            ..Jobs::default()
        },
        objects_compiled: Some(930),
        memo_hit: None,
        edit: None,
        store_pages: None,
        host: Host {
            hostname: label.into(),
            cpu_model: format!("{label} CPU"),
            cores: 2,
            memory_bytes: 24 << 30,
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0 x86_64".into(),
            toolchain: "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0".into(),
            make: "GNU Make 4.3".into(),
            ccache: None,
            pik_version: "0.1.0".into(),
            pik_blake3: "b".repeat(64),
        },
        notes: Vec::new(),
    }
}

fn write_jsonl(path: &Path, records: &[Record]) {
    let _ = std::fs::remove_file(path);
    for r in records {
        record::append(path, r).unwrap();
    }
}

/// Two hosts: alpha runs plain 100/120/110 s, cold 90/95/100, warm 12/10/11; beta twice as
/// slow, with one warm run only.
fn two_hosts(dir: &Path) -> (PathBuf, PathBuf) {
    let a = dir.join("alpha.jsonl");
    let b = dir.join("beta.jsonl");
    let runs = |label: &str, k: f64| -> Vec<Record> {
        let mut v = Vec::new();
        for (i, (p, c, w)) in [
            (100.0, 90.0, 12.0),
            (120.0, 95.0, 10.0),
            (110.0, 100.0, 11.0),
        ]
        .into_iter()
        .enumerate()
        {
            let run = i as u32 + 1;
            v.push(rec(label, "plain", run, p * k, "c"));
            v.push(rec(label, "cold", run, c * k, "c"));
            if label == "alpha" || run == 1 {
                v.push(rec(label, "warm", run, w * k, "c"));
            }
        }
        v
    };
    write_jsonl(&a, &runs("alpha", 1.0));
    write_jsonl(&b, &runs("beta", 2.0));
    (a, b)
}

fn report_json(args: &[&str]) -> Value {
    let out = run_ok(pik().args(["bench", "report", "--json"]).args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The row of `host` × `scenario` in the report's first workload.
fn row<'a>(rep: &'a Value, host: &str, scenario: &str) -> &'a Value {
    rep["groups"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == host && r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no row {host} {scenario} in {rep}"))
}

fn close(v: &Value, want: f64) -> bool {
    (v.as_f64().unwrap() - want).abs() < 1e-9
}

#[test]
fn the_record_schema_round_trips() {
    let mut r = rec("alpha", "edit-patch", 2, 41.5, "c");
    r.cache = Some(record::Cache {
        kind: "pik".into(),
        hits: 929,
        misses: 1,
        uncacheable: [("preprocess".to_string(), 2)].into(),
    });
    r.edit = Some(record::Edit {
        change: "patch".into(),
        detail: "drivers/watchdog/bcm2835_wdt.c".into(),
        recompiled: 930,
        served: 929,
        compiled: vec!["drivers/watchdog/bcm2835_wdt.o".into()],
        config_blake3: "c".repeat(64),
    });
    r.memo_hit = Some(false);
    r.store_pages = Some("evict".into());
    r.notes.push("a note".into());
    let line = r.to_line().unwrap();
    assert!(!line.contains('\n'));
    let back = record::parse(&format!("{line}\n\n{line}\n"), "t").unwrap();
    assert_eq!(back, vec![r.clone(), r.clone()]);
    // Phases that did not run are left out, not written as null.
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["schema"], "pik.bench/1");
    assert!(v["phases_s"].get("link").is_none(), "{v}");
    // Another schema, or no record at all, is refused by name and line.
    let other = line.replace("pik.bench/1", "pik.bench/9");
    let e = record::parse(&format!("{line}\n{other}\n"), "f.jsonl").unwrap_err();
    assert!(
        format!("{e:#}").contains("f.jsonl:2: schema \"pik.bench/9\""),
        "{e:#}"
    );
    assert!(record::parse("{\"x\": 1}\n", "g").is_err());
}

#[test]
fn a_report_of_two_hosts_shows_medians_ranges_and_ratios() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(t.path());
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // Against plain on each host (the default baseline).
    let rep = report_json(&[a, b]);
    assert_eq!(rep["groups"].as_array().unwrap().len(), 1);
    assert_eq!(
        rep["groups"][0]["hosts"],
        serde_json::json!(["alpha", "beta"])
    );
    let plain = row(&rep, "alpha", "plain");
    assert!(close(&plain["stats"]["median"], 110.0), "{plain}");
    assert!(close(&plain["stats"]["min"], 100.0) && close(&plain["stats"]["max"], 120.0));
    assert_eq!(plain["stats"]["n"], 3);
    assert!(close(&plain["ratio"], 1.0));
    assert!(close(&row(&rep, "alpha", "cold")["ratio"], 95.0 / 110.0));
    assert!(close(&row(&rep, "alpha", "warm")["stats"]["median"], 11.0));
    assert!(close(&row(&rep, "beta", "warm")["stats"]["median"], 24.0));
    assert_eq!(row(&rep, "beta", "warm")["stats"]["n"], 1);
    assert!(close(&row(&rep, "beta", "warm")["ratio"], 24.0 / 220.0));
    // Against a host: beta's medians over alpha's, scenario by scenario.
    let rep = report_json(&[a, b, "--baseline", "host:alpha"]);
    assert!(close(&row(&rep, "beta", "cold")["ratio"], 2.0));
    assert!(close(&row(&rep, "beta", "warm")["ratio"], 24.0 / 11.0));
    assert!(close(&row(&rep, "alpha", "warm")["ratio"], 1.0));
    // Against another scenario, and on CPU time.
    let rep = report_json(&[a, b, "--baseline", "cold", "--metric", "cpu"]);
    assert!(close(
        &row(&rep, "alpha", "plain")["stats"]["median"],
        110.0 * 1.75
    ));
    assert!(close(&row(&rep, "alpha", "plain")["ratio"], 110.0 / 95.0));
    // The tables people read.
    let md = run_ok(pik().args(["bench", "report", "--markdown", a, b]));
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(
        md.contains("| alpha | plain | 3 | 110.0 | 100.0–120.0 | 1.000 |"),
        "{md}"
    );
    assert!(
        md.contains("| beta | cold | 3 | 190.0 | 180.0–200.0 | 0.864 |"),
        "{md}"
    );
    assert!(md.contains("| alpha | alpha CPU | 2 | 24.0 GiB |"), "{md}");
    let text = run_ok(pik().args(["bench", "report", a, b]));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("workload 1/1: bcm2712 mini, Linux 6.12.117"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("beta") && l.contains("warm"))
        .unwrap();
    assert!(line.contains("24.0") && line.contains("0.109"), "{line}");
}

/// Checks an SVG chart: well-formed, a bar per host and scenario, every host and scenario
/// named; and that rsvg-convert renders it to a PNG.
fn check_chart(svg: &Path, hosts: &[&str], scenarios: &[&str]) {
    let text = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for name in hosts.iter().chain(scenarios) {
        assert!(texts.iter().any(|t| t == name), "{name} not in {texts:?}");
    }
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert!(rects >= hosts.len() * scenarios.len(), "{rects} rects");
    let png = svg.with_extension("png");
    run_ok(
        std::process::Command::new("rsvg-convert")
            .arg("-o")
            .arg(&png)
            .arg(svg),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
}

#[test]
fn the_chart_is_well_formed_svg_that_renders() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(t.path());
    for (name, log) in [("linear.svg", false), ("log.svg", true)] {
        let svg = t.path().join(name);
        let mut c = pik();
        c.args(["bench", "report"])
            .arg(&a)
            .arg(&b)
            .arg("--svg")
            .arg(&svg);
        if log {
            c.arg("--log-scale");
        }
        run_ok(&mut c);
        check_chart(&svg, &["alpha", "beta"], &["plain", "cold", "warm"]);
    }
}

#[test]
fn records_whose_digests_differ_are_kept_apart() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("mixed.jsonl");
    write_jsonl(
        &f,
        &[
            rec("alpha", "plain", 1, 100.0, "c"),
            rec("alpha", "plain", 2, 300.0, "d"),
            rec("beta", "plain", 1, 200.0, "d"),
        ],
    );
    let rep = report_json(&[f.to_str().unwrap()]);
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{rep}");
    let median = |g: &Value, host: &str| {
        g["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == host)
            .map(|r| r["stats"]["median"].as_f64().unwrap())
    };
    // Never a median of 200 for alpha: each workload has its own.
    assert_eq!(median(&groups[0], "alpha"), Some(100.0));
    assert_eq!(median(&groups[0], "beta"), None);
    assert_eq!(median(&groups[1], "alpha"), Some(300.0));
    assert_eq!(median(&groups[1], "beta"), Some(200.0));
    assert_eq!(groups[1]["workload"]["config_blake3"], "d".repeat(64));
    let notes = rep["notes"].to_string();
    assert!(notes.contains("never compared"), "{notes}");
    let text = run_ok(pik().args(["bench", "report"]).arg(&f));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("workload 1/2") && text.contains("workload 2/2"),
        "{text}"
    );
    assert!(text.contains("config cccccccccccc") && text.contains("config dddddddddddd"));
    let svg = t.path().join("mixed.svg");
    run_ok(
        pik()
            .args(["bench", "report"])
            .arg(&f)
            .arg("--svg")
            .arg(&svg),
    );
    check_chart(&svg, &["alpha", "beta"], &["plain"]);
}

#[test]
fn a_scenario_that_cannot_run_here_fails_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let results = t.path().join("r.jsonl");
    let dir = t.path().join("bench");
    let bench = |scenarios: &str| {
        let mut c = pik();
        c.args([
            "bench",
            "--target",
            "bcm2712",
            "--profile",
            "mini",
            "--runs",
            "1",
        ])
        .args(["--scenarios", scenarios, "--results"])
        .arg(&results)
        .arg("--dir")
        .arg(&dir)
        .env("PIK_CONFIG", &config)
        .env_remove("PIK_HOSTS");
        c
    };
    let out = run(&mut bench("memo,dist"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PIK_HOSTS") && err.contains("[hosts]"),
        "{err}"
    );
    // A host that does not answer: `pik hosts check`'s verdict, before any build.
    let out = run(bench("dist").env("PIK_HOSTS", "127.0.0.1:9/4"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hosts check") && err.contains("127.0.0.1:9"),
        "{err}"
    );
    assert!(!results.exists(), "a record was written");
    // No ccache on PATH: named with its Debian package.
    let empty = t.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(bench("plain,ccache").env("PATH", &empty));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("install the Debian package ccache"), "{err}");
    let out = run(&mut bench("plain,typo"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"typo\""));
    // Nothing ran: no results file, no work dir.
    assert!(!results.exists() && !dir.exists());
}

#[test]
fn a_short_real_bench_writes_a_valid_record() {
    let built = mini_build("bcm2712");
    let t = tempfile::tempdir_in(shared()).unwrap();
    let results = t.path().join("results.jsonl");
    let started = std::time::Instant::now();
    let out = run_ok(
        pik()
            .args(["bench", "--target", "bcm2712", "--profile", "mini", "-j2"])
            .args(["--scenarios", "memo", "--runs", "1", "--label", "ci"])
            .arg("--results")
            .arg(&results)
            .arg("--dir")
            .arg(t.path().join("work")),
    );
    eprintln!("bench took {:.1} s", started.elapsed().as_secs_f64());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run 1/1  memo"), "{err}");
    let records = record::read(&results).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.scenario.as_str(), r.run, r.runs), ("memo", 1, 1));
    assert_eq!(r.label, "ci");
    assert_eq!(r.memo_hit, Some(true), "{r:?}");
    assert_eq!(
        (r.cache.as_ref(), r.objects_compiled, r.make_s),
        (None, None, None)
    );
    assert!(r.wall_s > 0.0 && r.cpu.user_s + r.cpu.sys_s > 0.0 && r.peak_rss_kib > 0);
    let memo = r.phases_s.memo.unwrap_or(0.0);
    assert!(memo > 0.0 && memo <= r.wall_s, "{:?}", r.phases_s);
    // The same workload as the shared build's manifest says.
    let m = &built.manifest;
    assert_eq!(r.workload.source_blake3, m["inputs"]["source_blake3"]);
    assert_eq!(r.workload.config_blake3, m["config_blake3"]);
    assert_eq!(
        (r.workload.target.as_str(), r.workload.profile.as_str()),
        ("bcm2712", "mini")
    );
    let h = &r.host;
    assert!(h.cores > 0 && h.memory_bytes > 0 && !h.os.is_empty() && !h.kernel.is_empty());
    assert!(
        h.toolchain.contains("aarch64-linux-gnu-gcc") && h.make.contains("Make"),
        "{h:?}"
    );
    assert_eq!(h.pik_blake3, pik_digest());
    // The run's dirs are gone; the record reports.
    assert_eq!(
        std::fs::read_dir(t.path().join("work/runs"))
            .unwrap()
            .count(),
        0
    );
    let rep = run_ok(pik().args(["bench", "report"]).arg(&results));
    assert!(String::from_utf8_lossy(&rep.stdout).contains("ci"));
}
