//! A content-addressed store: blobs named by the BLAKE3 hash of their bytes, kept zstd-compressed;
//! action entries that map a caller-chosen key to a blob; and keyed entries that carry a small
//! payload inline (one file per lookup, for callers on a hot path such as a compiler wrapper).
//!
//! The store knows nothing of compilers or kernels. Its guarantees:
//! - writes are atomic (a temp file in the same directory, then rename), so concurrent writers of the
//!   same entry are safe and a reader never sees a half-written file;
//! - every read is verified: a blob whose bytes do not hash to its name, or an action entry that fails
//!   its own checksum, is reported as absent and removed, never returned;
//! - reads refresh the file's mtime (to within ten minutes, so a hit rarely writes metadata), and
//!   [`Store::gc`] evicts least recently used files first.

pub mod filehash;
pub mod stats;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const BLOB_MAGIC: &[u8; 8] = b"PIKBLOB1";
const ACTION_MAGIC: &[u8; 8] = b"PIKACT01";
const ENTRY_MAGIC: &[u8; 8] = b"PIKENT01";
/// An entry compressed with a dictionary (named by its digest, kept under `dicts/`).
const ENTRY_DICT_MAGIC: &[u8; 8] = b"PIKENT02";
/// Largest dictionary trained (zstd's own default).
const DICT_MAX: usize = 110 << 10;
/// At most this much sample data is read to train a dictionary (~100 × its size, as zstd advises).
const DICT_SAMPLE_BYTES: usize = 16 << 20;
/// Largest payload an entry may declare; anything bigger is a damaged header.
const ENTRY_MAX: u64 = 1 << 32;
/// zstd level for entries.
const ENTRY_LEVEL: i32 = 7;
/// The store's parts, each a directory of `x/yyyy…` files (see `Store::fanned`).
const KINDS: [&str; 4] = ["blobs", "actions", "entries", "dicts"];

/// A BLAKE3 digest: the name of a blob or the key of an action.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        // One stat on the hit path; writes make their own fan-out directories.
        if !root.join(KINDS[KINDS.len() - 1]).is_dir() {
            for k in KINDS {
                fs::create_dir_all(root.join(k))?;
            }
        }
        Ok(Store { root })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<kind>/<first hex digit>/<the rest>`: 16 directories per kind, not 256, because a
    /// directory takes a 4 KiB block of its own and a kernel build stores ~1,100 small entries
    /// (256 directories were 1 MiB of the 7 MiB).
    fn fanned(&self, kind: &str, hex: &str) -> PathBuf {
        self.root.join(kind).join(&hex[..1]).join(&hex[1..])
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.fanned("blobs", &hex)
    }

    fn action_path(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.fanned("actions", &hex)
    }

    fn entry_path(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.fanned("entries", &hex)
    }

    /// The counters kept with this store.
    pub fn stats(&self) -> stats::Stats {
        stats::Stats::new(&self.root)
    }

    /// Stores `payload` under `key` (replacing any previous entry); returns the bytes written.
    /// Compressed with the store's dictionary once it has one (see [`Store::train_dictionary`]).
    pub fn put_entry(&self, key: &Digest, payload: &[u8]) -> io::Result<u64> {
        let dict = self.dictionary();
        let body = encode_entry(payload, dict.as_ref())?;
        store_write(&self.entry_path(key), &body)?;
        Ok(body.len() as u64)
    }

    /// The dictionary new entries are compressed with, if the store has one (and it is intact).
    fn dictionary(&self) -> Option<(Digest, Vec<u8>)> {
        let hex = fs::read_to_string(self.root.join("dictionary")).ok()?;
        let d = Digest::from_hex(hex.trim())?;
        let bytes = self.dictionary_bytes(&d)?;
        (Digest::of(&bytes) == d).then(|| (d, bytes.to_vec()))
    }

    /// Dictionary `d` as stored, for reading entries compressed with it: kept uncompressed and
    /// not hashed here, because this runs on every hit and an entry's own checksum already
    /// rejects what a wrong dictionary would decompress to.
    fn dictionary_bytes(&self, d: &Digest) -> Option<Mapped> {
        let path = self.fanned("dicts", &d.to_hex());
        let f = fs::File::open(&path).ok()?;
        let md = f.metadata().ok()?;
        mark_use(&path, &md);
        // Mapped, not read: ~110 KiB copied into fresh memory on every hit cost more than the
        // rest of the entry's decoding.
        Mapped::of(&f, md.len() as usize).ok()
    }

    /// Entries are small and alike (many share most of their bytes), so each compresses far
    /// better with a dictionary. When the store has none yet and holds at least `min_entries`
    /// entries, trains one on them (zstd's trainer), makes it the one new entries use, and
    /// recompresses the existing entries with it (each keeps its mtime, so LRU order holds).
    /// Returns the entries' apparent size before and after, or `None` when nothing was done.
    /// The dictionary is a store file like the others (evicted by LRU, checked by `verify`):
    /// entries name it by digest, and losing it only turns them into misses.
    pub fn train_dictionary(&self, min_entries: usize) -> io::Result<Option<(u64, u64)>> {
        // A dictionary named but gone (evicted, damaged) is made again.
        if self.dictionary().is_some() {
            return Ok(None);
        }
        let marker = self.root.join("dictionary");
        let mut entries: Vec<FileInfo> = self
            .files()
            .into_iter()
            .filter(|f| f.kind == "entries" && !f.tmp)
            .collect();
        if entries.len() < min_entries {
            return Ok(None);
        }
        // Newest first: they are the most like what comes next.
        entries.sort_by_key(|f| std::cmp::Reverse(f.mtime));
        let mut read: Vec<(&FileInfo, Vec<u8>)> = Vec::new();
        for f in &entries {
            let payload = fs::read(&f.path)
                .ok()
                .and_then(|raw| decode_entry(&raw, |d| self.dictionary_bytes(d)));
            if let Some(p) = payload {
                read.push((f, p));
            }
        }
        let mut budget = DICT_SAMPLE_BYTES;
        let samples: Vec<&[u8]> = read
            .iter()
            .map(|(_, p)| p.as_slice())
            .take_while(|p| {
                let fits = p.len() <= budget;
                budget = budget.saturating_sub(p.len());
                fits
            })
            .collect();
        let dict = zstd::dict::from_samples(&samples, DICT_MAX)?;
        let d = Digest::of(&dict);
        store_write(&self.fanned("dicts", &d.to_hex()), &dict)?;
        store_write(&marker, d.to_hex().as_bytes())?;
        let with = (d, dict);
        let (mut before, mut after) = (0, 0);
        for (f, payload) in &read {
            let body = encode_entry(payload, Some(&with))?;
            before += f.bytes;
            if body.len() as u64 >= f.bytes {
                after += f.bytes;
                continue;
            }
            after += body.len() as u64;
            store_write(&f.path, &body)?;
            set_mtime(&f.path, f.mtime);
        }
        Ok(Some((before, after)))
    }

    /// The payload stored under `key`, if present and intact (a damaged entry is removed).
    pub fn get_entry(&self, key: &Digest) -> io::Result<Option<Vec<u8>>> {
        let path = self.entry_path(key);
        let raw = match read_marking_use(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match decode_entry(&raw, |d| self.dictionary_bytes(d)) {
            Some(p) => Ok(Some(p)),
            None => {
                let _ = fs::remove_file(&path);
                Ok(None)
            }
        }
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
        store_write(&path, &body)?;
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
        } else {
            touch(&path);
        }
        Ok(decoded)
    }

    /// Records that `key` maps to the blob `value`.
    pub fn put_action(&self, key: &Digest, value: &Digest) -> io::Result<()> {
        let mut body = Vec::with_capacity(8 + 32 + 32);
        body.extend_from_slice(ACTION_MAGIC);
        body.extend_from_slice(&value.0);
        body.extend_from_slice(&Digest::of(&body).0);
        store_write(&self.action_path(key), &body)
    }

    /// The blob `key` maps to, if the entry is present and intact (a damaged entry is removed).
    pub fn get_action(&self, key: &Digest) -> io::Result<Option<Digest>> {
        let path = self.action_path(key);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !decode_action(&raw) {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        let mut v = [0u8; 32];
        v.copy_from_slice(&raw[8..40]);
        Ok(Some(Digest(v)))
    }
}

/// An entry's stored form: magic, payload checksum and length, the dictionary's digest when one
/// is used, then the zstd frame.
fn encode_entry(payload: &[u8], dict: Option<&(Digest, Vec<u8>)>) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(payload.len() / 3 + 80);
    body.extend_from_slice(if dict.is_some() {
        ENTRY_DICT_MAGIC
    } else {
        ENTRY_MAGIC
    });
    body.extend_from_slice(&Digest::of(payload).0);
    body.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    // Level 7: ~7 % smaller than 3 on an object plus its depfile for ~1 ms more per write
    // (measured with `zstd -b3 -e15` on kernel/fork.o + its depfile); reads are as fast.
    match dict {
        None => body.extend_from_slice(&zstd::bulk::compress(payload, ENTRY_LEVEL)?),
        Some((d, bytes)) => {
            body.extend_from_slice(&d.0);
            let mut c = zstd::bulk::Compressor::with_dictionary(ENTRY_LEVEL, bytes)?;
            body.extend_from_slice(&c.compress(payload)?);
        }
    }
    Ok(body)
}

/// The payload of an entry's stored form, if intact; `dict` finds a dictionary by digest.
fn decode_entry<D: AsRef<[u8]>>(
    raw: &[u8],
    dict: impl Fn(&Digest) -> Option<D>,
) -> Option<Vec<u8>> {
    let (rest, with_dict) = match raw.strip_prefix(ENTRY_MAGIC) {
        Some(rest) => (rest, false),
        None => (raw.strip_prefix(ENTRY_DICT_MAGIC)?, true),
    };
    let head = if with_dict { 72 } else { 40 };
    if rest.len() < head {
        return None;
    }
    let sum = &rest[..32];
    let len = u64::from_le_bytes(rest[32..40].try_into().ok()?);
    if len > ENTRY_MAX {
        return None;
    }
    let payload = if with_dict {
        let bytes = dict(&Digest(rest[40..72].try_into().ok()?))?;
        // Used once per process: referenced as it is, not copied into a prepared dictionary.
        let mut out = Vec::with_capacity(len as usize);
        zstd::zstd_safe::DCtx::create()
            .decompress_using_dict(&mut out, &rest[72..], bytes.as_ref())
            .ok()?;
        out
    } else {
        zstd::bulk::decompress(&rest[40..], len as usize).ok()?
    };
    (payload.len() as u64 == len && Digest::of(&payload).0[..] == *sum).then_some(payload)
}

/// Sets a file's mtime (best effort).
fn set_mtime(path: &Path, t: std::time::SystemTime) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) else {
        return;
    };
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    let times = [ts, ts];
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path and two timespecs (atime, mtime).
        unsafe {
            libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0);
        }
    }
}

fn decode_blob(raw: &[u8], name: &Digest) -> bool {
    raw.strip_prefix(BLOB_MAGIC)
        .and_then(|z| zstd::stream::decode_all(z).ok())
        .is_some_and(|bytes| Digest::of(&bytes) == *name)
}

fn decode_action(raw: &[u8]) -> bool {
    raw.len() == 72 && raw.starts_with(ACTION_MAGIC) && Digest::of(&raw[..40]).0[..] == raw[40..]
}

/// How stale a file's mtime may get before a read refreshes it: LRU eviction needs the order of
/// use only to this precision, and not writing metadata on every hit saves a journal update.
const USE_MARK_PRECISION: std::time::Duration = std::time::Duration::from_secs(600);

/// Reads a store file whole and marks it used (its mtime) if the mark is older than
/// [`USE_MARK_PRECISION`].
fn read_marking_use(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = fs::File::open(path)?;
    let md = f.metadata()?;
    let mut bytes = Vec::with_capacity(md.len() as usize);
    // Bounded by the size just read, so one `read` does it (no second stat, no probe at EOF):
    // store files are replaced by rename, never grown in place.
    f.take(md.len()).read_to_end(&mut bytes)?;
    mark_use(path, &md);
    Ok(bytes)
}

/// Refreshes the mtime of `path` (whose metadata is `md`) if it is older than
/// [`USE_MARK_PRECISION`].
fn mark_use(path: &Path, md: &fs::Metadata) {
    let stale = md
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_none_or(|age| age > USE_MARK_PRECISION);
    if stale {
        touch(path);
    }
}

/// A read-only mapping of a whole store file. The store only ever replaces its files by rename,
/// never truncates one in place, so the mapped inode keeps its length while it is mapped (a file
/// truncated by hand during a hit would stop that process with SIGBUS, as for the file-hash table).
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn of(f: &fs::File, len: usize) -> io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"));
        }
        // SAFETY: a private read-only mapping of `len` bytes of an open file; populated at
        // once (the pages are in the page cache: one call instead of a fault per page).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `of` mapped.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Marks a file as just used, for LRU eviction (best effort).
fn touch(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; a null `times` means "now".
        unsafe {
            libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0);
        }
    }
}

/// What [`Store::usage`], [`Store::gc`] and [`Store::verify`] report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files in the store.
    pub files: u64,
    /// Their apparent size in bytes.
    pub bytes: u64,
    /// Disk space they take (allocated blocks).
    pub disk_bytes: u64,
}

/// The result of a garbage collection or a verification pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The store before.
    pub before: Usage,
    /// The store after.
    pub after: Usage,
    /// Files removed (evicted, damaged, or stale temporaries).
    pub removed: u64,
}

struct FileInfo {
    path: PathBuf,
    kind: &'static str,
    name: String,
    /// A writer's temporary file (`.tmp-…`), not yet renamed into place.
    tmp: bool,
    bytes: u64,
    disk: u64,
    mtime: std::time::SystemTime,
}

impl Store {
    fn files(&self) -> Vec<FileInfo> {
        use std::os::unix::fs::MetadataExt;
        let mut v = Vec::new();
        for kind in KINDS {
            let Ok(dirs) = fs::read_dir(self.root.join(kind)) else {
                continue;
            };
            for d in dirs.flatten() {
                let prefix = d.file_name().to_string_lossy().to_string();
                let Ok(files) = fs::read_dir(d.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let Ok(md) = f.metadata() else { continue };
                    v.push(FileInfo {
                        path: f.path(),
                        kind,
                        name: format!("{prefix}{}", f.file_name().to_string_lossy()),
                        tmp: f.file_name().as_encoded_bytes().starts_with(b".tmp-"),
                        bytes: md.len(),
                        disk: md.blocks() * 512,
                        mtime: md.modified().unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
        }
        v
    }

    /// How many files and bytes the store holds.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for f in self.files() {
            u.files += 1;
            u.bytes += f.bytes;
            u.disk_bytes += f.disk;
        }
        u
    }

    /// Evicts least recently used files until the store takes at most 90 % of `max_disk_bytes`
    /// (only when it takes more than `max_disk_bytes`), and removes temporaries left by writers
    /// that died more than an hour ago. Also compacts the counters.
    pub fn gc(&self, max_disk_bytes: u64) -> io::Result<Sweep> {
        let mut files = self.files();
        let mut sweep = Sweep::default();
        for f in &files {
            sweep.before.files += 1;
            sweep.before.bytes += f.bytes;
            sweep.before.disk_bytes += f.disk;
        }
        sweep.after = sweep.before;
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let drop_file = |f: &FileInfo, sweep: &mut Sweep| {
            if fs::remove_file(&f.path).is_ok() {
                sweep.removed += 1;
                sweep.after.files -= 1;
                sweep.after.bytes -= f.bytes;
                sweep.after.disk_bytes -= f.disk;
            }
        };
        files.retain(|f| {
            let stale_tmp = f.tmp && f.mtime < hour_ago;
            if stale_tmp {
                drop_file(f, &mut sweep);
            }
            !stale_tmp
        });
        if sweep.after.disk_bytes > max_disk_bytes {
            let goal = max_disk_bytes / 10 * 9;
            files.sort_by_key(|f| f.mtime);
            for f in &files {
                if sweep.after.disk_bytes <= goal {
                    break;
                }
                drop_file(f, &mut sweep);
            }
        }
        self.stats().compact()?;
        Ok(sweep)
    }

    /// Reads every file in the store and removes each one that fails its check.
    pub fn verify(&self) -> io::Result<Sweep> {
        let files = self.files();
        let mut sweep = Sweep::default();
        for f in &files {
            sweep.before.files += 1;
            sweep.before.bytes += f.bytes;
            sweep.before.disk_bytes += f.disk;
            let Ok(raw) = fs::read(&f.path) else { continue };
            let ok = match f.kind {
                "blobs" => Digest::from_hex(&f.name).is_some_and(|d| decode_blob(&raw, &d)),
                "actions" => decode_action(&raw),
                "dicts" => Digest::from_hex(&f.name).is_some_and(|d| Digest::of(&raw) == d),
                _ => decode_entry(&raw, |d| self.dictionary_bytes(d)).is_some(),
            };
            if ok {
                sweep.after.files += 1;
                sweep.after.bytes += f.bytes;
                sweep.after.disk_bytes += f.disk;
            } else if !f.tmp && fs::remove_file(&f.path).is_ok() {
                sweep.removed += 1;
            }
        }
        Ok(sweep)
    }

    /// Removes every blob, action and entry, and resets the counters.
    pub fn clear(&self) -> io::Result<Usage> {
        let before = self.usage();
        for k in KINDS {
            let dir = self.root.join(k);
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            fs::create_dir_all(&dir)?;
        }
        match fs::remove_file(self.root.join("dictionary")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.stats().reset()?;
        Ok(before)
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, so readers
/// see either the old content or the new, never a mix; the data reaches the disk before the
/// rename, so it survives a crash too.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, true)
}

/// [`atomic_write`] without the flush to disk, for the store's own files: each carries its
/// checksum and is verified on every read, so one torn by a crash is a miss, never a wrong
/// answer, and a miss costs less than a disk flush on every compile (~4 ms here).
pub(crate) fn store_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if durable {
        tmp.as_file().sync_data()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_shrinks_entries_and_losing_it_only_loses_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Alike payloads, as a compiler cache's are (shared header paths, ELF layout).
        let payload = |i: u32| {
            let mut p = Vec::new();
            for h in 0..300 {
                let name = &Digest::of(&[h as u8, (h >> 8) as u8]).to_hex()[..24];
                p.extend_from_slice(format!("/src/include/linux/{name}.h \\\n").as_bytes());
            }
            p.extend_from_slice(format!("object {i} {}", i * 7919).as_bytes());
            p
        };
        let keys: Vec<Digest> = (0..64u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put_entry(k, &payload(i as u32)).unwrap();
        }
        assert_eq!(s.train_dictionary(100).unwrap(), None, "too few entries");
        let (before, after) = s.train_dictionary(10).unwrap().unwrap();
        assert!(after * 3 < before, "{before} -> {after}");
        assert_eq!(s.train_dictionary(10).unwrap(), None, "already has one");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.get_entry(k).unwrap().unwrap(), payload(i as u32));
        }
        // New entries use it too.
        let fresh = Digest::of(b"fresh");
        let n = s.put_entry(&fresh, &payload(99)).unwrap();
        let plain = encode_entry(&payload(99), None).unwrap().len() as u64;
        assert!(
            n * 3 < plain,
            "{n} bytes with the dictionary, {plain} without"
        );
        assert_eq!(s.get_entry(&fresh).unwrap().unwrap(), payload(99));
        assert!(s.verify().unwrap().removed == 0);
        // The dictionary damaged: every entry that needs it is a miss (and removed), never wrong.
        let (d, _) = s.dictionary().unwrap();
        let p = s.fanned("dicts", &d.to_hex());
        let mut raw = fs::read(&p).unwrap();
        let at = raw.len() / 2;
        raw[at] ^= 0x55;
        fs::write(&p, &raw).unwrap();
        assert!(s.get_entry(&keys[0]).unwrap().is_none());
        assert!(s.get_entry(&fresh).unwrap().is_none());
        // ...and a new one is trained on what is left.
        assert!(s.dictionary().is_none());
    }

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
    fn entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"k");
        let payload: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        s.put_entry(&key, &payload).unwrap();
        assert_eq!(s.get_entry(&key).unwrap().unwrap(), payload);
        let p = s.entry_path(&key);
        let raw = fs::read(&p).unwrap();
        for at in [3, 20, 45, raw.len() / 2, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[at] ^= 0x10;
            fs::write(&p, &bad).unwrap();
            assert_eq!(s.get_entry(&key).unwrap(), None, "flip at {at}");
            assert!(!p.exists());
        }
        fs::write(&p, &raw[..raw.len() - 7]).unwrap();
        assert_eq!(s.get_entry(&key).unwrap(), None);
    }

    #[test]
    fn gc_evicts_least_recently_used_and_verify_removes_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let noise = |seed: u8| -> Vec<u8> {
            let mut v = Vec::new();
            let mut x = seed as u64 + 1;
            for _ in 0..20_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push((x >> 33) as u8);
            }
            v
        };
        let keys: Vec<Digest> = (0..6u8).map(|i| Digest::of(&[i])).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put_entry(k, &noise(i as u8)).unwrap();
            let old =
                std::time::SystemTime::now() - std::time::Duration::from_secs(3600 - i as u64);
            fs::File::options()
                .write(true)
                .open(s.entry_path(k))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // Using the oldest makes it the newest.
        assert!(s.get_entry(&keys[0]).unwrap().is_some());
        let u = s.usage();
        assert_eq!(u.files, 6);
        let sweep = s.gc(u.disk_bytes / 2).unwrap();
        assert!(sweep.after.disk_bytes <= u.disk_bytes / 2);
        assert!(sweep.removed >= 3);
        assert!(
            s.get_entry(&keys[0]).unwrap().is_some(),
            "recently used survives"
        );
        assert!(
            s.get_entry(&keys[1]).unwrap().is_none(),
            "least recently used goes first"
        );
        // Verify finds and removes a damaged file.
        let p = s.entry_path(&keys[5]);
        let mut raw = fs::read(&p).unwrap();
        raw[60] ^= 1;
        fs::write(&p, &raw).unwrap();
        let v = s.verify().unwrap();
        assert_eq!(v.removed, 1);
        assert!(!p.exists());
        s.clear().unwrap();
        assert_eq!(s.usage().files, 0);
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
