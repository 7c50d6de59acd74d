//! Why a handshake message was refused or a handshake failed: one typed error for the codec and
//! both state machines, so the socket code can log and count one reason.

use crate::FrameError;

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
    pub(crate) fn from_frame(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { limit } => HandshakeError::TooLarge { limit },
            FrameError::Invalid(m) => HandshakeError::MessagePack(m.to_string()),
            other => HandshakeError::MessagePack(other.to_string()),
        }
    }
}
