//! The limits of validation: the fixed ones (field sizes) and the overridable rules
//! ([`Policy`]) with their documented defaults, which an operator may change per ingester
//! (`billing ingest` flags).

use std::collections::BTreeSet;
use std::time::Duration;

/// Longest `unique_key` or `internal_instance_id` accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Longest `amount_type` accepted, in bytes.
pub const MAX_AMOUNT_TYPE_BYTES: usize = 64;

/// Default [`Policy::max_event_age`]: 35 days, the common grace period of billing systems
/// (usage may arrive late, but a closed invoice period is not reopened silently).
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(35 * 24 * 3600);

/// Default [`Policy::max_event_future`]: 5 minutes, room for clock skew between hosts.
pub const DEFAULT_MAX_EVENT_FUTURE: Duration = Duration::from_secs(5 * 60);

/// Default [`Policy::max_metadata_bytes`]: 64 KiB per record.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 64 * 1024;

/// The overridable rules (see the module docs' table).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Accept negative amounts (credits). Default `false`.
    pub allow_negative: bool,
    /// Oldest accepted `occurred_at`, back from now. Default [`DEFAULT_MAX_EVENT_AGE`].
    pub max_event_age: Duration,
    /// Latest accepted `occurred_at`, ahead of now. Default [`DEFAULT_MAX_EVENT_FUTURE`].
    pub max_event_future: Duration,
    /// Most bytes of metadata keys and values per record. Default
    /// [`DEFAULT_MAX_METADATA_BYTES`].
    pub max_metadata_bytes: usize,
    /// The amount types billed, when the operator names them; `None` (the default): any type
    /// of the safe syntax. A type outside the list is quarantined (`unknown_amount_type`), so
    /// a sender cannot invent a billable unit.
    pub amount_types: Option<BTreeSet<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_negative: false,
            max_event_age: DEFAULT_MAX_EVENT_AGE,
            max_event_future: DEFAULT_MAX_EVENT_FUTURE,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            amount_types: None,
        }
    }
}

impl Policy {
    /// The defaults with another time window (e.g. an unbounded one to re-import an archive).
    pub fn with_window(mut self, max_event_age: Duration, max_event_future: Duration) -> Self {
        self.max_event_age = max_event_age;
        self.max_event_future = max_event_future;
        self
    }

    /// These rules with negative amounts accepted or not.
    pub fn with_allow_negative(mut self, allow: bool) -> Self {
        self.allow_negative = allow;
        self
    }

    /// These rules with only `types` billable (`None`: any type of the safe syntax).
    pub fn with_amount_types(mut self, types: Option<BTreeSet<String>>) -> Self {
        self.amount_types = types;
        self
    }

    /// These rules with another metadata size limit.
    pub fn with_max_metadata_bytes(mut self, max: usize) -> Self {
        self.max_metadata_bytes = max;
        self
    }
}
