//! Reading unacknowledged records back in seq order: [`Cursor`] and `read_from`.
//!
//! Reads go to the segment files with the state lock dropped, so a slow read does not stall
//! appenders. Invariants:
//! * Only visible records are returned: in `Fsync` mode the fsynced prefix of a segment, in
//!   `Interval` mode everything written.
//! * A cursor does not move past a segment until all of it is visible, so records come out in
//!   seq order; never an acknowledged one, and not twice to one cursor until it is reset.
//! * A record that fails its checksum here (corruption after the write) is copied to
//!   `damaged/`, counted once, and its seqs are no longer expected; the reader skips it.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::error;

use crate::damaged::save_damaged;
use crate::error::SpoolError;
use crate::format::{SEGMENT_HEADER_LEN, Scanned, Scanner};
use crate::io::SpoolFile;
use crate::layout::segment_name;
use crate::options::Durability;
use crate::state::Inner;

/// A reader position. Starts at the oldest unacknowledged record; [`crate::Spool::read_from`]
/// advances it. Reset it (or make a new one) to read everything unacknowledged again, e.g.
/// after a reconnect.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    next_seq: u64,
    /// (segment id, offset of the record with seq >= next_seq)
    hint: Option<(u64, u64)>,
}

impl Cursor {
    /// A cursor at the oldest unacknowledged record.
    pub fn new() -> Self {
        Self::default()
    }
    /// Go back to the oldest unacknowledged record.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
    /// The smallest seq the next read may return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Inner {
    /// See [`crate::Spool::read_from`].
    pub(crate) fn read_from(
        &self,
        cursor: &mut Cursor,
        max_records: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        while out.len() < max_records {
            // Locate the segment and range to read.
            let st = self.lock();
            let start_seq = cursor.next_seq.max(st.watermark);
            if start_seq != cursor.next_seq {
                cursor.hint = None;
                cursor.next_seq = start_seq;
            }
            let fsync = self.opts.durability == Durability::Fsync;
            // (segment, offset, smallest seq that may be stored at that offset)
            let mut found = None;
            if let Some((id, off)) = cursor.hint
                && let Some(seg) = st.segments.get(&id)
                && off <= seg.written
            {
                found = Some((id, off, start_seq));
            }
            if found.is_none() {
                for (id, seg) in &st.segments {
                    if let Some((first, last)) = seg.seqs
                        && last >= start_seq
                    {
                        let (off, lo) = seg
                            .index_lookup(start_seq)
                            .map(|e| (e.offset, e.seq))
                            .unwrap_or((SEGMENT_HEADER_LEN, first));
                        found = Some((*id, off, lo));
                        break;
                    }
                }
            }
            let Some((id, off, mut lo)) = found else {
                break;
            };
            let seg = &st.segments[&id];
            let (visible, visible_last) = if fsync {
                (seg.synced, seg.synced_last_seq)
            } else {
                (seg.written, seg.seqs.map(|x| x.1))
            };
            let complete = seg.sealed && (!fsync || seg.synced >= seg.written);
            let seg_last = seg.seqs.map(|x| x.1);
            let file = seg.file.clone();
            let acked: BTreeSet<u64> = st.acked.range(start_seq..).copied().collect();
            drop(st);

            let mut sc = Scanner::new(file.clone(), off, visible.max(off), true);
            let mut stopped_early = false;
            while out.len() < max_records {
                let Some(item) = sc
                    .next_item()
                    .map_err(|e| SpoolError::io("read", self.dir.join(segment_name(id)), e))?
                else {
                    break;
                };
                match item {
                    Scanned::Record {
                        header, payload, ..
                    } => {
                        lo = header.seq + 1;
                        if header.seq >= start_seq && !acked.contains(&header.seq) {
                            out.push((header.seq, payload.unwrap_or_default()));
                        }
                    }
                    // Zeros inside written data are damage too: a write the disk lost.
                    Scanned::Damaged { offset, len }
                    | Scanned::TornTail { offset, len, .. }
                    | Scanned::Unused { offset, len } => {
                        // Find the seq of the record after the damage (or the end).
                        let hi = match sc.next_item() {
                            // (re-read on the next pass, from the hint)
                            Ok(Some(Scanned::Record { header, .. })) => header.seq,
                            _ => visible_last.map(|l| l + 1).unwrap_or(lo),
                        };
                        self.damaged_at_runtime(id, &file, offset, len, lo, hi);
                        cursor.next_seq = hi.max(cursor.next_seq);
                        cursor.hint = Some((id, offset + len));
                        stopped_early = true;
                        break;
                    }
                }
            }
            if stopped_early {
                continue;
            }
            if out.len() >= max_records {
                let last = out.last().map(|r| r.0).unwrap_or(start_seq);
                cursor.next_seq = cursor.next_seq.max(last + 1);
                cursor.hint = Some((id, sc.pos()));
                break;
            }
            // Reached the visible end of this segment.
            if let Some(l) = out.last() {
                cursor.next_seq = cursor.next_seq.max(l.0 + 1);
            }
            if complete {
                if let Some(l) = seg_last {
                    cursor.next_seq = cursor.next_seq.max(l + 1);
                }
                cursor.hint = self.next_segment_start(id);
                if cursor.hint.is_none() {
                    break;
                }
            } else {
                cursor.hint = Some((id, sc.pos()));
                break;
            }
        }
        Ok(out)
    }

    fn next_segment_start(&self, after: u64) -> Option<(u64, u64)> {
        let st = self.lock();
        st.segments
            .range(after + 1..)
            .next()
            .map(|(id, _)| (*id, SEGMENT_HEADER_LEN))
    }

    /// A record read back at run time failed its checksum (storage corruption after the
    /// write). Save the bytes, count it, and stop expecting seqs `[lo, hi)`.
    fn damaged_at_runtime(
        &self,
        id: u64,
        file: &Arc<dyn SpoolFile>,
        offset: u64,
        len: u64,
        lo: u64,
        hi: u64,
    ) {
        {
            let mut st = self.lock();
            if !st.damaged_seen.insert((id, offset)) {
                return;
            }
            let n = st.exists.count_in(lo, hi).max(1);
            st.damaged_records += n;
            st.forget(lo, hi);
            self.update_watermark(&mut st);
        }
        let name = segment_name(id);
        match save_damaged(&*self.io, &self.dir, &name, file, offset, len) {
            Ok(p) => error!(segment = %name, offset, bytes = len, moved_to = %p.display(),
                "spool: damaged record(s) found while reading (checksum mismatch); copied aside"),
            Err(e) => error!(segment = %name, offset, bytes = len, error = %e,
                "spool: damaged record(s) found while reading; copying them aside failed"),
        }
    }
}
