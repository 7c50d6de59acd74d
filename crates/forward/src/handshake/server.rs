//! The server side of the handshake as a sans-IO state machine: HELO out, PING in, PONG out.

use std::collections::HashMap;
use std::fmt;

use super::digest::{digests_match, password_digest, random_token, shared_key_digest};
use super::error::HandshakeError;
use super::message::*;

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
