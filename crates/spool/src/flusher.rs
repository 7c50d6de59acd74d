//! The background flusher thread: the fsync side of group commit in `Fsync` mode, the periodic
//! fsync in `Interval` mode, lazy ack-log fsyncs, [`crate::Spool::flush`], and what happens
//! when an fsync fails.
//!
//! One thread does every data fsync, with the state lock dropped, so appenders keep writing
//! while it syncs and one `fdatasync` releases every appender whose bytes it covered. Before
//! an fsync it waits, briefly and adaptively, for the appenders the previous one released to
//! write again ([`Inner::gather`]), so that each fsync covers the whole group.
//! Invariants:
//! * `Segment::synced` only grows, and only to an offset that was written before the fsync
//!   started; never for a segment whose fsync has failed.
//! * A failed `fdatasync` is never retried (the page cache is not trusted after it): the
//!   records written since the last good fsync are failed, the file is cut back to the synced
//!   offset and the segment is sealed ([`Inner::sync_failed`]).
//! * The ack log is fsynced at least every [`ACK_SYNC_EVERY`] (`Fsync` mode) or every interval
//!   (`Interval` mode) when dirty, and always on flush and shutdown.
//! * On shutdown the thread exits only once nothing written is left unsynced.

use std::io;
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::acklog::AckLog;
use crate::error::SpoolError;
use crate::format::SEGMENT_HEADER_LEN;
use crate::io::SpoolFile;
use crate::layout::segment_name;
use crate::options::Durability;
use crate::state::{Inner, State};

/// In `Fsync` mode, acks are made durable at least this often (if any arrived).
const ACK_SYNC_EVERY: Duration = Duration::from_secs(1);

/// The longest the flusher holds an fsync back to gather appenders ([`Inner::gather`]).
const MAX_GATHER: Duration = Duration::from_millis(2);

/// (segment id, file, written offset to make durable, last seq within it)
type SyncJob = (u64, Arc<dyn SpoolFile>, u64, Option<u64>);

/// Start the flusher thread of `inner`; it runs until `State::shutdown` is set and everything
/// is synced.
pub(crate) fn spawn(inner: Arc<Inner>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spool-flusher".into())
        .spawn(move || inner.flusher())
}

impl Inner {
    /// See [`crate::Spool::flush`].
    pub(crate) fn flush(&self) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let failures_before = st.sync_failures;
        st.flush_requested += 1;
        let want = st.flush_requested;
        self.work_cv.notify_one();
        while st.flush_done < want {
            st = self.synced_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.sync_failures > failures_before {
            let (id, (_, err)) = st.failed.iter().max_by_key(|(id, _)| **id).unwrap();
            return Err(SpoolError::Sync {
                path: self.dir.join(segment_name(*id)),
                source: err.clone(),
            });
        }
        Ok(())
    }

    /// The background flusher: group commit in `Fsync` mode, periodic fsync in `Interval`.
    fn flusher(&self) {
        let mut st = self.lock();
        let mut last_sync = Instant::now();
        loop {
            // Wait for something to do.
            loop {
                let flush = st.flush_requested > st.flush_done;
                let ack_due = (st.ack_rewrite || st.acklog.as_ref().is_some_and(|l| l.dirty))
                    && st.ack_synced_at.elapsed() >= ACK_SYNC_EVERY;
                if st.shutdown || flush {
                    break;
                }
                match self.opts.durability {
                    Durability::Fsync => {
                        if st.dirty() || ack_due {
                            break;
                        }
                        // Nothing written waits for an fsync, so no appender does either
                        // (after a failed fsync cut the tail off, its appenders fail on
                        // their own): the next one to write must find 0 and wake us.
                        st.uncovered = 0;
                        st = self
                            .work_cv
                            .wait_timeout(st, ACK_SYNC_EVERY)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Durability::Interval(d) => {
                        let elapsed = last_sync.elapsed();
                        let ack_dirty =
                            st.ack_rewrite || st.acklog.as_ref().is_some_and(|l| l.dirty);
                        if elapsed >= d && (st.dirty() || ack_dirty) {
                            break;
                        }
                        let wait = if elapsed >= d { d } else { d - elapsed };
                        st = self
                            .work_cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
            if matches!(self.opts.durability, Durability::Fsync) {
                st = self.gather(st);
            }
            let flush_gen = st.flush_requested;
            if st.ack_rewrite {
                match AckLog::create(&*self.io, &self.dir, st.watermark, st.next_seq) {
                    Ok(l) => {
                        st.acklog = Some(l);
                        st.ack_rewrite = false;
                        // Deletions waited for a durable ack log (see reclaim.rs).
                        self.reclaim(&mut st, false);
                    }
                    Err(e) => warn!(error = %e, "spool: could not rewrite the ack log; acks \
                        may be delivered again after a restart"),
                }
            }
            let jobs: Vec<SyncJob> = st
                .segments
                .iter()
                .filter(|(_, s)| s.synced < s.written)
                .map(|(id, s)| (*id, s.file.clone(), s.written, s.seqs.map(|x| x.1)))
                .collect();
            // The ack log rides along at most once per ACK_SYNC_EVERY in Fsync mode (acks
            // may be redelivered after a crash anyway), always on flush and shutdown.
            let ack_now = flush_gen > st.flush_done
                || st.shutdown
                || match self.opts.durability {
                    Durability::Interval(_) => true,
                    Durability::Fsync => st.ack_synced_at.elapsed() >= ACK_SYNC_EVERY,
                };
            let ack_file = st.acklog.as_mut().filter(|_| ack_now).and_then(|l| {
                let d = l.dirty;
                l.dirty = false;
                d.then(|| l.file())
            });
            let shutting_down = st.shutdown;
            // Every appender waiting now has written: this fsync covers them all.
            let group = std::mem::take(&mut st.uncovered);
            drop(st);

            let started = Instant::now();
            let results: Vec<io::Result<()>> = jobs.iter().map(|j| j.1.sync_data()).collect();
            let took = started.elapsed();
            let ack_failed = match ack_file.map(|f| f.sync_data()) {
                Some(Err(e)) => {
                    warn!(error = %e, "spool: fsync of the ack log failed; will rewrite it");
                    true
                }
                _ => false,
            };
            last_sync = Instant::now();

            st = self.lock();
            st.ack_rewrite |= ack_failed;
            if !jobs.is_empty() {
                st.last_group = group;
                st.last_fsync = took;
            }
            if ack_now {
                st.ack_synced_at = last_sync;
            }
            for ((id, _, target, last_seq), r) in jobs.into_iter().zip(results) {
                match r {
                    Ok(()) => {
                        let failed = st.failed.contains_key(&id);
                        if let Some(seg) = st.segments.get_mut(&id)
                            && !failed
                            && seg.synced < target
                        {
                            seg.synced = target;
                            seg.synced_last_seq = last_seq;
                        }
                    }
                    Err(e) => self.sync_failed(&mut st, id, e),
                }
            }
            st.flush_done = st.flush_done.max(flush_gen);
            let done = shutting_down && !st.dirty();
            // Notified with the lock dropped: each waiter it wakes takes the lock at once
            // instead of waking only to sleep again on it (context switches dominated the
            // profile of eight appending threads).
            drop(st);
            self.synced_cv.notify_all();
            if done {
                return;
            }
            st = self.lock();
        }
    }

    /// Gathering, the other half of group commit (`Fsync` mode). An fsync covers only the
    /// appenders that have written when it starts, and the ones the previous fsync released
    /// need a moment (to be scheduled, to build their next record) before they write again.
    /// Started at once, each fsync would cover the first one or two of them and leave the
    /// rest a whole fsync behind (measured: 2.6 appends per fsync from 8 threads). So wait
    /// until as many appenders wait as the last fsync released, for at most half as long as
    /// that fsync took (and [`MAX_GATHER`]): a lone appender never waits, the group adapts
    /// when appenders come and go, and the added latency stays a fraction of the disk's own.
    fn gather<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + (st.last_fsync / 2).min(MAX_GATHER);
        while st.uncovered < st.last_group && !st.shutdown && st.flush_requested <= st.flush_done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .work_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st
    }

    /// An fsync of segment `id` failed: its unsynced tail is unknown. Fail those records, cut
    /// the file back to the synced offset, close the segment (writing continues in a new one).
    fn sync_failed(&self, st: &mut State, id: u64, e: io::Error) {
        st.sync_failures += 1;
        let Some(seg) = st.segments.get_mut(&id) else {
            return;
        };
        let good = seg.synced.max(SEGMENT_HEADER_LEN);
        let good_last = seg.synced_last_seq;
        let lost_lo = match good_last {
            Some(l) => l + 1,
            None => seg.seqs.map(|x| x.0).unwrap_or(0),
        };
        let lost_hi = seg.seqs.map(|x| x.1 + 1).unwrap_or(lost_lo);
        error!(segment = %seg.path.display(), error = %e, records = lost_hi.saturating_sub(lost_lo),
            durable_bytes = good,
            "spool: fsync failed; the records written since the last successful fsync are \
            discarded (their appends fail) and the segment is closed");
        if let Err(te) = seg.file.set_len(good) {
            warn!(segment = %seg.path.display(), error = %te, "spool: could not truncate after \
                a failed fsync; the discarded records may be delivered after a restart");
        }
        // Reserved space past `written` goes too: the segment is closed.
        let removed = seg.size - good.min(seg.size);
        seg.size -= removed;
        seg.written = good.min(seg.written);
        seg.synced = seg.written;
        seg.sealed = true;
        seg.seqs = match (seg.seqs, good_last) {
            (Some((f, _)), Some(l)) => Some((f, l)),
            _ => None,
        };
        seg.index.retain(|e| e.offset < good);
        st.total_bytes -= removed;
        st.failed.insert(id, (good, Arc::new(e)));
        if st.active == Some(id) {
            st.active = None;
        }
        st.forget(lost_lo, lost_hi);
        self.update_watermark(st);
    }
}
