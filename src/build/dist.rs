//! The build's side of distributed compiles: the hosts checked before any work, the local
//! compiler's identity probed once, the config file the wrapper reads on a miss, and what the
//! build reports (the summary line, the manifest's record, a `--strict-remote` failure).

use super::kbuild::{DistSetup, Kbuild};
use super::plan::Plan;
use super::Options;
use crate::dist::{self, DistConfig, Host, Slots};
use crate::output::manifest::{DistRecord, HostRecord};
use crate::wrapper::DistSummary;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Set to `1` to make every compile a builder may take wait for one instead of compiling here
/// (tests and benchmarks; fallbacks and local-only compiles still run here).
pub const REMOTE_ONLY_ENV: &str = "PIK_DIST_REMOTE_ONLY";

/// Seconds a builder may go without progress on a job (default 120).
pub const TIMEOUT_ENV: &str = "PIK_REMOTE_TIMEOUT";

/// The build's hosts, parsed and checked before any work: the builders, and the local slots a
/// `localhost/N` entry asks for (distcc's way of saying how many jobs run here). `None`
/// without builders.
pub fn hosts(opt: &Options) -> Result<Option<(Vec<Host>, Option<usize>)>> {
    let all = dist::parse_hosts(&opt.hosts)?;
    let local = all.iter().find(|h| h.is_local()).map(|h| h.slots);
    let remote: Vec<Host> = all.into_iter().filter(|h| !h.is_local()).collect();
    if remote.is_empty() {
        return Ok(None);
    }
    if opt.no_cache {
        bail!(
            "--hosts with --no-cache: distributed compiles go through pik's compiler wrapper, \
             which --no-cache leaves out (to compile everything for real, use an empty object \
             cache: PIK_OBJECT_CACHE_DIR=<empty dir>)"
        );
    }
    if opt.toolchain.llvm {
        bail!("distributed compiles support GCC toolchains only, not --llvm");
    }
    Ok(Some((remote, local)))
}

/// Sets up distribution for `kb`: probes the local compiler (every remote object must match
/// it), resets the slots and backoff marks, and writes `<build-dir>/pik-dist.json`.
pub fn setup(
    opt: &Options,
    plan: &Plan,
    kb: &Kbuild,
    (hosts, local): (Vec<Host>, Option<usize>),
) -> Result<DistSetup> {
    let cc = &plan.toolchain.cc;
    let identity = dist::CompilerIdentity::local(cc).with_context(|| {
        format!(
            "probing the local compiler {} (remote objects are checked against it)",
            cc.display()
        )
    })?;
    let local = local.unwrap_or(kb.jobs).max(1);
    let slots_dir = kb.build_dir.join("pik-dist");
    Slots::open(&slots_dir)
        .and_then(|s| s.clear_backoff())
        .with_context(|| format!("preparing {}", slots_dir.display()))?;
    let mut cfg = DistConfig::new(
        &hosts,
        &plan.toolchain.cc_name(),
        identity,
        local,
        slots_dir,
    );
    cfg.strict = opt.strict_remote;
    cfg.remote_only = std::env::var_os(REMOTE_ONLY_ENV).is_some_and(|v| v == "1");
    if let Some(t) = std::env::var_os(TIMEOUT_ENV).filter(|v| !v.is_empty()) {
        let secs: u64 = t
            .to_str()
            .and_then(|t| t.parse().ok())
            .filter(|&s| s > 0)
            .with_context(|| format!("{TIMEOUT_ENV}={t:?} is not a number of seconds"))?;
        cfg.io_timeout_ms = Duration::from_secs(secs).as_millis() as u64;
    }
    let config = kb.build_dir.join("pik-dist.json");
    cfg.write(&config)?;
    Ok(DistSetup {
        config,
        local,
        remote: DistConfig::remote_slots(&hosts),
        hosts: cfg.hosts,
        strict: cfg.strict,
    })
}

/// The manifest's record of where the misses were compiled.
pub fn record(setup: &DistSetup, s: &DistSummary) -> DistRecord {
    DistRecord {
        hosts: setup.hosts.clone(),
        local_slots: setup.local,
        remote_slots: setup.remote,
        strict: setup.strict,
        local: s.local,
        remote: s.remote,
        pump: s.pump,
        fallback: s.fallback,
        by_host: s
            .hosts
            .iter()
            .map(|(h, j)| {
                let r = HostRecord {
                    remote: j.remote,
                    pump: j.pump,
                };
                (h.clone(), r)
            })
            .collect(),
        fallbacks: s.fallbacks.clone(),
        pump_declined: s.pump_declined.clone(),
        local_reasons: s.local_reasons.clone(),
    }
}

/// The error to put on a failed make when `--strict-remote` stopped it: which builders failed
/// and why.
pub fn strict_failure(s: &DistSummary) -> Option<String> {
    if s.strict.is_empty() {
        return None;
    }
    let each: Vec<String> = s
        .strict
        .iter()
        .map(|(what, n)| {
            let (host, reason) = what.rsplit_once('/').unwrap_or((what, "unknown"));
            format!(
                "{host}: {reason} ({n} job{})",
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect();
    Some(format!(
        "a builder failed and --strict-remote forbids compiling its jobs here: {}",
        each.join(", ")
    ))
}
