//! The compiler cache: pik standing in for the compiler (through a masquerade link named like it,
//! or as `pik cc <compiler> <args…>`).
//!
//! A cacheable compile is looked up in two steps (ccache's "depend mode"): a first key from the
//! compiler's identity, the normalized arguments, the input's content and the environment that
//! changes output selects an entry; the entry's candidates each carry the depfile the compiler
//! wrote on the miss, and a candidate is served only if every file it lists (plus `.incbin`
//! files) still has the content it had. A miss runs the compiler once, with no extra
//! preprocessor pass, and stores the object, depfile and diagnostics. Anything pik cannot cache
//! runs the real compiler untouched. The cache never fails a build: any store error is counted
//! and the compiler runs.

pub mod args;
pub mod compiler;
pub mod depfile;
mod record;

use args::{Call, Compile, Probe};
use pik_cache::filehash::{self, FileHashCache};
use pik_cache::stats::{Event, Kind, Layout, Line};
use pik_cache::{Digest, Sharing, Store};
use record::{Candidate, Record, TreeTag};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Environment variable naming a file that gets one line per wrapped call (`kind reason output`),
/// so a build can report its own hits and misses.
pub const SESSION_LOG_ENV: &str = "PIK_SESSION_LOG";
/// Set to disable the cache for a wrapped call (the compiler runs untouched).
pub const DISABLE_ENV: &str = "PIK_NO_CACHE";
/// Candidates kept per entry (different header contents for the same source and flags).
const MAX_CANDIDATES: usize = 4;
/// Slots in the shared file-hash memo.
const HASH_SLOTS: usize = 1 << 14;

/// Environment variables whose values change what the compiler produces or prints.
fn output_env(name: &[u8]) -> bool {
    name.starts_with(b"KBUILD_")
        || name.starts_with(b"LC_")
        || matches!(
            name,
            b"SOURCE_DATE_EPOCH"
                | b"LANG"
                | b"LANGUAGE"
                | b"CPATH"
                | b"C_INCLUDE_PATH"
                | b"CPLUS_INCLUDE_PATH"
                | b"OBJC_INCLUDE_PATH"
                | b"COMPILER_PATH"
                | b"GCC_EXEC_PREFIX"
                | b"DEPENDENCIES_OUTPUT"
                | b"SUNPRO_DEPENDENCIES"
                | b"GCC_COMPARE_DEBUG"
                // The colours of diagnostics (when on: see `colour_terminal`).
                | b"GCC_COLORS"
                | b"CCC_OVERRIDE_OPTIONS"
        )
}

/// Set by `pik build` to vouch for its private, content-keyed source tree:
/// `<tree id> <unix ns> <root>`. A compile that read files under `<root>` all unchanged since
/// `<unix ns>` is tagged with the id, and a later call under a tree with the same id checks only
/// the dependencies outside it (a kernel object has ~850 headers in the tree and ~40 generated
/// ones in the build dir). Anything else is checked file by file as usual.
pub const TREE_ENV: &str = "PIK_SOURCE_TREE";

/// The source tree named by [`TREE_ENV`].
struct SourceTree {
    id: Digest,
    since_ns: u64,
    root: Vec<u8>,
}

impl SourceTree {
    fn from_env() -> Option<SourceTree> {
        let v = std::env::var_os(TREE_ENV)?;
        let mut it = v.as_bytes().splitn(3, |&b| b == b' ');
        let id = it.next().filter(|id| !id.is_empty())?;
        let since_ns = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
        let root = it.next()?;
        let root = root.strip_suffix(b"/").unwrap_or(root);
        (root.starts_with(b"/") && root.len() > 1).then(|| SourceTree {
            id: Digest::of(id),
            since_ns,
            root: root.to_vec(),
        })
    }

    /// The value of [`TREE_ENV`] for `root` (absolute, as kbuild spells srctree).
    fn env_value(id: &str, since: std::time::SystemTime, root: &Path) -> OsString {
        let ns = since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut v = OsString::from(format!("{id} {ns} "));
        v.push(root);
        v
    }

    /// Which of this call's portable prefixes is the tree root.
    fn prefix(&self, portable: &[Vec<u8>]) -> Option<usize> {
        portable.iter().position(|p| *p == self.root)
    }
}

/// The [`TREE_ENV`] setting for a build in the source tree `root` (which must not change while
/// it runs) whose content is identified by `id` (no spaces): files under it changed after this
/// call are never trusted by id.
pub fn source_tree_env(id: &str, root: &Path) -> (&'static str, OsString) {
    (
        TREE_ENV,
        SourceTree::env_value(id, std::time::SystemTime::now(), root),
    )
}

/// Overrides where the object store lives.
pub const STORE_ENV: &str = "PIK_OBJECT_CACHE_DIR";

/// Where the object store lives: `$PIK_OBJECT_CACHE_DIR`, else `<cache dir>/objects`.
pub fn store_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os(STORE_ENV).filter(|v| !v.is_empty()) {
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(crate::paths::cache_dir()?.join("objects")),
    }
}

/// Set to `1` when the object store is shared on purpose by users who trust each other (its
/// directory may then belong to another user, or be writable by its group or everyone).
pub const SHARED_ENV: &str = "PIK_CACHE_SHARED";

/// Whether the user said the object store is shared ([`SHARED_ENV`]); everything that opens
/// the store asks this, so a config-file setting has one place to go.
pub fn cache_sharing() -> Sharing {
    match std::env::var_os(SHARED_ENV) {
        Some(v) if !v.is_empty() && v != "0" => Sharing::Shared,
        _ => Sharing::Private,
    }
}

/// Opens the object store for `pik cache …` and the build's upkeep, refusing a directory
/// others can write unless it is shared (see [`cache_sharing`]).
pub fn open_store() -> anyhow::Result<Store> {
    let dir = store_dir()?;
    Store::open_with(&dir, cache_sharing()).map_err(|e| match pik_cache::untrusted(&e) {
        Some(u) => anyhow::anyhow!(
            "refusing the object cache: {u}; whoever can write it can plant objects in your \
             builds. Fix its owner and mode, use another PIK_CACHE_DIR, or set {SHARED_ENV}=1 \
             if everyone who can write it is trusted"
        ),
        None => {
            anyhow::Error::new(e).context(format!("opening the object cache at {}", dir.display()))
        }
    })
}

/// Set by `pik build` to `<name>=<absolute path>`: the real compiler its masquerade link `name`
/// stands for, found once on the build's PATH instead of by every wrapped call (a dozen `stat`s).
pub const COMPILER_ENV: &str = "PIK_COMPILER";

/// The [`COMPILER_ENV`] setting for the compiler `name` on the search path `path` (a PATH value,
/// masquerade dir included: pik's own links are skipped as the wrapper skips them).
pub fn compiler_env(name: &str, path: &OsStr) -> Option<(&'static str, OsString)> {
    let real = compiler::resolve_on(OsStr::new(name), path).ok()?;
    let mut v = OsString::from(format!("{name}="));
    v.push(real);
    Some((COMPILER_ENV, v))
}

/// The real compiler [`COMPILER_ENV`] names for `name`, if it names one.
fn compiler_from_env(name: &OsStr) -> Option<PathBuf> {
    let v = std::env::var_os(COMPILER_ENV)?;
    let rest = v
        .as_bytes()
        .strip_prefix(name.as_bytes())?
        .strip_prefix(b"=")?;
    rest.starts_with(b"/")
        .then(|| PathBuf::from(OsStr::from_bytes(rest)))
}

/// Runs as the compiler named `name` (masquerade mode: pik was run through a link).
pub fn run_masquerade(name: &OsStr, args: Vec<OsString>) -> i32 {
    match compiler_from_env(name).map_or_else(|| compiler::resolve(name), Ok) {
        Ok(real) => run(&real, args),
        Err(e) => {
            eprintln!("pik: {e}");
            127
        }
    }
}

/// `pik cc <compiler> <args…>`.
pub fn run_cc(compiler_name: &OsStr, args: Vec<OsString>) -> i32 {
    run_masquerade(compiler_name, args)
}

fn run(real: &Path, args: Vec<OsString>) -> i32 {
    let started = Instant::now();
    short_lived_heap();
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return exec(real, &args);
    }
    let mut c = match args::classify(&args) {
        Call::Compile(c) => c,
        Call::Uncacheable(reason) => {
            let out = output_of(&args);
            note(None, &Event::Uncacheable { reason }, reason, &out);
            return exec(real, &args);
        }
    };
    c.colour = !c.colour_set && colour_terminal();
    if c.probe.is_some() && !output_dir_writable(&c.output) {
        // The compiler will fail for want of a place to write, not because of the code or
        // flags: that is no answer to keep.
        let reason = "probe output directory missing or not writable";
        note(None, &Event::Uncacheable { reason }, reason, &c.output);
        return exec(real, &args);
    }
    // A probe of stdin: what it says is part of the key, so pik reads it and hands it on.
    let stdin = match c.probe {
        Some(Probe::Stdin) => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                let reason = "input from a terminal";
                note(None, &Event::Uncacheable { reason }, reason, &c.output);
                return exec(real, &args);
            }
            let mut bytes = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
                eprintln!("pik: reading stdin: {e}; running the compiler uncached");
                return run_real(real, &args, &bytes);
            }
            Some(bytes)
        }
        _ => None,
    };
    let uncached = || match &stdin {
        Some(bytes) => run_real(real, &args, bytes),
        None => exec(real, &args),
    };
    let ctx = match Ctx::open(real) {
        Ok(ctx) => ctx,
        Err(Failure::Store(e, dir)) => {
            store_unusable(&e, &dir, &c.output);
            return uncached();
        }
        Err(Failure::Other(e)) => {
            note(
                None,
                &Event::Error { reason: "store" },
                &e.to_string(),
                &c.output,
            );
            return uncached();
        }
    };
    let code = match ctx.compile(&c, &args, stdin.as_deref(), started) {
        Ok(Done::Code(code)) => code,
        Ok(Done::Uncacheable(reason)) => {
            note(
                Some(&ctx.store),
                &Event::Uncacheable { reason },
                reason,
                &c.output,
            );
            uncached()
        }
        Err(e) => {
            let reason = "internal";
            note(
                Some(&ctx.store),
                &Event::Error { reason },
                &e.to_string(),
                &c.output,
            );
            uncached()
        }
    };
    // The process ends now: unmapping the hash table and closing files would be wasted syscalls.
    std::mem::forget(ctx);
    code
}

/// Whether the caller sees the compiler's diagnostics on a colour terminal: stderr a terminal,
/// `TERM` set and not `dumb`, and no `NO_COLOR`. The environment is read first, so a call
/// without a terminal pays no system call for it.
fn colour_terminal() -> bool {
    let term = std::env::var_os("TERM");
    if term.as_ref().is_none_or(|t| t.is_empty() || t == "dumb")
        || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// How a cacheable call ended.
enum Done {
    /// Served or compiled; the compiler's exit status.
    Code(i32),
    /// Found not cacheable before anything ran or was read (an input that is not a regular
    /// file): the caller runs the compiler untouched.
    Uncacheable(&'static str),
}

/// Whether the directory `output` goes to exists and this process may write there (a probe's
/// refusal is kept only when it is about the code or the flags).
fn output_dir_writable(output: &Path) -> bool {
    let o = output.as_os_str().as_bytes();
    if o == b"-" || o == b"/dev/null" {
        return true;
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Tunes the C library's allocator for a process that lives a few milliseconds: large buffers
/// (an entry, its object) come from the heap instead of a mapping each, so freeing one costs no
/// `munmap` and the next allocation reuses its pages instead of faulting in fresh ones.
fn short_lived_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator thresholds; called before this path allocates much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 4 << 20);
    }
}

/// Runs the real compiler uncached on stdin `input` (pik has read the caller's stdin already),
/// with stdout and stderr the caller's.
fn run_real(real: &Path, args: &[OsString], input: &[u8]) -> i32 {
    let child = real_compiler(real).args(args).stdin(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pik: cannot run {}: {e}", real.display());
            return 127;
        }
    };
    // A compiler that stops reading early closes the pipe; its exit status says what happened.
    let _ = child.stdin.take().unwrap().write_all(input);
    match child.wait() {
        Ok(st) => exit_code(st),
        Err(_) => 1,
    }
}

/// The exit code a shell would report for `st` (128 + signal when killed).
fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// The `-o` value, for logs of calls that are not cacheable.
fn output_of(args: &[OsString]) -> PathBuf {
    args.iter()
        .position(|a| a == "-o")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Records an event in the store's counters and the session log (best effort). Without a
/// store at hand (a call found uncacheable before the store was opened), the counters are
/// written only if the store's directory passes the same trust check as an open.
fn note(store: Option<&Store>, e: &Event, reason: &str, output: &Path) {
    let stats = match store {
        Some(s) => Some(s.stats()),
        None => store_dir()
            .ok()
            .filter(|d| pik_cache::check_dir(d, cache_sharing()).is_ok())
            .map(|d| pik_cache::stats::Stats::new(&d)),
    };
    if let Some(s) = stats {
        let _ = s.record(e);
    }
    session_note(e.kind(), reason, output);
}

/// Appends `kind reason output` to the session log, if there is one.
fn session_note(kind: Kind, reason: &str, output: &Path) {
    if let Some(log) = session_log() {
        let _ = pik_cache::stats::append_to_session(
            Path::new(&log),
            kind,
            reason,
            output.as_os_str().as_bytes(),
        );
    }
}

fn session_log() -> Option<OsString> {
    std::env::var_os(SESSION_LOG_ENV).filter(|v| !v.is_empty())
}

/// What keeps the store from serving or keeping a call, in the words a user acts on. Only the
/// conditions of the store's file system are named; anything else is a plain store error.
fn store_problem(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    if pik_cache::untrusted(e).is_some() {
        return UNTRUSTED;
    }
    match (e.raw_os_error(), e.kind()) {
        (Some(libc::ENOSPC | libc::EDQUOT), _) | (_, K::StorageFull | K::QuotaExceeded) => {
            "no space left on device"
        }
        (Some(libc::EROFS), _) | (_, K::ReadOnlyFilesystem) => "read-only file system",
        (Some(libc::EACCES | libc::EPERM), _) | (_, K::PermissionDenied) => "permission denied",
        _ => "store error",
    }
}

const UNTRUSTED: &str = "untrusted cache directory";

/// Counts a call the store could not serve or keep because of `e` (the compile itself runs):
/// in the store's counters when it can still take a line (never an untrusted one), and in the
/// session log as `e <problem>@<store dir> <output>`, from which the build makes its one
/// warning ([`Summary::store_warning`]). Outside a build (no session log), a store refused as
/// untrusted is also reported on stderr, since nothing else would say why nothing is cached.
fn store_unusable(e: &std::io::Error, dir: &Path, output: &Path) {
    let problem = store_problem(e);
    if problem != UNTRUSTED {
        let _ = pik_cache::stats::Stats::new(dir).record(&Event::Error { reason: problem });
    } else if session_log().is_none() {
        eprintln!(
            "pik: warning: not using the object cache: {}; compiling uncached (set {SHARED_ENV}=1 \
             if everyone who can write it is trusted)",
            pik_cache::untrusted(e).map_or_else(|| e.to_string(), |u| u.to_string())
        );
    }
    let mut reason = problem.replace(' ', "_");
    reason.push('@');
    reason.push_str(&escape(dir.as_os_str().as_bytes()));
    session_note(Kind::Error, &reason, output);
}

/// `bytes` with `%`, spaces, control and non-ASCII bytes written `%XX`, so a path is one
/// token of a session-log line whatever it holds.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'%' || !(0x21..0x7f).contains(&b) {
            s.push_str(&format!("%{b:02X}"));
        } else {
            s.push(b as char);
        }
    }
    s
}

/// The bytes [`escape`] wrote.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A command running the real compiler. Without [`COMPILER_ENV`]: should a wrong setting name
/// pik itself, that pik finds the compiler on PATH instead of calling itself again.
fn real_compiler(real: &Path) -> Command {
    let mut c = Command::new(real);
    c.env_remove(COMPILER_ENV);
    c
}

/// Replaces this process with the real compiler (argv[0] absolute, see compiler::resolve).
fn exec(real: &Path, args: &[OsString]) -> i32 {
    let err = real_compiler(real).args(args).exec();
    eprintln!("pik: cannot run {}: {err}", real.display());
    127
}

/// Why the cache could not do its part of a call.
enum Failure {
    /// The store (at the path given) could not be opened or written: a full disk, a read-only
    /// or untrusted directory. Counted by problem, for the build's one warning.
    Store(std::io::Error, PathBuf),
    /// Anything else (a file gone while it was hashed).
    Other(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e)
    }
}

struct Ctx {
    store: Store,
    hashes: FileHashCache,
    real: PathBuf,
    compiler_id: Digest,
    tree: Option<SourceTree>,
}

type Res<T> = std::io::Result<T>;

/// What [`Ctx::scan_deps`] finds out about a miss's dependencies.
struct Scanned {
    /// Files `.incbin` pulled in (normalized).
    extra_deps: Vec<Vec<u8>>,
    /// Digest over the depfile's files then those, as `deps_digest` computes it.
    deps_digest: Digest,
    /// Set when the vouched-for tree may stand in for the files inside it.
    tree: Option<TreeTag>,
}

impl Ctx {
    fn open(real: &Path) -> Result<Ctx, Failure> {
        let dir = store_dir().map_err(std::io::Error::other)?;
        let store =
            Store::open_with(&dir, cache_sharing()).map_err(|e| Failure::Store(e, dir.clone()))?;
        // Attribute: whether the file mentions `.incbin` (see `scan_deps`). Without a table (a
        // full disk, a read-only store that never had one) every file is hashed from content.
        let hashes =
            FileHashCache::open_with_attr(&dir.join("filehash.v2"), HASH_SLOTS, mentions_incbin)
                .unwrap_or_else(|_| FileHashCache::without_table(mentions_incbin));
        // The memo's directory is made when a memo is first written.
        let memo = dir.join("compilers");
        let compiler_id = compiler::identity(&memo, &hashes, real)?;
        Ok(Ctx {
            store,
            hashes,
            real: real.to_path_buf(),
            compiler_id,
            tree: SourceTree::from_env(),
        })
    }

    /// The first-step key: everything known before the compiler runs.
    fn key(&self, c: &Compile, argv: &[OsString], stdin: Option<&[u8]>) -> Res<Digest> {
        let mut h = blake3::Hasher::new();
        h.update(b"pik-cc-key-1\0");
        h.update(&self.compiler_id.0);
        if c.colour {
            // Diagnostics with colour codes are replayed only where colour was asked for.
            h.update(b"\0colour\0");
        }
        if c.debug {
            // DWARF records the compile directory unless a debug map covers it.
            let cwd = std::env::current_dir()?;
            h.update(&args::normalize(args::bytes(&cwd), &c.portable));
        }
        h.update(b"\0args\0");
        for (i, a) in argv.iter().enumerate() {
            if c.probe.is_some() && i == c.output_arg {
                // A probe's output is a throwaway name; only where it goes matters.
                h.update(match c.output.as_os_str().as_bytes() {
                    b"/dev/null" => b"\x01null".as_slice(),
                    b"-" => b"\x01stdout",
                    _ => b"\x01file",
                });
            } else {
                h.update(&args::normalize(a.as_bytes(), &c.portable));
            }
            h.update(b"\0");
        }
        h.update(b"\0input\0");
        match c.probe {
            None => h.update(&self.hashes.digest(&c.input)?.0),
            Some(Probe::DevNull) => h.update(b"\x01/dev/null"),
            Some(Probe::Stdin) => h.update(blake3::hash(stdin.unwrap_or_default()).as_bytes()),
        };
        for p in &c.extra_inputs {
            h.update(&self.hashes.digest(p)?.0);
        }
        h.update(b"\0env\0");
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| output_env(k.as_bytes()))
            .collect();
        env.sort();
        for (k, v) in env {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(&args::normalize(v.as_bytes(), &c.portable));
            h.update(b"\0");
        }
        Ok(Digest(*h.finalize().as_bytes()))
    }

    /// The digest of the current content of `deps` (normalized paths).
    fn deps_digest(&self, deps: &[Vec<u8>], portable: &[Vec<u8>]) -> Res<Digest> {
        let mut h = blake3::Hasher::new();
        for d in deps {
            h.update(d);
            h.update(b"\0");
            let p = args::path(args::denormalize(d, portable));
            h.update(&self.hashes.digest(&p)?.0);
        }
        Ok(Digest(*h.finalize().as_bytes()))
    }

    /// Everything a miss records about the files that shaped its output, from the compiler's
    /// dependency list: the files `.incbin` directives in them pull in (the depfile does not
    /// list those), the digest over all of them (as `deps_digest` computes it) and, when they
    /// were read from the vouched-for source tree with every file there older than the build,
    /// the tag that lets later calls in that tree check only the rest. Only files the hash table
    /// marks as mentioning `.incbin` are read. `Err` = not cacheable, with the reason.
    fn scan_deps(
        &self,
        deps: &[Vec<u8>],
        portable: &[Vec<u8>],
    ) -> Res<Result<Scanned, &'static str>> {
        use std::os::unix::fs::MetadataExt;
        let tree = self
            .tree
            .as_ref()
            .and_then(|t| Some((t, t.prefix(portable)?)));
        let mut h = blake3::Hasher::new();
        // The same digest over just the files outside the tree, for the tag.
        let mut outside_h = blake3::Hasher::new();
        let mut outside = Vec::new();
        let mut taggable = tree.is_some();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        while i < deps.len() + extra.len() {
            let d = match deps.get(i) {
                Some(d) => d.clone(),
                None => extra[i - deps.len()].clone(),
            };
            i += 1;
            let p = args::path(args::denormalize(&d, portable));
            let (digest, attr, md) = match self.hashes.digest_attr_and_metadata(&p) {
                Ok(found) => found,
                Err(e) if filehash::not_regular(&e) => {
                    return Ok(Err("dependency is not a regular file"))
                }
                Err(e) => return Err(e),
            };
            h.update(&d);
            h.update(b"\0");
            h.update(&digest.0);
            if i <= deps.len() && attr != 0 {
                let (_, bytes) = self.hashes.read(&p)?;
                let found = match incbin_files(&bytes) {
                    Ok(found) => found,
                    Err(why) => return Ok(Err(why)),
                };
                for f in found {
                    if !f.exists() {
                        return Ok(Err(".incbin file not found"));
                    }
                    extra.push(args::normalize(args::bytes(&f), portable));
                }
            }
            match tree {
                Some((t, k)) if args::under_prefix(&d, k) => {
                    // A file changed after the build began (an edit while it runs) may not be
                    // what the tree id stands for.
                    let changed = (md.ctime() as u64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(md.ctime_nsec() as u64);
                    taggable &= changed < t.since_ns;
                }
                _ => {
                    outside_h.update(&d);
                    outside_h.update(b"\0");
                    outside_h.update(&digest.0);
                    outside.push(d);
                }
            }
        }
        let tag = match tree {
            Some((t, k)) if taggable => Some(TreeTag {
                id: t.id,
                prefix: k as u64,
                outside_digest: Digest(*outside_h.finalize().as_bytes()),
                outside,
            }),
            _ => None,
        };
        Ok(Ok(Scanned {
            extra_deps: extra,
            deps_digest: Digest(*h.finalize().as_bytes()),
            tree: tag,
        }))
    }

    /// Whether `cand` still holds for this call: every dependency has the content it had, or,
    /// in the same vouched-for tree, every dependency outside the tree does.
    fn still_valid(&self, c: &Compile, cand: &Candidate) -> (bool, &'static str) {
        if let (Some(t), Some(tag)) = (&self.tree, &cand.tree) {
            if tag.id == t.id && t.prefix(&c.portable) == Some(tag.prefix as usize) {
                let ok =
                    self.deps_digest(&tag.outside, &c.portable).ok() == Some(tag.outside_digest);
                return (ok, "tree");
            }
        }
        let ok = cand.deps().is_some_and(|deps| {
            self.deps_digest(&deps, &c.portable).ok() == Some(cand.deps_digest)
        });
        (ok, "deps")
    }

    fn compile(
        &self,
        c: &Compile,
        argv: &[OsString],
        stdin: Option<&[u8]>,
        started: Instant,
    ) -> Res<Done> {
        let key = match self.key(c, argv, stdin) {
            Ok(key) => key,
            // Refused before it was opened: the compiler reads it, once.
            Err(e) if filehash::not_regular(&e) => {
                return Ok(Done::Uncacheable("input is not a regular file"))
            }
            Err(e) => return Err(e),
        };
        let entry = self.store.get_entry(&key).ok().flatten();
        // Borrows the object and depfile from the entry's bytes: copying them costs fresh pages.
        let record = entry
            .as_deref()
            .and_then(Record::decode)
            .unwrap_or_default();
        for cand in &record.candidates {
            let (valid, how) = self.still_valid(c, cand);
            if !valid {
                continue;
            }
            if self.restore(c, cand).is_ok() {
                let ms = started.elapsed().as_millis() as u64;
                let saved = cand.compile_ms.saturating_sub(ms);
                let how = if c.probe.is_some() { PROBE } else { how };
                note(
                    Some(&self.store),
                    &Event::Hit { saved_ms: saved },
                    how,
                    &c.output,
                );
                return Ok(Done::Code(cand.exit_code));
            }
        }
        self.miss(c, argv, stdin, key, record, started)
            .map(Done::Code)
    }

    /// Writes a candidate's outputs for this call: object, depfile (with this call's paths),
    /// then the diagnostics.
    fn restore(&self, c: &Compile, cand: &Candidate) -> Res<()> {
        if cand.exit_code == 0 {
            if c.output_is_file() {
                write_file(&c.output, |f| f.write_all(&cand.object))?;
            }
            if let Some(d) = &c.depfile {
                write_file(d, |f| {
                    let mut w = std::io::BufWriter::with_capacity(16 << 10, f);
                    args::denormalize_into(&mut w, &cand.depfile, &c.portable)?;
                    w.flush()
                })?;
            }
        }
        std::io::stdout().write_all(&args::denormalize(&cand.stdout, &c.portable))?;
        std::io::stderr().write_all(&args::denormalize(&cand.stderr, &c.portable))?;
        Ok(())
    }

    fn miss(
        &self,
        c: &Compile,
        argv: &[OsString],
        stdin: Option<&[u8]>,
        key: Digest,
        mut record: Record<'_>,
        started: Instant,
    ) -> Res<i32> {
        // Without a depfile of the caller's, ask for one of our own (it does not change the
        // object) so the headers are known.
        let own_dep = match &c.depfile {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix(".pik-dep-")
                    .tempfile()?
                    .into_temp_path(),
            ),
        };
        let mut cmd = real_compiler(&self.real);
        cmd.args(argv);
        if let Some(p) = &own_dep {
            cmd.arg("-MD").arg("-MF").arg(p);
        }
        if c.colour {
            // Captured through a pipe, the compiler would see no terminal; the key says colour
            // was asked for, so these diagnostics are replayed only to terminals.
            cmd.arg(args::COLOUR_ALWAYS);
        }
        let run_start = Instant::now();
        let (status, stdout, stderr) = run_captured(&mut cmd, stdin)?;
        let compile_ms = run_start.elapsed().as_millis() as u64;
        std::io::stdout().write_all(&stdout)?;
        std::io::stderr().write_all(&stderr)?;
        let code = exit_code(status);
        // A probe's refusal is its answer and is stored; any other failure is not.
        let refused = code != 0 && refusal_is_the_answer(c, stdin, code, &stderr);
        if code != 0 && !refused {
            // Failures are not cached; the next run shows the same errors from the compiler.
            let why = "compile failed";
            note(
                Some(&self.store),
                &Event::Uncacheable { reason: why },
                why,
                &c.output,
            );
            return Ok(code);
        }
        let stored = (|| -> Result<Option<&'static str>, Failure> {
            let put = |record: &Record| {
                self.store
                    .put_entry(&key, &record.encode())
                    .map_err(|e| Failure::Store(e, self.store.root().to_path_buf()))
            };
            if refused {
                let cand = Candidate {
                    deps_digest: self.deps_digest(&[], &c.portable)?,
                    tree: None,
                    compile_ms,
                    exit_code: code,
                    object: Vec::new().into(),
                    depfile: Vec::new().into(),
                    extra_deps: Vec::new(),
                    stdout: args::normalize(&stdout, &c.portable).into(),
                    stderr: args::normalize(&stderr, &c.portable).into(),
                };
                put(&Record {
                    candidates: vec![cand],
                })?;
                return Ok(None);
            }
            let dep_path = c
                .depfile
                .clone()
                .unwrap_or_else(|| own_dep.as_ref().unwrap().to_path_buf());
            let dep_text = args::normalize(&std::fs::read(&dep_path)?, &c.portable);
            let Some(deps) = depfile::prerequisites(&dep_text) else {
                return Ok(Some("unreadable depfile"));
            };
            let deps: Vec<Vec<u8>> = deps.iter().map(|p| args::bytes(p).to_vec()).collect();
            let Scanned {
                extra_deps,
                deps_digest,
                tree,
            } = match self.scan_deps(&deps, &c.portable)? {
                Ok(scanned) => scanned,
                Err(why) => return Ok(Some(why)),
            };
            let cand = Candidate {
                deps_digest,
                tree,
                compile_ms,
                exit_code: 0,
                object: if c.output_is_file() {
                    std::fs::read(&c.output)?
                } else {
                    Vec::new()
                }
                .into(),
                depfile: dep_text.into(),
                extra_deps,
                stdout: args::normalize(&stdout, &c.portable).into(),
                stderr: args::normalize(&stderr, &c.portable).into(),
            };
            record
                .candidates
                .retain(|k| k.deps_digest != cand.deps_digest);
            record.candidates.insert(0, cand);
            record.candidates.truncate(MAX_CANDIDATES);
            put(&record)?;
            Ok(None)
        })();
        let ms = started.elapsed().as_millis() as u64;
        match stored {
            Ok(None) => {
                let how = if c.probe.is_some() { PROBE } else { "-" };
                note(Some(&self.store), &Event::Miss { ms }, how, &c.output)
            }
            Ok(Some(why)) => note(
                Some(&self.store),
                &Event::Uncacheable { reason: why },
                why,
                &c.output,
            ),
            Err(Failure::Store(e, dir)) => store_unusable(&e, &dir, &c.output),
            Err(Failure::Other(e)) => note(
                Some(&self.store),
                &Event::Error {
                    reason: "store write",
                },
                &e.to_string(),
                &c.output,
            ),
        }
        Ok(code)
    }
}

/// Runs `cmd` with stdout and stderr captured (stderr read on its own thread, so neither pipe
/// can fill up and stall the compiler).
fn run_captured(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
) -> Res<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // On its own thread: the compiler may write before it has read everything.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let mut err = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out)?;
    let status = child.wait()?;
    let err = t.join().unwrap_or_default();
    Ok((status, out, err))
}

/// Writes a compiler output through a temp file beside it and a rename, so an interrupted hit
/// never leaves a truncated object for make to trust; `fill` writes the content.
fn write_file(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Res<()>) -> Res<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().as_bytes();
    let mut n = 0;
    let (tmp, mut f) = loop {
        // Unique among running processes (pid); a leftover of a dead one only bumps `n`.
        let mut t = format!(".pik-{}-{n}-", std::process::id()).into_bytes();
        t.extend_from_slice(name);
        let tmp = path.with_file_name(OsStr::from_bytes(&t));
        // Created with the mode the compiler would give it (0666 less the umask).
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 16 => n += 1,
            Err(e) => return Err(e),
        }
    };
    let written = fill(&mut f);
    drop(f);
    // Renaming over an existing file makes ext4 flush the new data at once (auto_da_alloc),
    // ~0.3 ms per file; removing the old one first avoids that (make sees no file or a whole one).
    let done = written.and_then(|()| {
        let _ = std::fs::remove_file(path);
        std::fs::rename(&tmp, path)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// The session log's reason for a probe's hit or miss (kept apart from real compiles').
pub const PROBE: &str = "probe";

/// Whether a failed compile is a probe's answer (the compiler refusing a flag or an instruction)
/// that holds as long as the key does: a probe that can read no file (no `-include`, no include
/// directive in what it compiles) and failed with an ordinary diagnostic about the code or the
/// flags, not for want of memory, disk, a place to write, a program, or for a signal.
fn refusal_is_the_answer(c: &Compile, stdin: Option<&[u8]>, code: i32, stderr: &[u8]) -> bool {
    let reads_files = c.forced_includes
        || stdin.is_some_and(|s| {
            [&b"include"[..], b"incbin", b"import", b"embed"]
                .iter()
                .any(|n| find(s, n).is_some())
        });
    // A diagnostic naming the output is about where it goes, which the key leaves out.
    let about_output = c.output_is_file()
        && !c.output.as_os_str().is_empty()
        && find(stderr, c.output.as_os_str().as_bytes()).is_some();
    let text = String::from_utf8_lossy(stderr).to_lowercase();
    let environmental = [
        "internal compiler error",
        "out of memory",
        "memory exhausted",
        "cannot allocate",
        "no space left",
        "disk quota",
        "read-only file system",
        "permission denied",
        "no such file or directory",
        "cannot open",
        "can't open",
        "can't create",
        "cannot create",
        "cannot execute",
        "cannot run",
        "not a directory",
        "signal",
        "killed",
        "resource temporarily unavailable",
        "too many open files",
        "input/output error",
    ]
    .iter()
    .any(|t| text.contains(t));
    c.probe.is_some()
        && !reads_files
        && code == 1
        && text.contains("error")
        && !environmental
        && !about_output
}

/// The hash table's attribute for a file: 1 when it mentions `.incbin` anywhere.
fn mentions_incbin(text: &[u8]) -> u64 {
    find(text, b".incbin").is_some() as u64
}

/// The files named by `.incbin "file"` directives in a source or header (also as they appear
/// inside C `asm()` strings, with escaped quotes). A directive whose operand is not a literal
/// string cannot be followed, so the call is not cacheable.
fn incbin_files(text: &[u8]) -> Result<Vec<PathBuf>, &'static str> {
    const NEEDLE: &[u8] = b".incbin";
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&text[i..], NEEDLE) {
        let mut k = i + pos + NEEDLE.len();
        i = k;
        while k < text.len() && (text[k] == b' ' || text[k] == b'\t') {
            k += 1;
        }
        if text.get(k) == Some(&b'\\') {
            k += 1;
        }
        if text.get(k) != Some(&b'"') {
            return Err(".incbin of a computed name");
        }
        k += 1;
        let start = k;
        while k < text.len() && text[k] != b'"' && text[k] != b'\\' && text[k] != b'\n' {
            k += 1;
        }
        found.push(args::path(text[start..k].to_vec()));
    }
    Ok(found)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(cmd: &str) -> Compile {
        let argv: Vec<OsString> = cmd.split(' ').map(OsString::from).collect();
        match args::classify(&argv) {
            Call::Compile(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_refusals_about_code_or_flags_are_answers() {
        let c = probe("-Werror -fno-such-flag -c -x c /dev/null -o .tmp_1/tmp");
        let refused = b"cc1: error: unrecognized command-line option '-fno-such-flag'\n";
        assert!(refusal_is_the_answer(&c, None, 1, refused));
        for stderr in [
            "Assembler messages:\nFatal error: can't create .tmp_1/tmp: Permission denied\n",
            "Fatal error: can't create /x/tmp: No such file or directory\n",
            "cc1: fatal error: cannot open output: Read-only file system\n",
            "as: error: No space left on device\n",
            "gcc: fatal error: cannot execute 'cc1': execvp: No such file or directory\n",
            "gcc: fatal error: Killed signal terminated program cc1\n",
            "during RTL pass: x\ninternal compiler error: Segmentation fault\n",
            "error: opening dependency file .tmp_1/tmp.d: Permission denied\n",
            // Naming the (throwaway) output: about where it goes, not what it is.
            "error: writing .tmp_1/tmp failed\n",
        ] {
            assert!(
                !refusal_is_the_answer(&c, None, 1, stderr.as_bytes()),
                "{stderr}"
            );
        }
        // Not a probe, reads files, or not exit 1: never an answer.
        assert!(!refusal_is_the_answer(&c, None, 4, refused));
        let forced = probe("-include x.h -c -x c /dev/null -o .tmp_1/tmp");
        assert!(!refusal_is_the_answer(&forced, None, 1, refused));
    }

    #[test]
    fn the_build_gets_one_warning_for_an_unusable_store() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        let full = format!(
            "e no_space_left_on_device@{} a.o\n",
            escape(b"/cache dir/objects")
        );
        let mut text = Vec::new();
        text.extend_from_slice(b"h deps a.o\nm - b.o\nh probe .tmp/x\n");
        text.extend_from_slice(full.as_bytes());
        text.extend_from_slice(full.as_bytes());
        text.extend_from_slice(b"e read-only_file_system@/ro c.o\n");
        // An error that is not the store's condition: counted, no warning of its own.
        text.extend_from_slice(b"e No_such_file_or_directory_(os_error_2) d.o\n");
        // Damaged lines: skipped.
        text.extend_from_slice(b"e \xff@/x e.o\nh\nm \nzz - f.o\n");
        std::fs::write(&log, &text).unwrap();
        let s = Summary::read(&log);
        assert_eq!((s.hits, s.misses, s.probe_hits, s.errors), (1, 1, 1, 4));
        assert_eq!(s.store_errors.values().sum::<u64>(), 3);
        let w = s.store_warning().unwrap();
        assert_eq!(
            w,
            "object cache unusable: 3 compiles ran uncached (no space left on device in \
             /cache dir/objects); free space or set PIK_CACHE_DIR; and (read-only file system \
             in /ro); make it writable or set PIK_CACHE_DIR"
        );
        std::fs::write(&log, b"h deps a.o\ne No_such_file d.o\n").unwrap();
        assert_eq!(Summary::read(&log).store_warning(), None);
        let untrusted = format!("e {}@/shared x.o\n", UNTRUSTED.replace(' ', "_"));
        std::fs::write(&log, untrusted).unwrap();
        let w = Summary::read(&log).store_warning().unwrap();
        assert!(
            w.starts_with(
                "object cache unusable: 1 compile ran uncached (untrusted cache \
                 directory in /shared)"
            ) && w.contains("PIK_CACHE_SHARED=1"),
            "{w}"
        );
    }

    #[test]
    fn a_summary_reads_back_from_its_manifest_form() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("session.log");
        let text = "h deps a.o\nh tree b.o\nm - c.o\nm probe .tmp/x\nu unknown_flag d.o\n\
                    e read-only_file_system@/ro e.o\n";
        std::fs::write(&log, text).unwrap();
        let s = Summary::read(&log);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("store_errors"), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert!(back.store_errors.is_empty());
        assert_eq!(
            back,
            Summary {
                store_errors: std::collections::BTreeMap::new(),
                ..s
            }
        );
        assert_eq!(back.to_string(), Summary::read(&log).to_string());
    }

    #[test]
    fn session_log_paths_survive_escaping() {
        for p in [&b"/plain/path"[..], b"/with space/and%/\xff\x01@x", b""] {
            let e = escape(p);
            assert!(!e.contains(|c: char| c.is_whitespace()), "{e}");
            assert_eq!(unescape(&e), p);
        }
    }

    #[test]
    fn finds_incbin_operands() {
        let c = br#"asm("	.incbin \"kernel/config_data.gz\"	\n");"#;
        assert_eq!(
            incbin_files(c).unwrap(),
            vec![PathBuf::from("kernel/config_data.gz")]
        );
        assert_eq!(
            incbin_files(b"  .incbin \"arch/arm64/kernel/vdso/vdso.so\"\n").unwrap(),
            vec![PathBuf::from("arch/arm64/kernel/vdso/vdso.so")]
        );
        assert!(incbin_files(b".incbin __stringify(INITRAMFS_IMAGE)").is_err());
        assert!(incbin_files(b"no directives").unwrap().is_empty());
    }
}

/// Makes (or reuses) the masquerade dir for a build: links named like each compiler in `names`,
/// all pointing at this pik binary. Put first on PATH, they route kbuild's compiles through the
/// cache while its recorded command lines stay exactly what they would be without pik.
pub fn masquerade_dir(names: &[String]) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the pik binary")?;
    let dir = crate::paths::cache_dir()?
        .join("masq")
        .join(&Digest::of(args::bytes(&exe)).to_hex()[..16]);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in names {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(exe.as_path()) {
            continue;
        }
        // Made beside and renamed over, so concurrent builds never see a missing link.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&exe, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &link))
            .with_context(|| format!("linking {} to pik", link.display()))?;
    }
    Ok(dir)
}

/// One build's cache outcome, from its session log.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Compiles served from the cache.
    pub hits: u64,
    /// Compiles that ran and were stored.
    pub misses: u64,
    /// Calls that could not be cached, by reason.
    pub uncacheable: std::collections::BTreeMap<String, u64>,
    /// Cache failures (the compiler ran anyway).
    pub errors: u64,
    /// Compiler probes (Kconfig's and kbuild's `cc-option` and the like) answered from the
    /// cache; not counted in `hits`.
    pub probe_hits: u64,
    /// Compiler probes that ran (and were stored); not counted in `misses`.
    pub probe_misses: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// The part of `errors` the store's condition caused (no space, read-only, not writable,
    /// untrusted), by problem and store directory: what [`Summary::store_warning`] reports.
    /// Left out of the manifest (and so empty in a summary read back from one).
    #[serde(skip)]
    pub store_errors: std::collections::BTreeMap<StoreProblem, u64>,
}

/// Why the object store could not serve or keep some calls, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreProblem {
    /// "no space left on device", "read-only file system", "permission denied",
    /// "untrusted cache directory" or "store error".
    pub reason: String,
    /// The store's directory.
    pub dir: PathBuf,
}

impl Summary {
    /// Reads a session log written through [`SESSION_LOG_ENV`]. Lines that are damaged (not
    /// UTF-8, no reason, an unknown kind) are skipped.
    pub fn read(log: &Path) -> Summary {
        let text = std::fs::read(log).unwrap_or_default();
        let mut s = Summary::default();
        for line in pik_cache::stats::lines(&text, Layout::Session) {
            s.add(line);
        }
        let n = s.hits + s.misses;
        s.hit_rate = if n == 0 {
            0.0
        } else {
            s.hits as f64 / n as f64
        };
        s
    }

    fn add(&mut self, l: Line) {
        match (l.kind, l.reason) {
            (Kind::Hit, PROBE) => self.probe_hits += l.count,
            (Kind::Miss, PROBE) => self.probe_misses += l.count,
            (Kind::Hit, _) => self.hits += l.count,
            (Kind::Miss, _) => self.misses += l.count,
            (Kind::Error, reason) => {
                self.errors += l.count;
                if let Some((problem, dir)) = reason.split_once('@') {
                    let p = StoreProblem {
                        reason: problem.replace('_', " "),
                        dir: args::path(unescape(dir)),
                    };
                    *self.store_errors.entry(p).or_default() += l.count;
                }
            }
            (Kind::Uncacheable, reason) => {
                *self.uncacheable.entry(reason.to_string()).or_default() += l.count
            }
        }
    }

    /// The one warning a build prints when the object store could not be used for some of its
    /// compiles (they ran, uncached), or `None` when it always could: e.g. "object cache
    /// unusable: 12 compiles ran uncached (no space left on device in /home/u/.cache/pik/objects);
    /// free space or set PIK_CACHE_DIR". Each further problem is added after a semicolon.
    /// Meant to be called once per build on the [`Summary::read`] of its session log, and
    /// printed as a warning (the build itself succeeded).
    pub fn store_warning(&self) -> Option<String> {
        let total: u64 = self.store_errors.values().sum();
        if total == 0 {
            return None;
        }
        let mut problems: Vec<(&StoreProblem, &u64)> = self.store_errors.iter().collect();
        problems.sort_by(|a, b| b.1.cmp(a.1));
        let described: Vec<String> = problems
            .iter()
            .map(|(p, _)| {
                let advice = match p.reason.as_str() {
                    "no space left on device" => "free space or set PIK_CACHE_DIR".to_string(),
                    "read-only file system" => "make it writable or set PIK_CACHE_DIR".to_string(),
                    "permission denied" => "fix its permissions or set PIK_CACHE_DIR".to_string(),
                    UNTRUSTED => format!(
                        "another user may write it, so it could serve their objects: fix its \
                         owner and mode, set PIK_CACHE_DIR, or set {SHARED_ENV}=1 if everyone \
                         who can write it is trusted"
                    ),
                    _ => "run `pik cache verify` or set PIK_CACHE_DIR".to_string(),
                };
                format!("({} in {}); {advice}", p.reason, p.dir.display())
            })
            .collect();
        let noun = if total == 1 { "compile" } else { "compiles" };
        Some(format!(
            "object cache unusable: {total} {noun} ran uncached {}",
            described.join("; and ")
        ))
    }
}

/// The one-line form the build summary and the benchmark print.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} hits, {} misses ({:.1} % hit rate), {} of {} compiler probes answered, \
             {} uncacheable calls",
            self.hits,
            self.misses,
            self.hit_rate * 100.0,
            self.probe_hits,
            self.probe_hits + self.probe_misses,
            self.uncacheable.values().sum::<u64>()
        )
    }
}
