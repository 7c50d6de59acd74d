//! Writers for every mode the client side sends, over caller-owned `Vec<u8>` buffers.
//!
//! Records are passed already encoded (MessagePack or JSON bytes): the caller encodes each
//! record once, on its own hot path, and the frame writers only copy bytes around them.
//! Writing into a `Vec<u8>` cannot fail, so these functions return nothing.

use std::io::Write;

use base64::Engine as _;

use crate::model::Options;
use crate::time::EventTime;

/// A fresh chunk id: base64 of 16 random bytes, as fluentd's clients make them.
pub fn new_chunk_id() -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    raw[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Appends an EventTime as fixext8 (ext type 0).
pub fn write_event_time(buf: &mut Vec<u8>, time: EventTime) {
    buf.push(0xd7);
    buf.push(EventTime::EXT_TYPE as u8);
    buf.extend_from_slice(&time.to_ext());
}

/// Appends a MessagePack string header and bytes.
pub fn write_str(buf: &mut Vec<u8>, s: &[u8]) {
    rmp::encode::write_str_len(buf, s.len() as u32).expect("Vec write");
    buf.extend_from_slice(s);
}

/// Appends one MessagePack string made of several parts, without joining them first.
pub fn write_str_parts(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    rmp::encode::write_str_len(buf, len as u32).expect("Vec write");
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// Appends a MessagePack map header for `len` key/value pairs.
pub fn write_map_len(buf: &mut Vec<u8>, len: u32) {
    rmp::encode::write_map_len(buf, len).expect("Vec write");
}

/// Appends a MessagePack array header for `len` items.
pub fn write_array_len(buf: &mut Vec<u8>, len: u32) {
    rmp::encode::write_array_len(buf, len).expect("Vec write");
}

/// Appends a signed integer in its shortest MessagePack form.
pub fn write_int(buf: &mut Vec<u8>, value: i64) {
    rmp::encode::write_sint(buf, value).expect("Vec write");
}

/// Appends the head of one entry `[time, record]`: the array header and the time. The caller
/// appends the record right after (e.g. written in place, without an intermediate buffer).
pub fn write_entry_head(buf: &mut Vec<u8>, time: EventTime) {
    write_array_len(buf, 2);
    write_event_time(buf, time);
}

/// Appends one PackedForward entry `[time, record]` with an already encoded record.
pub fn write_entry(buf: &mut Vec<u8>, time: EventTime, record_msgpack: &[u8]) {
    write_entry_head(buf, time);
    buf.extend_from_slice(record_msgpack);
}

/// Turns an entry written by [`write_entry`] into a Message-mode frame
/// `[tag, time, record, options]`: the entry is the same bytes minus its array header.
///
/// # Panics
/// If `entry` does not start with a 2-element array header (it was not written by
/// [`write_entry`] or [`write_entry_head`]).
pub fn write_message_from_entry(buf: &mut Vec<u8>, tag: &str, entry: &[u8], options: &Options) {
    assert_eq!(
        entry.first(),
        Some(&0x92),
        "not an entry written by write_entry"
    );
    write_array_len(buf, 4);
    write_str(buf, tag.as_bytes());
    buf.extend_from_slice(&entry[1..]);
    write_options(buf, options);
}

fn option_len(options: &Options) -> u32 {
    u32::from(options.size.is_some())
        + u32::from(options.chunk.is_some())
        + u32::from(options.compressed.is_some())
}

/// Appends the option map.
pub fn write_options(buf: &mut Vec<u8>, options: &Options) {
    rmp::encode::write_map_len(buf, option_len(options)).expect("Vec write");
    if let Some(size) = options.size {
        write_str(buf, b"size");
        rmp::encode::write_uint(buf, size).expect("Vec write");
    }
    if let Some(chunk) = &options.chunk {
        write_str(buf, b"chunk");
        write_str(buf, chunk);
    }
    if let Some(c) = options.compressed {
        write_str(buf, b"compressed");
        write_str(
            buf,
            if c == crate::Compression::Gzip {
                b"gzip"
            } else {
                b"text"
            },
        );
    }
}

/// Appends a Message-mode frame `[tag, time, record, options]` in MessagePack.
pub fn write_message(
    buf: &mut Vec<u8>,
    tag: &str,
    time: EventTime,
    record_msgpack: &[u8],
    options: &Options,
) {
    write_array_len(buf, 4);
    write_str(buf, tag.as_bytes());
    write_event_time(buf, time);
    buf.extend_from_slice(record_msgpack);
    write_options(buf, options);
}

/// Appends a Forward-mode frame from already encoded `[time, record]` entries.
pub fn write_forward(buf: &mut Vec<u8>, tag: &str, entries: &[u8], count: u32, options: &Options) {
    write_array_len(buf, 3);
    write_str(buf, tag.as_bytes());
    rmp::encode::write_array_len(buf, count).expect("Vec write");
    buf.extend_from_slice(entries);
    write_options(buf, options);
}

/// Appends a PackedForward frame, gzip-compressing the entries when `options.compressed` is
/// gzip (CompressedPackedForward).
pub fn write_packed_forward(buf: &mut Vec<u8>, tag: &str, entries: &[u8], options: &Options) {
    write_array_len(buf, 3);
    write_str(buf, tag.as_bytes());
    if options.compressed == Some(crate::Compression::Gzip) {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(entries.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(entries).expect("Vec write");
        let packed = gz.finish().expect("Vec write");
        rmp::encode::write_bin_len(buf, packed.len() as u32).expect("Vec write");
        buf.extend_from_slice(&packed);
    } else {
        rmp::encode::write_bin_len(buf, entries.len() as u32).expect("Vec write");
        buf.extend_from_slice(entries);
    }
    write_options(buf, options);
}

/// Appends a Message-mode frame in JSON framing: `[tag, seconds, record, options]`, the time
/// in whole seconds as fluent-logger-golang writes it.
pub fn write_json_message(
    buf: &mut Vec<u8>,
    tag: &str,
    seconds: u32,
    record_json: &[u8],
    chunk: Option<&str>,
) {
    write_json_message_head(buf, tag, seconds);
    buf.extend_from_slice(record_json);
    write_json_message_tail(buf, chunk.map(str::as_bytes));
}

/// Appends the head of a JSON Message-mode frame, `[tag,seconds,`; the caller appends the
/// record and then [`write_json_message_tail`].
pub fn write_json_message_head(buf: &mut Vec<u8>, tag: &str, seconds: u32) {
    buf.push(b'[');
    serde_json::to_writer(&mut *buf, tag).expect("Vec write");
    write!(buf, ",{seconds},").expect("Vec write");
}

/// Appends the end of a JSON Message-mode frame: the options (`{"chunk":id}` or `{}`) and `]`.
/// A chunk id that is not UTF-8 is written lossily (ids made by [`new_chunk_id`] are base64).
pub fn write_json_message_tail(buf: &mut Vec<u8>, chunk: Option<&[u8]>) {
    match chunk {
        Some(c) => {
            buf.extend_from_slice(b",{\"chunk\":");
            serde_json::to_writer(&mut *buf, &String::from_utf8_lossy(c)).expect("Vec write");
            buf.extend_from_slice(b"}]");
        }
        None => buf.extend_from_slice(b",{}]"),
    }
}

/// Appends an ack reply `{"ack": chunk}` in the framing the chunk arrived in. In JSON the
/// chunk must be UTF-8 to be echoed; otherwise it is written lossily.
pub fn write_ack(buf: &mut Vec<u8>, chunk: &[u8], framing: crate::Framing) {
    match framing {
        crate::Framing::MessagePack => {
            write_map_len(buf, 1);
            write_str(buf, b"ack");
            write_str(buf, chunk);
        }
        crate::Framing::Json => {
            buf.extend_from_slice(b"{\"ack\":");
            serde_json::to_writer(&mut *buf, &String::from_utf8_lossy(chunk)).expect("Vec write");
            buf.push(b'}');
        }
    }
}
