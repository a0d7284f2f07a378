//! `pik nix-builder`: pik as the builder of a Nix derivation (`nix/kernel.nix` in the repo).
//!
//! Settings come from the derivation's attributes: with `__structuredAttrs` from `.attrs.json`
//! (`$NIX_ATTRS_JSON_FILE`, or `$NIX_BUILD_TOP/.attrs.json` where Nix 2.8 points the variable at a
//! host path the sandbox does not have), otherwise from the environment. Outputs are `out` and,
//! when the derivation declares it, `dev`. pik honours `NIX_BUILD_CORES` (0 = every core),
//! works only under `NIX_BUILD_TOP`, never writes `$HOME` (`/homeless-shelter`), and needs no
//! network unless the derivation names build hosts.
//!
//! Caching: a build sandbox sees no pik cache unless the machine's administrator exposes one at
//! [`ADMIN_CACHE`] (`extra-sandbox-paths = /var/cache/pik`, as NixOS does for ccache). With it,
//! the memo and the object cache work as in `pik build`; without it, both are off, since a
//! cache that dies with the sandbox cannot pay for itself.
//!
//! Distribution: off unless the derivation names builders (`hosts`, distcc's host syntax;
//! `strictRemote`). Builders are reached from the build's own network namespace, which Nix's
//! sandbox leaves with loopback only: such a build needs `__noChroot` (with `sandbox = relaxed`)
//! or `sandbox = false`, and pik refuses named hosts it could never reach rather than compile
//! everything here after a refused connection per host. Remote objects are checked against the
//! local compiler like in `pik build`, so the outputs are the same either way.

use crate::build::progress::Reporter;
use crate::build::{self, Options};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an administrator exposes a persistent pik cache to build sandboxes.
pub const ADMIN_CACHE: &str = "/var/cache/pik";

/// The derivation's attributes, structured or from the environment.
#[derive(Debug)]
pub enum Attrs {
    /// `.attrs.json`.
    Structured(serde_json::Map<String, Value>),
    /// Plain environment variables (Nix turns every attribute into one).
    Env(BTreeMap<String, String>),
}

impl Attrs {
    /// Reads the attributes of the build running under `top` (`$NIX_BUILD_TOP`).
    pub fn load(top: &Path, env: &BTreeMap<String, String>) -> Result<Attrs> {
        let candidates = env
            .get("NIX_ATTRS_JSON_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain([top.join(".attrs.json")]);
        for p in candidates {
            if let Ok(bytes) = crate::fsutil::read_regular(&p, crate::fsutil::TEXT_LIMIT, false) {
                let v: Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not JSON", p.display()))?;
                let Value::Object(map) = v else {
                    bail!("{} is not a JSON object", p.display());
                };
                return Ok(Attrs::Structured(map));
            }
        }
        if env.contains_key("__json") {
            bail!(
                "the derivation uses structured attributes but neither $NIX_ATTRS_JSON_FILE nor \
                 {}/.attrs.json can be read",
                top.display()
            );
        }
        Ok(Attrs::Env(env.clone()))
    }

    /// A string attribute (absent or empty = None).
    pub fn string(&self, name: &str) -> Option<String> {
        let s = match self {
            Attrs::Structured(m) => match m.get(name)? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if *b { "1" } else { "" }.to_string(),
                _ => return None,
            },
            Attrs::Env(e) => e.get(name)?.clone(),
        };
        (!s.is_empty()).then_some(s)
    }

    /// A list attribute (a JSON list, or a whitespace-separated string as Nix passes lists in
    /// the environment).
    pub fn list(&self, name: &str) -> Vec<String> {
        match self {
            Attrs::Structured(m) => match m.get(name) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => self.string(name).map(split_words).unwrap_or_default(),
            },
            Attrs::Env(_) => self.string(name).map(split_words).unwrap_or_default(),
        }
    }

    /// A boolean attribute (Nix passes `true` as "1" and `false` as "" in the environment).
    pub fn flag(&self, name: &str, default: bool) -> bool {
        match self {
            Attrs::Structured(m) if matches!(m.get(name), Some(Value::Bool(_))) => {
                m[name].as_bool().unwrap_or(default)
            }
            _ => match self.string(name) {
                Some(s) => matches!(s.as_str(), "1" | "true" | "yes"),
                None if self.has(name) => false,
                None => default,
            },
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Attrs::Structured(m) => m.contains_key(name),
            Attrs::Env(e) => e.contains_key(name),
        }
    }

    /// Output name → store path.
    pub fn outputs(&self) -> Result<BTreeMap<String, PathBuf>> {
        let outs: BTreeMap<String, PathBuf> = match self {
            Attrs::Structured(m) => match m.get("outputs") {
                Some(Value::Object(o)) => o
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), PathBuf::from(v.as_str()?))))
                    .collect(),
                _ => bail!(".attrs.json has no \"outputs\" map"),
            },
            Attrs::Env(e) => {
                let names = e.get("outputs").map(String::as_str).unwrap_or("out");
                names
                    .split_whitespace()
                    .map(|n| {
                        e.get(n)
                            .map(|p| (n.to_string(), PathBuf::from(p)))
                            .with_context(|| format!("output {n} has no ${n} in the environment"))
                    })
                    .collect::<Result<_>>()?
            }
        };
        if !outs.contains_key("out") {
            bail!("the derivation has no \"out\" output");
        }
        if let Some(other) = outs.keys().find(|k| *k != "out" && *k != "dev") {
            bail!("pik writes the outputs \"out\" and \"dev\", not {other:?}: fix the derivation's outputs");
        }
        Ok(outs)
    }
}

fn split_words(s: String) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// `NIX_BUILD_CORES` as a job count: 0 or absent means every core.
pub fn jobs(cores: Option<&str>) -> Result<usize> {
    let n: usize = match cores.filter(|s| !s.is_empty()) {
        Some(s) => s
            .trim()
            .parse()
            .with_context(|| format!("NIX_BUILD_CORES={s:?} is not a number"))?,
        None => 0,
    };
    Ok(if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    })
}

/// A directory this process can create files in.
fn writable_dir(p: &Path) -> bool {
    p.is_dir() && tempfile::tempfile_in(p).is_ok()
}

/// Runs the build described by the derivation and writes its outputs.
pub fn run() -> Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let top = env
        .get("NIX_BUILD_TOP")
        .or_else(|| env.get("TMPDIR"))
        .map(PathBuf::from)
        .context(
            "pik nix-builder runs as a Nix derivation's builder (NIX_BUILD_TOP is unset); \
             outside Nix use pik build",
        )?;
    let attrs = Attrs::load(&top, &env)?;
    let outputs = attrs.outputs()?;
    for (name, dest) in &outputs {
        // Nix creates no output before the builder runs; anything there is not pik's to replace.
        if dest.symlink_metadata().is_ok() || !dest.is_absolute() {
            bail!(
                "output {name} ({}) is not a fresh absolute path: pik writes a derivation's \
                 outputs only where nothing exists yet",
                dest.display()
            );
        }
    }
    // Structured attributes are not exported; the ones that shape the environment are applied here.
    for var in ["PATH", "SOURCE_DATE_EPOCH"] {
        if let (Attrs::Structured(_), Some(v)) = (&attrs, attrs.string(var)) {
            std::env::set_var(var, v);
        }
    }
    let admin = Path::new(ADMIN_CACHE);
    let cached = writable_dir(admin);
    let cache = if cached {
        admin.to_path_buf()
    } else {
        top.join("pik-cache")
    };
    std::env::set_var("PIK_CACHE_DIR", &cache);
    std::env::remove_var(crate::wrapper::STORE_ENV);
    let staging = top.join("pik-out");
    let opt = options(
        &attrs,
        &env,
        &top,
        &staging,
        cached,
        outputs.contains_key("dev"),
    )?;
    if !opt.hosts.is_empty() {
        check_network(&opt.hosts, &read_net_devices())?;
    }
    eprintln!(
        "pik: nix-builder: target {} profile {}, -j{}, {}, {}",
        opt.target,
        opt.profile.as_deref().unwrap_or("(default)"),
        opt.jobs.unwrap_or(1),
        match (cached, opt.hosts.is_empty()) {
            (true, _) => format!("cache {ADMIN_CACHE} (memo and objects)"),
            (false, true) => format!("no cache ({ADMIN_CACHE} is not exposed to the sandbox)"),
            // Distributed compiles go through the object cache's wrapper: a private one.
            (false, false) =>
                "a private object cache for this build (distribution needs it)".into(),
        },
        if opt.hosts.is_empty() {
            "no build hosts".to_string()
        } else {
            format!("build hosts {}", opt.hosts.join(" "))
        }
    );
    let mut rep = Reporter::with_mode(crate::build::progress::Mode::Plain);
    let m = build::build(&opt, &mut rep)
        .inspect_err(|e| rep.fail(e))?
        .context("the build made no output")?;
    for (name, dest) in &outputs {
        let (src, want) = match name.as_str() {
            "out" => (staging.join("out"), Some(&m.nar.hex)),
            _ => (staging.join("dev"), m.dev.as_ref().map(|d| &d.nar.hex)),
        };
        copy_output(name, &src, dest, want.map(String::as_str))?;
    }
    Ok(())
}

/// The build the derivation's attributes describe, staged under `staging`.
fn options(
    attrs: &Attrs,
    env: &BTreeMap<String, String>,
    top: &Path,
    staging: &Path,
    cached: bool,
    dev: bool,
) -> Result<Options> {
    let paths = |name: &str| attrs.list(name).into_iter().map(PathBuf::from).collect();
    let hosts = attrs.list("hosts");
    Ok(Options {
        target: attrs
            .string("target")
            .context("the derivation has no \"target\" attribute (e.g. target = \"bcm2712\")")?,
        profile: attrs.string("profile"),
        source: Some(PathBuf::from(attrs.string("src").context(
            "the derivation has no \"src\" attribute (a kernel tarball or tree)",
        )?)),
        out: Some(staging.join("out")),
        build_dir: Some(top.join("pik-build")),
        fragments: paths("fragments"),
        set: attrs.list("set"),
        patches: paths("patches"),
        jobs: Some(jobs(env.get("NIX_BUILD_CORES").map(String::as_str))?),
        no_nixos: !attrs.flag("nixos", true),
        no_cache: !cached && hosts.is_empty(),
        no_memo: !cached,
        dev: Some(staging.join("dev")),
        no_dev: !dev,
        strict_remote: attrs.flag("strictRemote", false),
        hosts,
        ..Options::default()
    })
}

/// The network interfaces of this process's network namespace (`/proc/net/dev`).
fn read_net_devices() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// Fails when the derivation names remote builders but the build has no network beyond
/// loopback (`devices`): Nix's sandbox gives a derivation a network namespace of its own.
fn check_network(hosts: &[String], devices: &[String]) -> Result<()> {
    let specs = crate::dist::parse_hosts(hosts)
        .context("the derivation's \"hosts\" attribute (distcc's host syntax)")?;
    let remote = specs.iter().any(|h| !h.is_local());
    // An unreadable list (no /proc) proves nothing: the build's fallbacks will say.
    if remote && !devices.is_empty() && devices.iter().all(|d| d == "lo") {
        bail!(
            "the derivation names build hosts ({}) but this build has no network: Nix's sandbox \
             gives a derivation only loopback. Allow it with `sandbox = relaxed` in nix.conf (the \
             derivation sets __noChroot when it names hosts, as nix/kernel.nix does) or \
             `sandbox = false`, or drop \"hosts\" to build here",
            hosts.join(" ")
        );
    }
    Ok(())
}

/// Copies a built tree to the output path Nix gave and checks it hashes to what pik built.
fn copy_output(name: &str, src: &Path, dest: &Path, want: Option<&str>) -> Result<()> {
    crate::fsutil::copy_tree(src, dest)
        .with_context(|| format!("writing output {name} to {}", dest.display()))?;
    let store_dir = dest.parent().unwrap_or(Path::new("/nix/store"));
    let nar = crate::nix::nar::info(
        dest,
        &crate::nix::nar::default_name(dest)?,
        &store_dir.display().to_string(),
    )?;
    if Some(nar.hex.as_str()) != want {
        bail!(
            "output {name} at {} does not hash to what pik built (narHash {}): the copy \
             into the store went wrong",
            dest.display(),
            nar.nar_hash
        );
    }
    eprintln!(
        "pik: output {name} = {} narHash {} ({})",
        dest.display(),
        nar.nar_hash,
        nar.sri
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_from_json_and_from_the_environment() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".attrs.json"),
            r#"{"outputs":{"out":"/nix/store/a-k","dev":"/nix/store/b-k-dev"},
                "target":"bcm2712","set":["CONFIG_A=y","CONFIG_B=n"],"nixos":false}"#,
        )
        .unwrap();
        // Nix 2.8 points NIX_ATTRS_JSON_FILE at a host path the sandbox does not have.
        let env = BTreeMap::from([(
            "NIX_ATTRS_JSON_FILE".to_string(),
            "/nonexistent/.attrs.json".to_string(),
        )]);
        let a = Attrs::load(d.path(), &env).unwrap();
        assert_eq!(a.outputs().unwrap()["dev"], Path::new("/nix/store/b-k-dev"));
        assert_eq!(a.string("target").as_deref(), Some("bcm2712"));
        assert_eq!(a.list("set"), ["CONFIG_A=y", "CONFIG_B=n"]);
        assert!(!a.flag("nixos", true));
        assert!(a.flag("absent", true));

        let e = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> = [
            ("outputs", "out"),
            ("out", "/nix/store/c-k"),
            ("set", "CONFIG_A=y CONFIG_B=n"),
            ("nixos", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = Attrs::load(e.path(), &env).unwrap();
        assert_eq!(a.outputs().unwrap().len(), 1);
        assert_eq!(a.list("set"), ["CONFIG_A=y", "CONFIG_B=n"]);
        assert!(!a.flag("nixos", true));
        let bad = BTreeMap::from([("__json".to_string(), "{}".to_string())]);
        assert!(Attrs::load(e.path(), &bad).is_err());
    }

    #[test]
    fn hosts_need_a_network_beyond_loopback() {
        let lo = vec!["lo".to_string()];
        let eth = vec!["lo".to_string(), "eth0".to_string()];
        let pi = vec!["pi5a/4,lzo".to_string()];
        let err = check_network(&pi, &lo).unwrap_err().to_string();
        assert!(
            err.contains("pi5a/4,lzo") && err.contains("sandbox"),
            "{err}"
        );
        assert!(check_network(&pi, &eth).is_ok());
        assert!(check_network(&pi, &[]).is_ok());
        // Only local slots: nothing to reach.
        assert!(check_network(&["localhost/2".to_string()], &lo).is_ok());
        let bad = check_network(&["pi5a,auth".to_string()], &eth).unwrap_err();
        assert!(format!("{bad:#}").contains("hosts"), "{bad:#}");
    }

    #[test]
    fn hosts_and_strict_remote_come_from_the_derivation() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".attrs.json"),
            r#"{"outputs":{"out":"/nix/store/a-k"},"target":"bcm2712","src":"/nix/store/s",
                "hosts":["10.0.0.2/2,lzo","pi@pi5b"],"strictRemote":true}"#,
        )
        .unwrap();
        let a = Attrs::load(d.path(), &BTreeMap::new()).unwrap();
        let o = options(&a, &BTreeMap::new(), d.path(), d.path(), false, false).unwrap();
        assert_eq!(o.hosts, ["10.0.0.2/2,lzo", "pi@pi5b"]);
        assert!(o.strict_remote);
        // No administrator's cache, but distribution needs the wrapper: a private cache.
        assert!(!o.no_cache && o.no_memo);

        std::fs::write(
            d.path().join(".attrs.json"),
            r#"{"outputs":{"out":"/nix/store/a-k"},"target":"bcm2712","src":"/nix/store/s"}"#,
        )
        .unwrap();
        let a = Attrs::load(d.path(), &BTreeMap::new()).unwrap();
        let o = options(&a, &BTreeMap::new(), d.path(), d.path(), false, false).unwrap();
        assert!(o.hosts.is_empty() && !o.strict_remote && o.no_cache);
    }

    #[test]
    fn build_cores() {
        assert_eq!(jobs(Some("3")).unwrap(), 3);
        assert!(jobs(Some("0")).unwrap() >= 1);
        assert!(jobs(None).unwrap() >= 1);
        assert!(jobs(Some("x")).is_err());
    }
}
