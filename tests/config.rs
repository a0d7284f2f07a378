//! Kconfig through the kernel's own machinery, for every target × profile, and the checks that
//! refuse what Kconfig did not keep. Errors must leave the user's tree unchanged and create no
//! output.

mod common;
use common::*;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let d = shared().join("config").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn config_only_for_every_target_and_profile() {
    let base = scratch("every");
    for target in ["bcm2712", "bcm2711"] {
        for profile in ["full", "mini"] {
            let build = base.join(format!("{target}-{profile}"));
            let out = base.join(format!("out-{target}-{profile}"));
            let o = run_ok(
                pik()
                    .args([
                        "build",
                        "--target",
                        target,
                        "--profile",
                        profile,
                        "--config-only",
                        "--json",
                    ])
                    .arg("--build-dir")
                    .arg(&build)
                    .arg("--out")
                    .arg(&out),
            );
            // --json: one JSON event per line, ending with the summary.
            let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON event"))
                .collect();
            assert!(events.iter().any(|e| e["phase"] == "kconfig"));
            assert_eq!(events.last().unwrap()["event"], "summary");
            assert!(!out.exists(), "--config-only must not create an output");
            let cfg = config_values(&build.join(".config"));
            let y = |s: &str| cfg.get(s).map(String::as_str) == Some("y");
            match target {
                "bcm2712" => {
                    assert!(y("ARM64_16K_PAGES") && y("ARM64_VA_BITS_47"));
                    assert_eq!(cfg["LOCALVERSION"], "\"-v8-16k\"");
                }
                _ => {
                    assert!(y("ARM64_4K_PAGES") && !y("ARM64_16K_PAGES"));
                    assert_eq!(cfg["LOCALVERSION"], "\"-v8\"");
                }
            }
            // nixos.config applied by default: a sample of what NixOS asserts.
            for s in [
                "DEVTMPFS",
                "CGROUPS",
                "INOTIFY_USER",
                "DMIID",
                "AUTOFS_FS",
                "SECCOMP",
                "BINFMT_ELF",
                "MODULES",
            ] {
                assert!(y(s), "{target}/{profile}: CONFIG_{s} is not y");
            }
            assert!(y("ARCH_BCM2835"));
            if profile == "mini" {
                assert!(y("KEYS") && cfg.get("BRIDGE").map(String::as_str) == Some("m"));
            }
        }
    }
    // A tuned config goes back to a fragment with the kernel's savedefconfig.
    let frag = base.join("tuned.config");
    run_ok(
        pik()
            .args([
                "config",
                "--target",
                "bcm2712",
                "--profile",
                "mini",
                "--savedefconfig",
            ])
            .arg(&frag)
            .arg("--build-dir")
            .arg(base.join("bcm2712-mini")),
    );
    let text = std::fs::read_to_string(&frag).unwrap();
    assert!(text.contains("CONFIG_ARM64_16K_PAGES=y"), "{text}");
    // --no-nixos leaves NixOS's demands out (tinyconfig has no cgroups).
    let build = base.join("no-nixos");
    run_ok(
        pik_mini("bcm2712")
            .args(["--config-only", "--no-nixos"])
            .arg("--build-dir")
            .arg(&build),
    );
    assert!(!config_values(&build.join(".config")).contains_key("CGROUPS"));
}

/// Runs a build that must fail; checks the message, the user's tree and that no output exists.
fn must_fail(name: &str, args: &[&str], extra: &[PathBuf], needles: &[&str]) {
    let tree = user_tree();
    let before = fingerprint(&tree);
    let t = scratch(name);
    let out_dir = t.join("out");
    let mut cmd = pik();
    cmd.args(["build", "--profile", "mini"])
        .args(args)
        .arg("--source")
        .arg(&tree)
        .arg("--out")
        .arg(&out_dir)
        .arg("--build-dir")
        .arg(t.join("build"));
    for p in extra {
        cmd.arg("--patch").arg(p);
    }
    let o = run(&mut cmd);
    assert!(!o.status.success(), "{name}: expected failure");
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "{name}: error lacks {n:?}: {err}");
    }
    assert!(!out_dir.exists(), "{name}: an output dir was created");
    assert_eq!(
        before,
        fingerprint(&tree),
        "{name}: the source tree changed"
    );
}

#[test]
fn unknown_symbol_is_an_error_naming_it() {
    must_fail(
        "unknown-symbol",
        &[
            "--target",
            "bcm2712",
            "--config-only",
            "--set",
            "CONFIG_PIK_NO_SUCH_SYMBOL=y",
        ],
        &[],
        &[
            "CONFIG_PIK_NO_SUCH_SYMBOL",
            "requested y (from --set)",
            "unknown symbol",
        ],
    );
}

#[test]
fn dependency_dropped_symbol_is_an_error_naming_it() {
    // 47-bit VA needs 16K pages; the bcm2711 kernel has 4K pages.
    must_fail(
        "dropped-symbol",
        &["--target", "bcm2711", "--set", "CONFIG_ARM64_VA_BITS_47=y"],
        &[],
        &[
            "CONFIG_ARM64_VA_BITS_47",
            "requested y",
            "dependencies are not met",
            "PAGE_SIZE_16KB",
        ],
    );
}

#[test]
fn failing_patch_names_patch_file_and_hunk() {
    let t = scratch("bad-patch-src");
    let bad = t.join("bad.patch");
    std::fs::write(
        &bad,
        "--- a/init/main.c\n+++ b/init/main.c\n@@ -1,3 +1,3 @@\n-this line is not in main.c\n+x\n context\n context\n",
    )
    .unwrap();
    must_fail(
        "bad-patch",
        &["--target", "bcm2712"],
        &[bad],
        &[
            "bad.patch",
            "init/main.c",
            "Hunk #1 FAILED",
            "nothing was built",
        ],
    );
    let escape = t.join("escape.patch");
    std::fs::write(
        &escape,
        "--- a/../../etc/motd\n+++ b/../../etc/motd\n@@ -0,0 +1 @@\n+x\n",
    )
    .unwrap();
    must_fail(
        "escape-patch",
        &["--target", "bcm2712"],
        &[escape],
        &["escape.patch", "outside the kernel tree"],
    );
}

#[test]
fn the_users_fragment_wins_over_built_in_values_but_not_over_the_target() {
    let t = scratch("user-wins");
    // A distro-style fragment: MMC as a module. pik's own fragments ask for the Pi 5's SD
    // controller and the MMC block driver built in, which MMC=m makes impossible.
    let distro = t.join("distro.config");
    std::fs::write(&distro, "CONFIG_MMC=m\n").unwrap();
    let o = run_ok(
        pik_mini("bcm2712")
            .args(["--config-only", "--no-nixos", "--fragment"])
            .arg(&distro)
            .arg("--build-dir")
            .arg(t.join("build")),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains("warning: CONFIG_MMC_BLOCK"))
        .unwrap_or_else(|| panic!("no warning about CONFIG_MMC_BLOCK: {err}"));
    assert!(
        warning.contains("mini.config")
            && warning.contains("final config has m")
            && warning.contains("CONFIG_MMC=m from")
            && warning.contains("distro.config"),
        "{warning}"
    );
    let cfg = config_values(&t.join("build/.config"));
    assert_eq!(cfg["MMC"], "m");
    // A setting that defines the target stays an error, even the user's own: 4K pages would
    // not be a Pi 5 kernel.
    let pages = t.join("pages.config");
    std::fs::write(&pages, "CONFIG_ARM64_4K_PAGES=y\n").unwrap();
    let o = run(pik_mini("bcm2712")
        .args(["--config-only", "--no-nixos", "--fragment"])
        .arg(&pages)
        .arg("--build-dir")
        .arg(t.join("build-pages")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CONFIG_ARM64_16K_PAGES: requested y"), "{err}");
}

#[test]
fn a_pi_4_kernel_configures_from_an_lts_tree_without_the_pi_5_device_tree() {
    let lts = PathBuf::from("/usr/src/linux-source-6.1.tar.xz");
    assert!(
        lts.is_file(),
        "this test needs Debian's linux-source-6.1 (apt-get install linux-source-6.1)"
    );
    let t = scratch("lts");
    let o = run_ok(
        pik_mini("rpi4")
            .args(["--config-only", "--source"])
            .arg(&lts)
            .arg("--build-dir")
            .arg(t.join("build")),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bcm2712-rpi-5-b.dts") && err.contains("will not boot a Raspberry Pi 5"),
        "{err}"
    );
    let cfg = config_values(&t.join("build/.config"));
    assert_eq!(cfg["LOCALVERSION"], "\"-v8\"");
    assert_eq!(cfg["ARM64_4K_PAGES"], "y");
    assert!(
        std::fs::read_to_string(t.join("build/include/config/kernel.release"))
            .map(|r| r.starts_with("6.1."))
            .unwrap_or(true)
    );
    // The Pi 5 target needs its device tree: refused, naming it.
    let o = run(pik_mini("bcm2712")
        .args(["--config-only", "--source"])
        .arg(&lts)
        .arg("--build-dir")
        .arg(t.join("build-pi5")));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bcm2712-rpi-5-b.dts"));
}
