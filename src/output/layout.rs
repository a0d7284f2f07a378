//! The output tree, in the layout nixpkgs gives a kernel: `Image`, the firmware-named image,
//! `System.map`, `config`, `dtbs/<vendor>/*.dtb` (+ `dtbs/overlays/`), `lib/modules/<release>/`.
//! Installation is the kernel's own (`modules_install`, `dtbs_install`, depmod); pik stages into a
//! temp dir beside `--out`, verifies the layout, and swaps it into place under a lock, so a failed
//! or interrupted build never leaves a half result and never destroys the previous one.

use crate::build::kbuild::Kbuild;
use crate::fsutil;
use crate::input::target::Target;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A staged, verified output tree waiting to be published.
pub struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    /// Where the staged tree is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The temp dir holding it, to be swapped into place.
    pub fn into_dir(self) -> tempfile::TempDir {
        self.dir
    }
}

/// Installs the build's results into a temp dir beside `out`, in the Nix layout, and checks it.
pub fn stage(
    kb: &Kbuild,
    target: &Target,
    release: &str,
    modules: bool,
    out: &Path,
) -> Result<Staged> {
    let dir = super::temp_beside(out)?;
    let root = dir.path();
    if modules {
        let depmod = find_depmod()?;
        kb.run(
            &["modules_install"],
            &[
                format!("INSTALL_MOD_PATH={}", root.display()),
                "INSTALL_MOD_STRIP=1".into(),
                format!("DEPMOD={}", depmod.display()),
            ],
            &mut |_| {},
        )?;
        let moddir = root.join("lib/modules").join(release);
        for link in ["build", "source"] {
            let p = moddir.join(link);
            if std::fs::symlink_metadata(&p).is_ok() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    kb.run(
        &["dtbs_install"],
        &[format!("INSTALL_DTBS_PATH={}", root.join("dtbs").display())],
        &mut |_| {},
    )?;
    let overlays_readme = kb
        .tree
        .join("arch")
        .join(&kb.arch)
        .join("boot/dts/overlays/README");
    if overlays_readme.is_file() {
        std::fs::create_dir_all(root.join("dtbs/overlays"))?;
        std::fs::copy(&overlays_readme, root.join("dtbs/overlays/README"))?;
    }
    let image = kb.boot_file(&target.kernel_image);
    for (src, dst) in [
        (image.clone(), target.kernel_image.as_str()),
        (image, target.firmware_image.as_str()),
        (kb.build_dir.join("System.map"), "System.map"),
        (kb.build_dir.join(".config"), "config"),
    ] {
        std::fs::copy(&src, root.join(dst))
            .with_context(|| format!("copying {} into the output", src.display()))?;
    }
    // The optional device trees are expected only where the kernel tree has their source.
    let dtbs: Vec<&str> = target
        .dtbs
        .iter()
        .filter(|d| d.required || kb.tree.join(&d.source).is_file())
        .map(|d| d.dtb.as_str())
        .collect();
    check_layout(root, target, &dtbs, release, modules)?;
    Ok(Staged { dir })
}

/// Checks the staged tree has everything NixOS and the firmware read.
pub fn check_layout(
    root: &Path,
    target: &Target,
    dtbs: &[&str],
    release: &str,
    modules: bool,
) -> Result<()> {
    let mut need: Vec<String> = vec![
        target.kernel_image.clone(),
        target.firmware_image.clone(),
        "System.map".into(),
        "config".into(),
    ];
    need.extend(dtbs.iter().map(|d| format!("dtbs/{d}")));
    if modules {
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
            "modules.dep",
        ] {
            need.push(format!("lib/modules/{release}/{f}"));
        }
    }
    let missing: Vec<&String> = need.iter().filter(|p| !root.join(p).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "the build did not produce {} (the output would be incomplete, so none was written)",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Nothing in the tree may point outside it (modules_install's build/source links did).
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path())?;
            let resolved = e.path().parent().unwrap_or(root).join(&t);
            if t.is_absolute() || !resolved.exists() {
                bail!(
                    "output has a dangling or absolute symlink {} -> {}",
                    e.path().display(),
                    t.display()
                );
            }
        }
    }
    Ok(())
}

fn find_depmod() -> Result<PathBuf> {
    fsutil::which("depmod")
        .or_else(|| {
            ["/usr/sbin/depmod", "/sbin/depmod"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .context("depmod was not found: install the Debian package kmod (modules_install needs it)")
}
