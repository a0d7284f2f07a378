//! One remote compile in distcc's protocols 1, 2 and 3 (distcc's `doc/protocol-*.txt`,
//! `src/clirpc.c`, `src/serve.c`):
//!
//! ```text
//! v1/v2 request:  DIST v  ARGC n  ARGV…  DOTI <preprocessed source>
//! v3 request:     DIST 3  CDIR <cwd>  ARGC n  ARGV…  NFIL n  (NAME <abs path>  FILE <content> | LINK <target>)…
//! reply:          DONE v  STAT <wait status>  SERR <stderr>  SOUT <stdout>  DOTO <object>  [DOTD <depfile>: v3]
//! ```
//!
//! In v2 and v3 every body is LZO1X-compressed. `DOTO` has a body only when the status is 0,
//! and `DOTD` comes only then. distccd refuses a job silently: it closes the connection
//! without a byte, which [`compile`] reports as [`Failure::Refused`].
//!
//! The caller decides what to do with a failure; pik's rule is that any [`Failure`], a
//! non-zero [`WaitStatus`], or an object that [`super::check_object`] refuses means the job
//! runs locally.

use super::hosts::{Host, Protocol, Transport};
use super::lzo;
use super::transport::{self, ConnectOptions, Connection};
use super::wire::{self, WireError};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most a reply's object may be (compressed or not); longer is refused unread.
pub const MAX_OBJECT: usize = 512 << 20;
/// The most a reply's stderr, stdout or depfile may be.
pub const MAX_TEXT: usize = 64 << 20;

/// One compile to send.
#[derive(Debug, Clone, Copy)]
pub enum Job<'a> {
    /// Protocols 1 and 2: argv (from [`super::remote_argv`]) and the source the local
    /// preprocessor produced. Sent as protocol 2 to a `,lzo` host (also one with `,cpp`), else 1.
    Preprocessed {
        /// The builder's argv: argv\[0\] a bare compiler name.
        argv: &'a [OsString],
        /// The preprocessed source (`cc -E` output).
        source: &'a [u8],
    },
    /// Protocol 3 (pump): the builder preprocesses from the files sent. Only to `,cpp,lzo`
    /// hosts.
    Pump {
        /// The builder's argv (from [`super::pump_argv`]).
        argv: &'a [OsString],
        /// The client's working directory (absolute): relative paths in argv are under it.
        cwd: &'a Path,
        /// The source and every header it reads, by absolute path.
        files: &'a [PumpFile],
    },
}

/// A file sent with a pump job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpFile {
    /// Its absolute path on the client; the builder recreates it under a scratch root.
    pub path: PathBuf,
    /// What it is.
    pub content: PumpFileContent,
}

/// A pump file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpFileContent {
    /// A regular file's bytes.
    Data(Vec<u8>),
    /// A symlink's target (an absolute target is re-rooted by the builder too).
    Symlink(PathBuf),
}

/// The compiler's Unix wait status, as distccd reports it (`exit_code << 8 | signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitStatus(pub u32);

impl WaitStatus {
    /// Exited with code 0.
    pub fn success(self) -> bool {
        self.0 == 0
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        (self.0 & 0x7f == 0).then_some(((self.0 >> 8) & 0xff) as i32)
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<i32> {
        let sig = (self.0 & 0x7f) as i32;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
}

impl fmt::Display for WaitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.signal()) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (_, Some(s)) => write!(f, "killed by signal {s}"),
            _ => write!(f, "wait status {:#x}", self.0),
        }
    }
}

/// A builder's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The compiler's status on the builder.
    pub status: WaitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error (warnings; distccd's own messages too).
    pub stderr: Vec<u8>,
    /// The object (empty unless the status is 0). Check it with [`super::check_object`].
    pub object: Vec<u8>,
    /// The depfile the builder wrote, paths mapped back to the client's (protocol 3 with
    /// status 0 only).
    pub depfile: Option<Vec<u8>>,
}

/// Why a remote compile gave no reply to use. Every variant means "run the job locally";
/// [`Failure::reason`] is a stable key to count them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The job cannot go to this host at all (a pump job to a host without `,cpp`,
    /// `localhost`, a path or NUL byte the protocol cannot carry). Not the host's fault.
    Unsupported(String),
    /// No connection: refused, unreachable, no answer within the connect timeout, DNS, or ssh
    /// could not connect or log in. The host is likely down: back it off.
    Connect(String),
    /// The connection closed before the reply began: distccd's silent refusal (compiler not in
    /// its list, client address not `--allow`ed, `-fplugin=`, too busy).
    Refused(String),
    /// No progress within the IO timeout (a slow or stuck builder).
    Timeout(String),
    /// Bytes that are not distcc's protocol, or a body that does not decompress.
    Garbage(String),
    /// A body longer than pik accepts ([`MAX_OBJECT`], [`MAX_TEXT`]), refused unread.
    TooLarge(String),
    /// The connection ended in the middle of the reply (the host or distccd died).
    Died(String),
    /// The reply is in another protocol version than the request.
    Version {
        /// The version pik sent.
        sent: u32,
        /// The version in `DONE`.
        got: u32,
    },
}

impl Failure {
    /// A short, stable key: `unsupported`, `connect`, `refused`, `timeout`, `garbage`,
    /// `too-large`, `died`, `version`.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Unsupported(_) => "unsupported",
            Failure::Connect(_) => "connect",
            Failure::Refused(_) => "refused",
            Failure::Timeout(_) => "timeout",
            Failure::Garbage(_) => "garbage",
            Failure::TooLarge(_) => "too-large",
            Failure::Died(_) => "died",
            Failure::Version { .. } => "version",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unsupported(s) => write!(f, "not sent: {s}"),
            Failure::Connect(s) => write!(f, "cannot connect: {s}"),
            Failure::Refused(s) => write!(f, "refused the job (closed without a reply){s}"),
            Failure::Timeout(s) => write!(f, "timed out: {s}"),
            Failure::Garbage(s) => write!(f, "garbage reply: {s}"),
            Failure::TooLarge(s) => write!(f, "reply too large: {s}"),
            Failure::Died(s) => write!(f, "connection lost mid-reply: {s}"),
            Failure::Version { sent, got } => {
                write!(f, "replied in protocol {got} to a protocol {sent} request")
            }
        }
    }
}

impl std::error::Error for Failure {}

/// Sends `job` to `host` and reads the reply. See [`Failure`] for what each error means.
pub fn compile(host: &Host, job: &Job, opts: &ConnectOptions) -> Result<Reply, Failure> {
    let protocol = protocol_for(host, job)?;
    let request = encode(protocol, job)?;
    let mut conn = transport::connect(host, opts).map_err(Failure::Connect)?;
    let sent = send(&mut conn, &request);
    let reply = match sent {
        Ok(()) => read_reply(&mut conn, protocol),
        Err(e) => Err(e),
    };
    match reply {
        Err(Failure::Refused(detail)) => Err(why_closed(&mut conn, host, opts, detail)),
        r => r,
    }
}

/// The protocol for this job on this host.
fn protocol_for(host: &Host, job: &Job) -> Result<Protocol, Failure> {
    if host.is_local() {
        return Err(Failure::Unsupported(
            "localhost compiles here, not over distcc".into(),
        ));
    }
    match (job, host.protocol()) {
        (Job::Pump { .. }, Protocol::V3) => Ok(Protocol::V3),
        (Job::Pump { .. }, _) => Err(Failure::Unsupported(format!(
            "{} does not preprocess (its spec has no ,cpp,lzo)",
            host.name()
        ))),
        // distcc too sends preprocessed source to a pump host as protocol 2.
        (Job::Preprocessed { .. }, Protocol::V3) => Ok(Protocol::V2),
        (Job::Preprocessed { .. }, p) => Ok(p),
    }
}

/// A body as the protocol sends it: LZO1X-compressed from protocol 2 on.
fn body(protocol: Protocol, data: &[u8]) -> Vec<u8> {
    if protocol.compressed() {
        lzo::compress(data)
    } else {
        data.to_vec()
    }
}

/// Bytes the protocol carries as a C string: no NUL.
fn c_string<'b>(what: &str, bytes: &'b [u8]) -> Result<&'b [u8], Failure> {
    if bytes.contains(&0) {
        return Err(Failure::Unsupported(format!(
            "{what} {:?} contains a NUL byte",
            wire::show(bytes)
        )));
    }
    Ok(bytes)
}

fn put_argv(out: &mut Vec<u8>, argv: &[OsString]) -> Result<(), Failure> {
    let argv0 = argv.first().map(|a| a.as_bytes()).unwrap_or_default();
    if argv0.is_empty() || argv0.contains(&b'/') {
        return Err(Failure::Unsupported(format!(
            "argv[0] must be a bare compiler name, not {:?}",
            wire::show(argv0)
        )));
    }
    wire::put_int(out, b"ARGC", argv.len() as u32).expect("writing to memory");
    for a in argv {
        let a = c_string("argument", a.as_bytes())?;
        wire::put_bytes(out, b"ARGV", a).expect("writing to memory");
    }
    Ok(())
}

/// The whole request, in memory.
fn encode(protocol: Protocol, job: &Job) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    wire::put_int(&mut out, b"DIST", protocol.number()).expect("writing to memory");
    match *job {
        Job::Preprocessed { argv, source } => {
            put_argv(&mut out, argv)?;
            put_body(&mut out, b"DOTI", &body(protocol, source))?;
        }
        Job::Pump { argv, cwd, files } => {
            let cwd = absolute("working directory", cwd)?;
            wire::put_bytes(&mut out, b"CDIR", cwd).expect("writing to memory");
            put_argv(&mut out, argv)?;
            wire::put_int(&mut out, b"NFIL", files.len() as u32).expect("writing to memory");
            for f in files {
                put_file(&mut out, protocol, f)?;
            }
        }
    }
    Ok(out)
}

fn put_body(out: &mut Vec<u8>, token: &wire::Token, data: &[u8]) -> Result<(), Failure> {
    wire::put_bytes(out, token, data).map_err(|e| Failure::Unsupported(e.to_string()))
}

fn absolute<'p>(what: &str, p: &'p Path) -> Result<&'p [u8], Failure> {
    if !p.is_absolute() {
        return Err(Failure::Unsupported(format!(
            "{what} {} is not absolute",
            p.display()
        )));
    }
    c_string(what, p.as_os_str().as_bytes())
}

fn put_file(out: &mut Vec<u8>, protocol: Protocol, f: &PumpFile) -> Result<(), Failure> {
    let name = absolute("pump file", &f.path)?;
    wire::put_bytes(out, b"NAME", name).expect("writing to memory");
    match &f.content {
        PumpFileContent::Data(d) => put_body(out, b"FILE", &body(protocol, d)),
        PumpFileContent::Symlink(t) => {
            let t = c_string("symlink target", t.as_os_str().as_bytes())?;
            put_body(out, b"LINK", t)
        }
    }
}

/// Writes the request. A peer that closes or resets before reading it all refused it.
fn send(conn: &mut Connection, request: &[u8]) -> Result<(), Failure> {
    let mut w = BufWriter::with_capacity(64 << 10, conn);
    let r = w.write_all(request).and_then(|_| w.flush());
    r.map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            Failure::Timeout(format!("sending the job: {e}"))
        }
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
            Failure::Refused(format!(" while pik was sending the job: {e}"))
        }
        _ => Failure::Died(format!("sending the job: {e}")),
    })
}

/// Maps a read error: before `DONE` an end of stream is a refusal, after it a death.
fn failure(e: WireError, started: bool, what: &str) -> Failure {
    match e {
        WireError::Eof { got: 0 } if !started => Failure::Refused(String::new()),
        WireError::Eof { got } => Failure::Died(format!("reading {what}: ended after {got} bytes")),
        WireError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Failure::Timeout(format!("waiting for {what}: {e}"))
        }
        WireError::Io(e) if !started && e.kind() == io::ErrorKind::ConnectionReset => {
            Failure::Refused(format!(": {e}"))
        }
        WireError::Io(e) => Failure::Died(format!("reading {what}: {e}")),
        WireError::Garbage(s) => Failure::Garbage(format!("{what}: {s}")),
        e @ WireError::TooLarge { .. } => Failure::TooLarge(e.to_string()),
    }
}

/// Reads a bulk item and decompresses it if the protocol compresses.
fn read_bulk(
    r: &mut impl Read,
    protocol: Protocol,
    token: &wire::Token,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let what = wire::show(token);
    let raw = wire::expect_body(r, token, limit).map_err(|e| failure(e, true, &what))?;
    if !protocol.compressed() {
        return Ok(raw);
    }
    lzo::decompress(&raw, limit).map_err(|e| match e {
        lzo::LzoError::TooLarge { .. } => Failure::TooLarge(format!("{what}: {e}")),
        lzo::LzoError::Corrupt(_) => Failure::Garbage(format!("{what}: {e}")),
    })
}

/// Reads the reply to a request in `protocol`.
fn read_reply(r: &mut impl Read, protocol: Protocol) -> Result<Reply, Failure> {
    let version = wire::expect(r, b"DONE").map_err(|e| failure(e, false, "DONE"))?;
    if version != protocol.number() {
        return Err(Failure::Version {
            sent: protocol.number(),
            got: version,
        });
    }
    let status = WaitStatus(int(r, b"STAT")?);
    let stderr = read_bulk(r, protocol, b"SERR", MAX_TEXT)?;
    let stdout = read_bulk(r, protocol, b"SOUT", MAX_TEXT)?;
    let mut reply = Reply {
        protocol,
        status,
        stdout,
        stderr,
        object: Vec::new(),
        depfile: None,
    };
    if !status.success() {
        // distccd sends DOTO 0 and nothing more after a failed compile.
        let len = int(r, b"DOTO")?;
        if len != 0 {
            return Err(Failure::Garbage(format!(
                "a failed compile ({status}) announced a {len}-byte object"
            )));
        }
        return Ok(reply);
    }
    reply.object = read_bulk(r, protocol, b"DOTO", MAX_OBJECT)?;
    if protocol == Protocol::V3 {
        reply.depfile = Some(read_bulk(r, protocol, b"DOTD", MAX_TEXT)?);
    }
    Ok(reply)
}

/// Reads a header that must carry `token` (after `DONE`); returns its number.
fn int(r: &mut impl Read, token: &wire::Token) -> Result<u32, Failure> {
    wire::expect(r, token).map_err(|e| failure(e, true, &wire::show(token)))
}

/// A connection closed before the reply: over ssh, ssh's own failure (exit 255) is a
/// connection failure, anything else distccd's refusal; ssh's stderr says which. Over TCP a
/// refusal and a distccd that died before answering look the same on the wire, so pik tries
/// to connect again: a host that no longer accepts connections died ([`Failure::Died`]).
fn why_closed(
    conn: &mut Connection,
    host: &Host,
    opts: &ConnectOptions,
    detail: String,
) -> Failure {
    if let Transport::Tcp { host: h, port } = &host.transport {
        let t = transport::Timeouts {
            connect: opts.timeouts.connect.min(Duration::from_secs(1)),
            io: opts.timeouts.io,
        };
        return match transport::connect_tcp(h, *port, &t) {
            Ok(_) => Failure::Refused(detail),
            Err(e) => Failure::Died(format!(
                "the connection closed before a reply and the builder no longer accepts \
                 connections ({e})"
            )),
        };
    }
    match conn.diagnose(Duration::from_secs(2)) {
        Some(exit) if exit.ssh_failed() => Failure::Connect(format!("ssh: {}", exit.stderr)),
        Some(exit) if !exit.stderr.is_empty() => {
            Failure::Refused(format!("{detail}; remote stderr: {}", exit.stderr))
        }
        _ => Failure::Refused(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn encodes_the_documented_request() {
        let a = argv("aarch64-linux-gnu-gcc -O2 -c hello.c -o hello.o");
        let job = Job::Preprocessed {
            argv: &a,
            source: b"int x;\n",
        };
        let req = encode(Protocol::V1, &job).unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "DIST00000001ARGC00000006ARGV00000015aarch64-linux-gnu-gccARGV00000003-O2\
             ARGV00000002-cARGV00000007hello.cARGV00000002-oARGV00000007hello.o\
             DOTI00000007int x;\n"
        );
        let bad = argv("/usr/bin/gcc -c x.c");
        let job = Job::Preprocessed {
            argv: &bad,
            source: b"",
        };
        assert!(matches!(
            encode(Protocol::V1, &job),
            Err(Failure::Unsupported(_))
        ));
    }

    #[test]
    fn reads_replies() {
        // A compile error: DOTO 0 and no body.
        let mut r: &[u8] = b"DONE00000001STAT00000100SERR00000004err\nSOUT00000000DOTO00000000";
        let rep = read_reply(&mut r, Protocol::V1).unwrap();
        assert_eq!(
            (rep.status.code(), rep.stderr.as_slice()),
            (Some(1), &b"err\n"[..])
        );
        // Success in v3 with compressed bodies.
        let mut v = Vec::new();
        wire::put_int(&mut v, b"DONE", 3).unwrap();
        wire::put_int(&mut v, b"STAT", 0).unwrap();
        wire::put_bytes(&mut v, b"SERR", b"").unwrap();
        wire::put_bytes(&mut v, b"SOUT", b"").unwrap();
        wire::put_bytes(&mut v, b"DOTO", &lzo::compress(b"\x7fELF object")).unwrap();
        wire::put_bytes(&mut v, b"DOTD", &lzo::compress(b"x.o: x.c\n")).unwrap();
        let rep = read_reply(&mut v.as_slice(), Protocol::V3).unwrap();
        assert_eq!(rep.object, b"\x7fELF object");
        assert_eq!(rep.depfile.as_deref(), Some(&b"x.o: x.c\n"[..]));
        assert_eq!(
            read_reply(&mut v.as_slice(), Protocol::V2),
            Err(Failure::Version { sent: 2, got: 3 })
        );
    }

    #[test]
    fn classifies_bad_replies() {
        let reason = |bytes: &[u8]| read_reply(&mut &bytes[..], Protocol::V1).unwrap_err();
        assert!(matches!(reason(b""), Failure::Refused(_)));
        assert!(matches!(reason(b"DONE0000"), Failure::Died(_)));
        assert!(matches!(reason(b"DONE00000001STAT"), Failure::Died(_)));
        assert!(matches!(
            reason(b"HTTP/1.1 400 Bad Request\r\n"),
            Failure::Garbage(_)
        ));
        assert!(matches!(
            reason(b"DONE00000001STAT00000000SERRfffffff0"),
            Failure::TooLarge(_)
        ));
        assert!(matches!(
            reason(b"DONE00000001STAT00000100SERR00000000SOUT00000000DOTO00000010"),
            Failure::Garbage(_)
        ));
        let garbage_lzo = b"DONE00000002STAT00000000SERR00000005abcde";
        let e = read_reply(&mut &garbage_lzo[..], Protocol::V2).unwrap_err();
        assert!(matches!(e, Failure::Garbage(_)), "{e}");
    }

    #[test]
    fn wait_status() {
        assert_eq!(WaitStatus(0x100).code(), Some(1));
        assert_eq!(WaitStatus(9).signal(), Some(9));
        assert_eq!(WaitStatus(9).code(), None);
        assert_eq!(WaitStatus(0x100).to_string(), "exit code 1");
    }
}
