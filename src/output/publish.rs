//! Publishing a staged output: describing it (files, digests, what Nix will record), then
//! placing it — the trees swapped in whole, the manifest and the Nix expression written beside
//! them, the result stored in the whole-build memo. A fresh build and a memo hit both end here.

use super::claim::Claim;
use super::manifest::{describe_tree, DevOutput, Manifest, OutputFile};
use crate::input::target::Target;
use crate::nix::nar::{self, NarInfo};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What a staged output tree is: the manifest's record of it.
pub struct Described {
    /// Every file and symlink by relative path.
    pub files: BTreeMap<String, OutputFile>,
    /// Digest of the whole tree.
    pub tree_blake3: String,
    /// Digest of its listing (how pik recognizes it later).
    pub listing_blake3: String,
    /// What Nix records for it under the output's name.
    pub nar: NarInfo,
    /// The dev tree's record, when there is one.
    pub dev: Option<DevOutput>,
}

/// Describes the staged trees as they will be once published at `out` (and `dev`).
pub fn describe(staged: &Path, out: &Claim, dev: Option<(&Path, &Claim)>) -> Result<Described> {
    let (files, tree_blake3) = describe_tree(staged)?;
    let nar = nar::info(
        staged,
        &nar::default_name(&out.dest)?,
        nar::DEFAULT_STORE_DIR,
    )
    .context("computing the output's NAR hash")?;
    let dev = dev
        .map(|(staged, claim)| DevOutput::describe(staged, &claim.dest))
        .transpose()?;
    Ok(Described {
        files,
        tree_blake3,
        listing_blake3: super::claim::listing(staged, None)?,
        nar,
        dev,
    })
}

/// A tree staged beside its destination, and the destination's claim.
pub type Placement<'a> = (tempfile::TempDir, &'a Claim);

/// Swaps the staged trees into place and writes the manifest and the Nix expression beside the
/// output; returns the manifest's bytes (what the memo stores with the trees).
pub fn place(
    out: Placement,
    dev: Option<Placement>,
    manifest: &Manifest,
    target: &Target,
) -> Result<Vec<u8>> {
    let _out_lock = super::lock(&out.1.dest)?;
    let _dev_lock = dev.as_ref().map(|d| super::lock(&d.1.dest)).transpose()?;
    let config = std::fs::read_to_string(out.0.path().join("config"))
        .context("reading the staged output's config")?;
    if let Some((staged, claim)) = dev {
        super::swap_in(staged, claim)?;
    }
    super::swap_in(out.0, out.1)?;
    let json = manifest.write_beside(&out.1.dest)?;
    crate::nix::expr::write_beside(&out.1.dest, manifest, target, &config)?;
    Ok(json)
}
