//! A shared, lock-free memo of file content hashes keyed by stat data, so a file that has not
//! changed is not read again by every process that needs its hash (a compiler wrapper checks a few
//! hundred headers per call).
//!
//! A table may also remember one caller-defined word per file computed from its content (an
//! "attribute", e.g. whether a header contains some directive), so a caller that needs it does
//! not read the file either. The function is fixed when the table is opened; a table file must
//! always be opened with the same one (version the file name when it changes).
//!
//! Stat data is only ever a cache of a content hash: a slot is used only when device, inode, size,
//! mtime and ctime all match, and a file is remembered only once its timestamps are older than
//! [`SETTLE`] (file timestamps are coarse, so a file written twice within one tick could otherwise
//! keep a stale hash). Slots carry their own checksum, so a torn or damaged slot is a miss.

use crate::Digest;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files whose mtime or ctime is younger than this are hashed but not remembered.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Stamp (5 words), digest (4), attribute (1), checksum (1).
const WORDS: usize = 11;

/// A function computing a file's attribute word from its content.
pub type AttrFn = fn(&[u8]) -> u64;

fn no_attr(_: &[u8]) -> u64 {
    0
}

/// The memo: a fixed-size table in a file mapped shared by every process using the store.
pub struct FileHashCache {
    slots: &'static [AtomicU64],
    nslots: usize,
    len: usize,
    attr: AttrFn,
    _file: File,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for FileHashCache {}
unsafe impl Sync for FileHashCache {}

impl Drop for FileHashCache {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped; no reference outlives self.
        unsafe {
            libc::munmap(self.slots.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

/// Stat data that identifies one version of a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: u64,
    ctime: u64,
}

impl Stamp {
    fn of(md: &std::fs::Metadata) -> Self {
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime() as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(md.mtime_nsec() as u64),
            ctime: (md.ctime() as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(md.ctime_nsec() as u64),
        }
    }

    /// True when both timestamps are older than [`SETTLE`].
    fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let newest = self.mtime.max(self.ctime);
        now > newest && now - newest > SETTLE.as_nanos() as u64
    }
}

fn check(words: &[u64; WORDS - 1]) -> u64 {
    let mut bytes = [0u8; 8 * (WORDS - 1)];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let h = blake3::hash(&bytes);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) | 1
}

impl FileHashCache {
    /// Opens (creating if needed) the memo file at `path` with room for `nslots` files.
    pub fn open(path: &Path, nslots: usize) -> io::Result<Self> {
        Self::open_with_attr(path, nslots, no_attr)
    }

    /// [`FileHashCache::open`], remembering `attr(content)` beside each file's hash.
    pub fn open_with_attr(path: &Path, nslots: usize, attr: AttrFn) -> io::Result<Self> {
        let nslots = nslots.max(16);
        let len = nslots * WORDS * 8;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Only ever grow: another process may have the file mapped at its current size.
        if (file.metadata()?.len() as usize) < len {
            file.set_len(len as u64)?;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of a file we hold open, at least `len` bytes long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is page-aligned, `len` bytes, and lives until Drop.
        let slots = unsafe { std::slice::from_raw_parts(ptr as *const AtomicU64, nslots * WORDS) };
        Ok(FileHashCache {
            slots,
            nslots,
            len,
            attr,
            _file: file,
        })
    }

    fn index(&self, s: &Stamp) -> usize {
        let mut x = s.dev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s.ino;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        (x % self.nslots as u64) as usize
    }

    fn load(&self, slot: usize) -> [u64; WORDS] {
        let mut w = [0u64; WORDS];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.slots[slot * WORDS + i].load(Ordering::Relaxed);
        }
        w
    }

    fn lookup(&self, s: &Stamp) -> Option<(Digest, u64)> {
        let first = self.index(s);
        for slot in [first, (first + 1) % self.nslots] {
            let w = self.load(slot);
            let body: [u64; WORDS - 1] = w[..WORDS - 1].try_into().unwrap();
            if w[..5] == [s.dev, s.ino, s.size, s.mtime, s.ctime] && w[WORDS - 1] == check(&body) {
                let mut d = [0u8; 32];
                for i in 0..4 {
                    d[i * 8..i * 8 + 8].copy_from_slice(&w[5 + i].to_le_bytes());
                }
                return Some((Digest(d), w[9]));
            }
        }
        None
    }

    fn remember(&self, s: &Stamp, d: &Digest, attr: u64) {
        if !s.settled() {
            return;
        }
        let first = self.index(s);
        let second = (first + 1) % self.nslots;
        // Prefer a slot that already holds this file (or is empty); else evict the first.
        let w2 = self.load(second);
        let slot = if w2[..2] == [s.dev, s.ino] {
            second
        } else {
            first
        };
        let mut body = [0u64; WORDS - 1];
        body[..5].copy_from_slice(&[s.dev, s.ino, s.size, s.mtime, s.ctime]);
        for i in 0..4 {
            body[5 + i] = u64::from_le_bytes(d.0[i * 8..i * 8 + 8].try_into().unwrap());
        }
        body[9] = attr;
        let base = slot * WORDS;
        // Invalidate first so a reader never pairs the new body with the old checksum.
        self.slots[base + WORDS - 1].store(0, Ordering::Relaxed);
        for (i, v) in body.iter().enumerate() {
            self.slots[base + i].store(*v, Ordering::Relaxed);
        }
        self.slots[base + WORDS - 1].store(check(&body), Ordering::Release);
    }

    /// The BLAKE3 of the file's content, from the memo when its stat data is unchanged.
    pub fn digest(&self, path: &Path) -> io::Result<Digest> {
        self.digest_and_metadata(path).map(|(d, _)| d)
    }

    /// [`FileHashCache::digest`], with the file's metadata from the same `stat` (a caller that
    /// also wants the mode need not stat again).
    pub fn digest_and_metadata(&self, path: &Path) -> io::Result<(Digest, std::fs::Metadata)> {
        self.digest_attr_and_metadata(path)
            .map(|(d, _, md)| (d, md))
    }

    /// [`FileHashCache::digest_and_metadata`] plus the file's attribute word.
    pub fn digest_attr_and_metadata(
        &self,
        path: &Path,
    ) -> io::Result<(Digest, u64, std::fs::Metadata)> {
        let md = std::fs::metadata(path)?;
        let stamp = Stamp::of(&md);
        if let Some((d, a)) = self.lookup(&stamp) {
            return Ok((d, a, md));
        }
        let (d, a, _) = self.read_digest_stamped(path, stamp)?;
        Ok((d, a, md))
    }

    /// Reads the file and returns its hash and bytes, remembering the hash.
    pub fn read(&self, path: &Path) -> io::Result<(Digest, Vec<u8>)> {
        let md = std::fs::metadata(path)?;
        self.read_digest_stamped(path, Stamp::of(&md))
            .map(|(d, _, b)| (d, b))
    }

    fn read_digest_stamped(
        &self,
        path: &Path,
        before: Stamp,
    ) -> io::Result<(Digest, u64, Vec<u8>)> {
        let mut f = File::open(path)?;
        let mut bytes = Vec::with_capacity(before.size as usize);
        f.read_to_end(&mut bytes)?;
        let d = Digest::of(&bytes);
        let a = (self.attr)(&bytes);
        // Remember only if the file did not change while it was read.
        if Stamp::of(&f.metadata()?) == before {
            self.remember(&before, &d, a);
        }
        Ok((d, a, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    #[test]
    fn remembers_settled_files_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileHashCache::open(&dir.path().join("memo"), 64).unwrap();
        let f = dir.path().join("a.h");
        fs::write(&f, b"one").unwrap();
        // Fresh file: hashed correctly, not remembered (ctime is new).
        assert_eq!(c.digest(&f).unwrap(), Digest::of(b"one"));
        let s = Stamp::of(&fs::metadata(&f).unwrap());
        assert!(c.lookup(&s).is_none());
        // Pretend it settled: a stamp with old times is remembered and found.
        let old = Stamp {
            mtime: 1,
            ctime: 1,
            ..s
        };
        c.remember(&old, &Digest::of(b"one"), 0);
        assert_eq!(c.lookup(&old), Some((Digest::of(b"one"), 0)));
        // Changing the content changes size/ctime: the memo is not consulted for the new file.
        age(&f);
        fs::write(&f, b"two!").unwrap();
        assert_eq!(c.digest(&f).unwrap(), Digest::of(b"two!"));
        // A damaged slot is a miss, not a wrong hash.
        let i = c.index(&old);
        let slot = if c.load(i)[..2] == [old.dev, old.ino] {
            i
        } else {
            (i + 1) % c.nslots
        };
        c.slots[slot * WORDS + 6].fetch_xor(1, Ordering::Relaxed);
        assert!(c.lookup(&old).is_none());
    }

    #[test]
    fn remembers_the_attribute_with_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileHashCache::open_with_attr(&dir.path().join("memo"), 64, |b| b.len() as u64)
            .unwrap();
        let f = dir.path().join("a.h");
        fs::write(&f, b"12345").unwrap();
        let (d, a, _) = c.digest_attr_and_metadata(&f).unwrap();
        assert_eq!((d, a), (Digest::of(b"12345"), 5));
        // Once settled, served from the table, attribute included.
        let s = Stamp {
            mtime: 1,
            ctime: 1,
            ..Stamp::of(&fs::metadata(&f).unwrap())
        };
        c.remember(&s, &d, a);
        assert_eq!(c.lookup(&s), Some((Digest::of(b"12345"), 5)));
    }
}
