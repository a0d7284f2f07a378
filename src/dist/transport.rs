//! A connection to one build host: TCP to distccd, or `ssh HOST distccd --inetd` (the same
//! bytes over the ssh child's pipes), so nothing of pik's is installed on a builder.
//!
//! Every read and write is bounded by the IO timeout (no progress for that long is an error of
//! kind `TimedOut` or `WouldBlock`), and a TCP connect by the connect timeout (4 s, as
//! distcc). pik connects only to the host the spec names. The ssh child runs with
//! `BatchMode=yes`, so it never prompts, and is killed when the connection is dropped.

use super::hosts::{Host, Transport};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish a TCP connection (and ssh's `ConnectTimeout`). distcc: 4 s.
    pub connect: Duration,
    /// For any single read or write to make progress, including the wait while the builder
    /// compiles. distcc: 300 s (`DISTCC_IO_TIMEOUT`).
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(4),
            io: Duration::from_secs(300),
        }
    }
}

/// How to run ssh for `user@host` hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The ssh client (`ssh`, looked up on PATH).
    pub program: OsString,
    /// Options put before the host (`-p 2222`, `-i key`, `-o …`). Host-specific settings
    /// belong in `~/.ssh/config`, as with distcc.
    pub args: Vec<OsString>,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            program: "ssh".into(),
            args: Vec::new(),
        }
    }
}

/// Everything a connection needs besides the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The ssh client and its options.
    pub ssh: SshOptions,
}

/// An open connection.
#[derive(Debug)]
pub enum Connection {
    /// A TCP stream with read and write timeouts set.
    Tcp(TcpStream),
    /// An ssh child's pipes.
    Ssh(SshConnection),
}

/// Connects to `host`. The error is a message naming the host; `localhost` is not a
/// connection (it compiles here).
pub fn connect(host: &Host, opts: &ConnectOptions) -> Result<Connection, String> {
    match &host.transport {
        Transport::Local => Err("localhost compiles on this machine, not over distcc".into()),
        Transport::Tcp { host: h, port } => {
            connect_tcp(h, *port, &opts.timeouts).map(Connection::Tcp)
        }
        Transport::Ssh {
            user,
            host: h,
            command,
        } => {
            SshConnection::spawn(user.as_deref(), h, command.as_deref(), opts).map(Connection::Ssh)
        }
    }
}

/// Resolves `host` and connects to the first address that answers within the timeout.
pub(super) fn connect_tcp(host: &str, port: u16, t: &Timeouts) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, t.connect) {
            Ok(s) => {
                let set = s
                    .set_read_timeout(Some(t.io))
                    .and_then(|_| s.set_write_timeout(Some(t.io)))
                    .and_then(|_| s.set_nodelay(true));
                return set.map(|_| s).map_err(|e| format!("{addr}: {e}"));
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = format!(
                    "connecting to {addr}: no answer within {} s",
                    t.connect.as_secs_f32()
                )
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

impl Connection {
    /// Why the peer went away, when the transport can tell: for ssh, the child's exit status
    /// and the end of its standard error (`Permission denied (publickey)`, `distccd: not
    /// found`). Waits up to `wait` for the child to exit.
    pub fn diagnose(&mut self, wait: Duration) -> Option<SshExit> {
        match self {
            Connection::Tcp(_) => None,
            Connection::Ssh(s) => s.exit(wait),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.read(buf),
            Connection::Ssh(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.write(buf),
            Connection::Ssh(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.flush(),
            Connection::Ssh(s) => s.flush(),
        }
    }
}

/// How an ssh child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshExit {
    /// Its exit code (None: killed by a signal, or still running after the wait).
    pub code: Option<i32>,
    /// The last few KiB of its standard error.
    pub stderr: String,
}

impl SshExit {
    /// ssh itself failed (it exits 255 when it could not connect or log in), as opposed to
    /// the remote command.
    pub fn ssh_failed(&self) -> bool {
        self.code == Some(255)
    }
}

/// Keep this much of ssh's standard error for messages.
const STDERR_KEEP: usize = 4 << 10;

/// `ssh … HOST distccd --inetd` with its pipes.
#[derive(Debug)]
pub struct SshConnection {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
    io: Duration,
}

impl SshConnection {
    fn spawn(
        user: Option<&str>,
        host: &str,
        command: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<SshConnection, String> {
        let mut cmd = ssh_command(user, host, opts);
        cmd.arg(command.unwrap_or("distccd")).arg("--inetd");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", opts.ssh.program.to_string_lossy()))?;
        let (stdin, stdout, err) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
            set_nonblocking(fd).map_err(|e| format!("ssh pipes: {e}"))?;
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || drain_tail(err, &sink));
        Ok(SshConnection {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            io: opts.timeouts.io,
        })
    }

    /// Waits up to `wait` for the child to exit; its status and stderr tail.
    fn exit(&mut self, wait: Duration) -> Option<SshExit> {
        self.stdin = None;
        let deadline = Instant::now() + wait;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        // Give the stderr reader a moment to see the end of the pipe.
        std::thread::sleep(Duration::from_millis(20));
        let stderr = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        Some(SshExit {
            code,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        })
    }
}

/// `ssh -o BatchMode=yes -o ConnectTimeout=N [options] [-l USER] -- HOST`: the remote
/// command still to be appended.
pub fn ssh_command(user: Option<&str>, host: &str, opts: &ConnectOptions) -> Command {
    let mut cmd = Command::new(&opts.ssh.program);
    let secs = opts.timeouts.connect.as_secs().max(1);
    cmd.args(["-o", "BatchMode=yes", "-o"])
        .arg(format!("ConnectTimeout={secs}"))
        .args(&opts.ssh.args);
    if let Some(u) = user {
        cmd.arg("-l").arg(u);
    }
    cmd.arg("--").arg(host);
    cmd
}

impl Drop for SshConnection {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Keeps the last [`STDERR_KEEP`] bytes of `r` in `sink` until the end of the stream.
fn drain_tail(mut r: impl Read, sink: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut v) = sink.lock() else { return };
                v.extend_from_slice(&buf[..n]);
                if v.len() > STDERR_KEEP {
                    let cut = v.len() - STDERR_KEEP;
                    v.drain(..cut);
                }
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events`, at most `timeout`.
fn wait_ready(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        match n {
            n if n > 0 => return Ok(()),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no progress within {} s", timeout.as_secs_f32()),
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Runs a non-blocking operation on `fd`, waiting for readiness up to `timeout` each time
/// it would block.
fn with_timeout<T>(
    fd: RawFd,
    events: libc::c_short,
    timeout: Duration,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(fd, events, timeout)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

impl Read for SshConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.stdout.as_raw_fd();
        let out = &mut self.stdout;
        with_timeout(fd, libc::POLLIN, self.io, || out.read(buf))
    }
}

impl Write for SshConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let fd = stdin.as_raw_fd();
        with_timeout(fd, libc::POLLOUT, self.io, || stdin.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line() {
        let opts = ConnectOptions {
            ssh: SshOptions {
                program: "ssh".into(),
                args: vec!["-p".into(), "2222".into()],
            },
            ..ConnectOptions::default()
        };
        let cmd = ssh_command(Some("pi"), "pi5a", &opts);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=4",
                "-p",
                "2222",
                "-l",
                "pi",
                "--",
                "pi5a"
            ]
        );
    }

    #[test]
    fn ssh_pipes_time_out_and_the_child_is_killed() {
        // A stand-in "ssh" that never answers: reads time out, drop kills it.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("ssh");
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = ConnectOptions {
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                io: Duration::from_millis(200),
            },
            ssh: SshOptions {
                program: fake.into(),
                args: Vec::new(),
            },
        };
        let mut c = SshConnection::spawn(None, "ignored", None, &opts).unwrap();
        let pid = c.child.id();
        let t = Instant::now();
        let e = c.read(&mut [0u8; 12]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(c);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
