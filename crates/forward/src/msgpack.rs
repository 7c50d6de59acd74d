//! Allocation-free framing of MessagePack values.
//!
//! A stream decoder must tell "this buffer holds one whole value of N bytes" from "more bytes
//! are needed" before it spends anything on parsing, and it must refuse a value that claims
//! more bytes than the frame limit without waiting for them. [`value_len`] walks the markers
//! only: it allocates nothing, it never trusts a length beyond the bytes it has, and it stops
//! at [`MAX_DEPTH`] nested containers.
//!
//! [`Scanner`] is the same walk, resumable: it keeps its position and its stack of open
//! containers between calls, so a value that arrives a few bytes at a time is scanned in time
//! linear in its length (each call looks at the new bytes, plus at most the header of the one
//! item that was cut short), not from its start on every read.
//!
//! Invariant: when [`value_len`] (or [`Scanner::advance`]) returns `Ok(Some(n))`, `buf[..n]`
//! is exactly one complete MessagePack value that `rmpv::decode::read_value` parses without
//! reading past `n`.

use crate::FrameError;

/// Deepest nesting of arrays and maps accepted in one value.
pub const MAX_DEPTH: usize = 64;

/// Length in bytes of the MessagePack value at the start of `buf`, `None` if `buf` ends
/// before it does.
///
/// # Errors
/// [`FrameError::Invalid`] for the reserved marker `0xc1` or nesting deeper than
/// [`MAX_DEPTH`]; [`FrameError::TooLarge`] as soon as the value is known to exceed `limit`.
pub fn value_len(buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
    Scanner::new().advance(buf, limit)
}

/// One MessagePack marker with its length prefix decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Header {
    Nil,
    Bool(bool),
    /// Unsigned integer (positive fixint and uint 8..64).
    Uint(u64),
    /// Signed integer (negative fixint and int 8..64).
    Int(i64),
    F32(f32),
    F64(f64),
    /// String of this many payload bytes.
    Str(usize),
    /// Binary of this many payload bytes.
    Bin(usize),
    /// Extension of this type with this many payload bytes.
    Ext(i8, usize),
    /// Array of this many values.
    Array(usize),
    /// Map of this many key/value pairs.
    Map(usize),
}

impl Header {
    /// Payload bytes following the header (strings, binaries, extensions).
    pub(crate) fn payload(self) -> usize {
        match self {
            Header::Str(n) | Header::Bin(n) | Header::Ext(_, n) => n,
            _ => 0,
        }
    }

    /// Values that follow as children (2 per map pair).
    pub(crate) fn children(self) -> u64 {
        match self {
            Header::Array(n) => n as u64,
            Header::Map(n) => 2 * n as u64,
            _ => 0,
        }
    }
}

/// Reads the header at `buf[pos..]`: `Ok(None)` when the header itself is cut short, else
/// the header and the position just past it (its payload, if any, is not checked to be
/// there).
///
/// # Errors
/// [`FrameError::Invalid`] for the reserved marker `0xc1`.
pub(crate) fn read_header(buf: &[u8], pos: usize) -> Result<Option<(Header, usize)>, FrameError> {
    let Some(&m) = buf.get(pos) else {
        return Ok(None);
    };
    let mut p = pos + 1;
    macro_rules! take {
        ($n:expr) => {{
            let Some(b) = buf.get(p..p + $n) else {
                return Ok(None);
            };
            p += $n;
            b
        }};
    }
    fn be(b: &[u8]) -> u64 {
        b.iter().fold(0u64, |n, &x| (n << 8) | u64::from(x))
    }
    let h = match m {
        0x00..=0x7f => Header::Uint(u64::from(m)),
        0xe0..=0xff => Header::Int(i64::from(m as i8)),
        0x80..=0x8f => Header::Map(usize::from(m & 0x0f)),
        0x90..=0x9f => Header::Array(usize::from(m & 0x0f)),
        0xa0..=0xbf => Header::Str(usize::from(m & 0x1f)),
        0xc0 => Header::Nil,
        0xc1 => return Err(FrameError::Invalid("reserved MessagePack marker 0xc1")),
        0xc2 => Header::Bool(false),
        0xc3 => Header::Bool(true),
        0xc4 => Header::Bin(be(take!(1)) as usize),
        0xc5 => Header::Bin(be(take!(2)) as usize),
        0xc6 => Header::Bin(be(take!(4)) as usize),
        0xc7 => {
            let n = be(take!(1)) as usize;
            Header::Ext(take!(1)[0] as i8, n)
        }
        0xc8 => {
            let n = be(take!(2)) as usize;
            Header::Ext(take!(1)[0] as i8, n)
        }
        0xc9 => {
            let n = be(take!(4)) as usize;
            Header::Ext(take!(1)[0] as i8, n)
        }
        0xca => Header::F32(f32::from_bits(be(take!(4)) as u32)),
        0xcb => Header::F64(f64::from_bits(be(take!(8)))),
        0xcc => Header::Uint(be(take!(1))),
        0xcd => Header::Uint(be(take!(2))),
        0xce => Header::Uint(be(take!(4))),
        0xcf => Header::Uint(be(take!(8))),
        0xd0 => Header::Int(i64::from(take!(1)[0] as i8)),
        0xd1 => Header::Int(i64::from(be(take!(2)) as u16 as i16)),
        0xd2 => Header::Int(i64::from(be(take!(4)) as u32 as i32)),
        0xd3 => Header::Int(be(take!(8)) as i64),
        0xd4 => Header::Ext(take!(1)[0] as i8, 1),
        0xd5 => Header::Ext(take!(1)[0] as i8, 2),
        0xd6 => Header::Ext(take!(1)[0] as i8, 4),
        0xd7 => Header::Ext(take!(1)[0] as i8, 8),
        0xd8 => Header::Ext(take!(1)[0] as i8, 16),
        0xd9 => Header::Str(be(take!(1)) as usize),
        0xda => Header::Str(be(take!(2)) as usize),
        0xdb => Header::Str(be(take!(4)) as usize),
        0xdc => Header::Array(be(take!(2)) as usize),
        0xdd => Header::Array(be(take!(4)) as usize),
        0xde => Header::Map(be(take!(2)) as usize),
        0xdf => Header::Map(be(take!(4)) as usize),
    };
    Ok(Some((h, p)))
}

/// A resumable [`value_len`]: feed it the same buffer, grown at the end, until it returns the
/// length of the value at the buffer's start.
///
/// Invariant: between calls the scanner's position is at the start of an item (never inside a
/// header or a payload), and the bytes before it are never looked at again, so the work of
/// all calls together is the value's length plus at most one header (≤ 6 bytes) per call.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// Start of the next item to read.
    pos: usize,
    /// Values still to read at each open container level (level 0: the value itself).
    pending: [u64; MAX_DEPTH + 1],
    depth: usize,
    /// Bytes of markers and length prefixes read so far, re-reads included.
    examined: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner at the start of a value.
    pub fn new() -> Self {
        let mut pending = [0; MAX_DEPTH + 1];
        pending[0] = 1;
        Self {
            pos: 0,
            pending,
            depth: 0,
            examined: 0,
        }
    }

    /// Bytes of markers and length prefixes this scanner has read (payloads are skipped,
    /// not read): the work it did, for tests and counters.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Continues the walk over `buf`, which must be the buffer of the previous calls with
    /// (possibly) more bytes at its end. Returns as [`value_len`] does.
    ///
    /// # Errors
    /// As [`value_len`]; after an error the scanner must not be used again.
    pub fn advance(&mut self, buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
        loop {
            while self.pending[self.depth] == 0 {
                if self.depth == 0 {
                    return Ok(Some(self.pos));
                }
                self.depth -= 1;
            }
            let item = self.pos;
            let Some((h, after)) = read_header(buf, item)? else {
                self.examined += (buf.len().saturating_sub(item)) as u64;
                return Ok(None);
            };
            self.examined += (after - item) as u64;
            let end = after
                .checked_add(h.payload())
                .ok_or(FrameError::TooLarge { limit })?;
            let children = h.children();
            // Every child takes at least one byte: a container claiming more children than
            // the limit allows can be refused before its bytes arrive.
            if end > limit || (end as u64).saturating_add(children) > limit as u64 {
                return Err(FrameError::TooLarge { limit });
            }
            if end > buf.len() {
                // Cut inside the payload: come back to this item's header next time.
                return Ok(None);
            }
            self.pending[self.depth] -= 1;
            self.pos = end;
            if children > 0 {
                if self.depth == MAX_DEPTH {
                    return Err(FrameError::Invalid("MessagePack nesting too deep"));
                }
                self.depth += 1;
                self.pending[self.depth] = children;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn every_prefix_of_a_value_is_incomplete_and_the_whole_is_exact() {
        use rmpv::Value;
        let v = Value::Array(vec![
            Value::from("tag"),
            Value::Map(vec![(Value::from("k"), Value::Binary(vec![1; 300]))]),
            Value::Ext(0, vec![0; 8]),
            Value::from(u64::MAX),
            Value::from(-3i64),
            Value::F64(1.5),
            Value::from("x".repeat(70_000)),
        ]);
        let bytes = encode(&v);
        for cut in 0..bytes.len() {
            assert_eq!(
                value_len(&bytes[..cut], usize::MAX).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x90]);
        assert_eq!(value_len(&more, usize::MAX).unwrap(), Some(bytes.len()));
    }

    #[test]
    fn a_huge_declared_array_is_refused_before_its_bytes_arrive() {
        let buf = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            value_len(&buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let buf = [0xc6, 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            value_len(&buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_invalid_not_a_stack_overflow() {
        let buf = vec![0x91; 10_000];
        assert!(matches!(
            value_len(&buf, usize::MAX),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn reserved_marker_is_invalid() {
        assert!(matches!(
            value_len(&[0x92, 0x01, 0xc1], 100),
            Err(FrameError::Invalid(_))
        ));
    }
}
