//! A frame trickled in one byte per read is decoded correctly, and the scanning work stays
//! linear in its length (counted by `Connection::scanned_bytes`, not timed).

mod common;

use common::*;
use forward::{Connection, DecodeLimits, Options, encode, parse_frame};
use rmpv::Value;

const MAX: usize = 8 << 20;

/// Reads `bytes` one byte per read; returns the frames and the bytes scanned.
async fn trickle(bytes: &[u8]) -> (Vec<forward::Frame>, u64) {
    let mut conn = Connection::with_limits(
        Scripted::bytewise(bytes),
        DecodeLimits {
            max_frame_bytes: MAX,
            max_records: 1_000_000,
        },
    );
    let mut frames = Vec::new();
    while let Some(f) = conn.read_frame().await.expect("valid stream") {
        frames.push(f);
    }
    (frames, conn.scanned_bytes())
}

#[tokio::test]
async fn a_messagepack_frame_trickled_a_byte_at_a_time_is_scanned_in_linear_work() {
    let entries: Vec<u8> = (0..3000)
        .flat_map(|i| {
            let mut e = Vec::new();
            encode::write_entry(&mut e, forward::EventTime::new(7, 0), &mp(&record(i)));
            e
        })
        .collect();
    let mut packed = Vec::new();
    encode::write_packed_forward(&mut packed, "p", &entries, &Options::default());
    let forward = mp(&Value::Array(vec![
        Value::from("f"),
        Value::Array(
            (0..3000)
                .map(|i| Value::Array(vec![et(1, 2), record(i)]))
                .collect(),
        ),
    ]));
    for bytes in [packed, forward] {
        let (frames, scanned) = trickle(&bytes).await;
        assert_eq!(frames, vec![parse_frame(&bytes, MAX).unwrap()]);
        // Each read costs the new byte plus at most one header re-read (≤ 9 bytes); a
        // rescan from the start on each read would be ~len²/2.
        let len = bytes.len() as u64;
        assert!(scanned <= 10 * len, "scanned {scanned} for {len} bytes");
    }
}

#[tokio::test]
async fn a_json_frame_trickled_a_byte_at_a_time_is_scanned_in_linear_work() {
    let records: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"n":{i},"s":"x\"]{i}"}}"#))
        .collect();
    let json = format!(
        r#"["j",1795754038,{{"list":[{}]}},{{"chunk":"c"}}]"#,
        records.join(",")
    );
    let bytes = json.into_bytes();
    let (frames, scanned) = trickle(&bytes).await;
    assert_eq!(frames, vec![parse_frame(&bytes, MAX).unwrap()]);
    let len = bytes.len() as u64;
    // the structural walk (len), the doubling checks (≤ 2 len) and the final check (len)
    assert!(scanned <= 5 * len, "scanned {scanned} for {len} bytes");
}

#[tokio::test]
async fn malformed_json_is_still_refused_before_the_frame_ends() {
    // `[1,,` then more array: refused at the first full check, long before the limit.
    let mut bytes = b"[\"t\",1,[1,,".to_vec();
    bytes.extend(std::iter::repeat_n(b'1', 100_000));
    let mut conn = Connection::new(Scripted::new(vec![bytes]), MAX);
    assert!(matches!(
        conn.read_frame().await,
        Err(forward::ConnectionError::Frame(forward::FrameError::Json(
            _
        )))
    ));
}
