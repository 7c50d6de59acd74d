//! [`Client`]: the handle services call. `add_amounts` validates, encodes the records on the
//! caller's thread and hands them to the background sender without ever blocking; delivery,
//! acks and retries happen on the sender thread (see [`crate::sender`]).
//!
//! Admission: `Shared::buffered` counts events accepted and not yet resolved; it is raised
//! before an event is enqueued, so the channel never holds more than `max_buffered_events`
//! events, and lowered by the sender when the event is delivered or dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::config::{Config, Framing, parse_host_port};
use crate::error::{AddBatchError, AddError, FlushError, NewClientError};
use crate::event::{Amounts, Event, Metadata};
use crate::metrics::{Metrics, Status};
use crate::record::{RecordRef, TAG, rfc3339};
use crate::sender::{Command, Queued, Sender};

/// State shared by the client handle and its sender thread.
pub(crate) struct Shared {
    pub buffered: AtomicUsize,
    pub closed: AtomicBool,
    pub metrics: Metrics,
    /// The disk spool, when configured: accepted events live there until acked.
    pub spool: Option<Arc<spool::Spool>>,
    /// Set while a `Wake` is on its way to the sender, so appends send at most one.
    pub wake_pending: AtomicBool,
}

/// A billing client: cheap to share between threads (`&self` everywhere), usable with or
/// without a tokio runtime. Dropping it closes it (bounded by `close_timeout`).
pub struct Client {
    cfg: Config,
    shared: Arc<Shared>,
    tx: UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Starts a client reporting into the process-wide [`Metrics::global`]. Does not connect:
    /// the sender connects in the background and keeps retrying.
    ///
    /// # Errors
    /// [`NewClientError::InvalidAddress`] if `ingester` is not `host:port`;
    /// [`NewClientError::InvalidConfig`] for zero limits; [`NewClientError::Spawn`] if the
    /// sender thread cannot start.
    pub fn new(config: Config) -> Result<Self, NewClientError> {
        Self::with_metrics(config, Metrics::global())
    }

    /// As [`Client::new`], reporting into `metrics`.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_metrics(config: Config, metrics: Metrics) -> Result<Self, NewClientError> {
        let (host, port) =
            parse_host_port(&config.ingester).map_err(NewClientError::InvalidAddress)?;
        if config.max_buffered_events == 0 {
            return Err(NewClientError::InvalidConfig(
                "max_buffered_events must be at least 1",
            ));
        }
        if config.batch_max_records == 0 || config.max_in_flight == 0 {
            return Err(NewClientError::InvalidConfig(
                "batch_max_records and max_in_flight must be at least 1",
            ));
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
        });
        let (tx, rx) = unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NewClientError::Spawn)?;
        let sender = Sender::new(
            config.clone(),
            host,
            port,
            shared.clone(),
            rx,
            recovered_below,
        );
        let thread = std::thread::Builder::new()
            .name("billing-sender".into())
            .spawn(move || runtime.block_on(sender.run()))
            .map_err(NewClientError::Spawn)?;
        Ok(Self {
            cfg: config,
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues usage for delivery and returns at once (the Go `AddAmounts`).
    ///
    /// One record per non-zero amount is sent, keyed `unique_key:amount_type`; the event counts
    /// `success` only once the ingester acknowledged all of them. Requests with the same key
    /// can be retried: the ingester dedupes them.
    ///
    /// # Errors
    /// [`AddError::BlankKey`], [`AddError::QueueFull`] (counted `buffer_full`) or
    /// [`AddError::Closed`] (counted `stopping`); each returns the event.
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
        if event.unique_key.trim().is_empty() {
            tracing::warn!(instance = %event.internal_instance_id, "billing: event refused: blank unique key");
            return Err(AddError::BlankKey(Box::new(event)));
        }
        let metrics = &self.shared.metrics;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.refuse_closed(event));
        }
        if let Some(spool) = &self.shared.spool {
            return self.add_to_spool(spool, event);
        }
        let limit = self.cfg.max_buffered_events;
        if self.shared.buffered.fetch_add(1, Ordering::AcqRel) >= limit {
            self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
            metrics.track(Status::BufferFull, &event.amounts);
            tracing::warn!(unique_key = %event.unique_key, limit, "billing: event dropped: buffer full");
            return Err(AddError::QueueFull {
                limit,
                event: Box::new(event),
            });
        }
        let queued = self.encode(&event);
        if queued.ends.is_empty() {
            // Only zero amounts: nothing to send, as the Go client sent nothing.
            self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
            metrics.track(Status::Success, &event.amounts);
            return Ok(());
        }
        metrics.unacked(1, &event.amounts);
        metrics.queued(1);
        match self.tx.send(Command::Event(queued)) {
            Ok(()) => Ok(()),
            Err(_) => {
                // The sender stopped after a close that raced with this call.
                metrics.unacked(-1, &event.amounts);
                metrics.queued(-1);
                self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
                Err(self.refuse_closed(event))
            }
        }
    }

    /// The spool path: `Ok` once the spool holds the event as durably as configured; the
    /// sender reads it back from disk.
    fn add_to_spool(&self, spool: &spool::Spool, event: Event) -> Result<(), AddError> {
        let metrics = &self.shared.metrics;
        let Some(payload) = self.spool_payload(&event) else {
            metrics.track(Status::Success, &event.amounts);
            return Ok(());
        };
        match spool.append(&payload) {
            Ok(_) => {
                metrics.unacked(1, &event.amounts);
                metrics.queued(1);
                if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
                    // A closed sender will find the event in the spool on the next start.
                    let _ = self.tx.send(Command::Wake);
                }
                Ok(())
            }
            Err(source @ spool::SpoolError::Full { .. }) => {
                metrics.track(Status::SpoolFull, &event.amounts);
                tracing::warn!(unique_key = %event.unique_key, reason = %source, "billing: event dropped: spool full");
                Err(AddError::SpoolFull {
                    source,
                    event: Box::new(event),
                })
            }
            Err(source) => {
                metrics.track(Status::SpoolError, &event.amounts);
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
    /// `add` waits for its own group commit).
    ///
    /// # Errors
    /// [`AddBatchError`] with every event back when any is blank, the client is closed, or
    /// the buffer or spool cannot take them all; the refused events are counted by status.
    pub fn add_batch(&self, events: Vec<Event>) -> Result<(), AddBatchError> {
        let refuse = |reason: String, retriable: bool, events: Vec<Event>| {
            Err(AddBatchError {
                reason,
                retriable,
                events,
            })
        };
        if let Some(e) = events.iter().find(|e| e.unique_key.trim().is_empty()) {
            tracing::warn!(instance = %e.internal_instance_id, "billing: batch refused: blank unique key");
            return refuse(
                "billing: units uniqueKey cannot be blank".into(),
                false,
                events,
            );
        }
        let metrics = &self.shared.metrics;
        let track_all = |status: Status, events: &[Event]| {
            for e in events {
                metrics.track(status, &e.amounts);
                tracing::warn!(unique_key = %e.unique_key, status = status.as_str(), "billing: event dropped");
            }
        };
        if self.shared.closed.load(Ordering::Acquire) {
            track_all(Status::Stopping, &events);
            return refuse("billing: client is closed".into(), false, events);
        }
        let Some(spool) = &self.shared.spool else {
            let queued: Vec<Queued> = events.iter().map(|e| self.encode(e)).collect();
            let n = queued.iter().filter(|q| !q.ends.is_empty()).count();
            let limit = self.cfg.max_buffered_events;
            if self.shared.buffered.fetch_add(n, Ordering::AcqRel) + n > limit {
                self.shared.buffered.fetch_sub(n, Ordering::AcqRel);
                track_all(Status::BufferFull, &events);
                return refuse(
                    format!("billing: reached billing event buffer limit ({limit})"),
                    true,
                    events,
                );
            }
            for (e, q) in events.iter().zip(queued) {
                if q.ends.is_empty() {
                    metrics.track(Status::Success, &e.amounts);
                    continue;
                }
                metrics.unacked(1, &e.amounts);
                metrics.queued(1);
                if self.tx.send(Command::Event(q)).is_err() {
                    // The sender is gone (closed concurrently): nothing will deliver the rest.
                    metrics.unacked(-1, &e.amounts);
                    metrics.queued(-1);
                    self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
                    metrics.track(Status::Stopping, &e.amounts);
                    tracing::warn!(unique_key = %e.unique_key, "billing: event dropped: client closed");
                }
            }
            return Ok(());
        };
        let payloads: Vec<Option<Vec<u8>>> = events.iter().map(|e| self.spool_payload(e)).collect();
        let slices: Vec<&[u8]> = payloads.iter().flatten().map(Vec::as_slice).collect();
        match spool.append_batch(&slices) {
            Ok(_) => {
                for (e, p) in events.iter().zip(&payloads) {
                    if p.is_none() {
                        metrics.track(Status::Success, &e.amounts);
                    } else {
                        metrics.unacked(1, &e.amounts);
                        metrics.queued(1);
                    }
                }
                if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
                    let _ = self.tx.send(Command::Wake);
                }
                Ok(())
            }
            Err(e) => {
                let status = if matches!(e, spool::SpoolError::Full { .. }) {
                    Status::SpoolFull
                } else {
                    Status::SpoolError
                };
                track_all(status, &events);
                refuse(e.to_string(), e.is_retriable(), events)
            }
        }
    }

    fn refuse_closed(&self, event: Event) -> AddError {
        self.shared.metrics.track(Status::Stopping, &event.amounts);
        tracing::warn!(unique_key = %event.unique_key, "billing: event dropped: client closed");
        AddError::Closed(Box::new(event))
    }

    /// Encodes the event's records as the framing's units: an entry `[time, record]` for the
    /// MessagePack framings, `["billing",seconds,record` for JSON (the sender closes each).
    fn encode(&self, event: &Event) -> Queued {
        let (units, ends) = self.encode_records(event);
        Queued {
            key: event.unique_key.clone(),
            amounts: event.amounts.clone(),
            units,
            ends,
        }
    }

    /// The spool payload of an event (see [`crate::spooled`]), `None` when it has only zero
    /// amounts; written straight from the event, without an intermediate [`Queued`].
    fn spool_payload(&self, event: &Event) -> Option<Vec<u8>> {
        let (units, ends) = self.encode_records(event);
        if ends.is_empty() {
            return None;
        }
        let mut payload = Vec::with_capacity(units.len() + 64);
        crate::spooled::encode(
            &event.unique_key,
            &event.amounts,
            &ends,
            &units,
            &mut payload,
        );
        Some(payload)
    }

    /// The records of an event as the framing's units, and the end offset of each.
    fn encode_records(&self, event: &Event) -> (Vec<u8>, Vec<u32>) {
        let occurred_at = rfc3339(event.occurred_at);
        let now = forward::EventTime::now();
        let mut units = Vec::with_capacity(160 * event.amounts.len());
        let mut ends = Vec::with_capacity(event.amounts.len());
        for (amount_type, &value) in &event.amounts {
            if value == 0 {
                continue;
            }
            let record = RecordRef {
                key: &event.unique_key,
                instance: &event.internal_instance_id,
                amount_type,
                value,
                occurred_at: &occurred_at,
                metadata: &event.metadata,
            };
            if self.cfg.framing == Framing::JsonMessage {
                units.extend_from_slice(b"[\"");
                units.extend_from_slice(TAG.as_bytes());
                units.extend_from_slice(format!("\",{},", now.seconds).as_bytes());
                record.write_json(&mut units);
            } else {
                units.push(0x92);
                forward::encode::write_event_time(&mut units, now);
                record.write_msgpack(&mut units);
            }
            ends.push(units.len() as u32);
        }
        (units, ends)
    }

    /// Waits until every event accepted before this call is delivered or dropped.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when `timeout` passes first (nothing is lost: delivery goes
    /// on); [`FlushError::Closed`] if the client is closed.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        // With a spool, events are numbered by the spool: wait for all below its next number.
        let target = self.shared.spool.as_ref().map(|s| s.stats().next_seq);
        self.tx
            .send(Command::Flush(target, reply))
            .map_err(|_| FlushError::Closed)?;
        match done.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout {
                pending: self.pending(),
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Closed),
        }
    }

    /// Events accepted and not yet delivered or dropped.
    pub fn pending(&self) -> usize {
        match &self.shared.spool {
            Some(spool) => usize::try_from(spool.stats().records).unwrap_or(usize::MAX),
            None => self.shared.buffered.load(Ordering::Acquire),
        }
    }

    /// Stops intake, delivers what is queued within `close_timeout` (the rest is dropped and
    /// counted `stopping`; with a spool it stays on disk for the next start instead), closes
    /// the connection and stops the sender thread. Idempotent.
    pub fn close(&self) {
        self.close_within(self.cfg.close_timeout);
    }

    /// As [`Client::close`] with an explicit bound.
    pub fn close_within(&self, timeout: Duration) {
        self.shared.closed.store(true, Ordering::Release);
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        if self.tx.send(Command::Close(deadline, reply)).is_ok() {
            let _ = done.recv();
        }
        let _ = thread.join();
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
    fn drop(&mut self) {
        self.close();
    }
}
