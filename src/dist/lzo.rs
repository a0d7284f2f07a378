//! LZO1X for distcc protocols 2 and 3: each body is one raw LZO1X stream (no header, no
//! length prefix), and an empty body is sent as zero bytes (distcc's `src/compress.c`).
//!
//! The codec is the `lzokay` crate (MIT, pure safe Rust for decompression). Its compressor
//! writes standard LZO1X streams, which distccd's miniLZO `lzo1x_decompress_safe` reads; its
//! decompressor reads the LZO1X-1 streams distccd writes with `lzo1x_1_compress`. Both
//! directions are checked against a real distccd by `tests/dist.rs` (protocol 2 and 3
//! compiles whose objects must equal the local compiler's byte for byte).
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

/// Compresses `data` to an LZO1X stream; empty input gives an empty body (as distcc sends it).
pub fn compress(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    // lzokay sizes its output buffer for the worst case, so it cannot overrun.
    lzokay::compress::compress(data).expect("LZO1X compression into a worst-case buffer")
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
            packed.len() < text.len() / 3,
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
