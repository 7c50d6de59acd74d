//! A crash-safe, append-only disk queue ("spool") for records awaiting acknowledgement.
//!
//! Producers [`Spool::append`] opaque payloads and get a sequence number (seq); a sender reads
//! them back in seq order with a [`Cursor`] ([`Spool::read_from`]) and [`Spool::ack`]s them
//! once the receiver has committed them. Records that were accepted survive process crashes
//! (and, in [`Durability::Fsync`] mode, power loss) until acknowledged. Delivery is
//! at-least-once: after a crash a few recently acknowledged records may be read again (the
//! receiver dedupes); an accepted, unacknowledged record is never lost.
//!
//! ```no_run
//! # use spool::*;
//! let (spool, recovery) = Spool::open("/var/spool/billing".as_ref(), SpoolOptions::default())?;
//! let seq = spool.append(b"event")?;
//! let mut cursor = Cursor::new();
//! for (seq, payload) in spool.read_from(&mut cursor, 1000)? { /* send */ }
//! spool.ack(&[seq])?;
//! # Ok::<(), SpoolError>(())
//! ```
//!
//! # On-disk format
//!
//! A spool directory holds:
//!
//! | file | what |
//! |---|---|
//! | `LOCK` | `flock(2)`ed exclusively by the process that has the spool open; holds its pid |
//! | `NNNNNNNNNNNNNNNNNNNN.seg` | segments, 20-digit decimal id, ascending in creation (and seq) order |
//! | `ACKS` | the ack log |
//! | `damaged/` | bytes of damaged records moved aside: `<segment>-at-<offset>-<ns>.bin` |
//! | `*.tmp` | a rewrite in progress (ack log, repaired segment); removed at open |
//!
//! Anything else is not the spool's: it is left alone and reported ([`Recovery::unknown_files`]).
//!
//! A **segment** starts with a 16-byte header: `b"SPOOLSEG"`, format version `u32` (1), a
//! reserved `u32` (0). Records follow back to back. A **record** is a 28-byte header followed by
//! the payload, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `0xA70B_9EF5` (bytes `F5 9E 0B A7`) |
//! | 4 | 4 | crc32c (Castagnoli) of bytes 8 .. 28+len (length, seq, timestamp, payload) |
//! | 8 | 4 | payload length `len` (at most 16 MiB) |
//! | 12 | 8 | seq |
//! | 20 | 8 | append time, nanoseconds since the Unix epoch (wall clock) |
//! | 28 | len | payload |
//!
//! The active segment's file is usually longer than its records: with
//! [`SpoolOptions::preallocate`] (the default) a new segment reserves its whole size at once
//! (`fallocate`), and the writer keeps zeros written about a mebibyte ahead of the data, so
//! the fsync after an append commits data blocks only: no new file size and no extent
//! conversion for the file system's journal. Zeros after the last record are unused space: a
//! segment closed by a roll, and the active one at close, are cut back to their data.
//!
//! The **ack log** `ACKS` is a sequence of 24-byte entries: magic `u32` `0x4B43_41B5`, crc32c of
//! the next 16 bytes, `watermark: u64` (every seq below it is acknowledged), `next_seq: u64`
//! (the next seq to assign when written). The valid entry with the highest watermark wins. It is
//! rewritten (tmp file, fsync, rename, fsync directory) at open, when it passes 1 MiB, and after
//! any failed write or fsync of it.
//!
//! # Invariants
//!
//! * Seqs are assigned in increasing order and never reused, also across restarts (`next_seq`
//!   is at least the ack log's `next_seq` and watermark); failed appends and damaged records
//!   leave gaps.
//! * Within a segment and across segments in id order, seqs strictly increase.
//! * Only the newest ("active") segment is written; recovered segments are read-only and
//!   writing after open starts a new segment. A new segment's directory entry is fsynced
//!   before any record in it is reported durable.
//! * The bytes of all segment files never exceed [`SpoolOptions::max_bytes`].
//! * A segment is deleted only when all its records are below the watermark, after the ack log
//!   holding that watermark has been fsynced. So a deleted record cannot come back, and seqs
//!   cannot be reused after a crash. (If that fsync fails, or there is no ack log because it
//!   could not be written at open, the deletion still goes ahead and the log is rewritten by
//!   the flusher.)
//! * Readers see, in `Fsync` mode, only fsynced records; in `Interval` mode, every written one.
//!   A reader does not move past a segment until all of it is visible, so it reads in seq order.
//!
//! # Durability modes
//!
//! * [`Durability::Fsync`]: `append`/`append_batch` return `Ok` after the record is written and
//!   `fdatasync`ed. Group commit: appenders write into the active segment under a mutex (one
//!   `pwrite` per call) and wait; a single flusher thread fsyncs whatever was written since its
//!   last fsync, so every waiter whose bytes were covered is released by one `fdatasync`.
//!   Before each fsync it waits briefly (at most half its last fsync's duration) for as many
//!   appenders as that fsync released, so each fsync covers the whole group of concurrent
//!   appenders rather than the first to come back. An `Ok` append survives SIGKILL and power
//!   loss.
//! * [`Durability::Interval`]: `append` returns once the record is written to the file (page
//!   cache), so it survives the process being killed; the flusher fsyncs at least every
//!   interval. Power loss or an OS crash may lose the appends of the last interval (the
//!   documented window of loss); [`Spool::flush`] closes the window on demand. Dropping the
//!   `Spool` flushes.
//!
//! Acks are written to the ack log at once (page cache) and fsynced by the flusher: in `Fsync`
//! mode at least every second, in `Interval` mode every interval, and always by `flush`, on
//! close, and before a segment is deleted. After a crash, records acknowledged since the last
//! ack-log fsync, and records acknowledged out of order above the watermark, may be read again.
//!
//! # Recovery rules (at open; open never fails because of damage)
//!
//! 1. Take the lock (a second opener gets [`SpoolError::Locked`] with the holder's pid).
//! 2. Remove `*.tmp` leftovers; log and keep unknown files; read the ack log (damaged entries
//!    ignored; missing or unreadable → watermark 0: acknowledged records may be read again).
//! 3. Scan each segment in id order. At each offset a record must have the magic, a plausible
//!    length that fits in the file, and a matching crc32c. If not, scan forward for the next
//!    offset where a valid record starts (resync on the magic):
//!    * found: the bytes in between are **damaged** — counted, logged, saved under `damaged/`
//!      (fsynced), and the segment is rewritten without them (tmp + rename), so they are moved,
//!      never silently dropped;
//!    * not found, and the bytes are all zeros: reserved space no write reached: cut off;
//!    * not found, and the bytes are one complete record with a bad crc: damaged, as above;
//!    * not found otherwise: a **torn tail** (a write that never completed): cut off, and
//!      counted without the zeros after it.
//!
//!    A record whose seq is not above the previous one is treated as damaged. A damaged segment
//!    header is saved and rewritten; a file shorter than a header holds no records.
//! 4. Segments with no records, or only acknowledged ones, are deleted. Missing segments
//!    (gaps in ids or seqs) are not an error. A segment that cannot be read at all is logged,
//!    left alone and not used.
//! 5. Recovered segments are fsynced (the previous process may have died before its flusher
//!    ran), and the ack log is rewritten.
//!
//! A record that fails its checksum when read back while the spool is open (corruption after
//! the write) is skipped the same way, counted in [`SpoolStats::damaged_records`] and copied to
//! `damaged/`.
//!
//! # Write errors
//!
//! * A failed write (`ENOSPC`, `EIO`, possibly after part of it reached the file) fails that
//!   call with [`SpoolError::Write`]; the file is cut back to where the call started. If even
//!   that fails, the segment is closed and writing continues in a new one. Nothing accepted
//!   before is affected, and appends work again once space returns. After `ENOSPC` the segment
//!   is also closed, so that it is deleted as soon as its records are acknowledged: a backlog
//!   that filled a disk smaller than `max_bytes` gives its space back once delivered (an active
//!   segment is kept until the spool is half full).
//! * A failed `fdatasync` is not retried: the page cache is not trusted after it. Every record
//!   written to that segment since its last successful fsync is discarded: their appends fail
//!   with [`SpoolError::Sync`] (`Fsync` mode; in `Interval` mode they were in the window of loss
//!   and `flush` reports the error), the segment is cut back to its last synced offset and
//!   closed, and writing continues in a new segment. If the cut-back fails, such a record may
//!   still be read after a restart: the caller was told it failed, and delivery is
//!   at-least-once.
//!
//! # Code layout
//!
//! One module per job; arrows are "uses", and there are no cycles (the `Inner` methods
//! defined in one module call only modules below it):
//!
//! | module | job |
//! |---|---|
//! | `spool` | the public [`Spool`] handle: open (validate, lock, recover, start the flusher), delegate, shut down on drop |
//! | `options` | [`SpoolOptions`], [`Durability`], [`WhenFull`], the `DEFAULT_*` constants, validation |
//! | `state` | `State` (segments, seqs, watermark, acks) and `Inner` (state mutex, condvars, I/O, lock) |
//! | `writer` | `append` / `append_batch`: space, segment roll, one `pwrite` per call, waiting for group commit |
//! | `flusher` | the flusher thread: group-commit fsyncs, `Interval` fsyncs, ack-log fsyncs, `flush`, fsync failures |
//! | `reader` | [`Cursor`], `read_from`, corruption found while reading |
//! | `reclaim` | `ack`, the watermark, the ack log entry, deleting acknowledged segments |
//! | `stats` | [`SpoolStats`], `stats`, `next_seq` |
//! | `recovery` | [`Recovery`]: rebuilding `State` at open (scan, repair, torn tails), the scan `inspect` reuses |
//! | `inspect` | [`inspect()`](fn@inspect), [`Inspection`]: read-only look at a directory |
//! | `layout` | file names in the directory and sorting a listing |
//! | `damaged` | copying damaged bytes into `damaged/` durably |
//! | `format` | segment and record encoding, the scanner |
//! | `acklog` | the `ACKS` file |
//! | `ranges` | a set of seqs as ranges |
//! | [`io`] | the file-system trait, and the real file system |
//! | `sim` | (feature `sim`) in-memory file system with crash and fault injection |
//!
//! `spool` → {`writer`, `flusher`, `reader`} → `reclaim` → `state` → `options`;
//! `spool` → `stats` → `state`; `spool` → `recovery` → `state`, `layout`, `damaged`;
//! `inspect` → `recovery`, `stats`, `layout`, `damaged`; `layout` → `damaged`, `acklog`. The
//! leaves `format`, `acklog`, `ranges`, `io` and `error` use nothing above them.
//!
//! # Testing
//!
//! File I/O goes through [`io::SpoolIo`]. With the cargo feature `sim` (off by default; this
//! crate's own tests turn it on), `sim::SimFs` is an in-memory implementation that models
//! what survives a crash (unsynced bytes and unsynced directory entries are lost, torn writes
//! keep a prefix) and injects faults (`ENOSPC`, `EIO` on write, fsync or truncate).

#![warn(missing_docs)]

mod acklog;
mod damaged;
mod error;
mod flusher;
mod format;
mod inspect;
pub mod io;
mod layout;
mod options;
mod ranges;
mod reader;
mod reclaim;
mod recovery;
#[cfg(feature = "sim")]
pub mod sim;
mod spool;
mod state;
mod stats;
mod writer;

pub use error::SpoolError;
pub use format::{MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use inspect::{Inspection, holds_spool, inspect};
pub use options::{
    DEFAULT_MAX_BYTES, DEFAULT_PREALLOCATE, DEFAULT_SEGMENT_BYTES, Durability, MIN_SEGMENT_BYTES,
    SpoolOptions, WhenFull,
};
pub use reader::Cursor;
pub use recovery::Recovery;
pub use spool::Spool;
pub use stats::SpoolStats;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn spool_is_send_sync() {
        assert_send_sync::<crate::Spool>();
    }
}
