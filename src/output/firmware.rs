//! The firmware view of a build: the files the Raspberry Pi firmware reads from the FAT boot
//! partition — the firmware-named image, the Broadcom DTBs at the top level, `overlays/` (with
//! `overlay_map.dtb` and `README` when the tree has them) — plus `config.txt` and `cmdline.txt`
//! snippets with the settings known for the Pi 5. Written from an output tree into a temp dir
//! and swapped into place, like the output itself.

use crate::output;
use crate::output::claim::{Claim, FIRMWARE_MARKER};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What the firmware view is made from: the output tree and what its manifest says.
pub struct Source<'a> {
    /// The output tree (`--out`).
    pub out: &'a Path,
    /// Target name (`bcm2712`, `bcm2711`).
    pub target: &'a str,
    /// The firmware's name for the image (`kernel_2712.img`, `kernel8.img`).
    pub firmware_image: &'a str,
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
                "{} is not a regular file (a symlink or special file in a pik output?);                  refusing to copy it",
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
    let image = src.out.join(src.firmware_image);
    if !image.is_file() {
        bail!(
            "{} has no {}: is it a pik output tree?",
            src.out.display(),
            src.firmware_image
        );
    }
    copy(&image, src.firmware_image)?;
    let dtbs = src.out.join("dtbs/broadcom");
    for n in names_in(&dtbs)?.iter().filter(|n| n.ends_with(".dtb")) {
        copy(&dtbs.join(n), n)?;
    }
    let overlays = src.out.join("dtbs/overlays");
    let mut has_kms_pi5 = false;
    if overlays.is_dir() {
        for n in &names_in(&overlays)? {
            has_kms_pi5 |= n == "vc4-kms-v3d-pi5.dtbo";
            copy(&overlays.join(n), &format!("overlays/{n}"))?;
        }
    }
    let config = config_txt(src, has_kms_pi5);
    std::fs::write(root.join("config.txt"), config)?;
    files.push("config.txt".into());
    std::fs::write(root.join("cmdline.txt"), cmdline_txt())?;
    files.push("cmdline.txt".into());
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

/// `config.txt` for the target.
fn config_txt(src: &Source, has_kms_pi5: bool) -> String {
    let mut s = format!(
        "# config.txt written by pik for {} ({}); merge it into the boot partition's config.txt.\n\
         arm_64bit=1\n",
        src.target, src.release
    );
    if src.firmware_image == "kernel8.img" {
        s.push_str(
            "# A Pi 5 loads kernel_2712.img by default; this forces the generic 4K-page kernel.\n",
        );
    } else {
        s.push_str(
            "# The Pi 5 firmware's default name for the 16K-page kernel, stated explicitly.\n",
        );
    }
    s.push_str(&format!("kernel={}\n", src.firmware_image));
    s.push_str("# The PL011 debug UART on the Pi 5's 3-pin header is ttyAMA10.\nenable_uart=1\n");
    if has_kms_pi5 {
        s.push_str("[pi5]\ndtoverlay=vc4-kms-v3d-pi5\n[all]\n");
    }
    s
}

/// `cmdline.txt`: one line, as the firmware wants it.
fn cmdline_txt() -> &'static str {
    "console=ttyAMA10,115200 console=tty1 8250.nr_uarts=11 root=LABEL=NIXOS_SD rootfstype=ext4 rootwait\n"
}
