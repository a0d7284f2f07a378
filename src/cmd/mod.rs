//! The command line: clap parses it (`cli`), `crate::settings` fills in what it leaves out,
//! and each subcommand is one small function over a library call.

pub mod cache;
mod cli;
mod config;
pub mod doctor;
mod plan;

use crate::build::progress::Reporter;
use crate::build::{self, Options};
use crate::input::data::DataDir;
use crate::input::target::{self, Target};
use crate::input::toolchain;
use crate::settings::{self, Flags, Origin, Setting, Settings};
use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
pub use cli::Cli;
use cli::{BenchArgs, BenchCmd, NarCmd, ReportArgs, ShowArgs};
use cli::{BuildArgs, CacheArgs, CacheCmd, Cmd, Common, ConfigArgs, ConfigCmd, DoctorArgs};
use cli::{HostsCheckArgs, HostsCmd};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

/// Parses the command line and runs it.
pub fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        Cmd::Build(b) => build(b),
        Cmd::Config(c) => config(c),
        Cmd::Targets { kconfigs, json } => targets(kconfigs.as_deref(), json),
        Cmd::Cc { compiler, args } => Ok(cc(&compiler, args)),
        Cmd::Firmware { from, dir } => firmware(&from, &dir),
        Cmd::Nar { command } => nar(command),
        Cmd::NixBuilder => nix_builder(),
        Cmd::Cache(c) => cache(c),
        Cmd::Doctor(d) => doctor(d),
        Cmd::Hosts {
            command: HostsCmd::Check(h),
        } => hosts_check(h),
        Cmd::Bench(b) => bench(b),
        Cmd::Plan(p) => plan::run(p),
        Cmd::Completions { shell } => completions(shell),
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Adds where a value was written to an error about it, unless the user just typed it.
fn blame<T>(r: Result<T>, origin: &Origin) -> Result<T> {
    match origin {
        Origin::Flag { .. } => r,
        o => r.with_context(|| format!("in {}", o.whence())),
    }
}

/// The target the settings name, checked against the target data (so a name from the
/// environment or the config file that is wrong says where it was written).
fn checked_target(t: &Setting<String>, kconfigs: Option<&Path>) -> Result<Target> {
    blame(
        target::find(&DataDir::kconfigs(kconfigs), &t.value),
        &t.origin,
    )
}

/// The profile, checked against the target when something names one.
fn checked_profile(p: &Setting<Option<String>>, t: &Target) -> Result<()> {
    match &p.value {
        Some(name) => blame(t.profile(name).map(|_| ()), &p.origin),
        None => Ok(()),
    }
}

/// Records the flags of a build-like command line and resolves the settings.
fn settings_for(c: &Common, jobs: Option<usize>) -> Result<Settings> {
    settings::set_flags(Flags {
        cache_dir: c.cache_dir.clone(),
        target: c.target.clone(),
        profile: c.profile.clone(),
        jobs,
        max_size: None,
    });
    settings::load()
}

/// The build library's options: the command line, with the settings filling in target,
/// profile and jobs.
fn options(c: Common, jobs: Option<usize>) -> Result<Options> {
    let s = settings_for(&c, jobs)?;
    let target = s.required_target()?;
    let profile = s.profile()?;
    checked_profile(&profile, &checked_target(&target, c.kconfigs.as_deref())?)?;
    Ok(Options {
        target: target.value,
        profile: profile.value,
        jobs: s.jobs()?.value,
        source: c.source,
        build_dir: c.build_dir,
        fragments: c.fragments,
        set: c.set,
        patches: c.patches,
        no_nixos: c.no_nixos,
        kconfigs: c.kconfigs,
        patches_dir: c.patches_dir,
        patch_fuzz: c.patch_fuzz,
        toolchain: toolchain::Request {
            prefix: c.toolchain,
            llvm: c.llvm,
        },
        ..Options::default()
    })
}

/// Runs `work` with a progress reporter, after `opt` resolved: an error in either is reported
/// the same way (a JSON `error` event with `--json`).
fn with_reporter(
    json: bool,
    opt: Result<Options>,
    work: impl FnOnce(&Options, &mut Reporter) -> Result<()>,
) -> Result<ExitCode> {
    crate::interrupt::install_handler();
    let mut rep = Reporter::new(json);
    let opt = opt.inspect_err(|e| rep.fail(e))?;
    work(&opt, &mut rep).inspect_err(|e| rep.fail(e))?;
    Ok(ExitCode::SUCCESS)
}

/// `pik build`.
fn build(b: BuildArgs) -> Result<ExitCode> {
    let json = b.common.json;
    let hosts = build_hosts(b.hosts);
    let strict_remote =
        b.strict_remote || std::env::var_os(STRICT_REMOTE_ENV).is_some_and(|v| v == "1");
    let opt = options(b.common, b.jobs).and_then(|opt| {
        Ok(Options {
            hosts: hosts?,
            strict_remote,
            ..opt
        })
    });
    let opt = opt.map(|opt| Options {
        out: b.out,
        config_only: b.config_only,
        no_cache: b.no_cache,
        firmware_dir: b.firmware_dir,
        no_memo: b.no_memo,
        dev: b.dev,
        no_dev: b.no_dev,
        ..opt
    });
    with_reporter(json, opt, |opt, rep| build::build(opt, rep).map(|_| ()))
}

/// Makes `pik build` behave as `--strict-remote` when set to `1`.
const STRICT_REMOTE_ENV: &str = "PIK_STRICT_REMOTE";

/// The build's hosts: `--hosts` > `$PIK_HOSTS` > the config file (read after [`options`]
/// recorded the flags; parsed and checked later, before any work).
fn build_hosts(flag: Vec<String>) -> Result<Vec<String>> {
    if !flag.is_empty() {
        return Ok(flag);
    }
    let list = settings::load()?.hosts()?;
    blame(
        crate::dist::parse_hosts(&list.value).map(|_| list.value.clone()),
        &list.origin,
    )
}

/// `pik config --savedefconfig FILE`, or `pik config show`.
fn config(c: ConfigArgs) -> Result<ExitCode> {
    match (c.command, c.savedefconfig) {
        (Some(ConfigCmd::Show(a)), _) => config_show(a),
        (None, Some(file)) => {
            let json = c.common.json;
            let opt = options(c.common, None);
            with_reporter(json, opt, |opt, rep| build::savedefconfig(opt, &file, rep))
        }
        // clap requires one or the other.
        (None, None) => unreachable!("pik config without --savedefconfig or a subcommand"),
    }
}

/// `pik config show`.
fn config_show(a: ShowArgs) -> Result<ExitCode> {
    settings::set_flags(Flags {
        cache_dir: a.cache_dir,
        max_size: a.max_size,
        target: a.target,
        profile: a.profile,
        jobs: a.jobs,
    });
    config::show(&settings::load()?, a.kconfigs.as_deref(), a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `pik nix-builder`: everything comes from the derivation, never from a user's config file.
fn nix_builder() -> Result<ExitCode> {
    settings::environment_only();
    crate::interrupt::install_handler();
    crate::nix::builder::run()?;
    Ok(ExitCode::SUCCESS)
}

/// `pik targets`.
fn targets(kconfigs: Option<&Path>, json: bool) -> Result<ExitCode> {
    let all = target::load_all(&DataDir::kconfigs(kconfigs))?;
    if json {
        let v: Vec<_> = all.iter().map(target_json).collect();
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for t in &all {
        let alias = if t.aliases.is_empty() {
            String::new()
        } else {
            format!(" (alias {})", t.aliases.join(", "))
        };
        crate::outln!("{}{alias}: {}", t.name, t.description)?;
        for (name, p) in &t.profiles {
            let def = if *name == t.default_profile {
                " [default]"
            } else {
                ""
            };
            crate::outln!("    {name}{def}: {}", p.description)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn target_json(t: &Target) -> serde_json::Value {
    let profiles: std::collections::BTreeMap<_, _> = t
        .profiles
        .iter()
        .map(|(k, p)| (k.clone(), p.description.clone()))
        .collect();
    serde_json::json!({
        "name": t.name, "aliases": t.aliases, "description": t.description,
        "firmware_image": t.firmware_image, "default_profile": t.default_profile,
        "profiles": profiles,
    })
}

/// `pik cc -- <compiler> …` and other spellings `main` leaves to clap: the same wrapper.
fn cc(compiler: &OsStr, args: Vec<OsString>) -> ExitCode {
    settings::environment_only();
    let code = crate::wrapper::run_cc(compiler, args);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `pik firmware --from OUT DIR`.
fn firmware(from: &Path, dir: &Path) -> Result<ExitCode> {
    let files = build::firmware_command(from, dir)?;
    crate::outln!(
        "pik: wrote {} files for the boot partition to {}",
        files.len(),
        dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `pik nar hash|dump`.
fn nar(command: NarCmd) -> Result<ExitCode> {
    match command {
        NarCmd::Hash {
            path,
            name,
            store_dir,
            json,
        } => nar_hash(&path, name, &store_dir, json)?,
        NarCmd::Dump { path } => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            crate::nix::nar::dump(&path, &mut w)?;
            std::io::Write::flush(&mut w)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pik nar hash`.
fn nar_hash(path: &Path, name: Option<String>, store_dir: &str, json: bool) -> Result<()> {
    let name = match name {
        Some(n) => n,
        None => crate::nix::nar::default_name(path)?,
    };
    let i = crate::nix::nar::info(path, &name, store_dir)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&i)?)?;
        return Ok(());
    }
    crate::outln!("narHash    {}", i.nar_hash)?;
    crate::outln!("narHash    {}", i.sri)?;
    crate::outln!("sha256     {}", i.hex)?;
    crate::outln!("narSize    {}", i.nar_size)?;
    crate::outln!("storePath  {}", i.store_path)?;
    Ok(())
}

/// `pik cache stats|gc|verify|clear`.
fn cache(c: CacheArgs) -> Result<ExitCode> {
    settings::set_flags(Flags {
        cache_dir: c.cache_dir,
        ..Flags::default()
    });
    match c.command {
        CacheCmd::Stats { json } => cache::stats(json).map(|_| ExitCode::SUCCESS),
        CacheCmd::Gc { max_size, json } => {
            cache::gc(max_size.as_deref(), json).map(|_| ExitCode::SUCCESS)
        }
        CacheCmd::Verify { json } => cache::verify(json).map(exit),
        CacheCmd::Clear => cache::clear().map(|_| ExitCode::SUCCESS),
    }
}

/// `pik doctor`: for the target the settings name, else the Pi 5's.
fn doctor(d: DoctorArgs) -> Result<ExitCode> {
    settings::set_flags(Flags {
        target: d.target,
        ..Flags::default()
    });
    let t = settings::load()?.target()?;
    let t = Setting {
        value: t.value.unwrap_or_else(|| "bcm2712".into()),
        origin: t.origin,
    };
    let target = checked_target(&t, None)?;
    let req = toolchain::Request {
        prefix: d.toolchain,
        llvm: d.llvm,
    };
    let checks = doctor::run_checks(&target, &req);
    doctor::report(&checks, d.json).map(exit)
}

/// `pik hosts check`: hosts from `--hosts` > `$PIK_HOSTS` > the config file; the compiler
/// from `--compiler`, else the target's cross gcc.
fn hosts_check(h: HostsCheckArgs) -> Result<ExitCode> {
    settings::set_flags(Flags {
        target: h.target.clone(),
        ..Flags::default()
    });
    let s = settings::load()?;
    let hosts = if h.hosts.is_empty() {
        let list = s.hosts()?;
        blame(crate::dist::parse_hosts(&list.value), &list.origin)?
    } else {
        crate::dist::parse_hosts(&h.hosts)?
    };
    if hosts.is_empty() {
        anyhow::bail!(
            "no build hosts: pass --hosts SPEC…, set PIK_HOSTS, or write `list = [\"pi5a/4\"]` \
             under [hosts] in {}",
            s.config_file().describe()
        );
    }
    let (path, name) = match h.compiler {
        Some(c) => {
            let name = c.file_name().map(|n| n.to_string_lossy().into_owned());
            (c.clone(), name.unwrap_or_default())
        }
        None => {
            let t = s.target()?;
            let t = Setting {
                value: t.value.unwrap_or_else(|| "bcm2712".into()),
                origin: t.origin,
            };
            let target = checked_target(&t, None)?;
            let req = toolchain::Request {
                prefix: h.toolchain,
                llvm: false,
            };
            let tc = toolchain::find(&target.triple, &req)?;
            (tc.cc.clone(), tc.cc_name())
        }
    };
    let local = crate::dist::CompilerIdentity::local(&path)?;
    let opts = crate::dist::check::CheckOptions {
        compiler: name,
        connect: crate::dist::ConnectOptions {
            timeouts: crate::dist::Timeouts {
                io: std::time::Duration::from_secs(h.timeout.max(1)),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let report = crate::dist::check::check_hosts(&hosts, &opts, &local);
    crate::dist::check::print(&report, h.json)?;
    Ok(exit(report.usable == report.hosts.len()))
}

/// `pik bench`, or `pik bench report`.
fn bench(b: BenchArgs) -> Result<ExitCode> {
    if let Some(BenchCmd::Report(r)) = b.command {
        return bench_report(r);
    }
    if b.common.build_dir.is_some() || b.common.json {
        anyhow::bail!(
            "pik bench makes a fresh build dir per run: leave out --build-dir and --json"
        );
    }
    let opt = crate::bench::runner::Options {
        scenarios: crate::bench::scenario::parse(&b.scenarios)?,
        store_pages: b.store_pages.parse()?,
        build: options(b.common, b.jobs)?,
        runs: b.runs,
        results: b.results,
        label: b.label,
        dir: b.dir,
        edit_file: b.edit_file,
        edit_set: b.edit_set,
        keep: b.keep,
    };
    crate::interrupt::install_handler();
    crate::bench::runner::run(&opt)?;
    Ok(ExitCode::SUCCESS)
}

/// `pik bench report FILES…`.
fn bench_report(r: ReportArgs) -> Result<ExitCode> {
    use crate::bench::{chart, record, report};
    let mut records = Vec::new();
    for f in &r.files {
        records.extend(record::read(f)?);
    }
    anyhow::ensure!(!records.is_empty(), "no records in {:?}", r.files);
    let metric = match r.metric.as_str() {
        "cpu" => report::Metric::Cpu,
        "make" => report::Metric::Make,
        _ => report::Metric::Wall,
    };
    let baseline = r.baseline.as_deref().map(report::Baseline::parse);
    let rep = report::build(&records, metric, baseline);
    if let Some(svg) = &r.svg {
        std::fs::write(svg, chart::svg(&rep, r.log_scale)?)
            .with_context(|| format!("writing {}", svg.display()))?;
    }
    let text = match (r.json, r.markdown) {
        (true, _) => serde_json::to_string_pretty(&rep)?,
        (_, true) => rep.markdown(),
        _ => rep.text(),
    };
    crate::outln!("{}", text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `pik completions bash|zsh|fish|…`: written whole, so a closed stdout is an error, not a panic.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pik", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
        .and_then(|_| std::io::Write::flush(&mut std::io::stdout().lock()))
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
