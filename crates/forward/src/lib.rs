//! Fluentd Forward Protocol v1, both halves, with no knowledge of what records mean.
//!
//! - `frame.rs`: pure decoding of every mode and framing over bytes ([`check_frame`] then
//!   [`parse_frame`]) into a [`Frame`];
//! - [`encode`]: writers for the modes a client sends, and acks;
//! - `decode.rs`: what decoding a frame will cost, known before it is paid
//!   ([`decoded_cost`]): entries counted and checked first, values built at exact capacity;
//! - `scan.rs`: a frame's end found in linear time as its bytes trickle in;
//! - `connection.rs`: a socket plus its buffer, yielding frames or acks ([`Connection`],
//!   [`AckReader`]);
//! - `server.rs`: a listener (TCP, TLS, Unix) that acks a chunk only after its [`Handler`]
//!   took it ([`Server`]);
//! - `limits.rs` and `budget.rs`: what one sender may cost ([`ServerConfig`]: entries per
//!   frame, connections, idle and frame timeouts, one memory budget for all connections), each
//!   limit counted in [`ServerStats`] and logged, rate-limited;
//! - `background.rs`: a server run as a task ([`SpawnedServer`]) or on its own thread
//!   ([`BackgroundServer`]), with a handle to drop its connections and shut it down.
//! - `endpoint.rs`: the address syntax of both halves ([`Endpoint`]: `host:port`, `tls://`,
//!   `unix://`);
//! - the transport: `stream.rs` (one socket type, [`Stream`]: TCP, Unix, TLS over TCP),
//!   `listener.rs` (binding any endpoint; a Unix socket file owner-only, a stale one replaced,
//!   removed on shutdown: [`Server::bind_endpoint`]), `connect.rs` (the client's way in,
//!   [`connect`]), `tls.rs` (rustls settings from PEM files: [`ServerTls`], [`ClientTls`],
//!   mutual TLS), `tls_failure.rs` (a TLS error as one line naming the failed check,
//!   [`TlsFailure`]), `peer_addr.rs` (who a handler's frame came from, [`PeerAddr`]);
//! - `heartbeat.rs`: the answer to fluentd's UDP heartbeat ([`serve_udp_heartbeat`]); its TCP
//!   heartbeat, a `nil` between frames, is skipped by `connection.rs`;
//! - `handshake.rs`: the shared-key / user handshake (HELO, PING, PONG) as a pure codec and
//!   sans-IO state machines ([`ClientHandshake`], [`ServerHandshake`]); `authenticate.rs`
//!   runs the server's side of it on each new connection when [`ServerConfig::auth`] is set
//!   (no frame is read before it passed); [`local_hostname`] is both sides' default hostname.
//!
//! Every type and function is reached from the crate root, except the writers in [`encode`]
//! and the MessagePack scanner in [`msgpack`], whose modules are their namespace.

mod authenticate;
mod background;
mod budget;
mod connect;
mod connection;
mod decode;
pub mod encode;
mod endpoint;
mod frame;
mod handshake;
mod heartbeat;
mod hostname;
mod limits;
mod listener;
mod model;
pub mod msgpack;
mod peer_addr;
mod scan;
mod server;
mod stats;
mod stream;
mod time;
mod tls;
mod tls_failure;

pub use background::{
    BackgroundOptions, BackgroundServer, DEFAULT_SHUTDOWN_TIMEOUT, ShutdownError, SpawnedServer,
    StartError,
};
pub use budget::SMALL_FRAME_BYTES;
pub use connect::{ConnectError, connect};
pub use connection::{AckReader, Connection};
pub use decode::{chunk_option, decoded_cost};
pub use endpoint::{Endpoint, EndpointError};
pub use frame::{
    check as check_frame, check_reply, json_to_value, parse as parse_frame, parse_ack,
    parse_with as parse_frame_with, value_to_json,
};
pub use handshake::{
    ClientAuth, ClientHandshake, DIGEST_HEX_LEN, HandshakeError, Helo, MAX_CREDENTIAL_BYTES,
    MAX_HANDSHAKE_BYTES, MAX_HOSTNAME_BYTES, MAX_REASON_BYTES, MAX_SALT_BYTES, Peer, Ping, Pong,
    ServerAuth, ServerHandshake, ServerReply, check_message, parse_helo, parse_ping, parse_pong,
    password_digest, shared_key_digest, write_helo, write_ping, write_pong,
};
pub use heartbeat::{HEARTBEAT_REPLY, serve_udp_heartbeat};
pub use hostname::local_hostname;
pub use limits::{
    ConfigError, DEFAULT_FRAME_TIMEOUT, DEFAULT_FRAMES_IN_FLIGHT, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MEMORY_LIMIT, LOG_INTERVAL,
    MEMORY_LIMIT_PER_FRAME_BYTE, NOFILE_HEADROOM, ServerConfig, raise_nofile_limit,
};
pub use model::{
    Check, Compression, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_RECORDS_PER_FRAME, DecodeLimits,
    Entry, Frame, Framing, Mode, Options,
};
pub use peer_addr::PeerAddr;
pub use server::{Disposition, Handler, Server, ServerControl, serve_connection};
pub use stats::ServerStats;
pub use stream::Stream;
pub use time::EventTime;
pub use tls::{ClientTls, ServerTls, TlsConfigError};
pub use tls_failure::TlsFailure;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame (or its decompressed entries) exceeds the configured limit.
    #[error("frame larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The frame carries more entries than the configured limit (refused before they are
    /// decoded).
    #[error("frame carries more than the limit of {limit} entries")]
    TooManyRecords {
        /// The limit in entries.
        limit: usize,
    },
    /// Decoding the frame would take more memory than one frame may (see
    /// `ServerConfig::memory_limit`).
    #[error("decoded frame would take more than the limit of {limit} bytes of memory")]
    DecodedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes do not fit the protocol.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    /// The MessagePack decoder refused the bytes.
    #[error("invalid MessagePack: {0}")]
    MessagePack(String),
    /// The JSON decoder refused the bytes.
    #[error("invalid JSON frame: {0}")]
    Json(String),
    /// Gzip entries that do not decompress.
    #[error("compressed entries do not decompress: {0}")]
    Decompress(String),
}

/// Why a connection stopped yielding frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Frame(FrameError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Socket error.
    #[error("socket error: {0}")]
    Io(#[source] std::io::Error),
    /// No frame began within the idle timeout (server side).
    #[error("idle timeout: no frame")]
    IdleTimeout,
    /// A frame was not complete within the frame timeout of its first byte, or an ack was
    /// not read within it (server side).
    #[error("frame timeout: frame not complete in time")]
    FrameTimeout,
    /// The peer sent a handshake message that is not one, or too large (server side, with
    /// authentication).
    #[error("handshake: {0}")]
    Handshake(#[source] HandshakeError),
}
