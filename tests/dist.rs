//! Distributed compiles against the real Debian distccd (and sshd), each builder a network
//! namespace made by the test (10.77.N.0/24, namespaces `pikdistN`): protocols 1, 2 and 3
//! give the local compiler's object byte for byte; refusals, wrong compilers, slow builders,
//! garbage and oversized replies are each reported as what they are; `pik hosts check` tells
//! a good builder from a refusing and a mismatched one.

mod common;

use common::netns::{self, Netns};
use pik::dist::{self, ConnectOptions, Failure, Job, PumpFile, PumpFileContent, Timeouts};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PREFIX: &str = "pikdist";
const BASE: [u8; 2] = [10, 77];
const CC: &str = "aarch64-linux-gnu-gcc";

/// The cross compiler's real path (what a good builder's DISTCC_CMDLIST names).
fn cc_path() -> PathBuf {
    PathBuf::from("/usr/bin").join(CC)
}

fn opts(io: Duration) -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(4),
            io,
        },
        ..ConnectOptions::default()
    }
}

/// A builder whose distccd runs the compilers in `cmdlist`.
fn builder(n: u8, cmdlist: &[&Path]) -> Netns {
    let mut ns = Netns::create(PREFIX, BASE, n);
    ns.start_distccd(cmdlist);
    ns
}

/// A small C project: a source using a header from `-I inc` and a `-D` macro.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(body: &str) -> Project {
        let dir = netns::scratch_dir();
        std::fs::create_dir(dir.path().join("inc")).unwrap();
        std::fs::write(
            dir.path().join("inc/hello.h"),
            "#define TWICE(x) ((x) * 2)\nint hello(int);\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("hello.c"), body).unwrap();
        Project { dir }
    }

    fn ok() -> Project {
        Project::new("#include \"hello.h\"\nint hello(int x) { return TWICE(x) + GREETING; }\n")
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The compile as kbuild would run it (relative paths, no debug info).
    fn args(&self, out: &str) -> Vec<OsString> {
        [
            CC,
            "-O2",
            "-DGREETING=3",
            "-I",
            "inc",
            "-c",
            "hello.c",
            "-o",
            out,
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }

    /// Runs `args` (with `-c` replaced by `extra`) locally in the project; its stdout.
    fn run_local(&self, args: &[OsString], extra: Option<&str>) -> Vec<u8> {
        let mut a: Vec<OsString> = args[1..].to_vec();
        if let Some(e) = extra {
            a.retain(|x| x != "-c" && x != "-o" && !x.to_string_lossy().ends_with(".o"));
            a.push(e.into());
        }
        let out = Command::new(CC)
            .args(&a)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The local compiler's object.
    fn local_object(&self) -> Vec<u8> {
        self.run_local(&self.args("local.o"), None);
        std::fs::read(self.path().join("local.o")).unwrap()
    }

    /// The preprocessed source, as the wrapper would send it.
    fn preprocessed(&self) -> Vec<u8> {
        self.run_local(&self.args("hello.o"), Some("-E"))
    }
}

fn host(spec: &str) -> dist::Host {
    dist::parse_host(spec).unwrap()
}

fn identity() -> dist::CompilerIdentity {
    dist::CompilerIdentity::local(Path::new(CC)).unwrap()
}

#[test]
fn protocols_1_and_2_give_the_local_object() {
    if !netns::available() {
        return;
    }
    let ns = builder(1, &[&cc_path()]);
    let p = Project::ok();
    let want = p.local_object();
    let argv = dist::remote_argv(&p.args("hello.o")).unwrap();
    let source = p.preprocessed();
    for options in ["", ",lzo"] {
        let h = host(&format!("{}{options}", ns.addr));
        let job = Job::Preprocessed {
            argv: &argv,
            source: &source,
        };
        let reply = dist::compile(&h, &job, &opts(Duration::from_secs(30)))
            .unwrap_or_else(|f| panic!("{options}: {f}\n{}", ns.log("distccd")));
        assert!(
            reply.status.success(),
            "{}",
            String::from_utf8_lossy(&reply.stderr)
        );
        assert_eq!(reply.protocol, h.protocol());
        assert!(
            reply.object == want,
            "protocol {:?}: object differs",
            h.protocol()
        );
        dist::check_object(&reply.object, &identity()).unwrap();
    }
    // A compile error comes back as a status and stderr, with no object.
    let bad = b"int broken( {\n";
    let job = Job::Preprocessed {
        argv: &argv,
        source: bad,
    };
    let reply = dist::compile(
        &host(&format!("{},lzo", ns.addr)),
        &job,
        &opts(Duration::from_secs(30)),
    )
    .unwrap();
    assert_eq!(reply.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&reply.stderr).contains("error"));
    assert!(reply.object.is_empty());
}

#[test]
fn lzo_interoperates_with_distccd_on_large_bodies() {
    if !netns::available() {
        return;
    }
    // Bodies of a few hundred KiB, so both LZO streams use far (M4) matches and long literal
    // runs, not only the short matches of a small file.
    let ns = builder(10, &[&cc_path()]);
    let mut body = String::from("#include \"hello.h\"\n");
    // The same 20 000 random characters twice, about 30 KiB apart in the source and 20 KiB
    // apart in the object: matches 16-48 KiB back (LZO's M4) both ways.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let far: String = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    for i in 0..1500 {
        if i == 0 || i == 100 {
            body += &format!("const char far{i}[] = \"{far}\";\n");
        }
        let text = format!("{i:x}").repeat(1 + i % 13);
        body += &format!(
            "static const char s{i}[] = \"{text}\";\n\
             int f{i}(int x) {{ return TWICE(x) * {i} + s{i}[{}] + GREETING; }}\n",
            i % 3
        );
    }
    let p = Project::new(&body);
    let want = p.local_object();
    let source = p.preprocessed();
    assert!(
        source.len() > 150_000 && want.len() > 100_000,
        "{} {}",
        source.len(),
        want.len()
    );
    let argv = dist::remote_argv(&p.args("hello.o")).unwrap();
    let job = Job::Preprocessed {
        argv: &argv,
        source: &source,
    };
    let h = host(&format!("{},lzo", ns.addr));
    let reply = dist::compile(&h, &job, &opts(Duration::from_secs(60)))
        .unwrap_or_else(|f| panic!("{f}\n{}", ns.log("distccd")));
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(reply.object == want, "object differs after LZO both ways");
}

/// The files a pump job sends: the source and the header, by absolute path.
fn pump_files(p: &Project) -> Vec<PumpFile> {
    ["hello.c", "inc/hello.h"]
        .iter()
        .map(|f| PumpFile {
            path: p.path().join(f),
            content: PumpFileContent::Data(std::fs::read(p.path().join(f)).unwrap()),
        })
        .collect()
}

#[test]
fn pump_sends_headers_and_returns_a_depfile() {
    if !netns::available() {
        return;
    }
    let ns = builder(2, &[&cc_path()]);
    let p = Project::ok();
    let want = p.local_object();
    let argv = dist::pump_argv(&p.args("hello.o")).unwrap();
    let files = pump_files(&p);
    let h = host(&format!("{}/2,lzo,cpp", ns.addr));
    let job = Job::Pump {
        argv: &argv,
        cwd: p.path(),
        files: &files,
    };
    let reply = dist::compile(&h, &job, &opts(Duration::from_secs(30)))
        .unwrap_or_else(|f| panic!("{f}\n{}", ns.log("distccd")));
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(
        reply.object == want,
        "pump object differs from the local one"
    );
    let dep = String::from_utf8(reply.depfile.unwrap()).unwrap();
    assert!(dep.starts_with("hello.o:"), "{dep}");
    assert!(
        dep.contains("hello.c") && dep.contains("inc/hello.h"),
        "{dep}"
    );
    assert!(
        !dep.contains("distccd"),
        "the builder's scratch root leaked: {dep}"
    );
    // A pump job to a host without ,cpp is not sent.
    let e = dist::compile(
        &host(&ns.addr.to_string()),
        &job,
        &opts(Duration::from_secs(5)),
    );
    assert!(matches!(e, Err(Failure::Unsupported(_))), "{e:?}");
}

#[test]
fn a_refusing_builder_is_refused() {
    if !netns::available() {
        return;
    }
    // Its distccd runs plain gcc only: the cross compiler's name is not in its list.
    let ns = builder(3, &[Path::new("/usr/bin/gcc")]);
    let p = Project::ok();
    let source = p.preprocessed();
    for name in [CC, "pik-no-such-cc"] {
        let mut argv = dist::remote_argv(&p.args("hello.o")).unwrap();
        argv[0] = name.into();
        let job = Job::Preprocessed {
            argv: &argv,
            source: &source,
        };
        for spec in [ns.addr.to_string(), format!("{},lzo", ns.addr)] {
            let r = dist::compile(&host(&spec), &job, &opts(Duration::from_secs(20)));
            match r {
                Err(f @ Failure::Refused(_)) => assert_eq!(f.reason(), "refused"),
                r => panic!("{name} on {spec}: {r:?}"),
            }
        }
    }
}

#[test]
fn a_builder_with_another_compiler_is_caught() {
    if !netns::available() {
        return;
    }
    // The name says aarch64, the script behind it makes x86-64 objects.
    let scripts = netns::scratch_dir();
    let fake = netns::script(scripts.path(), CC, "exec gcc \"$@\"");
    let ns = builder(4, &[&fake]);
    let p = Project::ok();
    let argv = dist::remote_argv(&p.args("hello.o")).unwrap();
    let source = p.preprocessed();
    let job = Job::Preprocessed {
        argv: &argv,
        source: &source,
    };
    let reply = dist::compile(
        &host(&ns.addr.to_string()),
        &job,
        &opts(Duration::from_secs(30)),
    )
    .unwrap_or_else(|f| panic!("{f}\n{}", ns.log("distccd")));
    assert!(reply.status.success());
    let e = dist::check_object(&reply.object, &identity()).unwrap_err();
    assert!(matches!(e, dist::Mismatch::Machine { .. }), "{e}");
    assert!(e.to_string().contains("x86-64"), "{e}");
}

#[test]
fn a_slow_builder_times_out_within_the_bound() {
    if !netns::available() {
        return;
    }
    let scripts = netns::scratch_dir();
    let slow = netns::script(scripts.path(), CC, &format!("sleep 30\nexec {CC} \"$@\""));
    let ns = builder(5, &[&slow]);
    let p = Project::ok();
    let argv = dist::remote_argv(&p.args("hello.o")).unwrap();
    let source = p.preprocessed();
    let job = Job::Preprocessed {
        argv: &argv,
        source: &source,
    };
    let start = Instant::now();
    let r = dist::compile(
        &host(&ns.addr.to_string()),
        &job,
        &opts(Duration::from_secs(2)),
    );
    let took = start.elapsed();
    assert!(matches!(r, Err(Failure::Timeout(_))), "{r:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

/// A fake server on loopback: reads the request until the client pauses, answers `reply`,
/// and closes cleanly (after reading to the end, so the client sees the bytes, not a reset).
fn fake_server(reply: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        // Bounded: a client that never connects fails the test instead of hanging it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no client within 20 s: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 65536];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        let _ = s.write_all(reply);
        let _ = s.shutdown(Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    (format!("127.0.0.1:{}", addr.port()), t)
}

#[test]
fn garbage_and_oversized_replies_are_errors() {
    let argv: Vec<OsString> = [CC, "-c", "x.c", "-o", "x.o"]
        .iter()
        .map(OsString::from)
        .collect();
    let job = Job::Preprocessed {
        argv: &argv,
        source: b"int x;\n",
    };
    let cases: [(&[u8], &str, &str); 6] = [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "", "garbage"),
        (b"DONE00000001STAT00000000SERRffffffff", "", "too-large"),
        (
            b"DONE00000001STAT00000000SERR00000000SOUT00000000DOTO1fffffffELF",
            "",
            "died",
        ),
        (
            b"DONE00000002STAT00000000SERR00000000SOUT00000000DOTO00000008xxxxxxxx",
            ",lzo",
            "garbage",
        ),
        (b"DONE00000002", "", "version"),
        (b"", "", "refused"),
    ];
    for (reply, options, reason) in cases {
        let (addr, t) = fake_server(reply);
        let r = dist::compile(
            &host(&format!("{addr}{options}")),
            &job,
            &opts(Duration::from_secs(10)),
        );
        let f = r.expect_err("a fake server's reply");
        assert_eq!(
            f.reason(),
            reason,
            "{}: {f}",
            String::from_utf8_lossy(reply)
        );
        t.join().unwrap();
    }
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = dist::compile(
        &host(&format!("127.0.0.1:{port}")),
        &job,
        &opts(Duration::from_secs(5)),
    );
    assert!(matches!(r, Err(Failure::Connect(_))), "{r:?}");
}

/// ssh to the test's sshd: its port, the test's key, no host-key prompts.
fn ssh_opts(key: &Path) -> ConnectOptions {
    let key = key.to_string_lossy();
    let args = format!(
        "-p 2222 -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    );
    ConnectOptions {
        ssh: dist::SshOptions {
            program: "ssh".into(),
            args: args.split_whitespace().map(OsString::from).collect(),
        },
        ..opts(Duration::from_secs(30))
    }
}

#[test]
fn ssh_transport_gives_the_same_object() {
    if !netns::available() {
        return;
    }
    let mut ns = Netns::create(PREFIX, BASE, 6);
    let key = ns.start_sshd(2222, &[&cc_path()]);
    let p = Project::ok();
    let want = p.local_object();
    let argv = dist::remote_argv(&p.args("hello.o")).unwrap();
    let source = p.preprocessed();
    let job = Job::Preprocessed {
        argv: &argv,
        source: &source,
    };
    let h = host(&format!("root@{},lzo", ns.addr));
    let reply = dist::compile(&h, &job, &ssh_opts(&key))
        .unwrap_or_else(|f| panic!("{f}\n{}", ns.log("sshd")));
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    assert!(
        reply.object == want,
        "object over ssh differs from the local one"
    );
    // `pik hosts check`'s probe over ssh: a round trip, then the probe compile.
    let check = dist::check::CheckOptions {
        compiler: CC.into(),
        connect: ssh_opts(&key),
    };
    let r = dist::check::check_host(&h, &check, &identity());
    assert!(
        r.usable && r.rtt_ms.is_some() && r.transport == "ssh",
        "{r:?}"
    );
    // A key the builder does not know: ssh fails to log in, which is a connection failure.
    let other = netns::scratch_dir();
    let stranger = other.path().join("key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    let r = dist::compile(&h, &job, &ssh_opts(&stranger));
    match r {
        Err(Failure::Connect(m)) => assert!(m.contains("Permission denied"), "{m}"),
        r => panic!("{r:?}"),
    }
}

/// A JSON value as plain text (strings without quotes).
fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

#[test]
fn hosts_check_tells_good_refusing_and_mismatched_builders_apart() {
    if !netns::available() {
        return;
    }
    let scripts = netns::scratch_dir();
    let fake = netns::script(scripts.path(), CC, "exec gcc \"$@\"");
    let good = builder(7, &[&cc_path()]);
    let refusing = builder(8, &[Path::new("/usr/bin/gcc")]);
    let mismatched = builder(9, &[&fake]);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tempfile::NamedTempFile::new().unwrap();
    let out = common::run(
        common::pik()
            .env("PIK_CONFIG", config.path())
            .env_remove("PIK_HOSTS")
            .args(["hosts", "check", "--json", "--timeout", "20", "--hosts"])
            .arg(format!("{}/3,lzo", good.addr))
            .arg(format!("{},lzo,cpp", good.addr))
            .arg(refusing.addr.to_string())
            .arg(mismatched.addr.to_string())
            .arg(format!("127.0.0.1:{closed}"))
            .arg("localhost/2"),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some hosts are excluded: exit 1"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["usable"], 3);
    assert!(v["local_compiler"].as_str().unwrap().contains("(aarch64)"));
    let hosts = v["hosts"].as_array().unwrap();
    let keys = [
        "verdict",
        "transport",
        "reachable",
        "accepts_compiler",
        "slots",
        "protocol",
    ];
    let expected = [
        ["usable", "tcp", "true", "true", "3", "2"],
        ["usable", "tcp", "true", "true", "4", "3"],
        ["excluded", "tcp", "true", "false", "4", "1"],
        ["excluded", "tcp", "true", "true", "4", "1"],
        ["excluded", "tcp", "false", "null", "4", "1"],
        ["usable", "local", "true", "null", "2", "null"],
    ];
    for (h, want) in hosts.iter().zip(expected) {
        let got: Vec<String> = keys.iter().map(|k| plain(&h[k])).collect();
        assert_eq!(got, want, "{h}");
    }
    let (good_r, mis) = (&hosts[0], &hosts[3]);
    assert!(good_r["rtt_ms"].as_f64().is_some());
    assert_eq!(good_r["remote_compiler"], v["local_compiler"]);
    assert!(mis["reason"].as_str().unwrap().contains("x86-64"), "{mis}");
    assert!(plain(&mis["remote_compiler"]).contains("(x86-64)"), "{mis}");
    // The table names each excluded host and why.
    let out = common::run(
        common::pik()
            .env("PIK_CONFIG", config.path())
            .env("PIK_HOSTS", format!("{} {}", good.addr, mismatched.addr))
            .args(["hosts", "check"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}: an object for x86-64", mismatched.addr)),
        "{text}"
    );
    assert!(
        text.contains("; excluded") && text.contains("1 of 2 hosts usable"),
        "{text}"
    );
}
