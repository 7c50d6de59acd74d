//! The Forward Protocol v1 handshake (shared key and optional user authentication), as a pure
//! codec and two sans-IO state machines: no sockets, no clocks, no buffers of its own.
//!
//! # Why it exists
//! A fluentd `in_forward` (or Fluent Bit `in_forward`) configured with a `<security>` section
//! refuses events until the client proves it knows the shared key, and a client that talks to
//! such a server must check that the server knows it too. This module holds everything of that
//! exchange that does not touch a socket, so that the connection code only moves bytes:
//! [`check_message`] finds where a message ends in a read buffer, `parse_*` turn its bytes into
//! a message, [`ClientHandshake`] / [`ServerHandshake`] decide what to answer, `write_*` append
//! the answer to an output buffer. All of it can be unit-tested and fuzzed alone.
//!
//! # Messages (MessagePack arrays)
//! - server → client `HELO`: `["HELO", {"nonce": bytes, "auth": bytes, "keepalive": bool}]`,
//!   `auth` being the salt of user authentication, empty when the server has no users;
//! - client → server `PING`: `["PING", client_hostname, shared_key_salt,
//!   hex(sha512(shared_key_salt + client_hostname + nonce + shared_key)), username,
//!   password_digest]`, with `password_digest = hex(sha512(auth_salt + username + password))`
//!   when the HELO carried an auth salt, else username and password digest empty strings;
//! - server → client `PONG`: `["PONG", auth_result, reason, server_hostname,
//!   hex(sha512(shared_key_salt + server_hostname + nonce + shared_key))]` (the client's salt,
//!   the server's hostname); a refusal is `["PONG", false, reason, "", ""]`, as fluentd and
//!   Fluent Bit write it.
//!
//! # Types on the wire: bytes are bytes
//! Peers disagree on the MessagePack types of the nonce and salts. fluentd writes them as
//! `bin` (random bytes); Fluent Bit writes its nonce and auth salt as `str` holding random,
//! non-UTF-8 bytes and accepts only `str` for the PING's salt; `@fluent-org/logger` decodes a
//! `str` into a JavaScript string (invalid sequences become other characters) and hashes that
//! string's UTF-8 encoding, so its digest over a Fluent Bit nonce covers other bytes and its
//! handshake with Fluent Bit fails (`tests/handshake.rs` shows it against the library). Hence:
//! - we **read** the nonce and the salts as raw bytes whether they arrive as `str` or `bin`,
//!   never UTF-8-decoded, so our digest is the one the sender computed;
//! - we **write** our own nonce and salts as `str` of printable characters (lowercase hex of 16
//!   random bytes from the operating system), which every peer reads as the same bytes.
//!
//! Text fields (hostnames, username, digests) are read from `str` or `bin` too and must be
//! UTF-8; a PONG's reason is only shown to people, so it is read lossily.
//!
//! # Invariants
//! - Nothing here panics on any input, and nothing allocates more than a bounded multiple of
//!   the message's size: a parser first delimits the value with [`crate::msgpack::value_len`]
//!   (which never trusts a length it has not seen the bytes for) and refuses a message over
//!   [`MAX_HANDSHAKE_BYTES`]; every field has a limit ([`MAX_HOSTNAME_BYTES`],
//!   [`MAX_SALT_BYTES`], [`MAX_CREDENTIAL_BYTES`], [`MAX_REASON_BYTES`], digests exactly
//!   [`DIGEST_HEX_LEN`] lowercase hex characters).
//! - A message a parser accepts, written back by its writer, parses to the same value; a
//!   message the state machines produce always parses.
//! - Digests are compared in constant time (`subtle`). No attacker can use timing on them
//!   anyway, since each one covers a fresh nonce and salt; it is defence in depth.
//! - A failed handshake stays failed: every later step is refused
//!   ([`HandshakeError::OutOfOrder`]), as is a step called out of turn (which changes nothing).
//! - A refusing PONG names the kind of failure as fluentd does ("shared_key mismatch",
//!   "username/password mismatch", "same hostname between input and output: invalid
//!   configuration") and carries neither our hostname nor a digest; an unknown user and a wrong
//!   password get the same reason, so a client cannot enumerate users.

use std::collections::HashMap;
use std::fmt;

use rmpv::Value;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::encode::{write_array_len, write_map_len, write_str};
use crate::{Check, FrameError};

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

const HELO: &str = "HELO";
const PING: &str = "PING";
const PONG: &str = "PONG";

/// Wire reason of a PONG refusing a wrong shared key (fluentd's text).
const REASON_SHARED_KEY: &str = "shared_key mismatch";
/// Wire reason of a PONG refusing an unknown user or a wrong password (fluentd's text).
const REASON_USER: &str = "username/password mismatch";
/// Wire reason of a PONG refusing a client with our own hostname (fluentd's text).
const REASON_LOOP: &str = "same hostname between input and output: invalid configuration";

/// Why a handshake message was refused, or why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The message is, or is known to become, larger than the limit.
    #[error("handshake message larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes end before the message does.
    #[error("handshake message truncated")]
    Truncated,
    /// Bytes follow the end of the message.
    #[error("bytes after the end of the handshake message")]
    TrailingBytes,
    /// The MessagePack decoder refused the bytes.
    #[error("invalid MessagePack in a handshake message: {0}")]
    MessagePack(String),
    /// The value is not an array starting with a message name.
    #[error("a handshake message must be an array starting with its name")]
    NotAMessage,
    /// A well-formed message of another kind (or an unknown name) arrived.
    #[error("expected a {expected} message, received {found:?}")]
    UnexpectedMessage {
        /// The message name expected.
        expected: &'static str,
        /// The name received (lossy UTF-8, at most 16 bytes of it).
        found: String,
    },
    /// The message has the wrong number of elements.
    #[error("a {message} message has {expected} elements, not {found}")]
    WrongLength {
        /// The message name.
        message: &'static str,
        /// The element count the protocol defines.
        expected: usize,
        /// The element count received.
        found: usize,
    },
    /// A required field is absent.
    #[error("{field} is missing")]
    MissingField {
        /// The field, e.g. `"HELO nonce"`.
        field: &'static str,
    },
    /// A field has the wrong MessagePack type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field is longer than its limit.
    #[error("{field} is longer than {limit} bytes")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A digest field is not 128 lowercase hex characters.
    #[error("{field} is not a SHA-512 digest in lowercase hex")]
    NotADigest {
        /// The field.
        field: &'static str,
    },
    /// A HELO option appears twice (which one counts would be a guess).
    #[error("HELO option {option} appears more than once")]
    DuplicateOption {
        /// The option.
        option: &'static str,
    },
    /// Our own configuration cannot make a valid handshake.
    #[error("invalid handshake configuration: {0}")]
    Config(&'static str),
    /// The operating system gave no randomness for a nonce or salt.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A step of a state machine was called when it was not the next one (or after a failure).
    #[error("handshake step {step} called while {state}")]
    OutOfOrder {
        /// The step called.
        step: &'static str,
        /// The state the handshake was in.
        state: &'static str,
    },
    /// The server refused us (PONG with `auth_result` false).
    #[error("the server refused the handshake: {reason}")]
    Refused {
        /// The server's reason, as it sent it.
        reason: String,
    },
    /// The peer's digest does not match the shared key: it does not know the key (or the
    /// message was tampered with).
    #[error("shared key mismatch")]
    SharedKeyMismatch,
    /// The client named a user the server does not know.
    #[error("unknown user {username:?}")]
    UnknownUser {
        /// The username sent.
        username: String,
    },
    /// The client's password digest does not match the user's password.
    #[error("wrong password for user {username:?}")]
    WrongPassword {
        /// The username sent.
        username: String,
    },
    /// The peer has our own hostname: input and output of the same node are connected.
    #[error("peer hostname {hostname:?} is our own: input and output of one node are connected")]
    HostnameLoop {
        /// The hostname.
        hostname: String,
    },
}

impl HandshakeError {
    fn from_frame(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { limit } => HandshakeError::TooLarge { limit },
            FrameError::Invalid(m) => HandshakeError::MessagePack(m.to_string()),
            other => HandshakeError::MessagePack(other.to_string()),
        }
    }
}

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

fn write_bool(buf: &mut Vec<u8>, value: bool) {
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
fn decode_message(
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
fn raw_bytes(v: Value, field: &'static str, max: usize) -> Result<Vec<u8>, HandshakeError> {
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
fn text(v: Value, field: &'static str, max: usize) -> Result<String, HandshakeError> {
    String::from_utf8(raw_bytes(v, field, max)?).map_err(|_| HandshakeError::NotUtf8 { field })
}

/// A digest: 128 lowercase hex characters, or (when `may_be_empty`) the empty string.
fn digest(v: Value, field: &'static str, may_be_empty: bool) -> Result<String, HandshakeError> {
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

fn next(items: &mut std::vec::IntoIter<Value>) -> Value {
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

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

fn sha512_hex(parts: &[&[u8]]) -> String {
    let mut hash = Sha512::new();
    for p in parts {
        hash.update(p);
    }
    hex_lower(&hash.finalize())
}

/// `hex(sha512(salt + hostname + nonce + key))` in lowercase: the PING's digest (client
/// hostname) and the PONG's (server hostname), both over the client's salt and the server's
/// nonce. Every argument is taken as raw bytes.
pub fn shared_key_digest(salt: &[u8], hostname: &[u8], nonce: &[u8], key: &[u8]) -> String {
    sha512_hex(&[salt, hostname, nonce, key])
}

/// `hex(sha512(auth_salt + username + password))` in lowercase: the PING's password digest.
pub fn password_digest(auth_salt: &[u8], username: &[u8], password: &[u8]) -> String {
    sha512_hex(&[auth_salt, username, password])
}

/// Whether two digests are equal, in time that depends only on their lengths (which are
/// public: always [`DIGEST_HEX_LEN`] once parsed).
fn digests_match(expected: &str, received: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
}

/// A fresh nonce or salt: lowercase hex of 16 bytes from the operating system's CSPRNG, so
/// that every peer reads it as the same bytes whatever type it decodes it as.
fn random_token() -> Result<Vec<u8>, HandshakeError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(hex_lower(&raw).into_bytes())
}

fn check_len(
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

/// What a client proves and checks in the handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The shared key (1 to [`MAX_CREDENTIAL_BYTES`] bytes).
    pub shared_key: String,
    /// Our hostname, sent in the PING (1 to [`MAX_HOSTNAME_BYTES`] bytes).
    pub hostname: String,
    /// Username for servers with user authentication; may be empty.
    pub username: String,
    /// Password for servers with user authentication; may be empty.
    pub password: String,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("shared_key", &"<redacted>")
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
enum ClientState {
    AwaitingHelo,
    AwaitingPong { nonce: Vec<u8> },
    Established,
    Failed,
}

impl ClientState {
    fn name(&self) -> &'static str {
        match self {
            ClientState::AwaitingHelo => "awaiting HELO",
            ClientState::AwaitingPong { .. } => "awaiting PONG",
            ClientState::Established => "established",
            ClientState::Failed => "failed",
        }
    }
}

/// The client side of one connection's handshake: [`ClientHandshake::on_helo`] answers the
/// server's HELO with a PING, [`ClientHandshake::on_pong`] checks the server's PONG.
#[derive(Debug)]
pub struct ClientHandshake {
    auth: ClientAuth,
    salt: Vec<u8>,
    state: ClientState,
}

impl ClientHandshake {
    /// Starts a handshake with a fresh random shared key salt.
    ///
    /// # Errors
    /// [`HandshakeError::Config`] if a field of `auth` is out of its bounds (shared key or
    /// hostname empty, or longer than its limit); [`HandshakeError::Random`] if the operating
    /// system gives no randomness.
    pub fn new(auth: ClientAuth) -> Result<Self, HandshakeError> {
        check_len(
            &auth.shared_key,
            1,
            MAX_CREDENTIAL_BYTES,
            "shared key must be 1 to 1024 bytes",
        )?;
        check_len(
            &auth.hostname,
            1,
            MAX_HOSTNAME_BYTES,
            "hostname must be 1 to 255 bytes",
        )?;
        check_len(
            &auth.username,
            0,
            MAX_CREDENTIAL_BYTES,
            "username longer than 1024 bytes",
        )?;
        check_len(
            &auth.password,
            0,
            MAX_CREDENTIAL_BYTES,
            "password longer than 1024 bytes",
        )?;
        Ok(ClientHandshake {
            auth,
            salt: random_token()?,
            state: ClientState::AwaitingHelo,
        })
    }

    /// Answers the server's HELO: the PING to send. When the HELO carries an auth salt, the
    /// PING carries our username and password digest (even if empty, as fluentd does: Fluent
    /// Bit always sends a salt and ignores them when it has no users).
    ///
    /// # Errors
    /// [`HandshakeError::OutOfOrder`] unless this is the first step.
    pub fn on_helo(&mut self, helo: &Helo) -> Result<Ping, HandshakeError> {
        if !matches!(self.state, ClientState::AwaitingHelo) {
            return Err(HandshakeError::OutOfOrder {
                step: "on_helo",
                state: self.state.name(),
            });
        }
        let a = &self.auth;
        let (username, password_digest) = if helo.auth_salt.is_empty() {
            (String::new(), String::new())
        } else {
            (
                a.username.clone(),
                password_digest(
                    &helo.auth_salt,
                    a.username.as_bytes(),
                    a.password.as_bytes(),
                ),
            )
        };
        let ping = Ping {
            hostname: a.hostname.clone(),
            shared_key_salt: self.salt.clone(),
            digest: shared_key_digest(
                &self.salt,
                a.hostname.as_bytes(),
                &helo.nonce,
                a.shared_key.as_bytes(),
            ),
            username,
            password_digest,
        };
        self.state = ClientState::AwaitingPong {
            nonce: helo.nonce.clone(),
        };
        Ok(ping)
    }

    /// Checks the server's PONG; on `Ok` the connection is established and may carry events.
    /// Checked in this order: the server's verdict, its digest (so that a server that does not
    /// know the key is reported as such), then its hostname against ours.
    ///
    /// # Errors
    /// [`HandshakeError::Refused`] with the server's reason when it refused us;
    /// [`HandshakeError::SharedKeyMismatch`] when its digest is wrong;
    /// [`HandshakeError::HostnameLoop`] when it has our own hostname;
    /// [`HandshakeError::OutOfOrder`] unless a PING was the last step. Every error leaves the
    /// handshake failed.
    pub fn on_pong(&mut self, pong: &Pong) -> Result<(), HandshakeError> {
        let nonce = match &self.state {
            ClientState::AwaitingPong { nonce } => nonce.clone(),
            other => {
                return Err(HandshakeError::OutOfOrder {
                    step: "on_pong",
                    state: other.name(),
                });
            }
        };
        self.state = ClientState::Failed;
        if !pong.ok {
            return Err(HandshakeError::Refused {
                reason: pong.reason.clone(),
            });
        }
        let a = &self.auth;
        let expected = shared_key_digest(
            &self.salt,
            pong.hostname.as_bytes(),
            &nonce,
            a.shared_key.as_bytes(),
        );
        if !digests_match(&expected, &pong.digest) {
            return Err(HandshakeError::SharedKeyMismatch);
        }
        if pong.hostname == a.hostname {
            return Err(HandshakeError::HostnameLoop {
                hostname: pong.hostname.clone(),
            });
        }
        self.state = ClientState::Established;
        Ok(())
    }

    /// Whether the handshake succeeded ([`ClientHandshake::on_pong`] returned `Ok`).
    pub fn is_established(&self) -> bool {
        matches!(self.state, ClientState::Established)
    }
}

// --- Server --------------------------------------------------------------------------------

/// What a server checks in the handshake and proves back.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAuth {
    /// The shared key (1 to [`MAX_CREDENTIAL_BYTES`] bytes).
    pub shared_key: String,
    /// Our hostname, sent in the PONG (1 to [`MAX_HOSTNAME_BYTES`] bytes).
    pub hostname: String,
    /// Username → password, when clients must also authenticate as a user; `None` for shared
    /// key only (the HELO then carries no auth salt). `Some` of an empty map refuses everyone.
    pub users: Option<HashMap<String, String>>,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Option<Vec<&String>> = self.users.as_ref().map(|u| u.keys().collect());
        f.debug_struct("ServerAuth")
            .field("shared_key", &"<redacted>")
            .field("hostname", &self.hostname)
            .field("users", &users)
            .finish()
    }
}

/// Who passed the server's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The hostname the client sent.
    pub hostname: String,
    /// The user it authenticated as, when the server has users.
    pub username: Option<String>,
}

/// The server's answer to a PING: the PONG to send, and the verdict behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The PONG to send in every case (a refusal too, so the client learns why).
    pub pong: Pong,
    /// The authenticated peer, or why it was refused ([`HandshakeError::SharedKeyMismatch`],
    /// [`HandshakeError::UnknownUser`], [`HandshakeError::WrongPassword`],
    /// [`HandshakeError::HostnameLoop`]); after a refusal the server closes the connection.
    pub outcome: Result<Peer, HandshakeError>,
}

impl ServerReply {
    /// Whether the client passed: the connection may carry events.
    pub fn is_authenticated(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// The server side of one connection's handshake: send [`ServerHandshake::helo`] on accept,
/// answer the client's PING with [`ServerHandshake::on_ping`].
#[derive(Debug)]
pub struct ServerHandshake {
    auth: ServerAuth,
    nonce: Vec<u8>,
    auth_salt: Vec<u8>,
    answered: bool,
}

impl ServerHandshake {
    /// Starts a handshake with a fresh random nonce (and auth salt, when there are users).
    ///
    /// # Errors
    /// [`HandshakeError::Config`] if a field of `auth` is out of its bounds (shared key or
    /// hostname empty or too long, a username or password over [`MAX_CREDENTIAL_BYTES`]);
    /// [`HandshakeError::Random`] if the operating system gives no randomness.
    pub fn new(auth: ServerAuth) -> Result<Self, HandshakeError> {
        check_len(
            &auth.shared_key,
            1,
            MAX_CREDENTIAL_BYTES,
            "shared key must be 1 to 1024 bytes",
        )?;
        check_len(
            &auth.hostname,
            1,
            MAX_HOSTNAME_BYTES,
            "hostname must be 1 to 255 bytes",
        )?;
        for (user, password) in auth.users.iter().flatten() {
            check_len(
                user,
                0,
                MAX_CREDENTIAL_BYTES,
                "username longer than 1024 bytes",
            )?;
            check_len(
                password,
                0,
                MAX_CREDENTIAL_BYTES,
                "password longer than 1024 bytes",
            )?;
        }
        let auth_salt = if auth.users.is_some() {
            random_token()?
        } else {
            Vec::new()
        };
        Ok(ServerHandshake {
            nonce: random_token()?,
            auth_salt,
            auth,
            answered: false,
        })
    }

    /// The HELO to send first (keepalive on). The same value on every call.
    pub fn helo(&self) -> Helo {
        Helo {
            nonce: self.nonce.clone(),
            auth_salt: self.auth_salt.clone(),
            keepalive: true,
        }
    }

    /// Checks the client's PING: its shared key digest, then its user (when the server has
    /// users), then its hostname against ours. A refusal is a normal outcome, not an error:
    /// it comes with the PONG that tells the client why.
    ///
    /// # Errors
    /// [`HandshakeError::OutOfOrder`] if a PING was already answered.
    pub fn on_ping(&mut self, ping: &Ping) -> Result<ServerReply, HandshakeError> {
        if self.answered {
            return Err(HandshakeError::OutOfOrder {
                step: "on_ping",
                state: "a PING was already answered",
            });
        }
        self.answered = true;
        let a = &self.auth;
        let key = a.shared_key.as_bytes();
        let expected = shared_key_digest(
            &ping.shared_key_salt,
            ping.hostname.as_bytes(),
            &self.nonce,
            key,
        );
        if !digests_match(&expected, &ping.digest) {
            return Ok(refuse(REASON_SHARED_KEY, HandshakeError::SharedKeyMismatch));
        }
        let username = match &a.users {
            None => None,
            Some(users) => {
                // An unknown user costs the same digest as a known one: no timing oracle on
                // which usernames exist.
                let known = users.get(&ping.username);
                let password = known.map_or("", String::as_str);
                let expected = password_digest(
                    &self.auth_salt,
                    ping.username.as_bytes(),
                    password.as_bytes(),
                );
                let matched = digests_match(&expected, &ping.password_digest);
                let username = ping.username.clone();
                match (known, matched) {
                    (Some(_), true) => Some(username),
                    (None, _) => {
                        return Ok(refuse(
                            REASON_USER,
                            HandshakeError::UnknownUser { username },
                        ));
                    }
                    (Some(_), false) => {
                        return Ok(refuse(
                            REASON_USER,
                            HandshakeError::WrongPassword { username },
                        ));
                    }
                }
            }
        };
        if ping.hostname == a.hostname {
            return Ok(refuse(
                REASON_LOOP,
                HandshakeError::HostnameLoop {
                    hostname: ping.hostname.clone(),
                },
            ));
        }
        Ok(ServerReply {
            pong: Pong {
                ok: true,
                reason: String::new(),
                hostname: a.hostname.clone(),
                digest: shared_key_digest(
                    &ping.shared_key_salt,
                    a.hostname.as_bytes(),
                    &self.nonce,
                    key,
                ),
            },
            outcome: Ok(Peer {
                hostname: ping.hostname.clone(),
                username,
            }),
        })
    }
}

/// A refusing PONG as fluentd writes it: no hostname, no digest.
fn refuse(reason: &str, why: HandshakeError) -> ServerReply {
    ServerReply {
        pong: Pong {
            ok: false,
            reason: reason.to_string(),
            hostname: String::new(),
            digest: String::new(),
        },
        outcome: Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex_lower(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn sha512_of_nothing_is_the_known_value() {
        assert_eq!(
            password_digest(b"", b"", b""),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    #[test]
    fn random_tokens_are_printable_and_fresh() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn digests_match_only_when_equal() {
        let d = password_digest(b"s", b"u", b"p");
        assert!(digests_match(&d, &d.clone()));
        let mut other = d.clone().into_bytes();
        other[127] = if other[127] == b'0' { b'1' } else { b'0' };
        assert!(!digests_match(&d, std::str::from_utf8(&other).unwrap()));
        assert!(!digests_match(&d, ""));
    }
}
