//! Shared test infrastructure: the real Debian kernel source, real cross compiler, real builds.
//! Builds are shared between tests (and between test processes, as nextest runs them) on disk
//! behind file locks, so each target's mini kernel is built once per test run.

#![allow(dead_code)]

pub mod netns;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pik binary under test.
pub fn pik_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pik"))
}

/// A persistent directory shared by every test of this run (`target/tmp/pik-tests`).
pub fn shared() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pik-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// pik's cache dir for tests: shared, so workspaces are extracted once.
pub fn cache_dir() -> PathBuf {
    shared().join("cache")
}

/// An exclusive lock held until dropped.
pub struct Locked(File);

pub fn lock(name: &str) -> Locked {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(shared().join(format!("{name}.lock")))
        .unwrap();
    f.lock().unwrap();
    Locked(f)
}

/// The Debian tarball the tests build from.
pub fn debian_tarball() -> PathBuf {
    let p = PathBuf::from("/usr/src/linux-source-6.12.tar.xz");
    assert!(
        p.is_file(),
        "the tests need Debian's linux-source-6.12 (apt-get install linux-source-6.12)"
    );
    p
}

/// The system PATH pik runs with in the tests (and nix/kernel.nix's default hostPath).
pub const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A `pik` command with the shared cache and a clean environment.
pub fn pik() -> Command {
    let mut c = Command::new(pik_bin());
    c.env("PIK_CACHE_DIR", cache_dir())
        // The PATH nix/kernel.nix gives its builder, so host and sandbox builds find the same
        // host tools (part of the memo key).
        .env("PATH", HOST_PATH)
        .env_remove("PIK_KERNEL_SRC")
        .env_remove("CROSS_COMPILE")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// `pik build --target <target> --profile mini`: the one place the tests spell the small
/// profile's command line.
pub fn pik_mini(target: &str) -> Command {
    let mut c = pik();
    c.args(["build", "--target", target, "--profile", "mini"]);
    c
}

/// Runs a command and returns its output, printing it for the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawning pik");
    eprintln!(
        "--- {:?}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs and asserts success.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "command failed: {cmd:?}");
    out
}

/// A copy of the kernel tree that plays "the user's tree" (extracted once, shared).
pub fn user_tree() -> PathBuf {
    let _l = lock("user-tree");
    let dir = shared().join("user-tree");
    let done = shared().join("user-tree.done");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(debian_tarball())
            .arg("-C")
            .arg(&dir)
            .arg("--strip-components=1")
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(&done, "").unwrap();
    }
    dir
}

/// A fingerprint of a tree that changes if any file's content, inode, mtime or link count does
/// (so a write through a hardlink is seen too).
pub fn fingerprint(dir: &Path) -> blake3::Hash {
    use std::os::unix::fs::MetadataExt;
    let mut h = blake3::Hasher::new();
    let mut entries: Vec<_> = walkdir::WalkDir::new(dir).into_iter().flatten().collect();
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for e in entries {
        let md = e.path().symlink_metadata().unwrap();
        h.update(e.path().as_os_str().as_encoded_bytes());
        for n in [
            md.ino(),
            md.size(),
            md.mtime() as u64,
            md.mtime_nsec() as u64,
            md.mode() as u64,
        ] {
            h.update(&n.to_le_bytes());
        }
    }
    h.finalize()
}

/// BLAKE3 of the pik binary under test: shared builds record it, so a changed pik never passes
/// on artifacts an older one made.
pub fn pik_digest() -> String {
    static D: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        blake3::hash(&std::fs::read(pik_bin()).unwrap())
            .to_hex()
            .to_string()
    })
    .clone()
}

/// Whether the done marker `done` was written by this very pik binary.
pub fn done_by_this_pik(done: &Path) -> bool {
    std::fs::read_to_string(done).is_ok_and(|s| s.trim() == pik_digest())
}

/// Marks a shared artifact as made by this pik binary.
pub fn mark_done(done: &Path) {
    std::fs::write(done, pik_digest()).unwrap();
}

/// A finished shared mini build of `target`.
pub struct Built {
    pub out: PathBuf,
    pub build_dir: PathBuf,
    pub manifest: serde_json::Value,
}

/// The object store a shared build of `target` fills (cold: emptied before that build).
pub fn objects_dir(target: &str) -> PathBuf {
    shared().join(format!("objects-{target}"))
}

/// Builds (once per test run, behind a lock) the mini profile of `target` from the default
/// source (Debian's tarball), through the object cache starting empty, so every object is
/// really compiled (and the cache is filled for the cache tests).
///
/// bcm2711 is built with `--no-nixos`: the NixOS options (EFI stub, cgroups, crypto API, …)
/// are ~150 of its ~950 compiles, the bcm2712 build carries them (and the Nix tests use it),
/// and this way `--no-nixos` is exercised by a real build too.
pub fn mini_build(target: &str) -> Built {
    let _l = lock(&format!("build-{target}"));
    let base = shared().join(format!("build-{target}"));
    let out = base.join("result");
    let build_dir = base.join("build");
    let done = base.join("done");
    if !done_by_this_pik(&done) {
        let _ = std::fs::remove_dir_all(&base);
        let _ = std::fs::remove_dir_all(objects_dir(target));
        std::fs::create_dir_all(&base).unwrap();
        run_ok(
            pik_mini(target)
                .env("PIK_OBJECT_CACHE_DIR", objects_dir(target))
                .args(["-j2", "--no-memo"])
                .args(no_nixos(target))
                .arg("--out")
                .arg(&out)
                .arg("--build-dir")
                .arg(&build_dir),
        );
        mark_done(&done);
    }
    let manifest = read_json(&base.join("result.json"));
    Built {
        out,
        build_dir,
        manifest,
    }
}

/// The extra flag of the shared build of `target` (see [`mini_build`]).
pub fn no_nixos(target: &str) -> &'static [&'static str] {
    if target == "bcm2711" {
        &["--no-nixos"]
    } else {
        &[]
    }
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Parses a kernel `.config` into (symbol, value) for set symbols.
pub fn config_values(p: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every file under `dir` whose name ends with `suffix`.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| e.into_path())
        .collect()
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
