//! The ingester's HTTP surface: metrics, health and readiness, the usage API and the usage
//! dashboard, on axum's router over hyper's HTTP/1.1 server.
//!
//! Why axum on hyper rather than the hand-written responder this replaces: the surface grew
//! from one route to eight, with query strings, HTML and JSON; a well-kept HTTP/1.1 parser and
//! router cost less to trust than our own. Kept lean: HTTP/1 only, no TLS, no tower-http, no
//! JSON extractor (see the root `Cargo.toml`). Routes: `routes.rs`; the pages: `dashboard.rs`,
//! `svg.rs`, `html.rs`; filters: `params.rs`; shared state and limits: `state.rs`.
//!
//! Protections (the accept loop below drives hyper's connection itself, so that they are set
//! here and nowhere else):
//! - a request head larger than [`MAX_REQUEST_BYTES`] is answered `431` and the connection
//!   closed (hyper's `max_buf_size`);
//! - a client has [`HEADER_TIMEOUT`] to send its head (hyper's `header_read_timeout`), and a
//!   connection lasts at most [`CONNECTION_TIMEOUT`] in all, so a slow loris holds one slot for
//!   a bounded time and never blocks other connections (each has its own task);
//! - at most [`MAX_CONNECTIONS`] connections are served at once; one beyond that is closed at
//!   once, unread;
//! - one request per connection (no keep-alive): a connection's slot is freed with its
//!   response; request bodies are never read.
//!
//! Nothing here writes to the store; see [`HttpSurface`] for what the routes read.

mod dashboard;
mod html;
mod params;
mod routes;
mod state;
mod svg;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower_service::Service as _;

pub use dashboard::{DEFAULT_PERIOD_SECS, HOURLY_UP_TO_SECS, MAX_BARS, MAX_TABLE_ROWS};
pub use state::{
    CONNECTION_TIMEOUT, HEADER_TIMEOUT, HttpSurface, MAX_CONNECTIONS, MAX_REQUEST_BYTES,
    READY_TIMEOUT,
};

/// Serves the HTTP surface on `listener` until `shutdown` completes (connections in progress
/// are then dropped).
pub async fn serve(
    listener: TcpListener,
    surface: HttpSurface,
    shutdown: impl Future<Output = ()>,
) {
    let router = routes::router(Arc::new(surface));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "HTTP connection refused: {MAX_CONNECTIONS} already in progress");
                        continue;
                    };
                    let router = router.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        let service = hyper::service::service_fn(move |request| {
                            let mut router = router.clone();
                            async move { router.call(request).await }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .max_buf_size(MAX_REQUEST_BYTES)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
                            Err(_) => tracing::debug!(%peer, "HTTP connection closed: took longer than {CONNECTION_TIMEOUT:?}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tasks.shutdown().await;
}
