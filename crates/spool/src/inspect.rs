//! [`inspect`]: a read-only look at a spool directory, for operators and the CLI.
//!
//! It reuses recovery's scan but never writes: it does not take the spool's lock (it only
//! probes whether someone holds it), and repairs, removes and moves nothing, so it is safe to
//! run next to the process that has the spool open (its numbers are then a snapshot that may
//! be slightly inconsistent).

use std::path::Path;
use std::time::Duration;

use crate::acklog;
use crate::damaged::DAMAGED_DIR;
use crate::error::SpoolError;
use crate::format::now_nanos;
use crate::io::{OpenMode, SpoolIo, StdIo, lock_holder};
use crate::layout::{self, segment_name};
use crate::recovery::scan_segment;
use crate::stats::SpoolStats;

/// Result of [`inspect`].
///
/// Non-exhaustive: more findings may be reported; read the fields, do not build it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// `records`, `bytes`, `segments`, `oldest_unacked_age`, `damaged_records`, `next_seq`.
    pub stats: SpoolStats,
    /// Bytes of damaged regions still in segments (recovery would move them aside).
    pub damaged_bytes: u64,
    /// Bytes of incomplete writes at the ends of segments (recovery would cut them off).
    pub torn_tail_bytes: u64,
    /// Acknowledged records still on disk (in partly acknowledged segments).
    pub acked_records_on_disk: u64,
    /// Every seq below this was acknowledged (from the ack log).
    pub acked_watermark: u64,
    /// Files and directories that are not the spool's.
    pub unknown_files: Vec<String>,
    /// Files under `damaged/`.
    pub damaged_files: usize,
    /// Pid in the LOCK file, if the lock is currently held.
    pub locked_by: Option<u32>,
}

/// Whether `dir` holds a spool: it exists and has the spool's lock file, ack log or a segment
/// (a spool writes its lock file when it is first opened). For commands that must not create
/// a spool where an operator misspelt a directory.
///
/// # Errors
/// [`SpoolError::Io`] if the directory does not exist or cannot be listed.
pub fn holds_spool(dir: &Path) -> Result<bool, SpoolError> {
    let listing =
        layout::list(&StdIo, dir).map_err(|e| SpoolError::io("list directory", dir, e))?;
    Ok(!listing.segments.is_empty()
        || dir.join(crate::io::LOCK_FILE).exists()
        || dir.join(acklog::ACK_FILE).exists())
}

/// Read-only look at a spool directory; works while another process holds the lock (the
/// numbers are then a snapshot that may be slightly inconsistent). Segments that cannot be
/// opened or read are skipped.
///
/// # Errors
/// [`SpoolError::Io`] if the directory cannot be listed.
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let io = StdIo;
    let listing = layout::list(&io, dir).map_err(|e| SpoolError::io("list directory", dir, e))?;
    let ack = acklog::read(&io, dir).unwrap_or_default();
    let mut out = Inspection {
        acked_watermark: ack.watermark,
        unknown_files: listing.unknown,
        locked_by: lock_holder(dir),
        ..Default::default()
    };
    out.damaged_files = io
        .read_dir(&dir.join(DAMAGED_DIR))
        .map(|v| v.len())
        .unwrap_or(0);
    let mut oldest: Option<u64> = None;
    let mut last_seq = None;
    let mut next_seq = ack.next_seq.max(ack.watermark);
    for id in listing.segments {
        let path = dir.join(segment_name(id));
        let Ok(file) = io.open(&path, OpenMode::Read) else {
            continue;
        };
        let Ok(scan) = scan_segment(&file, last_seq) else {
            continue;
        };
        out.stats.segments += 1;
        out.stats.bytes += scan.file_len;
        out.stats.damaged_records += scan.damaged_records();
        out.damaged_bytes += scan.damaged.iter().map(|d| d.1).sum::<u64>();
        out.torn_tail_bytes += scan.torn_tail.map(|t| t.1).unwrap_or(0);
        for r in &scan.records {
            if r.seq >= ack.watermark {
                out.stats.records += 1;
                oldest = Some(oldest.map_or(r.ts_nanos, |o| o.min(r.ts_nanos)));
            } else {
                out.acked_records_on_disk += 1;
            }
            last_seq = Some(r.seq);
            next_seq = next_seq.max(r.seq + 1);
        }
    }
    out.stats.next_seq = next_seq;
    out.stats.oldest_unacked_age =
        oldest.map(|ts| Duration::from_nanos(now_nanos().saturating_sub(ts)));
    Ok(out)
}
