//! The data pik ships: target descriptions and Kconfig fragments (`kconfigs/`) and patch series
//! (`patches/`). They are compiled into the binary so an installed `pik` needs no checkout, and a
//! directory given with `--kconfigs` / `--patches` replaces the built-in copy.

use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};
use std::path::{Component, Path, PathBuf};

static KCONFIGS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/kconfigs");
static PATCHES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/patches");

/// A read-only tree of data files: the built-in copy, or a directory on disk.
#[derive(Debug, Clone)]
pub enum DataDir {
    /// Compiled into the binary.
    Builtin(&'static Dir<'static>, &'static str),
    /// A user-supplied directory.
    Disk(PathBuf),
}

impl DataDir {
    /// The Kconfig data: `dir` when given, else the built-in `kconfigs/`.
    pub fn kconfigs(dir: Option<&Path>) -> DataDir {
        match dir {
            Some(d) => DataDir::Disk(d.to_path_buf()),
            None => DataDir::Builtin(&KCONFIGS, "kconfigs"),
        }
    }

    /// The patch data: `dir` when given, else the built-in `patches/`.
    pub fn patches(dir: Option<&Path>) -> DataDir {
        match dir {
            Some(d) => DataDir::Disk(d.to_path_buf()),
            None => DataDir::Builtin(&PATCHES, "patches"),
        }
    }

    /// A human-readable name for `rel` inside this tree, for messages and manifests.
    pub fn describe(&self, rel: &str) -> String {
        match self {
            DataDir::Builtin(_, name) => format!("<built-in>/{name}/{rel}"),
            DataDir::Disk(d) => d.join(rel).display().to_string(),
        }
    }

    /// Reads the file at `rel`, or `Ok(None)` when it does not exist. `rel` may not leave the tree.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let rel = normalize(rel)?;
        match self {
            DataDir::Builtin(dir, _) => Ok(dir.get_file(&rel).map(|f| f.contents().to_vec())),
            DataDir::Disk(d) => {
                let p = d.join(&rel);
                match std::fs::metadata(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    _ => {
                        crate::fsutil::read_regular(&p, crate::fsutil::BLOB_LIMIT, false).map(Some)
                    }
                }
            }
        }
    }

    /// Like [`DataDir::read`], but a missing file is an error naming it.
    pub fn read_required(&self, rel: &str) -> Result<Vec<u8>> {
        self.read(rel)?
            .with_context(|| format!("{} does not exist", self.describe(rel)))
    }

    /// Names of the files directly in the tree's top level whose name ends with `suffix`, sorted.
    pub fn top_level_files(&self, suffix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = match self {
            DataDir::Builtin(dir, _) => dir
                .files()
                .filter_map(|f| f.path().to_str().map(str::to_string))
                .collect(),
            DataDir::Disk(d) => std::fs::read_dir(d)
                .with_context(|| format!("listing {}", d.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect(),
        };
        names.retain(|n| n.ends_with(suffix));
        names.sort();
        Ok(names)
    }
}

/// Resolves `.` and `..` inside a relative data path; refuses absolute paths and escapes.
pub fn normalize(rel: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().context("non-UTF-8 data path")?),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    bail!("data path {rel:?} leaves its directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => bail!("data path {rel:?} is absolute"),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_paths_inside() {
        assert_eq!(
            normalize("bcm2712/../common/a.patch").unwrap(),
            "common/a.patch"
        );
        assert!(normalize("../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
    }
}
