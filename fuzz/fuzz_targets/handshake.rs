//! Arbitrary bytes through every handshake parser (`parse_helo`, `parse_ping`, `parse_pong`),
//! through `check_message` as a stream, and through both state machines.
//!
//! Besides "no panic", it asserts what the connection code will rely on:
//! - a message a parser accepts, written back by its writer, parses to the same value;
//! - `check_message`'s `Complete(n)` lies within the buffer and the limit, and the parsers
//!   never call a message it delimited truncated, too long or undecodable;
//! - the state machines accept any parsed message without panicking, produce messages that
//!   parse, and never authenticate a peer from bytes that do not know the key;
//! - a whole handshake between our two sides, with credentials taken from the input, succeeds
//!   exactly when the keys (and passwords) agree and the hostnames differ.
#![no_main]

use std::collections::HashMap;

use forward::{
    Check, ClientAuth, ClientHandshake, HandshakeError, Helo, MAX_HANDSHAKE_BYTES, ServerAuth,
    ServerHandshake, check_message, parse_helo, parse_ping, parse_pong, write_helo, write_ping,
    write_pong,
};
use libfuzzer_sys::fuzz_target;

fn written<T>(value: &T, write: fn(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut buf = Vec::new();
    write(&mut buf, value);
    buf
}

fn not_a_framing_error(e: &HandshakeError) -> bool {
    !matches!(
        e,
        HandshakeError::Truncated
            | HandshakeError::TrailingBytes
            | HandshakeError::TooLarge { .. }
            | HandshakeError::MessagePack(_)
    )
}

fn parsers(data: &[u8], delimited: bool) {
    match parse_helo(data) {
        Ok(h) => assert_eq!(parse_helo(&written(&h, write_helo)).as_ref(), Ok(&h)),
        Err(e) => assert!(!delimited || not_a_framing_error(&e), "{e:?}"),
    }
    match parse_ping(data) {
        Ok(p) => assert_eq!(parse_ping(&written(&p, write_ping)).as_ref(), Ok(&p)),
        Err(e) => assert!(!delimited || not_a_framing_error(&e), "{e:?}"),
    }
    match parse_pong(data) {
        Ok(p) => assert_eq!(parse_pong(&written(&p, write_pong)).as_ref(), Ok(&p)),
        Err(e) => assert!(!delimited || not_a_framing_error(&e), "{e:?}"),
    }
}

fn client_auth(key: &str, hostname: &str, username: &str, password: &str) -> ClientAuth {
    ClientAuth {
        shared_key: key.into(),
        hostname: hostname.into(),
        username: username.into(),
        password: password.into(),
    }
}

/// Our client and server fed whatever the input parses as.
fn state_machines(data: &[u8]) {
    let mut client = ClientHandshake::new(client_auth("key", "client", "user", "pw")).unwrap();
    let helo = parse_helo(data).unwrap_or(Helo {
        nonce: b"nonce".to_vec(),
        auth_salt: b"salt".to_vec(),
        keepalive: true,
    });
    let ping = client.on_helo(&helo).expect("a parsed HELO is always answered");
    assert_eq!(parse_ping(&written(&ping, write_ping)).as_ref(), Ok(&ping));
    if let Ok(pong) = parse_pong(data) {
        // the digest covers our fresh salt: bytes chosen before it cannot match it
        assert!(client.on_pong(&pong).is_err());
        assert!(!client.is_established());
    }

    let mut server = ServerHandshake::new(ServerAuth {
        shared_key: "key".into(),
        hostname: "server".into(),
        users: Some(HashMap::from([("user".to_string(), "pw".to_string())])),
    })
    .unwrap();
    assert_eq!(
        parse_helo(&written(&server.helo(), write_helo)),
        Ok(server.helo())
    );
    if let Ok(ping) = parse_ping(data) {
        let reply = server.on_ping(&ping).unwrap();
        // the digest covers our fresh nonce: bytes chosen before it cannot match it
        assert!(!reply.is_authenticated());
        assert_eq!(
            parse_pong(&written(&reply.pong, write_pong)).as_ref(),
            Ok(&reply.pong)
        );
    }
}

/// A whole handshake between our two sides, credentials from the input (NUL-separated:
/// client host, server host, client key, server key, username, client password, server
/// password; users are on when all seven are given).
fn whole_handshake(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let part = |i: usize| parts.get(i).cloned().unwrap_or_default();
    let (host_c, host_s, key_c, key_s) = (part(0), part(1), part(2), part(3));
    let (user, pass_c, pass_s) = (part(4), part(5), part(6));
    let users = (parts.len() > 6).then(|| HashMap::from([(user.clone(), pass_s.clone())]));
    let client = ClientHandshake::new(client_auth(&key_c, &host_c, &user, &pass_c));
    let server = ServerHandshake::new(ServerAuth {
        shared_key: key_s.clone(),
        hostname: host_s.clone(),
        users: users.clone(),
    });
    let (mut client, mut server) = match (client, server) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => {
            for e in [c.err(), s.err()].into_iter().flatten() {
                assert!(matches!(e, HandshakeError::Config(_)), "{e:?}");
            }
            return;
        }
    };
    let helo = parse_helo(&written(&server.helo(), write_helo)).unwrap();
    let ping = client.on_helo(&helo).unwrap();
    let ping = parse_ping(&written(&ping, write_ping)).unwrap();
    let reply = server.on_ping(&ping).unwrap();
    let pong = parse_pong(&written(&reply.pong, write_pong)).unwrap();
    let result = client.on_pong(&pong);
    let should_pass = key_c == key_s && host_c != host_s && (users.is_none() || pass_c == pass_s);
    assert_eq!(reply.is_authenticated(), should_pass, "{reply:?}");
    assert_eq!(result.is_ok(), should_pass, "{result:?}");
}

fuzz_target!(|data: &[u8]| {
    parsers(data, false);
    let mut rest = data;
    while let Ok(Check::Complete(n)) = check_message(rest, MAX_HANDSHAKE_BYTES) {
        assert!(n > 0 && n <= rest.len() && n <= MAX_HANDSHAKE_BYTES);
        parsers(&rest[..n], true);
        rest = &rest[n..];
    }
    state_machines(data);
    whole_handshake(data);
});
