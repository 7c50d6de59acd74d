//! What the caller chooses at [`crate::Spool::open`]: size bounds, durability, and what to do
//! when full.
//!
//! This module exists so that the knobs, their defaults and their validation sit in one place
//! that depends on nothing but the error type. Invariant: an options value that passed
//! [`SpoolOptions::validated`] has `max_bytes >= 4 * MIN_SEGMENT_BYTES`,
//! `MIN_SEGMENT_BYTES <= segment_bytes <= max_bytes / 4`, and no zero `Interval`; the rest of
//! the crate relies on that (a segment always fits four times, so reclaiming one whole segment
//! frees a meaningful share of the bound).

use std::time::Duration;

use tracing::info;

use crate::error::SpoolError;

/// Default [`SpoolOptions::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default [`SpoolOptions::segment_bytes`]: 32 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 32 << 20;
/// Default [`SpoolOptions::preallocate`]: on.
pub const DEFAULT_PREALLOCATE: bool = true;
/// Smallest accepted [`SpoolOptions::segment_bytes`]; [`SpoolOptions::max_bytes`] must be at
/// least four times this.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// When `append` returns.
///
/// Non-exhaustive: more modes may be added; code outside this crate only constructs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// After the bytes are `fdatasync`ed. Concurrent appenders share one fsync (group commit).
    Fsync,
    /// At once, once the bytes are in the page cache (so they survive the process being
    /// killed); a background flusher fsyncs at least every interval. An OS crash or power loss
    /// can lose the appends of the last interval.
    Interval(Duration),
}

/// What `append` does when the spool holds `max_bytes`.
///
/// Non-exhaustive: more policies may be added; code outside this crate only constructs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Fail at once with [`SpoolError::Full`].
    Reject,
    /// Wait up to this long for acks to free space, then fail with [`SpoolError::Full`].
    Wait(Duration),
}

/// Options of [`crate::Spool::open`].
///
/// Deliberately *not* `#[non_exhaustive]`: dependents build it with a struct literal and
/// `..SpoolOptions::default()`, which Rust forbids for non-exhaustive structs outside their
/// crate. New code should prefer `SpoolOptions::default()` with the `with_*` methods, which
/// keep compiling if fields are added; once no struct literals remain outside this crate, it
/// can become non-exhaustive.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Bound on the bytes of all segment files (headers included).
    pub max_bytes: u64,
    /// A segment is closed and a new one started when the next write would pass this size.
    /// Space is reclaimed a whole segment at a time, so keep this well below `max_bytes`
    /// (it is lowered to `max_bytes / 4` if larger).
    pub segment_bytes: u64,
    /// When an append returns, and how often the flusher fsyncs.
    pub durability: Durability,
    /// What an append does when the spool holds `max_bytes`.
    pub when_full: WhenFull,
    /// Reserve each new segment's space up front (`fallocate`), as Kafka's `log.preallocate`
    /// and PostgreSQL's WAL segments do: an `fdatasync` after a write into reserved space
    /// need not commit a new file size to the file system's journal, which on ext4 cuts its
    /// latency by about a third (BENCHMARKS.md). The reserved space counts against
    /// `max_bytes`; a closed segment gives back what it did not use. Where the file system
    /// cannot reserve space, segments grow as they are written.
    pub preallocate: bool,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            durability: Durability::Fsync,
            when_full: WhenFull::Reject,
            preallocate: DEFAULT_PREALLOCATE,
        }
    }
}

impl SpoolOptions {
    /// These options with [`SpoolOptions::max_bytes`] set.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// These options with [`SpoolOptions::segment_bytes`] set.
    #[must_use]
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }

    /// These options with [`SpoolOptions::durability`] set.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// These options with [`SpoolOptions::preallocate`] set.
    #[must_use]
    pub fn with_preallocate(mut self, preallocate: bool) -> Self {
        self.preallocate = preallocate;
        self
    }

    /// These options with [`SpoolOptions::when_full`] set.
    #[must_use]
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Check the options, lowering `segment_bytes` to `max_bytes / 4` if it is larger.
    pub(crate) fn validated(mut self) -> Result<SpoolOptions, SpoolError> {
        if self.max_bytes < 4 * MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidOptions(format!(
                "max_bytes {} is below the minimum {}",
                self.max_bytes,
                4 * MIN_SEGMENT_BYTES
            )));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidOptions(format!(
                "segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if self.segment_bytes > self.max_bytes / 4 {
            self.segment_bytes = self.max_bytes / 4;
            info!(
                segment_bytes = self.segment_bytes,
                "spool: segment_bytes lowered to max_bytes / 4"
            );
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(SpoolError::InvalidOptions("Interval(0): use Fsync".into()));
        }
        Ok(self)
    }
}
