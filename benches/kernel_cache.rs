//! The object cache against plain make and ccache (default and depend mode) on the mini kernel:
//! cold builds with an empty cache, warm builds in a fresh build dir, the wrapper's own cost per
//! hit, and the cache's size on disk. Contenders are alternated within each pair (the order
//! rotates every pair) so machine noise spreads over all of them.
//!
//! Usage (release pik, real kernel, real ccache):
//!   cargo build --release && cargo bench --bench kernel_cache
//! Environment: PIK_BENCH_PAIRS (default 5), PIK_BENCH_COLD_PAIRS (pairs that also time cold
//! builds; default all; the first pair always fills the caches), PIK_BENCH_CCACHE_COLD_PAIRS (of
//! those, the pairs where ccache builds cold too; default all: later cold pairs time plain make
//! against pik only, the cold goal's ratio), PIK_BENCH_TARGETS (default
//! "Image modules dtbs"), PIK_BENCH_DIR (default target/bench-kernel-cache),
//! PIK_BENCH_HIT_CALLS (default 300), PIK_BENCH_STORE_PAGES (what each contender's store is in the
//! page cache when a warm build starts: `evict` (default: on disk only, for every contender alike),
//! `load` (every file read just before), `asis` (whatever the runs before left)).
//! PIK_BENCH_COLD_PAIRS=0 times warm builds only, on the caches an earlier run left in the dir.
//! PIK_BENCH_CONTENDERS (default "plain,ccache-default,ccache-depend,pik"; pik is required).
//! Results: a table on stdout and `results.json` in the dir.

//!
//! Timing, the stores' page-cache handling and pik's hit counting are `pik bench`'s own
//! (`pik::bench::measure`); this harness keeps the contender matrix and the per-hit
//! micro-measurement.

use pik::bench::measure::{self, StorePages};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Plain,
    CcacheDefault,
    CcacheDepend,
    Pik,
}

impl Who {
    /// Its name in PIK_BENCH_CONTENDERS.
    fn key(self) -> &'static str {
        match self {
            Who::Plain => "plain",
            Who::CcacheDefault => "ccache-default",
            Who::CcacheDepend => "ccache-depend",
            Who::Pik => "pik",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Who::Plain => "plain make",
            Who::CcacheDefault => "ccache (default mode)",
            Who::CcacheDepend => "ccache (depend mode)",
            Who::Pik => "pik",
        }
    }
}

struct Bench {
    dir: PathBuf,
    tree: PathBuf,
    config: PathBuf,
    targets: Vec<String>,
    pik: PathBuf,
    /// What `pik build` tells its wrapper about the workspace (see `wrapper::TREE_ENV`).
    tree_env: (&'static str, std::ffi::OsString),
    /// What `pik build` tells its wrapper about the real compiler (`wrapper::COMPILER_ENV`).
    compiler_env: (&'static str, std::ffi::OsString),
    /// pik's cache outcome per build (its session log), by build name.
    summaries: std::cell::RefCell<Vec<(String, pik::wrapper::Summary)>>,
    /// The page-cache state of a contender's store when its warm build starts (see
    /// `pik::bench::measure::StorePages`: a warm build right after its own cold build finds its
    /// store in memory, one minutes later on disk; set alike for every contender).
    store_pages: StorePages,
}

impl Bench {
    fn masq(&self, who: Who) -> Option<PathBuf> {
        let target = match who {
            Who::Plain => return None,
            Who::CcacheDefault | Who::CcacheDepend => PathBuf::from("/usr/bin/ccache"),
            Who::Pik => self.pik.clone(),
        };
        let d = self.dir.join(format!("masq-{who:?}"));
        std::fs::create_dir_all(&d).unwrap();
        let link = d.join("aarch64-linux-gnu-gcc");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, link).unwrap();
        Some(d)
    }

    fn cache_dir(&self, who: Who) -> PathBuf {
        self.dir.join(format!("cache-{who:?}"))
    }

    fn make(&self, who: Who, bdir: &Path, targets: &[String]) -> Command {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&self.tree)
            .arg(format!("O={}", bdir.display()))
            .args([
                "ARCH=arm64",
                "CROSS_COMPILE=aarch64-linux-gnu-",
                "-j2",
                "-s",
            ])
            .args([
                "KBUILD_BUILD_TIMESTAMP=Tue Jan  1 00:00:00 UTC 1980",
                "KBUILD_BUILD_USER=pik",
                "KBUILD_BUILD_HOST=pik",
                "LOCALVERSION=",
            ])
            .args(targets)
            .env("LC_ALL", "C")
            .env_remove("MAKEFLAGS")
            .stdout(Stdio::null());
        if let Some(m) = self.masq(who) {
            let path = format!("{}:{}", m.display(), std::env::var("PATH").unwrap());
            c.env("PATH", path);
        }
        let cache = self.cache_dir(who);
        match who {
            Who::CcacheDefault => {
                c.env("CCACHE_DIR", &cache).env("CCACHE_NODEPEND", "1");
            }
            Who::CcacheDepend => {
                c.env("CCACHE_DIR", &cache).env("CCACHE_DEPEND", "1");
            }
            Who::Pik => {
                c.env("PIK_OBJECT_CACHE_DIR", &cache)
                    .env("PIK_CACHE_DIR", self.dir.join("pik-state"))
                    .env(self.tree_env.0, &self.tree_env.1)
                    .env(self.compiler_env.0, &self.compiler_env.1);
            }
            Who::Plain => {}
        }
        c
    }

    /// A fresh configured build dir; returns the seconds `make <targets>` took in it.
    fn build(&self, who: Who, name: &str, warm: bool) -> f64 {
        let bdir = self.dir.join("builds").join(name);
        let _ = std::fs::remove_dir_all(&bdir);
        std::fs::create_dir_all(&bdir).unwrap();
        std::fs::copy(&self.config, bdir.join(".config")).unwrap();
        sh(&mut self.make(who, &bdir, &["olddefconfig".to_string()]));
        let session = bdir.join("pik-session.log");
        if warm {
            self.store_pages.apply(&self.cache_dir(who));
        }
        let mut make = self.make(who, &bdir, &self.targets);
        make.env(pik::wrapper::SESSION_LOG_ENV, &session);
        let mut m = measure::run(&mut make, "make", None).unwrap();
        if who == Who::Pik {
            // What `pik build` does after every build, so it is timed too: train the store's
            // compression dictionary once there is enough to learn from, evict over the limit.
            let mut gc = Command::new(&self.pik);
            gc.args(["cache", "gc"])
                .env("PIK_OBJECT_CACHE_DIR", self.cache_dir(who))
                .stdout(Stdio::null());
            m.add(&measure::run(&mut gc, "pik cache gc", None).unwrap());
        }
        let s = m.wall_s;
        let mut outcome = format!("  {:.1} s CPU", m.user_s + m.sys_s);
        if who == Who::Pik {
            let sum = measure::outcome(&session).summary;
            outcome.push_str(&format!("  {sum}"));
            self.summaries.borrow_mut().push((name.to_string(), sum));
        }
        eprintln!("  {:<24} {name:<28} {s:8.1} s{outcome}", who.name());
        s
    }

    fn empty_cache(&self, who: Who) {
        let _ = std::fs::remove_dir_all(self.cache_dir(who));
        std::fs::create_dir_all(self.cache_dir(who)).unwrap();
        if who != Who::Plain && who != Who::Pik {
            sh(Command::new("ccache")
                .env("CCACHE_DIR", self.cache_dir(who))
                .args(["--max-size", "10G"])
                .stdout(Stdio::null()));
        }
    }
}

fn du(p: &Path, apparent: bool) -> u64 {
    let mut c = Command::new("du");
    c.arg("-s").arg("-B1");
    if apparent {
        c.arg("--apparent-size");
    }
    let o = c.arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Median, min and max, as `pik bench report` computes them.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let s = pik::bench::report::stats(v).expect("at least one value");
    (s.median, s.min, s.max)
}

/// One cached compile command from the warm build dir's `.cmd` files, to time single hits.
fn sample_compile(bdir: &Path) -> (String, PathBuf) {
    let cmd = bdir.join("kernel/.fork.o.cmd");
    let text = std::fs::read_to_string(&cmd).expect("kernel/.fork.o.cmd");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("savedcmd_kernel/fork.o := "))
        .expect("savedcmd line")
        .to_string();
    (line, bdir.to_path_buf())
}

/// `sh -c <line>` in `bdir` with the environment `who`'s build gave its compiles (the same for
/// the timed calls and the instruction count, so both look up the same cache entry).
fn hit_command(b: &Bench, who: Who, bdir: &Path, line: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(line)
        .current_dir(bdir)
        .env("LC_ALL", "C")
        .env("KBUILD_BUILD_TIMESTAMP", "Tue Jan  1 00:00:00 UTC 1980")
        .env("KBUILD_BUILD_USER", "pik")
        .env("KBUILD_BUILD_HOST", "pik");
    if let Some(m) = b.masq(who) {
        c.env(
            "PATH",
            format!("{}:{}", m.display(), std::env::var("PATH").unwrap()),
        );
    }
    match who {
        Who::CcacheDepend => {
            c.env("CCACHE_DIR", b.cache_dir(who))
                .env("CCACHE_DEPEND", "1");
        }
        Who::CcacheDefault => {
            c.env("CCACHE_DIR", b.cache_dir(who));
        }
        Who::Pik => {
            c.env("PIK_OBJECT_CACHE_DIR", b.cache_dir(who))
                .env(b.tree_env.0, &b.tree_env.1)
                .env(b.compiler_env.0, &b.compiler_env.1);
        }
        Who::Plain => {}
    }
    c
}

/// One run of `line` as [`hit_command`] makes it; wall ms.
fn time_hit(b: &Bench, who: Who, bdir: &Path, line: &str) -> f64 {
    let mut c = hit_command(b, who, bdir, line);
    let t = Instant::now();
    sh(&mut c);
    t.elapsed().as_secs_f64() * 1000.0
}

/// The per-hit floor: the compile line with `/bin/true` in the compiler's place.
const TRUE_FLOOR: &str = "floor: the same line, /bin/true as compiler";

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env_or(
        "PIK_BENCH_DIR",
        &root.join("target/bench-kernel-cache").to_string_lossy(),
    ));
    let pairs: usize = env_or("PIK_BENCH_PAIRS", "5").parse().unwrap();
    let cold_pairs: usize = env_or("PIK_BENCH_COLD_PAIRS", &pairs.to_string())
        .parse()
        .unwrap();
    let ccache_cold_pairs: usize = env_or("PIK_BENCH_CCACHE_COLD_PAIRS", &cold_pairs.to_string())
        .parse()
        .unwrap();
    let hit_calls: usize = env_or("PIK_BENCH_HIT_CALLS", "300").parse().unwrap();
    let selected = env_or(
        "PIK_BENCH_CONTENDERS",
        "plain,ccache-default,ccache-depend,pik",
    );
    let targets: Vec<String> = env_or("PIK_BENCH_TARGETS", "Image modules dtbs")
        .split_whitespace()
        .map(String::from)
        .collect();
    // The statically linked release build by default (`cargo build-static`): what a user installs
    // to run the wrapper fast.
    let pik = PathBuf::from(env_or(
        "PIK_BENCH_PIK",
        &root.join("target/static/release/pik").to_string_lossy(),
    ));
    assert!(
        pik.is_file(),
        "build pik first: cargo build-static (or set PIK_BENCH_PIK)"
    );
    // Parts of the dir are removed and remade below: it must be the bench's own.
    pik::bench::claim_dir(&dir).unwrap_or_else(|e| panic!("PIK_BENCH_DIR: {e:#}"));

    // The mini bcm2712 config and its workspace tree, made by pik itself (Kconfig only).
    let cfg_dir = dir.join("config");
    let out = Command::new(&pik)
        .args([
            "build",
            "-t",
            "bcm2712",
            "--profile",
            "mini",
            "--config-only",
            "--no-cache",
        ])
        .arg("--build-dir")
        .arg(&cfg_dir)
        .env("PIK_CACHE_DIR", dir.join("pik-state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mk = std::fs::read_to_string(cfg_dir.join("Makefile")).unwrap();
    let tree = mk
        .lines()
        .find_map(|l| {
            l.strip_prefix("include ")
                .and_then(|p| p.strip_suffix("/Makefile"))
        })
        .map(PathBuf::from)
        .expect("srctree in the build dir's Makefile");
    // As `pik build` does once its workspace is ready: the workspace's key vouches for it.
    let tree = std::fs::canonicalize(&tree).unwrap();
    let key = tree.file_name().unwrap().to_string_lossy().into_owned();
    let tree_env = pik::wrapper::source_tree_env(&key, &tree);
    // Found on this PATH, which has no masquerade dir yet.
    let compiler_env = pik::wrapper::compiler_env(
        &["aarch64-linux-gnu-gcc".to_string()],
        &std::env::var_os("PATH").unwrap_or_default(),
    )
    .expect("aarch64-linux-gnu-gcc on PATH");
    let b = Bench {
        dir: dir.clone(),
        tree_env,
        compiler_env,
        summaries: Default::default(),
        store_pages: env_or("PIK_BENCH_STORE_PAGES", "evict").parse().unwrap(),
        tree,
        config: cfg_dir.join(".config"),
        targets,
        pik,
    };
    eprintln!(
        "tree {} targets {:?}, {pairs} pairs",
        b.tree.display(),
        b.targets
    );

    let contenders: Vec<Who> = [Who::Plain, Who::CcacheDefault, Who::CcacheDepend, Who::Pik]
        .into_iter()
        .filter(|w| selected.split(',').any(|s| s.trim() == w.key()))
        .collect();
    assert!(
        contenders.contains(&Who::Pik),
        "PIK_BENCH_CONTENDERS={selected}: name pik and any of plain, ccache-default, ccache-depend"
    );
    // Those whose single hits are timed.
    let hitters: Vec<Who> = [Who::Pik, Who::CcacheDepend, Who::CcacheDefault]
        .into_iter()
        .filter(|w| contenders.contains(w))
        .collect();
    // The first pair fills the caches, unless asked for warm builds only.
    let first = usize::from(cold_pairs > 0);
    let mut cold_t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut warm_t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut sizes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for pair in 0..pairs {
        eprintln!("pair {}/{pairs}", pair + 1);
        let mut order = contenders.to_vec();
        order.rotate_left(pair % contenders.len());
        for who in order {
            let ccache = matches!(who, Who::CcacheDefault | Who::CcacheDepend);
            let cold = if ccache {
                pair < ccache_cold_pairs.min(cold_pairs).max(first)
            } else {
                pair < cold_pairs.max(first)
            };
            if !cold && pair == 0 && who != Who::Plain {
                assert!(
                    du(&b.cache_dir(who), true) > 1 << 20,
                    "PIK_BENCH_COLD_PAIRS=0 needs the caches of an earlier run in {}",
                    b.dir.display()
                );
            }
            if cold {
                b.empty_cache(who);
                let t = b.build(who, &format!("{who:?}-cold-{pair}"), false);
                if pair < cold_pairs && (!ccache || pair < ccache_cold_pairs) {
                    cold_t.entry(who.name()).or_default().push(t);
                }
                let c = b.cache_dir(who);
                sizes.insert(who.name(), (du(&c, false), du(&c, true)));
            }
            if who != Who::Plain {
                let t = b.build(who, &format!("{who:?}-warm-{pair}"), true);
                warm_t.entry(who.name()).or_default().push(t);
                let c = b.cache_dir(who);
                sizes
                    .entry(who.name())
                    .or_insert_with(|| (du(&c, false), du(&c, true)));
            }
        }
    }

    // The cost of one hit, against ccache's, on a real kernel compile line: wall time of
    // `sh -c <line>`, the contenders and two floors interleaved call by call (so drift in the
    // machine's speed hits all alike): the same line with `/bin/true` as the compiler (what
    // starting any program costs: the wrapper's own cost is a hit above this) and `sh -c :`.
    // Repeatably, the instructions callgrind counts in the wrapper process.
    let mut runs: Vec<(&str, Who, PathBuf, String)> = Vec::new();
    for &who in &hitters {
        let bdir = dir
            .join("builds")
            .join(format!("{who:?}-warm-{}", pairs - 1));
        let (line, cwd) = sample_compile(&bdir);
        if who == Who::Pik {
            let args = line.split_once(' ').map(|(_, a)| a).unwrap_or("");
            runs.push((
                TRUE_FLOOR,
                Who::Plain,
                cwd.clone(),
                format!("/bin/true {args}"),
            ));
        }
        runs.push((who.name(), who, cwd, line));
    }
    runs.push(("floor: sh -c :", Who::Plain, dir.clone(), ":".to_string()));
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // Once untimed: a hit's environment is not all of the build's (kbuild exports more), so
    // pik's first call may store the entry the timed ones hit.
    for (_, who, cwd, line) in &runs {
        time_hit(&b, *who, cwd, line);
    }
    for _ in 0..hit_calls {
        for (name, who, cwd, line) in &runs {
            times
                .entry(name)
                .or_default()
                .push(time_hit(&b, *who, cwd, line));
        }
    }
    let per_hit: BTreeMap<&str, (f64, f64, f64)> =
        times.iter().map(|(k, v)| (*k, stats(v))).collect();
    let mut instructions = BTreeMap::new();
    for (name, who, cwd, line) in &runs {
        if *who == Who::Plain {
            continue;
        }
        let vg = format!("valgrind --tool=callgrind --callgrind-out-file=/dev/null {line}");
        let log = dir.join("callgrind-session.log");
        let _ = std::fs::remove_file(&log);
        let o = hit_command(&b, *who, cwd, &vg)
            .env("PIK_SESSION_LOG", &log)
            .output();
        // pik says whether this was a hit; a count of anything else is not reported as one.
        let hit =
            *who != Who::Pik || std::fs::read_to_string(&log).is_ok_and(|t| t.starts_with("h "));
        if let Ok(o) = o {
            let text = String::from_utf8_lossy(&o.stderr).to_string();
            if let Some(n) = text.lines().find_map(|l| l.split("Collected : ").nth(1)) {
                let n = n.trim().to_string();
                instructions.insert(*name, if hit { n } else { format!("{n} (not a hit)") });
            }
        }
    }

    println!(
        "\n## Object cache, mini bcm2712 (make -j2 {})\n",
        b.targets.join(" ")
    );
    let plain = cold_t.get("plain make").map(|v| stats(v).0);
    // Every ccache mode's warm times, pair by pair.
    let ccache_runs: Vec<&Vec<f64>> = warm_t
        .iter()
        .filter(|(k, _)| k.starts_with("ccache"))
        .map(|(_, v)| v)
        .collect();
    let ccache_warm = ccache_runs
        .iter()
        .map(|v| stats(v).0)
        .fold(f64::INFINITY, f64::min);
    println!("| contender | cold median (min–max) s | cold / plain | warm median (min–max) s | warm / best ccache warm | cache on disk (apparent) |");
    println!("|---|---|---|---|---|---|");
    for &who in &contenders {
        let n = who.name();
        let c = cold_t.get(n).map(|v| stats(v));
        let w = warm_t.get(n).map(|v| stats(v));
        let fmt = |s: Option<(f64, f64, f64)>| {
            s.map(|(m, lo, hi)| format!("{m:.1} ({lo:.1}–{hi:.1})"))
                .unwrap_or_else(|| "–".into())
        };
        let ratio_c = match (c, plain) {
            (Some((m, _, _)), Some(p)) => format!("{:.3}", m / p),
            _ => "–".into(),
        };
        let ratio_w = w
            .map(|(m, _, _)| format!("{:.3}", m / ccache_warm))
            .unwrap_or_else(|| "–".into());
        let size = sizes
            .get(n)
            .filter(|_| who != Who::Plain)
            .map(|(d, a)| format!("{:.1} MB ({:.1} MB)", *d as f64 / 1e6, *a as f64 / 1e6))
            .unwrap_or_else(|| "–".into());
        println!(
            "| {n} | {} | {ratio_c} | {} | {ratio_w} | {size} |",
            fmt(c),
            fmt(w)
        );
    }
    // The cold goal's ratio pair by pair too (both builds of a pair ran minutes apart).
    if let (Some(p), Some(k)) = (cold_t.get("plain make"), cold_t.get("pik")) {
        let r: Vec<f64> = p.iter().zip(k).map(|(p, k)| k / p).collect();
        let (m, lo, hi) = stats(&r);
        let each: Vec<String> = r.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "\npik cold / plain make, pair by pair: median {m:.3} (min {lo:.3}, max {hi:.3}): {}",
            each.join(", ")
        );
    }
    // And the warm goal's: pik against the faster ccache of the same pair.
    if let (Some(k), false) = (warm_t.get("pik"), ccache_runs.is_empty()) {
        let r: Vec<f64> = k
            .iter()
            .enumerate()
            .map(|(i, k)| {
                k / ccache_runs
                    .iter()
                    .map(|v| v[i])
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let (m, lo, hi) = stats(&r);
        let each: Vec<String> = r.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "pik warm / the pair's faster ccache warm, pair by pair: median {m:.3} (min {lo:.3}, max {hi:.3}): {}; store pages at warm start: {:?}",
            each.join(", "),
            b.store_pages
        );
    }
    println!("\n| one hit of kernel/fork.o ({hit_calls} calls, via sh -c) | median ms | min–max ms | instructions (callgrind) |");
    println!("|---|---|---|---|");
    for (n, (m, lo, hi)) in &per_hit {
        let ir = instructions.get(n).cloned().unwrap_or_else(|| "–".into());
        println!("| {n} | {m:.2} | {lo:.2}–{hi:.2} | {ir} |");
    }
    let floor = per_hit[TRUE_FLOOR].0;
    for &who in &hitters {
        println!(
            "{}: own cost per hit {:.2} ms (median above the /bin/true floor)",
            who.name(),
            per_hit[who.name()].0 - floor
        );
    }
    for (name, sum) in b.summaries.borrow().iter() {
        println!(
            "pik {name}: {sum}; uncacheable by reason {:?}",
            sum.uncacheable
        );
    }
    let json = serde_json::json!({
        "pik_cache_outcome": b.summaries.borrow().iter().cloned().collect::<BTreeMap<_, _>>(),
        "targets": b.targets, "pairs": pairs,
        "store_pages_at_warm_start": format!("{:?}", b.store_pages),
        "cold_s": cold_t, "warm_s": warm_t,
        "cache_disk_bytes": sizes.iter().map(|(k, v)| (k.to_string(), v.0)).collect::<BTreeMap<_, _>>(),
        "cache_apparent_bytes": sizes.iter().map(|(k, v)| (k.to_string(), v.1)).collect::<BTreeMap<_, _>>(),
        "hit_ms_median_min_max": per_hit,
        "hit_instructions": instructions,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
}
