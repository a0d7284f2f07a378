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
use crate::output::manifest::{describe_tree, Manifest};
use anyhow::{bail, Context, Result};
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

/// The memo key: BLAKE3 over the plan's stable serialization (`plan`: every input that
/// extraction, patching, Kconfig and kbuild read), the host tools' content and pik's own binary.
pub fn key(plan: &[u8]) -> Result<String> {
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
    part("schema", b"pik-memo-2");
    part("plan", plan);
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

/// A verified hit: the stored manifest, and the trees staged beside their destinations.
pub struct Hit {
    /// The manifest stored with the entry.
    pub manifest: Manifest,
    /// The tree, placed and verified, in a temp dir beside `out`.
    pub staged: tempfile::TempDir,
    /// The dev tree (when asked for), placed and verified, beside its destination.
    pub dev: Option<tempfile::TempDir>,
}

/// Looks `key` up; on a hit places the tree in a temp dir beside `out` (and the dev tree beside
/// `dev`, when asked for) and verifies every file against the stored manifest. A damaged entry,
/// or one whose manifest this pik cannot read, is removed and reported as a miss (`Ok(None)`),
/// with the reason in `why`; an entry without the dev output asked for is a miss.
pub fn lookup(
    root: &Path,
    key: &str,
    out: &Path,
    dev: Option<&Path>,
    why: &mut Option<String>,
) -> Result<Option<Hit>> {
    let e = root.join(key);
    if !e.join("manifest.json").exists() || (dev.is_some() && !e.join("dev").is_dir()) {
        return Ok(None);
    }
    let staged = output::temp_beside(out)?;
    let dev_staged = dev.map(output::temp_beside).transpose()?;
    match verify(&e, staged.path(), dev_staged.as_ref().map(|d| d.path())) {
        Ok(manifest) => Ok(Some(Hit {
            manifest,
            staged,
            dev: dev_staged,
        })),
        Err(problem) => {
            *why = Some(format!(
                "the build memo's entry {} was not used and is removed: {problem:#}",
                e.display()
            ));
            let _ = crate::fsutil::remove_tree(&e);
            Ok(None)
        }
    }
}

/// Places the entry `e`'s trees at `tree` (and `dev`) and checks them against its manifest.
fn verify(e: &Path, tree: &Path, dev: Option<&Path>) -> Result<Manifest> {
    let m = Manifest::read(&e.join("manifest.json"))?;
    // The temp dirs exist; the trees take their place.
    std::fs::remove_dir(tree)?;
    crate::fsutil::link_tree(&e.join("tree"), tree)?;
    if describe_tree(tree)?.0 != m.files {
        bail!("its tree no longer matches its manifest");
    }
    if let Some(d) = dev {
        std::fs::remove_dir(d)?;
        crate::fsutil::link_tree(&e.join("dev"), d)?;
        let recorded = m.dev.as_ref().map(|d| d.tree_blake3.as_str());
        if Some(describe_tree(d)?.1.as_str()) != recorded {
            bail!("its dev tree no longer matches its manifest");
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::manifest::{Inputs, SCHEMA};

    fn manifest_for(tree: &Path) -> Vec<u8> {
        let (files, tree_blake3) = describe_tree(tree).unwrap();
        let nar = crate::nix::nar::info(tree, "t", "/nix/store").unwrap();
        let m = Manifest {
            schema: SCHEMA.into(),
            pik_version: "0".into(),
            target: "bcm2712".into(),
            profile: "mini".into(),
            kernelrelease: "6.12.0-v8-16k".into(),
            firmware_image: "kernel_2712.img".into(),
            config_blake3: String::new(),
            toolchain: crate::input::toolchain::Toolchain {
                cross_compile: "aarch64-linux-gnu-".into(),
                llvm: false,
                cc: "/usr/bin/aarch64-linux-gnu-gcc".into(),
                version: String::new(),
                cc_blake3: String::new(),
                ld_version: String::new(),
            },
            host_cc: String::new(),
            inputs: Inputs {
                source_kind: "tarball".into(),
                source_path: String::new(),
                source_blake3: String::new(),
                kernel_version: "6.12.0".into(),
                patches: vec![],
                patch_fuzz: 0,
                config_base: "tinyconfig".into(),
                fragments: vec![],
                set: vec![],
                source_date_epoch: 0,
                make_targets: vec![],
            },
            out: String::new(),
            tree_blake3,
            listing_blake3: String::new(),
            nar,
            files,
            dev: None,
            objects_compiled: 1,
            cache: None,
            memo: None,
            build_dir: String::new(),
            log: String::new(),
            timings_s: Default::default(),
        };
        serde_json::to_vec(&m).unwrap()
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
        let mut why = None;
        // Asked for a dev output the entry does not have: a miss, and the entry stays.
        assert!(
            lookup(&root, "k1", &out, Some(&d.path().join("dev")), &mut why)
                .unwrap()
                .is_none()
        );
        let hit = lookup(&root, "k1", &out, None, &mut why)
            .unwrap()
            .expect("a hit");
        assert_eq!(
            std::fs::read(hit.staged.path().join("Image")).unwrap(),
            vec![7u8; 5000]
        );
        assert_eq!(hit.manifest.objects_compiled, 1);
        assert!(lookup(&root, "other", &out, None, &mut why)
            .unwrap()
            .is_none());
        assert!(why.is_none());
        // One flipped byte in the stored tree: not served, and the entry is gone.
        let victim = root.join("k1/tree/lib/modules/m.ko");
        std::fs::write(&victim, b"modulf").unwrap();
        assert!(lookup(&root, "k1", &out, None, &mut why).unwrap().is_none());
        assert!(!root.join("k1").exists());
        assert!(why.take().unwrap().contains("no longer matches"));
        // A manifest this pik cannot read (another schema, damage): a miss with the reason.
        store(&root, "k2", &built, None, br#"{"schema":"pik.manifest/1"}"#).unwrap();
        assert!(lookup(&root, "k2", &out, None, &mut why).unwrap().is_none());
        assert!(why.unwrap().contains("not a pik manifest"));
    }
}
