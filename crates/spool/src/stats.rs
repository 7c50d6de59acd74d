//! Point-in-time numbers about an open spool ([`SpoolStats`]) and the cheap `next_seq`.
//!
//! Kept apart from the writer and reader because both [`crate::Spool::stats`] and
//! `inspect` report a [`SpoolStats`]. Invariant: nothing here changes the state.
//! `stats` reads one segment from the nearest index entry, giving up after two index intervals
//! (for the oldest record's age), with the state lock dropped; `next_seq` reads no file.

use std::time::Duration;

use crate::format::{Scanned, Scanner, now_nanos};
use crate::state::{INDEX_EVERY, Inner};

/// Point-in-time statistics.
///
/// Non-exhaustive: more numbers may be added; read the fields, do not build it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolStats {
    /// Unacknowledged records.
    pub records: u64,
    /// Bytes of the segment files, counted against [`crate::SpoolOptions::max_bytes`]: the
    /// data, plus the space the active segment has reserved and not used yet
    /// ([`crate::SpoolOptions::preallocate`]).
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Age of the oldest unacknowledged record (from the append time in its header).
    pub oldest_unacked_age: Option<Duration>,
    /// Damaged records found since open (by recovery or by reads).
    pub damaged_records: u64,
    /// Failed fsyncs since open.
    pub sync_failures: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
}

impl Inner {
    /// See [`crate::Spool::next_seq`].
    pub(crate) fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// See [`crate::Spool::stats`].
    pub(crate) fn stats(&self) -> SpoolStats {
        let st = self.lock();
        let mut stats = SpoolStats {
            records: st.unacked(),
            bytes: st.total_bytes,
            segments: st.segments.len(),
            oldest_unacked_age: None,
            damaged_records: st.damaged_records,
            sync_failures: st.sync_failures,
            next_seq: st.next_seq,
        };
        let Some(oldest) = st.exists.next_at_or_after(st.watermark) else {
            return stats;
        };
        let Some(seg) = st
            .segments
            .values()
            .find(|s| s.seqs.is_some_and(|(_, l)| l >= oldest))
        else {
            return stats;
        };
        let Some(entry) = seg.index_lookup(oldest) else {
            return stats;
        };
        let file = seg.file.clone();
        let end = seg.written;
        drop(st);
        let mut ts = entry.ts_nanos;
        let mut sc = Scanner::new(file, entry.offset, end, false);
        while let Ok(Some(item)) = sc.next_item() {
            if let Scanned::Record { header, .. } = item
                && header.seq >= oldest
            {
                ts = header.ts_nanos;
                break;
            }
            if sc.pos() > entry.offset + 2 * INDEX_EVERY {
                break;
            }
        }
        stats.oldest_unacked_age = Some(Duration::from_nanos(now_nanos().saturating_sub(ts)));
        stats
    }
}
