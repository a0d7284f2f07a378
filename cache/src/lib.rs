//! A content-addressed store: blobs named by the BLAKE3 hash of their bytes, kept zstd-compressed,
//! plus action entries that map a caller-chosen key to a blob.
//!
//! The store knows nothing of compilers or kernels. Its guarantees:
//! - writes are atomic (a temp file in the same directory, then rename), so concurrent writers of the
//!   same entry are safe and a reader never sees a half-written file;
//! - every read is verified: a blob whose bytes do not hash to its name, or an action entry that fails
//!   its own checksum, is reported as absent and removed, never returned.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const BLOB_MAGIC: &[u8; 8] = b"PIKBLOB1";
const ACTION_MAGIC: &[u8; 8] = b"PIKACT01";

/// A BLAKE3 digest: the name of a blob or the key of an action.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| Digest(*h.as_bytes()))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A store rooted at one directory on local disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("actions"))?;
        Ok(Store { root })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(&hex[2..])
    }

    fn action_path(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("actions").join(&hex[..2]).join(&hex[2..])
    }

    /// Stores `bytes` and returns their digest. Storing the same bytes twice is cheap and harmless.
    pub fn put_blob(&self, bytes: &[u8]) -> io::Result<Digest> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if path.exists() {
            return Ok(d);
        }
        let mut body = Vec::with_capacity(bytes.len() / 3 + 16);
        body.extend_from_slice(BLOB_MAGIC);
        body.extend_from_slice(&zstd::bulk::compress(bytes, 3)?);
        atomic_write(&path, &body)?;
        Ok(d)
    }

    /// Returns the blob's bytes if it is present and intact. A damaged blob is removed and reported
    /// as absent.
    pub fn get_blob(&self, d: &Digest) -> io::Result<Option<Vec<u8>>> {
        let path = self.blob_path(d);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let decoded = raw
            .strip_prefix(BLOB_MAGIC)
            .and_then(|z| zstd::stream::decode_all(z).ok())
            .filter(|bytes| Digest::of(bytes) == *d);
        if decoded.is_none() {
            let _ = fs::remove_file(&path);
        }
        Ok(decoded)
    }

    /// Records that `key` maps to the blob `value`.
    pub fn put_action(&self, key: &Digest, value: &Digest) -> io::Result<()> {
        let mut body = Vec::with_capacity(8 + 32 + 32);
        body.extend_from_slice(ACTION_MAGIC);
        body.extend_from_slice(&value.0);
        body.extend_from_slice(&Digest::of(&body).0);
        atomic_write(&self.action_path(key), &body)
    }

    /// The blob `key` maps to, if the entry is present and intact (a damaged entry is removed).
    pub fn get_action(&self, key: &Digest) -> io::Result<Option<Digest>> {
        let path = self.action_path(key);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ok = raw.len() == 72
            && raw.starts_with(ACTION_MAGIC)
            && Digest::of(&raw[..40]).0[..] == raw[40..];
        if !ok {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        let mut v = [0u8; 32];
        v.copy_from_slice(&raw[8..40]);
        Ok(Some(Digest(v)))
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, so readers
/// see either the old content or the new, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d1 = s.put_blob(b"hello kernel").unwrap();
        let d2 = s.put_blob(b"hello kernel").unwrap();
        assert_eq!(d1, d2);
        assert_eq!(s.get_blob(&d1).unwrap().unwrap(), b"hello kernel");
        assert!(s.get_blob(&Digest::of(b"other")).unwrap().is_none());
    }

    #[test]
    fn damaged_blob_is_a_miss_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = s.put_blob(&vec![7u8; 10_000]).unwrap();
        let p = s.blob_path(&d);
        let mut raw = fs::read(&p).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x55;
        fs::write(&p, &raw).unwrap();
        assert!(s.get_blob(&d).unwrap().is_none());
        assert!(!p.exists());
        // Truncation too.
        let d = s.put_blob(b"truncate me please, a little longer").unwrap();
        let p = s.blob_path(&d);
        let raw = fs::read(&p).unwrap();
        fs::write(&p, &raw[..raw.len() / 2]).unwrap();
        assert!(s.get_blob(&d).unwrap().is_none());
    }

    #[test]
    fn actions_verify_their_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"key");
        let val = s.put_blob(b"value").unwrap();
        s.put_action(&key, &val).unwrap();
        assert_eq!(s.get_action(&key).unwrap(), Some(val));
        let p = s.action_path(&key);
        let mut raw = fs::read(&p).unwrap();
        raw[10] ^= 1;
        fs::write(&p, &raw).unwrap();
        assert_eq!(s.get_action(&key).unwrap(), None);
        assert!(!p.exists());
    }
}
