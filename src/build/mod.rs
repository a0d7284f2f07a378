//! `pik build`, as the flow it runs: plan → memo lookup → workspace and patches → Kconfig →
//! kbuild → install → publish (manifest, NAR, Nix expression, memo store, firmware view). Each
//! stage is a function of the module that owns it; this module strings them together, times
//! them and reports progress.

pub mod dist;
pub mod kbuild;
pub mod plan;
pub mod progress;

use crate::fsutil::Lock;
use crate::input::workspace::{self, Workspace};
use crate::input::{configmemo, kconfig, source, toolchain};
use crate::output::claim::{Claim, Made};
use crate::output::manifest::{CacheRecord, InputFile, Inputs, Manifest, MemoRecord, SCHEMA};
use crate::output::{self, publish};
use anyhow::{bail, Context, Result};
use kbuild::Kbuild;
use plan::Plan;
use progress::Reporter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `pik build` (and `pik config`) takes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Target name or alias.
    pub target: String,
    /// Profile; the target's default when None.
    pub profile: Option<String>,
    /// `--source`.
    pub source: Option<PathBuf>,
    /// `--out`; `./result-<target>` when None.
    pub out: Option<PathBuf>,
    /// `--build-dir`; a dir under the cache when None.
    pub build_dir: Option<PathBuf>,
    /// `--fragment` files, in order.
    pub fragments: Vec<PathBuf>,
    /// `--set` values, in order.
    pub set: Vec<String>,
    /// `--patch` files, in order.
    pub patches: Vec<PathBuf>,
    /// `-j`; the number of CPUs when None.
    pub jobs: Option<usize>,
    /// Stop after Kconfig and its check.
    pub config_only: bool,
    /// Skip `kconfigs/nixos.config`.
    pub no_nixos: bool,
    /// `--kconfigs DIR`.
    pub kconfigs: Option<PathBuf>,
    /// `--patches DIR`.
    pub patches_dir: Option<PathBuf>,
    /// Toolchain choice.
    pub toolchain: toolchain::Request,
    /// `--no-cache`: compile everything, without the object cache.
    pub no_cache: bool,
    /// `--firmware-dir`: also write the boot-partition view here.
    pub firmware_dir: Option<PathBuf>,
    /// `--no-memo`: do not look the whole build up in the memo.
    pub no_memo: bool,
    /// `--dev`: where the dev output goes; `<out>-dev` when None.
    pub dev: Option<PathBuf>,
    /// `--no-dev`: no dev output.
    pub no_dev: bool,
    /// `--patch-fuzz`: GNU patch's fuzz factor (0: hunks apply exactly or not at all).
    pub patch_fuzz: u32,
    /// `--hosts` (or `$PIK_HOSTS`, the config file): builders for distributed compiles, in
    /// distcc's syntax; empty = every compile runs here.
    pub hosts: Vec<String>,
    /// `--strict-remote`: a compile a builder fails fails the build instead of running here.
    pub strict_remote: bool,
}

/// Wall time per phase, seconds.
type Timings = BTreeMap<String, f64>;

fn timed<T>(timings: &mut Timings, phase: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    *timings.entry(phase.to_string()).or_default() += t.elapsed().as_secs_f64();
    r
}

/// `pik build`: the output's manifest, or None with `--config-only`.
pub fn build(opt: &Options, rep: &mut Reporter) -> Result<Option<Manifest>> {
    let started = Instant::now();
    // A bad host spec is an error before any work.
    dist::hosts(opt)?;
    rep.phase(
        "source",
        "reading every input and hashing the kernel source",
    );
    let mut timings = Timings::new();
    let mut plan = timed(&mut timings, "source", || Plan::resolve(opt))?;
    let mut dests = Destinations::claim(opt, &plan)?;
    if opt.config_only {
        configure_only(opt, &mut plan, rep)?;
        return Ok(None);
    }
    rep.phase("memo", "hashing every input of the build");
    // The key is computed even with --no-memo, so the result is still stored for next time.
    let key = plan.memo_key().inspect_err(|e| {
        rep.warn(&format!("no build memo for this build: {e:#}"));
    });
    if let (Ok(key), false) = (&key, opt.no_memo) {
        if let Some(m) = from_memo(&plan, key, &dests, started, rep)? {
            return Ok(Some(m));
        }
    }
    let m = fresh(
        opt,
        &mut plan,
        &mut dests,
        key.ok(),
        (started, timings),
        rep,
    )?;
    Ok(Some(m))
}

/// A build that runs: workspace, Kconfig, kbuild, install, publish.
fn fresh(
    opt: &Options,
    plan: &mut Plan,
    dests: &mut Destinations,
    key: Option<String>,
    (started, mut timings): (Instant, Timings),
    rep: &mut Reporter,
) -> Result<Manifest> {
    let prepared = prepare(opt, plan, rep, &mut timings)?;
    let kb = &prepared.kbuild;
    if dests.dev.is_some() && !output::dev::supported(&kb.tree) {
        // Before any compile: an explicit --dev cannot be honoured, the default is dropped.
        if opt.dev.is_some() {
            bail!("{}", output::dev::UNSUPPORTED);
        }
        rep.warn(&format!("no dev output: {}", output::dev::UNSUPPORTED));
        dests.dev = None;
    }
    let base = configure(plan, kb, key.as_deref(), rep, &mut timings)?;
    let modules = kconfig::read_config(&kb.build_dir.join(".config"))?
        .get("MODULES")
        .is_some_and(|v| v == "y");
    let make_targets = plan.make_targets(modules);
    let compiled = compile(plan, kb, &make_targets, rep, &mut timings)?;
    let cache = cache_outcome(kb, rep);
    if let Some(c) = cache.as_ref().filter(|c| !c.dist.fallbacks.is_empty()) {
        rep.warn(&format!("builders failed, their jobs ran here: {}", c.dist));
    }
    let release = kb.kernel_release()?;
    let (staged, dev_staged) = install(plan, kb, &release, modules, dests, rep, &mut timings)?;
    rep.phase(
        "output",
        &format!("verifying and publishing {}", dests.out.dest.display()),
    );
    let t = Instant::now();
    let dev = dev_staged
        .as_ref()
        .map(|s| s.path())
        .zip(dests.dev.as_ref());
    let described = publish::describe(staged.path(), &dests.out, dev)?;
    timings.insert("output".into(), t.elapsed().as_secs_f64());
    timings.insert("total".into(), started.elapsed().as_secs_f64());
    let record = Record {
        plan,
        kb,
        release: &release,
        base,
        make_targets,
        compiled,
        cache: cache.as_ref().map(|c| cache_record(c, kb)),
        memo_key: key.clone(),
        timings,
    };
    let m = manifest(record, described, &dests.out)?;
    let dev = dev_staged.zip(dests.dev.as_ref());
    let json = publish::place((staged.into_dir(), &dests.out), dev, &m, &plan.target)?;
    if let Some(key) = &key {
        let dev = dests.dev.as_ref().map(|d| d.dest.as_path());
        let stored = output::memo::dir()
            .and_then(|d| output::memo::store(&d, key, &dests.out.dest, dev, &json));
        if let Err(e) = stored {
            rep.warn(&format!("storing the build in the memo failed: {e:#}"));
        }
    }
    finish(&m, plan, dests, cache.as_ref(), started, rep)?;
    Ok(m)
}

/// The kernel's own installs into the Nix layout, staged beside the output (and the dev
/// output beside its destination).
fn install(
    plan: &Plan,
    kb: &Kbuild,
    release: &str,
    modules: bool,
    dests: &Destinations,
    rep: &mut Reporter,
    timings: &mut Timings,
) -> Result<(output::layout::Staged, Option<tempfile::TempDir>)> {
    rep.phase(
        "install",
        &format!("modules_install, dtbs_install into the Nix layout for {release}"),
    );
    timed(timings, "install", || {
        let staged = output::layout::stage(kb, &plan.target, release, modules, &dests.out.dest)?;
        let dev = dests
            .dev
            .as_ref()
            .map(|d| output::dev::stage(kb, release, &d.dest))
            .transpose()?;
        Ok((staged, dev))
    })
}

/// A memo hit for `key`, published at the claimed destinations; None on a miss.
fn from_memo(
    plan: &Plan,
    key: &str,
    dests: &Destinations,
    started: Instant,
    rep: &mut Reporter,
) -> Result<Option<Manifest>> {
    let mut why = None;
    let dev = dests.dev.as_ref().map(|d| d.dest.as_path());
    let hit = output::memo::lookup(&output::memo::dir()?, key, &dests.out.dest, dev, &mut why)?;
    if let Some(w) = why {
        rep.warn(&w);
    }
    let Some(hit) = hit else {
        return Ok(None);
    };
    let described = publish::describe(
        hit.staged.path(),
        &dests.out,
        hit.dev.as_ref().map(|s| s.path()).zip(dests.dev.as_ref()),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let m = Manifest {
        out: dests.out.dest.display().to_string(),
        tree_blake3: described.tree_blake3,
        listing_blake3: described.listing_blake3,
        nar: described.nar,
        files: described.files,
        dev: described.dev,
        objects_compiled: 0,
        memo: Some(MemoRecord {
            key: key.to_string(),
            hit: true,
        }),
        timings_s: BTreeMap::from([("memo".into(), seconds), ("total".into(), seconds)]),
        ..hit.manifest
    };
    publish::place(
        (hit.staged, &dests.out),
        hit.dev.zip(dests.dev.as_ref()),
        &m,
        &plan.target,
    )?;
    finish(&m, plan, dests, None, started, rep)?;
    Ok(Some(m))
}

/// After publishing: the firmware view when asked for, and the summary.
fn finish(
    m: &Manifest,
    plan: &Plan,
    dests: &Destinations,
    cache: Option<&crate::wrapper::Summary>,
    started: Instant,
    rep: &mut Reporter,
) -> Result<()> {
    if let Some(fw) = &dests.firmware {
        rep.phase(
            "firmware",
            &format!("boot-partition files into {}", fw.dest.display()),
        );
        firmware_view(&dests.out.dest, fw, Some(&plan.target))?;
    }
    let out = &dests.out.dest;
    let what = if m.memo.as_ref().is_some_and(|r| r.hit) {
        "from the build memo: nothing configured or compiled".to_string()
    } else {
        format!("{} objects compiled", m.objects_compiled)
    };
    let mut human = format!(
        "pik: {} ({} {}) in {:.1} s, {what}\n",
        m.kernelrelease,
        m.target,
        m.profile,
        started.elapsed().as_secs_f64()
    );
    if m.memo.as_ref().is_none_or(|r| !r.hit) {
        match cache {
            Some(c) => {
                human.push_str(&format!("pik: cache   {c}\n"));
                if c.dist.active() {
                    human.push_str(&format!("pik: dist    {}\n", c.dist));
                }
            }
            None => human.push_str("pik: cache   off (--no-cache)\n"),
        }
    }
    human.push_str(&format!("pik: output  {}\n", out.display()));
    if let Some(d) = &m.dev {
        human.push_str(&format!("pik: dev     {} ({})\n", d.path, d.nar.nar_hash));
    }
    human.push_str(&format!(
        "pik: manifest {}\npik: nix     {} ({})",
        output::manifest_path(out).display(),
        output::nix_path(out).display(),
        m.nar.nar_hash
    ));
    rep.finish(serde_json::to_value(m)?, &human);
    Ok(())
}

/// What the stages up to Kconfig leave: kbuild set up on the workspace and the build dir (held
/// by a lock for this run).
pub struct Prepared {
    /// The kbuild driver.
    pub kbuild: Kbuild,
    _lock: Lock,
}

/// The workspace (trying the next candidate source when the first lacks the target's device
/// trees and the user named none), then kbuild on the build dir.
pub fn prepare(
    opt: &Options,
    plan: &mut Plan,
    rep: &mut Reporter,
    timings: &mut Timings,
) -> Result<Prepared> {
    let workspace = workspace_for(plan, rep, timings)?;
    if !workspace.tree.join(&plan.target.vendor_marker).exists() {
        rep.warn(&plan.target.thin_support);
    }
    let cache = crate::paths::cache_dir()?;
    let build_dir = match &opt.build_dir {
        Some(d) => std::path::absolute(d)?,
        None => cache.join("builds").join(format!(
            "{}-{}-{}",
            plan.target.name,
            plan.profile,
            &workspace.key[..12]
        )),
    };
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating the build dir {}", build_dir.display()))?;
    let lock = Lock::acquire(&build_dir.join(".pik-lock"))?;
    let jobs = opt.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut kbuild = Kbuild::new(plan, &workspace, build_dir, jobs, !opt.no_cache)?;
    if let Some(hosts) = dist::hosts(opt)?.filter(|_| !opt.config_only) {
        kbuild.dist = Some(dist::setup(opt, plan, &kbuild, hosts)?);
    }
    Ok(Prepared {
        kbuild,
        _lock: lock,
    })
}

/// The workspace for the plan's source; with Debian's tarballs, the newest that has the
/// target's device trees (the plan then names it).
fn workspace_for(plan: &mut Plan, rep: &mut Reporter, timings: &mut Timings) -> Result<Workspace> {
    let root = crate::paths::cache_dir()?.join("workspaces");
    let mut refused = Vec::new();
    for (i, src) in plan.sources.list.clone().into_iter().enumerate() {
        if i > 0 {
            rep.phase(
                "source",
                &format!("hashing {} {}", src.kind(), src.path().display()),
            );
            plan.source_digest = timed(timings, "source", || source::digest(&src))?;
            plan.source = src.clone();
        }
        rep.phase(
            "workspace",
            "preparing the private, patched copy of the tree",
        );
        let ws = timed(timings, "workspace", || {
            workspace::prepare(&root, &src, &plan.source_digest, &plan.patches)
        })
        .with_context(|| format!("preparing the workspace for {}", src.path().display()))?;
        for n in &ws.notes {
            rep.info(n);
        }
        let what = format!("kernel source {}", src.path().display());
        match plan.target.device_trees_in(&ws.tree, &what) {
            Ok(warnings) => {
                warnings.iter().for_each(|w| rep.warn(w));
                for r in &refused {
                    rep.warn(&format!("skipped: {r}"));
                }
                return Ok(ws);
            }
            Err(e) if plan.sources.explicit => return Err(e),
            Err(e) => refused.push(format!("{e:#}")),
        }
    }
    bail!(
        "no Debian linux-source tarball under /usr/src is usable for {}:\n  {}",
        plan.target.name,
        refused.join("\n  ")
    )
}

/// Kconfig for a prepared build; returns the base config target used. A fresh build dir whose
/// inputs (`key`: the memo key covers everything Kconfig reads) were configured before gets the
/// memoized result instead of a Kconfig run; either way the check runs.
fn configure(
    plan: &Plan,
    kb: &Kbuild,
    key: Option<&str>,
    rep: &mut Reporter,
    timings: &mut Timings,
) -> Result<String> {
    let base = plan.config_base(&kb.tree);
    let config = kb.build_dir.join(".config");
    let fresh = !config.exists();
    let memoized = match key.filter(|_| fresh) {
        Some(k) => configmemo::restore(k, &kb.build_dir).unwrap_or(false),
        None => false,
    };
    let warnings = if memoized {
        rep.phase(
            "kconfig",
            &format!(
                "{base} + {} fragment(s), from the Kconfig memo, check",
                plan.fragments.len()
            ),
        );
        timed(timings, "kconfig", || {
            kconfig::verify(&kb.tree, &config, &plan.fragments, &plan.target.defining)
        })?
    } else {
        rep.phase(
            "kconfig",
            &format!(
                "{base} + {} fragment(s), olddefconfig, check",
                plan.fragments.len()
            ),
        );
        let w = timed(timings, "kconfig", || {
            kconfig::configure(kb, &base, &plan.fragments, &plan.target.defining)
        })?;
        if let Some(k) = key.filter(|_| fresh) {
            if let Err(e) = configmemo::store(k, &kb.build_dir) {
                rep.warn(&format!("storing the Kconfig result failed: {e:#}"));
            }
        }
        w
    };
    for w in &warnings {
        rep.warn(w);
    }
    Ok(base)
}

/// `pik build --config-only`: up to Kconfig and its check.
fn configure_only(opt: &Options, plan: &mut Plan, rep: &mut Reporter) -> Result<()> {
    let mut timings = Timings::new();
    let p = prepare(opt, plan, rep, &mut timings)?;
    configure(plan, &p.kbuild, None, rep, &mut timings)?;
    let config = p.kbuild.build_dir.join(".config");
    rep.finish(
        serde_json::json!({"config": config, "build_dir": p.kbuild.build_dir}),
        &format!("pik: config checked and left at {}", config.display()),
    );
    Ok(())
}

/// make for the kernel image, modules and DTBs, with progress against the count of objects
/// the last fresh build of this target and profile compiled; returns the objects compiled.
fn compile(
    plan: &Plan,
    kb: &Kbuild,
    targets: &[String],
    rep: &mut Reporter,
    timings: &mut Timings,
) -> Result<u64> {
    let stats = crate::paths::cache_dir()?
        .join("stats")
        .join(format!("{}-{}.objects", plan.target.name, plan.profile));
    let fresh = !kb.build_dir.join("vmlinux").exists();
    let expected = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let jobs = match &kb.dist {
        Some(d) => format!(
            "-j{} ({} here, {} on {} builder(s))",
            d.make_jobs(),
            d.local,
            d.remote,
            d.hosts.len()
        ),
        None => format!("-j{}", kb.jobs),
    };
    rep.phase("build", &format!("make {} {jobs}", targets.join(" ")));
    rep.start_compiling(if fresh { expected } else { None });
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let make_start = crate::wrapper::jobs_now_ns();
    let made = timed(timings, "build", || {
        kb.run_compile(&targets, &mut |line| {
            if kbuild::is_compile_line(line) {
                rep.compiled(line.split_whitespace().last().unwrap_or(""));
            }
        })
    });
    if let Some(j) = &kb.jobs_log {
        let mark = format!("# make {make_start} {}\n", crate::wrapper::jobs_now_ns());
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(j)
            .and_then(|mut f| std::io::Write::write_all(&mut f, mark.as_bytes()));
    }
    if let (Err(e), Some(log)) = (&made, &kb.cache_log) {
        let summary = crate::wrapper::Summary::read(log);
        if let Some(why) = dist::strict_failure(&summary.dist) {
            bail!("{why}\n{e:#}");
        }
    }
    made?;
    let compiled = rep.compiled_count();
    if fresh && compiled > 0 {
        let _ = std::fs::create_dir_all(stats.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(&stats, compiled.to_string());
    }
    Ok(compiled)
}

/// The object cache's outcome for the build (None with `--no-cache`), after the store's
/// upkeep; one warning when the store could not be used.
fn cache_outcome(kb: &Kbuild, rep: &mut Reporter) -> Option<crate::wrapper::Summary> {
    let summary = crate::wrapper::Summary::read(kb.cache_log.as_ref()?);
    if let Some(w) = summary.store_warning() {
        rep.warn(&w);
    }
    // Keep the store within its size limit (least recently used first).
    if let Err(e) = crate::store::gc_to_limit() {
        rep.warn(&format!("object cache clean-up failed: {e:#}"));
    }
    Some(summary)
}

fn cache_record(s: &crate::wrapper::Summary, kb: &Kbuild) -> CacheRecord {
    CacheRecord {
        dist: kb.dist.as_ref().map(|d| dist::record(d, &s.dist)),
        hits: s.hits,
        misses: s.misses,
        uncacheable: s.uncacheable.clone(),
        errors: s.errors,
        probe_hits: s.probe_hits,
        probe_misses: s.probe_misses,
        host_hits: s.host_hits,
        host_misses: s.host_misses,
        hit_rate: s.hit_rate,
    }
}

/// What the manifest records of a fresh build, beside the description of its trees.
struct Record<'a> {
    plan: &'a Plan,
    kb: &'a Kbuild,
    release: &'a str,
    base: String,
    make_targets: Vec<String>,
    compiled: u64,
    cache: Option<CacheRecord>,
    memo_key: Option<String>,
    timings: Timings,
}

/// The manifest of a fresh build.
fn manifest(r: Record, d: publish::Described, out: &Claim) -> Result<Manifest> {
    let plan = r.plan;
    let digest = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    Ok(Manifest {
        schema: SCHEMA.into(),
        pik_version: env!("CARGO_PKG_VERSION").into(),
        target: plan.target.name.clone(),
        profile: plan.profile.clone(),
        kernelrelease: r.release.to_string(),
        firmware_image: plan.target.firmware_image.clone(),
        config_blake3: crate::fsutil::hash_file(&r.kb.build_dir.join(".config"))?,
        toolchain: plan.toolchain.clone(),
        host_cc: toolchain::first_line_of("gcc", &["--version"]).unwrap_or_default(),
        inputs: Inputs {
            source_kind: plan.source.kind().into(),
            source_path: plan.source.path().display().to_string(),
            source_blake3: plan.source_digest.to_hex().to_string(),
            kernel_version: source::kernel_version(&r.kb.tree)?,
            patches: plan
                .patches
                .iter()
                .map(|p| InputFile {
                    name: p.name.clone(),
                    blake3: digest(&p.bytes),
                })
                .collect(),
            patch_fuzz: plan.patch_fuzz,
            config_base: r.base,
            fragments: plan
                .fragments
                .iter()
                .map(|f| InputFile {
                    name: f.origin.clone(),
                    blake3: digest(f.text.as_bytes()),
                })
                .collect(),
            set: plan.set.clone(),
            source_date_epoch: plan.epoch,
            make_targets: r.make_targets,
        },
        out: out.dest.display().to_string(),
        tree_blake3: d.tree_blake3,
        listing_blake3: d.listing_blake3,
        nar: d.nar,
        files: d.files,
        dev: d.dev,
        objects_compiled: r.compiled,
        cache: r.cache,
        memo: r.memo_key.map(|key| MemoRecord { key, hit: false }),
        build_dir: r.kb.build_dir.display().to_string(),
        log: r.kb.log.display().to_string(),
        timings_s: r.timings,
    })
}

/// The trees `pik build` writes, each claimed before any work starts.
struct Destinations {
    out: Claim,
    dev: Option<Claim>,
    firmware: Option<Claim>,
}

impl Destinations {
    /// Resolves and checks `--out`, `--dev` and `--firmware-dir`: each must be absent, empty or
    /// a tree pik made, and none may be, contain or lie inside an input, the build dir, the cache
    /// or another of them.
    fn claim(opt: &Options, plan: &Plan) -> Result<Destinations> {
        let out_path = opt
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("result-{}", plan.target.name)));
        let mut protected = protected_paths(opt, plan)?;
        let out = Claim::new(&out_path, "--out", Made::Output, &protected)?;
        protected.push(("the output".into(), out.dest.clone()));
        let dev = match (&opt.dev, opt.no_dev) {
            (_, true) => None,
            (d, false) => {
                let path = d
                    .clone()
                    .unwrap_or_else(|| output::dev::default_path(&out.dest));
                let made = Made::Dev {
                    manifest: output::manifest_path(&out.dest),
                };
                Some(Claim::new(&path, "--dev", made, &protected)?)
            }
        };
        protected.extend(
            dev.iter()
                .map(|d| ("the dev output".into(), d.dest.clone())),
        );
        let firmware = opt
            .firmware_dir
            .as_ref()
            .map(|f| Claim::new(f, "--firmware-dir", Made::Firmware, &protected))
            .transpose()?;
        Ok(Destinations { out, dev, firmware })
    }
}

/// The paths no output may be, contain or lie inside: the inputs the user named, the build dir
/// and pik's caches.
fn protected_paths(opt: &Options, plan: &Plan) -> Result<Vec<(String, PathBuf)>> {
    let mut p: Vec<(String, PathBuf)> = Vec::new();
    if plan.sources.explicit {
        p.push(("the kernel source".into(), plan.source.path().to_path_buf()));
    }
    if let Some(b) = &opt.build_dir {
        p.push(("the build dir".into(), b.clone()));
    }
    p.push(("pik's cache dir".into(), crate::paths::cache_dir()?));
    if let Ok(store) = crate::store::dir() {
        p.push(("the object cache".into(), store));
    }
    for (what, list) in [("--fragment", &opt.fragments), ("--patch", &opt.patches)] {
        p.extend(list.iter().map(|f| (format!("{what} file"), f.clone())));
    }
    for (what, dir) in [
        ("--kconfigs", &opt.kconfigs),
        ("--patches", &opt.patches_dir),
    ] {
        p.extend(dir.iter().map(|d| (format!("the {what} dir"), d.clone())));
    }
    Ok(p)
}

/// `pik firmware --from OUT DIR`: claims DIR (absent, empty or an earlier firmware view; never
/// the output itself, inside it or around it) and writes the view.
pub fn firmware_command(out: &Path, dir: &Path) -> Result<Vec<String>> {
    let out = crate::output::claim::resolve(out)?;
    let protected = [
        ("the output".to_string(), out.clone()),
        ("pik's cache dir".to_string(), crate::paths::cache_dir()?),
    ];
    let claim = Claim::new(dir, "the firmware dir", Made::Firmware, &protected)?;
    firmware_view(&out, &claim, None)
}

/// The boot-partition view of an output tree, described by its manifest. The manifest is
/// untrusted input: its names are checked, and the tree must still be the one it describes.
/// `target` is the build's own target data; without it the manifest's target is looked up among
/// the built-in targets.
pub fn firmware_view(
    out: &Path,
    dir: &Claim,
    target: Option<&crate::input::target::Target>,
) -> Result<Vec<String>> {
    let mpath = output::manifest_path(out);
    let m =
        Manifest::read(&mpath).with_context(|| format!("is {} a pik output?", out.display()))?;
    crate::output::claim::plain_name(&m.firmware_image, "the manifest's firmware_image")?;
    crate::output::claim::plain_name(&m.kernelrelease, "the manifest's kernelrelease")?;
    if m.listing_blake3 != crate::output::claim::listing(out, None)? {
        bail!(
            "{} no longer matches its manifest {} (changed since pik wrote it): rebuild it",
            out.display(),
            mpath.display()
        );
    }
    let builtin;
    let target = match target {
        Some(t) => t,
        None => {
            let data = crate::input::data::DataDir::kconfigs(None);
            builtin = crate::input::target::find(&data, &m.target)?;
            &builtin
        }
    };
    if target.firmware_image != m.firmware_image {
        bail!(
            "{} names the firmware image {:?}, but target {} has {:?}",
            mpath.display(),
            m.firmware_image,
            target.name,
            target.firmware_image
        );
    }
    output::firmware::write(
        &output::firmware::Source {
            out,
            target,
            release: &m.kernelrelease,
        },
        dir,
    )
}

/// `pik config --savedefconfig FILE`: the kernel's own `savedefconfig` on a configured build dir.
pub fn savedefconfig(opt: &Options, dest: &Path, rep: &mut Reporter) -> Result<()> {
    let mut plan = Plan::resolve(opt)?;
    let p = prepare(opt, &mut plan, rep, &mut Timings::new())?;
    let kb = &p.kbuild;
    if !kb.build_dir.join(".config").is_file() {
        bail!(
            "{} has no .config yet: run `pik build --target {} --config-only` (with the same \
             --source/--build-dir) first, tune it (make menuconfig O=…), then save it",
            kb.build_dir.display(),
            plan.target.name
        );
    }
    rep.phase("kconfig", "savedefconfig");
    kb.run(&["savedefconfig"], &[], &mut |_| {})?;
    let src = kb.build_dir.join("defconfig");
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    crate::fsutil::write_atomic(&std::path::absolute(dest)?, &bytes)
        .with_context(|| format!("writing {}", dest.display()))?;
    rep.finish(
        serde_json::json!({"fragment": dest}),
        &format!(
            "pik: minimal config written to {} (usable with --fragment)",
            dest.display()
        ),
    );
    Ok(())
}
