//! Reading a compiler command line: is this one compile of one file to one object, where do its
//! outputs go, and which absolute paths in it may be written independently of where the tree and
//! the build dir are (so a cache key stays the same across directories).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A compile pik can cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compile {
    /// The source file, as written on the command line.
    pub input: PathBuf,
    /// The object (`-o`).
    pub output: PathBuf,
    /// The depfile the caller asked for (`-Wp,-MD,f`, `-MD -MF f`, `-MMD`), if any.
    pub depfile: Option<PathBuf>,
    /// Debug info is on (`-g…`, or `-Wa,-g`/`--gdwarf…` for assembler).
    pub debug: bool,
    /// Absolute prefixes the output does not depend on (remapped by the prefix maps in effect):
    /// they are replaced by a placeholder in keys and stored text.
    pub portable: Vec<Vec<u8>>,
    /// Files named by flags whose content shapes the output (`-fplugin=`).
    pub extra_inputs: Vec<PathBuf>,
    /// Set for a probe: a compile of `/dev/null` or of stdin, the way Kconfig and kbuild ask
    /// the compiler whether it takes a flag or an instruction (hundreds per kernel build).
    pub probe: Option<Probe>,
    /// Index of the argument that carries the `-o` value: a probe writes to a throwaway name
    /// (`.tmp_1234/tmp`), which its key leaves out.
    pub output_arg: usize,
    /// `-include`/`-imacros` name headers the compile reads whatever its input says.
    pub forced_includes: bool,
}

/// Where a probe's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/dev/null`: the input is empty.
    DevNull,
    /// `-`: the input is whatever stdin holds.
    Stdin,
}

impl Compile {
    /// Whether the output is a file to write (not `/dev/null`, not `-` = stdout).
    pub fn output_is_file(&self) -> bool {
        self.output.as_os_str() != "/dev/null" && self.output.as_os_str() != "-"
    }
}

/// What a command line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// One cacheable compile.
    Compile(Compile),
    /// Anything else; the reason is counted.
    Uncacheable(&'static str),
}

/// Flags that take their value as the next argument.
const WITH_VALUE: &[&str] = &[
    "-o",
    "-x",
    "-I",
    "-D",
    "-U",
    "-include",
    "-imacros",
    "-isystem",
    "-idirafter",
    "-iquote",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "-isysroot",
    "-imultiarch",
    "-imultilib",
    "-MF",
    "-MT",
    "-MQ",
    "-Xassembler",
    "-Xpreprocessor",
    "--param",
    "-target",
    "--target",
];

/// Flag prefixes known not to add outputs or hidden inputs beyond what the key covers.
const KNOWN_PREFIXES: &[&str] = &[
    "-D",
    "-U",
    "-I",
    "-W",
    "-f",
    "-m",
    "-O",
    "-g",
    "-std=",
    "-include",
    "-imacros",
    "-isystem",
    "-idirafter",
    "-iquote",
    "-iprefix",
    "-iwithprefix",
    "-isysroot",
    "-imultiarch",
    "-imultilib",
    "-nostdinc",
    "-nostdlib",
    "-nodefaultlibs",
    "-nostartfiles",
    "-pipe",
    "-ansi",
    "-pedantic",
    "--param",
    "--sysroot=",
    "--target=",
    "-target",
    "-pthread",
    "-static",
    "-shared",
    "-pie",
    "-no-pie",
    "-rdynamic",
    "-w",
    "-c",
    "-S",
    "-o",
    "-x",
    "-MD",
    "-MMD",
    "-MF",
    "-MT",
    "-MQ",
    "-MP",
    "-Xassembler",
    "-Xpreprocessor",
    "-Qunused-arguments",
    // With -E (probes only): no line markers.
    "-P",
];

/// Flags that make a call uncacheable, with the reason counted (a trailing `*` matches a prefix).
const REFUSED: &[(&str, &str)] = &[
    ("-E", "preprocess only (-E)"),
    ("-M", "dependency output only (-M)"),
    ("-MM", "dependency output only (-M)"),
    ("-v", "information query"),
    ("-###", "information query"),
    ("--version", "information query"),
    ("--help", "information query"),
    ("-print-*", "information query"),
    ("--print-*", "information query"),
    ("-dump*", "information query"),
    ("-save-temps*", "extra outputs (-save-temps)"),
    ("-fprofile-*", "profiling (-fprofile-*)"),
    ("-ftest-coverage", "coverage"),
    ("--coverage", "coverage"),
    ("-fdump-*", "extra outputs (-fdump-*)"),
    ("-fstack-usage", "extra outputs (-fstack-usage)"),
    ("-fcallgraph-info*", "extra outputs (-fcallgraph-info)"),
    ("-gsplit-dwarf", "extra outputs (-gsplit-dwarf)"),
    ("-specs=*", "specs file"),
    ("-B*", "compiler prefix (-B)"),
    ("-Xclang", "unknown flag"),
    ("-Xlinker", "link flags"),
    ("-wrapper", "compiler wrapper flag"),
];

fn s(a: &OsStr) -> &str {
    a.to_str().unwrap_or("\u{fffd}")
}

fn refused(a: &str) -> Option<&'static str> {
    REFUSED.iter().find_map(|(f, why)| {
        let hit = match f.strip_suffix('*') {
            Some(prefix) => a.starts_with(prefix),
            None => a == *f,
        };
        hit.then_some(*why)
    })
}

/// Classifies `args` (without argv[0]).
pub fn classify(args: &[OsString]) -> Call {
    let mut compile = false;
    let mut output: Option<PathBuf> = None;
    let mut inputs: Vec<PathBuf> = Vec::new();
    let mut depfile: Option<PathBuf> = None;
    let mut dep_requested = false;
    let mut debug = false;
    let mut record_switches = false;
    let mut macro_maps: Vec<Vec<u8>> = Vec::new();
    let mut debug_maps: Vec<Vec<u8>> = Vec::new();
    let mut extra_inputs = Vec::new();
    let mut output_arg = 0;
    let mut forced_includes = false;
    let mut preprocess = false;
    let mut i = 0;
    while i < args.len() {
        let a = s(&args[i]);
        if a == "\u{fffd}" {
            return Call::Uncacheable("non-UTF-8 argument");
        }
        if a.starts_with('@') {
            return Call::Uncacheable("response file (@file)");
        }
        if a == "-" || !a.starts_with('-') {
            inputs.push(PathBuf::from(&args[i]));
            i += 1;
            continue;
        }
        if a == "-E" {
            // Cacheable only as a probe (cc-version.sh): decided once the input is known.
            preprocess = true;
            i += 1;
            continue;
        }
        if let Some(why) = refused(a) {
            return Call::Uncacheable(why);
        }
        // Value of a two-argument flag, or the glued form (`-ofoo`, `-Ifoo`).
        let takes_value = WITH_VALUE.contains(&a);
        let value: Option<&OsStr> = if takes_value {
            match args.get(i + 1) {
                Some(v) => Some(v.as_os_str()),
                None => return Call::Uncacheable("flag without its value"),
            }
        } else {
            None
        };
        match a {
            // -S (assembly out, e.g. kbuild's asm-offsets.s) is as cacheable as -c; both are
            // in the key, so their results never mix.
            "-c" | "-S" => compile = true,
            "-o" => {
                output = value.map(PathBuf::from);
                output_arg = i + 1;
            }
            "-include" | "-imacros" => forced_includes = true,
            "-MD" | "-MMD" => dep_requested = true,
            "-MF" => depfile = value.map(PathBuf::from),
            "-x" => {
                let lang = s(value.unwrap());
                if !matches!(
                    lang,
                    "c" | "assembler-with-cpp" | "assembler" | "none" | "c++"
                ) {
                    return Call::Uncacheable("unsupported language (-x)");
                }
            }
            "-Xassembler" | "-Xpreprocessor" => {
                return Call::Uncacheable("pass-through flags (-X)");
            }
            _ => {}
        }
        if !takes_value {
            if let Some(o) = a.strip_prefix("-o") {
                output = Some(PathBuf::from(o));
                output_arg = i;
            } else if a.starts_with("-include") || a.starts_with("-imacros") {
                forced_includes = true;
            } else if let Some(list) = a.strip_prefix("-Wp,") {
                let parts: Vec<&str> = list.split(',').collect();
                if matches!(parts.first(), Some(&"-MD") | Some(&"-MMD")) && parts.len() == 2 {
                    depfile = Some(PathBuf::from(parts[1]));
                    dep_requested = true;
                } else if parts
                    .iter()
                    .any(|p| p.starts_with("-M") || p.starts_with("-E"))
                {
                    return Call::Uncacheable("unsupported -Wp, flag");
                }
            } else if let Some(list) = a.strip_prefix("-Wa,") {
                for p in list.split(',') {
                    if p.starts_with("-a") || p.starts_with("--MD") || p == "-MD" {
                        return Call::Uncacheable("assembler listing or depfile (-Wa,)");
                    }
                    if p == "-g" || p.starts_with("--gdwarf") || p.starts_with("-gdwarf") {
                        debug = true;
                    }
                }
            } else if a.starts_with("-g") {
                debug |= a != "-g0";
            } else if a == "-frecord-gcc-switches" {
                record_switches = true;
            } else if let Some(m) = a.strip_prefix("-fmacro-prefix-map=") {
                macro_maps.push(map_old(m));
            } else if let Some(m) = a.strip_prefix("-fdebug-prefix-map=") {
                debug_maps.push(map_old(m));
            } else if let Some(m) = a.strip_prefix("-ffile-prefix-map=") {
                macro_maps.push(map_old(m));
                debug_maps.push(map_old(m));
            } else if let Some(p) = a.strip_prefix("-fplugin=") {
                extra_inputs.push(PathBuf::from(p));
            } else if !KNOWN_PREFIXES.iter().any(|k| a.starts_with(k)) {
                return Call::Uncacheable("unknown flag");
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    let probe = match inputs.as_slice() {
        [one] if one.as_os_str() == "/dev/null" => Some(Probe::DevNull),
        [one] if one.as_os_str() == "-" => Some(Probe::Stdin),
        _ => None,
    };
    if preprocess {
        if probe.is_none() {
            return Call::Uncacheable("preprocess only (-E)");
        }
        if output.is_none() {
            // -E writes to stdout unless told otherwise.
            output = Some(PathBuf::from("-"));
            output_arg = usize::MAX;
        }
    } else if !compile {
        return Call::Uncacheable("not a compile (no -c or -S: link or query)");
    }
    let input = match inputs.len() {
        0 => return Call::Uncacheable("no input file"),
        1 => inputs.pop().unwrap(),
        _ => return Call::Uncacheable("several input files"),
    };
    let Some(output) = output else {
        return Call::Uncacheable("no -o output");
    };
    if probe.is_none() && output.as_os_str() == "/dev/null" {
        return Call::Uncacheable("output to /dev/null");
    }
    if probe.is_none() && output.as_os_str() == "-" {
        return Call::Uncacheable("object to stdout");
    }
    if dep_requested && depfile.is_none() {
        // gcc's rule: the -o name with its suffix replaced by .d.
        depfile = Some(output.with_extension("d"));
    }
    // A prefix may be written portably only if every way it reaches the output is remapped:
    // __FILE__ always (macro maps), and DWARF too when debug info is on (debug maps).
    let portable = if record_switches {
        Vec::new()
    } else {
        macro_maps
            .iter()
            .filter(|m| m.starts_with(b"/") && (!debug || debug_maps.contains(m)))
            .cloned()
            .collect()
    };
    Call::Compile(Compile {
        input,
        output,
        depfile,
        debug,
        portable,
        extra_inputs,
        probe,
        output_arg,
        forced_includes,
    })
}

/// The `old` side of `old=new`, without a trailing slash.
fn map_old(m: &str) -> Vec<u8> {
    let old = m.rsplit_once('=').map(|(o, _)| o).unwrap_or(m);
    let old = old.trim_end_matches('/');
    old.as_bytes().to_vec()
}

/// True when the normalized path `d` lies under the i-th portable prefix (no `..` component, so
/// it cannot climb out of it).
pub fn under_prefix(d: &[u8], i: usize) -> bool {
    let m = marker(i);
    d.strip_prefix(m.as_slice()).is_some_and(|rest| {
        rest.starts_with(b"/") && !rest.split(|&b| b == b'/').any(|c| c == b"..")
    })
}

/// Placeholder for the i-th portable prefix in keys and stored text.
fn marker(i: usize) -> Vec<u8> {
    format!("\u{1}PIK{i}\u{1}").into_bytes()
}

/// Replaces each portable prefix (at a path boundary) with its placeholder.
pub fn normalize(text: &[u8], portable: &[Vec<u8>]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (i, p) in portable.iter().enumerate() {
        if p.is_empty() {
            continue;
        }
        out = replace(&out, p, &marker(i), path_boundary);
    }
    out
}

/// Puts this call's prefixes back in place of the placeholders (one pass: every placeholder
/// starts with \x01, which paths and compiler output do not contain).
pub fn denormalize(text: &[u8], portable: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64 * portable.len());
    denormalize_into(&mut out, text, portable).expect("writing to memory");
    out
}

/// [`denormalize`] written straight to `out` (a depfile is ~100 KB; building it in memory first
/// costs fresh pages).
pub fn denormalize_into(
    out: &mut impl std::io::Write,
    text: &[u8],
    portable: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut rest = text;
    while let Some(at) = memchr::memchr(1, rest) {
        out.write_all(&rest[..at])?;
        rest = &rest[at..];
        match placeholder(rest).and_then(|(i, len)| Some((portable.get(i)?, len))) {
            Some((p, len)) => {
                out.write_all(p)?;
                rest = &rest[len..];
            }
            None => {
                out.write_all(&[1])?;
                rest = &rest[1..];
            }
        }
    }
    out.write_all(rest)
}

/// The prefix index and length of the placeholder `text` starts with (see [`marker`]).
fn placeholder(text: &[u8]) -> Option<(usize, usize)> {
    let digits = text.strip_prefix(b"\x01PIK")?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || digits.get(n) != Some(&1) {
        return None;
    }
    let i = std::str::from_utf8(&digits[..n]).ok()?.parse().ok()?;
    Some((i, 4 + n + 1))
}

/// Replaces each occurrence of `needle` where `boundary` accepts the byte after it (None = end).
fn replace(hay: &[u8], needle: &[u8], with: &[u8], boundary: fn(Option<u8>) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let Some(&first) = needle.first() else {
        return hay.to_vec();
    };
    // The haystacks are short arguments and paths: jumping between occurrences of the needle's
    // first byte beats building a substring searcher for each.
    let (mut done, mut from) = (0, 0);
    while let Some(found) = memchr::memchr(first, &hay[from..]) {
        let at = from + found;
        if hay[at..].starts_with(needle) && boundary(hay.get(at + needle.len()).copied()) {
            out.extend_from_slice(&hay[done..at]);
            out.extend_from_slice(with);
            done = at + needle.len();
            from = done;
        } else {
            from = at + 1;
        }
    }
    out.extend_from_slice(&hay[done..]);
    out
}

/// A path prefix ends where a path component, a `=`/`:` separator or the argument does, so
/// `/src` does not match `/src2`.
fn path_boundary(next: Option<u8>) -> bool {
    matches!(
        next,
        None | Some(b'/') | Some(b'=') | Some(b':') | Some(b' ')
    )
}

/// A path as bytes.
pub fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Bytes back to a path.
pub fn path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn kbuild_compile_is_cacheable_and_portable() {
        let c = classify(
            &v("-Wp,-MMD,kernel/.fork.o.d -nostdinc -I/src/include -I./include -include /src/include/linux/kconfig.h -fmacro-prefix-map=/src/= -O2 -Wa,-march=armv8.5-a -DKBUILD_BASENAME=\"fork\" -c -o kernel/fork.o /src/kernel/fork.c")
        );
        let Call::Compile(c) = c else { panic!("{c:?}") };
        assert_eq!(c.output, PathBuf::from("kernel/fork.o"));
        assert_eq!(c.depfile, Some(PathBuf::from("kernel/.fork.o.d")));
        assert_eq!(c.portable, vec![b"/src".to_vec()]);
        assert!(!c.debug);
        let n = normalize(b"-I/src/include /src2/x /src", &c.portable);
        assert_eq!(
            denormalize(&n, &[b"/other".to_vec()]),
            b"-I/other/include /src2/x /other"
        );
        // Two prefixes, one nested in the other's name, and a stray \x01 kept as it was.
        let two = [b"/b".to_vec(), b"/b/build".to_vec()];
        let n = normalize(b"/b/build/x.h:/b/y.h /bb \x01PIK9\x01 \x01", &two);
        assert_eq!(
            denormalize(&n, &[b"/t".to_vec(), b"/o".to_vec()]),
            b"/t/build/x.h:/t/y.h /bb \x01PIK9\x01 \x01"
        );
        let inside = |p: &[u8]| under_prefix(&normalize(p, &c.portable), 0);
        assert!(inside(b"/src/include/linux/a.h"));
        assert!(!inside(b"/src/../etc/passwd"));
        assert!(!inside(b"/src2/a.h"));
        assert!(!inside(b"include/generated/autoconf.h"));
    }

    #[test]
    fn debug_info_needs_debug_maps_to_be_portable() {
        let Call::Compile(c) = classify(&v("-g -fmacro-prefix-map=/src/= -c -o a.o /src/a.c"))
        else {
            panic!()
        };
        assert!(c.debug && c.portable.is_empty());
        let Call::Compile(c) = classify(&v("-g -ffile-prefix-map=/src=. -c -o a.o /src/a.c"))
        else {
            panic!()
        };
        assert_eq!(c.portable, vec![b"/src".to_vec()]);
    }

    #[test]
    fn probes_and_queries_are_uncacheable() {
        for (cmd, why) in [
            ("-E -P -x c a.c", "preprocess only (-E)"),
            ("-c -x c a.c -o /dev/null", "output to /dev/null"),
            ("-c -x c a.c -o -", "object to stdout"),
            ("--version", "information query"),
            ("-print-file-name=include", "information query"),
            (
                "a.o b.o -o vmlinux",
                "not a compile (no -c or -S: link or query)",
            ),
            ("-c a.c b.c", "several input files"),
            (
                "-c a.c -o a.o -fstack-usage",
                "extra outputs (-fstack-usage)",
            ),
            ("-c a.c -o a.o --frobnicate", "unknown flag"),
        ] {
            assert_eq!(classify(&v(cmd)), Call::Uncacheable(why), "{cmd}");
        }
    }

    #[test]
    fn probes_are_cacheable_and_know_their_throwaway_output() {
        let Call::Compile(c) = classify(&v(
            "-Werror -D__KERNEL__ -mbranch-protection=pac-ret -c -x c /dev/null -o .tmp_1/tmp",
        )) else {
            panic!()
        };
        assert_eq!((c.probe, c.output_arg), (Some(Probe::DevNull), 8));
        assert!(c.output_is_file() && !c.forced_includes);
        let Call::Compile(c) = classify(&v(
            "-Wa,--fatal-warnings -include x.h -c -x assembler-with-cpp -o /dev/null -",
        )) else {
            panic!()
        };
        assert_eq!((c.probe, c.output_arg), (Some(Probe::Stdin), 7));
        assert!(!c.output_is_file() && c.forced_includes);
        let Call::Compile(c) = classify(&v("-S -x c -o- -")) else {
            panic!()
        };
        assert_eq!((c.probe, c.output_arg), (Some(Probe::Stdin), 3));
        assert!(!c.output_is_file());
        // scripts/cc-version.sh: preprocessed stdin to stdout.
        let Call::Compile(c) = classify(&v("-E -P -x c -")) else {
            panic!()
        };
        assert_eq!(c.output, PathBuf::from("-"));
        assert!(!c.output_is_file());
    }

    #[test]
    fn assembly_output_is_cacheable() {
        let Call::Compile(c) = classify(&v(
            "-Wp,-MMD,arch/arm64/kernel/.asm-offsets.s.d -S -o arch/arm64/kernel/asm-offsets.s /src/arch/arm64/kernel/asm-offsets.c",
        )) else {
            panic!()
        };
        assert_eq!(c.output, PathBuf::from("arch/arm64/kernel/asm-offsets.s"));
    }

    #[test]
    fn md_without_mf_uses_the_output_name() {
        let Call::Compile(c) = classify(&v("-MD -c x/a.c -o x/a.o")) else {
            panic!()
        };
        assert_eq!(c.depfile, Some(PathBuf::from("x/a.d")));
    }
}
