//! The digests of the handshake (SHA-512, lowercase hex), their constant-time comparison, and
//! the random nonces and salts.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::error::HandshakeError;

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

pub(crate) fn sha512_hex(parts: &[&[u8]]) -> String {
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
pub(crate) fn digests_match(expected: &str, received: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
}

/// A fresh nonce or salt: lowercase hex of 16 bytes from the operating system's CSPRNG, so
/// that every peer reads it as the same bytes whatever type it decodes it as.
pub(crate) fn random_token() -> Result<Vec<u8>, HandshakeError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(hex_lower(&raw).into_bytes())
}
