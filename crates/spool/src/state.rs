//! The in-memory picture of an open spool: which segments exist, what each holds and how much
//! of it is durable, which seqs are stored and which are acknowledged.
//!
//! Everything mutable lives in one [`State`] behind one mutex in [`Inner`], shared by the
//! handle ([`crate::Spool`]), the appenders (`writer`), the flusher thread (`flusher`), readers
//! (`reader`) and acks (`reclaim`). One lock keeps the invariants below easy to check: each of
//! those modules takes it, changes `State`, and drops it around slow file I/O (fsync, reads)
//! where noted.
//!
//! Invariants (while the mutex is not held):
//! * `watermark <= next_seq`; every stored seq below `watermark` is acknowledged, and
//!   `exists` holds no seq below it.
//! * `acked` is a subset of `exists` (acks above the watermark that came out of order).
//! * `total_bytes` is the sum of `Segment::size` over `segments`.
//! * For every segment, `synced <= written <= size`, and `index` is sorted by seq and offset;
//!   `size > written` only for the active segment (its reserved space not used yet) or where
//!   giving reserved space back failed.
//! * `active`, if set, names a segment in `segments` that is not sealed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::acklog::AckLog;
use crate::io::{LockGuard, SpoolFile, SpoolIo};
use crate::options::SpoolOptions;
use crate::ranges::RangeSet;

/// A sparse index entry is kept every this many bytes of a segment, so a reader (or the age of
/// the oldest record) finds a seq by scanning at most this much.
pub(crate) const INDEX_EVERY: u64 = 64 << 10;

/// Where a record starts in a segment, with its append time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexEntry {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) ts_nanos: u64,
}

/// One segment file.
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn SpoolFile>,
    /// (first, last) seq of the records in it.
    pub(crate) seqs: Option<(u64, u64)>,
    /// End of the valid data.
    pub(crate) written: u64,
    /// The file's size as the spool made it, what the segment counts against `max_bytes`:
    /// `written`, plus the space reserved ahead of it while the segment is active
    /// ([`SpoolOptions::preallocate`]). The reserved bytes read as zeros.
    pub(crate) size: u64,
    /// Zeros have been written up to here (`writer::zero_ahead`); `written` or less for
    /// segments that reserve no space or are no longer written.
    pub(crate) zeroed: u64,
    /// Durable prefix.
    pub(crate) synced: u64,
    /// Last seq within the synced prefix.
    pub(crate) synced_last_seq: Option<u64>,
    /// No more appends go here.
    pub(crate) sealed: bool,
    pub(crate) index: Vec<IndexEntry>,
}

impl Segment {
    /// The last index entry at or below `seq`.
    pub(crate) fn index_lookup(&self, seq: u64) -> Option<IndexEntry> {
        let i = self.index.partition_point(|e| e.seq <= seq);
        (i > 0).then(|| self.index[i - 1])
    }
}

/// Everything that changes while the spool is open; see the module docs for its invariants.
pub(crate) struct State {
    pub(crate) segments: BTreeMap<u64, Segment>,
    pub(crate) active: Option<u64>,
    pub(crate) next_segment_id: u64,
    pub(crate) next_seq: u64,
    /// Lowest unacknowledged seq (or `next_seq`): everything below is acknowledged.
    pub(crate) watermark: u64,
    /// Seqs of stored records `>= watermark`.
    pub(crate) exists: RangeSet,
    /// Acknowledged seqs above the watermark (acks that came out of order).
    pub(crate) acked: BTreeSet<u64>,
    pub(crate) total_bytes: u64,
    /// Segments whose fsync failed, with the offset that was durable.
    pub(crate) failed: HashMap<u64, (u64, Arc<io::Error>)>,
    pub(crate) acklog: Option<AckLog>,
    /// A write or fsync of the ack log failed: write a fresh one (tmp file + rename) at the
    /// flusher's next cycle rather than trusting the old file.
    pub(crate) ack_rewrite: bool,
    pub(crate) ack_synced_at: Instant,
    pub(crate) damaged_records: u64,
    /// (segment id, offset) of damage already found by readers, so it is counted once.
    pub(crate) damaged_seen: HashSet<(u64, u64)>,
    pub(crate) sync_failures: u64,
    /// Reused encoding buffer of the appenders (saves an allocation per append).
    pub(crate) scratch: Vec<u8>,
    pub(crate) space_waiters: usize,
    /// Appenders (`Fsync` mode) that have written and wait for an fsync, and that no fsync
    /// started since covers; the flusher zeroes it when it starts one.
    pub(crate) uncovered: usize,
    /// How many appenders the flusher's last fsync released, and how long that fsync took:
    /// the flusher's guess of how many to gather for the next one, and for how long at most
    /// (`flusher.rs`, "Gathering").
    pub(crate) last_group: usize,
    pub(crate) last_fsync: std::time::Duration,
    pub(crate) flush_requested: u64,
    pub(crate) flush_done: u64,
    pub(crate) shutdown: bool,
}

impl State {
    /// Unacknowledged records.
    pub(crate) fn unacked(&self) -> u64 {
        self.exists.count() - self.acked.len() as u64
    }

    /// Move the watermark past acknowledged seqs; returns whether it moved.
    pub(crate) fn advance_watermark(&mut self) -> bool {
        let old = self.watermark;
        loop {
            match self.exists.next_at_or_after(self.watermark) {
                None => {
                    self.watermark = self.next_seq;
                    break;
                }
                Some(x) => {
                    if self.acked.remove(&x) {
                        self.watermark = x + 1;
                    } else {
                        self.watermark = x;
                        break;
                    }
                }
            }
        }
        if self.watermark != old {
            self.exists.remove_below(self.watermark);
            true
        } else {
            false
        }
    }

    /// Remove `[lo, hi)` from the stored set (failed or damaged records).
    pub(crate) fn forget(&mut self, lo: u64, hi: u64) {
        self.exists.remove(lo, hi);
        let gone: Vec<u64> = self.acked.range(lo..hi).copied().collect();
        for s in gone {
            self.acked.remove(&s);
        }
    }

    /// Some segment has bytes that are not yet fsynced.
    pub(crate) fn dirty(&self) -> bool {
        self.segments.values().any(|s| s.synced < s.written)
    }
}

/// What the [`crate::Spool`] handle and its flusher thread share.
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) io: Arc<dyn SpoolIo>,
    pub(crate) opts: SpoolOptions,
    pub(crate) state: Mutex<State>,
    /// Fsync progress (waiters for durability, flush callers).
    pub(crate) synced_cv: Condvar,
    /// Wakes the flusher.
    pub(crate) work_cv: Condvar,
    /// Space freed.
    pub(crate) space_cv: Condvar,
    /// Held for as long as the spool is open; released on drop.
    pub(crate) _lock: Box<dyn LockGuard>,
}

impl Inner {
    /// Lock the state. Poisoning is ignored so that one panicking caller does not make every
    /// later call on the spool panic too.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
