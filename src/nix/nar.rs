//! Nix archives (NAR), byte for byte as `nix-store --dump` writes them, and what Nix derives from
//! one: the narHash (sha256, printed as hex, nix32 and SRI), the narSize, and the store path
//! `nix-store --add` gives a tree.
//!
//! A NAR records only what Nix keeps: directory entries sorted by raw bytes, regular files with
//! the owner-execute bit, symlink targets, empty directories. Sockets, FIFOs and devices cannot be
//! archived and are an error.

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// The store directory Nix uses unless told otherwise.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// What Nix records about a tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NarInfo {
    /// `sha256:<nix32>`, as `nix-store -q --hash` prints it.
    pub nar_hash: String,
    /// `sha256-<base64>`.
    pub sri: String,
    /// Lower-case hex of the sha256.
    pub hex: String,
    /// Bytes in the NAR.
    pub nar_size: u64,
    /// The store path `nix-store --add` gives the tree under `name`.
    pub store_path: String,
}

fn put_str(w: &mut impl Write, s: &[u8]) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s)?;
    let pad = (8 - s.len() % 8) % 8;
    w.write_all(&[0u8; 8][..pad])
}

/// Writes the NAR of `path` (a file, symlink or directory) to `w`.
pub fn dump(path: &Path, w: &mut impl Write) -> Result<()> {
    put_str(w, b"nix-archive-1")?;
    node(path, w, 0)
}

fn node(path: &Path, w: &mut impl Write, depth: usize) -> Result<()> {
    // Nix sets no limit; a path longer than PATH_MAX (4096 bytes, so at most ~2048 levels)
    // cannot be opened anyway. This only keeps a runaway recursion off the stack's end.
    if depth > 4096 {
        bail!(
            "{}: directories nested too deeply for a NAR",
            path.display()
        );
    }
    let md = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let ft = md.file_type();
    put_str(w, b"(")?;
    put_str(w, b"type")?;
    if ft.is_symlink() {
        put_str(w, b"symlink")?;
        put_str(w, b"target")?;
        let target = fs::read_link(path)?;
        put_str(w, target.as_os_str().as_bytes())?;
    } else if ft.is_file() {
        put_str(w, b"regular")?;
        if md.permissions().mode() & 0o100 != 0 {
            put_str(w, b"executable")?;
            put_str(w, b"")?;
        }
        put_str(w, b"contents")?;
        let len = md.len();
        w.write_all(&len.to_le_bytes())?;
        let mut f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let copied = io::copy(&mut (&mut f).take(len), w)?;
        if copied != len {
            bail!("{} changed size while it was archived", path.display());
        }
        let pad = (8 - len % 8) % 8;
        w.write_all(&[0u8; 8][..pad as usize])?;
    } else if ft.is_dir() {
        put_str(w, b"directory")?;
        let mut names: Vec<OsString> = fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        // Raw byte order, as Nix sorts (not the locale's).
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            put_str(w, b"entry")?;
            put_str(w, b"(")?;
            put_str(w, b"name")?;
            put_str(w, name.as_bytes())?;
            put_str(w, b"node")?;
            node(&path.join(&name), w, depth + 1)?;
            put_str(w, b")")?;
        }
    } else {
        let kind = if ft.is_socket() {
            "a socket"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device node"
        } else {
            "a special file"
        };
        bail!(
            "{} is {kind}: a NAR (and so a Nix store path) holds only regular files, directories \
             and symlinks; remove it from the tree",
            path.display()
        );
    }
    put_str(w, b")")?;
    Ok(())
}

/// A writer that hashes and counts.
struct HashWriter {
    h: Sha256,
    n: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.h.update(buf);
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The narHash, narSize and the store path of `path` under `name` in `store_dir`.
pub fn info(path: &Path, name: &str, store_dir: &str) -> Result<NarInfo> {
    check_name(name)?;
    let mut hw = io::BufWriter::with_capacity(
        1 << 20,
        HashWriter {
            h: Sha256::new(),
            n: 0,
        },
    );
    dump(path, &mut hw)?;
    let hw = hw.into_inner().map_err(|e| e.into_error())?;
    let sha: [u8; 32] = hw.h.finalize().into();
    Ok(NarInfo {
        nar_hash: format!("sha256:{}", nix32(&sha)),
        sri: format!(
            "sha256-{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha)
        ),
        hex: hex(&sha),
        nar_size: hw.n,
        store_path: store_path(&sha, name, store_dir),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Nix's base-32 (alphabet without e, o, t, u; last byte first).
pub fn nix32(h: &[u8]) -> String {
    const A: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let len = (h.len() * 8 - 1) / 5 + 1;
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let mut c = (h[i] as u16) >> j;
        if i + 1 < h.len() {
            c |= (h[i + 1] as u16) << (8 - j);
        }
        out.push(A[(c & 0x1f) as usize] as char);
    }
    out
}

/// The store path `nix-store --add` (a recursive sha256 content address) gives a NAR.
pub fn store_path(nar_sha256: &[u8; 32], name: &str, store_dir: &str) -> String {
    let fingerprint = format!("source:sha256:{}:{store_dir}:{name}", hex(nar_sha256));
    let h: [u8; 32] = Sha256::digest(fingerprint.as_bytes()).into();
    let mut r = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        r[i % 20] ^= x;
    }
    format!("{store_dir}/{}-{name}", nix32(&r))
}

/// Nix's rules for the name part of a store path.
pub fn check_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
    if name.is_empty() || name.len() > 211 || !ok_chars || name == "." || name == ".." {
        bail!(
            "{name:?} is not a valid Nix store path name (1-211 characters of A-Z a-z 0-9 + - . _ ? =); \
             pass another with --name"
        );
    }
    Ok(())
}

/// The store path name `nix-store --add DIR` uses: the last component of the path, once `.`
/// and `..` are resolved (`pik nar hash ..` names the parent directory).
pub fn default_name(path: &Path) -> Result<String> {
    let abs = crate::output::claim::resolve(path)?;
    let Some(name) = abs.file_name() else {
        bail!(
            "{} has no name to derive a store path name from; pass --name",
            path.display()
        );
    };
    String::from_utf8(name.to_os_string().into_vec())
        .context("the directory name is not UTF-8; pass --name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_matches_nix_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.txt");
        fs::write(&f, b"hello\n").unwrap();
        let mut v = Vec::new();
        dump(&f, &mut v).unwrap();
        assert_eq!(v.len(), 120);
        assert_eq!(&v[..21], b"\x0d\0\0\0\0\0\0\0nix-archive-1");
        assert_eq!(&v[0x60..0x68], b"hello\n\0\0");
    }

    #[test]
    fn reference_tree_hash_and_store_paths() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("d");
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::write(t.join("a.txt"), "hello\n").unwrap();
        fs::write(t.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(t.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a.txt", t.join("link")).unwrap();
        fs::write(t.join("sub/B"), "x").unwrap();
        fs::write(t.join("sub/a"), "y").unwrap();
        let i = info(&t, "d", DEFAULT_STORE_DIR).unwrap();
        assert_eq!(i.nar_size, 1272);
        assert_eq!(
            i.hex,
            "d9ed22e685bec8385447cae0a533e166cba06c5e2017bfdc257a227a8dad717d"
        );
        assert_eq!(
            i.nar_hash,
            "sha256:0zbimn6pl8ks4pfby5r0brna1jv6w4rsbq6a8xa3ij5yhpk25vfr"
        );
        assert_eq!(i.sri, "sha256-2e0i5oW+yDhUR8rgpTPhZsugbF4gF7/cJXoieo2tcX0=");
        assert_eq!(
            i.store_path,
            "/nix/store/xa75gkmpa76aq1r937679vk7s9rji7gh-d"
        );
        let i = info(&t, "pik-kernel", DEFAULT_STORE_DIR).unwrap();
        assert_eq!(
            i.store_path,
            "/nix/store/admlvf4fvl3zm1n688b8vaf0bis81vqd-pik-kernel"
        );
        assert!(info(&t, "a b", DEFAULT_STORE_DIR).is_err());
    }

    #[test]
    fn names_come_from_the_resolved_path() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("kernel/dtbs");
        fs::create_dir_all(&sub).unwrap();
        assert_eq!(default_name(&sub.join("..")).unwrap(), "kernel");
        assert_eq!(default_name(&sub.join(".")).unwrap(), "dtbs");
        assert!(default_name(Path::new("/")).is_err());
    }
}
