//! The object cache against the real kernel and the real cross compiler: hits across
//! directories, exact misses on header and config changes, `.incbin`, debug-info paths, damaged
//! stores, concurrent writers, and turning the cache off and on.
//!
//! Kernel-level cases use kbuild directory targets (`make O=… lib/`) on tinyconfig, through a
//! masquerade link like the one `pik build` makes, so they take seconds to a minute each.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private link farm of the user tree (the shared tree's files are never written through).
fn farm(name: &str) -> PathBuf {
    let src = user_tree();
    let dst = shared().join("cache-tests").join(name).join("tree");
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let st = Command::new("cp")
        .arg("-al")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

/// Replaces a farm file with new content (a new inode: the shared tree stays untouched).
fn rewrite(path: &Path, content: &[u8]) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A dir whose `aarch64-linux-gnu-gcc` is pik (what `pik build` puts first on PATH).
fn masquerade(base: &Path) -> PathBuf {
    let d = base.join("masq");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(pik_bin(), d.join("aarch64-linux-gnu-gcc")).unwrap();
    d
}

/// A private tree, masquerade dir and empty object store for one test.
struct Fixture {
    tree: PathBuf,
    base: PathBuf,
    masq: PathBuf,
    store: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let tree = farm(name);
        let base = tree.parent().unwrap().to_path_buf();
        let masq = masquerade(&base);
        let store = base.join("objects");
        let _ = std::fs::remove_dir_all(&store);
        Fixture {
            tree,
            base,
            masq,
            store,
        }
    }

    fn kmake(&self) -> Kmake<'_> {
        Kmake {
            tree: &self.tree,
            masq: &self.masq,
            store: &self.store,
        }
    }
}

/// One kbuild run in `bdir` through pik with the object store `store`; events go to `log`.
struct Kmake<'a> {
    tree: &'a Path,
    masq: &'a Path,
    store: &'a Path,
}

impl Kmake<'_> {
    fn cmd(&self, bdir: &Path, log: &Path, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            self.masq.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(self.tree)
            .arg(format!("O={}", bdir.display()))
            .args(["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "-j2"])
            .args(["KBUILD_BUILD_TIMESTAMP=pik", "KBUILD_BUILD_USER=pik"])
            .args(args)
            .env("PATH", path)
            .env("LC_ALL", "C")
            .env("PIK_OBJECT_CACHE_DIR", self.store)
            .env("PIK_CACHE_DIR", self.store.with_extension("state"))
            .env("PIK_SESSION_LOG", log)
            .env_remove("MAKEFLAGS")
            .env_remove("PIK_NO_CACHE");
        c
    }

    fn run(&self, bdir: &Path, log: &Path, args: &[&str]) -> Output {
        let _ = std::fs::remove_file(log);
        run_ok(&mut self.cmd(bdir, log, args))
    }

    /// tinyconfig in a fresh build dir.
    fn configure(&self, bdir: &Path, log: &Path) {
        let _ = std::fs::remove_dir_all(bdir);
        std::fs::create_dir_all(bdir).unwrap();
        self.run(bdir, log, &["tinyconfig"]);
    }

    /// A fresh build dir with the config of `like` (quicker than tinyconfig again).
    fn configure_like(&self, bdir: &Path, like: &Path, log: &Path) {
        let _ = std::fs::remove_dir_all(bdir);
        std::fs::create_dir_all(bdir).unwrap();
        std::fs::copy(like.join(".config"), bdir.join(".config")).unwrap();
        self.run(bdir, log, &["olddefconfig"]);
    }
}

/// The session log: output path → event kind (`h`, `m`, `u`, `e`), plus uncacheable reasons.
/// Compiler probes (`h probe`, `m probe`: Kconfig's and kbuild's flag tests) are left out.
fn events(log: &Path) -> (BTreeMap<String, String>, BTreeMap<String, u32>) {
    let mut by_output = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut it = line.splitn(3, ' ');
        let (kind, reason, out) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if kind == "u" {
            *reasons.entry(reason.to_string()).or_default() += 1;
        } else if reason != "probe" {
            by_output.insert(out.to_string(), kind.to_string());
        }
    }
    (by_output, reasons)
}

fn with_kind(ev: &BTreeMap<String, String>, kind: &str) -> BTreeSet<String> {
    ev.iter()
        .filter(|(_, k)| *k == kind)
        .map(|(o, _)| o.clone())
        .collect()
}

/// Every object under `dir`, relative path → bytes.
fn objects(dir: &Path, suffix: &str) -> BTreeMap<String, Vec<u8>> {
    files_with_suffix(dir, suffix)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/scripts/"))
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Objects whose kbuild dependency list (`.cmd`) names `header`: kbuild's own rebuild set.
fn includers(bdir: &Path, header: &Path) -> BTreeSet<String> {
    let needle = format!("{} ", header.display());
    // Objects and -S outputs (asm-offsets.s): both are compiles the cache serves.
    let mut cmds = files_with_suffix(bdir, ".o.cmd");
    cmds.extend(files_with_suffix(bdir, ".s.cmd"));
    cmds.into_iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(&needle))
        .map(|p| {
            let rel = p.strip_prefix(bdir).unwrap();
            let name = rel.file_name().unwrap().to_string_lossy();
            let obj = name.trim_start_matches('.').trim_end_matches(".cmd");
            rel.with_file_name(obj).display().to_string()
        })
        .collect()
}

#[test]
fn warm_build_in_other_dirs_hits_and_is_identical() {
    let a = mini_build("bcm2712");
    let cold = &a.manifest["cache"];
    assert_eq!(cold["hits"], 0);
    assert!(cold["misses"].as_u64().unwrap() > 500, "{cold}");
    // After that first build the store trained its compression dictionary, so every hit below
    // reads an entry compressed with it.
    assert!(objects_dir("bcm2712").join("dictionary").is_file());
    // The user's tree (another path) in another build dir, on the cache the shared build filled.
    let tree = user_tree();
    let base = shared().join("cache-warm");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // A `pik build` of bcm2712 mini into `dir` (result/, build/) on the shared build's cache.
    let build_at = |dir: &Path, extra: &[&str]| {
        run_ok(
            pik_mini("bcm2712")
                .env("PIK_OBJECT_CACHE_DIR", objects_dir("bcm2712"))
                .args(["-j2", "--no-memo"])
                .arg("--out")
                .arg(dir.join("result"))
                .arg("--build-dir")
                .arg(dir.join("build"))
                .args(extra),
        );
        read_json(&dir.join("result.json"))
    };
    let src = tree.to_str().unwrap();
    let build = |extra: &[&str]| build_at(&base, &[&["--source", src][..], extra].concat());
    let m = build(&[]);
    let c = &m["cache"];
    let (hits, misses) = (c["hits"].as_u64().unwrap(), c["misses"].as_u64().unwrap());
    eprintln!(
        "warm build: {hits} hits, {misses} misses, {}",
        m["timings_s"]
    );
    assert!(
        hits * 100 >= (hits + misses) * 99 && hits > 500,
        "hit rate below 99 %: {c}"
    );
    // IKCONFIG: kernel/configs.c pulls the config in with .incbin and is still cached.
    let (ev, _) = events(&base.join("build/pik-cache.log"));
    assert_eq!(
        ev.get("kernel/configs.o").map(String::as_str),
        Some("h"),
        "{ev:?}"
    );
    // Bit-identical results: Image, vmlinux, every module.
    assert_eq!(m["files"], a.manifest["files"], "output trees differ");
    assert_eq!(
        std::fs::read(base.join("build/vmlinux")).unwrap(),
        std::fs::read(a.build_dir.join("vmlinux")).unwrap(),
        "vmlinux differs"
    );
    assert_eq!(
        objects(&base.join("result"), ".ko"),
        objects(&a.out, ".ko"),
        "modules differ"
    );

    // Another tree (another workspace id): every hit checked header by header.
    let hows = hit_reasons(&base.join("build/pik-cache.log"));
    assert_eq!(hows.keys().collect::<Vec<_>>(), ["deps"], "{hows:?}");

    // The cache off, then on again, in the same build dir: nothing is rebuilt either time
    // (kbuild's recorded command lines do not change with the cache).
    for extra in [&["--no-cache"][..], &[][..]] {
        let m = build(extra);
        assert_eq!(m["objects_compiled"], 0, "rebuilt with {extra:?}");
        assert_eq!(m["files"], a.manifest["files"]);
    }

    // The shared build's own source again, in a fresh build dir: pik vouches for the same
    // workspace, so hits check only the files outside it (generated headers) — and the result
    // is still the same kernel.
    let same = base.join("same-tree");
    let m = build_at(&same, &["--no-dev"]);
    let c = &m["cache"];
    let (hits, misses) = (c["hits"].as_u64().unwrap(), c["misses"].as_u64().unwrap());
    assert!(hits * 100 >= (hits + misses) * 99, "{c}");
    // Same inputs as the shared build: Kconfig's result comes from the Kconfig memo (no
    // fragments were merged in this build dir), and the host programs kbuild builds in every
    // fresh build dir (fixdep, modpost, dtc) from the object cache.
    assert!(
        !same.join("build/pik-fragments").exists(),
        "Kconfig ran again"
    );
    assert!(c["host_hits"].as_u64().unwrap() >= 10, "{c}");
    assert_eq!(c["host_misses"], 0, "{c}");
    let hows = hit_reasons(&same.join("build/pik-cache.log"));
    eprintln!("same workspace: {hows:?}, {misses} misses");
    assert!(
        hows.get("tree").copied().unwrap_or(0) as u64 * 100 >= hits * 99,
        "hits in the vouched-for tree should skip its headers: {hows:?}"
    );
    assert_eq!(m["files"], a.manifest["files"], "output trees differ");
    assert_eq!(
        std::fs::read(same.join("build/vmlinux")).unwrap(),
        std::fs::read(a.build_dir.join("vmlinux")).unwrap(),
        "vmlinux differs"
    );
    let _ = std::fs::remove_dir_all(&same);
}

/// How the session log's hits were validated (`tree` or `deps`), with counts.
fn hit_reasons(log: &Path) -> BTreeMap<String, u32> {
    let mut n = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(rest) = line.strip_prefix("h ") {
            let how = rest.split(' ').next().unwrap_or_default();
            if how == "probe" {
                continue;
            }
            *n.entry(how.to_string()).or_default() += 1;
        }
    }
    n
}

#[test]
fn header_and_config_changes_miss_exactly_what_they_should() {
    let fx = Fixture::new("changes");
    let (tree, base) = (&fx.tree, &fx.base);
    let k = fx.kmake();
    let log = base.join("events.log");
    let a = base.join("a");
    k.configure(&a, &log);
    k.run(&a, &log, &["lib/"]);
    let (ev, reasons) = events(&log);
    assert!(with_kind(&ev, "h").is_empty());
    assert!(with_kind(&ev, "m").len() > 100, "{ev:?}");
    eprintln!("uncacheable calls by reason: {reasons:?}");

    // A header included by a handful of objects.
    let mut counts: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for cmd in files_with_suffix(&a, ".o.cmd") {
        for tok in std::fs::read_to_string(&cmd).unwrap().split_whitespace() {
            if tok.starts_with(&*tree.join("include/linux").to_string_lossy())
                && tok.ends_with(".h")
            {
                *counts.entry(PathBuf::from(tok)).or_default() += 1;
            }
        }
    }
    let header = counts
        .iter()
        .find(|(_, n)| (2..=6).contains(*n))
        .map(|(h, _)| h.clone())
        .expect("a header with 2-6 includers");
    let expected = includers(&a, &header);
    eprintln!("changing {} (included by {expected:?})", header.display());
    let original = std::fs::read(&header).unwrap();
    let mut changed = original.clone();
    changed.extend_from_slice(b"\n/* changed by pik's cache test */\n");
    rewrite(&header, &changed);

    // kbuild rebuilds exactly the includers; every one of them misses.
    k.run(&a, &log, &["lib/"]);
    let (ev, _) = events(&log);
    assert_eq!(
        with_kind(&ev, "m"),
        expected,
        "misses after a content change"
    );
    assert!(with_kind(&ev, "h").is_empty(), "{ev:?}");

    // Touching without changing: kbuild rebuilds them again, and every one hits.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = std::fs::File::options().write(true).open(&header).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    k.run(&a, &log, &["lib/"]);
    let (ev, _) = events(&log);
    assert_eq!(with_kind(&ev, "h"), expected, "hits after a touch");
    assert!(with_kind(&ev, "m").is_empty(), "{ev:?}");

    // A fresh build dir with the changed header: the includers miss (they were stored with the
    // changed content just now, so: hit) — and with the original content back, they hit the
    // first build's entries. Either way nothing but the includers can differ.
    rewrite(&header, &original);
    let b = base.join("b");
    k.configure_like(&b, &a, &log);
    k.run(&b, &log, &["lib/"]);
    let (ev, _) = events(&log);
    assert!(
        with_kind(&ev, "m").is_empty(),
        "fresh dir, known content: {ev:?}"
    );
    assert_eq!(
        objects(&a.join("lib"), ".o").len(),
        objects(&b.join("lib"), ".o").len()
    );
    let mut third = original.clone();
    third.extend_from_slice(b"\n/* a third content */\n");
    rewrite(&header, &third);
    let c = base.join("c");
    k.configure_like(&c, &a, &log);
    k.run(&c, &log, &["lib/"]);
    let (ev, _) = events(&log);
    assert_eq!(
        with_kind(&ev, "m"),
        expected,
        "fresh dir, new header content"
    );
    rewrite(&header, &original);

    // A config change that rewrites autoconf.h: what kbuild rebuilds misses, and equals what
    // the compiler makes without the cache.
    let st = Command::new(tree.join("scripts/config"))
        .arg("--file")
        .arg(a.join(".config"))
        .args(["-d", "CRC32_SLICEBY8", "-e", "CRC32_SARWATE"])
        .status()
        .unwrap();
    assert!(st.success());
    k.run(&a, &log, &["olddefconfig"]);
    assert!(config_values(&a.join(".config")).contains_key("CRC32_SARWATE"));
    k.run(&a, &log, &["lib/"]);
    let (ev, _) = events(&log);
    let rebuilt = with_kind(&ev, "m");
    assert!(rebuilt.contains("lib/crc32.o"), "{ev:?}");
    assert!(with_kind(&ev, "h").is_empty(), "{ev:?}");
    let cached: BTreeMap<String, Vec<u8>> = rebuilt
        .iter()
        .map(|o| (o.clone(), std::fs::read(a.join(o)).unwrap()))
        .collect();
    for o in &rebuilt {
        std::fs::remove_file(a.join(o)).unwrap();
    }
    let mut plain = k.cmd(&a, &log, &["lib/"]);
    run_ok(plain.env("PIK_NO_CACHE", "1"));
    for (o, bytes) in &cached {
        assert_eq!(
            &std::fs::read(a.join(o)).unwrap(),
            bytes,
            "{o} differs from an uncached build"
        );
    }
}

/// Flips bytes in and truncates files across the store, deterministically.
fn damage(store: &Path, round: u64) -> usize {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ round;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut damaged = 0;
    for e in walkdir::WalkDir::new(store).into_iter().flatten() {
        if !e.file_type().is_file() || next() % 3 == 0 {
            continue;
        }
        let mut bytes = std::fs::read(e.path()).unwrap();
        if bytes.is_empty() {
            continue;
        }
        if next() % 2 == 0 {
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= 1 << (next() % 8);
            }
        } else {
            bytes.truncate((next() as usize) % bytes.len());
        }
        std::fs::write(e.path(), &bytes).unwrap();
        damaged += 1;
    }
    damaged
}

#[test]
fn damaged_cache_never_changes_outputs_cmd_files_or_warnings() {
    let fx = Fixture::new("damage");
    let (tree, base, store) = (&fx.tree, &fx.base, &fx.store);
    let k = fx.kmake();
    // One source with a warning, so replayed diagnostics are checked too.
    let ctype = tree.join("lib/ctype.c");
    let mut src = std::fs::read(&ctype).unwrap();
    src.extend_from_slice(b"\n#warning \"pik replays this warning\"\n");
    rewrite(&ctype, &src);
    let log = base.join("events.log");
    let target = ["lib/math/", "kernel/time/", "lib/ctype.o"];
    let reference = base.join("ref");
    k.configure(&reference, &log);
    let first = k.run(&reference, &log, &target);
    let warning = |o: &Output| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.contains("warning:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(warning(&first).len(), 1, "{:?}", warning(&first));
    let want_o = objects(&reference, ".o");
    let want_cmd = objects(&reference, ".o.cmd");
    assert!(want_o.len() > 10);
    for round in 0..2 {
        let n = damage(store, round);
        assert!(n > 0);
        let dir = base.join(format!("after-damage-{round}"));
        k.configure_like(&dir, &reference, &log);
        let out = k.run(&dir, &log, &target);
        assert_eq!(
            warning(&out),
            warning(&first),
            "round {round}: warnings differ"
        );
        assert_eq!(objects(&dir, ".o"), want_o, "round {round}: objects differ");
        assert_eq!(
            objects(&dir, ".o.cmd"),
            want_cmd,
            "round {round}: .cmd files differ"
        );
    }
    // The damage was noticed and repaired, not served: a last clean round hits fully.
    let dir = base.join("after-repair");
    k.configure_like(&dir, &reference, &log);
    k.run(&dir, &log, &target);
    let (ev, _) = events(&log);
    assert!(with_kind(&ev, "m").is_empty(), "{ev:?}");
    assert_eq!(objects(&dir, ".o"), want_o);
}

#[test]
fn two_builds_at_once_on_one_empty_cache() {
    let fx = Fixture::new("concurrent");
    let (base, store) = (&fx.base, &fx.store);
    let k = fx.kmake();
    let target = ["lib/math/", "kernel/time/"];
    let dirs = [base.join("one"), base.join("two")];
    k.configure(&dirs[0], &base.join("cfg0.log"));
    k.configure_like(&dirs[1], &dirs[0], &base.join("cfg1.log"));
    let mut children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            k.cmd(d, &base.join(format!("run{i}.log")), &target)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    let a = objects(&dirs[0], ".o");
    assert!(a.len() > 12, "{:?}", a.keys());
    assert_eq!(a, objects(&dirs[1], ".o"), "concurrent builds differ");
    // And the store they wrote together serves a third build completely and correctly.
    let third = base.join("three");
    let log = base.join("run3.log");
    k.configure_like(&third, &dirs[0], &log);
    k.run(&third, &log, &target);
    let (ev, _) = events(&log);
    assert!(with_kind(&ev, "m").is_empty(), "{ev:?}");
    assert_eq!(objects(&third, ".o"), a);
    let v = run(Command::new(pik_bin())
        .env("PIK_OBJECT_CACHE_DIR", store)
        .args(["cache", "verify"]));
    assert!(v.status.success(), "the store has damaged entries");
}

/// `pik cc` with a private store, in `dir`.
fn cc(dir: &Path, store: &Path, args: &[&str]) -> Output {
    cc_env(dir, store, args, &[])
}

fn cc_env(dir: &Path, store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run(Command::new(pik_bin())
        .current_dir(dir)
        .env("PIK_OBJECT_CACHE_DIR", store)
        .env("PIK_SESSION_LOG", store.with_extension("log"))
        .envs(env.iter().copied())
        .arg("cc")
        .arg("aarch64-linux-gnu-gcc")
        .args(args))
}

/// The last session-log line's kind and reason (`h tree`, `m -`, …).
fn last_line(store: &Path) -> String {
    let text = std::fs::read_to_string(store.with_extension("log")).unwrap();
    let line = text.lines().last().unwrap().to_string();
    line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
}

fn last_event(store: &Path) -> String {
    last_line(store).split(' ').next().unwrap().to_string()
}

#[test]
fn a_vouched_for_tree_is_trusted_only_for_files_older_than_the_build() {
    let base = tempfile::tempdir().unwrap();
    let tree = base.path().join("tree");
    std::fs::create_dir_all(tree.join("include")).unwrap();
    std::fs::write(tree.join("include/b.h"), "#define V 1\n").unwrap();
    std::fs::write(tree.join("a.c"), "#include \"b.h\"\nint v = V;\n").unwrap();
    let root = tree.canonicalize().unwrap();
    let work = base.path().join("obj");
    std::fs::create_dir_all(&work).unwrap();
    let (inc, map, src) = (
        format!("-I{}/include", root.display()),
        format!("-fmacro-prefix-map={}/=", root.display()),
        format!("{}/a.c", root.display()),
    );
    let args = [
        "-Wp,-MMD,.a.o.d",
        &inc,
        &map,
        "-O2",
        "-c",
        &src,
        "-o",
        "a.o",
    ];
    let ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_string()
    };
    let vouch = |since: &str| format!("tree-1 {since} {}", root.display());

    // Files older than the build: later calls in the same tree check only what lies outside it.
    let store = base.path().join("objects");
    let since = ns(std::time::SystemTime::now() + std::time::Duration::from_secs(1));
    let env = [("PIK_SOURCE_TREE", vouch(&since))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(cc_env(&work, &store, &args, &env).status.success());
    assert_eq!(last_line(&store), "m -");
    assert!(cc_env(&work, &store, &args, &env).status.success());
    assert_eq!(last_line(&store), "h tree");
    // Without the vouching (or under another id), the same entry is checked file by file.
    assert!(cc(&work, &store, &args).status.success());
    assert_eq!(last_line(&store), "h deps");

    // A build that began before the tree's files last changed (an edit while it ran) must not
    // vouch for them: the entry is untagged, so a changed header is still caught.
    let store = base.path().join("objects-2");
    let env = [("PIK_SOURCE_TREE", vouch("1"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(cc_env(&work, &store, &args, &env).status.success());
    assert_eq!(last_line(&store), "m -");
    let first = std::fs::read(work.join("a.o")).unwrap();
    std::fs::write(tree.join("include/b.h"), "#define V 2\n").unwrap();
    assert!(cc_env(&work, &store, &args, &env).status.success());
    assert_eq!(last_line(&store), "m -");
    assert_ne!(std::fs::read(work.join("a.o")).unwrap(), first);
}

/// `pik cc` with `input` on stdin.
fn cc_stdin(dir: &Path, store: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(pik_bin())
        .current_dir(dir)
        .env("PIK_OBJECT_CACHE_DIR", store)
        .env("PIK_SESSION_LOG", store.with_extension("log"))
        .arg("cc")
        .arg("aarch64-linux-gnu-gcc")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Kconfig's and kbuild's probes (`cc-option`, `as-instr`, cc-version.sh) compile /dev/null or
/// stdin into a throwaway file: pik answers a repeated probe from the cache, the compiler's
/// refusal included, and still tells different probes apart.
#[test]
fn compiler_probes_are_answered_from_the_cache() {
    let base = tempfile::tempdir().unwrap();
    let (d, store) = (base.path(), base.path().join("objects"));
    std::fs::create_dir_all(d.join(".tmp_1")).unwrap();
    std::fs::create_dir_all(d.join(".tmp_2")).unwrap();
    // cc-option: an accepted flag, an object in a temp dir (another name the second time).
    let probe = |flag: &str, out: &str| {
        cc(
            d,
            &store,
            &["-Werror", flag, "-c", "-x", "c", "/dev/null", "-o", out],
        )
    };
    assert!(probe("-mbranch-protection=pac-ret", ".tmp_1/tmp")
        .status
        .success());
    assert_eq!(last_line(&store), "m probe");
    let first = std::fs::read(d.join(".tmp_1/tmp")).unwrap();
    assert!(probe("-mbranch-protection=pac-ret", ".tmp_2/tmp")
        .status
        .success());
    assert_eq!(last_line(&store), "h probe");
    assert_eq!(std::fs::read(d.join(".tmp_2/tmp")).unwrap(), first);
    // A refused flag: the same exit status and message, from the cache the second time, and
    // no object either time.
    let no = probe("-fno-such-flag-at-all", ".tmp_1/no");
    assert_eq!(last_line(&store), "m probe");
    let again = probe("-fno-such-flag-at-all", ".tmp_2/no");
    assert_eq!(last_line(&store), "h probe");
    assert_eq!(no.status.code(), Some(1));
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(no.stderr, again.stderr);
    assert!(String::from_utf8_lossy(&again.stderr).contains("no-such-flag-at-all"));
    assert!(!d.join(".tmp_2/no").exists());
    // as-instr: stdin is part of the key.
    let asm = ["-c", "-x", "assembler-with-cpp", "-o", "/dev/null", "-"];
    let ok = cc_stdin(d, &store, &asm, "ldaddal x0, x1, [x2]\n");
    assert!(!ok.status.success(), "needs -march=armv8.1-a");
    assert_eq!(last_line(&store), "m probe");
    let lse = [
        "-march=armv8.1-a",
        "-c",
        "-x",
        "assembler-with-cpp",
        "-o",
        "/dev/null",
        "-",
    ];
    assert!(cc_stdin(d, &store, &lse, "ldaddal x0, x1, [x2]\n")
        .status
        .success());
    assert_eq!(last_line(&store), "m probe");
    assert!(!cc_stdin(d, &store, &asm, "ldaddal x0, x1, [x2]\n")
        .status
        .success());
    assert_eq!(last_line(&store), "h probe");
    assert!(cc_stdin(d, &store, &asm, "nop\n").status.success());
    assert_eq!(last_line(&store), "m probe");
    // cc-version.sh: preprocessed stdin on stdout, replayed.
    let ver = "__GNUC__ __GNUC_MINOR__\n";
    let e = cc_stdin(d, &store, &["-E", "-P", "-x", "c", "-"], ver);
    assert_eq!(last_line(&store), "m probe");
    let e2 = cc_stdin(d, &store, &["-E", "-P", "-x", "c", "-"], ver);
    assert_eq!(last_line(&store), "h probe");
    assert_eq!(e.stdout, e2.stdout);
    let dumped = Command::new("aarch64-linux-gnu-gcc")
        .arg("-dumpversion")
        .output()
        .unwrap();
    let major = String::from_utf8_lossy(&dumped.stdout)
        .trim()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    assert!(
        String::from_utf8_lossy(&e2.stdout)
            .trim()
            .starts_with(&format!("{major} ")),
        "{}",
        String::from_utf8_lossy(&e2.stdout)
    );
    // A probe that reads a header is checked like any compile: a failure is not kept, and a
    // success misses once the header changes.
    std::fs::write(d.join("probe.h"), "#define X 1\n").unwrap();
    let inc = ["-I.", "-c", "-x", "c", "-o", "/dev/null", "-"];
    let src = "#include \"probe.h\"\nint y = X;\n";
    assert!(cc_stdin(d, &store, &inc, src).status.success());
    assert_eq!(last_line(&store), "m probe");
    assert!(cc_stdin(d, &store, &inc, src).status.success());
    assert_eq!(last_line(&store), "h probe");
    std::fs::write(d.join("probe.h"), "#define Y 1\n").unwrap();
    assert!(!cc_stdin(d, &store, &inc, src).status.success());
    assert_eq!(last_line(&store), "u compile_failed");
    assert!(!cc_stdin(d, &store, &inc, src).status.success());
    assert_eq!(last_line(&store), "u compile_failed");
}

#[test]
fn incbin_files_are_part_of_the_key() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("objects");
    let d = base.path();
    std::fs::write(
        d.join("blob.c"),
        "asm(\".section .rodata\\n\\t.incbin \\\"data.bin\\\"\\n\");\nint x;\n",
    )
    .unwrap();
    std::fs::write(d.join("data.bin"), b"first contents").unwrap();
    let args = ["-O2", "-c", "blob.c", "-o", "blob.o"];
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last_event(&store), "m");
    let first = std::fs::read(d.join("blob.o")).unwrap();
    assert!(contains(&first, b"first contents"));
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last_event(&store), "h");
    // Only the included file changes: a miss, and the object has the new bytes.
    std::fs::write(d.join("data.bin"), b"other contents").unwrap();
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last_event(&store), "m");
    let second = std::fs::read(d.join("blob.o")).unwrap();
    assert!(contains(&second, b"other contents"));
    // Back to the first content: served from the first entry, byte for byte.
    std::fs::write(d.join("data.bin"), b"first contents").unwrap();
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last_event(&store), "h");
    assert_eq!(std::fs::read(d.join("blob.o")).unwrap(), first);
}

#[test]
fn debug_objects_never_name_another_directory() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("objects");
    let src = "int answer(int x) { return x * 42; }\n";
    let mut objs = Vec::new();
    for name in ["first-dir", "second-dir"] {
        let d = base.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.c"), src).unwrap();
        assert!(cc(&d, &store, &["-g", "-O2", "-c", "a.c", "-o", "a.o"])
            .status
            .success());
        assert_eq!(
            last_event(&store),
            "m",
            "{name}: -g object from another dir served"
        );
        let o = std::fs::read(d.join("a.o")).unwrap();
        assert!(
            contains(&o, name.as_bytes()),
            "{name}: DWARF does not name its dir"
        );
        objs.push(o);
    }
    assert!(!contains(&objs[1], b"first-dir"));
    // Again in the first dir: a hit, naming the first dir.
    let d = base.path().join("first-dir");
    assert!(cc(&d, &store, &["-g", "-O2", "-c", "a.c", "-o", "a.o"])
        .status
        .success());
    assert_eq!(last_event(&store), "h");
    assert_eq!(std::fs::read(d.join("a.o")).unwrap(), objs[0]);
    // With the directory remapped for debug info, other directories may share the entry.
    for name in ["first-dir", "second-dir"] {
        let d = base.path().join(name);
        let map = format!("-ffile-prefix-map={}=.", d.display());
        assert!(cc(&d, &store, &["-g", &map, "-c", "a.c", "-o", "m.o"])
            .status
            .success());
    }
    assert_eq!(last_event(&store), "h");
    let m = std::fs::read(base.path().join("second-dir/m.o")).unwrap();
    assert!(!contains(&m, b"first-dir") && !contains(&m, b"second-dir"));
}

#[test]
fn cache_commands_report_and_maintain_the_store() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("objects");
    let d = base.path();
    std::fs::write(d.join("w.c"), "int f(int a) { int unused; return a; }\n").unwrap();
    let args = ["-Wall", "-c", "w.c", "-o", "w.o"];
    let first = cc(d, &store, &args);
    let again = cc(d, &store, &args);
    assert_eq!(last_event(&store), "h");
    assert_eq!(first.stderr, again.stderr, "warnings are replayed");
    assert!(String::from_utf8_lossy(&again.stderr).contains("unused"));
    assert!(cc(d, &store, &["-E", "w.c"]).status.success());
    assert!(cc(d, &store, &["-c", "w.c", "-o", "/dev/null"])
        .status
        .success());
    let pik_cache = |args: &[&str]| {
        run(Command::new(pik_bin())
            .env("PIK_OBJECT_CACHE_DIR", &store)
            .arg("cache")
            .args(args))
    };
    let s = pik_cache(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(
        (v["hits"].as_u64(), v["misses"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["uncacheable"]["preprocess_only_(-E)"], 1, "{v}");
    assert_eq!(v["uncacheable"]["output_to_/dev/null"], 1, "{v}");
    assert!(v["disk_bytes"].as_u64().unwrap() > 0);
    assert!(pik_cache(&["stats"]).status.success());
    // verify: clean, then a damaged entry is found, removed, and reported with exit 1.
    assert!(pik_cache(&["verify"]).status.success());
    let entry = files_with_suffix(&store.join("entries"), "")
        .into_iter()
        .next()
        .unwrap();
    let mut raw = std::fs::read(&entry).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0xff;
    std::fs::write(&entry, &raw).unwrap();
    assert!(!pik_cache(&["verify"]).status.success());
    assert!(!entry.exists());
    // gc to a tiny limit evicts; clear empties.
    cc(d, &store, &args);
    let g = pik_cache(&["gc", "--max-size", "1", "--json"]);
    let g: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert!(g["removed"].as_u64().unwrap() >= 1, "{g}");
    assert!(pik_cache(&["clear"]).status.success());
    let s = pik_cache(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["files"], 0);
    assert_eq!(v["hits"], 0);
    let bad = pik_cache(&["gc", "--max-size", "lots"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a size"));
}

#[test]
fn the_compiler_named_by_pik_build_is_used_and_a_wrong_name_never_loops() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("objects");
    let d = base.path();
    std::fs::write(d.join("a.c"), "int a(int x) { return x * 3; }\n").unwrap();
    let args = ["-O2", "-c", "a.c", "-o", "a.o"];
    // What `pik build` sets is what runs: a compiler that is not there fails the call, by name.
    let gone = "aarch64-linux-gnu-gcc=/nonexistent/aarch64-linux-gnu-gcc";
    let o = cc_env(d, &store, &args, &[("PIK_COMPILER", gone)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/aarch64-linux-gnu-gcc"), "{err}");
    assert!(!d.join("a.o").exists());
    // A setting naming pik's own link: that pik finds the real compiler on PATH, once.
    let masq = d.join("masq");
    std::fs::create_dir_all(&masq).unwrap();
    std::os::unix::fs::symlink(pik_bin(), masq.join("aarch64-linux-gnu-gcc")).unwrap();
    let own = format!(
        "aarch64-linux-gnu-gcc={}",
        masq.join("aarch64-linux-gnu-gcc").display()
    );
    let o = cc_env(d, &store, &args, &[("PIK_COMPILER", &own)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.join("a.o").exists());
    // Another name's setting is not this compiler's.
    let other = "clang=/nonexistent/clang";
    std::fs::remove_file(d.join("a.o")).unwrap();
    let o = cc_env(d, &store, &args, &[("PIK_COMPILER", other)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last_event(&store), "h");
}
