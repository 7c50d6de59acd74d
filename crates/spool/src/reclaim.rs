//! Acknowledgements and giving space back: move the watermark, log it, delete segments whose
//! records are all below it.
//!
//! The writer (when full), the flusher (after a failed fsync) and readers (after finding
//! damage) all end up here, so this module calls none of them. Invariants:
//! * A segment is deleted only when every record in it is below the watermark, and only after
//!   the ack log holding that watermark has been fsynced: a deleted record cannot come back
//!   after a crash, and seqs cannot be reused. If that fsync fails, or the ack log is missing
//!   or behind (it could not be written), nothing is deleted: the flusher rewrites the log at
//!   its next cycle and then reclaims. (Deleting first could, after a crash, let recovery
//!   compute a lower next seq than was handed out, and a later append would reuse a seq the
//!   older ack log calls acknowledged: an event lost without a word.)
//! * The active segment is deleted only under space pressure (someone waits for space, or the
//!   spool is over half full), since deleting it forces a new segment (a directory fsync) on
//!   the next append.

use std::io;

use tracing::{debug, warn};

use crate::state::{Inner, State};

impl Inner {
    /// See [`crate::Spool::ack`].
    pub(crate) fn ack(&self, seqs: &[u64]) {
        let mut st = self.lock();
        for &s in seqs {
            if s >= st.watermark && s < st.next_seq && st.exists.contains(s) {
                st.acked.insert(s);
            }
        }
        self.update_watermark(&mut st);
    }

    /// Advance the watermark; if it moved, record it in the ack log and reclaim segments.
    pub(crate) fn update_watermark(&self, st: &mut State) {
        if !st.advance_watermark() {
            return;
        }
        let (w, n) = (st.watermark, st.next_seq);
        if let Some(log) = st.acklog.as_mut()
            && let Err(e) = log.record(&*self.io, w, n)
        {
            warn!(error = %e, "spool: could not write the ack log; will rewrite it");
            st.ack_rewrite = true;
        }
        self.reclaim(st, false);
    }

    /// Delete sealed segments holding nothing unacknowledged. With `pressure`, also close
    /// and delete a fully acknowledged active segment.
    pub(crate) fn reclaim(&self, st: &mut State, pressure: bool) {
        let pressure = pressure || st.space_waiters > 0 || st.total_bytes * 2 > self.opts.max_bytes;
        let w = st.watermark;
        let done: Vec<u64> = st
            .segments
            .iter()
            .filter(|(id, s)| {
                let all_acked = s.seqs.is_none_or(|(_, last)| last < w);
                let active = st.active == Some(**id);
                all_acked && (s.sealed || (active && pressure && s.seqs.is_some()))
            })
            .map(|(id, _)| *id)
            .collect();
        if done.is_empty() {
            return;
        }
        // Make the watermark durable before the records disappear: then an acknowledged,
        // deleted record can never come back, and seqs are never reused after a crash.
        let durable = match st.acklog.as_mut() {
            _ if st.ack_rewrite => false,
            None => false,
            Some(log) if !log.dirty => true,
            Some(log) => match log.file().sync_data() {
                Ok(()) => {
                    log.dirty = false;
                    true
                }
                Err(e) => {
                    warn!(error = %e, "spool: fsync of the ack log failed; will rewrite it");
                    false
                }
            },
        };
        if !durable {
            st.ack_rewrite = true;
            debug!("spool: acknowledged segments kept until the ack log is durable again");
            return;
        }
        for id in done {
            let path = st.segments[&id].path.clone();
            if let Err(e) = self.io.remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(segment = %path.display(), error = %e, "spool: could not delete an acknowledged segment");
                continue;
            }
            let seg = st.segments.remove(&id).unwrap();
            st.total_bytes -= seg.size;
            if st.active == Some(id) {
                st.active = None;
            }
            debug!(segment = %path.display(), "spool: segment fully acknowledged, deleted");
        }
        self.space_cv.notify_all();
    }
}
