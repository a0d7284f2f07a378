//! The cross toolchain: found with the `cc` crate's target detection (the same rules cargo build
//! scripts use), overridable with `--toolchain PREFIX` or `CROSS_COMPILE`, or clang with `--llvm`.
//! Its identity (version text and the driver's content hash) goes into the manifest.

use crate::fsutil;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// How the user asked for a toolchain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--toolchain PREFIX` (e.g. `aarch64-linux-gnu-` or `/opt/x/bin/aarch64-none-linux-gnu-`).
    pub prefix: Option<String>,
    /// `--llvm`: clang/lld via `LLVM=1`.
    pub llvm: bool,
}

/// A found toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    /// The value for kbuild's `CROSS_COMPILE` (empty when building natively or with LLVM).
    pub cross_compile: String,
    /// Whether kbuild gets `LLVM=1`.
    pub llvm: bool,
    /// The C compiler driver, resolved on PATH.
    pub cc: PathBuf,
    /// First line of `cc --version`.
    pub version: String,
    /// BLAKE3 of the driver binary.
    pub cc_blake3: String,
    /// First line of the linker's `--version`.
    pub ld_version: String,
}

impl Toolchain {
    /// Arguments for make that select this toolchain, and the directory to put on PATH for a
    /// prefix given with a directory (kbuild then gets the bare prefix).
    pub fn make_args(&self) -> (Option<PathBuf>, Vec<String>) {
        let mut v = Vec::new();
        if self.llvm {
            v.push("LLVM=1".to_string());
        }
        let (dir, bare) = match self.cross_compile.rsplit_once('/') {
            Some((d, b)) => (Some(PathBuf::from(if d.is_empty() { "/" } else { d })), b),
            None => (None, self.cross_compile.as_str()),
        };
        if !bare.is_empty() {
            v.push(format!("CROSS_COMPILE={bare}"));
        }
        (dir, v)
    }

    /// The compilers a build routes through the object cache: the target's C compiler and the
    /// host's (`HOSTCC`: kbuild's host programs — fixdep, modpost, dtc, Kconfig — are compiled
    /// in every fresh build dir too).
    pub fn wrapped(&self) -> Vec<String> {
        let cc = self.cc_name();
        let host = if self.llvm { "clang" } else { "gcc" };
        let mut names = vec![cc];
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
        names
    }

    /// The name kbuild calls the C compiler by (what a masquerade link must be named).
    pub fn cc_name(&self) -> String {
        if self.llvm {
            "clang".into()
        } else {
            let bare = self.cross_compile.rsplit('/').next().unwrap_or_default();
            format!("{bare}gcc")
        }
    }
}

/// Finds the toolchain for `triple` (e.g. `aarch64-unknown-linux-gnu`).
pub fn find(triple: &str, req: &Request) -> Result<Toolchain> {
    let host_arch = std::env::consts::ARCH;
    let target_arch = triple.split('-').next().unwrap_or_default();
    if req.llvm {
        let cc = fsutil::which("clang").context(
            "--llvm needs clang on PATH: install the Debian packages clang, lld and llvm",
        )?;
        return identify(cc, String::new(), true, "ld.lld");
    }
    let prefix = match req.prefix.clone().or_else(|| {
        std::env::var("CROSS_COMPILE")
            .ok()
            .filter(|s| !s.is_empty())
    }) {
        Some(p) => p,
        None if host_arch == target_arch => String::new(),
        None => detect_prefix(triple, host_arch)?,
    };
    let gcc = format!("{prefix}gcc");
    let cc = fsutil::which(&gcc).with_context(|| {
        format!(
            "the cross compiler {gcc} was not found{}. Install the Debian package \
             gcc-aarch64-linux-gnu, or name another toolchain with --toolchain PREFIX \
             (or CROSS_COMPILE=PREFIX), or use clang with --llvm",
            if prefix.contains('/') { "" } else { " on PATH" }
        )
    })?;
    identify(cc, prefix.clone(), false, &format!("{prefix}ld"))
}

/// The cross prefix the `cc` crate would use for `triple` (`aarch64-linux-gnu-`).
fn detect_prefix(triple: &str, host_arch: &str) -> Result<String> {
    let host = format!("{host_arch}-unknown-linux-gnu");
    let tool = cc::Build::new()
        .target(triple)
        .host(&host)
        .opt_level(0)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .with_context(|| format!("looking up a C compiler for {triple}"))?;
    let name = tool
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match name.strip_suffix("gcc") {
        Some(prefix) if !prefix.is_empty() => Ok(prefix.to_string()),
        _ => bail!(
            "no {triple} cross gcc could be derived from {name:?}; install gcc-aarch64-linux-gnu \
             or pass --toolchain PREFIX"
        ),
    }
}

fn identify(cc: PathBuf, cross_compile: String, llvm: bool, ld: &str) -> Result<Toolchain> {
    let version = first_line_of(&cc.to_string_lossy(), &["--version"])
        .with_context(|| format!("running {} --version", cc.display()))?;
    let resolved = std::fs::canonicalize(&cc).unwrap_or_else(|_| cc.clone());
    let cc_blake3 = fsutil::hash_file(&resolved)?;
    let ld_version = first_line_of(ld, &["--version"]).unwrap_or_else(|_| "unknown".into());
    Ok(Toolchain {
        cross_compile,
        llvm,
        cc,
        version,
        cc_blake3,
        ld_version,
    })
}

/// The first line a tool prints for `args`.
pub fn first_line_of(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {tool}"))?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}
