//! What the proxy did, counted as it happens, so that a test can wait until a fault has
//! bitten (`acks_dropped > 0`) and assert that it did.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the proxy's counters (all since it started; `connections_open` is a gauge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Client connections being proxied now (or waiting out a partition).
    pub connections_open: u64,
    /// Connections closed by the proxy on [`crate::FaultProxy::cut_all`] or a mid-frame cut.
    pub connections_cut: u64,
    /// Connections reset (RST) on [`crate::FaultProxy::reset_all`].
    pub connections_reset: u64,
    /// Connections refused (accepted and reset at once) while `refuse_connections` was on.
    pub connections_refused: u64,
    /// Connections closed because the upstream server could not be reached.
    pub upstream_failures: u64,
    /// Bytes written to the upstream server (duplicates included).
    pub bytes_to_server: u64,
    /// Bytes written to clients.
    pub bytes_to_client: u64,
    /// Complete MessagePack values (frames) read from clients.
    pub frames_to_server: u64,
    /// Frames written a second time (`duplicate_frames`).
    pub frames_duplicated: u64,
    /// Complete MessagePack values (acks) read from the upstream server.
    pub acks_from_server: u64,
    /// Acks thrown away (`drop_acks`).
    pub acks_dropped: u64,
    /// Acks held back by `delay_acks`.
    pub acks_delayed: u64,
    /// Acks released in a reversed group of two or more (`reorder_acks`).
    pub acks_reordered: u64,
    /// Mid-frame cuts done ([`crate::FaultProxy::cut_mid_frame`]); each is also in
    /// `connections_cut`.
    pub frames_cut: u64,
    /// Bytes written one at a time (`trickle`).
    pub bytes_trickled: u64,
    /// Times a connection found the partition on and waited (before connecting upstream,
    /// reading or writing).
    pub partition_stalls: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_cut: AtomicU64,
    pub connections_reset: AtomicU64,
    pub connections_refused: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub bytes_to_server: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub frames_to_server: AtomicU64,
    pub frames_duplicated: AtomicU64,
    pub acks_from_server: AtomicU64,
    pub acks_dropped: AtomicU64,
    pub acks_delayed: AtomicU64,
    pub acks_reordered: AtomicU64,
    pub frames_cut: AtomicU64,
    pub bytes_trickled: AtomicU64,
    pub partition_stalls: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections_accepted: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
            connections_cut: get(&self.connections_cut),
            connections_reset: get(&self.connections_reset),
            connections_refused: get(&self.connections_refused),
            upstream_failures: get(&self.upstream_failures),
            bytes_to_server: get(&self.bytes_to_server),
            bytes_to_client: get(&self.bytes_to_client),
            frames_to_server: get(&self.frames_to_server),
            frames_duplicated: get(&self.frames_duplicated),
            acks_from_server: get(&self.acks_from_server),
            acks_dropped: get(&self.acks_dropped),
            acks_delayed: get(&self.acks_delayed),
            acks_reordered: get(&self.acks_reordered),
            frames_cut: get(&self.frames_cut),
            bytes_trickled: get(&self.bytes_trickled),
            partition_stalls: get(&self.partition_stalls),
        }
    }
}
