//! A miss inside a distributed build (`PIK_DIST` set): where the compile runs. The object
//! cache stays in front (a hit never gets here) and what a builder returns is stored exactly
//! like a local result.
//!
//! A compile a builder may take (distcc's rules, [`dist::remote_argv`]) goes to the first free
//! remote slot; when none is free it takes a local slot if one is free, else it waits a moment
//! and asks again, so an idle builder is always used before a compile waits for a local core.
//! Local compiles, local preprocessing, assembly, probes and host programs each hold one of the
//! local slots while they run, so together they never exceed the local cores.
//!
//! On a builder: as pump (protocol 3, see `pump`) when the host has `,cpp` and the header
//! list of an earlier compile of this call is known; else preprocessed here (holding a local
//! slot) and sent as protocol 1 or 2. Every object is checked ([`dist::check_object`]). A
//! failure, a mismatch or a non-zero status on the builder runs the compile here instead (the
//! builder's diagnostics are dropped, so a real error is reported once, by the local compiler);
//! a host that failed is backed off. With `--strict-remote` such a fallback fails the compile
//! with the host, the reason and the file.

use super::args::{self, Compile};
use super::miss::{own_depfile, run_captured, Ran};
use super::pump::PumpResult;
use super::{exit_code, hit, real_compiler, Ctx, Res};
use crate::dist::{self, DistConfig, Failure, Host, Job, Protocol, Slots};
use pik_cache::Digest;
use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a compile waiting for a slot sleeps before it asks again.
const POLL: Duration = Duration::from_millis(20);

/// Where a miss was compiled, as the session log and the job log record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// No distribution in this build; whether a builder could have taken it (for `pik plan`).
    Plain { distributable: bool },
    /// Here, in a distributed build; why (`busy`, `no-host`, a [`dist::StayLocal`] key, …).
    Local {
        /// Why it did not go to a builder.
        why: String,
        /// Whether a builder could have taken it.
        distributable: bool,
    },
    /// On a builder as protocol 1 or 2; `pump` says why a pump attempt gave way, if one did.
    Remote { host: String, pump: Option<String> },
    /// On a builder as pump (protocol 3).
    Pump { host: String },
    /// Here, after `host` failed for `reason`.
    Fallback { host: String, reason: String },
}

impl Route {
    /// The session log's reason for a miss: `-`, `local/<why>`, `remote/<host>`,
    /// `remote/<host>/pump-<why>`, `pump/<host>`, `fallback/<host>/<reason>`.
    pub(super) fn reason(&self) -> String {
        match self {
            Route::Plain { .. } => "-".into(),
            Route::Local { why, .. } => format!("local/{why}"),
            Route::Remote { host, pump: None } => format!("remote/{host}"),
            Route::Remote {
                host,
                pump: Some(p),
            } => format!("remote/{host}/pump-{p}"),
            Route::Pump { host } => format!("pump/{host}"),
            Route::Fallback { host, reason } => format!("fallback/{host}/{reason}"),
        }
    }

    /// The job log's route.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Route::Plain { .. } | Route::Local { .. } => "local",
            Route::Remote { .. } => "remote",
            Route::Pump { .. } => "pump",
            Route::Fallback { .. } => "fallback",
        }
    }

    /// Whether a builder could have taken the compile.
    pub(super) fn distributable(&self) -> bool {
        match self {
            Route::Plain { distributable } | Route::Local { distributable, .. } => *distributable,
            _ => true,
        }
    }
}

/// How a distributed miss ended.
pub(super) enum Outcome {
    /// Compiled (or failed genuinely), here or on a builder.
    Ran(Ran, Route),
    /// `--strict-remote` and a builder failed: the message, for the session log.
    Strict(String),
}

/// One build's distribution, as the wrapper sees it.
pub(super) struct Dist {
    pub(super) cfg: DistConfig,
    pub(super) hosts: Vec<Host>,
    pub(super) slots: Slots,
    pub(super) opts: dist::ConnectOptions,
}

impl Dist {
    /// The build's distribution settings, if it has any (one `var_os`, then a small read).
    fn from_env() -> Option<Dist> {
        let path = std::env::var_os(dist::DIST_ENV).filter(|v| !v.is_empty())?;
        let read = DistConfig::read(path.as_ref()).and_then(|(cfg, hosts)| {
            let slots = Slots::open(&cfg.slots_dir)?;
            let opts = cfg.connect_options();
            Ok(Dist {
                cfg,
                hosts,
                slots,
                opts,
            })
        });
        match read {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("pik: warning: compiling here, not on builders: {e:#}");
                None
            }
        }
    }

    /// Waits for a local slot.
    pub(super) fn local_slot(&self) -> Res<dist::slots::Held> {
        loop {
            if let Some(h) = self.slots.try_local(self.cfg.local_slots)? {
                return Ok(h);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether a failure is the host's: it is skipped for a while.
    fn back_off_for(&self, host: &Host, f: &Failure) {
        if !matches!(f, Failure::Unsupported(_)) {
            self.slots.back_off(host);
        }
    }
}

impl Ctx {
    /// Runs a miss: here as always without `PIK_DIST`, else where the build's slots say.
    pub(super) fn execute(
        &self,
        c: &Compile,
        args: &[OsString],
        stdin: Option<&[u8]>,
        key: &Digest,
    ) -> Res<Outcome> {
        let Some(d) = Dist::from_env() else {
            let route = Route::Plain {
                distributable: self.distributable(c, args),
            };
            return Ok(Outcome::Ran(self.run_compiler(c, args, stdin)?, route));
        };
        let local = |why: &str, distributable: bool| Route::Local {
            why: why.into(),
            distributable,
        };
        if c.probe.is_some() || c.host {
            let route = Route::Plain {
                distributable: false,
            };
            return self.here(&d, c, args, stdin, route);
        }
        if self.name != d.cfg.compiler.as_str() {
            return self.here(&d, c, args, stdin, local("compiler", false));
        }
        let mut full = vec![self.name.clone()];
        full.extend(args.iter().cloned());
        let argv = match dist::remote_argv(&full) {
            Ok(a) => a,
            Err(s) => return self.here(&d, c, args, stdin, local(s.key, false)),
        };
        let job = Distributable {
            c,
            args,
            full: &full,
            argv,
            key,
        };
        self.place(&d, &job)
    }

    /// Whether a builder could take this compile by distcc's rules (recorded in the job log
    /// of a build without hosts, so `pik plan` can replay it with builders). Only asked when
    /// the job log is kept: the check is an argv scan, but a miss without a log needs none.
    fn distributable(&self, c: &Compile, args: &[OsString]) -> bool {
        if c.probe.is_some() || c.host || std::env::var_os(super::JOBS_LOG_ENV).is_none() {
            return false;
        }
        let mut full = vec![self.name.clone()];
        full.extend(args.iter().cloned());
        dist::remote_argv(&full).is_ok()
    }

    /// Waits for the first free slot: a builder's, else a local one (unless every compile must
    /// go out and some builder is still in).
    fn place(&self, d: &Dist, job: &Distributable) -> Res<Outcome> {
        loop {
            if let Some(slot) = d.slots.try_remote(&d.hosts, d.cfg.backoff())? {
                return self.remote(d, slot, job);
            }
            let all_out = d.slots.all_backed_off(&d.hosts, d.cfg.backoff());
            if !d.cfg.remote_only || all_out {
                if let Some(tok) = d.slots.try_local(d.cfg.local_slots)? {
                    let why = if all_out { "no-host" } else { "busy" };
                    let ran = self.run_compiler(job.c, job.args, None)?;
                    drop(tok);
                    let route = Route::Local {
                        why: why.into(),
                        distributable: true,
                    };
                    return Ok(Outcome::Ran(ran, route));
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Compiles here, holding a local slot.
    fn here(
        &self,
        d: &Dist,
        c: &Compile,
        args: &[OsString],
        stdin: Option<&[u8]>,
        route: Route,
    ) -> Res<Outcome> {
        let _slot = d.local_slot()?;
        Ok(Outcome::Ran(self.run_compiler(c, args, stdin)?, route))
    }

    /// The job on the builder whose slot is held: pump first when it can, else preprocessed.
    fn remote(&self, d: &Dist, slot: dist::slots::Held, job: &Distributable) -> Res<Outcome> {
        let host = &d.hosts[slot.host.expect("a remote slot")];
        let mut pump = None;
        if host.protocol() == Protocol::V3 {
            match self.pump(d, host, job)? {
                PumpResult::Done(ran) => {
                    let route = Route::Pump { host: host.name() };
                    return Ok(Outcome::Ran(ran, route));
                }
                PumpResult::Instead(why) => pump = Some(why),
                PumpResult::HostFailed(reason, detail) => {
                    return self.fall_back(d, slot, host, job, &reason, &detail)
                }
            }
        }
        self.preprocessed(d, slot, host, job, pump)
    }

    /// Protocol 1 or 2: preprocess here (holding a local slot), send, check, write.
    fn preprocessed(
        &self,
        d: &Dist,
        slot: dist::slots::Held,
        host: &Host,
        job: &Distributable,
        pump: Option<String>,
    ) -> Res<Outcome> {
        let cpp_start = Instant::now();
        let cpp = {
            let _local = d.local_slot()?;
            self.preprocess(job.c, job.args)?
        };
        let cpp_ms = cpp_start.elapsed().as_millis() as u64;
        let stay = |why: &str| Route::Local {
            why: why.into(),
            distributable: true,
        };
        if cpp.code != 0 {
            // The compile fails too: let the local compiler report it, once.
            drop(slot);
            return self.here(d, job.c, job.args, None, stay("cpp-failed"));
        }
        if memchr::memmem::find(&cpp.out, b".incbin").is_some() {
            // The builder's assembler would need the file `.incbin` names.
            drop(slot);
            return self.here(d, job.c, job.args, None, stay("incbin"));
        }
        let mut argv = job.argv.clone();
        if job.c.colour {
            argv.push(args::COLOUR_ALWAYS.into());
        }
        let sent = Job::Preprocessed {
            argv: &argv,
            source: &cpp.out,
        };
        let started = Instant::now();
        let reply = match dist::compile(host, &sent, &d.opts) {
            Ok(r) => r,
            Err(f) => {
                d.back_off_for(host, &f);
                return self.fall_back(d, slot, host, job, f.reason(), &f.to_string());
            }
        };
        if !reply.status.success() {
            let detail = format!("the builder's compiler failed ({})", reply.status);
            return self.fall_back(d, slot, host, job, "status", &detail);
        }
        if let Err(m) = dist::check_object(&reply.object, &d.cfg.identity) {
            d.slots.back_off(host);
            return self.fall_back(d, slot, host, job, "mismatch", &m.to_string());
        }
        drop(slot);
        let mut stderr = cpp.stderr;
        stderr.extend_from_slice(&reply.stderr);
        let ran = self.remote_result(job.c, &reply.object, reply.stdout, stderr, cpp.dep)?;
        let ran = Ran {
            compile_ms: started.elapsed().as_millis() as u64,
            cpp_ms,
            ..ran
        };
        let route = Route::Remote {
            host: host.name(),
            pump,
        };
        Ok(Outcome::Ran(ran, route))
    }

    /// After `host` failed for `reason`: the compile runs here (a slot of ours), or with
    /// `--strict-remote` fails, naming the host, the reason and the file. A non-zero status on
    /// the builder is a fallback only if the local compiler succeeds (else it was the code).
    pub(super) fn fall_back(
        &self,
        d: &Dist,
        slot: dist::slots::Held,
        host: &Host,
        job: &Distributable,
        reason: &str,
        detail: &str,
    ) -> Res<Outcome> {
        drop(slot);
        let strict = || {
            let msg = format!(
                "--strict-remote: {} could not compile {} ({reason}: {detail}); not compiling \
                 it here",
                host.name(),
                job.c.output.display()
            );
            eprintln!("pik: error: {msg}");
            Outcome::Strict(format!("strict/{}/{reason}", host.name()))
        };
        if d.cfg.strict && reason != "status" {
            return Ok(strict());
        }
        let ran = {
            let _local = d.local_slot()?;
            self.run_compiler(job.c, job.args, None)?
        };
        if reason == "status" && ran.code != 0 {
            let route = Route::Local {
                why: "error".into(),
                distributable: true,
            };
            return Ok(Outcome::Ran(ran, route));
        }
        if d.cfg.strict {
            return Ok(strict());
        }
        let route = Route::Fallback {
            host: host.name(),
            reason: reason.into(),
        };
        Ok(Outcome::Ran(ran, route))
    }

    /// Writes a builder's object where the compiler would have (through a temporary file and a
    /// rename), replays what it printed, and describes it as a compile that ran.
    pub(super) fn remote_result(
        &self,
        c: &Compile,
        object: &[u8],
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        dep: Dep,
    ) -> Res<Ran> {
        hit::write_file(&c.output, |f| f.write_all(object))?;
        std::io::stdout().write_all(&stdout)?;
        std::io::stderr().write_all(&stderr)?;
        Ok(Ran {
            code: 0,
            refused: false,
            compile_ms: 0,
            cpp_ms: 0,
            stdout,
            stderr,
            depfile: dep.path,
            _own_dep: dep.own,
        })
    }

    /// Runs the local preprocessor for a protocol 1 or 2 job: the call's own arguments with
    /// `-E` for `-c` and the object left out, so the caller's depfile is written as the
    /// compile would have written it (same target), and the source comes back on stdout.
    fn preprocess(&self, c: &Compile, args: &[OsString]) -> Res<Cpp> {
        let own = own_depfile(c)?;
        let mut cmd = real_compiler(&self.real);
        cmd.args(cpp_args(c, args));
        if let Some(p) = &own {
            cmd.arg("-MD").arg("-MF").arg(p);
        }
        if c.colour {
            cmd.arg(args::COLOUR_ALWAYS);
        }
        let (status, out, stderr) = run_captured(&mut cmd, None)?;
        let dep = Dep {
            path: match &own {
                Some(p) => p.to_path_buf(),
                None => c.depfile.clone().unwrap_or_default(),
            },
            own,
        };
        Ok(Cpp {
            code: exit_code(status),
            out,
            stderr,
            dep,
        })
    }
}

/// A compile a builder may take.
pub(super) struct Distributable<'a> {
    pub(super) c: &'a Compile,
    /// The arguments (without argv\[0\]).
    pub(super) args: &'a [OsString],
    /// argv\[0\] (the compiler's name) and the arguments.
    pub(super) full: &'a [OsString],
    /// The protocol 1/2 argv.
    pub(super) argv: Vec<OsString>,
    /// The call's first key (its header list's name).
    pub(super) key: &'a Digest,
}

/// Where the depfile of a remote compile is.
pub(super) struct Dep {
    pub(super) path: std::path::PathBuf,
    pub(super) own: Option<tempfile::TempPath>,
}

/// The local preprocessor's result.
struct Cpp {
    code: i32,
    out: Vec<u8>,
    stderr: Vec<u8>,
    dep: Dep,
}

/// The preprocessor's arguments for `args`: `-E` for `-c`, no `-o` (the output comes on
/// stdout), and for a depfile asked of the driver (`-MD`/`-MMD`), its name and target made
/// explicit, since with `-E` gcc would derive both differently.
fn cpp_args(c: &Compile, args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let separate_output = c.output_arg >= 1
        && args.get(c.output_arg).map(OsString::as_os_str) == Some(c.output.as_os_str())
        && matches!(args[c.output_arg - 1].to_str(), Some("-o" | "--output"));
    for (i, a) in args.iter().enumerate() {
        if i == c.output_arg || (separate_output && i + 1 == c.output_arg) {
            continue;
        }
        out.push(if a == "-c" { "-E".into() } else { a.clone() });
    }
    let has = |f: &dyn Fn(&str) -> bool| args.iter().any(|a| a.to_str().is_some_and(f));
    if has(&|a| a == "-MD" || a == "-MMD") {
        if !has(&|a| a.starts_with("-MF") || a.starts_with("-Wp,-MF")) {
            if let Some(d) = &c.depfile {
                out.push("-MF".into());
                out.push(d.clone().into());
            }
        }
        if !has(&|a| a.starts_with("-MT") || a.starts_with("-MQ")) {
            out.push("-MQ".into());
            out.push(c.output.clone().into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::args::{classify, Call};

    fn compile(cmd: &str) -> (Compile, Vec<OsString>) {
        let argv: Vec<OsString> = cmd.split(' ').map(OsString::from).collect();
        match classify(&argv) {
            Call::Compile(c) => (c, argv),
            other => panic!("{other:?}"),
        }
    }

    fn shown(v: &[OsString]) -> String {
        v.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn preprocessor_arguments() {
        let (c, a) = compile("-Wp,-MMD,d/.x.o.d -O2 -c -o d/x.o /s/x.c");
        assert_eq!(shown(&cpp_args(&c, &a)), "-Wp,-MMD,d/.x.o.d -O2 -E /s/x.c");
        let (c, a) = compile("-MD -O2 -c -od/x.o x.c");
        assert_eq!(
            shown(&cpp_args(&c, &a)),
            "-MD -O2 -E x.c -MF d/x.d -MQ d/x.o"
        );
        let (c, a) = compile("-MMD -MF x.dep -MT t -c x.c -o x.o");
        assert_eq!(shown(&cpp_args(&c, &a)), "-MMD -MF x.dep -MT t -E x.c");
    }

    #[test]
    fn session_reasons() {
        let r = |route: Route| route.reason();
        assert_eq!(
            r(Route::Plain {
                distributable: true
            }),
            "-"
        );
        assert_eq!(
            r(Route::Remote {
                host: "pi5a:3633".into(),
                pump: Some("nolist".into())
            }),
            "remote/pi5a:3633/pump-nolist"
        );
        assert_eq!(
            r(Route::Fallback {
                host: "[fd00::5]".into(),
                reason: "timeout".into()
            }),
            "fallback/[fd00::5]/timeout"
        );
    }
}
