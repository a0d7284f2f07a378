//! File-system helpers shared by the pipeline: locks, atomic directory swaps, trees of hardlinks,
//! content hashes.

use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An exclusive advisory lock on a file, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until the exclusive lock on `path` (created if missing) is ours.
    pub fn acquire(path: &Path) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock { _file: file })
    }
}

/// Atomically exchanges two paths (both must exist), with `renameat2(RENAME_EXCHANGE)`.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)
        .map_err(std::io::Error::from)
        .with_context(|| format!("exchanging {} and {}", a.display(), b.display()))
}

/// Puts the finished directory `new` at `dest` in one step: a rename when `dest` is absent, an
/// atomic exchange plus removal of the old tree when it exists. Readers see the old tree or the new
/// one, never a mix or nothing.
pub fn replace_dir(new: &Path, dest: &Path) -> Result<()> {
    if fs::symlink_metadata(dest).is_ok() {
        exchange(new, dest)?;
        // `new` now holds the previous tree.
        remove_tree(new)?;
    } else {
        fs::rename(new, dest)
            .with_context(|| format!("renaming {} to {}", new.display(), dest.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: a temp file beside it, flushed to disk, renamed
/// over it (readers see the old file or the new one; a crash leaves the old one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".pik-write-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_data())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes a tree, making read-only directories writable first (kernel trees and Nix-style outputs
/// may have them).
pub fn remove_tree(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(path).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// BLAKE3 of a file's bytes, as hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Copies a regular file, replacing `dst` through a rename so a hardlinked `dst` is never written
/// through (its other names keep their bytes).
pub fn copy_unshared(src: &Path, dst: &Path) -> Result<()> {
    let dir = dst.parent().context("destination has no parent")?;
    let tmp = tempfile::Builder::new()
        .prefix(".pik-copy-")
        .tempfile_in(dir)?;
    fs::copy(src, tmp.path())
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    tmp.persist(dst)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", dst.display()))?;
    Ok(())
}

/// Makes `path` a file of its own: when it is a hardlink shared with other names (a link farm
/// over the user's tree), it is replaced by a private copy so writing it cannot change the user's
/// file.
pub fn unshare(path: &Path) -> Result<()> {
    let md = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if md.is_file() && md.nlink() > 1 {
        copy_unshared(path, path)?;
        fs::set_permissions(path, md.permissions())?;
    }
    Ok(())
}

/// Recreates the tree `src` at `dst` (which must not exist): directories are created, regular
/// files hardlinked (or copied when linking fails, e.g. across file systems), symlinks recreated.
/// Entries for which `skip` returns true (given the path relative to `src`) are left out.
pub fn link_farm(src: &Path, dst: &Path, skip: &dyn Fn(&Path, bool) -> bool) -> Result<u64> {
    let mut files = 0u64;
    let mut can_link = true;
    let walker = walkdir::WalkDir::new(src).follow_links(false).into_iter();
    let mut it = walker;
    while let Some(entry) = it.next() {
        crate::interrupt::check("linking the workspace")?;
        let entry = entry.with_context(|| format!("walking {}", src.display()))?;
        let rel = entry.path().strip_prefix(src)?;
        let is_dir = entry.file_type().is_dir();
        if !rel.as_os_str().is_empty() && skip(rel, is_dir) {
            if is_dir {
                it.skip_current_dir();
            }
            continue;
        }
        let target = dst.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(&link, &target)
                .with_context(|| format!("creating symlink {}", target.display()))?;
        } else if ft.is_file() {
            if can_link && fs::hard_link(entry.path(), &target).is_ok() {
                files += 1;
                continue;
            }
            can_link = false;
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            files += 1;
        } else {
            bail!(
                "{} is neither a file, a directory nor a symlink; a kernel tree has no such entries",
                entry.path().display()
            );
        }
    }
    Ok(files)
}

/// Reads a file pik only needs to look at (a Makefile it sniffs, a fragment, a patch, a
/// derivation's attributes): it must be a regular file (a FIFO would block, `/dev/zero` never
/// end) of at most `limit` bytes. Symlinks are followed unless `nofollow`.
pub fn read_regular(path: &Path, limit: u64, nofollow: bool) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NONBLOCK | if nofollow { libc::O_NOFOLLOW } else { 0 };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let md = f.metadata()?;
    if !md.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let too_big = || anyhow::anyhow!("{} is larger than {limit} bytes", path.display());
    if md.len() > limit {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(buf)
}

/// The most pik reads of a text input it parses (a fragment, a target file, a manifest).
pub const TEXT_LIMIT: u64 = 64 << 20;

/// The most pik reads of a patch or another input it only passes on.
pub const BLOB_LIMIT: u64 = 1 << 30;

/// Like [`read_regular`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read_regular(path, limit, false)?)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Finds an executable named `name` on `$PATH` (or returns it when it is a path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Copies a tree (files, symlinks, the owner-execute bit), reflinking where the filesystem can
/// (std's copy uses copy_file_range).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    place_tree(from, to, false)
}

/// Like [`copy_tree`], but hard-links files where it can (same filesystem), copying otherwise.
/// For trees whose every reader verifies content (the build memo): creating thousands of files
/// costs seconds on some filesystems, linking them a fraction of that.
pub fn link_tree(from: &Path, to: &Path) -> Result<()> {
    place_tree(from, to, true)
}

fn place_tree(from: &Path, to: &Path, link: bool) -> Result<()> {
    for e in walkdir::WalkDir::new(from).follow_links(false) {
        crate::interrupt::check("placing a tree")?;
        let e = e?;
        let rel = e.path().strip_prefix(from)?;
        let dst = to.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dst)?;
        } else if !(link && std::fs::hard_link(e.path(), &dst).is_ok()) {
            std::fs::copy(e.path(), &dst)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_atomically() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("out");
        let a = t.path().join("a");
        fs::create_dir(&a).unwrap();
        fs::write(a.join("f"), "1").unwrap();
        replace_dir(&a, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "1");
        let b = t.path().join("b");
        fs::create_dir(&b).unwrap();
        fs::write(b.join("f"), "2").unwrap();
        replace_dir(&b, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "2");
        assert!(!b.exists());
    }

    #[test]
    fn unshare_breaks_hardlinks() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("user");
        let ws = t.path().join("ws");
        fs::write(&user, "original").unwrap();
        fs::hard_link(&user, &ws).unwrap();
        unshare(&ws).unwrap();
        fs::write(&ws, "patched").unwrap();
        assert_eq!(fs::read_to_string(&user).unwrap(), "original");
    }
}
