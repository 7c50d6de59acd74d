//! The append path: size checks, waiting for space, rolling segments, one `pwrite` per call,
//! and (in `Fsync` mode) waiting for the flusher's group commit.
//!
//! Invariants kept here:
//! * A call's records are encoded and written with one `pwrite` at the end of the active
//!   segment under the state lock, so records land in seq order and a batch is all or none.
//! * Seqs are assigned before the write and never reused: a failed write still advances
//!   `next_seq` (leaving a gap), and the file is cut back to where the call started. After
//!   `ENOSPC` the segment is closed, so that it is deleted once its records are acknowledged.
//! * A new segment's directory entry is fsynced before any record goes into it (its header
//!   becomes durable with the first fsync of its records), so a durable record is never in a
//!   file that vanishes at a crash.
//! * In `Fsync` mode `Ok` is returned only once the flusher has fsynced past the call's bytes;
//!   if that fsync failed, the call fails with [`SpoolError::Sync`].

use std::io;
use std::ops::Range;
use std::sync::MutexGuard;
use std::time::Instant;

use tracing::{debug, warn};

use crate::error::SpoolError;
use crate::format::{
    MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, encode_record, now_nanos, record_len, segment_header,
};
use crate::io::OpenMode;
use crate::layout::segment_name;
use crate::options::{Durability, WhenFull};
use crate::state::{INDEX_EVERY, IndexEntry, Inner, Segment, State};

impl Inner {
    /// See [`crate::Spool::append_batch`].
    pub(crate) fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<u64>, SpoolError> {
        let mut need = 0u64;
        for p in payloads {
            if p.len() > MAX_PAYLOAD_LEN {
                return Err(SpoolError::TooLarge {
                    len: p.len() as u64,
                    max: MAX_PAYLOAD_LEN as u64,
                });
            }
            need += record_len(p.len());
        }
        if need + SEGMENT_HEADER_LEN > self.opts.max_bytes {
            return Err(SpoolError::TooLarge {
                len: need,
                max: self.opts.max_bytes - SEGMENT_HEADER_LEN,
            });
        }
        let mut st = self.lock();
        if payloads.is_empty() {
            return Ok(st.next_seq..st.next_seq);
        }
        st = self.wait_for_space(st, need)?;

        // Pick the segment: roll when this write would pass segment_bytes.
        if let Some(id) = st.active {
            let seg = &st.segments[&id];
            if seg.written > SEGMENT_HEADER_LEN && seg.written + need > self.opts.segment_bytes {
                st.segments.get_mut(&id).unwrap().sealed = true;
                st.active = None;
            }
        }
        let id = match st.active {
            Some(id) => id,
            None => self.create_segment(&mut st)?,
        };

        let first = st.next_seq;
        let n = payloads.len() as u64;
        let ts = now_nanos();
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        let seg = st.segments.get_mut(&id).unwrap();
        let base = seg.written;
        let mut next_index_at = seg
            .index
            .last()
            .map(|e| e.offset + INDEX_EVERY)
            .unwrap_or(0);
        let mut new_index = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let off = base + buf.len() as u64;
            if off >= next_index_at {
                new_index.push(IndexEntry {
                    seq: first + i as u64,
                    offset: off,
                    ts_nanos: ts,
                });
                next_index_at = off + INDEX_EVERY;
            }
            encode_record(&mut buf, first + i as u64, ts, p);
        }
        let res = seg.file.write_all_at(&buf, base);
        if let Err(e) = res {
            // Seqs are never reused, even for failed writes.
            let path = seg.path.clone();
            let truncated = seg.file.set_len(base);
            if let Err(te) = &truncated {
                warn!(segment = %path.display(), error = %te,
                    "spool: could not cut a failed write off the segment; closing it");
                seg.sealed = true;
            }
            // Disk full: close the segment too. A closed segment is deleted as soon as all its
            // records are acknowledged, while an active one is kept until the spool passes
            // half of `max_bytes`, which a disk smaller than that never lets it reach: the
            // space the delivered backlog holds would never come back.
            let disk_full = e.kind() == io::ErrorKind::StorageFull;
            if disk_full {
                seg.sealed = true;
            }
            let sealed = seg.sealed;
            st.next_seq = first + n;
            if sealed {
                st.active = None;
            }
            st.scratch = buf;
            if disk_full {
                // Its records may all be acknowledged already: then its space comes back now.
                self.reclaim(&mut st, false);
            }
            warn!(segment = %path.display(), error = %e, records = n, "spool: write failed");
            return Err(SpoolError::Write { path, source: e });
        }
        let len = buf.len() as u64;
        let end = base + len;
        seg.written = end;
        seg.seqs = Some(match seg.seqs {
            Some((f, _)) => (f, first + n - 1),
            None => (first, first + n - 1),
        });
        seg.index.extend(new_index);
        st.scratch = buf;
        st.next_seq = first + n;
        st.total_bytes += len;
        st.exists.insert(first, first + n);

        match self.opts.durability {
            Durability::Interval(_) => Ok(first..first + n),
            Durability::Fsync => {
                // Counted so that the flusher can tell when the group it expects has arrived.
                // It needs waking only when idle (the first waiter) or when that group is
                // complete: it checks the state itself after each fsync.
                st.uncovered += 1;
                if st.uncovered == 1 || st.uncovered >= st.last_group {
                    self.work_cv.notify_one();
                }
                loop {
                    if let Some((good, err)) = st.failed.get(&id)
                        && end > *good
                    {
                        return Err(SpoolError::Sync {
                            path: self.dir.join(segment_name(id)),
                            source: err.clone(),
                        });
                    }
                    match st.segments.get(&id) {
                        Some(seg) if seg.synced < end => {}
                        _ => return Ok(first..first + n),
                    }
                    st = self.synced_cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Return once `need` more bytes (plus a segment header) fit under `max_bytes`, reclaiming
    /// acknowledged segments and, with [`WhenFull::Wait`], waiting for acks.
    fn wait_for_space<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        need: u64,
    ) -> Result<MutexGuard<'a, State>, SpoolError> {
        let max = self.opts.max_bytes;
        let fits = |st: &State| st.total_bytes + need + SEGMENT_HEADER_LEN <= max;
        if fits(&st) {
            return Ok(st);
        }
        let full = |st: &State| SpoolError::Full {
            used: st.total_bytes,
            needed: need,
            max,
        };
        // Space may be held by a fully acknowledged active segment.
        self.reclaim(&mut st, true);
        if fits(&st) {
            return Ok(st);
        }
        let WhenFull::Wait(timeout) = self.opts.when_full else {
            return Err(full(&st));
        };
        let deadline = Instant::now() + timeout;
        st.space_waiters += 1;
        let res = loop {
            if fits(&st) {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(full(&st));
            }
            st = self
                .space_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            self.reclaim(&mut st, true);
        };
        st.space_waiters -= 1;
        res.map(|_| st)
    }

    /// Create a new active segment: file with header, directory fsync'ed.
    fn create_segment(&self, st: &mut State) -> Result<u64, SpoolError> {
        let id = st.next_segment_id;
        st.next_segment_id += 1;
        let path = self.dir.join(segment_name(id));
        let file = self
            .io
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| SpoolError::Write {
                path: path.clone(),
                source: e,
            })?;
        let res = file
            .write_all_at(&segment_header(), 0)
            .and_then(|_| self.io.sync_dir(&self.dir));
        if let Err(e) = res {
            let _ = self.io.remove_file(&path);
            return Err(SpoolError::Write { path, source: e });
        }
        debug!(segment = %path.display(), "spool: new segment");
        st.segments.insert(
            id,
            Segment {
                path,
                file,
                seqs: None,
                written: SEGMENT_HEADER_LEN,
                synced: 0,
                synced_last_seq: None,
                sealed: false,
                index: Vec::new(),
            },
        );
        st.active = Some(id);
        st.total_bytes += SEGMENT_HEADER_LEN;
        Ok(id)
    }
}
