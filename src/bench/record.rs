//! The bench results file: JSON lines, one [`Record`] per measured run, appended as each run
//! ends (an interrupted bench keeps every run it finished). Schema `pik.bench/1`; a record of
//! another schema is refused by name, never half-read.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The schema name and version of a record.
pub const SCHEMA: &str = "pik.bench/1";

/// One measured run of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`SCHEMA`].
    pub schema: String,
    /// What was measured: `plain`, `cold`, `warm`, `memo`, `edit-patch`, `edit-set`,
    /// `kbuild-edit-patch`, `kbuild-edit-set`, `ccache-cold`, `ccache-warm`, `dist`.
    pub scenario: String,
    /// 1-based run number within the bench, and how many runs it had.
    pub run: u32,
    /// Runs in the bench.
    pub runs: u32,
    /// When the run started, Unix seconds.
    pub started_unix: u64,
    /// The host's label (`--label`, else its hostname): how the report names the host.
    pub label: String,
    /// What was built; records of different workloads are never compared.
    pub workload: Workload,
    /// Wall time of the whole scenario as a user runs it, seconds.
    pub wall_s: f64,
    /// Wall time of make building the image, modules and DTBs alone, seconds (None when no
    /// make ran, as on a memo hit).
    pub make_s: Option<f64>,
    /// CPU time of the whole process tree.
    pub cpu: Cpu,
    /// Peak resident set of the largest single process in the tree, KiB (what `wait4` reports).
    pub peak_rss_kib: u64,
    /// Wall time per phase, seconds.
    pub phases_s: Phases,
    /// The compiler cache's outcome (pik's object cache or ccache); None without a cache.
    pub cache: Option<Cache>,
    /// Where compiles ran.
    pub jobs: Jobs,
    /// Objects make compiled (or had served by a cache); None on a memo hit.
    pub objects_compiled: Option<u64>,
    /// Whether the output came from pik's whole-build memo (None for make scenarios).
    pub memo_hit: Option<bool>,
    /// For the edit scenarios: the change and what it cost.
    pub edit: Option<Edit>,
    /// For warm scenarios: the page-cache state of the store when the build started.
    pub store_pages: Option<String>,
    /// The machine.
    pub host: Host,
    /// Anything a reader of this record should know (a store filled first, a memo miss).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What a build is made from: records compare only within one workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// Target name.
    pub target: String,
    /// Profile name.
    pub profile: String,
    /// Kernel version from the tree's Makefile.
    pub kernel_version: String,
    /// The source's content digest (BLAKE3, as the manifest's `inputs.source_blake3`).
    pub source_blake3: String,
    /// BLAKE3 of the final `.config` (for edits: of the baseline's).
    pub config_blake3: String,
}

/// CPU time, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// User time of the process tree.
    pub user_s: f64,
    /// System time of the process tree.
    pub sys_s: f64,
}

/// Wall time per phase, seconds; a phase that did not run (or that this scenario cannot time
/// apart) is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Reading the inputs and hashing the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<f64>,
    /// The workspace: extraction (first time) and the patch series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<f64>,
    /// Kconfig (pik's merge and check, or `make olddefconfig`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<f64>,
    /// make of the image, modules and DTBs (compiles and links: kbuild interleaves them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<f64>,
    /// Linking apart from compiling; not timed apart yet (inside `compile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<f64>,
    /// `modules_install`, `dtbs_install`, depmod (pik: into the Nix layout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<f64>,
    /// Hashing and publishing the output (manifest, NAR hash, Nix expression, memo store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<f64>,
    /// A memo hit: hashing the inputs, placing and verifying the stored output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<f64>,
}

/// A compiler cache's outcome for one build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    /// `pik` or `ccache`.
    pub kind: String,
    /// Compiles served from the cache.
    pub hits: u64,
    /// Compiles that ran (and were stored).
    pub misses: u64,
    /// Calls the cache could not handle, by reason.
    pub uncacheable: BTreeMap<String, u64>,
}

/// Where compiles ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// `-j`.
    pub slots: u64,
    /// Compiles that ran on this host (cache hits not counted).
    pub local: u64,
    /// Compiles that ran on a build host (distributed builds).
    pub remote: u64,
    /// Compiles sent to a build host that fell back to this one.
    pub fallback: u64,
}

/// An incremental change after a build, and what rebuilding it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// `patch` (a patch that changes one driver's .c file) or `set` (one more module on).
    pub change: String,
    /// The changed file, or the `CONFIG_…=m` setting.
    pub detail: String,
    /// Objects kbuild recompiled (for pik: every compile the cache saw, hits and misses).
    pub recompiled: u64,
    /// Of those, how many the cache served.
    pub served: u64,
    /// The objects really compiled (misses; for plain make, every compile line), at most
    /// [`Edit::LISTED`] of them.
    pub compiled: Vec<String>,
    /// BLAKE3 of the `.config` after the change.
    pub config_blake3: String,
}

impl Edit {
    /// The most object names an edit record lists.
    pub const LISTED: usize = 50;
}

/// The machine a record was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// The hostname (`uname -n`).
    pub hostname: String,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cores: u64,
    /// `MemTotal`, bytes.
    pub memory_bytes: u64,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: String,
    /// Kernel release and machine (`uname -r -m`).
    pub kernel: String,
    /// First line of the cross compiler's `--version`.
    pub toolchain: String,
    /// First line of `make --version`.
    pub make: String,
    /// First line of `ccache --version`, when a ccache scenario ran.
    pub ccache: Option<String>,
    /// pik's version.
    pub pik_version: String,
    /// BLAKE3 of the pik binary that ran the bench.
    pub pik_blake3: String,
}

impl Record {
    /// The record as one JSON line (no newline).
    pub fn to_line(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

/// Appends `record` to the JSON-lines file `path` (created if missing) in one write, so
/// records of concurrent writers never interleave within a line.
pub fn append(path: &Path, record: &Record) -> Result<()> {
    let mut line = record.to_line()?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the results file {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

/// Every record of the JSON-lines file `path` (blank lines skipped). A line that is not a
/// record of [`SCHEMA`] is an error naming the file and line.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the results file {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// The records of JSON-lines `text`; `name` names it in errors.
pub fn parse(text: &str, name: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => {}
            Some(other) => bail!("{at}: schema {other:?}, this pik reads {SCHEMA}"),
            None => bail!("{at}: not a pik bench record (no \"schema\")"),
        }
        let r: Record =
            serde_json::from_value(v).with_context(|| format!("{at}: not a {SCHEMA} record"))?;
        out.push(r);
    }
    Ok(out)
}
