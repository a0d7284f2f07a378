//! pik never loses a user's data: it replaces only what it made, treats manifests and paths as
//! untrusted, refuses bad input before any work, applies patches exactly, stops promptly on a
//! signal, and rebuilds a workspace that changed behind its key.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory of this test file's own.
fn scratch(name: &str) -> PathBuf {
    let d = shared().join("safety").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `pik build` of the mini bcm2712 kernel into `out` with a build dir of its own.
fn build_into(out: &Path, build_dir: &Path) -> Command {
    let mut c = pik_mini("bcm2712");
    c.arg("--out").arg(out).arg("--build-dir").arg(build_dir);
    c
}

/// Fails fast, leaves `keep` as it was, and never starts the build (no build dir).
fn refused_before_work(cmd: &mut Command, keep: &Path, build_dir: &Path, says: &[&str]) {
    let before = fingerprint(keep);
    let t = Instant::now();
    let o = run(cmd);
    assert!(!o.status.success(), "accepted: {cmd:?}");
    let err = stderr(&o);
    for s in says {
        assert!(err.contains(s), "the error does not say {s:?}: {err}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        t.elapsed()
    );
    assert_eq!(fingerprint(keep), before, "{} changed", keep.display());
    assert!(!build_dir.exists(), "the build began");
}

#[test]
fn outputs_over_foreign_content_are_refused_before_any_work() {
    let t = scratch("foreign-out");
    let build = t.join("build");
    // A directory with someone's files in it.
    let v = t.join("v");
    std::fs::create_dir_all(v.join("src")).unwrap();
    std::fs::write(v.join("src/main.c"), "int main;").unwrap();
    refused_before_work(
        &mut build_into(&v, &build),
        &t,
        &build,
        &[&v.display().to_string(), "pik replaces only"],
    );
    // `--out .` from a directory with files.
    refused_before_work(
        build_into(Path::new("."), &build).current_dir(&v),
        &t,
        &build,
        &["pik replaces only"],
    );
    // A regular file in its place: refused, and left where it was (not renamed away).
    let f = t.join("result");
    std::fs::write(&f, "not a directory").unwrap();
    refused_before_work(
        &mut build_into(&f, &build),
        &t,
        &build,
        &["not a directory"],
    );
    // The source tree, a directory inside it, or one containing it.
    let tree = user_tree();
    for (out, says) in [
        (tree.clone(), "is the kernel source"),
        (tree.join("kernel/out"), "lies inside the kernel source"),
        (
            tree.parent().unwrap().to_path_buf(),
            "contains the kernel source",
        ),
    ] {
        refused_before_work(
            build_into(&out, &build).arg("--source").arg(&tree),
            &t,
            &build,
            &[says],
        );
    }
    // The cache, the build dir, $HOME, /.
    let home = t.join("home");
    std::fs::create_dir_all(&home).unwrap();
    for (out, says) in [
        (cache_dir().join("x"), "lies inside pik's cache dir"),
        (build.join("out"), "lies inside the build dir"),
        (home.clone(), "home directory"),
        (PathBuf::from("/"), "root directory"),
    ] {
        refused_before_work(
            build_into(&out, &build).env("HOME", &home),
            &t,
            &build,
            &[says],
        );
    }
    // An empty directory is fine to fill: the build starts (stopped at Kconfig here).
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(build_into(&empty, &build).args(["--config-only", "--no-nixos"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn firmware_dirs_with_foreign_content_and_the_output_itself_are_refused() {
    let b = mini_build("bcm2712");
    let t = scratch("firmware");
    // What an SD card's boot partition holds.
    let sd = t.join("boot");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join("start4.elf"), "firmware").unwrap();
    let before = fingerprint(&sd);
    let o = run(pik().arg("firmware").arg("--from").arg(&b.out).arg(&sd));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pik replaces only"), "{}", stderr(&o));
    assert_eq!(fingerprint(&sd), before);
    // `--from out out`, and a dir inside the output: the output stays whole.
    let out_before = fingerprint(&b.out);
    for dir in [b.out.clone(), b.out.join("dtbs")] {
        let o = run(pik().arg("firmware").arg("--from").arg(&b.out).arg(&dir));
        assert!(!o.status.success());
        assert!(stderr(&o).contains("the output"), "{}", stderr(&o));
    }
    assert_eq!(fingerprint(&b.out), out_before);
    // A view pik wrote is its own to replace; the same view edited by hand is not.
    let view = t.join("view");
    run_ok(pik().arg("firmware").arg("--from").arg(&b.out).arg(&view));
    run_ok(pik().arg("firmware").arg("--from").arg(&b.out).arg(&view));
    std::fs::write(view.join("config.txt"), "edited by hand\n").unwrap();
    let o = run(pik().arg("firmware").arg("--from").arg(&b.out).arg(&view));
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(view.join("config.txt")).unwrap(),
        "edited by hand\n"
    );
}

#[test]
fn a_crafted_manifest_writes_nothing_outside_the_destination() {
    let b = mini_build("bcm2712");
    let t = scratch("crafted-manifest");
    let out = t.join("out");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&b.out)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let mut m = b.manifest.clone();
    m["out"] = serde_json::json!(out.display().to_string());
    let victim = t.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    for image in ["s/../../x", "../victim", "/etc/passwd", "..", "a\nb"] {
        m["firmware_image"] = serde_json::json!(image);
        std::fs::write(t.join("out.json"), m.to_string()).unwrap();
        let dest = t.join("fw");
        let o = run(pik().arg("firmware").arg("--from").arg(&out).arg(&dest));
        assert!(!o.status.success(), "{image:?} accepted");
        assert!(
            stderr(&o).contains("not a plain file name"),
            "{}",
            stderr(&o)
        );
        assert!(!dest.exists());
        assert!(!t.join("x").exists() && !t.parent().unwrap().join("x").exists());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
    // A symlink planted in the output tree: the tree no longer matches its manifest.
    m["firmware_image"] = b.manifest["firmware_image"].clone();
    std::fs::write(t.join("out.json"), m.to_string()).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("dtbs/broadcom/evil.dtb")).unwrap();
    let dest = t.join("fw");
    let o = run(pik().arg("firmware").arg("--from").arg(&out).arg(&dest));
    assert!(!o.status.success());
    assert!(!dest.exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn bad_arguments_fail_before_any_work() {
    let t = scratch("bad-args");
    let build = t.join("build");
    let out = t.join("out");
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "FOO"], "no `=`"),
        (&["--set", "CONFIG_X="], "the value is empty"),
        (&["--set", "CONFIG_lower=y"], "not a Kconfig symbol"),
        (&["--set", "CONFIG_X=y\nCONFIG_Y=y"], "not a Kconfig value"),
        (&["--set", "CONFIG_S=\"a\nb\""], "not a Kconfig value"),
        (
            &["--fragment", "/nonexistent/my.config"],
            "/nonexistent/my.config",
        ),
        (
            &["--patch", "/nonexistent/fix.patch"],
            "/nonexistent/fix.patch",
        ),
        (&["--fragment", "/dev/zero"], "not a regular file"),
        (&["-j", "0"], "at least 1"),
    ];
    for (args, says) in cases {
        refused_before_work(build_into(&out, &build).args(*args), &t, &build, &[says]);
    }
    // A "kernel tree" whose Makefile never ends: read a bounded prefix, then refused.
    let tree = t.join("tree");
    std::fs::create_dir_all(tree.join("arch")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", tree.join("Makefile")).unwrap();
    refused_before_work(
        build_into(&out, &build).arg("--source").arg(&tree),
        &t,
        &build,
        &["is not a Linux kernel source tree"],
    );
    // A closed or full stdout is an error message, not a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = pik().arg("targets").stdout(full).output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("writing to standard output") && !err.contains("panicked"),
        "{err}"
    );
}

/// A hard-link copy of the shared user tree: the same inodes (so hashing it is warm) and a
/// private directory structure to add things to.
fn linked_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("linux");
    let st = Command::new("cp")
        .arg("-al")
        .arg(user_tree())
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    tree
}

/// Makes `rel` in `tree` a file of its own (not shared with the other trees' hard links), so
/// a test may edit it in place.
fn own_copy(tree: &Path, rel: &str) {
    let p = tree.join(rel);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
}

#[test]
fn a_patch_that_needs_fuzz_fails_before_anything_changes() {
    let t = scratch("fuzz");
    let tree = linked_tree(&t);
    let before = fingerprint(&tree);
    // The context lines appear nowhere in init/main.c; GNU patch's default fuzz would still
    // apply the hunk next to the line it changes.
    let patch = t.join("fuzzy.patch");
    let text = std::fs::read_to_string(tree.join("init/main.c")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("void start_kernel(void)"))
        .unwrap()
        + 1;
    std::fs::write(
        &patch,
        format!(
            "--- a/init/main.c\n+++ b/init/main.c\n@@ -{a},5 +{a},5 @@\n context that\n is not there\n-{l}\n+{l} /* changed */\n nor\n here\n",
            a = line - 2,
            l = text.lines().nth(line).unwrap(),
        ),
    )
    .unwrap();
    let workspaces = |c: &Path| -> Vec<String> {
        std::fs::read_dir(c.join("workspaces"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cache = t.join("cache");
    let o = run(pik_mini("bcm2712")
        .env("PIK_CACHE_DIR", &cache)
        .args(["--config-only"])
        .arg("--source")
        .arg(&tree)
        .arg("--patch")
        .arg(&patch)
        .arg("--build-dir")
        .arg(t.join("build")));
    assert!(!o.status.success());
    let err = stderr(&o);
    for s in ["fuzzy.patch", "init/main.c", "Hunk #1", "--patch-fuzz"] {
        assert!(err.contains(s), "the error does not name {s:?}: {err}");
    }
    assert!(workspaces(&cache).is_empty(), "{:?}", workspaces(&cache));
    assert!(!t.join("build").exists());
    assert_eq!(fingerprint(&tree), before, "the user's tree changed");
}

/// Sends `sig` to a running pik once `ready` says so, and waits at most 5 s for it to end.
fn stops_within_5s(mut cmd: Command, sig: &str, after: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let signalled = Instant::now();
    let mut ended = None;
    while signalled.elapsed() < Duration::from_secs(5) {
        if let Some(st) = child.try_wait().unwrap() {
            ended = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = ended else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pik was still running 5 s after {sig}");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!("{err}");
    assert!(!status.success());
    err
}

#[test]
fn signals_stop_pik_promptly_and_fifos_are_named_not_waited_for() {
    let t = scratch("signals");
    let tree = linked_tree(&t);
    // A FIFO in a source tree: an error naming it, never a hang (SIGTERM as the backstop).
    let fifo = tree.join("drivers/pik-test.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let mut cmd = pik_mini("bcm2712");
    cmd.env("PIK_CACHE_DIR", t.join("cache"))
        .arg("--source")
        .arg(&tree)
        .arg("--out")
        .arg(t.join("out"));
    let err = stops_within_5s(cmd, "-TERM", Duration::from_secs(2));
    assert!(
        err.contains("pik-test.fifo") || err.contains("interrupted"),
        "{err}"
    );
    std::fs::remove_file(&fifo).unwrap();
    // SIGTERM while the tarball is extracted into a new workspace (an empty cache): pik ends,
    // says so, and leaves no half workspace.
    let cache = t.join("cache2");
    let mut cmd = pik_mini("bcm2712");
    cmd.env("PIK_CACHE_DIR", &cache)
        .arg("--no-memo")
        .arg("--out")
        .arg(t.join("out"));
    let err = stops_within_5s(cmd, "-TERM", Duration::from_millis(1500));
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(cache.join("workspaces"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!t.join("out").exists());
}

#[test]
fn a_workspace_changed_behind_its_key_is_rebuilt() {
    let t = scratch("workspace");
    let cache = t.join("cache");
    let tree = linked_tree(&t);
    // The file an editor will change in place (vim does when a file has several links).
    let rel = "init/Kconfig";
    own_copy(&tree, rel);
    let original = std::fs::read(tree.join(rel)).unwrap();
    let config_only = |extra: &[&str]| {
        let mut c = pik_mini("bcm2712");
        c.env("PIK_CACHE_DIR", &cache)
            .args(["--config-only", "--no-nixos"])
            .arg("--source")
            .arg(&tree)
            .arg("--build-dir")
            .arg(t.join("build"))
            .args(extra);
        c
    };
    // Make the workspace (a link farm over the tree; `pik config` stops right after it).
    let o = run(pik()
        .env("PIK_CACHE_DIR", &cache)
        .args([
            "config",
            "--target",
            "bcm2712",
            "--profile",
            "mini",
            "--savedefconfig",
        ])
        .arg(t.join("frag"))
        .arg("--source")
        .arg(&tree)
        .arg("--build-dir")
        .arg(t.join("build")));
    assert!(stderr(&o).contains("has no .config yet"), "{}", stderr(&o));
    // Edit in place (same inode: the workspace sees it too), then revert the way git checkout
    // does (a new file renamed over): the tree is back as it was, the workspace is not.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(tree.join(rel))
            .unwrap();
        f.write_all(b"if BROKEN\n").unwrap();
    }
    let tmp = tree.join("init/.Kconfig.tmp");
    std::fs::write(&tmp, &original).unwrap();
    std::fs::rename(&tmp, tree.join(rel)).unwrap();
    let o = run_ok(&mut config_only(&[]));
    assert!(
        stderr(&o).contains("changed since it was made") && stderr(&o).contains("rebuilding"),
        "{}",
        stderr(&o)
    );
    // Damage under the cache dir itself (a disk error, a user poking around): seen too.
    let ws = std::fs::read_dir(cache.join("workspaces"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    assert_eq!(std::fs::read(ws.join(rel)).unwrap(), original);
    own_copy(&ws, "Kconfig");
    std::fs::write(ws.join("Kconfig"), "source \"nonexistent/Kconfig\"\nif\n").unwrap();
    let o = run_ok(&mut config_only(&[]));
    assert!(stderr(&o).contains("rebuilding"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(ws.join("Kconfig")).unwrap(),
        std::fs::read(tree.join("Kconfig")).unwrap()
    );
}
