//! The server half: a TCP listener that decodes frames, hands each to a [`Handler`] and acks
//! a chunk only after the handler said its entries are safe.
//!
//! Invariants: an ack is written only after `Handler::handle` returned
//! [`Disposition::Ack`] for that frame; frames of one connection are handled in order, one at
//! a time (acks come back in the order chunks were sent); a connection that sends bytes that
//! are not a frame is closed with a log line naming the peer and the reason, and no other
//! connection is affected.
//!
//! A [`ServerControl`] lets code outside the serving task stop a server or drop its open
//! connections (as a crashed or restarted peer would), from any thread, with or without a
//! runtime; [`crate::background`] builds on it to run a server as a task or on a thread.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;

use crate::connection::Connection;
use crate::frame::{DEFAULT_MAX_FRAME_BYTES, Frame};

/// What the server should do after a handler took a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The entries are safe: ack the chunk (if the frame asked for an ack).
    Ack,
    /// Keep the connection but send no ack (the client will time out and resend).
    Withhold,
    /// Close the connection without an ack.
    Close,
}

/// Receives the frames a server decodes.
pub trait Handler: Send + Sync + 'static {
    /// Why a frame could not be taken; logged, and the connection is closed without an ack.
    type Error: std::fmt::Display + Send;

    /// Takes one frame; its chunk is acked only if this returns `Ok(Disposition::Ack)`.
    ///
    /// # Errors
    /// Any failure to make the frame's entries safe.
    fn handle(
        &self,
        peer: SocketAddr,
        frame: Frame,
    ) -> impl Future<Output = Result<Disposition, Self::Error>> + Send;
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted, compressed or not.
    pub max_frame_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// A bound forward listener.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    stats: Arc<ServerStats>,
}

impl Server {
    /// Binds the listener (use port 0 for any free port).
    ///
    /// # Errors
    /// The bind failure.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            config,
            stats: Arc::default(),
        })
    }

    /// Wraps a listener bound with the standard library, e.g. on a thread without a runtime;
    /// it is switched to non-blocking mode here.
    ///
    /// Must be called inside the tokio runtime that will serve it.
    ///
    /// # Errors
    /// The listener cannot be made non-blocking or registered with the runtime.
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ServerConfig,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: TcpListener::from_std(listener)?,
            config,
            stats: Arc::default(),
        })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Counters of this server's connections and frames, shared with its tasks.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Accepts connections until `shutdown` completes, each in its own task; then ends every
    /// open connection too (frames not yet acked stay unacked, so their clients resend them).
    pub async fn serve<H: Handler>(self, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
        self.run(handler, shutdown, None).await;
    }

    /// As [`Server::serve`], until [`ServerControl::shutdown`]; each
    /// [`ServerControl::drop_connections`] ends every connection open at that moment (their
    /// unacked frames stay unacked) while the server keeps accepting new ones.
    ///
    /// The control is subscribed to by this call, not when the future first runs, so a drop
    /// asked for in between (by a caller that already connected) is not lost.
    pub fn serve_with_control<H: Handler>(
        self,
        handler: Arc<H>,
        control: ServerControl,
    ) -> impl Future<Output = ()> + Send {
        let mut drops = control.state.subscribe();
        // Marks the state seen and takes its count in one step: only later drops concern
        // this server.
        let seen = drops.borrow_and_update().drops;
        async move {
            self.run(handler, control.stopped(), Some((drops, seen)))
                .await;
        }
    }

    async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
        drops: Option<(watch::Receiver<ControlState>, u64)>,
    ) {
        tokio::pin!(shutdown);
        let mut connections = tokio::task::JoinSet::new();
        let (mut drops, mut dropped) = match drops {
            Some((rx, seen)) => (Some(rx), seen),
            None => (None, 0),
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                // Reap finished connection tasks so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                now = control_changed(&mut drops) => {
                    if now.drops != dropped {
                        dropped = now.drops;
                        tracing::debug!(open = connections.len(), "forward server dropping its connections");
                        connections.abort_all();
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let stats = self.stats.clone();
                        let fut = serve_connection_with_stats(stream, peer, handler.clone(), self.config.clone(), stats);
                        connections.spawn(fut);
                    }
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections we have, and do
                        // not spin while descriptors are exhausted.
                        tracing::warn!(error = %e, "forward accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
    }
}

/// The next state of a control; never without one (or once its sender is gone).
async fn control_changed(drops: &mut Option<watch::Receiver<ControlState>>) -> ControlState {
    if let Some(rx) = drops
        && rx.changed().await.is_ok()
    {
        return *rx.borrow_and_update();
    }
    std::future::pending().await
}

/// Stops a server run with [`Server::serve_with_control`], or drops its connections; cheap to
/// clone, usable from any thread, inside a runtime or not.
///
/// Invariant: `shutdown` is final (a stopped control stays stopped), and every
/// `drop_connections` call is seen by the server even when several come before it looks.
#[derive(Debug, Clone)]
pub struct ServerControl {
    state: Arc<watch::Sender<ControlState>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ControlState {
    /// How many times connections were to be dropped so far.
    drops: u64,
    stop: bool,
}

impl Default for ServerControl {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerControl {
    /// A control for one server (or several: each obeys every call).
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(ControlState::default())),
        }
    }

    /// Ends every connection open now; the server keeps accepting new ones.
    pub fn drop_connections(&self) {
        self.state.send_modify(|s| s.drops += 1);
    }

    /// Stops accepting and ends every open connection.
    pub fn shutdown(&self) {
        self.state.send_modify(|s| s.stop = true);
    }

    /// Whether [`ServerControl::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        self.state.borrow().stop
    }

    /// Completes once [`ServerControl::shutdown`] was called (at once if it was already).
    pub async fn stopped(&self) {
        let mut rx = self.state.subscribe();
        // `self` keeps the sender alive, so this only ends when `stop` is set.
        let _ = rx.wait_for(|s| s.stop).await;
    }
}

/// Counters a [`Server`] keeps; read them to export metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Frames decoded.
    pub frames: AtomicU64,
    /// Acks written.
    pub acks: AtomicU64,
    /// Connections closed because of bytes that are not a frame.
    pub protocol_errors: AtomicU64,
    /// Frames the handler failed to take (closed without ack).
    pub handler_errors: AtomicU64,
}

/// Serves one connection until the peer closes it or breaks the protocol.
pub async fn serve_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    config: ServerConfig,
) {
    serve_connection_with_stats(stream, peer, handler, config, Arc::default()).await;
}

async fn serve_connection_with_stats<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
) {
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    // Decrements the open count however the task ends, aborts included.
    struct Open(Arc<ServerStats>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _open = Open(stats.clone());
    let mut conn = Connection::new(stream, config.max_frame_bytes);
    tracing::debug!(%peer, "forward connection opened");
    loop {
        let frame = match conn.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                tracing::debug!(%peer, "forward connection closed by peer");
                return;
            }
            Err(e) => {
                if matches!(e, crate::ConnectionError::Frame(_)) {
                    stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(%peer, reason = %e, "closing forward connection");
                return;
            }
        };
        stats.frames.fetch_add(1, Ordering::Relaxed);
        let chunk = frame.options.chunk.clone();
        let framing = frame.framing;
        match handler.handle(peer, frame).await {
            Ok(Disposition::Ack) => {
                if let Some(chunk) = chunk {
                    if let Err(e) = conn.write_ack(&chunk, framing).await {
                        tracing::warn!(%peer, reason = %e, "closing forward connection: ack not written");
                        return;
                    }
                    stats.acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Disposition::Withhold) => {}
            Ok(Disposition::Close) => return,
            Err(e) => {
                stats.handler_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, reason = %e, "closing forward connection without ack: frame not stored");
                return;
            }
        }
    }
}
