//! One ingester of the `--billing.ingester` list as the sender sees it: its address, its
//! connection (or the attempt to open one, run as a task so that a slow connect to one
//! ingester never stalls delivery to another), the chunks written on that connection and not
//! yet acked, its own retry backoff, its log streak and its metric series.
//!
//! Invariants: a batch is in at most one link's in-flight set (or in the sender's `unsent`
//! queue, never both); every chunk id of an in-flight batch is indexed once, so an ack is found
//! in O(1) and a duplicate or unknown ack finds nothing and is ignored; dropping the
//! connection drops its ack reader, so no ack of a dead connection is ever seen.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use forward::Endpoint;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::batch::Batch;
use super::conn::{Ack, Conn, OpenError, next_ack as next_conn_ack};
use crate::metrics::{IngesterMetrics, Metrics};

/// The result of a connection attempt, tagged with the link and the attempt it answers.
#[derive(Debug)]
pub(super) struct Opened {
    pub link: usize,
    pub attempt: u64,
    pub result: Result<Conn, OpenError>,
}

/// What an ack did to a link's in-flight chunks.
#[derive(Debug)]
pub(super) enum Acked {
    /// No in-flight chunk has this id (a duplicate, or a chunk already moved away).
    Unknown,
    /// One chunk of a batch that has others still unacked.
    Partial,
    /// The last chunk of a batch: the batch, out of the in-flight set.
    Complete(Batch),
}

/// One ingester.
#[derive(Debug)]
pub(super) struct Link {
    pub endpoint: Endpoint,
    /// The endpoint as printed: logs and the metrics' `ingester` label.
    pub label: String,
    pub conn: Option<Conn>,
    /// The connection attempt under way, if any.
    connecting: Option<JoinHandle<()>>,
    /// Number of the last attempt started; the result of any other one is stale.
    attempt: u64,
    /// Batches written on `conn` and not yet acked, by write order (the first is the oldest,
    /// whose age the ack timeout watches).
    inflight: BTreeMap<u64, Batch>,
    /// Chunk id -> key of its batch in `inflight`.
    chunks: HashMap<Vec<u8>, u64>,
    writes: u64,
    pub backoff: Backoff,
    /// No connection attempt before this (after a failure).
    pub next_attempt: Instant,
    /// In a streak of failures (logged once at warn, then at debug).
    pub failing: bool,
    /// The last handshake failure logged, so that a streak of the same one logs once.
    pub handshake_failure: Option<String>,
    pub metrics: IngesterMetrics,
}

impl Link {
    pub(super) fn new(endpoint: Endpoint, backoff: Backoff, metrics: &Metrics) -> Self {
        let label = endpoint.to_string();
        let metrics = metrics.ingester(&label);
        metrics.connected(0);
        metrics.active(false);
        Link {
            endpoint,
            label,
            conn: None,
            connecting: None,
            attempt: 0,
            inflight: BTreeMap::new(),
            chunks: HashMap::new(),
            writes: 0,
            backoff,
            next_attempt: Instant::now(),
            failing: false,
            handshake_failure: None,
            metrics,
        }
    }

    /// Whether a connection is up or being made.
    pub(super) fn busy(&self) -> bool {
        self.conn.is_some() || self.connecting.is_some()
    }

    /// Starts a connection attempt as a task; its [`Opened`] arrives on `results`.
    pub(super) fn start_open(
        &mut self,
        index: usize,
        timeout: Duration,
        auth: Option<forward::ClientAuth>,
        tls: Option<forward::ClientTls>,
        metrics: crate::metrics::Metrics,
        results: UnboundedSender<Opened>,
    ) {
        self.attempt += 1;
        let attempt = self.attempt;
        let endpoint = self.endpoint.clone();
        self.connecting = Some(tokio::spawn(async move {
            let result =
                Conn::open(&endpoint, tls.as_ref(), timeout, auth.as_ref(), &metrics).await;
            let _ = results.send(Opened {
                link: index,
                attempt,
                result,
            });
        }));
    }

    /// Takes an attempt's result: `false` (and the result is to be dropped) when it is not the
    /// attempt under way.
    pub(super) fn finish_open(&mut self, attempt: u64) -> bool {
        if self.connecting.is_none() || attempt != self.attempt {
            return false;
        }
        self.connecting = None;
        true
    }

    pub(super) fn set_conn(&mut self, conn: Conn) {
        self.conn = Some(conn);
    }

    /// Takes the connection away (to close it, or dropped: failed). The ingester's gauges
    /// are the sender's to update (they count its links).
    pub(super) fn take_conn(&mut self) -> Option<Conn> {
        self.conn.take()
    }

    /// Stops whatever runs for this link, at the sender's end.
    pub(super) async fn stop(&mut self) {
        if let Some(task) = self.connecting.take() {
            task.abort();
        }
        if let Some(conn) = self.take_conn() {
            conn.shutdown().await;
        }
        self.metrics.connected(0);
        self.metrics.active(false);
    }

    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// When the oldest unacked batch was written.
    pub(super) fn oldest_sent(&self) -> Option<Instant> {
        self.inflight.first_key_value().map(|(_, b)| b.sent_at)
    }

    pub(super) fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.inflight.values()
    }

    /// Records a batch written on the connection, to wait for its acks.
    pub(super) fn track(&mut self, batch: Batch) {
        let key = self.writes;
        self.writes += 1;
        for chunk in &batch.chunks {
            self.chunks.insert(chunk.as_bytes().to_vec(), key);
        }
        self.inflight.insert(key, batch);
    }

    /// Counts an ack of chunk `id`.
    pub(super) fn ack(&mut self, id: &[u8]) -> Acked {
        // Removed on its first ack: a second ack of the same chunk finds nothing.
        let Some(key) = self.chunks.remove(id) else {
            return Acked::Unknown;
        };
        let Some(batch) = self.inflight.get_mut(&key) else {
            return Acked::Unknown;
        };
        batch.acked += 1;
        if batch.acked < batch.chunks.len() {
            return Acked::Partial;
        }
        match self.inflight.remove(&key) {
            Some(batch) => Acked::Complete(batch),
            None => Acked::Unknown,
        }
    }

    /// Every unacked batch, oldest first, out of this link.
    pub(super) fn take_inflight(&mut self) -> Vec<Batch> {
        self.chunks.clear();
        std::mem::take(&mut self.inflight).into_values().collect()
    }
}

/// The next ack of any connected link, as (link index, ack), or never when none is connected.
/// Links are polled from `start` on so that a busy one cannot starve the others.
pub(super) async fn next_ack(links: &mut [Link], start: usize) -> (usize, Ack) {
    std::future::poll_fn(|cx| {
        let n = links.len();
        for k in 0..n {
            let i = (start + k) % n;
            // A connection's next ack is a channel receive, which is cancel-safe: dropping
            // the future after one poll loses nothing and keeps the waker registered.
            let ack = std::pin::pin!(next_conn_ack(&mut links[i].conn));
            if let Poll::Ready(ack) = ack.poll(cx) {
                return Poll::Ready((i, ack));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(chunks: &[&str]) -> Batch {
        Batch {
            first_seq: 0,
            events: Vec::new(),
            frames: Vec::new(),
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
            acked: 0,
            first_sent: None,
            sent_at: Instant::now(),
        }
    }

    fn link() -> Link {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        Link::new("127.0.0.1:1".parse().unwrap(), backoff, &Metrics::new())
    }

    #[test]
    fn a_batch_completes_on_its_last_chunk_and_repeated_or_unknown_acks_are_ignored() {
        let mut l = link();
        l.track(batch(&["a", "b"]));
        l.track(batch(&["c"]));
        assert_eq!(l.in_flight(), 2);
        assert!(matches!(l.ack(b"a"), Acked::Partial));
        assert!(matches!(l.ack(b"a"), Acked::Unknown), "a repeated ack");
        assert!(matches!(l.ack(b"zz"), Acked::Unknown));
        assert!(matches!(l.ack(b"c"), Acked::Complete(b) if b.chunks == ["c"]));
        assert!(matches!(l.ack(b"b"), Acked::Complete(b) if b.chunks.len() == 2));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn taking_the_inflight_keeps_write_order_and_forgets_the_chunk_ids() {
        let mut l = link();
        l.track(batch(&["a"]));
        l.track(batch(&["b"]));
        let taken: Vec<_> = l.take_inflight().into_iter().map(|b| b.chunks).collect();
        assert_eq!(taken, [["a"], ["b"]]);
        assert!(matches!(l.ack(b"a"), Acked::Unknown));
        assert!(l.oldest_sent().is_none());
    }
}
