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
//! * With [`crate::SpoolOptions::preallocate`], a new segment reserves its space at once
//!   (`fallocate`: zeros the file system already holds), counted against `max_bytes` from
//!   then on; a segment closed by a roll gives back what it did not use. Recovery takes a
//!   zero tail for unused reserved space, not for a torn write.
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

/// How far ahead of the data [`zero_ahead`] keeps written zeros, and in what steps.
const ZERO_AHEAD: u64 = 1 << 20;

/// Write zeros over reserved space ahead of the data, a step at a time. `fallocate` reserves
/// space as "unwritten" extents: the first write into each block makes the file system
/// convert it, a journal commit that the next `fdatasync` waits for. Zeros written ahead are
/// converted by one fsync per step, so the fsyncs of records written over them commit data
/// only (measured in BENCHMARKS.md). Zeros are what recovery takes for unused space, so this
/// changes nothing on disk; if a write of them fails, records go on into unwritten space.
fn zero_ahead(seg: &mut Segment, end: u64) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    if seg.zeroed >= seg.size || seg.zeroed >= end + ZERO_AHEAD / 2 {
        return;
    }
    let from = seg.zeroed.max(end);
    let to = (from + ZERO_AHEAD).min(seg.size);
    let mut off = from;
    while off < to {
        let n = ((to - off) as usize).min(ZEROS.len());
        if let Err(e) = seg.file.write_all_at(&ZEROS[..n], off) {
            debug!(segment = %seg.path.display(), error = %e, "spool: could not write zeros ahead");
            seg.zeroed = seg.size;
            return;
        }
        off += n as u64;
    }
    seg.zeroed = to;
}

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
                self.seal_active(&mut st);
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
            let mut given_back = 0;
            match &truncated {
                // Reserved space past `base` went with the cut.
                Ok(()) => {
                    given_back = seg.size - base;
                    seg.size = base;
                }
                Err(te) => {
                    warn!(segment = %path.display(), error = %te,
                        "spool: could not cut a failed write off the segment; closing it");
                    seg.sealed = true;
                }
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
            st.total_bytes -= given_back;
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
        let end = base + buf.len() as u64;
        let grown = end.saturating_sub(seg.size);
        seg.size += grown;
        seg.written = end;
        seg.seqs = Some(match seg.seqs {
            Some((f, _)) => (f, first + n - 1),
            None => (first, first + n - 1),
        });
        seg.index.extend(new_index);
        zero_ahead(seg, end);
        st.scratch = buf;
        st.next_seq = first + n;
        st.total_bytes += grown;
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
        // Either the write goes into space the active segment already reserved (then it
        // does not roll: reserved space ends at or before `segment_bytes`), or it needs
        // `need` more bytes, plus a header should it start a new segment.
        let fits = |st: &State| {
            let reserved = st
                .active
                .is_some_and(|id| st.segments[&id].written + need <= st.segments[&id].size);
            reserved || st.total_bytes + need + SEGMENT_HEADER_LEN <= max
        };
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

    /// Close the active segment to appends and give back the space it reserved and did not
    /// use. If that fails the space stays counted; recovery cuts it off at the next open.
    fn seal_active(&self, st: &mut State) {
        let Some(id) = st.active.take() else {
            return;
        };
        st.segments.get_mut(&id).unwrap().sealed = true;
        Self::give_back_reserved(st, id);
    }

    /// At close: a spool that was closed leaves files no longer than their data.
    pub(crate) fn release_reserved(&self) {
        let mut st = self.lock();
        if let Some(id) = st.active {
            Self::give_back_reserved(&mut st, id);
        }
    }

    fn give_back_reserved(st: &mut State, id: u64) {
        let seg = st.segments.get_mut(&id).unwrap();
        if seg.size > seg.written {
            match seg.file.set_len(seg.written) {
                Ok(()) => {
                    let unused = seg.size - seg.written;
                    seg.size = seg.written;
                    st.total_bytes -= unused;
                }
                Err(e) => debug!(segment = %seg.path.display(), error = %e,
                    "spool: could not give back a closed segment's unused reserved space"),
            }
        }
    }

    /// Create a new active segment: file with header, space reserved (if on), directory
    /// fsync'ed.
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
        // Reserve what the budget allows, up to a whole segment. Not fatal if it cannot be
        // done: the segment then grows as it is written, as without the option.
        let reserve = self
            .opts
            .segment_bytes
            .min(self.opts.max_bytes.saturating_sub(st.total_bytes));
        let mut size = SEGMENT_HEADER_LEN;
        if self.opts.preallocate && reserve > SEGMENT_HEADER_LEN {
            match file.allocate(reserve) {
                Ok(()) => size = reserve,
                Err(e) => {
                    // A failed fallocate may have reserved part of it: count what is there.
                    size = file.len().unwrap_or(size).max(size);
                    debug!(segment = %path.display(), error = %e,
                        "spool: could not reserve the segment's space; it grows as written");
                }
            }
        }
        debug!(segment = %path.display(), reserved = size, "spool: new segment");
        st.segments.insert(
            id,
            Segment {
                path,
                file,
                seqs: None,
                written: SEGMENT_HEADER_LEN,
                size,
                zeroed: SEGMENT_HEADER_LEN,
                synced: 0,
                synced_last_seq: None,
                sealed: false,
                index: Vec::new(),
            },
        );
        st.active = Some(id);
        st.total_bytes += size;
        Ok(id)
    }
}
