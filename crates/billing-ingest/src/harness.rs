//! An ingester running inside another program: tests, `billing demo`, benchmarks.
//!
//! Why: starting an ingester on `127.0.0.1:0`, finding its address, stopping it and getting its
//! store back was written once per caller, each time with its own shutdown channel and task
//! handle. [`RunningIngester`] is that, once, on the forward crate's [`SpawnedServer`];
//! [`BackgroundIngester`] is the same on its own thread and runtime ([`BackgroundServer`]) for
//! callers without a runtime.
//!
//! Invariants:
//! - the listener is bound when `start` returns: [`RunningIngester::addr`] is the real address
//!   (port 0 resolved) and clients may connect at once;
//! - frames go through the same handler as `billing ingest` ([`crate::serve_with_metrics`]): a
//!   chunk is acked only after its frame's transaction committed, and every frame is counted
//!   into the ingester's [`IngestMetrics`];
//! - the harness never closes the store: it is shared (`Arc`), and shutting down returns it
//!   still open, so the caller can restart an ingester on it, report from it or close it;
//! - shutting down stops accepting and ends every open connection (frames not yet acked stay
//!   unacked, so their clients resend them and the store's dedupe makes that harmless), and
//!   returns only once the listener is closed: a new ingester may then bind the same address;
//! - [`BackgroundIngester`] opens its store on its own thread's runtime, so the store's tasks
//!   (PostgreSQL connections) live on a runtime that runs as long as the ingester does.
//!
//! ```
//! # async fn demo(store: std::sync::Arc<billing_ingest::SqliteStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use billing_ingest::RunningIngester;
//! let ingester = RunningIngester::start("127.0.0.1:0", store).await?;
//! let addr = ingester.addr(); // point clients here
//! let store = ingester.shutdown().await; // still open
//! let again = RunningIngester::start(addr, store).await?; // same port, same store
//! # drop(again);
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use forward::{
    BackgroundOptions, BackgroundServer, Server, ServerConfig, ServerStats, SpawnedServer,
};
use forward::{ShutdownError, StartError};

use billing_schema::validate::Policy;

use crate::{AnyStore, Ingest, IngestMetrics, Store, StoreError, StoreUrl};

/// Why an in-process ingester did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngesterError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The bind failure.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[source] StoreError),
    /// The ingester's thread or runtime could not be created.
    #[error("cannot start the ingester thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The ingester's thread panicked.
    #[error("the ingester thread panicked")]
    Panicked,
    /// The ingester's thread did not end in time (a store call blocks it); it was left
    /// running.
    #[error("the ingester thread did not stop within {0:?}; it was left running")]
    ShutdownTimedOut(Duration),
}

/// Settings of an in-process ingester; `IngesterOptions::default()` and the setters below.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct IngesterOptions {
    /// Where frames are counted (a fresh set when `None`).
    pub metrics: Option<IngestMetrics>,
    /// The forward server's settings.
    pub server: ServerConfig,
    /// The validation rules (default: [`Policy::default`]).
    pub policy: Policy,
    /// [`BackgroundIngester`] only: its thread's name (default `billing-ingester`).
    pub thread_name: Option<String>,
    /// [`BackgroundIngester`] only: the longest wait for its thread when shutting down
    /// (default [`forward::DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub shutdown_timeout: Option<Duration>,
}

impl IngesterOptions {
    /// Counts frames into `metrics` (e.g. shared with a metrics endpoint).
    #[must_use]
    pub fn metrics(mut self, metrics: IngestMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the forward server's settings.
    #[must_use]
    pub fn server(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// Validates records under `policy`.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Names the [`BackgroundIngester`]'s thread.
    #[must_use]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = Some(name.into());
        self
    }

    /// Bounds the wait for the [`BackgroundIngester`]'s thread when shutting down.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }
}

/// An ingester serving as a task on the caller's runtime. Dropping it stops serving without
/// waiting; [`RunningIngester::shutdown`] waits and returns the store.
#[derive(Debug)]
pub struct RunningIngester<S: Store> {
    server: SpawnedServer,
    store: Arc<S>,
    metrics: IngestMetrics,
}

impl<S: Store> RunningIngester<S> {
    /// Binds `listen` (e.g. `"127.0.0.1:0"`, or the address of a stopped ingester to restart
    /// it) and serves into `store` on a task of the current runtime.
    ///
    /// # Errors
    /// [`IngesterError::Bind`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(
        listen: impl tokio::net::ToSocketAddrs + Display,
        store: Arc<S>,
    ) -> Result<Self, IngesterError> {
        Self::start_with(listen, store, IngesterOptions::default()).await
    }

    /// As [`RunningIngester::start`], with `options` (metrics, server settings).
    ///
    /// # Errors
    /// [`IngesterError::Bind`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start_with(
        listen: impl tokio::net::ToSocketAddrs + Display,
        store: Arc<S>,
        options: IngesterOptions,
    ) -> Result<Self, IngesterError> {
        let bind_error = |source| IngesterError::Bind {
            addr: listen.to_string(),
            source,
        };
        let server = Server::bind(&listen, options.server)
            .await
            .map_err(bind_error)?;
        let metrics = options.metrics.unwrap_or_default();
        let handler = Arc::new(Ingest {
            store: store.clone(),
            metrics: metrics.clone(),
            policy: options.policy,
        });
        let server = SpawnedServer::spawn(server, handler).map_err(bind_error)?;
        Ok(Self {
            server,
            store,
            metrics,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The store frames go to.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The forward server's connection, frame and ack counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.server.stats()
    }

    /// The frames' outcomes, as `billing ingest` exports them.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Ends every connection open now, as a crash would (unacked chunks stay unacked); new
    /// connections are still accepted.
    pub fn drop_connections(&self) {
        self.server.drop_connections();
    }

    /// Stops accepting, ends every open connection and waits until the listener is closed;
    /// returns the store, still open.
    pub async fn shutdown(self) -> Arc<S> {
        self.server.shutdown().await;
        self.store
    }
}

/// An ingester on its own named thread and current-thread runtime, for callers without a
/// runtime (plain `#[test]`s, synchronous tools). Dropping it shuts it down (bounded wait).
#[derive(Debug)]
pub struct BackgroundIngester<S: Store = AnyStore> {
    server: BackgroundServer,
    store: Arc<S>,
    metrics: IngestMetrics,
}

impl BackgroundIngester<AnyStore> {
    /// Opens the store `url` names (creating and migrating it as `billing ingest` does) on a
    /// new thread's runtime, and serves it on `listen`. Blocks until it serves.
    ///
    /// # Errors
    /// [`IngesterError::Bind`], [`IngesterError::Store`], [`IngesterError::Thread`],
    /// [`IngesterError::Panicked`].
    pub fn open(
        listen: impl std::net::ToSocketAddrs + Display,
        url: &StoreUrl,
        options: IngesterOptions,
    ) -> Result<Self, IngesterError> {
        let url = url.clone();
        Self::start_with(listen, options, async move { AnyStore::open(&url).await })
    }
}

impl<S: Store> BackgroundIngester<S> {
    /// Binds `listen`, runs `open` on a new thread's runtime and serves the store it opens.
    /// Blocks until it serves.
    ///
    /// # Errors
    /// [`IngesterError::Bind`], [`IngesterError::Store`] with `open`'s error,
    /// [`IngesterError::Thread`], [`IngesterError::Panicked`].
    pub fn start_with<F>(
        listen: impl std::net::ToSocketAddrs + Display,
        options: IngesterOptions,
        open: F,
    ) -> Result<Self, IngesterError>
    where
        F: Future<Output = Result<S, StoreError>> + Send + 'static,
    {
        let IngesterOptions {
            metrics,
            server,
            policy,
            thread_name,
            shutdown_timeout,
        } = options;
        let metrics = metrics.unwrap_or_default();
        let mut background = BackgroundOptions::default()
            .config(server)
            .thread_name(thread_name.unwrap_or_else(|| "billing-ingester".into()));
        if let Some(t) = shutdown_timeout {
            background = background.shutdown_timeout(t);
        }
        let counted = metrics.clone();
        let started = BackgroundServer::start_with(&listen, background, async move {
            let store = Arc::new(open.await?);
            let handler = Arc::new(Ingest {
                store: store.clone(),
                metrics: counted,
                policy,
            });
            Ok::<_, StoreError>((handler, store))
        });
        let (server, store) = started.map_err(|e| match e {
            StartError::Bind(source) => IngesterError::Bind {
                addr: listen.to_string(),
                source,
            },
            StartError::Setup(e) => IngesterError::Store(e),
            StartError::Spawn(e) => IngesterError::Thread(e),
            _ => IngesterError::Panicked,
        })?;
        Ok(Self {
            server,
            store,
            metrics,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The store frames go to. Call its async methods through [`Self::run`], on the
    /// ingester's runtime: a PostgreSQL connection the pool opens on another runtime runs only
    /// while that runtime does, and the pool may later hand it to the ingester.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The forward server's connection, frame and ack counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.server.stats()
    }

    /// The frames' outcomes, as `billing ingest` exports them.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Ends every connection open now, as a crash would (unacked chunks stay unacked); new
    /// connections are still accepted.
    pub fn drop_connections(&self) {
        self.server.drop_connections();
    }

    /// Runs `f(store)` on the ingester's runtime (where the store's connections live) and
    /// waits for its result, e.g. `ingester.run(|s| async move { s.summary().await })`.
    /// Blocks the calling thread: meant for synchronous callers.
    ///
    /// # Panics
    /// When `f`'s future panics.
    pub fn run<T, F>(&self, f: impl FnOnce(Arc<S>) -> F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let task = f(self.store.clone());
        self.server.runtime().spawn(async move {
            let _ = reply.send(task.await);
        });
        // The runtime runs as long as `self`: no answer means the task panicked.
        answer
            .recv()
            .expect("the task run on the ingester's runtime panicked")
    }

    /// Stops accepting, ends every open connection and joins the thread (waiting at most the
    /// shutdown timeout); returns the store, still open. A PostgreSQL store's connections
    /// ended with the thread's runtime: its pool opens new ones on the runtime that next uses
    /// it.
    ///
    /// # Errors
    /// [`IngesterError::ShutdownTimedOut`] (the thread was left running),
    /// [`IngesterError::Panicked`].
    pub fn shutdown(self) -> Result<Arc<S>, IngesterError> {
        let Self { server, store, .. } = self;
        server.shutdown().map_err(|e| match e {
            ShutdownError::TimedOut(t) => IngesterError::ShutdownTimedOut(t),
            _ => IngesterError::Panicked,
        })?;
        Ok(store)
    }
}
