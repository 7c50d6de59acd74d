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

mod client;
mod digest;
mod error;
mod message;
mod server;

pub use client::{ClientAuth, ClientHandshake};
pub use digest::{password_digest, shared_key_digest};
pub use error::HandshakeError;
pub use message::{
    DIGEST_HEX_LEN, Helo, MAX_CREDENTIAL_BYTES, MAX_HANDSHAKE_BYTES, MAX_HOSTNAME_BYTES,
    MAX_REASON_BYTES, MAX_SALT_BYTES, Ping, Pong, check_message, parse_helo, parse_ping,
    parse_pong, write_helo, write_ping, write_pong,
};
pub use server::{Peer, ServerAuth, ServerHandshake, ServerReply};

#[cfg(test)]
mod tests {
    use super::digest::{digests_match, hex_lower, random_token};
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
