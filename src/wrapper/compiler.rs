//! The real compiler behind the wrapper: found on PATH past pik's own masquerade links, and
//! identified by content (the driver plus the cc1 and assembler it runs), memoized so the
//! `-print-prog-name` queries run once per compiler install, not once per compile.

use pik_cache::filehash::FileHashCache;
use pik_cache::Digest;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds `name` as the build would, skipping any PATH entry where that name is pik itself
/// (a masquerade link), so the wrapper never calls itself.
pub fn resolve(name: &OsStr) -> io::Result<PathBuf> {
    resolve_on(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// [`resolve`] on the search path `path` (a PATH value).
pub fn resolve_on(name: &OsStr, path: &OsStr) -> io::Result<PathBuf> {
    let me = own_identity();
    if name.as_bytes().contains(&b'/') {
        let p = PathBuf::from(name);
        return if is_self(&p, me) {
            Err(io::Error::other(format!(
                "{} is pik itself; name the real compiler",
                p.display()
            )))
        } else {
            Ok(p)
        };
    }
    for dir in std::env::split_paths(path) {
        let cand = dir.join(name);
        let Ok(md) = std::fs::metadata(&cand) else {
            continue;
        };
        if md.is_file() && md.mode() & 0o111 != 0 && Some((md.dev(), md.ino())) != me {
            // An absolute argv[0]: gcc finds cc1 relative to where it was run from.
            return Ok(if cand.is_absolute() {
                cand
            } else {
                std::env::current_dir()?.join(cand)
            });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no {} on PATH besides pik's own link; install the compiler or fix PATH",
            name.to_string_lossy()
        ),
    ))
}

/// The device and inode of the running pik: a PATH entry that is pik (a link to it, or a hard
/// link such as cargo's copy in `deps/`) has the same, and comparing them costs no path walk.
fn own_identity() -> Option<(u64, u64)> {
    let md = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
    Some((md.dev(), md.ino()))
}

fn is_self(p: &Path, me: Option<(u64, u64)>) -> bool {
    std::fs::metadata(p)
        .ok()
        .is_some_and(|md| Some((md.dev(), md.ino())) == me)
}

/// Stat data that changes whenever a file is replaced or rewritten.
fn stamp(p: &Path) -> io::Result<String> {
    let md = std::fs::metadata(p)?;
    Ok(format!(
        "{} {} {} {}",
        md.ino(),
        md.size(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec()
    ))
}

/// The content identity of the compiler at `driver` (its own bytes and those of the cc1 and
/// assembler it runs). Memoized per driver path with the stat data of every file it covers, so a
/// compile only stats three files; any change there recomputes it from content.
pub fn identity(memo_dir: &Path, hashes: &FileHashCache, driver: &Path) -> io::Result<Digest> {
    let memo = memo_dir.join(Digest::of(driver.as_os_str().as_bytes()).to_hex());
    // Lines: the driver's stamp, then "stamp\tpath" per helper, then the identity; the memo
    // ends with a checksum line, so a damaged memo is redone rather than trusted.
    // Read as any store file is: never through a planted link, never blocking on a FIFO.
    if let Some(lines) = pik_cache::read_file(&memo)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| check_memo(&t))
    {
        let fresh = lines.len() >= 2
            && lines.first() == Some(&stamp(driver)?)
            && lines[1..lines.len() - 1].iter().all(|l| {
                l.split_once('\t')
                    .is_some_and(|(st, p)| stamp(Path::new(p)).ok().as_deref() == Some(st))
            });
        if let Some(id) = lines
            .last()
            .and_then(|l| Digest::from_hex(l))
            .filter(|_| fresh)
        {
            return Ok(id);
        }
    }
    let programs = helper_programs(driver);
    let mut h = blake3::Hasher::new();
    h.update(b"pik-compiler-id-1\0");
    h.update(&hashes.read(driver)?.0 .0);
    let mut text = stamp(driver)?;
    for p in &programs {
        h.update(p.as_os_str().as_bytes());
        h.update(b"\0");
        // A helper that vanished (a package upgrade) changes the identity rather than failing.
        if let (Ok((d, _)), Ok(st)) = (hashes.read(p), stamp(p)) {
            h.update(&d.0);
            text.push_str(&format!("\n{st}\t{}", p.to_string_lossy()));
        }
    }
    let id = Digest(*h.finalize().as_bytes());
    text.push_str(&format!("\n{}", id.to_hex()));
    let sum = Digest::of(text.as_bytes()).to_hex();
    let _ = pik_cache::atomic_write(&memo, format!("{text}\n{sum}").as_bytes());
    Ok(id)
}

/// The memo's lines without its checksum line, if the checksum holds.
fn check_memo(text: &str) -> Option<Vec<String>> {
    let (body, sum) = text.rsplit_once('\n')?;
    (Digest::of(body.as_bytes()).to_hex() == sum).then(|| body.lines().map(String::from).collect())
}

/// The programs the driver runs for a compile (cc1, the assembler), as absolute paths.
fn helper_programs(driver: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for prog in ["cc1", "as"] {
        let Ok(o) = Command::new(driver)
            .arg(format!("-print-prog-name={prog}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let p = if text.contains('/') {
            PathBuf::from(&text)
        } else if let Ok(p) = resolve(OsStr::new(&text)) {
            p
        } else {
            continue;
        };
        if let Ok(p) = std::fs::canonicalize(&p) {
            out.push(p);
        }
    }
    out
}
