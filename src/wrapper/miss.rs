//! A miss: the real compiler runs once (asked for a depfile of pik's own when the caller wants
//! none), what it printed is replayed, and what it made and read is stored as the newest
//! candidate of the call's entry. A failed compile is never stored, except a probe's refusal
//! that is its answer.

use super::args::{self, Compile};
use super::deps::Scanned;
use super::events::{self, HOST, PROBE};
use super::record::{Candidate, Record};
use super::remote::Outcome;
use super::{depfile, exit_code, jobs, real_compiler, Ctx, Failure, Res};
use pik_cache::stats::Event;
use pik_cache::Digest;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Candidates kept per entry (different header contents for the same source and flags).
const MAX_CANDIDATES: usize = 4;

/// What the real compiler did for a miss (here or on a builder).
pub(super) struct Ran {
    /// Its exit status.
    pub(super) code: i32,
    /// A failure that is a probe's answer, kept like a success.
    pub(super) refused: bool,
    pub(super) compile_ms: u64,
    /// Time spent preprocessing here for a builder (0 for a local compile).
    pub(super) cpp_ms: u64,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    /// The depfile it wrote: the caller's, or `own_dep`.
    pub(super) depfile: PathBuf,
    /// The depfile pik asked for when the caller asked for none (removed when dropped).
    pub(super) _own_dep: Option<tempfile::TempPath>,
}

impl Ctx {
    /// Runs the compile for real, stores it under `key` (beside the candidates of `record`, the
    /// entry found there) and counts it. Returns the compiler's exit status.
    pub(super) fn miss(
        &self,
        c: &Compile,
        argv: &[std::ffi::OsString],
        stdin: Option<&[u8]>,
        key: Digest,
        record: Record<'_>,
        started: Instant,
    ) -> Res<i32> {
        let (ran, route) = match self.execute(c, argv, stdin, &key)? {
            Outcome::Ran(ran, route) => (ran, route),
            Outcome::Strict(failure) => {
                let e = Event::Error {
                    reason: "strict-remote",
                };
                events::note(Some(&self.store), &e, &failure, &c.output);
                return Ok(1);
            }
        };
        jobs::record(started, c, &route, &ran);
        if ran.code != 0 && !ran.refused {
            // Failures are not cached; the next run shows the same errors from the compiler.
            let reason = "compile failed";
            let e = Event::Uncacheable { reason };
            events::note(Some(&self.store), &e, reason, &c.output);
            return Ok(ran.code);
        }
        let stored = self.store_result(c, &key, record, &ran);
        let ms = started.elapsed().as_millis() as u64;
        match stored {
            Ok(None) => {
                let how = match (c.probe, c.host) {
                    (Some(_), _) => PROBE.to_string(),
                    (None, true) => HOST.to_string(),
                    (None, false) => route.reason(),
                };
                events::note(Some(&self.store), &Event::Miss { ms }, &how, &c.output)
            }
            Ok(Some(reason)) => {
                let e = Event::Uncacheable { reason };
                events::note(Some(&self.store), &e, reason, &c.output)
            }
            Err(f) => events::failed(Some(&self.store), f, "store write", &c.output),
        }
        Ok(ran.code)
    }

    /// Runs the real compiler with its output captured, and replays what it printed.
    pub(super) fn run_compiler(
        &self,
        c: &Compile,
        argv: &[std::ffi::OsString],
        stdin: Option<&[u8]>,
    ) -> Res<Ran> {
        // Without a depfile of the caller's, ask for one of our own (it does not change the
        // object) so the headers are known.
        let own_dep = own_depfile(c)?;
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
        let depfile = match &own_dep {
            Some(own) => own.to_path_buf(),
            None => c.depfile.clone().unwrap_or_default(),
        };
        Ok(Ran {
            code,
            refused,
            compile_ms,
            cpp_ms: 0,
            stdout,
            stderr,
            depfile,
            _own_dep: own_dep,
        })
    }

    /// Stores what the compiler did under `key`. `Ok(Some(reason))`: it turned out not
    /// cacheable after all.
    fn store_result(
        &self,
        c: &Compile,
        key: &Digest,
        mut record: Record<'_>,
        ran: &Ran,
    ) -> Result<Option<&'static str>, Failure> {
        let put = |record: &Record| {
            self.store
                .put_entry(key, &record.encode())
                .map_err(|e| Failure::Store(e, self.store.root().to_path_buf()))
        };
        if ran.refused {
            let cand = self.refusal(c, ran)?;
            put(&Record {
                candidates: vec![cand],
            })?;
            return Ok(None);
        }
        let cand = match self.candidate(c, ran)? {
            Ok(cand) => cand,
            Err(why) => return Ok(Some(why)),
        };
        // The header list outlives the object store, for pump jobs of later builds.
        self.keep_header_list(c, key, &cand.depfile);
        record
            .candidates
            .retain(|k| k.deps_digest != cand.deps_digest);
        record.candidates.insert(0, cand);
        record.candidates.truncate(MAX_CANDIDATES);
        put(&record)?;
        Ok(None)
    }

    /// A probe's refusal as a candidate: no object, no dependencies, its diagnostics.
    fn refusal(&self, c: &Compile, ran: &Ran) -> Res<Candidate<'static>> {
        Ok(Candidate {
            deps_digest: self.deps_digest(&[], &c.portable)?,
            tree: None,
            compile_ms: ran.compile_ms,
            exit_code: ran.code,
            object: Vec::new().into(),
            depfile: Vec::new().into(),
            extra_deps: Vec::new(),
            stdout: args::normalize(&ran.stdout, &c.portable).into(),
            stderr: args::normalize(&ran.stderr, &c.portable).into(),
        })
    }

    /// A compile as a candidate: its object, its depfile and what the files the depfile lists
    /// pull in (see [`Ctx::scan_deps`]). `Err`: not cacheable, with the reason.
    fn candidate(&self, c: &Compile, ran: &Ran) -> Res<Result<Candidate<'static>, &'static str>> {
        let dep_text = args::normalize(&std::fs::read(&ran.depfile)?, &c.portable);
        let Some(deps) = depfile::prerequisites(&dep_text) else {
            return Ok(Err("unreadable depfile"));
        };
        let deps: Vec<Vec<u8>> = deps.iter().map(|p| args::bytes(p).to_vec()).collect();
        let Scanned {
            extra_deps,
            deps_digest,
            tree,
        } = match self.scan_deps(&deps, &c.portable)? {
            Ok(scanned) => scanned,
            Err(why) => return Ok(Err(why)),
        };
        let object = if c.output_is_file() {
            std::fs::read(&c.output)?
        } else {
            Vec::new()
        };
        Ok(Ok(Candidate {
            deps_digest,
            tree,
            compile_ms: ran.compile_ms,
            exit_code: 0,
            object: object.into(),
            depfile: dep_text.into(),
            extra_deps,
            stdout: args::normalize(&ran.stdout, &c.portable).into(),
            stderr: args::normalize(&ran.stderr, &c.portable).into(),
        }))
    }
}

/// A temporary depfile for a compile whose caller asked for none, so the headers are known.
pub(super) fn own_depfile(c: &Compile) -> Res<Option<tempfile::TempPath>> {
    Ok(match &c.depfile {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix(".pik-dep-")
                .tempfile()?
                .into_temp_path(),
        ),
    })
}

/// Runs `cmd` with stdout and stderr captured (stderr read on its own thread, so neither pipe
/// can fill up and stall the compiler).
pub(super) fn run_captured(
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

/// Whether a failed compile is a probe's answer (the compiler refusing a flag or an instruction)
/// that holds as long as the key does: a probe that can read no file (no `-include`, no include
/// directive in what it compiles) and failed with an ordinary diagnostic about the code or the
/// flags, not for want of memory, disk, a place to write, a program, or for a signal.
fn refusal_is_the_answer(c: &Compile, stdin: Option<&[u8]>, code: i32, stderr: &[u8]) -> bool {
    let find = memchr::memmem::find;
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
    c.probe.is_some()
        && !reads_files
        && code == 1
        && text.contains("error")
        && !environmental(&text)
        && !about_output
}

/// Whether the (lower-case) diagnostics `text` blame the machine rather than the code or the
/// flags: memory, disk, files, programs, signals.
fn environmental(text: &str) -> bool {
    [
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
    .any(|t| text.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use args::Call;
    use std::ffi::OsString;

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
}
