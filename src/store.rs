//! The object store as builds and the cache commands see it: where it is, its size limit, its
//! upkeep. (The per-compile wrapper finds it through its environment alone; see
//! [`compile_env`].)

use crate::settings;
use anyhow::{bail, Context, Result};
use pik_cache::{Sharing, Store};
use std::ffi::OsString;
use std::path::PathBuf;

/// Default size limit of the object store: 5 GiB, like ccache.
pub const DEFAULT_MAX_SIZE: u64 = 5 << 30;

/// Parses `500M`, `5G`, `5GiB`, `1.5G`, `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size (try 500M, 5G)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => bail!("{s:?}: unknown size unit {u:?} (use K, M, G or T)"),
    };
    Ok((n * mult as f64) as u64)
}

/// The store's directory (see [`settings::object_store_dir`]).
pub fn dir() -> Result<PathBuf> {
    settings::object_store_dir()
}

/// The size limit: `flag` (`--max-size`), else `$PIK_CACHE_MAX_SIZE`, else `max_size` under
/// `[cache]` in the config file, else [`DEFAULT_MAX_SIZE`].
pub fn max_size(flag: Option<&str>) -> Result<u64> {
    let mut s = settings::load()?;
    if let Some(f) = flag {
        s = s.with_max_size_flag(f);
    }
    Ok(s.max_size()?.value)
}

/// Opens the store, refused (an error) if users not trusted may write it: unless the store is
/// shared on purpose, its directory must be the user's (or root's) and writable by no one else.
pub fn open() -> Result<Store> {
    let s = settings::load()?;
    let dir = s.object_store_dir()?.value;
    let sharing = match s.shared()?.value {
        true => Sharing::Shared,
        false => Sharing::Private,
    };
    Store::open_with(&dir, sharing).map_err(|e| match pik_cache::untrusted(&e) {
        Some(u) => anyhow::anyhow!(
            "refusing the object cache: {u}; whoever can write it can plant objects in your \
             builds. Fix its owner and mode, use another cache dir (--cache-dir, PIK_CACHE_DIR, \
             or `dir` under [cache] in {}), or, if everyone who can write it is trusted, set \
             PIK_CACHE_SHARED=1 (or `shared = true` under [cache])",
            s.config_file().describe()
        ),
        None => {
            anyhow::Error::new(e).context(format!("opening the object cache at {}", dir.display()))
        }
    })
}

/// What a compile run by `pik build` needs in its environment to use the store this process
/// sees: the wrapper reads no config file, so the directory and the sharing choice go to it
/// explicitly (`PIK_OBJECT_CACHE_DIR`, and `PIK_CACHE_SHARED=1` when shared).
pub fn compile_env() -> Result<Vec<(&'static str, OsString)>> {
    let s = settings::load()?;
    let mut env = vec![(
        crate::wrapper::STORE_ENV,
        s.object_store_dir()?.value.into_os_string(),
    )];
    if s.shared()?.value {
        env.push((crate::wrapper::SHARED_ENV, "1".into()));
    }
    Ok(env)
}

/// Entries the store holds before it trains its compression dictionary: enough to learn what
/// they share (a mini kernel build stores ~1,100; a handful of `pik cc` calls never trains one).
const DICT_MIN_ENTRIES: usize = 256;

/// Upkeep after a build: trains the store's compression dictionary once there is enough to
/// learn from (the first mini kernel build's entries shrink from 7.6 to ~5 MB), then evicts
/// least recently used entries when the store is over its limit ([`max_size`]).
pub fn gc_to_limit() -> Result<pik_cache::Sweep> {
    upkeep(max_size(None)?)
}

/// The dictionary, then eviction down to `max` bytes on disk.
pub fn upkeep(max: u64) -> Result<pik_cache::Sweep> {
    let store = open()?;
    store
        .train_dictionary(DICT_MIN_ENTRIES)
        .context("training the object cache's compression dictionary")?;
    Ok(store.gc(max)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5Q").is_err());
    }
}
