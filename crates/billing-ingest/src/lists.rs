//! The rows behind the dashboard's `/conflicts` and `/quarantine` pages, and the store's
//! readiness probe: what a store lists besides usage reports.
//!
//! Why its own module: both stores answer the same questions with their own SQL; the row types
//! and the bound live here once. Invariants: a list is always bounded (`LIMIT`, at most
//! [`MAX_LIST_ROWS`]) and newest first; times are RFC 3339 UTC text as both stores print them;
//! bodies and raw entries are returned as stored (the caller escapes them for its output).

/// Most rows a list query returns, whatever the caller asks.
pub const MAX_LIST_ROWS: usize = 1000;

/// One row of the `conflicts` table: a distinct differing version of a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    /// The record's `unique_key`.
    pub unique_key: String,
    /// First arrival of this version (RFC 3339 UTC).
    pub first_seen: String,
    /// Last arrival of this version (RFC 3339 UTC).
    pub last_seen: String,
    /// Arrivals of this version.
    pub count: i64,
    /// The stored (first) body, as JSON.
    pub stored_body: String,
    /// The differing body that arrived, as JSON.
    pub received_body: String,
}

/// One row of the `quarantine` table: an invalid entry or a record the database refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    /// Row id (increasing with arrival).
    pub id: i64,
    /// Arrival (RFC 3339 UTC).
    pub received_at: String,
    /// Why it was quarantined (a reason of [`crate::quarantine_reasons`], with detail).
    pub reason: String,
    /// The entry's raw form, as JSON text.
    pub raw: String,
}

/// Which rows a list returns: the newest `limit` (bounded by [`MAX_LIST_ROWS`]) of those
/// matching every filter that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Conflicts: only this `unique_key`.
    pub key: Option<String>,
    /// Quarantine: only reasons starting with this (e.g. `amount_type`).
    pub reason: Option<String>,
    /// Quarantine: only the row with this id.
    pub id: Option<i64>,
    /// Most rows.
    pub limit: usize,
}

impl ListFilter {
    /// The newest `limit` rows, unfiltered.
    pub fn newest(limit: usize) -> Self {
        Self {
            key: None,
            reason: None,
            id: None,
            limit,
        }
    }

    /// Only `unique_key` (conflicts).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only reasons starting with `reason` (quarantine).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Only row `id` (quarantine).
    pub fn id(mut self, id: i64) -> Self {
        self.id = Some(id);
        self
    }
}

/// `limit` bounded by [`MAX_LIST_ROWS`], as SQL wants it.
pub(crate) fn bounded(limit: usize) -> i64 {
    limit.min(MAX_LIST_ROWS) as i64
}
