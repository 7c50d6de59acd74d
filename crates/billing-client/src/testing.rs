//! An in-process forward server for users' own tests: it records what arrived and can
//! withhold acks or drop connections on demand. It is `forward`'s [`forward::BackgroundServer`]
//! (its own thread and runtime, so it works from plain `#[test]`s and from inside tokio tests
//! alike) with a recording handler; this module adds only the recording and the ack modes.
//!
//! ```no_run
//! use billing_client::testing::TestIngester;
//! let ingester = TestIngester::start()?;
//! let client = billing_client::Client::new(ingester.client_config())?;
//! // ... add_amounts ...
//! client.flush(std::time::Duration::from_secs(5))?;
//! assert_eq!(ingester.records().len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use forward::{BackgroundOptions, BackgroundServer, Disposition, Frame, Handler, StartError};

use crate::config::Config;

/// What the test ingester does with each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Record the entries and ack (the default).
    Ack,
    /// Record the entries but never ack: the client times out and resends.
    Withhold,
    /// Record nothing and close the connection.
    Refuse,
}

/// One received entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The frame's tag.
    pub tag: String,
    /// The entry's time.
    pub time: forward::EventTime,
    /// The record, as JSON.
    pub record: serde_json::Value,
    /// The wire mode it came in.
    pub mode: forward::Mode,
}

#[derive(Debug)]
struct State {
    mode: Mutex<AckMode>,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    frames: AtomicUsize,
    acked_frames: AtomicUsize,
}

struct Recorder(Arc<State>);

impl Handler for Recorder {
    type Error = std::convert::Infallible;

    async fn handle(
        &self,
        _peer: forward::PeerAddr,
        frame: Frame,
    ) -> Result<Disposition, Self::Error> {
        let state = &self.0;
        state.frames.fetch_add(1, Ordering::SeqCst);
        let mode = *state.mode.lock().unwrap_or_else(|e| e.into_inner());
        if mode == AckMode::Refuse {
            return Ok(Disposition::Close);
        }
        let mut received = state.received.lock().unwrap_or_else(|e| e.into_inner());
        for e in &frame.entries {
            received.push(Received {
                tag: frame.tag.clone(),
                time: e.time,
                record: forward::value_to_json(&e.record),
                mode: frame.mode,
            });
        }
        drop(received);
        state.arrived.notify_all();
        Ok(match mode {
            AckMode::Ack => {
                state.acked_frames.fetch_add(1, Ordering::SeqCst);
                Disposition::Ack
            }
            _ => Disposition::Withhold,
        })
    }
}

/// Where a test ingester listens.
enum Target<'a> {
    Addr(SocketAddr),
    Endpoint(&'a forward::Endpoint),
}

/// The in-process test ingester. Stops when dropped.
#[derive(Debug)]
pub struct TestIngester {
    state: Arc<State>,
    server: BackgroundServer,
}

impl TestIngester {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Errors
    /// If the runtime, the thread or the listener cannot be created.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"))
    }

    /// Starts a server on `addr` (to restart one on the port a client already uses).
    ///
    /// # Errors
    /// If the runtime, the thread or the listener cannot be created.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with_config(addr, forward::ServerConfig::default())
    }

    /// Starts a server on `addr` with `config`, e.g. with `auth` set to test a client's
    /// shared key (see [`TestIngester::start_with_auth`]).
    ///
    /// # Errors
    /// If the runtime, the thread or the listener cannot be created, or `config` is invalid.
    pub fn start_with_config(
        addr: SocketAddr,
        config: forward::ServerConfig,
    ) -> std::io::Result<Self> {
        Self::start_any(&Target::Addr(addr), config)
    }

    /// Starts a server on any endpoint (`unix:///path`, or `tls://127.0.0.1:0` with
    /// `config.tls` set) with `config`.
    ///
    /// # Errors
    /// As [`TestIngester::start_with_config`]; settings that do not fit the endpoint.
    pub fn start_on_endpoint(
        endpoint: &forward::Endpoint,
        config: forward::ServerConfig,
    ) -> std::io::Result<Self> {
        Self::start_any(&Target::Endpoint(endpoint), config)
    }

    /// Starts a TLS server on `127.0.0.1:0` with `tls` (with a client CA in it: mutual TLS);
    /// [`TestIngester::client_config`] then points at `tls://127.0.0.1:PORT` (set the client's
    /// `tls_ca`, and `tls_server_name` unless the certificate names `127.0.0.1`).
    ///
    /// # Errors
    /// As [`TestIngester::start_with_config`].
    pub fn start_with_tls(tls: forward::ServerTls) -> std::io::Result<Self> {
        let config = forward::ServerConfig {
            tls: Some(tls),
            ..forward::ServerConfig::default()
        };
        let endpoint = "tls://127.0.0.1:0".parse().expect("valid address");
        Self::start_on_endpoint(&endpoint, config)
    }

    fn start_any(target: &Target<'_>, config: forward::ServerConfig) -> std::io::Result<Self> {
        let state = Arc::new(State {
            mode: Mutex::new(AckMode::Ack),
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            frames: AtomicUsize::new(0),
            acked_frames: AtomicUsize::new(0),
        });
        let handler = Arc::new(Recorder(state.clone()));
        let options = BackgroundOptions::default()
            .thread_name("test-ingester")
            .config(config);
        let setup = async move { Ok::<_, std::convert::Infallible>((handler, ())) };
        let started = match target {
            Target::Addr(addr) => BackgroundServer::start_with(*addr, options, setup),
            Target::Endpoint(endpoint) => {
                BackgroundServer::start_endpoint_with(endpoint, options, setup)
            }
        };
        let (server, ()) = started.map_err(|e| match e {
            StartError::Bind(e) | StartError::Spawn(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        Ok(Self { state, server })
    }

    /// Starts a server on `addr` that requires the handshake with `shared_key` (hostname
    /// `test-ingester`, no users).
    ///
    /// # Errors
    /// As [`TestIngester::start_with_config`].
    pub fn start_with_auth(addr: SocketAddr, shared_key: &str) -> std::io::Result<Self> {
        let config = forward::ServerConfig {
            auth: Some(forward::ServerAuth {
                shared_key: shared_key.to_string(),
                hostname: "test-ingester".to_string(),
                users: None,
            }),
            ..forward::ServerConfig::default()
        };
        Self::start_with_config(addr, config)
    }

    /// The bound TCP address.
    ///
    /// # Panics
    /// For a server on a Unix socket (see [`TestIngester::endpoint`]).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Where clients connect: `127.0.0.1:PORT`, `tls://127.0.0.1:PORT` or `unix:///path`.
    pub fn endpoint(&self) -> &forward::Endpoint {
        self.server.endpoint()
    }

    /// The server's counters (handshakes among them).
    pub fn stats(&self) -> Arc<forward::ServerStats> {
        self.server.stats()
    }

    /// A client config pointing at this server, with short retry delays for tests.
    pub fn client_config(&self) -> Config {
        Config {
            ingester: self.endpoint().to_string(),
            retry_delay: Duration::from_millis(10),
            retry_delay_max: Duration::from_millis(100),
            ..Config::default()
        }
    }

    /// Sets what happens to the next frames.
    pub fn set_ack_mode(&self, mode: AckMode) {
        *self.state.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// Closes every open connection now (new ones are still accepted).
    pub fn drop_connections(&self) {
        self.server.drop_connections();
    }

    /// Every entry received so far, in arrival order (repeats included).
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The records received so far, in arrival order (repeats included).
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.received().into_iter().map(|r| r.record).collect()
    }

    /// Frames received (acked or not) and frames acked.
    pub fn frames(&self) -> (usize, usize) {
        (
            self.state.frames.load(Ordering::SeqCst),
            self.state.acked_frames.load(Ordering::SeqCst),
        )
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        let total = self.server.stats().connections_total.load(Ordering::SeqCst);
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Waits until at least `n` entries arrived; `false` if `timeout` passed first.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut received = self
            .state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            received = self
                .state
                .arrived
                .wait_timeout(received, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
