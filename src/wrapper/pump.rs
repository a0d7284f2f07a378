//! Pump without distcc's include server: the object cache already knows, for every call it
//! compiled before, the exact list of headers from the compiler's own depfile. That list is
//! kept apart from the object store (a store of its own, [`PUMP_STORE`] under the cache dir,
//! under the call's first key), so it survives an emptied or fresh object cache. When a builder
//! takes protocol 3 and the list is known, the source and those headers go to the builder and
//! nothing is preprocessed here; the depfile the builder returns must name exactly the files
//! sent, or the job goes as protocol 2 instead.

use super::args::{self, Compile};
use super::miss::Ran;
use super::remote::{Dep, Dist, Distributable};
use super::{depfile, env, hit, Ctx, Res};
use crate::dist::{self, Failure, Host, Job, PumpFile, PumpFileContent};
use pik_cache::{Digest, Store};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Overrides where the header lists live (`pik build` passes the one its cache dir has).
pub const PUMP_DIR_ENV: &str = "PIK_PUMP_DIR";

/// The header lists' directory under pik's cache dir.
pub const PUMP_STORE: &str = "pump";

/// What a header list entry starts with.
const MAGIC: &[u8] = b"PIKPUMP2\n";

/// Header lists kept per call, newest first: a call compiled under another configuration (a
/// Pi 4 and a Pi 5 kernel from one tree, say) reads other headers, and each keeps its own.
const VARIANTS: usize = 4;

/// The header lists' store, if its directory can be found and trusted.
fn store() -> Option<Store> {
    let dir = match std::env::var_os(PUMP_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => crate::paths::cache_dir().ok()?.join(PUMP_STORE),
    };
    Store::open_with(dir, env::cache_sharing()).ok()
}

/// One kept header list: the digest of its headers' content when it was kept, and the
/// (normalized) depfile.
#[derive(Debug, PartialEq)]
struct Variant {
    headers: Digest,
    depfile: Vec<u8>,
}

/// The variants of an entry's payload; none for a damaged or older one.
fn decode(payload: &[u8]) -> Vec<Variant> {
    let mut out = Vec::new();
    let Some(mut rest) = payload.strip_prefix(MAGIC) else {
        return out;
    };
    while rest.len() >= 36 {
        let headers = Digest(rest[..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(rest[32..36].try_into().expect("4 bytes")) as usize;
        let Some(depfile) = rest.get(36..36 + len) else {
            return Vec::new();
        };
        out.push(Variant {
            headers,
            depfile: depfile.to_vec(),
        });
        rest = &rest[36 + len..];
    }
    if !rest.is_empty() {
        out.clear();
    }
    out
}

fn encode(variants: &[Variant]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for v in variants {
        out.extend_from_slice(&v.headers.0);
        out.extend_from_slice(&(v.depfile.len() as u32).to_le_bytes());
        out.extend_from_slice(&v.depfile);
    }
    out
}

/// The headers a (normalized) depfile names: every prerequisite but the first, the source,
/// which a pump job sends as it is now (an edited source keeps its list).
fn headers(depfile: &[u8]) -> Option<Vec<Vec<u8>>> {
    let all = depfile::prerequisites(depfile)?;
    Some(
        all.iter()
            .skip(1)
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
    )
}

impl Ctx {
    /// Keeps the (normalized) depfile of a stored miss as a header list of its call (under the
    /// call's first key), unless the call could never be a pump job (probes, host programs,
    /// assembly). Best effort.
    pub(super) fn keep_header_list(&self, c: &Compile, key: &Digest, dep_text: &[u8]) {
        let asm = matches!(
            c.input.extension().and_then(|e| e.to_str()),
            Some("S" | "s" | "sx")
        );
        if c.probe.is_some() || c.host || asm || dep_text.is_empty() {
            return;
        }
        let (Some(s), Some(names)) = (store(), headers(dep_text)) else {
            return;
        };
        let Ok(digest) = self.deps_digest(&names, &c.portable) else {
            return;
        };
        let mut variants = s
            .get_entry(key)
            .ok()
            .flatten()
            .map(|p| decode(&p))
            .unwrap_or_default();
        variants.retain(|v| v.headers != digest);
        variants.insert(
            0,
            Variant {
                headers: digest,
                depfile: dep_text.to_vec(),
            },
        );
        variants.truncate(VARIANTS);
        let _ = s.put_entry(key, &encode(&variants));
    }

    /// The newest header list kept for `key` whose headers all still have the content they
    /// had: the files of its depfile, as the depfile names them. `Err`: why there is none
    /// (`nolist`: none kept; `changed`: every list kept read headers that changed since).
    fn header_list(
        &self,
        key: &Digest,
        portable: &[Vec<u8>],
    ) -> Result<Vec<PathBuf>, &'static str> {
        let payload = store()
            .and_then(|s| s.get_entry(key).ok().flatten())
            .ok_or("nolist")?;
        let variants = decode(&payload);
        if variants.is_empty() {
            return Err("nolist");
        }
        for v in &variants {
            let Some(names) = headers(&v.depfile) else {
                continue;
            };
            if self.deps_digest(&names, portable).ok() == Some(v.headers) {
                return depfile::prerequisites(&args::denormalize(&v.depfile, portable))
                    .ok_or("nolist");
            }
        }
        Err("changed")
    }
}

/// How a pump attempt ended.
pub(super) enum PumpResult {
    /// Compiled on the builder and written out.
    Done(Ran),
    /// Send it as protocol 2 instead; why.
    Instead(String),
    /// The builder failed in a way protocol 2 would not mend (reason key, detail).
    HostFailed(String, String),
}

impl Ctx {
    /// Tries `job` as a pump job on `host` (which takes protocol 3).
    pub(super) fn pump(&self, d: &Dist, host: &Host, job: &Distributable) -> Res<PumpResult> {
        let instead = |why: &str| Ok(PumpResult::Instead(why.into()));
        let c = job.c;
        let deps = match self.header_list(job.key, &c.portable) {
            Ok(deps) => deps,
            Err(why) => return instead(why),
        };
        let cwd = std::env::current_dir()?;
        // The working directory (a mapped build dir) is no root to re-spell: paths in it are
        // relative already, and `.` would stand for it in the builder's depfile.
        let roots: Vec<&Path> = c
            .portable
            .iter()
            .map(|p| Path::new(std::ffi::OsStr::from_bytes(p)))
            .filter(|p| *p != cwd.as_path())
            .collect();
        let mut pa = match dist::pump_job_argv(job.full, &cwd, &roots) {
            Ok(pa) => pa,
            Err(s) => return instead(s.key),
        };
        if c.colour {
            pa.argv.push(args::COLOUR_ALWAYS.into());
        }
        let files = match pump_files(&deps, &cwd, &roots) {
            Ok(f) => f,
            Err(why) => return instead(why),
        };
        let sent = Job::Pump {
            argv: &pa.argv,
            cwd: &cwd,
            files: &files,
        };
        let started = Instant::now();
        let reply = match dist::compile(host, &sent, &d.opts) {
            Ok(r) => r,
            Err(f @ (Failure::Connect(_) | Failure::Timeout(_) | Failure::Died(_))) => {
                d.slots.back_off(host);
                return Ok(PumpResult::HostFailed(f.reason().into(), f.to_string()));
            }
            Err(f) => return instead(f.reason()),
        };
        if !reply.status.success() {
            return instead("status");
        }
        if let Err(m) = dist::check_object(&reply.object, &d.cfg.identity) {
            d.slots.back_off(host);
            return Ok(PumpResult::HostFailed("mismatch".into(), m.to_string()));
        }
        let leak = |b: &[u8]| memchr::memmem::find(b, b"/distccd_").is_some();
        if leak(&reply.object) || leak(&reply.stderr) {
            return instead("root-leak");
        }
        let Some(text) = returned_depfile(reply.depfile.as_deref(), &pa, c, &deps) else {
            return instead("depfile");
        };
        let dep = write_depfile(c, &text)?;
        let stderr = unroot(&reply.stderr, &pa.roots);
        let ran = self.remote_result(c, &reply.object, reply.stdout, stderr, dep)?;
        Ok(PumpResult::Done(Ran {
            compile_ms: started.elapsed().as_millis() as u64,
            ..ran
        }))
    }
}

/// The files to send: each of `deps` (relative ones are under `cwd`) with its content. Only
/// files under `cwd` or a root are sent (the source tree and the build dir: nothing else of
/// this machine's leaves it), none may name an `.incbin` file (the builder's assembler would
/// need it) or test for headers (`__has_include` could answer differently on the builder).
fn pump_files(
    deps: &[PathBuf],
    cwd: &Path,
    roots: &[&Path],
) -> Result<Vec<PumpFile>, &'static str> {
    let mut files = Vec::with_capacity(deps.len());
    for d in deps {
        let abs = cwd.join(d);
        let inside = d.is_relative() && !d.components().any(|c| c.as_os_str() == "..")
            || roots.iter().any(|r| abs.starts_with(r));
        if !inside {
            return Err("outside");
        }
        let Ok(bytes) = std::fs::read(&abs) else {
            return Err("stale");
        };
        let find = |n: &[u8]| memchr::memmem::find(&bytes, n).is_some();
        if find(b".incbin") {
            return Err("incbin");
        }
        if find(b"__has_include") {
            return Err("has-include");
        }
        files.push(PumpFile {
            path: abs,
            content: PumpFileContent::Data(bytes),
        });
    }
    Ok(files)
}

/// The builder's depfile as the local compiler would have written it, if it names exactly the
/// files sent: roots made absolute again, and the rule's target as gcc names it here.
fn returned_depfile(
    dotd: Option<&[u8]>,
    pa: &dist::PumpArgv,
    c: &Compile,
    sent: &[PathBuf],
) -> Option<Vec<u8>> {
    let text = unroot(dotd?, &pa.roots);
    let got = depfile::prerequisites(&text)?;
    let want: BTreeSet<&PathBuf> = sent.iter().collect();
    if got.iter().collect::<BTreeSet<_>>() != want {
        return None;
    }
    let target = if pa.wp_depfile {
        // cc1 names `<input stem>.o` for `-Wp,-MD,f`.
        let stem = c.input.file_stem().unwrap_or_default().as_bytes().to_vec();
        [stem, b".o".to_vec()].concat()
    } else {
        text.split(|&b| b == b':').next()?.to_vec()
    };
    let mut out = target;
    out.push(b':');
    for p in &got {
        out.extend_from_slice(b" \\\n ");
        out.extend_from_slice(&escape(args::bytes(p)));
    }
    out.push(b'\n');
    if pa.argv.iter().any(|a| a == "-MP") {
        for p in got.iter().skip(1) {
            out.push(b'\n');
            out.extend_from_slice(&escape(args::bytes(p)));
            out.extend_from_slice(b":\n");
        }
    }
    Some(out)
}

/// A path as make reads it in a depfile (gcc's escaping).
fn escape(p: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(p.len());
    for &b in p {
        match b {
            b' ' | b'\t' | b'#' | b'\\' => o.extend_from_slice(&[b'\\', b]),
            b'$' => o.extend_from_slice(b"$$"),
            _ => o.push(b),
        }
    }
    o
}

/// `text` with each root's relative spelling (followed by `/`) put back to its absolute one.
fn unroot(text: &[u8], roots: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (rel, abs) in roots {
        let mut from = rel.clone();
        from.push(b'/');
        let mut to = abs.clone();
        to.push(b'/');
        out = replace_all(&out, &from, &to);
    }
    out
}

/// `hay` with `from` replaced by `to` where it starts a path (not inside a longer one such as
/// `../../src/` for `../src/`).
fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while let Some(k) = memchr::memmem::find(&hay[i..], from) {
        let at = i + k;
        let starts = at == 0
            || !matches!(hay[at - 1], b'.' | b'/' | b'_' | b'-' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        out.extend_from_slice(&hay[i..at]);
        out.extend_from_slice(if starts { to } else { from });
        i = at + from.len();
    }
    out.extend_from_slice(&hay[i..]);
    out
}

/// Writes the depfile where the caller asked for it (or to a file of pik's own).
fn write_depfile(c: &Compile, text: &[u8]) -> Res<Dep> {
    let own = super::miss::own_depfile(c)?;
    let path = match &own {
        Some(p) => p.to_path_buf(),
        None => c.depfile.clone().unwrap_or_default(),
    };
    hit::write_file(&path, |f| f.write_all(text))?;
    Ok(Dep { path, own })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn argv(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_builders_depfile_is_read_back_as_local() {
        let pa = dist::PumpArgv {
            argv: vec!["gcc".into(), "-MMD".into()],
            roots: vec![(b"../src".to_vec(), b"/w/src".to_vec())],
            wp_depfile: true,
        };
        let c = match args::classify(&argv(&[
            "-Wp,-MMD,k/.f.o.d",
            "-c",
            "-o",
            "k/f.o",
            "/w/src/k/f.c",
        ])) {
            args::Call::Compile(c) => c,
            o => panic!("{o:?}"),
        };
        let sent = vec![
            PathBuf::from("/w/src/k/f.c"),
            PathBuf::from("include/generated/a b.h"),
        ];
        let dotd = b"k/f.o: ../src/k/f.c include/generated/a\\ b.h\n";
        let text = returned_depfile(Some(dotd), &pa, &c, &sent).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "f.o: \\\n /w/src/k/f.c \\\n include/generated/a\\ b.h\n"
        );
        // One file more, or one fewer, than was sent: not what the local compile would read.
        assert!(returned_depfile(Some(b"k/f.o: ../src/k/f.c\n"), &pa, &c, &sent).is_none());
        assert!(returned_depfile(None, &pa, &c, &sent).is_none());
        let leaked = b"k/f.o: /tmp/distccd_x/w/src/k/f.c include/generated/a\\ b.h\n";
        assert!(returned_depfile(Some(leaked), &pa, &c, &sent).is_none());
        assert_eq!(
            unroot(b"x ../src/a ../../src/b\n../src/c", &pa.roots),
            b"x /w/src/a ../../src/b\n/w/src/c"
        );
    }

    #[test]
    fn header_lists_round_trip_and_damage_reads_as_none() {
        let v = vec![
            Variant {
                headers: Digest::of(b"a"),
                depfile: b"f.o: f.c a.h\n".to_vec(),
            },
            Variant {
                headers: Digest::of(b"b"),
                depfile: b"f.o: f.c b.h c.h\n".to_vec(),
            },
        ];
        let bytes = encode(&v);
        assert_eq!(decode(&bytes), v);
        assert!(decode(&bytes[..bytes.len() - 1]).is_empty());
        assert!(decode(b"PIKPUMP1\nf.o: f.c\n").is_empty());
        assert_eq!(
            headers(b"f.o: f.c b.h \\\n c.h\n").unwrap(),
            [b"b.h".to_vec(), b"c.h".to_vec()]
        );
    }

    #[test]
    fn only_the_tree_and_the_build_dir_are_sent() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("src");
        std::fs::create_dir_all(root.join("inc")).unwrap();
        std::fs::write(root.join("inc/a.h"), "int a;\n").unwrap();
        std::fs::write(root.join("inc/b.h"), "asm(\".incbin \\\"x\\\"\");\n").unwrap();
        let cwd = d.path().join("build");
        std::fs::create_dir_all(&cwd).unwrap();
        let roots = [root.as_path()];
        let ok = pump_files(&[root.join("inc/a.h")], &cwd, &roots).unwrap();
        assert_eq!(ok.len(), 1);
        let e = |deps: &[PathBuf]| pump_files(deps, &cwd, &roots).unwrap_err();
        assert_eq!(e(&[PathBuf::from("/etc/passwd")]), "outside");
        assert_eq!(e(&[PathBuf::from("../src/inc/a.h")]), "outside");
        assert_eq!(e(&[root.join("inc/b.h")]), "incbin");
        assert_eq!(e(&[root.join("inc/gone.h")]), "stale");
    }
}
