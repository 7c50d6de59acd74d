//! Forward protocol frames, pure over bytes: no sockets, no buffers of its own.
//!
//! [`check`] tells whether a buffer starts with one whole frame (and how long it is) without
//! allocating; [`parse`] turns exactly those bytes into a [`Frame`]. The split follows tokio's
//! mini-redis so that the connection can keep partial frames in its buffer and the pure part
//! can be fuzzed and property-tested alone.
//!
//! Accepted input, as fluentd's `in_forward` accepts it:
//! - MessagePack framing, every mode of Forward Protocol v1: Message `[tag, time, record,
//!   option?]`, Forward `[tag, [[time, record], ...], option?]`, PackedForward `[tag,
//!   bin|str, option?]` and CompressedPackedForward (option `compressed: "gzip"`, one or several
//!   concatenated gzip members);
//! - time as EventTime (ext type 0 as fixext8 or ext8), integer seconds, float seconds, or the
//!   v1.5 form `[EventTime, {metadata}]`;
//! - options `size`, `chunk` (kept as opaque bytes, echoed byte for byte), `compressed`;
//!   unknown keys are ignored;
//! - JSON framing: a frame whose first byte (after whitespace) is `[` is a JSON array with the
//!   same shapes (MessagePack frames never start with that byte: it is a positive fixint).
//!
//! Invariants: nothing here panics or allocates in proportion to a length it has not seen
//! the bytes for; a frame larger than the limit, or decompressing beyond it, is an error.

use rmpv::Value;

use crate::FrameError;
use crate::model::{Check, Compression, DecodeLimits, Entry, Frame, Framing, Mode, Options};
use crate::msgpack;
use crate::time::EventTime;

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Finds the end of the first frame in `buf`.
///
/// # Errors
/// [`FrameError::TooLarge`] once the frame is known to exceed `max_frame`;
/// [`FrameError::Invalid`] or [`FrameError::Json`] for bytes that can never become a frame.
pub fn check(buf: &[u8], max_frame: usize) -> Result<Check, FrameError> {
    let start = buf.iter().position(|&b| !is_json_ws(b));
    // Whitespace counts toward the frame: a peer cannot grow the buffer without bound by
    // sending nothing else.
    let Some(start) = start.filter(|&s| s < max_frame) else {
        return if buf.len() >= max_frame {
            Err(FrameError::TooLarge { limit: max_frame })
        } else {
            Ok(Check::Incomplete)
        };
    };
    match buf[start] {
        b'[' | b'{' => check_json(buf, start, max_frame),
        0x90..=0x9f | 0xdc | 0xdd => {
            if start > 0 {
                return Err(FrameError::Invalid("whitespace before a MessagePack frame"));
            }
            Ok(match msgpack::value_len(buf, max_frame)? {
                Some(n) => Check::Complete(n),
                None => Check::Incomplete,
            })
        }
        _ => Err(FrameError::Invalid("a frame must be an array")),
    }
}

/// `max` bounds the whole frame, leading whitespace included.
fn check_json(buf: &[u8], start: usize, max: usize) -> Result<Check, FrameError> {
    let window = &buf[start..buf.len().min(max)];
    let incomplete = || {
        if start + window.len() >= max {
            Err(FrameError::TooLarge { limit: max })
        } else {
            Ok(Check::Incomplete)
        }
    };
    let mut stream =
        serde_json::Deserializer::from_slice(window).into_iter::<serde::de::IgnoredAny>();
    match stream.next() {
        Some(Ok(_)) => Ok(Check::Complete(start + stream.byte_offset())),
        Some(Err(e)) if e.is_eof() => incomplete(),
        // serde_json reports a number cut after `-`, `.`, `e` or an exponent sign as an invalid
        // number, not as EOF: it is incomplete if one more digit would make it parse on.
        Some(Err(_))
            if matches!(window.last(), Some(b'-' | b'+' | b'.' | b'e' | b'E'))
                && number_cut_short(window) =>
        {
            incomplete()
        }
        Some(Err(e)) => Err(FrameError::Json(e.to_string())),
        None => incomplete(),
    }
}

/// Whether `window` followed by a digit is still a valid JSON prefix.
fn number_cut_short(window: &[u8]) -> bool {
    let extended = std::io::Read::chain(window, &b"0"[..]);
    let mut stream =
        serde_json::Deserializer::from_reader(extended).into_iter::<serde::de::IgnoredAny>();
    matches!(stream.next(), Some(Err(e)) if e.is_eof())
}

/// Parses one complete frame, as delimited by [`check`], with no limit on its entries
/// (see [`parse_with`]).
///
/// # Errors
/// [`FrameError`] describing the first thing that does not fit the protocol.
pub fn parse(bytes: &[u8], max_frame: usize) -> Result<Frame, FrameError> {
    parse_with(
        bytes,
        &DecodeLimits {
            max_frame_bytes: max_frame,
            max_records: usize::MAX,
        },
    )
}

/// Parses one complete frame, as delimited by [`check`], within `limits`: a frame with more
/// entries than `limits.max_records` is refused before its entries are decoded, and entries
/// that are not `[time, record]` pairs are refused before anything is decoded. The decoded
/// form takes at most a bounded multiple of the frame's (decompressed) bytes.
///
/// # Errors
/// [`FrameError::TooManyRecords`] past the entry limit; otherwise [`FrameError`] describing the
/// first thing that does not fit the protocol.
pub fn parse_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Frame, FrameError> {
    let inflated = match crate::decode::plan(bytes, limits.max_records)? {
        crate::decode::Plan::Ready { .. } => None,
        crate::decode::Plan::Inflate { payload, .. } => {
            let raw = crate::decode::gunzip(&bytes[payload], limits.max_frame_bytes)?;
            crate::decode::plan_packed(&raw, limits.max_records)?;
            Some(raw)
        }
    };
    decode_frame(bytes, inflated, limits)
}

/// Decodes a frame that [`crate::decode::plan`] accepted; `inflated` holds its decompressed
/// entries when the plan asked for them.
pub(crate) fn decode_frame(
    bytes: &[u8],
    inflated: Option<Vec<u8>>,
    limits: &DecodeLimits,
) -> Result<Frame, FrameError> {
    let start = bytes
        .iter()
        .position(|&b| !is_json_ws(b))
        .unwrap_or(bytes.len());
    let (value, framing) = match bytes.get(start) {
        Some(b'[') => (
            json_to_value(
                serde_json::from_slice(&bytes[start..])
                    .map_err(|e| FrameError::Json(e.to_string()))?,
            ),
            Framing::Json,
        ),
        Some(b'{') => return Err(FrameError::Invalid("a frame must be an array")),
        _ => (
            crate::decode::decode_value(bytes, &mut 0)?,
            Framing::MessagePack,
        ),
    };
    frame_from_value(value, framing, limits, inflated)
}

fn read_value(mut bytes: &[u8]) -> Result<Value, FrameError> {
    // rmpv spends 2 units of depth per container and 3 per string leaf: allow whatever
    // `msgpack::value_len` accepts (MAX_DEPTH containers with children, one more empty one,
    // then a leaf) so that a reply `check_reply` delimited never fails here for its depth.
    rmpv::decode::read_value_with_max_depth(&mut bytes, 2 * (msgpack::MAX_DEPTH + 1) + 3)
        .map_err(|e| FrameError::MessagePack(e.to_string()))
}

fn frame_from_value(
    value: Value,
    framing: Framing,
    limits: &DecodeLimits,
    inflated: Option<Vec<u8>>,
) -> Result<Frame, FrameError> {
    let Value::Array(items) = value else {
        return Err(FrameError::Invalid("a frame must be an array"));
    };
    let mut items = items.into_iter();
    let tag = match items.next() {
        Some(Value::String(s)) => s
            .into_str()
            .ok_or(FrameError::Invalid("tag is not UTF-8"))?,
        Some(_) => return Err(FrameError::Invalid("tag must be a string")),
        None => return Err(FrameError::Invalid("empty frame")),
    };
    let second = items
        .next()
        .ok_or(FrameError::Invalid("frame has no entries"))?;
    let rest: Vec<Value> = items.collect();
    let (entries, mode, options) = match second {
        Value::Array(list) if !is_v15_time(&list) => {
            if rest.len() > 1 {
                return Err(FrameError::Invalid(
                    "Forward mode takes at most an option after its entries",
                ));
            }
            let options = parse_options(rest.into_iter().next())?;
            if list.len() > limits.max_records {
                return Err(FrameError::TooManyRecords {
                    limit: limits.max_records,
                });
            }
            // Exact capacity: a collect through `Result` would grow by doubling.
            let mut entries = Vec::with_capacity(list.len());
            for pair in list {
                entries.push(entry_from_pair(pair)?);
            }
            (entries, Mode::Forward, options)
        }
        Value::Binary(_) | Value::String(_) => {
            if rest.len() > 1 {
                return Err(FrameError::Invalid(
                    "PackedForward mode takes at most an option after its entries",
                ));
            }
            let options = parse_options(rest.into_iter().next())?;
            let raw = match second {
                Value::Binary(b) => b,
                Value::String(s) => s.into_bytes(),
                _ => unreachable!("matched above"),
            };
            let (raw, mode) = match options.compressed {
                Some(Compression::Gzip) => {
                    let inflated = match inflated {
                        Some(v) => v,
                        None => crate::decode::gunzip(&raw, limits.max_frame_bytes)?,
                    };
                    (inflated, Mode::CompressedPackedForward)
                }
                _ => (raw, Mode::PackedForward),
            };
            (unpack_entries(&raw, limits.max_records)?, mode, options)
        }
        time => {
            let mut rest = rest.into_iter();
            let record = rest
                .next()
                .ok_or(FrameError::Invalid("Message mode needs a record"))?;
            let options = parse_options(rest.next())?;
            if rest.next().is_some() {
                return Err(FrameError::Invalid(
                    "Message mode has at most four elements",
                ));
            }
            let (time, metadata) = parse_time(time)?;
            (
                vec![Entry {
                    time,
                    record,
                    metadata,
                }],
                Mode::Message,
                options,
            )
        }
    };
    Ok(Frame {
        tag,
        entries,
        options,
        mode,
        framing,
    })
}

/// `[EventTime, {metadata}]` in Message mode looks like an array: tell it from a Forward list.
fn is_v15_time(list: &[Value]) -> bool {
    list.len() == 2 && matches!(list[0], Value::Ext(0, _)) && matches!(list[1], Value::Map(_))
}

fn entry_from_pair(pair: Value) -> Result<Entry, FrameError> {
    let Value::Array(mut pair) = pair else {
        return Err(FrameError::Invalid("an entry must be [time, record]"));
    };
    if pair.len() != 2 {
        return Err(FrameError::Invalid("an entry must be [time, record]"));
    }
    let record = pair.pop().expect("length checked");
    let (time, metadata) = parse_time(pair.pop().expect("length checked"))?;
    Ok(Entry {
        time,
        record,
        metadata,
    })
}

fn unpack_entries(raw: &[u8], max_records: usize) -> Result<Vec<Entry>, FrameError> {
    // A first pass counts (and bounds) the entries, so the vector is allocated once.
    let mut count = 0usize;
    let mut rest = raw;
    while !rest.is_empty() {
        // No limit beyond the bytes at hand (already capped): running past them is truncation.
        let len = msgpack::value_len(rest, usize::MAX)?
            .ok_or(FrameError::Invalid("truncated entry in PackedForward"))?;
        count += 1;
        if count > max_records {
            return Err(FrameError::TooManyRecords { limit: max_records });
        }
        rest = &rest[len..];
    }
    let mut entries = Vec::with_capacity(count);
    let mut pos = 0;
    while pos < raw.len() {
        let value = crate::decode::decode_value(raw, &mut pos)?;
        entries.push(entry_from_pair(value)?);
    }
    Ok(entries)
}

fn parse_time(v: Value) -> Result<(EventTime, Option<Value>), FrameError> {
    match v {
        Value::Array(mut pair) if pair.len() == 2 => {
            let metadata = pair.pop().expect("length checked");
            let (time, _) = parse_time(pair.pop().expect("length checked"))?;
            if !matches!(metadata, Value::Map(_)) {
                return Err(FrameError::Invalid("entry metadata must be a map"));
            }
            Ok((time, Some(metadata)))
        }
        Value::Ext(0, data) => Ok((
            EventTime::from_ext(&data)
                .ok_or(FrameError::Invalid("EventTime must carry 8 bytes"))?,
            None,
        )),
        Value::Integer(i) => {
            let secs = i
                .as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .ok_or(FrameError::Invalid("time out of range"))?;
            Ok((EventTime::new(secs, 0), None))
        }
        Value::F32(f) => Ok((
            EventTime::from_f64(f64::from(f)).ok_or(FrameError::Invalid("time out of range"))?,
            None,
        )),
        Value::F64(f) => Ok((
            EventTime::from_f64(f).ok_or(FrameError::Invalid("time out of range"))?,
            None,
        )),
        _ => Err(FrameError::Invalid("time must be an EventTime or a number")),
    }
}

fn parse_options(v: Option<Value>) -> Result<Options, FrameError> {
    let mut options = Options::default();
    let entries = match v {
        None | Some(Value::Nil) => return Ok(options),
        Some(Value::Map(m)) => m,
        Some(_) => return Err(FrameError::Invalid("option must be a map")),
    };
    for (k, v) in entries {
        let Value::String(k) = k else { continue };
        match k.as_bytes() {
            b"size" => {
                options.size = Some(v.as_u64().ok_or(FrameError::Invalid(
                    "option size must be an unsigned integer",
                ))?)
            }
            b"chunk" => match v {
                Value::String(s) => options.chunk = Some(s.into_bytes()),
                Value::Binary(b) => options.chunk = Some(b),
                _ => return Err(FrameError::Invalid("option chunk must be a string")),
            },
            b"compressed" => {
                options.compressed = Some(match v.as_str() {
                    Some("gzip") => Compression::Gzip,
                    Some("text") => Compression::None,
                    _ => {
                        return Err(FrameError::Invalid(
                            "option compressed must be \"gzip\" or \"text\"",
                        ));
                    }
                })
            }
            _ => {}
        }
    }
    Ok(options)
}

/// Converts a JSON value to the MessagePack value model used for records.
pub fn json_to_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::from(k), json_to_value(v)))
                .collect(),
        ),
    }
}

/// Parses an ack reply `{"ack": chunk}` (MessagePack or JSON) and returns the chunk bytes.
///
/// # Errors
/// [`FrameError::Invalid`] if the value is not a map with a string `ack`.
pub fn parse_ack(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    let start = bytes
        .iter()
        .position(|&b| !is_json_ws(b))
        .unwrap_or(bytes.len());
    let value = if bytes.get(start) == Some(&b'{') {
        json_to_value(
            serde_json::from_slice(&bytes[start..]).map_err(|e| FrameError::Json(e.to_string()))?,
        )
    } else {
        read_value(bytes)?
    };
    let Value::Map(map) = value else {
        return Err(FrameError::Invalid("an ack must be a map"));
    };
    for (k, v) in map {
        if k.as_str() == Some("ack") {
            return match v {
                Value::String(s) => Ok(s.into_bytes()),
                Value::Binary(b) => Ok(b),
                _ => Err(FrameError::Invalid("ack must be a string")),
            };
        }
    }
    Err(FrameError::Invalid("reply without an ack key"))
}

/// Finds the end of one reply (a map, MessagePack or JSON) at the start of `buf`.
///
/// # Errors
/// As [`check`], for replies.
pub fn check_reply(buf: &[u8], max: usize) -> Result<Check, FrameError> {
    let start = buf.iter().position(|&b| !is_json_ws(b));
    let Some(start) = start.filter(|&s| s < max) else {
        return if buf.len() >= max {
            Err(FrameError::TooLarge { limit: max })
        } else {
            Ok(Check::Incomplete)
        };
    };
    match buf[start] {
        b'{' => check_json(buf, start, max),
        0x80..=0x8f | 0xde | 0xdf if start == 0 => Ok(match msgpack::value_len(buf, max)? {
            Some(n) => Check::Complete(n),
            None => Check::Incomplete,
        }),
        _ => Err(FrameError::Invalid("a reply must be a map")),
    }
}

/// Converts a record value to JSON: binary and non-UTF-8
/// strings as lossy UTF-8 text, ext values as `{"ext": type, "data": [bytes]}`, map keys as
/// their text (non-string keys in their JSON form).
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                J::from(u)
            } else {
                J::from(i.as_i64().unwrap_or_default())
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(a) => J::Array(a.iter().map(value_to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => value_to_json(other).to_string(),
                    };
                    (key, value_to_json(v))
                })
                .collect(),
        ),
        Value::Ext(t, data) => serde_json::json!({ "ext": t, "data": data }),
    }
}
