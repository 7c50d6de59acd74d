//! Arbitrary bytes as ack replies, the way `AckReader` reads them (`check_reply` then
//! `parse_ack`), and `parse_ack` alone.
#![no_main]

use forward::{Check, check_reply, parse_ack};
use libfuzzer_sys::fuzz_target;

const MAX_REPLY: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let _ = parse_ack(data);
    let mut rest = data;
    while let Ok(Check::Complete(n)) = check_reply(rest, MAX_REPLY) {
        assert!(n > 0 && n <= rest.len() && n <= MAX_REPLY);
        if let Ok(chunk) = parse_ack(&rest[..n]) {
            // an ack we would accept is one we could have written: echo it and read it back
            let mut echoed = Vec::new();
            forward::encode::write_ack(&mut echoed, &chunk, forward::Framing::MessagePack);
            assert_eq!(parse_ack(&echoed).as_deref(), Ok(&chunk[..]));
        }
        rest = &rest[n..];
    }
});
