//! Who may compile where, shared by every compile of a build without a daemon: one lock file
//! per slot, taken with a non-blocking `flock` (distcc's own scheme, `src/where.c`). A local
//! slot is one of the local cores (for a compile, a preprocessing run or an assembly); a remote
//! slot is one job on one builder. A lock is released when its holder closes it or dies, so a
//! killed compile never leaks a slot (a token lost from a FIFO would shrink the build's
//! parallelism for the rest of the run).
//!
//! Remote slots are tried as distcc does: slot 0 of every host in list order, then slot 1 of
//! every host that has one, and so on, so load spreads over the hosts. A host that failed is
//! marked (a file whose modification time is the moment it failed) and skipped for the backoff
//! period.

use super::hosts::Host;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The slot locks of one build.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
}

/// A slot held until dropped.
#[derive(Debug)]
pub struct Held {
    _lock: File,
    /// For a remote slot, the host's index in the list.
    pub host: Option<usize>,
}

impl Slots {
    /// The slots in `dir` (made if missing).
    pub fn open(dir: &Path) -> io::Result<Slots> {
        std::fs::create_dir_all(dir)?;
        Ok(Slots {
            dir: dir.to_path_buf(),
        })
    }

    /// One of the `n` local slots, if one is free.
    pub fn try_local(&self, n: usize) -> io::Result<Option<Held>> {
        for i in 0..n.max(1) {
            if let Some(f) = try_lock(&self.dir.join(format!("local-{i}")))? {
                return Ok(Some(Held {
                    _lock: f,
                    host: None,
                }));
            }
        }
        Ok(None)
    }

    /// A free slot on one of `hosts` that is not backed off, slot 0 of each host before slot 1
    /// of any.
    pub fn try_remote(&self, hosts: &[Host], backoff: Duration) -> io::Result<Option<Held>> {
        let usable: Vec<(usize, &Host)> = hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| !self.backed_off(h, backoff))
            .collect();
        let most = usable.iter().map(|(_, h)| h.slots).max().unwrap_or(0);
        for i in 0..most {
            for (n, h) in usable.iter().filter(|(_, h)| h.slots > i) {
                let path = self.dir.join(format!("{}-{i}", host_key(h)));
                if let Some(f) = try_lock(&path)? {
                    return Ok(Some(Held {
                        _lock: f,
                        host: Some(*n),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Whether every one of `hosts` is backed off (or there are none).
    pub fn all_backed_off(&self, hosts: &[Host], backoff: Duration) -> bool {
        hosts.iter().all(|h| self.backed_off(h, backoff))
    }

    /// Marks `host` as failed now.
    pub fn back_off(&self, host: &Host) {
        let _ = std::fs::write(self.backoff_mark(host), host.spec.as_bytes());
    }

    /// Whether `host` failed less than `period` ago.
    pub fn backed_off(&self, host: &Host, period: Duration) -> bool {
        let Ok(md) = std::fs::metadata(self.backoff_mark(host)) else {
            return false;
        };
        let since = md
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        since.is_none_or(|s| s < period)
    }

    fn backoff_mark(&self, host: &Host) -> PathBuf {
        self.dir.join(format!("{}.backoff", host_key(host)))
    }

    /// Forgets every backoff mark (a new build starts with every host in).
    pub fn clear_backoff(&self) -> io::Result<()> {
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "backoff") {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(())
    }
}

/// A file-name-safe key for a host: its spec's digest (two specs for one machine are two hosts,
/// as in distcc).
fn host_key(h: &Host) -> String {
    format!("h{}", &blake3::hash(h.spec.as_bytes()).to_hex()[..16])
}

/// Opens `path` and takes an exclusive lock on it without waiting; `None` when someone holds it.
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(f));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::parse_hosts;

    #[test]
    fn slot_zero_of_every_host_first_and_backoff() {
        let d = tempfile::tempdir().unwrap();
        let s = Slots::open(d.path()).unwrap();
        let hosts = parse_hosts(&["a/2", "b/1", "c/3"]).unwrap();
        let t = Duration::from_secs(60);
        let mut held = Vec::new();
        let mut order = Vec::new();
        while let Some(h) = s.try_remote(&hosts, t).unwrap() {
            order.push(h.host.unwrap());
            held.push(h);
        }
        assert_eq!(order, [0, 1, 2, 0, 2, 2]);
        held.remove(0);
        assert_eq!(s.try_remote(&hosts, t).unwrap().unwrap().host, Some(0));
        s.back_off(&hosts[0]);
        assert!(s.backed_off(&hosts[0], t));
        assert!(!s.backed_off(&hosts[0], Duration::ZERO));
        assert!(!s.all_backed_off(&hosts, t));
        drop(held);
        let next = s.try_remote(&hosts, t).unwrap().unwrap();
        assert_eq!(next.host, Some(1), "a is backed off");
        s.clear_backoff().unwrap();
        assert!(!s.backed_off(&hosts[0], t));
        let l1 = s.try_local(2).unwrap().unwrap();
        let _l2 = s.try_local(2).unwrap().unwrap();
        assert!(s.try_local(2).unwrap().is_none());
        drop(l1);
        assert!(s.try_local(2).unwrap().is_some());
    }
}
