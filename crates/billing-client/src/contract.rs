//! The contract between the [`Client`](crate::Client) handle and its background sender: the
//! state both sides share, the unit of work the handle queues, and the commands it sends.
//!
//! Invariants both sides keep:
//! - `Shared::buffered` counts events accepted and not yet resolved (memory mode). The handle
//!   raises it *before* it enqueues, so the channel never holds more than
//!   `max_buffered_events` events; the sender lowers it once per resolved event.
//! - Every [`Queued`] event that enters the channel is resolved exactly once by the sender:
//!   `success` on ack, or dropped as `stopping` (even one that raced with the sender's exit:
//!   the sender closes the channel and drains it before it stops).
//! - Memory mode: the handle counts an event into the `queued` gauge (one atomic add) and
//!   into nothing else; the sender counts it into the `unacked` gauge when it takes it from
//!   the channel and out of both when it resolves it, per batch (a [`Tally`]), so the caller's
//!   thread never looks up a labelled series.
//! - Linger: while `Shared::lingering` is set the sender does not watch the channel, so a
//!   send wakes no thread; it looks at the channel when its linger ends, or at once when
//!   notified through `Shared::nudge`: by the handle that clears the flag once enough events
//!   wait, and by every control command (flush, close, spool wake). No event waits longer
//!   than the linger.
//! - `Shared::wake_pending` is set while a [`Command::Wake`] is on its way, so spool appends send
//!   at most one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;

use billing_schema::Amounts;

use crate::metrics::{Metrics, Status, Tally};

/// State shared by the client handle and its sender thread.
pub(crate) struct Shared {
    pub buffered: AtomicUsize,
    pub closed: AtomicBool,
    pub metrics: Metrics,
    /// The disk spool, when configured: accepted events live there until acked.
    pub spool: Option<Arc<spool::Spool>>,
    /// Set while a `Wake` is on its way to the sender, so appends send at most one.
    pub wake_pending: AtomicBool,
    /// Set while the sender lingers: it does not watch the channel but looks at it when its
    /// linger ends or when `nudge` is notified (by whoever clears this flag, or by a control
    /// command).
    pub lingering: AtomicBool,
    /// Ends the sender's linger early.
    pub nudge: tokio::sync::Notify,
    /// Why the latest delivery attempt failed, naming the ingester (written by the sender,
    /// read by `Client::last_failure`).
    pub last_failure: std::sync::Mutex<Option<String>>,
    /// Events resolved by this client, per final status (indexed by [`Status::index`]); what
    /// `close` reports, whoever else shares the metrics.
    pub resolved: [AtomicU64; Status::COUNT],
}

impl Shared {
    /// Counts an event's amounts under `status` in the metrics and, for a final status, in
    /// this client's own tally.
    pub fn track(&self, status: Status, amounts: &Amounts) {
        self.metrics.track(status, amounts);
        if status != Status::Retrying {
            self.resolved[status.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Shared::track`] for every event of `tally`.
    pub fn track_tally(&self, status: Status, tally: &Tally) {
        self.metrics.track_tally(status, tally);
        if status != Status::Retrying {
            self.resolved[status.index()].fetch_add(tally.events, Ordering::Relaxed);
        }
    }
}

/// How the sender answers a flush or close: to a blocked thread or to an awaiting task.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `Client::flush` / `close`: a thread waits on the receiver.
    Sync(SyncSender<()>),
    /// `flush_async` / `close_async`: a task awaits the receiver.
    Async(tokio::sync::mpsc::Sender<()>),
}

impl Reply {
    /// Tells the waiter (who may have given up already: then nothing happens).
    pub fn done(&self) {
        match self {
            Reply::Sync(tx) => {
                let _ = tx.try_send(());
            }
            Reply::Async(tx) => {
                let _ = tx.try_send(());
            }
        }
    }
}

/// An accepted event, encoded on the caller's thread (see [`crate::encode`]).
#[derive(Debug)]
pub(crate) struct Queued {
    /// The caller's key, for logs.
    pub key: String,
    /// The amounts, for metrics.
    pub amounts: Amounts,
    /// The records, each encoded as the framing's unit.
    pub units: Vec<u8>,
    /// End offset of each record's unit in `units`.
    pub ends: Vec<u32>,
}

/// Messages from the client handles to the sender.
#[derive(Debug)]
pub(crate) enum Command {
    /// One accepted event (memory mode).
    Event(Queued),
    /// Several accepted events, in order, as one message so that a batch is taken all or none.
    Events(Vec<Queued>),
    /// Reply once every event below the target is resolved; `None`: below the sender's own
    /// next sequence number (memory mode), `Some`: below this spool sequence number.
    Flush(Option<u64>, Reply),
    /// Deliver what is queued until the deadline, then stop; reply when stopped.
    Close(std::time::Instant, Reply),
    /// New events are in the spool.
    Wake,
}
