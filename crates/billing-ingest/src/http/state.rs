//! What every route of the HTTP surface shares ([`HttpSurface`]) and the surface's limits.
//!
//! Why its own module: the routes, the dashboard and the accept loop all read it, and a child
//! module must not name its parent's items (no module cycles). Invariant: the surface only
//! reads: the store through its report, list and ping queries, the metrics through their
//! registry; nothing here writes to the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::AnyStore;

/// Largest request head (request line and headers) read: hyper's smallest read buffer. A
/// larger head is answered `431` and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head; a slower one (slow loris) is disconnected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection may last in all (its request, the response and the client reading it).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; one beyond that is closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time `/readyz` waits for the store's answer before it says not ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP surface serves from: the store (reports, lists, readiness), the metrics
/// registry, and whether the forward listener is bound (readiness).
pub struct HttpSurface {
    pub(crate) store: Arc<AnyStore>,
    pub(crate) registry: Registry,
    pub(crate) forward_bound: Arc<AtomicBool>,
}

impl std::fmt::Debug for HttpSurface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSurface")
            .field("store", &self.store)
            .field("forward_bound", &self.forward_bound)
            .finish_non_exhaustive()
    }
}

impl HttpSurface {
    /// A surface over `store` and `registry` (e.g. [`crate::IngestMetrics::registry`]);
    /// `forward_bound` is `true` while the forward listener is bound and served (`/readyz`
    /// answers 503 while it is `false`).
    pub fn new(store: Arc<AnyStore>, registry: Registry, forward_bound: Arc<AtomicBool>) -> Self {
        Self {
            store,
            registry,
            forward_bound,
        }
    }

    /// Whether the forward listener is bound now.
    pub(crate) fn forward_is_bound(&self) -> bool {
        self.forward_bound.load(Ordering::Acquire)
    }
}
