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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

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

/// A pump job's argv ([`pump_job_argv`]) and how to read the depfile the builder returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpArgv {
    /// The builder's argv.
    pub argv: Vec<OsString>,
    /// Each root that was made relative: (relative spelling, absolute spelling), both without
    /// a trailing slash. The builder's depfile names files under a root by the relative
    /// spelling; put the absolute one back to read it as the local compiler would have
    /// written it.
    pub roots: Vec<(Vec<u8>, Vec<u8>)>,
    /// The caller asked for its depfile through the preprocessor (`-Wp,-MD,f`, kbuild's way),
    /// whose rule names `<input stem>.o`; otherwise the rule names the object as given.
    pub wp_depfile: bool,
}

/// The argv for a pump (protocol 3) job that gives the local compiler's object byte for byte
/// on a stock distccd, and why not when it cannot:
///
/// - `-nostdinc` is required: distccd roots every absolute `-I`/`-isystem`/`-include` under its
///   scratch directory, but not the compiler's built-in system directories, so without it the
///   builder would read its own system headers instead of the ones sent.
/// - Absolute paths under `roots` (the prefixes `-fmacro-prefix-map` remaps, such as kbuild's
///   source tree) are written relative to `cwd`, prefix maps included: distccd 3.4 roots
///   absolute paths but not the prefix maps, so `__FILE__` would name its scratch directory.
///   Relative, they resolve to the files sent and map exactly as they do here.
/// - The depfile options become `-MD`/`-MMD` alone (`-Wp,-MMD,f` would be written in the
///   builder's scratch tree, where `f`'s directory does not exist); distccd adds `-MF` of its
///   own and returns the depfile.
pub fn pump_job_argv(
    args: &[OsString],
    cwd: &Path,
    roots: &[&Path],
) -> Result<PumpArgv, StayLocal> {
    scan(args)?;
    if !args.iter().any(|a| a == "-nostdinc") {
        return Err(local(
            "system-headers",
            "no -nostdinc: the builder would read its own system headers",
        ));
    }
    let cwd = cwd.as_os_str().as_bytes();
    let mut rel_roots: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for r in roots {
        let abs = r.as_os_str().as_bytes();
        let abs = abs.strip_suffix(b"/").unwrap_or(abs);
        let rel = relative_to(abs, cwd);
        // A root that is the working directory itself (an in-tree build) stays absolute.
        if abs.starts_with(b"/") && abs.len() > 1 && rel != b"." {
            rel_roots.push((rel, abs.to_vec()));
        }
    }
    let mut out = vec![bare_compiler(&args[0])?];
    let mut wp_depfile = false;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_bytes();
        match pump_depfile_option(a)? {
            DepOpt::Keep => {}
            DepOpt::Drop => {
                i += 1;
                continue;
            }
            DepOpt::DropWithValue => {
                i += 2;
                continue;
            }
            DepOpt::Becomes(f) => {
                wp_depfile = true;
                out.push(OsString::from(f));
                i += 1;
                continue;
            }
        }
        if PATH_VALUE.contains(&a) && i + 1 < args.len() {
            out.push(args[i].clone());
            out.push(rerooted(args[i + 1].as_bytes(), &rel_roots));
            i += 2;
            continue;
        }
        out.push(rewrite_arg(a, &rel_roots));
        if TAKES_VALUE.contains(&a) && i + 1 < args.len() {
            out.push(args[i + 1].clone());
            i += 1;
        }
        i += 1;
    }
    Ok(PumpArgv {
        argv: out,
        roots: rel_roots,
        wp_depfile,
    })
}

/// Options whose value (the next argument, or glued on) is a path distccd roots.
const PATH_VALUE: &[&[u8]] = &[
    b"-I",
    b"-isystem",
    b"-iquote",
    b"-idirafter",
    b"-include",
    b"-imacros",
];

/// What a pump job does with a depfile option.
enum DepOpt {
    Keep,
    Drop,
    DropWithValue,
    Becomes(&'static str),
}

fn pump_depfile_option(a: &[u8]) -> Result<DepOpt, StayLocal> {
    if let Some(list) = a.strip_prefix(b"-Wp,") {
        let parts: Vec<&[u8]> = list.split(|&b| b == b',').collect();
        return match parts.as_slice() {
            [b"-MD", f] if !f.is_empty() => Ok(DepOpt::Becomes("-MD")),
            [b"-MMD", f] if !f.is_empty() => Ok(DepOpt::Becomes("-MMD")),
            _ => Err(local(
                "preprocessor-options",
                format!(
                    "{}: only -Wp,-MD,FILE and -Wp,-MMD,FILE are rewritten for the builder",
                    String::from_utf8_lossy(a)
                ),
            )),
        };
    }
    Ok(match a {
        b"-MF" => DepOpt::DropWithValue,
        _ if a.starts_with(b"-MF") => DepOpt::Drop,
        _ => DepOpt::Keep,
    })
}

/// `a` with a path under a root made relative: a glued path option (`-I/x`), a prefix map
/// (`-fmacro-prefix-map=/x=`), or the input.
fn rewrite_arg(a: &[u8], roots: &[(Vec<u8>, Vec<u8>)]) -> OsString {
    for opt in PATH_VALUE {
        if let Some(v) = a.strip_prefix(*opt).filter(|v| v.starts_with(b"/")) {
            let mut o = opt.to_vec();
            o.extend_from_slice(rerooted(v, roots).as_bytes());
            return OsString::from_vec(o);
        }
    }
    for map in [
        &b"-fmacro-prefix-map="[..],
        b"-ffile-prefix-map=",
        b"-fdebug-prefix-map=",
    ] {
        if let Some(v) = a.strip_prefix(map) {
            let (old, new) = match v.iter().rposition(|&b| b == b'=') {
                Some(eq) => (&v[..eq], &v[eq..]),
                None => (v, &b""[..]),
            };
            let mut o = map.to_vec();
            o.extend_from_slice(rerooted(old, roots).as_bytes());
            o.extend_from_slice(new);
            return OsString::from_vec(o);
        }
    }
    rerooted(a, roots)
}

/// `p` relative when it lies under one of `roots` (or is one), else unchanged.
fn rerooted(p: &[u8], roots: &[(Vec<u8>, Vec<u8>)]) -> OsString {
    for (rel, abs) in roots {
        if let Some(rest) = p.strip_prefix(abs.as_slice()) {
            if rest.is_empty() || rest.starts_with(b"/") {
                let mut o = rel.clone();
                o.extend_from_slice(rest);
                return OsString::from_vec(o);
            }
        }
    }
    OsStr::from_bytes(p).to_os_string()
}

/// The absolute path `p` written relative to the absolute directory `cwd` (lexically: `cwd`
/// must have no symbolic links, as `getcwd` gives it).
pub fn relative_to(p: &[u8], cwd: &[u8]) -> Vec<u8> {
    let parts = |x: &[u8]| -> Vec<Vec<u8>> {
        x.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (p, c) = (parts(p), parts(cwd));
    let common = p.iter().zip(&c).take_while(|(a, b)| a == b).count();
    let mut out: Vec<Vec<u8>> = vec![b"..".to_vec(); c.len() - common];
    out.extend(p[common..].iter().cloned());
    if out.is_empty() {
        return b".".to_vec();
    }
    out.join(&b'/')
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
    fn pump_jobs_are_written_relative_to_the_roots() {
        let args = v(
            "/usr/bin/aarch64-linux-gnu-gcc -Wp,-MMD,kernel/.fork.o.d -nostdinc \
             -I/src/arch/arm64/include -I ./include -isystem /usr/lib/gcc/x/include \
             -include /src/include/linux/kconfig.h -fmacro-prefix-map=/src/= -O2 \
             -c -o kernel/fork.o /src/kernel/fork.c",
        );
        let p = pump_job_argv(&args, Path::new("/b/build"), &[Path::new("/src/")]).unwrap();
        assert_eq!(
            shown(Ok(p.argv)),
            "aarch64-linux-gnu-gcc -MMD -nostdinc -I../../src/arch/arm64/include -I ./include \
             -isystem /usr/lib/gcc/x/include -include ../../src/include/linux/kconfig.h \
             -fmacro-prefix-map=../../src/= -O2 -c -o kernel/fork.o ../../src/kernel/fork.c"
        );
        assert_eq!(p.roots, vec![(b"../../src".to_vec(), b"/src".to_vec())]);
        assert!(p.wp_depfile);
        let plain = v("gcc -nostdinc -MD -MF x.d -c x.c -o x.o");
        let p = pump_job_argv(&plain, Path::new("/w"), &[]).unwrap();
        assert_eq!(shown(Ok(p.argv)), "gcc -nostdinc -MD -c x.c -o x.o");
        assert!(!p.wp_depfile);
        let e = pump_job_argv(&v("gcc -c x.c"), Path::new("/w"), &[]).unwrap_err();
        assert_eq!(e.key, "system-headers");
        let e = pump_job_argv(
            &v("gcc -nostdinc -Wp,-MMD,d,-DX -c x.c"),
            Path::new("/"),
            &[],
        );
        assert_eq!(e.unwrap_err().key, "preprocessor-options");
        assert_eq!(relative_to(b"/a/b/c", b"/a/x/y"), b"../../b/c");
        assert_eq!(relative_to(b"/a", b"/a"), b".");
        assert_eq!(relative_to(b"/a/b", b"/"), b"a/b");
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
