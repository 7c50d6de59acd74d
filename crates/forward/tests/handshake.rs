//! The handshake (HELO / PING / PONG): codec round trips and refusals, both state machines
//! through a whole handshake in memory, and interop with `@fluent-org/logger`
//! (`tests/peers/handshake_vectors.mjs`: known-answer digests computed by Node's crypto, the
//! library's own messages decoded by our parsers, ours checked by the library).
//!
//! The Node peer is installed by `bash scripts/test.sh` (or `npm install` in tests/peers);
//! without it the interop tests fail with instructions, they never pass silently.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use forward::{
    Check, ClientAuth, ClientHandshake, HandshakeError, Helo, MAX_HANDSHAKE_BYTES, Ping, Pong,
    ServerAuth, ServerHandshake, check_message, parse_helo, parse_ping, parse_pong,
    password_digest, shared_key_digest, write_helo, write_ping, write_pong,
};
use rmpv::Value;
use serde_json::json;

// --- helpers -------------------------------------------------------------------------------

fn helo_bytes(h: &Helo) -> Vec<u8> {
    let mut b = Vec::new();
    write_helo(&mut b, h);
    b
}

fn ping_bytes(p: &Ping) -> Vec<u8> {
    let mut b = Vec::new();
    write_ping(&mut b, p);
    b
}

fn pong_bytes(p: &Pong) -> Vec<u8> {
    let mut b = Vec::new();
    write_pong(&mut b, p);
    b
}

/// Encodes with rmpv: an independent writer.
fn mp(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

/// A MessagePack `str` holding arbitrary (possibly non-UTF-8) bytes, as Fluent Bit writes its
/// nonce and salt.
fn raw_str(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_str_len(&mut out, bytes.len() as u32).unwrap();
    out.extend_from_slice(bytes);
    out
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn digest_of(c: char) -> String {
    c.to_string().repeat(128)
}

fn client(key: &str, hostname: &str) -> ClientHandshake {
    ClientHandshake::new(ClientAuth {
        shared_key: key.into(),
        hostname: hostname.into(),
        username: String::new(),
        password: String::new(),
    })
    .unwrap()
}

fn user_client(key: &str, hostname: &str, username: &str, password: &str) -> ClientHandshake {
    ClientHandshake::new(ClientAuth {
        shared_key: key.into(),
        hostname: hostname.into(),
        username: username.into(),
        password: password.into(),
    })
    .unwrap()
}

fn server(key: &str, hostname: &str) -> ServerHandshake {
    ServerHandshake::new(ServerAuth {
        shared_key: key.into(),
        hostname: hostname.into(),
        users: None,
    })
    .unwrap()
}

fn user_server(key: &str, hostname: &str, users: &[(&str, &str)]) -> ServerHandshake {
    ServerHandshake::new(ServerAuth {
        shared_key: key.into(),
        hostname: hostname.into(),
        users: Some(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
    })
    .unwrap()
}

/// Runs a whole handshake over bytes, as two connections would: each message written, then
/// delimited and parsed by the other side.
struct Run {
    ping: Ping,
    reply: forward::ServerReply,
    client_result: Result<(), HandshakeError>,
    client: ClientHandshake,
}

fn through_bytes(bytes: Vec<u8>) -> Vec<u8> {
    assert_eq!(
        check_message(&bytes, MAX_HANDSHAKE_BYTES),
        Ok(Check::Complete(bytes.len()))
    );
    bytes
}

fn handshake(mut c: ClientHandshake, mut srv: ServerHandshake) -> Run {
    let helo = parse_helo(&through_bytes(helo_bytes(&srv.helo()))).unwrap();
    let ping = c.on_helo(&helo).unwrap();
    let ping = parse_ping(&through_bytes(ping_bytes(&ping))).unwrap();
    let reply = srv.on_ping(&ping).unwrap();
    let pong = parse_pong(&through_bytes(pong_bytes(&reply.pong))).unwrap();
    assert_eq!(pong, reply.pong);
    let client_result = c.on_pong(&pong);
    Run {
        ping,
        reply,
        client_result,
        client: c,
    }
}

// --- codec: round trips ----------------------------------------------------------------------

#[test]
fn helo_round_trips() {
    for h in [
        Helo {
            nonce: b"0123456789abcdef0123456789abcdef".to_vec(),
            auth_salt: Vec::new(),
            keepalive: true,
        },
        Helo {
            nonce: vec![0xff, 0x00, 0x80, 0xc1],
            auth_salt: vec![0xfe; 256],
            keepalive: false,
        },
        Helo {
            nonce: Vec::new(),
            auth_salt: b"s".to_vec(),
            keepalive: true,
        },
    ] {
        assert_eq!(parse_helo(&helo_bytes(&h)), Ok(h));
    }
}

#[test]
fn ping_round_trips() {
    for p in [
        Ping {
            hostname: "client.example".into(),
            shared_key_salt: b"0123456789abcdef0123456789abcdef".to_vec(),
            digest: digest_of('a'),
            username: String::new(),
            password_digest: String::new(),
        },
        Ping {
            hostname: "h".repeat(255),
            shared_key_salt: vec![0x80; 256],
            digest: "0123456789abcdef".repeat(8),
            username: "ü".repeat(512),
            password_digest: digest_of('f'),
        },
    ] {
        assert_eq!(parse_ping(&ping_bytes(&p)), Ok(p));
    }
}

#[test]
fn pong_round_trips() {
    for p in [
        Pong {
            ok: true,
            reason: String::new(),
            hostname: "server.example".into(),
            digest: digest_of('9'),
        },
        Pong {
            ok: false,
            reason: "shared_key mismatch".into(),
            hostname: String::new(),
            digest: String::new(),
        },
        Pong {
            ok: false,
            reason: "r".repeat(1024),
            hostname: "h".into(),
            digest: digest_of('0'),
        },
    ] {
        assert_eq!(parse_pong(&pong_bytes(&p)), Ok(p));
    }
}

#[test]
fn our_messages_are_arrays_of_str_as_fluent_bit_requires() {
    let mut srv = user_server("k", "srv", &[("u", "p")]);
    let helo = srv.helo();
    let v = rmpv::decode::read_value(&mut &helo_bytes(&helo)[..]).unwrap();
    let Value::Array(items) = v else { panic!() };
    let Value::Map(opts) = &items[1] else {
        panic!()
    };
    for (k, v) in opts {
        match k.as_str().unwrap() {
            "nonce" | "auth" => {
                let Value::String(text) = v else {
                    panic!("{k} not a str")
                };
                // printable: hex of 16 random bytes
                assert_eq!(text.as_str().unwrap().len(), 32);
                assert!(
                    text.as_str()
                        .unwrap()
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit())
                );
            }
            "keepalive" => assert_eq!(v, &Value::Boolean(true)),
            other => panic!("unexpected option {other}"),
        }
    }
    let mut c = user_client("k", "cli", "u", "p");
    let ping = c.on_helo(&helo).unwrap();
    let Value::Array(items) = rmpv::decode::read_value(&mut &ping_bytes(&ping)[..]).unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 6);
    assert!(
        items
            .iter()
            .all(|v| matches!(v, Value::String(s) if s.is_str()))
    );
    let reply = srv.on_ping(&ping).unwrap();
    assert!(reply.is_authenticated());
    let Value::Array(items) = rmpv::decode::read_value(&mut &pong_bytes(&reply.pong)[..]).unwrap()
    else {
        panic!()
    };
    assert_eq!(items[1], Value::Boolean(true));
}

// --- codec: peers' shapes ------------------------------------------------------------------

/// `["HELO", {"nonce": <n>, "auth": <a>}]` built by hand, nonce and salt in the given encoding.
fn helo_with(nonce: Vec<u8>, auth: Vec<u8>) -> Vec<u8> {
    let mut b = Vec::new();
    rmp::encode::write_array_len(&mut b, 2).unwrap();
    b.extend(mp(&s("HELO")));
    rmp::encode::write_map_len(&mut b, 2).unwrap();
    b.extend(mp(&s("nonce")));
    b.extend(nonce);
    b.extend(mp(&s("auth")));
    b.extend(auth);
    b
}

#[test]
fn nonce_and_salt_as_str_with_non_utf8_bytes_or_as_bin_read_and_digest_the_same() {
    let nonce: Vec<u8> = (0..16u8).map(|i| 0xf0 ^ i.wrapping_mul(37)).collect();
    let salt = [
        0xff, 0xfe, 0x80, 0x00, 0xc0, 0xaf, 0xed, 0xa0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    assert!(std::str::from_utf8(&nonce).is_err() && String::from_utf8(salt.to_vec()).is_err());
    // Fluent Bit's shape: str of random bytes, no keepalive option
    let as_str = parse_helo(&helo_with(raw_str(&nonce), raw_str(&salt))).unwrap();
    // fluentd's shape: bin
    let as_bin = parse_helo(&helo_with(
        mp(&Value::Binary(nonce.clone())),
        mp(&Value::Binary(salt.to_vec())),
    ))
    .unwrap();
    assert_eq!(as_str, as_bin);
    assert_eq!(as_str.nonce, nonce);
    assert_eq!(as_str.auth_salt, salt);
    assert!(as_str.keepalive, "keepalive absent means true");
    assert_eq!(
        shared_key_digest(b"salt", b"host", &as_str.nonce, b"key"),
        shared_key_digest(b"salt", b"host", &as_bin.nonce, b"key")
    );
    assert_eq!(
        password_digest(&as_str.auth_salt, b"u", b"p"),
        password_digest(&salt, b"u", b"p")
    );

    // A PING whose salt is a non-UTF-8 str or a bin reads the same raw salt.
    let ping = |salt_value: Vec<u8>| {
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 6).unwrap();
        for v in [s("PING"), s("host")] {
            b.extend(mp(&v));
        }
        b.extend(salt_value);
        for v in [s(&digest_of('1')), s(""), s("")] {
            b.extend(mp(&v));
        }
        parse_ping(&b).unwrap()
    };
    assert_eq!(
        ping(raw_str(&salt)),
        ping(mp(&Value::Binary(salt.to_vec())))
    );
    assert_eq!(ping(raw_str(&salt)).shared_key_salt, salt);
}

#[test]
fn helo_defaults_nil_and_unknown_options() {
    let b = mp(&Value::Array(vec![
        s("HELO"),
        Value::Map(vec![
            (s("nonce"), s("n")),
            (s("auth"), Value::Nil),
            (s("keepalive"), Value::Nil),
            (s("future"), Value::Array(vec![Value::from(1)])),
            (Value::from(7), s("non-string key")),
        ]),
    ]));
    assert_eq!(
        parse_helo(&b),
        Ok(Helo {
            nonce: b"n".to_vec(),
            auth_salt: Vec::new(),
            keepalive: true,
        })
    );
}

#[test]
fn helo_refusals() {
    let helo = |opts: Vec<(Value, Value)>| {
        parse_helo(&mp(&Value::Array(vec![s("HELO"), Value::Map(opts)])))
    };
    assert_eq!(
        helo(vec![(s("auth"), s(""))]),
        Err(HandshakeError::MissingField {
            field: "HELO nonce"
        })
    );
    assert_eq!(
        helo(vec![(s("nonce"), s("a")), (s("nonce"), s("b"))]),
        Err(HandshakeError::DuplicateOption { option: "nonce" })
    );
    assert!(matches!(
        helo(vec![(s("nonce"), s("a")), (s("keepalive"), s("yes"))]),
        Err(HandshakeError::WrongType {
            field: "HELO keepalive",
            ..
        })
    ));
    assert!(matches!(
        helo(vec![(s("nonce"), Value::from(5))]),
        Err(HandshakeError::WrongType {
            field: "HELO nonce",
            ..
        })
    ));
    assert_eq!(
        helo(vec![(s("nonce"), Value::Binary(vec![0; 257]))]),
        Err(HandshakeError::FieldTooLong {
            field: "HELO nonce",
            limit: 256
        })
    );
    assert_eq!(
        helo(vec![
            (s("nonce"), s("a")),
            (s("auth"), Value::Binary(vec![0; 257]))
        ]),
        Err(HandshakeError::FieldTooLong {
            field: "HELO auth",
            limit: 256
        })
    );
    assert!(matches!(
        parse_helo(&mp(&Value::Array(vec![s("HELO"), Value::Nil]))),
        Err(HandshakeError::WrongType {
            field: "HELO options",
            ..
        })
    ));
}

fn ping_of(items: Vec<Value>) -> Result<Ping, HandshakeError> {
    let mut all = vec![s("PING")];
    all.extend(items);
    parse_ping(&mp(&Value::Array(all)))
}

#[test]
fn ping_refusals() {
    let good = || vec![s("host"), s("salt"), s(&digest_of('a')), s(""), s("")];
    assert!(ping_of(good()).is_ok());
    let with = |i: usize, v: Value| {
        let mut items = good();
        items[i] = v;
        ping_of(items)
    };
    let non_utf8 = {
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 6).unwrap();
        b.extend(mp(&s("PING")));
        b.extend(raw_str(&[0xff, 0xfe]));
        for v in [s("salt"), s(&digest_of('a')), s(""), s("")] {
            b.extend(mp(&v));
        }
        parse_ping(&b)
    };
    assert_eq!(
        non_utf8,
        Err(HandshakeError::NotUtf8 {
            field: "PING hostname"
        })
    );
    assert_eq!(
        with(0, s(&"h".repeat(256))),
        Err(HandshakeError::FieldTooLong {
            field: "PING hostname",
            limit: 255
        })
    );
    assert_eq!(
        with(1, Value::Binary(vec![1; 257])),
        Err(HandshakeError::FieldTooLong {
            field: "PING shared_key_salt",
            limit: 256
        })
    );
    for bad in [
        digest_of('A'),
        digest_of('g'),
        "a".repeat(127),
        "a".repeat(129),
        String::new(),
    ] {
        assert_eq!(
            with(2, s(&bad)),
            Err(HandshakeError::NotADigest {
                field: "PING shared_key_hexdigest"
            }),
            "{bad:?}"
        );
    }
    assert_eq!(
        with(4, s("not hex")),
        Err(HandshakeError::NotADigest {
            field: "PING password_digest"
        })
    );
    assert_eq!(
        with(3, s(&"u".repeat(1025))),
        Err(HandshakeError::FieldTooLong {
            field: "PING username",
            limit: 1024
        })
    );
    assert!(matches!(
        with(0, Value::from(1)),
        Err(HandshakeError::WrongType {
            field: "PING hostname",
            ..
        })
    ));
    // a digest as bin is read like a str
    assert!(with(2, Value::Binary(digest_of('b').into_bytes())).is_ok());
}

fn pong_of(items: Vec<Value>) -> Result<Pong, HandshakeError> {
    let mut all = vec![s("PONG")];
    all.extend(items);
    parse_pong(&mp(&Value::Array(all)))
}

#[test]
fn pong_refusals_and_fluentd_refusal_shape() {
    // fluentd's and Fluent Bit's refusal: no hostname, no digest
    assert_eq!(
        pong_of(vec![
            Value::Boolean(false),
            s("shared_key mismatch"),
            s(""),
            s("")
        ]),
        Ok(Pong {
            ok: false,
            reason: "shared_key mismatch".into(),
            hostname: String::new(),
            digest: String::new(),
        })
    );
    assert_eq!(
        pong_of(vec![Value::Boolean(true), s(""), s("srv"), s("")]),
        Err(HandshakeError::NotADigest {
            field: "PONG shared_key_hexdigest"
        })
    );
    assert!(matches!(
        pong_of(vec![s("true"), s(""), s("srv"), s(&digest_of('a'))]),
        Err(HandshakeError::WrongType {
            field: "PONG auth_result",
            ..
        })
    ));
    assert_eq!(
        pong_of(vec![
            Value::Boolean(false),
            s(&"r".repeat(1025)),
            s(""),
            s("")
        ]),
        Err(HandshakeError::FieldTooLong {
            field: "PONG reason",
            limit: 1024
        })
    );
    // a non-UTF-8 reason is shown lossily, not refused
    let mut b = Vec::new();
    rmp::encode::write_array_len(&mut b, 5).unwrap();
    b.extend(mp(&s("PONG")));
    b.extend(mp(&Value::Boolean(false)));
    b.extend(raw_str(b"bad \xff key"));
    b.extend(mp(&s("")));
    b.extend(mp(&s("")));
    assert_eq!(parse_pong(&b).unwrap().reason, "bad \u{fffd} key");
    // 400 invalid bytes grow to 1200 when decoded: over the limit of what we would write back
    let mut b = Vec::new();
    rmp::encode::write_array_len(&mut b, 5).unwrap();
    b.extend(mp(&s("PONG")));
    b.extend(mp(&Value::Boolean(false)));
    b.extend(raw_str(&[0xff; 400]));
    b.extend(mp(&s("")));
    b.extend(mp(&s("")));
    assert!(matches!(
        parse_pong(&b),
        Err(HandshakeError::FieldTooLong { .. })
    ));
}

#[test]
fn framing_refusals() {
    let pong = pong_bytes(&Pong {
        ok: true,
        reason: String::new(),
        hostname: "srv".into(),
        digest: digest_of('c'),
    });
    assert_eq!(
        parse_helo(&pong),
        Err(HandshakeError::UnexpectedMessage {
            expected: "HELO",
            found: "PONG".into()
        })
    );
    assert!(matches!(
        parse_ping(&mp(&Value::Array(vec![s("PING"), s("h")]))),
        Err(HandshakeError::WrongLength {
            message: "PING",
            expected: 6,
            found: 2
        })
    ));
    let mut trailing = pong.clone();
    trailing.push(0xc0);
    assert_eq!(parse_pong(&trailing), Err(HandshakeError::TrailingBytes));
    for cut in 0..pong.len() {
        let r = parse_pong(&pong[..cut]);
        assert!(
            matches!(r, Err(HandshakeError::Truncated)),
            "cut {cut}: {r:?}"
        );
    }
    assert_eq!(
        parse_pong(&mp(&Value::Map(vec![]))),
        Err(HandshakeError::NotAMessage)
    );
    assert_eq!(
        parse_pong(br#"["PONG",true,"","srv",""]"#),
        Err(HandshakeError::NotAMessage),
        "no JSON framing in the handshake"
    );
    assert_eq!(
        parse_pong(&mp(&Value::Array(vec![Value::from(1)]))),
        Err(HandshakeError::NotAMessage)
    );
    let huge = mp(&Value::Array(vec![
        s("HELO"),
        Value::Map(vec![(
            s("pad"),
            Value::Binary(vec![0; MAX_HANDSHAKE_BYTES]),
        )]),
    ]));
    assert_eq!(
        parse_helo(&huge),
        Err(HandshakeError::TooLarge {
            limit: MAX_HANDSHAKE_BYTES
        })
    );
    assert!(matches!(
        parse_helo(&[0x91; 200]),
        Err(HandshakeError::MessagePack(_) | HandshakeError::Truncated)
    ));
    assert!(matches!(
        parse_helo(&[0x92, 0xc1, 0xc0]),
        Err(HandshakeError::MessagePack(_))
    ));
}

#[test]
fn check_message_delimits_one_message_at_a_time() {
    let helo = helo_bytes(&server("k", "srv").helo());
    for cut in 0..helo.len() {
        assert_eq!(
            check_message(&helo[..cut], MAX_HANDSHAKE_BYTES),
            Ok(Check::Incomplete)
        );
    }
    let mut two = helo.clone();
    two.extend_from_slice(&helo);
    assert_eq!(
        check_message(&two, MAX_HANDSHAKE_BYTES),
        Ok(Check::Complete(helo.len()))
    );
    assert_eq!(
        check_message(&mp(&Value::Map(vec![])), 100),
        Err(HandshakeError::NotAMessage)
    );
    assert_eq!(check_message(b" [", 100), Err(HandshakeError::NotAMessage));
    // a declared length beyond the limit is refused before its bytes arrive
    assert_eq!(
        check_message(&[0x92, 0xc6, 0x00, 0x10, 0x00, 0x00], 1024),
        Err(HandshakeError::TooLarge { limit: 1024 })
    );
    assert!(matches!(
        check_message(&[0x91; 100], usize::MAX),
        Err(HandshakeError::MessagePack(_))
    ));
}

// --- state machines --------------------------------------------------------------------------

#[test]
fn right_shared_key_establishes_both_sides() {
    let run = handshake(
        client("s3cret", "cli.example"),
        server("s3cret", "srv.example"),
    );
    assert_eq!(run.client_result, Ok(()));
    assert!(run.client.is_established());
    assert!(run.reply.is_authenticated());
    assert_eq!(
        run.reply.outcome,
        Ok(forward::Peer {
            hostname: "cli.example".into(),
            username: None,
        })
    );
    assert!(run.reply.pong.ok);
    assert_eq!(run.reply.pong.hostname, "srv.example");
    assert_eq!(run.ping.username, "");
    assert_eq!(run.ping.password_digest, "");
}

#[test]
fn wrong_shared_key_is_refused_with_a_reason_and_the_client_stops() {
    let run = handshake(client("wrong", "cli"), server("right", "srv"));
    assert_eq!(run.reply.outcome, Err(HandshakeError::SharedKeyMismatch));
    assert_eq!(
        run.reply.pong,
        Pong {
            ok: false,
            reason: "shared_key mismatch".into(),
            hostname: String::new(),
            digest: String::new(),
        }
    );
    assert_eq!(
        run.client_result,
        Err(HandshakeError::Refused {
            reason: "shared_key mismatch".into()
        })
    );
    assert!(!run.client.is_established());
}

#[test]
fn a_pong_with_a_wrong_digest_is_refused() {
    let mut srv = server("key", "srv");
    let mut c = client("key", "cli");
    let ping = c.on_helo(&srv.helo()).unwrap();
    let mut pong = srv.on_ping(&ping).unwrap().pong;
    assert!(pong.ok);
    // one character changed
    let mut d = pong.digest.into_bytes();
    d[0] = if d[0] == b'0' { b'1' } else { b'0' };
    pong.digest = String::from_utf8(d).unwrap();
    assert_eq!(c.on_pong(&pong), Err(HandshakeError::SharedKeyMismatch));

    // a server that does not know the key, claiming success
    let mut c = client("key", "cli");
    let helo = server("key", "srv").helo();
    let ping = c.on_helo(&helo).unwrap();
    let forged = Pong {
        ok: true,
        reason: String::new(),
        hostname: "srv".into(),
        digest: shared_key_digest(&ping.shared_key_salt, b"srv", &helo.nonce, b"guess"),
    };
    assert_eq!(c.on_pong(&forged), Err(HandshakeError::SharedKeyMismatch));
    // a replayed PONG (another connection's salt) fails as well
    let mut c2 = client("key", "cli");
    c2.on_helo(&helo).unwrap();
    let mut srv = server("key", "srv");
    let mut c1 = client("key", "cli");
    let other_pong = srv.on_ping(&c1.on_helo(&srv.helo()).unwrap()).unwrap().pong;
    assert_eq!(
        c2.on_pong(&other_pong),
        Err(HandshakeError::SharedKeyMismatch)
    );
}

#[test]
fn same_hostname_is_refused_on_both_sides() {
    let run = handshake(client("k", "node-1"), server("k", "node-1"));
    assert_eq!(
        run.reply.outcome,
        Err(HandshakeError::HostnameLoop {
            hostname: "node-1".into()
        })
    );
    assert_eq!(
        run.reply.pong.reason,
        "same hostname between input and output: invalid configuration"
    );
    assert!(matches!(
        run.client_result,
        Err(HandshakeError::Refused { .. })
    ));

    // the client's own check, against a server that does not make it (fluentd's in_forward)
    let mut c = client("k", "node-1");
    let helo = server("k", "x").helo();
    let ping = c.on_helo(&helo).unwrap();
    let pong = Pong {
        ok: true,
        reason: String::new(),
        hostname: "node-1".into(),
        digest: shared_key_digest(&ping.shared_key_salt, b"node-1", &helo.nonce, b"k"),
    };
    assert_eq!(
        c.on_pong(&pong),
        Err(HandshakeError::HostnameLoop {
            hostname: "node-1".into()
        })
    );
}

#[test]
fn user_auth_right_user_wrong_user_wrong_password() {
    let users = [("alice", "wonder"), ("bob", "builder")];
    let run = handshake(
        user_client("k", "cli", "alice", "wonder"),
        user_server("k", "srv", &users),
    );
    assert_eq!(run.client_result, Ok(()));
    assert_eq!(
        run.reply.outcome,
        Ok(forward::Peer {
            hostname: "cli".into(),
            username: Some("alice".into()),
        })
    );
    assert_eq!(run.ping.username, "alice");
    assert_eq!(run.ping.password_digest.len(), 128);

    let unknown = handshake(
        user_client("k", "cli", "mallory", "wonder"),
        user_server("k", "srv", &users),
    );
    assert_eq!(
        unknown.reply.outcome,
        Err(HandshakeError::UnknownUser {
            username: "mallory".into()
        })
    );
    let wrong = handshake(
        user_client("k", "cli", "alice", "builder"),
        user_server("k", "srv", &users),
    );
    assert_eq!(
        wrong.reply.outcome,
        Err(HandshakeError::WrongPassword {
            username: "alice".into()
        })
    );
    // the same wire reason for both: no user enumeration
    for run in [&unknown, &wrong] {
        assert_eq!(run.reply.pong.reason, "username/password mismatch");
        assert_eq!(
            run.client_result,
            Err(HandshakeError::Refused {
                reason: "username/password mismatch".into()
            })
        );
    }
    // no credentials at all
    let none = handshake(client("k", "cli"), user_server("k", "srv", &users));
    assert_eq!(
        none.reply.outcome,
        Err(HandshakeError::UnknownUser {
            username: String::new()
        })
    );
    // the shared key is checked first
    let both = handshake(
        user_client("x", "cli", "alice", "wonder"),
        user_server("k", "srv", &users),
    );
    assert_eq!(both.reply.outcome, Err(HandshakeError::SharedKeyMismatch));
}

#[test]
fn an_auth_salt_without_users_gets_our_credentials_as_fluentd_sends_them() {
    // Fluent Bit sends an auth salt even when it has no users.
    let helo = Helo {
        nonce: b"n".to_vec(),
        auth_salt: b"salt".to_vec(),
        keepalive: true,
    };
    let ping = client("k", "cli").on_helo(&helo).unwrap();
    assert_eq!(ping.username, "");
    assert_eq!(ping.password_digest, password_digest(b"salt", b"", b""));
    let ping = user_client("k", "cli", "u", "p").on_helo(&helo).unwrap();
    assert_eq!(ping.username, "u");
    assert_eq!(ping.password_digest, password_digest(b"salt", b"u", b"p"));
    // and none without a salt
    let ping = user_client("k", "cli", "u", "p")
        .on_helo(&Helo {
            auth_salt: Vec::new(),
            ..helo
        })
        .unwrap();
    assert_eq!(
        (ping.username.as_str(), ping.password_digest.as_str()),
        ("", "")
    );
}

#[test]
fn steps_out_of_order_are_refused() {
    let mut srv = server("k", "srv");
    let mut c = client("k", "cli");
    let pong = Pong {
        ok: true,
        reason: String::new(),
        hostname: "srv".into(),
        digest: digest_of('a'),
    };
    assert!(matches!(
        c.on_pong(&pong),
        Err(HandshakeError::OutOfOrder {
            step: "on_pong",
            ..
        })
    ));
    let ping = c.on_helo(&srv.helo()).unwrap();
    assert!(matches!(
        c.on_helo(&srv.helo()),
        Err(HandshakeError::OutOfOrder {
            step: "on_helo",
            ..
        })
    ));
    let reply = srv.on_ping(&ping).unwrap();
    assert!(matches!(
        srv.on_ping(&ping),
        Err(HandshakeError::OutOfOrder {
            step: "on_ping",
            ..
        })
    ));
    c.on_pong(&reply.pong).unwrap();
    assert!(matches!(
        c.on_pong(&reply.pong),
        Err(HandshakeError::OutOfOrder { .. })
    ));
    assert!(c.is_established(), "a step out of turn changes nothing");

    // after a failure, nothing more
    let mut c = client("k", "cli");
    c.on_helo(&srv.helo()).unwrap();
    assert!(c.on_pong(&pong).is_err());
    assert!(matches!(
        c.on_pong(&reply.pong),
        Err(HandshakeError::OutOfOrder { .. })
    ));
    assert!(!c.is_established());
}

#[test]
fn configuration_is_checked_up_front() {
    let auth = |key: &str, host: &str, user: &str, pass: &str| ClientAuth {
        shared_key: key.into(),
        hostname: host.into(),
        username: user.into(),
        password: pass.into(),
    };
    for bad in [
        auth("", "h", "", ""),
        auth("k", "", "", ""),
        auth("k", &"h".repeat(256), "", ""),
        auth(&"k".repeat(1025), "h", "", ""),
        auth("k", "h", &"u".repeat(1025), ""),
        auth("k", "h", "", &"p".repeat(1025)),
    ] {
        assert!(matches!(
            ClientHandshake::new(bad),
            Err(HandshakeError::Config(_))
        ));
    }
    assert!(ClientHandshake::new(auth("k", &"h".repeat(255), "", "")).is_ok());
    let srv = |key: &str, host: &str, users: Option<HashMap<String, String>>| {
        ServerHandshake::new(ServerAuth {
            shared_key: key.into(),
            hostname: host.into(),
            users,
        })
    };
    assert!(matches!(srv("", "h", None), Err(HandshakeError::Config(_))));
    assert!(matches!(srv("k", "", None), Err(HandshakeError::Config(_))));
    let long_pass = HashMap::from([("u".to_string(), "p".repeat(1025))]);
    assert!(matches!(
        srv("k", "h", Some(long_pass)),
        Err(HandshakeError::Config(_))
    ));
}

#[test]
fn nonces_and_salts_are_fresh_printable_and_auth_salt_only_with_users() {
    let a = server("k", "srv").helo();
    let b = server("k", "srv").helo();
    assert_ne!(a.nonce, b.nonce);
    assert!(a.auth_salt.is_empty());
    assert!(a.keepalive);
    let u = user_server("k", "srv", &[]).helo();
    assert_eq!(u.auth_salt.len(), 32);
    for v in [&a.nonce, &b.nonce, &u.nonce, &u.auth_salt] {
        assert_eq!(v.len(), 32);
        assert!(v.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    }
    let srv = server("k", "srv");
    assert_eq!(srv.helo(), srv.helo(), "helo() is the same on every call");
    let p1 = client("k", "c").on_helo(&a).unwrap();
    let p2 = client("k", "c").on_helo(&a).unwrap();
    assert_ne!(p1.shared_key_salt, p2.shared_key_salt);
    assert_ne!(p1.digest, p2.digest);
}

#[test]
fn debug_output_hides_keys_and_passwords() {
    let c = ClientAuth {
        shared_key: "TOPSECRETKEY".into(),
        hostname: "h".into(),
        username: "u".into(),
        password: "HUNTER2".into(),
    };
    let shown = format!("{c:?} {:?}", ClientHandshake::new(c.clone()).unwrap());
    assert!(
        !shown.contains("TOPSECRETKEY") && !shown.contains("HUNTER2"),
        "{shown}"
    );
    let s = ServerAuth {
        shared_key: "TOPSECRETKEY".into(),
        hostname: "h".into(),
        users: Some(HashMap::from([("u".into(), "HUNTER2".into())])),
    };
    let shown = format!("{s:?} {:?}", ServerHandshake::new(s.clone()).unwrap());
    assert!(
        !shown.contains("TOPSECRETKEY") && !shown.contains("HUNTER2"),
        "{shown}"
    );
}

// --- interop with @fluent-org/logger ---------------------------------------------------------

const HOW: &str = "the Node interop peer (@fluent-org/logger) is not installed; run \
    `bash scripts/test.sh` from the repository root, or `npm install --no-package-lock` in \
    tests/peers";

fn peers_dir() -> PathBuf {
    let dir = std::env::var_os("PEERS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers"),
        PathBuf::from,
    );
    for f in [
        "handshake_vectors.mjs",
        "node_modules/@fluent-org/logger/build/src/protocol.js",
    ] {
        assert!(
            dir.join(f).exists(),
            "{} is missing: {HOW}",
            dir.join(f).display()
        );
    }
    dir
}

fn node(arg: &str, stdin: Option<&serde_json::Value>) -> serde_json::Value {
    let dir = peers_dir();
    let node = std::env::var("PEER_NODE").unwrap_or_else(|_| "node".to_string());
    let mut child = Command::new(&node)
        .current_dir(&dir)
        .arg(dir.join("handshake_vectors.mjs"))
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {node}: {e}: {HOW}"));
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(v) = stdin {
            input.write_all(v.to_string().as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "handshake_vectors.mjs {arg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs one request through the Node library; returns its answer.
fn node_run(request: serde_json::Value) -> serde_json::Value {
    let answers = node("run", Some(&json!([request])));
    answers[0].clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn known_answer_digests_match_node() {
    let v = node("vectors", None);
    let shared = v["shared"].as_array().unwrap();
    assert!(shared.len() >= 4);
    for c in shared {
        let ours = shared_key_digest(
            &unhex(text(&c["salt"])),
            text(&c["hostname"]).as_bytes(),
            &unhex(text(&c["nonce"])),
            text(&c["key"]).as_bytes(),
        );
        assert_eq!(ours, text(&c["digest"]), "{c}");
        assert_eq!(ours, text(&c["node_crypto"]), "{c}");
    }
    let password = v["password"].as_array().unwrap();
    assert!(password.len() >= 2);
    for c in password {
        let ours = password_digest(
            &unhex(text(&c["auth_salt"])),
            text(&c["username"]).as_bytes(),
            text(&c["password"]).as_bytes(),
        );
        assert_eq!(ours, text(&c["digest"]), "{c}");
        assert_eq!(ours, text(&c["node_crypto"]), "{c}");
    }
}

#[test]
fn node_messages_decode_with_our_parsers() {
    let v = node("vectors", None);
    let m = &v["messages"];
    let i = &v["inputs"];
    let nonce = unhex(text(&i["nonce"]));
    let auth_salt = unhex(text(&i["auth_salt"]));
    let salt = text(&i["salt_text"]).as_bytes().to_vec();
    let key = text(&i["key"]).as_bytes();

    // FluentServer's HELO: nonce as bin, auth "" without users
    assert_eq!(
        parse_helo(&unhex(text(&m["helo_no_users"]))),
        Ok(Helo {
            nonce: nonce.clone(),
            auth_salt: Vec::new(),
            keepalive: true,
        })
    );
    assert_eq!(
        parse_helo(&unhex(text(&m["helo_users"]))),
        Ok(Helo {
            nonce: nonce.clone(),
            auth_salt: auth_salt.clone(),
            keepalive: false,
        })
    );
    let ping = parse_ping(&unhex(text(&m["ping_no_users"]))).unwrap();
    assert_eq!(ping.hostname, "node-client");
    assert_eq!(ping.shared_key_salt, salt);
    assert_eq!(
        ping.digest,
        shared_key_digest(&salt, b"node-client", &nonce, key)
    );
    assert_eq!(
        (ping.username.as_str(), ping.password_digest.as_str()),
        ("", "")
    );
    let ping = parse_ping(&unhex(text(&m["ping_users"]))).unwrap();
    assert_eq!(ping.username, "alice");
    assert_eq!(
        ping.password_digest,
        password_digest(&auth_salt, b"alice", b"pw")
    );
    let pong = parse_pong(&unhex(text(&m["pong_ok"]))).unwrap();
    assert!(pong.ok);
    assert_eq!(pong.hostname, "node-server");
    assert_eq!(
        pong.digest,
        shared_key_digest(&salt, b"node-server", &nonce, key)
    );
    // the library's refusal keeps its hostname (fluentd's sends ""): both parse
    assert_eq!(
        parse_pong(&unhex(text(&m["pong_refused"]))),
        Ok(Pong {
            ok: false,
            reason: "shared key mismatch".into(),
            hostname: "node-server".into(),
            digest: String::new(),
        })
    );
}

/// The library's client (FluentAuthSocket) against our server, message by message.
fn node_client_against_our_server(
    mut srv: ServerHandshake,
    key: &str,
    user: Option<(&str, &str)>,
) -> (forward::ServerReply, serde_json::Value) {
    let helo_hex = hex(&helo_bytes(&srv.helo()));
    let salt = "0123456789abcdef0123456789abcdef";
    let (username, password) = user.unwrap_or(("", ""));
    let answer = node_run(json!({
        "op": "client_ping", "helo_hex": helo_hex, "client_hostname": "node-client",
        "salt": salt, "key": key, "username": username, "password": password,
    }));
    assert_eq!(answer["ok"], true, "{answer}");
    // our nonce is printable: the library decodes the str to the same bytes
    assert_eq!(answer["nonce_kind"], "string");
    assert_eq!(text(&answer["nonce_utf8_hex"]), hex(&srv.helo().nonce));
    let ping = parse_ping(&unhex(text(&answer["ping_hex"]))).unwrap();
    assert_eq!(ping.shared_key_salt, salt.as_bytes());
    let reply = srv.on_ping(&ping).unwrap();
    let checked = node_run(json!({
        "op": "check_pong", "pong_hex": hex(&pong_bytes(&reply.pong)), "helo_hex": helo_hex,
        "client_hostname": "node-client", "salt": salt, "key": key,
    }));
    (reply, checked)
}

#[test]
fn node_client_handshakes_with_our_server() {
    let (reply, checked) =
        node_client_against_our_server(server("secret", "rust-srv"), "secret", None);
    assert!(reply.is_authenticated(), "{reply:?}");
    assert_eq!(checked, json!({"ok": true}));

    let users = [("alice", "pw")];
    let (reply, checked) = node_client_against_our_server(
        user_server("secret", "rust-srv", &users),
        "secret",
        Some(("alice", "pw")),
    );
    assert_eq!(reply.outcome.unwrap().username.as_deref(), Some("alice"));
    assert_eq!(checked, json!({"ok": true}));

    let (reply, checked) = node_client_against_our_server(
        user_server("secret", "rust-srv", &users),
        "secret",
        Some(("alice", "nope")),
    );
    assert!(matches!(
        reply.outcome,
        Err(HandshakeError::WrongPassword { .. })
    ));
    assert_eq!(checked["ok"], false);
    assert!(
        text(&checked["error"]).contains("username/password mismatch"),
        "{checked}"
    );

    let (reply, checked) =
        node_client_against_our_server(server("secret", "rust-srv"), "other", None);
    assert_eq!(reply.outcome, Err(HandshakeError::SharedKeyMismatch));
    assert!(
        text(&checked["error"]).contains("shared_key mismatch"),
        "{checked}"
    );
}

#[test]
fn our_client_handshakes_with_node_server() {
    let v = node("vectors", None);
    let m = &v["messages"];
    let i = &v["inputs"];
    let run = |helo_hex: &str, ours: ClientHandshake, node_key: &str, users: serde_json::Value| {
        let mut ours = ours;
        let helo = parse_helo(&unhex(helo_hex)).unwrap();
        let ping = ours.on_helo(&helo).unwrap();
        let mut request = json!({
            "op": "server_check_ping", "ping_hex": hex(&ping_bytes(&ping)),
            "nonce_hex": text(&i["nonce"]), "key": node_key, "server_hostname": "node-server",
        });
        if !helo.auth_salt.is_empty() {
            request["auth_salt_hex"] = json!(hex(&helo.auth_salt));
            request["users"] = users;
        }
        let answer = node_run(request);
        let pong = parse_pong(&unhex(text(&answer["pong_hex"]))).unwrap();
        (answer, ours.on_pong(&pong))
    };
    let helo_plain = text(&m["helo_no_users"]);
    let helo_users = text(&m["helo_users"]);

    let (answer, result) = run(
        helo_plain,
        client("secret", "rust-cli"),
        "secret",
        json!(null),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(result, Ok(()));

    let (answer, result) = run(
        helo_users,
        user_client("secret", "rust-cli", "alice", "pw"),
        "secret",
        json!({"alice": "pw"}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(result, Ok(()));

    let (answer, result) = run(
        helo_users,
        user_client("secret", "rust-cli", "alice", "bad"),
        "secret",
        json!({"alice": "pw"}),
    );
    assert_eq!(answer["ok"], false);
    assert_eq!(
        result,
        Err(HandshakeError::Refused {
            reason: "username/password mismatch".into()
        })
    );

    let (answer, result) = run(
        helo_plain,
        client("secret", "rust-cli"),
        "other",
        json!(null),
    );
    assert_eq!(answer["error"], "shared key mismatch");
    assert_eq!(
        result,
        Err(HandshakeError::Refused {
            reason: "shared key mismatch".into()
        })
    );

    // the library server's loop check
    let (answer, result) = run(
        helo_plain,
        client("secret", "node-server"),
        "secret",
        json!(null),
    );
    assert_eq!(answer["ok"], false);
    assert!(
        matches!(result, Err(HandshakeError::Refused { reason }) if reason.contains("Same hostname"))
    );
}

#[test]
fn node_mangles_a_non_utf8_str_nonce_and_we_do_not() {
    // A HELO as Fluent Bit sends it: the nonce a str of random, non-UTF-8 bytes.
    let raw_nonce = vec![
        0xff, 0xfe, 0x80, 0x81, 0xc0, 0xaf, 0x00, 0x41, 0xed, 0xa0, 0x80, 0x7f, 0xf8, 0x88, 0x80,
        0x80,
    ];
    assert!(std::str::from_utf8(&raw_nonce).is_err());
    let fluent_bit_helo = Helo {
        nonce: raw_nonce.clone(),
        auth_salt: Vec::new(),
        keepalive: true,
    };
    let str_bytes = helo_bytes(&fluent_bit_helo);
    assert_eq!(
        parse_helo(&str_bytes).unwrap().nonce,
        raw_nonce,
        "we read the raw bytes"
    );
    let salt = "0123456789abcdef0123456789abcdef";
    let expected = shared_key_digest(salt.as_bytes(), b"node-client", &raw_nonce, b"k");

    let ask = |helo: &[u8]| {
        let answer = node_run(json!({
            "op": "client_ping", "helo_hex": hex(helo), "client_hostname": "node-client",
            "salt": salt, "key": "k", "username": "", "password": "",
        }));
        assert_eq!(answer["ok"], true, "{answer}");
        let ping = parse_ping(&unhex(text(&answer["ping_hex"]))).unwrap();
        (answer, ping)
    };

    // As str: the library decodes text and hashes other bytes, so its digest is not the one a
    // server holding the raw nonce computes (its handshake with Fluent Bit fails).
    let (answer, ping) = ask(&str_bytes);
    assert_eq!(answer["nonce_kind"], "string");
    assert_ne!(text(&answer["nonce_utf8_hex"]), hex(&raw_nonce));
    assert_ne!(ping.digest, expected);

    // As bin (fluentd's way): raw bytes on both sides, the same digest.
    let bin_bytes = helo_with(mp(&Value::Binary(raw_nonce.clone())), mp(&s("")));
    assert_eq!(parse_helo(&bin_bytes).unwrap(), fluent_bit_helo);
    let (answer, ping) = ask(&bin_bytes);
    assert_eq!(answer["nonce_kind"], "bytes");
    assert_eq!(ping.digest, expected);

    // As our printable str: the same digest too.
    let printable = b"00112233445566778899aabbccddeeff".to_vec();
    let (_, ping) = ask(&helo_bytes(&Helo {
        nonce: printable.clone(),
        ..fluent_bit_helo
    }));
    assert_eq!(
        ping.digest,
        shared_key_digest(salt.as_bytes(), b"node-client", &printable, b"k")
    );
}
