//! Where pik keeps its state and looks for its config file: the XDG base directories, under
//! whatever the command line, the environment and the config file say (see [`crate::settings`]).

use anyhow::Result;
use std::path::PathBuf;

/// The root of pik's cache: workspaces, default build dirs, the memo, the object store.
/// `--cache-dir`, else `$PIK_CACHE_DIR`, else `dir` under `[cache]` in the config file, else
/// [`default_cache_dir`].
pub fn cache_dir() -> Result<PathBuf> {
    crate::settings::cache_dir()
}

/// The cache dir when nothing names one: `$XDG_CACHE_HOME/pik`, else `~/.cache/pik`; None
/// without either (as in a Nix build, whose `HOME` is `/homeless-shelter`).
pub fn default_cache_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache").map(|d| d.join("pik"))
}

/// Where the config file is when `$PIK_CONFIG` does not name one:
/// `$XDG_CONFIG_HOME/pik/config.toml`, else `~/.config/pik/config.toml`.
pub fn default_config_file() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("pik").join("config.toml"))
}

/// The user's home, unless it is Nix's placeholder for "none".
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty() && h != "/homeless-shelter")
        .map(PathBuf::from)
}

/// An XDG base directory: `$var` when set (the spec ignores relative values), else `~/<under>`.
fn xdg_dir(var: &str, under: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|d| std::path::Path::new(d).is_absolute()) {
        Some(d) => Some(PathBuf::from(d)),
        None => home().map(|h| h.join(under)),
    }
}
