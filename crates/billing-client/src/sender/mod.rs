//! The background sender: one named thread owning a current-thread tokio runtime, fed by the
//! client through an unbounded channel whose length is bounded by the client's admission
//! counter (`max_buffered_events`).
//!
//! Life of an event: `backlog` (received, not yet in a chunk) -> a [`Batch`] written on the
//! connection (`inflight`, waiting for acks, at most `max_in_flight`) -> resolved: `success` on
//! ack, or dropped as `stopping` at close. When the connection fails (connect error, write
//! error, the peer closing, or the oldest chunk waiting longer than `ack_timeout`), every
//! inflight batch is counted `retrying` and moved to `unsent`, to be written again, unchanged
//! and with the same chunk id, on the next connection after a backoff delay. The unique keys
//! make that resend safe.
//!
//! With a shared key, a connection counts as made only once its handshake passed
//! (`handshake.rs`); a failed handshake is a failed connection attempt (counted in
//! `billing_client_handshake_failures_total`, logged once per streak, retried after the
//! backoff) and never drops an event. The same holds for TLS (`forward::connect`): a failed
//! TLS session is counted in `billing_client_tls_failures_total{reason}` and logged once per
//! streak, as one line naming the check that failed.
//!
//! Invariants:
//! - an event is counted `success` only when every chunk carrying its records was acked
//!   (an event's records never span batches);
//! - every event received is resolved exactly once (success or stopping), and each resolution
//!   releases its admission slot and its gauge amounts;
//! - `flush` completes when every event received before the flush request is resolved:
//!   sequence numbers are given on receipt, so "before" is the channel's order.

mod backoff;
mod batch;
mod conn;
mod handshake;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use billing_schema::Amounts;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::config::Config;
use crate::contract::{Command, Queued, Shared};
use crate::metrics::Status;
use backoff::Backoff;
use batch::{Batch, Framer, Pending};
use conn::{Conn, OpenError, next_ack};

pub(crate) struct Sender {
    cfg: Config,
    endpoint: forward::Endpoint,
    /// TLS settings (with a CA configured): TCP connections use TLS.
    tls: Option<forward::ClientTls>,
    /// The handshake's credentials, when the ingester wants one.
    auth: Option<forward::ClientAuth>,
    /// The last handshake failure logged, so that a streak of the same one logs once.
    handshake_failure: Option<String>,
    shared: Arc<Shared>,
    rx: UnboundedReceiver<Command>,
    rx_open: bool,
    next_seq: u64,
    backlog: VecDeque<Pending>,
    inflight: VecDeque<Batch>,
    unsent: VecDeque<Batch>,
    flushes: Vec<(u64, SyncSender<()>)>,
    closing: Option<(Instant, Option<SyncSender<()>>)>,
    conn: Option<Conn>,
    backoff: Backoff,
    next_attempt: Instant,
    failing: bool,
    /// Spool mode: where reading from the spool goes on.
    cursor: spool::Cursor,
    /// Spool mode: events below this sequence number were recovered from disk at start and
    /// are not yet in this process's gauges.
    recovered_below: u64,
    spool_stats_at: Instant,
}

impl Sender {
    pub(crate) fn new(
        cfg: Config,
        endpoint: forward::Endpoint,
        auth: Option<forward::ClientAuth>,
        tls: Option<forward::ClientTls>,
        shared: Arc<Shared>,
        rx: UnboundedReceiver<Command>,
        recovered_below: u64,
    ) -> Self {
        let backoff = Backoff::new(cfg.retry_delay, cfg.retry_delay_max);
        Self {
            cfg,
            endpoint,
            tls,
            auth,
            handshake_failure: None,
            shared,
            rx,
            rx_open: true,
            next_seq: 0,
            backlog: VecDeque::new(),
            inflight: VecDeque::new(),
            unsent: VecDeque::new(),
            flushes: Vec::new(),
            closing: None,
            conn: None,
            backoff,
            next_attempt: Instant::now(),
            failing: false,
            cursor: spool::Cursor::new(),
            recovered_below,
            spool_stats_at: Instant::now(),
        }
    }

    fn has_work(&self) -> bool {
        !(self.backlog.is_empty() && self.inflight.is_empty() && self.unsent.is_empty())
    }

    fn min_pending_seq(&self) -> u64 {
        let batches = self
            .inflight
            .iter()
            .chain(self.unsent.iter())
            .map(|b| b.first_seq);
        let min = batches
            .chain(self.backlog.front().map(|p| p.seq))
            .min()
            .unwrap_or(u64::MAX);
        // Spool mode: what the cursor has not read yet is pending too.
        match &self.shared.spool {
            Some(_) => min.min(self.cursor.next_seq()),
            None => min,
        }
    }

    /// Spool mode: reads events from the spool until the backlog holds enough for every
    /// chunk that may be in flight, so memory stays bounded however long the backlog on disk.
    fn refill(&mut self) {
        let Some(spool) = self.shared.spool.clone() else {
            return;
        };
        let limit = self.cfg.batch_max_records * self.cfg.max_in_flight;
        let metrics = &self.shared.metrics;
        while self.backlog.len() < limit {
            let records = match spool.read_from(&mut self.cursor, limit - self.backlog.len()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(reason = %e, "billing: cannot read the spool; retrying later");
                    return;
                }
            };
            if records.is_empty() {
                return;
            }
            for (seq, payload) in records {
                match crate::spooled::decode(&payload) {
                    Ok(event) => {
                        if seq < self.recovered_below {
                            metrics.unacked(1, &event.amounts);
                            metrics.queued(1);
                        }
                        self.backlog.push_back(Pending { seq, event });
                    }
                    Err(reason) => {
                        // Checksummed but not an event this version can read: keep it on disk
                        // for inspection rather than lose it; acking would delete it.
                        tracing::error!(seq, %reason, "billing: spool record is not a readable event; skipped");
                    }
                }
            }
        }
    }

    fn update_spool_gauges(&mut self) {
        if let Some(spool) = &self.shared.spool
            && self.spool_stats_at.elapsed() >= Duration::from_secs(1)
        {
            self.shared.metrics.spool(&spool.stats());
            self.spool_stats_at = Instant::now();
        }
    }

    fn complete_flushes(&mut self) {
        let min = self.min_pending_seq();
        self.flushes.retain(|(target, reply)| {
            let done = min >= *target;
            if done {
                let _ = reply.try_send(());
            }
            !done
        });
    }

    pub(crate) async fn run(mut self) {
        if let Some(spool) = &self.shared.spool {
            self.shared.metrics.spool(&spool.stats());
        }
        loop {
            self.refill();
            self.update_spool_gauges();
            self.complete_flushes();
            if let Some((deadline, _)) = &self.closing {
                if !self.has_work() && !self.rx_open {
                    break;
                }
                if !self.has_work() {
                    // Drain whatever raced with the close request, then stop.
                    match self.rx.try_recv() {
                        Ok(cmd) => {
                            self.on_command(cmd);
                            continue;
                        }
                        Err(_) => break,
                    }
                }
                if Instant::now() >= *deadline {
                    self.drop_everything("close timeout reached before delivery");
                    break;
                }
            }
            if self.conn.is_none() && self.has_work() && Instant::now() >= self.next_attempt {
                self.connect().await;
            }
            if self.conn.is_some() {
                self.pump().await;
                self.complete_flushes();
            }
            let ack_deadline = self
                .inflight
                .front()
                .map(|b| b.sent_at + self.cfg.ack_timeout);
            let close_deadline = self.closing.as_ref().map(|(d, _)| *d);
            let retry_at = self.next_attempt;
            let waiting_to_retry = self.conn.is_none() && self.has_work();
            let gauges_at = self
                .shared
                .spool
                .as_ref()
                .map(|_| self.spool_stats_at + Duration::from_secs(1));
            tokio::select! {
                biased;
                ack = next_ack(&mut self.conn) => self.on_ack(ack),
                cmd = self.rx.recv(), if self.rx_open => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd);
                        // Take what else is waiting so that chunks fill up under load.
                        let mut budget = self.cfg.batch_max_records * self.cfg.max_in_flight;
                        while budget > 0 {
                            match self.rx.try_recv() {
                                Ok(cmd) => self.on_command(cmd),
                                Err(_) => break,
                            }
                            budget -= 1;
                        }
                    }
                    None => {
                        self.rx_open = false;
                        if self.closing.is_none() {
                            self.closing = Some((Instant::now() + self.cfg.close_timeout, None));
                        }
                    }
                },
                _ = sleep_until(ack_deadline), if ack_deadline.is_some() && self.cfg.require_ack => {
                    self.fail_connection("no ack within the ack timeout");
                }
                _ = tokio::time::sleep_until(retry_at), if waiting_to_retry => {}
                _ = sleep_until(close_deadline), if close_deadline.is_some() => {}
                _ = sleep_until(gauges_at), if gauges_at.is_some() => {}
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.shutdown().await;
        }
        self.drain_after_stop();
        if let Some((_, Some(reply))) = self.closing.take() {
            let _ = reply.try_send(());
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.try_send(());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Event(event) => self.push(event),
            Command::Events(events) => events.into_iter().for_each(|e| self.push(e)),
            Command::Flush(target, reply) => {
                self.flushes.push((target.unwrap_or(self.next_seq), reply))
            }
            Command::Wake => self.shared.wake_pending.store(false, Ordering::Release),
            Command::Close(deadline, reply) => {
                let deadline = Instant::from_std(deadline);
                match &mut self.closing {
                    Some((d, r)) => {
                        *d = (*d).min(deadline);
                        if let Some(old) = r.replace(reply) {
                            let _ = old.try_send(());
                        }
                    }
                    None => self.closing = Some((deadline, Some(reply))),
                }
            }
        }
    }

    fn push(&mut self, event: Queued) {
        self.backlog.push_back(Pending {
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    async fn connect(&mut self) {
        let opened = Conn::open(
            &self.endpoint,
            self.tls.as_ref(),
            self.cfg.connect_timeout,
            self.auth.as_ref(),
            &self.shared.metrics,
        )
        .await;
        match opened {
            Ok(conn) => {
                tracing::debug!(ingester = %self.cfg.ingester, "billing: connected to the ingester");
                self.handshake_failure = None;
                self.conn = Some(conn);
            }
            Err(OpenError::Connect(reason)) => {
                self.schedule_retry(&format!("cannot connect: {reason}"));
            }
            Err(failed @ (OpenError::Handshake { .. } | OpenError::Tls { .. })) => {
                // A failed handshake (TLS or shared key) is a failed connection attempt: the
                // events stay queued and the attempt is retried after the backoff, as for a
                // connect error.
                let message = match failed {
                    OpenError::Handshake { kind, message } => {
                        self.shared.metrics.handshake_failure(kind);
                        message
                    }
                    OpenError::Tls { reason, message } => {
                        self.shared.metrics.tls_failure(reason);
                        message
                    }
                    OpenError::Connect(message) => message,
                };
                if self.handshake_failure.as_deref() != Some(message.as_str()) {
                    tracing::error!(ingester = %self.cfg.ingester, "billing: {message}");
                    self.handshake_failure = Some(message.clone());
                    // That line says it all: the retry is logged at debug level.
                    self.failing = true;
                }
                self.schedule_retry(&message);
            }
        }
    }

    fn schedule_retry(&mut self, reason: &str) {
        let delay = self.backoff.next();
        self.next_attempt = Instant::now() + delay;
        let pending = self.shared.buffered.load(Ordering::Relaxed);
        if self.failing {
            tracing::debug!(ingester = %self.cfg.ingester, %reason, pending, retry_in = ?delay, "billing: ingester still unavailable");
        } else {
            tracing::warn!(ingester = %self.cfg.ingester, %reason, pending, retry_in = ?delay, "billing: ingester unavailable; events stay queued and will be resent");
            self.failing = true;
        }
    }

    /// Writes what may be written: batches to resend first, then new ones from the backlog.
    async fn pump(&mut self) {
        while self.conn.is_some() && self.inflight.len() < self.cfg.max_in_flight {
            let batch = match self.unsent.pop_front() {
                Some(b) => b,
                None if !self.backlog.is_empty() => self.build_batch(),
                None => return,
            };
            self.write_batch(batch).await;
        }
    }

    fn build_batch(&mut self) -> Batch {
        let framer = Framer {
            framing: self.cfg.framing,
            require_ack: self.cfg.require_ack,
            max_records: self.cfg.batch_max_records,
        };
        framer.build(&mut self.backlog)
    }

    async fn write_batch(&mut self, mut batch: Batch) {
        let conn = self.conn.as_mut().expect("pump checks the connection");
        let write = conn.write(&batch.frames, self.cfg.ack_timeout).await;
        let now = Instant::now();
        batch.sent_at = now;
        batch.first_sent.get_or_insert(now);
        batch.acked = 0;
        if let Err(reason) = write {
            self.inflight.push_back(batch);
            self.fail_connection(&reason);
            return;
        }
        if self.cfg.require_ack {
            self.inflight.push_back(batch);
        } else {
            self.resolve(batch, Status::Success);
        }
    }

    fn on_ack(&mut self, ack: Result<Vec<u8>, String>) {
        let id = match ack {
            Ok(id) => id,
            Err(reason) => return self.fail_connection(&reason),
        };
        let Some(pos) = self
            .inflight
            .iter()
            .position(|b| b.chunks.iter().any(|c| c.as_bytes() == id.as_slice()))
        else {
            tracing::debug!(chunk = %String::from_utf8_lossy(&id), "billing: ack for an unknown chunk ignored");
            return;
        };
        let batch = &mut self.inflight[pos];
        batch.acked += 1;
        if batch.acked < batch.chunks.len() {
            return;
        }
        let batch = self.inflight.remove(pos).expect("position exists");
        self.backoff.reset();
        if self.failing {
            tracing::info!(ingester = %self.cfg.ingester, "billing: ingester reachable again");
            self.failing = false;
        }
        self.resolve(batch, Status::Success);
    }

    fn resolve(&mut self, batch: Batch, status: Status) {
        let metrics = &self.shared.metrics;
        if let Some(first) = batch.first_sent {
            metrics.observe_request(status == Status::Success, first.elapsed().as_secs_f64());
        }
        if let Some(spool) = &self.shared.spool
            && status == Status::Success
        {
            let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
            if let Err(e) = spool.ack(&seqs) {
                // Not fatal: the events are delivered; at worst they are sent again after a
                // restart, and the ingester dedupes them.
                tracing::warn!(reason = %e, "billing: spool ack not recorded");
            }
        }
        for e in &batch.events {
            self.resolve_event(&e.key, &e.amounts, status);
        }
    }

    fn resolve_event(&self, key: &str, amounts: &Amounts, status: Status) {
        let metrics = &self.shared.metrics;
        if status != Status::Success {
            tracing::warn!(unique_key = %key, status = status.as_str(), "billing: event dropped");
        }
        metrics.track(status, amounts);
        metrics.unacked(-1, amounts);
        metrics.queued(-1);
        if self.shared.spool.is_none() {
            self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn fail_connection(&mut self, reason: &str) {
        self.conn = None;
        let retried: usize = self.inflight.iter().map(|b| b.events.len()).sum();
        for b in &self.inflight {
            for e in &b.events {
                self.shared.metrics.track(Status::Retrying, &e.amounts);
            }
            if let Some(first) = b.first_sent {
                self.shared
                    .metrics
                    .observe_request(false, first.elapsed().as_secs_f64());
            }
        }
        while let Some(b) = self.inflight.pop_back() {
            self.unsent.push_front(b);
        }
        self.schedule_retry(&format!(
            "{reason}; {retried} unacked events will be resent"
        ));
    }

    fn drop_everything(&mut self, reason: &str) {
        if self.shared.spool.is_some() {
            return self.leave_in_spool(reason);
        }
        let batches: Vec<Batch> = self
            .inflight
            .drain(..)
            .chain(self.unsent.drain(..))
            .collect();
        let mut dropped = 0usize;
        for b in batches {
            dropped += b.events.len();
            for e in &b.events {
                self.resolve_event(&e.key, &e.amounts, Status::Stopping);
            }
        }
        while let Some(p) = self.backlog.pop_front() {
            dropped += 1;
            self.resolve_event(&p.event.key, &p.event.amounts, Status::Stopping);
        }
        tracing::warn!(dropped, %reason, "billing: events dropped at close");
    }
}

impl Sender {
    /// Spool mode at close: undelivered events are not dropped, they stay on disk for the next
    /// client on this directory; they only leave this process's gauges.
    fn leave_in_spool(&mut self, reason: &str) {
        let metrics = self.shared.metrics.clone();
        let mut left = 0usize;
        for b in self.inflight.drain(..).chain(self.unsent.drain(..)) {
            for e in &b.events {
                metrics.unacked(-1, &e.amounts);
                metrics.queued(-1);
                left += 1;
            }
        }
        for p in self.backlog.drain(..) {
            metrics.unacked(-1, &p.event.amounts);
            metrics.queued(-1);
            left += 1;
        }
        tracing::info!(events = left, %reason, "billing: undelivered events stay in the spool for the next start");
    }

    /// After the loop: no event may stay in the channel unresolved. Closing the receiver makes
    /// every later `send` fail (the handle then hands the event back), and what was sent
    /// before is resolved here as `stopping` (memory mode; spool events stay on disk).
    fn drain_after_stop(&mut self) {
        self.rx.close();
        let mut dropped = 0usize;
        while let Ok(cmd) = self.rx.try_recv() {
            let events = match cmd {
                Command::Event(e) => vec![e],
                Command::Events(es) => es,
                Command::Flush(_, reply) | Command::Close(_, reply) => {
                    let _ = reply.try_send(());
                    continue;
                }
                Command::Wake => continue,
            };
            for e in events {
                dropped += 1;
                self.resolve_event(&e.key, &e.amounts, Status::Stopping);
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "billing: events that raced with the sender's stop dropped"
            );
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
