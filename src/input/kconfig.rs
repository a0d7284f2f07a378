//! Kconfig: the base config (defconfig, the vendor `<soc>_defconfig`, tinyconfig) is made by the
//! kernel's own make targets, fragments are merged by the kernel's own `merge_config.sh`, and
//! `olddefconfig` resolves the result. Then pik checks that every symbol it or the user asked for
//! survived with the value asked for: it never silently builds something else.

use crate::build::kbuild::Kbuild;
use crate::input::data::DataDir;
use crate::input::target::{Profile, Target};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Who asked for a fragment's settings, which decides what happens when Kconfig cannot keep
/// one (see [`verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// The target's own fragment (`bcm2712.config`).
    Target,
    /// The profile's fragments (`mini.config`).
    Profile,
    /// `nixos.config`: what NixOS asserts of a kernel.
    NixOS,
    /// The user: `--fragment` and `--set`.
    User,
}

/// A fragment to merge: where it came from, who asked for it, and its text.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// For messages and the manifest (`<built-in>/kconfigs/bcm2712.config`, `--set`, a path).
    pub origin: String,
    /// Who asked.
    pub asker: Asker,
    /// The `.config`-format text.
    pub text: String,
}

/// A requested value: `Some("y")`, `Some("\"-v8\"")`, or `None` for "not set"/`=n`.
pub type Wanted = Option<String>;

/// Parses `.config`-format text into (symbol without `CONFIG_`, value) pairs, in order.
/// `# CONFIG_X is not set` and `CONFIG_X=n` both give `None`.
pub fn parse(text: &str) -> Vec<(String, Wanted)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# CONFIG_") {
            if let Some(sym) = rest.strip_suffix(" is not set") {
                out.push((sym.to_string(), None));
            }
        } else if let Some(rest) = line.strip_prefix("CONFIG_") {
            if let Some((sym, val)) = rest.split_once('=') {
                let val = val.trim();
                out.push((sym.to_string(), (val != "n").then(|| val.to_string())));
            }
        }
    }
    out
}

/// The set symbols of a final `.config` (unset ones are absent).
pub fn read_config(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(values(&text))
}

/// The set symbols of `.config`-format text (without `CONFIG_`) and their raw values.
pub fn values(text: &str) -> BTreeMap<String, String> {
    parse(text)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// A `.config` value as the kernel means it: a double-quoted string without its quotes and
/// escapes, anything else as it is.
pub fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// Splits and checks one `--set CONFIG_FOO=value`: the symbol is upper-case letters, digits and
/// `_`; the value is `y`, `m`, `n`, a decimal or hex number, a double-quoted string, or a plain
/// word — never empty, never with a line break (it would become a second setting).
pub fn check_set(s: &str) -> Result<(&str, &str)> {
    let hint = "expected CONFIG_SYMBOL=value, e.g. --set CONFIG_PREEMPT=y, --set CONFIG_HZ=250, \
                --set CONFIG_CMDLINE='\"console=ttyAMA10\"'";
    let (sym, val) = s
        .split_once('=')
        .with_context(|| format!("--set {s:?}: no `=`; {hint}"))?;
    let sym = sym.strip_prefix("CONFIG_").unwrap_or(sym);
    if sym.is_empty()
        || !sym
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    {
        bail!(
            "--set {s:?}: {sym:?} is not a Kconfig symbol (upper-case letters, digits, _); {hint}"
        );
    }
    let plain_word = |v: &str| {
        v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.,:/+@".contains(&c))
    };
    let quoted = |v: &str| {
        v.len() >= 2
            && v.starts_with('"')
            && v.ends_with('"')
            && !v.chars().any(|c| c.is_control())
            && {
                // Inner quotes must be escaped, as in a .config.
                let inner = &v[1..v.len() - 1];
                let mut esc = false;
                inner.chars().all(|c| {
                    let ok = esc || c != '"';
                    esc = !esc && c == '\\';
                    ok
                }) && !esc
            }
    };
    if val.is_empty() {
        bail!("--set {s:?}: the value is empty; use CONFIG_{sym}=n to unset it, or \"\" for an empty string");
    }
    if !(plain_word(val) || quoted(val)) {
        bail!(
            "--set {s:?}: {val:?} is not a Kconfig value (y, m, n, a number, a plain word, or a \
             double-quoted string without line breaks)"
        );
    }
    Ok((sym, val))
}

/// Parses `--set` arguments (`CONFIG_FOO=y`, `FOO=m`, `CONFIG_BAR="x"`, `FOO=n`) into a fragment.
pub fn set_fragment(sets: &[String]) -> Result<Option<Fragment>> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for s in sets {
        let (sym, val) = check_set(s)?;
        if val == "n" {
            text.push_str(&format!("# CONFIG_{sym} is not set\n"));
        } else {
            text.push_str(&format!("CONFIG_{sym}={val}\n"));
        }
    }
    Ok(Some(Fragment {
        origin: "--set".into(),
        asker: Asker::User,
        text,
    }))
}

/// The base config target to run: the vendor defconfig when wanted and present, else `base`.
pub fn base_target(tree: &Path, arch: &str, base: &str, vendor: Option<&str>) -> String {
    match vendor {
        Some(v)
            if tree
                .join("arch")
                .join(arch)
                .join("configs")
                .join(v)
                .is_file() =>
        {
            v.to_string()
        }
        _ => base.to_string(),
    }
}

/// The fragments in merge order: the target's, the profile's, `nixos.config` (unless `nixos` is
/// false), the user's `--fragment` files, then the `--set` values.
pub fn fragments(
    kdata: &DataDir,
    target: &Target,
    profile: &Profile,
    nixos: bool,
    user: &[PathBuf],
    set: &[String],
) -> Result<Vec<Fragment>> {
    let mut builtin = vec![(target.fragment.clone(), Asker::Target)];
    builtin.extend(
        profile
            .fragments
            .iter()
            .map(|f| (f.clone(), Asker::Profile)),
    );
    if nixos {
        builtin.push(("nixos.config".into(), Asker::NixOS));
    }
    let mut out = Vec::new();
    for (n, asker) in builtin {
        let text = String::from_utf8(kdata.read_required(&n)?)
            .with_context(|| format!("{} is not UTF-8", kdata.describe(&n)))?;
        out.push(Fragment {
            origin: kdata.describe(&n),
            asker,
            text,
        });
    }
    for f in user {
        let text = crate::fsutil::read_text(f, crate::fsutil::TEXT_LIMIT)
            .with_context(|| format!("reading --fragment {}", f.display()))?;
        if parse(&text).is_empty() {
            bail!(
                "--fragment {} has no CONFIG_ settings; is it a Kconfig fragment?",
                f.display()
            );
        }
        out.push(Fragment {
            origin: f.display().to_string(),
            asker: Asker::User,
            text,
        });
    }
    out.extend(set_fragment(set)?);
    Ok(out)
}

/// Makes `<build>/.config`: base target, then `fragments` merged in order, then olddefconfig,
/// then the check ([`verify`]). Returns the check's warnings.
pub fn configure(
    kb: &Kbuild,
    base: &str,
    fragments: &[Fragment],
    defining: &[String],
) -> Result<Vec<String>> {
    let build = &kb.build_dir;
    kb.run(&[base], &[], &mut |_| {})
        .with_context(|| format!("making the base config ({base})"))?;
    let frag_dir = build.join("pik-fragments");
    std::fs::create_dir_all(&frag_dir)?;
    let mut paths = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        let p = frag_dir.join(format!("{:02}.config", i));
        std::fs::write(&p, format!("# from {}\n{}", f.origin, f.text))?;
        paths.push(p);
    }
    let config = build.join(".config");
    if !paths.is_empty() {
        let script = kb.tree.join("scripts/kconfig/merge_config.sh");
        let mut cmd = Command::new(&script);
        cmd.arg("-m");
        // -Q (no warning when a fragment overrides a value) came in Linux 6.4; older trees
        // just warn.
        if std::fs::read_to_string(&script).is_ok_and(|t| t.contains("\"-Q\")")) {
            cmd.arg("-Q");
        }
        let out = crate::interrupt::output(
            cmd.arg("-O")
                .arg(build)
                .arg(&config)
                .args(&paths)
                .current_dir(build)
                .env("LC_ALL", "C"),
            "the kernel's scripts/kconfig/merge_config.sh",
        )?;
        kb.append_log(&out.stdout);
        kb.append_log(&out.stderr);
        if !out.status.success() {
            bail!(
                "merge_config.sh failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    kb.run(&["olddefconfig"], &[], &mut |_| {})
        .context("resolving the merged config (olddefconfig)")?;
    verify(&kb.tree, &config, fragments, defining)
}

/// Checks every symbol the fragments request against the final config (the last request for a
/// symbol wins) and returns the warnings to show.
///
/// Whose settings win: the user's requests (`--fragment`, `--set`) must survive, and so must
/// `nixos.config`'s and the settings that define the target (`defining`: page size,
/// LOCALVERSION, what the firmware image needs) — any of those lost is an error naming the
/// symbol, the requested and the final value. A built-in value (target or profile fragment)
/// that the user's settings made impossible, or that this kernel tree does not have, is a
/// warning naming both sources and the final value.
pub fn verify(
    tree: &Path,
    config: &Path,
    fragments: &[Fragment],
    defining: &[String],
) -> Result<Vec<String>> {
    let wanted = requests(fragments);
    let have = read_config(config)?;
    let unmet: Vec<&String> = wanted
        .iter()
        .filter(|(s, r)| !satisfied(&r.value, have.get(*s)))
        .map(|(s, _)| s)
        .collect();
    if unmet.is_empty() {
        return Ok(Vec::new());
    }
    // Only on failure: learn the symbols' definitions to explain them, and to accept an earlier
    // request for one member of a choice that a later request for another member overrode.
    let defs = definitions(tree);
    let user: Vec<&Fragment> = fragments
        .iter()
        .filter(|f| f.asker == Asker::User)
        .collect();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for sym in unmet {
        let r = &wanted[sym];
        let def = defs.get(sym.as_str());
        // A setting that defines the target is never given up for another choice member.
        if !defining.contains(sym) && overridden_in_choice(sym, r, def, &wanted, &have) {
            continue;
        }
        let got = have.get(sym).map(|s| s.as_str()).unwrap_or("it not set");
        let line = format!(
            "CONFIG_{sym}: requested {} (from {}), final config has {got}",
            r.value.as_deref().unwrap_or("n (not set)"),
            r.origin
        );
        let hard = matches!(r.asker, Asker::User | Asker::NixOS) || defining.contains(sym);
        match def {
            None if !hard => warnings.push(format!(
                "{line}: this kernel tree does not have it (skipped)"
            )),
            Some(d) if !hard && !user.is_empty() => warnings.push(format!(
                "{line}: your settings win over pik's built-in value ({})",
                user_causes(d, &defs, &user)
            )),
            _ => {
                let why = why_dropped(have.get(sym), def);
                let yours = match def {
                    Some(d) if r.asker != Asker::User && !user.is_empty() => {
                        format!(" (your settings: {})", user_causes(d, &defs, &user))
                    }
                    _ => String::new(),
                };
                errors.push(format!("  {line}{why}{yours}"));
            }
        }
    }
    if !errors.is_empty() {
        bail!(
            "Kconfig did not keep {} requested setting{} (pik will not build a different config \
             than asked):\n{}\nfix or drop these settings; the resolved config is {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n"),
            config.display()
        );
    }
    Ok(warnings)
}

/// One request for a symbol: its value, where it came from, who asked.
struct Request {
    value: Wanted,
    origin: String,
    asker: Asker,
    /// Position of its fragment in merge order.
    order: usize,
}

/// The last request for each symbol, in merge order.
fn requests(fragments: &[Fragment]) -> BTreeMap<String, Request> {
    let mut wanted = BTreeMap::new();
    for (order, f) in fragments.iter().enumerate() {
        for (sym, value) in parse(&f.text) {
            let r = Request {
                value,
                origin: f.origin.clone(),
                asker: f.asker,
                order,
            };
            wanted.insert(sym, r);
        }
    }
    wanted
}

fn satisfied(want: &Wanted, got: Option<&String>) -> bool {
    match (want, got) {
        (None, None) => true,
        (Some(w), Some(g)) => same_value(w, g),
        _ => false,
    }
}

/// A request for one member of a choice that a later request for another member replaced.
fn overridden_in_choice(
    sym: &str,
    r: &Request,
    def: Option<&Definition>,
    wanted: &BTreeMap<String, Request>,
    have: &BTreeMap<String, String>,
) -> bool {
    let (Some(_), Some(d)) = (&r.value, def) else {
        return false;
    };
    d.choice.iter().any(|other| {
        other != sym
            && have.get(other).is_some_and(|v| v == "y")
            && wanted
                .get(other)
                .is_some_and(|o| o.value.as_deref() == Some("y") && o.order > r.order)
    })
}

/// Why Kconfig dropped a symbol, from its definition.
fn why_dropped(got: Option<&String>, def: Option<&Definition>) -> String {
    match (got, def) {
        (Some(_), _) => String::new(),
        (None, None) => " — no Kconfig file in this tree defines it (unknown symbol: check the \
                         spelling and the kernel version)"
            .to_string(),
        (None, Some(d)) if !d.deps.is_empty() => format!(
            " — dropped because its dependencies are not met ({}: {})",
            d.file,
            d.deps.join("; ")
        ),
        (None, Some(d)) => format!(
            " — dropped by Kconfig (defined in {}; its menu, choice or selects decide)",
            d.file
        ),
    }
}

/// The user's settings a built-in value depends on (through `depends on`, a few levels deep),
/// or the user's fragments when none is found that way.
fn user_causes(
    def: &Definition,
    defs: &BTreeMap<String, Definition>,
    user: &[&Fragment],
) -> String {
    let mut requested: BTreeMap<String, (Wanted, &str)> = BTreeMap::new();
    for f in user {
        for (sym, v) in parse(&f.text) {
            requested.insert(sym, (v, &f.origin));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    // What it depends on, and the other members of its choice (one of them chosen wins).
    let mut frontier: Vec<String> = dep_symbols(def);
    frontier.extend(def.choice.iter().cloned());
    let mut causes = Vec::new();
    for _ in 0..8 {
        let mut next = Vec::new();
        for s in frontier {
            if !seen.insert(s.clone()) {
                continue;
            }
            if let Some((v, origin)) = requested.get(&s) {
                causes.push(format!(
                    "CONFIG_{s}={} from {origin}",
                    v.as_deref().unwrap_or("n")
                ));
            }
            next.extend(defs.get(&s).map(dep_symbols).unwrap_or_default());
        }
        frontier = next;
    }
    if causes.is_empty() {
        let origins: Vec<&str> = user.iter().map(|f| f.origin.as_str()).collect();
        format!("set by {}", origins.join(", "))
    } else {
        causes.join(", ")
    }
}

fn same_value(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            format!("0x{}", h.to_ascii_lowercase())
        } else {
            s.to_string()
        }
    };
    norm(a) == norm(b)
}

/// Where and how a symbol is defined.
#[derive(Debug, Default)]
struct Definition {
    /// Kconfig file, relative to the tree.
    file: String,
    /// Its `depends on` lines, and the `if` blocks around it (also those around the `source`
    /// line that reads its file).
    deps: Vec<String>,
    /// All members of the choice it belongs to (empty when not in a choice).
    choice: Vec<String>,
}

/// One Kconfig file, read: its definitions (with the `if` conditions around each) and the
/// files it sources (with the conditions around each `source` line).
#[derive(Default)]
struct KconfigFile {
    defs: Vec<(String, Definition)>,
    sources: Vec<(String, Vec<String>)>,
}

/// Every `config`/`menuconfig` definition in the tree's Kconfig files (first one wins).
fn definitions(tree: &Path) -> BTreeMap<String, Definition> {
    let mut files: BTreeMap<String, KconfigFile> = BTreeMap::new();
    for e in walkdir::WalkDir::new(tree).into_iter().flatten() {
        let name = e.file_name().to_string_lossy();
        if !e.file_type().is_file() || !name.starts_with("Kconfig") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let rel = e.path().strip_prefix(tree).unwrap_or(e.path());
        let rel = rel.display().to_string();
        files.insert(rel.clone(), read_kconfig(&rel, &text));
    }
    // Conditions a file inherits from the `if` blocks around the line that sources it, and
    // from those around its sourcer's, up to the top.
    let mut sourced_by: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (rel, f) in files.iter() {
        for (path, conds) in &f.sources {
            sourced_by
                .entry(path.clone())
                .or_insert_with(|| (rel.clone(), conds.clone()));
        }
    }
    let mut defs: BTreeMap<String, Definition> = BTreeMap::new();
    for (rel, f) in files {
        let mut outer = Vec::new();
        let mut at = rel.clone();
        // Bounded: a Kconfig tree is a few levels deep, and a loop must not hang pik.
        for _ in 0..32 {
            let Some((parent, conds)) = sourced_by.get(&at) else {
                break;
            };
            outer.extend(conds.iter().map(|c| format!("if {c}")));
            at = parent.clone();
        }
        for (sym, mut d) in f.defs {
            d.deps.extend(outer.iter().cloned());
            defs.entry(sym).or_insert(d);
        }
    }
    defs
}

/// Reads one Kconfig file's definitions, `if` blocks and `source` lines.
fn read_kconfig(rel: &str, text: &str) -> KconfigFile {
    let mut f = KconfigFile::default();
    let mut current: Option<usize> = None;
    let mut choice: Option<Vec<String>> = None;
    let mut ifs: Vec<String> = Vec::new();
    // Lines continued with a backslash are one statement (`select X \` / `if Y`).
    let joined = text.replace("\\\n", " ");
    for line in joined.lines() {
        let t = line.trim();
        let word = t.split_whitespace().next().unwrap_or("");
        match word {
            "config" | "menuconfig" => {
                let sym = t[word.len()..].trim().to_string();
                if let Some(c) = choice.as_mut() {
                    c.push(sym.clone());
                }
                let deps = ifs.iter().map(|c| format!("if {c}")).collect();
                f.defs.push((
                    sym,
                    Definition {
                        file: rel.to_string(),
                        deps,
                        choice: Vec::new(),
                    },
                ));
                current = Some(f.defs.len() - 1);
            }
            "choice" => {
                choice = Some(Vec::new());
                current = None;
            }
            "endchoice" => {
                if let Some(members) = choice.take() {
                    for (sym, d) in f.defs.iter_mut() {
                        if members.contains(sym) && d.choice.is_empty() {
                            d.choice = members.clone();
                        }
                    }
                }
                current = None;
            }
            "if" => {
                ifs.push(t[2..].split('#').next().unwrap_or("").trim().to_string());
                current = None;
            }
            "endif" => {
                ifs.pop();
                current = None;
            }
            "source" | "rsource" | "osource" => {
                let path = t[word.len()..].trim().trim_matches('"').to_string();
                f.sources.push((path, ifs.clone()));
                current = None;
            }
            "endmenu" | "menu" | "comment" => current = None,
            _ => {
                if let (Some(i), Some(dep)) = (current, t.strip_prefix("depends on ")) {
                    f.defs[i].1.deps.push(format!("depends on {dep}"));
                }
            }
        }
    }
    f
}

/// The symbols named in a definition's `depends on` lines and `if` blocks.
fn dep_symbols(d: &Definition) -> Vec<String> {
    d.deps
        .iter()
        .flat_map(|l| {
            l.trim_start_matches("depends on")
                .trim_start_matches("if ")
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fragments() {
        let v =
            parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=n\n# comment\n");
        assert_eq!(
            v,
            vec![
                ("A".into(), Some("y".into())),
                ("B".into(), None),
                ("C".into(), Some("\"x y\"".into())),
                ("D".into(), None)
            ]
        );
    }

    #[test]
    fn set_fragment_forms() {
        let f = set_fragment(&["CONFIG_A=y".into(), "B=n".into()])
            .unwrap()
            .unwrap();
        assert_eq!(f.text, "CONFIG_A=y\n# CONFIG_B is not set\n");
        assert!(set_fragment(&["nonsense".into()]).is_err());
        assert!(set_fragment(&["CONFIG_A B=y".into()]).is_err());
        for ok in [
            "CONFIG_HZ=250",
            "CONFIG_X=0x1f",
            "CONFIG_S=\"a \\\"b\\\" c\"",
            "CONFIG_S=\"\"",
        ] {
            assert!(check_set(ok).is_ok(), "{ok}");
        }
        for bad in [
            "FOO",
            "CONFIG_X=",
            "CONFIG_lower=y",
            "CONFIG_X=y\nCONFIG_Y=y",
            "CONFIG_S=\"a\nb\"",
            "CONFIG_S=\"unterminated",
            "CONFIG_S=\"a\"b\"",
            "CONFIG_S=two words",
        ] {
            assert!(check_set(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verify_names_symbol_values_and_origin() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("Kconfig"),
            "config KNOWN\n\tbool \"k\"\n\tdepends on OTHER\nchoice\n\tprompt \"p\"\nconfig C1\n\tbool \"1\"\nconfig C2\n\tbool \"2\"\nendchoice\n",
        )
        .unwrap();
        let cfg = t.path().join(".config");
        std::fs::write(&cfg, "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_HEX=0x1F\n").unwrap();
        let frag = |origin: &str, asker, text: &str| Fragment {
            origin: origin.into(),
            asker,
            text: text.into(),
        };
        let ok = frag(
            "f1",
            Asker::Target,
            "CONFIG_A=y\nCONFIG_B=n\nCONFIG_GONE=n\nCONFIG_HEX=0x1f\n",
        );
        assert!(verify(t.path(), &cfg, std::slice::from_ref(&ok), &[])
            .unwrap()
            .is_empty());
        let bad = frag(
            "--set",
            Asker::User,
            "CONFIG_KNOWN=y\nCONFIG_NOPE=m\nCONFIG_A=m\n",
        );
        let e = format!("{:#}", verify(t.path(), &cfg, &[ok, bad], &[]).unwrap_err());
        assert!(
            e.contains("CONFIG_KNOWN: requested y (from --set)") && e.contains("depends on OTHER"),
            "{e}"
        );
        assert!(
            e.contains("CONFIG_NOPE") && e.contains("unknown symbol"),
            "{e}"
        );
        assert!(
            e.contains("CONFIG_A: requested m (from --set), final config has y"),
            "{e}"
        );
        // A later request for another member of the same choice overrides an earlier one.
        std::fs::write(&cfg, "CONFIG_C2=y\nCONFIG_A=y\n").unwrap();
        let f1 = frag("target", Asker::Target, "CONFIG_C1=y\n");
        let f2 = frag("--set", Asker::User, "CONFIG_C2=y\n");
        verify(t.path(), &cfg, &[f1.clone(), f2.clone()], &[]).unwrap();
        // The user's own later request for C1 must survive: it did not.
        let f1 = frag("user.config", Asker::User, "CONFIG_C1=y\n");
        assert!(verify(t.path(), &cfg, &[f2, f1], &[]).is_err());
    }

    #[test]
    fn the_users_settings_win_over_built_in_values() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("Kconfig"),
            "config MMC\n\ttristate \"m\"\nconfig SDHCI\n\ttristate \"s\"\n\tdepends on MMC\n\
             config BRCMSTB\n\ttristate \"b\"\n\tdepends on SDHCI && OF\nconfig PAGES\n\tbool \"p\"\n\tdepends on MMC=y\n",
        )
        .unwrap();
        let cfg = t.path().join(".config");
        std::fs::write(&cfg, "CONFIG_MMC=m\nCONFIG_SDHCI=m\nCONFIG_BRCMSTB=m\n").unwrap();
        let target = Fragment {
            origin: "bcm2712.config".into(),
            asker: Asker::Target,
            text: "CONFIG_MMC=y\nCONFIG_BRCMSTB=y\nCONFIG_GONE_IN_THIS_TREE=y\n".into(),
        };
        let user = Fragment {
            origin: "distro.config".into(),
            asker: Asker::User,
            text: "CONFIG_MMC=m\n".into(),
        };
        let w = verify(t.path(), &cfg, &[target.clone(), user.clone()], &[]).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        let brcm = w.iter().find(|l| l.contains("CONFIG_BRCMSTB")).unwrap();
        assert!(
            brcm.contains("from bcm2712.config")
                && brcm.contains("final config has m")
                && brcm.contains("CONFIG_MMC=m from distro.config"),
            "{brcm}"
        );
        assert!(w
            .iter()
            .any(|l| l.contains("GONE_IN_THIS_TREE") && l.contains("does not have")));
        // Without the user's settings the same loss is pik's to explain: an error.
        assert!(verify(t.path(), &cfg, std::slice::from_ref(&target), &[]).is_err());
        // A setting that defines the target stays an error, whoever overrode it.
        let pages = Fragment {
            text: "CONFIG_PAGES=y\n".into(),
            ..target.clone()
        };
        let e = verify(t.path(), &cfg, &[pages, user.clone()], &["PAGES".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("CONFIG_PAGES"));
        // And so does nixos.config's.
        let nixos = Fragment {
            origin: "nixos.config".into(),
            asker: Asker::NixOS,
            text: "CONFIG_BRCMSTB=y\n".into(),
        };
        assert!(verify(t.path(), &cfg, &[nixos, user], &[]).is_err());
    }
}
