//! The command line (clap). Each subcommand maps onto a library call.

pub mod cache;
pub mod doctor;

use crate::build::progress::Reporter;
use crate::build::{self, Options};
use crate::input::data::DataDir;
use crate::input::{target, toolchain};
use anyhow::Result;
use cache as cachecmd;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// pik: build Raspberry Pi 5 kernels for NixOS, fast.
#[derive(Debug, Parser)]
#[command(name = "pik", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Configure, cross-build and lay out a kernel (Image, modules, DTBs) the way Nix expects.
    Build(BuildArgs),
    /// Config tools: turn a tuned build-dir .config back into a fragment.
    Config(ConfigArgs),
    /// List targets and their profiles.
    Targets {
        /// Read targets from this directory instead of the built-in kconfigs/.
        #[arg(long)]
        kconfigs: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a compiler through the object cache, ccache-style: `pik cc aarch64-linux-gnu-gcc -c …`.
    Cc {
        /// The compiler (a name on PATH or a path).
        compiler: std::ffi::OsString,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write what the Pi firmware reads from the boot partition, from a pik output tree.
    Firmware {
        /// The output tree of a `pik build` (its manifest <OUT>.json beside it says the target).
        #[arg(long = "from", value_name = "OUT")]
        from: PathBuf,
        /// Where to write the boot-partition files.
        dir: PathBuf,
    },
    /// Nix archives: the narHash, narSize and store path Nix gives a tree, or the NAR itself.
    Nar {
        #[command(subcommand)]
        command: NarCmd,
    },
    /// Run as the builder of a Nix derivation (see nix/kernel.nix): settings from the
    /// derivation's attributes, outputs to $out (and $dev).
    NixBuilder,
    /// Look after the object cache ($PIK_CACHE_DIR/objects).
    Cache {
        #[command(subcommand)]
        command: CacheCmd,
    },
    /// Check every external tool a build needs; names the Debian package of each missing one.
    Doctor {
        /// Check for this target's toolchain.
        #[arg(long, default_value = "bcm2712")]
        target: String,
        /// Toolchain prefix to check instead of the detected one.
        #[arg(long)]
        toolchain: Option<String>,
        /// Check clang/LLVM instead of GCC.
        #[arg(long)]
        llvm: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NarCmd {
    /// Print narHash (sha256 as nix32 and SRI), narSize and the store path `nix-store --add` gives.
    Hash {
        /// The tree (or file).
        path: PathBuf,
        /// Store path name (default: the last component of PATH, as nix-store --add uses).
        #[arg(long)]
        name: Option<String>,
        /// Store directory.
        #[arg(long, default_value = crate::nix::nar::DEFAULT_STORE_DIR)]
        store_dir: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the NAR of PATH to stdout, byte for byte as `nix-store --dump`.
    Dump {
        /// The tree (or file).
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Hits, misses, uncacheable calls by reason, hit rate, size, time saved.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Evict least recently used entries down to the size limit.
    Gc {
        /// Size limit (e.g. 2G); default $PIK_CACHE_MAX_SIZE, else 5G.
        #[arg(long)]
        max_size: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Read every entry, remove damaged ones; exit 1 if any were found.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove every entry and reset the counters.
    Clear,
}

#[derive(Debug, Args)]
struct Common {
    /// Target (see `pik targets`): bcm2712 (Pi 5, 16K), bcm2711/rpi4 (4K, kernel8.img).
    #[arg(long, short = 't')]
    target: String,
    /// Kernel tree or tarball (.tar.xz/.gz/.bz2/.zst). Default: $PIK_KERNEL_SRC, else the newest
    /// /usr/src/linux-source-* with the target's device tree.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Profile: full (vendor or arm64 defconfig; hours) or mini (tinyconfig + Pi fragment; minutes).
    #[arg(long)]
    profile: Option<String>,
    /// Build directory (kbuild O=); kept for incremental rebuilds. Default: under the cache dir.
    #[arg(long)]
    build_dir: Option<PathBuf>,
    /// Extra Kconfig fragment, merged after pik's own (repeatable, later wins).
    #[arg(long = "fragment", value_name = "FILE")]
    fragments: Vec<PathBuf>,
    /// A single setting, merged last (repeatable): CONFIG_FOO=y, CONFIG_BAR=n, CONFIG_S="x".
    #[arg(long = "set", value_name = "CONFIG_FOO=val")]
    set: Vec<String>,
    /// Extra patch (-p1), applied after the target's series (repeatable).
    #[arg(long = "patch", value_name = "FILE")]
    patches: Vec<PathBuf>,
    /// Let patches apply inexactly: GNU patch's fuzz factor (lines of context it may ignore).
    /// Default 0: a hunk's context must match the tree exactly (at any line).
    #[arg(long, value_name = "N", default_value_t = 0)]
    patch_fuzz: u32,
    /// Don't apply kconfigs/nixos.config (the options NixOS requires).
    #[arg(long)]
    no_nixos: bool,
    /// Read targets and fragments from this directory instead of the built-in kconfigs/.
    #[arg(long)]
    kconfigs: Option<PathBuf>,
    /// Read patch series from this directory instead of the built-in patches/.
    #[arg(long = "patches", value_name = "DIR")]
    patches_dir: Option<PathBuf>,
    /// Cross toolchain prefix (e.g. aarch64-linux-gnu-); also read from $CROSS_COMPILE.
    #[arg(long)]
    toolchain: Option<String>,
    /// Build with clang/LLVM (LLVM=1).
    #[arg(long)]
    llvm: bool,
    /// Emit machine-readable JSON events and summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// Output tree (default ./result-<target>); the manifest goes to <out>.json beside it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Parallel jobs (default: number of CPUs).
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// Stop after Kconfig and its check; leave the .config in the build dir.
    #[arg(long)]
    config_only: bool,
    /// Compile everything for real: no object cache (kbuild's command lines stay the same).
    #[arg(long)]
    no_cache: bool,
    /// Don't look the build up in the whole-build memo (still stores the result).
    #[arg(long)]
    no_memo: bool,
    /// Also write the firmware view (image, DTBs, overlays, config.txt, cmdline.txt) to DIR.
    #[arg(long, value_name = "DIR")]
    firmware_dir: Option<PathBuf>,
    /// Where the dev output goes (vmlinux, lib/modules/<v>/build for out-of-tree modules);
    /// default <out>-dev beside the output.
    #[arg(long, value_name = "DIR", conflicts_with = "no_dev")]
    dev: Option<PathBuf>,
    /// Don't write the dev output.
    #[arg(long)]
    no_dev: bool,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    #[command(flatten)]
    common: Common,
    /// Write the build dir's config as a minimal defconfig-style fragment to FILE.
    #[arg(long, value_name = "FILE", required = true)]
    savedefconfig: PathBuf,
}

/// `-j N`: at least 1.
fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn options(c: Common) -> (Options, bool) {
    let json = c.json;
    (
        Options {
            target: c.target,
            profile: c.profile,
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
        },
        json,
    )
}

/// Parses the command line and runs it.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Build(b) => {
            let (mut opt, json) = options(b.common);
            opt.out = b.out;
            opt.jobs = b.jobs;
            opt.config_only = b.config_only;
            opt.no_cache = b.no_cache;
            opt.firmware_dir = b.firmware_dir;
            opt.no_memo = b.no_memo;
            opt.dev = b.dev;
            opt.no_dev = b.no_dev;
            crate::interrupt::install_handler();
            let mut rep = Reporter::new(json);
            build::build(&opt, &mut rep).inspect_err(|e| rep.fail(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::NixBuilder => {
            crate::interrupt::install_handler();
            crate::nix::builder::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config(c) => {
            let (opt, json) = options(c.common);
            crate::interrupt::install_handler();
            let mut rep = Reporter::new(json);
            build::savedefconfig(&opt, &c.savedefconfig, &mut rep).inspect_err(|e| rep.fail(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Targets { kconfigs, json } => {
            let data = DataDir::kconfigs(kconfigs.as_deref());
            let all = target::load_all(&data)?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|t| serde_json::json!({
                        "name": t.name, "aliases": t.aliases, "description": t.description,
                        "firmware_image": t.firmware_image, "default_profile": t.default_profile,
                        "profiles": t.profiles.iter().map(|(k, p)| (k.clone(), p.description.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                    }))
                    .collect();
                crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
            } else {
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
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cc { compiler, args } => {
            let code = crate::wrapper::run_cc(&compiler, args);
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Firmware { from, dir } => {
            let files = build::firmware_command(&from, &dir)?;
            crate::outln!(
                "pik: wrote {} files for the boot partition to {}",
                files.len(),
                dir.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Nar { command } => match command {
            NarCmd::Hash {
                path,
                name,
                store_dir,
                json,
            } => {
                let name = match name {
                    Some(n) => n,
                    None => crate::nix::nar::default_name(&path)?,
                };
                let i = crate::nix::nar::info(&path, &name, &store_dir)?;
                if json {
                    crate::outln!("{}", serde_json::to_string_pretty(&i)?)?;
                } else {
                    crate::outln!("narHash    {}", i.nar_hash)?;
                    crate::outln!("narHash    {}", i.sri)?;
                    crate::outln!("sha256     {}", i.hex)?;
                    crate::outln!("narSize    {}", i.nar_size)?;
                    crate::outln!("storePath  {}", i.store_path)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            NarCmd::Dump { path } => {
                let stdout = std::io::stdout();
                let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                crate::nix::nar::dump(&path, &mut w)?;
                std::io::Write::flush(&mut w)?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Cmd::Cache { command } => match command {
            CacheCmd::Stats { json } => cachecmd::stats(json).map(|_| ExitCode::SUCCESS),
            CacheCmd::Gc { max_size, json } => {
                cachecmd::gc(max_size.as_deref(), json).map(|_| ExitCode::SUCCESS)
            }
            CacheCmd::Verify { json } => Ok(if cachecmd::verify(json)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }),
            CacheCmd::Clear => cachecmd::clear().map(|_| ExitCode::SUCCESS),
        },
        Cmd::Doctor {
            target: t,
            toolchain: tc,
            llvm,
            json,
        } => {
            let data = DataDir::kconfigs(None);
            let t = target::find(&data, &t)?;
            let checks = doctor::run_checks(&t.triple, &toolchain::Request { prefix: tc, llvm });
            Ok(if doctor::report(&checks, json)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
