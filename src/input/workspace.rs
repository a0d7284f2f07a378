//! The private workspace: pik's own copy of the kernel tree with the patch series applied, keyed by
//! the source digest plus the series digest. It is built in a temp dir and renamed into place under
//! a lock, so two builds at once never race and an interrupted setup never leaves a half tree. The
//! user's tree is never written: a tree source becomes a hardlink farm (files a patch touches are
//! copied first), a tarball is extracted.

use crate::fsutil::{self, Lock};
use crate::input::patch::{self, Patch};
use crate::input::source::{self, Source};
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
    /// What the user should know about how it was made: patch hunks applied at an offset, a
    /// damaged workspace rebuilt.
    pub notes: Vec<String>,
}

/// Returns the workspace for `src` + `patches` under `root`, creating it if needed.
///
/// A workspace is checked before it is reused: its tree digest (cheap through the stat cache)
/// must still be the one recorded when it was made. A tree source's workspace shares inodes
/// with the user's files, so an editor that writes in place changes it behind its key; a
/// tarball's can be damaged on disk. Either way it is rebuilt, with a note.
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
    let record = root.join(format!("{key}.digest"));
    let _lock = Lock::acquire(&root.join(format!("{key}.lock")))?;
    let mut notes = Vec::new();
    if tree.is_dir() {
        match unchanged(&tree, &record)? {
            None => return Ok(Workspace { tree, key, notes }),
            Some(why) => {
                notes.push(format!(
                    "the workspace {} {why}; rebuilding it from the source",
                    tree.display()
                ));
                discard(root, &tree)?;
            }
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{key}-"))
        .tempdir_in(root)
        .with_context(|| format!("creating a temp dir in {}", root.display()))?;
    let staged = populate(src, tmp.path())?;
    source::check_tree(&staged)?;
    notes.extend(patch::apply_all(&staged, patches)?);
    let digest = source::tree_digest(&staged)?;
    crate::fsutil::write_atomic(&record, digest.to_hex().as_bytes())
        .with_context(|| format!("writing {}", record.display()))?;
    std::fs::rename(&staged, &tree)
        .with_context(|| format!("renaming {} to {}", staged.display(), tree.display()))?;
    Ok(Workspace { tree, key, notes })
}

/// None when the workspace still has the digest recorded when it was made, else why not.
fn unchanged(tree: &Path, record: &Path) -> Result<Option<&'static str>> {
    let Ok(recorded) = std::fs::read_to_string(record) else {
        return Ok(Some("has no record of its content"));
    };
    match source::tree_digest(tree) {
        Ok(d) if d.to_hex().as_str() == recorded.trim() => Ok(None),
        Ok(_) => Ok(Some(
            "changed since it was made (a file edited in place through a hard link to your \
             tree, or damage under the cache dir)",
        )),
        Err(e) if crate::interrupt::requested() => Err(e),
        Err(_) => Ok(Some("cannot be read completely")),
    }
}

/// Removes a workspace pik made (it lies under pik's own workspaces dir and is named by its
/// key): first renamed aside, so a crash midway leaves no half tree under the key.
fn discard(root: &Path, tree: &Path) -> Result<()> {
    let aside = tempfile::Builder::new()
        .prefix(".stale-")
        .tempdir_in(root)
        .with_context(|| format!("creating a temp dir in {}", root.display()))?;
    let dest = aside.path().join("tree");
    std::fs::rename(tree, &dest)
        .with_context(|| format!("moving the stale workspace {} aside", tree.display()))?;
    // The farm's files are hard links: removing the names leaves the user's files as they are.
    fsutil::remove_tree(aside.path())
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
            let out = crate::interrupt::output(
                Command::new("tar")
                    .arg("-xf")
                    .arg(file)
                    .arg("-C")
                    .arg(&dst)
                    .args([
                        "--no-same-owner",
                        "--exclude=.git",
                        "--delay-directory-restore",
                    ]),
                "tar (install the Debian packages tar, xz-utils, zstd, bzip2)",
            )?;
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
