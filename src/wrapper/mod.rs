//! The compiler cache's per-compile path: pik standing in for the compiler (through a masquerade
//! link named like it, or as `pik cc <compiler> <args…>`), one process per compile.
//!
//! A cacheable compile is looked up in two steps (ccache's "depend mode"): a first key from the
//! compiler's identity, the normalized arguments, the input's content and the environment that
//! changes output selects an entry; the entry's candidates each carry the depfile the compiler
//! wrote on the miss, and a candidate is served only if every file it lists (plus `.incbin`
//! files) still has the content it had. A miss runs the compiler once, with no extra
//! preprocessor pass, and stores the object, depfile and diagnostics. Anything pik cannot cache
//! runs the real compiler untouched. The cache never fails a build: any store error is counted
//! and the compiler runs.
//!
//! One call, module by module: `run` here asks `args` whether the call is cacheable and opens
//! a `Ctx` (the store, the shared file-hash table, the `compiler`'s identity); `key` makes the
//! first key; `deps` checks each stored candidate (`record`) and `hit` writes out one that still
//! holds, or `miss` runs the compiler and stores what it made and read (`depfile`); `events`
//! counts the outcome. Beside that path: `env`, what `pik build` tells the wrapper, and
//! `summary`, what the build reads back from its session log.

mod args;
mod compiler;
mod depfile;
mod deps;
mod env;
mod events;
mod hit;
mod jobs;
mod key;
mod miss;
mod pump;
mod record;
mod remote;
mod summary;

pub use env::{
    compiler_env, masquerade_dir, source_tree_env, COMPILER_ENV, HOST_CC_ENV, SESSION_LOG_ENV,
    SHARED_ENV, STORE_ENV, TREE_ENV,
};
pub use jobs::{now_ns as jobs_now_ns, JobLine, JOBS_LOG_ENV};
pub use pump::{PUMP_DIR_ENV, PUMP_STORE};
pub use summary::{DistSummary, Summary};

use args::{Call, Compile, Probe};
use env::{cache_sharing, store_dir, SourceTree};
use pik_cache::filehash::{self, FileHashCache};
use pik_cache::stats::Event;
use pik_cache::{Digest, Store};
use record::Record;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Slots in the shared file-hash memo.
const HASH_SLOTS: usize = 1 << 14;

type Res<T> = std::io::Result<T>;

/// Runs as the compiler named `name` (masquerade mode: pik was run through a link).
pub fn run_masquerade(name: &OsStr, args: Vec<OsString>) -> i32 {
    let host = env::is_host_compiler(name);
    match env::compiler_from_env(name).map_or_else(|| compiler::resolve(name), Ok) {
        Ok(real) => run(&real, name, args, host),
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

/// One call of the real compiler `real` (run as `name`): answered from the cache when it can
/// be, else by the compiler itself (here or, on a miss inside a distributed build, on a
/// builder), run untouched whenever the cache cannot do its part. Returns the exit code.
fn run(real: &Path, name: &OsStr, args: Vec<OsString>, host: bool) -> i32 {
    let started = Instant::now();
    short_lived_heap();
    if env::cache_disabled() {
        return exec(real, &args);
    }
    let c = match cacheable(real, &args) {
        Ok(c) => Compile { host, ..c },
        Err(code) => return code,
    };
    let stdin = match probe_stdin(real, &args, &c) {
        Ok(stdin) => stdin,
        Err(code) => return code,
    };
    let uncached = || match &stdin {
        Some(bytes) => run_real(real, &args, bytes),
        None => exec(real, &args),
    };
    let ctx = match Ctx::open(real, name) {
        Ok(ctx) => ctx,
        Err(f) => {
            events::failed(None, f, "store", &c.output);
            return uncached();
        }
    };
    let code = match ctx.compile(&c, &args, stdin.as_deref(), started) {
        Ok(Done::Code(code)) => code,
        Ok(Done::Uncacheable(reason)) => {
            let e = Event::Uncacheable { reason };
            events::note(Some(&ctx.store), &e, reason, &c.output);
            uncached()
        }
        Err(e) => {
            events::failed(Some(&ctx.store), Failure::Other(e), "internal", &c.output);
            uncached()
        }
    };
    // The process ends now: unmapping the hash table and closing files would be wasted syscalls.
    std::mem::forget(ctx);
    code
}

/// The compile `args` ask for, if pik can cache it. Otherwise the call is counted and run
/// untouched, and `Err` is its exit code.
fn cacheable(real: &Path, args: &[OsString]) -> Result<Compile, i32> {
    let mut c = match args::classify(args) {
        Call::Compile(c) => c,
        Call::Uncacheable(reason) => return Err(uncacheable(real, args, reason, &output_of(args))),
    };
    c.colour = !c.colour_set && colour_terminal();
    if c.probe.is_some() && !output_dir_writable(&c.output) {
        // The compiler will fail for want of a place to write, not because of the code or
        // flags: that is no answer to keep.
        let reason = "probe output directory missing or not writable";
        return Err(uncacheable(real, args, reason, &c.output));
    }
    Ok(c)
}

/// A probe of stdin: what it says is part of the key, so pik reads it and hands it on. `None`
/// for any other call. `Err` is the exit code of a call that had to run uncached instead.
fn probe_stdin(real: &Path, args: &[OsString], c: &Compile) -> Result<Option<Vec<u8>>, i32> {
    if c.probe != Some(Probe::Stdin) {
        return Ok(None);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Err(uncacheable(real, args, "input from a terminal", &c.output));
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("pik: reading stdin: {e}; running the compiler uncached");
        return Err(run_real(real, args, &bytes));
    }
    Ok(Some(bytes))
}

/// Counts a call found not cacheable before the store was opened, and runs the compiler
/// untouched.
fn uncacheable(real: &Path, args: &[OsString], reason: &'static str, output: &Path) -> i32 {
    events::note(None, &Event::Uncacheable { reason }, reason, output);
    exec(real, args)
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

/// The `-o` value, for logs of calls that are not cacheable.
fn output_of(args: &[OsString]) -> PathBuf {
    args.iter()
        .position(|a| a == "-o")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_default()
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

/// How a cacheable call ended.
enum Done {
    /// Served or compiled; the compiler's exit status.
    Code(i32),
    /// Found not cacheable before anything ran or was read (an input that is not a regular
    /// file): the caller runs the compiler untouched.
    Uncacheable(&'static str),
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

/// What the cache needs for one call: the store, the shared file-hash table, the real compiler
/// and its identity, and the source tree `pik build` vouches for, if any.
struct Ctx {
    store: Store,
    hashes: FileHashCache,
    real: PathBuf,
    /// The name the compiler was called by (the masquerade link's, or `pik cc`'s argument).
    name: OsString,
    compiler_id: Digest,
    tree: Option<SourceTree>,
}

impl Ctx {
    fn open(real: &Path, name: &OsStr) -> Result<Ctx, Failure> {
        let dir = store_dir().map_err(std::io::Error::other)?;
        let store =
            Store::open_with(&dir, cache_sharing()).map_err(|e| Failure::Store(e, dir.clone()))?;
        // Attribute: whether the file mentions `.incbin` (see `Ctx::scan_deps`). Without a
        // table (a full disk, a read-only store that never had one) every file is hashed from
        // content.
        let attr = depfile::mentions_incbin;
        let hashes = FileHashCache::open_with_attr(&dir.join("filehash.v2"), HASH_SLOTS, attr)
            .unwrap_or_else(|_| FileHashCache::without_table(attr));
        // The memo's directory is made when a memo is first written.
        let memo = dir.join("compilers");
        let compiler_id = compiler::identity(&memo, &hashes, real)?;
        Ok(Ctx {
            store,
            hashes,
            real: real.to_path_buf(),
            name: name.to_os_string(),
            compiler_id,
            tree: SourceTree::from_env(),
        })
    }

    /// Serves the call from the first candidate of its entry that still holds, or runs it as a
    /// miss.
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
            if let Some(code) = self.serve(c, cand, started) {
                return Ok(Done::Code(code));
            }
        }
        self.miss(c, argv, stdin, key, record, started)
            .map(Done::Code)
    }
}
