//! One memory budget for the whole server: the bytes of partial frames buffered, of frames
//! being inflated and decoded, and of decoded frames until their handler returned.
//!
//! Why: per-connection caps do not bound the total (2,000 connections × a 1 MiB partial frame
//! is 2 GiB), and a decoded frame costs a multiple of its bytes. Every such byte is charged
//! here *before* it is allocated; a connection that cannot be charged waits, and while it
//! waits it does not read its socket (TCP pushes back on its client).
//!
//! The budget (`memory_limit`, in 1 KiB permits) is split in three pools:
//! - **shared** (the rest, 7/16 of the limit): every charge tries it first;
//! - **reserve** (half the limit): usable only by the one connection holding the reserve
//!   *token* (a FIFO mutex). A connection that cannot be charged from the shared pool waits
//!   for the shared pool or the token, whichever comes first. The reserve holds one whole
//!   frame at its worst (buffer, inflated entries and decoded form: see
//!   [`Budget::decode_ceiling`]), so the token holder never waits for memory and its frame
//!   always completes: connections that each hold part of the budget while waiting for more
//!   cannot deadlock the server. The token is given back once the holder's charges from the
//!   reserve are returned (after its frame was handled); a holder whose client stalls is cut
//!   by the frame timeout like any other.
//! - **small** (1/16 of the limit): the decoded form of *small* frames (at most
//!   [`SMALL_FRAME_BYTES`] on the wire). Only complete frames draw from it, and only while
//!   they are decoded and handled, so partial frames, however many, cannot starve a client
//!   that sends small frames: with the first [`SMALL_FRAME_BYTES`] of every connection's
//!   buffer outside the budget (a fixed per-connection cost, like its task and socket), such
//!   a frame is read, decoded and acked while a flood of partial frames holds the rest.
//!
//! Fairness: the semaphores are FIFO, so connections waiting for the shared pool are served
//! in arrival order (a large charge at the head waits until it fits; those behind it wait
//! too); the token is handed out in arrival order. Small frames have their own lane.
//!
//! Invariants: the permits held by all [`Charge`]s never exceed the limit (the semaphores
//! enforce it); a [`Charge`] returns its permits when dropped, so an aborted connection task
//! gives everything back; only the token holder holds reserve permits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

use crate::decode::inflate_cap;
use crate::stats::ServerStats;

/// Wire size up to which a frame is *small*: it is buffered outside the budget (every
/// connection may hold this much) and decoded from the small pool. A handful of billing
/// records; larger frames take their turn in the shared pool.
pub const SMALL_FRAME_BYTES: usize = 8 * 1024;

/// Permit size in bytes.
const UNIT: usize = 1024;

/// Largest read into a connection's buffer.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Which pools a charge may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Shared pool, else the reserve once the token is held.
    Normal,
    /// Shared pool, else the small pool (decoded small frames).
    Small,
}

/// The pools of one server.
#[derive(Debug)]
pub(crate) struct Budget {
    shared: Semaphore,
    small: Semaphore,
    reserve: Semaphore,
    token: Arc<Mutex<()>>,
    small_units: usize,
    decode_ceiling: usize,
    stats: Arc<ServerStats>,
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

impl Budget {
    /// The counters of the server this budget belongs to.
    pub(crate) fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Splits `memory_limit` for frames of at most `max_frame_bytes` (validated by
    /// `ServerConfig::validate`).
    pub(crate) fn new(
        memory_limit: usize,
        max_frame_bytes: usize,
        stats: Arc<ServerStats>,
    ) -> Self {
        let total = units(memory_limit);
        let reserve = total / 2;
        let small = total / 16;
        let shared = total - reserve - small;
        Self {
            shared: Semaphore::new(shared),
            small: Semaphore::new(small),
            reserve: Semaphore::new(reserve),
            token: Arc::new(Mutex::new(())),
            small_units: small,
            decode_ceiling: decode_ceiling(memory_limit, max_frame_bytes),
            stats,
        }
    }

    /// Most bytes one decoded frame may take: what the reserve holds beyond the frame's
    /// buffer and its inflated entries.
    pub(crate) fn decode_ceiling(&self) -> usize {
        self.decode_ceiling
    }

    /// Whether a decoded cost fits the small pool at all.
    pub(crate) fn fits_small(&self, bytes: usize) -> bool {
        units(bytes) <= self.small_units
    }

    /// Charges `bytes`, waiting if the pools are short; returns the charge and how long it
    /// waited. `token` is the connection's token slot: filled when it wins the token.
    pub(crate) async fn charge(
        self: &Arc<Self>,
        bytes: usize,
        lane: Lane,
        token: &mut Option<OwnedMutexGuard<()>>,
    ) -> (Charge, Duration) {
        let n = units(bytes);
        let mut charge = Charge {
            budget: self.clone(),
            shared: 0,
            small: 0,
            reserve: 0,
        };
        if n == 0 {
            return (charge, Duration::ZERO);
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        if token.is_some() {
            // The reserve is sized for the holder's whole frame.
            if let Ok(p) = self.reserve.try_acquire_many(n32) {
                p.forget();
                charge.reserve = n;
                self.account(n as i64);
                return (charge, Duration::ZERO);
            }
        }
        if let Ok(p) = self.shared.try_acquire_many(n32) {
            p.forget();
            charge.shared = n;
            self.account(n as i64);
            return (charge, Duration::ZERO);
        }
        if lane == Lane::Small
            && let Ok(p) = self.small.try_acquire_many(n32)
        {
            p.forget();
            charge.small = n;
            self.account(n as i64);
            return (charge, Duration::ZERO);
        }
        self.stats.memory_waits.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let want_token = lane == Lane::Normal && token.is_none();
        tokio::select! {
            p = self.shared.acquire_many(n32) => {
                p.expect("never closed").forget();
                charge.shared = n;
            }
            p = self.small.acquire_many(n32), if lane == Lane::Small => {
                p.expect("never closed").forget();
                charge.small = n;
            }
            p = self.reserve.acquire_many(n32), if token.is_some() => {
                p.expect("never closed").forget();
                charge.reserve = n;
            }
            guard = self.token.clone().lock_owned(), if want_token => {
                *token = Some(guard);
                // Only the holder draws from the reserve, and it gave back all it took
                // before releasing the token: this completes at once.
                self.reserve.acquire_many(n32).await.expect("never closed").forget();
                charge.reserve = n;
            }
        }
        self.account(n as i64);
        (charge, began.elapsed())
    }

    fn account(&self, units: i64) {
        let bytes = units * UNIT as i64;
        if bytes >= 0 {
            self.stats
                .memory_charged_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.stats
                .memory_charged_bytes
                .fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// Most bytes one decoded frame may take for these settings.
pub(crate) fn decode_ceiling(memory_limit: usize, max_frame_bytes: usize) -> usize {
    let reserve = units(memory_limit) / 2 * UNIT;
    reserve.saturating_sub(buffer_cap(max_frame_bytes) + inflate_cap(max_frame_bytes) + 2 * UNIT)
}

/// Largest capacity a connection's buffer reaches.
pub(crate) fn buffer_cap(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_add(READ_CHUNK)
}

/// Permits held; returned to their pools when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    shared: usize,
    small: usize,
    reserve: usize,
}

impl Charge {
    /// An empty charge on `budget`.
    pub(crate) fn empty(budget: &Arc<Budget>) -> Self {
        Self {
            budget: budget.clone(),
            shared: 0,
            small: 0,
            reserve: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        (self.shared + self.small + self.reserve) * UNIT
    }

    /// Adds `other` to this charge.
    pub(crate) fn merge(&mut self, mut other: Charge) {
        self.shared += std::mem::take(&mut other.shared);
        self.small += std::mem::take(&mut other.small);
        self.reserve += std::mem::take(&mut other.reserve);
    }

    /// Gives back what exceeds `bytes`, reserve permits first.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes);
        let held = self.shared + self.small + self.reserve;
        if held <= keep {
            return;
        }
        let mut give = held - keep;
        let r = give.min(self.reserve);
        self.reserve -= r;
        give -= r;
        let s = give.min(self.small);
        self.small -= s;
        give -= s;
        let sh = give.min(self.shared);
        self.shared -= sh;
        self.budget.release(sh, s, r);
    }

    /// Moves reserve permits to the shared pool if it has room, so the token can be given
    /// back; `true` if none are left in the reserve.
    pub(crate) fn leave_reserve(&mut self) -> bool {
        if self.reserve == 0 {
            return true;
        }
        let n = u32::try_from(self.reserve).unwrap_or(u32::MAX);
        if let Ok(p) = self.budget.shared.try_acquire_many(n) {
            p.forget();
            self.budget.reserve.add_permits(self.reserve);
            self.shared += std::mem::take(&mut self.reserve);
            return true;
        }
        false
    }
}

impl Budget {
    fn release(&self, shared: usize, small: usize, reserve: usize) {
        if shared > 0 {
            self.shared.add_permits(shared);
        }
        if small > 0 {
            self.small.add_permits(small);
        }
        if reserve > 0 {
            self.reserve.add_permits(reserve);
        }
        self.account(-((shared + small + reserve) as i64));
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.shared, self.small, self.reserve);
    }
}
