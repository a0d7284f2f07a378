//! The Kconfig result memoized by the build's inputs: the final `.config`, under the key of
//! everything Kconfig reads (the same inputs as the whole-build memo's key). A fresh build dir
//! whose inputs were configured before gets it back instead of running tinyconfig, the merges
//! and olddefconfig again (~10 s of Kconfig for the mini profile). Entries are checked file by
//! file on restore; a damaged one is removed and Kconfig runs.
//!
//! Only `.config` is kept: `include/config/auto.conf` and `include/generated/` are what
//! kbuild's own syncconfig derives from it at the start of make, and at the time Kconfig
//! finishes they still hold an earlier stage (tinyconfig before the fragments), which make
//! would trust if they were restored newer than `.config`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What is kept of a Kconfig run (see the module note for why nothing else).
const PARTS: &[&str] = &[".config"];

/// The record of an entry's files: relative path and BLAKE3 of its bytes, one per line.
const INDEX: &str = "index";

fn root() -> Result<PathBuf> {
    Ok(crate::paths::cache_dir()?.join("kconfig"))
}

/// Restores the entry for `key` into the fresh build dir `build` (it must have no `.config`);
/// false when there is none (or it was damaged and is now removed).
pub fn restore(key: &str, build: &Path) -> Result<bool> {
    restore_at(&root()?, key, build)
}

fn restore_at(root: &Path, key: &str, build: &Path) -> Result<bool> {
    let entry = root.join(key);
    if !entry.join(INDEX).is_file() {
        return Ok(false);
    }
    match place(&entry, build) {
        Ok(()) => Ok(true),
        Err(_) => {
            // A damaged entry is never served: what was placed goes, and Kconfig runs.
            for p in PARTS {
                let _ = crate::fsutil::remove_tree(&build.join(p));
                let _ = std::fs::remove_file(build.join(p));
            }
            let _ = crate::fsutil::remove_tree(&entry);
            Ok(false)
        }
    }
}

/// Copies the entry's files into `build`, checking each against the index.
fn place(entry: &Path, build: &Path) -> Result<()> {
    let index = std::fs::read_to_string(entry.join(INDEX))?;
    let files: Vec<(&str, &str)> = index
        .lines()
        .map(|l| l.split_once(' ').context("bad index line"))
        .collect::<Result<_>>()?;
    for (rel, digest) in files {
        if !PARTS.contains(&rel) {
            bail!("unexpected path {rel:?} in the index");
        }
        let bytes = std::fs::read(entry.join("files").join(rel))?;
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            bail!("{rel} is damaged");
        }
        let to = build.join(rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&to, bytes)?;
    }
    Ok(())
}

/// Stores the Kconfig result in `build` under `key` (best effort: a failure only costs the next
/// fresh build dir its Kconfig run).
pub fn store(key: &str, build: &Path) -> Result<()> {
    store_at(&root()?, key, build)
}

fn store_at(root: &Path, key: &str, build: &Path) -> Result<()> {
    let dest = root.join(key);
    if dest.join(INDEX).is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(root)?;
    let mut index = String::new();
    for part in PARTS {
        let from = build.join(part);
        for e in walkdir::WalkDir::new(&from).sort_by_file_name() {
            let e = e.with_context(|| format!("walking {}", from.display()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let rel = e.path().strip_prefix(build)?;
            let bytes = std::fs::read(e.path())?;
            let to = tmp.path().join("files").join(rel);
            std::fs::create_dir_all(to.parent().context("a path with no parent")?)?;
            std::fs::write(&to, &bytes)?;
            index.push_str(&format!(
                "{} {}\n",
                rel.display(),
                blake3::hash(&bytes).to_hex()
            ));
        }
    }
    std::fs::write(tmp.path().join(INDEX), index)?;
    let kept = tmp.keep();
    if std::fs::rename(&kept, &dest).is_err() {
        // Another build stored the same entry first.
        let _ = crate::fsutil::remove_tree(&kept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("kconfig");
        let a = t.path().join("a");
        std::fs::create_dir_all(a.join("include/config")).unwrap();
        std::fs::create_dir_all(a.join("include/generated")).unwrap();
        std::fs::write(a.join(".config"), "CONFIG_A=y\n").unwrap();
        std::fs::write(a.join("include/config/auto.conf"), "CONFIG_A=y\n").unwrap();
        std::fs::write(a.join("include/config/A"), "").unwrap();
        std::fs::write(
            a.join("include/generated/autoconf.h"),
            "#define CONFIG_A 1\n",
        )
        .unwrap();
        store_at(&root, "k", &a).unwrap();
        let b = t.path().join("b");
        assert!(restore_at(&root, "k", &b).unwrap());
        assert_eq!(
            std::fs::read(a.join(".config")).unwrap(),
            std::fs::read(b.join(".config")).unwrap()
        );
        // What syncconfig derives is left to make: restored, a stale auto.conf would win.
        assert!(!b.join("include").exists());
        assert!(!restore_at(&root, "other", &t.path().join("c")).unwrap());
        // One changed byte: not served, the entry removed, nothing left half placed.
        let stored = root.join("k/files/.config");
        std::fs::write(&stored, "CONFIG_A=n\n").unwrap();
        let d = t.path().join("d");
        assert!(!restore_at(&root, "k", &d).unwrap());
        assert!(!d.join(".config").exists());
        assert!(!root.join("k").exists());
    }
}
