//! A hit: a stored candidate that still holds is written out for this call (object, depfile
//! with this call's paths, then the diagnostics), as cheaply as a process start allows.

use super::args::{self, Compile};
use super::events::{self, HOST, PROBE};
use super::record::Candidate;
use super::{Ctx, Res};
use pik_cache::stats::Event;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

impl Ctx {
    /// Serves `cand` if it still holds for this call: writes its outputs and counts the hit.
    /// Returns the compiler's exit status it stored, or `None` when it was not served.
    pub(super) fn serve(&self, c: &Compile, cand: &Candidate, started: Instant) -> Option<i32> {
        let (valid, how) = self.still_valid(c, cand);
        if !valid || self.restore(c, cand).is_err() {
            return None;
        }
        let ms = started.elapsed().as_millis() as u64;
        let saved = cand.compile_ms.saturating_sub(ms);
        let how = match (c.probe, c.host) {
            (Some(_), _) => PROBE,
            (None, true) => HOST,
            (None, false) => how,
        };
        events::note(
            Some(&self.store),
            &Event::Hit { saved_ms: saved },
            how,
            &c.output,
        );
        Some(cand.exit_code)
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
}

/// Writes a compiler output through a temp file beside it and a rename, so an interrupted hit
/// never leaves a truncated object for make to trust; `fill` writes the content.
pub(super) fn write_file(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Res<()>) -> Res<()> {
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
