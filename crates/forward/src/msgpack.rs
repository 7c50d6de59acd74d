//! Allocation-free framing of MessagePack values.
//!
//! A stream decoder must tell "this buffer holds one whole value of N bytes" from "more bytes
//! are needed" before it spends anything on parsing, and it must refuse a value that claims
//! more bytes than the frame limit without waiting for them. [`value_len`] walks the markers
//! only: it allocates nothing, it never trusts a length beyond the bytes it has, and it stops
//! at [`MAX_DEPTH`] nested containers.
//!
//! Invariant: when [`value_len`] returns `Ok(Some(n))`, `buf[..n]` is exactly one complete
//! MessagePack value that `rmpv::decode::read_value` parses without reading past `n`.

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
    // Iterative walk: `pending` counts values still to skip at each open container level.
    let mut pos = 0usize;
    let mut pending: [u64; MAX_DEPTH + 1] = [0; MAX_DEPTH + 1];
    let mut depth = 0usize;
    pending[0] = 1;
    loop {
        while pending[depth] == 0 {
            if depth == 0 {
                return Ok(Some(pos));
            }
            depth -= 1;
        }
        pending[depth] -= 1;
        let Some(&m) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        // (payload bytes to skip, length-prefix bytes, container children)
        let (skip, children): (Option<usize>, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (Some(0), 0),
            0x80..=0x8f => (Some(0), 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (Some(0), u64::from(m & 0x0f)),
            0xa0..=0xbf => (Some(usize::from(m & 0x1f)), 0),
            0xc1 => return Err(FrameError::Invalid("reserved MessagePack marker 0xc1")),
            0xc4 | 0xd9 => (read_len(buf, &mut pos, 1)?, 0),
            0xc5 | 0xda => (read_len(buf, &mut pos, 2)?, 0),
            0xc6 | 0xdb => (read_len(buf, &mut pos, 4)?, 0),
            // ext 8/16/32: length, then one type byte, then the payload
            0xc7 => (read_len(buf, &mut pos, 1)?.map(|n| n + 1), 0),
            0xc8 => (read_len(buf, &mut pos, 2)?.map(|n| n + 1), 0),
            0xc9 => (read_len(buf, &mut pos, 4)?.map(|n| n + 1), 0),
            0xca => (Some(4), 0),
            0xcb => (Some(8), 0),
            0xcc | 0xd0 => (Some(1), 0),
            0xcd | 0xd1 => (Some(2), 0),
            0xce | 0xd2 => (Some(4), 0),
            0xcf | 0xd3 => (Some(8), 0),
            0xd4 => (Some(2), 0),
            0xd5 => (Some(3), 0),
            0xd6 => (Some(5), 0),
            0xd7 => (Some(9), 0),
            0xd8 => (Some(17), 0),
            0xdc => match read_len(buf, &mut pos, 2)? {
                Some(n) => (Some(0), n as u64),
                None => (None, 0),
            },
            0xdd => match read_len(buf, &mut pos, 4)? {
                Some(n) => (Some(0), n as u64),
                None => (None, 0),
            },
            0xde => match read_len(buf, &mut pos, 2)? {
                Some(n) => (Some(0), 2 * n as u64),
                None => (None, 0),
            },
            0xdf => match read_len(buf, &mut pos, 4)? {
                Some(n) => (Some(0), 2 * n as u64),
                None => (None, 0),
            },
        };
        let Some(skip) = skip else {
            return Ok(None);
        };
        let end = pos
            .checked_add(skip)
            .ok_or(FrameError::TooLarge { limit })?;
        // Every child takes at least one byte: a container claiming more children than the
        // limit allows can be refused before its bytes arrive.
        if end > limit || (end as u64).saturating_add(children) > limit as u64 {
            return Err(FrameError::TooLarge { limit });
        }
        if end > buf.len() {
            return Ok(None);
        }
        pos = end;
        if children > 0 {
            if depth == MAX_DEPTH {
                return Err(FrameError::Invalid("MessagePack nesting too deep"));
            }
            depth += 1;
            pending[depth] = children;
        }
    }
}

fn read_len(buf: &[u8], pos: &mut usize, width: usize) -> Result<Option<usize>, FrameError> {
    let Some(bytes) = buf.get(*pos..*pos + width) else {
        return Ok(None);
    };
    *pos += width;
    let mut n = 0usize;
    for &b in bytes {
        n = (n << 8) | usize::from(b);
    }
    Ok(Some(n))
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
