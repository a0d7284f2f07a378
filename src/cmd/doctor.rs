//! `pik doctor`: checks every external tool and library a build needs and names the Debian
//! package that provides each missing one.

use crate::fsutil;
use crate::input::target::Target;
use crate::input::toolchain;
use serde::Serialize;
use std::io::Write;
use std::process::{Command, Stdio};

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// The Debian package that provides it.
    pub package: String,
    /// Whether a build needs it (false: only some features or the tests do).
    pub required: bool,
    /// Found, and where/which version.
    pub found: Option<String>,
}

fn tool(what: &str, package: &str, required: bool) -> Check {
    Check {
        what: what.into(),
        package: package.into(),
        required,
        found: fsutil::which(what)
            .or_else(|| {
                ["/usr/sbin", "/sbin"]
                    .iter()
                    .map(|d| std::path::Path::new(d).join(what))
                    .find(|p| p.is_file())
            })
            .map(|p| p.display().to_string()),
    }
}

/// Whether the host C compiler can preprocess `#include <header>`.
fn header(header: &str, package: &str) -> Check {
    let found = Command::new("gcc")
        .args(["-E", "-x", "c", "-", "-o", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .and_then(|mut c| {
            let _ = c
                .stdin
                .take()?
                .write_all(format!("#include <{header}>\n").as_bytes());
            c.wait().ok()
        })
        .filter(|s| s.success())
        .map(|_| format!("<{header}>"));
    Check {
        what: format!("{header} (host headers)"),
        package: package.into(),
        required: true,
        found,
    }
}

/// Runs every check for building kernels for `target`.
pub fn run_checks(target: &Target, req: &toolchain::Request) -> Vec<Check> {
    let triple = &target.triple;
    let cross = toolchain::find(triple, req);
    let mut v = vec![
        Check {
            what: format!("{triple} cross compiler"),
            package: if req.llvm {
                "clang lld llvm".into()
            } else {
                target.cross_package.clone()
            },
            required: true,
            found: cross
                .as_ref()
                .ok()
                .map(|t| format!("{} ({})", t.cc.display(), t.version)),
        },
        tool("make", "make", true),
        tool("gcc", "gcc", true),
        tool("bc", "bc", true),
        tool("bison", "bison", true),
        tool("flex", "flex", true),
        tool("perl", "perl", true),
        tool("patch", "patch", true),
        tool("tar", "tar", true),
        tool("xz", "xz-utils", true),
        tool("depmod", "kmod", true),
        header("openssl/opensslv.h", "libssl-dev"),
        header("gelf.h", "libelf-dev"),
        tool("zstd", "zstd", false),
        tool("bzip2", "bzip2", false),
        tool("dtc", "device-tree-compiler", false),
        tool("cpio", "cpio", false),
        tool("qemu-system-aarch64", "qemu-system-arm", false),
    ];
    // gcc's header probe is meaningless without gcc; say so once.
    if v.iter().any(|c| c.what == "gcc" && c.found.is_none()) {
        for c in v.iter_mut().filter(|c| c.what.contains("host headers")) {
            c.found = None;
        }
    }
    v
}

/// Prints the checks; returns true when every required one passed.
pub fn report(checks: &[Check], json: bool) -> anyhow::Result<bool> {
    let ok = checks.iter().all(|c| !c.required || c.found.is_some());
    if json {
        crate::outln!("{}", serde_json::json!({"ok": ok, "checks": checks}))?;
        return Ok(ok);
    }
    for c in checks {
        match &c.found {
            Some(f) => crate::outln!("  ok       {:<40} {f}", c.what)?,
            None if c.required => {
                crate::outln!("  MISSING  {:<40} apt-get install {}", c.what, c.package)?
            }
            None => crate::outln!(
                "  absent   {:<40} optional: apt-get install {}",
                c.what,
                c.package
            )?,
        }
    }
    let missing: Vec<&str> = checks
        .iter()
        .filter(|c| c.required && c.found.is_none())
        .map(|c| c.package.as_str())
        .collect();
    if missing.is_empty() {
        crate::outln!("everything pik build needs is here")?;
    } else {
        crate::outln!(
            "missing; install with: apt-get install {}",
            missing.join(" ")
        )?;
    }
    Ok(ok)
}
