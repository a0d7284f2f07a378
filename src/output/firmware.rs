//! The firmware view of a build: the files the Raspberry Pi firmware reads from the FAT boot
//! partition — the firmware-named image, the Broadcom DTBs at the top level, `overlays/` (with
//! `overlay_map.dtb` and `README` when the tree has them) — plus `config.txt` and `cmdline.txt`
//! with the target's board facts (its data: console per board, overlays, `[pi4]`/`[pi5]`
//! sections). Written from an output tree into a temp dir and swapped into place, like the
//! output itself.

use crate::input::target::Target;
use crate::output;
use crate::output::claim::{Claim, FIRMWARE_MARKER};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What the firmware view is made from: the output tree, the target's data and the release.
pub struct Source<'a> {
    /// The output tree (`--out`).
    pub out: &'a Path,
    /// The target (its firmware image name and board facts).
    pub target: &'a Target,
    /// The kernel release.
    pub release: &'a str,
}

/// Writes the firmware view of `src` to the claimed `dir`; returns the files written
/// (relative). Only regular files of the output tree are copied: a symlink planted in it is
/// refused, never followed.
pub fn write(src: &Source, dir: &Claim) -> Result<Vec<String>> {
    let _lock = output::lock(&dir.dest)?;
    let tmp = output::temp_beside(&dir.dest)?;
    let root = tmp.path();
    let mut files = Vec::new();
    let mut copy = |from: &Path, rel: &str| -> Result<()> {
        let md = std::fs::symlink_metadata(from)
            .with_context(|| format!("reading {}", from.display()))?;
        if !md.is_file() {
            bail!(
                "{} is not a regular file (a symlink or special file in a pik output?); \
                 refusing to copy it",
                from.display()
            );
        }
        let to = root.join(rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        files.push(rel.to_string());
        Ok(())
    };
    let image_name = src.target.firmware_image.as_str();
    let image = src.out.join(image_name);
    if !image.is_file() {
        bail!(
            "{} has no {image_name}: is it a pik output tree?",
            src.out.display(),
        );
    }
    copy(&image, image_name)?;
    let dtbs = src.out.join("dtbs/broadcom");
    for n in names_in(&dtbs)?.iter().filter(|n| n.ends_with(".dtb")) {
        copy(&dtbs.join(n), n)?;
    }
    let overlays = src.out.join("dtbs/overlays");
    let mut present = Vec::new();
    if overlays.is_dir() {
        for n in &names_in(&overlays)? {
            if let Some(stem) = n.strip_suffix(".dtbo") {
                present.push(stem.to_string());
            }
            copy(&overlays.join(n), &format!("overlays/{n}"))?;
        }
    }
    for (name, text) in boot_text(src, &present) {
        std::fs::write(root.join(&name), text)?;
        files.push(name);
    }
    // What pik wrote, so a later run recognizes the view as its own to replace.
    let marker = serde_json::json!({
        "schema": "pik.firmware/1",
        "from": src.out.display().to_string(),
        "files": files,
        "listing_blake3": crate::output::claim::listing(root, None)?,
    });
    std::fs::write(
        root.join(FIRMWARE_MARKER),
        serde_json::to_vec_pretty(&marker)?,
    )?;
    crate::output::swap_in(tmp, dir)?;
    Ok(files)
}

/// The names in a directory of the output tree, sorted (plain names: read_dir gives no others).
fn names_in(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// `config.txt`, `cmdline.txt` and the boards' own command lines (`cmdline-pi5.txt`), from the
/// target's firmware data; overlays are named only when the build has them.
fn boot_text(src: &Source, overlays: &[String]) -> Vec<(String, String)> {
    let fw = &src.target.firmware;
    let mut config = format!(
        "# config.txt written by pik for {} ({}); merge it into the boot partition's config.txt.\n\
         [all]\narm_64bit=1\nkernel={}\n",
        src.target.name, src.release, src.target.firmware_image
    );
    for l in &fw.config {
        config.push_str(&format!("{l}\n"));
    }
    let mut files = vec![("cmdline.txt".to_string(), format!("{}\n", fw.cmdline))];
    for (board, b) in &fw.boards {
        let mut lines: Vec<String> = b.config.clone();
        if let Some(cmdline) = &b.cmdline {
            let name = format!("cmdline-{board}.txt");
            lines.push(format!("cmdline={name}"));
            files.push((name, format!("{cmdline}\n")));
        }
        lines.extend(
            b.overlays
                .iter()
                .filter(|o| overlays.contains(o))
                .map(|o| format!("dtoverlay={o}")),
        );
        if !lines.is_empty() {
            config.push_str(&format!("[{board}]\n{}\n[all]\n", lines.join("\n")));
        }
    }
    files.insert(0, ("config.txt".to_string(), config));
    files
}
