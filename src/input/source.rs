//! Kernel sources: a tree or a tarball, given with `--source`, `$PIK_KERNEL_SRC`, or found among
//! Debian's `linux-source-*` tarballs under /usr/src. Also the source digest, the content key of the
//! source that the workspace (and later the build memo) is keyed by.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the kernel source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An unpacked tree (the user's: never modified).
    Tree(PathBuf),
    /// A compressed or plain tar archive.
    Tarball(PathBuf),
}

impl Source {
    /// The path given.
    pub fn path(&self) -> &Path {
        match self {
            Source::Tree(p) | Source::Tarball(p) => p,
        }
    }

    /// "tree" or "tarball".
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Tree(_) => "tree",
            Source::Tarball(_) => "tarball",
        }
    }
}

const TAR_SUFFIXES: &[&str] = &[
    ".tar.xz",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tar.zst",
    ".tar.zstd",
    ".tar",
];

/// Where a build's source may come from, in order of preference.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// The sources to try (never empty).
    pub list: Vec<Source>,
    /// Whether the user named it (`--source`, `$PIK_KERNEL_SRC`): then there is exactly one and
    /// a problem with it is an error; Debian's tarballs found by pik are tried in turn.
    pub explicit: bool,
}

/// The source given with `--source`, else `$PIK_KERNEL_SRC`, else Debian's `linux-source-*`
/// tarballs under /usr/src, newest first.
pub fn candidates(given: Option<&Path>) -> Result<Candidates> {
    if let Some(p) = given {
        return Ok(Candidates {
            list: vec![classify(p)?],
            explicit: true,
        });
    }
    if let Some(p) = std::env::var_os("PIK_KERNEL_SRC").filter(|p| !p.is_empty()) {
        return Ok(Candidates {
            list: vec![classify(Path::new(&p)).context("from $PIK_KERNEL_SRC")?],
            explicit: true,
        });
    }
    let found = debian_tarballs(Path::new("/usr/src"));
    if found.is_empty() {
        bail!(
            "no kernel source given and none found: pass --source (a kernel tree or tarball), set \
             PIK_KERNEL_SRC, or install Debian's linux-source-6.12 (apt-get install linux-source-6.12)"
        );
    }
    Ok(Candidates {
        list: found.into_iter().map(Source::Tarball).collect(),
        explicit: false,
    })
}

/// Classifies an explicit source path (from `--source` or `$PIK_KERNEL_SRC`).
pub fn classify(path: &Path) -> Result<Source> {
    let md = std::fs::metadata(path).with_context(|| {
        format!(
            "kernel source {} does not exist or is unreadable",
            path.display()
        )
    })?;
    if md.is_dir() {
        check_tree(path)?;
        return Ok(Source::Tree(path.to_path_buf()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if TAR_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Ok(Source::Tarball(path.to_path_buf()));
    }
    bail!(
        "kernel source {} is neither a directory nor a tarball (.tar.xz, .tar.gz, .tar.bz2, .tar.zst)",
        path.display()
    )
}

/// Fails unless `dir` looks like a Linux source tree (top-level Makefile with VERSION and
/// PATCHLEVEL, Kconfig, scripts/kconfig, arch/).
pub fn check_tree(dir: &Path) -> Result<()> {
    let makefile = makefile_head(dir).unwrap_or_default();
    let has_version = makefile.lines().any(|l| l.starts_with("VERSION ="))
        && makefile.lines().any(|l| l.starts_with("PATCHLEVEL ="));
    let missing: Vec<&str> = [
        ("Makefile with VERSION/PATCHLEVEL", has_version),
        ("Kconfig", dir.join("Kconfig").is_file()),
        ("scripts/kconfig/", dir.join("scripts/kconfig").is_dir()),
        ("arch/", dir.join("arch").is_dir()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| what)
    .collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a Linux kernel source tree: it lacks {}. Point --source at the top of a kernel \
             tree (the directory with the kernel's Makefile) or at a kernel tarball",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The start of a tree's top-level Makefile, where the kernel's version lines are (a bounded
/// read: `Makefile` might be anything in a tree that is not a kernel's).
fn makefile_head(tree: &Path) -> Result<String> {
    let p = tree.join("Makefile");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .with_context(|| format!("reading {}", p.display()))?;
    if !f.metadata()?.is_file() {
        bail!("{} is not a regular file", p.display());
    }
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 << 10), &mut head)?;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The kernel version (`6.12.117`) from a tree's top-level Makefile.
pub fn kernel_version(tree: &Path) -> Result<String> {
    let text = makefile_head(tree)?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
            })
            .unwrap_or_default()
    };
    Ok(format!(
        "{}.{}.{}{}",
        get("VERSION"),
        get("PATCHLEVEL"),
        get("SUBLEVEL"),
        get("EXTRAVERSION")
    ))
}

/// Debian's `linux-source-<version>` tarballs in `dir`, highest version first.
pub fn debian_tarballs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let rest = name.strip_prefix("linux-source-")?;
            let suffix = TAR_SUFFIXES.iter().find(|s| rest.ends_with(*s))?;
            let ver = &rest[..rest.len() - suffix.len()];
            let key = ver
                .split(['.', '-'])
                .map(|p| p.parse().unwrap_or(0))
                .collect();
            Some((key, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).collect()
}

/// True for entries of a user's tree that are not source: version control and in-tree build
/// output (kbuild refuses an O= build over an unclean tree, and make's VPATH would pick up stale
/// objects).
pub fn is_build_output(rel: &Path, is_dir: bool) -> bool {
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let depth = rel.components().count();
    if is_dir {
        return name == b".git"
            || name == b".tmp_versions"
            || rel == Path::new("include/config")
            || rel == Path::new("include/generated")
            || (depth == 4 && rel.starts_with("arch") && name == b"generated");
    }
    let s = String::from_utf8_lossy(name);
    if depth == 1
        && (s.starts_with(".config")
            || s.starts_with("vmlinux")
            || s.starts_with(".vmlinux")
            || s.starts_with(".tmp_")
            || matches!(
                s.as_ref(),
                "System.map"
                    | "Module.symvers"
                    | ".version"
                    | "modules.builtin"
                    | "modules.builtin.modinfo"
                    | ".missing-syscalls.d"
                    | "compile_commands.json"
            ))
    {
        return true;
    }
    (s.starts_with('.') && (s.ends_with(".cmd") || s.ends_with(".d")))
        || [
            ".o",
            ".ko",
            ".mod",
            ".mod.c",
            ".dtb",
            ".dtbo",
            ".dtb.S",
            ".dtbo.S",
            ".symtypes",
        ]
        .iter()
        .any(|ext| s.ends_with(ext))
        || s == "modules.order"
}

/// The content digest of a source: BLAKE3 of a tarball's bytes, or of a tree's content (paths,
/// types, exec bits, symlink targets, file bytes; build output and `.git` excluded).
pub fn digest(src: &Source) -> Result<blake3::Hash> {
    match src {
        Source::Tarball(p) => {
            let mut h = blake3::Hasher::new();
            h.update(b"pik-tarball-v1\0");
            h.update_mmap_rayon(p)
                .with_context(|| format!("reading {}", p.display()))?;
            Ok(h.finalize())
        }
        Source::Tree(root) => tree_digest(root),
    }
}

/// Slots of the source stat cache: room for a few kernel trees (~90 000 files each).
const SOURCE_HASH_SLOTS: usize = 1 << 19;

/// The stat cache of source file hashes (`<cache>/source-hashes.v2`), shared by every pik
/// process, so an unchanged file of a tree is not read again; None when there is no cache dir
/// (then every file is read).
fn source_hashes() -> Option<pik_cache::filehash::FileHashCache> {
    let dir = crate::paths::cache_dir().ok()?;
    std::fs::create_dir_all(&dir).ok()?;
    pik_cache::filehash::FileHashCache::open(&dir.join("source-hashes.v2"), SOURCE_HASH_SLOTS).ok()
}

/// The content digest of a tree (see [`digest`]), with the shared stat cache.
pub fn tree_digest(root: &Path) -> Result<blake3::Hash> {
    tree_digest_with(root, source_hashes().as_ref())
}

fn tree_digest_with(
    root: &Path,
    hashes: Option<&pik_cache::filehash::FileHashCache>,
) -> Result<blake3::Hash> {
    let mut entries: Vec<(PathBuf, u8)> = Vec::new();
    let mut it = walkdir::WalkDir::new(root).follow_links(false).into_iter();
    while let Some(e) = it.next() {
        crate::interrupt::check("hashing the kernel source")?;
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let rel = e.path().strip_prefix(root)?.to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let ft = e.file_type();
        if is_build_output(&rel, ft.is_dir()) {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let kind = if ft.is_dir() {
            b'd'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_file() {
            b'f'
        } else {
            // Reading a FIFO would wait forever, a device could be anything.
            bail!(
                "{} is a FIFO, socket or device, not a source file: a kernel tree has none; \
                 remove it from the tree",
                e.path().display()
            );
        };
        entries.push((rel, kind));
    }
    entries.par_sort_unstable();
    let records: Vec<Vec<u8>> = entries
        .par_iter()
        .map(|(rel, kind)| -> Result<Vec<u8>> {
            crate::interrupt::check("hashing the kernel source")?;
            let full = root.join(rel);
            let mut rec = Vec::with_capacity(rel.as_os_str().len() + 40);
            rec.extend_from_slice(rel.as_os_str().as_bytes());
            rec.push(0);
            rec.push(*kind);
            match kind {
                b'f' => {
                    let (digest, md) = match hashes {
                        Some(c) => c.digest_and_metadata(&full).map(|(d, md)| (d.0, md)),
                        None => std::fs::metadata(&full).and_then(|md| {
                            std::fs::read(&full).map(|b| (*blake3::hash(&b).as_bytes(), md))
                        }),
                    }
                    .with_context(|| format!("reading {}", full.display()))?;
                    rec.push(u8::from(md.permissions().mode() & 0o111 != 0));
                    rec.extend_from_slice(&digest);
                }
                b'l' => rec.extend_from_slice(std::fs::read_link(&full)?.as_os_str().as_bytes()),
                _ => {}
            }
            Ok(rec)
        })
        .collect::<Result<_>>()?;
    let mut h = blake3::Hasher::new();
    h.update(b"pik-tree-v1\0");
    for r in records {
        h.update(&(r.len() as u64).to_le_bytes());
        h.update(&r);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_filter() {
        assert!(is_build_output(Path::new(".git"), true));
        assert!(is_build_output(Path::new("init/main.o"), false));
        assert!(is_build_output(Path::new("init/.main.o.cmd"), false));
        assert!(is_build_output(Path::new(".config"), false));
        assert!(is_build_output(
            Path::new("arch/arm64/include/generated"),
            true
        ));
        assert!(!is_build_output(Path::new("init/main.c"), false));
        assert!(!is_build_output(
            Path::new("arch/arm64/kernel/vmlinux.lds.S"),
            false
        ));
        assert!(!is_build_output(Path::new("include/configs"), true));
    }

    #[test]
    fn tree_digest_stat_cache_sees_every_change() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("kernel")).unwrap();
        let f = tree.join("kernel/fork.c");
        std::fs::write(&f, "int a;").unwrap();
        std::fs::write(tree.join("Makefile"), "all:").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let set_old = |p: &Path| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        set_old(&f);
        let table = pik_cache::filehash::FileHashCache::open(&t.path().join("h"), 64).unwrap();
        let plain = tree_digest_with(&tree, None).unwrap();
        assert_eq!(tree_digest_with(&tree, Some(&table)).unwrap(), plain);
        assert_eq!(tree_digest_with(&tree, Some(&table)).unwrap(), plain);
        // Same size, mtime put back: only ctime tells, and it does.
        std::fs::write(&f, "int b;").unwrap();
        set_old(&f);
        let changed = tree_digest_with(&tree, Some(&table)).unwrap();
        assert_ne!(changed, plain);
        assert_eq!(changed, tree_digest_with(&tree, None).unwrap());
    }

    #[test]
    fn tarballs_sorted_by_version() {
        let t = tempfile::tempdir().unwrap();
        for n in [
            "linux-source-6.1.tar.xz",
            "linux-source-6.12.tar.xz",
            "linux-source-6.9.tar.bz2",
            "other.tar.xz",
        ] {
            std::fs::write(t.path().join(n), "").unwrap();
        }
        let names: Vec<_> = debian_tarballs(t.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "linux-source-6.12.tar.xz",
                "linux-source-6.9.tar.bz2",
                "linux-source-6.1.tar.xz"
            ]
        );
    }

    #[test]
    fn tree_digest_sees_content_not_build_output() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("init")).unwrap();
        std::fs::write(t.path().join("init/main.c"), "int x;").unwrap();
        let a = tree_digest(t.path()).unwrap();
        std::fs::write(t.path().join("init/main.o"), "obj").unwrap();
        assert_eq!(a, tree_digest(t.path()).unwrap());
        std::fs::write(t.path().join("init/main.c"), "int y;").unwrap();
        assert_ne!(a, tree_digest(t.path()).unwrap());
    }
}
