//! The billing ingester: a forward server that acknowledges a chunk only once its records are
//! safely in the store.
//!
//! Stores are named by URL ([`StoreUrl`]). Today: `jsonl:PATH`, one JSON line per received
//! entry, kept as a debugging and export sink.

pub mod jsonl;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use forward::{Disposition, Frame, Handler, Server, ServerConfig};

/// Where received records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `jsonl:PATH`: append one JSON line per entry.
    Jsonl(PathBuf),
}

/// Why a store URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreUrlError {
    /// The scheme is not one this build knows.
    #[error("unsupported store {0:?}: expected jsonl:PATH")]
    Unsupported(String),
    /// `jsonl:` without a path.
    #[error("store {0:?} has no path")]
    MissingPath(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("jsonl", path)) if !path.is_empty() => Ok(StoreUrl::Jsonl(PathBuf::from(path))),
            Some(("jsonl", _)) => Err(StoreUrlError::MissingPath(s.to_string())),
            _ => Err(StoreUrlError::Unsupported(s.to_string())),
        }
    }
}

/// Why a store could not take a chunk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File or socket error.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Something that makes a frame's entries durable before the ack.
pub trait Store: Send + Sync + 'static {
    /// Stores every entry of `frame`; returns only once they are safe.
    ///
    /// # Errors
    /// Any failure; the chunk is then not acked and the client resends it.
    fn store(&self, frame: &Frame) -> impl Future<Output = Result<(), StoreError>> + Send;
}

struct Ingest<S>(Arc<S>);

impl<S: Store> Handler for Ingest<S> {
    type Error = StoreError;

    async fn handle(&self, peer: SocketAddr, frame: Frame) -> Result<Disposition, StoreError> {
        tracing::debug!(%peer, entries = frame.entries.len(), mode = ?frame.mode, "frame received");
        self.0.store(&frame).await?;
        Ok(Disposition::Ack)
    }
}

/// Serves forward connections on `server` into `store` until `shutdown` completes.
pub async fn serve<S: Store>(server: Server, store: Arc<S>, shutdown: impl Future<Output = ()>) {
    server.serve(Arc::new(Ingest(store)), shutdown).await;
}

/// Binds a forward listener with default limits.
///
/// # Errors
/// The bind failure.
pub async fn bind(addr: &str) -> std::io::Result<Server> {
    Server::bind(addr, ServerConfig::default()).await
}
