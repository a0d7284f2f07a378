//! End-to-end mini builds of both targets from Debian's linux-source-6.12 with the real cross
//! compiler: ELF checks, layout, DTBs with symbols, vermagic, shipped patches, the dev output
//! with an out-of-tree module, the build memo, interruption, and a boot under QEMU.
//! (Bit-for-bit reproducibility in another place without any cache is proved in tests/nix.rs,
//! by `nix-build --check` of the same kernel.)

mod common;
use common::*;
use object::{Object, ObjectSection};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn assert_aarch64(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let f =
        object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: not ELF: {e}", path.display()));
    assert_eq!(
        f.architecture(),
        object::Architecture::Aarch64,
        "{}",
        path.display()
    );
}

fn modinfo(ko: &Path, key: &str) -> String {
    let data = std::fs::read(ko).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let modinfo = f
        .section_by_name(".modinfo")
        .expect(".modinfo")
        .data()
        .unwrap()
        .to_vec();
    modinfo
        .split(|b| *b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find_map(|s| s.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{}: no {key} in .modinfo", ko.display()))
        .to_string()
}

fn check_build(target: &str, firmware: &str, page_symbol: &str) {
    let b = mini_build(target);
    let m = &b.manifest;
    assert_eq!(m["schema"], "pik.manifest/2");
    assert_eq!(m["target"], target);
    assert_eq!(m["profile"], "mini");
    let release = m["kernelrelease"].as_str().unwrap().to_string();
    assert!(
        release.ends_with(if target == "bcm2712" {
            "-v8-16k"
        } else {
            "-v8"
        }),
        "{release}"
    );
    assert!(m["toolchain"]["version"]
        .as_str()
        .unwrap()
        .contains("aarch64"));
    assert_eq!(m["toolchain"]["cc_blake3"].as_str().unwrap().len(), 64);
    assert!(m["objects_compiled"].as_u64().unwrap() > 500);
    // Even a cold build asks the compiler the same questions again (each Kconfig pass and
    // make run repeats its cc-option probes): the repeats come from the cache.
    assert!(
        m["cache"]["probe_hits"].as_u64().unwrap() > 100,
        "{}",
        m["cache"]
    );
    for phase in [
        "source",
        "workspace",
        "kconfig",
        "build",
        "install",
        "output",
        "total",
    ] {
        assert!(
            m["timings_s"][phase].as_f64().is_some(),
            "no timing for {phase}"
        );
    }
    // Layout: images (firmware name = same bytes), System.map, config, DTBs, modules.
    let out = &b.out;
    let image = std::fs::read(out.join("Image")).unwrap();
    assert_eq!(image, std::fs::read(out.join(firmware)).unwrap());
    assert_eq!(
        &image[56..60],
        b"ARMd",
        "Image lacks the arm64 boot header magic"
    );
    assert!(out.join("System.map").is_file());
    let cfg = config_values(&out.join("config"));
    assert_eq!(cfg.get(page_symbol).map(String::as_str), Some("y"));
    // NixOS's options (kconfigs/nixos.config) are in unless the build said --no-nixos.
    let nixos = no_nixos(target).is_empty();
    for sym in ["EFI", "CGROUPS", "AUTOFS_FS", "CRYPTO_USER_API_HASH"] {
        assert_eq!(cfg.contains_key(sym), nixos, "{target}: CONFIG_{sym}");
    }
    let moddir = out.join("lib/modules").join(&release);
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.dep",
    ] {
        assert!(moddir.join(f).is_file(), "missing {f}");
    }
    assert!(
        std::fs::symlink_metadata(moddir.join("build")).is_err(),
        "dangling build link left"
    );
    assert!(std::fs::symlink_metadata(moddir.join("source")).is_err());
    // Nothing beside the Nix layout in the tree; the manifest is beside it.
    let mut top: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    top.sort();
    let mut want = vec!["Image", "System.map", "config", "dtbs", "lib", firmware];
    want.sort();
    assert_eq!(top, want);
    assert!(out.with_extension("json").is_file());
    // Every file in the manifest matches the tree.
    for (rel, f) in m["files"].as_object().unwrap() {
        let p = out.join(rel);
        if f["kind"] != "symlink" {
            assert_eq!(
                blake3::hash(&std::fs::read(&p).unwrap()).to_hex().as_str(),
                f["blake3"].as_str().unwrap(),
                "{rel}"
            );
        }
    }
    // vmlinux and every module are AArch64 ELF; vermagic names the release.
    assert_aarch64(&b.build_dir.join("vmlinux"));
    let kos = files_with_suffix(out, ".ko");
    assert!(kos.len() >= 3, "expected a few modules, got {kos:?}");
    for ko in &kos {
        assert_aarch64(ko);
        let vm = modinfo(ko, "vermagic");
        assert!(
            vm.starts_with(&format!("{release} ")),
            "{}: vermagic {vm:?}",
            ko.display()
        );
    }
    // The Pi 5 DTB exists in both targets, parses with dtc and carries __symbols__ (-@).
    let dtb = out.join("dtbs/broadcom/bcm2712-rpi-5-b.dtb");
    let dts = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-o", "-"])
        .arg(&dtb)
        .output()
        .unwrap();
    assert!(dts.status.success(), "dtc cannot parse {}", dtb.display());
    let dts = String::from_utf8_lossy(&dts.stdout);
    assert!(dts.contains("__symbols__") && dts.contains("raspberrypi,5-model-b"));
    assert!(files_with_suffix(&out.join("dtbs/broadcom"), ".dtb").len() >= 9);
    // The shipped NixOS patches took effect in the built kernel.
    let vmlinux = std::fs::read(b.build_dir.join("vmlinux")).unwrap();
    assert!(contains(
        &vmlinux,
        b"/run/current-system/sw/bin/request-key\0"
    ));
    assert!(!contains(&vmlinux, b"/sbin/request-key\0"));
    let bridge = kos
        .iter()
        .find(|p| p.ends_with("net/bridge/bridge.ko"))
        .expect("bridge.ko");
    let bridge = std::fs::read(bridge).unwrap();
    assert!(contains(
        &bridge,
        b"/run/current-system/sw/bin/bridge-stp\0"
    ));
    assert!(!contains(&bridge, b"/sbin/bridge-stp\0"));
}

#[test]
fn bcm2712_mini_kernel() {
    check_build("bcm2712", "kernel_2712.img", "ARM64_16K_PAGES");
}

#[test]
fn bcm2711_mini_kernel() {
    check_build("bcm2711", "kernel8.img", "ARM64_4K_PAGES");
}

#[test]
fn bcm2712_mini_boots_under_qemu() {
    let b = mini_build("bcm2712");
    let mut child = Command::new("qemu-system-aarch64")
        .args([
            "-M",
            "virt",
            "-cpu",
            "max",
            "-m",
            "512M",
            "-nographic",
            "-no-reboot",
            // No network card: its boot ROM comes from ipxe-qemu, only a recommendation of
            // qemu-system-arm, and the kernel needs no network to reach its root mount.
            "-nic",
            "none",
            "-kernel",
        ])
        .arg(b.out.join("Image"))
        .args(["-append", "console=ttyAMA0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-aarch64 (apt-get install qemu-system-arm)");
    // qemu's own complaints (a missing ROM, a bad option), for the failure message.
    let mut stderr = child.stderr.take().unwrap();
    let complaints = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("qemu: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    let mut found = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let hit = line.contains("VFS: Unable to mount root");
                seen.push(line);
                if hit {
                    found = true;
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let complaints = complaints.join().unwrap_or_default();
    assert!(
        found,
        "no 'VFS: Unable to mount root' on the serial console; saw:\n{}\nqemu's stderr:\n{complaints}",
        seen.join("\n")
    );
    let release = b.manifest["kernelrelease"].as_str().unwrap();
    assert!(seen
        .iter()
        .any(|l| l.contains("Linux version") && l.contains(release)));
}

/// A small module of our own, built out of tree against the dev output with the cross
/// compiler, the way `boot.extraModulePackages` builds them: it links against a symbol of an
/// in-tree module (llc), so Module.symvers is used, and its vermagic is the kernel's.
#[test]
fn out_of_tree_module_builds_against_the_dev_output() {
    let b = mini_build("bcm2712");
    let m = &b.manifest;
    let release = m["kernelrelease"].as_str().unwrap();
    let dev = Path::new(m["dev"]["path"].as_str().expect("a dev output"));
    let kdir = dev.join("lib/modules").join(release).join("build");
    for f in [
        ".config",
        "Module.symvers",
        "Makefile",
        "include/generated/autoconf.h",
    ] {
        assert!(kdir.join(f).exists(), "dev output lacks build/{f}");
    }
    assert_aarch64(&dev.join("vmlinux"));
    let before = fingerprint(dev);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("Kbuild"), "obj-m := pikhello.o\n").unwrap();
    std::fs::write(
        work.path().join("pikhello.c"),
        r#"#include <linux/module.h>
#include <net/llc.h>
static int __init pikhello_init(void)
{
	pr_info("pikhello: sap %p\n", llc_sap_find(0x42));
	return 0;
}
static void __exit pikhello_exit(void) {}
module_init(pikhello_init);
module_exit(pikhello_exit);
MODULE_LICENSE("GPL");
"#,
    )
    .unwrap();
    run_ok(
        Command::new("make")
            .arg("-C")
            .arg(&kdir)
            .arg(format!("M={}", work.path().display()))
            .args(["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "modules"])
            .env("PATH", HOST_PATH),
    );
    let ko = work.path().join("pikhello.ko");
    assert_aarch64(&ko);
    let in_tree = files_with_suffix(&b.out.join("lib/modules"), ".ko");
    assert_eq!(modinfo(&ko, "vermagic"), modinfo(&in_tree[0], "vermagic"));
    assert!(modinfo(&ko, "vermagic").starts_with(&format!("{release} ")));
    assert_eq!(
        modinfo(&ko, "depends"),
        "llc",
        "resolved through Module.symvers"
    );
    assert_eq!(
        before,
        fingerprint(dev),
        "building a module changed the dev output"
    );
}

#[test]
fn interrupted_build_keeps_the_previous_output() {
    mini_build("bcm2712");
    let base = shared().join("interrupt");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // The previous output: a real one (from the memo, as the shared build stored it), which pik
    // recognizes as its own to replace.
    run_ok(
        pik_mini("bcm2712")
            .args(["--no-dev"])
            .arg("--out")
            .arg(base.join("result")),
    );
    let previous = fingerprint(&base.join("result"));
    let previous_manifest = std::fs::read(base.join("result.json")).unwrap();
    let mut child = pik_mini("bcm2712")
        .args(["--json", "-j2", "--no-memo"])
        .arg("--out")
        .arg(base.join("result"))
        .arg("--build-dir")
        .arg(base.join("build"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut started = false;
    for line in stdout.lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["phase"] == "build" {
            started = true;
            break;
        }
    }
    assert!(started, "the build never started");
    std::thread::sleep(Duration::from_secs(5));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!("{err}");
    assert!(!status.success());
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(fingerprint(&base.join("result")), previous);
    assert_eq!(
        std::fs::read(base.join("result.json")).unwrap(),
        previous_manifest
    );
    let leftovers: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("pik-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // No make or compiler of that build is left running.
    std::thread::sleep(Duration::from_secs(2));
    let ps = Command::new("pgrep")
        .args(["-f", &base.join("build").display().to_string()])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn identical_inputs_again_come_from_the_build_memo() {
    let a = mini_build("bcm2712");
    let base = shared().join("memo");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let out = base.join("again");
    let o = run_ok(
        pik_mini("bcm2712")
            .args(["--json"])
            .arg("--out")
            .arg(&out)
            .arg("--build-dir")
            .arg(base.join("build")),
    );
    let m = read_json(&base.join("again.json"));
    assert_eq!(m["memo"]["hit"], true, "{m}");
    assert_eq!(m["memo"]["key"], a.manifest["memo"]["key"]);
    assert_eq!(m["files"], a.manifest["files"], "the memo's tree differs");
    // The dev output comes back too, beside the output, identical.
    assert_eq!(m["dev"]["tree_blake3"], a.manifest["dev"]["tree_blake3"]);
    assert_eq!(m["dev"]["nar"]["hex"], a.manifest["dev"]["nar"]["hex"]);
    assert!(base.join("again-dev/lib/modules").is_dir());
    assert_eq!(m["objects_compiled"], 0);
    // No Kconfig, no make: the build dir was never even created.
    assert!(!base.join("build").exists());
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary"));
    // The NAR record and the Nix expression describe this output (its own name).
    assert_eq!(m["nar"]["hex"], a.manifest["nar"]["hex"]);
    assert!(m["nar"]["store_path"].as_str().unwrap().ends_with("-again"));
    assert!(std::fs::read_to_string(base.join("again.nix"))
        .unwrap()
        .contains("path = ./again;"));
}
