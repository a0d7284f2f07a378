//! The scenarios that run the kernel's own make, as a user without pik would: plain (no
//! cache), ccache in depend mode (cold and warm), and plain make's incremental rebuild of the
//! edits. Same tree and `.config` as pik's build, and make's command line from the same code
//! `pik build` uses (`crate::build::kbuild`), minus pik's compiler cache: `make olddefconfig`
//! in a fresh build dir, the image, modules and DTBs, then `modules_install` and `dtbs_install`.

use super::measure::{self, Measured};
use super::record::{Cache, Edit, Phases, Record, Workload};
use super::runner::{add_phase, Bench, RunDir};
use super::Scenario;
use crate::build::kbuild::{is_compile_line, Kbuild};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// ccache's directory in the work dir: ccache-cold empties it, ccache-warm reuses it.
const CCACHE: &str = "ccache";

/// How often a make step says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// What a sequence of make steps cost.
#[derive(Debug, Default)]
struct MakeRun {
    measured: Measured,
    phases: Phases,
    /// Objects compiled, as make's quiet lines name them.
    compiled: Vec<String>,
    /// BLAKE3 of the build dir's `.config` afterwards.
    config_blake3: String,
}

impl Bench<'_> {
    fn prep(&self) -> &super::runner::Prep {
        self.prep
            .as_ref()
            .expect("the make scenarios run after the preparation")
    }

    /// kbuild on `tree` into `build`, as pik's preparation set it up otherwise.
    fn kbuild_in(&self, tree: &Path, build: &Path) -> Kbuild {
        let mut kb = self.prep().kbuild.clone();
        kb.tree = tree.to_path_buf();
        kb.build_dir = build.to_path_buf();
        kb.log = build.join("pik-build.log");
        kb
    }

    /// `plain`: make with no cache in a fresh build dir, on a link farm of pik's tree (so the
    /// edits can change a file without touching pik's workspace); when edit runs too, plain
    /// make's incremental rebuilds of the same changes follow in the same build dir.
    pub(super) fn plain(&mut self, run: u32) -> Result<Vec<Record>> {
        let rd = self.run_dir("plain")?;
        let tree = rd.root.join("tree");
        crate::fsutil::link_farm(&self.prep().kbuild.tree, &tree, &|_, _| false)?;
        let kb = self.kbuild_in(&tree, &rd.build);
        let b = self.make_build(&kb, false, &rd)?;
        let workload = Workload {
            config_blake3: b.config_blake3.clone(),
            ..self.prep().workload.clone()
        };
        let mut out = vec![self.make_record("plain", run, &b, workload.clone())];
        if self.opt.scenarios.contains(&Scenario::Edit) {
            out.extend(self.kbuild_edits(run, &kb, &rd, workload)?);
        }
        self.done(rd)?;
        Ok(out)
    }

    /// `ccache-cold` (an emptied ccache) or `ccache-warm` (a fresh build dir on the ccache a
    /// cold build filled, filled first when none did; its pages set as `--store-pages` says).
    pub(super) fn ccache(&mut self, run: u32, warm: bool) -> Result<Record> {
        let mut notes = Vec::new();
        if !warm {
            self.empty_store(CCACHE)?;
        } else if !self.store_filled(CCACHE) {
            eprintln!("pik bench: ccache is empty: filling it first (untimed)");
            self.empty_store(CCACHE)?;
            let rd = self.run_dir("ccache-fill")?;
            self.make_build(
                &self.kbuild_in(&self.prep().kbuild.tree, &rd.build),
                true,
                &rd,
            )?;
            self.mark_filled(CCACHE)?;
            self.done(rd)?;
            notes.push("ccache was filled by an untimed cold build first".into());
        }
        if warm {
            self.opt.store_pages.apply(&self.store(CCACHE));
        }
        let mut zero = self.ccache_command();
        zero.arg("-z").stdout(std::process::Stdio::null());
        measure::run(&mut zero, "ccache -z", None)?;
        let name = if warm { "ccache-warm" } else { "ccache-cold" };
        let rd = self.run_dir(name)?;
        let b = self.make_build(
            &self.kbuild_in(&self.prep().kbuild.tree, &rd.build),
            true,
            &rd,
        )?;
        self.mark_filled(CCACHE)?;
        let workload = Workload {
            config_blake3: b.config_blake3.clone(),
            ..self.prep().workload.clone()
        };
        let mut r = self.make_record(name, run, &b, workload);
        let cache = self.ccache_stats()?;
        r.jobs.local = r.jobs.local.saturating_sub(cache.hits);
        r.cache = Some(cache);
        r.store_pages = warm.then(|| self.opt.store_pages.to_string());
        r.notes = notes;
        self.done(rd)?;
        Ok(r)
    }

    /// Plain make's incremental rebuild, in the plain run's build dir, of the changes the edit
    /// scenario makes through pik: one more module (`--edit-set`), then the patched file.
    fn kbuild_edits(
        &self,
        run: u32,
        kb: &Kbuild,
        rd: &RunDir,
        workload: Workload,
    ) -> Result<Vec<Record>> {
        let mut log = File::create(rd.root.join("make-edit.log"))?;
        let config = kb.build_dir.join(".config");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("{}\n", self.opt.edit_set));
        std::fs::write(&config, text)?;
        let mut set = MakeRun::default();
        let started = Instant::now();
        let m = self.make_step(kb, &["olddefconfig"], false, &mut log, &mut set.compiled)?;
        add_phase(&mut set.phases.config, &m);
        set.measured.add(&m);
        self.compile_and_install(kb, false, rd, &mut log, &mut set)?;
        set.measured.wall_s = started.elapsed().as_secs_f64();
        set.config_blake3 = crate::fsutil::hash_file(&config)?;

        let new = &self.edit_patch()?.1;
        replace_file(&kb.tree.join(&self.opt.edit_file), new)?;
        let mut patch = MakeRun::default();
        let started = Instant::now();
        self.compile_and_install(kb, false, rd, &mut log, &mut patch)?;
        patch.measured.wall_s = started.elapsed().as_secs_f64();
        patch.config_blake3 = crate::fsutil::hash_file(&config)?;

        let edits = [
            ("set", &self.opt.edit_set, set),
            ("patch", &self.opt.edit_file, patch),
        ];
        Ok(edits
            .into_iter()
            .map(|(change, detail, b)| {
                let mut r =
                    self.make_record(&format!("kbuild-edit-{change}"), run, &b, workload.clone());
                let mut compiled = b.compiled.clone();
                compiled.truncate(Edit::LISTED);
                r.edit = Some(Edit {
                    change: change.into(),
                    detail: detail.clone(),
                    recompiled: b.compiled.len() as u64,
                    served: 0,
                    compiled,
                    config_blake3: b.config_blake3.clone(),
                });
                r
            })
            .collect())
    }

    /// A fresh build dir with pik's `.config`: `make olddefconfig`, the build, the installs.
    fn make_build(&self, kb: &Kbuild, ccache: bool, rd: &RunDir) -> Result<MakeRun> {
        std::fs::create_dir_all(&kb.build_dir)?;
        std::fs::copy(&self.prep().config, kb.build_dir.join(".config"))
            .context("copying pik's .config")?;
        let mut log = File::create(rd.root.join("make.log"))?;
        let mut b = MakeRun::default();
        let started = Instant::now();
        let m = self.make_step(kb, &["olddefconfig"], ccache, &mut log, &mut b.compiled)?;
        add_phase(&mut b.phases.config, &m);
        b.measured.add(&m);
        self.compile_and_install(kb, ccache, rd, &mut log, &mut b)?;
        b.measured.wall_s = started.elapsed().as_secs_f64();
        b.config_blake3 = crate::fsutil::hash_file(&kb.build_dir.join(".config"))?;
        Ok(b)
    }

    /// make of the image, modules and DTBs, then `modules_install` (stripped, with depmod)
    /// and `dtbs_install` into a fresh dir of the run, as pik installs them.
    fn compile_and_install(
        &self,
        kb: &Kbuild,
        ccache: bool,
        rd: &RunDir,
        log: &mut File,
        b: &mut MakeRun,
    ) -> Result<()> {
        let targets: Vec<&str> = self.prep().targets.iter().map(String::as_str).collect();
        let m = self.make_step(kb, &targets, ccache, log, &mut b.compiled)?;
        add_phase(&mut b.phases.compile, &m);
        b.measured.add(&m);
        let root = rd.root.join("install");
        crate::fsutil::remove_tree(&root)?;
        let mut steps: Vec<(&str, Vec<String>)> = Vec::new();
        if self.prep().modules {
            let depmod = ["depmod", "/sbin/depmod", "/usr/sbin/depmod"]
                .into_iter()
                .find_map(crate::fsutil::which)
                .context("depmod not found: install the Debian package kmod")?;
            steps.push((
                "modules_install",
                vec![
                    format!("INSTALL_MOD_PATH={}", root.display()),
                    "INSTALL_MOD_STRIP=1".into(),
                    format!("DEPMOD={}", depmod.display()),
                ],
            ));
        }
        steps.push((
            "dtbs_install",
            vec![format!("INSTALL_DTBS_PATH={}", root.join("dtbs").display())],
        ));
        for (target, vars) in steps {
            let mut cmd = kb.command(&[target], &vars);
            let m = self.run_make(&mut cmd, ccache, target, log, &mut Vec::new())?;
            add_phase(&mut b.phases.install, &m);
            b.measured.add(&m);
        }
        Ok(())
    }

    /// One make run of `targets`, its compile lines collected into `compiled`.
    fn make_step(
        &self,
        kb: &Kbuild,
        targets: &[&str],
        ccache: bool,
        log: &mut File,
        compiled: &mut Vec<String>,
    ) -> Result<Measured> {
        let mut cmd = kb.command(targets, &[]);
        self.run_make(&mut cmd, ccache, &targets.join(" "), log, compiled)
    }

    /// Runs a make command (through ccache when asked), its output to `log`, saying every
    /// [`PROGRESS_EVERY`] how many objects it compiled.
    fn run_make(
        &self,
        cmd: &mut Command,
        ccache: bool,
        what: &str,
        log: &mut File,
        compiled: &mut Vec<String>,
    ) -> Result<Measured> {
        if ccache {
            self.ccache_env(cmd)?;
        }
        cmd.stderr(log.try_clone()?);
        let started = Instant::now();
        let mut last = Instant::now();
        let before = compiled.len();
        let mut on_line = |l: &str| {
            let _ = writeln!(log, "{l}");
            if is_compile_line(l) {
                compiled.push(l.split_whitespace().last().unwrap_or("").to_string());
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    eprintln!(
                        "pik bench: [make {what}] {} objects compiled ({:.0} s)",
                        compiled.len() - before,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        };
        measure::run(cmd, &format!("make {what}"), Some(&mut on_line))
            .with_context(|| format!("make's output: {}", log_path(log)))
    }

    /// A record of make scenario `scenario`.
    fn make_record(&self, scenario: &str, run: u32, b: &MakeRun, workload: Workload) -> Record {
        let mut r = self.record(scenario, run, &b.measured, workload);
        r.phases_s = b.phases.clone();
        r.make_s = b.phases.compile;
        r.objects_compiled = Some(b.compiled.len() as u64);
        r.jobs.local = b.compiled.len() as u64;
        r
    }

    /// `ccache` with the bench's ccache dir.
    fn ccache_command(&self) -> Command {
        let mut c = Command::new("ccache");
        c.env("CCACHE_DIR", self.store(CCACHE));
        c
    }

    /// Puts ccache in front of the compiler in a make command: a masquerade link named like
    /// the compiler first on PATH (kbuild's command lines stay the same), depend mode, the
    /// bench's ccache dir.
    fn ccache_env(&self, cmd: &mut Command) -> Result<()> {
        let masq = self.store("ccache-bin");
        let link = masq.join(self.plan.toolchain.cc_name());
        if std::fs::symlink_metadata(&link).is_err() {
            std::fs::create_dir_all(&masq)?;
            let ccache = crate::fsutil::which("ccache").context("ccache is not on PATH")?;
            std::os::unix::fs::symlink(ccache, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        let path = cmd
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v.map(|v| v.to_owned()))
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let mut dirs = vec![masq];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs)?)
            .env("CCACHE_DIR", self.store(CCACHE))
            .env("CCACHE_DEPEND", "1")
            .env("CCACHE_MAXSIZE", "20G");
        Ok(())
    }

    /// ccache's counters since `ccache -z`: hits, misses, and the calls it could not cache.
    fn ccache_stats(&self) -> Result<Cache> {
        let out = self
            .ccache_command()
            .arg("--print-stats")
            .output()
            .context("running ccache --print-stats")?;
        Ok(parse_ccache_stats(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Counters of `ccache --print-stats` that are not calls it could not cache.
const CCACHE_NOT_UNCACHEABLE: &[&str] = &[
    "cache_miss",
    "cache_size_kibibyte",
    "cleanups_performed",
    "direct_cache_hit",
    "direct_cache_miss",
    "files_in_cache",
    "preprocessed_cache_hit",
    "preprocessed_cache_miss",
    "recache",
];

/// `ccache --print-stats` (tab-separated `name value` lines) as a cache outcome.
fn parse_ccache_stats(text: &str) -> Cache {
    let v: BTreeMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect();
    let get = |k: &str| v.get(k).copied().unwrap_or(0);
    let uncacheable = v
        .iter()
        .filter(|(k, n)| {
            **n > 0
                && !CCACHE_NOT_UNCACHEABLE.contains(k)
                && !k.starts_with("stats_")
                && !k.starts_with("local_storage_")
                && !k.starts_with("remote_storage_")
        })
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    Cache {
        kind: "ccache".into(),
        hits: get("direct_cache_hit") + get("preprocessed_cache_hit"),
        misses: get("cache_miss"),
        uncacheable,
    }
}

/// Replaces `path` by a new file holding `bytes` (through a rename, so a hard link to pik's
/// workspace keeps its bytes).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".pik-bench-new");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// The path of an open log file, for messages.
fn log_path(f: &File) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the run's make.log".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccache_counters_are_read() {
        let c = parse_ccache_stats(
            "cache_miss\t3\ndirect_cache_hit\t930\npreprocessed_cache_hit\t1\n\
             called_for_link\t2\nfiles_in_cache\t1800\nlocal_storage_hit\t931\n\
             stats_zeroed_timestamp\t1700000000\nunsupported_compiler_option\t0\n",
        );
        assert_eq!((c.hits, c.misses), (931, 3));
        assert_eq!(
            c.uncacheable,
            BTreeMap::from([("called_for_link".into(), 2)])
        );
    }
}
