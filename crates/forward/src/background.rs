//! A [`Server`] running in the background, with a handle to reach it: for tests, demos and
//! tools that embed a forward server in a process that does other things.
//!
//! Two shapes, one accept loop ([`Server::serve_with_control`]):
//! - [`SpawnedServer`]: a task on the caller's runtime. The handler's own tasks (database
//!   connections, ...) live on that runtime too, and `shutdown` is async;
//! - [`BackgroundServer`]: a named thread with its own current-thread runtime, for callers
//!   with no runtime (plain `#[test]`s, synchronous programs) or that must not depend on
//!   theirs (a server that outlives a test's runtime, or that a test's blocking calls must not
//!   starve). An optional setup future runs on that runtime before serving, so whatever the
//!   handler spawns (connection tasks) lives on a runtime that keeps running as long as the
//!   server does.
//!
//! Invariants of both:
//! - the listener is bound before the constructor returns: [`addr`](BackgroundServer::addr) is
//!   the real address (port 0 resolved), and a client may connect at once;
//! - any [`Endpoint`] can be served ([`BackgroundServer::start_endpoint_with`],
//!   [`Server::bind_endpoint`]), TLS through [`ServerConfig::tls`]; [`endpoint`](BackgroundServer::endpoint)
//!   is where clients connect (`unix:///path`, `tls://ip:port`, `ip:port`);
//! - `drop_connections` ends every connection open at that moment (unacked frames stay
//!   unacked, as when a peer crashes) and the server keeps accepting;
//! - shutting down (explicitly or by dropping the handle) stops accepting and ends every
//!   connection; once `shutdown` returned `Ok` the port is free again, so a new server may bind
//!   it (a restart on the same address).
//! - a [`BackgroundServer`] never makes its caller wait without bound: its thread is joined
//!   within [`BackgroundOptions::shutdown_timeout`], or left running detached (reported by
//!   [`ShutdownError::TimedOut`], logged on drop) when a handler blocks its runtime.
//!
//! ```
//! use std::sync::Arc;
//! use forward::{BackgroundServer, Disposition, Frame, Handler, PeerAddr};
//!
//! struct AckAll;
//! impl Handler for AckAll {
//!     type Error = std::convert::Infallible;
//!     async fn handle(&self, _: PeerAddr, _: Frame) -> Result<Disposition, Self::Error> {
//!         Ok(Disposition::Ack)
//!     }
//! }
//!
//! let server = BackgroundServer::start("127.0.0.1:0", Arc::new(AckAll))?;
//! let addr = server.addr(); // point a client here
//! server.drop_connections(); // as if the server had crashed; it keeps accepting
//! server.shutdown()?; // the port is free again
//! let again = BackgroundServer::start(addr, Arc::new(AckAll))?; // a restart
//! # drop(again);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::limits::ServerConfig;
use crate::listener::{StdListener, bind_std};
use crate::server::{Handler, Server, ServerControl};
use crate::stats::ServerStats;

/// How long a [`BackgroundServer`] waits for its thread when shut down, unless told otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A server serving as a task on the runtime that spawned it. Dropping it stops the server
/// without waiting; [`SpawnedServer::shutdown`] waits.
#[derive(Debug)]
pub struct SpawnedServer {
    addr: Option<SocketAddr>,
    endpoint: Endpoint,
    stats: Arc<ServerStats>,
    control: ServerControl,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SpawnedServer {
    /// Serves `server` with `handler` on a new task of the current runtime.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn<H: Handler>(server: Server, handler: Arc<H>) -> std::io::Result<Self> {
        let endpoint = server.local_endpoint()?;
        let addr = server.local_addr().ok();
        let stats = server.stats();
        let control = ServerControl::new();
        let task = tokio::spawn(server.serve_with_control(handler, control.clone()));
        Ok(Self {
            addr,
            endpoint,
            stats,
            control,
            task: Some(task),
        })
    }

    /// The bound TCP address.
    ///
    /// # Panics
    /// For a server on a Unix socket (use [`SpawnedServer::endpoint`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a Unix socket server has no TCP address")
    }

    /// Where clients connect: `ip:port`, `tls://ip:port` or `unix:///path`.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The server's connection and frame counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The control the server obeys (clone it to stop or drop from elsewhere).
    pub fn control(&self) -> &ServerControl {
        &self.control
    }

    /// Ends every connection open now; new ones are still accepted.
    pub fn drop_connections(&self) {
        self.control.drop_connections();
    }

    /// Stops accepting, ends every open connection and waits until the server task ended
    /// (the listener is closed when this returns).
    ///
    /// # Panics
    /// Resumes the server task's panic, if it panicked.
    pub async fn shutdown(mut self) {
        self.control.shutdown();
        if let Some(task) = self.task.take() {
            match task.await {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down, which ends the server as well.
                _ => {}
            }
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        // Cannot await here: the task ends on its own at its next poll.
        self.control.shutdown();
    }
}

/// Settings of a [`BackgroundServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackgroundOptions {
    /// The thread's name (shown by debuggers and panics).
    pub thread_name: String,
    /// The server's settings.
    pub config: ServerConfig,
    /// Longest wait for the thread when shutting down.
    pub shutdown_timeout: Duration,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        Self {
            thread_name: "forward-server".into(),
            config: ServerConfig::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

impl BackgroundOptions {
    /// Names the thread.
    #[must_use]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Sets the server's settings.
    #[must_use]
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the longest wait for the thread when shutting down.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Why a [`BackgroundServer`] did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError<E> {
    /// The address could not be bound (or the listener registered with the runtime).
    #[error("cannot listen: {0}")]
    Bind(#[source] std::io::Error),
    /// The thread or its runtime could not be created.
    #[error("cannot start the server thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The setup future failed; nothing was served and the port is free again.
    #[error("server setup failed: {0}")]
    Setup(E),
    /// The setup future panicked.
    #[error("the server thread panicked while starting")]
    Panicked,
}

/// Why a [`BackgroundServer`] did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The thread did not end in time (a handler blocks its runtime); it was left running.
    #[error("the server thread did not stop within {0:?}; it was left running")]
    TimedOut(Duration),
    /// The thread panicked.
    #[error("the server thread panicked")]
    Panicked,
}

/// What the thread reports once it serves: its runtime and whatever the setup returned.
type Ready<T, E> = Result<(tokio::runtime::Handle, Arc<ServerStats>, T), StartError<E>>;

/// A server on its own named thread and current-thread runtime. Dropping it shuts it down
/// (bounded wait, see [`BackgroundServer::shutdown`]).
#[derive(Debug)]
pub struct BackgroundServer {
    addr: Option<SocketAddr>,
    endpoint: Endpoint,
    stats: Arc<ServerStats>,
    control: ServerControl,
    runtime: tokio::runtime::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnected once the thread has finished (its sender is dropped last thing).
    finished: mpsc::Receiver<()>,
    shutdown_timeout: Duration,
}

impl BackgroundServer {
    /// Binds `addr` (port 0: any free port) and serves `handler` on a new thread named
    /// `forward-server`. Works inside or outside a tokio runtime.
    ///
    /// # Errors
    /// The bind failure, or the thread or its runtime cannot be created.
    pub fn start<H: Handler>(
        addr: impl std::net::ToSocketAddrs,
        handler: Arc<H>,
    ) -> Result<Self, StartError<std::convert::Infallible>> {
        Self::start_with(addr, BackgroundOptions::default(), async move {
            Ok((handler, ()))
        })
        .map(|(server, ())| server)
    }

    /// Binds `addr`, then runs `setup` on the new thread's runtime and serves the handler it
    /// returns; its second value is handed back to the caller. Blocks until the server serves
    /// or failed to start. Works inside or outside a tokio runtime.
    ///
    /// Use `setup` for what must live on the server's runtime, e.g. opening a database
    /// client whose connection tasks are spawned where it is opened.
    ///
    /// # Errors
    /// [`StartError::Bind`], [`StartError::Spawn`], [`StartError::Setup`] with `setup`'s
    /// error, [`StartError::Panicked`] when `setup` panicked.
    pub fn start_with<H, T, E, F>(
        addr: impl std::net::ToSocketAddrs,
        options: BackgroundOptions,
        setup: F,
    ) -> Result<(Self, T), StartError<E>>
    where
        H: Handler,
        T: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<(Arc<H>, T), E>> + Send + 'static,
    {
        // Bound here, with the standard library, so that a bind error is the caller's
        // and the address is known before any client needs it.
        let listener = std::net::TcpListener::bind(addr).map_err(StartError::Bind)?;
        Self::start_bound(StdListener::Tcp(listener), options, setup)
    }

    /// As [`BackgroundServer::start_with`], on any [`Endpoint`] (a Unix socket, or TLS with
    /// [`ServerConfig::tls`] in `options`), as [`Server::bind_endpoint`] binds it.
    ///
    /// # Errors
    /// As [`BackgroundServer::start_with`]; [`StartError::Bind`] also for settings that do
    /// not fit the endpoint (see [`Server::bind_endpoint`]).
    pub fn start_endpoint_with<H, T, E, F>(
        endpoint: &Endpoint,
        options: BackgroundOptions,
        setup: F,
    ) -> Result<(Self, T), StartError<E>>
    where
        H: Handler,
        T: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<(Arc<H>, T), E>> + Send + 'static,
    {
        crate::server::check_endpoint(endpoint, &options.config).map_err(StartError::Bind)?;
        let listener = bind_std(endpoint).map_err(StartError::Bind)?;
        Self::start_bound(listener, options, setup)
    }

    fn start_bound<H, T, E, F>(
        listener: StdListener,
        options: BackgroundOptions,
        setup: F,
    ) -> Result<(Self, T), StartError<E>>
    where
        H: Handler,
        T: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<(Arc<H>, T), E>> + Send + 'static,
    {
        let (addr, endpoint) = listener
            .addresses(options.config.tls.is_some())
            .map_err(StartError::Bind)?;
        let control = ServerControl::new();
        let (ready_tx, ready) = mpsc::sync_channel::<Ready<T, E>>(1);
        let (finished_tx, finished) = mpsc::channel::<()>();
        let BackgroundOptions {
            thread_name,
            config,
            shutdown_timeout,
        } = options;
        let serving = control.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let _finished = finished_tx;
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Spawn(e)));
                        return;
                    }
                };
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let server = match Server::from_bound(listener, config) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Bind(e)));
                            return;
                        }
                    };
                    let (handler, extra) = match setup.await {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Setup(e)));
                            return;
                        }
                    };
                    let stats = server.stats();
                    let serve = server.serve_with_control(handler, serving);
                    if ready_tx.send(Ok((handle, stats, extra))).is_ok() {
                        serve.await;
                    }
                });
                // Tasks still on the runtime (connection tasks of the handler's clients) are
                // dropped; blocking ones get a bounded wait, as the caller does.
                runtime.shutdown_timeout(shutdown_timeout);
            })
            .map_err(StartError::Spawn)?;
        match ready.recv() {
            Ok(Ok((runtime, stats, extra))) => Ok((
                Self {
                    addr,
                    endpoint,
                    stats,
                    control,
                    runtime,
                    thread: Some(thread),
                    finished,
                    shutdown_timeout,
                },
                extra,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked.
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Panicked)
            }
        }
    }

    /// The bound TCP address.
    ///
    /// # Panics
    /// For a server on a Unix socket (use [`BackgroundServer::endpoint`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a Unix socket server has no TCP address")
    }

    /// Where clients connect: `ip:port`, `tls://ip:port` or `unix:///path`.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The server's connection and frame counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The control the server obeys (clone it to stop or drop from elsewhere).
    pub fn control(&self) -> &ServerControl {
        &self.control
    }

    /// The server thread's runtime: spawn work there that must share it with the handler
    /// (it runs while the server serves).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Ends every connection open now; new ones are still accepted.
    pub fn drop_connections(&self) {
        self.control.drop_connections();
    }

    /// Stops accepting, ends every open connection and joins the thread, waiting at most the
    /// shutdown timeout. Blocks the calling thread (also when called from async code).
    ///
    /// # Errors
    /// [`ShutdownError::TimedOut`] when the thread did not end in time (it is left running,
    /// detached, and may still hold the port); [`ShutdownError::Panicked`] when it panicked.
    pub fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ShutdownError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.control.shutdown();
        match self.finished.recv_timeout(self.shutdown_timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(ShutdownError::TimedOut(self.shutdown_timeout))
            }
            // Nothing is ever sent: disconnected means the thread is done.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                thread.join().map_err(|_| ShutdownError::Panicked)
            }
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "forward server not stopped cleanly");
        }
    }
}
