//! What `pik build` tells its compiles about distribution: a small JSON file in the build dir
//! (`pik-dist.json`), named by one environment variable ([`DIST_ENV`]). The wrapper reads it
//! only on a miss, so a cache hit pays nothing for distribution.

use super::hosts::{parse_hosts, Host};
use super::transport::{ConnectOptions, SshOptions, Timeouts};
use super::verify::CompilerIdentity;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Names the distribution config file; unset = every compile runs here, as without hosts.
pub const DIST_ENV: &str = "PIK_DIST";

/// How long a host that failed is left alone (distcc's `DISTCC_BACKOFF_PERIOD`).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// How long a builder may go without progress on one job before pik gives up on it. distcc
/// waits 300 s; a kernel object takes seconds even on a Pi, so a stuck builder costs less.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The distribution settings of one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistConfig {
    /// The builders, in distcc's syntax (`localhost` entries are not builders and are left out).
    pub hosts: Vec<String>,
    /// The compiler name the build runs (`aarch64-linux-gnu-gcc`): only its compiles go out,
    /// under that bare name.
    pub compiler: String,
    /// The local compiler's identity: every remote object must match it.
    pub identity: CompilerIdentity,
    /// Compiles and preprocessing that may run here at once (the local cores).
    pub local_slots: usize,
    /// Where the slot locks and backoff marks live (shared by every compile of the build).
    pub slots_dir: PathBuf,
    /// TCP connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// IO timeout per read or write, milliseconds.
    pub io_timeout_ms: u64,
    /// How long a failed host is skipped, seconds.
    pub backoff_s: u64,
    /// `--strict-remote`: a job that cannot be compiled remotely fails the build.
    pub strict: bool,
    /// Every distributable compile waits for a builder rather than compiling here (tests and
    /// benchmarks: `PIK_DIST_REMOTE_ONLY=1`). Fallbacks and local-only compiles still run here.
    #[serde(default)]
    pub remote_only: bool,
    /// The ssh client for `user@host` builders.
    #[serde(default = "default_ssh")]
    pub ssh_program: String,
    /// Options put before the host on ssh's command line (`-p 2222`, `-i key`).
    #[serde(default)]
    pub ssh_args: Vec<String>,
}

fn default_ssh() -> String {
    "ssh".into()
}

impl DistConfig {
    /// A config for `hosts` (remote ones; `localhost` entries must already be left out), with
    /// distcc's timeouts and backoff.
    pub fn new(
        hosts: &[Host],
        compiler: &str,
        identity: CompilerIdentity,
        local_slots: usize,
        slots_dir: PathBuf,
    ) -> DistConfig {
        DistConfig {
            hosts: hosts.iter().map(|h| h.spec.clone()).collect(),
            compiler: compiler.to_string(),
            identity,
            local_slots: local_slots.max(1),
            slots_dir,
            connect_timeout_ms: Timeouts::default().connect.as_millis() as u64,
            io_timeout_ms: DEFAULT_IO_TIMEOUT.as_millis() as u64,
            backoff_s: DEFAULT_BACKOFF.as_secs(),
            strict: false,
            remote_only: false,
            ssh_program: default_ssh(),
            ssh_args: Vec::new(),
        }
    }

    /// Writes the config to `path` (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        pik_cache::atomic_write(path, &json).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a config file and parses its hosts.
    pub fn read(path: &Path) -> Result<(DistConfig, Vec<Host>)> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: DistConfig = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a pik distribution config", path.display()))?;
        let hosts = parse_hosts(&cfg.hosts)?
            .into_iter()
            .filter(|h| !h.is_local())
            .collect();
        Ok((cfg, hosts))
    }

    /// The connection settings.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            timeouts: Timeouts {
                connect: Duration::from_millis(self.connect_timeout_ms.max(1)),
                io: Duration::from_millis(self.io_timeout_ms.max(1)),
            },
            ssh: SshOptions {
                program: self.ssh_program.clone().into(),
                args: self.ssh_args.iter().map(Into::into).collect(),
            },
        }
    }

    /// The backoff period.
    pub fn backoff(&self) -> Duration {
        Duration::from_secs(self.backoff_s)
    }

    /// Remote slots over all `hosts`.
    pub fn remote_slots(hosts: &[Host]) -> usize {
        hosts.iter().map(|h| h.slots).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drops_localhost() {
        let d = tempfile::tempdir().unwrap();
        let hosts = parse_hosts(&["pi5a/3,lzo", "localhost/2", "me@pi5b"]).unwrap();
        let remote: Vec<Host> = hosts.into_iter().filter(|h| !h.is_local()).collect();
        let id = CompilerIdentity {
            comment: "GCC: (Debian 12.2.0-14) 12.2.0".into(),
            machine: 183,
            elf64: true,
            little_endian: true,
        };
        let cfg = DistConfig::new(&remote, "aarch64-linux-gnu-gcc", id, 2, d.path().into());
        let p = d.path().join("pik-dist.json");
        cfg.write(&p).unwrap();
        let (back, hosts) = DistConfig::read(&p).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(hosts.len(), 2);
        assert_eq!(DistConfig::remote_slots(&hosts), 7);
        assert_eq!(back.connect_options().timeouts.io, DEFAULT_IO_TIMEOUT);
        std::fs::write(&p, "{}").unwrap();
        assert!(DistConfig::read(&p).is_err());
    }
}
