//! The `dev` output, as nixpkgs gives a kernel: `vmlinux` and `lib/modules/<release>/build`,
//! the tree out-of-tree modules build against (`boot.extraModulePackages`,
//! `make -C $dev/lib/modules/<v>/build M=$PWD modules`).
//!
//! The build tree is made by the kernel's own `scripts/package/install-extmod-build` (what
//! Debian's linux-headers packages are made with): headers, arch Makefiles, `scripts/` with its
//! built host programs, `Module.symvers`, `include/config/auto.conf` and the generated headers.
//! pik adds `.config`, and stages everything beside the destination like the main output.

use crate::build::kbuild::Kbuild;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The kernel script that lays out an external-module build tree (Linux 6.8 and later).
const SCRIPT: &str = "scripts/package/install-extmod-build";

/// Why a tree gets no dev output.
pub const UNSUPPORTED: &str = "this kernel tree has no scripts/package/install-extmod-build (it \
    came with Linux 6.8), which pik drives to lay out the dev output for out-of-tree modules; \
    pass --no-dev, or build a newer tree";

/// Whether pik can make the dev output for the kernel tree `tree`.
pub fn supported(tree: &Path) -> bool {
    tree.join(SCRIPT).is_file()
}

/// Stages the dev output of the finished build `kb` in a temp dir beside `dev`.
pub fn stage(kb: &Kbuild, release: &str, dev: &Path) -> Result<tempfile::TempDir> {
    let script = kb.tree.join(SCRIPT);
    if !supported(&kb.tree) {
        bail!("{UNSUPPORTED}");
    }
    let dir = crate::output::temp_beside(dev)?;
    let build = dir.path().join("lib/modules").join(release).join("build");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&kb.log)
        .with_context(|| format!("opening the build log {}", kb.log.display()))?;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(&script)
        .arg(&build)
        .current_dir(&kb.build_dir)
        .env("srctree", &kb.tree)
        .env("SRCARCH", &kb.arch)
        // CC = HOSTCC keeps scripts/ as built: host programs for the machine that builds the
        // modules (the script would otherwise rebuild them for the kernel's architecture).
        .env("CC", "gcc")
        .env("HOSTCC", "gcc")
        .env("MAKE", "make")
        .env("LC_ALL", "C")
        .stdout(log.try_clone()?)
        .stderr(std::process::Stdio::piped());
    let (child, registration) = crate::interrupt::spawn(&mut cmd, SCRIPT)?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {}", script.display()))?;
    drop(registration);
    crate::interrupt::check(SCRIPT)?;
    if !out.status.success() {
        bail!(
            "{SCRIPT} failed ({}): {}\nbuild dir (kept): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            kb.build_dir.display()
        );
    }
    std::fs::copy(kb.build_dir.join(".config"), build.join(".config"))
        .context("copying .config into the dev output")?;
    // An intermediate the script keeps, like the objects it deletes; it records the build
    // dir's absolute path, which would make the dev output depend on where pik built.
    let _ = std::fs::remove_file(build.join("scripts/mod/devicetable-offsets.s"));
    std::fs::copy(kb.build_dir.join("vmlinux"), dir.path().join("vmlinux"))
        .context("copying vmlinux into the dev output")?;
    for need in [
        "Module.symvers",
        "Makefile",
        "include/config/auto.conf",
        ".config",
    ] {
        if !build.join(need).exists() {
            bail!(
                "the dev output lacks lib/modules/{release}/build/{need} after {SCRIPT}: see {}",
                kb.log.display()
            );
        }
    }
    Ok(dir)
}

/// The default dev output path for an output tree: `<out>-dev` beside it.
pub fn default_path(out: &Path) -> std::path::PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push("-dev");
    std::path::PathBuf::from(s)
}
