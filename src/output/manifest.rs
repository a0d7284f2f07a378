//! The build manifest, `<out>.json` beside the output tree (never inside, so the tree stays
//! bit-identical between identical builds and its NAR hash is true): one typed record, written
//! and read back as the same struct. Schema `pik.manifest/2`.

use crate::input::toolchain::Toolchain;
use crate::nix::nar::NarInfo;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The schema name and version of the manifest.
pub const SCHEMA: &str = "pik.manifest/2";

/// An input file and its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    /// Where it came from.
    pub name: String,
    /// BLAKE3 of its bytes.
    pub blake3: String,
}

/// What went into the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// `tree` or `tarball`.
    pub source_kind: String,
    /// The source path.
    pub source_path: String,
    /// The source's content digest.
    pub source_blake3: String,
    /// Kernel version from the tree's Makefile.
    pub kernel_version: String,
    /// Patches in the order applied.
    pub patches: Vec<InputFile>,
    /// GNU patch's fuzz factor the patches were applied with (0 = exactly).
    pub patch_fuzz: u32,
    /// The config base target (`tinyconfig`, `defconfig`, `bcm2712_defconfig`).
    pub config_base: String,
    /// Fragments in merge order (`--set` values appear as one fragment).
    pub fragments: Vec<InputFile>,
    /// The `--set` values.
    pub set: Vec<String>,
    /// `SOURCE_DATE_EPOCH` used.
    pub source_date_epoch: i64,
    /// The make targets built.
    pub make_targets: Vec<String>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// `file`, `executable` or `symlink`.
    pub kind: String,
    /// Size in bytes (files) or 0.
    pub size: u64,
    /// BLAKE3 of the bytes, or of the link target for symlinks.
    pub blake3: String,
}

/// The dev output beside the main one: where it is, its digest and what Nix records for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevOutput {
    /// Absolute path of the dev tree.
    pub path: String,
    /// Digest of the whole dev tree, as [`describe_tree`] computes it.
    pub tree_blake3: String,
    /// Digest of the dev tree's listing ([`crate::output::claim::listing`]): how pik recognizes
    /// the tree as its own before replacing it.
    pub listing_blake3: String,
    /// narHash, narSize and store path of the dev tree.
    pub nar: NarInfo,
}

impl DevOutput {
    /// Describes the dev tree staged at `staged`, to be published at `path`.
    pub fn describe(staged: &Path, path: &Path) -> Result<DevOutput> {
        let (_, tree_blake3) = describe_tree(staged)?;
        let nar = crate::nix::nar::info(
            staged,
            &crate::nix::nar::default_name(path)?,
            crate::nix::nar::DEFAULT_STORE_DIR,
        )
        .context("computing the dev output's NAR hash")?;
        Ok(DevOutput {
            path: path.display().to_string(),
            tree_blake3,
            listing_blake3: crate::output::claim::listing(staged, None)?,
            nar,
        })
    }
}

/// The object cache's outcome for the build's compiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Compiles served from the cache.
    pub hits: u64,
    /// Compiles that ran and were stored.
    pub misses: u64,
    /// Calls that could not be cached, by reason.
    pub uncacheable: BTreeMap<String, u64>,
    /// Cache failures (the compiler ran anyway).
    pub errors: u64,
    /// Compiler probes answered from the cache.
    pub probe_hits: u64,
    /// Compiler probes that ran.
    pub probe_misses: u64,
    /// Host programs' compiles (fixdep, modpost, dtc, Kconfig's) answered from the cache.
    #[serde(default)]
    pub host_hits: u64,
    /// Host programs' compiles that ran.
    #[serde(default)]
    pub host_misses: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// Where the misses were compiled when the build had hosts: distribution happens behind
    /// the object cache, on its misses (null without hosts; absent from older manifests).
    #[serde(default)]
    pub dist: Option<DistRecord>,
}

/// Where a distributed build's misses were compiled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DistRecord {
    /// The builders, as specified.
    pub hosts: Vec<String>,
    /// Local cores (compiles and preprocessing here at once).
    pub local_slots: usize,
    /// Remote slots over all builders.
    pub remote_slots: usize,
    /// `--strict-remote`.
    pub strict: bool,
    /// Compiled here, not after a failure (assembly, plugins, every builder busy, …).
    pub local: u64,
    /// Sent preprocessed (protocols 1 and 2).
    pub remote: u64,
    /// Sent as pump jobs (protocol 3).
    pub pump: u64,
    /// Compiled here after a builder failed.
    pub fallback: u64,
    /// Per builder: jobs sent preprocessed and as pump.
    pub by_host: BTreeMap<String, HostRecord>,
    /// Fallbacks per builder, by reason.
    pub fallbacks: BTreeMap<String, BTreeMap<String, u64>>,
    /// Why jobs went preprocessed to a pump builder.
    pub pump_declined: BTreeMap<String, u64>,
    /// Why jobs stayed here.
    pub local_reasons: BTreeMap<String, u64>,
}

/// One builder's jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Sent preprocessed.
    pub remote: u64,
    /// Sent as pump jobs.
    pub pump: u64,
}

/// The whole-build memo's part in this output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoRecord {
    /// The memo key of the build's inputs.
    pub key: String,
    /// Whether the output came from the memo (nothing configured or compiled).
    pub hit: bool,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`].
    pub schema: String,
    /// pik's version.
    pub pik_version: String,
    /// Target name.
    pub target: String,
    /// Profile name.
    pub profile: String,
    /// `make kernelrelease`.
    pub kernelrelease: String,
    /// The firmware image name in the tree.
    pub firmware_image: String,
    /// BLAKE3 of the final `.config`.
    pub config_blake3: String,
    /// The cross toolchain.
    pub toolchain: Toolchain,
    /// The host C compiler kbuild uses for its tools.
    pub host_cc: String,
    /// Inputs.
    pub inputs: Inputs,
    /// Absolute path of the output tree.
    pub out: String,
    /// Digest of the whole output tree (all entries below, in order).
    pub tree_blake3: String,
    /// Digest of the output tree's listing ([`crate::output::claim::listing`]): how pik
    /// recognizes the tree as its own before replacing it.
    pub listing_blake3: String,
    /// What Nix records for the output tree: narHash, narSize, and the store path
    /// `nix-store --add <out>` gives it.
    pub nar: NarInfo,
    /// Every entry of the output tree by relative path.
    pub files: BTreeMap<String, OutputFile>,
    /// The dev output (`vmlinux`, `lib/modules/<v>/build`), when built.
    pub dev: Option<DevOutput>,
    /// Objects compiled by this run.
    pub objects_compiled: u64,
    /// Object cache hits and misses of this build (absent with `--no-cache`).
    pub cache: Option<CacheRecord>,
    /// The whole-build memo: its key, and whether this output came from it.
    pub memo: Option<MemoRecord>,
    /// The build dir used.
    pub build_dir: String,
    /// The full log.
    pub log: String,
    /// Wall time per phase, seconds.
    pub timings_s: BTreeMap<String, f64>,
}

impl Manifest {
    /// Reads a manifest pik wrote (a regular file, not through a symlink), checking its schema.
    /// The fields are still untrusted input: paths and names in it are checked where used.
    pub fn read(path: &Path) -> Result<Manifest> {
        let bytes = crate::fsutil::read_regular(path, crate::fsutil::TEXT_LIMIT, true)
            .with_context(|| format!("reading the manifest {}", path.display()))?;
        let m: Manifest = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a pik manifest of schema {SCHEMA} (written by another pik version?)",
                path.display()
            )
        })?;
        if m.schema != SCHEMA {
            bail!(
                "{} has schema {:?}, this pik reads {SCHEMA}",
                path.display(),
                m.schema
            );
        }
        Ok(m)
    }

    /// Writes the manifest beside its output tree (`<out>.json`), atomically.
    pub fn write_beside(&self, out: &Path) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self)?;
        let path = crate::output::manifest_path(out);
        crate::fsutil::write_atomic(&path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(json)
    }
}

/// Describes every file and symlink under `root`, and the digest of the whole listing.
pub fn describe_tree(root: &Path) -> Result<(BTreeMap<String, OutputFile>, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = BTreeMap::new();
    let mut all = blake3::Hasher::new();
    let mut entries: Vec<_> = walkdir::WalkDir::new(root)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()))
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("walking {}", root.display()))?;
    entries.retain(|e| !e.file_type().is_dir());
    for e in entries {
        let rel = e.path().strip_prefix(root)?.to_string_lossy().to_string();
        let entry = if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path())?;
            OutputFile {
                kind: "symlink".into(),
                size: 0,
                blake3: blake3::hash(t.as_os_str().as_bytes()).to_hex().to_string(),
            }
        } else {
            let md = e.metadata()?;
            OutputFile {
                kind: if md.permissions().mode() & 0o111 != 0 {
                    "executable"
                } else {
                    "file"
                }
                .into(),
                size: md.len(),
                blake3: crate::fsutil::hash_file(e.path())?,
            }
        };
        all.update(rel.as_bytes());
        all.update(&[0]);
        all.update(entry.kind.as_bytes());
        all.update(entry.blake3.as_bytes());
        files.insert(rel, entry);
    }
    Ok((files, all.finalize().to_hex().to_string()))
}
