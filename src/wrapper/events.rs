//! How each wrapped call is counted: an event in the store's counters, and a line in the build's
//! session log (`kind reason output`, see [`super::SESSION_LOG_ENV`]) that [`super::Summary`]
//! reads back, including the store's own problems (no space, read-only, untrusted), which the
//! build turns into one warning.

use super::{env, Failure};
use pik_cache::stats::{self, Event, Kind, Stats};
use pik_cache::Store;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The session log's reason for a probe's hit or miss (kept apart from real compiles').
pub(super) const PROBE: &str = "probe";

/// The session log's reason for a host program's compile (kbuild's fixdep, modpost, dtc,
/// Kconfig), kept apart from the kernel's own compiles.
pub(super) const HOST: &str = "host";

/// The store problem of a directory others may write (see [`pik_cache::untrusted`]).
pub(super) const UNTRUSTED: &str = "untrusted cache directory";

/// Records an event in the store's counters and the session log (best effort); `reason` is
/// the session log's. Without a store at hand (a call found uncacheable before the store was
/// opened), the counters are written only if the store's directory passes the same trust check
/// as an open.
pub(super) fn note(store: Option<&Store>, e: &Event, reason: &str, output: &Path) {
    let stats = match store {
        Some(s) => Some(s.stats()),
        None => env::store_dir()
            .ok()
            .filter(|d| pik_cache::check_dir(d, env::cache_sharing()).is_ok())
            .map(|d| Stats::new(&d)),
    };
    if let Some(s) = stats {
        let _ = s.record(e);
    }
    session_note(e.kind(), reason, output);
}

/// Counts a call the cache failed for (the compiler runs anyway): a store that could not be
/// used by its problem ([`store_unusable`]), anything else as the error `what`, with the
/// error's text in the session log.
pub(super) fn failed(store: Option<&Store>, f: Failure, what: &'static str, output: &Path) {
    match f {
        Failure::Store(e, dir) => store_unusable(&e, &dir, output),
        Failure::Other(e) => note(
            store,
            &Event::Error { reason: what },
            &e.to_string(),
            output,
        ),
    }
}

/// Appends `kind reason output` to the session log, if there is one.
fn session_note(kind: Kind, reason: &str, output: &Path) {
    if let Some(log) = env::session_log() {
        let _ =
            stats::append_to_session(Path::new(&log), kind, reason, output.as_os_str().as_bytes());
    }
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

/// Counts a call the store could not serve or keep because of `e` (the compile itself runs):
/// in the store's counters when it can still take a line (never an untrusted one), and in the
/// session log as `e <problem>@<store dir> <output>`, from which the build makes its one
/// warning ([`super::Summary::store_warning`]). Outside a build (no session log), a store
/// refused as untrusted is also reported on stderr, since nothing else would say why nothing
/// is cached.
fn store_unusable(e: &std::io::Error, dir: &Path, output: &Path) {
    let problem = store_problem(e);
    if problem != UNTRUSTED {
        let _ = Stats::new(dir).record(&Event::Error { reason: problem });
    } else if env::session_log().is_none() {
        eprintln!(
            "pik: warning: not using the object cache: {}; compiling uncached (set {}=1 \
             if everyone who can write it is trusted)",
            pik_cache::untrusted(e).map_or_else(|| e.to_string(), |u| u.to_string()),
            env::SHARED_ENV
        );
    }
    let mut reason = problem.replace(' ', "_");
    reason.push('@');
    reason.push_str(&escape(dir.as_os_str().as_bytes()));
    session_note(Kind::Error, &reason, output);
}

/// The problem and store directory in a session-log reason [`store_unusable`] wrote, if the
/// reason is one.
pub(super) fn store_problem_in(reason: &str) -> Option<(String, PathBuf)> {
    let (problem, dir) = reason.split_once('@')?;
    Some((problem.replace('_', " "), super::args::path(unescape(dir))))
}

/// `bytes` with `%`, spaces, control and non-ASCII bytes written `%XX`, so a path is one
/// token of a session-log line whatever it holds.
pub(super) fn escape(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_log_paths_survive_escaping() {
        for p in [&b"/plain/path"[..], b"/with space/and%/\xff\x01@x", b""] {
            let e = escape(p);
            assert!(!e.contains(|c: char| c.is_whitespace()), "{e}");
            assert_eq!(unescape(&e), p);
        }
        let reason = format!("no_space_left_on_device@{}", escape(b"/a b/@c"));
        assert_eq!(
            store_problem_in(&reason),
            Some(("no space left on device".into(), PathBuf::from("/a b/@c")))
        );
        assert_eq!(store_problem_in("No_such_file"), None);
    }
}
