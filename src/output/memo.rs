//! The whole-build memo: a key over every input that extraction, patching, Kconfig and kbuild
//! read, computed before any of them runs, mapping to a finished output tree. A hit places the
//! stored tree (hard links where the filesystem allows, else copies) and verifies it file by file
//! against its manifest, and runs no Kconfig and no make at all. Because outputs may share inodes
//! with an entry, a file changed in place in an output damages the entry; the next lookup's
//! verification sees that, drops the entry and builds.
//!
//! Entries live in `<cache>/memo/<key>/` (`tree/`, `dev/` when the dev output was built, plus
//! `manifest.json`), written through a temp
//! dir and a rename. A damaged entry (a file whose BLAKE3 is not the recorded one) is removed and
//! the build runs normally.

use crate::output;
use crate::output::claim::Claim;
use crate::output::manifest;
use anyhow::{Context, Result};
use pik_cache::filehash::FileHashCache;
use std::path::{Path, PathBuf};

/// Host programs whose behaviour shapes the build (Kconfig records some of their versions; kbuild
/// and the install steps run all of them).
const HOST_TOOLS: &[&str] = &[
    "make", "gcc", "cc", "ld", "as", "bison", "flex", "perl", "bc", "openssl", "sh", "bash",
    "depmod", "tar", "xz", "zstd", "gzip", "bzip2", "patch", "cpio", "sed", "awk", "python3",
];

/// Where memo entries live.
pub fn dir() -> Result<PathBuf> {
    Ok(crate::paths::cache_dir()?.join("memo"))
}

/// Everything the key covers, gathered by the pipeline before any work is done.
pub struct Inputs<'a> {
    /// Target data as loaded (its Debug form: every field of the TOML).
    pub target: String,
    /// Profile name.
    pub profile: &'a str,
    /// The source's content digest.
    pub source_digest: &'a str,
    /// Patch bytes, in order.
    pub patches: Vec<&'a [u8]>,
    /// The fuzz factor they are applied with.
    pub patch_fuzz: u32,
    /// Fragment texts in merge order (target, profile, nixos, --fragment, --set).
    pub fragments: Vec<&'a str>,
    /// The cross toolchain's identity (version text and content hash).
    pub toolchain: String,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: i64,
}

/// The memo key: BLAKE3 over the inputs, the host tools' content and pik's own binary.
pub fn key(inp: &Inputs) -> Result<String> {
    let hashes = FileHashCache::open(&file_hash_path(&dir()?)?, 1 << 12)
        .context("opening the memo's file-hash table")?;
    let mut h = blake3::Hasher::new();
    // PIK_MEMO_EXPLAIN=1 prints each part's digest, to find why two builds do not share a key.
    let explain = std::env::var_os("PIK_MEMO_EXPLAIN").is_some_and(|v| v == "1");
    let mut part = |name: &str, bytes: &[u8]| {
        if explain {
            eprintln!(
                "pik: memo part {name}: {}",
                &blake3::hash(bytes).to_hex()[..16]
            );
        }
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part("schema", b"pik-memo-1");
    part("target", inp.target.as_bytes());
    part("profile", inp.profile.as_bytes());
    part("source", inp.source_digest.as_bytes());
    for p in &inp.patches {
        part("patch", p);
    }
    if inp.patch_fuzz != 0 {
        part("patch-fuzz", &inp.patch_fuzz.to_le_bytes());
    }
    for f in &inp.fragments {
        part("fragment", f.as_bytes());
    }
    part("toolchain", inp.toolchain.as_bytes());
    part("epoch", &inp.epoch.to_le_bytes());
    let exe = std::env::current_exe().context("locating the pik binary")?;
    part("pik", &hashes.digest(&exe)?.0);
    for tool in HOST_TOOLS {
        // An absent tool is part of the key too (Kconfig and kbuild probe for some).
        // By content only: the same binary is reached by other paths in a Nix sandbox, where
        // the host's /bin symlink is mounted as a directory.
        let id = match crate::fsutil::which(tool).and_then(|p| std::fs::canonicalize(p).ok()) {
            Some(p) => hashes.digest(&p)?.0.to_vec(),
            None => b"absent".to_vec(),
        };
        part(tool, &id);
    }
    Ok(h.finalize().to_hex().to_string())
}

fn file_hash_path(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    Ok(root.join("filehash.v2"))
}

/// Stores a finished output tree (and its dev tree) with its manifest under `key` (best effort; a
/// failure only means the next identical build is not a hit).
pub fn store(
    root: &Path,
    key: &str,
    out: &Path,
    dev: Option<&Path>,
    manifest_json: &[u8],
) -> Result<()> {
    let dest = root.join(key);
    if dest.join("manifest.json").is_file() && (dev.is_none() || dest.join("dev").is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(root)?;
    crate::fsutil::link_tree(out, &tmp.path().join("tree"))?;
    if let Some(dev) = dev {
        crate::fsutil::link_tree(dev, &tmp.path().join("dev"))?;
    }
    std::fs::write(tmp.path().join("manifest.json"), manifest_json)?;
    let kept = tmp.keep();
    if dest.exists() && dev.is_some() && !dest.join("dev").is_dir() {
        // An entry from a build without the dev output: this one supersedes it.
        let _ = crate::fsutil::remove_tree(&dest);
    }
    if std::fs::rename(&kept, &dest).is_err() {
        // Another build stored the same entry first.
        let _ = crate::fsutil::remove_tree(&kept);
    }
    Ok(())
}

/// A verified hit: the stored manifest, and the tree staged beside `out` ready to publish.
pub struct Hit {
    /// The manifest stored with the entry.
    pub manifest: serde_json::Value,
    /// The tree, copied and verified, in a temp dir beside `out`.
    pub staged: tempfile::TempDir,
    /// The dev tree (when asked for), copied and verified, beside its destination.
    pub dev: Option<tempfile::TempDir>,
}

/// Looks `key` up; on a hit copies the tree to a temp dir beside `out` (and the dev tree beside
/// `dev`, when asked for) and verifies every file against the stored manifest. A damaged entry
/// is removed and reported as a miss; an entry without the dev output asked for is a miss.
pub fn lookup(root: &Path, key: &str, out: &Path, dev: Option<&Path>) -> Result<Option<Hit>> {
    let e = root.join(key);
    let Ok(raw) =
        crate::fsutil::read_regular(&e.join("manifest.json"), crate::fsutil::TEXT_LIMIT, true)
    else {
        return Ok(None);
    };
    if dev.is_some() && !e.join("dev").is_dir() {
        return Ok(None);
    }
    let staged = output::temp_beside(out)?;
    let dev_staged = dev.map(output::temp_beside).transpose()?;
    let verified = (|| -> Result<Option<serde_json::Value>> {
        let m: serde_json::Value = serde_json::from_slice(&raw)?;
        let dest = staged.path();
        // The temp dir exists; copy the tree's content into it.
        std::fs::remove_dir(dest)?;
        crate::fsutil::link_tree(&e.join("tree"), dest)?;
        let (files, _) = manifest::describe_tree(dest)?;
        if serde_json::to_value(&files)? != m["files"] {
            return Ok(None);
        }
        if let Some(d) = &dev_staged {
            std::fs::remove_dir(d.path())?;
            crate::fsutil::link_tree(&e.join("dev"), d.path())?;
            if manifest::describe_tree(d.path())?.1
                != m["dev"]["tree_blake3"].as_str().unwrap_or("")
            {
                return Ok(None);
            }
        }
        Ok(Some(m))
    })();
    match verified {
        Ok(Some(manifest)) => Ok(Some(Hit {
            manifest,
            staged,
            dev: dev_staged,
        })),
        _ => {
            let _ = crate::fsutil::remove_tree(&e);
            Ok(None)
        }
    }
}

/// Publishes a hit at the claimed `out` (and `dev`) with its manifest (updated for this output)
/// and Nix expression.
pub fn publish(
    hit: Hit,
    key: &str,
    out: &Claim,
    dev: Option<&Claim>,
    seconds: f64,
) -> Result<serde_json::Value> {
    let _lock = output::lock(&out.dest)?;
    let nar = crate::nix::nar::info(
        hit.staged.path(),
        &crate::nix::nar::default_name(&out.dest)?,
        crate::nix::nar::DEFAULT_STORE_DIR,
    )?;
    let config = std::fs::read_to_string(hit.staged.path().join("config"))?;
    let mut m = hit.manifest;
    m["out"] = serde_json::json!(out.dest.display().to_string());
    m["listing_blake3"] =
        serde_json::json!(crate::output::claim::listing(hit.staged.path(), None)?);
    m["nar"] = serde_json::to_value(&nar)?;
    m["objects_compiled"] = serde_json::json!(0);
    m["memo"] = serde_json::json!({"key": key, "hit": true});
    m["timings_s"] = serde_json::json!({"memo": seconds, "total": seconds});
    m["dev"] = serde_json::Value::Null;
    let mut dev_lock = None;
    if let (Some(staged), Some(claim)) = (hit.dev, dev) {
        dev_lock = Some(output::lock(&claim.dest)?);
        let d = manifest::DevOutput::describe(staged.path(), &claim.dest)?;
        output::swap_in(staged, claim)?;
        m["dev"] = serde_json::to_value(&d)?;
    }
    output::swap_in(hit.staged, out)?;
    pik_cache::atomic_write(
        &output::manifest_path(&out.dest),
        &serde_json::to_vec_pretty(&m)?,
    )?;
    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    crate::nix::expr::write_beside(
        &out.dest,
        m["inputs"]["kernel_version"].as_str().unwrap_or_default(),
        &s("kernelrelease"),
        &nar.sri,
        &s("target"),
        &config,
        m["dev"]["nar"]["sri"].as_str().map(|sri| {
            (
                Path::new(m["dev"]["path"].as_str().unwrap_or_default()),
                sri,
            )
        }),
    )?;
    drop(dev_lock);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(tree: &Path) -> Vec<u8> {
        let (files, _) = manifest::describe_tree(tree).unwrap();
        serde_json::to_vec(&serde_json::json!({ "files": files })).unwrap()
    }

    #[test]
    fn stored_trees_come_back_verified_and_damage_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("memo");
        let built = d.path().join("built");
        std::fs::create_dir_all(built.join("lib/modules")).unwrap();
        std::fs::write(built.join("Image"), vec![7u8; 5000]).unwrap();
        std::fs::write(built.join("lib/modules/m.ko"), b"module").unwrap();
        std::os::unix::fs::symlink("Image", built.join("kernel8.img")).unwrap();
        store(&root, "k1", &built, None, &manifest_for(&built)).unwrap();
        let out = d.path().join("out");
        // Asked for a dev output the entry does not have: a miss, and the entry stays.
        assert!(lookup(&root, "k1", &out, Some(&d.path().join("dev")))
            .unwrap()
            .is_none());
        let hit = lookup(&root, "k1", &out, None).unwrap().expect("a hit");
        assert_eq!(
            std::fs::read(hit.staged.path().join("Image")).unwrap(),
            vec![7u8; 5000]
        );
        assert!(lookup(&root, "other", &out, None).unwrap().is_none());
        // One flipped byte in the stored tree: not served, and the entry is gone.
        let victim = root.join("k1/tree/lib/modules/m.ko");
        std::fs::write(&victim, b"modulf").unwrap();
        assert!(lookup(&root, "k1", &out, None).unwrap().is_none());
        assert!(!root.join("k1").exists());
    }
}
