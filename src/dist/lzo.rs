//! LZO1X for distcc protocols 2 and 3: each body is one raw LZO1X stream (no header, no
//! length prefix), and an empty body is sent as zero bytes (distcc's `src/compress.c`).
//!
//! Compression is pik's own LZO1X-1-style compressor (below): greedy, one hash table of 4-byte
//! sequences, matches up to 48 KiB back, written in the LZO1X instruction set (M2, M3, M4 and
//! literal runs; never M1) that any LZO1X decompressor reads. It compressed preprocessed C at
//! about 200 MB/s, 4.8:1, in a dev build here; the `lzokay` crate's compressor writes valid
//! streams too but searches exhaustively (5 MB/s, 6.2:1 on the same file), too slow to run on
//! every compile. Decompression is the `lzokay` crate's (MIT, safe Rust, bounds-checked), which
//! reads the LZO1X-1 streams distccd writes with miniLZO. The GPL-licensed LZO crates
//! (`lzo1x`, `rust-lzo`, `minilzo-rs`) were not taken: pik is MIT.
//!
//! Both directions are checked against a real distccd by `tests/dist.rs`: protocol 2 and 3
//! compiles, small and a few hundred KiB large, whose objects must equal the local
//! compiler's byte for byte.
//!
//! An LZO stream does not say how long its output is: decompression grows its buffer as
//! needed, up to the caller's limit, and a stream that would exceed it is an error.

use std::fmt;

/// Why a body did not decompress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzoError {
    /// The stream is not valid LZO1X (truncated, a bad back-reference, trailing bytes).
    Corrupt(String),
    /// It decompresses to more than the limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for LzoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LzoError::Corrupt(e) => write!(f, "not a valid LZO1X stream: {e}"),
            LzoError::TooLarge { limit } => {
                write!(f, "LZO1X stream expands to more than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for LzoError {}

/// Farthest back a match may reach (M4's limit).
const MAX_DISTANCE: usize = 0xBFFF;
/// M2: length 3-8, distance up to 2 KiB, one extra byte.
const M2_MAX_LEN: usize = 8;
const M2_MAX_DISTANCE: usize = 0x800;
/// M3: distance up to 16 KiB, length in 5 bits (or extended), two extra bytes.
const M3_MAX_DISTANCE: usize = 0x4000;
const M3_MARKER: u8 = 0x20;
/// M4: distance 16-48 KiB, length in 3 bits (or extended); distance 16384 ends the stream.
const M4_MARKER: u8 = 0x10;
const HASH_BITS: u32 = 14;

/// Compresses `data` to an LZO1X stream; empty input gives an empty body (as distcc sends it).
pub fn compress(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut w = Writer {
        out: Vec::with_capacity(data.len() + data.len() / 16 + 64),
        state_at: None,
    };
    // Positions + 1 of the last 4-byte sequence seen with each hash (0: none).
    let mut table = vec![0u32; 1 << HASH_BITS];
    let (mut i, mut literals) = (0, 0);
    while i + 4 <= data.len() {
        let h = hash(&data[i..i + 4]);
        let candidate = table[h] as usize;
        table[h] = (i + 1) as u32;
        if candidate > 0 {
            let c = candidate - 1;
            let distance = i - c;
            if distance <= MAX_DISTANCE && data[c..c + 4] == data[i..i + 4] {
                let len = 4 + common_prefix(&data[c + 4..], &data[i + 4..]);
                w.literals(&data[literals..i]);
                w.matched(len, distance);
                // Remember the sequences inside the match too: later matches find closer
                // and longer candidates.
                for j in (i + 1..i + len).filter(|j| j + 4 <= data.len()) {
                    table[hash(&data[j..j + 4])] = (j + 1) as u32;
                }
                i += len;
                literals = i;
                continue;
            }
        }
        // Step faster through data that does not compress, as lzo1x_1 does, but at most 16
        // bytes at a time, so a repeat after a long stretch of noise is still found.
        i += 1 + ((i - literals) >> 5).min(15);
    }
    w.literals(&data[literals..]);
    // The end: an M4 of length 3 at distance 16384.
    w.out.extend_from_slice(&[M4_MARKER | 1, 0, 0]);
    w.out
}

fn hash(seq: &[u8]) -> usize {
    let v = u32::from_le_bytes(seq.try_into().expect("4 bytes"));
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Builds the instruction stream.
struct Writer {
    out: Vec<u8>,
    /// Where the last match keeps its 2-bit count of literals that follow it (None before the
    /// first match).
    state_at: Option<usize>,
}

impl Writer {
    /// A run of literals: 1-3 after a match ride in its low 2 bits; a first run gets the
    /// stream's opening form; otherwise a literal instruction.
    fn literals(&mut self, run: &[u8]) {
        let n = run.len();
        if n == 0 {
            return;
        }
        match self.state_at {
            Some(at) if n <= 3 => self.out[at] |= n as u8,
            None if n <= 238 => self.out.push(17 + n as u8),
            _ if n <= 18 => self.out.push(n as u8 - 3),
            _ => {
                self.out.push(0);
                self.extended(n - 18);
            }
        }
        self.out.extend_from_slice(run);
    }

    /// A match of `len` (≥ 4) bytes `distance` (1..=MAX_DISTANCE) back.
    fn matched(&mut self, len: usize, distance: usize) {
        let d = distance - 1;
        if len <= M2_MAX_LEN && distance <= M2_MAX_DISTANCE {
            self.out.push((((len - 1) << 5) | ((d & 7) << 2)) as u8);
            self.state_at = Some(self.out.len() - 1);
            self.out.push((d >> 3) as u8);
            return;
        }
        let value = if distance <= M3_MAX_DISTANCE {
            self.length(M3_MARKER, len, 33);
            d << 2
        } else {
            let far = distance - M3_MAX_DISTANCE;
            self.length(M4_MARKER | (((far >> 14) & 1) << 3) as u8, len, 9);
            (far & 0x3FFF) << 2
        };
        self.state_at = Some(self.out.len());
        self.out.extend_from_slice(&(value as u16).to_le_bytes());
    }

    /// An M3/M4 opcode with its length: in the opcode's low bits when it fits (up to `short`
    /// bytes), else 0 there and the rest extended.
    fn length(&mut self, marker: u8, len: usize, short: usize) {
        if len <= short {
            self.out.push(marker | (len - 2) as u8);
        } else {
            self.out.push(marker);
            self.extended(len - short);
        }
    }

    /// An extended length `n` ≥ 1: a zero byte per 255, then the rest (1-255).
    fn extended(&mut self, n: usize) {
        let zeros = (n - 1) / 255;
        self.out.resize(self.out.len() + zeros, 0);
        self.out.push((n - zeros * 255) as u8);
    }
}

/// Decompresses an LZO1X stream into at most `limit` bytes; an empty body is empty.
pub fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, LzoError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    // Objects compress about 2:1 and sources 4:1 (distcc's man page): start near that, and
    // double while the output does not fit.
    let mut size = data.len().saturating_mul(4).max(64 << 10).min(limit);
    loop {
        let mut out = vec![0u8; size];
        match lzokay::decompress::decompress(data, &mut out) {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(lzokay::Error::OutputOverrun) if size < limit => {
                size = size.saturating_mul(2).min(limit);
            }
            Err(lzokay::Error::OutputOverrun) => return Err(LzoError::TooLarge { limit }),
            Err(e) => return Err(LzoError::Corrupt(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("int v{} = {};\n", i % 977, i % 13).into_bytes())
            .collect();
        let packed = compress(&text);
        assert!(
            packed.len() < text.len() / 2,
            "{} → {}",
            text.len(),
            packed.len()
        );
        assert_eq!(decompress(&packed, 64 << 20).unwrap(), text);
        assert_eq!(compress(b""), b"");
        assert_eq!(decompress(b"", 10).unwrap(), b"");
        let small = compress(b"x");
        assert_eq!(decompress(&small, 10).unwrap(), b"x");
    }

    #[test]
    fn a_known_stream() {
        // A hand-checked LZO1X stream of 512 zero bytes: a literal, one long match, the end.
        let stream = [0x12, 0, 0x20, 0, 0xdf, 0, 0, 0x11, 0, 0];
        assert_eq!(decompress(&stream, 1 << 20).unwrap(), vec![0u8; 512]);
    }

    /// A deterministic byte source (xorshift).
    fn noise(seed: u64, n: usize, alphabet: u8) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % alphabet as u64) as u8
            })
            .collect()
    }

    /// Every instruction form: short and long literal runs, M2/M3/M4 matches with short and
    /// extended lengths, distances up to 48 KiB, overlapping runs, every tail length.
    #[test]
    fn compressor_round_trips_through_an_independent_decoder() {
        let mut inputs: Vec<Vec<u8>> = (1..300).map(|n| noise(n as u64, n, 4)).collect();
        inputs.extend((1..300).map(|n| noise(7 + n as u64, n, 255)));
        inputs.push(vec![0u8; 100_000]);
        inputs.push(noise(1, 300_000, 255));
        // Far repeats: the same 20 KiB block 40 KiB apart, with noise between.
        let block = noise(2, 20_000, 255);
        let mut far = block.clone();
        far.extend(noise(3, 20_000, 255));
        far.extend(&block);
        far.extend(noise(4, 1000, 2));
        inputs.push(far);
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("static int v{} = {};\n", i % 5000, i % 97).into_bytes())
            .collect();
        inputs.push(text);
        for (k, data) in inputs.iter().enumerate() {
            let packed = compress(data);
            let mut out = vec![0u8; data.len() + 16];
            let n = lzokay::decompress::decompress(&packed, &mut out)
                .unwrap_or_else(|e| panic!("input {k} ({} bytes): {e}", data.len()));
            assert_eq!(&out[..n], &data[..], "input {k}");
            assert!(
                packed.len() <= data.len() + data.len() / 16 + 64 + 3,
                "input {k}"
            );
        }
    }

    /// Random bytes repeated 30 KiB later compress only through M4 matches.
    #[test]
    fn far_matches_are_used() {
        let a = noise(11, 20_000, 255);
        let mut data = a.clone();
        data.extend(noise(12, 10_000, 255));
        data.extend(&a);
        let packed = compress(&data);
        assert!(packed.len() < 32_000, "{}", packed.len());
        assert_eq!(decompress(&packed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn refuses_garbage_and_bombs() {
        assert!(matches!(
            decompress(b"HTTP/1.1 400 Bad Request", 1 << 20),
            Err(LzoError::Corrupt(_))
        ));
        let zeros = compress(&vec![0u8; 4 << 20]);
        assert!(zeros.len() < 64 << 10);
        assert_eq!(
            decompress(&zeros, 1 << 20),
            Err(LzoError::TooLarge { limit: 1 << 20 })
        );
        // Truncated.
        let packed = compress(b"hello hello hello hello hello hello");
        assert!(decompress(&packed[..packed.len() - 3], 1 << 20).is_err());
    }
}
