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
    /// The command line says whether diagnostics are coloured (`-fdiagnostics-color…`,
    /// `-fno-diagnostics-color`, clang's `-f[no-]color-diagnostics`).
    pub colour_set: bool,
    /// Set by the wrapper (never by [`classify`]): the compiler is run with
    /// [`COLOUR_ALWAYS`] because pik's own stderr is a terminal, and the key says so.
    pub colour: bool,
    /// A compile by the host's compiler (set by the caller, not read from the command line).
    pub host: bool,
}

/// The flag the wrapper adds when it captures the diagnostics of a compile whose caller sees
/// them on a terminal.
pub const COLOUR_ALWAYS: &str = "-fdiagnostics-color=always";

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

/// What an option's value is to pik.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The object (`-o`).
    Output,
    /// The language of the inputs that follow (`-x`).
    Lang,
    /// The depfile (`-MF`).
    DepFile,
    /// A header read before the input (`-include`, `-imacros`).
    ForcedInclude,
    /// A value in the key and nothing more: a target name in the depfile (`-MT`, `-MQ`), a
    /// directory to search (the depfile lists what was found there), a macro, a parameter.
    Keyed,
    /// Handed to another program unread by the driver (`-Xassembler`): not cacheable.
    PassThrough,
}

/// An option with a value, and the spellings gcc and clang accept for it: `sep` = the next
/// argument (`-o x`), `joined` = glued on (`-ox`), `eq` = after `=` (`--sysroot=x`).
struct Opt {
    name: &'static str,
    sep: bool,
    joined: bool,
    eq: bool,
    role: Role,
}

const fn opt(name: &'static str, sep: bool, joined: bool, eq: bool, role: Role) -> Opt {
    Opt {
        name,
        sep,
        joined,
        eq,
        role,
    }
}

/// Every option with a value pik understands, in every spelling gcc 12 and clang accept (tried
/// against the real aarch64-linux-gnu-gcc: `-MFx`, `-includex`, `--include=x`, `--output x`,
/// `--sysroot x`, `-xc` all work; `-MDx` does not). Any other spelling of these, and any other
/// option that takes a value, is an unknown flag: never guessed at.
const OPTS: &[Opt] = &[
    opt("-o", true, true, false, Role::Output),
    opt("--output", true, false, true, Role::Output),
    opt("-x", true, true, false, Role::Lang),
    opt("--language", true, false, true, Role::Lang),
    opt("-MF", true, true, false, Role::DepFile),
    opt("-MT", true, true, false, Role::Keyed),
    opt("-MQ", true, true, false, Role::Keyed),
    opt("-include", true, true, false, Role::ForcedInclude),
    opt("--include", true, false, true, Role::ForcedInclude),
    opt("-imacros", true, true, false, Role::ForcedInclude),
    opt("--imacros", true, false, true, Role::ForcedInclude),
    opt("-I", true, true, false, Role::Keyed),
    opt("--include-directory", true, false, true, Role::Keyed),
    opt("-isystem", true, true, false, Role::Keyed),
    opt("-idirafter", true, true, false, Role::Keyed),
    opt("-iquote", true, true, false, Role::Keyed),
    opt("-iprefix", true, true, false, Role::Keyed),
    opt("-iwithprefix", true, true, false, Role::Keyed),
    opt("-iwithprefixbefore", true, true, false, Role::Keyed),
    opt("-isysroot", true, true, false, Role::Keyed),
    opt("-imultiarch", true, true, false, Role::Keyed),
    opt("-imultilib", true, true, false, Role::Keyed),
    opt("--sysroot", true, false, true, Role::Keyed),
    opt("-D", true, true, false, Role::Keyed),
    opt("-U", true, true, false, Role::Keyed),
    opt("--param", true, false, true, Role::Keyed),
    opt("-target", true, false, false, Role::Keyed),
    opt("--target", true, false, true, Role::Keyed),
    opt("-Xassembler", true, false, false, Role::PassThrough),
    opt("-Xpreprocessor", true, false, false, Role::PassThrough),
];

/// How an argument spells an option of [`OPTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// The value is the next argument.
    Separate,
    /// The value is in this argument, from this byte on.
    Inline(usize),
}

/// The option of [`OPTS`] that `a` spells, and how (the longest name wins: `-iwithprefixbefore`
/// over `-iwithprefix`).
fn find_opt(a: &str) -> Option<(&'static Opt, Spelling)> {
    let mut best: Option<(&'static Opt, Spelling)> = None;
    for o in OPTS {
        let found = if a == o.name {
            o.sep.then_some(Spelling::Separate)
        } else if let Some(rest) = a.strip_prefix(o.name) {
            if o.eq && rest.starts_with('=') {
                Some(Spelling::Inline(o.name.len() + 1))
            } else if o.joined {
                Some(Spelling::Inline(o.name.len()))
            } else {
                None
            }
        } else {
            None
        };
        if let Some(sp) = found {
            if best.is_none_or(|(b, _)| o.name.len() > b.name.len()) {
                best = Some((o, sp));
            }
        }
    }
    best
}

/// Languages pik caches (`-x`).
fn cacheable_lang(lang: &str) -> bool {
    matches!(
        lang,
        "c" | "assembler-with-cpp" | "assembler" | "none" | "c++"
    )
}

/// Flags without a value known not to add outputs or hidden inputs beyond what the key covers.
const KNOWN_FLAGS: &[&str] = &[
    "-c",
    "-S",
    "-w",
    "-MD",
    "-MMD",
    "-MP",
    "-pipe",
    "-ansi",
    "-pedantic",
    "-pedantic-errors",
    "-nostdinc",
    "-nostdinc++",
    "-nostdlib",
    "-nodefaultlibs",
    "-nostartfiles",
    "-pthread",
    "-static",
    "-shared",
    "-pie",
    "-no-pie",
    "-rdynamic",
    "-Qunused-arguments",
    // With -E (probes only): no line markers.
    "-P",
];

/// Families of flags without a value (each flag is its whole argument) known not to add
/// outputs or hidden inputs beyond what the key covers; the exceptions are in [`REFUSED`].
const KNOWN_PREFIXES: &[&str] = &["-W", "-f", "-m", "-O", "-g", "-std="];

/// Flags that make a call uncacheable, with the reason counted (`x*` matches what starts with
/// `x`, `x*y*` what starts with `x` and holds `y` after it).
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
    // clang's precompiled headers: -include's glued form would take them for a file name.
    ("-include-p*", "precompiled header"),
    ("-fopt-info*=*", "extra outputs (-fopt-info=file)"),
    ("-Xlinker", "link flags"),
    ("-wrapper", "compiler wrapper flag"),
];

fn s(a: &OsStr) -> &str {
    a.to_str().unwrap_or("\u{fffd}")
}

fn refused(a: &str) -> Option<&'static str> {
    REFUSED.iter().find_map(|(f, why)| {
        let hit = match f.split_once('*') {
            // `prefix*`, or `prefix*middle*`.
            Some((prefix, rest)) => a.strip_prefix(prefix).is_some_and(|tail| {
                rest.strip_suffix('*')
                    .is_none_or(|mid| mid.is_empty() || tail.contains(mid))
            }),
            None => a == *f,
        };
        hit.then_some(*why)
    })
}

/// Where the depfile goes: the options that name it, as given.
#[derive(Default)]
struct DepOptions {
    /// `-MD` or `-MMD`.
    requested: bool,
    /// `-MF f` (any spelling).
    mf: Option<PathBuf>,
    /// `-Wp,-MD,f` or `-Wp,-MMD,f`.
    wp_md: Option<PathBuf>,
    /// `-Wp,-MF,f`.
    wp_mf: Option<PathBuf>,
    /// One of them was given twice (gcc takes the last; pik does not guess).
    repeated: bool,
}

impl DepOptions {
    /// The depfile the compiler writes, `Ok(None)` for none, or why pik cannot tell. Only the
    /// combinations whose outcome was checked against gcc are accepted.
    fn resolve(self, output: &Path) -> Result<Option<PathBuf>, &'static str> {
        if self.repeated {
            return Err("conflicting depfile options");
        }
        let d = match (self.requested, self.mf, self.wp_md, self.wp_mf) {
            (false, None, None, None) => return Ok(None),
            // kbuild's form: cc1 gets `-MD f`.
            (false, None, Some(f), None) => f,
            (true, Some(f), None, None) | (true, None, None, Some(f)) => f,
            // gcc's rule: the -o name with its suffix replaced by .d.
            (true, None, None, None) => gcc_depfile_name(output),
            (false, Some(_), None, None) | (false, None, None, Some(_)) => {
                return Err("-MF without -MD or -MMD")
            }
            _ => return Err("conflicting depfile options"),
        };
        if d.as_os_str() == "-" || d.as_os_str().is_empty() {
            return Err("depfile to stdout (-MF -)");
        }
        Ok(Some(d))
    }
}

/// The depfile `-MD` writes for the object `output`: its file name from the last `.` on (if
/// any, even a leading one: gcc makes `.d` of `-o .hidden`) replaced by `.d`.
fn gcc_depfile_name(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().as_bytes();
    let stem = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[..dot],
        None => name,
    };
    let mut d = stem.to_vec();
    d.extend_from_slice(b".d");
    output.with_file_name(OsStr::from_bytes(&d))
}

const WP: &str = "unsupported -Wp, flag";

/// Reads a `-Wp,` list (options handed to the preprocessor as they are): the depfile options
/// kbuild uses, macros and warnings; anything else is not understood.
fn preprocessor_list(list: &str, dep: &mut DepOptions) -> Result<(), &'static str> {
    let parts: Vec<&str> = list.split(',').collect();
    let set = |slot: &mut Option<PathBuf>, repeated: &mut bool, v: &str| {
        *repeated |= slot.is_some();
        *slot = Some(PathBuf::from(v));
    };
    let mut k = 0;
    while k < parts.len() {
        let p = parts[k];
        let value = parts.get(k + 1).copied();
        match p {
            "-MD" | "-MMD" => {
                set(&mut dep.wp_md, &mut dep.repeated, value.ok_or(WP)?);
                k += 2;
            }
            "-MF" => {
                set(&mut dep.wp_mf, &mut dep.repeated, value.ok_or(WP)?);
                k += 2;
            }
            "-MT" | "-MQ" | "-D" | "-U" => {
                value.ok_or(WP)?;
                k += 2;
            }
            "-MP" | "-w" => k += 1,
            _ if p.len() > 3 && p.starts_with("-MF") => {
                set(&mut dep.wp_mf, &mut dep.repeated, &p[3..]);
                k += 1;
            }
            _ if p.len() > 2
                && ["-MT", "-MQ", "-D", "-U", "-W"]
                    .iter()
                    .any(|f| p.starts_with(f)) =>
            {
                k += 1
            }
            _ => return Err(WP),
        }
    }
    Ok(())
}

/// Classifies `args` (without argv[0]).
pub fn classify(args: &[OsString]) -> Call {
    let mut line = Line::default();
    let mut i = 0;
    while i < args.len() {
        i = match line.take(args, i) {
            Ok(next) => next,
            Err(why) => return Call::Uncacheable(why),
        };
    }
    match line.finish() {
        Ok(c) => Call::Compile(c),
        Err(why) => Call::Uncacheable(why),
    }
}

/// What [`classify`] has read of a command line so far. `Err` in its steps is the reason the
/// call is not cacheable.
#[derive(Default)]
struct Line {
    /// `-c` or `-S`.
    compile: bool,
    /// `-E`: cacheable only as a probe (cc-version.sh), decided once the input is known.
    preprocess: bool,
    output: Option<PathBuf>,
    output_arg: usize,
    inputs: Vec<PathBuf>,
    dep: DepOptions,
    debug: bool,
    record_switches: bool,
    /// The `old` sides of the prefix maps that cover `__FILE__` and the like.
    macro_maps: Vec<Vec<u8>>,
    /// The `old` sides of the prefix maps that cover debug info.
    debug_maps: Vec<Vec<u8>>,
    extra_inputs: Vec<PathBuf>,
    forced_includes: bool,
    colour_set: bool,
}

impl Line {
    /// Reads the argument at `i` (with its value, if it takes one) and returns the index of the
    /// next.
    fn take(&mut self, args: &[OsString], i: usize) -> Result<usize, &'static str> {
        let a = s(&args[i]);
        if a == "\u{fffd}" {
            return Err("non-UTF-8 argument");
        }
        if a.starts_with('@') {
            return Err("response file (@file)");
        }
        if a == "-" || !a.starts_with('-') {
            self.inputs.push(PathBuf::from(&args[i]));
            return Ok(i + 1);
        }
        if a == "-E" {
            self.preprocess = true;
            return Ok(i + 1);
        }
        if let Some(why) = refused(a) {
            return Err(why);
        }
        if let Some((o, spelling)) = find_opt(a) {
            return self.option(args, i, o, spelling);
        }
        self.flag(a)?;
        Ok(i + 1)
    }

    /// Reads the option `o` with a value, spelled as `spelling` at `args[i]`; returns the index
    /// of the argument after it.
    fn option(
        &mut self,
        args: &[OsString],
        i: usize,
        o: &Opt,
        spelling: Spelling,
    ) -> Result<usize, &'static str> {
        let a = s(&args[i]);
        let (value, value_arg, next) = match spelling {
            Spelling::Separate => match args.get(i + 1) {
                Some(v) => (s(v), i + 1, i + 2),
                None => return Err("flag without its value"),
            },
            Spelling::Inline(at) => (&a[at..], i, i + 1),
        };
        if value == "\u{fffd}" {
            return Err("non-UTF-8 argument");
        }
        // A glued value that looks like a flag (`-I-`, clang's `-include-pch`) may be read
        // otherwise by another compiler; `-o-` (stdout) is the one kept.
        if matches!(spelling, Spelling::Inline(_))
            && value.starts_with('-')
            && !(o.role == Role::Output && value == "-")
        {
            return Err("ambiguous option");
        }
        match o.role {
            Role::Output => {
                if self.output.is_some() {
                    return Err("several -o outputs");
                }
                self.output = Some(PathBuf::from(value));
                self.output_arg = value_arg;
            }
            Role::Lang if !cacheable_lang(value) => return Err("unsupported language (-x)"),
            Role::DepFile => {
                self.dep.repeated |= self.dep.mf.is_some();
                self.dep.mf = Some(PathBuf::from(value));
            }
            Role::ForcedInclude => self.forced_includes = true,
            Role::Lang | Role::Keyed => {}
            Role::PassThrough => return Err("pass-through flags (-X)"),
        }
        Ok(next)
    }

    /// Reads a flag without a value of its own (one argument).
    fn flag(&mut self, a: &str) -> Result<(), &'static str> {
        if KNOWN_FLAGS.contains(&a) {
            match a {
                // -S (assembly out, e.g. kbuild's asm-offsets.s) is as cacheable as -c; both
                // are in the key, so their results never mix.
                "-c" | "-S" => self.compile = true,
                "-MD" | "-MMD" => self.dep.requested = true,
                _ => {}
            }
        } else if let Some(list) = a.strip_prefix("-Wp,") {
            preprocessor_list(list, &mut self.dep)?;
        } else if let Some(list) = a.strip_prefix("-Wa,") {
            self.debug |= assembler_list(list)?;
        } else if a.starts_with("-g") {
            self.debug |= a != "-g0";
        } else if a == "-frecord-gcc-switches" {
            self.record_switches = true;
        } else if let Some(m) = a.strip_prefix("-fmacro-prefix-map=") {
            self.macro_maps.push(map_old(m));
        } else if let Some(m) = a.strip_prefix("-fdebug-prefix-map=") {
            self.debug_maps.push(map_old(m));
        } else if let Some(m) = a.strip_prefix("-ffile-prefix-map=") {
            self.macro_maps.push(map_old(m));
            self.debug_maps.push(map_old(m));
        } else if let Some(p) = a.strip_prefix("-fplugin=") {
            self.extra_inputs.push(PathBuf::from(p));
        } else if !KNOWN_PREFIXES.iter().any(|k| a.starts_with(k)) {
            return Err("unknown flag");
        }
        self.colour_set |= a.starts_with("-fdiagnostics-color")
            || a == "-fno-diagnostics-color"
            || a == "-fcolor-diagnostics"
            || a == "-fno-color-diagnostics";
        Ok(())
    }

    /// The compile the whole line asks for, if it is one pik can cache.
    fn finish(mut self) -> Result<Compile, &'static str> {
        let probe = match self.inputs.as_slice() {
            [one] if one.as_os_str() == "/dev/null" => Some(Probe::DevNull),
            [one] if one.as_os_str() == "-" => Some(Probe::Stdin),
            _ => None,
        };
        if self.preprocess {
            if probe.is_none() {
                return Err("preprocess only (-E)");
            }
            if self.output.is_none() {
                // -E writes to stdout unless told otherwise.
                self.output = Some(PathBuf::from("-"));
                self.output_arg = usize::MAX;
            }
        } else if !self.compile {
            return Err("not a compile (no -c or -S: link or query)");
        }
        let input = match self.inputs.len() {
            0 => return Err("no input file"),
            1 => self.inputs.pop().unwrap(),
            _ => return Err("several input files"),
        };
        let output = self.output.take().ok_or("no -o output")?;
        if probe.is_none() && output.as_os_str() == "/dev/null" {
            return Err("output to /dev/null");
        }
        if probe.is_none() && output.as_os_str() == "-" {
            return Err("object to stdout");
        }
        let depfile = std::mem::take(&mut self.dep).resolve(&output)?;
        Ok(Compile {
            input,
            output,
            depfile,
            debug: self.debug,
            portable: self.portable(),
            extra_inputs: self.extra_inputs,
            probe,
            output_arg: self.output_arg,
            forced_includes: self.forced_includes,
            colour_set: self.colour_set,
            colour: false,
            host: false,
        })
    }

    /// The prefixes that may be written portably: those remapped on every way they reach the
    /// output, `__FILE__` always (macro maps) and DWARF too when debug info is on (debug maps).
    fn portable(&self) -> Vec<Vec<u8>> {
        if self.record_switches {
            return Vec::new();
        }
        self.macro_maps
            .iter()
            .filter(|m| m.starts_with(b"/") && (!self.debug || self.debug_maps.contains(m)))
            .cloned()
            .collect()
    }
}

/// Reads a `-Wa,` list (options handed to the assembler); returns whether it turns debug info
/// on.
fn assembler_list(list: &str) -> Result<bool, &'static str> {
    let mut debug = false;
    for p in list.split(',') {
        if p.starts_with("-a") || p.starts_with("--MD") || p == "-MD" {
            return Err("assembler listing or depfile (-Wa,)");
        }
        if p == "-g" || p.starts_with("--gdwarf") || p.starts_with("-gdwarf") {
            debug = true;
        }
    }
    Ok(debug)
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

    fn compile(cmd: &str) -> Compile {
        match classify(&v(cmd)) {
            Call::Compile(c) => c,
            other => panic!("{cmd}: {other:?}"),
        }
    }

    fn depfile(cmd: &str) -> Option<PathBuf> {
        compile(cmd).depfile
    }

    #[test]
    fn every_spelling_of_the_output_is_understood() {
        for (cmd, out, arg) in [
            ("-c a.c -o a.o", "a.o", 3),
            ("-c a.c -oa.o", "a.o", 2),
            ("-c a.c --output a.o", "a.o", 3),
            ("-c a.c --output=a.o", "a.o", 2),
            ("-S -x c -o- -", "-", 3),
        ] {
            let c = compile(cmd);
            assert_eq!((c.output, c.output_arg), (PathBuf::from(out), arg), "{cmd}");
        }
        // gcc takes the last -o; pik does not guess.
        for cmd in ["-c a.c -o a.o -o b.o", "-c a.c -oa.o --output=b.o"] {
            assert_eq!(
                classify(&v(cmd)),
                Call::Uncacheable("several -o outputs"),
                "{cmd}"
            );
        }
        // Spellings gcc does not accept are not guessed at.
        assert_eq!(
            classify(&v("-c a.c --outputa.o")),
            Call::Uncacheable("unknown flag")
        );
    }

    #[test]
    fn every_spelling_of_the_depfile_is_understood() {
        for (cmd, d) in [
            // -MF separate and glued, with -MD or -MMD anywhere.
            ("-MD -MF dep.d -c a.c -o a.o", "dep.d"),
            ("-MD -MFdep.d -c a.c -o a.o", "dep.d"),
            ("-c a.c -o a.o -MFdep.d -MMD", "dep.d"),
            ("-MMD -MF x/dep.d -MT a.o -MQ '$a' -c a.c -o a.o", "x/dep.d"),
            ("-MMD -MFdep.d -MTa.o -MQb.o -MP -c a.c -o a.o", "dep.d"),
            // The default name, with a separate or glued -o, before or after -MD.
            ("-MD -c a.c -ox/a.o", "x/a.d"),
            ("-c a.c -ox/a.o -MMD", "x/a.d"),
            ("-MD -c a.c --output=x/a.o", "x/a.d"),
            ("-MD -c a.c -o x.y.o", "x.y.d"),
            ("-MD -c a.c -o noext", "noext.d"),
            ("-MD -c a.c -o dir.x/obj", "dir.x/obj.d"),
            // As gcc does it: a leading dot starts the suffix too.
            ("-MD -c a.c -o .hidden", ".d"),
            // Handed to the preprocessor.
            ("-Wp,-MD,dep.d -c a.c -o a.o", "dep.d"),
            ("-Wp,-MMD,x/.a.o.d -Wp,-MT,a.o -c a.c -o a.o", "x/.a.o.d"),
            ("-MD -Wp,-MF,dep.d -c a.c -o a.o", "dep.d"),
            ("-MMD -Wp,-MFdep.d -c a.c -o a.o", "dep.d"),
            (
                "-Wp,-MMD,dep.d,-MTa.o,-D_FORTIFY_SOURCE=2 -c a.c -o a.o",
                "dep.d",
            ),
        ] {
            assert_eq!(depfile(cmd), Some(PathBuf::from(d)), "{cmd}");
        }
        assert_eq!(depfile("-MT a.o -MQ b -c a.c -o a.o"), None);
        for (cmd, why) in [
            (
                "-MD -MFa.d -MF b.d -c a.c -o a.o",
                "conflicting depfile options",
            ),
            (
                "-Wp,-MD,a.d -MD -c a.c -o a.o",
                "conflicting depfile options",
            ),
            (
                "-Wp,-MD,a.d -MF b.d -c a.c -o a.o",
                "conflicting depfile options",
            ),
            (
                "-Wp,-MD,a.d -Wp,-MMD,b.d -c a.c -o a.o",
                "conflicting depfile options",
            ),
            (
                "-MD -MFa.d -Wp,-MF,b.d -c a.c -o a.o",
                "conflicting depfile options",
            ),
            ("-MF dep.d -c a.c -o a.o", "-MF without -MD or -MMD"),
            ("-MFdep.d -c a.c -o a.o", "-MF without -MD or -MMD"),
            ("-Wp,-MF,dep.d -c a.c -o a.o", "-MF without -MD or -MMD"),
            ("-MD -MF - -c a.c -o a.o", "depfile to stdout (-MF -)"),
            ("-MD -MF- -c a.c -o a.o", "ambiguous option"),
            ("-Wp,-MD -c a.c -o a.o", "unsupported -Wp, flag"),
            ("-Wp,-MDdep.d -c a.c -o a.o", "unsupported -Wp, flag"),
            ("-Wp,-include,x.h -c a.c -o a.o", "unsupported -Wp, flag"),
            ("-Wp,-M -c a.c -o a.o", "unsupported -Wp, flag"),
            ("-MDdep.d -c a.c -o a.o", "unknown flag"),
            ("-MG -MD -c a.c -o a.o", "unknown flag"),
            ("-M -c a.c -o a.o", "dependency output only (-M)"),
            ("-MD -c a.c -o a.o -MF", "flag without its value"),
        ] {
            assert_eq!(classify(&v(cmd)), Call::Uncacheable(why), "{cmd}");
        }
    }

    #[test]
    fn every_spelling_of_forced_includes_and_search_paths_is_understood() {
        for cmd in [
            "-include x.h -c a.c -o a.o",
            "-includex.h -c a.c -o a.o",
            "--include x.h -c a.c -o a.o",
            "--include=x.h -c a.c -o a.o",
            "-imacros x.h -c a.c -o a.o",
            "-imacrosx.h -c a.c -o a.o",
            "--imacros=x.h -c a.c -o a.o",
        ] {
            assert!(compile(cmd).forced_includes, "{cmd}");
        }
        // Values taken as values, never as inputs.
        for cmd in [
            "-I inc -Iinc2 --include-directory=inc3 --include-directory inc4 -c a.c -o a.o",
            "-isystem sys -isystemsys2 -idirafter late -idirafterlate2 -c a.c -o a.o",
            "-iquote q -iquoteq2 -iprefix p -iprefixp2 -iwithprefix w -iwithprefixw2 -c a.c -o a.o",
            "-iwithprefixbefore b -iwithprefixbeforeb2 -isysroot r -isysrootr2 -c a.c -o a.o",
            "-imultiarch m -imultiarchm2 -imultilib l -imultilibl2 -c a.c -o a.o",
            "--sysroot / -c a.c -o a.o",
            "--sysroot=/dev/null -c a.c -o a.o",
            "-D X -DY=1 -U Z -UW --param max-inline-insns-single=10 --param=a=1 -c a.c -o a.o",
            "-target aarch64-linux-gnu --target=aarch64-linux-gnu -c a.c -o a.o",
        ] {
            let c = compile(cmd);
            assert_eq!(c.input, PathBuf::from("a.c"), "{cmd}");
            assert!(!c.forced_includes, "{cmd}");
        }
        for (cmd, why) in [
            // clang's -include-pch, -I- and the like: a glued value that looks like a flag.
            ("-include-pch x.pch -c a.c -o a.o", "precompiled header"),
            ("-I- -c a.c -o a.o", "ambiguous option"),
            ("-isystem-after x -c a.c -o a.o", "ambiguous option"),
            ("--sysroot/ -c a.c -o a.o", "unknown flag"),
            ("--includex.h -c a.c -o a.o", "unknown flag"),
            ("-c a.c -o a.o -include", "flag without its value"),
            (
                "-Xpreprocessor -MD -c a.c -o a.o",
                "pass-through flags (-X)",
            ),
            ("-Xassembler -a -c a.c -o a.o", "pass-through flags (-X)"),
            (
                "-fopt-info-vec=report.txt -c a.c -o a.o",
                "extra outputs (-fopt-info=file)",
            ),
        ] {
            assert_eq!(classify(&v(cmd)), Call::Uncacheable(why), "{cmd}");
        }
        assert_eq!(
            compile("-fopt-info-vec -c a.c -o a.o").output,
            PathBuf::from("a.o")
        );
    }

    #[test]
    fn every_spelling_of_the_language_is_checked() {
        for cmd in [
            "-x c -c a.c -o a.o",
            "-xc -c a.c -o a.o",
            "-xassembler-with-cpp -c a.S -o a.o",
            "--language c -c a.c -o a.o",
            "--language=c -c a.c -o a.o",
        ] {
            compile(cmd);
        }
        for cmd in [
            "-x c++-header -c a.h -o a.gch",
            "-xc++-header -c a.h -o a.gch",
            "--language=objective-c -c a.m -o a.o",
            "-xc -x go -c a.c -o a.o",
        ] {
            assert_eq!(
                classify(&v(cmd)),
                Call::Uncacheable("unsupported language (-x)"),
                "{cmd}"
            );
        }
    }

    #[test]
    fn an_explicit_colour_choice_is_seen() {
        for cmd in [
            "-fdiagnostics-color -c a.c -o a.o",
            "-fdiagnostics-color=never -c a.c -o a.o",
            "-fno-diagnostics-color -c a.c -o a.o",
            "-fcolor-diagnostics -c a.c -o a.o",
        ] {
            let c = compile(cmd);
            assert!(c.colour_set && !c.colour, "{cmd}");
        }
        assert!(!compile("-c a.c -o a.o").colour_set);
    }
}
