//! Driving the kernel's own make: one place that knows the command line (O=, ARCH=, the
//! toolchain, the pinned reproducibility variables, the host tools pik fixes) and the environment
//! (scrubbed of variables that would change the build behind pik's back). Output goes to the build
//! log; compile lines feed the progress display.

use crate::input::toolchain::Toolchain;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Default `SOURCE_DATE_EPOCH`, as nixpkgs' stdenv uses: 1980-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: i64 = 315_532_800;

/// Environment variables that would silently change what kbuild does; pik removes them.
const SCRUBBED_ENV: &[&str] = &[
    "ARCH",
    "CROSS_COMPILE",
    "LLVM",
    "LLVM_IAS",
    "O",
    "KBUILD_OUTPUT",
    "KBUILD_EXTMOD",
    "KCFLAGS",
    "KCPPFLAGS",
    "KAFLAGS",
    "KRUSTFLAGS",
    "KBUILD_CFLAGS",
    "KBUILD_AFLAGS",
    "KBUILD_LDFLAGS",
    "CC",
    "LD",
    "AR",
    "NM",
    "OBJCOPY",
    "CFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEFILES",
    "GNUMAKEFLAGS",
    "LOCALVERSION",
    "KCONFIG_CONFIG",
    "KCONFIG_ALLCONFIG",
    "INSTALL_MOD_PATH",
    "INSTALL_PATH",
    "INSTALL_DTBS_PATH",
    "INSTALL_MOD_STRIP",
    "KBUILD_VERBOSE",
    "V",
    "W",
    "C",
    "KBUILD_ABS_SRCTREE",
    "KBUILD_BUILD_VERSION_TIMESTAMP",
    "KBUILD_SIGN_PIN",
    "CCACHE_DIR",
    "DISTCC_HOSTS",
];

/// One kernel build: tree, build dir, architecture, toolchain, jobs, log.
#[derive(Debug, Clone)]
pub struct Kbuild {
    /// The source tree (srctree).
    pub tree: PathBuf,
    /// `O=`.
    pub build_dir: PathBuf,
    /// `ARCH=`.
    pub arch: String,
    /// The cross toolchain.
    pub toolchain: Toolchain,
    /// `-j`.
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH` for the timestamp kbuild embeds.
    pub epoch: i64,
    /// The full log of every make run.
    pub log: PathBuf,
    /// pik's masquerade dir (compiler-named links to pik), first on PATH; None = no cache.
    pub masquerade: Option<PathBuf>,
    /// Where wrapped compiles log their hits and misses for this build.
    pub cache_log: Option<PathBuf>,
    /// pik vouching for its private source tree to the cache (see `wrapper::TREE_ENV`).
    pub cache_tree: Option<(&'static str, std::ffi::OsString)>,
    /// Where the wrapper finds the store (it reads no config file), when the cache is on.
    pub store_env: Vec<(&'static str, std::ffi::OsString)>,
    /// Where wrapped compiles record when and where they ran (`pik plan` replays it), when the
    /// cache is on.
    pub jobs_log: Option<PathBuf>,
    /// Distributed compiles, when the build has hosts (see [`Kbuild::distribute`]).
    pub dist: Option<DistSetup>,
}

/// A build's distribution: its config file (what the wrapper reads), the slots make's
/// jobserver spans, and the hosts.
#[derive(Debug, Clone)]
pub struct DistSetup {
    /// `<build-dir>/pik-dist.json`.
    pub config: PathBuf,
    /// Local cores: compiles and preprocessing here at once.
    pub local: usize,
    /// Remote slots over all hosts.
    pub remote: usize,
    /// The hosts (specs).
    pub hosts: Vec<String>,
    /// `--strict-remote`.
    pub strict: bool,
}

impl DistSetup {
    /// The jobs make may run at once: every local core and every remote slot.
    pub fn make_jobs(&self) -> usize {
        self.local + self.remote
    }
}

impl Kbuild {
    /// kbuild for `plan` on the workspace's tree into `build_dir`. With `cache`, pik's
    /// masquerade links come first on make's PATH and the wrapper is told about this build: its
    /// session log, the workspace it may trust by id, where the store is.
    pub fn new(
        plan: &super::plan::Plan,
        ws: &crate::input::workspace::Workspace,
        build_dir: PathBuf,
        jobs: usize,
        cache: bool,
    ) -> Result<Kbuild> {
        let log = build_dir.join("pik-build.log");
        let _ = std::fs::remove_file(&log);
        let store_env = if cache {
            crate::store::compile_env()?
        } else {
            Vec::new()
        };
        let jobs_log = cache.then(|| build_dir.join("pik-jobs.log"));
        if let Some(j) = &jobs_log {
            let _ = std::fs::remove_file(j);
        }
        let (masquerade, cache_log, cache_tree) = if cache {
            let cache_log = build_dir.join("pik-cache.log");
            let _ = std::fs::remove_file(&cache_log);
            // The workspace is pik's own and keyed by its content, so the cache may trust it.
            let root = std::fs::canonicalize(&ws.tree)
                .with_context(|| format!("resolving {}", ws.tree.display()))?;
            (
                Some(crate::wrapper::masquerade_dir(&plan.toolchain.wrapped())?),
                Some(cache_log),
                Some(crate::wrapper::source_tree_env(&ws.key, &root)),
            )
        } else {
            (None, None, None)
        };
        Ok(Kbuild {
            tree: ws.tree.clone(),
            build_dir,
            arch: plan.target.arch.clone(),
            toolchain: plan.toolchain.clone(),
            jobs,
            epoch: plan.epoch,
            log,
            masquerade,
            cache_log,
            cache_tree,
            store_env,
            jobs_log,
            dist: None,
        })
    }

    /// The make command for `targets` plus `extra` variables.
    pub fn command(&self, targets: &[&str], extra: &[String]) -> Command {
        self.make_command(targets, extra, true)
    }

    /// The make command; `jobs`: with `-jN` on its command line (else the caller gives make a
    /// jobserver).
    fn make_command(&self, targets: &[&str], extra: &[String], jobs: bool) -> Command {
        let mut cmd = Command::new("make");
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KBUILD_BUILD_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env("KBUILD_BUILD_TIMESTAMP", timestamp_text(self.epoch))
            .env("KBUILD_BUILD_USER", "pik")
            .env("KBUILD_BUILD_HOST", "pik")
            .env("KBUILD_BUILD_VERSION", "1");
        // kbuild is always given a bare CROSS_COMPILE and finds the compiler on PATH, with or
        // without the cache, so its recorded command lines do not depend on the cache.
        let (prefix_dir, make_args) = self.toolchain.make_args();
        let mut path: Vec<PathBuf> = Vec::new();
        path.extend(self.masquerade.iter().cloned());
        path.extend(prefix_dir);
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        cmd.env_remove(crate::wrapper::COMPILER_ENV);
        cmd.env_remove(crate::wrapper::HOST_CC_ENV);
        if let Ok(p) = std::env::join_paths(path) {
            if self.masquerade.is_some() {
                let wrapped = self.toolchain.wrapped();
                if let Some((k, v)) = crate::wrapper::compiler_env(&wrapped, &p) {
                    cmd.env(k, v);
                }
                if let [_, host] = wrapped.as_slice() {
                    cmd.env(crate::wrapper::HOST_CC_ENV, host);
                }
            }
            cmd.env("PATH", p);
        }
        match &self.cache_log {
            Some(l) => cmd.env(crate::wrapper::SESSION_LOG_ENV, l),
            None => cmd.env_remove(crate::wrapper::SESSION_LOG_ENV),
        };
        match &self.cache_tree {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env_remove(crate::wrapper::TREE_ENV),
        };
        for (k, v) in &self.store_env {
            cmd.env(k, v);
        }
        self.compile_env(&mut cmd);
        cmd.arg("-C")
            .arg(&self.tree)
            .arg(format!("O={}", self.build_dir.display()))
            .arg(format!("ARCH={}", self.arch))
            .args(make_args);
        if jobs {
            cmd.arg(format!("-j{}", self.jobs.max(1)));
        }
        // Debug info records the compile directory (the build dir): mapped to `.`, objects
        // no longer depend on where the build dir is, so neither do their cache keys (the
        // wrapper keys a `-g` compile on its directory unless a map covers it). The caller's
        // KCFLAGS/KAFLAGS are scrubbed above, as every compiler flag from the environment.
        let map = self.build_dir_map();
        cmd.arg(format!("KCFLAGS={map}"))
            .arg(format!("KAFLAGS={map}"));
        // Empty LOCALVERSION: no "+" suffix from scm state; the config's LOCALVERSION names it.
        cmd.arg("LOCALVERSION=")
            .arg("DTC_FLAGS=-@")
            // Host tools Kconfig consults are fixed, not taken from whatever PATH has: pik builds
            // neither Rust nor BTF, so they are named as absent and Kconfig records version 0.
            .arg("RUSTC=pik-no-rustc")
            .arg("HOSTRUSTC=pik-no-rustc")
            .arg("BINDGEN=pik-no-bindgen")
            .arg("PAHOLE=pik-no-pahole")
            .args(extra)
            .args(targets)
            .stdin(Stdio::null());
        cmd
    }

    /// The build dir mapped to `.` (by the path given and, when it differs, the real one the
    /// compiler may see).
    fn build_dir_map(&self) -> String {
        let mut map = format!("-ffile-prefix-map={}=.", self.build_dir.display());
        if let Ok(real) = std::fs::canonicalize(&self.build_dir) {
            if real != self.build_dir {
                map.push_str(&format!(" -ffile-prefix-map={}=.", real.display()));
            }
        }
        map
    }

    /// Appends bytes to the build log.
    pub fn append_log(&self, bytes: &[u8]) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = f.write_all(bytes);
        }
    }

    /// The job log and header lists for wrapped compiles (with the cache), and no distribution
    /// unless [`Kbuild::run_compile`] asks for it.
    fn compile_env(&self, cmd: &mut Command) {
        cmd.env_remove(crate::dist::DIST_ENV);
        match &self.jobs_log {
            Some(j) => cmd.env(crate::wrapper::JOBS_LOG_ENV, j),
            None => cmd.env_remove(crate::wrapper::JOBS_LOG_ENV),
        };
        match crate::paths::cache_dir() {
            Ok(d) if self.masquerade.is_some() => {
                cmd.env(
                    crate::wrapper::PUMP_DIR_ENV,
                    d.join(crate::wrapper::PUMP_STORE),
                );
            }
            _ => {
                cmd.env_remove(crate::wrapper::PUMP_DIR_ENV);
            }
        }
    }

    /// Runs make for `targets`; every output line goes to the log and stdout lines to `on_line`.
    /// A failure is an error with the last lines of the log and where the log is.
    pub fn run(
        &self,
        targets: &[&str],
        extra: &[String],
        on_line: &mut dyn FnMut(&str),
    ) -> Result<()> {
        self.run_command(self.command(targets, extra), targets, on_line)
    }

    /// Runs make for the build's compiles: with hosts, one GNU make jobserver (the `jobserver`
    /// crate) spans every local core and remote slot, and the wrapper gets the distribution
    /// config; without, as [`Kbuild::run`].
    pub fn run_compile(&self, targets: &[&str], on_line: &mut dyn FnMut(&str)) -> Result<()> {
        let Some(d) = &self.dist else {
            return self.run(targets, &[], on_line);
        };
        let mut cmd = self.make_command(targets, &[], false);
        cmd.env(crate::dist::DIST_ENV, &d.config);
        // make itself holds one job slot (as a sub-make would): the pipe holds the rest.
        let client = jobserver::Client::new(d.make_jobs().max(1) - 1)
            .context("creating the make jobserver")?;
        client.configure_make(&mut cmd);
        let r = self.run_command(cmd, targets, on_line);
        drop(client);
        r
    }

    fn run_command(
        &self,
        mut cmd: Command,
        targets: &[&str],
        on_line: &mut dyn FnMut(&str),
    ) -> Result<()> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening the build log {}", self.log.display()))?;
        let log = Arc::new(Mutex::new(log));
        writeln!(log.lock().unwrap(), "$ {}", render(&cmd))?;
        let what = format!("make {}", targets.join(" "));
        let (mut child, registration) =
            crate::interrupt::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()), &what)
                .context("install the Debian package make")?;
        let stderr = child.stderr.take().context("make stderr")?;
        let err_log = Arc::clone(&log);
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let err_tail = Arc::clone(&tail);
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n').map_while(|l| l.ok()) {
                {
                    let mut l = err_log.lock().unwrap();
                    let _ = l.write_all(&line);
                    let _ = l.write_all(b"\n");
                }
                let mut t = err_tail.lock().unwrap();
                t.push(String::from_utf8_lossy(&line).to_string());
                if t.len() > 40 {
                    t.remove(0);
                }
            }
        });
        let stdout = child.stdout.take().context("make stdout")?;
        for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            {
                let mut l = log.lock().unwrap();
                let _ = l.write_all(&line);
                let _ = l.write_all(b"\n");
            }
            on_line(&String::from_utf8_lossy(&line));
        }
        let status = child.wait()?;
        drop(registration);
        let _ = err_thread.join();
        crate::interrupt::check(&what)?;
        if !status.success() {
            let tail = tail.lock().unwrap();
            let errors: Vec<&String> = tail
                .iter()
                .filter(|l| l.contains("error") || l.contains("Error") || l.contains("***"))
                .collect();
            let shown = if errors.is_empty() {
                tail.iter().collect()
            } else {
                errors
            };
            let start = shown.len().saturating_sub(12);
            bail!(
                "make {} failed ({status}):\n{}\nfull log: {}\nbuild dir (kept): {}",
                targets.join(" "),
                shown[start..]
                    .iter()
                    .map(|s| format!("  {s}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.log.display(),
                self.build_dir.display()
            );
        }
        Ok(())
    }

    /// The kernel release string (`6.12.117-v8-16k`) of the configured build dir.
    pub fn kernel_release(&self) -> Result<String> {
        let p = self.build_dir.join("include/config/kernel.release");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }

    /// `arch/<arch>/boot/<name>` in the build dir.
    pub fn boot_file(&self, name: &str) -> PathBuf {
        self.build_dir
            .join("arch")
            .join(&self.arch)
            .join("boot")
            .join(name)
    }
}

/// True for make's quiet-mode line for a compiled object (`  CC      init/main.o`,
/// `  CC [M]  drivers/x.o`, `  AS      arch/arm64/kernel/head.o`).
pub fn is_compile_line(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with("CC ") || t.starts_with("AS ")) && t.ends_with(".o")
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `SOURCE_DATE_EPOCH` as `LC_ALL=C date -u` prints it (`Tue Jan  1 00:00:00 UTC 1980`), the form
/// kbuild embeds in `uname -v`.
pub fn timestamp_text(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} UTC {}",
        WD[days.rem_euclid(7) as usize],
        MO[(m - 1) as usize],
        d,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_date() {
        assert_eq!(timestamp_text(315_532_800), "Tue Jan  1 00:00:00 UTC 1980");
        assert_eq!(timestamp_text(0), "Thu Jan  1 00:00:00 UTC 1970");
        assert_eq!(
            timestamp_text(1_764_097_200),
            "Tue Nov 25 19:00:00 UTC 2025"
        );
    }

    #[test]
    fn compile_lines() {
        assert!(is_compile_line("  CC      init/main.o"));
        assert!(is_compile_line("  CC [M]  drivers/watchdog/bcm2835_wdt.o"));
        assert!(is_compile_line("  AS      arch/arm64/kernel/head.o"));
        assert!(!is_compile_line("  LD      vmlinux.o"));
        assert!(!is_compile_line("  CC      scripts/mod/empty.s"));
    }
}
