//! The private workspace: pik's own copy of the kernel tree with the patch series applied, keyed by
//! the source digest plus the series digest. It is built in a temp dir and renamed into place under
//! a lock, so two builds at once never race and an interrupted setup never leaves a half tree. The
//! user's tree is never written: a tree source becomes a hardlink farm (files a patch touches are
//! copied first), a tarball is extracted.

use crate::fsutil::{self, Lock};
use crate::patch::{self, Patch};
use crate::source::{self, Source};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A ready workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The patched tree (kbuild's srctree).
    pub tree: PathBuf,
    /// Hex key (source digest + series digest).
    pub key: String,
    /// Whether this run created it (false = reused).
    pub created: bool,
}

/// Returns the workspace for `src` + `patches` under `root`, creating it if needed.
pub fn prepare(
    root: &Path,
    src: &Source,
    source_digest: &blake3::Hash,
    patches: &[Patch],
) -> Result<Workspace> {
    let mut h = blake3::Hasher::new();
    h.update(b"pik-workspace-v1\0");
    h.update(source_digest.as_bytes());
    h.update(patch::series_digest(patches).as_bytes());
    let key = h.finalize().to_hex()[..32].to_string();
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let tree = root.join(&key);
    let _lock = Lock::acquire(&root.join(format!("{key}.lock")))?;
    if tree.is_dir() {
        return Ok(Workspace {
            tree,
            key,
            created: false,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{key}-"))
        .tempdir_in(root)
        .with_context(|| format!("creating a temp dir in {}", root.display()))?;
    let staged = populate(src, tmp.path())?;
    source::check_tree(&staged)?;
    patch::apply_all(&staged, patches)?;
    std::fs::rename(&staged, &tree)
        .with_context(|| format!("renaming {} to {}", staged.display(), tree.display()))?;
    Ok(Workspace {
        tree,
        key,
        created: true,
    })
}

/// Fills `tmp` from the source and returns the tree root inside it.
fn populate(src: &Source, tmp: &Path) -> Result<PathBuf> {
    match src {
        Source::Tree(dir) => {
            let dst = tmp.join("tree");
            fsutil::link_farm(dir, &dst, &source::is_build_output)?;
            Ok(dst)
        }
        Source::Tarball(file) => {
            let dst = tmp.join("x");
            std::fs::create_dir(&dst)?;
            let out = Command::new("tar")
                .arg("-xf")
                .arg(file)
                .arg("-C")
                .arg(&dst)
                .args([
                    "--no-same-owner",
                    "--exclude=.git",
                    "--delay-directory-restore",
                ])
                .output()
                .context("running tar (install the Debian packages tar, xz-utils, zstd, bzip2)")?;
            if !out.status.success() {
                bail!(
                    "extracting {} failed: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            // Archives usually hold one top directory (linux-source-6.12/, linux-6.12.1/).
            let entries: Vec<_> = std::fs::read_dir(&dst)?.flatten().collect();
            if entries.len() == 1 && entries[0].file_type()?.is_dir() {
                Ok(entries[0].path())
            } else {
                Ok(dst)
            }
        }
    }
}

/// Checks that the workspace has every device tree the target needs.
pub fn check_device_trees(tree: &Path, needed: &[String], what: &str) -> Result<()> {
    let missing: Vec<&String> = needed.iter().filter(|d| !tree.join(d).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "{what} lacks the device tree{} {}: it has no Raspberry Pi 5 support (mainline gained \
             bcm2712-rpi-5-b.dts in Linux 6.12; the vendor tree raspberrypi/linux has it too). \
             Use --source with a newer tree",
            if missing.len() > 1 { "s" } else { "" },
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
