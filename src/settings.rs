//! Settings: each one resolved from, first to last, a command-line flag, a `PIK_*` environment
//! variable, the user's config file and a built-in default, remembering which of them gave it.
//!
//! The config file is `$PIK_CONFIG`, else `$XDG_CONFIG_HOME/pik/config.toml`, else
//! `~/.config/pik/config.toml`:
//!
//! ```toml
//! [cache]
//! dir = "~/.cache/pik"        # PIK_CACHE_DIR
//! objects = "/fast/pik-objs"  # PIK_OBJECT_CACHE_DIR; default <dir>/objects
//! max_size = "20G"            # PIK_CACHE_MAX_SIZE, --max-size; or a number of bytes
//! shared = false              # PIK_CACHE_SHARED
//!
//! [build]
//! target = "bcm2712"          # PIK_TARGET, --target
//! profile = "mini"            # PIK_PROFILE, --profile
//! jobs = 8                    # PIK_JOBS, -j
//!
//! [hosts]
//! list = ["builder1/8", "builder2/4"]  # PIK_HOSTS (space-separated)
//!
//! [remote_cache]
//! url = "http://cache.example:8080"    # PIK_REMOTE_CACHE_URL
//! ```
//!
//! The per-compile wrapper never reads the file (see [`environment_only`]): it runs thousands
//! of times per build, and `pik build` hands it the settings it needs in its environment.

use crate::store;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Names the config file, instead of the XDG location.
pub const CONFIG_ENV: &str = "PIK_CONFIG";

/// The values the command line gave; None where it said nothing.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--max-size`, unparsed.
    pub max_size: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `-j`/`--jobs`.
    pub jobs: Option<usize>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Origin {
    /// A command-line flag.
    Flag {
        /// Its name (`--jobs`).
        flag: &'static str,
    },
    /// An environment variable.
    Env {
        /// Its name (`PIK_JOBS`).
        var: &'static str,
    },
    /// The config file.
    File {
        /// The file.
        path: PathBuf,
        /// `table.key` in it.
        key: &'static str,
    },
    /// pik's built-in default.
    Default {
        /// What the default is, when the value alone does not say (`number of CPUs`).
        note: &'static str,
    },
}

impl fmt::Display for Origin {
    /// `flag --jobs`, `env PIK_JOBS`, `file /path`, `default (number of CPUs)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag { flag } => write!(f, "flag {flag}"),
            Origin::Env { var } => write!(f, "env {var}"),
            Origin::File { path, .. } => write!(f, "file {}", path.display()),
            Origin::Default { note: "" } => write!(f, "default"),
            Origin::Default { note } => write!(f, "default ({note})"),
        }
    }
}

impl Origin {
    /// Where the value was written, for an error about it: `--target`, `$PIK_TARGET`,
    /// `` `target` under [build] in /path ``.
    pub fn whence(&self) -> String {
        match self {
            Origin::Flag { flag } => flag.to_string(),
            Origin::Env { var } => format!("${var}"),
            Origin::File { path, key } => {
                let (table, name) = key.split_once('.').unwrap_or(("", key));
                format!("`{name}` under [{table}] in {}", path.display())
            }
            Origin::Default { .. } => "pik's default".to_string(),
        }
    }
}

/// One resolved setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The value in force.
    pub value: T,
    /// Where it came from.
    #[serde(flatten)]
    pub origin: Origin,
}

/// A setting's names: its key in the file, its flag (if any) and its environment variable.
#[derive(Debug, Clone, Copy)]
struct Spec {
    key: &'static str,
    flag: &'static str,
    var: &'static str,
}

const CACHE_DIR: Spec = Spec {
    key: "cache.dir",
    flag: "--cache-dir",
    var: "PIK_CACHE_DIR",
};
const OBJECTS: Spec = Spec {
    key: "cache.objects",
    flag: "",
    var: "PIK_OBJECT_CACHE_DIR",
};
const MAX_SIZE: Spec = Spec {
    key: "cache.max_size",
    flag: "--max-size",
    var: "PIK_CACHE_MAX_SIZE",
};
const SHARED: Spec = Spec {
    key: "cache.shared",
    flag: "",
    var: "PIK_CACHE_SHARED",
};
const TARGET: Spec = Spec {
    key: "build.target",
    flag: "--target",
    var: "PIK_TARGET",
};
const PROFILE: Spec = Spec {
    key: "build.profile",
    flag: "--profile",
    var: "PIK_PROFILE",
};
const JOBS: Spec = Spec {
    key: "build.jobs",
    flag: "--jobs",
    var: "PIK_JOBS",
};
const HOSTS: Spec = Spec {
    key: "hosts.list",
    flag: "",
    var: "PIK_HOSTS",
};
const REMOTE_URL: Spec = Spec {
    key: "remote_cache.url",
    flag: "",
    var: "PIK_REMOTE_CACHE_URL",
};

/// The config file as written. Every table and key may be left out; an unknown one is an
/// error, so a misspelt key is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    build: RawBuild,
    #[serde(default)]
    hosts: RawHosts,
    #[serde(default)]
    remote_cache: RawRemoteCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<String>,
    objects: Option<String>,
    // A size ("5G") or a number of bytes: checked after parsing, so the error names the key.
    max_size: Option<toml::Value>,
    shared: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    target: Option<String>,
    profile: Option<String>,
    // Signed, so `jobs = -1` gets pik's message rather than a type error.
    jobs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHosts {
    list: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteCache {
    url: Option<String>,
}

/// The config file's values, checked.
#[derive(Debug, Default, Clone, PartialEq)]
struct FileValues {
    cache_dir: Option<PathBuf>,
    objects: Option<PathBuf>,
    max_size: Option<u64>,
    shared: Option<bool>,
    target: Option<String>,
    profile: Option<String>,
    jobs: Option<usize>,
    hosts: Option<Vec<String>>,
    remote_url: Option<String>,
}

/// A config file is a few lines: a larger one is refused rather than read whole into memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Parses and checks the text of the config file `path`.
fn parse_file(text: &str, path: &Path) -> Result<FileValues> {
    let raw: RawFile =
        toml::from_str(text).with_context(|| format!("config file {}", path.display()))?;
    let bad = |spec: Spec, what: String| {
        let (table, name) = spec.key.split_once('.').unwrap_or(("", spec.key));
        anyhow::anyhow!("config file {}: [{table}] {name}: {what}", path.display())
    };
    let dir = |spec: Spec, v: Option<String>| -> Result<Option<PathBuf>> {
        v.map(|v| file_path(&v).map_err(|e| bad(spec, e)))
            .transpose()
    };
    let name = |spec: Spec, v: Option<String>| -> Result<Option<String>> {
        match v {
            Some(v) if v.trim().is_empty() => Err(bad(spec, "is empty".into())),
            v => Ok(v),
        }
    };
    let max_size = match raw.cache.max_size {
        None => None,
        Some(toml::Value::Integer(n)) if n >= 0 => Some(n as u64),
        Some(toml::Value::String(s)) => {
            Some(store::parse_size(&s).map_err(|e| bad(MAX_SIZE, format!("{e:#}")))?)
        }
        Some(v) => {
            return Err(bad(
                MAX_SIZE,
                format!(
                    "{v} is not a size: write one such as \"5G\" or \"500M\", or a number of bytes"
                ),
            ))
        }
    };
    let jobs = match raw.build.jobs {
        None => None,
        Some(n) if n >= 1 => Some(usize::try_from(n).map_err(|e| bad(JOBS, e.to_string()))?),
        Some(n) => {
            return Err(bad(
                JOBS,
                format!("{n}: must be at least 1 (leave it out for the number of CPUs)"),
            ))
        }
    };
    Ok(FileValues {
        cache_dir: dir(CACHE_DIR, raw.cache.dir)?,
        objects: dir(OBJECTS, raw.cache.objects)?,
        max_size,
        shared: raw.cache.shared,
        target: name(TARGET, raw.build.target)?,
        profile: name(PROFILE, raw.build.profile)?,
        jobs,
        hosts: raw.hosts.list,
        remote_url: name(REMOTE_URL, raw.remote_cache.url)?,
    })
}

/// A directory named in the config file: absolute, or under the home directory (`~/…`). A
/// relative one is refused, as it would depend on where pik happens to run.
fn file_path(v: &str) -> Result<PathBuf, String> {
    let p = if let Some(rest) = v.strip_prefix("~/") {
        crate::paths::home()
            .ok_or_else(|| format!("{v:?} starts with ~/ but HOME is not set"))?
            .join(rest)
    } else {
        PathBuf::from(v)
    };
    if !p.is_absolute() {
        return Err(format!("{v:?} is not an absolute path (write /… or ~/…)"));
    }
    Ok(p)
}

/// Reads the config file, bounded: None when it is the default location and absent.
fn read_file(path: &Path, explicit: bool) -> Result<Option<FileValues>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            let why = if explicit {
                format!(" (named by ${CONFIG_ENV}; unset it or create the file)")
            } else {
                String::new()
            };
            return Err(anyhow::Error::new(e)
                .context(format!("reading config file {}{why}", path.display())));
        }
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading config file {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "config file {} is larger than {} KiB: not a pik config file",
            path.display(),
            MAX_FILE_BYTES >> 10
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("config file {} is not UTF-8", path.display()))?;
    parse_file(&text, path).map(Some)
}

static FLAGS: OnceLock<Flags> = OnceLock::new();
static ENV_ONLY: AtomicBool = AtomicBool::new(false);

/// Records the command line's flags for the whole process, so settings asked for deep in the
/// library (the cache dir, inside a build) follow them too. The first call wins.
pub fn set_flags(flags: Flags) {
    let _ = FLAGS.set(flags);
}

/// From now on this process reads no config file: flags, environment and defaults only. For
/// the per-compile wrapper, which runs once per compile (reading and parsing a file would be
/// paid thousands of times per build), and the Nix builder, whose result may not depend on a
/// user's file. Costs one atomic store.
pub fn environment_only() {
    ENV_ONLY.store(true, Ordering::Relaxed);
}

/// The config file: where it is (or would be) and what it says.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// `$PIK_CONFIG`, else the XDG location; None without a home directory, or when the
    /// process reads no config file ([`environment_only`]).
    pub path: Option<PathBuf>,
    /// Whether it exists (and was read).
    pub present: bool,
    values: FileValues,
}

impl ConfigFile {
    /// Finds and reads the config file. An absent file at the default location is no error;
    /// one named by `$PIK_CONFIG` must exist.
    pub fn load() -> Result<ConfigFile> {
        if ENV_ONLY.load(Ordering::Relaxed) {
            return Ok(ConfigFile::default());
        }
        let (path, explicit) = match std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            Some(p) => (Some(PathBuf::from(p)), true),
            None => (crate::paths::default_config_file(), false),
        };
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let values = read_file(&path, explicit)?;
        Ok(ConfigFile {
            present: values.is_some(),
            values: values.unwrap_or_default(),
            path: Some(path),
        })
    }

    /// The path for messages, or what to do without one.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("the config file (set ${CONFIG_ENV}, or HOME)"),
        }
    }
}

/// The settings of this run: flags, environment and config file, resolved setting by setting
/// (an unusable `$PIK_JOBS` does not stop `pik cache stats`; an unusable config file is an
/// error as soon as any setting is asked for, since it is read whole).
#[derive(Debug, Clone)]
pub struct Settings {
    flags: Flags,
    file: ConfigFile,
}

/// The settings with the flags recorded by [`set_flags`].
pub fn load() -> Result<Settings> {
    Settings::load_with(FLAGS.get().cloned().unwrap_or_default())
}

/// The cache dir: `--cache-dir` > `$PIK_CACHE_DIR` > `[cache] dir` > `$XDG_CACHE_HOME/pik`
/// or `~/.cache/pik`.
pub fn cache_dir() -> Result<PathBuf> {
    Ok(load()?.cache_dir()?.value)
}

/// The object store's directory: `$PIK_OBJECT_CACHE_DIR` > `[cache] objects` >
/// `<cache dir>/objects`.
pub fn object_store_dir() -> Result<PathBuf> {
    Ok(load()?.object_store_dir()?.value)
}

/// Whether the object store is shared on purpose by users who trust each other:
/// `$PIK_CACHE_SHARED` > `[cache] shared` > no.
pub fn shared() -> Result<bool> {
    Ok(load()?.shared()?.value)
}

/// An environment variable, None when unset or empty (as pik has always read them).
fn env(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|v| !v.is_empty())
}

fn env_str(v: &OsStr) -> Result<String> {
    v.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{v:?} is not UTF-8"))
}

/// `PIK_JOBS`, `-j`: at least 1.
pub fn parse_jobs(s: &str) -> Result<usize> {
    match s.trim().parse::<usize>() {
        Ok(0) => bail!("{s:?}: the number of parallel jobs must be at least 1"),
        Ok(n) => Ok(n),
        Err(e) => bail!("{s:?} is not a number of jobs: {e}"),
    }
}

/// The first of flag, environment, file and default that has a value. The environment value
/// is parsed only when it is the one used.
fn pick<T>(
    spec: Spec,
    flag: Option<T>,
    env_value: Option<OsString>,
    parse_env: impl FnOnce(&OsStr) -> Result<T>,
    file: Option<(T, &Path)>,
    default: impl FnOnce() -> Result<(T, &'static str)>,
) -> Result<Setting<T>> {
    if let Some(value) = flag {
        let origin = Origin::Flag { flag: spec.flag };
        return Ok(Setting { value, origin });
    }
    if let Some(v) = env_value {
        let value = parse_env(&v).with_context(|| format!("in ${}", spec.var))?;
        let origin = Origin::Env { var: spec.var };
        return Ok(Setting { value, origin });
    }
    if let Some((value, path)) = file {
        let origin = Origin::File {
            path: path.to_path_buf(),
            key: spec.key,
        };
        return Ok(Setting { value, origin });
    }
    let (value, note) = default()?;
    Ok(Setting {
        value,
        origin: Origin::Default { note },
    })
}

impl Settings {
    /// The settings with these flags (and this process's environment and config file).
    pub fn load_with(flags: Flags) -> Result<Settings> {
        Ok(Settings {
            flags,
            file: ConfigFile::load()?,
        })
    }

    /// These settings with `--max-size` given as `size` (for the commands that take it).
    pub fn with_max_size_flag(mut self, size: &str) -> Settings {
        self.flags.max_size = Some(size.to_owned());
        self
    }

    /// The config file consulted.
    pub fn config_file(&self) -> &ConfigFile {
        &self.file
    }

    /// A value from the file, with the file's path.
    fn in_file<T>(&self, v: Option<T>) -> Option<(T, &Path)> {
        v.zip(self.file.path.as_deref())
    }

    /// See [`cache_dir`].
    pub fn cache_dir(&self) -> Result<Setting<PathBuf>> {
        pick(
            CACHE_DIR,
            self.flags.cache_dir.clone(),
            env(CACHE_DIR.var),
            |v| Ok(PathBuf::from(v)),
            self.in_file(self.file.values.cache_dir.clone()),
            || match crate::paths::default_cache_dir() {
                Some(d) => Ok((d, "$XDG_CACHE_HOME/pik or ~/.cache/pik")),
                None => bail!(
                    "no cache directory: pass --cache-dir, set PIK_CACHE_DIR, write `dir = \"…\"` \
                     under [cache] in {}, or set XDG_CACHE_HOME or HOME",
                    self.file.describe()
                ),
            },
        )
    }

    /// See [`object_store_dir`].
    pub fn object_store_dir(&self) -> Result<Setting<PathBuf>> {
        pick(
            OBJECTS,
            None,
            env(OBJECTS.var),
            |v| Ok(PathBuf::from(v)),
            self.in_file(self.file.values.objects.clone()),
            || {
                Ok((
                    self.cache_dir()?.value.join("objects"),
                    "<cache dir>/objects",
                ))
            },
        )
    }

    /// The object store's size limit in bytes: `--max-size` > `$PIK_CACHE_MAX_SIZE` >
    /// `[cache] max_size` > 5 GiB.
    pub fn max_size(&self) -> Result<Setting<u64>> {
        let flag = match &self.flags.max_size {
            Some(s) => Some(store::parse_size(s).context("in --max-size")?),
            None => None,
        };
        pick(
            MAX_SIZE,
            flag,
            env(MAX_SIZE.var),
            |v| store::parse_size(&env_str(v)?),
            self.in_file(self.file.values.max_size),
            || Ok((store::DEFAULT_MAX_SIZE, "")),
        )
    }

    /// See [`shared`]. In the environment, as the wrapper reads it: anything but `0` is yes.
    pub fn shared(&self) -> Result<Setting<bool>> {
        pick(
            SHARED,
            None,
            env(SHARED.var),
            |v| Ok(v != "0"),
            self.in_file(self.file.values.shared),
            || Ok((false, "")),
        )
    }

    /// The target to build: `--target` > `$PIK_TARGET` > `[build] target`; None when
    /// nothing names one.
    pub fn target(&self) -> Result<Setting<Option<String>>> {
        pick(
            TARGET,
            self.flags.target.clone().map(Some),
            env(TARGET.var),
            |v| Ok(Some(env_str(v)?)),
            self.in_file(self.file.values.target.clone().map(Some)),
            || Ok((None, "none")),
        )
    }

    /// [`Settings::target`], or an error that says where to name one.
    pub fn required_target(&self) -> Result<Setting<String>> {
        let t = self.target()?;
        match t.value {
            Some(value) => Ok(Setting {
                value,
                origin: t.origin,
            }),
            None => bail!(
                "no target: pass --target T, set PIK_TARGET, or `target = \"…\"` under [build] \
                 in {} (`pik targets` lists them)",
                self.file.describe()
            ),
        }
    }

    /// The profile: `--profile` > `$PIK_PROFILE` > `[build] profile`; None for the target's
    /// default profile.
    pub fn profile(&self) -> Result<Setting<Option<String>>> {
        pick(
            PROFILE,
            self.flags.profile.clone().map(Some),
            env(PROFILE.var),
            |v| Ok(Some(env_str(v)?)),
            self.in_file(self.file.values.profile.clone().map(Some)),
            || Ok((None, "the target's default profile")),
        )
    }

    /// Parallel jobs: `-j` > `$PIK_JOBS` > `[build] jobs`; None for the number of CPUs.
    pub fn jobs(&self) -> Result<Setting<Option<usize>>> {
        pick(
            JOBS,
            self.flags.jobs.map(Some),
            env(JOBS.var),
            |v| parse_jobs(&env_str(v)?).map(Some),
            self.in_file(self.file.values.jobs.map(Some)),
            || Ok((None, "number of CPUs")),
        )
    }

    /// Build hosts, distcc-style (`host/slots`, …), as written: `$PIK_HOSTS` (space-separated)
    /// > `[hosts] list` > none. Not used yet.
    pub fn hosts(&self) -> Result<Setting<Vec<String>>> {
        pick(
            HOSTS,
            None,
            env(HOSTS.var),
            |v| Ok(env_str(v)?.split_whitespace().map(str::to_owned).collect()),
            self.in_file(self.file.values.hosts.clone()),
            || Ok((Vec::new(), "none")),
        )
    }

    /// The remote object cache: `$PIK_REMOTE_CACHE_URL` > `[remote_cache] url` > none. Not
    /// used yet.
    pub fn remote_cache_url(&self) -> Result<Setting<Option<String>>> {
        pick(
            REMOTE_URL,
            None,
            env(REMOTE_URL.var),
            |v| Ok(Some(env_str(v)?)),
            self.in_file(self.file.values.remote_url.clone().map(Some)),
            || Ok((None, "none")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileValues> {
        parse_file(text, Path::new("/etc/pik.toml"))
    }

    #[test]
    fn a_full_file_parses() {
        let v = parse(
            r#"
            [cache]
            dir = "/var/cache/pik"
            objects = "/fast/objects"
            max_size = "20G"
            shared = true
            [build]
            target = "rpi5"
            profile = "mini"
            jobs = 8
            [hosts]
            list = ["a/8", "b"]
            [remote_cache]
            url = "http://cache:8080"
            "#,
        )
        .unwrap();
        assert_eq!(v.cache_dir, Some(PathBuf::from("/var/cache/pik")));
        assert_eq!(v.objects, Some(PathBuf::from("/fast/objects")));
        assert_eq!(v.max_size, Some(20 << 30));
        assert_eq!(v.shared, Some(true));
        assert_eq!(v.target.as_deref(), Some("rpi5"));
        assert_eq!(v.profile.as_deref(), Some("mini"));
        assert_eq!(v.jobs, Some(8));
        assert_eq!(v.hosts, Some(vec!["a/8".to_string(), "b".to_string()]));
        assert_eq!(v.remote_url.as_deref(), Some("http://cache:8080"));
        assert_eq!(parse("").unwrap(), FileValues::default());
        assert_eq!(
            parse("[cache]\nmax_size = 1000").unwrap().max_size,
            Some(1000)
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, needles) in [
            ("colour = 1", &["colour", "/etc/pik.toml"][..]),
            ("[cache]\nsize = \"5G\"", &["size", "/etc/pik.toml"]),
            (
                "[build]\njobs = 0",
                &["[build] jobs", "/etc/pik.toml", "at least 1"],
            ),
            ("[build]\njobs = -2", &["[build] jobs", "at least 1"]),
            ("[build]\njobs = \"four\"", &["jobs", "/etc/pik.toml"]),
            (
                "[cache]\nmax_size = \"lots\"",
                &["[cache] max_size", "/etc/pik.toml", "lots"],
            ),
            (
                "[cache]\nmax_size = true",
                &["[cache] max_size", "not a size"],
            ),
            (
                "[cache]\ndir = \"relative/dir\"",
                &["[cache] dir", "absolute"],
            ),
            ("[build]\ntarget = \"\"", &["[build] target", "empty"]),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = Path::new("/c.toml");
        let num = |v: &OsStr| Ok(env_str(v)?.parse::<u32>()?);
        let def = || Ok((0, "zero"));
        let s = pick(JOBS, Some(1), Some("2".into()), num, Some((3, file)), def).unwrap();
        assert_eq!((s.value, s.origin), (1, Origin::Flag { flag: "--jobs" }));
        let s = pick(JOBS, None, Some("2".into()), num, Some((3, file)), def).unwrap();
        assert_eq!((s.value, s.origin), (2, Origin::Env { var: "PIK_JOBS" }));
        let s = pick(JOBS, None, None, num, Some((3, file)), def).unwrap();
        let origin = Origin::File {
            path: file.into(),
            key: "build.jobs",
        };
        assert_eq!(s.origin.whence(), "`jobs` under [build] in /c.toml");
        assert_eq!((s.value, s.origin), (3, origin));
        let s = pick(JOBS, None, None, num, None, def).unwrap();
        assert_eq!(s.origin.to_string(), "default (zero)");
        // A bad environment value is an error naming the variable, unless a flag wins.
        let e = pick(JOBS, None, Some("x".into()), num, None, def).unwrap_err();
        assert!(format!("{e:#}").contains("$PIK_JOBS"), "{e:#}");
        assert!(pick(JOBS, Some(1), Some("x".into()), num, None, def).is_ok());
    }

    #[test]
    fn jobs_parse() {
        assert_eq!(parse_jobs("4").unwrap(), 4);
        assert!(parse_jobs("0").is_err());
        assert!(parse_jobs("many").is_err());
    }
}
