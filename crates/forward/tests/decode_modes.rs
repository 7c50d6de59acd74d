//! Every mode, time form, option and framing the decoder accepts, from frames built by hand.

mod common;

use common::*;
use forward::{Check, DEFAULT_MAX_FRAME_BYTES, check_frame, parse_frame};
use forward::{Compression, EventTime, FrameError, Framing, Mode};
use rmpv::Value;

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

/// `check` must delimit exactly `bytes`, then `parse` them.
fn decode(bytes: &[u8]) -> forward::Frame {
    assert_eq!(
        check_frame(bytes, MAX),
        Ok(Check::Complete(bytes.len())),
        "check must delimit the whole frame"
    );
    parse_frame(bytes, MAX).expect("valid frame")
}

#[test]
fn message_mode_with_fixext8_event_time() {
    let bytes = mp(&Value::Array(vec![
        Value::from("app.log"),
        et(1_700_000_000, 123_456_789),
        record(1),
    ]));
    assert_eq!(&bytes[..3], &[0x93, 0xa7, b'a']);
    assert!(
        bytes.windows(2).any(|w| w == [0xd7, 0x00]),
        "rmpv wrote a fixext8"
    );
    let f = decode(&bytes);
    assert_eq!(f.tag, "app.log");
    assert_eq!(f.mode, Mode::Message);
    assert_eq!(f.framing, Framing::MessagePack);
    assert_eq!(f.entries.len(), 1);
    assert_eq!(
        f.entries[0].time,
        EventTime::new(1_700_000_000, 123_456_789)
    );
    assert_eq!(f.entries[0].record, record(1));
    assert_eq!(f.entries[0].metadata, None);
    assert_eq!(f.options, forward::Options::default());
}

#[test]
fn message_mode_with_ext8_event_time() {
    // [tag, ext8(type 0, 8 bytes), record] written byte by byte.
    let mut bytes = vec![0x93, 0xa1, b't', 0xc7, 0x08, 0x00];
    bytes.extend_from_slice(&5u32.to_be_bytes());
    bytes.extend_from_slice(&7u32.to_be_bytes());
    bytes.extend(mp(&record(2)));
    let f = decode(&bytes);
    assert_eq!(f.entries[0].time, EventTime::new(5, 7));
    assert_eq!(f.entries[0].record, record(2));
}

#[test]
fn message_mode_with_integer_seconds_of_every_width() {
    for (secs, expect) in [
        (Value::from(0u8), 0u32),
        (Value::from(200u8), 200),
        (Value::from(70_000u32), 70_000),
        (Value::from(u64::from(u32::MAX)), u32::MAX),
    ] {
        let bytes = mp(&Value::Array(vec![Value::from("t"), secs, record(3)]));
        assert_eq!(decode(&bytes).entries[0].time, EventTime::new(expect, 0));
    }
    // a signed encoding of a positive number is still a time
    let mut bytes = vec![0x93, 0xa1, b't', 0xd2];
    bytes.extend_from_slice(&1_000i32.to_be_bytes());
    bytes.push(0x80);
    assert_eq!(decode(&bytes).entries[0].time, EventTime::new(1_000, 0));
}

#[test]
fn message_mode_with_float_seconds() {
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        Value::F64(1_500_000_000.25),
        record(4),
    ]));
    assert_eq!(
        decode(&bytes).entries[0].time,
        EventTime::new(1_500_000_000, 250_000_000)
    );
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        Value::F32(2.5),
        record(4),
    ]));
    assert_eq!(
        decode(&bytes).entries[0].time,
        EventTime::new(2, 500_000_000)
    );
}

#[test]
fn message_mode_v15_time_with_metadata() {
    let meta = map(&[("trace", Value::from("abc"))]);
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Array(vec![et(9, 8), meta.clone()]),
        record(5),
    ]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::Message);
    assert_eq!(f.entries[0].time, EventTime::new(9, 8));
    assert_eq!(f.entries[0].metadata, Some(meta));
    assert_eq!(f.entries[0].record, record(5));
}

#[test]
fn message_mode_with_options_ignores_unknown_keys() {
    let opts = map(&[
        ("size", Value::from(1)),
        ("future_key", Value::Array(vec![Value::Nil])),
        ("chunk", Value::from("Y2h1bmsx")),
        ("compressed", Value::from("text")),
    ]);
    let mut opts_with_int_key = opts.clone();
    if let Value::Map(m) = &mut opts_with_int_key {
        m.push((Value::from(7), Value::from("ignored too")));
    }
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        et(1, 0),
        record(6),
        opts_with_int_key,
    ]));
    let f = decode(&bytes);
    assert_eq!(f.options.size, Some(1));
    assert_eq!(f.options.chunk.as_deref(), Some(&b"Y2h1bmsx"[..]));
    assert_eq!(f.options.compressed, Some(Compression::None));
}

#[test]
fn nil_options_are_no_options() {
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        et(1, 0),
        record(6),
        Value::Nil,
    ]));
    assert_eq!(decode(&bytes).options, forward::Options::default());
}

#[test]
fn forward_mode_with_mixed_time_forms() {
    let meta = map(&[("m", Value::from(1))]);
    let entries = Value::Array(vec![
        Value::Array(vec![et(10, 1), record(1)]),
        Value::Array(vec![Value::from(11), record(2)]),
        Value::Array(vec![Value::F64(12.5), record(3)]),
        Value::Array(vec![Value::Array(vec![et(13, 3), meta.clone()]), record(4)]),
    ]);
    let opts = map(&[
        ("chunk", Value::from("abc")),
        ("size", Value::from(4)),
        ("x", Value::from(true)),
    ]);
    let bytes = mp(&Value::Array(vec![Value::from("fwd"), entries, opts]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::Forward);
    assert_eq!(f.tag, "fwd");
    let times: Vec<_> = f.entries.iter().map(|e| e.time).collect();
    assert_eq!(
        times,
        [
            EventTime::new(10, 1),
            EventTime::new(11, 0),
            EventTime::new(12, 500_000_000),
            EventTime::new(13, 3)
        ]
    );
    let records: Vec<_> = f.entries.iter().map(|e| e.record.clone()).collect();
    assert_eq!(records, [record(1), record(2), record(3), record(4)]);
    assert_eq!(f.entries[3].metadata, Some(meta));
    assert!(f.entries[..3].iter().all(|e| e.metadata.is_none()));
    assert_eq!(f.options.size, Some(4));
    assert_eq!(f.options.chunk.as_deref(), Some(&b"abc"[..]));
}

#[test]
fn forward_mode_with_no_entries_and_no_options() {
    let bytes = mp(&Value::Array(vec![Value::from("t"), Value::Array(vec![])]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::Forward);
    assert!(f.entries.is_empty());
}

/// (time, record, metadata) of one decoded entry.
type Expected = (EventTime, Value, Option<Value>);

fn packed_entries() -> (Vec<u8>, Vec<Expected>) {
    let meta = map(&[("k", Value::from("v"))]);
    let expected = vec![
        (EventTime::new(100, 1), record(1), None),
        (EventTime::new(101, 0), record(2), None),
        (EventTime::new(102, 2), record(3), Some(meta.clone())),
    ];
    let raw = mp_all(&[
        Value::Array(vec![et(100, 1), record(1)]),
        Value::Array(vec![Value::from(101), record(2)]),
        Value::Array(vec![Value::Array(vec![et(102, 2), meta]), record(3)]),
    ]);
    (raw, expected)
}

fn assert_entries(f: &forward::Frame, expected: &[Expected]) {
    let got: Vec<_> = f
        .entries
        .iter()
        .map(|e| (e.time, e.record.clone(), e.metadata.clone()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn packed_forward_with_entries_as_bin() {
    let (raw, expected) = packed_entries();
    let bytes = mp(&Value::Array(vec![
        Value::from("p"),
        Value::Binary(raw),
        map(&[("size", Value::from(3))]),
    ]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::PackedForward);
    assert_eq!(f.options.size, Some(3));
    assert_entries(&f, &expected);
}

#[test]
fn packed_forward_with_entries_as_str() {
    let (raw, expected) = packed_entries();
    // fluentd's older clients send the packed stream as a (not UTF-8) str: str32 by hand.
    let mut bytes = vec![0x92, 0xa1, b'p', 0xdb];
    bytes.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&raw);
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::PackedForward);
    assert_entries(&f, &expected);
}

#[test]
fn packed_forward_with_empty_entries() {
    let bytes = mp(&Value::Array(vec![Value::from("p"), Value::Binary(vec![])]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::PackedForward);
    assert!(f.entries.is_empty());
}

#[test]
fn packed_forward_with_compressed_text_is_uncompressed() {
    let (raw, expected) = packed_entries();
    let bytes = mp(&Value::Array(vec![
        Value::from("p"),
        Value::Binary(raw),
        map(&[("compressed", Value::from("text"))]),
    ]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::PackedForward);
    assert_entries(&f, &expected);
}

#[test]
fn compressed_packed_forward_one_gzip_member() {
    let (raw, expected) = packed_entries();
    let opts = map(&[
        ("compressed", Value::from("gzip")),
        ("chunk", Value::from("c1")),
        ("size", Value::from(3)),
        ("other", Value::Nil),
    ]);
    let bytes = mp(&Value::Array(vec![
        Value::from("z"),
        Value::Binary(gzip(&raw)),
        opts,
    ]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::CompressedPackedForward);
    assert_eq!(f.options.compressed, Some(Compression::Gzip));
    assert_eq!(f.options.chunk.as_deref(), Some(&b"c1"[..]));
    assert_entries(&f, &expected);
}

#[test]
fn compressed_packed_forward_several_concatenated_gzip_members() {
    let (raw, expected) = packed_entries();
    // fluentd appends one gzip member per buffer write: entry boundaries need not match
    // member boundaries, so split mid-entry too.
    let cut1 = 7;
    let cut2 = raw.len() - 5;
    let mut gz = gzip(&raw[..cut1]);
    gz.extend(gzip(&raw[cut1..cut2]));
    gz.extend(gzip(&raw[cut2..]));
    let bytes = mp(&Value::Array(vec![
        Value::from("z"),
        Value::Binary(gz),
        map(&[("compressed", Value::from("gzip"))]),
    ]));
    let f = decode(&bytes);
    assert_eq!(f.mode, Mode::CompressedPackedForward);
    assert_entries(&f, &expected);
}

#[test]
fn compressed_packed_forward_over_the_cap_is_too_large() {
    // 1 MiB of nil entries' worth of bytes compresses to almost nothing.
    let raw = vec![0xc0u8; 1 << 20];
    let bytes = mp(&Value::Array(vec![
        Value::from("z"),
        Value::Binary(gzip(&raw)),
        map(&[("compressed", Value::from("gzip"))]),
    ]));
    let limit = 64 * 1024;
    assert!(bytes.len() < limit, "the compressed frame itself fits");
    assert_eq!(check_frame(&bytes, limit), Ok(Check::Complete(bytes.len())));
    assert_eq!(
        parse_frame(&bytes, limit),
        Err(FrameError::TooLarge { limit })
    );
}

#[test]
fn compressed_packed_forward_exactly_at_the_cap_is_accepted() {
    let (raw, expected) = packed_entries();
    let bytes = mp(&Value::Array(vec![
        Value::from("z"),
        Value::Binary(gzip(&raw)),
        map(&[("compressed", Value::from("gzip"))]),
    ]));
    let limit = raw.len().max(bytes.len());
    let f = parse_frame(&bytes, limit).expect("decompressed size equal to the cap is allowed");
    assert_entries(&f, &expected);
    assert_eq!(
        parse_frame(&bytes, raw.len() - 1).map(|_| ()),
        Err(FrameError::TooLarge {
            limit: raw.len() - 1
        })
    );
}

#[test]
fn chunk_kept_byte_for_byte_even_when_not_utf8() {
    let chunk = vec![0xff, 0x00, 0xfe, b'a', 0x80];
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        et(1, 0),
        record(1),
        map(&[("chunk", Value::Binary(chunk.clone()))]),
    ]));
    assert_eq!(decode(&bytes).options.chunk, Some(chunk.clone()));
    // the same bytes in a str (invalid UTF-8) are kept too
    let mut bytes = vec![
        0x94,
        0xa1,
        b't',
        0x01,
        0x80,
        0x81,
        0xa5,
        b'c',
        b'h',
        b'u',
        b'n',
        b'k',
        0xa0 | chunk.len() as u8,
    ];
    bytes.extend_from_slice(&chunk);
    assert_eq!(decode(&bytes).options.chunk, Some(chunk));
}

#[test]
fn chunk_kept_byte_for_byte_when_base64() {
    let id = forward::encode::new_chunk_id();
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Array(vec![]),
        map(&[("chunk", Value::from(id.as_str()))]),
    ]));
    assert_eq!(decode(&bytes).options.chunk, Some(id.into_bytes()));
}

#[test]
fn json_framing_go_client_line() {
    let f = decode(GO_LINE.as_bytes());
    assert_eq!(f.framing, Framing::Json);
    assert_eq!(f.mode, Mode::Message);
    assert_eq!(f.tag, "billing");
    assert_eq!(f.entries.len(), 1);
    assert_eq!(f.entries[0].time, EventTime::new(1_795_754_038, 0));
    let rec = &f.entries[0].record;
    let get = |k: &str| match rec {
        Value::Map(m) => m
            .iter()
            .find(|(kk, _)| kk.as_str() == Some(k))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    assert_eq!(get("amount_type"), Some(Value::from("node-seconds")));
    assert_eq!(get("amount_value"), Some(Value::from(2)));
    assert_eq!(
        get("metadata"),
        Some(map(&[("report", Value::from("r-1"))]))
    );
    assert_eq!(get("unique_key"), Some(Value::from("seed-1:node-seconds")));
    assert_eq!(f.options, forward::Options::default());
}

#[test]
fn json_framing_several_frames_back_to_back_with_and_without_whitespace() {
    let second = r#"["b",1.5,{"x":-1.25e2},{"chunk":"q1","size":1,"unknown":[1]}]"#;
    let third = r#"["c",[[7,{"y":null}],[8,{"z":[true,false]}]],{"chunk":"q2"}]"#;
    for sep in ["", "\n", " \r\n\t ", "\n\n"] {
        let stream = format!("{GO_LINE}{sep}{second}{sep}{third}{sep}");
        let bytes = stream.as_bytes();
        let mut pos = 0;
        let mut frames = Vec::new();
        while let Check::Complete(n) = check_frame(&bytes[pos..], MAX).expect("valid stream") {
            frames.push(parse_frame(&bytes[pos..pos + n], MAX).expect("valid frame"));
            pos += n;
        }
        assert!(
            bytes[pos..].iter().all(u8::is_ascii_whitespace),
            "only whitespace left with sep {sep:?}"
        );
        assert_eq!(frames.len(), 3, "sep {sep:?}");
        assert_eq!(frames[0].tag, "billing");
        assert_eq!(frames[1].entries[0].time, EventTime::new(1, 500_000_000));
        assert_eq!(
            frames[1].entries[0].record,
            map(&[("x", Value::F64(-125.0))])
        );
        assert_eq!(frames[1].options.chunk.as_deref(), Some(&b"q1"[..]));
        assert_eq!(frames[1].options.size, Some(1));
        assert_eq!(frames[2].mode, Mode::Forward);
        assert_eq!(frames[2].entries.len(), 2);
        assert_eq!(frames[2].entries[1].time, EventTime::new(8, 0));
        assert!(frames.iter().all(|f| f.framing == Framing::Json));
    }
}

#[test]
fn json_and_messagepack_frames_interleave() {
    let mp_frame = mp(&Value::Array(vec![Value::from("m"), et(3, 4), record(9)]));
    let mut stream = GO_LINE.as_bytes().to_vec();
    stream.extend_from_slice(&mp_frame);
    stream.extend_from_slice(GO_LINE.as_bytes());
    let Check::Complete(n1) = check_frame(&stream, MAX).unwrap() else {
        panic!("first frame complete")
    };
    assert_eq!(n1, GO_LINE.len());
    let Check::Complete(n2) = check_frame(&stream[n1..], MAX).unwrap() else {
        panic!("second frame complete")
    };
    assert_eq!(n2, mp_frame.len());
    assert_eq!(
        parse_frame(&stream[n1..n1 + n2], MAX).unwrap().framing,
        Framing::MessagePack
    );
    assert_eq!(
        check_frame(&stream[n1 + n2..], MAX),
        Ok(Check::Complete(GO_LINE.len()))
    );
}

#[test]
fn deeply_nested_record_within_the_limit_parses() {
    // as deep as the framing walk allows: check and parse must agree.
    let mut v = Value::from("leaf");
    for _ in 0..forward::msgpack::MAX_DEPTH - 2 {
        v = Value::Array(vec![v]);
    }
    let bytes = mp(&Value::Array(vec![
        Value::from("t"),
        et(1, 0),
        map(&[("deep", v.clone())]),
    ]));
    let f = decode(&bytes);
    assert_eq!(f.entries[0].record, map(&[("deep", v)]));
}

#[test]
fn fuzz_seed_corpus_is_valid_frames() {
    // fuzz/seeds/decode_stream: two control bytes, then a stream of valid frames
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/decode_stream");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let mut rest = &data[2..];
        let mut frames = 0;
        while let Check::Complete(n) =
            check_frame(rest, MAX).unwrap_or_else(|e| panic!("{path:?}: {e}"))
        {
            parse_frame(&rest[..n], MAX).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            rest = &rest[n..];
            frames += 1;
        }
        assert!(
            rest.is_empty() && frames > 0,
            "{path:?}: {frames} frames, {} bytes left",
            rest.len()
        );
        seen += 1;
    }
    assert!(seen >= 5, "{seen} seeds");
}
