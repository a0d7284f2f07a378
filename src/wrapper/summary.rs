//! One build's use of the object cache, read from its session log (through the store crate's
//! log reader): hits, misses, probes, uncacheable calls by reason, and the store problems the
//! build reports in one warning. Kept in the build's manifest.

use super::env::SHARED_ENV;
use super::events::{self, HOST, PROBE, UNTRUSTED};
use pik_cache::stats::{self, Kind, Layout, Line};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One build's cache outcome, from its session log.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Compiles served from the cache.
    pub hits: u64,
    /// Compiles that ran and were stored.
    pub misses: u64,
    /// Calls that could not be cached, by reason.
    pub uncacheable: BTreeMap<String, u64>,
    /// Cache failures (the compiler ran anyway).
    pub errors: u64,
    /// Compiler probes (Kconfig's and kbuild's `cc-option` and the like) answered from the
    /// cache; not counted in `hits`.
    pub probe_hits: u64,
    /// Compiler probes that ran (and were stored); not counted in `misses`.
    pub probe_misses: u64,
    /// Host programs' compiles (fixdep, modpost, dtc, Kconfig's) served from the cache; not
    /// counted in `hits`.
    #[serde(default)]
    pub host_hits: u64,
    /// Host programs' compiles that ran (and were stored); not counted in `misses`.
    #[serde(default)]
    pub host_misses: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// Where the misses of a distributed build were compiled (all zero without hosts).
    #[serde(default)]
    pub dist: DistSummary,
    /// The part of `errors` the store's condition caused (no space, read-only, not writable,
    /// untrusted), by problem and store directory: what [`Summary::store_warning`] reports.
    /// Left out of the manifest (and so empty in a summary read back from one).
    #[serde(skip)]
    pub store_errors: BTreeMap<StoreProblem, u64>,
}

/// Where a distributed build's misses were compiled, from the session log's miss reasons
/// (`local/<why>`, `remote/<host>[/pump-<why>]`, `pump/<host>`, `fallback/<host>/<reason>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistSummary {
    /// Compiled here (not after a builder failed), e.g. assembly or while every builder was busy.
    pub local: u64,
    /// Sent preprocessed (protocols 1 and 2).
    pub remote: u64,
    /// Sent as pump jobs (protocol 3: sources and headers, no local preprocessing).
    pub pump: u64,
    /// Compiled here after a builder failed.
    pub fallback: u64,
    /// Per host: jobs sent preprocessed and as pump.
    pub hosts: BTreeMap<String, HostJobs>,
    /// Fallbacks per host, by reason (`connect`, `refused`, `timeout`, `died`, `garbage`,
    /// `mismatch`, `status`, …).
    pub fallbacks: BTreeMap<String, BTreeMap<String, u64>>,
    /// Why jobs went preprocessed to a pump host (`nolist`: no header list yet; `depfile`: the
    /// builder read other files than were sent; …).
    pub pump_declined: BTreeMap<String, u64>,
    /// Why local jobs did not go out (`busy`, `assembler-input`, `plugin`, …).
    pub local_reasons: BTreeMap<String, u64>,
    /// `--strict-remote` failures (`<host>/<reason>`), for the build's error.
    #[serde(skip)]
    pub strict: BTreeMap<String, u64>,
}

/// One host's jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostJobs {
    /// Sent preprocessed.
    pub remote: u64,
    /// Sent as pump jobs.
    pub pump: u64,
}

impl DistSummary {
    /// Whether the build distributed anything (or tried to).
    pub fn active(&self) -> bool {
        self.local + self.remote + self.pump + self.fallback > 0 || !self.strict.is_empty()
    }

    /// Jobs compiled on builders.
    pub fn remote_jobs(&self) -> u64 {
        self.remote + self.pump
    }

    /// Takes in a miss's session-log reason; false if it is not a distribution reason.
    fn add_miss(&mut self, reason: &str, n: u64) -> bool {
        let mut parts = reason.split('/');
        let (kind, what, rest) = (parts.next(), parts.next(), parts.next());
        let Some(what) = what.filter(|w| !w.is_empty()) else {
            return false;
        };
        match kind {
            Some("local") => {
                self.local += n;
                *self.local_reasons.entry(what.into()).or_default() += n;
            }
            Some("remote") => {
                self.remote += n;
                self.hosts.entry(what.into()).or_default().remote += n;
                if let Some(why) = rest.and_then(|r| r.strip_prefix("pump-")) {
                    *self.pump_declined.entry(why.into()).or_default() += n;
                }
            }
            Some("pump") => {
                self.pump += n;
                self.hosts.entry(what.into()).or_default().pump += n;
            }
            Some("fallback") => {
                self.fallback += n;
                let reason = rest.unwrap_or("unknown").to_string();
                *self
                    .fallbacks
                    .entry(what.into())
                    .or_default()
                    .entry(reason)
                    .or_default() += n;
            }
            _ => return false,
        }
        true
    }
}

impl std::fmt::Display for DistSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = self.local + self.remote + self.pump + self.fallback;
        write!(
            f,
            "{} of {all} compiles on {} builder(s) ({} pump, {} preprocessed here), {} here, \
             {} fallbacks",
            self.remote_jobs(),
            self.hosts.len(),
            self.pump,
            self.remote,
            self.local,
            self.fallback
        )?;
        let why: Vec<String> = self
            .fallbacks
            .iter()
            .flat_map(|(h, rs)| rs.iter().map(move |(r, n)| format!("{h}: {r} {n}")))
            .collect();
        if !why.is_empty() {
            write!(f, " ({})", why.join(", "))?;
        }
        Ok(())
    }
}

/// Why the object store could not serve or keep some calls, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreProblem {
    /// "no space left on device", "read-only file system", "permission denied",
    /// "untrusted cache directory" or "store error".
    pub reason: String,
    /// The store's directory.
    pub dir: PathBuf,
}

impl Summary {
    /// Reads a session log written through [`super::SESSION_LOG_ENV`]. Lines that are damaged
    /// (not UTF-8, no reason, an unknown kind) are skipped.
    pub fn read(log: &Path) -> Summary {
        let text = std::fs::read(log).unwrap_or_default();
        let mut s = Summary::default();
        for line in stats::lines(&text, Layout::Session) {
            s.add(line);
        }
        let n = s.hits + s.misses;
        s.hit_rate = if n == 0 {
            0.0
        } else {
            s.hits as f64 / n as f64
        };
        s
    }

    fn add(&mut self, l: Line) {
        match (l.kind, l.reason) {
            (Kind::Hit, PROBE) => self.probe_hits += l.count,
            (Kind::Miss, PROBE) => self.probe_misses += l.count,
            (Kind::Hit, HOST) => self.host_hits += l.count,
            (Kind::Miss, HOST) => self.host_misses += l.count,
            (Kind::Hit, _) => self.hits += l.count,
            (Kind::Miss, reason) => {
                self.misses += l.count;
                self.dist.add_miss(reason, l.count);
            }
            (Kind::Error, reason) => {
                self.errors += l.count;
                if let Some(s) = reason.strip_prefix("strict/") {
                    *self.dist.strict.entry(s.into()).or_default() += l.count;
                }
                if let Some((reason, dir)) = events::store_problem_in(reason) {
                    *self
                        .store_errors
                        .entry(StoreProblem { reason, dir })
                        .or_default() += l.count;
                }
            }
            (Kind::Uncacheable, reason) => {
                *self.uncacheable.entry(reason.to_string()).or_default() += l.count
            }
        }
    }

    /// The one warning a build prints when the object store could not be used for some of its
    /// compiles (they ran, uncached), or `None` when it always could: e.g. "object cache
    /// unusable: 12 compiles ran uncached (no space left on device in /home/u/.cache/pik/objects);
    /// free space or set PIK_CACHE_DIR". Each further problem is added after a semicolon.
    /// Meant to be called once per build on the [`Summary::read`] of its session log, and
    /// printed as a warning (the build itself succeeded).
    pub fn store_warning(&self) -> Option<String> {
        let total: u64 = self.store_errors.values().sum();
        if total == 0 {
            return None;
        }
        let mut problems: Vec<(&StoreProblem, &u64)> = self.store_errors.iter().collect();
        problems.sort_by(|a, b| b.1.cmp(a.1));
        let described: Vec<String> = problems
            .iter()
            .map(|(p, _)| {
                format!(
                    "({} in {}); {}",
                    p.reason,
                    p.dir.display(),
                    advice(&p.reason)
                )
            })
            .collect();
        let noun = if total == 1 { "compile" } else { "compiles" };
        Some(format!(
            "object cache unusable: {total} {noun} ran uncached {}",
            described.join("; and ")
        ))
    }
}

/// What the user can do about a store problem.
fn advice(problem: &str) -> String {
    match problem {
        "no space left on device" => "free space or set PIK_CACHE_DIR".to_string(),
        "read-only file system" => "make it writable or set PIK_CACHE_DIR".to_string(),
        "permission denied" => "fix its permissions or set PIK_CACHE_DIR".to_string(),
        UNTRUSTED => format!(
            "another user may write it, so it could serve their objects: fix its owner and \
             mode, set PIK_CACHE_DIR, or set {SHARED_ENV}=1 if everyone who can write it is \
             trusted"
        ),
        _ => "run `pik cache verify` or set PIK_CACHE_DIR".to_string(),
    }
}

/// The one-line form the build summary and the benchmark print.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} hits, {} misses ({:.1} % hit rate), {} of {} compiler probes and {} of {} host \
             program compiles answered, {} uncacheable calls",
            self.hits,
            self.misses,
            self.hit_rate * 100.0,
            self.probe_hits,
            self.probe_hits + self.probe_misses,
            self.host_hits,
            self.host_hits + self.host_misses,
            self.uncacheable.values().sum::<u64>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::escape;

    #[test]
    fn the_build_gets_one_warning_for_an_unusable_store() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        let full = format!(
            "e no_space_left_on_device@{} a.o\n",
            escape(b"/cache dir/objects")
        );
        let mut text = Vec::new();
        text.extend_from_slice(b"h deps a.o\nm - b.o\nh probe .tmp/x\n");
        text.extend_from_slice(full.as_bytes());
        text.extend_from_slice(full.as_bytes());
        text.extend_from_slice(b"e read-only_file_system@/ro c.o\n");
        // An error that is not the store's condition: counted, no warning of its own.
        text.extend_from_slice(b"e No_such_file_or_directory_(os_error_2) d.o\n");
        // Damaged lines: skipped.
        text.extend_from_slice(b"e \xff@/x e.o\nh\nm \nzz - f.o\n");
        std::fs::write(&log, &text).unwrap();
        let s = Summary::read(&log);
        assert_eq!((s.hits, s.misses, s.probe_hits, s.errors), (1, 1, 1, 4));
        assert_eq!(s.store_errors.values().sum::<u64>(), 3);
        let w = s.store_warning().unwrap();
        assert_eq!(
            w,
            "object cache unusable: 3 compiles ran uncached (no space left on device in \
             /cache dir/objects); free space or set PIK_CACHE_DIR; and (read-only file system \
             in /ro); make it writable or set PIK_CACHE_DIR"
        );
        std::fs::write(&log, b"h deps a.o\ne No_such_file d.o\n").unwrap();
        assert_eq!(Summary::read(&log).store_warning(), None);
        let untrusted = format!("e {}@/shared x.o\n", UNTRUSTED.replace(' ', "_"));
        std::fs::write(&log, untrusted).unwrap();
        let w = Summary::read(&log).store_warning().unwrap();
        assert!(
            w.starts_with(
                "object cache unusable: 1 compile ran uncached (untrusted cache \
                 directory in /shared)"
            ) && w.contains("PIK_CACHE_SHARED=1"),
            "{w}"
        );
    }

    #[test]
    fn distribution_is_counted_by_host_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        let text = "m - a.o\nm remote/pi5a b.o\nm pump/pi5a c.o\nm pump/[fd00::5]:3633 d.o\n\
                    m remote/pi5a/pump-nolist e.o\nm fallback/pi5a/timeout f.o\n\
                    m fallback/pi5a/timeout g.o\nm local/busy h.o\nm local/assembler-input i.o\n\
                    m probe .tmp/x\ne strict/pi5a/refused j.o\nh deps k.o\n";
        std::fs::write(&log, text).unwrap();
        let s = Summary::read(&log);
        let d = &s.dist;
        assert_eq!(s.misses, 9);
        assert_eq!((d.local, d.remote, d.pump, d.fallback), (2, 2, 2, 2));
        assert_eq!(d.hosts["pi5a"], HostJobs { remote: 2, pump: 1 });
        assert_eq!(d.hosts["[fd00::5]:3633"].pump, 1);
        assert_eq!(d.fallbacks["pi5a"]["timeout"], 2);
        assert_eq!(d.pump_declined["nolist"], 1);
        assert_eq!(d.local_reasons["assembler-input"], 1);
        assert_eq!(d.strict["pi5a/refused"], 1);
        assert!(d.active());
        assert_eq!(
            d.to_string(),
            "4 of 8 compiles on 2 builder(s) (2 pump, 2 preprocessed here), 2 here, 2 fallbacks \
             (pi5a: timeout 2)"
        );
    }

    #[test]
    fn a_summary_reads_back_from_its_manifest_form() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        let text = "h deps a.o\nh tree b.o\nm - c.o\nm probe .tmp/x\nu unknown_flag d.o\n\
                    e read-only_file_system@/ro e.o\n";
        std::fs::write(&log, text).unwrap();
        let s = Summary::read(&log);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("store_errors"), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert!(back.store_errors.is_empty());
        assert_eq!(
            back,
            Summary {
                store_errors: BTreeMap::new(),
                ..s
            }
        );
        assert_eq!(back.to_string(), Summary::read(&log).to_string());
    }
}
