//! Counters kept beside the store: hits, misses, uncacheable calls by reason, errors, and time.
//!
//! Each event is one short line appended with `O_APPEND` (concurrent writers never interleave a
//! line), and [`Stats::compact`] folds the log into a summary file. The events are generic; what
//! a "hit" is is the caller's business.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Served from the store; `saved_ms` is the time the original work took minus this lookup.
    Hit { saved_ms: u64 },
    /// Not in the store; the work took `ms` and its result was stored.
    Miss { ms: u64 },
    /// The call could not be cached, for `reason`.
    Uncacheable { reason: &'a str },
    /// The store failed (the work still ran); `reason` says how.
    Error { reason: &'a str },
}

impl Event<'_> {
    /// The event as one log line (`kind count ms reason`).
    pub fn line(&self) -> String {
        let clean = |r: &str| r.replace(|c: char| c.is_whitespace(), "_");
        match self {
            Event::Hit { saved_ms } => format!("h 1 {saved_ms} -\n"),
            Event::Miss { ms } => format!("m 1 {ms} -\n"),
            Event::Uncacheable { reason } => format!("u 1 0 {}\n", clean(reason)),
            Event::Error { reason } => format!("e 1 0 {}\n", clean(reason)),
        }
    }
}

/// Totals over all recorded events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Lookups served from the store.
    pub hits: u64,
    /// Lookups that missed (and stored a result).
    pub misses: u64,
    /// Calls that could not be cached, by reason.
    pub uncacheable: BTreeMap<String, u64>,
    /// Store failures, by reason.
    pub errors: BTreeMap<String, u64>,
    /// Time hits saved, in milliseconds.
    pub saved_ms: u64,
    /// Time spent on misses, in milliseconds.
    pub miss_ms: u64,
}

impl Totals {
    /// Hits over cacheable lookups (0 when there were none).
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }

    /// Folds log lines into the totals; malformed lines (a damaged log) are skipped.
    pub fn add_log(&mut self, text: &str) {
        self.add_log_bytes(text.as_bytes());
    }

    /// [`Totals::add_log`] on the raw bytes of a log: a line that is not UTF-8 (one damaged
    /// byte) is skipped like any other malformed line, and the rest still count.
    pub fn add_log_bytes(&mut self, text: &[u8]) {
        for line in text.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let mut it = line.split(' ');
            let (Some(kind), Some(n), Some(ms), Some(reason), None) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let (Ok(n), Ok(ms)) = (n.parse::<u64>(), ms.parse::<u64>()) else {
                continue;
            };
            if reason.is_empty() {
                continue;
            }
            // Saturating: a damaged count must not overflow (and panic) every later reader.
            let add = |total: &mut u64, v: u64| *total = total.saturating_add(v);
            match kind {
                "h" => {
                    add(&mut self.hits, n);
                    add(&mut self.saved_ms, ms);
                }
                "m" => {
                    add(&mut self.misses, n);
                    add(&mut self.miss_ms, ms);
                }
                "u" => add(self.uncacheable.entry(reason.to_string()).or_default(), n),
                "e" => add(self.errors.entry(reason.to_string()).or_default(), n),
                _ => {}
            }
        }
    }

    fn to_log(&self) -> String {
        let mut s = format!(
            "h {} {} -\nm {} {} -\n",
            self.hits, self.saved_ms, self.misses, self.miss_ms
        );
        for (r, n) in &self.uncacheable {
            s.push_str(&format!("u {n} 0 {r}\n"));
        }
        for (r, n) in &self.errors {
            s.push_str(&format!("e {n} 0 {r}\n"));
        }
        s
    }
}

/// The counters of one store.
#[derive(Debug, Clone)]
pub struct Stats {
    log: PathBuf,
    summary: PathBuf,
}

impl Stats {
    /// Counters kept in `dir`.
    pub fn new(dir: &Path) -> Self {
        Stats {
            log: dir.join("stats.log"),
            summary: dir.join("stats.sum"),
        }
    }

    /// Appends one event to the log at `path` (also usable for a per-build event log).
    pub fn append(path: &Path, line: &str) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(line.as_bytes())
    }

    /// Records an event in this store's counters. The log is opened with `O_NOFOLLOW`, so a
    /// link planted in a shared store makes the append fail instead of writing to its target
    /// (`O_CREAT` without `O_EXCL` is enough here: with `O_NOFOLLOW` it never follows the last
    /// component, and appends from concurrent writers need the one shared file).
    pub fn record(&self, e: &Event) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.log)?;
        f.write_all(e.line().as_bytes())
    }

    /// The totals so far (damaged lines skipped).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in [&self.summary, &self.log] {
            if let Ok(s) = crate::read_file(p) {
                t.add_log_bytes(&s);
            }
        }
        t
    }

    /// Folds the event log into the summary, so the log does not grow without bound.
    pub fn compact(&self) -> io::Result<()> {
        let moving = self.log.with_extension("log.compacting");
        match fs::rename(&self.log, &moving) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut t = Totals::default();
        for p in [&self.summary, &moving] {
            if let Ok(s) = crate::read_file(p) {
                t.add_log_bytes(&s);
            }
        }
        crate::atomic_write(&self.summary, t.to_log().as_bytes())?;
        fs::remove_file(&moving)
    }

    /// Forgets every counter.
    pub fn reset(&self) -> io::Result<()> {
        for p in [&self.summary, &self.log] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_add_up_across_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Stats::new(dir.path());
        s.record(&Event::Hit { saved_ms: 10 }).unwrap();
        s.record(&Event::Miss { ms: 30 }).unwrap();
        s.record(&Event::Uncacheable {
            reason: "stdin input",
        })
        .unwrap();
        s.compact().unwrap();
        s.record(&Event::Hit { saved_ms: 5 }).unwrap();
        fs::write(dir.path().join("junk"), "x").unwrap();
        Stats::append(&dir.path().join("stats.log"), "garbage line\n").unwrap();
        let t = s.totals();
        assert_eq!((t.hits, t.misses, t.saved_ms, t.miss_ms), (2, 1, 15, 30));
        assert_eq!(t.uncacheable.get("stdin_input"), Some(&1));
        assert!((t.hit_rate() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_damaged_line_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = Stats::new(dir.path());
        s.record(&Event::Hit { saved_ms: 10 }).unwrap();
        s.record(&Event::Miss { ms: 30 }).unwrap();
        let log = dir.path().join("stats.log");
        let mut text = fs::read(&log).unwrap();
        text.extend_from_slice(b"h 1 5 \xff\xfe\n");
        text.extend_from_slice(b"h 18446744073709551615 1 -\nh 18446744073709551615 1 -\n");
        text.extend_from_slice(b"m 1 4 \n");
        fs::write(&log, &text).unwrap();
        s.record(&Event::Hit { saved_ms: 1 }).unwrap();
        let t = s.totals();
        assert_eq!((t.hits, t.misses, t.saved_ms), (u64::MAX, 1, 13));
        s.compact().unwrap();
        assert_eq!(s.totals().hits, u64::MAX);
    }

    #[test]
    fn a_link_at_the_log_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("stats.log")).unwrap();
        let s = Stats::new(dir.path());
        assert!(s.record(&Event::Hit { saved_ms: 1 }).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(s.totals().hits, 0);
    }
}
