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
//! two seconds (file timestamps are coarse, so a file written twice within one tick could otherwise
//! keep a stale hash). Slots carry their own checksum, so a torn or damaged slot is a miss.
//!
//! The table never costs a caller its result: its file is created whole under a temporary name
//! and renamed into place, with every block allocated up front (a page of a shared mapping that
//! the file system cannot back when it is first written kills the process with SIGBUS, as on a
//! full disk), and a table that cannot be made so is opened read-only or not at all: hashes
//! are then computed from content every time, which is slower and just as right.
//!
//! Only regular files are hashed: anything else (a pipe, a FIFO, a device, `/dev/stdin`) is
//! refused before it is opened ([`not_regular`]), because reading it would consume or block on
//! what its real reader needs.

use crate::Digest;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files whose mtime or ctime is younger than this are hashed but not remembered.
const SETTLE: Duration = Duration::from_secs(2);

/// Stamp (5 words), digest (4), attribute (1), checksum (1).
const WORDS: usize = 11;

/// A function computing a file's attribute word from its content.
pub type AttrFn = fn(&[u8]) -> u64;

fn no_attr(_: &[u8]) -> u64 {
    0
}

/// The memo: a fixed-size table in a file mapped shared by every process using the store.
/// Dropping it unmaps the table; a short-lived process may `std::mem::forget` it instead and
/// leave that to its exit.
pub struct FileHashCache {
    /// The table's words, inside `_map` (empty when there is no table: every lookup misses).
    /// Only ever accessed through atomics: other processes write the same pages.
    slots: &'static [AtomicU64],
    nslots: usize,
    /// False when the table is mapped read-only (a read-only store): found hashes are used,
    /// new ones are not remembered.
    writable: bool,
    attr: AttrFn,
    /// The mapping `slots` points into (unmapped when this is dropped).
    _map: Option<memmap2::MmapRaw>,
    /// Kept open for as long as the table is mapped.
    _file: Option<File>,
}

/// The error [`FileHashCache`] gives for a path that is not a regular file (see [`not_regular`]).
#[derive(Debug)]
struct NotRegular(std::path::PathBuf);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a regular file", self.0.display())
    }
}

impl std::error::Error for NotRegular {}

/// Whether `e` says the file was not hashed because it is not a regular file (a pipe, FIFO,
/// device or socket): a caller should then leave it to its real reader, unread.
pub fn not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<NotRegular>())
}

fn refuse_unless_regular(md: &std::fs::Metadata, path: &Path) -> io::Result<()> {
    if md.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular(path.to_path_buf()),
    ))
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

    /// [`FileHashCache::open`], remembering `attr(content)` beside each file's hash. Falls back
    /// to a read-only table when the file cannot be written (a read-only store, one shared with
    /// users whose table this user may not write) or its blocks cannot be allocated (a full
    /// disk); errors only when there is no usable table at all (see
    /// [`FileHashCache::without_table`]).
    pub fn open_with_attr(path: &Path, nslots: usize, attr: AttrFn) -> io::Result<Self> {
        let nslots = nslots.max(16);
        let len = nslots * WORDS * 8;
        let (file, writable) = match Self::open_backed(path, len) {
            Ok(file) => (file, true),
            // Not writable here: read-only is enough to use what others remembered.
            Err(rw)
                if matches!(
                    rw.kind(),
                    io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
                ) =>
            {
                (Self::open_whole(path, len, rw)?, false)
            }
            Err(e) => return Err(e),
        };
        // A shared mapping of a file held open, at least `len` bytes long (and, when writable,
        // with every block allocated, so no write can fault for want of space).
        let mut options = memmap2::MmapOptions::new();
        options.len(len);
        let map = if writable {
            options.map_raw(&file)?
        } else {
            options.map_raw_read_only(&file)?
        };
        // SAFETY: the mapping is page-aligned (so aligned for u64) and `len` bytes long, and it
        // lives in `_map` for as long as `slots` is reachable through `self`.
        let slots =
            unsafe { std::slice::from_raw_parts(map.as_ptr() as *const AtomicU64, nslots * WORDS) };
        Ok(FileHashCache {
            slots,
            nslots,
            writable,
            attr,
            _map: Some(map),
            _file: Some(file),
        })
    }

    /// The table file opened read-only, if it is a whole table of `len` bytes: a table that
    /// could not be allocated is not mapped even read-only, because on tmpfs a read of a hole
    /// needs a page too. When it cannot be opened at all, the error is `rw`, why it could not
    /// be opened for writing.
    fn open_whole(path: &Path, len: usize, rw: io::Error) -> io::Result<File> {
        let ro = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|_| rw)?;
        let md = ro.metadata()?;
        if !md.is_file() || md.len() < len as u64 || md.blocks().saturating_mul(512) < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a whole table of this size", path.display()),
            ));
        }
        Ok(ro)
    }

    /// No table: every hash is computed from content (what a caller falls back to when
    /// [`FileHashCache::open_with_attr`] fails).
    pub fn without_table(attr: AttrFn) -> Self {
        FileHashCache {
            slots: &[],
            nslots: 0,
            writable: false,
            attr,
            _map: None,
            _file: None,
        }
    }

    /// The table file opened read-write, at least `len` bytes long with all of them allocated:
    /// an existing one (checked with the `fstat` the open needs anyway), else a new one made
    /// whole under a temporary name and renamed into place, so no process ever maps a table
    /// whose blocks are not all there.
    fn open_backed(path: &Path, len: usize) -> io::Result<File> {
        use std::os::unix::fs::MetadataExt;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => {
                let md = file.metadata()?;
                // A hard link to some other file is not a table to write into.
                if !md.is_file() || md.nlink() != 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a table file", path.display()),
                    ));
                }
                // Grown (never shrunk: another process may have it mapped at its size), and a
                // sparse table (made by an older pik) gets its blocks.
                if md.len() < len as u64 || md.blocks().saturating_mul(512) < len as u64 {
                    allocate(&file, len)?;
                }
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path, len),
            Err(e) => Err(e),
        }
    }

    fn create(path: &Path, len: usize) -> io::Result<File> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = dir.join(name);
        // O_EXCL: never an existing file or a planted link; a leftover of a dead process with
        // this pid is in the way only until it is removed here.
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let made = allocate(&file, len).and_then(|()| std::fs::rename(&tmp, path));
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made.map(|()| file)
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
        if self.nslots == 0 {
            return None;
        }
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
        if !self.writable || !s.settled() {
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

    /// [`FileHashCache::digest_and_metadata`] plus the file's attribute word. A path that is
    /// not a regular file is refused unopened (see [`not_regular`]).
    pub fn digest_attr_and_metadata(
        &self,
        path: &Path,
    ) -> io::Result<(Digest, u64, std::fs::Metadata)> {
        let md = std::fs::metadata(path)?;
        refuse_unless_regular(&md, path)?;
        let stamp = Stamp::of(&md);
        if let Some((d, a)) = self.lookup(&stamp) {
            return Ok((d, a, md));
        }
        let (d, a, _) = self.read_digest_stamped(path, stamp)?;
        Ok((d, a, md))
    }

    /// Reads the file and returns its hash and bytes, remembering the hash. A path that is not
    /// a regular file is refused unopened (see [`not_regular`]).
    pub fn read(&self, path: &Path) -> io::Result<(Digest, Vec<u8>)> {
        let md = std::fs::metadata(path)?;
        refuse_unless_regular(&md, path)?;
        self.read_digest_stamped(path, Stamp::of(&md))
            .map(|(d, _, b)| (d, b))
    }

    fn read_digest_stamped(
        &self,
        path: &Path,
        before: Stamp,
    ) -> io::Result<(Digest, u64, Vec<u8>)> {
        // Non-blocking: should the path have become a FIFO since its `stat`, the open returns at
        // once and the check below refuses it.
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let opened = f.metadata()?;
        refuse_unless_regular(&opened, path)?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(usize::try_from(opened.len()).unwrap_or(usize::MAX))
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file too large to hash"))?;
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

/// Allocates every block of the first `len` bytes of `file` (growing it to `len` if shorter),
/// so writes through a shared mapping never need space the file system may not have.
fn allocate(file: &File, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fallocate on a descriptor we own; mode 0 allocates (and extends the size).
    let r = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    // No fallocate here (some network and older file systems): writing zeros past the current
    // end allocates the blocks too. Only the part beyond the end: bytes before it may be slots
    // another process is using.
    let have = file.metadata()?.len() as usize;
    if have >= len {
        // Already long enough but maybe sparse, and nothing safe to write over: give up the
        // writable table rather than risk a fault.
        return Err(e);
    }
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 64 << 10];
    let mut at = have;
    while at < len {
        let n = (len - at).min(zeros.len());
        file.write_all_at(&zeros[..n], at as u64)?;
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

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

    fn allocated(path: &Path) -> u64 {
        fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn tables_have_every_block_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memo");
        let c = FileHashCache::open(&p, 1000).unwrap();
        assert!(c.writable);
        assert!(
            allocated(&p) >= c.slots.len() as u64 * 8,
            "a sparse table faults on a full disk"
        );
        assert!(!dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-")));
        // A sparse table (as older versions made) gets its blocks when opened.
        let old = dir.path().join("old");
        File::create(&old).unwrap().set_len(64 << 10).unwrap();
        assert_eq!(allocated(&old), 0);
        let c = FileHashCache::open(&old, 1000).unwrap();
        assert!(allocated(&old) >= c.slots.len() as u64 * 8);
    }

    #[test]
    fn a_link_at_the_table_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("memo");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(FileHashCache::open(&p, 64).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A hard link is no table either.
        let hard = dir.path().join("hard");
        fs::hard_link(&victim, &hard).unwrap();
        assert!(FileHashCache::open(&hard, 64).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // Hashing still works without a table.
        let c = FileHashCache::without_table(no_attr);
        assert_eq!(c.digest(&victim).unwrap(), Digest::of(b"precious"));
    }

    #[test]
    fn files_that_are_not_regular_are_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let memo = dir.path().join("memo");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = FileHashCache::open(&memo, 64).unwrap();
            let _ = tx.send((c.digest(&fifo).map(|_| ()), c.read(&fifo).map(|_| ())));
        });
        let (d, r) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("hashing a FIFO blocked");
        for e in [d.unwrap_err(), r.unwrap_err()] {
            assert!(not_regular(&e), "{e}");
        }
        let c = FileHashCache::without_table(no_attr);
        assert!(not_regular(&c.digest(Path::new("/dev/zero")).unwrap_err()));
        assert!(not_regular(&c.digest(dir.path()).unwrap_err()));
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
