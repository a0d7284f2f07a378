//! `pik cache stats|gc|verify|clear`: looking after the object store.

use crate::store;
use anyhow::Result;

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `pik cache stats`.
pub fn stats(json: bool) -> Result<()> {
    let objects = store::open()?;
    let t = objects.stats().totals();
    let u = objects.usage();
    let limit = store::max_size(None)?;
    if json {
        let v = serde_json::json!({
            "dir": objects.root(),
            "hits": t.hits, "misses": t.misses, "hit_rate": t.hit_rate(),
            "uncacheable": t.uncacheable, "errors": t.errors,
            "time_saved_s": t.saved_ms as f64 / 1000.0,
            "miss_time_s": t.miss_ms as f64 / 1000.0,
            "files": u.files, "bytes": u.bytes, "disk_bytes": u.disk_bytes, "max_size": limit,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    crate::outln!("cache dir      {}", objects.root().display())?;
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
    let s = store::upkeep(store::max_size(max)?)?;
    report_sweep("gc", &s, json)
}

/// `pik cache verify`: exits nonzero when damaged entries were found (and removed), and when
/// some could not be read or removed (each named on stderr): the store is then not known clean.
pub fn verify(json: bool) -> Result<bool> {
    let s = store::open()?.verify()?;
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
    let u = store::open()?.clear()?;
    crate::outln!("pik: cleared {} files ({})", u.files, mib(u.disk_bytes))?;
    Ok(())
}
