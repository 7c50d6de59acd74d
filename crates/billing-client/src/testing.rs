//! An in-process forward server for users' own tests: it records what arrived and can
//! withhold acks or drop connections on demand. It runs on its own thread and runtime, so it
//! works from plain `#[test]`s and from inside tokio tests alike.
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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forward::{Disposition, Frame, Handler};
use tokio::sync::watch;

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
    connections: AtomicUsize,
}

struct Recorder(Arc<State>);

impl Handler for Recorder {
    type Error = std::convert::Infallible;

    async fn handle(&self, _peer: SocketAddr, frame: Frame) -> Result<Disposition, Self::Error> {
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

/// The in-process test ingester. Stops when dropped.
#[derive(Debug)]
pub struct TestIngester {
    addr: SocketAddr,
    state: Arc<State>,
    kill: watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestIngester {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Errors
    /// If the runtime or the listener cannot be created.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"))
    }

    /// Starts a server on `addr` (to restart one on the port a client already uses).
    ///
    /// # Errors
    /// If the runtime or the listener cannot be created.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Bound with std so that starting works from inside a caller's runtime too.
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            mode: Mutex::new(AckMode::Ack),
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            frames: AtomicUsize::new(0),
            acked_frames: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let (kill, kill_rx) = watch::channel(0u64);
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel();
        let handler = Arc::new(Recorder(state.clone()));
        let st = state.clone();
        let thread = std::thread::Builder::new().name("test-ingester".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    let mut kill_rx = kill_rx.clone();
                    kill_rx.mark_unchanged();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = forward::serve_connection(stream, peer, handler, forward::ServerConfig::default()) => {}
                            _ = kill_rx.changed() => {}
                        }
                    });
                }
            })
        })?;
        Ok(Self {
            addr,
            state,
            kill,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client config pointing at this server, with short retry delays for tests.
    pub fn client_config(&self) -> Config {
        Config {
            ingester: self.addr.to_string(),
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
        self.kill.send_modify(|g| *g += 1);
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
        self.state.connections.load(Ordering::SeqCst)
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

impl Drop for TestIngester {
    fn drop(&mut self) {
        self.drop_connections();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
