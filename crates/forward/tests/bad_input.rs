//! Every way bytes can fail to be a frame gives the right `FrameError`, never a panic.

mod common;

use common::*;
use forward::FrameError;
use forward::{Check, DEFAULT_MAX_FRAME_BYTES, check_frame, check_reply, parse_ack, parse_frame};
use rmpv::Value;

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

/// Runs `check` then (if complete) `parse`, as the connection does.
fn decode(bytes: &[u8]) -> Result<forward::Frame, FrameError> {
    match check_frame(bytes, MAX)? {
        Check::Complete(n) => {
            assert_eq!(n, bytes.len(), "test inputs are exactly one frame");
            parse_frame(bytes, MAX)
        }
        Check::Incomplete => panic!("test input is incomplete: {bytes:?}"),
    }
}

fn invalid(bytes: &[u8]) -> &'static str {
    match decode(bytes) {
        Err(FrameError::Invalid(why)) => why,
        other => panic!("expected Invalid for {bytes:02x?}, got {other:?}"),
    }
}

fn frame_of(items: Vec<Value>) -> Vec<u8> {
    mp(&Value::Array(items))
}

fn t() -> Value {
    Value::from("tag")
}

#[test]
fn a_frame_that_is_not_an_array_is_invalid() {
    for bytes in [
        &[0x01][..],
        &[0xc0],
        &[0x81, 0xa1, b'k', 0x01],
        &[0xa3, b'a', b'b', b'c'],
        b"hello",
    ] {
        assert!(
            matches!(check_frame(bytes, MAX), Err(FrameError::Invalid(_))),
            "{bytes:02x?}"
        );
    }
    // a JSON object is delimited but is not a frame
    assert!(invalid(b"{\"tag\":1}").contains("array"));
}

#[test]
fn the_reserved_marker_is_invalid() {
    assert!(invalid(&[0x92, 0xa1, b't', 0xc1]).contains("0xc1"));
}

#[test]
fn nesting_deeper_than_the_limit_is_invalid_without_overflowing_the_stack() {
    let deep = vec![0x91u8; 100_000];
    assert!(matches!(
        check_frame(&deep, MAX),
        Err(FrameError::Invalid(_))
    ));
    // parse alone (no check first) must not overflow either
    assert!(matches!(
        parse_frame(&deep, MAX),
        Err(FrameError::MessagePack(_))
    ));
    // JSON: check skips values without recursing, so it delimits deep nesting; parse refuses it
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        check_frame(deep_json.as_bytes(), MAX),
        Ok(Check::Complete(deep_json.len()))
    );
    assert!(matches!(
        parse_frame(deep_json.as_bytes(), MAX),
        Err(FrameError::Json(_))
    ));
    assert_eq!(
        check_frame(&deep_json.as_bytes()[..100_000], 100_000),
        Err(FrameError::TooLarge { limit: 100_000 })
    );
}

#[test]
fn whitespace_before_a_messagepack_frame_is_invalid() {
    let mut bytes = b" \n".to_vec();
    bytes.extend(frame_of(vec![t(), et(1, 0), record(1)]));
    assert!(matches!(
        check_frame(&bytes, MAX),
        Err(FrameError::Invalid(_))
    ));
}

#[test]
fn shape_errors_are_invalid() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame_of(vec![]), "empty"),
        (frame_of(vec![t()]), "no entries"),
        (
            frame_of(vec![Value::from(1), et(1, 0), record(1)]),
            "tag must be a string",
        ),
        (
            frame_of(vec![Value::Binary(b"tag".to_vec()), et(1, 0), record(1)]),
            "tag must be a string",
        ),
        (frame_of(vec![t(), et(1, 0)]), "needs a record"),
        (
            frame_of(vec![t(), et(1, 0), record(1), Value::Nil, Value::Nil]),
            "at most four",
        ),
        (
            frame_of(vec![t(), Value::Array(vec![]), Value::Nil, Value::Nil]),
            "Forward mode takes at most",
        ),
        (
            frame_of(vec![t(), Value::Binary(vec![]), Value::Nil, Value::Nil]),
            "PackedForward mode takes at most",
        ),
        (
            frame_of(vec![t(), Value::Array(vec![Value::from(1)])]),
            "[time, record]",
        ),
        (
            frame_of(vec![t(), Value::Array(vec![Value::Array(vec![et(1, 0)])])]),
            "[time, record]",
        ),
        (
            frame_of(vec![
                t(),
                Value::Array(vec![Value::Array(vec![et(1, 0), record(1), Value::Nil])]),
            ]),
            "[time, record]",
        ),
        (
            frame_of(vec![t(), Value::Binary(mp(&record(1)))]),
            "[time, record]",
        ),
        (
            frame_of(vec![t(), Value::Binary(vec![0x92, 0x01])]),
            "truncated entry",
        ),
        (
            frame_of(vec![
                t(),
                Value::Binary(vec![0x92, 0xc6, 0x00, 0x00, 0x10, 0x00]),
            ]),
            "truncated entry",
        ),
        (
            frame_of(vec![t(), Value::Binary(vec![0x92, 0xc1, 0x80])]),
            "0xc1",
        ),
    ];
    for (bytes, want) in cases {
        let why = invalid(&bytes);
        assert!(why.contains(want), "{want:?}: got {why:?}");
    }
}

#[test]
fn a_tag_that_is_not_utf8_is_invalid() {
    let bytes = [0x93, 0xa2, 0xff, 0xfe, 0x01, 0x80];
    assert!(invalid(&bytes).contains("UTF-8"));
}

#[test]
fn time_errors_are_invalid() {
    let bad_times = [
        (Value::from(-1), "out of range"),
        (Value::from(u64::from(u32::MAX) + 1), "out of range"),
        (Value::F64(-0.5), "out of range"),
        (Value::F64(f64::NAN), "out of range"),
        (Value::F64(f64::INFINITY), "out of range"),
        (Value::F64(4_294_967_296.0), "out of range"),
        (Value::F32(-1.0), "out of range"),
        (Value::Nil, "EventTime or a number"),
        (Value::Boolean(true), "EventTime or a number"),
        (Value::Ext(0, vec![0; 4]), "8 bytes"),
        (Value::Ext(0, vec![0; 16]), "8 bytes"),
        (Value::Ext(1, vec![0; 8]), "EventTime or a number"),
        (Value::Map(vec![]), "EventTime or a number"),
    ];
    for (time, want) in bad_times {
        // in Message mode and in a Forward entry
        for bytes in [
            frame_of(vec![t(), time.clone(), record(1)]),
            frame_of(vec![
                t(),
                Value::Array(vec![Value::Array(vec![time.clone(), record(1)])]),
            ]),
        ] {
            let why = invalid(&bytes);
            assert!(why.contains(want), "{time:?}: want {want:?}, got {why:?}");
        }
    }
    // a string time in a Forward entry; in Message mode a string second element means
    // PackedForward, whose "entries" then fail to be [time, record] pairs
    let why = invalid(&frame_of(vec![
        t(),
        Value::Array(vec![Value::Array(vec![
            Value::from("1700000000"),
            record(1),
        ])]),
    ]));
    assert!(why.contains("EventTime or a number"), "{why}");
    let why = invalid(&frame_of(vec![t(), Value::from("1700000000"), record(1)]));
    assert!(why.contains("[time, record]"), "{why}");
}

#[test]
fn v15_metadata_that_is_not_a_map_is_invalid() {
    let entry = Value::Array(vec![
        Value::Array(vec![et(1, 0), Value::from("meta")]),
        record(1),
    ]);
    let why = invalid(&frame_of(vec![t(), Value::Array(vec![entry.clone()])]));
    assert!(why.contains("metadata"), "{why}");
    let why = invalid(&frame_of(vec![t(), Value::Binary(mp(&entry))]));
    assert!(why.contains("metadata"), "{why}");
}

#[test]
fn option_errors_are_invalid() {
    let cases = [
        (Value::from(1), "option must be a map"),
        (Value::Array(vec![]), "option must be a map"),
        (map(&[("size", Value::from(-1))]), "size"),
        (map(&[("size", Value::from("3"))]), "size"),
        (map(&[("chunk", Value::from(5))]), "chunk"),
        (map(&[("chunk", Value::Nil)]), "chunk"),
        (map(&[("compressed", Value::from("zstd"))]), "compressed"),
        (
            map(&[("compressed", Value::Binary(b"gzip".to_vec()))]),
            "compressed",
        ),
    ];
    for (opt, want) in cases {
        for bytes in [
            frame_of(vec![t(), et(1, 0), record(1), opt.clone()]),
            frame_of(vec![t(), Value::Array(vec![]), opt.clone()]),
            frame_of(vec![t(), Value::Binary(vec![]), opt.clone()]),
        ] {
            let why = invalid(&bytes);
            assert!(why.contains(want), "{opt:?}: want {want:?}, got {why:?}");
        }
    }
}

#[test]
fn a_frame_over_the_limit_is_too_large() {
    let bytes = frame_of(vec![
        t(),
        et(1, 0),
        map(&[("k", Value::Binary(vec![0; 1000]))]),
    ]);
    assert_eq!(
        check_frame(&bytes, 500),
        Err(FrameError::TooLarge { limit: 500 })
    );
    // already from the header, without the payload
    let header_end = bytes
        .windows(3)
        .position(|w| w == [0xc5, 0x03, 0xe8])
        .unwrap()
        + 3;
    assert_eq!(
        check_frame(&bytes[..header_end], 500),
        Err(FrameError::TooLarge { limit: 500 })
    );
    assert_eq!(
        check_frame(&bytes[..header_end - 1], 500),
        Ok(Check::Incomplete)
    );
    assert_eq!(
        check_frame(&bytes, bytes.len()),
        Ok(Check::Complete(bytes.len()))
    );
    assert_eq!(
        check_frame(&bytes, bytes.len() - 1),
        Err(FrameError::TooLarge {
            limit: bytes.len() - 1
        })
    );
}

#[test]
fn a_json_frame_over_the_limit_is_too_large() {
    let line = GO_LINE.as_bytes();
    assert_eq!(
        check_frame(line, line.len()),
        Ok(Check::Complete(line.len()))
    );
    assert_eq!(
        check_frame(line, line.len() - 1),
        Err(FrameError::TooLarge {
            limit: line.len() - 1
        })
    );
    assert_eq!(
        check_frame(&line[..100], 50),
        Err(FrameError::TooLarge { limit: 50 })
    );
    assert_eq!(check_frame(&line[..40], 50), Ok(Check::Incomplete));
}

#[test]
fn whitespace_counts_toward_the_limit() {
    assert_eq!(
        check_frame(&[b' '; 100], 100),
        Err(FrameError::TooLarge { limit: 100 })
    );
    assert_eq!(check_frame(&[b'\n'; 99], 100), Ok(Check::Incomplete));
    let mut padded = vec![b'\n'; 60];
    padded.extend_from_slice(br#"["t",1,{"k":"0123456789012345678901234567890123456789"}]"#);
    assert_eq!(
        check_frame(&padded, 100),
        Err(FrameError::TooLarge { limit: 100 })
    );
    assert_eq!(
        check_frame(&padded, padded.len()),
        Ok(Check::Complete(padded.len()))
    );
}

#[test]
fn a_decompressed_size_over_the_cap_is_too_large() {
    let raw = mp_all(&vec![Value::Array(vec![et(1, 0), record(1)]); 1000]);
    let bytes = frame_of(vec![
        t(),
        Value::Binary(gzip(&raw)),
        map(&[("compressed", Value::from("gzip"))]),
    ]);
    let cap = raw.len() / 2;
    assert!(bytes.len() < cap);
    assert_eq!(check_frame(&bytes, cap), Ok(Check::Complete(bytes.len())));
    assert_eq!(
        parse_frame(&bytes, cap),
        Err(FrameError::TooLarge { limit: cap })
    );
}

#[test]
fn entries_that_do_not_decompress_are_decompress_errors() {
    let (good, _) = (
        gzip(&mp_all(&[Value::Array(vec![et(1, 0), record(1)])])),
        (),
    );
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 6);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let mut trailing_garbage = good.clone();
    trailing_garbage.extend_from_slice(b"not gzip at all");
    for (what, data) in [
        ("not gzip", b"plain entries".to_vec()),
        ("truncated", truncated),
        ("bad crc", bad_crc),
        ("trailing garbage", trailing_garbage),
    ] {
        let bytes = frame_of(vec![
            t(),
            Value::Binary(data),
            map(&[("compressed", Value::from("gzip"))]),
        ]);
        assert!(
            matches!(decode(&bytes), Err(FrameError::Decompress(_))),
            "{what}: {:?}",
            decode(&bytes)
        );
    }
}

#[test]
fn parse_without_check_reports_messagepack_errors() {
    // parse is only promised check-delimited bytes, but must fail cleanly on others
    for bytes in [
        &[0x92, 0xa1][..],
        &[0x93, 0xa1, b't', 0xd7, 0x00, 1, 2],
        &[],
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
        &[0xc6, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert!(
            matches!(parse_frame(bytes, MAX), Err(FrameError::MessagePack(_))),
            "{bytes:02x?}: {:?}",
            parse_frame(bytes, MAX)
        );
    }
}

#[test]
fn malformed_json_is_a_json_error() {
    let cases: [&[u8]; 8] = [
        b"[\"t\",1,{}]]",
        b"[\"t\",1,{},]",
        b"[\"t\" 1]",
        b"[\"t\",01,{}]",
        b"[\"t\",1,{\"a\":tru}]",
        b"[\"t\",1,{\"a\":\"\x01\"}]",
        b"[\"t\",1.x]",
        b"[\"t\",1,{'a':1}]",
    ];
    for bytes in cases {
        let first = check_frame(bytes, MAX);
        let res = match first {
            Ok(Check::Complete(n)) => {
                // "]]": the first frame is fine, the rest is not an array
                if n < bytes.len() {
                    assert!(parse_frame(&bytes[..n], MAX).is_ok());
                    assert!(check_frame(&bytes[n..], MAX).is_err());
                    continue;
                }
                parse_frame(bytes, MAX).map(|_| ())
            }
            Ok(Check::Incomplete) => {
                panic!("{:?} is not incomplete", String::from_utf8_lossy(bytes))
            }
            Err(e) => Err(e),
        };
        assert!(
            matches!(res, Err(FrameError::Json(_))),
            "{:?}: {res:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // invalid UTF-8 in a JSON string is caught by parse
    let bytes = b"[\"t\xff\",1,{}]";
    let res = match check_frame(bytes, MAX) {
        Ok(Check::Complete(n)) => parse_frame(&bytes[..n], MAX).map(|_| ()),
        Ok(Check::Incomplete) => panic!("complete"),
        Err(e) => Err(e),
    };
    assert!(matches!(res, Err(FrameError::Json(_))), "{res:?}");
}

#[test]
fn json_shape_errors_are_invalid() {
    assert!(invalid(br#"[1,1,{}]"#).contains("tag"));
    assert!(invalid(br#"["t"]"#).contains("entries"));
    assert!(invalid(br#"["t",-5,{}]"#).contains("out of range"));
    assert!(invalid(br#"["t",1,{},{"chunk":1}]"#).contains("chunk"));
    assert!(invalid(br#"["t",1,{},[]]"#).contains("option"));
    assert!(invalid(br#"["t",[1],{}]"#).contains("[time, record]"));
}

#[test]
fn reply_errors() {
    assert!(matches!(
        check_reply(b"[1]", 100),
        Err(FrameError::Invalid(_))
    ));
    assert!(matches!(
        check_reply(&[0x91, 0x01], 100),
        Err(FrameError::Invalid(_))
    ));
    assert!(matches!(
        check_reply(&[0x81, 0xa3, b'a', b'c', b'k', 0xda, 0xff, 0xff], 100),
        Err(FrameError::TooLarge { limit: 100 })
    ));
    assert!(matches!(
        check_reply(b"{\"ack\" 1}", 100),
        Err(FrameError::Json(_))
    ));
    assert_eq!(check_reply(b"{\"ack\":", 100), Ok(Check::Incomplete));
    assert_eq!(check_reply(b"  ", 100), Ok(Check::Incomplete));
    assert!(matches!(
        parse_ack(&mp(&Value::from(1))),
        Err(FrameError::Invalid(_))
    ));
    assert!(matches!(
        parse_ack(&mp(&map(&[]))),
        Err(FrameError::Invalid(_))
    ));
    assert!(matches!(
        parse_ack(b"{\"ack\":\"x\""),
        Err(FrameError::Json(_))
    ));
    assert!(matches!(
        parse_ack(&[0x81, 0xa3]),
        Err(FrameError::MessagePack(_))
    ));
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        FrameError::TooLarge { limit: 10 }.to_string(),
        "frame larger than the limit of 10 bytes"
    );
    assert!(FrameError::Invalid("x").to_string().contains('x'));
    let e = forward::ConnectionError::from(FrameError::Json("bad".into()));
    assert!(e.to_string().contains("bad"));
    assert_eq!(
        forward::ConnectionError::Truncated.to_string(),
        "connection closed inside a frame"
    );
}
