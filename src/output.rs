//! The output tree, in the layout nixpkgs gives a kernel: `Image`, the firmware-named image,
//! `System.map`, `config`, `dtbs/<vendor>/*.dtb` (+ `dtbs/overlays/`), `lib/modules/<release>/`.
//! Installation is the kernel's own (`modules_install`, `dtbs_install`, depmod); pik stages into a
//! temp dir beside `--out`, verifies the layout, and swaps it into place under a lock, so a failed
//! or interrupted build never leaves a half result and never destroys the previous one.

use crate::claim::Claim;
use crate::fsutil::{self, Lock};
use crate::kbuild::Kbuild;
use crate::target::Target;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A staged, verified output tree waiting to be published.
pub struct Staged {
    dir: tempfile::TempDir,
    /// `lib/modules/<release>` exists.
    pub has_modules: bool,
}

impl Staged {
    /// Where the staged tree is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The lock on an output path; held from staging to publishing.
pub fn lock(out: &Path) -> Result<Lock> {
    let (parent, name) = split(out)?;
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    Lock::acquire(&parent.join(format!(".{name}.lock")))
}

fn split(out: &Path) -> Result<(PathBuf, String)> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {} has no file name", out.display()))?
        .to_string_lossy()
        .to_string();
    let parent = out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((parent, name))
}

/// A temp dir beside `out` (`.<name>.pik-tmp-*`, same filesystem), for staging a tree that is
/// then swapped into place.
pub fn temp_beside(out: &Path) -> Result<tempfile::TempDir> {
    let (parent, name) = split(out)?;
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{name}.pik-tmp-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temp dir in {}", parent.display()))
}

/// Installs the build's results into a temp dir beside `out`, in the Nix layout, and checks it.
pub fn stage(
    kb: &Kbuild,
    target: &Target,
    release: &str,
    modules: bool,
    out: &Path,
) -> Result<Staged> {
    let dir = temp_beside(out)?;
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
    check_layout(root, target, release, modules)?;
    Ok(Staged {
        dir,
        has_modules: modules,
    })
}

/// Checks the staged tree has everything NixOS and the firmware read.
pub fn check_layout(root: &Path, target: &Target, release: &str, modules: bool) -> Result<()> {
    let mut need: Vec<String> = vec![
        target.kernel_image.clone(),
        target.firmware_image.clone(),
        "System.map".into(),
        "config".into(),
    ];
    need.extend(target.required_dtbs.iter().map(|d| format!("dtbs/{d}")));
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

/// Moves the staged tree to the claimed output, replacing what was there in one step.
pub fn publish(staged: Staged, out: &Claim) -> Result<()> {
    swap_in(staged.dir, out)
}

/// Swaps a tree staged in a temp dir (from [`temp_beside`]) into place at the claimed
/// destination in one step, after checking once more that what is there is pik's to replace
/// (the user may have put something there while the build ran); on failure the staged tree is
/// removed and the destination is left as it was.
pub fn swap_in(staged: tempfile::TempDir, dest: &Claim) -> Result<()> {
    dest.check()?;
    let path = staged.keep();
    fsutil::replace_dir(&path, &dest.dest).inspect_err(|_| {
        let _ = fsutil::remove_tree(&path);
    })
}

/// `<out><suffix>`: a file beside the output tree, not inside it.
fn beside(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The manifest path for an output tree: `<out>.json` beside it.
pub fn manifest_path(out: &Path) -> PathBuf {
    beside(out, ".json")
}

/// The Nix expression path for an output tree: `<out>.nix` beside it.
pub fn nix_path(out: &Path) -> PathBuf {
    beside(out, ".nix")
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
