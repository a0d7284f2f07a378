//! A keyed store: entries that map a caller-chosen BLAKE3 key to a payload, kept
//! zstd-compressed (with a dictionary trained on them once there are enough) and checksummed, one
//! file per lookup, for callers on a hot path such as a compiler wrapper.
//!
//! The store knows nothing of compilers or kernels. Its guarantees:
//! - writes are atomic (a temp file in the same directory, then rename), so concurrent writers of the
//!   same entry are safe and a reader never sees a half-written file;
//! - every read is verified: an entry that fails its own checksum (or needs a dictionary that is
//!   gone or damaged) is reported as absent and removed, never returned;
//! - reads refresh the file's mtime (to within ten minutes, so a hit rarely writes metadata), and
//!   [`Store::gc`] evicts least recently used files first;
//! - a store file is never opened through a symbolic link, and never created in place: a writer
//!   makes a new file under a temporary name (`O_CREAT|O_EXCL`, which refuses symlinks) and renames
//!   it over the old one, so a link planted in a directory others can write redirects nothing;
//! - every length read from a file is bounded by the file's size before anything is allocated
//!   for it, so a damaged header costs a miss, not gigabytes;
//! - a directory whose owner is neither the current user nor root, or that its group or other
//!   users may write, is refused unless the caller says it is shared ([`Sharing::Shared`]):
//!   whoever can write a store can plant answers in it.

pub mod filehash;
pub mod stats;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const ENTRY_MAGIC: &[u8; 8] = b"PIKENT01";
/// An entry compressed with a dictionary (named by its digest, kept under `dicts/`).
const ENTRY_DICT_MAGIC: &[u8; 8] = b"PIKENT02";
/// Largest dictionary trained (zstd's own default).
const DICT_MAX: usize = 110 << 10;
/// At most this much sample data is read to train a dictionary (~100 × its size, as zstd advises).
const DICT_SAMPLE_BYTES: usize = 16 << 20;
/// Largest payload an entry may declare; anything bigger is a damaged header.
const ENTRY_MAX: u64 = 1 << 32;
/// The most a zstd frame can expand: a block decodes to at most 128 KiB and takes at least 4
/// bytes (an RLE block), so a payload declared larger than this times its frame is damage.
const ZSTD_MAX_RATIO: u64 = 32 << 10;
/// Longest `dictionary` marker read (a digest in hex and a newline).
const MARKER_MAX: u64 = 128;
/// zstd level for entries.
const ENTRY_LEVEL: i32 = 7;
/// The store's parts, each a directory of `x/yyyy…` files (see `Store::fanned`).
const KINDS: [&str; 2] = ["entries", "dicts"];

/// A BLAKE3 digest: the key of an entry, or the name of a dictionary.
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

/// Who besides its owner may write a store's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Only the current user or root: a directory its group or others can write, or that
    /// another user owns, is refused ([`Untrusted`]).
    Private,
    /// Shared on purpose (a team cache on one host): every user who can write it is trusted,
    /// because each can plant entries every other one is served.
    Shared,
}

/// Why a store directory was refused: [`Store::open_with`] returns it inside an
/// [`io::Error`] of kind `PermissionDenied` (see [`untrusted`]).
#[derive(Debug, Clone)]
pub struct Untrusted {
    /// The store's directory.
    dir: PathBuf,
    /// What is wrong with it, e.g. "owned by uid 1001 (not you or root)".
    why: String,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.dir.display(), self.why)
    }
}

impl std::error::Error for Untrusted {}

/// The [`Untrusted`] refusal inside `e`, if that is what `e` is.
pub fn untrusted(e: &io::Error) -> Option<&Untrusted> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Untrusted>())
}

/// Refuses a directory (`md`, from a `stat` that followed links: the path is the user's own
/// setting) that someone other than this user or root may write, unless it is shared.
fn check_trust(dir: &Path, md: &fs::Metadata, sharing: Sharing) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    if sharing == Sharing::Shared {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if md.uid() != me && md.uid() != 0 {
        format!("owned by uid {} (not you, uid {me}, nor root)", md.uid())
    } else if md.mode() & 0o022 != 0 {
        let who = if md.mode() & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        format!("writable by {who} (mode {:o})", md.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        Untrusted {
            dir: dir.to_path_buf(),
            why,
        },
    ))
}

/// Checks, without creating anything, that the existing directory `root` would be opened as a
/// store under `sharing` (one `stat`).
pub fn check_dir(root: &Path, sharing: Sharing) -> io::Result<()> {
    check_trust(root, &fs::metadata(root)?, sharing)
}

/// A store rooted at one directory on local disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, refusing a directory that users not
    /// trusted under `sharing` can write. Costs one `stat` when the store exists (this runs on
    /// every compile); the directories below the root are made by the writes that need them.
    pub fn open_with(root: impl Into<PathBuf>, sharing: Sharing) -> io::Result<Self> {
        let root = root.into();
        let md = match fs::metadata(&root) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // At most 0755 (a umask only takes bits away): a new store passes its own check
                // whatever the umask.
                use std::os::unix::fs::DirBuilderExt;
                let mut b = fs::DirBuilder::new();
                b.recursive(true).mode(0o755);
                for k in KINDS {
                    b.create(root.join(k))?;
                }
                fs::metadata(&root)?
            }
            Err(e) => return Err(e),
        };
        check_trust(&root, &md, sharing)?;
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
        let (f, _) = open_regular(&self.root.join("dictionary")).ok()?;
        let mut hex = String::new();
        io::Read::read_to_string(&mut io::Read::take(f, MARKER_MAX), &mut hex).ok()?;
        let d = Digest::from_hex(hex.trim())?;
        let bytes = self.dictionary_bytes(&d)?;
        (Digest::of(&bytes) == d).then(|| (d, bytes.to_vec()))
    }

    /// Dictionary `d` as stored, for reading entries compressed with it: kept uncompressed and
    /// not hashed here, because this runs on every hit and an entry's own checksum already
    /// rejects what a wrong dictionary would decompress to.
    fn dictionary_bytes(&self, d: &Digest) -> Option<memmap2::Mmap> {
        let path = self.fanned("dicts", &d.to_hex());
        let (f, md) = open_regular(&path).ok()?;
        mark_use(&path, &md);
        // Mapped, not read: ~110 KiB copied into fresh memory on every hit cost more than the
        // rest of the entry's decoding.
        map_whole(&f, md.len())
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
            let payload = read_file(&f.path)
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
            Err(e) if not_a_store_file(&e) => {
                let _ = remove_any(&path);
                return Ok(None);
            }
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
        decompress_bounded(&rest[72..], len, Some(bytes.as_ref()))?
    } else {
        decompress_bounded(&rest[40..], len, None)?
    };
    (payload.len() as u64 == len && Digest::of(&payload).0[..] == *sum).then_some(payload)
}

/// Decompresses the single zstd frame `frame` that should hold `len` bytes, allocating only
/// once `len` is known to be sane: it must be what the frame's own header declares (our writers
/// always declare it, so one damaged length field cannot agree with the other) and no more than
/// the frame could expand to. The allocation is fallible, so even a sane-looking size the
/// memory limit does not allow is a miss rather than an abort.
fn decompress_bounded(frame: &[u8], len: u64, dict: Option<&[u8]>) -> Option<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame).ok()??;
    if declared != len || len > (frame.len() as u64).saturating_mul(ZSTD_MAX_RATIO) {
        return None;
    }
    let mut out = Vec::new();
    out.try_reserve_exact(usize::try_from(len).ok()?).ok()?;
    let mut dctx = zstd::zstd_safe::DCtx::create();
    match dict {
        Some(d) => dctx.decompress_using_dict(&mut out, frame, d).ok()?,
        None => dctx.decompress(&mut out, frame).ok()?,
    };
    Some(out)
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
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
}

/// How stale a file's mtime may get before a read refreshes it: LRU eviction needs the order of
/// use only to this precision, and not writing metadata on every hit saves a journal update.
const USE_MARK_PRECISION: std::time::Duration = std::time::Duration::from_secs(600);

/// Reads a store file whole and marks it used (its mtime) if the mark is older than
/// [`USE_MARK_PRECISION`].
fn read_marking_use(path: &Path) -> io::Result<Vec<u8>> {
    let (f, md) = open_regular(path)?;
    let bytes = read_sized(f, &md)?;
    mark_use(path, &md);
    Ok(bytes)
}

/// Opens a store file for reading: never through a symbolic link (`O_NOFOLLOW`: a link planted
/// in a shared directory must not make pik read, or later replace, what it points to), never
/// blocking (`O_NONBLOCK`: a FIFO planted there must not hang a compile), and only if it is a
/// regular file. Returns it with its metadata (the `fstat` a caller needs anyway).
fn open_regular(path: &Path) -> io::Result<(fs::File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok((f, md))
}

/// Reads the whole of `f` (whose metadata is `md`) in one `read`, allocating no more than its
/// size (fallibly: the size comes from disk too).
fn read_sized(f: fs::File, md: &fs::Metadata) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    usize::try_from(md.len())
        .ok()
        .and_then(|n| bytes.try_reserve_exact(n).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "store file too large"))?;
    // Bounded by the size just read, so one `read` does it (no second stat, no probe at EOF):
    // store files are replaced by rename, never grown in place.
    f.take(md.len()).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A store file's bytes: never read through a symbolic link nor from a FIFO or anything else
/// that is not a regular file (an error instead), and never more than its size.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let (f, md) = open_regular(path)?;
    read_sized(f, &md)
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

/// A read-only mapping of the whole store file `f` (`len` bytes), its pages read in at once
/// (they are in the page cache: one call instead of a fault per page). The store only ever
/// replaces its files by rename, never truncates one in place, so the mapped inode keeps its
/// length while it is mapped (a file truncated by hand during a hit would stop that process with
/// SIGBUS, as for the file-hash table).
fn map_whole(f: &fs::File, len: u64) -> Option<memmap2::Mmap> {
    let len = usize::try_from(len).ok().filter(|&n| n > 0)?;
    // SAFETY: a private read-only mapping of an open store file, which is never written in place
    // (see above).
    unsafe {
        memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_copy_read_only(f)
    }
    .ok()
}

/// Marks a file as just used, for LRU eviction (best effort).
fn touch(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; a null `times` means "now". A planted link's
        // target keeps its times.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                std::ptr::null(),
                libc::AT_SYMLINK_NOFOLLOW,
            );
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The store before.
    pub before: Usage,
    /// The store after.
    pub after: Usage,
    /// Files removed (evicted, damaged, or stale temporaries).
    pub removed: u64,
    /// Files [`Store::verify`] could not read, or found damaged and could not remove: the
    /// store still holds them, so the pass did not leave it clean.
    pub failed: Vec<PathBuf>,
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

    /// Reads every file in the store and removes each one that fails its check (a link or
    /// anything else that is not a regular file fails it too). Files it could neither read nor
    /// remove are listed in [`Sweep::failed`].
    pub fn verify(&self) -> io::Result<Sweep> {
        let files = self.files();
        let mut sweep = Sweep::default();
        for f in &files {
            sweep.before.files += 1;
            sweep.before.bytes += f.bytes;
            sweep.before.disk_bytes += f.disk;
            let ok = match open_regular(&f.path) {
                Ok((file, md)) => match read_sized(file, &md) {
                    Ok(raw) => match f.kind {
                        "dicts" => Digest::from_hex(&f.name).is_some_and(|d| Digest::of(&raw) == d),
                        _ => decode_entry(&raw, |d| self.dictionary_bytes(d)).is_some(),
                    },
                    Err(_) => {
                        // A regular file that cannot be read: nothing says it is damaged.
                        sweep.failed.push(f.path.clone());
                        continue;
                    }
                },
                // A link, a FIFO, a directory where a file belongs: not the store's.
                Err(e) if not_a_store_file(&e) => false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    sweep.failed.push(f.path.clone());
                    continue;
                }
            };
            if ok {
                sweep.after.files += 1;
                sweep.after.bytes += f.bytes;
                sweep.after.disk_bytes += f.disk;
            } else if f.tmp {
                // A writer's file in progress: gc removes it once it is stale.
            } else if remove_any(&f.path).is_ok() {
                sweep.removed += 1;
            } else {
                sweep.failed.push(f.path.clone());
            }
        }
        Ok(sweep)
    }

    /// Removes every entry and dictionary, and resets the counters.
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

/// Whether `e` says [`open_regular`] found a link, FIFO, directory or the like where a store
/// file belongs: not the store's, so a miss (and removed, like a damaged file).
fn not_a_store_file(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData || is_loop(e)
}

/// Whether `e` is `ELOOP`: what opening a symbolic link with `O_NOFOLLOW` fails with.
fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Removes a file, link or directory tree that sits where a store file belongs.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
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

/// The temp file is created with `O_CREAT|O_EXCL` (tempfile's `create_new`), which fails on any
/// existing name, a symbolic link included; `rename` then replaces whatever is at `path` (a
/// planted link too) without following it.
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

    fn open(root: impl Into<PathBuf>) -> io::Result<Store> {
        Store::open_with(root, Sharing::Private)
    }

    #[test]
    fn dictionary_shrinks_entries_and_losing_it_only_loses_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
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
    fn entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
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
        let s = open(dir.path()).unwrap();
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
    fn stores_others_can_write_are_refused_unless_shared() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A new store is made private whatever the umask leaves.
        let fresh = dir.path().join("new/objects");
        open(&fresh).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o022,
            0
        );
        let root = dir.path().join("s");
        fs::create_dir(&root).unwrap();
        for (mode, who) in [
            (0o777, "every user"),
            (0o1777, "every user"),
            (0o775, "its group"),
        ] {
            fs::set_permissions(&root, fs::Permissions::from_mode(mode)).unwrap();
            let e = open(&root).unwrap_err();
            let u = untrusted(&e).unwrap_or_else(|| panic!("{mode:o}: {e}"));
            assert!(u.why.contains(who), "{mode:o}: {u}");
            assert!(check_dir(&root, Sharing::Private).is_err());
            Store::open_with(&root, Sharing::Shared).unwrap();
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        open(&root).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&root, Some(4242), None).unwrap();
            let e = open(&root).unwrap_err();
            assert!(untrusted(&e).unwrap().why.contains("uid 4242"), "{e}");
            Store::open_with(&root, Sharing::Shared).unwrap();
        }
    }

    #[test]
    fn damaged_lengths_are_refused_before_anything_is_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        let key = Digest::of(b"k");
        let payload = vec![42u8; 100_000];
        s.put_entry(&key, &payload).unwrap();
        let p = s.entry_path(&key);
        let raw = fs::read(&p).unwrap();
        for len in [3u64 << 30, ENTRY_MAX, payload.len() as u64 + 1, 1] {
            let mut bad = raw.clone();
            bad[40..48].copy_from_slice(&len.to_le_bytes());
            fs::write(&p, &bad).unwrap();
            assert_eq!(s.get_entry(&key).unwrap(), None, "length {len}");
            assert!(!p.exists());
        }
        // The frame's own size must agree, and fit what the frame can hold.
        let frame = zstd::bulk::compress(&payload, 3).unwrap();
        assert_eq!(
            decompress_bounded(&frame, payload.len() as u64, None).unwrap(),
            payload
        );
        assert!(decompress_bounded(&frame, payload.len() as u64 - 1, None).is_none());
        let mut lying = frame.clone();
        // A frame header declaring far more than the frame could expand to.
        let tiny = zstd::bulk::compress(b"x", 3).unwrap();
        assert!(decompress_bounded(&tiny, 1 << 40, None).is_none());
        lying.truncate(lying.len() / 2);
        assert!(decompress_bounded(&lying, payload.len() as u64, None).is_none());
    }

    /// Runs `f` on its own thread; panics if it takes longer than `secs` (a blocked open).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("blocked")
    }

    #[test]
    fn links_and_fifos_in_the_store_are_neither_followed_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path().join("store")).unwrap();
        // A valid entry elsewhere, linked in under another key: not served, not touched.
        let elsewhere = open(dir.path().join("other")).unwrap();
        let key = Digest::of(b"k");
        elsewhere.put_entry(&key, b"planted").unwrap();
        let target = elsewhere.entry_path(&key);
        set_mtime(&target, std::time::UNIX_EPOCH);
        let p = s.entry_path(&key);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert_eq!(s.get_entry(&key).unwrap(), None);
        assert_eq!(
            fs::metadata(&target).unwrap().modified().unwrap(),
            std::time::UNIX_EPOCH,
            "the link's target was marked used"
        );
        // A FIFO where an entry belongs: a miss at once, not a hang.
        let fifo_key = Digest::of(b"fifo");
        let fp = s.entry_path(&fifo_key);
        fs::create_dir_all(fp.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(fp.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let s2 = s.clone();
        assert!(within(20, move || s2.get_entry(&fifo_key).unwrap()).is_none());
        // Both are gone (as damaged files are); planted again, verify removes them too.
        assert!(fs::symlink_metadata(&p).is_err() && fs::symlink_metadata(&fp).is_err());
        std::os::unix::fs::symlink(&target, &p).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let s2 = s.clone();
        let v = within(20, move || s2.verify().unwrap());
        assert_eq!((v.removed, v.failed.len()), (2, 0), "{v:?}");
        assert!(target.exists());
    }
}
