//! Patch series: `patches/<target>/series` (quilt format) plus `--patch FILE`s. Patches are checked
//! for paths that leave the tree, dry-run with GNU patch, and only then applied, inside pik's private
//! workspace (never the user's tree).

use crate::input::data::{self, DataDir};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Component, Path};
use std::process::{Command, Stdio};

/// One patch to apply.
#[derive(Debug, Clone)]
pub struct Patch {
    /// Where it came from, for messages (`<built-in>/patches/nixos/0001-….patch`, a user path).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The `-p` level.
    pub strip: usize,
    /// GNU patch's fuzz factor: 0 (the default) applies only hunks whose context matches
    /// exactly (an offset is fine); `--patch-fuzz N` allows ignoring N lines of context.
    pub fuzz: u32,
}

/// Reads the series `patches/<dir>/series` (absent series = no patches) followed by the user's
/// `--patch` files, in order.
pub fn load_series(
    data: &DataDir,
    dir: &str,
    extra: &[std::path::PathBuf],
    fuzz: u32,
) -> Result<Vec<Patch>> {
    let mut out = Vec::new();
    let series_rel = format!("{dir}/series");
    if let Some(series) = data.read(&series_rel)? {
        let text = String::from_utf8(series)
            .with_context(|| format!("{} is not UTF-8", data.describe(&series_rel)))?;
        for (lineno, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let file = words.next().unwrap_or_default();
            let mut strip = 1;
            for opt in words {
                strip = opt
                    .strip_prefix("-p")
                    .and_then(|n| n.parse().ok())
                    .with_context(|| {
                        format!(
                            "{} line {}: unsupported option {opt:?} (only -pN is)",
                            data.describe(&series_rel),
                            lineno + 1
                        )
                    })?;
            }
            let rel = data::normalize(&format!("{dir}/{file}"))
                .with_context(|| format!("{} line {}", data.describe(&series_rel), lineno + 1))?;
            let bytes = data.read(&rel)?.with_context(|| {
                format!(
                    "{} line {} names {file}, which does not exist ({})",
                    data.describe(&series_rel),
                    lineno + 1,
                    data.describe(&rel)
                )
            })?;
            out.push(Patch {
                name: data.describe(&rel),
                bytes,
                strip,
                fuzz,
            });
        }
    }
    for p in extra {
        let bytes = crate::fsutil::read_regular(p, crate::fsutil::BLOB_LIMIT, false)
            .with_context(|| format!("reading --patch {}", p.display()))?;
        out.push(Patch {
            name: p.display().to_string(),
            bytes,
            strip: 1,
            fuzz,
        });
    }
    for p in &out {
        check_paths(p)?;
    }
    Ok(out)
}

/// The files a patch names, after stripping its `-p` level.
pub fn touched_files(p: &Patch) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(&p.bytes);
    let mut files = Vec::new();
    for line in text.lines() {
        let raw = if let Some(r) = line.strip_prefix("+++ ") {
            r
        } else if let Some(r) = line.strip_prefix("--- ") {
            r
        } else {
            continue;
        };
        // A timestamp may follow the name after a tab.
        let raw = raw.split('\t').next().unwrap_or("").trim_end();
        if raw == "/dev/null" || raw.is_empty() {
            continue;
        }
        let path = Path::new(raw);
        if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            bail!(
                "patch {} touches {raw:?}, a path outside the kernel tree (absolute or with ..); \
                 pik refuses such patches",
                p.name
            );
        }
        let stripped: Vec<_> = path.components().skip(p.strip).collect();
        if stripped.is_empty() {
            bail!(
                "patch {}: path {raw:?} has fewer than {} components to strip",
                p.name,
                p.strip
            );
        }
        let s = stripped
            .iter()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !files.contains(&s) {
            files.push(s);
        }
    }
    Ok(files)
}

fn check_paths(p: &Patch) -> Result<()> {
    if touched_files(p)?.is_empty() {
        bail!(
            "{} is not a patch: it names no files (expected unified diff headers)",
            p.name
        );
    }
    Ok(())
}

/// Digest of the series (order, levels, names' bytes), part of the workspace key.
pub fn series_digest(patches: &[Patch]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"pik-series-v2\0");
    for p in patches {
        h.update(&(p.strip as u64).to_le_bytes());
        h.update(&p.fuzz.to_le_bytes());
        h.update(&(p.bytes.len() as u64).to_le_bytes());
        h.update(&p.bytes);
    }
    h.finalize()
}

/// Applies `patches` in order to `tree` (pik's private copy). Each patch is dry-run first; the
/// first that would fail stops everything with an error naming the patch, the file and the hunk.
/// Hunks must match exactly (no fuzz unless the patch allows it); one found at another line is
/// applied there and reported in the notes this returns. Files the patch touches are unshared
/// first, so a hardlink farm over the user's tree never writes through to the user's inode.
pub fn apply_all(tree: &Path, patches: &[Patch]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for p in patches {
        run_patch(tree, p, true)?;
        for f in touched_files(p)? {
            let path = tree.join(&f);
            if path.exists() {
                crate::fsutil::unshare(&path)?;
            }
        }
        let log = run_patch(tree, p, false)?;
        notes.extend(offsets(&p.name, &log));
    }
    Ok(notes)
}

/// "patch X: file F: Hunk #2 succeeded at 120 (offset 3 lines)." for each hunk that did not
/// apply at the line its header names.
fn offsets(name: &str, log: &str) -> Vec<String> {
    let mut file = "";
    let mut notes = Vec::new();
    for line in log.lines() {
        if let Some(f) = line.strip_prefix("patching file ") {
            file = f.trim();
        } else if line.starts_with("Hunk #") && (line.contains("offset") || line.contains("fuzz")) {
            notes.push(format!("patch {name}: file {file}: {}", line.trim()));
        }
    }
    notes
}

/// Runs GNU patch; returns what it printed.
fn run_patch(tree: &Path, p: &Patch, dry_run: bool) -> Result<String> {
    let mut cmd = Command::new("patch");
    cmd.arg(format!("-p{}", p.strip))
        .arg(format!("--fuzz={}", p.fuzz))
        .args(["--forward", "--batch", "--no-backup-if-mismatch", "-r", "-"])
        .arg("-d")
        .arg(tree)
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if dry_run {
        cmd.arg("--dry-run");
    }
    let (mut child, registration) =
        crate::interrupt::spawn(&mut cmd, "GNU patch (install the Debian package `patch`)")?;
    child
        .stdin
        .take()
        .context("patch stdin")?
        .write_all(&p.bytes)?;
    let out = child.wait_with_output()?;
    drop(registration);
    crate::interrupt::check(&format!("applying {}", p.name))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Ok(text);
    }
    let mut why = describe_failure(&p.name, &text);
    if p.fuzz == 0 && text.contains("FAILED") {
        why.push_str(
            "\n(pik applies patches exactly: a hunk's context must match the tree, at any \
             line; --patch-fuzz N allows GNU patch's inexact matching of N context lines)",
        );
    }
    bail!("{why}")
}

/// Turns GNU patch's output into "patch X does not apply: file F, hunk #N …".
fn describe_failure(name: &str, output: &str) -> String {
    let mut current = String::new();
    let mut problems = Vec::new();
    for line in output.lines() {
        if let Some(f) = line
            .strip_prefix("checking file ")
            .or_else(|| line.strip_prefix("patching file "))
        {
            current = f.trim().to_string();
        } else if line.starts_with("Hunk #") && line.contains("FAILED") {
            problems.push(format!("file {current}: {}", line.trim()));
        } else if line.contains("Reversed (or previously applied) patch detected") {
            problems.push(format!(
                "file {current}: already applied (reversed patch detected)"
            ));
        } else if line.starts_with("can't find file to patch") {
            problems.push("a file it patches does not exist in the tree".to_string());
        } else if line.contains("No such file") || line.contains("malformed patch") {
            problems.push(format!("file {current}: {}", line.trim()));
        }
    }
    if problems.is_empty() {
        problems.push(output.trim().to_string());
    }
    format!(
        "patch {name} does not apply to this kernel tree: {}\nnothing was built; fix or drop the patch",
        problems.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(text: &str) -> Patch {
        Patch {
            name: "t.patch".into(),
            bytes: text.as_bytes().to_vec(),
            strip: 1,
            fuzz: 0,
        }
    }

    #[test]
    fn refuses_paths_outside_the_tree() {
        let p = patch("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(format!("{:#}", touched_files(&p).unwrap_err()).contains("outside"));
        let p = patch("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(touched_files(&p).is_err());
        let p = patch("--- a/x/y.c\t2020-01-01\n+++ b/x/y.c\n@@ -1 +1 @@\n-a\n+b\n");
        assert_eq!(touched_files(&p).unwrap(), vec!["x/y.c".to_string()]);
    }

    #[test]
    fn failing_hunk_is_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f.c"), "one\ntwo\nthree\n").unwrap();
        let p = patch("--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n one\n-zwei\n+2\n three\n");
        let e = format!("{:#}", apply_all(t.path(), &[p]).unwrap_err());
        assert!(
            e.contains("t.patch") && e.contains("f.c") && e.contains("Hunk #1"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("f.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }

    #[test]
    fn hunks_apply_exactly_or_not_at_all() {
        let t = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        let original = lines.join("\n") + "\n";
        std::fs::write(t.path().join("f.c"), &original).unwrap();
        // Context found 5 lines below where the header says: applied there, and reported.
        let p =
            patch("--- a/f.c\n+++ b/f.c\n@@ -5,3 +5,3 @@\n line 10\n-line 11\n+eleven\n line 12\n");
        let notes = apply_all(t.path(), &[p]).unwrap();
        assert!(
            notes.len() == 1 && notes[0].contains("offset") && notes[0].contains("f.c"),
            "{notes:?}"
        );
        assert!(std::fs::read_to_string(t.path().join("f.c"))
            .unwrap()
            .contains("line 10\neleven\nline 12\n"));
        // Context that appears nowhere (GNU patch's default fuzz 2 would apply the change next
        // to `line 20` anyway): refused, the file untouched, the hunk named.
        std::fs::write(t.path().join("f.c"), &original).unwrap();
        let fuzzy = "--- a/f.c\n+++ b/f.c\n@@ -19,5 +19,5 @@\n nothing\n similar\n-line 21\n+twenty-one\n at\n all\n";
        let e = format!("{:#}", apply_all(t.path(), &[patch(fuzzy)]).unwrap_err());
        assert!(
            e.contains("t.patch")
                && e.contains("f.c")
                && e.contains("Hunk #1")
                && e.contains("--patch-fuzz"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("f.c")).unwrap(),
            original
        );
        // The user may ask for the old behaviour.
        let mut p = patch(fuzzy);
        p.fuzz = 2;
        let notes = apply_all(t.path(), &[p]).unwrap();
        assert!(notes.iter().any(|n| n.contains("fuzz")), "{notes:?}");
    }
}
