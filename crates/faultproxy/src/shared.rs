//! State shared by the handle and every connection task: the current faults (a `watch`
//! channel, so a waiting connection wakes when they change), the upstream address, the
//! counters, the kill signal for live connections and the armed mid-frame cuts.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{broadcast, watch};

use crate::faults::Faults;
use crate::stats::Counters;

/// How a live connection is ended by the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Both sockets closed (FIN).
    Close,
    /// Both sockets reset (RST: `SO_LINGER` 0, then closed).
    Reset,
}

pub(crate) struct Shared {
    pub faults: watch::Sender<Faults>,
    upstream: Mutex<SocketAddr>,
    pub counters: Counters,
    pub kills: broadcast::Sender<Kill>,
    cut_after: AtomicUsize,
    cuts_left: AtomicU64,
}

impl Shared {
    pub(crate) fn new(upstream: SocketAddr) -> Self {
        Self {
            faults: watch::Sender::new(Faults::default()),
            upstream: Mutex::new(upstream),
            counters: Counters::default(),
            kills: broadcast::Sender::new(16),
            cut_after: AtomicUsize::new(0),
            cuts_left: AtomicU64::new(0),
        }
    }

    pub(crate) fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }

    /// Arms `times` mid-frame cuts after `after` bytes of a frame (replacing any armed).
    pub(crate) fn arm_cuts(&self, after: usize, times: u64) {
        self.cut_after.store(after, Ordering::SeqCst);
        self.cuts_left.store(times, Ordering::SeqCst);
    }

    /// Where a frame is to be cut, if a cut is armed.
    pub(crate) fn armed_cut(&self) -> Option<usize> {
        (self.cuts_left.load(Ordering::SeqCst) > 0).then(|| self.cut_after.load(Ordering::SeqCst))
    }

    /// Uses one armed cut: `false` if another connection took the last one.
    pub(crate) fn take_cut(&self) -> bool {
        self.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
