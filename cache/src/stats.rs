//! What happened to the store's callers, counted: events, the counters kept beside the store,
//! and the session log a caller may keep for one job of its own (e.g. a build reporting its own
//! hits and misses). Both logs share one line grammar and one reader ([`lines`]): the counters
//! (`stats.log`, one line per event appended with `O_APPEND`, so concurrent writers never
//! interleave a line, folded by `Stats::compact` into a summary file) and the session log
//! ([`append_to_session`]). The events are generic; what a "hit" is is the caller's business.

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
    /// What kind of event this is.
    pub fn kind(&self) -> Kind {
        match self {
            Event::Hit { .. } => Kind::Hit,
            Event::Miss { .. } => Kind::Miss,
            Event::Uncacheable { .. } => Kind::Uncacheable,
            Event::Error { .. } => Kind::Error,
        }
    }

    /// The event as one line of the counters ([`Layout::Counters`]).
    fn line(&self) -> String {
        let k = self.kind().letter();
        match self {
            Event::Hit { saved_ms: ms } | Event::Miss { ms } => format!("{k} 1 {ms} -\n"),
            Event::Uncacheable { reason } | Event::Error { reason } => {
                format!("{k} 1 0 {}\n", token(reason))
            }
        }
    }
}

/// The kind of an event: a log line's first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Served from the store (`h`).
    Hit,
    /// Not in the store; the work ran and its result was stored (`m`).
    Miss,
    /// Could not be cached (`u`).
    Uncacheable,
    /// The store failed; the work still ran (`e`).
    Error,
}

impl Kind {
    fn letter(self) -> &'static str {
        match self {
            Kind::Hit => "h",
            Kind::Miss => "m",
            Kind::Uncacheable => "u",
            Kind::Error => "e",
        }
    }

    fn from_letter(s: &str) -> Option<Kind> {
        Some(match s {
            "h" => Kind::Hit,
            "m" => Kind::Miss,
            "u" => Kind::Uncacheable,
            "e" => Kind::Error,
            _ => return None,
        })
    }
}

/// How a log lays out the fields after an event's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The store's counters: `kind count ms reason`.
    Counters,
    /// A session log ([`append_to_session`]): `kind reason subject`, one event per line; the
    /// subject (what the event was about, such as a file name) is the rest of the line.
    Session,
}

/// One well-formed line of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// What happened.
    pub kind: Kind,
    /// How many events the line stands for (1 in a session log).
    pub count: u64,
    /// Time saved by hits or spent on misses, in milliseconds (0 in a session log).
    pub ms: u64,
    /// Why, or how: never empty, no whitespace (`-` when there is nothing to say).
    pub reason: &'a str,
}

/// The well-formed lines of the log `text`, laid out as `layout` says. A damaged line (not
/// UTF-8, a field missing or too many, an empty reason, an unknown kind, a count that is no
/// number) is skipped, so it costs only itself.
pub fn lines(text: &[u8], layout: Layout) -> impl Iterator<Item = Line<'_>> {
    text.split(|&b| b == b'\n')
        .filter_map(move |line| parse(line, layout))
}

fn parse(line: &[u8], layout: Layout) -> Option<Line<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    let (kind, count, ms, reason) = match layout {
        Layout::Counters => {
            let mut it = line.split(' ');
            let (Some(kind), Some(n), Some(ms), Some(reason), None) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                return None;
            };
            (kind, n.parse().ok()?, ms.parse().ok()?, reason)
        }
        Layout::Session => {
            let mut it = line.splitn(3, ' ');
            let (Some(kind), Some(reason), Some(_subject)) = (it.next(), it.next(), it.next())
            else {
                return None;
            };
            (kind, 1, 0, reason)
        }
    };
    if reason.is_empty() {
        return None;
    }
    Some(Line {
        kind: Kind::from_letter(kind)?,
        count,
        ms,
        reason,
    })
}

/// `reason` as one field of a line: whitespace becomes `_`.
fn token(reason: &str) -> String {
    reason.replace(|c: char| c.is_whitespace(), "_")
}

/// Appends one event to the session log at `path` ([`Layout::Session`]): `reason` with its
/// whitespace made `_`, and `subject` written as UTF-8 (lossily, so the line stays readable
/// whatever bytes a file name holds).
pub fn append_to_session(path: &Path, kind: Kind, reason: &str, subject: &[u8]) -> io::Result<()> {
    let mut line = format!("{} {} ", kind.letter(), token(reason)).into_bytes();
    line.extend_from_slice(subject);
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(String::from_utf8_lossy(&line).as_bytes())
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

    /// Folds the counters' log `text` into the totals (damaged lines skipped, see [`lines`]).
    fn add_log(&mut self, text: &[u8]) {
        // Saturating: a damaged count must not overflow (and panic) every later reader.
        let add = |total: &mut u64, v: u64| *total = total.saturating_add(v);
        for l in lines(text, Layout::Counters) {
            match l.kind {
                Kind::Hit => {
                    add(&mut self.hits, l.count);
                    add(&mut self.saved_ms, l.ms);
                }
                Kind::Miss => {
                    add(&mut self.misses, l.count);
                    add(&mut self.miss_ms, l.ms);
                }
                Kind::Uncacheable => add(
                    self.uncacheable.entry(l.reason.to_string()).or_default(),
                    l.count,
                ),
                Kind::Error => add(
                    self.errors.entry(l.reason.to_string()).or_default(),
                    l.count,
                ),
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
                t.add_log(&s);
            }
        }
        t
    }

    /// Folds the event log into the summary, so the log does not grow without bound.
    pub(crate) fn compact(&self) -> io::Result<()> {
        let moving = self.log.with_extension("log.compacting");
        match fs::rename(&self.log, &moving) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut t = Totals::default();
        for p in [&self.summary, &moving] {
            if let Ok(s) = crate::read_file(p) {
                t.add_log(&s);
            }
        }
        crate::atomic_write(&self.summary, t.to_log().as_bytes())?;
        fs::remove_file(&moving)
    }

    /// Forgets every counter.
    pub(crate) fn reset(&self) -> io::Result<()> {
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
        let mut log = fs::read(dir.path().join("stats.log")).unwrap();
        log.extend_from_slice(b"garbage line\n");
        fs::write(dir.path().join("stats.log"), log).unwrap();
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

    #[test]
    fn session_logs_read_with_the_same_grammar() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        append_to_session(&log, Kind::Hit, "deps", b"a.o").unwrap();
        append_to_session(&log, Kind::Error, "no space\tleft", b"/with space/\xff.o").unwrap();
        let mut text = fs::read(&log).unwrap();
        assert_eq!(
            text,
            "h deps a.o\ne no_space_left /with space/\u{fffd}.o\n".as_bytes()
        );
        // Damaged: not UTF-8, no subject, no reason, an unknown kind.
        text.extend_from_slice(b"u \xff a.o\nh deps\nm  b.o\nzz - c.o\nu why d.o\n");
        let read: Vec<(Kind, &str)> = lines(&text, Layout::Session)
            .map(|l| (l.kind, l.reason))
            .collect();
        assert_eq!(
            read,
            [
                (Kind::Hit, "deps"),
                (Kind::Error, "no_space_left"),
                (Kind::Uncacheable, "why")
            ]
        );
        // A session's line is no line of the counters.
        assert_eq!(lines(b"h deps a.o\n", Layout::Counters).count(), 0);
    }
}
