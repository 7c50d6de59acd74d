//! Settings a database store takes at open ([`StoreOptions`]), and the bound on the quarantine
//! table they set.
//!
//! Why a bound: quarantine rows are written for the sender's mistakes, so their number is in
//! the sender's hands. One small compressed frame can carry millions of invalid entries; kept
//! unbounded, they fill the disk the valid records need. Past the bound an invalid entry is
//! still counted (in `counters` and in the frame's [`crate::StoreOutcome::quarantined`], so
//! `billing report --summary` and the metrics stay exact) but its row is not written.
//!
//! How the row count is kept (invariants):
//! - `counters.quarantine_rows` (summed over its slots) is the number of rows in `quarantine`.
//!   Every frame adds the rows it wrote to its slot in the same transaction as the rows, and
//!   every quarantine release batch subtracts the rows it deleted (`release.rs`), so the two
//!   never disagree after a commit. No frame counts the table itself.
//! - It is recounted at every writer open (one `COUNT(*)`, in the migration transaction), so
//!   rows an operator deleted free their room at the ingester's next start.
//! - A frame reads the sum before writing, and writes at most `max - sum` rows (the first ones
//!   in wire order). SQLite writers are serialized (`BEGIN IMMEDIATE`), so the bound holds
//!   exactly there. PostgreSQL frames read the sum without a lock (a lock would make every
//!   frame with an invalid entry wait for every other one, across ingesters): transactions
//!   committing at the same time each see the rows committed before them, so the bound may be
//!   exceeded by at most one frame's rows per concurrently committing transaction, i.e. per
//!   pooled connection of each ingester (`pool_size`, default 4).
//! - Unstored rows are warned about at most once per [`WARN_EVERY`] per store, with the count
//!   of rows left unstored since the previous warning ([`UnstoredWarnings`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default [`StoreOptions::quarantine_max_rows`]: one million rows (a few hundred MB at most).
pub const DEFAULT_QUARANTINE_MAX_ROWS: u64 = 1_000_000;

/// Unstored quarantine rows are warned about at most this often.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// Settings of a database store, fixed when it is opened: `StoreOptions::default()` and the
/// builder methods below.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Most rows kept in the `quarantine` table (see the module docs); entries past it are
    /// counted but not kept. Default [`DEFAULT_QUARANTINE_MAX_ROWS`].
    pub quarantine_max_rows: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            quarantine_max_rows: DEFAULT_QUARANTINE_MAX_ROWS,
        }
    }
}

impl StoreOptions {
    /// These options with another quarantine bound (`0` keeps no quarantine rows at all).
    #[must_use]
    pub fn quarantine_max_rows(mut self, rows: u64) -> Self {
        self.quarantine_max_rows = rows;
        self
    }

    /// How many of `entries` quarantine rows a frame may write when the table holds `rows`.
    pub(crate) fn quarantine_room(&self, rows: i64, entries: usize) -> usize {
        let rows = u64::try_from(rows).unwrap_or(0);
        let room = self.quarantine_max_rows.saturating_sub(rows);
        usize::try_from(room).map_or(entries, |room| room.min(entries))
    }
}

/// Rate-limits the warning about quarantine rows left unstored (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct UnstoredWarnings {
    /// When the last warning was logged, and the rows left unstored since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl UnstoredWarnings {
    /// Notes `unstored` rows of a committed frame, and logs the warning when one is due.
    pub(crate) fn note(&self, unstored: u64, max_rows: u64) {
        if let Some(rows) = self.due(unstored, Instant::now()) {
            tracing::warn!(
                unstored_rows = rows,
                quarantine_max_rows = max_rows,
                "the quarantine table is full: invalid records are counted but their rows are \
                 not stored (rows left unstored since the last such warning; raise \
                 --quarantine-max-rows or delete reviewed quarantine rows and restart)"
            );
        }
    }

    /// Adds `unstored` rows at `now`; the count to warn about when a warning is due.
    pub(crate) fn due(&self, unstored: u64, now: Instant) -> Option<u64> {
        if unstored == 0 {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, pending) = &mut *state;
        *pending += unstored;
        if last.is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_is_left_under_the_bound() {
        let o = StoreOptions::default().quarantine_max_rows(10);
        assert_eq!(o.quarantine_room(0, 50), 10);
        assert_eq!(o.quarantine_room(7, 50), 3);
        assert_eq!(o.quarantine_room(7, 2), 2);
        assert_eq!(o.quarantine_room(12, 5), 0, "already past the bound");
        assert_eq!(
            StoreOptions::default()
                .quarantine_max_rows(0)
                .quarantine_room(0, 5),
            0
        );
    }

    #[test]
    fn unstored_rows_are_warned_at_most_once_a_minute_with_the_count_since_the_last() {
        let w = UnstoredWarnings::default();
        let t0 = Instant::now();
        assert_eq!(w.due(0, t0), None, "nothing unstored, nothing to say");
        assert_eq!(w.due(5, t0), Some(5), "the first one is warned at once");
        assert_eq!(w.due(3, t0 + Duration::from_secs(10)), None);
        assert_eq!(w.due(4, t0 + Duration::from_secs(59)), None);
        assert_eq!(
            w.due(1, t0 + WARN_EVERY),
            Some(8),
            "3 + 4 + 1 since the last warning"
        );
        assert_eq!(w.due(2, t0 + WARN_EVERY + Duration::from_secs(1)), None);
    }
}
