//! The build plan: every input of `pik build`, read and checked once before any work — the
//! target's data, the profile, the fragments in merge order, the patch series, the toolchain,
//! the source and its digest, `SOURCE_DATE_EPOCH`. The memo key is BLAKE3 over a stable
//! serialization of it; every later stage reads it instead of the inputs.

use super::Options;
use crate::input::data::DataDir;
use crate::input::kconfig::{self, Fragment};
use crate::input::patch::{self, Patch};
use crate::input::source::{self, Source};
use crate::input::target::{self, Profile, Target};
use crate::input::toolchain::{self, Toolchain};
use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Everything a build is made from, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The target's data.
    pub target: Target,
    /// Profile name.
    pub profile: String,
    /// The profile's data.
    pub profile_data: Profile,
    /// Fragments in merge order (target, profile, nixos, `--fragment`s, `--set`).
    pub fragments: Vec<Fragment>,
    /// The `--set` values, as given.
    pub set: Vec<String>,
    /// The patch series, then the `--patch` files.
    pub patches: Vec<Patch>,
    /// GNU patch's fuzz factor (0: exactly).
    pub patch_fuzz: u32,
    /// The cross toolchain.
    pub toolchain: Toolchain,
    /// Where the source comes from: the one named, or Debian's tarballs newest first.
    pub sources: source::Candidates,
    /// The source in use (the first candidate until the workspace stage picks another).
    pub source: Source,
    /// Its content digest.
    pub source_digest: blake3::Hash,
    /// `SOURCE_DATE_EPOCH` (nixpkgs' default when unset).
    pub epoch: i64,
}

impl Plan {
    /// Reads and checks every input `opt` names, and digests the source: an error here comes
    /// before anything is extracted, configured or built.
    pub fn resolve(opt: &Options) -> Result<Plan> {
        if opt.jobs == Some(0) {
            bail!("-j 0: the number of parallel jobs must be at least 1");
        }
        let kdata = DataDir::kconfigs(opt.kconfigs.as_deref());
        let pdata = DataDir::patches(opt.patches_dir.as_deref());
        let target = target::find(&kdata, &opt.target)?;
        let profile = opt
            .profile
            .clone()
            .unwrap_or_else(|| target.default_profile.clone());
        let profile_data = target.profile(&profile)?.clone();
        let fragments = kconfig::fragments(
            &kdata,
            &target,
            &profile_data,
            !opt.no_nixos,
            &opt.fragments,
            &opt.set,
        )?;
        let patches = patch::load_series(&pdata, &target.patches, &opt.patches, opt.patch_fuzz)?;
        let toolchain = toolchain::find(&target.triple, &opt.toolchain)?;
        let sources = source::candidates(opt.source.as_deref())?;
        let first = sources.list[0].clone();
        let source_digest = source::digest(&first)?;
        Ok(Plan {
            target,
            profile,
            profile_data,
            fragments,
            set: opt.set.clone(),
            patches,
            patch_fuzz: opt.patch_fuzz,
            toolchain,
            sources,
            source: first,
            source_digest,
            epoch: epoch()?,
        })
    }

    /// The memo key: BLAKE3 over this plan's stable serialization, the host tools and pik's
    /// own binary (see [`crate::output::memo::key`]).
    pub fn memo_key(&self) -> Result<String> {
        crate::output::memo::key(&self.key_material()?)
    }

    /// The plan as the memo key sees it: every input that extraction, patching, Kconfig and
    /// kbuild read, in a fixed order (JSON of this struct; field order is the definition's).
    fn key_material(&self) -> Result<Vec<u8>> {
        // Names and origins are left out: the same bytes from another path build the same.
        #[derive(Serialize)]
        struct PatchKey {
            strip: usize,
            fuzz: u32,
            blake3: String,
        }
        #[derive(Serialize)]
        struct Key<'a> {
            schema: &'static str,
            target: &'a Target,
            profile: &'a str,
            source: String,
            patches: Vec<PatchKey>,
            fragments: Vec<&'a str>,
            toolchain: &'a Toolchain,
            epoch: i64,
        }
        let key = Key {
            schema: "pik.plan/1",
            target: &self.target,
            profile: &self.profile,
            source: self.source_digest.to_hex().to_string(),
            patches: self
                .patches
                .iter()
                .map(|p| PatchKey {
                    strip: p.strip,
                    fuzz: p.fuzz,
                    blake3: blake3::hash(&p.bytes).to_hex().to_string(),
                })
                .collect(),
            fragments: self.fragments.iter().map(|f| f.text.as_str()).collect(),
            toolchain: &self.toolchain,
            epoch: self.epoch,
        };
        Ok(serde_json::to_vec(&key)?)
    }

    /// The make targets for a configured build: the kernel image, `modules` when the config
    /// has them, `dtbs`.
    pub fn make_targets(&self, modules: bool) -> Vec<String> {
        let mut t = vec![self.target.kernel_image.clone()];
        if modules {
            t.push("modules".into());
        }
        t.push("dtbs".into());
        t
    }

    /// The config base target: the vendor defconfig when the profile prefers it and `tree`
    /// has it, else the profile's base.
    pub fn config_base(&self, tree: &std::path::Path) -> String {
        let vendor = self
            .profile_data
            .prefer_vendor_defconfig
            .then_some(self.target.vendor_defconfig.as_str());
        kconfig::base_target(tree, &self.target.arch, &self.profile_data.base, vendor)
    }
}

/// `SOURCE_DATE_EPOCH`, or nixpkgs' default.
fn epoch() -> Result<i64> {
    Ok(match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        _ => super::kbuild::DEFAULT_EPOCH,
    })
}
