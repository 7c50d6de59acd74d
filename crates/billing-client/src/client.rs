//! [`Client`]: the handle services call. `add_amounts` validates, encodes the records on the
//! caller's thread ([`crate::encode`]) and hands them to the background sender
//! ([`crate::sender`]) through the contract in [`crate::contract`]; delivery, acks and retries
//! happen on the sender thread.
//!
//! Admission: `Shared::buffered` counts events accepted and not yet resolved; it is raised
//! before an event is enqueued, so the channel never holds more than `max_buffered_events`
//! events, and lowered by the sender when the event is delivered or dropped.
//!
//! When a call blocks: in memory mode never. With a spool, `add`/`add_amounts`/`add_batch`
//! return once the spool holds the events as durably as configured: in `fsync` mode that is
//! after the group commit's `fdatasync` (typically under a few milliseconds on a local SSD,
//! as long as the disk takes), in `interval` mode at once; with `when-full wait` a full spool
//! makes the call wait up to `spool_full_timeout` for acks to free space.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use billing_schema::validate::{Reason, check_event};
use billing_schema::{Amounts, Event, Metadata};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::config::Config;
use crate::contract::{Command, Queued, Reply, Shared};
use crate::encode::Records;
use crate::error::{AddBatchError, AddBatchErrorKind, AddError, FlushError, NewClientError};
use crate::metrics::{Metrics, Status};
use crate::sender::Sender;

/// A billing client: cheap to share between threads (`&self` everywhere), usable with or
/// without a tokio runtime. Dropping it closes it (bounded by `close_timeout`).
pub struct Client {
    cfg: Config,
    shared: Arc<Shared>,
    tx: UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Events waiting in the channel at which a lingering sender is woken: half the buffer,
    /// at most a chunk, at least one.
    wake_at: usize,
}

impl Client {
    /// Starts a client reporting into the process-wide [`Metrics::global`]. Does not connect:
    /// the sender connects in the background and keeps retrying.
    ///
    /// # Errors
    /// [`NewClientError::InvalidAddress`] if `ingester` is not an address (`host:port`,
    /// `tls://host:port`, `unix:///path`) or a comma-separated list of them (the message names
    /// the first bad one); [`NewClientError::InvalidTls`] for TLS settings that cannot be
    /// loaded or do not go together, or a `tls://` ingester without a CA;
    /// [`NewClientError::InvalidConfig`] for zero limits (or a zero `write_timeout` or
    /// `primary_recheck`); [`NewClientError::InvalidAuth`] for
    /// handshake credentials out of bounds (or no readable host name); [`NewClientError::Spawn`] if the
    /// sender thread cannot start.
    pub fn new(config: Config) -> Result<Self, NewClientError> {
        Self::with_metrics(config, Metrics::global())
    }

    /// As [`Client::new`], reporting into `metrics`.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_metrics(config: Config, metrics: Metrics) -> Result<Self, NewClientError> {
        let endpoints = forward::Endpoint::parse_list(&config.ingester)
            .map_err(|e| NewClientError::InvalidAddress(e.to_string()))?;
        // Loaded once: a bad file is this error, not a failure of every connection.
        let tls = config.client_tls().map_err(NewClientError::InvalidTls)?;
        if let Some(endpoint) = endpoints.iter().find(|e| e.is_tls())
            && tls.is_none()
        {
            return Err(NewClientError::InvalidTls(format!(
                "{endpoint} is a tls:// ingester: set tls_ca (--billing.tls-ca) to the CA \
                 that signs its certificate"
            )));
        }
        if config.max_buffered_events == 0 {
            return Err(NewClientError::InvalidConfig(
                "max_buffered_events must be at least 1",
            ));
        }
        if config.batch_max_records == 0 || config.max_in_flight == 0 || config.connections == 0 {
            return Err(NewClientError::InvalidConfig(
                "batch_max_records, max_in_flight and connections must be at least 1",
            ));
        }
        if config.write_timeout.is_zero() || config.primary_recheck.is_zero() {
            // Zero would fail every write, or recheck the primary in a tight loop.
            return Err(NewClientError::InvalidConfig(
                "write_timeout and primary_recheck must be above zero",
            ));
        }
        let auth = config.client_auth().map_err(NewClientError::InvalidAuth)?;
        if let Some(auth) = &auth {
            // The bounds every connection's handshake checks, once, up front.
            forward::ClientHandshake::new(auth.clone())
                .map_err(|e| NewClientError::InvalidAuth(e.to_string()))?;
        }
        let (spool, recovered_below) = match &config.spool_dir {
            Some(dir) => {
                let (spool, recovery) = spool::Spool::open(dir, config.spool_options())
                    .map_err(NewClientError::Spool)?;
                if recovery.damaged_records > 0 || !recovery.unreadable_segments.is_empty() {
                    tracing::warn!(dir = %dir.display(), damaged = recovery.damaged_records, unreadable = ?recovery.unreadable_segments, "billing: spool recovered with damaged records moved aside");
                }
                if recovery.records > 0 {
                    tracing::info!(dir = %dir.display(), events = recovery.records, "billing: spool recovered events to deliver");
                }
                // The gauges show what was recovered before the sender's first refresh.
                metrics.spool(&spool.stats());
                (Some(Arc::new(spool)), recovery.next_seq)
            }
            None => (None, 0),
        };
        let shared = Arc::new(Shared {
            buffered: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            metrics,
            spool,
            wake_pending: AtomicBool::new(false),
            lingering: AtomicBool::new(false),
            nudge: tokio::sync::Notify::new(),
            last_failure: std::sync::Mutex::new(None),
            resolved: Default::default(),
        });
        let (tx, rx) = unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NewClientError::Spawn)?;
        let sender = Sender::new(
            config.clone(),
            endpoints,
            auth,
            tls,
            shared.clone(),
            rx,
            recovered_below,
        );
        let thread = std::thread::Builder::new()
            .name("billing-sender".into())
            .spawn(move || runtime.block_on(sender.run()))
            .map_err(NewClientError::Spawn)?;
        let wake_at = (config.max_buffered_events / 2)
            .min(config.batch_max_records)
            .max(1);
        Ok(Self {
            cfg: config,
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            wake_at,
        })
    }

    /// Queues usage for delivery (the Go `AddAmounts`). Without a spool it returns at once and
    /// never blocks; with a spool it returns once the event is on disk as durably as
    /// configured (see the module docs: in `fsync` mode after the group commit's fsync, and with
    /// `when-full wait` up to `spool_full_timeout` while the spool is full).
    ///
    /// One record per non-zero amount is sent, keyed `unique_key:amount_type`; the event counts
    /// `success` only once the ingester acknowledged all of them. Requests with the same key
    /// can be retried: the ingester dedupes them.
    ///
    /// # Errors
    /// [`AddError::BlankKey`] or [`AddError::Invalid`] (the event breaks the record schema,
    /// see `billing_schema::validate::check_event`; counted `invalid`),
    /// [`AddError::QueueFull`] (counted `buffer_full`), [`AddError::Closed`] (counted
    /// `stopping`), and with a spool [`AddError::SpoolFull`] / [`AddError::Spool`]; each returns
    /// the event.
    pub fn add_amounts(
        &self,
        unique_key: impl Into<String>,
        internal_instance_id: impl Into<String>,
        timestamp: SystemTime,
        amounts: Amounts,
        metadata: Metadata,
    ) -> Result<(), AddError> {
        self.add(Event {
            unique_key: unique_key.into(),
            internal_instance_id: internal_instance_id.into(),
            occurred_at: timestamp,
            amounts,
            metadata,
        })
    }

    /// [`Client::add_amounts`] for an [`Event`] value.
    ///
    /// # Errors
    /// As [`Client::add_amounts`].
    pub fn add(&self, event: Event) -> Result<(), AddError> {
        if let Err(invalid) = check_event(&event) {
            self.shared.track(Status::Invalid, &event.amounts);
            tracing::warn!(reason = %invalid, "billing: event refused");
            return Err(if invalid.reason == Reason::BlankKey {
                AddError::BlankKey(Box::new(event))
            } else {
                AddError::Invalid {
                    source: invalid,
                    event: Box::new(event),
                }
            });
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.refuse_closed(event));
        }
        if let Some(spool) = &self.shared.spool {
            return self.add_to_spool(spool, event);
        }
        let limit = self.cfg.max_buffered_events;
        let buffered = self.shared.buffered.fetch_add(1, Ordering::AcqRel);
        if buffered >= limit {
            self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
            self.shared.track(Status::BufferFull, &event.amounts);
            tracing::warn!(unique_key = %event.unique_key, limit, "billing: event dropped: buffer full");
            return Err(AddError::QueueFull {
                limit,
                event: Box::new(event),
            });
        }
        let records = Records::of(&event, self.cfg.framing);
        if records.is_empty() {
            // Only zero amounts: nothing to send, as the Go client sent nothing.
            self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
            self.shared.track(Status::Success, &event.amounts);
            return Ok(());
        }
        // The key and amounts move into the queue (no copy); the sender counts the event into
        // the per-type gauges when it takes it, once per burst.
        self.shared.metrics.queued(1);
        let Event {
            unique_key,
            internal_instance_id,
            occurred_at,
            amounts,
            metadata,
        } = event;
        match self
            .tx
            .send(Command::Event(records.into_queued(unique_key, amounts)))
        {
            Ok(()) => {
                self.nudge_if_due(buffered + 1);
                Ok(())
            }
            Err(refused) => {
                // The sender stopped after a close that raced with this call.
                self.shared.metrics.queued(-1);
                self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
                let Command::Event(q) = refused.0 else {
                    unreachable!("an event was sent")
                };
                Err(self.refuse_closed(Event {
                    unique_key: q.key,
                    internal_instance_id,
                    occurred_at,
                    amounts: q.amounts,
                    metadata,
                }))
            }
        }
    }

    /// The spool path: `Ok` once the spool holds the event as durably as configured; the
    /// sender reads it back from disk.
    fn add_to_spool(&self, spool: &spool::Spool, event: Event) -> Result<(), AddError> {
        let metrics = &self.shared.metrics;
        let records = Records::of(&event, self.cfg.framing);
        if records.is_empty() {
            self.shared.track(Status::Success, &event.amounts);
            return Ok(());
        }
        let payload = records.spool_payload(&event);
        match spool.append(&payload) {
            Ok(_) => {
                metrics.unacked(1, &event.amounts);
                metrics.queued(1);
                self.wake_for_spool();
                Ok(())
            }
            Err(source @ spool::SpoolError::Full { .. }) => {
                self.shared.track(Status::SpoolFull, &event.amounts);
                tracing::warn!(unique_key = %event.unique_key, reason = %source, "billing: event dropped: spool full");
                Err(AddError::SpoolFull {
                    source,
                    event: Box::new(event),
                })
            }
            Err(source) => {
                self.shared.track(Status::SpoolError, &event.amounts);
                tracing::error!(unique_key = %event.unique_key, reason = %source, "billing: event dropped: spool write failed");
                Err(AddError::Spool {
                    source,
                    event: Box::new(event),
                })
            }
        }
    }

    /// Adds several events at once, all or none; with a spool they share one write and one
    /// fsync (the way to high throughput in the fsync durability mode, where each single
    /// `add` waits for its own group commit). Blocks as [`Client::add_amounts`] does.
    ///
    /// # Errors
    /// [`AddBatchError`] with every event back, and nothing of the batch accepted, when any
    /// event breaks the record schema (a blank key, ...), the client is closed (or its sender stopped), or the buffer or
    /// spool cannot take them all; the refused events are counted by status.
    pub fn add_batch(&self, events: Vec<Event>) -> Result<(), AddBatchError> {
        if let Some(invalid) = events.iter().find_map(|e| check_event(e).err()) {
            tracing::warn!(reason = %invalid, "billing: batch refused");
            self.track_refused(Status::Invalid, &events);
            let kind = if invalid.reason == Reason::BlankKey {
                AddBatchErrorKind::BlankKey
            } else {
                AddBatchErrorKind::Invalid
            };
            return Err(AddBatchError::new(kind, events));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            self.track_refused(Status::Stopping, &events);
            return Err(AddBatchError::new(AddBatchErrorKind::Closed, events));
        }
        match &self.shared.spool {
            Some(spool) => self.add_batch_to_spool(spool, events),
            None => self.add_batch_to_memory(events),
        }
    }

    fn track_refused(&self, status: Status, events: &[Event]) {
        for e in events {
            self.shared.track(status, &e.amounts);
            tracing::warn!(unique_key = %e.unique_key, status = status.as_str(), "billing: event dropped");
        }
    }

    /// Memory mode: one admission for the whole batch and one channel message, so the sender
    /// takes all of it or, when it is gone, none of it.
    fn add_batch_to_memory(&self, events: Vec<Event>) -> Result<(), AddBatchError> {
        let encoded: Vec<Records> = events
            .iter()
            .map(|e| Records::of(e, self.cfg.framing))
            .collect();
        let n = encoded.iter().filter(|r| !r.is_empty()).count();
        let limit = self.cfg.max_buffered_events;
        if self.shared.buffered.fetch_add(n, Ordering::AcqRel) + n > limit {
            self.shared.buffered.fetch_sub(n, Ordering::AcqRel);
            self.track_refused(Status::BufferFull, &events);
            return Err(AddBatchError::new(
                AddBatchErrorKind::QueueFull { limit },
                events,
            ));
        }
        let mut queued: Vec<Queued> = Vec::with_capacity(n);
        // Events with only zero amounts: nothing to send, counted `success` once the batch is in.
        let mut nothing_to_send = Vec::new();
        for (i, (r, e)) in encoded.into_iter().zip(&events).enumerate() {
            if r.is_empty() {
                nothing_to_send.push(i);
            } else {
                queued.push(r.queued(e));
            }
        }
        self.shared.metrics.queued(n as i64);
        let sent = n > 0 && self.tx.send(Command::Events(queued)).is_ok();
        if sent {
            self.nudge_if_due(self.shared.buffered.load(Ordering::Relaxed));
        }
        if n > 0 && !sent {
            // The sender stopped (a close raced with this call): nothing of the batch is in.
            self.shared.metrics.queued(-(n as i64));
            self.shared.buffered.fetch_sub(n, Ordering::AcqRel);
            self.track_refused(Status::Stopping, &events);
            return Err(AddBatchError::new(AddBatchErrorKind::Closed, events));
        }
        for i in nothing_to_send {
            self.shared.track(Status::Success, &events[i].amounts);
        }
        Ok(())
    }

    fn add_batch_to_spool(
        &self,
        spool: &spool::Spool,
        events: Vec<Event>,
    ) -> Result<(), AddBatchError> {
        let metrics = &self.shared.metrics;
        let payloads: Vec<Option<Vec<u8>>> = events
            .iter()
            .map(|e| {
                let r = Records::of(e, self.cfg.framing);
                (!r.is_empty()).then(|| r.spool_payload(e))
            })
            .collect();
        let slices: Vec<&[u8]> = payloads.iter().flatten().map(Vec::as_slice).collect();
        match spool.append_batch(&slices) {
            Ok(_) => {
                for (e, p) in events.iter().zip(&payloads) {
                    if p.is_none() {
                        self.shared.track(Status::Success, &e.amounts);
                    } else {
                        metrics.unacked(1, &e.amounts);
                        metrics.queued(1);
                    }
                }
                self.wake_for_spool();
                Ok(())
            }
            Err(source) => {
                let full = matches!(source, spool::SpoolError::Full { .. });
                self.track_refused(
                    if full {
                        Status::SpoolFull
                    } else {
                        Status::SpoolError
                    },
                    &events,
                );
                let kind = if full {
                    AddBatchErrorKind::SpoolFull
                } else {
                    AddBatchErrorKind::Spool
                };
                Err(AddBatchError::with_source(kind, source, events))
            }
        }
    }

    fn refuse_closed(&self, event: Event) -> AddError {
        self.shared.track(Status::Stopping, &event.amounts);
        tracing::warn!(unique_key = %event.unique_key, "billing: event dropped: client closed");
        AddError::Closed(Box::new(event))
    }

    /// Tells the sender that the spool holds new events, once until it has looked (a closed
    /// sender finds them in the spool on the next start). Like an event in memory mode, this
    /// does not end the sender's linger: an idle sender wakes at once, a lingering one reads
    /// the spool when its linger ends, so a stream of adds from many threads costs the sender
    /// one wake-up per linger, not one per group commit.
    fn wake_for_spool(&self) {
        if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Command::Wake);
        }
    }

    /// Sends a command that must not wait for the sender's linger (flush, close): the sender
    /// is nudged at once.
    fn control(&self, cmd: Command) -> Result<(), tokio::sync::mpsc::error::SendError<Command>> {
        let sent = self.tx.send(cmd);
        self.shared.nudge.notify_one();
        sent
    }

    /// After an event entered the channel: while the sender lingers it is woken only once
    /// `wake_at` events wait, so a steady stream of `add`s costs no thread wake-up each.
    fn nudge_if_due(&self, buffered: usize) {
        if buffered >= self.wake_at
            && self.shared.lingering.load(Ordering::Relaxed)
            && self.shared.lingering.swap(false, Ordering::AcqRel)
        {
            self.shared.nudge.notify_one();
        }
    }

    /// Waits until every event accepted before this call is delivered or dropped.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when `timeout` passes first (nothing is lost: delivery goes
    /// on); [`FlushError::Closed`] if the client is closed.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        // With a spool, events are numbered by the spool: wait for all below its next number.
        let target = self.shared.spool.as_ref().map(|s| s.next_seq());
        self.control(Command::Flush(target, Reply::Sync(reply)))
            .map_err(|_| FlushError::Closed)?;
        match done.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout {
                pending: self.pending(),
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Closed),
        }
    }

    /// Why the latest delivery attempt failed, as one line naming the ingester and the cause
    /// (`127.0.0.1:24225: cannot connect: Connection refused (os error 111)`, a DNS failure,
    /// the TLS check that failed, a refused handshake, `no ack within the ack timeout`, ...);
    /// `None` while no attempt has failed. For a caller that gave up waiting (a `flush`
    /// timeout) to say why.
    pub fn last_failure(&self) -> Option<String> {
        self.shared
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Events accepted and not yet delivered or dropped.
    pub fn pending(&self) -> usize {
        match &self.shared.spool {
            Some(spool) => usize::try_from(spool.stats().records).unwrap_or(usize::MAX),
            None => self.shared.buffered.load(Ordering::Acquire),
        }
    }

    /// As [`Client::flush`], for a caller inside a tokio runtime: it awaits the sender instead
    /// of blocking the worker thread (any runtime flavour; the runtime needs its time driver
    /// for the timeout).
    ///
    /// # Errors
    /// As [`Client::flush`].
    pub async fn flush_async(&self, timeout: Duration) -> Result<(), FlushError> {
        let (reply, mut done) = tokio::sync::mpsc::channel(1);
        let target = self.shared.spool.as_ref().map(|s| s.next_seq());
        self.control(Command::Flush(target, Reply::Async(reply)))
            .map_err(|_| FlushError::Closed)?;
        match tokio::time::timeout(timeout, done.recv()).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(FlushError::Closed),
            Err(_) => Err(FlushError::Timeout {
                pending: self.pending(),
            }),
        }
    }

    /// Stops intake, delivers what is queued within `close_timeout` (the rest is dropped and
    /// counted `stopping`; with a spool it stays on disk for the next start instead), closes
    /// the connection and stops the sender thread; returns what this client did with the
    /// events it was given. Idempotent (a second call reports the same).
    pub fn close(&self) -> CloseReport {
        self.close_within(self.cfg.close_timeout)
    }

    /// As [`Client::close`] with an explicit bound.
    pub fn close_within(&self, timeout: Duration) -> CloseReport {
        self.shared.closed.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let (reply, done) = std::sync::mpsc::sync_channel(1);
            let deadline = std::time::Instant::now() + timeout;
            if self
                .control(Command::Close(deadline, Reply::Sync(reply)))
                .is_ok()
            {
                let _ = done.recv();
            }
            let _ = thread.join();
        }
        self.report()
    }

    /// As [`Client::close`], for a caller inside a tokio runtime: delivery within `timeout` is
    /// awaited, and the sender thread is joined on the runtime's blocking pool, so no worker
    /// thread is blocked.
    pub async fn close_async(&self, timeout: Duration) -> CloseReport {
        self.shared.closed.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let (reply, mut done) = tokio::sync::mpsc::channel(1);
            let deadline = std::time::Instant::now() + timeout;
            if self
                .control(Command::Close(deadline, Reply::Async(reply)))
                .is_ok()
            {
                // The sender answers by the deadline (it drops what is left then); `None`:
                // it stopped without answering, which is an answer too.
                let _ = done.recv().await;
            }
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.report()
    }

    fn report(&self) -> CloseReport {
        let count = |s: Status| self.shared.resolved[s.index()].load(Ordering::Relaxed);
        let dropped = Status::ALL
            .into_iter()
            .filter(|s| !matches!(s, Status::Success | Status::Retrying))
            .map(|s| (s, count(s)))
            .filter(|(_, n)| *n > 0)
            .collect();
        CloseReport {
            delivered: count(Status::Success),
            left_in_spool: self.shared.spool.as_ref().map_or(0, |s| s.stats().records),
            dropped,
        }
    }

    /// The metrics this client reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    /// Closes the client as [`Client::close`] does, except inside a tokio runtime: there it
    /// only asks the sender to deliver what is queued within `close_timeout` and stop, and
    /// returns at once rather than block a worker (call [`Client::close_async`] to wait).
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.close();
            return;
        }
        self.shared.closed.store(true, Ordering::Release);
        if self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
        {
            let (reply, _) = tokio::sync::mpsc::channel(1);
            let deadline = std::time::Instant::now() + self.cfg.close_timeout;
            // The thread is detached: it ends by the deadline.
            let _ = self.control(Command::Close(deadline, Reply::Async(reply)));
        }
    }
}

/// What [`Client::close`] reports: what became of the events this client was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Events acknowledged by the ingester (and events of only zero amounts, which have
    /// nothing to send).
    pub delivered: u64,
    /// With a spool: events left on disk, to be delivered by the next client on the directory.
    pub left_in_spool: u64,
    /// Events dropped, by status (`stopping`, `buffer_full`, `spool_full`, `spool_error`,
    /// `invalid`); only statuses that occurred.
    pub dropped: Vec<(Status, u64)>,
}

impl CloseReport {
    /// All events dropped, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_schema::AmountType;

    fn event(key: &str) -> Event {
        Event {
            unique_key: key.into(),
            internal_instance_id: "1".into(),
            occurred_at: SystemTime::now(),
            amounts: [(AmountType::SAMPLES, 5)].into(),
            metadata: Metadata::new(),
        }
    }

    /// Stops the sender thread without marking the handle closed: what a `close` racing with
    /// an `add_batch` on another thread looks like to that `add_batch`.
    fn stop_sender_only(client: &Client) {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now();
        client
            .tx
            .send(Command::Close(deadline, Reply::Sync(reply)))
            .unwrap();
        done.recv().unwrap();
        let thread = client.thread.lock().unwrap().take().unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn add_batch_after_the_sender_stopped_refuses_the_whole_batch_and_hands_it_back() {
        let metrics = Metrics::new();
        let cfg = Config {
            ingester: "127.0.0.1:9".into(),
            ..Config::default()
        };
        let client = Client::with_metrics(cfg, metrics.clone()).unwrap();
        stop_sender_only(&client);

        let err = client
            .add_batch(vec![event("a"), event("b"), event("c")])
            .unwrap_err();
        assert_eq!(err.kind(), AddBatchErrorKind::Closed, "{err}");
        let keys: Vec<_> = err.events().iter().map(|e| e.unique_key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(
            metrics.events_total(Status::Stopping, &AmountType::SAMPLES),
            3
        );
        assert_eq!(metrics.queued_events(), 0, "nothing of the batch is queued");
        assert_eq!(metrics.unacked_amounts(&AmountType::SAMPLES), 0);
        assert_eq!(client.pending(), 0, "admission slots given back");

        let err = client.add(event("d")).unwrap_err();
        assert!(matches!(err, AddError::Closed(_)), "{err}");
    }
}
