//! Distributed builds end to end, against the real Debian distccd in network namespaces made by
//! the test (10.78.N.0/24, namespaces `pikdbN`): a mini kernel with every compile sent to a
//! builder is bit-identical to the shared local build, and at `pik cc` level each way a builder
//! can fail (refused connection, a builder dying mid-job, a builder with another compiler)
//! runs the job here with the fallback counted by host and reason, `--strict-remote` turns it
//! into a failure naming both, and a genuine compile error is reported once; a Nix derivation
//! naming a builder distributes and its outputs hash as the local build's.
//!
//! Needs root (`ip netns`); skipped with a message only where a namespace cannot be made.

mod common;

use common::netns::{self, Netns};
use pik::dist::{self, DistConfig};
use pik::wrapper::{DistSummary, Summary};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PREFIX: &str = "pikdb";
const BASE: [u8; 2] = [10, 78];
const CC: &str = "aarch64-linux-gnu-gcc";

/// Whether network namespaces can be made here (needs root); prints why not.
fn namespaces() -> bool {
    let probe = format!("{PREFIX}probe");
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        });
    match made {
        Ok((true, _)) => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            true
        }
        Ok((false, e)) => {
            eprintln!("skipped: `ip netns add` failed (needs root): {e}");
            false
        }
        Err(e) => {
            eprintln!("skipped: cannot run `ip netns add`: {e}");
            false
        }
    }
}

/// The cross compiler's real path (what a good builder's DISTCC_CMDLIST names).
fn cc_path() -> PathBuf {
    PathBuf::from("/usr/bin").join(CC)
}

/// A builder running distccd with the compilers in `cmdlist`.
fn builder(n: u8, cmdlist: &[&Path]) -> Netns {
    let mut ns = Netns::create(PREFIX, BASE, n);
    ns.start_distccd(cmdlist);
    ns
}

/// A builder whose `aarch64-linux-gnu-gcc` is a shell script with `body` (the script's
/// directory is returned with it and must outlive the builder).
fn scripted_builder(n: u8, body: &str) -> (tempfile::TempDir, Netns) {
    let scripts = netns::scratch_dir();
    let cc = netns::script(scripts.path(), CC, body);
    let ns = builder(n, &[&cc]);
    (scripts, ns)
}

/// The distribution summary of a session log.
fn dist_of(log: &Path) -> DistSummary {
    Summary::read(log).dist
}

// ---------------------------------------------------------------------------------------------
// A whole mini kernel on a builder.

#[test]
fn a_mini_build_with_every_compile_remote_is_identical_to_the_local_one() {
    if !namespaces() {
        return;
    }
    let local = common::mini_build("bcm2712");
    let ns = builder(1, &[&cc_path()]);
    // A fresh object store: every compile misses and goes out. The header lists the shared
    // build kept (beside its cache dir, not in the store) make the misses pump jobs.
    let scratch = tempfile::tempdir_in(common::shared()).unwrap();
    let (out, build_dir) = (scratch.path().join("result"), scratch.path().join("build"));
    let started = Instant::now();
    let ran = common::run(
        common::pik_mini("bcm2712")
            .env("PIK_OBJECT_CACHE_DIR", scratch.path().join("objects"))
            .env("PIK_DIST_REMOTE_ONLY", "1")
            .args(["-j2", "--no-memo", "--hosts"])
            .arg(format!("{}/2,lzo,cpp", ns.addr))
            .arg("--out")
            .arg(&out)
            .arg("--build-dir")
            .arg(&build_dir),
    );
    let wall = started.elapsed();
    assert!(
        ran.status.success(),
        "the distributed build failed; distccd said:\n{}",
        ns.log("distccd")
    );
    let m = common::read_json(&scratch.path().join("result.json"));
    assert_eq!(
        m["files"], local.manifest["files"],
        "outputs differ from the local build"
    );
    let d = &m["cache"]["dist"];
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("dist.{k} in {d}"));
    eprintln!(
        "all-remote mini build: {:.1} s (local shared build: {} s); dist record: {d}",
        wall.as_secs_f64(),
        local.manifest["timings_s"]["build"]
    );
    assert_eq!(m["cache"]["hits"], 0, "the object store was not fresh");
    assert!(
        n("remote") + n("pump") > 0,
        "no job went to the builder: {d}"
    );
    assert!(n("pump") > 0, "no pump job, though header lists exist: {d}");
    assert_eq!(n("fallback"), 0, "fallbacks: {d}");
    let host = ns.addr.to_string();
    let on_host = &d["by_host"][&host];
    assert!(
        on_host["pump"].as_u64().unwrap_or(0) > 0,
        "the builder's jobs are not counted by host: {d}"
    );
    let text = String::from_utf8_lossy(&ran.stderr);
    assert!(
        text.contains("pik: dist"),
        "no dist line in the summary:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// pik as a Nix derivation's builder, with a builder named by the derivation.

#[test]
fn a_derivation_naming_a_builder_distributes_and_its_outputs_are_the_local_ones() {
    if !namespaces() {
        return;
    }
    let local = common::mini_build("bcm2712");
    let ns = builder(20, &[&cc_path()]);
    // A throwaway store whose store dir is its real dir: Nix builds a derivation with
    // __noChroot outside the sandbox only there (a chroot store always sandboxes), as
    // `sandbox = relaxed` does for a user's /nix/store.
    let scratch = tempfile::tempdir_in(common::shared()).unwrap();
    let d = scratch.path().display();
    let store = format!("local?store={d}/store&state={d}/state&log={d}/log");
    let hosts = format!("[ \"{}/2,lzo\" ]", ns.addr);
    let started = Instant::now();
    let built = common::run(
        Command::new("nix-build")
            .args(["--store", &store, "--no-out-link"])
            .args(["--option", "build-users-group", ""])
            .args(["--option", "substituters", ""])
            .args(["--option", "sandbox", "relaxed"])
            .args(["--option", "cores", "0"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/kernel.nix"))
            .arg("--arg")
            .arg("pik")
            .arg(common::pik_bin())
            .arg("--arg")
            .arg("src")
            .arg(common::debian_tarball())
            .args([
                "--argstr", "target", "bcm2712", "--argstr", "profile", "mini",
            ])
            .args(["--arg", "hosts", &hosts]),
    );
    let log = String::from_utf8_lossy(&built.stderr).to_string();
    assert!(
        built.status.success(),
        "nix-build failed; distccd said:\n{}",
        ns.log("distccd")
    );
    eprintln!(
        "nix-build with a builder: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("build hosts"), "{log}");
    // "pik: dist    812 of 905 compiles on 1 builder(s) …": some went out, none fell back.
    let dist = log
        .lines()
        .find_map(|l| l.strip_prefix("pik: dist"))
        .unwrap_or_else(|| panic!("no dist line in the build log:\n{log}"));
    let remote: u64 = dist.split_whitespace().next().unwrap().parse().unwrap();
    assert!(remote > 0, "no compile went to the builder: {dist}");
    assert!(dist.contains(" 0 fallbacks"), "{dist}");
    // Nix's hash of each output is pik's narHash of the local build: the same trees.
    for (name, manifest) in [
        ("out", &local.manifest["nar"]),
        ("dev", &local.manifest["dev"]["nar"]),
    ] {
        let prefix = format!("pik: output {name} = ");
        let path = log
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{log}"));
        let hash = common::run_ok(
            Command::new("nix-store").args(["--store", &store, "-q", "--hash", path]),
        );
        assert_eq!(
            String::from_utf8_lossy(&hash.stdout).trim(),
            manifest["nar_hash"].as_str().unwrap(),
            "output {name} differs from the local build"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One compile through `pik cc`, on a builder or after one failed.

/// A small C project and its own cache, session log and distribution config.
struct Cc {
    dir: tempfile::TempDir,
    /// How long a builder may go without progress on a job.
    timeout_ms: u64,
}

impl Cc {
    /// A project whose `hello.c` is `body` (it may include `inc/hello.h`).
    fn new(body: &str) -> Cc {
        let dir = netns::scratch_dir();
        let p = dir.path();
        std::fs::create_dir(p.join("inc")).unwrap();
        std::fs::write(p.join("inc/hello.h"), "#define TWICE(x) ((x) * 2)\n").unwrap();
        std::fs::write(p.join("hello.c"), body).unwrap();
        Cc {
            dir,
            timeout_ms: 20_000,
        }
    }

    fn ok() -> Cc {
        Cc::new("#include \"hello.h\"\nint hello(int x) { return TWICE(x) + 3; }\n")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes the build's distribution config for `hosts` (what `pik build` writes).
    fn config(&self, hosts: &[String], strict: bool) -> PathBuf {
        let hosts = dist::parse_hosts(hosts).unwrap();
        let id = dist::CompilerIdentity::local(&cc_path()).unwrap();
        // Slots and backoff marks of their own: a host the first build backed off is still in.
        let slots = self.path(if strict { "slots-strict" } else { "slots" });
        let mut cfg = DistConfig::new(&hosts, CC, id, 1, slots);
        cfg.strict = strict;
        cfg.remote_only = true;
        cfg.io_timeout_ms = self.timeout_ms;
        let path = self.path(if strict { "strict.json" } else { "dist.json" });
        cfg.write(&path).unwrap();
        path
    }

    /// `pik cc aarch64-linux-gnu-gcc -c hello.c -o <out>` with the object store `store`
    /// (`-nostdinc` as in kbuild: pump jobs need it, the builder's system headers could differ).
    fn compile(&self, config: &Path, store: &str, out: &str) -> Output {
        let mut cmd = common::pik();
        cmd.current_dir(self.dir.path())
            .env("PIK_CACHE_DIR", self.path("cache"))
            .env("PIK_OBJECT_CACHE_DIR", self.path(store))
            .env("PIK_PUMP_DIR", self.path("pump"))
            .env(dist::DIST_ENV, config)
            .env("PIK_SESSION_LOG", self.path("session.log"))
            .args([
                "cc",
                CC,
                "-nostdinc",
                "-O2",
                "-I",
                "inc",
                "-c",
                "hello.c",
                "-o",
                out,
            ]);
        common::run(&mut cmd)
    }

    /// The local compiler's object for the project.
    fn local_object(&self) -> Vec<u8> {
        let st = Command::new(CC)
            .current_dir(self.dir.path())
            .args([
                "-nostdinc",
                "-O2",
                "-I",
                "inc",
                "-c",
                "hello.c",
                "-o",
                "local.o",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(self.path("local.o")).unwrap()
    }

    /// What the session log says about distribution so far.
    fn dist(&self) -> DistSummary {
        dist_of(&self.path("session.log"))
    }
}

/// The host name the counters use for a builder.
fn host_key(ns: &Netns) -> String {
    ns.addr.to_string()
}

#[test]
fn a_good_builder_compiles_and_a_known_header_list_makes_a_pump_job() {
    if !namespaces() {
        return;
    }
    let ns = builder(2, &[&cc_path()]);
    let p = Cc::ok();
    let cfg = p.config(&[format!("{}/2,lzo,cpp", ns.addr)], false);
    assert!(p.compile(&cfg, "objects-1", "a.o").status.success());
    let d = p.dist();
    assert_eq!((d.remote, d.pump, d.fallback), (1, 0, 0), "{d:?}");
    assert_eq!(d.pump_declined.get("nolist"), Some(&1), "{d:?}");
    std::fs::rename(p.path("a.o"), p.path("first.o")).unwrap();
    // A new, empty object store: the same call misses again (the output's name is part of its
    // key), but its header list is known now.
    assert!(p.compile(&cfg, "objects-2", "a.o").status.success());
    let d = p.dist();
    assert_eq!((d.remote, d.pump, d.fallback), (1, 1, 0), "{d:?}");
    assert_eq!(d.hosts[&host_key(&ns)].pump, 1, "{d:?}");
    let want = p.local_object();
    assert_eq!(
        std::fs::read(p.path("first.o")).unwrap(),
        want,
        "protocol 2 object"
    );
    assert_eq!(std::fs::read(p.path("a.o")).unwrap(), want, "pump object");

    // Another configuration of the same call: its header now includes one more. The kept list
    // no longer holds (a header changed), so the job goes preprocessed without asking the
    // builder to fail first, and its own list is kept beside the first.
    let old = std::fs::read(p.path("inc/hello.h")).unwrap();
    std::fs::write(p.path("inc/extra.h"), "#define EXTRA 0\n").unwrap();
    std::fs::write(
        p.path("inc/hello.h"),
        "#include \"extra.h\"\n#define TWICE(x) ((x) * 2 + EXTRA)\n",
    )
    .unwrap();
    assert!(p.compile(&cfg, "objects-3", "a.o").status.success());
    let d = p.dist();
    assert_eq!((d.remote, d.pump, d.fallback), (2, 1, 0), "{d:?}");
    assert_eq!(d.pump_declined.get("changed"), Some(&1), "{d:?}");
    assert!(p.compile(&cfg, "objects-4", "a.o").status.success());
    assert_eq!(
        p.dist().pump,
        2,
        "the new list makes a pump job: {:?}",
        p.dist()
    );
    assert_eq!(std::fs::read(p.path("a.o")).unwrap(), p.local_object());
    // Back to the first configuration: its list was kept too.
    std::fs::write(p.path("inc/hello.h"), old).unwrap();
    assert!(p.compile(&cfg, "objects-5", "a.o").status.success());
    let d = p.dist();
    assert_eq!((d.remote, d.pump, d.fallback), (2, 3, 0), "{d:?}");
    assert_eq!(std::fs::read(p.path("a.o")).unwrap(), want);
}

/// Runs the project's compile against a failing builder: it must still succeed here with the
/// local object and one fallback for `host` by `reason`; then with `--strict-remote` it must
/// fail naming both.
fn falls_back(p: &Cc, spec: &str, host: &str, reason: &str) {
    let cfg = p.config(&[spec.to_string()], false);
    let out = p.compile(&cfg, "objects-1", "a.o");
    assert!(out.status.success(), "the fallback compile failed");
    assert_eq!(std::fs::read(p.path("a.o")).unwrap(), p.local_object());
    let d = p.dist();
    assert_eq!((d.remote, d.pump, d.fallback), (0, 0, 1), "{d:?}");
    assert_eq!(d.fallbacks[host].get(reason), Some(&1), "{d:?}");
    let strict = p.config(&[spec.to_string()], true);
    let out = p.compile(&strict, "objects-2", "s.o");
    assert!(!out.status.success(), "--strict-remote compiled here");
    assert!(!p.path("s.o").exists(), "--strict-remote left an object");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--strict-remote") && err.contains(host) && err.contains(reason),
        "the strict failure does not name host {host} and reason {reason}:\n{err}"
    );
    assert_eq!(p.dist().strict.get(&format!("{host}/{reason}")), Some(&1));
}

#[test]
fn a_host_refusing_the_connection_falls_back() {
    if !namespaces() {
        return;
    }
    // A namespace with nothing listening: the connection is refused.
    let ns = Netns::create(PREFIX, BASE, 3);
    let p = Cc::ok();
    falls_back(&p, &format!("{}/2", ns.addr), &host_key(&ns), "connect");
}

#[test]
fn a_builder_refusing_the_compiler_falls_back() {
    if !namespaces() {
        return;
    }
    // distccd runs only the compilers its DISTCC_CMDLIST names; the cross compiler is not one.
    let ns = builder(7, &[Path::new("/usr/bin/gcc")]);
    let p = Cc::ok();
    falls_back(&p, &format!("{}/2", ns.addr), &host_key(&ns), "refused");
}

#[test]
fn a_builder_slower_than_the_timeout_falls_back() {
    if !namespaces() {
        return;
    }
    let body = format!("sleep 20\nexec {} \"$@\"", cc_path().display());
    let (_scripts, ns) = scripted_builder(8, &body);
    let mut p = Cc::ok();
    p.timeout_ms = 2_000;
    falls_back(&p, &format!("{}/2", ns.addr), &host_key(&ns), "timeout");
}

#[test]
fn a_builder_dying_mid_job_falls_back() {
    if !namespaces() {
        return;
    }
    // The compiler kills the distccd process serving the job: the connection drops mid-job.
    let (_scripts, ns) = scripted_builder(4, "kill -9 $PPID\nsleep 5");
    let p = Cc::ok();
    falls_back(&p, &format!("{}/2,lzo", ns.addr), &host_key(&ns), "refused");
}

#[test]
fn a_builder_with_another_compiler_falls_back() {
    if !namespaces() {
        return;
    }
    // The name says aarch64, the script behind it makes x86-64 objects.
    let (_scripts, ns) = scripted_builder(5, "exec gcc \"$@\"");
    let p = Cc::ok();
    falls_back(
        &p,
        &format!("{}/2,lzo", ns.addr),
        &host_key(&ns),
        "mismatch",
    );
}

#[test]
fn a_genuine_compile_error_is_reported_once_by_the_local_compiler() {
    if !namespaces() {
        return;
    }
    let ns = builder(6, &[&cc_path()]);
    let p = Cc::new("int hello(void) { return undeclared_thing; }\n");
    let cfg = p.config(&[format!("{}/2,lzo", ns.addr)], true);
    let out = p.compile(&cfg, "objects-1", "a.o");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("undeclared (first use in this function)")
            .count(),
        1,
        "the error is not reported exactly once:\n{err}"
    );
    assert!(
        !err.contains("--strict-remote"),
        "a code error is no builder failure:\n{err}"
    );
    let d = p.dist();
    assert_eq!(d.fallback, 0, "{d:?}");
    assert!(d.strict.is_empty(), "{d:?}");
}
