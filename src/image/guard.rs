//! A pass-through reader that follows the tar stream's block structure ahead of the `tar`
//! crate and stops what it would buffer or expand without bound.
//!
//! The `tar` crate reads PAX records and GNU long names whole into memory and expands GNU
//! sparse files into their full size. So, before it sees them, extension headers larger than
//! [`UnpackLimits::max_header`](super::UnpackLimits::max_header) and sparse entries are refused.
//! Sizes follow the same rule as the `tar` crate (and Go and libarchive): a PAX `size` record
//! overrides the next entry's header size.

use std::io::{self, Read};

/// Why the guard stopped the stream (carried inside the `io::Error`).
#[derive(Debug)]
pub(crate) enum Refusal {
    /// An extension header's size, and the limit.
    HeaderTooLarge(u64, u64),
    /// A GNU sparse entry.
    Sparse,
    /// A size field that is not a number.
    BadSize,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::HeaderTooLarge(size, limit) => {
                write!(f, "an extension header of {size} bytes (limit {limit})")
            }
            Refusal::Sparse => f.write_str("GNU sparse entries are not supported"),
            Refusal::BadSize => f.write_str("a header's size field is not a number"),
        }
    }
}

impl std::error::Error for Refusal {}

enum State {
    /// Collecting a 512-byte header.
    Header { have: usize },
    /// Passing an entry's data and padding; PAX data is kept to find a `size` record.
    Data { remaining: u64, pax: Option<Vec<u8>> },
    /// After the first zero block: the rest passes through unexamined.
    End,
}

pub(crate) struct TarGuard<R> {
    inner: R,
    max_header: u64,
    header: [u8; 512],
    state: State,
    /// A PAX `size` for the next ordinary entry.
    size_override: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub(crate) fn new(inner: R, max_header: u64) -> TarGuard<R> {
        TarGuard {
            inner,
            max_header,
            header: [0; 512],
            state: State::Header { have: 0 },
            size_override: None,
        }
    }

    fn refuse(why: Refusal) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Decides what follows a complete header.
    fn examine(&mut self) -> io::Result<State> {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            return Ok(State::End);
        }
        let kind = h[156];
        let size = parse_size(&h[124..136]).ok_or_else(|| Self::refuse(Refusal::BadSize))?;
        let extension = matches!(kind, b'x' | b'g' | b'L' | b'K');
        if kind == b'S' {
            return Err(Self::refuse(Refusal::Sparse));
        }
        let size = if extension {
            if size > self.max_header {
                return Err(Self::refuse(Refusal::HeaderTooLarge(size, self.max_header)));
            }
            size
        } else {
            self.size_override.take().unwrap_or(size)
        };
        let padded = size.checked_add(511).ok_or_else(|| Self::refuse(Refusal::BadSize))? & !511;
        let pax = (kind == b'x').then(Vec::new);
        if padded == 0 {
            self.finish(pax);
            return Ok(State::Header { have: 0 });
        }
        Ok(State::Data { remaining: padded, pax })
    }

    /// At the end of an entry's data: a PAX header's `size` applies to the next entry.
    fn finish(&mut self, pax: Option<Vec<u8>>) {
        if let Some(pax) = pax {
            self.size_override = pax_size(&pax);
        }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.state {
            State::End => self.inner.read(out),
            State::Header { have } => {
                let start = *have;
                let want = out.len().min(512 - start);
                let n = self.inner.read(&mut out[..want])?;
                self.header[start..start + n].copy_from_slice(&out[..n]);
                if start + n == 512 {
                    self.state = self.examine()?;
                } else {
                    self.state = State::Header { have: start + n };
                }
                Ok(n)
            }
            State::Data { remaining, pax } => {
                let want = out.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut out[..want])?;
                if let Some(pax) = pax {
                    pax.extend_from_slice(&out[..n]);
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    let pax = pax.take();
                    self.finish(pax);
                    self.state = State::Header { have: 0 };
                }
                Ok(n)
            }
        }
    }
}

/// A tar numeric field: octal digits (space or NUL padded), or base-256 when the high bit of
/// the first byte is set.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits: Vec<u8> =
        field.iter().copied().skip_while(|&b| b == b' ').take_while(|&b| b != 0 && b != b' ').collect();
    if digits.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(&digits).ok()?;
    u64::from_str_radix(text, 8).ok()
}

/// The `size` record of PAX extension data (`<len> size=<n>\n` records).
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return found;
        }
        let record = &rest[space + 1..len];
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            found = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_octal_or_base_256() {
        assert_eq!(parse_size(b"00000000012\0"), Some(10));
        assert_eq!(parse_size(b"         12 "), Some(10));
        assert_eq!(parse_size(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_size(b"0000000001x\0"), None);
    }

    #[test]
    fn pax_size_record_is_found() {
        assert_eq!(pax_size(b"12 size=345\n20 path=a/long/name\n"), Some(345));
        assert_eq!(pax_size(b"20 path=a/long/name\n"), None);
        assert_eq!(pax_size(b"999 size=1\n"), None);
    }
}
