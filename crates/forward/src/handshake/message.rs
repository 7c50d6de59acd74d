//! The three handshake messages as types, their writers and their bounded parsers, and the
//! limits and wire texts they share.

use rmpv::Value;

use super::error::HandshakeError;
use crate::Check;
use crate::encode::{write_array_len, write_map_len, write_str};

/// Largest handshake message accepted, in bytes. The largest valid one (a PING with a
/// [`MAX_CREDENTIAL_BYTES`] username) is under 2 KiB; the rest is room for unknown HELO options.
pub const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
/// Longest hostname accepted in a PING or PONG, and as our own (a DNS name's limit).
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// Longest nonce, auth salt or shared key salt accepted.
pub const MAX_SALT_BYTES: usize = 256;
/// Longest username accepted (and, in our own configuration, password and shared key).
pub const MAX_CREDENTIAL_BYTES: usize = 1024;
/// Longest PONG reason accepted (after lossy UTF-8 decoding).
pub const MAX_REASON_BYTES: usize = 1024;
/// Length of a digest: lowercase hex of a SHA-512 hash.
pub const DIGEST_HEX_LEN: usize = 128;

pub(crate) const HELO: &str = "HELO";
pub(crate) const PING: &str = "PING";
pub(crate) const PONG: &str = "PONG";

/// Wire reason of a PONG refusing a wrong shared key (fluentd's text).
pub(crate) const REASON_SHARED_KEY: &str = "shared_key mismatch";
/// Wire reason of a PONG refusing an unknown user or a wrong password (fluentd's text).
pub(crate) const REASON_USER: &str = "username/password mismatch";
/// Wire reason of a PONG refusing a client with our own hostname (fluentd's text).
pub(crate) const REASON_LOOP: &str =
    "same hostname between input and output: invalid configuration";

/// The server's greeting, `["HELO", {"nonce", "auth", "keepalive"}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    /// The nonce every digest of this connection covers (raw bytes).
    pub nonce: Vec<u8>,
    /// The salt of user authentication (raw bytes); empty when the server has no users.
    /// Fluent Bit sends one even without users: a client then sends its (possibly empty)
    /// username and a password digest, which such a server ignores.
    pub auth_salt: Vec<u8>,
    /// Whether the server keeps the connection open after a chunk (true when absent).
    pub keepalive: bool,
}

/// The client's answer to a HELO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The client's hostname.
    pub hostname: String,
    /// The client's salt for both shared-key digests (raw bytes).
    pub shared_key_salt: Vec<u8>,
    /// `hex(sha512(shared_key_salt + hostname + nonce + shared_key))`.
    pub digest: String,
    /// The username; empty without user authentication.
    pub username: String,
    /// `hex(sha512(auth_salt + username + password))`; empty without user authentication.
    pub password_digest: String,
}

/// The server's verdict on a PING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// Whether the server accepted the client.
    pub ok: bool,
    /// Why not, when `ok` is false (empty otherwise).
    pub reason: String,
    /// The server's hostname (empty in a refusal).
    pub hostname: String,
    /// `hex(sha512(client's shared_key_salt + server hostname + nonce + shared_key))`
    /// (empty in a refusal).
    pub digest: String,
}

// --- Framing -------------------------------------------------------------------------------

/// Finds the end of the handshake message at the start of `buf`: `Complete(n)` when `buf[..n]`
/// is one whole MessagePack array, `Incomplete` when more bytes are needed.
///
/// [`crate::check_frame`] would delimit these arrays too, but it also accepts JSON framing
/// and leading whitespace, which the handshake does not have, and [`crate::check_reply`]
/// accepts only maps; this shares their scanner, [`crate::msgpack::value_len`].
///
/// # Errors
/// [`HandshakeError::NotAMessage`] if `buf` does not start with an array marker;
/// [`HandshakeError::TooLarge`] as soon as the message is known to exceed `max`;
/// [`HandshakeError::MessagePack`] for bytes that can never become a message.
pub fn check_message(buf: &[u8], max: usize) -> Result<Check, HandshakeError> {
    match buf.first() {
        None => Ok(Check::Incomplete),
        Some(0x90..=0x9f | 0xdc | 0xdd) => {
            match crate::msgpack::value_len(buf, max).map_err(HandshakeError::from_frame)? {
                Some(n) => Ok(Check::Complete(n)),
                None => Ok(Check::Incomplete),
            }
        }
        Some(_) => Err(HandshakeError::NotAMessage),
    }
}

// --- Writers -------------------------------------------------------------------------------
//
// Fields are written as they are: a value outside the parsers' limits makes a message that
// peers (and our parsers) may refuse. The state machines only make values within them.

pub(crate) fn write_bool(buf: &mut Vec<u8>, value: bool) {
    rmp::encode::write_bool(buf, value).expect("Vec write");
}

/// Appends `["HELO", {"nonce": str, "auth": str, "keepalive": bool}]`; the nonce and salt are
/// written as `str` of their bytes, as every peer reads them (see the module doc).
pub fn write_helo(buf: &mut Vec<u8>, helo: &Helo) {
    write_array_len(buf, 2);
    write_str(buf, HELO.as_bytes());
    write_map_len(buf, 3);
    write_str(buf, b"nonce");
    write_str(buf, &helo.nonce);
    write_str(buf, b"auth");
    write_str(buf, &helo.auth_salt);
    write_str(buf, b"keepalive");
    write_bool(buf, helo.keepalive);
}

/// Appends `["PING", hostname, shared_key_salt, digest, username, password_digest]`, every
/// element a `str` (Fluent Bit accepts nothing else; note that it reads the PING into a
/// 1 KiB buffer, which a hostname plus username over ~700 bytes would overflow).
pub fn write_ping(buf: &mut Vec<u8>, ping: &Ping) {
    write_array_len(buf, 6);
    write_str(buf, PING.as_bytes());
    write_str(buf, ping.hostname.as_bytes());
    write_str(buf, &ping.shared_key_salt);
    write_str(buf, ping.digest.as_bytes());
    write_str(buf, ping.username.as_bytes());
    write_str(buf, ping.password_digest.as_bytes());
}

/// Appends `["PONG", ok, reason, hostname, digest]`.
pub fn write_pong(buf: &mut Vec<u8>, pong: &Pong) {
    write_array_len(buf, 5);
    write_str(buf, PONG.as_bytes());
    write_bool(buf, pong.ok);
    write_str(buf, pong.reason.as_bytes());
    write_str(buf, pong.hostname.as_bytes());
    write_str(buf, pong.digest.as_bytes());
}

// --- Readers -------------------------------------------------------------------------------

/// Decodes exactly one bounded array named `name` of `len` elements; returns its elements
/// after the name.
pub(crate) fn decode_message(
    bytes: &[u8],
    name: &'static str,
    len: usize,
) -> Result<std::vec::IntoIter<Value>, HandshakeError> {
    if bytes.len() > MAX_HANDSHAKE_BYTES {
        return Err(HandshakeError::TooLarge {
            limit: MAX_HANDSHAKE_BYTES,
        });
    }
    match check_message(bytes, MAX_HANDSHAKE_BYTES)? {
        Check::Complete(n) if n == bytes.len() => {}
        Check::Complete(_) => return Err(HandshakeError::TrailingBytes),
        Check::Incomplete => return Err(HandshakeError::Truncated),
    }
    // Bounded: value_len saw every byte of the value and at most MAX_DEPTH nested containers
    // (rmpv counts 2 per container and 3 per leaf, as in frame.rs).
    let depth = 2 * (crate::msgpack::MAX_DEPTH + 1) + 3;
    let value = rmpv::decode::read_value_with_max_depth(&mut &bytes[..], depth)
        .map_err(|e| HandshakeError::MessagePack(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(HandshakeError::NotAMessage);
    };
    let mut items = items.into_iter();
    let found = items.len();
    match items.next() {
        Some(Value::String(s)) if s.as_bytes() == name.as_bytes() => {}
        Some(Value::String(s)) => {
            let b = s.as_bytes();
            return Err(HandshakeError::UnexpectedMessage {
                expected: name,
                found: String::from_utf8_lossy(&b[..b.len().min(16)]).into_owned(),
            });
        }
        _ => return Err(HandshakeError::NotAMessage),
    }
    if found != len {
        return Err(HandshakeError::WrongLength {
            message: name,
            expected: len,
            found,
        });
    }
    Ok(items)
}

/// A `str` or `bin` as its raw bytes, never UTF-8-decoded.
pub(crate) fn raw_bytes(
    v: Value,
    field: &'static str,
    max: usize,
) -> Result<Vec<u8>, HandshakeError> {
    let bytes = match v {
        Value::String(s) => s.into_bytes(),
        Value::Binary(b) => b,
        _ => {
            return Err(HandshakeError::WrongType {
                field,
                expected: "a string or binary",
            });
        }
    };
    if bytes.len() > max {
        return Err(HandshakeError::FieldTooLong { field, limit: max });
    }
    Ok(bytes)
}

/// A `str` or `bin` that must be UTF-8 text.
pub(crate) fn text(v: Value, field: &'static str, max: usize) -> Result<String, HandshakeError> {
    String::from_utf8(raw_bytes(v, field, max)?).map_err(|_| HandshakeError::NotUtf8 { field })
}

/// A digest: 128 lowercase hex characters, or (when `may_be_empty`) the empty string.
pub(crate) fn digest(
    v: Value,
    field: &'static str,
    may_be_empty: bool,
) -> Result<String, HandshakeError> {
    let raw =
        raw_bytes(v, field, DIGEST_HEX_LEN).map_err(|_| HandshakeError::NotADigest { field })?;
    let valid = (raw.is_empty() && may_be_empty)
        || (raw.len() == DIGEST_HEX_LEN
            && raw.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if !valid {
        return Err(HandshakeError::NotADigest { field });
    }
    String::from_utf8(raw).map_err(|_| HandshakeError::NotADigest { field })
}

pub(crate) fn next(items: &mut std::vec::IntoIter<Value>) -> Value {
    // decode_message checked the length: every call has an element
    items.next().unwrap_or(Value::Nil)
}

/// Parses one complete HELO (`bytes` exactly as delimited by [`check_message`]).
///
/// The nonce and auth salt are taken as raw bytes from `str` or `bin`; `auth` absent or nil
/// means no user authentication, `keepalive` absent or nil means true; unknown options are
/// ignored.
///
/// # Errors
/// [`HandshakeError`] for the first thing that is not a valid HELO: framing (`TooLarge`,
/// `Truncated`, `TrailingBytes`, `MessagePack`), shape (`NotAMessage`, `UnexpectedMessage`,
/// `WrongLength`), options (`WrongType`, `MissingField` for the nonce, `FieldTooLong`,
/// `DuplicateOption`).
pub fn parse_helo(bytes: &[u8]) -> Result<Helo, HandshakeError> {
    let mut items = decode_message(bytes, HELO, 2)?;
    let Value::Map(options) = next(&mut items) else {
        return Err(HandshakeError::WrongType {
            field: "HELO options",
            expected: "a map",
        });
    };
    let (mut nonce, mut auth, mut keepalive) = (None, None, None);
    for (k, v) in options {
        let Value::String(k) = k else { continue };
        let (slot, option) = match k.as_bytes() {
            b"nonce" => (&mut nonce, "nonce"),
            b"auth" => (&mut auth, "auth"),
            b"keepalive" => (&mut keepalive, "keepalive"),
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(HandshakeError::DuplicateOption { option });
        }
    }
    let nonce = raw_bytes(
        nonce.ok_or(HandshakeError::MissingField {
            field: "HELO nonce",
        })?,
        "HELO nonce",
        MAX_SALT_BYTES,
    )?;
    let auth_salt = match auth {
        None | Some(Value::Nil) => Vec::new(),
        Some(v) => raw_bytes(v, "HELO auth", MAX_SALT_BYTES)?,
    };
    let keepalive = match keepalive {
        None | Some(Value::Nil) => true,
        Some(Value::Boolean(b)) => b,
        Some(_) => {
            return Err(HandshakeError::WrongType {
                field: "HELO keepalive",
                expected: "a boolean",
            });
        }
    };
    Ok(Helo {
        nonce,
        auth_salt,
        keepalive,
    })
}

/// Parses one complete PING (`bytes` exactly as delimited by [`check_message`]).
///
/// The salt is taken as raw bytes from `str` or `bin`; hostname and username must be UTF-8;
/// the digest must be 128 lowercase hex characters, the password digest too or empty.
///
/// # Errors
/// [`HandshakeError`] for the first thing that is not a valid PING: framing, shape, or a field
/// of the wrong type (`WrongType`), too long (`FieldTooLong`), not UTF-8 (`NotUtf8`), or not a
/// digest (`NotADigest`).
pub fn parse_ping(bytes: &[u8]) -> Result<Ping, HandshakeError> {
    let mut items = decode_message(bytes, PING, 6)?;
    Ok(Ping {
        hostname: text(next(&mut items), "PING hostname", MAX_HOSTNAME_BYTES)?,
        shared_key_salt: raw_bytes(next(&mut items), "PING shared_key_salt", MAX_SALT_BYTES)?,
        digest: digest(next(&mut items), "PING shared_key_hexdigest", false)?,
        username: text(next(&mut items), "PING username", MAX_CREDENTIAL_BYTES)?,
        password_digest: digest(next(&mut items), "PING password_digest", true)?,
    })
}

/// Parses one complete PONG (`bytes` exactly as delimited by [`check_message`]).
///
/// The reason is decoded lossily (it is only shown); hostname must be UTF-8; the digest must
/// be 128 lowercase hex characters when `ok`, and may be empty in a refusal.
///
/// # Errors
/// [`HandshakeError`] for the first thing that is not a valid PONG: framing, shape, or a field
/// of the wrong type, too long, not UTF-8, or not a digest.
pub fn parse_pong(bytes: &[u8]) -> Result<Pong, HandshakeError> {
    let mut items = decode_message(bytes, PONG, 5)?;
    let Value::Boolean(ok) = next(&mut items) else {
        return Err(HandshakeError::WrongType {
            field: "PONG auth_result",
            expected: "a boolean",
        });
    };
    // Checked after decoding: lossy decoding only grows the text, and the limit must hold for
    // what we would write back.
    let reason = String::from_utf8_lossy(&raw_bytes(
        next(&mut items),
        "PONG reason",
        MAX_REASON_BYTES,
    )?)
    .into_owned();
    if reason.len() > MAX_REASON_BYTES {
        return Err(HandshakeError::FieldTooLong {
            field: "PONG reason",
            limit: MAX_REASON_BYTES,
        });
    }
    Ok(Pong {
        ok,
        reason,
        hostname: text(next(&mut items), "PONG hostname", MAX_HOSTNAME_BYTES)?,
        digest: digest(next(&mut items), "PONG shared_key_hexdigest", !ok)?,
    })
}

// --- Digests -------------------------------------------------------------------------------

pub(crate) fn check_len(
    value: &str,
    min: usize,
    max: usize,
    what: &'static str,
) -> Result<(), HandshakeError> {
    if (min..=max).contains(&value.len()) {
        Ok(())
    } else {
        Err(HandshakeError::Config(what))
    }
}

// --- Client --------------------------------------------------------------------------------
