//! On-disk encoding: segment file header, record header, and a scanner that walks a segment,
//! recognising intact records, damaged regions and torn tails. See the crate docs for the layout.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::io::SpoolFile;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SPOOLSEG";
/// Format version stored after [`SEGMENT_MAGIC`].
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment file header: magic (8), version (u32), reserved (u32).
pub const SEGMENT_HEADER_LEN: u64 = 16;

/// Every record starts with these bytes (`u32` little-endian `0xA70B_9EF5`). Chosen to be
/// non-ASCII so it rarely occurs inside payloads; a false match is rejected by the checksum.
pub const RECORD_MAGIC: u32 = 0xA70B_9EF5;
/// Record header: magic u32, crc32c u32, payload length u32, seq u64, timestamp u64 (ns since
/// the Unix epoch), all little-endian.
pub const RECORD_HEADER_LEN: usize = 28;
/// Largest payload accepted by `append` (and believed by the scanner).
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;

/// Byte size on disk of a record with a payload of `len` bytes.
#[inline]
pub fn record_len(payload_len: usize) -> u64 {
    (RECORD_HEADER_LEN + payload_len) as u64
}

/// Append the encoding of one record to `out`.
#[inline]
pub fn encode_record(out: &mut Vec<u8>, seq: u64, ts_nanos: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_nanos.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The segment file header bytes.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// The clock of the record header's timestamp: wall-clock nanoseconds since the Unix epoch
/// (0 if the clock is before it).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
    pub ts_nanos: u64,
}

/// Parse a header if it has the magic and a plausible length; does not check the crc.
#[inline]
pub fn parse_header(b: &[u8]) -> Option<RecordHeader> {
    if b.len() < RECORD_HEADER_LEN {
        return None;
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    if magic != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap());
    if len as usize > MAX_PAYLOAD_LEN {
        return None;
    }
    Some(RecordHeader {
        crc: u32::from_le_bytes(b[4..8].try_into().unwrap()),
        len,
        seq: u64::from_le_bytes(b[12..20].try_into().unwrap()),
        ts_nanos: u64::from_le_bytes(b[20..28].try_into().unwrap()),
    })
}

/// Check the crc of a complete record (`b` holds exactly header + payload).
#[inline]
pub fn crc_ok(h: &RecordHeader, b: &[u8]) -> bool {
    crc32c::crc32c(&b[8..]) == h.crc
}

/// One step of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// An intact record; `payload` is `Some` when the scanner was asked to keep payloads.
    Record {
        offset: u64,
        header: RecordHeader,
        payload: Option<Vec<u8>>,
    },
    /// Bytes `[offset, offset+len)` are not valid records, and a valid record follows them (or
    /// they are a complete record with a bad checksum at the end of the data).
    Damaged { offset: u64, len: u64 },
    /// Bytes from `offset` to the end are an incomplete record (a write that never finished),
    /// possibly followed by zeros: the first `data_len` bytes hold everything non-zero.
    TornTail {
        offset: u64,
        len: u64,
        data_len: u64,
    },
    /// Bytes from `offset` to the end are all zeros: space a segment reserved
    /// ([`crate::SpoolOptions::preallocate`]) and no write reached. Inside data that was
    /// written, it is damage (a write the disk lost).
    Unused { offset: u64, len: u64 },
}

/// Buffered sequential scanner over `[start, end)` of a segment file.
pub struct Scanner {
    file: Arc<dyn SpoolFile>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    keep_payloads: bool,
}

const READ_CHUNK: usize = 256 << 10;

impl Scanner {
    pub fn new(file: Arc<dyn SpoolFile>, start: u64, end: u64, keep_payloads: bool) -> Self {
        Scanner {
            file,
            pos: start,
            end,
            buf: Vec::new(),
            buf_off: start,
            keep_payloads,
        }
    }

    /// Current position (the offset the next step starts at).
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Make `[off, off+n)` (clamped to `end`) available in the buffer; returns the slice.
    fn window(&mut self, off: u64, n: usize) -> io::Result<&[u8]> {
        let want_end = (off + n as u64).min(self.end);
        let have_end = self.buf_off + self.buf.len() as u64;
        if off < self.buf_off || want_end > have_end {
            // Refill from `off`, reading at least READ_CHUNK.
            let len = ((self.end - off) as usize).min(n.max(READ_CHUNK));
            self.buf.clear();
            self.buf.resize(len, 0);
            let mut filled = 0;
            while filled < len {
                let k = self
                    .file
                    .read_at(&mut self.buf[filled..], off + filled as u64)?;
                if k == 0 {
                    break; // file shorter than expected: treat as end
                }
                filled += k;
            }
            self.buf.truncate(filled);
            self.buf_off = off;
        }
        let s = (off - self.buf_off) as usize;
        let e = ((want_end - self.buf_off) as usize).min(self.buf.len());
        Ok(&self.buf[s.min(e)..e])
    }

    /// Is there a valid record (magic, length within `end`, crc) at `off`?
    fn valid_at(&mut self, off: u64) -> io::Result<Option<RecordHeader>> {
        let end = self.end;
        let hb = self.window(off, RECORD_HEADER_LEN)?;
        let Some(h) = parse_header(hb) else {
            return Ok(None);
        };
        let total = RECORD_HEADER_LEN + h.len as usize;
        if off + total as u64 > end {
            return Ok(None);
        }
        let rb = self.window(off, total)?;
        if rb.len() < total {
            return Ok(None);
        }
        Ok(crc_ok(&h, rb).then_some(h))
    }

    /// Find the next offset `> from` where a valid record starts.
    fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        let first = RECORD_MAGIC.to_le_bytes()[0];
        let mut off = from + 1;
        while off + RECORD_HEADER_LEN as u64 <= self.end {
            let w = self.window(off, READ_CHUNK)?;
            if w.is_empty() {
                return Ok(None);
            }
            match w.iter().position(|&b| b == first) {
                None => off += w.len() as u64,
                Some(i) => {
                    let cand = off + i as u64;
                    if self.valid_at(cand)?.is_some() {
                        return Ok(Some(cand));
                    }
                    off = cand + 1;
                }
            }
        }
        Ok(None)
    }

    /// Next item, or `None` at the end of the range.
    pub fn next_item(&mut self) -> io::Result<Option<Scanned>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let off = self.pos;
        if let Some(h) = self.valid_at(off)? {
            let total = RECORD_HEADER_LEN + h.len as usize;
            let payload = if self.keep_payloads {
                let rb = self.window(off, total)?;
                Some(rb[RECORD_HEADER_LEN..].to_vec())
            } else {
                None
            };
            self.pos = off + total as u64;
            return Ok(Some(Scanned::Record {
                offset: off,
                header: h,
                payload,
            }));
        }
        match self.resync(off)? {
            Some(next) => {
                self.pos = next;
                Ok(Some(Scanned::Damaged {
                    offset: off,
                    len: next - off,
                }))
            }
            None => {
                let len = self.end - off;
                let data_len = self.nonzero_end(off)? - off;
                if data_len == 0 {
                    self.pos = self.end;
                    return Ok(Some(Scanned::Unused { offset: off, len }));
                }
                self.pos = self.end;
                // A complete record whose checksum fails is damage, not a torn write.
                let hb = self.window(off, RECORD_HEADER_LEN)?;
                let complete = parse_header(hb)
                    .is_some_and(|h| RECORD_HEADER_LEN as u64 + h.len as u64 == len);
                Ok(Some(if complete {
                    Scanned::Damaged { offset: off, len }
                } else {
                    Scanned::TornTail {
                        offset: off,
                        len,
                        data_len,
                    }
                }))
            }
        }
    }

    /// End of the last non-zero byte in `[from, end)`, or `from` if they are all zeros.
    /// Reads backwards, so a torn write followed by megabytes of reserved zeros costs one
    /// pass over the zeros.
    fn nonzero_end(&mut self, from: u64) -> io::Result<u64> {
        let mut hi = self.end;
        while hi > from {
            let lo = hi.saturating_sub(READ_CHUNK as u64).max(from);
            let w = self.window(lo, (hi - lo) as usize)?;
            if let Some(i) = w.iter().rposition(|&b| b != 0) {
                return Ok(lo + i as u64 + 1);
            }
            hi = lo;
        }
        Ok(from)
    }

    /// Read raw bytes `[off, off+len)` (for moving damaged bytes aside).
    pub fn raw(&mut self, off: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let mut o = off;
        while o < off + len {
            let n = ((off + len - o) as usize).min(READ_CHUNK);
            let w = self.window(o, n)?;
            if w.is_empty() {
                break;
            }
            out.extend_from_slice(w);
            o += w.len() as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_roundtrip() {
        let mut v = Vec::new();
        encode_record(&mut v, 7, 99, b"hello");
        assert_eq!(v.len() as u64, record_len(5));
        let h = parse_header(&v).unwrap();
        assert_eq!((h.seq, h.ts_nanos, h.len), (7, 99, 5));
        assert!(crc_ok(&h, &v));
        v[30] ^= 1;
        assert!(!crc_ok(&h, &v));
    }
}
