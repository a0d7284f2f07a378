//! What a compile depended on: the digest over its dependencies' current content, which decides
//! whether a stored candidate still holds, and the scan a miss makes of the compiler's list of
//! them (the `.incbin` files the list leaves out, and the tag that lets a vouched-for source tree
//! stand in for the files inside it).

use super::args::{self, Compile};
use super::depfile::incbin_files;
use super::env::SourceTree;
use super::record::{Candidate, TreeTag};
use super::{Ctx, Res};
use pik_cache::filehash;
use pik_cache::Digest;
use std::path::Path;

/// What [`Ctx::scan_deps`] finds out about a miss's dependencies.
pub(super) struct Scanned {
    /// Files `.incbin` pulled in (normalized).
    pub(super) extra_deps: Vec<Vec<u8>>,
    /// Digest over the depfile's files then those, as `deps_digest` computes it.
    pub(super) deps_digest: Digest,
    /// Set when the vouched-for tree may stand in for the files inside it.
    pub(super) tree: Option<TreeTag>,
}

impl Ctx {
    /// The digest of the current content of `deps` (normalized paths).
    pub(super) fn deps_digest(&self, deps: &[Vec<u8>], portable: &[Vec<u8>]) -> Res<Digest> {
        let mut h = blake3::Hasher::new();
        for d in deps {
            h.update(d);
            h.update(b"\0");
            let p = args::path(args::denormalize(d, portable));
            h.update(&self.hashes.digest(&p)?.0);
        }
        Ok(Digest(*h.finalize().as_bytes()))
    }

    /// Whether `cand` still holds for this call: every dependency has the content it had, or,
    /// in the same vouched-for tree, every dependency outside the tree does. Also says which
    /// check it was (`tree` or `deps`, for the session log).
    pub(super) fn still_valid(&self, c: &Compile, cand: &Candidate) -> (bool, &'static str) {
        if let (Some(t), Some(tag)) = (&self.tree, &cand.tree) {
            if tag.id == t.id && t.prefix(&c.portable) == Some(tag.prefix as usize) {
                let ok =
                    self.deps_digest(&tag.outside, &c.portable).ok() == Some(tag.outside_digest);
                return (ok, "tree");
            }
        }
        let ok = cand.deps().is_some_and(|deps| {
            self.deps_digest(&deps, &c.portable).ok() == Some(cand.deps_digest)
        });
        (ok, "deps")
    }

    /// Everything a miss records about the files that shaped its output, from the compiler's
    /// dependency list: the files `.incbin` directives in them pull in (the depfile does not
    /// list those), the digest over all of them (as `deps_digest` computes it) and, when they
    /// were read from the vouched-for source tree with every file there older than the build,
    /// the tag that lets later calls in that tree check only the rest. Only files the hash table
    /// marks as mentioning `.incbin` are read. `Err` = not cacheable, with the reason.
    pub(super) fn scan_deps(
        &self,
        deps: &[Vec<u8>],
        portable: &[Vec<u8>],
    ) -> Res<Result<Scanned, &'static str>> {
        let mut tag = self.tree.as_ref().and_then(|t| TagScan::new(t, portable));
        let mut h = blake3::Hasher::new();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        while i < deps.len() + extra.len() {
            let d = match deps.get(i) {
                Some(d) => d.clone(),
                None => extra[i - deps.len()].clone(),
            };
            i += 1;
            let p = args::path(args::denormalize(&d, portable));
            let (digest, attr, md) = match self.hashes.digest_attr_and_metadata(&p) {
                Ok(found) => found,
                Err(e) if filehash::not_regular(&e) => {
                    return Ok(Err("dependency is not a regular file"))
                }
                Err(e) => return Err(e),
            };
            h.update(&d);
            h.update(b"\0");
            h.update(&digest.0);
            // What `.incbin` pulls in is data, not source: it is not searched for directives.
            if i <= deps.len() && attr != 0 {
                if let Err(why) = self.add_incbins(&p, portable, &mut extra)? {
                    return Ok(Err(why));
                }
            }
            if let Some(tag) = &mut tag {
                tag.add(d, &digest, &md);
            }
        }
        Ok(Ok(Scanned {
            extra_deps: extra,
            deps_digest: Digest(*h.finalize().as_bytes()),
            tree: tag.and_then(TagScan::finish),
        }))
    }

    /// Adds the files `.incbin` directives in the file `p` name to `extra` (normalized). `Err`
    /// = not cacheable, with the reason.
    fn add_incbins(
        &self,
        p: &Path,
        portable: &[Vec<u8>],
        extra: &mut Vec<Vec<u8>>,
    ) -> Res<Result<(), &'static str>> {
        let (_, bytes) = self.hashes.read(p)?;
        let found = match incbin_files(&bytes) {
            Ok(found) => found,
            Err(why) => return Ok(Err(why)),
        };
        for f in found {
            if !f.exists() {
                return Ok(Err(".incbin file not found"));
            }
            extra.push(args::normalize(args::bytes(&f), portable));
        }
        Ok(Ok(()))
    }
}

/// The tree tag [`Ctx::scan_deps`] builds as it goes: the dependencies outside the tree and
/// their digest, and whether every one inside it is older than the build.
struct TagScan<'t> {
    tree: &'t SourceTree,
    /// Which portable prefix is the tree's root.
    prefix: usize,
    outside: Vec<Vec<u8>>,
    /// The same digest as `deps_digest`'s, over just the files outside the tree.
    outside_h: blake3::Hasher,
    taggable: bool,
}

impl<'t> TagScan<'t> {
    /// A scan for this call, if one of its portable prefixes is the tree's root.
    fn new(tree: &'t SourceTree, portable: &[Vec<u8>]) -> Option<Self> {
        Some(TagScan {
            tree,
            prefix: tree.prefix(portable)?,
            outside: Vec::new(),
            outside_h: blake3::Hasher::new(),
            taggable: true,
        })
    }

    /// Takes in the dependency `d` (normalized), with its content digest and metadata.
    fn add(&mut self, d: Vec<u8>, digest: &Digest, md: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        if args::under_prefix(&d, self.prefix) {
            // A file changed after the build began (an edit while it runs) may not be what the
            // tree id stands for.
            let changed = (md.ctime() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(md.ctime_nsec() as u64);
            self.taggable &= changed < self.tree.since_ns;
        } else {
            self.outside_h.update(&d);
            self.outside_h.update(b"\0");
            self.outside_h.update(&digest.0);
            self.outside.push(d);
        }
    }

    fn finish(self) -> Option<TreeTag> {
        self.taggable.then(|| TreeTag {
            id: self.tree.id,
            prefix: self.prefix as u64,
            outside_digest: Digest(*self.outside_h.finalize().as_bytes()),
            outside: self.outside,
        })
    }
}
