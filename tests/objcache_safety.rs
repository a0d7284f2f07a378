//! The object cache never loses or corrupts a user's work: a full or read-only store, inputs
//! that are not files, glued depfile options, probe failures about the environment, stores
//! other users can write, damaged lengths, and colour on a terminal. Each case runs `pik cc`
//! against the real compilers (`gcc`, `aarch64-linux-gnu-gcc`); no kernel builds.
//!
//! The disk cases mount small tmpfs file systems, which needs root (as in CI); they are skipped,
//! with a message, only where mounting is not permitted.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn pik_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pik"))
}

/// `pik cc <compiler> args` in `dir` with the object store `store`, events in `<store>.log`,
/// plus `env` (a value of `None` removes the variable).
fn cc_with(
    dir: &Path,
    store: &Path,
    compiler: &str,
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> Command {
    let mut c = Command::new(pik_bin());
    c.current_dir(dir)
        .env("PIK_OBJECT_CACHE_DIR", store)
        .env("PIK_SESSION_LOG", store.with_extension("log"))
        .env_remove("PIK_CACHE_SHARED")
        .env_remove("PIK_NO_CACHE")
        .env_remove("PIK_COMPILER")
        .env_remove("PIK_SOURCE_TREE")
        .env_remove("NO_COLOR")
        .env_remove("GCC_COLORS")
        .env("LC_ALL", "C");
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.arg("cc").arg(compiler).args(args);
    c
}

fn show(what: &str, out: &Output) {
    eprintln!(
        "--- {what}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("spawning pik");
    show(&format!("{c:?}"), &out);
    out
}

/// `pik cc aarch64-linux-gnu-gcc args` (the cross compiler kbuild uses).
fn cc(dir: &Path, store: &Path, args: &[&str]) -> Output {
    run(cc_with(dir, store, "aarch64-linux-gnu-gcc", args, &[]))
}

/// The session log's lines (`kind reason output`).
fn log_lines(store: &Path) -> Vec<String> {
    std::fs::read_to_string(store.with_extension("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The last session-log line's kind and reason (`h deps`, `m -`, `u …`, `e …`).
fn last(store: &Path) -> String {
    let lines = log_lines(store);
    let line = lines.last().expect("an event in the session log");
    line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
}

/// The real compiler's object for the same arguments (the reference a cached object must equal).
fn reference(dir: &Path, compiler: &str, args: &[&str], out: &str) -> Vec<u8> {
    let mut args: Vec<&str> = args.to_vec();
    let at = args.iter().position(|a| *a == "-o").unwrap();
    args[at + 1] = out;
    let st = Command::new(compiler)
        .current_dir(dir)
        .args(&args)
        .env("LC_ALL", "C")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(dir.join(out)).unwrap()
}

/// The one warning a build with session log `log` prints about its object store.
fn store_warning(log: &Path) -> Option<String> {
    pik::wrapper::Summary::read(log).store_warning()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return v;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            v.extend(files_under(&p));
        } else {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test panics).
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (`mount -o size=…`) at `dir`, its root private to its owner
    /// (a tmpfs root is world-writable by default, which pik refuses as a store); `None` (after
    /// saying why) only where this process may not mount.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("running mount");
        if out.status.success() {
            return Some(Mount(dir.to_path_buf()));
        }
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        if err.contains("permission denied")
            || err.contains("operation not permitted")
            || err.contains("must be superuser")
        {
            eprintln!("SKIPPED: mounting a tmpfs is not permitted here (EPERM): {err}");
            return None;
        }
        panic!("mount tmpfs at {}: {err}", dir.display());
    }

    fn remount_read_only(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount,ro {}", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes to `dir` until the file system is full.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0x5au8; 4096];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // Small files take whole pages: make sure not even one more fits.
    for i in 0.. {
        if std::fs::write(dir.join(format!("filler-{i}")), b"x").is_err() {
            break;
        }
    }
}

/// Item 3: a store on a full disk. The shared file-hash table used to be a sparse file mapped
/// shared, so the first write to one of its pages killed every `pik cc` with SIGBUS and no
/// object. Now the compile runs, its object is right, and the failed write is counted with its
/// reason, from which the build makes one warning.
#[test]
fn a_full_disk_never_fails_a_compile() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("full");
    let Some(_m) = Mount::tmpfs(&mnt, "200k") else {
        return;
    };
    fill(&mnt);
    let work = base.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("z.c"),
        "int z = 3;\nint f(int a) { return a * z; }\n",
    )
    .unwrap();
    let args = ["-O2", "-c", "z.c", "-o", "z.o"];
    let want = reference(&work, "aarch64-linux-gnu-gcc", &args, "ref.o");
    // The store where a build puts it: under PIK_CACHE_DIR.
    let log = base.path().join("session.log");
    for round in 0..2 {
        let _ = std::fs::remove_file(work.join("z.o"));
        let out = run(cc_with(
            &work,
            &mnt.join("objects"),
            "aarch64-linux-gnu-gcc",
            &args,
            &[
                ("PIK_OBJECT_CACHE_DIR", None),
                ("PIK_CACHE_DIR", Some(mnt.to_str().unwrap())),
                ("PIK_SESSION_LOG", Some(log.to_str().unwrap())),
            ],
        ));
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: the compile failed"
        );
        assert_eq!(
            std::fs::read(work.join("z.o")).unwrap(),
            want,
            "round {round}"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .all(|l| l.starts_with("e no_space_left_on_device@")),
        "{text}"
    );
    assert_eq!(pik::wrapper::Summary::read(&log).errors, 2);
    let warning = store_warning(&log).expect("a warning for the build");
    assert!(
        warning.contains("2 compiles ran uncached")
            && warning.contains("no space left on device")
            && warning.contains(&mnt.join("objects").display().to_string()),
        "{warning}"
    );
}

/// Item 3: a read-only store still serves its hits (it used to give none, and no warning);
/// compiles it cannot keep run and are counted with the reason. Item 11: `pik cache verify`
/// on it fails when it cannot remove a damaged entry (it used to report a clean store).
#[test]
fn a_read_only_store_serves_hits_and_counts_what_it_cannot_keep() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("ro");
    let Some(m) = Mount::tmpfs(&mnt, "16m") else {
        return;
    };
    // The mount is the store, so its session log (`<store>.log`) lies outside it.
    let store = mnt.clone();
    let work = base.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for (name, v) in [("a", 1), ("b", 2), ("c", 3)] {
        std::fs::write(
            work.join(format!("{name}.c")),
            format!("int {name} = {v};\n"),
        )
        .unwrap();
    }
    let args = |n: &'static str| -> [String; 5] {
        [
            "-O2".into(),
            "-c".into(),
            format!("{n}.c"),
            "-o".into(),
            format!("{n}.o"),
        ]
    };
    let cc_n = |n: &'static str| {
        let a = args(n);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        cc(&work, &store, &a)
    };
    assert!(cc_n("c").status.success());
    let c_entries = files_under(&store.join("entries"));
    assert!(cc_n("a").status.success());
    assert_eq!(last(&store), "m -");
    let a_obj = std::fs::read(work.join("a.o")).unwrap();
    // Damage c's entry, then make the whole store read-only.
    assert_eq!(c_entries.len(), 1);
    let mut raw = std::fs::read(&c_entries[0]).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0xff;
    std::fs::write(&c_entries[0], &raw).unwrap();
    m.remount_read_only();

    std::fs::remove_file(work.join("a.o")).unwrap();
    assert!(cc_n("a").status.success());
    assert_eq!(last(&store), "h deps", "a read-only store serves its hits");
    assert_eq!(std::fs::read(work.join("a.o")).unwrap(), a_obj);
    let b = cc_n("b");
    assert!(b.status.success());
    assert!(work.join("b.o").exists());
    assert!(
        last(&store).starts_with("e read-only_file_system@"),
        "{}",
        last(&store)
    );
    let warning = store_warning(&store.with_extension("log")).unwrap();
    assert!(
        warning.contains("1 compile ran uncached") && warning.contains("read-only file system"),
        "{warning}"
    );

    let verify = run({
        let mut c = Command::new(pik_bin());
        c.env("PIK_OBJECT_CACHE_DIR", &store)
            .env_remove("PIK_CACHE_SHARED")
            .args(["cache", "verify"]);
        c
    });
    assert!(
        !verify.status.success(),
        "verify could not remove the damaged entry, so the store is not clean"
    );
    assert!(String::from_utf8_lossy(&verify.stderr).contains(&c_entries[0].display().to_string()));
}

/// Item 4: an input that is not a regular file (a pipe through /dev/stdin or /proc/self/fd/0,
/// a FIFO) goes to the real compiler unread. Hashing it used to consume the pipe (an empty
/// object and exit 0) or block on the FIFO forever.
#[test]
fn inputs_that_are_not_files_reach_the_compiler_unread() {
    let base = tempfile::tempdir().unwrap();
    let d = base.path();
    let store = d.join("objects");
    let defines = |obj: &Path, sym: &str| -> bool {
        use object::{Object, ObjectSymbol};
        let bytes = std::fs::read(obj).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let found = file
            .symbols()
            .any(|s| s.name() == Ok(sym) && !s.is_undefined());
        found
    };
    for input in ["/dev/stdin", "/proc/self/fd/0"] {
        let _ = std::fs::remove_file(d.join("p.o"));
        let mut c = cc_with(
            d,
            &store,
            "gcc",
            &["-x", "c", "-c", input, "-o", "p.o"],
            &[],
        );
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"int x = 42;\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        show(input, &out);
        assert!(out.status.success(), "{input}");
        assert!(
            defines(&d.join("p.o"), "x"),
            "{input}: the object lost the input"
        );
        assert_eq!(last(&store), "u input_is_not_a_regular_file", "{input}");
    }

    // A FIFO: its writer appears only once the compiler opens it.
    let fifo = d.join("src.fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(b"int y = 7;\n").unwrap();
        })
    };
    let mut child = cc_with(
        d,
        &store,
        "gcc",
        &["-x", "c", "-c", "src.fifo", "-o", "f.o"],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("pik cc on a FIFO hung");
    assert!(status.success());
    writer.join().unwrap();
    assert!(defines(&d.join("f.o"), "y"));
    assert_eq!(last(&store), "u input_is_not_a_regular_file");

    // The probe of `-` (stdin) is read by pik on purpose, and still cached.
    let probe = |src: &str| {
        let mut c = cc_with(
            d,
            &store,
            "gcc",
            &["-c", "-x", "c", "-o", "/dev/null", "-"],
            &[],
        );
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(src.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(probe("int p;\n").status.success());
    assert_eq!(last(&store), "m probe");
    assert!(probe("int p;\n").status.success());
    assert_eq!(last(&store), "h probe");
}

/// Item 5: glued and `-Wp,` depfile options. `-MFdep.d` used to be ignored: pik read the `-MD`
/// default name (`a.d`, stale from an earlier compile) as the list of headers, so after a
/// header change it served the old object. Every spelling now names the right depfile, which a
/// hit also writes.
#[test]
fn glued_depfile_options_never_serve_a_stale_object() {
    for (i, form) in [
        &["-MMD", "-MFdep.d"][..],
        &["-MD", "-MFdep.d", "-MTa.o"],
        &["-MMD", "-Wp,-MF,dep.d"],
        &["-Wp,-MMD,dep.d"],
        &["-MMD", "-MF", "dep.d"],
    ]
    .into_iter()
    .enumerate()
    {
        let base = tempfile::tempdir().unwrap();
        let (d, store) = (base.path(), base.path().join("objects"));
        // An earlier compile, before a.c included b.h, left its default depfile.
        std::fs::write(d.join("a.c"), "int v = 1;\n").unwrap();
        let st = Command::new("aarch64-linux-gnu-gcc")
            .current_dir(d)
            .args(["-MMD", "-c", "a.c", "-o", "a.o"])
            .status()
            .unwrap();
        assert!(st.success());
        let stale_d = std::fs::read(d.join("a.d")).unwrap();

        std::fs::write(d.join("b.h"), "#define V 1\n").unwrap();
        std::fs::write(d.join("a.c"), "#include \"b.h\"\nint v = V;\n").unwrap();
        let mut args = vec!["-O2", "-c", "a.c", "-o", "a.o"];
        args.extend_from_slice(form);
        assert!(cc(d, &store, &args).status.success(), "{form:?}");
        assert_eq!(last(&store), "m -", "{form:?}");
        let dep = std::fs::read_to_string(d.join("dep.d")).unwrap();
        assert!(dep.contains("b.h"), "{form:?}: {dep}");
        // A hit writes the depfile the command line names, and leaves a.d alone.
        std::fs::remove_file(d.join("dep.d")).unwrap();
        assert!(cc(d, &store, &args).status.success());
        assert_eq!(last(&store), "h deps", "{form:?}");
        assert!(std::fs::read_to_string(d.join("dep.d"))
            .unwrap()
            .contains("b.h"));
        assert_eq!(std::fs::read(d.join("a.d")).unwrap(), stale_d, "{form:?}");

        // The header changes: a miss, and the object the compiler makes now.
        std::fs::write(d.join("b.h"), "#define V 2\n").unwrap();
        assert!(cc(d, &store, &args).status.success());
        assert_eq!(last(&store), "m -", "{form:?}: stale object served");
        let want = reference(d, "aarch64-linux-gnu-gcc", &args, &format!("ref{i}.o"));
        assert_eq!(std::fs::read(d.join("a.o")).unwrap(), want, "{form:?}");
    }
}

/// Item 6: a probe that fails because of where its output goes (a missing directory) is not an
/// answer about the flag; it used to be stored and replayed for a probe that writes somewhere
/// fine.
#[test]
fn probe_failures_about_the_output_are_never_replayed() {
    let base = tempfile::tempdir().unwrap();
    let (d, store) = (base.path(), base.path().join("objects"));
    std::fs::create_dir_all(d.join("ok")).unwrap();
    let probe = |out: &str| {
        run(cc_with(
            d,
            &store,
            "gcc",
            &["-Werror", "-c", "-x", "c", "/dev/null", "-o", out],
            &[],
        ))
    };
    let bad = probe("/nonexistent/x");
    assert!(!bad.status.success());
    assert!(last(&store).starts_with("u probe_output_directory"));
    let good = probe("ok/x");
    assert!(
        good.status.success(),
        "the failure to write /nonexistent/x was replayed"
    );
    assert!(d.join("ok/x").exists());
    assert_eq!(last(&store), "m probe");
    // A real refusal is still an answer.
    let no = run(cc_with(
        d,
        &store,
        "gcc",
        &[
            "-Werror",
            "-fno-such-flag-here",
            "-c",
            "-x",
            "c",
            "/dev/null",
            "-o",
            "ok/y",
        ],
        &[],
    ));
    assert_eq!(no.status.code(), Some(1));
    assert_eq!(last(&store), "m probe");
}

/// Item 8: a store another user may write is refused (compiled uncached, counted, one warning
/// line), unless it is declared shared; `pik cache` commands fail on it.
#[test]
fn a_store_others_can_write_is_refused_unless_shared() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let d = base.path();
    std::fs::write(d.join("a.c"), "int a = 1;\n").unwrap();
    let args = ["-O2", "-c", "a.c", "-o", "a.o"];
    let world = d.join("world-writable");
    let foreign = d.join("foreign");
    for dir in [&world, &foreign] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
    for store in [&world, &foreign] {
        // Outside a build: a warning on stderr.
        let out = run(cc_with(
            d,
            store,
            "aarch64-linux-gnu-gcc",
            &args,
            &[("PIK_SESSION_LOG", None)],
        ));
        assert!(out.status.success());
        assert!(d.join("a.o").exists());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("not using the object cache")
                && err.contains(&store.display().to_string())
                && err.contains("PIK_CACHE_SHARED"),
            "{err}"
        );
        // In a build: counted in its session log, for the build's one warning.
        let out = cc(d, store, &args);
        assert!(out.status.success());
        assert!(out.stderr.is_empty());
        assert!(last(store).starts_with("e untrusted_cache_directory@"));
        let w = store_warning(&store.with_extension("log")).unwrap();
        assert!(w.contains("PIK_CACHE_SHARED=1"), "{w}");
        assert!(
            files_under(store).is_empty(),
            "nothing written into a refused store: {:?}",
            files_under(store)
        );
        let stats = run({
            let mut c = Command::new(pik_bin());
            c.env("PIK_OBJECT_CACHE_DIR", store)
                .env_remove("PIK_CACHE_SHARED")
                .args(["cache", "stats"]);
            c
        });
        assert!(!stats.status.success());
        assert!(String::from_utf8_lossy(&stats.stderr).contains("refusing the object cache"));
    }
    // Declared shared: used.
    let shared = [("PIK_CACHE_SHARED", Some("1"))];
    for _ in 0..2 {
        let c = cc_with(d, &world, "aarch64-linux-gnu-gcc", &args, &shared);
        assert!(run(c).status.success());
    }
    assert_eq!(last(&world), "h deps");
}

/// Item 8: in a shared store, links another user planted at the store's files are never
/// followed: the file-hash table and the counters used to be opened through them, so a root
/// `pik cc` grew and wrote the link's target.
#[test]
fn links_planted_in_a_shared_store_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let d = base.path();
    let store = d.join("team-cache");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victims = d.join("victims");
    std::fs::create_dir_all(&victims).unwrap();
    let content = b"precious\n";
    for name in ["filehash.v2", "stats.log", "dictionary"] {
        std::fs::write(victims.join(name), content).unwrap();
        std::os::unix::fs::symlink(victims.join(name), store.join(name)).unwrap();
    }
    std::fs::write(d.join("a.c"), "int a = 1;\n").unwrap();
    let args = ["-O2", "-c", "a.c", "-o", "a.o"];
    let shared = [("PIK_CACHE_SHARED", Some("1"))];
    for _ in 0..2 {
        let out = run(cc_with(d, &store, "aarch64-linux-gnu-gcc", &args, &shared));
        assert!(out.status.success());
    }
    assert_eq!(last(&store), "h deps");
    for name in ["filehash.v2", "stats.log", "dictionary"] {
        let now = std::fs::read(victims.join(name)).unwrap();
        assert!(
            now == content,
            "{name}: written through a planted link (now {} bytes)",
            now.len()
        );
    }
}

/// Item 11: a damaged length field in an entry used to make every call try to allocate it
/// (3 GiB here: an abort, exit 134, under a memory limit) until `pik cache verify` ran. Now it
/// is a miss. And one bad byte in the counters' log no longer zeroes them.
#[test]
fn damaged_lengths_cost_a_miss_not_the_compile() {
    let base = tempfile::tempdir().unwrap();
    let (d, store) = (base.path(), base.path().join("objects"));
    std::fs::write(d.join("a.c"), "int a = 1;\n").unwrap();
    let args = ["-O2", "-c", "a.c", "-o", "a.o"];
    assert!(cc(d, &store, &args).status.success());
    let entries = files_under(&store.join("entries"));
    assert_eq!(entries.len(), 1);
    // Magic (8), checksum (32), then the payload length.
    let mut raw = std::fs::read(&entries[0]).unwrap();
    raw[40..48].copy_from_slice(&(3u64 << 30).to_le_bytes());
    std::fs::write(&entries[0], &raw).unwrap();
    let mut c = cc_with(d, &store, "aarch64-linux-gnu-gcc", &args, &[]);
    // SAFETY: setrlimit is async-signal-safe; 1 GiB of address space is plenty for gcc.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run(c);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(last(&store), "m -");
    assert!(cc(d, &store, &args).status.success());
    assert_eq!(last(&store), "h deps");

    // The counters' log with one damaged byte: the other lines still count.
    let log = store.join("stats.log");
    let mut text = std::fs::read(&log).unwrap();
    text.extend_from_slice(b"h 1 5 \xff\n");
    std::fs::write(&log, &text).unwrap();
    let stats = run({
        let mut c = Command::new(pik_bin());
        c.env("PIK_OBJECT_CACHE_DIR", &store)
            .env_remove("PIK_CACHE_SHARED")
            .args(["cache", "stats", "--json"]);
        c
    });
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        (v["hits"].as_u64(), v["misses"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
}

/// Runs `cmd` with stderr on a new pseudo-terminal; returns its exit status and what it wrote
/// there.
fn on_terminal(mut cmd: Command) -> (std::process::ExitStatus, Vec<u8>) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors; the name, termios and size may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are ours, open, and owned from here on.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stderr(Stdio::from(slave))
        .stdout(Stdio::null())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // The parent's copy of the terminal's far end goes with `cmd`.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last writer is gone.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let st = child.wait().unwrap();
    (st, reader.join().unwrap())
}

/// Item 13c: on a terminal the compiler's diagnostics keep their colour (pik captures them
/// through a pipe, where the compiler turned colour off), and coloured and plain diagnostics
/// are kept apart: a pipe never gets colour codes, a terminal never gets them lost.
#[test]
fn diagnostics_keep_their_colour_on_a_terminal_and_only_there() {
    let base = tempfile::tempdir().unwrap();
    let (d, store) = (base.path(), base.path().join("objects"));
    std::fs::write(d.join("w.c"), "int f(int a) { int unused; return a; }\n").unwrap();
    let args = ["-Wall", "-c", "w.c", "-o", "w.o"];
    let tty = |what: &str| {
        let c = cc_with(
            d,
            &store,
            "aarch64-linux-gnu-gcc",
            &args,
            &[("TERM", Some("xterm"))],
        );
        let (st, err) = on_terminal(c);
        eprintln!(
            "--- {what} on a terminal: {st}\n{}",
            String::from_utf8_lossy(&err)
        );
        assert!(st.success());
        err
    };
    let piped = || {
        let out = run(cc_with(
            d,
            &store,
            "aarch64-linux-gnu-gcc",
            &args,
            &[("TERM", Some("xterm"))],
        ));
        assert!(out.status.success());
        out.stderr
    };
    let esc = |b: &[u8]| b.windows(2).any(|w| w == b"\x1b[");
    let warned = |b: &[u8]| String::from_utf8_lossy(b).contains("unused");

    let first = tty("miss");
    assert_eq!(last(&store), "m -");
    assert!(warned(&first) && esc(&first), "no colour on a terminal");
    let again = tty("hit");
    assert_eq!(last(&store), "h deps");
    assert!(esc(&again), "a hit on a terminal lost the colour");
    let plain = piped();
    assert_eq!(last(&store), "m -", "coloured diagnostics served to a pipe");
    assert!(warned(&plain) && !esc(&plain));
    let plain = piped();
    assert_eq!(last(&store), "h deps");
    assert!(!esc(&plain));
    // TERM=dumb and NO_COLOR: no colour asked for.
    for env in [("TERM", Some("dumb")), ("NO_COLOR", Some("1"))] {
        let (st, err) = on_terminal(cc_with(
            d,
            &store,
            "aarch64-linux-gnu-gcc",
            &args,
            &[("TERM", Some("xterm")), env],
        ));
        assert!(st.success());
        assert!(warned(&err) && !esc(&err), "{env:?}");
    }
}
