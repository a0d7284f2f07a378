//! `pik build`: the steps in order, each timed — target data, source, workspace (+ patches),
//! toolchain, Kconfig, kbuild, install into the Nix layout, manifest, atomic publish.

pub mod kbuild;
pub mod progress;

use crate::build::progress::Reporter;
use crate::fsutil::Lock;
use crate::input::data::DataDir;
use crate::input::kconfig::{self, Fragment};
use crate::input::patch;
use crate::input::source::{self, Source};
use crate::input::target::{self, Target};
use crate::input::toolchain;
use crate::input::workspace::{self, Workspace};
use crate::output;
use crate::output::claim::{Claim, Made};
use crate::output::manifest::{self, InputFile, Inputs, Manifest};
use anyhow::{bail, Context, Result};
use kbuild::Kbuild;
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
}

/// What the first steps produce, shared by `pik build` and `pik config`.
pub struct Prepared {
    /// The target.
    pub target: Target,
    /// Profile name.
    pub profile: String,
    /// The source.
    pub source: Source,
    /// Its digest.
    pub source_digest: String,
    /// The workspace.
    pub workspace: Workspace,
    /// Patches applied.
    pub patches: Vec<patch::Patch>,
    /// The kbuild driver.
    pub kbuild: Kbuild,
    /// Holds the build dir for this run.
    pub build_lock: Lock,
    /// Phase timings so far.
    pub timings: BTreeMap<String, f64>,
}

/// Resolves the source: explicit path, `$PIK_KERNEL_SRC`, or the newest Debian tarball whose
/// tree has the target's device trees (checked after extraction into the workspace).
fn candidate_sources(opt: &Options) -> Result<Vec<Source>> {
    if let Some(p) = &opt.source {
        return Ok(vec![source::classify(p)?]);
    }
    if let Some(p) = std::env::var_os("PIK_KERNEL_SRC").filter(|p| !p.is_empty()) {
        return source::classify(Path::new(&p))
            .map(|s| vec![s])
            .context("from $PIK_KERNEL_SRC");
    }
    let found = source::debian_tarballs(Path::new("/usr/src"));
    if found.is_empty() {
        bail!(
            "no kernel source given and none found: pass --source (a kernel tree or tarball), set \
             PIK_KERNEL_SRC, or install Debian's linux-source-6.12 (apt-get install linux-source-6.12)"
        );
    }
    Ok(found.into_iter().map(Source::Tarball).collect())
}

fn timed<T>(
    timings: &mut BTreeMap<String, f64>,
    phase: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let t = Instant::now();
    let r = f();
    *timings.entry(phase.to_string()).or_default() += t.elapsed().as_secs_f64();
    r
}

/// Runs every step up to (not including) Kconfig.
pub fn prepare(opt: &Options, rep: &mut Reporter) -> Result<Prepared> {
    let mut timings = BTreeMap::new();
    let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
    let pdata = DataDir::patches(opt.patches_dir.as_deref());
    let target = target::find(&kdata, &opt.target)?;
    let profile = opt
        .profile
        .clone()
        .unwrap_or_else(|| target.default_profile.clone());
    target.profile(&profile)?;
    // Every input is checked before anything is extracted or built.
    let patches = patch::load_series(&pdata, &target.patches, &opt.patches, opt.patch_fuzz)?;
    let tc = toolchain::find(&target.triple, &opt.toolchain)?;
    let cache = crate::paths::cache_dir()?;

    let mut chosen = None;
    let mut refused = Vec::new();
    let candidates = candidate_sources(opt)?;
    let explicit =
        opt.source.is_some() || std::env::var_os("PIK_KERNEL_SRC").is_some_and(|p| !p.is_empty());
    for src in candidates {
        rep.phase(
            "source",
            &format!("hashing {} {}", src.kind(), src.path().display()),
        );
        let digest = timed(&mut timings, "source", || source::digest(&src))?;
        rep.phase(
            "workspace",
            "preparing the private, patched copy of the tree",
        );
        let ws = timed(&mut timings, "workspace", || {
            workspace::prepare(&cache.join("workspaces"), &src, &digest, &patches)
        })
        .with_context(|| format!("preparing the workspace for {}", src.path().display()))?;
        for n in &ws.notes {
            rep.info(n);
        }
        let what = format!("kernel source {}", src.path().display());
        match workspace::check_device_trees(&ws.tree, &target.device_trees, &what) {
            Ok(()) => {
                chosen = Some((src, digest, ws));
                break;
            }
            Err(e) if explicit => return Err(e),
            Err(e) => refused.push(format!("{e:#}")),
        }
    }
    let Some((source, digest, workspace)) = chosen else {
        bail!(
            "no Debian linux-source tarball under /usr/src is usable for {}:\n  {}",
            target.name,
            refused.join("\n  ")
        );
    };
    for r in &refused {
        rep.warn(&format!("skipped: {r}"));
    }
    if !workspace.tree.join(&target.vendor_marker).exists() {
        rep.warn(&target.thin_support);
    }

    let build_dir = match &opt.build_dir {
        Some(d) => kbuild::absolute(d)?,
        None => cache.join("builds").join(format!(
            "{}-{}-{}",
            target.name,
            profile,
            &workspace.key[..12]
        )),
    };
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating the build dir {}", build_dir.display()))?;
    let build_lock = Lock::acquire(&build_dir.join(".pik-lock"))?;
    let log = build_dir.join("pik-build.log");
    let _ = std::fs::remove_file(&log);
    let jobs = opt.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let epoch = epoch()?;
    let (masquerade, cache_log, cache_tree) = if opt.no_cache {
        (None, None, None)
    } else {
        let cache_log = build_dir.join("pik-cache.log");
        let _ = std::fs::remove_file(&cache_log);
        // The workspace is pik's own and keyed by its content, so the cache may trust it by id.
        let root = std::fs::canonicalize(&workspace.tree)
            .with_context(|| format!("resolving {}", workspace.tree.display()))?;
        (
            Some(crate::wrapper::masquerade_dir(&[tc.cc_name()])?),
            Some(cache_log),
            Some(crate::wrapper::source_tree_env(&workspace.key, &root)),
        )
    };
    let kb = Kbuild {
        tree: workspace.tree.clone(),
        build_dir,
        arch: target.arch.clone(),
        toolchain: tc,
        jobs,
        epoch,
        log,
        masquerade,
        cache_log,
        cache_tree,
    };
    Ok(Prepared {
        target,
        profile,
        source,
        source_digest: digest.to_hex().to_string(),
        workspace,
        patches,
        kbuild: kb,
        build_lock,
        timings,
    })
}

/// `SOURCE_DATE_EPOCH`, or nixpkgs' default.
fn epoch() -> Result<i64> {
    Ok(match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        _ => kbuild::DEFAULT_EPOCH,
    })
}

/// The whole-build memo key for these options, computed before anything is extracted, patched,
/// configured or built. None when an input cannot be read (the build then reports it).
fn memo_key(opt: &Options) -> Option<String> {
    let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
    let pdata = DataDir::patches(opt.patches_dir.as_deref());
    let target = target::find(&kdata, &opt.target).ok()?;
    let profile = opt
        .profile
        .clone()
        .unwrap_or_else(|| target.default_profile.clone());
    let patches = patch::load_series(&pdata, &target.patches, &opt.patches, opt.patch_fuzz).ok()?;
    let frags = fragments(opt, &target, &profile).ok()?;
    let tc = toolchain::find(&target.triple, &opt.toolchain).ok()?;
    // The default source is the newest Debian tarball; if that one turns out to lack the target's
    // device trees the build uses another, whose entry is keyed by its own digest.
    let src = candidate_sources(opt).ok()?.into_iter().next()?;
    let digest = source::digest(&src).ok()?.to_hex().to_string();
    crate::output::memo::key(&crate::output::memo::Inputs {
        target: format!("{target:?}"),
        profile: &profile,
        source_digest: &digest,
        patches: patches.iter().map(|p| p.bytes.as_slice()).collect(),
        patch_fuzz: opt.patch_fuzz,
        fragments: frags.iter().map(|f| f.text.as_str()).collect(),
        toolchain: format!(
            "{} {} {} {} {}",
            tc.cc.display(),
            tc.version,
            tc.cc_blake3,
            tc.ld_version,
            tc.llvm
        ),
        epoch: epoch().ok()?,
    })
    .ok()
}

/// The fragments in merge order: target, profile, nixos.config, `--fragment`s, `--set`s.
pub fn fragments(opt: &Options, target: &Target, profile: &str) -> Result<Vec<Fragment>> {
    let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
    let mut names = vec![target.fragment.clone()];
    names.extend(target.profile(profile)?.fragments.iter().cloned());
    if !opt.no_nixos {
        names.push("nixos.config".into());
    }
    let mut out = Vec::new();
    for n in names {
        let text = String::from_utf8(kdata.read_required(&n)?)
            .with_context(|| format!("{} is not UTF-8", kdata.describe(&n)))?;
        out.push(Fragment {
            origin: kdata.describe(&n),
            text,
        });
    }
    for f in &opt.fragments {
        let text = crate::fsutil::read_text(f, crate::fsutil::TEXT_LIMIT)
            .with_context(|| format!("reading --fragment {}", f.display()))?;
        if kconfig::parse(&text).is_empty() {
            bail!(
                "--fragment {} has no CONFIG_ settings; is it a Kconfig fragment?",
                f.display()
            );
        }
        out.push(Fragment {
            origin: f.display().to_string(),
            text,
        });
    }
    out.extend(kconfig::set_fragment(&opt.set)?);
    Ok(out)
}

/// Runs Kconfig for a prepared build; returns the base target used and the fragments.
pub fn configure(
    opt: &Options,
    p: &mut Prepared,
    rep: &mut Reporter,
) -> Result<(String, Vec<Fragment>)> {
    let prof = p.target.profile(&p.profile)?.clone();
    let vendor = prof
        .prefer_vendor_defconfig
        .then_some(p.target.vendor_defconfig.as_str());
    let base = kconfig::base_target(&p.kbuild.tree, &p.target.arch, &prof.base, vendor);
    let frags = fragments(opt, &p.target, &p.profile)?;
    rep.phase(
        "kconfig",
        &format!("{base} + {} fragment(s), olddefconfig, check", frags.len()),
    );
    let kb = p.kbuild.clone();
    timed(&mut p.timings, "kconfig", || {
        kconfig::configure(&kb, &base, &frags)
    })?;
    Ok((base, frags))
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
    fn claim(opt: &Options) -> Result<Destinations> {
        let out_path = opt
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("result-{}", target_name(opt))));
        let mut protected = protected_paths(opt)?;
        let out = Claim::new(&out_path, "--out", Made::Output, &protected)?;
        protected.push(("the output".into(), out.dest.clone()));
        let dev = match (&opt.dev, opt.no_dev) {
            (_, true) => None,
            (d, false) => {
                let path = d
                    .clone()
                    .unwrap_or_else(|| crate::output::dev::default_path(&out.dest));
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
fn protected_paths(opt: &Options) -> Result<Vec<(String, PathBuf)>> {
    let mut p: Vec<(String, PathBuf)> = Vec::new();
    if let Some(s) = &opt.source {
        p.push(("the kernel source".into(), s.clone()));
    } else if let Some(s) = std::env::var_os("PIK_KERNEL_SRC").filter(|s| !s.is_empty()) {
        p.push(("the kernel source ($PIK_KERNEL_SRC)".into(), s.into()));
    }
    if let Some(b) = &opt.build_dir {
        p.push(("the build dir".into(), b.clone()));
    }
    p.push(("pik's cache dir".into(), crate::paths::cache_dir()?));
    if let Ok(store) = crate::wrapper::store_dir() {
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

/// Reads and checks every input the user named before any work starts: target and profile,
/// patches, fragments and `--set` values, the source, the job count.
fn check_inputs(opt: &Options) -> Result<()> {
    if opt.jobs == Some(0) {
        bail!("-j 0: the number of parallel jobs must be at least 1");
    }
    let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
    let pdata = DataDir::patches(opt.patches_dir.as_deref());
    let target = target::find(&kdata, &opt.target)?;
    let profile = opt
        .profile
        .clone()
        .unwrap_or_else(|| target.default_profile.clone());
    patch::load_series(&pdata, &target.patches, &opt.patches, opt.patch_fuzz)?;
    fragments(opt, &target, &profile)?;
    candidate_sources(opt)?;
    Ok(())
}

/// `pik build`.
pub fn build(opt: &Options, rep: &mut Reporter) -> Result<()> {
    let started = Instant::now();
    check_inputs(opt)?;
    let dests = Destinations::claim(opt)?;
    let out = dests.out.dest.clone();
    let dev_out = dests.dev.as_ref().map(|d| d.dest.clone());
    // The key is computed even with --no-memo, so the result is still stored for next time.
    let memo_key = if opt.config_only {
        None
    } else {
        rep.phase("memo", "hashing every input of the build");
        memo_key(opt)
    };
    if let Some(key) = memo_key.as_ref().filter(|_| !opt.no_memo) {
        if let Some(hit) = crate::output::memo::lookup(
            &crate::output::memo::dir()?,
            key,
            &out,
            dev_out.as_deref(),
        )? {
            let m = crate::output::memo::publish(
                hit,
                key,
                &dests.out,
                dests.dev.as_ref(),
                started.elapsed().as_secs_f64(),
            )?;
            if let Some(fw) = &dests.firmware {
                firmware_view(&out, fw)?;
            }
            let dev_line = match m["dev"]["path"].as_str() {
                Some(d) => format!(
                    "pik: dev     {d} ({})\n",
                    m["dev"]["nar"]["nar_hash"].as_str().unwrap_or_default()
                ),
                None => String::new(),
            };
            let human = format!(
                "pik: {} ({} {}) from the build memo in {:.2} s: nothing configured or compiled\n\
                 pik: output  {}\n{dev_line}pik: manifest {}\npik: nix     {} ({})",
                m["kernelrelease"].as_str().unwrap_or_default(),
                m["target"].as_str().unwrap_or_default(),
                m["profile"].as_str().unwrap_or_default(),
                started.elapsed().as_secs_f64(),
                out.display(),
                output::manifest_path(&out).display(),
                output::nix_path(&out).display(),
                m["nar"]["nar_hash"].as_str().unwrap_or_default(),
            );
            rep.finish(m, &human);
            return Ok(());
        }
    }
    let mut p = prepare(opt, rep)?;
    let (base, frags) = configure(opt, &mut p, rep)?;
    let config_path = p.kbuild.build_dir.join(".config");
    if opt.config_only {
        rep.finish(
            serde_json::json!({"config": config_path, "build_dir": p.kbuild.build_dir}),
            &format!("pik: config checked and left at {}", config_path.display()),
        );
        return Ok(());
    }
    let config = kconfig::read_config(&config_path)?;
    let modules = config.get("MODULES").is_some_and(|v| v == "y");
    let mut make_targets = vec![p.target.kernel_image.clone()];
    if modules {
        make_targets.push("modules".into());
    }
    make_targets.push("dtbs".into());

    let cache = crate::paths::cache_dir()?;
    let stats = cache
        .join("stats")
        .join(format!("{}-{}.objects", p.target.name, p.profile));
    let expected = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let fresh = !p.kbuild.build_dir.join("vmlinux").exists();
    rep.phase(
        "build",
        &format!("make {} -j{}", make_targets.join(" "), p.kbuild.jobs),
    );
    rep.start_compiling(if fresh { expected } else { None });
    let kb = p.kbuild.clone();
    let targets: Vec<&str> = make_targets.iter().map(String::as_str).collect();
    timed(&mut p.timings, "build", || {
        kb.run(&targets, &[], &mut |line| {
            if kbuild::is_compile_line(line) {
                rep.compiled(line.split_whitespace().last().unwrap_or(""));
            }
        })
    })?;
    let compiled = rep.compiled_count();
    let cache_summary = p
        .kbuild
        .cache_log
        .as_ref()
        .map(|l| crate::wrapper::Summary::read(l));
    if cache_summary.is_some() {
        // Keep the store within its size limit (least recently used first).
        if let Err(e) = crate::cmd::cache::gc_to_limit() {
            rep.warn(&format!("object cache clean-up failed: {e:#}"));
        }
    }
    if fresh && compiled > 0 {
        let _ = std::fs::create_dir_all(stats.parent().unwrap());
        let _ = std::fs::write(&stats, compiled.to_string());
    }

    let release = p.kbuild.kernel_release()?;
    rep.phase(
        "install",
        &format!("modules_install, dtbs_install into the Nix layout for {release}"),
    );
    let out_lock = output::lock(&out)?;
    let staged = timed(&mut p.timings, "install", || {
        output::layout::stage(&p.kbuild, &p.target, &release, modules, &out)
    })?;
    let dev_lock = dev_out.as_deref().map(output::lock).transpose()?;
    let dev_staged = match &dev_out {
        Some(d) => Some(timed(&mut p.timings, "install", || {
            crate::output::dev::stage(&p.kbuild, &release, d)
        })?),
        None => None,
    };
    rep.phase(
        "output",
        &format!("verifying and publishing {}", out.display()),
    );
    let t = Instant::now();
    let (files, tree_blake3) = manifest::describe_tree(staged.path())?;
    let nar = crate::nix::nar::info(
        staged.path(),
        &crate::nix::nar::default_name(&out)?,
        crate::nix::nar::DEFAULT_STORE_DIR,
    )
    .context("computing the output's NAR hash")?;
    let host_cc = toolchain::first_line_of("gcc", &["--version"]).unwrap_or_default();
    let kernel_version = source::kernel_version(&p.kbuild.tree)?;
    let dev = match (&dev_staged, &dev_out) {
        (Some(staged), Some(path)) => Some(manifest::DevOutput::describe(staged.path(), path)?),
        _ => None,
    };
    let listing_blake3 = crate::output::claim::listing(staged.path(), None)?;
    if let (Some(staged), Some(claim)) = (dev_staged, &dests.dev) {
        output::swap_in(staged, claim)?;
    }
    output::publish(staged, &dests.out)?;
    p.timings.insert("output".into(), t.elapsed().as_secs_f64());
    p.timings
        .insert("total".into(), started.elapsed().as_secs_f64());
    let m = Manifest {
        schema: manifest::SCHEMA,
        pik_version: env!("CARGO_PKG_VERSION"),
        target: p.target.name.clone(),
        profile: p.profile.clone(),
        kernelrelease: release.clone(),
        firmware_image: p.target.firmware_image.clone(),
        config_blake3: crate::fsutil::hash_file(&config_path)?,
        toolchain: p.kbuild.toolchain.clone(),
        host_cc,
        inputs: Inputs {
            source_kind: p.source.kind().into(),
            source_path: p.source.path().display().to_string(),
            source_blake3: p.source_digest.clone(),
            kernel_version,
            patches: p
                .patches
                .iter()
                .map(|x| InputFile {
                    name: x.name.clone(),
                    blake3: blake3::hash(&x.bytes).to_hex().to_string(),
                })
                .collect(),
            config_base: base,
            fragments: frags
                .iter()
                .map(|f| InputFile {
                    name: f.origin.clone(),
                    blake3: blake3::hash(f.text.as_bytes()).to_hex().to_string(),
                })
                .collect(),
            set: opt.set.clone(),
            source_date_epoch: p.kbuild.epoch,
            patch_fuzz: opt.patch_fuzz,
            make_targets: make_targets.clone(),
        },
        out: out.display().to_string(),
        tree_blake3,
        listing_blake3,
        nar,
        files,
        dev,
        objects_compiled: compiled,
        cache: cache_summary.clone(),
        memo: memo_key
            .as_ref()
            .map(|k| serde_json::json!({"key": k, "hit": false})),
        build_dir: p.kbuild.build_dir.display().to_string(),
        log: p.kbuild.log.display().to_string(),
        timings_s: p.timings.clone(),
    };
    let json = serde_json::to_vec_pretty(&m)?;
    pik_cache::atomic_write(&output::manifest_path(&out), &json)
        .with_context(|| format!("writing {}", output::manifest_path(&out).display()))?;
    if let Some(key) = &memo_key {
        if let Err(e) = crate::output::memo::dir()
            .and_then(|d| crate::output::memo::store(&d, key, &out, dev_out.as_deref(), &json))
        {
            rep.warn(&format!("storing the build in the memo failed: {e:#}"));
        }
    }
    crate::nix::expr::write_beside(
        &out,
        &m.inputs.kernel_version,
        &release,
        &m.nar.sri,
        &p.target.name,
        &std::fs::read_to_string(&config_path)?,
        m.dev
            .as_ref()
            .map(|d| (Path::new(&d.path), d.nar.sri.as_str())),
    )?;
    drop(out_lock);
    drop(dev_lock);
    if let Some(fw) = &dests.firmware {
        rep.phase(
            "firmware",
            &format!("boot-partition files into {}", fw.dest.display()),
        );
        firmware_view(&out, fw)?;
    }
    let cache_line = match &cache_summary {
        Some(c) => format!("pik: cache   {c}\n"),
        None => "pik: cache   off (--no-cache)\n".to_string(),
    };
    let dev_line = match &m.dev {
        Some(d) => format!("pik: dev     {} ({})\n", d.path, d.nar.nar_hash),
        None => String::new(),
    };
    let human = format!(
        "pik: built {} ({} {}) in {:.0} s: {} objects compiled\n{cache_line}pik: output  {}\n{dev_line}pik: manifest {}\npik: nix     {} ({})",
        release,
        p.target.name,
        p.profile,
        started.elapsed().as_secs_f64(),
        compiled,
        out.display(),
        output::manifest_path(&out).display(),
        output::nix_path(&out).display(),
        m.nar.nar_hash
    );
    rep.finish(serde_json::to_value(&m)?, &human);
    Ok(())
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
    firmware_view(&out, &claim)
}

/// The boot-partition view of an output tree, described by its manifest. The manifest is
/// untrusted input: its names are checked, and the tree must still be the one it describes.
pub fn firmware_view(out: &Path, dir: &Claim) -> Result<Vec<String>> {
    let mpath = output::manifest_path(out);
    let bytes = crate::fsutil::read_regular(&mpath, 256 << 20, true)
        .with_context(|| format!("reading the manifest (is {} a pik output?)", out.display()))?;
    let m: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", mpath.display()))?;
    let field = |k: &str| -> Result<String> {
        m[k].as_str().map(str::to_string).with_context(|| {
            format!(
                "{} has no {k:?} (is {} a pik output?)",
                mpath.display(),
                out.display()
            )
        })
    };
    let (target, image, release) = (
        field("target")?,
        field("firmware_image")?,
        field("kernelrelease")?,
    );
    crate::output::claim::plain_name(&image, "the manifest's firmware_image")?;
    crate::output::claim::plain_name(&target, "the manifest's target")?;
    crate::output::claim::plain_name(&release, "the manifest's kernelrelease")?;
    if field("listing_blake3")? != crate::output::claim::listing(out, None)? {
        bail!(
            "{} no longer matches its manifest {} (changed since pik wrote it): rebuild it",
            out.display(),
            mpath.display()
        );
    }
    crate::output::firmware::write(
        &crate::output::firmware::Source {
            out,
            target: &target,
            firmware_image: &image,
            release: &release,
        },
        dir,
    )
}

fn target_name(opt: &Options) -> String {
    let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
    target::find(&kdata, &opt.target)
        .map(|t| t.name)
        .unwrap_or_else(|_| opt.target.clone())
}

/// `pik config --savedefconfig FILE`: the kernel's own `savedefconfig` on a configured build dir.
pub fn savedefconfig(opt: &Options, dest: &Path, rep: &mut Reporter) -> Result<()> {
    let p = prepare(opt, rep)?;
    if !p.kbuild.build_dir.join(".config").is_file() {
        bail!(
            "{} has no .config yet: run `pik build --target {} --config-only` (with the same \
             --source/--build-dir) first, tune it (make menuconfig O=…), then save it",
            p.kbuild.build_dir.display(),
            p.target.name
        );
    }
    rep.phase("kconfig", "savedefconfig");
    p.kbuild.run(&["savedefconfig"], &[], &mut |_| {})?;
    let src = p.kbuild.build_dir.join("defconfig");
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    pik_cache::atomic_write(&kbuild::absolute(dest)?, &bytes)
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
