//! Kconfig: the base config (defconfig, the vendor `<soc>_defconfig`, tinyconfig) is made by the
//! kernel's own make targets, fragments are merged by the kernel's own `merge_config.sh`, and
//! `olddefconfig` resolves the result. Then pik checks that every symbol it or the user asked for
//! survived with the value asked for: it never silently builds something else.

use crate::build::kbuild::Kbuild;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fragment to merge: where it came from and its text.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// For messages and the manifest (`<built-in>/kconfigs/bcm2712.config`, `--set`, a path).
    pub origin: String,
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
    Ok(parse(&text)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
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

/// Makes `<build>/.config`: base target, then `fragments` merged in order, then olddefconfig,
/// then the check. Returns the path of the `.config`.
pub fn configure(kb: &Kbuild, base: &str, fragments: &[Fragment]) -> Result<PathBuf> {
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
        let out = crate::interrupt::output(
            Command::new(kb.tree.join("scripts/kconfig/merge_config.sh"))
                .arg("-m")
                .arg("-Q")
                .arg("-O")
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
    verify(&kb.tree, &config, fragments)?;
    Ok(config)
}

/// Checks every symbol the fragments request against the final config (the last request for a
/// symbol wins). Errors name the symbol, the requested value, its origin and the final value.
pub fn verify(tree: &Path, config: &Path, fragments: &[Fragment]) -> Result<()> {
    let mut wanted: BTreeMap<String, (Wanted, String)> = BTreeMap::new();
    for f in fragments {
        for (sym, val) in parse(&f.text) {
            wanted.insert(sym, (val, f.origin.clone()));
        }
    }
    let have = read_config(config)?;
    let failed = |sym: &String, want: &Wanted| match (want, have.get(sym)) {
        (None, None) => false,
        (Some(w), Some(g)) => !same_value(w, g),
        _ => true,
    };
    let bad: Vec<&String> = wanted
        .iter()
        .filter(|(s, (w, _))| failed(s, w))
        .map(|(s, _)| s)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    // Only on failure: learn the symbols' definitions to explain them, and to accept an earlier
    // request for one member of a choice that a later request for another member overrode.
    let order: BTreeMap<&String, usize> = fragments
        .iter()
        .enumerate()
        .flat_map(|(i, f)| parse(&f.text).into_iter().map(move |(s, _)| (s, i)))
        .fold(BTreeMap::new(), |mut m, (s, i)| {
            if let Some((k, _)) = wanted.get_key_value(&s) {
                m.insert(k, i);
            }
            m
        });
    let defs = definitions(tree);
    let mut problems = Vec::new();
    for sym in bad {
        let (want, origin) = &wanted[sym];
        let got = have.get(sym);
        let def = defs.get(sym.as_str());
        if let (Some(_), Some(d)) = (want, def) {
            let overridden = d.choice.iter().any(|other| {
                other != sym
                    && have.get(other).is_some_and(|v| v == "y")
                    && wanted
                        .get(other)
                        .is_some_and(|(w, _)| w.as_deref() == Some("y"))
                    && order.get(other) > order.get(sym)
            });
            if overridden {
                continue;
            }
        }
        let why = match (got, def) {
            (Some(_), _) => String::new(),
            (None, None) => " — no Kconfig file in this tree defines it (unknown symbol: check \
                              the spelling and the kernel version)"
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
        };
        problems.push(format!(
            "  CONFIG_{sym}: requested {} (from {origin}), final config has {}{why}",
            want.as_deref().unwrap_or("n (not set)"),
            got.map(|s| s.as_str()).unwrap_or("it not set"),
        ));
    }
    if !problems.is_empty() {
        bail!(
            "Kconfig did not keep {} requested setting{} (pik will not build a different config \
             than asked):\n{}\nfix or drop these settings; the resolved config is {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n"),
            config.display()
        );
    }
    Ok(())
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
    /// Its `depends on` lines.
    deps: Vec<String>,
    /// All members of the choice it belongs to (empty when not in a choice).
    choice: Vec<String>,
}

/// Every `config`/`menuconfig` definition in the tree's Kconfig files (first one wins).
fn definitions(tree: &Path) -> BTreeMap<String, Definition> {
    let mut defs: BTreeMap<String, Definition> = BTreeMap::new();
    for e in walkdir::WalkDir::new(tree).into_iter().flatten() {
        let name = e.file_name().to_string_lossy();
        if !e.file_type().is_file() || !name.starts_with("Kconfig") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let file = e
            .path()
            .strip_prefix(tree)
            .unwrap_or(e.path())
            .display()
            .to_string();
        let mut current: Option<String> = None;
        let mut choice: Option<Vec<String>> = None;
        for line in text.lines() {
            let t = line.trim();
            let word = t.split_whitespace().next().unwrap_or("");
            match word {
                "config" | "menuconfig" => {
                    let sym = t[word.len()..].trim().to_string();
                    if let Some(c) = choice.as_mut() {
                        c.push(sym.clone());
                    }
                    defs.entry(sym.clone()).or_insert_with(|| Definition {
                        file: file.clone(),
                        ..Definition::default()
                    });
                    current = Some(sym);
                }
                "choice" => {
                    choice = Some(Vec::new());
                    current = None;
                }
                "endchoice" => {
                    if let Some(members) = choice.take() {
                        for m in &members {
                            if let Some(d) = defs.get_mut(m) {
                                if d.file == file && d.choice.is_empty() {
                                    d.choice = members.clone();
                                }
                            }
                        }
                    }
                    current = None;
                }
                "endmenu" | "menu" | "if" | "endif" | "source" | "comment" => current = None,
                _ => {
                    if let (Some(sym), Some(dep)) = (&current, t.strip_prefix("depends on ")) {
                        if let Some(d) = defs.get_mut(sym) {
                            if d.file == file {
                                d.deps.push(format!("depends on {dep}"));
                            }
                        }
                    }
                }
            }
        }
    }
    defs
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
        let ok = Fragment {
            origin: "f1".into(),
            text: "CONFIG_A=y\nCONFIG_B=n\nCONFIG_GONE=n\nCONFIG_HEX=0x1f\n".into(),
        };
        verify(t.path(), &cfg, std::slice::from_ref(&ok)).unwrap();
        let bad = Fragment {
            origin: "--set".into(),
            text: "CONFIG_KNOWN=y\nCONFIG_NOPE=m\nCONFIG_A=m\n".into(),
        };
        let e = format!("{:#}", verify(t.path(), &cfg, &[ok, bad]).unwrap_err());
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
        let f1 = Fragment {
            origin: "target".into(),
            text: "CONFIG_C1=y\n".into(),
        };
        let f2 = Fragment {
            origin: "--set".into(),
            text: "CONFIG_C2=y\n".into(),
        };
        verify(t.path(), &cfg, &[f1.clone(), f2.clone()]).unwrap();
        assert!(verify(t.path(), &cfg, &[f2, f1]).is_err());
    }
}
