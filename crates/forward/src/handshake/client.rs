//! The client side of the handshake as a sans-IO state machine: HELO in, PING out, PONG in.

use std::fmt;

use super::digest::{digests_match, password_digest, random_token, shared_key_digest};
use super::error::HandshakeError;
use super::message::*;

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
