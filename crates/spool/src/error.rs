use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the spool.
///
/// Non-exhaustive: new failure kinds may be added; match the ones you handle and keep a
/// catch-all arm (use [`SpoolError::is_retriable`] to decide about the rest).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Another process (or another `Spool` in this process) has the directory open.
    #[error("spool directory {} is locked by {}", dir.display(), match pid { Some(p) => format!("process {p}"), None => "another process (pid unknown)".to_string() })]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// The holder's pid, as written in the `LOCK` file (if readable).
        pid: Option<u32>,
    },

    /// The spool holds `max_bytes` already (after waiting, with [`crate::WhenFull::Wait`]).
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full {
        /// Bytes of the segment files.
        used: u64,
        /// Bytes the call needed.
        needed: u64,
        /// [`crate::SpoolOptions::max_bytes`].
        max: u64,
    },

    /// A payload (or batch) that can never fit.
    #[error("payload of {len} bytes is too large for the spool (limit {max})")]
    TooLarge {
        /// Bytes of the payload (or of the encoded batch).
        len: u64,
        /// The most that could ever be accepted.
        max: u64,
    },

    /// Writing failed (e.g. `ENOSPC`, `EIO`). Nothing accepted before is affected; the records
    /// of the failed call were not stored.
    #[error("spool write to {} failed: {source}", path.display())]
    Write {
        /// The segment file.
        path: PathBuf,
        /// What the write reported.
        #[source]
        source: io::Error,
    },

    /// `fdatasync` failed: the records of this call are not durable and were discarded (their
    /// segment is closed and truncated back to the last synced offset; writing continues in a
    /// new segment).
    #[error("spool fsync of {} failed: {source}", path.display())]
    Sync {
        /// The segment file.
        path: PathBuf,
        /// What the fsync reported; shared by every append that waited for it.
        #[source]
        source: Arc<io::Error>,
    },

    /// Other I/O failures (opening, reading, directory operations).
    #[error("spool I/O error ({op}) on {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"lock"`, `"read"`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Invalid [`crate::SpoolOptions`].
    #[error("invalid spool options: {0}")]
    InvalidOptions(String),
}

impl SpoolError {
    /// Whether trying again later may succeed (space may be freed, a disk may recover).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            SpoolError::Full { .. }
                | SpoolError::Write { .. }
                | SpoolError::Sync { .. }
                | SpoolError::Locked { .. }
        )
    }

    /// The `io::ErrorKind` for I/O failures.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            SpoolError::Write { source, .. } | SpoolError::Io { source, .. } => Some(source.kind()),
            SpoolError::Sync { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
