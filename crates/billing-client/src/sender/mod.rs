//! The background sender: one named thread owning a current-thread tokio runtime, fed by the
//! client through an unbounded channel whose length is bounded by the client's admission
//! counter (`max_buffered_events`).
//!
//! Life of an event: `backlog` (received, not yet in a chunk) -> a [`Batch`] written on one
//! ingester's connection (that link's in-flight set, waiting for acks, at most
//! `max_in_flight` per connection) -> resolved: `success` on ack, or dropped as `stopping` at
//! close. When a connection fails (connect or handshake error, write error or
//! `write_timeout`, the peer closing, or its oldest chunk waiting longer than `ack_timeout`:
//! a half-open connection), every batch in flight on it is counted `retrying` and moved to
//! `unsent`, to be written again, unchanged and with the same chunk id, on whichever
//! connection takes chunks next. The unique keys make that resend safe, also to another
//! ingester: they dedupe by key.
//!
//! Several ingesters (`--billing.ingester a,b,c`), several connections to each
//! (`--billing.connections N`): one [`Link`] per connection (`link.rs`: address, connection,
//! in-flight chunks indexed by chunk id, backoff, log streak, the ingester's metric series).
//! Connection attempts run as tasks whose results come back on one channel tagged with the
//! link and the attempt, so a slow connect never stalls delivery elsewhere; acks are read
//! from every connection at once. Which link takes a chunk and which links are kept connected
//! is the policy's decision (`policy.rs`): failover (one target, the next in order at once on
//! a failure, the primary rechecked in the background while on a standby) or round-robin
//! (every ingester connected, chunks in turn). One ingester behaves as before: connect,
//! deliver, on a failure wait the backoff and reconnect.
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
//!   (an event's records never span batches), on one connection;
//! - a batch is in exactly one place: the backlog's events, `unsent`, or one link's
//!   in-flight set; an ack is counted only from the connection the batch was written on;
//! - every event received is resolved exactly once (success or stopping), and each resolution
//!   releases its admission slot and its gauge amounts;
//! - `flush` completes when every event received before the flush request is resolved:
//!   sequence numbers are given on receipt, so "before" is the channel's order;
//! - at close, delivery goes on (to any ingester) until `close_timeout`; then what is left is
//!   dropped as `stopping` (memory) or left in the spool (spool mode).

mod backoff;
mod batch;
mod conn;
mod handshake;
mod link;
mod policy;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use billing_schema::Amounts;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use crate::config::{Config, IngesterPolicy};
use crate::contract::{Command, Queued, Reply, Shared};
use crate::metrics::{Failure, Status, Tally};
use backoff::Backoff;
use batch::{Batch, Framer, Pending};
use conn::{Ack, OpenError};
use link::{Acked, Link, Opened};
use policy::Policy;

pub(crate) struct Sender {
    cfg: Config,
    /// TLS settings (with a CA configured): TCP connections use TLS.
    tls: Option<forward::ClientTls>,
    /// The handshake's credentials, when the ingester wants one.
    auth: Option<forward::ClientAuth>,
    shared: Arc<Shared>,
    rx: UnboundedReceiver<Command>,
    rx_open: bool,
    next_seq: u64,
    backlog: VecDeque<Pending>,
    /// Batches written before and to be written again (their connection failed).
    unsent: VecDeque<Batch>,
    flushes: Vec<(u64, Reply)>,
    closing: Option<(Instant, Option<Reply>)>,
    /// One per ingester, in the configured order (the first is the failover primary).
    links: Vec<Link>,
    policy: Policy,
    /// Where connection attempts report.
    opened_tx: UnboundedSender<Opened>,
    opened: UnboundedReceiver<Opened>,
    /// The link whose acks are looked at first next time (they take turns).
    ack_start: usize,
    /// Spool mode: where reading from the spool goes on.
    cursor: spool::Cursor,
    /// Spool mode: events below this sequence number were recovered from disk at start and
    /// are not yet in this process's gauges.
    recovered_below: u64,
    spool_stats_at: Instant,
    /// Memory mode: events taken from the channel and not yet in the unacked gauge (counted
    /// in once per burst, before anything can resolve them).
    received: Tally,
    /// While set, the sender lingers until then (see `Shared::lingering`).
    linger_until: Option<Instant>,
}

impl Sender {
    /// A sender delivering to `endpoints` (at least one) as `cfg.ingester_policy` says.
    pub(crate) fn new(
        cfg: Config,
        endpoints: Vec<forward::Endpoint>,
        auth: Option<forward::ClientAuth>,
        tls: Option<forward::ClientTls>,
        shared: Arc<Shared>,
        rx: UnboundedReceiver<Command>,
        recovered_below: u64,
    ) -> Self {
        let ingesters = endpoints.len();
        let per = cfg.connections.max(1);
        // `per` links per ingester, consecutive (see policy.rs); each backs off on its own.
        let links: Vec<Link> = endpoints
            .into_iter()
            .flat_map(|e| std::iter::repeat_n(e, per))
            .map(|e| {
                let backoff = Backoff::new(cfg.retry_delay, cfg.retry_delay_max);
                Link::new(e, backoff, &shared.metrics)
            })
            .collect();
        let policy = Policy::new(cfg.ingester_policy, ingesters, per, cfg.primary_recheck);
        let (opened_tx, opened) = unbounded_channel();
        let sender = Self {
            cfg,
            tls,
            auth,
            shared,
            rx,
            rx_open: true,
            next_seq: 0,
            backlog: VecDeque::new(),
            unsent: VecDeque::new(),
            flushes: Vec::new(),
            closing: None,
            links,
            policy,
            opened_tx,
            opened,
            ack_start: 0,
            cursor: spool::Cursor::new(),
            recovered_below,
            spool_stats_at: Instant::now(),
            received: Tally::default(),
            linger_until: None,
        };
        sender.update_gauges();
        sender
    }

    fn has_work(&self) -> bool {
        !(self.backlog.is_empty()
            && self.unsent.is_empty()
            && self.links.iter().all(|l| l.in_flight() == 0))
    }

    /// How many chunks may be in flight at once over all connections.
    fn capacity(&self) -> usize {
        match self.cfg.ingester_policy {
            IngesterPolicy::RoundRobin => self.cfg.max_in_flight * self.links.len(),
            _ => self.cfg.max_in_flight * self.policy.links_of(0).len(),
        }
    }

    fn min_pending_seq(&self) -> u64 {
        let batches = self
            .links
            .iter()
            .flat_map(Link::batches)
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
        let limit = self.cfg.batch_max_records * self.capacity();
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
                reply.done();
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
            let open_at = self.start_opens();
            self.pump().await;
            self.complete_flushes();
            self.close_idle().await;
            // A write that failed in `pump` put its link in backoff after `open_at` was
            // computed: its reconnect must be on the timer too, or nothing but a new command
            // would wake the sender to make it.
            let open_at = match (open_at, self.start_opens()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let ack_deadline = self
                .links
                .iter()
                .filter_map(Link::oldest_sent)
                .min()
                .map(|sent| sent + self.cfg.ack_timeout);
            let close_deadline = self.closing.as_ref().map(|(d, _)| *d);
            let gauges_at = self
                .shared
                .spool
                .as_ref()
                .map(|_| self.spool_stats_at + Duration::from_secs(1));
            tokio::select! {
                biased;
                (i, ack) = link::next_ack(&mut self.links, self.ack_start) => {
                    self.ack_start = (i + 1) % self.links.len();
                    self.on_ack(i, ack);
                }
                Some(opened) = self.opened.recv() => self.on_opened(opened).await,
                cmd = self.rx.recv(), if self.rx_open && self.linger_until.is_none() => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd);
                        self.take_waiting();
                        self.start_linger();
                    }
                    None => self.on_channel_closed(),
                },
                _ = sleep_until(self.linger_until), if self.linger_until.is_some() => {
                    self.end_linger();
                }
                _ = self.shared.nudge.notified(), if self.linger_until.is_some() => {
                    self.end_linger();
                }
                _ = sleep_until(ack_deadline), if ack_deadline.is_some() && self.cfg.require_ack => {
                    self.on_ack_timeouts();
                }
                _ = sleep_until(open_at), if open_at.is_some() => {}
                _ = sleep_until(close_deadline), if close_deadline.is_some() => {}
                _ = sleep_until(gauges_at), if gauges_at.is_some() => {}
            }
        }
        for link in &mut self.links {
            link.stop().await;
        }
        self.drain_after_stop();
        if let Some((_, Some(reply))) = self.closing.take() {
            reply.done();
        }
        for (_, reply) in self.flushes.drain(..) {
            reply.done();
        }
    }

    /// Takes what else waits in the channel (so that chunks fill up under load), up to what
    /// every chunk in flight can carry; returns whether there was anything.
    fn take_waiting(&mut self) -> bool {
        let mut budget = self.cfg.batch_max_records * self.capacity();
        let mut took = false;
        while budget > 0 {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    self.on_command(cmd);
                    took = true;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    self.on_channel_closed();
                    break;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            }
            budget -= 1;
        }
        self.count_received();
        took
    }

    /// Starts a linger (see `Shared::lingering`), unless lingering is off.
    fn start_linger(&mut self) {
        if self.cfg.linger.is_zero() || !self.rx_open {
            return;
        }
        self.linger_until = Some(Instant::now() + self.cfg.linger);
        self.shared.lingering.store(true, Ordering::Release);
    }

    /// The linger ended (its time passed or the sender was nudged): takes what waits; lingers
    /// again if there was something, else watches the channel again.
    fn end_linger(&mut self) {
        self.shared.lingering.store(false, Ordering::Release);
        self.linger_until = None;
        if self.take_waiting() {
            self.start_linger();
        }
    }

    /// Every handle is gone: nothing more can arrive.
    fn on_channel_closed(&mut self) {
        self.rx_open = false;
        self.linger_until = None;
        if self.closing.is_none() {
            self.closing = Some((Instant::now() + self.cfg.close_timeout, None));
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
                            old.done();
                        }
                    }
                    None => self.closing = Some((deadline, Some(reply))),
                }
            }
        }
    }

    fn push(&mut self, event: Queued) {
        self.received.add(&event.amounts);
        self.backlog.push_back(Pending {
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    /// Counts the events taken from the channel since the last call into the unacked gauge.
    fn count_received(&mut self) {
        if !self.received.is_empty() {
            self.shared
                .metrics
                .unacked_tally(1, &std::mem::take(&mut self.received));
        }
    }

    /// Starts the connection attempts the policy wants now; returns when the next one is due.
    fn start_opens(&mut self) -> Option<Instant> {
        let has_work = self.has_work();
        let target_up = self.policy.current().is_some_and(|g| self.ingester_up(g));
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for i in 0..self.links.len() {
            let link = &self.links[i];
            if link.busy() {
                continue;
            }
            let Some(at) = self
                .policy
                .open_at(i, has_work, target_up, link.next_attempt)
            else {
                continue;
            };
            if at <= now {
                let (timeout, auth) = (self.cfg.connect_timeout, self.auth.clone());
                let (tls, metrics) = (self.tls.clone(), self.shared.metrics.clone());
                let results = self.opened_tx.clone();
                self.links[i].start_open(i, timeout, auth, tls, metrics, results);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    async fn on_opened(&mut self, opened: Opened) {
        let Opened {
            link: i,
            attempt,
            result,
        } = opened;
        if !self.links[i].finish_open(attempt) {
            return;
        }
        // While a standby delivers, an attempt on the primary is a recheck.
        let recheck = i == 0 && self.policy.on_standby();
        match result {
            Ok(conn) => {
                let link = &mut self.links[i];
                link.handshake_failure = None;
                if recheck {
                    link.set_conn(conn);
                    let former = self.policy.back_to_primary();
                    let standby = self.policy.links_of(former).start;
                    tracing::info!(primary = %self.links[0].label, standby = %self.links[standby].label, "billing: the primary ingester answers again; new chunks go back to it");
                } else if self.policy.keeps(i) {
                    tracing::debug!(ingester = %link.label, "billing: connected to the ingester");
                    link.set_conn(conn);
                } else {
                    // No longer wanted (the target moved while it connected).
                    conn.shutdown().await;
                }
                self.update_gauges();
            }
            Err(e) => {
                let (kind, message) = match e {
                    OpenError::Connect(reason) => {
                        (Failure::Connect, format!("cannot connect: {reason}"))
                    }
                    OpenError::Handshake { .. } | OpenError::Tls { .. } => {
                        // A failed handshake (TLS or shared key) is a failed connection
                        // attempt: the events stay queued and go elsewhere or are retried, as
                        // for a connect error.
                        let message = match e {
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
                        let link = &mut self.links[i];
                        if link.handshake_failure.as_deref() != Some(message.as_str()) {
                            tracing::error!(ingester = %link.label, "billing: {message}");
                            link.handshake_failure = Some(message.clone());
                            // That line says it all: the retry is logged at debug level.
                            link.failing = true;
                        }
                        (Failure::Handshake, message)
                    }
                };
                if recheck {
                    let link = &self.links[0];
                    link.metrics.failure(kind);
                    tracing::debug!(ingester = %link.label, reason = %message, "billing: the primary ingester still does not answer");
                    self.policy.recheck_failed(Instant::now());
                } else {
                    self.link_failed(i, kind, &message);
                }
            }
        }
    }

    /// Link `i` failed (its connection or an attempt to make one): its unacked batches go
    /// back to `unsent`, it backs off, and in failover the target moves on.
    fn link_failed(&mut self, i: usize, kind: Failure, reason: &str) {
        let now = Instant::now();
        let link = &mut self.links[i];
        drop(link.take_conn());
        link.metrics.failure(kind);
        *self
            .shared
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(format!("{}: {reason}", link.label));
        let moved = link.take_inflight();
        let retried: usize = moved.iter().map(|b| b.events.len()).sum();
        let retrying = Tally::of(moved.iter().flat_map(|b| &b.events).map(|e| &e.amounts));
        self.shared.track_tally(Status::Retrying, &retrying);
        for b in &moved {
            if let Some(first) = b.first_sent {
                self.shared
                    .metrics
                    .observe_request(false, first.elapsed().as_secs_f64());
            }
        }
        for b in moved.into_iter().rev() {
            self.unsent.push_front(b);
        }
        let delay = link.backoff.next();
        link.next_attempt = now + delay;
        let reason = if retried > 0 {
            format!("{reason}; {retried} unacked events will be resent")
        } else {
            reason.to_string()
        };
        let pending = self.shared.buffered.load(Ordering::Relaxed);
        let new_streak = !link.failing;
        if link.failing {
            tracing::debug!(ingester = %link.label, %reason, pending, retry_in = ?delay, "billing: ingester still unavailable");
        } else {
            tracing::warn!(ingester = %link.label, %reason, pending, retry_in = ?delay, "billing: ingester unavailable; events stay queued and will be resent");
            link.failing = true;
        }
        let next_attempts: Vec<Instant> = self.links.iter().map(|l| l.next_attempt).collect();
        let connected: Vec<bool> = self.links.iter().map(|l| l.conn.is_some()).collect();
        if let Some(to) = self.policy.on_failure(i, now, &next_attempts, &connected) {
            let to = self.policy.links_of(to).start;
            let (from, to) = (&self.links[i], &self.links[to]);
            if to.failing || !new_streak {
                // Every ingester is failing, or this one keeps failing: the per-ingester lines
                // said it once; a line per retry would flood the log.
                tracing::debug!(from = %from.label, to = %to.label, "billing: failing over");
            } else {
                tracing::warn!(from = %from.label, to = %to.label, "billing: failing over to the next ingester");
            }
        }
        self.update_gauges();
    }

    fn on_ack_timeouts(&mut self) {
        let now = Instant::now();
        for i in 0..self.links.len() {
            if self.links[i]
                .oldest_sent()
                .is_some_and(|sent| sent + self.cfg.ack_timeout <= now)
            {
                self.link_failed(i, Failure::AckTimeout, "no ack within the ack timeout");
            }
        }
    }

    /// Failover: closes the connections of former targets once nothing is in flight on them.
    async fn close_idle(&mut self) {
        for i in 0..self.links.len() {
            let link = &mut self.links[i];
            if link.conn.is_some() && link.in_flight() == 0 && !self.policy.keeps(i) {
                tracing::debug!(ingester = %link.label, "billing: connection to a former target closed");
                if let Some(conn) = link.take_conn() {
                    conn.shutdown().await;
                }
                self.update_gauges();
            }
        }
    }

    /// Whether any connection to ingester `g` is up.
    fn ingester_up(&self, g: usize) -> bool {
        self.policy
            .links_of(g)
            .any(|i| self.links[i].conn.is_some())
    }

    /// Sets each ingester's `connected` (its links that are up) and `active` gauges; they are
    /// the ingester's, shared by its links, so they are set once per ingester.
    fn update_gauges(&self) {
        for g in 0..self.policy.ingesters() {
            let links = self.policy.links_of(g);
            let metrics = &self.links[links.start].metrics;
            let up = links.filter(|&j| self.links[j].conn.is_some()).count();
            metrics.connected(up);
            metrics.active(self.policy.is_active(g, up > 0));
        }
    }

    /// Writes what may be written: batches to resend first, then new ones from the backlog,
    /// each on the link the policy picks.
    async fn pump(&mut self) {
        let max = self.cfg.max_in_flight;
        loop {
            if self.unsent.is_empty() && self.backlog.is_empty() {
                return;
            }
            let links = &self.links;
            let Some(i) = self
                .policy
                .pick(|i| links[i].conn.is_some() && links[i].in_flight() < max)
            else {
                return;
            };
            let batch = match self.unsent.pop_front() {
                Some(b) => b,
                None => self.build_batch(),
            };
            self.write_batch(i, batch).await;
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

    async fn write_batch(&mut self, i: usize, mut batch: Batch) {
        let link = &mut self.links[i];
        let conn = link.conn.as_mut().expect("pump checks the connection");
        let write = conn.write(&batch.frames, self.cfg.write_timeout).await;
        let now = Instant::now();
        batch.sent_at = now;
        batch.first_sent.get_or_insert(now);
        batch.acked = 0;
        if let Err(reason) = write {
            link.track(batch);
            self.link_failed(i, Failure::Write, &reason);
            return;
        }
        link.metrics.chunk_sent();
        if self.cfg.require_ack {
            link.track(batch);
        } else {
            self.resolve(batch, Status::Success);
        }
    }

    fn on_ack(&mut self, i: usize, ack: Ack) {
        let id = match ack {
            Ok(id) => id,
            Err(reason) => return self.link_failed(i, Failure::Closed, &reason),
        };
        let link = &mut self.links[i];
        let batch = match link.ack(&id) {
            Acked::Complete(batch) => batch,
            Acked::Partial => return,
            Acked::Unknown => {
                tracing::debug!(ingester = %link.label, chunk = %String::from_utf8_lossy(&id), "billing: ack for an unknown chunk ignored");
                return;
            }
        };
        link.metrics.chunk_acked();
        link.backoff.reset();
        if link.failing {
            tracing::info!(ingester = %link.label, "billing: ingester reachable again");
            link.failing = false;
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
        self.resolve_events(batch.events.iter().map(|e| (&e.key, &e.amounts)), status);
    }

    /// Resolves events (memory mode: releases their admission slots), counting them once per
    /// call.
    fn resolve_events<'a>(
        &mut self,
        events: impl IntoIterator<Item = (&'a String, &'a Amounts)>,
        status: Status,
    ) {
        self.count_received();
        let mut tally = Tally::default();
        for (key, amounts) in events {
            if status != Status::Success {
                tracing::warn!(unique_key = %key, status = status.as_str(), "billing: event dropped");
            }
            tally.add(amounts);
        }
        self.shared.track_tally(status, &tally);
        self.shared.metrics.unacked_tally(-1, &tally);
        self.shared
            .metrics
            .queued(-i64::try_from(tally.events).unwrap_or(i64::MAX));
        if self.shared.spool.is_none() {
            self.shared
                .buffered
                .fetch_sub(tally.events as usize, Ordering::AcqRel);
        }
    }

    fn drop_everything(&mut self, reason: &str) {
        if self.shared.spool.is_some() {
            return self.leave_in_spool(reason);
        }
        let mut batches: Vec<Batch> = self
            .links
            .iter_mut()
            .flat_map(Link::take_inflight)
            .collect();
        batches.extend(self.unsent.drain(..));
        let mut dropped = 0usize;
        for b in &batches {
            dropped += b.events.len();
            self.resolve_events(
                b.events.iter().map(|e| (&e.key, &e.amounts)),
                Status::Stopping,
            );
        }
        let backlog = std::mem::take(&mut self.backlog);
        dropped += backlog.len();
        self.resolve_events(
            backlog.iter().map(|p| (&p.event.key, &p.event.amounts)),
            Status::Stopping,
        );
        tracing::warn!(dropped, %reason, "billing: events dropped at close");
    }
}

impl Sender {
    /// Spool mode at close: undelivered events are not dropped, they stay on disk for the next
    /// client on this directory; they only leave this process's gauges.
    fn leave_in_spool(&mut self, reason: &str) {
        let metrics = self.shared.metrics.clone();
        let mut batches: Vec<Batch> = self
            .links
            .iter_mut()
            .flat_map(Link::take_inflight)
            .collect();
        batches.extend(self.unsent.drain(..));
        let mut tally = Tally::of(batches.iter().flat_map(|b| &b.events).map(|e| &e.amounts));
        for p in self.backlog.drain(..) {
            tally.add(&p.event.amounts);
        }
        metrics.unacked_tally(-1, &tally);
        metrics.queued(-i64::try_from(tally.events).unwrap_or(i64::MAX));
        let left = tally.events;
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
                    reply.done();
                    continue;
                }
                Command::Wake => continue,
            };
            dropped += events.len();
            for e in &events {
                self.received.add(&e.amounts);
            }
            self.resolve_events(
                events.iter().map(|e| (&e.key, &e.amounts)),
                Status::Stopping,
            );
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
