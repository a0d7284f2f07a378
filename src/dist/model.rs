//! The scheduling model `pik plan` replays a recorded build with: the build's job log
//! (`<build-dir>/pik-jobs.log`, one line per compile that ran) against simulated builders of a
//! given per-core speed, slot count and round-trip time, under the same placement rule the
//! wrapper follows (an idle builder slot first, else a free local core, else wait).
//!
//! What the log gives and what the model assumes:
//! - The make run is cut into *windows* where compiles ran and *serial* stretches where none
//!   did for at least [`SERIAL_GAP`] (Kconfig's sync, links, modpost). Serial stretches are
//!   replayed as they were; more builders cannot shorten them.
//! - A shorter pause before a compile is make's and fixdep's own work for it: local CPU,
//!   charged to that compile on a local core.
//! - Inside a window the compiles are independent (kbuild's compiles in a directory are) and
//!   start in their recorded order, as many at once as make has job slots (local cores plus
//!   builder slots, as `pik build` gives make).
//! - A compile a builder may take costs `cpp` on a local core (preprocessing; 0 for pump
//!   jobs), then `rtt + compile / speed` on the builder; anything else runs on a local core
//!   for its recorded time. Times recorded for jobs that already ran remotely are taken as
//!   the local compile time (less their preprocessing), so replay a local build for the best
//!   prediction.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// A pause with no compile running at least this long is serial work (a link, a sync), not
/// one compile's make and fixdep overhead.
pub const SERIAL_GAP: f64 = 0.25;

/// One compile of the recorded build.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Start, seconds after make started.
    pub start: f64,
    /// Its compile time on this machine, seconds.
    pub compile: f64,
    /// Local preprocessing recorded for it (remote jobs), seconds.
    pub cpp: f64,
    /// A builder could take it.
    pub distributable: bool,
}

/// A recorded build: the make run and its compiles in start order.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// make's wall time, seconds.
    pub make: f64,
    /// The compiles that ran.
    pub jobs: Vec<Job>,
}

/// A simulated builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Builder {
    /// Jobs at once.
    pub slots: usize,
    /// Per-core speed against this machine's (0.5: a job takes twice as long).
    pub speed: f64,
    /// Round trip plus transfer per job, seconds.
    pub rtt: f64,
}

/// What the model is asked: local cores, builders, local preprocessing per remote job.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// Local cores (compiles, preprocessing and make's own work here at once).
    pub local: usize,
    /// The builders.
    pub builders: Vec<Builder>,
    /// Local preprocessing per remote job, seconds (`None`: the recorded mean, where the log
    /// has remote jobs, else [`DEFAULT_CPP`]).
    pub cpp: Option<f64>,
}

/// Local preprocessing per remote job when the log has none: measured on this project's
/// 2-core x86 VM for the kernel (~128 ms of local CPU per job, anchors-cache-dist.md §3).
pub const DEFAULT_CPP: f64 = 0.128;

/// The model's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Predicted make wall time, seconds.
    pub wall_s: f64,
    /// Of it, serial stretches (replayed as recorded).
    pub serial_s: f64,
    /// Compiles placed on builders.
    pub remote_jobs: usize,
    /// Compiles placed on local cores.
    pub local_jobs: usize,
}

impl Recorded {
    /// Reads a job log; `make` comes from its `# make <start> <end>` line (the last one).
    pub fn read(path: &Path) -> Result<Recorded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the job log {}", path.display()))?;
        Recorded::parse(&text).with_context(|| format!("in the job log {}", path.display()))
    }

    /// Parses a job log's text.
    pub fn parse(text: &str) -> Result<Recorded> {
        let mut make = None;
        let mut lines = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# make ") {
                let mut f = rest.split(' ').map(str::parse::<u64>);
                if let (Some(Ok(s)), Some(Ok(e))) = (f.next(), f.next()) {
                    make = Some((s, e.max(s)));
                }
            } else if let Some(j) = crate::wrapper::JobLine::parse(l) {
                lines.push(j);
            }
        }
        let Some((m0, m1)) = make else {
            bail!(
                "no `# make` line: the log is incomplete (the build stopped?); record a build \
                 that finished"
            );
        };
        if lines.is_empty() {
            bail!("no compile ran in this build (a memo or full cache hit?): record a build with an empty object cache (PIK_OBJECT_CACHE_DIR=<empty dir>)");
        }
        lines.sort_by_key(|j| j.start_ns);
        let s = |ns: u64| ns.saturating_sub(m0) as f64 / 1e9;
        let jobs = lines
            .iter()
            .map(|j| {
                let cpp = j.cpp_ms as f64 / 1e3;
                let wall = (j.end_ns - j.start_ns) as f64 / 1e9;
                Job {
                    start: s(j.start_ns),
                    compile: (wall - cpp).max(0.0),
                    cpp,
                    distributable: j.distributable || recorded_remote(&j.route),
                }
            })
            .collect();
        Ok(Recorded {
            make: (m1 - m0) as f64 / 1e9,
            jobs,
        })
    }

    /// Mean local preprocessing of the jobs that went out, if any did.
    fn mean_cpp(&self) -> Option<f64> {
        let sent: Vec<f64> = self
            .jobs
            .iter()
            .filter(|j| j.cpp > 0.0)
            .map(|j| j.cpp)
            .collect();
        (!sent.is_empty()).then(|| sent.iter().sum::<f64>() / sent.len() as f64)
    }
}

/// Whether the recorded route means a builder took (or tried) the job.
fn recorded_remote(route: &str) -> bool {
    matches!(route, "remote" | "pump" | "fallback")
}

/// A stretch of the make run: serial work, or a window of compiles each with the make and
/// fixdep time before it.
enum Stretch<'a> {
    Serial(f64),
    Window(Vec<(f64, &'a Job)>),
}

/// Cuts the recorded run into serial stretches and windows of compiles.
fn stretches(r: &Recorded) -> Vec<Stretch<'_>> {
    let mut out = Vec::new();
    let mut window: Vec<(f64, &Job)> = Vec::new();
    // `busy_until`: when the last compile started so far ends; a compile starting later
    // starts after a pause with nothing compiling.
    let mut busy_until = 0.0f64;
    for j in &r.jobs {
        let pause = (j.start - busy_until).max(0.0);
        if pause >= SERIAL_GAP || window.is_empty() && pause > 0.0 {
            if !window.is_empty() {
                out.push(Stretch::Window(std::mem::take(&mut window)));
            }
            out.push(Stretch::Serial(pause));
            window.push((0.0, j));
        } else {
            window.push((pause, j));
        }
        busy_until = busy_until.max(j.start + j.cpp + j.compile);
    }
    if !window.is_empty() {
        out.push(Stretch::Window(window));
    }
    out.push(Stretch::Serial((r.make - busy_until).max(0.0)));
    out
}

/// Predicts make's wall time for `r` under `setup`.
pub fn predict(r: &Recorded, setup: &Setup) -> Prediction {
    let cpp = setup.cpp.or_else(|| r.mean_cpp()).unwrap_or(DEFAULT_CPP);
    let mut p = Prediction {
        wall_s: 0.0,
        serial_s: 0.0,
        remote_jobs: 0,
        local_jobs: 0,
    };
    for s in stretches(r) {
        match s {
            Stretch::Serial(t) => {
                p.wall_s += t;
                p.serial_s += t;
            }
            Stretch::Window(jobs) => p.wall_s += window(&jobs, setup, cpp, &mut p),
        }
    }
    p
}

/// The simulated length of one window of compiles, started at time 0.
fn window(jobs: &[(f64, &Job)], setup: &Setup, cpp: f64, p: &mut Prediction) -> f64 {
    let local = setup.local.max(1);
    let mut cores = vec![0.0f64; local];
    // Every builder slot: (free at, builder).
    let mut remote: Vec<(f64, &Builder)> = setup
        .builders
        .iter()
        .flat_map(|b| std::iter::repeat_n(b, b.slots))
        .map(|b| (0.0, b))
        .collect();
    // make's job slots: when each is next free.
    let mut tokens = vec![0.0f64; local + remote.len()];
    let mut end = 0.0f64;
    for &(overhead, job) in jobs {
        let (ti, ready) = earliest(&tokens);
        let (ci, core_free) = earliest(&cores);
        // make and fixdep for this job run here first.
        let at = ready.max(core_free) + overhead;
        let builder = remote
            .iter()
            .enumerate()
            .filter(|_| job.distributable)
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .map(|(i, s)| (i, s.0));
        let done = match builder {
            // An idle builder slot goes first (held from here on, as the wrapper holds it
            // while it preprocesses); preprocessing holds the local core.
            Some((ri, free)) if free <= at => {
                let b = remote[ri].1;
                cores[ci] = at + cpp;
                let done = at + cpp + b.rtt + job.compile / b.speed.max(1e-6);
                remote[ri].0 = done;
                p.remote_jobs += 1;
                done
            }
            _ => {
                cores[ci] = at + job.compile;
                p.local_jobs += 1;
                at + job.compile
            }
        };
        tokens[ti] = done;
        end = end.max(done);
    }
    end
}

/// The index and value of the smallest entry (`v` is never empty).
fn earliest(v: &[f64]) -> (usize, f64) {
    v.iter()
        .copied()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(start: f64, compile: f64) -> Job {
        Job {
            start,
            compile,
            cpp: 0.0,
            distributable: true,
        }
    }

    #[test]
    fn a_log_parses_and_cuts_into_windows() {
        let log = "# make 1000000000 11000000000\n\
                   2000000000 3000000000 local d 900 0 a.o\n\
                   3010000000 4000000000 local l 900 0 b.o\n\
                   junk\n";
        let r = Recorded::parse(log).unwrap();
        assert_eq!(r.make, 10.0);
        assert_eq!(r.jobs.len(), 2);
        assert!(r.jobs[0].distributable && !r.jobs[1].distributable);
        // 1 s serial before, a window of two, 7 s serial after: one core replays 10 s.
        let one = Setup {
            local: 1,
            builders: vec![],
            cpp: None,
        };
        let p = predict(&r, &one);
        assert!((p.wall_s - 10.0).abs() < 1e-6, "{p:?}");
        assert!((p.serial_s - 8.0).abs() < 1e-6, "{p:?}");
        assert!(Recorded::parse("1 2 local d 1 0 x.o\n").is_err());
    }

    #[test]
    fn builders_shorten_windows_not_serial_stretches() {
        let r = Recorded {
            make: 12.0,
            jobs: (0..8).map(|i| job(1.0 + i as f64, 1.0)).collect(),
        };
        let alone = Setup {
            local: 1,
            builders: vec![],
            cpp: Some(0.0),
        };
        assert!((predict(&r, &alone).wall_s - 12.0).abs() < 1e-6);
        let b = Builder {
            slots: 1,
            speed: 1.0,
            rtt: 0.0,
        };
        let one = Setup {
            builders: vec![b],
            ..alone.clone()
        };
        let p = predict(&r, &one);
        // 8 one-second jobs on a core and a builder: 4 s instead of 8; 4 s serial stay.
        assert!((p.wall_s - 8.0).abs() < 1e-6, "{p:?}");
        assert_eq!((p.remote_jobs, p.local_jobs), (4, 4));
        // A slow builder (half speed) takes fewer jobs; local-only jobs never go out.
        let slow = Setup {
            builders: vec![Builder { speed: 0.5, ..b }],
            ..alone.clone()
        };
        assert!(predict(&r, &slow).wall_s > p.wall_s);
        let mut pinned = r.clone();
        pinned.jobs.iter_mut().for_each(|j| j.distributable = false);
        assert_eq!(predict(&pinned, &one).remote_jobs, 0);
    }
}
