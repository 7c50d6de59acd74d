//! Decoding a delimited frame at a cost known before it is paid.
//!
//! Why: a decoded value costs far more than its bytes (an `rmpv::Value` is 48 bytes however
//! small its encoding, and every non-empty container or string is one more heap block), and
//! `rmpv`'s own decoder grows its vectors by doubling. An 8 MiB Forward frame of 1-byte
//! entries thus decoded into hundreds of MiB. Here:
//! - [`plan`] walks the frame's markers (no allocation) and refuses, before anything is
//!   decoded, a frame that announces more entries than allowed or whose entries are not
//!   `[time, record]` pairs; for the others it returns [`Plan::cost`], an upper bound of the
//!   heap bytes the decoded [`Frame`](crate::Frame) and its transient values take;
//! - [`decode_value`] builds `rmpv::Value`s with every vector allocated at its exact length
//!   (the lengths are bounded by the bytes at hand, which the walk checked), so the bound
//!   holds: the decoded form costs at most [`cost_of_value`] of its bytes;
//! - [`Inflater`] decompresses CompressedPackedForward entries a step at a time, so the server
//!   can charge each step to its memory budget before it is allocated.
//!
//! Invariants: nothing here panics on any input; [`decode_value`] accepts exactly what
//! [`crate::msgpack::value_len`] delimits; the cost model (`alloc`) over-approximates glibc's
//! malloc (16-byte granules, 16 bytes of header, 32 bytes minimum).

use std::io::Read;
use std::mem::size_of;

use rmpv::Value;

use crate::FrameError;
use crate::model::{DecodeLimits, Entry};
use crate::msgpack::{self, Header, MAX_DEPTH, read_header};

/// What a JSON frame may cost per byte once decoded (a `serde_json::Value` tree, then the
/// `rmpv::Value` tree made from it). Measured worst cases (tests/decode_cost.rs) stay below it.
/// Largest capacity of inflated entries: the frame limit plus one inflate step.
pub(crate) fn inflate_cap(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_add(Inflater::STEP + 1)
}

pub(crate) const JSON_COST_PER_BYTE: usize = 160;

/// An upper bound of the heap bytes [`parse_with`](crate::parse_frame_with) allocates to decode `bytes` (the decoded
/// frame, its transient values and its inflated entries), computed without decoding: what a
/// server charges to its memory budget before it decodes.
///
/// # Errors
/// What [`parse_with`](crate::parse_frame_with) would refuse before decoding: too many entries, entries that are not
/// pairs, bytes that are not MessagePack, entries that do not inflate.
pub fn decoded_cost(bytes: &[u8], limits: &DecodeLimits) -> Result<usize, FrameError> {
    match plan(bytes, limits.max_records)? {
        Plan::Ready { cost } => Ok(cost),
        Plan::Inflate {
            payload,
            outer_cost,
        } => {
            let raw = gunzip(&bytes[payload], limits.max_frame_bytes)?;
            let entries = plan_packed(&raw, limits.max_records)?;
            Ok(outer_cost.saturating_add(entries).saturating_add(alloc(
                inflate_cap(limits.max_frame_bytes).min(raw.capacity()),
            )))
        }
    }
}

/// Heap bytes a block of `n` bytes takes, allocator overhead included.
pub(crate) fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n.saturating_add(16 + 15) & !15).max(32)
    }
}

const VALUE: usize = size_of::<Value>();

/// How a delimited frame is to be decoded, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Decodable now; costs this many heap bytes at most.
    Ready {
        /// Upper bound of the decoded frame's heap bytes.
        cost: usize,
    },
    /// CompressedPackedForward: inflate `frame[payload]` first, then [`plan_packed`] the result.
    Inflate {
        /// Where the compressed entries are in the frame.
        payload: std::ops::Range<usize>,
        /// Cost of the frame's outer values (tag, options, the compressed copy).
        outer_cost: usize,
    },
}

impl Plan {
    /// The cost known so far.
    pub(crate) fn cost(&self) -> usize {
        match self {
            Plan::Ready { cost } => *cost,
            Plan::Inflate { outer_cost, .. } => *outer_cost,
        }
    }
}

/// Plans the decoding of one frame delimited by [`crate::frame::check`].
///
/// # Errors
/// [`FrameError::TooManyRecords`] when the frame announces (Forward) or holds (PackedForward)
/// more than `max_records` entries; [`FrameError::Invalid`] when an entry is not a
/// `[time, record]` pair or a packed stream is cut; [`FrameError::MessagePack`] for bytes
/// that are not MessagePack. Other shape errors are left to the decoder, which reports them.
pub(crate) fn plan(frame: &[u8], max_records: usize) -> Result<Plan, FrameError> {
    let start = frame
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(frame.len());
    if frame.get(start) == Some(&b'[') || frame.get(start) == Some(&b'{') {
        let n = frame.len() - start;
        return Ok(Plan::Ready {
            cost: n.saturating_mul(JSON_COST_PER_BYTE).saturating_add(4096),
        });
    }
    let tree = cost_of_value(frame, 0)?.0;
    let ready = |extra: usize| Plan::Ready {
        cost: tree.saturating_add(extra),
    };
    // Entries vector of a one-entry frame.
    let one_entry = alloc(size_of::<Entry>());
    let Some((Header::Array(items), mut pos)) = read_header(frame, 0)? else {
        return Ok(ready(one_entry));
    };
    if items < 2 {
        return Ok(ready(one_entry));
    }
    pos = skip(frame, pos)?; // tag
    let Some((second, body)) = read_header(frame, pos)? else {
        return Ok(ready(one_entry));
    };
    match second {
        Header::Array(n) if !is_v15_time(frame, second, body)? => {
            if n > max_records {
                return Err(FrameError::TooManyRecords { limit: max_records });
            }
            let mut p = body;
            for _ in 0..n {
                match read_header(frame, p)? {
                    Some((Header::Array(2), _)) => {}
                    _ => return Err(FrameError::Invalid("an entry must be [time, record]")),
                }
                p = skip(frame, p)?;
            }
            Ok(ready(alloc(n.saturating_mul(size_of::<Entry>()))))
        }
        Header::Bin(len) | Header::Str(len) => {
            let payload = body..body.saturating_add(len).min(frame.len());
            let after = skip(frame, pos)?;
            if items >= 3 && gzip_option(frame, after)? {
                Ok(Plan::Inflate {
                    payload,
                    outer_cost: tree,
                })
            } else {
                let packed = plan_packed(&frame[payload], max_records)?;
                Ok(ready(packed))
            }
        }
        _ => Ok(ready(one_entry)),
    }
}

/// Counts, checks and prices the entries of a (decompressed) PackedForward stream.
///
/// # Errors
/// [`FrameError::TooManyRecords`] as soon as the count passes `max_records` (the rest is not
/// looked at); [`FrameError::Invalid`] for an entry that is cut or not a `[time, record]`
/// pair.
pub(crate) fn plan_packed(mut raw: &[u8], max_records: usize) -> Result<usize, FrameError> {
    let mut count = 0usize;
    let mut cost = 0usize;
    let mut largest_pair = 0usize;
    while !raw.is_empty() {
        let len = msgpack::value_len(raw, usize::MAX)?
            .ok_or(FrameError::Invalid("truncated entry in PackedForward"))?;
        count += 1;
        if count > max_records {
            return Err(FrameError::TooManyRecords { limit: max_records });
        }
        if !matches!(read_header(raw, 0)?, Some((Header::Array(2), _))) {
            return Err(FrameError::Invalid("an entry must be [time, record]"));
        }
        let (entry_cost, _) = cost_of_value(&raw[..len], 0)?;
        // The pair's own vector is freed once its values moved into the entry.
        largest_pair = largest_pair.max(alloc(2 * VALUE));
        cost = cost.saturating_add(entry_cost);
        raw = &raw[len..];
    }
    Ok(cost
        .saturating_add(alloc(count.saturating_mul(size_of::<Entry>())))
        .saturating_add(largest_pair))
}

/// The `chunk` option of a MessagePack frame delimited by [`crate::frame::check`], read without
/// decoding its entries: the options map is the frame's last element (Message: 4 elements,
/// Forward and PackedForward: 3). `None` when the frame has no options or no chunk (or is
/// JSON, whose options this does not read). What a peer that only acks needs; a server that
/// stores entries gets the chunk from [`crate::frame::parse`] instead.
///
/// # Errors
/// [`FrameError::MessagePack`] when the frame is cut or not MessagePack.
pub fn chunk_option(frame: &[u8]) -> Result<Option<&[u8]>, FrameError> {
    let Some((Header::Array(items), mut pos)) = read_header(frame, 0)? else {
        return Ok(None);
    };
    if !(3..=4).contains(&items) {
        return Ok(None);
    }
    for _ in 0..items - 1 {
        pos = skip(frame, pos)?;
    }
    let Some((Header::Map(n), mut p)) = read_header(frame, pos)? else {
        return Ok(None);
    };
    let mut chunk = None;
    for _ in 0..n {
        let key = str_at(frame, p)?;
        p = skip(frame, p)?;
        if key == Some(&b"chunk"[..]) {
            chunk = match read_header(frame, p)? {
                Some((Header::Str(len) | Header::Bin(len), at)) => {
                    frame.get(at..at.saturating_add(len))
                }
                _ => None,
            };
        }
        p = skip(frame, p)?;
    }
    Ok(chunk)
}

/// Whether the Message-mode time at `body` is the v1.5 `[EventTime, {metadata}]` form.
fn is_v15_time(frame: &[u8], second: Header, body: usize) -> Result<bool, FrameError> {
    if second != Header::Array(2) {
        return Ok(false);
    }
    let Some((Header::Ext(0, _), _)) = read_header(frame, body)? else {
        return Ok(false);
    };
    let next = skip(frame, body)?;
    Ok(matches!(
        read_header(frame, next)?,
        Some((Header::Map(_), _))
    ))
}

/// Whether the option map at `pos` says `compressed: "gzip"` (the last such key wins, as in
/// the decoder). Anything else (no map, other values) is for the decoder to judge.
fn gzip_option(frame: &[u8], pos: usize) -> Result<bool, FrameError> {
    let Some((Header::Map(n), mut p)) = read_header(frame, pos)? else {
        return Ok(false);
    };
    let mut gzip = false;
    for _ in 0..n {
        let key = str_at(frame, p)?;
        p = skip(frame, p)?;
        if key == Some(&b"compressed"[..]) {
            gzip = str_at(frame, p)? == Some(&b"gzip"[..]);
        }
        p = skip(frame, p)?;
    }
    Ok(gzip)
}

fn str_at(frame: &[u8], pos: usize) -> Result<Option<&[u8]>, FrameError> {
    Ok(match read_header(frame, pos)? {
        Some((Header::Str(n), p)) => frame.get(p..p.saturating_add(n)),
        _ => None,
    })
}

/// Position after the value at `pos`.
fn skip(frame: &[u8], pos: usize) -> Result<usize, FrameError> {
    let rest = frame.get(pos..).unwrap_or_default();
    match msgpack::value_len(rest, usize::MAX)? {
        Some(n) => Ok(pos + n),
        None => Err(truncated()),
    }
}

fn truncated() -> FrameError {
    FrameError::MessagePack("truncated MessagePack value".into())
}

/// Heap bytes [`decode_value`] allocates for the value at `buf[pos..]`, and the position after
/// it. Iterative: no recursion, whatever the nesting.
///
/// # Errors
/// [`FrameError::MessagePack`] if the value is cut, nested deeper than [`MAX_DEPTH`] or uses
/// the reserved marker.
pub(crate) fn cost_of_value(buf: &[u8], mut pos: usize) -> Result<(usize, usize), FrameError> {
    let mut pending: [u64; MAX_DEPTH + 1] = [0; MAX_DEPTH + 1];
    pending[0] = 1;
    let mut depth = 0usize;
    let mut cost = 0usize;
    loop {
        while pending[depth] == 0 {
            if depth == 0 {
                return Ok((cost, pos));
            }
            depth -= 1;
        }
        pending[depth] -= 1;
        let (h, after) = read_header(buf, pos)
            .map_err(|e| FrameError::MessagePack(e.to_string()))?
            .ok_or_else(truncated)?;
        let end = after.checked_add(h.payload()).ok_or_else(truncated)?;
        if end > buf.len() {
            return Err(truncated());
        }
        pos = end;
        let item = match h {
            Header::Str(n) | Header::Bin(n) | Header::Ext(_, n) => alloc(n),
            Header::Array(n) => alloc(n.saturating_mul(VALUE)),
            Header::Map(n) => alloc(n.saturating_mul(2 * VALUE)),
            _ => 0,
        };
        cost = cost.saturating_add(item);
        let children = h.children();
        if children > 0 {
            if depth == MAX_DEPTH {
                return Err(FrameError::MessagePack(
                    "MessagePack nesting too deep".into(),
                ));
            }
            // Each child takes a byte at least: a count beyond the bytes left is a cut value.
            if children > (buf.len() - pos) as u64 {
                return Err(truncated());
            }
            depth += 1;
            pending[depth] = children;
        }
    }
}

/// Decodes the value at `buf[*pos..]`, advancing `pos` past it. Vectors are allocated at
/// their exact length, after checking that many values can still follow (each takes a byte).
///
/// # Errors
/// [`FrameError::MessagePack`] if the value is cut, nested deeper than [`MAX_DEPTH`] or uses
/// the reserved marker.
pub(crate) fn decode_value(buf: &[u8], pos: &mut usize) -> Result<Value, FrameError> {
    decode_at(buf, pos, 0)
}

fn decode_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Value, FrameError> {
    let item = *pos;
    let (h, after) = read_header(buf, item)
        .map_err(|e| FrameError::MessagePack(e.to_string()))?
        .ok_or_else(truncated)?;
    let end = after.checked_add(h.payload()).ok_or_else(truncated)?;
    let payload = buf.get(after..end).ok_or_else(truncated)?;
    *pos = end;
    if h.children() > 0 {
        if depth == MAX_DEPTH {
            return Err(FrameError::MessagePack(
                "MessagePack nesting too deep".into(),
            ));
        }
        if h.children() > (buf.len() - end) as u64 {
            return Err(truncated());
        }
    }
    Ok(match h {
        Header::Nil => Value::Nil,
        Header::Bool(b) => Value::Boolean(b),
        Header::Uint(u) => Value::from(u),
        Header::Int(i) => Value::from(i),
        Header::F32(f) => Value::F32(f),
        Header::F64(f) => Value::F64(f),
        Header::Str(_) => match std::str::from_utf8(payload) {
            Ok(s) => Value::String(s.to_owned().into()),
            // rmpv keeps the bytes and the error; only it can build that form.
            Err(_) => {
                let mut raw = &buf[item..end];
                rmpv::decode::read_value(&mut raw)
                    .map_err(|e| FrameError::MessagePack(e.to_string()))?
            }
        },
        Header::Bin(_) => Value::Binary(payload.to_vec()),
        Header::Ext(ty, _) => Value::Ext(ty, payload.to_vec()),
        Header::Array(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(decode_at(buf, pos, depth + 1)?);
            }
            Value::Array(items)
        }
        Header::Map(n) => {
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = decode_at(buf, pos, depth + 1)?;
                let v = decode_at(buf, pos, depth + 1)?;
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
    })
}

/// CompressedPackedForward entries, inflated a bounded step at a time.
pub(crate) struct Inflater<'a> {
    decoder: flate2::read::MultiGzDecoder<&'a [u8]>,
    out: Vec<u8>,
    cap: usize,
    done: bool,
}

impl std::fmt::Debug for Inflater<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("out", &self.out.len())
            .field("cap", &self.cap)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a> Inflater<'a> {
    /// Bytes a step may add to the output.
    pub(crate) const STEP: usize = 256 * 1024;

    /// Inflates `compressed`; more than `cap` bytes of output is an error.
    pub(crate) fn new(compressed: &'a [u8], cap: usize) -> Self {
        Self {
            decoder: flate2::read::MultiGzDecoder::new(compressed),
            out: Vec::new(),
            cap,
            done: false,
        }
    }

    /// Capacity the next step needs in all (charge it before calling [`Inflater::step`]).
    pub(crate) fn next_capacity(&self) -> usize {
        (self.out.len() + Self::STEP).min(self.cap + 1)
    }

    /// Inflates up to [`Inflater::STEP`] more bytes; `true` once all the input is inflated.
    ///
    /// # Errors
    /// [`FrameError::Decompress`] for bad gzip, [`FrameError::TooLarge`] past the cap.
    pub(crate) fn step(&mut self) -> Result<bool, FrameError> {
        if self.done {
            return Ok(true);
        }
        let target = self.next_capacity();
        self.out.reserve_exact(target - self.out.len());
        let want = (target - self.out.len()) as u64;
        let n = (&mut self.decoder)
            .take(want)
            .read_to_end(&mut self.out)
            .map_err(|e| FrameError::Decompress(e.to_string()))?;
        if self.out.len() > self.cap {
            return Err(FrameError::TooLarge { limit: self.cap });
        }
        // `take` stops at `want`: fewer bytes means the decoder reached its end.
        self.done = (n as u64) < want;
        Ok(self.done)
    }

    /// The inflated bytes (call once [`Inflater::step`] returned `true`).
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Inflates at once (no budget): for [`crate::frame::parse`].
///
/// # Errors
/// As [`Inflater::step`].
pub(crate) fn gunzip(raw: &[u8], cap: usize) -> Result<Vec<u8>, FrameError> {
    let mut inflater = Inflater::new(raw, cap);
    while !inflater.step()? {}
    Ok(inflater.finish())
}
