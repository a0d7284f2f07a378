//! Measuring one command the way a user runs it: wall time, the CPU time of its whole process
//! tree and its peak memory (from `wait4`, which sums every descendant the tree waited for), the
//! page-cache state of a cache store before a warm build, and a build's cache outcome from its
//! session log. `pik bench` and the `kernel_cache` harness both time through here.

use crate::wrapper::Summary;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Instant;

/// What one command (or a sequence, summed) cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// User CPU of the process tree, seconds.
    pub user_s: f64,
    /// System CPU of the process tree, seconds.
    pub sys_s: f64,
    /// Peak resident set of the largest single process in the tree, KiB.
    pub peak_rss_kib: u64,
}

impl Measured {
    /// Adds the cost of a later step: times add up, the peak is the larger one.
    pub fn add(&mut self, o: &Measured) {
        self.wall_s += o.wall_s;
        self.user_s += o.user_s;
        self.sys_s += o.sys_s;
        self.peak_rss_kib = self.peak_rss_kib.max(o.peak_rss_kib);
    }
}

/// Runs `cmd` to completion in a process group of its own (so an interruption reaches its
/// whole tree) and measures it; `what` names it in errors. With `on_line`, its stdout is read
/// line by line and given to it; otherwise stdout is left as the caller set it up.
pub fn run(
    cmd: &mut Command,
    what: &str,
    on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Measured> {
    cmd.stdin(Stdio::null());
    if on_line.is_some() {
        cmd.stdout(Stdio::piped());
    }
    let started = Instant::now();
    let (mut child, registration) = crate::interrupt::spawn(cmd, what)?;
    if let (Some(f), Some(out)) = (on_line, child.stdout.take()) {
        for line in BufReader::new(out).split(b'\n').map_while(|l| l.ok()) {
            f(&String::from_utf8_lossy(&line));
        }
    }
    let (status, usage) =
        wait4(child.id() as libc::pid_t).with_context(|| format!("waiting for {what}"))?;
    let wall_s = started.elapsed().as_secs_f64();
    drop(registration);
    crate::interrupt::check(what)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{what} failed ({})", describe_status(status));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall_s,
        user_s: secs(usage.ru_utime),
        sys_s: secs(usage.ru_stime),
        // Linux reports KiB.
        peak_rss_kib: usage.ru_maxrss.max(0) as u64,
    })
}

/// Waits for the child `pid`, returning its wait status and the resource use of it and every
/// descendant it waited for.
fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own child, not yet reaped (std's Child
        // only reaps in wait/try_wait, which are never called on it).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Whether a cache store's files are in memory when a warm build starts. It matters on VMs
/// whose page cache is reclaimed within minutes: a warm build right after its own cold build
/// finds every entry in memory, one later reads them from disk. Set alike for every contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorePages {
    /// Written back and dropped from the page cache: on disk only.
    Evict,
    /// Every file read just before.
    Load,
    /// Whatever the runs before left.
    AsIs,
}

impl FromStr for StorePages {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<StorePages> {
        match s {
            "evict" => Ok(StorePages::Evict),
            "load" => Ok(StorePages::Load),
            "asis" => Ok(StorePages::AsIs),
            other => bail!("store pages {other:?}: expected evict, load or asis"),
        }
    }
}

impl std::fmt::Display for StorePages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorePages::Evict => "evict",
            StorePages::Load => "load",
            StorePages::AsIs => "asis",
        })
    }
}

impl StorePages {
    /// Puts every file under `dir` in this state (written back first, so eviction can drop it).
    pub fn apply(self, dir: &Path) {
        if self == StorePages::AsIs {
            return;
        }
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        for e in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
        {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(e.path()) else {
                continue;
            };
            match self {
                StorePages::Load => {
                    let _ = std::io::copy(&mut f, &mut std::io::sink());
                }
                StorePages::Evict => {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid open descriptor; advice only, no memory is touched.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                }
                StorePages::AsIs => {}
            }
        }
    }
}

/// One build's use of pik's object cache, from its session log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Hits, misses, probes and uncacheable calls (the one count the build itself reports).
    pub summary: Summary,
    /// The objects really compiled (cache misses, probes left out), as the log names them.
    pub compiled: Vec<String>,
}

/// Reads the session log a build wrote through [`crate::wrapper::SESSION_LOG_ENV`].
pub fn outcome(session_log: &Path) -> Outcome {
    let text = std::fs::read_to_string(session_log).unwrap_or_default();
    let compiled = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            match (it.next(), it.next(), it.next()) {
                (Some("m"), Some(reason), Some(out)) if reason != "probe" => Some(out.to_string()),
                _ => None,
            }
        })
        .collect();
    Outcome {
        summary: Summary::read(session_log),
        compiled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_is_measured_whole() {
        // The shell waits for a child that burns CPU: its time counts as the tree's.
        let mut c = Command::new("sh");
        c.args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'"]);
        let m = run(&mut c, "a busy shell", None).unwrap();
        assert!(m.user_s + m.sys_s > 0.0, "{m:?}");
        assert!(m.wall_s > 0.0 && m.peak_rss_kib > 0, "{m:?}");
        let mut lines = Vec::new();
        let mut f = |l: &str| lines.push(l.to_string());
        run(
            Command::new("printf").arg("a\\nb\\n"),
            "printf",
            Some(&mut f),
        )
        .unwrap();
        assert_eq!(lines, ["a", "b"]);
        let e = run(Command::new("false").arg("x"), "false", None).unwrap_err();
        assert!(
            format!("{e:#}").contains("false failed (exit status 1)"),
            "{e:#}"
        );
    }

    #[test]
    fn the_outcome_names_what_was_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(
            &log,
            "h deps a.o\nm - drivers/x.o\nm probe .tmp/y\nu unknown_flag z.o\n",
        )
        .unwrap();
        let o = outcome(&log);
        assert_eq!((o.summary.hits, o.summary.misses), (1, 1));
        assert_eq!(o.compiled, ["drivers/x.o"]);
        assert_eq!("load".parse::<StorePages>().unwrap(), StorePages::Load);
        assert!("x".parse::<StorePages>().is_err());
    }
}
