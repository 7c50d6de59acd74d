//! The public handle, [`Spool`]: open (validate options, lock the directory, recover, start the
//! flusher), delegate every call, and shut down cleanly on drop.
//!
//! Thin on purpose: the work lives in `writer`, `reader`, `reclaim`, `flusher`, `stats` and
//! `recovery`, which share one `state::Inner`. Invariants: while a `Spool` exists its
//! directory lock is held and its flusher thread runs; dropping it stops the flusher only
//! after everything written has been fsynced (or its fsync has failed), then releases the lock.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::SpoolError;
use crate::flusher;
use crate::io::{LOCK_FILE, LockError, SpoolIo, StdIo};
use crate::options::SpoolOptions;
use crate::reader::Cursor;
use crate::recovery::{Recovery, recover};
use crate::state::Inner;
use crate::stats::SpoolStats;

/// The disk queue. `Send + Sync`: share it with `Arc`.
pub struct Spool {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

impl Spool {
    /// Open (creating if needed) the spool in `dir` on the real file system, recovering what
    /// a previous process left (see the crate docs, "Recovery rules").
    ///
    /// # Errors
    /// [`SpoolError::InvalidOptions`] for bad options, [`SpoolError::Locked`] if another
    /// opener holds the directory, [`SpoolError::Io`] if it cannot be created, locked or
    /// listed, or the flusher thread cannot start. Damage found on disk is not an error: it
    /// is repaired and reported in the [`Recovery`].
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        Self::open_with_io(dir, opts, Arc::new(StdIo))
    }

    /// Open with the given file I/O (tests inject faults through it).
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub fn open_with_io(
        dir: &Path,
        opts: SpoolOptions,
        io: Arc<dyn SpoolIo>,
    ) -> Result<(Spool, Recovery), SpoolError> {
        let opts = opts.validated()?;
        io.create_dir_all(dir)
            .map_err(|e| SpoolError::io("create directory", dir, e))?;
        let guard = io.lock(dir).map_err(|e| match e {
            LockError::Held { pid } => SpoolError::Locked {
                dir: dir.to_path_buf(),
                pid,
            },
            LockError::Io(e) => SpoolError::io("lock", dir.join(LOCK_FILE), e),
        })?;
        let (state, rec) = recover(&*io, dir)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            io,
            opts,
            state: Mutex::new(state),
            synced_cv: Condvar::new(),
            work_cv: Condvar::new(),
            space_cv: Condvar::new(),
            _lock: guard,
        });
        let flusher = flusher::spawn(inner.clone())
            .map_err(|e| SpoolError::io("spawn flusher thread", dir, e))?;
        Ok((
            Spool {
                inner,
                flusher: Some(flusher),
            },
            rec,
        ))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options in force (after validation: `segment_bytes` may have been lowered).
    pub fn options(&self) -> &SpoolOptions {
        &self.inner.opts
    }

    /// Append one record; returns its seq. Durable per [`crate::Durability`] when `Ok`.
    ///
    /// # Errors
    /// As [`Spool::append_batch`].
    pub fn append(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_batch(&[payload]).map(|r| r.start)
    }

    /// Append several records with one write and (in `Fsync` mode) one shared fsync. All or
    /// none: on error none of them is stored. Returns their seqs.
    ///
    /// # Errors
    /// [`SpoolError::TooLarge`] if a payload or the batch can never fit;
    /// [`SpoolError::Full`] if there is no room (after waiting, with
    /// [`crate::WhenFull::Wait`]); [`SpoolError::Write`] if writing (or starting a new
    /// segment) failed; [`SpoolError::Sync`] (`Fsync` mode) if the fsync covering the records
    /// failed. Seqs of a failed write or fsync are not reused.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<u64>, SpoolError> {
        self.inner.append_batch(payloads)
    }

    /// Up to `max_records` unacknowledged records after the cursor, in seq order, read from
    /// the segment files (only records that are durable in `Fsync` mode, or written in
    /// `Interval` mode). An empty result means nothing more is available now.
    ///
    /// # Errors
    /// [`SpoolError::Io`] if a segment cannot be read. Records that fail their checksum are
    /// not an error: they are skipped, counted and copied to `damaged/`.
    pub fn read_from(
        &self,
        cursor: &mut Cursor,
        max_records: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        self.inner.read_from(cursor, max_records)
    }

    /// Acknowledge records (any order; unknown or repeated seqs are ignored). Segments whose
    /// records are all acknowledged are deleted. Acks are persisted lazily (see crate docs).
    ///
    /// # Errors
    /// None at present: failures to write the ack log are logged and retried by the flusher.
    /// The `Result` leaves room for reporting them.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        self.inner.ack(seqs);
        Ok(())
    }

    /// Make everything appended and acknowledged so far durable (useful in `Interval` mode).
    ///
    /// # Errors
    /// [`SpoolError::Sync`] if a segment fsync failed while this call waited (the records
    /// written to it since its last good fsync are discarded).
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.inner.flush()
    }

    /// The seq the next append gets: every record appended before this call has a lower
    /// seq. Cheap (no file access, no walk over segments), unlike [`Spool::stats`].
    pub fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// Point-in-time statistics. Reads a little of the oldest segment for
    /// [`SpoolStats::oldest_unacked_age`]; for the next seq alone use [`Spool::next_seq`].
    pub fn stats(&self) -> SpoolStats {
        self.inner.stats()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.work_cv.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        self.inner.release_reserved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SpoolOptions {
        SpoolOptions::default()
            .with_max_bytes(1 << 20)
            .with_segment_bytes(4096)
    }

    #[test]
    fn next_seq_follows_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (s, rec) = Spool::open(dir.path(), opts()).unwrap();
        assert_eq!(rec.next_seq, 0);
        assert_eq!(s.next_seq(), 0);
        assert_eq!(s.append(b"a").unwrap(), 0);
        assert_eq!(s.next_seq(), 1);
        assert_eq!(s.append_batch(&[b"b", b"c", b"d"]).unwrap(), 1..4);
        assert_eq!(s.next_seq(), 4);
        // Calls that store nothing and assign no seq leave it alone.
        assert_eq!(s.append_batch(&[]).unwrap(), 4..4);
        let huge = vec![0u8; crate::MAX_PAYLOAD_LEN + 1];
        assert!(matches!(s.append(&huge), Err(SpoolError::TooLarge { .. })));
        assert_eq!(s.next_seq(), 4);
        // Enough appends to span several segments.
        for i in 4..200u64 {
            assert_eq!(s.append(&[7u8; 100]).unwrap(), i);
        }
        assert!(s.stats().segments > 1);
        assert_eq!(s.next_seq(), 200);
        assert_eq!(s.next_seq(), s.stats().next_seq);
    }

    #[test]
    fn next_seq_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Spool::open(dir.path(), opts()).unwrap();
            for _ in 0..10 {
                s.append(b"x").unwrap();
            }
        }
        // Unacknowledged records on disk: continue after the last one.
        let (s, rec) = Spool::open(dir.path(), opts()).unwrap();
        assert_eq!(rec.next_seq, 10);
        assert_eq!(s.next_seq(), 10);
        assert_eq!(s.append(b"y").unwrap(), 10);
        s.ack(&(0..11).collect::<Vec<_>>()).unwrap();
        drop(s);
        // Everything acknowledged (segments gone): the ack log still keeps seqs from being
        // reused.
        let (s, rec) = Spool::open(dir.path(), opts()).unwrap();
        assert_eq!(rec.records, 0);
        assert_eq!(s.next_seq(), 11);
        assert_eq!(s.append(b"z").unwrap(), 11);
        assert_eq!(s.next_seq(), 12);
    }

    #[test]
    fn next_seq_in_interval_mode() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts().with_durability(crate::Durability::Interval(
            std::time::Duration::from_secs(3600),
        ));
        let (s, _) = Spool::open(dir.path(), o.clone()).unwrap();
        s.append_batch(&[b"a", b"b"]).unwrap();
        assert_eq!(s.next_seq(), 2);
        drop(s);
        let (s, _) = Spool::open(dir.path(), o).unwrap();
        assert_eq!(s.next_seq(), 2);
    }
}
