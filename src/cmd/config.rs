//! `pik config show`: every effective setting and where it came from.

use crate::input::data::DataDir;
use crate::input::target::{self, Target};
use crate::settings::{Origin, Setting, Settings};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// One line of the listing.
struct Row {
    key: &'static str,
    value: serde_json::Value,
    text: String,
    origin: Origin,
}

fn row<T: Serialize>(key: &'static str, s: Setting<T>, text: impl Fn(&T) -> String) -> Row {
    Row {
        key,
        text: text(&s.value),
        value: serde_json::to_value(&s.value).unwrap_or(serde_json::Value::Null),
        origin: s.origin,
    }
}

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

/// `5G` for a whole number of GiB (or MiB, KiB), else bytes.
fn size(b: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    format!("{b} bytes")
}

/// The target (checked) and the profile in force: a profile nothing names is the target's
/// default.
fn build_rows(s: &Settings, kconfigs: Option<&Path>) -> Result<Vec<Row>> {
    let t = s.target()?;
    let target: Option<Target> = match &t.value {
        Some(name) => Some(super::blame(
            target::find(&DataDir::kconfigs(kconfigs), name),
            &t.origin,
        )?),
        None => None,
    };
    let mut p = s.profile()?;
    if let Some(tg) = &target {
        super::checked_profile(&p, tg)?;
        p.value.get_or_insert_with(|| tg.default_profile.clone());
    }
    let mut j = s.jobs()?;
    if j.value.is_none() {
        j.value = std::thread::available_parallelism().ok().map(|n| n.get());
    }
    Ok(vec![
        row("build.target", t, or_none),
        row("build.profile", p, or_none),
        row("build.jobs", j, |n| n.map_or("?".into(), |n| n.to_string())),
    ])
}

/// Every setting, in the config file's order.
fn rows(s: &Settings, kconfigs: Option<&Path>) -> Result<Vec<Row>> {
    let path = |p: &std::path::PathBuf| p.display().to_string();
    let mut v = vec![
        row("cache.dir", s.cache_dir()?, path),
        row("cache.objects", s.object_store_dir()?, path),
        row("cache.max_size", s.max_size()?, |b| size(*b)),
        row("cache.shared", s.shared()?, |b| {
            (if *b { "yes" } else { "no" }).into()
        }),
    ];
    v.extend(build_rows(s, kconfigs)?);
    v.push(row("hosts.list", s.hosts()?, |h| {
        if h.is_empty() {
            "(none)".into()
        } else {
            h.join(" ")
        }
    }));
    v.push(row("remote_cache.url", s.remote_cache_url()?, or_none));
    Ok(v)
}

/// `pik config show [--json]`.
pub(super) fn show(s: &Settings, kconfigs: Option<&Path>, json: bool) -> Result<()> {
    let rows = rows(s, kconfigs)?;
    let file = s.config_file();
    if json {
        let mut settings = serde_json::Map::new();
        for r in rows {
            let mut o = serde_json::to_value(&r.origin)?;
            o["value"] = r.value;
            settings.insert(r.key.into(), o);
        }
        let v = serde_json::json!({
            "config_file": {"path": file.path, "present": file.present},
            "settings": settings,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let state = if file.present { "" } else { " (absent)" };
    crate::outln!("config file       {}{state}", file.describe())?;
    for r in rows {
        crate::outln!("{:<17} {:<36} {}", r.key, r.text, r.origin)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_written() {
        assert_eq!(super::size(5 << 30), "5G");
        assert_eq!(super::size(1536 << 20), "1536M");
        assert_eq!(super::size(1000), "1000 bytes");
    }
}
