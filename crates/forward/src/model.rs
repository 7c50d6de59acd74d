//! The data the codec produces and the writers consume: frames, entries, options, the wire's
//! modes and framings, and the decoder's limits. A leaf module (it uses nothing of the codec),
//! so that decoding, encoding, scanning and the server can all share these types without
//! importing each other.

use rmpv::Value;

use crate::time::EventTime;

/// Default largest frame accepted, in bytes (also the cap on decompressed entries). Decoded
/// values take up to ~40 bytes per encoded byte (a frame of nils), so this bounds a
/// connection's decoded frame near 320 MiB in the worst case; our client's chunks are ~1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Default most entries one frame may carry. Our client's chunks hold a few thousand; a
/// frame announcing more is refused before its entries are decoded (an 8 KiB gzip member can
/// inflate to millions of 3-byte entries, each of which would become a row downstream).
pub const DEFAULT_MAX_RECORDS_PER_FRAME: usize = 100_000;

/// What a decoder accepts: bytes and entries per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest frame, compressed or not, and largest decompressed entry stream.
    pub max_frame_bytes: usize,
    /// Most entries in one frame.
    pub max_records: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_records: DEFAULT_MAX_RECORDS_PER_FRAME,
        }
    }
}

/// How a frame was encoded on the wire; acks are answered in the same framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// MessagePack, the protocol's own encoding.
    MessagePack,
    /// JSON arrays, as fluentd's `in_forward` also accepts.
    Json,
}

/// The event mode a frame used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One event: `[tag, time, record, option?]`.
    Message,
    /// `[tag, [[time, record], ...], option?]`.
    Forward,
    /// `[tag, entries-as-bin-or-str, option?]`.
    PackedForward,
    /// PackedForward whose entries are gzip-compressed.
    CompressedPackedForward,
}

/// Compression named by the `compressed` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `"text"` or absent.
    None,
    /// `"gzip"`.
    Gzip,
}

/// The option map that may close a frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Number of entries the sender says the frame carries.
    pub size: Option<u64>,
    /// Chunk id; when present the receiver must answer `{"ack": chunk}`. Opaque bytes.
    pub chunk: Option<Vec<u8>>,
    /// Compression of PackedForward entries.
    pub compressed: Option<Compression>,
}

/// One event of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Event time.
    pub time: EventTime,
    /// The record, normally a map.
    pub record: Value,
    /// v1.5 per-entry metadata (`[EventTime, {metadata}]`), when sent.
    pub metadata: Option<Value>,
}

/// One decoded frame: the events of one tag and the options.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Tag of every entry.
    pub tag: String,
    /// The events, in wire order.
    pub entries: Vec<Entry>,
    /// Options; `chunk` asks for an ack.
    pub options: Options,
    /// Event mode used on the wire.
    pub mode: Mode,
    /// Framing used on the wire.
    pub framing: Framing,
}

/// Result of [`check_frame`](crate::check_frame) on a buffer that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `buf[..len]` is one complete frame (including leading whitespace of JSON framing).
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
}
