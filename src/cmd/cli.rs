//! The command line's shape (clap): subcommands, flags and their help. Settings that the config
//! file can also give are Options here; `crate::settings` fills them in.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// pik: build Raspberry Pi 5 kernels for NixOS, fast.
#[derive(Debug, Parser)]
#[command(name = "pik", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(super) enum Cmd {
    /// Configure, cross-build and lay out a kernel (Image, modules, DTBs) the way Nix expects.
    Build(BuildArgs),
    /// pik's settings (`show`), or a tuned build-dir .config back into a fragment
    /// (`--savedefconfig FILE`).
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
        compiler: OsString,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
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
    /// Look after the object cache (<cache dir>/objects).
    Cache(CacheArgs),
    /// Check every external tool a build needs; names the Debian package of each missing one.
    Doctor(DoctorArgs),
    /// Build hosts for distributed compiles (stock distccd; see `pik hosts check --help`).
    Hosts {
        #[command(subcommand)]
        command: HostsCmd,
    },
    /// Time kernel builds scenario by scenario (plain make, pik cold/warm/memo, edits, ccache),
    /// appending one JSON record per run; `pik bench report FILES…` compares hosts.
    Bench(BenchArgs),
    /// Predict make's wall time with builders from a build's job log
    /// (`<build-dir>/pik-jobs.log`): the recorded compiles replayed on simulated builders.
    Plan(PlanArgs),
    /// Print a shell completion script: `pik completions bash > /etc/bash_completion.d/pik`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum NarCmd {
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

#[derive(Debug, Args)]
pub(super) struct CacheArgs {
    /// pik's cache dir (the object store is its objects/). Default: $PIK_CACHE_DIR, else `dir`
    /// under [cache] in the config file, else $XDG_CACHE_HOME/pik or ~/.cache/pik.
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CacheCmd,
}

#[derive(Debug, Subcommand)]
pub(super) enum CacheCmd {
    /// Hits, misses, uncacheable calls by reason, hit rate, size, time saved.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Evict least recently used entries down to the size limit.
    Gc {
        /// Size limit (e.g. 2G). Default: $PIK_CACHE_MAX_SIZE, else `max_size` under [cache]
        /// in the config file, else 5G.
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

#[derive(Debug, Subcommand)]
pub(super) enum HostsCmd {
    /// Probe every build host: reachable, round-trip time, slots, whether its distccd accepts
    /// the compiler, and whether the compiler behind that name is the local one (a probe
    /// compile whose object's ELF header and .comment are compared with the local
    /// compiler's). Exits 0 when every host is usable, 1 when any is excluded.
    Check(HostsCheckArgs),
}

#[derive(Debug, Args)]
pub(super) struct HostsCheckArgs {
    /// Hosts in distcc's syntax: `host[:port][/limit][,lzo][,cpp]`, `[user]@host[/limit]`
    /// (over ssh), `localhost[/N]`. Default: $PIK_HOSTS (space-separated), else `list` under
    /// [hosts] in the config file.
    #[arg(long = "hosts", value_name = "SPEC", num_args = 1..)]
    pub hosts: Vec<String>,
    /// The target whose cross compiler is probed. Default: $PIK_TARGET, else `target` under
    /// [build] in the config file, else bcm2712.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Cross toolchain prefix instead of the detected one (e.g. aarch64-linux-gnu-).
    #[arg(long)]
    pub toolchain: Option<String>,
    /// The compiler to probe (a name on PATH or a path), instead of the target's gcc.
    #[arg(long, conflicts_with = "toolchain")]
    pub compiler: Option<std::path::PathBuf>,
    /// Seconds a host may take to answer the probe (connecting is limited to 4 s).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// The job log a build wrote, or the build dir that holds it (`pik-jobs.log`). Record a
    /// build with an empty object cache (`PIK_OBJECT_CACHE_DIR=<empty dir>`, `--no-memo`) so
    /// every compile ran.
    #[arg(long, value_name = "FILE|DIR")]
    pub log: std::path::PathBuf,
    /// Local cores. Default: this machine's.
    #[arg(long)]
    pub local: Option<usize>,
    /// Numbers of identical builders to predict for (0: this machine alone).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,4,8")]
    pub builders: Vec<usize>,
    /// Or these hosts, in distcc's syntax (each `/limit` its slots), predicted together.
    #[arg(long = "hosts", value_name = "SPEC", num_args = 1.., conflicts_with = "builders")]
    pub hosts: Vec<String>,
    /// Slots per builder (its cores).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// A builder core's speed against a local one (0.5: a compile takes twice as long there).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Round trip and transfer per job, ms.
    #[arg(long, default_value_t = 2.0)]
    pub rtt_ms: f64,
    /// Local preprocessing per remote job, ms (0 for pump jobs). Default: the log's mean for
    /// jobs that went out, else 128.
    #[arg(long)]
    pub cpp_ms: Option<f64>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Check for this target's toolchain. Default: $PIK_TARGET, else `target` under [build] in
    /// the config file, else bcm2712.
    #[arg(long)]
    pub target: Option<String>,
    /// Toolchain prefix to check instead of the detected one.
    #[arg(long)]
    pub toolchain: Option<String>,
    /// Check clang/LLVM instead of GCC.
    #[arg(long)]
    pub llvm: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(super) struct Common {
    /// Target (see `pik targets`): bcm2712 (Pi 5, 16K), bcm2711/rpi4 (4K, kernel8.img).
    /// Default: $PIK_TARGET, else `target` under [build] in the config file.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Kernel tree or tarball (.tar.xz/.gz/.bz2/.zst). Default: $PIK_KERNEL_SRC, else the newest
    /// /usr/src/linux-source-* with the target's device tree.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Profile: full (vendor or arm64 defconfig; hours) or mini (tinyconfig + Pi fragment;
    /// minutes). Default: $PIK_PROFILE, else `profile` under [build] in the config file, else
    /// the target's default.
    #[arg(long)]
    pub profile: Option<String>,
    /// Build directory (kbuild O=); kept for incremental rebuilds. Default: under the cache dir.
    #[arg(long)]
    pub build_dir: Option<PathBuf>,
    /// Extra Kconfig fragment, merged after pik's own (repeatable, later wins).
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// A single setting, merged last (repeatable): CONFIG_FOO=y, CONFIG_BAR=n, CONFIG_S="x".
    #[arg(long = "set", value_name = "CONFIG_FOO=val")]
    pub set: Vec<String>,
    /// Extra patch (-p1), applied after the target's series (repeatable).
    #[arg(long = "patch", value_name = "FILE")]
    pub patches: Vec<PathBuf>,
    /// Let patches apply inexactly: GNU patch's fuzz factor (lines of context it may ignore).
    /// Default 0: a hunk's context must match the tree exactly (at any line).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub patch_fuzz: u32,
    /// Don't apply kconfigs/nixos.config (the options NixOS requires).
    #[arg(long)]
    pub no_nixos: bool,
    /// Read targets and fragments from this directory instead of the built-in kconfigs/.
    #[arg(long)]
    pub kconfigs: Option<PathBuf>,
    /// Read patch series from this directory instead of the built-in patches/.
    #[arg(long = "patches", value_name = "DIR")]
    pub patches_dir: Option<PathBuf>,
    /// Cross toolchain prefix (e.g. aarch64-linux-gnu-); also read from $CROSS_COMPILE.
    #[arg(long)]
    pub toolchain: Option<String>,
    /// Build with clang/LLVM (LLVM=1).
    #[arg(long)]
    pub llvm: bool,
    /// pik's cache dir (workspaces, build dirs, memo, object store). Default: $PIK_CACHE_DIR,
    /// else `dir` under [cache] in the config file, else $XDG_CACHE_HOME/pik or ~/.cache/pik.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Emit machine-readable JSON events and summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BuildArgs {
    #[command(flatten)]
    pub common: Common,
    /// Output tree (default ./result-<target>); the manifest goes to <out>.json beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parallel jobs. Default: $PIK_JOBS, else `jobs` under [build] in the config file, else
    /// the number of CPUs.
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Stop after Kconfig and its check; leave the .config in the build dir.
    #[arg(long)]
    pub config_only: bool,
    /// Compile everything for real: no object cache (kbuild's command lines stay the same).
    #[arg(long)]
    pub no_cache: bool,
    /// Don't look the build up in the whole-build memo (still stores the result).
    #[arg(long)]
    pub no_memo: bool,
    /// Also write the firmware view (image, DTBs, overlays, config.txt, cmdline.txt) to DIR.
    #[arg(long, value_name = "DIR")]
    pub firmware_dir: Option<PathBuf>,
    /// Where the dev output goes (vmlinux, lib/modules/<v>/build for out-of-tree modules);
    /// default <out>-dev beside the output.
    #[arg(long, value_name = "DIR", conflicts_with = "no_dev")]
    pub dev: Option<PathBuf>,
    /// Don't write the dev output.
    #[arg(long)]
    pub no_dev: bool,
    /// Builders for compiles that miss the object cache, in distcc's syntax
    /// (`host[:port][/limit][,lzo][,cpp]`, `user@host` over ssh, `localhost/N` for the local
    /// slots); each runs stock distccd. Default: $PIK_HOSTS (space-separated), else `list`
    /// under [hosts] in the config file, else none (every compile runs here).
    #[arg(long = "hosts", value_name = "SPEC", num_args = 1..)]
    pub hosts: Vec<String>,
    /// A compile a builder fails (refused, timed out, died, wrong compiler) fails the build,
    /// naming the host and the reason, instead of running here. Also $PIK_STRICT_REMOTE=1.
    #[arg(long)]
    pub strict_remote: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct ConfigArgs {
    #[command(subcommand)]
    pub command: Option<ConfigCmd>,
    #[command(flatten)]
    pub common: Common,
    /// Write the build dir's config as a minimal defconfig-style fragment to FILE.
    #[arg(long, value_name = "FILE", required = true)]
    pub savedefconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCmd {
    /// Print every effective setting and where it came from (flag, env, file, default).
    ///
    /// The config file is $PIK_CONFIG, else $XDG_CONFIG_HOME/pik/config.toml, else
    /// ~/.config/pik/config.toml. For each setting a flag wins over its PIK_* environment
    /// variable, which wins over the file, which wins over pik's default. Takes the flags a
    /// build takes for them, to show what that build would use.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(super) struct ShowArgs {
    /// As `pik build --target`.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// As `pik build --profile`.
    #[arg(long)]
    pub profile: Option<String>,
    /// As `pik build -j`.
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// As `pik cache gc --max-size`.
    #[arg(long)]
    pub max_size: Option<String>,
    /// As `pik build --cache-dir`.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// As `pik build --kconfigs` (where the target's default profile is looked up).
    #[arg(long)]
    pub kconfigs: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCmd>,
    /// The build every scenario makes, as `pik build` takes it (no --build-dir, no --json).
    #[command(flatten)]
    pub common: Common,
    /// Parallel jobs of every build. Default: $PIK_JOBS, else `jobs` under [build] in the
    /// config file, else the number of CPUs.
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Scenarios, comma-separated: plain (make, no cache), cold (pik, empty object cache, no
    /// memo), warm (pik, fresh build dir on the cache cold filled), memo (identical inputs
    /// again), edit (a patch and a --set after a build), ccache (cold and warm, depend mode),
    /// dist (over the configured build hosts).
    #[arg(long, value_delimiter = ',', default_value = crate::bench::scenario::DEFAULT)]
    pub scenarios: Vec<String>,
    /// Runs of each scenario (alternated run by run).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// The JSON-lines file each run's record is appended to.
    #[arg(long, value_name = "FILE", default_value = "pik-bench.jsonl")]
    pub results: PathBuf,
    /// This host's name in the records and reports. Default: its hostname.
    #[arg(long, value_name = "HOST")]
    pub label: Option<String>,
    /// Work dir for the runs' build and output dirs and the bench's caches.
    /// Default: <cache dir>-bench.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A cache store's page-cache state when a warm build starts: evict (on disk only),
    /// load (read just before) or asis.
    #[arg(long, value_name = "MODE", default_value = "evict")]
    pub store_pages: String,
    /// The driver source the edit scenario's patch changes (relative to the kernel tree).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "drivers/watchdog/bcm2835_wdt.c"
    )]
    pub edit_file: String,
    /// The module the edit scenario turns on.
    #[arg(
        long,
        value_name = "CONFIG_X=m",
        default_value = "CONFIG_SOFT_WATCHDOG=m"
    )]
    pub edit_set: String,
    /// Keep every run's build and output dirs (they are removed after each run otherwise).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum BenchCmd {
    /// Merge results files (one per host, or many): median and min–max per host × scenario,
    /// ratios against a baseline, as a table, Markdown or JSON, and an SVG chart.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// Results files written by `pik bench`.
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// Ratios against this scenario on each host, or `host:LABEL` for that host's runs of
    /// each scenario. Default: plain, when there are plain runs.
    #[arg(long, value_name = "SCENARIO|host:LABEL")]
    pub baseline: Option<String>,
    /// What to compare: wall, cpu (user+sys of the process tree) or make.
    #[arg(long, default_value = "wall", value_parser = ["wall", "cpu", "make"])]
    pub metric: String,
    /// Print Markdown tables.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw the chart (bars per host, min–max whiskers) as SVG into FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Log scale for the chart's time axis.
    #[arg(long)]
    pub log_scale: bool,
}

/// `-j N`: at least 1.
fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
