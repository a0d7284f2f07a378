//! Which compiles may run on a builder, and the argv the builder's distccd gets.
//!
//! The rules follow distcc's client (`src/arg.c` `dcc_scan_args`, `src/strip.c`,
//! `src/filename.c`), made stricter where a remote object could differ from the local one
//! (DESIGN.md principle 9: anything pik cannot vouch for runs the real thing):
//!
//! - exactly one C-family source (`.c .i .cc .cpp .cxx .cp .c++ .C .ii .m .mm .mi .mii .M`) and
//!   `-c`; `.S`/`.s` are never distributed (the assembler resolves `.include` locally), nor
//!   `-E`, `-S`, `-M`/`-MM` (dependency-only), `-o -`, autoconf's `conftest.*`;
//! - never `-fplugin=` or `-specs=` (stock distccd refuses them), `-march=`/`-mcpu=`/
//!   `-mtune=native` (the builder's CPU), `-x` (gcc's language override), `@file`, `-B`,
//!   `-wrapper`;
//! - never options that write files beside the object (`-save-temps`, `-fdump-*`,
//!   `-fstack-usage`, `-fcallgraph-info`, `-aux-info`, `-Wa,-a…`/`-Wa,--MD`, profiling,
//!   `-frepo`, `-d…`), nor ones that make the object depend on where or how it was compiled:
//!   debug info (`-g` other than `-g0`; DWARF records the compiler's working directory) and
//!   `-frecord-gcc-switches` (records the command line the builder sees).
//!
//! For protocols 1 and 2 ([`remote_argv`]) the builder compiles preprocessed source, so the
//! preprocessor-only options are stripped as distcc does (`-D -U -I -include -imacros -isystem
//! -idirafter -iprefix -iwithprefix -iwithprefixbefore -iquote -Xpreprocessor -MF -MT -MQ -MD
//! -MMD -MG -MP -Wp,* -undef -nostdinc`) with the linker-only ones (`-L -l -Wl,*`). For
//! protocol 3 ([`pump_argv`]) the builder preprocesses, so it gets them all.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// Why a compile must run locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StayLocal {
    /// A short, stable key to count by (`plugin`, `debug-info`, `assembler-input`, …).
    pub key: &'static str,
    /// What in the command line decided it.
    pub detail: String,
}

impl fmt::Display for StayLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runs locally ({}): {}", self.key, self.detail)
    }
}

impl std::error::Error for StayLocal {}

fn local(key: &'static str, detail: impl Into<String>) -> StayLocal {
    StayLocal {
        key,
        detail: detail.into(),
    }
}

/// The argv for a protocol 1 or 2 builder: `args` (argv\[0\] the compiler, as the build ran
/// it) with argv\[0\] reduced to its bare name (distccd runs only names in its masquerade
/// list) and the preprocessor and linker options stripped. The input keeps its name: the
/// builder substitutes its copy of the preprocessed source by extension.
pub fn remote_argv(args: &[OsString]) -> Result<Vec<OsString>, StayLocal> {
    scan(args)?;
    let mut out = vec![bare_compiler(&args[0])?];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_bytes();
        if STRIP_WITH_VALUE.contains(&a) {
            i += 2;
            continue;
        }
        if !strip_alone(a) {
            out.push(args[i].clone());
        }
        i += 1;
    }
    Ok(out)
}

/// The argv for a protocol 3 (pump) builder: `args` with argv\[0\] reduced to its bare name;
/// the builder preprocesses, so every option stays. The same compiles stay local as for
/// [`remote_argv`].
///
/// Not yet handled for the kernel (the integration's job): kbuild's `-Wp,-MMD,FILE` would make
/// the builder write that depfile in its scratch tree; the builder also returns its own
/// depfile (`Reply::depfile`) for the caller to write.
pub fn pump_argv(args: &[OsString]) -> Result<Vec<OsString>, StayLocal> {
    scan(args)?;
    let mut out = vec![bare_compiler(&args[0])?];
    out.extend(args[1..].iter().cloned());
    Ok(out)
}

/// Options whose value is the next argument and that are stripped with it (v1/v2).
const STRIP_WITH_VALUE: &[&[u8]] = &[
    b"-D",
    b"-U",
    b"-I",
    b"-L",
    b"-l",
    b"-MF",
    b"-MT",
    b"-MQ",
    b"-include",
    b"-imacros",
    b"-iprefix",
    b"-iwithprefix",
    b"-iwithprefixbefore",
    b"-isystem",
    b"-idirafter",
    b"-iquote",
    b"-Xpreprocessor",
    b"-x",
];

/// Single arguments stripped for v1/v2: joined forms of the above and cpp-only flags.
fn strip_alone(a: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"-Wp,",
        b"-Wl,",
        b"-D",
        b"-U",
        b"-I",
        b"-l",
        b"-L",
        b"-MF",
        b"-MT",
        b"-MQ",
        b"-isystem",
        b"-idirafter",
        b"-iquote",
        b"-stdlib",
        b"-x",
    ];
    const EXACT: &[&[u8]] = &[
        b"-undef",
        b"-nostdinc",
        b"-nostdinc++",
        b"-MD",
        b"-MMD",
        b"-MG",
        b"-MP",
    ];
    EXACT.contains(&a) || PREFIXES.iter().any(|p| a.starts_with(p))
}

/// Options whose value is the next argument (so it is not taken for an input).
const TAKES_VALUE: &[&[u8]] = &[
    b"-o",
    b"-MF",
    b"-MT",
    b"-MQ",
    b"-D",
    b"-U",
    b"-I",
    b"-L",
    b"-l",
    b"-include",
    b"-imacros",
    b"-iprefix",
    b"-iwithprefix",
    b"-iwithprefixbefore",
    b"-isystem",
    b"-idirafter",
    b"-iquote",
    b"-isysroot",
    b"-Xpreprocessor",
    b"-Xassembler",
    b"-Xlinker",
    b"--param",
    b"-T",
    b"-u",
    b"-z",
];

/// argv\[0\]'s last path component.
fn bare_compiler(argv0: &OsStr) -> Result<OsString, StayLocal> {
    let b = argv0.as_bytes();
    let name = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
    if name.is_empty() || name.starts_with(b"-") {
        return Err(local(
            "compiler",
            format!("{argv0:?} is not a compiler name"),
        ));
    }
    Ok(OsStr::from_bytes(name).to_os_string())
}

/// What the scan found out.
#[derive(Default)]
struct Seen {
    compile: bool,
    input: Option<usize>,
    output: Option<Vec<u8>>,
    debug: bool,
}

/// Checks that `args` (argv\[0\] the compiler) is a compile a builder may run.
fn scan(args: &[OsString]) -> Result<(), StayLocal> {
    if args.is_empty() {
        return Err(local("compiler", "empty command line"));
    }
    let mut seen = Seen::default();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a.starts_with(b"-") && a.len() > 1 {
            option(a, &mut seen)?;
            if a == b"-o" {
                let v = args.get(i + 1).map(|v| v.as_bytes().to_vec());
                seen.output = Some(v.ok_or_else(|| local("output", "-o without a file"))?);
            }
            if TAKES_VALUE.contains(&a) {
                i += 1;
            }
        } else {
            operand(a, i, &mut seen)?;
        }
        i += 1;
    }
    finish(&args[0], &seen)
}

fn finish(argv0: &OsStr, seen: &Seen) -> Result<(), StayLocal> {
    bare_compiler(argv0)?;
    if !seen.compile {
        return Err(local("not-compile", "no -c: not a compile to an object"));
    }
    if seen.input.is_none() {
        return Err(local(
            "no-input",
            "no C-family source file among the arguments",
        ));
    }
    if seen.output.as_deref() == Some(b"-") {
        return Err(local("output", "-o - writes the object to standard output"));
    }
    if seen.debug {
        return Err(local(
            "debug-info",
            "debug info (-g) records the compiler's working directory, which differs on a builder",
        ));
    }
    Ok(())
}

/// A non-option argument: the one source file.
fn operand(a: &[u8], i: usize, seen: &mut Seen) -> Result<(), StayLocal> {
    let shown = || String::from_utf8_lossy(a).into_owned();
    if a.starts_with(b"@") {
        return Err(local(
            "response-file",
            format!("{} reads arguments from a file", shown()),
        ));
    }
    let ext = extension(a);
    if matches!(ext, Some(b"s" | b"S" | b"sx")) {
        return Err(local(
            "assembler-input",
            format!("{}: assembly is never distributed", shown()),
        ));
    }
    if !ext.is_some_and(is_source_ext) {
        return Err(local(
            "operand",
            format!("{} is not a C-family source file", shown()),
        ));
    }
    if seen.input.is_some() {
        return Err(local("inputs", "more than one source file"));
    }
    let base = a.rsplit(|&c| c == b'/').next().unwrap_or(a);
    if base.starts_with(b"conftest.") || base.starts_with(b"tmp.conftest.") {
        return Err(local("conftest", format!("{}: an autoconf test", shown())));
    }
    seen.input = Some(i);
    Ok(())
}

fn extension(a: &[u8]) -> Option<&[u8]> {
    let base = a.rsplit(|&c| c == b'/').next().unwrap_or(a);
    let dot = base.iter().rposition(|&c| c == b'.')?;
    Some(&base[dot + 1..]).filter(|e| !e.is_empty())
}

fn is_source_ext(e: &[u8]) -> bool {
    matches!(
        e,
        b"c" | b"i"
            | b"cc"
            | b"cpp"
            | b"cxx"
            | b"cp"
            | b"c++"
            | b"C"
            | b"ii"
            | b"m"
            | b"mm"
            | b"mi"
            | b"mii"
            | b"M"
    )
}

/// An option: records what matters, refuses what must stay local.
fn option(a: &[u8], seen: &mut Seen) -> Result<(), StayLocal> {
    let s = String::from_utf8_lossy(a);
    let starts = |p: &str| a.starts_with(p.as_bytes());
    match a {
        b"-c" => seen.compile = true,
        b"-E" => return Err(local("preprocess-only", "-E")),
        b"-S" => {
            return Err(local(
                "assembly-output",
                "-S writes assembly, not an object",
            ))
        }
        b"-g0" => seen.debug = false,
        b"-MD" | b"-MMD" | b"-MG" | b"-MP" | b"-MF" | b"-MT" | b"-MQ" => {}
        _ if starts("-MF") || starts("-MT") || starts("-MQ") => {}
        _ if starts("-M") => return Err(local("dependencies-only", format!("{s} implies -E"))),
        _ if starts("-o") => seen.output = Some(a[2..].to_vec()),
        _ if a.ends_with(b"=native")
            && (starts("-march=") || starts("-mcpu=") || starts("-mtune=")) =>
        {
            return Err(local("native-cpu", format!("{s} means the builder's CPU")))
        }
        _ if starts("-fplugin") => {
            return Err(local(
                "plugin",
                format!("{s}: distccd refuses compiler plugins"),
            ))
        }
        _ if starts("-specs=") => {
            return Err(local("specs", format!("{s}: distccd refuses spec files")))
        }
        _ if starts("-Wa,") && (s.contains(",-a") || s.contains("--MD")) => {
            return Err(local(
                "extra-files",
                format!("{s} writes assembler output files"),
            ))
        }
        _ => return refuse_other(a, &s, seen),
    }
    Ok(())
}

/// The rest of [`option`]: options that write extra files, change the toolchain, or make
/// the object depend on the builder.
fn refuse_other(a: &[u8], s: &str, seen: &mut Seen) -> Result<(), StayLocal> {
    let starts = |p: &str| a.starts_with(p.as_bytes());
    const EXTRA_FILES: &[&str] = &[
        "-save-temps",
        "-fdump-",
        "-fstack-usage",
        "-fcallgraph-info",
        "-aux-info",
        "-fsave-optimization-record",
        "-frepo",
        "-d",
    ];
    if starts("-fprofile-")
        || starts("-fauto-profile")
        || a == b"--coverage"
        || a == b"-ftest-coverage"
    {
        return Err(local(
            "profile",
            format!("{s}: profiling data is written locally"),
        ));
    }
    if let Some(p) = EXTRA_FILES.iter().find(|p| starts(p)) {
        return Err(local(
            "extra-files",
            format!("{s} writes files beside the object ({p}…)"),
        ));
    }
    if starts("-x") {
        return Err(local(
            "language",
            format!("{s}: gcc's -x is handled locally"),
        ));
    }
    if starts("-B") || a == b"-wrapper" {
        return Err(local(
            "toolchain",
            format!("{s} changes the compiler's own programs"),
        ));
    }
    if a == b"-frecord-gcc-switches" {
        return Err(local(
            "records-command-line",
            "-frecord-gcc-switches stores the command line, which the builder sees stripped",
        ));
    }
    if starts("-g") && !starts("-gno-") && !starts("-gz") {
        seen.debug = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn shown(r: Result<Vec<OsString>, StayLocal>) -> String {
        match r {
            Ok(a) => a
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("local:{}", e.key),
        }
    }

    #[test]
    fn strips_like_distcc() {
        let args = v(
            "/usr/bin/aarch64-linux-gnu-gcc -Wp,-MMD,dir/.x.o.d -nostdinc -I ./inc \
                      -Iarch/arm64/include -isystem /usr/lib/gcc/x/include -include ./k.h \
                      -D__KERNEL__ -DFOO=1 -U X -O2 -fno-pic -mgeneral-regs-only \
                      -fmacro-prefix-map=./= -MD -MF x.d -MT x.o -c -o dir/x.o dir/x.c",
        );
        assert_eq!(
            shown(remote_argv(&args)),
            "aarch64-linux-gnu-gcc -O2 -fno-pic -mgeneral-regs-only -fmacro-prefix-map=./= \
             -c -o dir/x.o dir/x.c"
        );
        // Pump keeps everything but argv[0]'s directory.
        let p = shown(pump_argv(&args));
        assert!(
            p.starts_with("aarch64-linux-gnu-gcc -Wp,-MMD,dir/.x.o.d -nostdinc"),
            "{p}"
        );
        assert!(p.ends_with("-c -o dir/x.o dir/x.c"), "{p}");
        assert_eq!(
            shown(remote_argv(&v("gcc -c x.c -g -g0"))),
            "gcc -c x.c -g -g0"
        );
    }

    #[test]
    fn keeps_what_must_stay_local() {
        for (cmd, key) in [
            ("gcc -c x.S -o x.o", "assembler-input"),
            ("gcc -c x.s", "assembler-input"),
            ("gcc -E x.c", "preprocess-only"),
            ("gcc -S x.c", "assembly-output"),
            ("gcc x.c -o x", "not-compile"),
            ("gcc -c -o x.o", "no-input"),
            ("gcc -c a.c b.c", "inputs"),
            ("gcc -c x.c -o -", "output"),
            ("gcc -M x.c", "dependencies-only"),
            ("gcc -MM -c x.c", "dependencies-only"),
            ("gcc -c x.c -march=native", "native-cpu"),
            ("gcc -c x.c -mcpu=native", "native-cpu"),
            (
                "gcc -c x.c -fplugin=./scripts/gcc-plugins/stackleak_plugin.so",
                "plugin",
            ),
            (
                "gcc -c x.c -fplugin-arg-stackleak_plugin-track-min-size=100",
                "plugin",
            ),
            ("gcc -c x.c -specs=foo.specs", "specs"),
            ("gcc -c x.c -Wa,-adhln=x.lst", "extra-files"),
            ("gcc -c x.c -Wa,--MD,x.d", "extra-files"),
            ("gcc -c x.c -save-temps", "extra-files"),
            ("gcc -c x.c -fstack-usage", "extra-files"),
            ("gcc -c x.c -fdump-tree-all", "extra-files"),
            ("gcc -c x.c -fprofile-arcs", "profile"),
            ("gcc -c x.c --coverage", "profile"),
            ("gcc -c x.c -x c", "language"),
            ("gcc -c x.c -g", "debug-info"),
            ("gcc -c x.c -g0 -gdwarf-4", "debug-info"),
            ("gcc -c x.c -frecord-gcc-switches", "records-command-line"),
            ("gcc -c @args", "response-file"),
            ("gcc -c x.c -B/opt/x", "toolchain"),
            ("gcc -c conftest.c", "conftest"),
            ("gcc -c x.c y.o", "operand"),
            ("-c x.c", "compiler"),
        ] {
            assert_eq!(shown(remote_argv(&v(cmd))), format!("local:{key}"), "{cmd}");
        }
    }

    #[test]
    fn option_values_are_not_inputs() {
        assert_eq!(
            shown(remote_argv(&v("cc -include a.c -c b.c -o b.o --param x=1"))),
            "cc -c b.c -o b.o --param x=1"
        );
        let e = remote_argv(&v("gcc -c x.c -fplugin=p.so")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "runs locally (plugin): -fplugin=p.so: distccd refuses compiler plugins"
        );
    }
}
