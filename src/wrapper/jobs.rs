//! The job log: one line per compile that ran (not per hit), with when it ran, where, and the
//! local CPU it cost, appended to the file [`JOBS_LOG_ENV`] names. `pik build` keeps it beside
//! the build (`<build-dir>/pik-jobs.log`) and `pik plan` replays it against simulated builders.
//!
//! ```text
//! <start ns> <end ns> <route> <d|l> <local cpu ms> <cpp ms> <output>
//! ```
//!
//! `route` is `local`, `remote`, `pump`, `fallback`, `probe` or `host`; `d` marks a compile a
//! builder could take (by distcc's rules), `l` one that must run here (assembly, plugins,
//! probes, host programs). `pik build` adds `# make <start ns> <end ns>` for the make run.

use super::args::Compile;
use super::miss::Ran;
use super::remote::Route;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Names the job log a wrapped compile appends to.
pub const JOBS_LOG_ENV: &str = "PIK_JOBS_LOG";

/// One line of the job log, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLine {
    /// When it started (unix ns).
    pub start_ns: u64,
    /// When it ended (unix ns).
    pub end_ns: u64,
    /// `local`, `remote`, `pump`, `fallback`, `probe` or `host`.
    pub route: String,
    /// A builder could have taken it.
    pub distributable: bool,
    /// CPU this machine spent on it (the wrapper and its children), ms.
    pub cpu_ms: u64,
    /// Of its wall time, how long local preprocessing for a builder took, ms.
    pub cpp_ms: u64,
    /// The object.
    pub output: String,
}

impl JobLine {
    /// Parses one line; `None` for comments and damaged lines.
    pub fn parse(line: &str) -> Option<JobLine> {
        let mut f = line.splitn(7, ' ');
        let mut num = || f.next()?.parse::<u64>().ok();
        let (start_ns, end_ns) = (num()?, num()?);
        let route = f.next()?.to_string();
        let distributable = match f.next()? {
            "d" => true,
            "l" => false,
            _ => return None,
        };
        let cpu_ms = f.next()?.parse().ok()?;
        let cpp_ms = f.next()?.parse().ok()?;
        let output = f.next()?.to_string();
        (end_ns >= start_ns).then_some(JobLine {
            start_ns,
            end_ns,
            route,
            distributable,
            cpu_ms,
            cpp_ms,
            output,
        })
    }
}

/// Unix time now, ns.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends the line for a compile that started at `started` and just ended (best effort; one
/// `write` per line, so concurrent compiles never interleave).
pub(super) fn record(started: Instant, c: &Compile, route: &Route, ran: &Ran) {
    let Some(log) = std::env::var_os(JOBS_LOG_ENV).filter(|v| !v.is_empty()) else {
        return;
    };
    let end = now_ns();
    let start = end.saturating_sub(started.elapsed().as_nanos() as u64);
    let where_ = match (c.probe, c.host) {
        (Some(_), _) => "probe",
        (None, true) => "host",
        (None, false) => route.kind(),
    };
    let d = if route.distributable() { "d" } else { "l" };
    let mut line = format!("{start} {end} {where_} {d} {} {} ", cpu_ms(), ran.cpp_ms).into_bytes();
    line.extend(
        c.output
            .as_os_str()
            .as_bytes()
            .iter()
            .map(|&b| if b == b'\n' { b'?' } else { b }),
    );
    line.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(&line);
    }
}

/// CPU time of this process and the children it waited for, ms.
fn cpu_ms() -> u64 {
    let total = |who| {
        // SAFETY: getrusage fills the struct it is given; zeroed is a valid initial value.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and a pointer to a live rusage.
        unsafe { libc::getrusage(who, &mut r) };
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        ms(r.ru_utime) + ms(r.ru_stime)
    };
    total(libc::RUSAGE_SELF) + total(libc::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let l = JobLine::parse("10 30 pump d 12 0 kernel/fork.o").unwrap();
        assert_eq!(
            (l.route.as_str(), l.cpu_ms, l.distributable),
            ("pump", 12, true)
        );
        assert_eq!(l.output, "kernel/fork.o");
        assert!(JobLine::parse("# make 1 2").is_none());
        assert!(JobLine::parse("30 10 local l 1 0 x.o").is_none());
        assert!(JobLine::parse("1 2 local x 1 0 x.o").is_none());
    }
}
