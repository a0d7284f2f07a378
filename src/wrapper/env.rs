//! What `pik build` tells the compiles it routes through pik, and the wrapper reads: the
//! environment variables (`PIK_*`) and the masquerade dir that routes the compiles to pik in the
//! first place. Also where the object store lives and whether it may be shared, which the
//! wrapper, `pik build` and `pik cache` all ask here.

use super::{args, compiler};
use pik_cache::{Digest, Sharing};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Environment variable naming a file that gets one line per wrapped call (`kind reason output`),
/// so a build can report its own hits and misses.
pub const SESSION_LOG_ENV: &str = "PIK_SESSION_LOG";

/// The session log [`SESSION_LOG_ENV`] names, if any.
pub(super) fn session_log() -> Option<OsString> {
    std::env::var_os(SESSION_LOG_ENV).filter(|v| !v.is_empty())
}

/// Set to disable the cache for a wrapped call (the compiler runs untouched).
pub const DISABLE_ENV: &str = "PIK_NO_CACHE";

/// Whether [`DISABLE_ENV`] turns the cache off (set to anything but empty or `0`).
pub(super) fn cache_disabled() -> bool {
    std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Set by `pik build` to vouch for its private, content-keyed source tree:
/// `<tree id> <unix ns> <root>`. A compile that read files under `<root>` all unchanged since
/// `<unix ns>` is tagged with the id, and a later call under a tree with the same id checks only
/// the dependencies outside it (a kernel object has ~850 headers in the tree and ~40 generated
/// ones in the build dir). Anything else is checked file by file as usual.
pub const TREE_ENV: &str = "PIK_SOURCE_TREE";

/// The source tree named by [`TREE_ENV`].
pub(super) struct SourceTree {
    /// Digest of the id `pik build` gave.
    pub(super) id: Digest,
    /// Files in the tree changed at or after this (unix ns) are not vouched for.
    pub(super) since_ns: u64,
    /// The tree's root, absolute, without a trailing slash.
    pub(super) root: Vec<u8>,
}

impl SourceTree {
    pub(super) fn from_env() -> Option<SourceTree> {
        let v = std::env::var_os(TREE_ENV)?;
        let mut it = v.as_bytes().splitn(3, |&b| b == b' ');
        let id = it.next().filter(|id| !id.is_empty())?;
        let since_ns = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
        let root = it.next()?;
        let root = root.strip_suffix(b"/").unwrap_or(root);
        (root.starts_with(b"/") && root.len() > 1).then(|| SourceTree {
            id: Digest::of(id),
            since_ns,
            root: root.to_vec(),
        })
    }

    /// The value of [`TREE_ENV`] for `root` (absolute, as kbuild spells srctree).
    fn env_value(id: &str, since: std::time::SystemTime, root: &Path) -> OsString {
        let ns = since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut v = OsString::from(format!("{id} {ns} "));
        v.push(root);
        v
    }

    /// Which of this call's portable prefixes is the tree root.
    pub(super) fn prefix(&self, portable: &[Vec<u8>]) -> Option<usize> {
        portable.iter().position(|p| *p == self.root)
    }
}

/// The [`TREE_ENV`] setting for a build in the source tree `root` (which must not change while
/// it runs) whose content is identified by `id` (no spaces): files under it changed after this
/// call are never trusted by id.
pub fn source_tree_env(id: &str, root: &Path) -> (&'static str, OsString) {
    (
        TREE_ENV,
        SourceTree::env_value(id, std::time::SystemTime::now(), root),
    )
}

/// Overrides where the object store lives.
pub const STORE_ENV: &str = "PIK_OBJECT_CACHE_DIR";

/// Where the object store lives: `$PIK_OBJECT_CACHE_DIR`, else `<cache dir>/objects`.
pub fn store_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os(STORE_ENV).filter(|v| !v.is_empty()) {
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(crate::paths::cache_dir()?.join("objects")),
    }
}

/// Set to `1` when the object store is shared on purpose by users who trust each other (its
/// directory may then belong to another user, or be writable by its group or everyone).
pub const SHARED_ENV: &str = "PIK_CACHE_SHARED";

/// Whether the user said the object store is shared ([`SHARED_ENV`]); everything that opens
/// the store asks this, so a config-file setting has one place to go.
pub fn cache_sharing() -> Sharing {
    match std::env::var_os(SHARED_ENV) {
        Some(v) if !v.is_empty() && v != "0" => Sharing::Shared,
        _ => Sharing::Private,
    }
}

/// Set by `pik build` to `<name>=<absolute path>`: the real compiler its masquerade link `name`
/// stands for, found once on the build's PATH instead of by every wrapped call (a dozen `stat`s).
pub const COMPILER_ENV: &str = "PIK_COMPILER";

/// Set by `pik build` to the name of the host's compiler (`HOSTCC`, `gcc`) when it differs from
/// the target's: its compiles (kbuild's host programs) are counted apart from the kernel's.
pub const HOST_CC_ENV: &str = "PIK_HOST_CC";

/// Whether `name` is the host compiler [`HOST_CC_ENV`] names.
pub(super) fn is_host_compiler(name: &OsStr) -> bool {
    std::env::var_os(HOST_CC_ENV).is_some_and(|h| h == name)
}

/// The [`COMPILER_ENV`] setting for the compilers `names` on the search path `path` (a PATH
/// value, masquerade dir included: pik's own links are skipped as the wrapper skips them): one
/// `name=path` line each. A name not found, or a path with a line break, is left out (the
/// wrapper then walks PATH for it).
pub fn compiler_env(names: &[String], path: &OsStr) -> Option<(&'static str, OsString)> {
    let mut v = OsString::new();
    for name in names {
        let Ok(real) = compiler::resolve_on(OsStr::new(name), path) else {
            continue;
        };
        if real.as_os_str().as_bytes().contains(&b'\n') {
            continue;
        }
        if !v.is_empty() {
            v.push("\n");
        }
        v.push(format!("{name}="));
        v.push(real);
    }
    (!v.is_empty()).then_some((COMPILER_ENV, v))
}

/// The real compiler [`COMPILER_ENV`] names for `name`, if it names one.
pub(super) fn compiler_from_env(name: &OsStr) -> Option<PathBuf> {
    let v = std::env::var_os(COMPILER_ENV)?;
    v.as_bytes().split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        rest.starts_with(b"/")
            .then(|| PathBuf::from(OsStr::from_bytes(rest)))
    })
}

/// Makes (or reuses) the masquerade dir for a build: links named like each compiler in `names`,
/// all pointing at this pik binary. Put first on PATH, they route kbuild's compiles through the
/// cache while its recorded command lines stay exactly what they would be without pik.
pub fn masquerade_dir(names: &[String]) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the pik binary")?;
    let dir = crate::paths::cache_dir()?
        .join("masq")
        .join(&Digest::of(args::bytes(&exe)).to_hex()[..16]);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in names {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(exe.as_path()) {
            continue;
        }
        // Made beside and renamed over, so concurrent builds never see a missing link.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&exe, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &link))
            .with_context(|| format!("linking {} to pik", link.display()))?;
    }
    Ok(dir)
}
