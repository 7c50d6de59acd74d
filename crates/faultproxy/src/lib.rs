//! A fault-injecting TCP proxy for tests: it listens on `127.0.0.1:0`, forwards every
//! connection to an upstream address, and does to the traffic whatever the test switches on
//! at run time through the [`FaultProxy`] handle.
//!
//! ```no_run
//! use std::time::Duration;
//! use faultproxy::{FaultProxy, Faults};
//! # let ingester: std::net::SocketAddr = "127.0.0.1:24224".parse().unwrap();
//! let proxy = FaultProxy::start(ingester).unwrap();
//! // point the client at proxy.addr(), then:
//! proxy.set_faults(Faults::drop_acks());
//! proxy.wait_for("an ack lost", Duration::from_secs(20), |s| s.acks_dropped > 0);
//! proxy.heal();
//! ```
//!
//! # Faults
//!
//! - Byte level, any protocol: a partition (black hole both ways, then heal), refused
//!   connections, acks delayed by D, a trickle (one byte per interval), and at once on live
//!   connections: [`FaultProxy::cut_all`] (FIN) and [`FaultProxy::reset_all`] (RST through
//!   `SO_LINGER` 0).
//! - Frame level, for MessagePack streams (the Forward protocol): acks lost after the server
//!   committed (`drop_acks`), acks released in reversed groups (`reorder_acks`), client frames
//!   written twice (`duplicate_frames`), and a connection cut after N bytes of a frame
//!   ([`FaultProxy::cut_mid_frame`]). Frame boundaries come from `forward::msgpack::Scanner`,
//!   the server's own resumable scanner, so a duplicate is always one whole frame.
//!
//! [`Stats`] counts what the proxy did (bytes, connections, frames duplicated, acks dropped,
//! cuts, partition stalls), so a test polls for "the fault has bitten" instead of sleeping,
//! and asserts that it did.
//!
//! # Design
//!
//! The proxy runs on its own thread with its own current-thread tokio runtime, so a
//! synchronous test drives it with plain method calls and it works inside or outside a
//! runtime. The faults are one [`Faults`] value in a `watch` channel: every connection reads
//! it before each read and each write (and a waiting one wakes on a change), so a switch
//! applies at once to live connections as well as new ones. Each connection is two
//! directions; each direction is a reader that splits the stream into MessagePack values and
//! decides their fate (forward, drop, hold, duplicate, cut) and a writer that applies their
//! timing (due time, partition, trickle), joined by a bounded queue. Kills of live connections
//! go out on a broadcast channel. Dropping the [`FaultProxy`] stops the thread and closes
//! every connection.
//!
//! Modules: `faults.rs` (what can be switched on), `stats.rs` (counters), `shared.rs` (state
//! of the handle and the connections), `conn.rs` (one connection's pumps).

#![warn(missing_docs)]

mod conn;
mod faults;
mod shared;
mod stats;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use faults::{Direction, Faults, Reorder, Trickle};
pub use stats::Stats;

use shared::{Kill, Shared};

/// A running proxy; stopped (every connection closed) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream())
            .field("faults", &self.faults())
            .field("stats", &self.stats())
            .finish()
    }
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and starts forwarding new connections to `upstream`, with no
    /// fault on.
    ///
    /// # Errors
    /// The listener could not be bound, or the proxy's thread or runtime not started.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(upstream));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("faultproxy-{}", addr.port()))
            .spawn({
                let shared = shared.clone();
                move || {
                    runtime.block_on(accept_loop(listener, shared, stopped));
                    // Dropping the runtime cancels every connection task: sockets closed.
                    drop(runtime);
                }
            })?;
        Ok(FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream()
    }

    /// Forwards new connections to `upstream` from now on (live ones keep theirs).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.shared.set_upstream(upstream);
    }

    /// The faults on now.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Replaces the faults; applies to live connections at once.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Edits the faults in place (e.g. `|f| f.drop_acks = false`).
    pub fn update(&self, edit: impl FnOnce(&mut Faults)) {
        self.shared.faults.send_modify(edit);
    }

    /// Switches every fault off and disarms pending mid-frame cuts: a clean pipe again. What
    /// a partition held is delivered; delayed acks already read keep their due time.
    pub fn heal(&self) {
        self.shared.arm_cuts(0, 0);
        self.set_faults(Faults::default());
    }

    /// Closes every live connection (FIN to both sides); returns how many were live.
    pub fn cut_all(&self) -> usize {
        self.shared.kills.send(Kill::Close).unwrap_or(0)
    }

    /// Resets every live connection (RST to both sides); returns how many were live.
    pub fn reset_all(&self) -> usize {
        self.shared.kills.send(Kill::Reset).unwrap_or(0)
    }

    /// Arms `times` cuts: each of the next `times` client→server frames longer than
    /// `after_bytes` (on any connection) is forwarded up to `after_bytes` of it, then its
    /// connection is closed both ways, so the server sees a truncated frame. Counted in
    /// [`Stats::frames_cut`]. Replaces cuts armed before.
    pub fn cut_mid_frame(&self, after_bytes: usize, times: u64) {
        self.shared.arm_cuts(after_bytes, times);
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Polls the counters until `done` holds; returns them.
    ///
    /// # Panics
    /// When `done` does not hold within `timeout`, naming `what` and the counters: a test
    /// whose fault never bit fails here.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "faultproxy {}: timed out after {timeout:?} waiting for {what}; {stats:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Subscribed before the task runs: a kill sent from now on reaches it.
                    let kill = shared.kills.subscribe();
                    tokio::spawn(conn::serve(client, shared.clone(), kill));
                }
                // Out of descriptors, say: try again shortly rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}
