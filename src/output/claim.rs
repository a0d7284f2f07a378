//! Where pik may write a tree: a destination (the output, the dev output, the firmware view) is
//! claimed only when it is absent, an empty directory, or a tree pik made itself — recognized by
//! the manifest pik wrote for it and a listing digest of its entries that must still match. Any
//! other path is refused before work starts (so an hour-long build never begins over someone's
//! source tree or SD card), and again under the output lock just before the swap.

use anyhow::{bail, Context, Result};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The file inside a firmware view that records what pik wrote there.
pub const FIRMWARE_MARKER: &str = "pik-firmware.json";

/// What a destination holds when pik made it, and so how to recognize it.
#[derive(Debug, Clone)]
pub enum Made {
    /// A `pik build` output: the manifest `<dest>.json` beside it records its listing.
    Output,
    /// A dev output: the main output's manifest (this path) records its listing.
    Dev {
        /// The main output's manifest.
        manifest: PathBuf,
    },
    /// A firmware view: [`FIRMWARE_MARKER`] inside it records its listing.
    Firmware,
}

/// A destination pik intends to replace, with the paths it must stay clear of.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The destination, absolute, with symlinks in its parents resolved.
    pub dest: PathBuf,
    /// How the user named it (`--out`, `--dev`, `--firmware-dir`, …), for messages.
    pub what: &'static str,
    made: Made,
    protected: Vec<(String, PathBuf)>,
}

impl Claim {
    /// Checks `dest` now and returns the claim to check again before the swap.
    /// `protected` lists (description, path) pairs the destination may not be, contain or lie
    /// inside; `/` and `$HOME` are always protected (pik may write below them, not replace them).
    pub fn new(
        dest: &Path,
        what: &'static str,
        made: Made,
        protected: &[(String, PathBuf)],
    ) -> Result<Claim> {
        let c = Claim {
            dest: resolve(dest)?,
            what,
            made,
            protected: protected
                .iter()
                .map(|(w, p)| Ok((w.clone(), resolve(p)?)))
                .collect::<Result<_>>()?,
        };
        c.check()?;
        Ok(c)
    }

    /// Fails unless the destination may still be replaced.
    pub fn check(&self) -> Result<()> {
        let d = &self.dest;
        let shown = d.display();
        let what = self.what;
        if d.parent().is_none() {
            bail!("{what} {shown} is the root directory; pik never replaces it");
        }
        if let Some(home) = home() {
            if home.starts_with(d) {
                bail!(
                    "{what} {shown} is or contains your home directory; pik never replaces it. \
                     Choose a new directory below it"
                );
            }
        }
        for (name, p) in &self.protected {
            if d == p || d.starts_with(p) || p.starts_with(d) {
                let rel = if d == p {
                    "is"
                } else if d.starts_with(p) {
                    "lies inside"
                } else {
                    "contains"
                };
                bail!(
                    "{what} {shown} {rel} {name} {}; pik would replace it. Choose a directory \
                     outside it",
                    p.display()
                );
            }
        }
        let md = match std::fs::symlink_metadata(d) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("inspecting {what} {shown}")),
        };
        let refuse = |holds: &str| -> Result<()> {
            bail!(
                "{what} {shown} {holds}; pik replaces only an empty directory or a tree it made \
                 itself. Move it away or remove it yourself, or choose another {what}"
            )
        };
        if md.file_type().is_symlink() {
            return refuse("is a symlink");
        }
        if !md.is_dir() {
            return refuse("exists and is not a directory");
        }
        let mut entries =
            std::fs::read_dir(d).with_context(|| format!("listing {what} {shown}"))?;
        if entries.next().is_none() {
            return Ok(());
        }
        match self.recorded_listing() {
            Record::None => refuse("is not empty and has no pik manifest recording it"),
            Record::Unlisted => refuse(
                "was written by an older pik, whose manifest does not record its listing (or the \
                 manifest is not about this path)",
            ),
            Record::Listing(recorded) if recorded == listing(d, self.skip())? => Ok(()),
            Record::Listing(_) => refuse(
                "is not empty and no longer matches what pik recorded when it wrote it (edited \
                 since?)",
            ),
        }
    }

    fn skip(&self) -> Option<&'static str> {
        matches!(self.made, Made::Firmware).then_some(FIRMWARE_MARKER)
    }

    /// The listing digest pik recorded for the destination, if a readable record names it.
    fn recorded_listing(&self) -> Record {
        let d = &self.dest;
        let record = match &self.made {
            Made::Output => read_json(&crate::output::manifest_path(d)),
            Made::Dev { manifest } => read_json(manifest).and_then(|v| v.get("dev").cloned()),
            Made::Firmware => read_json(&d.join(FIRMWARE_MARKER)),
        };
        let Some(v) = record else {
            return Record::None;
        };
        // The record must be about this very path, not a copy of someone else's manifest.
        let about = match self.made {
            Made::Output => v.get("out"),
            Made::Dev { .. } => v.get("path"),
            Made::Firmware => None,
        };
        if about.is_some_and(|p| p.as_str() != d.to_str()) {
            return Record::Unlisted;
        }
        match v.get("listing_blake3").and_then(|l| l.as_str()) {
            Some(l) => Record::Listing(l.to_string()),
            None => Record::Unlisted,
        }
    }
}

/// What pik recorded about a destination.
enum Record {
    /// No record pik could read.
    None,
    /// A record without a listing for this path (an older pik's, or another path's).
    Unlisted,
    /// The listing digest recorded.
    Listing(String),
}

/// A JSON record pik wrote: a regular file (not a symlink), at most 256 MiB.
fn read_json(p: &Path) -> Option<serde_json::Value> {
    let bytes = crate::fsutil::read_regular(p, 256 << 20, true).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// BLAKE3 of a tree's entries: relative path, type, size of files, exec bit, symlink targets
/// — not the content, so recognizing a large tree costs a walk, not a read. `skip` leaves out one
/// top-level name (the firmware view's own marker).
pub fn listing(root: &Path, skip: Option<&str>) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(b"pik-listing-v1\0");
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for e in walker {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let rel = e.path().strip_prefix(root)?;
        if e.depth() == 1 && skip.is_some_and(|s| rel.as_os_str() == s) {
            continue;
        }
        let md = e.path().symlink_metadata()?;
        h.update(rel.as_os_str().as_bytes());
        h.update(b"\0");
        let ft = md.file_type();
        if ft.is_dir() {
            h.update(b"d");
        } else if ft.is_symlink() {
            h.update(b"l");
            h.update(std::fs::read_link(e.path())?.as_os_str().as_bytes());
        } else if ft.is_file() {
            h.update(if md.permissions().mode() & 0o100 != 0 {
                b"x"
            } else {
                b"f"
            });
            h.update(&md.len().to_le_bytes());
        } else {
            h.update(b"?");
        }
        h.update(b"\0");
    }
    Ok(h.finalize().to_hex().to_string())
}

/// `$HOME`, resolved, when set to something other than `/` (as a Nix sandbox's
/// `/homeless-shelter` is not).
fn home() -> Option<PathBuf> {
    let h = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let h = resolve(Path::new(&h)).ok()?;
    (h.parent().is_some()).then_some(h)
}

/// `p` made absolute, with `.` and `..` resolved and symlinks in its existing ancestors
/// followed (the last component is kept as it is: a symlink there is refused, not followed).
pub fn resolve(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    let mut out = PathBuf::from("/");
    let comps: Vec<Component> = abs.components().collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => {
                out.push(n);
                let last = i + 1 == comps.len();
                if !last && out.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    out = std::fs::canonicalize(&out)
                        .with_context(|| format!("resolving {}", out.display()))?;
                }
            }
        }
    }
    Ok(out)
}

/// Checks that `name`, read from a manifest, a derivation or a config file, is one plain file
/// name: not empty, no `/`, not `.` or `..`, no NUL or control characters.
pub fn plain_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(|c| c.is_control())
    {
        bail!("{what} {name:?} is not a plain file name; refusing to use it as a path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(d: &Path, made: Made) -> Result<Claim> {
        Claim::new(d, "--out", made, &[])
    }

    #[test]
    fn only_empty_absent_or_recognized_trees_are_claimed() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        claim(&out, Made::Output).unwrap();
        std::fs::create_dir(&out).unwrap();
        claim(&out, Made::Output).unwrap();
        std::fs::create_dir(out.join("src")).unwrap();
        std::fs::write(out.join("src/main.c"), "x").unwrap();
        let e = format!("{:#}", claim(&out, Made::Output).unwrap_err());
        assert!(e.contains("no pik manifest"), "{e}");
        // A manifest about this path with the right listing: recognized.
        let rec = |listing: &str, path: &Path| {
            serde_json::json!({"out": path.to_str().unwrap(), "listing_blake3": listing})
                .to_string()
        };
        let l = listing(&out, None).unwrap();
        std::fs::write(t.path().join("out.json"), rec(&l, &out)).unwrap();
        claim(&out, Made::Output).unwrap();
        // A manifest copied from elsewhere does not vouch for this tree.
        std::fs::write(t.path().join("out.json"), rec(&l, &t.path().join("x"))).unwrap();
        assert!(claim(&out, Made::Output).is_err());
        // Edited since: refused.
        std::fs::write(t.path().join("out.json"), rec(&l, &out)).unwrap();
        std::fs::write(out.join("new"), "y").unwrap();
        let e = format!("{:#}", claim(&out, Made::Output).unwrap_err());
        assert!(e.contains("no longer matches"), "{e}");
        // A file or a symlink in its place.
        let f = t.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(claim(&f, Made::Output).is_err());
        let l = t.path().join("link");
        std::os::unix::fs::symlink(&out, &l).unwrap();
        assert!(claim(&l, Made::Output).is_err());
    }

    #[test]
    fn protected_paths_and_their_relatives_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("linux");
        std::fs::create_dir_all(src.join("kernel")).unwrap();
        let prot = [("the source tree".to_string(), src.clone())];
        for d in [src.clone(), src.join("kernel/out"), t.path().to_path_buf()] {
            let e = Claim::new(&d, "--out", Made::Output, &prot).unwrap_err();
            assert!(format!("{e:#}").contains("the source tree"), "{e:#}");
        }
        // Through a `..` or a symlinked parent, too.
        let e = Claim::new(&src.join("kernel/.."), "--out", Made::Output, &prot).unwrap_err();
        assert!(format!("{e:#}").contains("the source tree"));
        std::os::unix::fs::symlink(&src, t.path().join("alias")).unwrap();
        let e = Claim::new(&t.path().join("alias/o"), "--out", Made::Output, &prot).unwrap_err();
        assert!(format!("{e:#}").contains("lies inside"));
        Claim::new(&t.path().join("result"), "--out", Made::Output, &prot).unwrap();
        assert!(Claim::new(Path::new("/"), "--out", Made::Output, &[]).is_err());
    }

    #[test]
    fn plain_names_only() {
        plain_name("kernel_2712.img", "x").unwrap();
        for bad in ["", ".", "..", "s/../../x", "/etc/passwd", "a\nb"] {
            assert!(plain_name(bad, "x").is_err(), "{bad:?}");
        }
    }
}
