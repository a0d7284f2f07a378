//! `pik cache stats|gc|verify|clear`: looking after the object store.

use crate::wrapper;
use anyhow::{bail, Context, Result};
use pik_cache::Store;

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

/// The size limit: `--max-size`, else `$PIK_CACHE_MAX_SIZE`, else [`DEFAULT_MAX_SIZE`].
pub fn max_size(flag: Option<&str>) -> Result<u64> {
    match flag {
        Some(s) => parse_size(s),
        None => match std::env::var("PIK_CACHE_MAX_SIZE") {
            Ok(s) if !s.is_empty() => parse_size(&s).context("in $PIK_CACHE_MAX_SIZE"),
            _ => Ok(DEFAULT_MAX_SIZE),
        },
    }
}

/// The store, refused (an error) if users not trusted may write it (see
/// [`wrapper::cache_sharing`]).
fn open() -> Result<Store> {
    wrapper::open_store()
}

/// Entries the store holds before it trains its compression dictionary: enough to learn what
/// they share (a mini kernel build stores ~1,100; a handful of `pik cc` calls never trains one).
const DICT_MIN_ENTRIES: usize = 256;

/// Upkeep after a build: trains the store's compression dictionary once there is enough to
/// learn from (the first mini kernel build's entries shrink from 7.6 to ~5 MB), then evicts
/// least recently used entries when the store is over its limit.
pub fn gc_to_limit() -> Result<pik_cache::Sweep> {
    upkeep(max_size(None)?)
}

/// The dictionary, then eviction down to `max` bytes on disk.
fn upkeep(max: u64) -> Result<pik_cache::Sweep> {
    let store = open()?;
    store
        .train_dictionary(DICT_MIN_ENTRIES)
        .context("training the object cache's compression dictionary")?;
    Ok(store.gc(max)?)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `pik cache stats`.
pub fn stats(json: bool) -> Result<()> {
    let store = open()?;
    let t = store.stats().totals();
    let u = store.usage();
    let limit = max_size(None)?;
    if json {
        let v = serde_json::json!({
            "dir": store.root(),
            "hits": t.hits, "misses": t.misses, "hit_rate": t.hit_rate(),
            "uncacheable": t.uncacheable, "errors": t.errors,
            "time_saved_s": t.saved_ms as f64 / 1000.0,
            "miss_time_s": t.miss_ms as f64 / 1000.0,
            "files": u.files, "bytes": u.bytes, "disk_bytes": u.disk_bytes, "max_size": limit,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    crate::outln!("cache dir      {}", store.root().display())?;
    crate::outln!("hits           {}", t.hits)?;
    crate::outln!("misses         {}", t.misses)?;
    crate::outln!("hit rate       {:.2} %", t.hit_rate() * 100.0)?;
    crate::outln!("uncacheable    {}", t.uncacheable.values().sum::<u64>())?;
    for (why, n) in &t.uncacheable {
        crate::outln!("  {n:>10}  {}", why.replace('_', " "))?;
    }
    if !t.errors.is_empty() {
        crate::outln!("errors         {}", t.errors.values().sum::<u64>())?;
        for (why, n) in &t.errors {
            crate::outln!("  {n:>10}  {}", why.replace('_', " "))?;
        }
    }
    crate::outln!("time saved     {:.1} s", t.saved_ms as f64 / 1000.0)?;
    crate::outln!(
        "size           {} on disk ({} in {} files), limit {}",
        mib(u.disk_bytes),
        mib(u.bytes),
        u.files,
        mib(limit)
    )?;
    Ok(())
}

fn report_sweep(what: &str, s: &pik_cache::Sweep, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "removed": s.removed,
            "failed": s.failed.len(),
            "before": {"files": s.before.files, "disk_bytes": s.before.disk_bytes},
            "after": {"files": s.after.files, "disk_bytes": s.after.disk_bytes},
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        crate::outln!(
            "pik: {what}: removed {} files; {} → {} on disk",
            s.removed,
            mib(s.before.disk_bytes),
            mib(s.after.disk_bytes)
        )?;
    }
    Ok(())
}

/// `pik cache gc [--max-size N]`.
pub fn gc(max: Option<&str>, json: bool) -> Result<()> {
    let s = upkeep(max_size(max)?)?;
    report_sweep("gc", &s, json)
}

/// `pik cache verify`: exits nonzero when damaged entries were found (and removed), and when
/// some could not be read or removed (each named on stderr): the store is then not known clean.
pub fn verify(json: bool) -> Result<bool> {
    let s = open()?.verify()?;
    report_sweep("verify", &s, json)?;
    for p in &s.failed {
        eprintln!(
            "pik: verify: could not read, or remove when damaged, {}",
            p.display()
        );
    }
    Ok(s.removed == 0 && s.failed.is_empty())
}

/// `pik cache clear`.
pub fn clear() -> Result<()> {
    let u = open()?.clear()?;
    crate::outln!("pik: cleared {} files ({})", u.files, mib(u.disk_bytes))?;
    Ok(())
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
