//! Build targets are data: `kconfigs/<name>.toml` describes a board family (architecture, cross
//! triple, image names, fragments, device trees, profiles). This module loads and resolves them.

use crate::input::data::DataDir;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One profile of a target: how the base config is made and which fragments follow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// One line for `pik targets`.
    pub description: String,
    /// The kbuild config target that makes the base `.config` (`defconfig`, `tinyconfig`, …).
    pub base: String,
    /// Prefer the vendor tree's `<soc>_defconfig` (the target's `vendor_defconfig`) when the
    /// source has it.
    #[serde(default)]
    pub prefer_vendor_defconfig: bool,
    /// Fragments (files in the kconfigs dir) merged after the target fragment.
    #[serde(default)]
    pub fragments: Vec<String>,
}

/// A build target, as read from `kconfigs/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Canonical name (`bcm2712`).
    pub name: String,
    /// Other names accepted by `--target`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line for `pik targets`.
    pub description: String,
    /// Kernel `ARCH=`.
    pub arch: String,
    /// The target triple used to find the cross compiler.
    pub triple: String,
    /// The Debian package of the cross compiler (`gcc-aarch64-linux-gnu`), for `pik doctor`.
    pub cross_package: String,
    /// The kbuild image target, also its file name under `arch/<arch>/boot/`.
    pub kernel_image: String,
    /// The name the Raspberry Pi firmware loads (`kernel_2712.img`, `kernel8.img`).
    pub firmware_image: String,
    /// The vendor (raspberrypi/linux) defconfig for this SoC.
    pub vendor_defconfig: String,
    /// The target's own Kconfig fragment.
    pub fragment: String,
    /// Device-tree sources the source tree must have (relative to the tree).
    pub device_trees: Vec<String>,
    /// DTBs that must come out of the build (relative to `dtbs/`).
    pub required_dtbs: Vec<String>,
    /// The patch series directory under `patches/`.
    pub patches: String,
    /// A file whose presence marks the vendor tree; without it the user gets `thin_support`.
    pub vendor_marker: String,
    /// The warning printed for trees without the vendor marker.
    pub thin_support: String,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The default profile.
    pub default_profile: String,
}

impl Target {
    /// The profile called `name`, or an error listing the ones that exist.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).with_context(|| {
            format!(
                "target {} has no profile {name:?}; its profiles are: {}",
                self.name,
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Whether `name` names this target.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Loads every `*.toml` target in `data`.
pub fn load_all(data: &DataDir) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for file in data.top_level_files(".toml")? {
        let bytes = data.read_required(&file)?;
        let text = String::from_utf8(bytes).with_context(|| format!("{file} is not UTF-8"))?;
        let t: Target =
            toml::from_str(&text).with_context(|| format!("parsing {}", data.describe(&file)))?;
        t.profile(&t.default_profile)
            .with_context(|| format!("in {}", data.describe(&file)))?;
        out.push(t);
    }
    if out.is_empty() {
        bail!(
            "no targets found in {} (expected <target>.toml files)",
            data.describe("")
        );
    }
    Ok(out)
}

/// Finds the target called (or aliased) `name`.
pub fn find(data: &DataDir, name: &str) -> Result<Target> {
    let all = load_all(data)?;
    let names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
    all.into_iter()
        .find(|t| t.answers_to(name))
        .with_context(|| {
            format!(
                "unknown target {name:?}; known targets: {} (see `pik targets`)",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_targets_load() {
        let data = DataDir::kconfigs(None);
        let t = find(&data, "rpi4").unwrap();
        assert_eq!(t.name, "bcm2711");
        assert_eq!(t.firmware_image, "kernel8.img");
        let t = find(&data, "bcm2712").unwrap();
        assert_eq!(t.firmware_image, "kernel_2712.img");
        for t in load_all(&data).unwrap() {
            for p in t.profiles.values() {
                for f in p.fragments.iter().chain([&t.fragment]) {
                    assert!(data.read(f).unwrap().is_some(), "{} lacks {f}", t.name);
                }
            }
        }
        assert!(find(&data, "nope").is_err());
    }
}
