//! Property tests: whatever the writers produce the decoder reads back, on any byte boundary,
//! and no input makes the decoder panic.

mod common;

use common::*;
use forward::encode;
use forward::{Check, check_frame, check_reply, json_to_value, parse_ack, parse_frame};
use forward::{Compression, Connection, EventTime, FrameError, Framing, Mode, Options};
use proptest::prelude::*;
use rmpv::Value;

const MAX: usize = 1 << 20;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F64),
        "\\PC{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..10))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    let value = leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    });
    prop_oneof![
        3 => proptest::collection::vec(("[a-z_]{1,8}", value.clone()), 0..5)
            .prop_map(|kv| Value::Map(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())),
        1 => value,
    ]
}

fn event_time() -> impl Strategy<Value = EventTime> {
    (any::<u32>(), 0u32..1_000_000_000).prop_map(|(s, n)| EventTime::new(s, n))
}

fn tag() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_.]{0,20}", "\\PC{0,10}"]
}

fn options() -> impl Strategy<Value = Options> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
    )
        .prop_map(|(size, chunk)| Options {
            size,
            chunk,
            compressed: None,
        })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Message,
    Forward,
    Packed,
    PackedText,
    Gzip,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Message),
        Just(Kind::Forward),
        Just(Kind::Packed),
        Just(Kind::PackedText),
        Just(Kind::Gzip)
    ]
}

/// A MessagePack frame and what it should decode to.
#[derive(Debug, Clone)]
struct Case {
    bytes: Vec<u8>,
    tag: String,
    entries: Vec<(EventTime, Value)>,
    options: Options,
    mode: Mode,
    framing: Framing,
}

fn mp_case() -> impl Strategy<Value = Case> {
    (
        kind(),
        tag(),
        proptest::collection::vec((event_time(), record()), 1..5),
        options(),
    )
        .prop_map(|(kind, tag, mut entries, mut options)| {
            let mut bytes = Vec::new();
            let mode = match kind {
                Kind::Message => {
                    entries.truncate(1);
                    encode::write_message(
                        &mut bytes,
                        &tag,
                        entries[0].0,
                        &mp(&entries[0].1),
                        &options,
                    );
                    Mode::Message
                }
                Kind::Forward | Kind::Packed | Kind::PackedText | Kind::Gzip => {
                    let mut raw = Vec::new();
                    for (t, r) in &entries {
                        encode::write_entry(&mut raw, *t, &mp(r));
                    }
                    match kind {
                        Kind::Forward => {
                            encode::write_forward(
                                &mut bytes,
                                &tag,
                                &raw,
                                entries.len() as u32,
                                &options,
                            );
                            Mode::Forward
                        }
                        Kind::Gzip => {
                            options.compressed = Some(Compression::Gzip);
                            encode::write_packed_forward(&mut bytes, &tag, &raw, &options);
                            Mode::CompressedPackedForward
                        }
                        _ => {
                            if matches!(kind, Kind::PackedText) {
                                options.compressed = Some(Compression::None);
                            }
                            encode::write_packed_forward(&mut bytes, &tag, &raw, &options);
                            Mode::PackedForward
                        }
                    }
                }
            };
            Case {
                bytes,
                tag,
                entries,
                options,
                mode,
                framing: Framing::MessagePack,
            }
        })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        // floats whose short decimal form parses back exactly, negatives included
        any::<i32>().prop_map(|m| serde_json::Value::from(f64::from(m) / 8.0)),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_case() -> impl Strategy<Value = Case> {
    (
        tag(),
        any::<u32>(),
        json_value(),
        proptest::option::of("\\PC{0,16}"),
        prop_oneof![Just(""), Just("\n"), Just(" \r\n")],
    )
        .prop_map(|(tag, secs, rec, chunk, trailer)| {
            let mut bytes = Vec::new();
            let rec_bytes = serde_json::to_vec(&rec).unwrap();
            encode::write_json_message(&mut bytes, &tag, secs, &rec_bytes, chunk.as_deref());
            bytes.extend_from_slice(trailer.as_bytes());
            let options = Options {
                chunk: chunk.map(String::into_bytes),
                ..Options::default()
            };
            Case {
                bytes,
                tag,
                entries: vec![(EventTime::new(secs, 0), json_to_value(rec))],
                options,
                mode: Mode::Message,
                framing: Framing::Json,
            }
        })
}

fn any_case() -> impl Strategy<Value = Case> {
    prop_oneof![3 => mp_case(), 1 => json_case()]
}

fn assert_decodes_to(f: &forward::Frame, case: &Case) {
    assert_eq!(f.tag, case.tag);
    assert_eq!(f.mode, case.mode);
    assert_eq!(f.framing, case.framing);
    assert_eq!(f.options, case.options);
    let got: Vec<_> = f
        .entries
        .iter()
        .map(|e| (e.time, e.record.clone()))
        .collect();
    assert_eq!(got, case.entries);
    assert!(f.entries.iter().all(|e| e.metadata.is_none()));
}

/// The length of the frame without trailing whitespace a JSON case carries for the next one.
fn frame_len(case: &Case) -> usize {
    match case.framing {
        Framing::MessagePack => case.bytes.len(),
        Framing::Json => case.bytes.iter().rposition(|&b| b == b']').unwrap() + 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encoded_frames_decode_to_what_was_encoded(case in any_case()) {
        let n = frame_len(&case);
        prop_assert_eq!(check_frame(&case.bytes, MAX), Ok(Check::Complete(n)));
        let f = parse_frame(&case.bytes[..n], MAX).unwrap();
        assert_decodes_to(&f, &case);
    }

    #[test]
    fn the_chunk_read_without_decoding_is_the_decoded_chunk(case in mp_case()) {
        let n = frame_len(&case);
        let decoded = parse_frame(&case.bytes[..n], MAX).unwrap();
        prop_assert_eq!(
            forward::chunk_option(&case.bytes[..n]).unwrap().map(<[u8]>::to_vec),
            decoded.options.chunk
        );
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete(case in any_case()) {
        let n = frame_len(&case);
        for cut in 0..n {
            prop_assert_eq!(check_frame(&case.bytes[..cut], MAX), Ok(Check::Incomplete), "cut {} of {:?}", cut, case.bytes);
        }
    }

    #[test]
    fn check_length_ignores_trailing_bytes(case in any_case(), trailing in proptest::collection::vec(any::<u8>(), 0..32)) {
        let n = frame_len(&case);
        let mut bytes = case.bytes[..n].to_vec();
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(check_frame(&bytes, MAX), Ok(Check::Complete(n)));
        assert_decodes_to(&parse_frame(&bytes[..n], MAX).unwrap(), &case);
    }

    #[test]
    fn a_stream_of_frames_split_anywhere_decodes_in_order(
        cases in proptest::collection::vec(any_case(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // whitespace after a JSON frame is kept unless a MessagePack frame follows
        let mut stream = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let next_is_mp = cases.get(i + 1).is_some_and(|n| n.framing == Framing::MessagePack);
            stream.extend_from_slice(if next_is_mp { &c.bytes[..frame_len(c)] } else { &c.bytes });
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            pieces.push(stream[last..p].to_vec());
            last = p;
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let frames = rt.block_on(async {
            let mut conn = Connection::new(Scripted::new(pieces), MAX);
            let mut frames = Vec::new();
            while let Some(f) = conn.read_frame().await.unwrap() {
                frames.push(f);
            }
            frames
        });
        prop_assert_eq!(frames.len(), cases.len());
        for (f, c) in frames.iter().zip(&cases) {
            assert_decodes_to(f, c);
        }
    }

    #[test]
    fn the_messagepack_ack_echoes_any_chunk(chunk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = Vec::new();
        encode::write_ack(&mut buf, &chunk, Framing::MessagePack);
        prop_assert_eq!(check_reply(&buf, 1024), Ok(Check::Complete(buf.len())));
        prop_assert_eq!(parse_ack(&buf), Ok(chunk));
    }

    #[test]
    fn the_json_ack_echoes_any_utf8_chunk(chunk in "\\PC{0,32}") {
        let mut buf = Vec::new();
        encode::write_ack(&mut buf, chunk.as_bytes(), Framing::Json);
        prop_assert_eq!(check_reply(&buf, 1024), Ok(Check::Complete(buf.len())));
        prop_assert_eq!(parse_ack(&buf), Ok(chunk.into_bytes()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 1usize..2048) {
        decode_stream_invariants(&bytes, limit);
        let _ = parse_frame(&bytes, limit);
        let _ = parse_ack(&bytes);
        let _ = check_reply(&bytes, limit);
    }

    #[test]
    fn mutated_frames_never_panic(
        case in any_case(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = case.bytes.clone();
        for (i, b) in &edits {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        decode_stream_invariants(&bytes, MAX);
        let _ = parse_frame(&bytes, MAX);
    }

    #[test]
    fn float_times_round_to_the_nanosecond_below(secs in 0u32..u32::MAX, frac in 0u32..1000) {
        let t = EventTime::from_f64(f64::from(secs) + f64::from(frac) / 1000.0).unwrap();
        prop_assert_eq!(t.seconds, secs);
        prop_assert!(t.nanos < 1_000_000_000);
    }
}

/// What the connection loop relies on, for any input: `check` is consistent with `parse` and
/// never reports a length it does not have.
fn decode_stream_invariants(bytes: &[u8], limit: usize) {
    let mut rest = bytes;
    loop {
        match check_frame(rest, limit) {
            Ok(Check::Complete(n)) => {
                assert!(
                    n > 0 && n <= rest.len() && n <= limit,
                    "length {n} of {} bytes, limit {limit}",
                    rest.len()
                );
                let first = rest.iter().position(|&b| !b" \t\r\n".contains(&b)).unwrap();
                if rest[first] != b'[' && rest[first] != b'{' {
                    // MessagePack delimited by check parses without a decoder error
                    let res = parse_frame(&rest[..n], limit);
                    assert!(
                        !matches!(res, Err(FrameError::MessagePack(_))),
                        "{res:?} for {:02x?}",
                        &rest[..n]
                    );
                } else {
                    let _ = parse_frame(&rest[..n], limit);
                }
                rest = &rest[n..];
            }
            Ok(Check::Incomplete) => {
                // a longer buffer can only confirm or refuse, never shrink the answer
                return;
            }
            Err(_) => return,
        }
    }
}
