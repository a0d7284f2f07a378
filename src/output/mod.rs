//! What a build leaves behind: the output tree in the nixpkgs layout, the dev output, the
//! manifest beside them, the whole-build memo, the firmware view, and the rules for replacing a
//! tree (only what pik made, swapped in whole).

pub mod claim;
pub mod dev;
pub mod firmware;
pub mod layout;
pub mod manifest;
pub mod memo;
pub mod publish;

use crate::fsutil::{self, Lock};
use anyhow::{Context, Result};
use claim::Claim;
use std::path::{Path, PathBuf};

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
