//! The writers produce frames the decoder reads back, options included.

mod common;

use base64::Engine as _;
use common::*;
use forward::encode;
use forward::{
    Check, DEFAULT_MAX_FRAME_BYTES, check_frame, check_reply, json_to_value, parse_ack, parse_frame,
};
use forward::{Compression, EventTime, Framing, Mode, Options};
use rmpv::Value;

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

fn decode(bytes: &[u8]) -> forward::Frame {
    assert_eq!(check_frame(bytes, MAX), Ok(Check::Complete(bytes.len())));
    parse_frame(bytes, MAX).expect("valid frame")
}

fn opts(compressed: Option<Compression>) -> Options {
    Options {
        size: Some(3),
        chunk: Some(encode::new_chunk_id().into_bytes()),
        compressed,
    }
}

fn entries_bytes() -> (Vec<u8>, Vec<(EventTime, Value)>) {
    let expected: Vec<_> = (0..3)
        .map(|i| {
            (
                EventTime::new(1_700_000_000 + i, i * 1000),
                record(i64::from(i)),
            )
        })
        .collect();
    let mut buf = Vec::new();
    for (t, r) in &expected {
        encode::write_entry(&mut buf, *t, &mp(r));
    }
    (buf, expected)
}

fn pairs(f: &forward::Frame) -> Vec<(EventTime, Value)> {
    assert!(f.entries.iter().all(|e| e.metadata.is_none()));
    f.entries
        .iter()
        .map(|e| (e.time, e.record.clone()))
        .collect()
}

#[test]
fn write_message_round_trips_with_options() {
    let o = opts(None);
    let mut buf = Vec::new();
    encode::write_message(
        &mut buf,
        "svc.events",
        EventTime::new(42, 999_999_999),
        &mp(&record(7)),
        &o,
    );
    let f = decode(&buf);
    assert_eq!(
        (f.tag.as_str(), f.mode, f.framing),
        ("svc.events", Mode::Message, Framing::MessagePack)
    );
    assert_eq!(pairs(&f), [(EventTime::new(42, 999_999_999), record(7))]);
    assert_eq!(f.options, o);
}

#[test]
fn write_message_without_options_writes_an_empty_map() {
    let mut buf = Vec::new();
    encode::write_message(
        &mut buf,
        "t",
        EventTime::new(1, 2),
        &mp(&record(1)),
        &Options::default(),
    );
    assert_eq!(buf.last(), Some(&0x80));
    assert_eq!(decode(&buf).options, Options::default());
}

#[test]
fn write_forward_round_trips_with_options() {
    let (entries, expected) = entries_bytes();
    let o = opts(None);
    let mut buf = Vec::new();
    encode::write_forward(&mut buf, "fwd", &entries, 3, &o);
    let f = decode(&buf);
    assert_eq!(f.mode, Mode::Forward);
    assert_eq!(pairs(&f), expected);
    assert_eq!(f.options, o);
}

#[test]
fn write_packed_forward_round_trips_uncompressed() {
    let (entries, expected) = entries_bytes();
    let o = opts(None);
    let mut buf = Vec::new();
    encode::write_packed_forward(&mut buf, "packed", &entries, &o);
    let f = decode(&buf);
    assert_eq!(f.mode, Mode::PackedForward);
    assert_eq!(pairs(&f), expected);
    assert_eq!(f.options, o);
}

#[test]
fn write_packed_forward_round_trips_with_gzip() {
    let (entries, expected) = entries_bytes();
    let o = opts(Some(Compression::Gzip));
    let mut buf = Vec::new();
    encode::write_packed_forward(&mut buf, "gz", &entries, &o);
    // the entries are really compressed: the raw entry bytes are not in the frame
    assert!(!buf.windows(entries.len()).any(|w| w == entries.as_slice()));
    let f = decode(&buf);
    assert_eq!(f.mode, Mode::CompressedPackedForward);
    assert_eq!(pairs(&f), expected);
    assert_eq!(f.options, o);
}

#[test]
fn write_packed_forward_with_text_compression_is_plain_packed() {
    let (entries, expected) = entries_bytes();
    let o = opts(Some(Compression::None));
    let mut buf = Vec::new();
    encode::write_packed_forward(&mut buf, "txt", &entries, &o);
    let f = decode(&buf);
    assert_eq!(f.mode, Mode::PackedForward);
    assert_eq!(pairs(&f), expected);
    assert_eq!(f.options.compressed, Some(Compression::None));
}

#[test]
fn writers_append_after_existing_bytes() {
    let (entries, _) = entries_bytes();
    let mut buf = Vec::new();
    encode::write_message(
        &mut buf,
        "a",
        EventTime::new(1, 0),
        &mp(&record(1)),
        &Options::default(),
    );
    let first = buf.len();
    encode::write_packed_forward(&mut buf, "b", &entries, &opts(Some(Compression::Gzip)));
    assert_eq!(check_frame(&buf, MAX), Ok(Check::Complete(first)));
    assert_eq!(decode(&buf[first..]).tag, "b");
}

#[test]
fn write_json_message_round_trips_with_and_without_chunk() {
    let rec =
        serde_json::json!({"amount_value": 2, "unique_key": "k\"1", "nested": {"a": [1, -2, 3.5]}});
    let rec_bytes = serde_json::to_vec(&rec).unwrap();
    for chunk in [None, Some("Y2h1bms=")] {
        let mut buf = Vec::new();
        encode::write_json_message(&mut buf, "billing", 1_795_754_038, &rec_bytes, chunk);
        let f = decode(&buf);
        assert_eq!(f.framing, Framing::Json);
        assert_eq!(f.mode, Mode::Message);
        assert_eq!(f.tag, "billing");
        assert_eq!(
            pairs(&f),
            [(EventTime::new(1_795_754_038, 0), json_to_value(rec.clone()))]
        );
        assert_eq!(f.options.chunk.as_deref(), chunk.map(str::as_bytes));
    }
}

#[test]
fn write_json_message_escapes_the_tag() {
    let mut buf = Vec::new();
    encode::write_json_message(&mut buf, "we\"ird\\tag\n", 1, b"{}", Some("c\"k"));
    let f = decode(&buf);
    assert_eq!(f.tag, "we\"ird\\tag\n");
    assert_eq!(f.options.chunk.as_deref(), Some(&b"c\"k"[..]));
}

#[test]
fn write_ack_round_trips_in_both_framings() {
    for framing in [Framing::MessagePack, Framing::Json] {
        let id = encode::new_chunk_id();
        let mut buf = Vec::new();
        encode::write_ack(&mut buf, id.as_bytes(), framing);
        assert_eq!(
            check_reply(&buf, 1024),
            Ok(Check::Complete(buf.len())),
            "{framing:?}"
        );
        assert_eq!(parse_ack(&buf), Ok(id.into_bytes()), "{framing:?}");
    }
}

#[test]
fn messagepack_ack_echoes_non_utf8_chunk_byte_for_byte() {
    let chunk = [0xff, 0xfe, 0x00, 0x80];
    let mut buf = Vec::new();
    encode::write_ack(&mut buf, &chunk, Framing::MessagePack);
    assert_eq!(parse_ack(&buf), Ok(chunk.to_vec()));
    // and is what rmpv calls {"ack": <str>}
    let v = rmpv::decode::read_value(&mut &buf[..]).unwrap();
    assert_eq!(v.as_map().map(|m| m.len()), Some(1));
    assert_eq!(v.as_map().unwrap()[0].0.as_str(), Some("ack"));
}

#[test]
fn new_chunk_id_is_base64_of_16_bytes_and_fresh() {
    let ids: Vec<String> = (0..64).map(|_| encode::new_chunk_id()).collect();
    for id in &ids {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(id)
            .expect("standard base64");
        assert_eq!(raw.len(), 16, "{id}");
        assert_eq!(id.len(), 24);
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids repeat");
}

#[test]
fn event_time_is_written_as_fixext8() {
    let mut buf = Vec::new();
    encode::write_event_time(&mut buf, EventTime::new(0x0102_0304, 0x0506_0708));
    assert_eq!(buf, [0xd7, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        rmpv::decode::read_value(&mut &buf[..]).unwrap(),
        et(0x0102_0304, 0x0506_0708)
    );
}
