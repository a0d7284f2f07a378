//! distcc's own client against pik's, job by job, on one stock distccd over loopback: the
//! per-job overhead (a job's wall time through the client minus the same compile run here) and
//! the local CPU each remote job costs (the client's whole process tree: distcc with its local
//! preprocessor, `pik cc` with its own; never distccd's).
//!
//! The jobs are real: a sample of the C compiles of a mini bcm2712 kernel (the commands kbuild
//! saved in `.<obj>.cmd`), run in that build dir. Each job is run four ways, in an order rotated
//! job by job: here (`local`), `distcc aarch64-linux-gnu-gcc …` (`distcc`), `pik cc …` with the
//! builder as a protocol 2 host (`pik-p2`: preprocessed here, LZO) and as a pump host
//! (`pik-pump`: the source and the headers from the header list an earlier compile kept; nothing
//! preprocessed here). pik has one object store per way, as a build has one; every job is
//! another object, so each is a miss that goes out.
//! The client runs on one core and distccd on the other (`taskset`), so neither steals the other's
//! CPU and the wall times are those of two machines on a very fast network.
//!
//! Usage (release pik, Debian's distcc and distccd, the cross compiler):
//!   cargo build --release && cargo bench --bench dist_client
//! Environment: PIK_BENCH_PIK (default target/release/pik), PIK_BENCH_DIR (default
//! target/bench-dist-client), PIK_BENCH_JOBS (compiles sampled, default 120), PIK_BENCH_PIN
//! (`0` runs unpinned; default pins the client to core 0 and distccd to core 1),
//! PIK_BENCH_BUILD (a finished kbuild build dir of a mini bcm2712 kernel to take the jobs from;
//! default: one the harness builds once in its dir).
//! Results: a table on stdout and `results.json` in the dir.

use pik::bench::measure::{self, Measured};
use pik::dist::{self, DistConfig};
use pik::wrapper::Summary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CC: &str = "aarch64-linux-gnu-gcc";

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    Local,
    Distcc,
    PikP2,
    PikPump,
}

const WAYS: [Way; 4] = [Way::Local, Way::Distcc, Way::PikP2, Way::PikPump];

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Local => "local",
            Way::Distcc => "distcc",
            Way::PikP2 => "pik-p2",
            Way::PikPump => "pik-pump",
        }
    }
}

/// stock distccd on 127.0.0.1, stopped on drop.
struct Distccd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Distccd {
    fn start(pin: bool) -> Distccd {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // distccd drops root for its own user, who must read the compiler list.
        let dir = tempfile::Builder::new()
            .prefix("pik-distccd")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let list = dir.path().join("cmdlist");
        std::fs::write(&list, format!("/usr/bin/{CC}\n")).unwrap();
        let log = std::fs::File::create(dir.path().join("distccd.log")).unwrap();
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "1", "distccd"]);
            c
        } else {
            Command::new("distccd")
        };
        cmd.args([
            "--daemon",
            "--no-detach",
            "--log-stderr",
            "--allow",
            "127.0.0.1",
        ])
        .args([
            "--listen",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-j",
            "2",
        ])
        .env("DISTCC_CMDLIST", &list)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd
            .spawn()
            .expect("starting distccd (Debian package distcc)");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "distccd did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Distccd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // The parent first (it would start new children), then the children it left, which
        // outlive it: every distccd serving this bench's port.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .args(["-f", &format!("distccd .*--port {} ", self.port)])
            .status();
    }
}

/// The C compiles kbuild ran in `build` (from its `.<obj>.cmd` files), sorted by object.
fn c_compiles(build: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(build)
        .into_iter()
        .filter_map(Result::ok)
    {
        let name = e.file_name().to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".o.cmd")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Some(cmd) = text
            .lines()
            .next()
            .and_then(|l| l.split_once(" := "))
            .map(|(_, c)| c.trim().replace("$(pound)", "#").replace("$$", "$"))
        else {
            continue;
        };
        // One plain compile of a .c file: no shell steps after it, no debug info.
        let plain = cmd.starts_with(&format!("{CC} "))
            && cmd.contains(" -c -o ")
            && cmd.ends_with(".c")
            && !cmd.contains([';', '|', '`'])
            && !cmd.contains(" -g");
        if plain {
            out.push(cmd);
        }
    }
    out.sort_by_key(|c| c.rsplit(' ').next().map(str::to_string));
    out
}

/// `n` of `all`, spread evenly.
fn sample(all: &[String], n: usize) -> Vec<String> {
    if all.len() <= n {
        return all.to_vec();
    }
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}

struct Bench {
    pik: PathBuf,
    dir: PathBuf,
    build: PathBuf,
    pin: bool,
    port: u16,
}

impl Bench {
    /// `sh -c "<prefix> <job>"` in the build dir, on the client's core.
    fn command(&self, prefix: &str, job: &str) -> Command {
        let line = format!("{prefix}{job}");
        let mut c = if self.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", "sh", "-c", &line]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &line]);
            c
        };
        c.current_dir(&self.build).stdout(Stdio::null());
        c
    }

    /// A distribution config for the builder (`cpp`: as a pump host).
    fn config(&self, cpp: bool) -> PathBuf {
        let spec = format!(
            "127.0.0.1:{}/2,lzo{}",
            self.port,
            if cpp { ",cpp" } else { "" }
        );
        let hosts = dist::parse_hosts(&[spec]).unwrap();
        let id = dist::CompilerIdentity::local(&PathBuf::from("/usr/bin").join(CC)).unwrap();
        let name = if cpp { "pump" } else { "p2" };
        let mut cfg = DistConfig::new(&hosts, CC, id, 1, self.dir.join(format!("slots-{name}")));
        cfg.remote_only = true;
        let path = self.dir.join(format!("dist-{name}.json"));
        cfg.write(&path).unwrap();
        path
    }

    /// `pik cc <job>` on the object store `store`, header lists in `pump`, distribution by
    /// `config` (none: compiled here).
    fn pik_cc(
        &self,
        job: &str,
        store: &Path,
        pump: &Path,
        config: Option<&Path>,
        log: &Path,
    ) -> Command {
        let mut c = self.command(&format!("{} cc ", self.pik.display()), job);
        c.env("PIK_CACHE_DIR", self.dir.join("cache"))
            .env("PIK_OBJECT_CACHE_DIR", store)
            .env("PIK_PUMP_DIR", pump)
            .env("PIK_SESSION_LOG", log)
            .env_remove(dist::DIST_ENV);
        if let Some(cfg) = config {
            c.env(dist::DIST_ENV, cfg);
        }
        c
    }
}

/// The mini kernel whose compiles are the jobs (built once; later runs reuse it).
fn build_kernel(pik: &Path, dir: &Path) -> PathBuf {
    let build = dir.join("build");
    let done = dir.join("build.done");
    if done.is_file() {
        return build;
    }
    for d in ["build", "out", "out-dev"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let _ = std::fs::remove_file(dir.join("out.json"));
    eprintln!("dist_client: building the mini kernel whose compiles are the jobs");
    let st = Command::new(pik)
        .args([
            "build",
            "--target",
            "bcm2712",
            "--profile",
            "mini",
            "--no-memo",
        ])
        .arg("--build-dir")
        .arg(&build)
        .arg("--out")
        .arg(dir.join("out"))
        .env("PIK_CACHE_DIR", dir.join("kernel-cache"))
        .stdout(Stdio::null())
        .status()
        .expect("running pik build");
    assert!(st.success(), "pik build failed");
    std::fs::write(&done, b"").unwrap();
    build
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pik = PathBuf::from(env_or(
        "PIK_BENCH_PIK",
        &root.join("target/release/pik").to_string_lossy(),
    ));
    assert!(
        pik.is_file(),
        "no pik at {} (cargo build --release)",
        pik.display()
    );
    let dir = PathBuf::from(env_or(
        "PIK_BENCH_DIR",
        &root.join("target/bench-dist-client").to_string_lossy(),
    ));
    // Parts of the dir are removed and remade below: it must be the bench's own.
    pik::bench::claim_dir(&dir).unwrap_or_else(|e| panic!("PIK_BENCH_DIR: {e:#}"));
    let n: usize = env_or("PIK_BENCH_JOBS", "120")
        .parse()
        .expect("PIK_BENCH_JOBS");
    let pin = env_or("PIK_BENCH_PIN", "1") != "0";
    let build = std::env::var_os("PIK_BENCH_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_kernel(&pik, &dir));
    let all = c_compiles(&build);
    let jobs = sample(&all, n);
    assert!(
        !jobs.is_empty(),
        "no C compile found in {}",
        build.display()
    );
    eprintln!(
        "dist_client: {} of the build's {} C compiles",
        jobs.len(),
        all.len()
    );

    let daemon = Distccd::start(pin);
    let b = Bench {
        pik,
        dir: dir.clone(),
        build,
        pin,
        port: daemon.port,
    };
    for d in ["pump", "pump-none", "stores", "cache", "distcc"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let logs = |w: &str| dir.join(format!("session-{w}.log"));
    for w in ["fill", "pik-p2", "pik-pump"] {
        let _ = std::fs::remove_file(logs(w));
    }
    // Header lists, as any earlier build leaves them: each job compiled once through pik, here.
    eprintln!("dist_client: keeping header lists (each job once through pik, here; untimed)");
    for job in &jobs {
        measure::run(
            &mut b.pik_cc(
                job,
                &dir.join("stores/fill"),
                &dir.join("pump"),
                None,
                &logs("fill"),
            ),
            "pik cc (header list)",
            None,
        )
        .unwrap();
    }
    let (p2, pump) = (b.config(false), b.config(true));
    let mut walls: BTreeMap<Way, Vec<f64>> = BTreeMap::new();
    let mut cpus: BTreeMap<Way, Vec<f64>> = BTreeMap::new();
    let mut over: BTreeMap<Way, Vec<f64>> = BTreeMap::new();
    let mut distcc_local = 0;
    let started = Instant::now();
    for (i, job) in jobs.iter().enumerate() {
        let mut local_wall = None;
        let mut this: Vec<(Way, Measured)> = Vec::new();
        for k in 0..WAYS.len() {
            let way = WAYS[(i + k) % WAYS.len()];
            // One store per way for the whole run, as a build has one: every job still misses
            // (each is another object), and the store's table of header digests warms as in a
            // build.
            let store = dir.join(format!("stores/{}", way.name()));
            let stderr = dir.join("stderr.txt");
            let mut cmd = match way {
                Way::Local => b.command("", job),
                Way::Distcc => {
                    let mut c = b.command("distcc ", job);
                    c.env("DISTCC_HOSTS", format!("127.0.0.1:{}/2,lzo", b.port))
                        .env("DISTCC_DIR", dir.join("distcc"))
                        .env("DISTCC_VERBOSE", "0");
                    c
                }
                Way::PikP2 | Way::PikPump => {
                    // Protocol 2 has no header lists to read; pump reads the kept ones.
                    let (lists, cfg) = match way {
                        Way::PikP2 => ("pump-none", &p2),
                        _ => ("pump", &pump),
                    };
                    b.pik_cc(job, &store, &dir.join(lists), Some(cfg), &logs(way.name()))
                }
            };
            cmd.stderr(std::fs::File::create(&stderr).unwrap());
            let m = measure::run(&mut cmd, way.name(), None).unwrap_or_else(|e| {
                panic!(
                    "{e:#}: {job}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
            if way == Way::Distcc {
                let err = std::fs::read_to_string(&stderr).unwrap_or_default();
                if err.contains("locally") {
                    distcc_local += 1;
                }
            }
            if way == Way::Local {
                local_wall = Some(m.wall_s);
            }
            this.push((way, m));
        }
        for (way, m) in this {
            walls.entry(way).or_default().push(m.wall_s * 1e3);
            cpus.entry(way)
                .or_default()
                .push((m.user_s + m.sys_s) * 1e3);
            if let Some(l) = local_wall {
                over.entry(way).or_default().push((m.wall_s - l) * 1e3);
            }
        }
        if (i + 1) % 20 == 0 {
            eprintln!(
                "dist_client: {} of {} jobs, {:.0} s",
                i + 1,
                jobs.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(daemon);

    let p2s = Summary::read(&logs("pik-p2")).dist;
    let pumps = Summary::read(&logs("pik-pump")).dist;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let distcc_cpu = mean(&cpus[&Way::Distcc]);
    println!(
        "\n{} jobs (C compiles of the mini bcm2712 kernel), one at a time, builder = distccd on \
         127.0.0.1{}",
        jobs.len(),
        if pin {
            " (client on core 0, distccd on core 1)"
        } else {
            ""
        }
    );
    println!(
        "| way | job wall, median ms | overhead vs local, median ms | local CPU per job, mean ms | × distcc's CPU |"
    );
    println!("|---|---|---|---|---|");
    let mut json = serde_json::Map::new();
    for w in WAYS {
        let (wall, ov, cpu) = (
            median(walls[&w].clone()),
            median(over[&w].clone()),
            mean(&cpus[&w]),
        );
        println!(
            "| {} | {wall:.1} | {ov:+.1} | {cpu:.1} | {:.2} |",
            w.name(),
            cpu / distcc_cpu
        );
        json.insert(
            w.name().into(),
            serde_json::json!({"wall_ms_median": wall, "overhead_ms_median": ov, "cpu_ms_mean": cpu}),
        );
    }
    println!(
        "\nwhere the jobs went: distcc {} of {} remote; pik-p2 {} remote, {} pump, {} fallback; \
         pik-pump {} pump, {} remote (declined: {:?}), {} fallback",
        jobs.len() - distcc_local,
        jobs.len(),
        p2s.remote,
        p2s.pump,
        p2s.fallback,
        pumps.pump,
        pumps.remote,
        pumps.pump_declined,
        pumps.fallback
    );
    json.insert("jobs".into(), jobs.len().into());
    json.insert("distcc_remote".into(), (jobs.len() - distcc_local).into());
    json.insert("pik_p2".into(), serde_json::to_value(&p2s).unwrap());
    json.insert("pik_pump".into(), serde_json::to_value(&pumps).unwrap());
    json.insert("pinned".into(), pin.into());
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
}
