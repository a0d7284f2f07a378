//! `pik hosts check`: for each build host, whether it answers, how fast, how many jobs it
//! takes, whether its distccd accepts the compiler, and whether the compiler behind that name
//! is the local one — by a real probe compile whose object is checked as every remote object
//! is ([`super::check_object`]). A host is usable only if all of that holds.

use super::client::{self, Failure, Job, PumpFile, PumpFileContent};
use super::hosts::{Host, Protocol, Transport};
use super::transport::{self, ConnectOptions};
use super::verify::{self, CompilerIdentity, PROBE_SOURCE};
use serde::Serialize;
use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What the check needs besides the hosts.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The compiler's bare name, as builders get it (`aarch64-linux-gnu-gcc`).
    pub compiler: String,
    /// Connection settings.
    pub connect: ConnectOptions,
}

/// One host's result.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Short name (`pi5a`, `me@pi5a`).
    pub host: String,
    /// The spec as written.
    pub spec: String,
    /// `tcp`, `ssh` or `local`.
    pub transport: &'static str,
    /// distcc protocol (null for localhost).
    pub protocol: Option<u32>,
    /// Jobs it takes at once (from the spec).
    pub slots: usize,
    /// It answered (TCP connect, or an ssh login).
    pub reachable: bool,
    /// TCP connect time, or an ssh round trip (`ssh HOST true`), in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its distccd ran the compiler (null when that was not reached).
    pub accepts_compiler: Option<bool>,
    /// The builder's compiler, from the probe object (`gcc 12.2.0 (aarch64)`).
    pub remote_compiler: Option<String>,
    /// The probe object's `.comment`.
    pub remote_comment: Option<String>,
    /// Whether pik will send it jobs.
    pub usable: bool,
    /// `usable` or `excluded`.
    pub verdict: &'static str,
    /// Why it is excluded (or a note for a usable one).
    pub reason: Option<String>,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The compiler name probed.
    pub compiler: String,
    /// The local compiler (`gcc 12.2.0 (aarch64)`).
    pub local_compiler: String,
    /// Its `.comment`.
    pub local_comment: String,
    /// One entry per host, in list order.
    pub hosts: Vec<HostReport>,
    /// How many are usable.
    pub usable: usize,
}

/// Checks every host, in parallel.
pub fn check_hosts(hosts: &[Host], opts: &CheckOptions, local: &CompilerIdentity) -> Report {
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| s.spawn(move || check_host(h, opts, local)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("host check thread"))
            .collect::<Vec<_>>()
    });
    Report {
        compiler: opts.compiler.clone(),
        local_compiler: local.summary(),
        local_comment: local.comment.clone(),
        usable: reports.iter().filter(|r| r.usable).count(),
        hosts: reports,
    }
}

/// Checks one host.
pub fn check_host(host: &Host, opts: &CheckOptions, local: &CompilerIdentity) -> HostReport {
    let mut r = HostReport {
        host: host.name(),
        spec: host.spec.clone(),
        transport: match host.transport {
            Transport::Local => "local",
            Transport::Tcp { .. } => "tcp",
            Transport::Ssh { .. } => "ssh",
        },
        protocol: (!host.is_local()).then(|| host.protocol().number()),
        slots: host.slots,
        reachable: false,
        rtt_ms: None,
        accepts_compiler: None,
        remote_compiler: None,
        remote_comment: None,
        usable: false,
        verdict: "excluded",
        reason: None,
    };
    if host.is_local() {
        r.reachable = true;
        return usable(r, Some("compiles on this machine".into()));
    }
    match round_trip(host, &opts.connect) {
        Ok(rtt) => {
            r.reachable = true;
            r.rtt_ms = Some((rtt.as_secs_f64() * 1e4).round() / 10.0);
        }
        Err(e) => return excluded(r, format!("unreachable: {e}")),
    }
    probe(r, host, opts, local)
}

fn usable(mut r: HostReport, note: Option<String>) -> HostReport {
    r.usable = true;
    r.verdict = "usable";
    r.reason = note;
    r
}

fn excluded(mut r: HostReport, why: String) -> HostReport {
    r.usable = false;
    r.verdict = "excluded";
    r.reason = Some(why);
    r
}

/// The probe compile and the check of its object.
fn probe(
    mut r: HostReport,
    host: &Host,
    opts: &CheckOptions,
    local: &CompilerIdentity,
) -> HostReport {
    let argv: Vec<OsString> = [&opts.compiler, "-c", "pik_probe.c", "-o", "pik_probe.o"]
        .iter()
        .map(OsString::from)
        .collect();
    let cwd = Path::new("/pik-probe");
    let files = [PumpFile {
        path: cwd.join("pik_probe.c"),
        content: PumpFileContent::Data(PROBE_SOURCE.into()),
    }];
    let job = if host.protocol() == Protocol::V3 {
        Job::Pump {
            argv: &argv,
            cwd,
            files: &files,
        }
    } else {
        Job::Preprocessed {
            argv: &argv,
            source: PROBE_SOURCE.as_bytes(),
        }
    };
    let reply = match client::compile(host, &job, &opts.connect) {
        Ok(reply) => reply,
        Err(f @ Failure::Refused(_)) => {
            r.accepts_compiler = Some(false);
            let why = format!(
                "{f}: its distccd does not accept {} (not in its /usr/lib/distcc masquerade \
                 list or DISTCC_CMDLIST), or does not --allow this machine",
                opts.compiler
            );
            return excluded(r, why);
        }
        Err(f) => return excluded(r, format!("probe compile: {f}")),
    };
    r.accepts_compiler = Some(true);
    if !reply.status.success() {
        let err = String::from_utf8_lossy(&reply.stderr).trim().to_string();
        let why = format!("the probe compile failed ({}): {err}", reply.status);
        return excluded(r, why);
    }
    if let Ok(id) = CompilerIdentity::from_object(&reply.object) {
        r.remote_compiler = Some(id.summary());
        r.remote_comment = Some(id.comment);
    }
    match verify::check_object(&reply.object, local) {
        Ok(()) => usable(r, None),
        Err(m) => excluded(r, m.to_string()),
    }
}

/// TCP connect time, or the time of `ssh HOST true`.
fn round_trip(host: &Host, opts: &ConnectOptions) -> Result<Duration, String> {
    let start = Instant::now();
    match &host.transport {
        Transport::Local => Ok(Duration::ZERO),
        Transport::Tcp { host: h, port } => {
            let addr = (h.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("resolving {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("{h} has no address"))?;
            TcpStream::connect_timeout(&addr, opts.timeouts.connect)
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            Ok(start.elapsed())
        }
        Transport::Ssh { user, host: h, .. } => {
            ssh_true(user.as_deref(), h, opts)?;
            Ok(start.elapsed())
        }
    }
}

/// Runs `ssh … HOST true`, bounded by the IO timeout.
fn ssh_true(user: Option<&str>, host: &str, opts: &ConnectOptions) -> Result<(), String> {
    let mut cmd = transport::ssh_command(user, host, opts);
    cmd.arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("running ssh: {e}"))?;
    let deadline = Instant::now() + opts.timeouts.io;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(format!("ssh {host} true: {st}: {err}"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ssh {host} true: no answer within {:?}",
                    opts.timeouts.io
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Prints the report: a table, then a line per excluded host; or JSON.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    crate::outln!(
        "local compiler: {} = {} ({})",
        report.compiler,
        report.local_compiler,
        report.local_comment
    )?;
    crate::outln!(
        "{:<24} {:<5} {:>5} {:>9} {:>5} {:<8} {:<24} VERDICT",
        "HOST",
        "VIA",
        "PROTO",
        "RTT",
        "SLOTS",
        "COMPILER",
        "REMOTE"
    )?;
    for h in &report.hosts {
        let yes_no = |b: Option<bool>| match b {
            Some(true) => "accepts",
            Some(false) => "refused",
            None => "-",
        };
        crate::outln!(
            "{:<24} {:<5} {:>5} {:>9} {:>5} {:<8} {:<24} {}",
            h.host,
            h.transport,
            h.protocol.map_or("-".into(), |p| p.to_string()),
            h.rtt_ms.map_or("-".into(), |t| format!("{t:.1} ms")),
            h.slots,
            yes_no(h.accepts_compiler),
            h.remote_compiler.as_deref().unwrap_or("-"),
            h.verdict
        )?;
    }
    for h in report.hosts.iter().filter(|h| !h.usable) {
        let why = h.reason.as_deref().unwrap_or("unknown");
        crate::outln!("{}: {why}; excluded", h.host)?;
    }
    crate::outln!("{} of {} hosts usable", report.usable, report.hosts.len())?;
    Ok(())
}
