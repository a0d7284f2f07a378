//! What the wrapper stores per first-step key: up to a few candidates, each the outputs of one
//! compile plus what it depended on. A small length-prefixed binary format (the store adds the
//! checksum and compression); anything that does not decode is treated as absent.

use super::args;
use super::depfile;
use pik_cache::Digest;
use std::borrow::Cow;

const MAGIC: &[u8; 8] = b"PIKCC003";

/// One stored compile result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Digest of every dependency's normalized path and content when it was compiled.
    pub deps_digest: Digest,
    /// How long the real compile took.
    pub compile_ms: u64,
    /// The compiler's exit status: not 0 only for a probe whose failure is its answer (the
    /// compiler rejecting a flag), which then has no object.
    pub exit_code: i32,
    /// The object file.
    pub object: Cow<'a, [u8]>,
    /// The depfile, normalized (portable prefixes replaced by placeholders).
    pub depfile: Cow<'a, [u8]>,
    /// Dependencies the depfile does not list (`.incbin` files), normalized.
    pub extra_deps: Vec<Vec<u8>>,
    /// The compiler's stdout, normalized.
    pub stdout: Cow<'a, [u8]>,
    /// The compiler's stderr (warnings), normalized.
    pub stderr: Cow<'a, [u8]>,
    /// Set when the compile read a source tree `pik build` vouched for: a later call in the same
    /// tree need only check the dependencies outside it.
    pub tree: Option<TreeTag>,
}

/// The part of a candidate that lets a hit in an unchanged, vouched-for source tree skip
/// checking the (hundreds of) headers inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTag {
    /// Digest of the tree's identity as `pik build` gave it.
    pub id: Digest,
    /// Which portable prefix (see `args::normalize`) is the tree's root.
    pub prefix: u64,
    /// The dependencies outside the tree (normalized), in the order `outside_digest` covers.
    pub outside: Vec<Vec<u8>>,
    /// Digest of those dependencies' normalized paths and contents.
    pub outside_digest: Digest,
}

impl Candidate<'_> {
    /// Every dependency to check (normalized paths), in the order the digest covers them.
    pub fn deps(&self) -> Option<Vec<Vec<u8>>> {
        // A refused probe ran no preprocessor and read no file.
        if self.depfile.is_empty() {
            return Some(self.extra_deps.clone());
        }
        let mut v: Vec<Vec<u8>> = depfile::prerequisites(&self.depfile)?
            .iter()
            .map(|p| args::bytes(p).to_vec())
            .collect();
        v.extend(self.extra_deps.iter().cloned());
        Some(v)
    }
}

/// All candidates under one key, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record<'a> {
    /// The candidates.
    pub candidates: Vec<Candidate<'a>>,
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.0.split_at_checked(8)?;
        self.0 = t;
        Some(u64::from_le_bytes(h.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        Some(h)
    }
}

impl<'a> Record<'a> {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.candidates.len() as u64).to_le_bytes());
        for c in &self.candidates {
            put(&mut out, &c.deps_digest.0);
            out.extend_from_slice(&c.compile_ms.to_le_bytes());
            out.extend_from_slice(&(c.exit_code as i64 as u64).to_le_bytes());
            put(&mut out, &c.object);
            put(&mut out, &c.depfile);
            out.extend_from_slice(&(c.extra_deps.len() as u64).to_le_bytes());
            for d in &c.extra_deps {
                put(&mut out, d);
            }
            put(&mut out, &c.stdout);
            put(&mut out, &c.stderr);
            match &c.tree {
                None => out.extend_from_slice(&0u64.to_le_bytes()),
                Some(t) => {
                    out.extend_from_slice(&1u64.to_le_bytes());
                    put(&mut out, &t.id.0);
                    out.extend_from_slice(&t.prefix.to_le_bytes());
                    put(&mut out, &t.outside_digest.0);
                    out.extend_from_slice(&(t.outside.len() as u64).to_le_bytes());
                    for d in &t.outside {
                        put(&mut out, d);
                    }
                }
            }
        }
        out
    }

    /// Parses the stored form; `None` if it is not one.
    pub fn decode(bytes: &'a [u8]) -> Option<Record<'a>> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let n = r.u64()?;
        let mut candidates = Vec::new();
        for _ in 0..n.min(64) {
            let deps_digest = Digest(r.bytes()?.try_into().ok()?);
            let compile_ms = r.u64()?;
            let exit_code = i32::try_from(r.u64()? as i64).ok()?;
            let object = Cow::Borrowed(r.bytes()?);
            let depfile = Cow::Borrowed(r.bytes()?);
            let ne = r.u64()?;
            let mut extra_deps = Vec::new();
            for _ in 0..ne.min(1 << 16) {
                extra_deps.push(r.bytes()?.to_vec());
            }
            let stdout = Cow::Borrowed(r.bytes()?);
            let stderr = Cow::Borrowed(r.bytes()?);
            let tree = match r.u64()? {
                0 => None,
                1 => {
                    let id = Digest(r.bytes()?.try_into().ok()?);
                    let prefix = r.u64()?;
                    let outside_digest = Digest(r.bytes()?.try_into().ok()?);
                    let n = r.u64()?;
                    let mut outside = Vec::new();
                    for _ in 0..n.min(1 << 20) {
                        outside.push(r.bytes()?.to_vec());
                    }
                    Some(TreeTag {
                        id,
                        prefix,
                        outside,
                        outside_digest,
                    })
                }
                _ => return None,
            };
            candidates.push(Candidate {
                deps_digest,
                compile_ms,
                exit_code,
                object,
                depfile,
                extra_deps,
                stdout,
                stderr,
                tree,
            });
        }
        r.0.is_empty().then_some(Record { candidates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let plain = Candidate {
            deps_digest: Digest::of(b"d"),
            compile_ms: 42,
            exit_code: 0,
            object: vec![1, 2, 3].into(),
            depfile: b"a.o: a.c b.h\n".to_vec().into(),
            extra_deps: vec![b"x.gz".to_vec()],
            stdout: vec![].into(),
            stderr: b"warning\n".to_vec().into(),
            tree: None,
        };
        let tagged = Candidate {
            tree: Some(TreeTag {
                id: Digest::of(b"tree"),
                prefix: 0,
                outside: vec![b"include/generated/autoconf.h".to_vec()],
                outside_digest: Digest::of(b"o"),
            }),
            ..plain.clone()
        };
        let refused = Candidate {
            exit_code: 1,
            object: vec![].into(),
            ..plain.clone()
        };
        let r = Record {
            candidates: vec![tagged, plain, refused],
        };
        let e = r.encode();
        assert_eq!(Record::decode(&e), Some(r.clone()));
        assert_eq!(r.candidates[0].deps().unwrap().len(), 3);
        for cut in [0, 5, 9, 20, e.len() - 1] {
            assert!(Record::decode(&e[..cut]).is_none());
        }
    }

    /// Every length and count in the format is checked against the bytes that are left before
    /// anything is taken or allocated for it: a damaged one is a record that does not decode.
    #[test]
    fn damaged_lengths_and_counts_do_not_decode() {
        let r = Record {
            candidates: vec![Candidate {
                deps_digest: Digest::of(b"d"),
                compile_ms: 1,
                exit_code: 0,
                object: vec![7; 100].into(),
                depfile: b"a.o: a.c\n".to_vec().into(),
                extra_deps: vec![b"x".to_vec()],
                stdout: vec![].into(),
                stderr: vec![].into(),
                tree: None,
            }],
        };
        let e = r.encode();
        // The candidate count, the digest's length, the object's, the depfile's, the count of
        // extra dependencies and the first one's length.
        for at in [8, 16, 72, 180, 197, 205] {
            for v in [u64::MAX, 1 << 40, 3 << 30] {
                let mut bad = e.clone();
                bad[at..at + 8].copy_from_slice(&v.to_le_bytes());
                assert!(Record::decode(&bad).is_none(), "field at {at} = {v}");
            }
        }
    }
}
