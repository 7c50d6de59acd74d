//! Arbitrary bytes through `check_frame` / `parse_frame` the way `Connection` drives them:
//! bytes arrive in reads, the buffer is checked after each, complete frames are parsed and
//! dropped from the front.
//!
//! Input layout: byte 0 picks the frame limit, byte 1 the read size, the rest is the stream.
//! Besides "no panic", it asserts what the connection relies on:
//! - a complete frame's length is within the buffer and the limit;
//! - a MessagePack frame `check` delimited never fails in the MessagePack decoder;
//! - the outcome does not depend on how the stream was cut into reads;
//! - within an entry limit (`parse_with`, the server's path) no frame has more entries, and a
//!   frame that parses has an up-front cost (`decoded_cost`).
#![no_main]

use forward::FrameError;
use forward::{Check, DecodeLimits, check_frame, decoded_cost, parse_frame, parse_frame_with};
use libfuzzer_sys::fuzz_target;

/// What a connection would have seen: each frame (or its parse error), then how it ended.
fn run(stream: &[u8], max: usize, read: usize) -> Vec<String> {
    let mut outcomes = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        match check_frame(&buf, max) {
            Ok(Check::Complete(n)) => {
                assert!(
                    n > 0 && n <= buf.len() && n <= max,
                    "length {n} of {} bytes, limit {max}",
                    buf.len()
                );
                let res = parse_frame(&buf[..n], max);
                let first = buf
                    .iter()
                    .position(|&b| !b" \t\r\n".contains(&b))
                    .expect("a frame is not only whitespace");
                if buf[first] != b'[' && buf[first] != b'{' {
                    assert!(
                        !matches!(res, Err(FrameError::MessagePack(_))),
                        "check delimited {:02x?} but parse said {res:?}",
                        &buf[..n]
                    );
                }
                outcomes.push(format!("{res:?}"));
                buf.drain(..n);
            }
            Ok(Check::Incomplete) => {
                if fed == stream.len() {
                    let clean = buf.iter().all(|b| b" \t\r\n".contains(b));
                    outcomes.push(if clean {
                        "end".into()
                    } else {
                        "truncated".into()
                    });
                    return outcomes;
                }
                let next = (fed + read).min(stream.len());
                buf.extend_from_slice(&stream[fed..next]);
                fed = next;
            }
            Err(e) => {
                outcomes.push(format!("error {e:?}"));
                return outcomes;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit_sel, read_sel, stream @ ..] = data else {
        return;
    };
    let max = 16 + usize::from(*limit_sel) * 64;
    let read = usize::from(*read_sel % 64) + 1;
    let whole = run(stream, max, stream.len().max(1));
    let chunked = run(stream, max, read);
    assert_eq!(whole, chunked, "outcome depends on the read size {read}");
    // parse alone on bytes check never saw must not panic either
    let _ = parse_frame(stream, max);
    // Within an entry limit (the server's path), and the cost the server charges up front:
    // what parses within the limits has a cost (decoded_cost refuses only what parse_with
    // would refuse before decoding) and never more entries than the limit.
    let limits = DecodeLimits {
        max_frame_bytes: max,
        max_records: 1 + usize::from(*read_sel % 8),
    };
    let cost = decoded_cost(stream, &limits);
    if let Ok(frame) = parse_frame_with(stream, &limits) {
        assert!(frame.entries.len() <= limits.max_records);
        assert!(cost.is_ok(), "parsed within {limits:?}, but decoded_cost said {cost:?}");
    }
});
