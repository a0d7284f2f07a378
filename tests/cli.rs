//! Fast CLI checks: targets, doctor, and inputs refused before any work.

mod common;
use common::*;

#[test]
fn targets_lists_both_targets_and_profiles() {
    let out = run_ok(pik().arg("targets"));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "bcm2712",
        "bcm2711",
        "rpi4",
        "kernel_2712.img",
        "kernel8.img",
        "mini",
        "full [default]",
    ] {
        assert!(
            text.contains(needle),
            "`pik targets` lacks {needle}: {text}"
        );
    }
    let out = run_ok(pik().args(["targets", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn doctor_passes_here_and_names_packages_when_missing() {
    run_ok(pik().arg("doctor"));
    let out = run(pik().args(["doctor", "--toolchain", "/nonexistent/aarch64-linux-gnu-"]));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MISSING") && text.contains("gcc-aarch64-linux-gnu"),
        "{text}"
    );
    // With an empty PATH everything is missing, each with its Debian package.
    let out = run(pik().arg("doctor").env("PATH", "/nonexistent"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for pkg in [
        "make",
        "bc",
        "bison",
        "flex",
        "perl",
        "xz-utils",
        "libssl-dev",
        "libelf-dev",
    ] {
        assert!(
            text.contains(&format!("apt-get install {pkg}")),
            "doctor does not name {pkg}: {text}"
        );
    }
}

#[test]
fn missing_toolchain_is_refused_before_any_work() {
    let t = tempfile_dir("missing-tc");
    let out = run(pik_mini("bcm2712")
        .args(["--toolchain", "/nonexistent/aarch64-linux-gnu-"])
        .arg("--out")
        .arg(t.join("out"))
        .arg("--build-dir")
        .arg(t.join("build")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/aarch64-linux-gnu-gcc") && err.contains("gcc-aarch64-linux-gnu"),
        "{err}"
    );
    assert!(!t.join("out").exists() && !t.join("build").exists());
}

#[test]
fn non_kernel_directory_is_refused() {
    let t = tempfile_dir("not-a-kernel");
    let src = t.join("src");
    std::fs::create_dir_all(src.join("arch")).unwrap();
    std::fs::write(src.join("Makefile"), "all:\n\techo hi\n").unwrap();
    let before = fingerprint(&src);
    let out = run(pik_mini("bcm2712")
        .args(["--source"])
        .arg(&src)
        .arg("--out")
        .arg(t.join("out")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a Linux kernel source tree"), "{err}");
    assert_eq!(before, fingerprint(&src));
    assert!(!t.join("out").exists());
    // A file that is neither a tree nor a tarball.
    let out = run(pik()
        .args(["build", "--target", "bcm2712", "--source"])
        .arg(src.join("Makefile")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a directory nor a tarball"));
}

#[test]
fn unknown_target_and_profile_are_refused() {
    let out = run(pik().args(["build", "--target", "bcm9999"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown target \"bcm9999\""));
    let out = run(pik().args(["build", "--target", "bcm2712", "--profile", "huge"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile \"huge\""));
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = shared().join("cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
