//! `pik bench`: the checks made before anything runs, the bench's work dir (fresh build and
//! output dirs per run, the stores the scenarios fill), the untimed preparation (pik's tree and
//! `.config` for make, the edit patch), the runs themselves in rotating order,
//! progress, and one record appended per measurement.

use super::measure::{Measured, StorePages};
use super::record::{self, Cpu, Host, Jobs, Phases, Record, Workload};
use super::scenario::{self, Scenario};
use crate::build::kbuild::Kbuild;
use crate::build::plan::Plan;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `pik bench` takes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The build every scenario makes (target, profile, source, fragments, `-j`, …).
    pub build: crate::build::Options,
    /// The scenarios, parsed.
    pub scenarios: Vec<Scenario>,
    /// Runs of each scenario.
    pub runs: u32,
    /// The JSON-lines file records are appended to.
    pub results: PathBuf,
    /// The host's name in the records; its hostname when None.
    pub label: Option<String>,
    /// The bench's work dir; `<cache dir>-bench` when None.
    pub dir: Option<PathBuf>,
    /// The page-cache state of a store before a warm build.
    pub store_pages: StorePages,
    /// The driver source the edit patch changes, relative to the tree.
    pub edit_file: String,
    /// The `CONFIG_…=m` the edit turns on.
    pub edit_set: String,
    /// Keep every run's build and output dirs.
    pub keep: bool,
}

/// The file that marks a directory as a bench work dir pik made (and may empty parts of).
const MARKER: &str = ".pik-bench";

/// A bench in progress: the resolved inputs and where everything goes.
pub(super) struct Bench<'a> {
    pub(super) opt: &'a Options,
    /// The pik binary the scenarios run (this one).
    pub(super) exe: PathBuf,
    /// pik's cache dir, passed to every `pik build` (workspaces and the memo are the user's).
    pub(super) cache_dir: PathBuf,
    /// The work dir.
    pub(super) dir: PathBuf,
    /// Every input of the build, resolved once.
    pub(super) plan: Plan,
    /// The `pik build` arguments that name the build (target, profile, source, …).
    pub(super) build_args: Vec<OsString>,
    pub(super) host: Host,
    pub(super) label: String,
    pub(super) jobs: usize,
    /// pik's tree and `.config`, for the make scenarios and the edit.
    pub(super) prep: Option<Prep>,
    started: Instant,
    seq: u32,
}

/// What the untimed preparation made.
pub(super) struct Prep {
    /// kbuild on pik's workspace tree (no cache), into the prep build dir.
    pub(super) kbuild: Kbuild,
    /// The `.config` pik made for this build.
    pub(super) config: PathBuf,
    /// The make targets (image, modules when configured, DTBs).
    pub(super) targets: Vec<String>,
    /// Whether the config builds modules.
    pub(super) modules: bool,
    /// The workload the make scenarios build.
    pub(super) workload: Workload,
    /// The edit's patch file, and the changed file's new bytes.
    pub(super) edit: Option<(PathBuf, Vec<u8>)>,
}

/// A run's own dirs, removed after it unless `--keep`.
pub(super) struct RunDir {
    pub(super) root: PathBuf,
    pub(super) build: PathBuf,
    pub(super) out: PathBuf,
}

/// Runs the bench; returns how many records were appended.
pub fn run(opt: &Options) -> Result<usize> {
    let mut b = Bench::new(opt)?;
    b.prepare()?;
    let total = opt.runs as usize * opt.scenarios.len();
    let mut slot = 0;
    let mut records = 0;
    for run in 0..opt.runs {
        for s in scenario::order(&opt.scenarios, run as usize) {
            slot += 1;
            eprintln!(
                "pik bench: run {}/{}  {:<12} slot {slot}/{total}  elapsed {}",
                run + 1,
                opt.runs,
                s.name(),
                clock(b.started.elapsed().as_secs_f64())
            );
            for r in b.scenario(s, run + 1)? {
                record::append(&opt.results, &r)?;
                eprintln!("pik bench: {}", summary_line(&r));
                records += 1;
            }
        }
    }
    eprintln!(
        "pik bench: {records} records appended to {} in {}",
        opt.results.display(),
        clock(b.started.elapsed().as_secs_f64())
    );
    Ok(records)
}

impl<'a> Bench<'a> {
    /// Everything checked before anything runs: the scenarios against this host, the build's
    /// inputs (as `pik build` checks them), the results file and the work dir.
    fn new(opt: &'a Options) -> Result<Bench<'a>> {
        if opt.runs == 0 {
            bail!("--runs 0: run each scenario at least once");
        }
        let exe = std::env::current_exe().context("locating the pik binary")?;
        let settings = crate::settings::load()?;
        let hosts = settings.hosts()?.value;
        scenario::check_host(
            &opt.scenarios,
            &hosts,
            &settings.config_file().describe(),
            &exe,
        )?;
        check_edit_set(&opt.edit_set)?;
        let plan = Plan::resolve(&opt.build)?;
        let cache_dir = std::path::absolute(crate::paths::cache_dir()?)?;
        let dir = work_dir(opt.dir.as_deref(), &cache_dir)?;
        // An unwritable results file fails now, not after the first hour of building.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opt.results)
            .with_context(|| format!("opening the results file {}", opt.results.display()))?;
        let ccache = opt.scenarios.iter().any(|s| s.name().starts_with("ccache"));
        let host = super::host::fingerprint(&plan.toolchain.cc, ccache);
        let label = opt.label.clone().unwrap_or_else(|| host.hostname.clone());
        let jobs = opt.build.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(Bench {
            build_args: build_args(&opt.build, &plan.profile, jobs),
            opt,
            exe,
            cache_dir,
            dir,
            plan,
            host,
            label,
            jobs,
            prep: None,
            started: Instant::now(),
            seq: 0,
        })
    }

    /// The untimed setup the scenarios share: pik's tree and `.config` (make scenarios, edit).
    /// The memo needs none: every `pik build` stores its result there, so `memo` primes it
    /// itself only when nothing before it did (a full build's worth of time saved).
    fn prepare(&mut self) -> Result<()> {
        if self.opt.scenarios.iter().any(|s| s.uses_make())
            || self.opt.scenarios.contains(&Scenario::Edit)
        {
            eprintln!("pik bench: preparing pik's tree and .config (pik build --config-only)");
            self.prep = Some(self.prep_config()?);
        }
        Ok(())
    }

    /// One scenario's run: its records.
    fn scenario(&mut self, s: Scenario, run: u32) -> Result<Vec<Record>> {
        let records = match s {
            Scenario::Plain => self.plain(run)?,
            Scenario::Cold => vec![self.cold(run)?],
            Scenario::Warm => vec![self.warm(run)?],
            Scenario::Memo => vec![self.memo(run)?],
            Scenario::Edit => self.edit(run)?,
            Scenario::CcacheCold => vec![self.ccache(run, false)?],
            Scenario::CcacheWarm => vec![self.ccache(run, true)?],
            Scenario::Dist => vec![self.dist(run)?],
        };
        Ok(records)
    }

    /// A fresh dir for one run of `what`.
    pub(super) fn run_dir(&mut self, what: &str) -> Result<RunDir> {
        self.seq += 1;
        let root = self
            .dir
            .join("runs")
            .join(format!("{:03}-{what}", self.seq));
        crate::fsutil::remove_tree(&root)?;
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(RunDir {
            build: root.join("build"),
            out: root.join("out"),
            root,
        })
    }

    /// Removes a finished run's dirs (all made by this bench), unless `--keep`.
    pub(super) fn done(&self, rd: RunDir) -> Result<()> {
        if self.opt.keep {
            return Ok(());
        }
        crate::fsutil::remove_tree(&rd.root)
    }

    /// A directory of the work dir, for a store a scenario fills.
    pub(super) fn store(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Empties the store `name` (made by this bench) and forgets it was filled.
    pub(super) fn empty_store(&self, name: &str) -> Result<()> {
        let d = self.store(name);
        let _ = std::fs::remove_file(self.filled_marker(name));
        crate::fsutil::remove_tree(&d)?;
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))
    }

    fn filled_marker(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.filled"))
    }

    /// Whether a cold build filled the store `name` (and it was not emptied since).
    pub(super) fn store_filled(&self, name: &str) -> bool {
        self.filled_marker(name).is_file()
    }

    /// Records that a cold build filled the store `name`.
    pub(super) fn mark_filled(&self, name: &str) -> Result<()> {
        std::fs::write(self.filled_marker(name), b"")
            .with_context(|| format!("writing {}", self.filled_marker(name).display()))
    }

    /// A record of `scenario` with what every scenario has; the caller fills in the rest.
    pub(super) fn record(
        &self,
        scenario: &str,
        run: u32,
        m: &Measured,
        workload: Workload,
    ) -> Record {
        Record {
            schema: record::SCHEMA.into(),
            scenario: scenario.into(),
            run,
            runs: self.opt.runs,
            started_unix: unix_now().saturating_sub(m.wall_s as u64),
            label: self.label.clone(),
            workload,
            wall_s: m.wall_s,
            make_s: None,
            cpu: Cpu {
                user_s: m.user_s,
                sys_s: m.sys_s,
            },
            peak_rss_kib: m.peak_rss_kib,
            phases_s: Phases::default(),
            cache: None,
            jobs: Jobs {
                slots: self.jobs as u64,
                ..Jobs::default()
            },
            objects_compiled: None,
            memo_hit: None,
            edit: None,
            store_pages: None,
            host: self.host.clone(),
            notes: Vec::new(),
        }
    }
}

/// The work dir: `dir`, else `<cache dir>-bench`. Outputs may not lie inside pik's cache dir
/// (`pik build` refuses them there), so neither may the work dir. A directory that exists must
/// be empty or one a bench made.
fn work_dir(dir: Option<&Path>, cache_dir: &Path) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => std::path::absolute(d)?,
        None => {
            let mut s = cache_dir.as_os_str().to_owned();
            s.push("-bench");
            PathBuf::from(s)
        }
    };
    if dir.starts_with(cache_dir) || cache_dir.starts_with(&dir) {
        bail!(
            "the bench dir {} is inside or around pik's cache dir {}, where `pik build` may not \
             write outputs: choose another with --dir",
            dir.display(),
            cache_dir.display()
        );
    }
    claim_dir(&dir)?;
    // Run dirs an interrupted bench left behind (its own, under its marker).
    crate::fsutil::remove_tree(&dir.join("runs"))?;
    Ok(dir)
}

/// Makes `dir` a bench work dir, whose contents a bench may remove: it must be new, empty or
/// one a bench made (it holds the marker). Anything else is someone's directory and refused.
/// The benches under `benches/` claim theirs the same way.
pub fn claim_dir(dir: &Path) -> Result<()> {
    let marker = dir.join(MARKER);
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if !empty && !marker.is_file() {
        bail!(
            "{} is not empty and not a pik bench dir (no {MARKER} in it): pik only removes what \
             it made; choose an empty or new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        &marker,
        b"a pik bench work dir: build and output dirs per run, stores\n",
    )
    .with_context(|| format!("writing {}", marker.display()))
}

/// `CONFIG_SYMBOL=m`.
fn check_edit_set(s: &str) -> Result<()> {
    match s.split_once('=') {
        Some((sym, "m")) if sym.starts_with("CONFIG_") && sym.len() > 7 => Ok(()),
        _ => bail!("--edit-set {s:?}: expected CONFIG_SYMBOL=m (one more module)"),
    }
}

/// The `pik build` arguments that name the build `opt` describes (the settings already
/// resolved, so every child builds exactly this).
fn build_args(opt: &crate::build::Options, profile: &str, jobs: usize) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
        a.push(k.into());
        a.push(v.as_ref().to_owned());
    };
    push("--target", &opt.target);
    push("--profile", &profile);
    push("--jobs", &jobs.to_string());
    if let Some(s) = &opt.source {
        push("--source", s);
    }
    opt.fragments.iter().for_each(|f| push("--fragment", f));
    opt.set.iter().for_each(|s| push("--set", s));
    opt.patches.iter().for_each(|p| push("--patch", p));
    push("--patch-fuzz", &opt.patch_fuzz.to_string());
    if let Some(k) = &opt.kconfigs {
        push("--kconfigs", k);
    }
    if let Some(p) = &opt.patches_dir {
        push("--patches", p);
    }
    if let Some(t) = &opt.toolchain.prefix {
        push("--toolchain", t);
    }
    if opt.no_nixos {
        a.push("--no-nixos".into());
    }
    if opt.toolchain.llvm {
        a.push("--llvm".into());
    }
    a
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `h:mm:ss`.
fn clock(s: f64) -> String {
    let s = s as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// What one record says at a glance, for the progress lines.
fn summary_line(r: &Record) -> String {
    let mut s = format!(
        "{:<18} {:8.1} s wall, {:.1} s CPU",
        r.scenario,
        r.wall_s,
        r.cpu.user_s + r.cpu.sys_s
    );
    if let Some(c) = &r.cache {
        s.push_str(&format!(
            ", {} hits {} misses ({})",
            c.hits, c.misses, c.kind
        ));
    }
    if let Some(e) = &r.edit {
        s.push_str(&format!(
            ", {} recompiled, {} served",
            e.recompiled, e.served
        ));
    }
    if r.memo_hit == Some(true) {
        s.push_str(", memo hit");
    }
    s
}

/// Adds `m` to the phase time `slot`.
pub(super) fn add_phase(slot: &mut Option<f64>, m: &Measured) {
    *slot = Some(slot.unwrap_or(0.0) + m.wall_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_dir_is_pik_s_own() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let e = work_dir(Some(&cache.join("bench")), &cache).unwrap_err();
        assert!(e.to_string().contains("--dir"), "{e}");
        let theirs = t.path().join("theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
        assert!(work_dir(Some(&theirs), &cache).is_err());
        let d = work_dir(None, &cache).unwrap();
        assert_eq!(d, t.path().join("cache-bench"));
        // A second bench may reuse it.
        assert_eq!(work_dir(None, &cache).unwrap(), d);
        assert!(check_edit_set("CONFIG_SOFT_WATCHDOG=m").is_ok());
        assert!(check_edit_set("CONFIG_X=y").is_err());
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
