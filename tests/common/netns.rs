//! Build hosts for the distributed-compile tests: each is a network namespace joined to this
//! one by a veth pair in its own private /24, running the real Debian `distccd` (or `sshd`).
//! Everything is torn down when the [`Netns`] is dropped, also when a test panics: the
//! processes in the namespace are ended by their ids, then the namespace and the link are
//! deleted. Every wait is bounded.
//!
//! Needs root, `ip` (iproute2), `distccd` (Debian's distcc) and, for ssh, `sshd`
//! (openssh-server). Without them a test calls [`available`], which skips it on a developer's
//! machine and fails it in CI (`CI` set), where they must be there.

use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether namespaces with distccd can be made here. Panics in CI when not.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["/usr/sbin/ip", "/usr/bin/distccd", "/usr/sbin/sshd"]
        .iter()
        .all(|p| Path::new(p).exists());
    if root && tools {
        return true;
    }
    let why = format!("root: {root}, ip/distccd/sshd installed: {tools}");
    if std::env::var_os("CI").is_some() {
        panic!("the distcc tests need root, iproute2, distcc and openssh-server in CI ({why})");
    }
    eprintln!("skipped: {why}");
    false
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> std::process::Output {
    run(Command::new("ip").args(args))
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A namespace `{prefix}{n}` with the address `A.B.n.2`; this side of the link is `A.B.n.1`.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// This side's end of the veth pair.
    veth: String,
    /// The namespace's address.
    pub addr: Ipv4Addr,
    /// Its /24, for distccd's `--allow`.
    pub subnet: String,
    /// Scratch space: logs, configs, keys (mode 0755 so distccd's user can read it).
    pub dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Netns {
    /// Creates the namespace. `prefix` (≤ 9 characters) and `base` (the /16) are the test
    /// file's own; `n` is unique within the file.
    pub fn create(prefix: &str, base: [u8; 2], n: u8) -> Netns {
        assert!(prefix.len() <= 9 && (1..=254).contains(&n));
        let name = format!("{prefix}{n}");
        let (veth, peer) = (format!("{name}h"), format!("{name}n"));
        // Left over from a run that was killed: remove first.
        ip_quiet(&["netns", "del", &name]);
        ip_quiet(&["link", "del", &veth]);
        let [a, b] = base;
        let ns = Netns {
            addr: Ipv4Addr::new(a, b, n, 2),
            subnet: format!("{a}.{b}.{n}.0/24"),
            dir: scratch_dir(),
            children: Vec::new(),
            name,
            veth,
        };
        // From here on Drop cleans up whatever was made.
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{a}.{b}.{n}.1/24"), "dev", &ns.veth]);
        ip(&["link", "set", &ns.veth, "up"]);
        let inside = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &ns.name, "ip"];
            v.extend_from_slice(args);
            ip(&v);
        };
        inside(&["addr", "add", &format!("{}/24", ns.addr), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// Starts `program args` inside the namespace, its output to `<dir>/<label>.log`.
    pub fn spawn(&mut self, label: &str, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = self.dir.path().join(format!("{label}.log"));
        let f = File::create(&log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.children.push((label.to_string(), child));
    }

    /// Starts distccd on port 3632 (2 jobs), allowing this side's subnet. `cmdlist`: the
    /// compilers it may run (`DISTCC_CMDLIST`: each line a path, matched by its last
    /// component).
    pub fn start_distccd(&mut self, cmdlist: &[&Path]) {
        let list = self.dir.path().join("cmdlist");
        let text: String = cmdlist
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        write_readable(&list, &text, 0o644);
        let (addr, subnet) = (self.addr.to_string(), self.subnet.clone());
        let list = list.to_string_lossy().into_owned();
        self.spawn(
            "distccd",
            "distccd",
            &[
                "--daemon",
                "--no-detach",
                "--log-stderr",
                "--log-level=info",
                "--allow",
                &subnet,
                "--listen",
                &addr,
                "--port",
                "3632",
                "-j",
                "2",
            ],
            &[("DISTCC_CMDLIST", &list)],
        );
        self.wait_port("distccd", 3632);
    }

    /// Starts sshd on `port` with its own host key and config; root may log in with the
    /// returned client key. `DISTCC_CMDLIST` is set for sessions to `cmdlist`.
    pub fn start_sshd(&mut self, port: u16, cmdlist: &[&Path]) -> PathBuf {
        let d = self.dir.path().to_path_buf();
        let list = d.join("cmdlist");
        let text: String = cmdlist
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        write_readable(&list, &text, 0o644);
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key)));
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let config = format!(
            "Port {port}\nListenAddress {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPermitRootLogin prohibit-password\nSetEnv DISTCC_CMDLIST={}\n",
            self.addr,
            d.join("host_key").display(),
            d.join("sshd.pid").display(),
            d.join("authorized_keys").display(),
            list.display(),
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        // sshd's privilege separation directory (made at boot where sshd is a service).
        fs::create_dir_all("/run/sshd").unwrap();
        let cfg = d.join("sshd_config").to_string_lossy().into_owned();
        self.spawn("sshd", "/usr/sbin/sshd", &["-D", "-e", "-f", &cfg], &[]);
        self.wait_port("sshd", port);
        d.join("client_key")
    }

    /// Waits (at most 10 s) until `port` accepts connections; panics with the log if not.
    pub fn wait_port(&mut self, label: &str, port: u16) {
        let addr = SocketAddr::from((self.addr, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let exited = self
                .children
                .iter_mut()
                .find(|(l, _)| l == label)
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                panic!("{label} exited ({st}):\n{}", self.log(label));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{label} did not listen on {addr} within 10 s:\n{}",
            self.log(label)
        );
    }

    /// A process's log so far.
    pub fn log(&self, label: &str) -> String {
        let mut s = String::new();
        let _ = File::open(self.dir.path().join(format!("{label}.log")))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The pids of every process in the namespace (all of them started by this fixture).
    fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        let text = out.map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Ends the namespace's processes: TERM, then KILL after at most 2 s.
    fn stop_all(&mut self) {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for pid in self.pids() {
                // SAFETY: kill(2) on a pid in our own namespace; no memory involved.
                unsafe { libc::kill(pid, sig) };
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && !self.pids().is_empty() {
                for (_, c) in &mut self.children {
                    let _ = c.try_wait();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_all();
        ip_quiet(&["netns", "del", &self.name]);
        ip_quiet(&["link", "del", &self.veth]);
        if std::thread::panicking() {
            for (label, _) in &self.children {
                eprintln!("--- {} {label} log:\n{}", self.name, self.log(label));
            }
        }
    }
}

/// A temporary directory that distccd's unprivileged user can read and run files from.
pub fn scratch_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("pik-dist")
        .tempdir()
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Writes `text` to `path` with `mode`.
pub fn write_readable(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A stand-in compiler: a shell script named `name` in `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    write_readable(&p, &format!("#!/bin/sh\n{body}\n"), 0o755);
    p
}
