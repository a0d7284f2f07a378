//! Where pik keeps its state: `$PIK_CACHE_DIR`, else `$XDG_CACHE_HOME/pik`, else `~/.cache/pik`.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// The root of pik's cache: workspaces, default build dirs, stats.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PIK_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("pik"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/homeless-shelter") {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("pik")),
        None => bail!(
            "no cache directory: set PIK_CACHE_DIR (or XDG_CACHE_HOME / HOME) to a writable directory"
        ),
    }
}
