//! The server half: a listener (TCP, TLS over TCP, or a Unix socket) that decodes frames, hands each to a [`Handler`] and acks
//! a chunk only after the handler said its entries are safe.
//!
//! Invariants: an ack is written only after `Handler::handle` returned
//! [`Disposition::Ack`] for that frame; frames of one connection are handed to the handler in
//! the order they came, up to [`ServerConfig::frames_in_flight`] at once (the next frames are
//! read and decoded while earlier ones are handled, all in the connection's task), and their
//! answers go out in that same order (acks come back in the order chunks were sent; a frame
//! taken after one whose answer closes the connection is never acked); a connection that sends bytes that
//! are not a frame is closed with a log line naming the peer and the reason, and no other
//! connection is affected.
//!
//! A [`ServerControl`] lets code outside the serving task stop a server or drop its open
//! connections (as a crashed or restarted peer would), from any thread, with or without a
//! runtime; [`crate::background`] builds on it to run a server as a task or on a thread.
//!
//! Limits (`limits.rs`, `budget.rs`): connections beyond the effective connection limit are
//! closed as soon as they are accepted; each connection is closed when idle or slow past its
//! timeouts; every frame's bytes and decoded form are charged to one memory budget for the
//! whole server before they are allocated, and its charge is held until its handler
//! returned. Every limit hit is counted in [`ServerStats`] and logged, rate-limited.
//! With [`ServerConfig::auth`] set, each connection first passes the handshake
//! (`authenticate.rs`): HELO, a valid PING within `handshake_timeout`, PONG; a connection
//! that fails it is closed and nothing it sent reaches the handler; JSON framing, which has
//! no handshake, is refused on such a server (closed before the handler sees the frame).
//! With [`ServerConfig::tls`] set, each TCP connection first passes a TLS handshake, in its
//! own task (a slow or silent peer never holds up the accept loop), within
//! `handshake_timeout`; a failure is counted (`tls_handshake_failures`) and logged
//! rate-limited with one line saying why, and the shared-key handshake then runs inside TLS.
//! Listening on a Unix socket (`listener.rs`): the file is owner-only, a stale one is
//! replaced, a live one refused, and it is removed when the server stops.
//! An accept error (`EMFILE`, `ENFILE`, ...) pauses accepting with a growing backoff (10 ms
//! to 1 s) instead of spinning, while open connections are served on.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;

use crate::authenticate::authenticate;
use crate::budget::Budget;
use crate::connection::{Connection, Guard, write_ack_to};
use crate::endpoint::Endpoint;
use crate::limits::{RateLog, Reason, ServerConfig, nofile_soft_limit};
use crate::listener::{Accepted, Listener, StdListener, bind_std};
use crate::model::{DecodeLimits, Frame, Framing};
use crate::peer_addr::PeerAddr;
use crate::stats::ServerStats;
use crate::stream::Stream;
use crate::tls_failure::{TlsFailure, explain_handshake};
use crate::{ConnectionError, FrameError};

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
        peer: PeerAddr,
        frame: Frame,
    ) -> impl Future<Output = Result<Disposition, Self::Error>> + Send;
}

/// A bound forward listener.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    shared: Arc<Shared>,
}

/// What every connection task of one server shares.
#[derive(Debug)]
struct Shared {
    budget: Arc<Budget>,
    log: Arc<RateLog>,
}

impl Shared {
    fn new(config: &ServerConfig, stats: &Arc<ServerStats>) -> Arc<Self> {
        Arc::new(Self {
            budget: Arc::new(Budget::new(
                config.memory_limit,
                config.max_frame_bytes,
                stats.clone(),
            )),
            log: Arc::default(),
        })
    }
}

fn invalid_config(config: &ServerConfig) -> std::io::Result<()> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

impl Server {
    /// Binds the listener (use port 0 for any free port).
    ///
    /// # Errors
    /// `InvalidInput` if [`ServerConfig::validate`] refuses `config`; the bind failure.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> std::io::Result<Self> {
        invalid_config(&config)?;
        let stats = Arc::default();
        Ok(Self {
            listener: Listener::Tcp(TcpListener::bind(addr).await?),
            shared: Shared::new(&config, &stats),
            config,
            stats,
        })
    }

    /// Binds any [`Endpoint`]: TCP (`host:port`, `:port` for every interface), `tls://` (needs
    /// [`ServerConfig::tls`]; a plain `host:port` with `tls` set speaks TLS as well), or a Unix
    /// socket (`unix:///path`: created 0600, a stale file replaced, a live one refused).
    ///
    /// Must be called inside the tokio runtime that will serve it.
    ///
    /// # Errors
    /// `InvalidInput` if [`ServerConfig::validate`] refuses `config`, for `tls://` without
    /// TLS settings, or for a Unix socket with them; `AddrInUse` when a server answers on the
    /// socket file; the bind failure.
    pub fn bind_endpoint(endpoint: &Endpoint, config: ServerConfig) -> std::io::Result<Self> {
        check_endpoint(endpoint, &config)?;
        Self::from_bound(bind_std(endpoint)?, config)
    }

    pub(crate) fn from_bound(listener: StdListener, config: ServerConfig) -> std::io::Result<Self> {
        invalid_config(&config)?;
        let stats = Arc::default();
        Ok(Self {
            listener: listener.register()?,
            shared: Shared::new(&config, &stats),
            config,
            stats,
        })
    }

    /// Wraps a listener bound with the standard library, e.g. on a thread without a runtime;
    /// it is switched to non-blocking mode here.
    ///
    /// Must be called inside the tokio runtime that will serve it.
    ///
    /// # Errors
    /// `InvalidInput` if [`ServerConfig::validate`] refuses `config`; the listener cannot be
    /// made non-blocking or registered with the runtime.
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ServerConfig,
    ) -> std::io::Result<Self> {
        Self::from_bound(StdListener::Tcp(listener), config)
    }

    /// The settings this server applies.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The TCP address actually bound.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`; `Unsupported` for a Unix socket (see
    /// [`Server::local_endpoint`]).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.tcp_addr().unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a Unix socket has no IP address",
            ))
        })
    }

    /// Where clients reach this server: `tls://ip:port` with TLS, `ip:port` without, or
    /// `unix:///path`.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_endpoint(&self) -> std::io::Result<Endpoint> {
        self.listener.endpoint(self.config.tls.is_some())
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
        let nofile = nofile_soft_limit().unwrap_or(u64::MAX);
        let max_connections = self.config.effective_max_connections(nofile);
        tracing::debug!(
            max_connections,
            configured = self.config.max_connections,
            nofile,
            "forward server connection limit"
        );
        let mut backoff = Duration::ZERO;
        let mut pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
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
                () = async { pause.as_mut().expect("guarded").await }, if pause.is_some() => {
                    pause = None;
                }
                accepted = self.listener.accept(), if pause.is_none() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::ZERO;
                        let open = self.stats.connections_open.load(Ordering::Relaxed);
                        if open >= max_connections as i64 {
                            self.stats.refused_max_connections.fetch_add(1, Ordering::Relaxed);
                            self.shared.log.hit(
                                Reason::MaxConnections,
                                Some(&peer),
                                &format!("{open} connections open, closing a new one"),
                            );
                            drop(stream);
                            continue;
                        }
                        let open = Open::new(self.stats.clone());
                        let fut = serve_accepted(
                            stream,
                            peer,
                            handler.clone(),
                            self.config.clone(),
                            self.stats.clone(),
                            self.shared.clone(),
                            open,
                        );
                        connections.spawn(fut);
                    }
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections we have, and stop
                        // accepting for a while instead of spinning on the error.
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        self.shared.log.hit(
                            Reason::AcceptError,
                            None,
                            &format!("accept failed ({e}); pausing accepts for {backoff:?}"),
                        );
                        pause = Some(Box::pin(tokio::time::sleep(backoff)));
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

/// Counts a connection as open from its accept until its task ends (aborts included).
struct Open(Arc<ServerStats>);

impl Open {
    fn new(stats: Arc<ServerStats>) -> Self {
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until the peer closes it, breaks the protocol or a limit of
/// `config`; its memory budget is its own (a [`Server`] shares one among its connections).
///
/// `stream` is used as it is: [`ServerConfig::tls`] is not applied here (pass a TLS stream to
/// serve one).
pub async fn serve_connection<H: Handler, S>(
    stream: S,
    peer: impl Into<PeerAddr>,
    handler: Arc<H>,
    config: ServerConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats: Arc<ServerStats> = Arc::default();
    let shared = Shared::new(&config, &stats);
    let open = Open::new(stats.clone());
    serve_guarded(stream, peer.into(), handler, config, stats, shared, open).await;
}

/// Refuses endpoint and TLS settings that do not go together.
pub(crate) fn check_endpoint(endpoint: &Endpoint, config: &ServerConfig) -> std::io::Result<()> {
    let refuse = |m: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
    match endpoint {
        Endpoint::Tls { .. } if config.tls.is_none() => refuse(format!(
            "{endpoint}: a tls:// address needs TLS settings (a certificate and its key)"
        )),
        Endpoint::Unix(_) if config.tls.is_some() => refuse(format!(
            "{endpoint}: TLS over a Unix socket is not supported (the socket file's permissions \
             are its access control); drop the TLS settings or listen on TCP"
        )),
        _ => Ok(()),
    }
}

/// A freshly accepted connection: its TLS handshake first (with TLS settings, TCP only),
/// bounded by the handshake timeout, then the forward protocol.
async fn serve_accepted<H: Handler>(
    accepted: Accepted,
    peer: PeerAddr,
    handler: Arc<H>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    shared: Arc<Shared>,
    open: Open,
) {
    let stream = match (accepted, &config.tls) {
        (Accepted::Unix(s), _) => Stream::Unix(s),
        (Accepted::Tcp(s), None) => Stream::Tcp(s),
        (Accepted::Tcp(s), Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_config());
            // Kept until the failure is counted, so a peer sees the close only after it.
            let mut accepting = acceptor.accept(s);
            let failure = match tokio::time::timeout(config.handshake_timeout, &mut accepting).await
            {
                Ok(Ok(tls)) => {
                    tracing::debug!(%peer, "TLS handshake passed");
                    return serve_guarded(
                        Stream::Tls(Box::new(tls.into())),
                        peer,
                        handler,
                        config,
                        stats,
                        shared,
                        open,
                    )
                    .await;
                }
                Ok(Err(e)) => {
                    let e = explain_handshake(e);
                    match TlsFailure::from_io(&e) {
                        Some(f) => format!("TLS handshake failed: {f}; closing"),
                        None => format!("TLS handshake failed: {e}; closing"),
                    }
                }
                Err(_) => format!(
                    "TLS handshake not completed within the handshake timeout of {:?}; closing",
                    config.handshake_timeout
                ),
            };
            stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            shared.log.hit(Reason::TlsHandshake, Some(&peer), &failure);
            drop(accepting);
            return;
        }
    };
    serve_guarded(stream, peer, handler, config, stats, shared, open).await;
}

async fn serve_guarded<H: Handler, S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: PeerAddr,
    handler: Arc<H>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    shared: Arc<Shared>,
    _open: Open,
) {
    let limits = DecodeLimits {
        max_frame_bytes: config.max_frame_bytes,
        max_records: config.max_records_per_frame,
    };
    let guard = Guard::new(
        shared.budget.clone(),
        config.idle_timeout,
        config.frame_timeout,
        shared.log.clone(),
        Some(peer.clone()),
    );
    let mut conn = Connection::guarded(stream, limits, guard);
    tracing::debug!(%peer, "forward connection opened");
    if let Some(auth) = &config.auth
        && !authenticate(
            &mut conn,
            auth,
            config.handshake_timeout,
            &peer,
            &stats,
            &shared.log,
        )
        .await
    {
        return;
    }
    answer_frames(conn, peer, handler, &config, &stats, &shared).await;
}

/// A frame handed to the handler, waiting to be answered in its turn.
struct Taken<F, E> {
    /// The handler's future, until it completed.
    handling: Option<Pin<Box<F>>>,
    handled: Option<Result<Disposition, E>>,
    chunk: Option<Vec<u8>>,
    framing: Framing,
}

/// Reads the next frame on `reader`, handing the reader back with it (so the read can go on
/// while acks are written on the other half).
async fn read_next<R: AsyncRead + Unpin>(
    mut reader: Connection<R>,
) -> (
    Connection<R>,
    Result<Option<(Frame, crate::budget::Charge)>, ConnectionError>,
) {
    reader.settle();
    let read = reader.read_guarded().await;
    (reader, read)
}

/// The handler's work on one frame; the frame's memory goes back to the budget as soon as it
/// is done (stored or not).
async fn handle_frame<H: Handler>(
    handler: Arc<H>,
    peer: PeerAddr,
    frame: Frame,
    charge: crate::budget::Charge,
) -> Result<Disposition, H::Error> {
    let handled = handler.handle(peer, frame).await;
    drop(charge);
    handled
}

/// Polls every frame being handled, in the order they came (so each handler starts its work
/// in frame order); ready once the oldest is handled.
fn poll_handling<F, E>(answers: &mut VecDeque<Taken<F, E>>, cx: &mut Context<'_>) -> Poll<()>
where
    F: Future<Output = Result<Disposition, E>>,
{
    for t in answers.iter_mut() {
        if let Some(f) = &mut t.handling
            && let Poll::Ready(r) = f.as_mut().poll(cx)
        {
            t.handled = Some(r);
            t.handling = None;
        }
    }
    match answers.front() {
        Some(t) if t.handled.is_some() => Poll::Ready(()),
        _ => Poll::Pending,
    }
}

/// The frame loop: frames are read and decoded while up to `frames_in_flight` earlier ones
/// are handled (concurrently, started in frame order, all in this connection's task);
/// answers (acks) go out in the order the frames came. When the peer stops sending (end of
/// stream, a bad frame, a timeout), the frames already taken are still answered before the
/// connection closes.
async fn answer_frames<H: Handler, S: AsyncRead + AsyncWrite + Unpin>(
    conn: Connection<S>,
    peer: PeerAddr,
    handler: Arc<H>,
    config: &ServerConfig,
    stats: &ServerStats,
    shared: &Shared,
) {
    let pending = conn.pending().expect("a guarded connection");
    let (reader, mut writer) = conn.split();
    let depth = config.frames_in_flight.max(1);
    let mut answers = VecDeque::with_capacity(depth);
    let mut reading = Box::pin(read_next(reader));
    let mut reading_on = true;
    let mut parked = None;
    loop {
        if answers.len() < depth
            && let Some(r) = parked.take()
        {
            reading.set(read_next(r));
            reading_on = true;
        }
        if answers.is_empty() && !reading_on {
            return;
        }
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| poll_handling(&mut answers, cx)), if !answers.is_empty() => {
                let taken: Taken<_, H::Error> = answers.pop_front().expect("not empty");
                let handled = taken.handled.expect("handled");
                let keep = answer(handled, taken.chunk, taken.framing, &mut writer, &peer, config, stats, shared).await;
                pending.fetch_sub(1, Ordering::AcqRel);
                if !keep {
                    return;
                }
            }
            (reader, read) = &mut reading, if reading_on => {
                reading_on = false;
                let (frame, charge) = match read {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        tracing::debug!(%peer, "forward connection closed by peer");
                        continue;
                    }
                    Err(e) => {
                        closed(&e, &peer, stats, &shared.log);
                        continue;
                    }
                };
                stats.frames.fetch_add(1, Ordering::Relaxed);
                if config.auth.is_some() && frame.framing == Framing::Json {
                    // As fluentd: JSON framing has no handshake, so a server with one refuses it.
                    stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    stats.refused_json_with_auth.fetch_add(1, Ordering::Relaxed);
                    shared.log.hit(
                        Reason::JsonWithAuth,
                        Some(&peer),
                        "JSON framing refused: authentication is on; closing",
                    );
                    return;
                }
                let chunk = frame.options.chunk.clone();
                let framing = frame.framing;
                pending.fetch_add(1, Ordering::AcqRel);
                answers.push_back(Taken {
                    handling: Some(Box::pin(handle_frame(handler.clone(), peer.clone(), frame, charge))),
                    handled: None,
                    chunk,
                    framing,
                });
                parked = Some(reader);
            }
        }
    }
}

/// Answers one handled frame; `false` when the connection must close.
#[allow(clippy::too_many_arguments)]
async fn answer<E: std::fmt::Display, W: AsyncWrite + Unpin>(
    handled: Result<Disposition, E>,
    chunk: Option<Vec<u8>>,
    framing: Framing,
    writer: &mut W,
    peer: &PeerAddr,
    config: &ServerConfig,
    stats: &ServerStats,
    shared: &Shared,
) -> bool {
    match handled {
        Ok(Disposition::Ack) => {
            let Some(chunk) = chunk else {
                return true;
            };
            let write = write_ack_to(writer, &chunk, framing);
            match tokio::time::timeout(config.frame_timeout, write).await {
                Ok(Ok(())) => {
                    stats.acks.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, reason = %e, "closing forward connection: ack not written");
                    false
                }
                Err(_) => {
                    closed(&ConnectionError::FrameTimeout, peer, stats, &shared.log);
                    false
                }
            }
        }
        Ok(Disposition::Withhold) => true,
        Ok(Disposition::Close) => false,
        Err(e) => {
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, reason = %e, "closing forward connection without ack: frame not stored");
            false
        }
    }
}

/// Counts and logs why a connection is being closed.
fn closed(e: &ConnectionError, peer: &PeerAddr, stats: &ServerStats, log: &RateLog) {
    let limit = match e {
        ConnectionError::IdleTimeout => Some((Reason::IdleTimeout, &stats.closed_idle_timeout)),
        ConnectionError::FrameTimeout => Some((Reason::FrameTimeout, &stats.closed_frame_timeout)),
        ConnectionError::Frame(FrameError::TooManyRecords { .. }) => {
            Some((Reason::TooManyRecords, &stats.refused_too_many_records))
        }
        ConnectionError::Frame(FrameError::TooLarge { .. }) => {
            Some((Reason::FrameTooLarge, &stats.refused_frame_too_large))
        }
        ConnectionError::Frame(FrameError::DecodedTooLarge { .. }) => {
            Some((Reason::DecodedTooLarge, &stats.refused_decoded_too_large))
        }
        _ => None,
    };
    if matches!(e, ConnectionError::Frame(_)) {
        stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    match limit {
        Some((reason, counter)) => {
            counter.fetch_add(1, Ordering::Relaxed);
            log.hit(reason, Some(peer), &format!("closing connection: {e}"));
        }
        None => tracing::warn!(%peer, reason = %e, "closing forward connection"),
    }
}
