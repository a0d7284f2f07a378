//! Every remote object is checked before use: an ELF relocatable (`ET_REL`) for the local
//! compiler's machine (AArch64 for the Pi), whose `.comment` names exactly the local compiler
//! (`GCC: (Debian 12.2.0-14) 12.2.0`). A builder with another compiler version, or a compiler
//! for another machine behind the same name, would give objects that differ from the local
//! ones; such an object is refused and the job runs locally.
//!
//! The local compiler's identity comes from a probe: it compiles `int pik_probe;` and pik
//! reads the object it wrote, the same way it reads remote ones.

use anyhow::{bail, Context, Result};
use object::read::elf::{ElfFile, FileHeader};
use object::{elf, Endianness, Object, ObjectSection};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The source of the probe compile.
pub const PROBE_SOURCE: &str = "int pik_probe;\n";

/// What identifies the compiler that made an object.
///
/// Serializable, so a caller may persist it (keyed by the compiler binary's hash) and skip the
/// probe next time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompilerIdentity {
    /// The `.comment` section's strings, joined by `; ` (one for a plain compile).
    pub comment: String,
    /// ELF `e_machine` (183 = AArch64).
    pub machine: u16,
    /// 64-bit ELF.
    pub elf64: bool,
    /// Little-endian.
    pub little_endian: bool,
}

/// Why an object is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Not an ELF file pik can read.
    NotElf(String),
    /// An ELF file, but not a relocatable object (`e_type`).
    NotRelocatable(u16),
    /// For another machine, word size or byte order.
    Machine {
        /// What the object is for.
        got: String,
        /// What the local compiler makes.
        want: String,
    },
    /// No `.comment` section: the compiler cannot be told.
    NoComment,
    /// Made by another compiler.
    Compiler {
        /// The object's `.comment`.
        got: String,
        /// The local compiler's.
        want: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NotElf(e) => write!(f, "not an ELF object: {e}"),
            Mismatch::NotRelocatable(t) => {
                write!(f, "an ELF file of type {t}, not a relocatable object")
            }
            Mismatch::Machine { got, want } => {
                write!(
                    f,
                    "an object for {got}, not {want} like the local compiler's"
                )
            }
            Mismatch::NoComment => {
                write!(
                    f,
                    "no .comment section: the compiler that made it cannot be told"
                )
            }
            Mismatch::Compiler { got, want } => write!(
                f,
                "{} vs local {} — objects would differ",
                short_name(got),
                short_version(want)
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Checks that `bytes` is an object the local compiler `expected` could have written.
pub fn check_object(bytes: &[u8], expected: &CompilerIdentity) -> Result<(), Mismatch> {
    let got = CompilerIdentity::from_object(bytes)?;
    let arch = |i: &CompilerIdentity| (i.machine, i.elf64, i.little_endian);
    if arch(&got) != arch(expected) {
        return Err(Mismatch::Machine {
            got: got.machine_name(),
            want: expected.machine_name(),
        });
    }
    if got.comment != expected.comment {
        return Err(Mismatch::Compiler {
            got: got.comment,
            want: expected.comment.clone(),
        });
    }
    Ok(())
}

impl CompilerIdentity {
    /// Reads the identity from an ELF relocatable object.
    pub fn from_object(bytes: &[u8]) -> Result<CompilerIdentity, Mismatch> {
        let kind = object::FileKind::parse(bytes).map_err(|e| Mismatch::NotElf(e.to_string()))?;
        match kind {
            object::FileKind::Elf64 => read::<elf::FileHeader64<Endianness>>(bytes, true),
            object::FileKind::Elf32 => read::<elf::FileHeader32<Endianness>>(bytes, false),
            k => Err(Mismatch::NotElf(format!("{k:?}"))),
        }
    }

    /// The identity of the compiler at `compiler` (a path or a name on PATH), from a probe
    /// compile of [`PROBE_SOURCE`]; cached in memory per compiler for the process.
    pub fn local(compiler: &Path) -> Result<CompilerIdentity> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, CompilerIdentity>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(id) = cache.lock().expect("identity cache").get(compiler) {
            return Ok(id.clone());
        }
        let id = probe(compiler)?;
        cache
            .lock()
            .expect("identity cache")
            .insert(compiler.to_path_buf(), id.clone());
        Ok(id)
    }

    /// `aarch64 64-bit little-endian`, or `machine 62 …` for one pik does not name.
    pub fn machine_name(&self) -> String {
        let m = match self.machine {
            elf::EM_AARCH64 => "aarch64".to_string(),
            elf::EM_X86_64 => "x86-64".to_string(),
            elf::EM_386 => "i386".to_string(),
            elf::EM_ARM => "arm".to_string(),
            elf::EM_RISCV => "riscv".to_string(),
            n => format!("machine {n}"),
        };
        let bits = if self.elf64 { 64 } else { 32 };
        let endian = if self.little_endian { "little" } else { "big" };
        format!("{m} {bits}-bit {endian}-endian")
    }

    /// `gcc 12.2.0 (aarch64)`: the compiler and version its `.comment` names, and the machine.
    pub fn summary(&self) -> String {
        let m = self.machine_name();
        let arch = m.split(' ').next().unwrap_or_default();
        format!("{} ({arch})", short_name(&self.comment))
    }
}

fn read<H: FileHeader<Endian = Endianness>>(
    bytes: &[u8],
    elf64: bool,
) -> Result<CompilerIdentity, Mismatch> {
    let file = ElfFile::<H>::parse(bytes).map_err(|e| Mismatch::NotElf(e.to_string()))?;
    let endian = file.endian();
    let header = file.elf_header();
    let e_type = header.e_type(endian);
    if e_type != elf::ET_REL {
        return Err(Mismatch::NotRelocatable(e_type));
    }
    let section = file
        .section_by_name(".comment")
        .ok_or(Mismatch::NoComment)?;
    let data = section
        .data()
        .map_err(|e| Mismatch::NotElf(format!(".comment: {e}")))?;
    let strings: Vec<String> = data
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if strings.is_empty() {
        return Err(Mismatch::NoComment);
    }
    Ok(CompilerIdentity {
        comment: strings.join("; "),
        machine: header.e_machine(endian),
        elf64,
        little_endian: endian == Endianness::Little,
    })
}

/// Compiles the probe with `compiler` and reads the object.
fn probe(compiler: &Path) -> Result<CompilerIdentity> {
    let dir = tempfile::Builder::new()
        .prefix("pik-probe")
        .tempdir()
        .context("creating a temporary directory for the compiler probe")?;
    let obj = dir.path().join("pik_probe.o");
    let mut child = Command::new(compiler)
        .args(["-c", "-x", "c", "-", "-o"])
        .arg(&obj)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", compiler.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(PROBE_SOURCE.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {}", compiler.display()))?;
    written.with_context(|| format!("writing the probe to {}", compiler.display()))?;
    if !out.status.success() {
        bail!(
            "{} could not compile a probe ({}): {}",
            compiler.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let bytes = std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))?;
    CompilerIdentity::from_object(&bytes)
        .map_err(|e| anyhow::anyhow!("the probe object of {}: {e}", compiler.display()))
}

/// `gcc 14.2.0` from `GCC: (Debian 14.2.0-19) 14.2.0`, `clang 16.0.6` from `Debian clang
/// version 16.0.6 (15)`; the comment itself when it is neither.
pub fn short_name(comment: &str) -> String {
    let first = comment.split("; ").next().unwrap_or(comment);
    if let Some(rest) = first.strip_prefix("GCC: ") {
        // The version is the last word: `GCC: (Debian 12.2.0-14) 12.2.0`.
        return format!("gcc {}", rest.rsplit(' ').next().unwrap_or(rest));
    }
    if let Some((_, after)) = first.split_once("clang version ") {
        return format!("clang {}", after.split(' ').next().unwrap_or(after));
    }
    first.to_string()
}

/// The version alone (`12.2.0`) when the comment names a compiler pik knows, else the name.
fn short_version(comment: &str) -> String {
    let n = short_name(comment);
    match n.split_once(' ') {
        Some(("gcc" | "clang", v)) => v.to_string(),
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(short_name("GCC: (Debian 12.2.0-14) 12.2.0"), "gcc 12.2.0");
        assert_eq!(
            short_name("Debian clang version 16.0.6 (15)"),
            "clang 16.0.6"
        );
        let m = Mismatch::Compiler {
            got: "GCC: (Debian 14.2.0-19) 14.2.0".into(),
            want: "GCC: (Debian 12.2.0-14) 12.2.0".into(),
        };
        assert_eq!(
            m.to_string(),
            "gcc 14.2.0 vs local 12.2.0 — objects would differ"
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        let id = CompilerIdentity {
            comment: "GCC: (Debian 12.2.0-14) 12.2.0".into(),
            machine: elf::EM_AARCH64,
            elf64: true,
            little_endian: true,
        };
        assert!(matches!(check_object(b"", &id), Err(Mismatch::NotElf(_))));
        assert!(matches!(
            check_object(b"HTTP/1.1 200 OK\r\n\r\n", &id),
            Err(Mismatch::NotElf(_))
        ));
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert!(check_object(&elf, &id).is_err());
    }

    /// The local cross compiler's probe, and objects whose machine or comment differ.
    #[test]
    fn checks_real_objects() {
        let cc = Path::new("aarch64-linux-gnu-gcc");
        let Ok(id) = CompilerIdentity::local(cc) else {
            eprintln!("skipped: no aarch64-linux-gnu-gcc");
            return;
        };
        assert_eq!(id.machine, elf::EM_AARCH64);
        assert!(id.comment.starts_with("GCC: "), "{id:?}");
        assert!(id.summary().ends_with("(aarch64)"), "{}", id.summary());
        // The same compiler's object passes.
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("x.o");
        let st = Command::new(cc)
            .args(["-c", "-x", "c", "/dev/null", "-o"])
            .arg(&o)
            .status()
            .unwrap();
        assert!(st.success());
        let mut bytes = std::fs::read(&o).unwrap();
        check_object(&bytes, &id).unwrap();
        // The same bytes with another version in .comment (same length) do not.
        let pos = memchr::memmem::find(&bytes, id.comment.as_bytes()).unwrap();
        let last = pos + id.comment.len() - 1;
        bytes[last] = if bytes[last] == b'9' { b'8' } else { b'9' };
        let e = check_object(&bytes, &id).unwrap_err();
        assert!(matches!(e, Mismatch::Compiler { .. }), "{e}");
        assert!(e.to_string().contains("objects would differ"), "{e}");
        // A host object (x86-64 here) is for another machine.
        let st = Command::new("gcc")
            .args(["-c", "-x", "c", "/dev/null", "-o"])
            .arg(&o)
            .status()
            .unwrap();
        assert!(st.success());
        let e = check_object(&std::fs::read(&o).unwrap(), &id).unwrap_err();
        assert!(matches!(e, Mismatch::Machine { .. }), "{e}");
    }
}
