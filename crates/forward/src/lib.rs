//! Fluentd Forward Protocol v1, both halves, with no knowledge of what records mean.
//!
//! - [`frame`]: pure decoding of every mode and framing (`check` then `parse`);
//! - [`encode`]: writers for the modes a client sends, and acks;
//! - [`connection`]: a socket plus its buffer, yielding frames or acks;
//! - [`server`]: a listener that acks a chunk only after its [`server::Handler`] took it;
//! - [`background`]: a server run as a task or on its own thread, with a handle to drop its
//!   connections and shut it down.

pub mod background;
pub mod connection;
pub mod encode;
pub mod frame;
pub mod msgpack;
pub mod server;
pub mod time;

pub use background::{BackgroundOptions, BackgroundServer, SpawnedServer};
pub use connection::{AckReader, Connection};
pub use frame::{Check, Compression, Entry, Frame, Framing, Mode, Options};
pub use server::{Disposition, Handler, Server, ServerConfig, ServerControl, ServerStats};
pub use time::EventTime;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame (or its decompressed entries) exceeds the configured limit.
    #[error("frame larger than the limit of {limit} bytes")]
    TooLarge {
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
}
