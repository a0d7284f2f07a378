//! pik and the real Nix (Debian's nix-bin): NAR bytes, narHash and store paths on edge trees and
//! on a real kernel output, the kernel package expression written beside the output, and pik as
//! the builder of nix/kernel.nix with `nix-build --check`. Nix only ever touches a throwaway
//! store.

mod common;

use common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A `nix-store` command that keeps its state in a throwaway store under `scratch`.
fn nix_store(scratch: &Path) -> Command {
    let mut c = Command::new("nix-store");
    c.arg("--store").arg(scratch.join("store"));
    c
}

fn stdout_of(c: &mut Command) -> Vec<u8> {
    let o = c.output().expect("running nix (apt-get install nix-bin)");
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_string()
}

/// Compares everything pik says about `dir` with what Nix says.
fn check_against_nix(dir: &Path, name: &str, scratch: &Path) -> serde_json::Value {
    let ours = stdout_of(Command::new(pik_bin()).arg("nar").arg("dump").arg(dir));
    let theirs = stdout_of(nix_store(scratch).arg("--dump").arg(dir));
    assert!(
        ours == theirs,
        "{}: NAR bytes differ from nix-store --dump",
        dir.display()
    );
    let info: serde_json::Value = serde_json::from_slice(&stdout_of(
        Command::new(pik_bin())
            .args(["nar", "hash", "--json", "--name", name])
            .arg(dir),
    ))
    .unwrap();
    let nix32 = text(stdout_of(
        Command::new("nix-hash")
            .args(["--type", "sha256", "--base32"])
            .arg(dir),
    ));
    assert_eq!(info["nar_hash"], format!("sha256:{nix32}"));
    assert_eq!(info["nar_size"], theirs.len());
    let hex = text(stdout_of(
        Command::new("nix-hash").args(["--type", "sha256"]).arg(dir),
    ));
    assert_eq!(info["hex"], hex);
    let fixed = text(stdout_of(nix_store(scratch).args([
        "--print-fixed-path",
        "--recursive",
        "sha256",
        &nix32,
        name,
    ])));
    assert_eq!(info["store_path"], fixed);
    info
}

#[test]
fn edge_trees_match_nix_byte_for_byte() {
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().join("edge");
    std::fs::create_dir_all(d.join("empty-dir")).unwrap();
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::write(d.join("empty-file"), b"").unwrap();
    std::fs::write(d.join("sub/deeper/seven"), b"1234567").unwrap();
    std::fs::write(d.join("sub/eight888"), b"12345678").unwrap();
    // Names whose byte order differs from a locale's collation.
    for n in [
        ".hidden", "10", "9", "A", "Z", "a-b", "a.b", "a_b", "b", "~tilde", "é",
    ] {
        std::fs::write(d.join(n), n.as_bytes()).unwrap();
    }
    // A name that is not UTF-8.
    let raw = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
    std::fs::write(d.join(raw), b"bytes").unwrap();
    let exe = d.join("run.sh");
    std::fs::write(&exe, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Group/other execute bits alone do not make a file executable for Nix.
    let half = d.join("group-exec");
    std::fs::write(&half, "x").unwrap();
    std::fs::set_permissions(&half, std::fs::Permissions::from_mode(0o654)).unwrap();
    std::os::unix::fs::symlink("A", d.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute", d.join("dangling")).unwrap();
    std::os::unix::fs::symlink("sub", d.join("dir-link")).unwrap();
    std::fs::hard_link(d.join("A"), d.join("A-hardlink")).unwrap();
    let info = check_against_nix(&d, "edge", scratch.path());
    // And the store path is the one nix-store --add really gives, in a throwaway store.
    let added = text(stdout_of(nix_store(scratch.path()).arg("--add").arg(&d)));
    assert_eq!(info["store_path"], added);
    // A single file and a symlink as the root.
    check_against_nix(&d.join("run.sh"), "run.sh", scratch.path());
    check_against_nix(&d.join("rel-link"), "rel-link", scratch.path());
    // Deeper than 256 levels (Nix has no limit).
    let deep = scratch.path().join("deep");
    let mut p = deep.clone();
    for _ in 0..300 {
        p.push("d");
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("leaf"), "bottom").unwrap();
    check_against_nix(&deep, "deep", scratch.path());
    // `pik nar hash ..` names the parent, as nix-store --add would.
    let o = run_ok(
        pik()
            .args(["nar", "hash", "--json", ".."])
            .current_dir(d.join("sub")),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["store_path"].as_str().unwrap().ends_with("-edge"), "{v}");
}

#[test]
fn special_files_are_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().join("with-socket");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ok"), "fine").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    for sub in ["hash", "dump"] {
        let o = run(Command::new(pik_bin()).arg("nar").arg(sub).arg(&d));
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("sock") && err.contains("socket"), "{err}");
    }
    let o = run(Command::new(pik_bin())
        .args(["nar", "hash", "--name", "no spaces"])
        .arg(scratch.path()));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("store path name"));
}

#[test]
fn kernel_output_narhash_matches_nix_and_the_manifest() {
    let b = mini_build("bcm2712");
    let scratch = tempfile::tempdir().unwrap();
    let name = b.out.file_name().unwrap().to_str().unwrap().to_string();
    let info = check_against_nix(&b.out, &name, scratch.path());
    assert_eq!(b.manifest["nar"], info, "the manifest's NAR record");
    let added = text(stdout_of(
        nix_store(scratch.path()).arg("--add").arg(&b.out),
    ));
    assert_eq!(info["store_path"], added);
}

/// A stand-in for the parts of nixpkgs' `lib` the expression uses, so the wrapper itself
/// (override, features, config helpers) is evaluated for real without nixpkgs.
const EVAL: &str = r#"
let
  lib = rec {
    makeOverridable = f: args: (f args) // { override = a: makeOverridable f (args // a); };
    versionOlder = a: b: builtins.compareVersions a b < 0;
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
  };
  k = import EXPR { inherit lib; };
  k2 = k.override { features = { efiBootStub = true; }; };
  helpers = [ "isSet" "getValue" "isYes" "isNo" "isModule" "isEnabled" "isDisabled" ];
in {
  inherit (k) version modDirVersion target narHash;
  out = k.outPath;
  dev = k.dev;
  yes16k = k.config.isYes "ARM64_16K_PAGES";
  enabledBridge = k.config.isEnabled "BRIDGE";
  moduleBridge = k.config.isModule "BRIDGE";
  yesBridge = k.config.isYes "BRIDGE";
  disabledVt = k.config.isDisabled "VT";
  unsetNonsense = k.config.isSet "PIK_NO_SUCH_SYMBOL";
  older = k.kernelOlder "99.0";
  atLeast = k.kernelAtLeast "6.1";
  efiBefore = k.features.efiBootStub;
  efiAfter = k2.features.efiBootStub;
  versionAfter = k2.version;
  values = builtins.removeAttrs k.config helpers;
}
"#;

#[test]
fn nix_expression_is_a_kernel_package_for_the_build() {
    let b = mini_build("bcm2712");
    let expr = b.out.with_extension("nix");
    assert!(
        expr.is_file(),
        "pik build writes <out>.nix beside the output"
    );
    let scratch = tempfile::tempdir().unwrap();
    stdout_of(Command::new("nix-instantiate").arg("--parse").arg(&expr));
    let eval_file = scratch.path().join("eval.nix");
    let eval = |expr: &Path| {
        std::fs::write(
            &eval_file,
            EVAL.replace("EXPR", &expr.display().to_string()),
        )
        .unwrap();
        Command::new("nix-instantiate")
            .arg("--store")
            .arg(scratch.path().join("store"))
            .args(["--eval", "--strict", "--json"])
            .arg(&eval_file)
            .output()
            .unwrap()
    };
    let o = eval(&expr);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &b.manifest;
    assert_eq!(v["version"], m["inputs"]["kernel_version"]);
    assert_eq!(v["modDirVersion"], m["kernelrelease"]);
    assert_eq!(v["target"], "Image");
    assert_eq!(v["narHash"], m["nar"]["sri"]);
    // Imported by content: the tree lands at the store path pik computed.
    assert_eq!(v["out"], m["nar"]["store_path"]);
    // So is the dev output (kernel.dev, what out-of-tree module packages build against).
    assert_eq!(v["dev"], m["dev"]["nar"]["store_path"]);
    for (k, want) in [
        ("yes16k", true),
        ("enabledBridge", true),
        ("moduleBridge", true),
        ("yesBridge", false),
        ("disabledVt", true),
        ("unsetNonsense", false),
        ("older", true),
        ("atLeast", true),
        ("efiBefore", false),
        ("efiAfter", true),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    assert_eq!(v["versionAfter"], v["version"]);
    // Every CONFIG_ value equals the build's .config.
    let want: serde_json::Map<String, serde_json::Value> = config_values(&b.out.join("config"))
        .into_iter()
        .map(|(k, v)| {
            let v = match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => v,
            };
            (format!("CONFIG_{k}"), serde_json::Value::String(v))
        })
        .collect();
    assert_eq!(v["values"], serde_json::Value::Object(want));

    // A tree changed after the build is refused by Nix, not silently used.
    let copy = scratch.path().join(b.out.file_name().unwrap());
    let st = Command::new("cp")
        .arg("-a")
        .arg(&b.out)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("cp")
        .arg("-a")
        .arg(m["dev"]["path"].as_str().unwrap())
        .arg(scratch.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(&expr, copy.with_extension("nix")).unwrap();
    std::fs::write(copy.join("System.map"), "tampered").unwrap();
    let o = eval(&copy.with_extension("nix"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("hash mismatch") || err.contains("store path mismatch"),
        "{err}"
    );
}

/// `nix-build nix/kernel.nix` (pik as the builder) in a throwaway store, sandboxed (Nix 2.8
/// always sandboxes a chroot store), host tools exposed through sandbox-paths; with
/// `admin_cache`, the tests' pik cache is exposed at /var/cache/pik as an administrator would.
fn nix_build_kernel(store: &Path, admin_cache: bool, check: bool) -> std::process::Output {
    let mut paths = "/usr /bin /lib /lib64 /etc/alternatives".to_string();
    if admin_cache {
        paths.push_str(&format!(" /var/cache/pik={}", cache_dir().display()));
    }
    let mut c = Command::new("nix-build");
    c.arg("--store")
        .arg(store)
        .args(["--no-out-link", "--option", "build-users-group", ""])
        .args(["--option", "substituters", ""])
        .args(["--option", "sandbox-paths", &paths])
        .args(["--option", "cores", "0"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/kernel.nix"))
        .arg("--arg")
        .arg("pik")
        .arg(pik_bin())
        .arg("--arg")
        .arg("src")
        .arg(debian_tarball())
        .args([
            "--argstr", "target", "bcm2712", "--argstr", "profile", "mini",
        ]);
    if check {
        c.arg("--check");
    }
    run(&mut c)
}

/// The store path the builder reported for `output`.
fn reported(log: &str, output: &str) -> String {
    let prefix = format!("pik: output {output} = ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {prefix:?} line in the build log:\n{log}"))
        .to_string()
}

#[test]
fn derivation_with_pik_as_builder_rebuilds_bit_identical() {
    let a = mini_build("bcm2712");
    let scratch = shared().join("nix-builder");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let store = scratch.join("store");

    // First build: the administrator's cache holds the host build's memo entry, so the sandboxed
    // builder materializes it (same inputs, same tools: the key matches across host and sandbox).
    let first = nix_build_kernel(&store, true, false);
    assert!(first.status.success(), "nix-build failed");
    let log = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(
        log.contains("from the build memo"),
        "expected a memo hit:\n{log}"
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        log.contains(&format!("-j{cores}")),
        "NIX_BUILD_CORES=0 means every core"
    );
    let out = reported(&log, "out");
    let dev = reported(&log, "dev");
    assert_eq!(text(first.stdout), out);
    let hash_of = |p: &str| text(stdout_of(nix_store(&scratch).args(["-q", "--hash", p])));
    // Nix's record of each output equals pik's own narHash of the host build.
    assert_eq!(
        hash_of(&out),
        a.manifest["nar"]["nar_hash"].as_str().unwrap()
    );
    assert_eq!(
        hash_of(&dev),
        a.manifest["dev"]["nar"]["nar_hash"].as_str().unwrap()
    );
    // The outputs refer to no store path (not to pik, not to the source): they are the bare trees.
    for p in [&out, &dev] {
        let refs = text(stdout_of(nix_store(&scratch).args([
            "-q",
            "--references",
            p,
        ])));
        assert!(refs.is_empty() || refs == *p, "{p} refers to {refs}");
    }
    let physical = store.join(out.trim_start_matches('/'));
    assert_eq!(
        std::fs::read(physical.join("kernel_2712.img")).unwrap(),
        std::fs::read(a.out.join("Image")).unwrap()
    );

    // --check: no pik cache reachable, so the sandbox compiles everything again (another
    // workspace path, build dir /build, object cache off), and Nix finds every output
    // bit-identical to the first.
    let check = nix_build_kernel(&store, false, true);
    let log = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(check.status.success(), "nix-build --check failed");
    assert!(log.contains("no cache"), "{log}");
    assert!(log.contains("pik: cache   off"), "{log}");
    let compiled = format!(
        "{} objects compiled\n",
        a.manifest["objects_compiled"].as_u64().unwrap()
    );
    assert!(
        log.contains(&compiled),
        "the check compiled everything again"
    );
    assert_eq!(reported(&log, "out"), out);
    assert_eq!(reported(&log, "dev"), dev);
}
