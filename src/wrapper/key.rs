//! The first-step key of a compile: everything known before the compiler runs (its identity,
//! the arguments with portable prefixes replaced, the input's content, files named by flags,
//! and the environment that changes output).

use super::args::{self, Compile, Probe};
use super::{Ctx, Res};
use pik_cache::Digest;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// Environment variables whose values change what the compiler produces or prints. kbuild's
/// own `KBUILD_*` variables are not among them: the compiler never reads them, kbuild passes
/// what they mean as flags or generated headers (both in the key), and their values differ
/// between a Kconfig run and a build (exported `KBUILD_CFLAGS` and the like), which would
/// split the entries of the very same host program or probe.
fn output_env(name: &[u8]) -> bool {
    name.starts_with(b"LC_")
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

impl Ctx {
    /// The first-step key: everything known before the compiler runs.
    pub(super) fn key(&self, c: &Compile, argv: &[OsString], stdin: Option<&[u8]>) -> Res<Digest> {
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
}
