//! distcc's framing (distcc's `src/rpc.c`): every item starts with a 12-byte header, four
//! ASCII token characters and eight hex digits of a u32. For bulk items (`ARGV`, `DOTI`,
//! `SERR`, `DOTO`, …) the number is the byte length of the body that follows, else it is the
//! value itself (`DIST 2`, `STAT 0`).
//!
//! Reading is strict: the token must be the expected one, all eight digits must be hex, and a
//! body longer than its caller's limit is refused before a byte of it is read. Bodies are read
//! as they arrive, never allocated up front from the length a peer claims, so a hostile or
//! broken server cannot make pik reserve memory it never sends.

use std::fmt;
use std::io::{self, Read, Write};

/// A 4-character token.
pub type Token = [u8; 4];

/// The header's length on the wire.
pub const HEADER_LEN: usize = 12;

/// Memory reserved ahead of a body's bytes: more is reserved only as they arrive.
const INITIAL_RESERVE: usize = 1 << 20;

/// What went wrong reading from the peer.
#[derive(Debug)]
pub enum WireError {
    /// The stream ended; `got` bytes of the item being read had arrived.
    Eof {
        /// Bytes of the header or body read before the end.
        got: usize,
    },
    /// A read or write failed (timeouts included: `TimedOut` or `WouldBlock`).
    Io(io::Error),
    /// Bytes that are not the protocol: a wrong token, a bad number, a body that does not
    /// decompress.
    Garbage(String),
    /// A body longer than the caller accepts.
    TooLarge {
        /// Its token.
        token: Token,
        /// The length the peer announced.
        len: u32,
        /// The most the caller accepts.
        limit: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Eof { got } => write!(f, "connection closed ({got} bytes into an item)"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Garbage(s) => f.write_str(s),
            WireError::TooLarge { token, len, limit } => write!(
                f,
                "{} announces {len} bytes, more than the {limit} pik accepts",
                show(token)
            ),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Bytes from the peer as printable text, for messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Writes a header: `token` and `value` as eight lowercase hex digits.
pub fn put_int(w: &mut impl Write, token: &Token, value: u32) -> io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(token);
    h[4..].copy_from_slice(format!("{value:08x}").as_bytes());
    w.write_all(&h)
}

/// Writes a bulk item: the header with `body`'s length, then `body`.
pub fn put_bytes(w: &mut impl Write, token: &Token, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} body of {} bytes is too large for distcc",
                show(token),
                body.len()
            ),
        )
    })?;
    put_int(w, token, len)?;
    w.write_all(body)
}

/// Reads exactly `buf.len()` bytes; an early end says how many had arrived.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(WireError::Eof { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Ok(())
}

/// Parses a 12-byte header: a token of four printable ASCII characters and eight hex digits.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Token, u32), WireError> {
    let token: Token = [h[0], h[1], h[2], h[3]];
    let digits = &h[4..];
    let token_ok = token.iter().all(|c| c.is_ascii_graphic());
    let digits_ok = digits.iter().all(u8::is_ascii_hexdigit);
    if !token_ok || !digits_ok {
        return Err(WireError::Garbage(format!(
            "not a distcc header: \"{}\"",
            show(h)
        )));
    }
    // Eight hex digits always fit a u32.
    let s = std::str::from_utf8(digits).expect("hex digits are ASCII");
    let value = u32::from_str_radix(s, 16).expect("eight hex digits fit a u32");
    Ok((token, value))
}

/// Reads one header.
pub fn read_header(r: &mut impl Read) -> Result<(Token, u32), WireError> {
    let mut h = [0u8; HEADER_LEN];
    fill(r, &mut h)?;
    parse_header(&h)
}

/// Reads a header that must carry `token`; returns its number.
pub fn expect(r: &mut impl Read, token: &Token) -> Result<u32, WireError> {
    let (got, value) = read_header(r)?;
    if &got != token {
        return Err(WireError::Garbage(format!(
            "expected {}, got \"{}{value:08x}\"",
            show(token),
            show(&got)
        )));
    }
    Ok(value)
}

/// Reads a body of `len` bytes announced by `token`, refused if longer than `limit`.
pub fn read_body(
    r: &mut impl Read,
    token: &Token,
    len: u32,
    limit: usize,
) -> Result<Vec<u8>, WireError> {
    let n = len as usize;
    if n > limit {
        return Err(WireError::TooLarge {
            token: *token,
            len,
            limit,
        });
    }
    let mut body = Vec::with_capacity(n.min(INITIAL_RESERVE));
    let got = r.take(n as u64).read_to_end(&mut body)?;
    if got < n {
        return Err(WireError::Eof { got });
    }
    Ok(body)
}

/// Reads a header that must carry `token`, then its body (at most `limit` bytes).
pub fn expect_body(r: &mut impl Read, token: &Token, limit: usize) -> Result<Vec<u8>, WireError> {
    let len = expect(r, token)?;
    read_body(r, token, len, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_distcc_bytes() {
        let mut v = Vec::new();
        put_int(&mut v, b"DIST", 1).unwrap();
        put_bytes(&mut v, b"ARGV", b"aarch64-linux-gnu-gcc").unwrap();
        put_int(&mut v, b"STAT", 0xdead_beef).unwrap();
        assert_eq!(
            v,
            b"DIST00000001ARGV00000015aarch64-linux-gnu-gccSTATdeadbeef".to_vec()
        );
    }

    #[test]
    fn reads_strictly() {
        let mut r: &[u8] = b"DONE00000002SERR00000003abcSOUT0000000";
        assert_eq!(expect(&mut r, b"DONE").unwrap(), 2);
        assert_eq!(expect_body(&mut r, b"SERR", 10).unwrap(), b"abc");
        // A header cut short.
        assert!(matches!(
            expect(&mut r, b"SOUT"),
            Err(WireError::Eof { got: 11 })
        ));
        // Wrong token.
        let mut r: &[u8] = b"DOTO00000000";
        let e = expect(&mut r, b"DONE").unwrap_err().to_string();
        assert!(e.contains("expected DONE, got \"DOTO00000000\""), "{e}");
        // Not hex, a sign, a space: strtoul would take some of these, pik does not.
        for h in [
            b"DONE0000000g",
            b"DONE-0000001",
            b"DONE 0000001",
            b"DO\0E00000001",
        ] {
            let mut r: &[u8] = h;
            assert!(
                matches!(read_header(&mut r), Err(WireError::Garbage(_))),
                "{h:?}"
            );
        }
        // Upper-case digits are still a number (as distccd reads them).
        let mut r: &[u8] = b"STAT0000ABCD";
        assert_eq!(expect(&mut r, b"STAT").unwrap(), 0xabcd);
    }

    #[test]
    fn huge_lengths_are_refused_before_reading() {
        let mut r: &[u8] = b"DOTOffffffff";
        let e = expect_body(&mut r, b"DOTO", 512 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::TooLarge {
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{e}"
        );
        // A length under the limit that the peer does not send is an early end, after
        // reading only what arrived.
        let mut r: &[u8] = b"DOTO1fffffffshort";
        let e = expect_body(&mut r, b"DOTO", 512 << 20).unwrap_err();
        assert!(matches!(e, WireError::Eof { got: 5 }), "{e}");
    }
}
