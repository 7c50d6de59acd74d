use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use crate::acklog::{self, AckLog};
use crate::error::SpoolError;
use crate::format::{
    MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, Scanned, Scanner, encode_record, record_len,
    segment_header,
};
use crate::io::{LockError, LockGuard, OpenMode, SpoolFile, SpoolIo, StdIo};
use crate::ranges::RangeSet;
use crate::recovery::{self, DAMAGED_DIR, repair_segment, scan_segment, segment_name};

/// Default [`SpoolOptions::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default [`SpoolOptions::segment_bytes`]: 32 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 32 << 20;
/// Smallest accepted [`SpoolOptions::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// A sparse index entry is kept every this many bytes of a segment.
const INDEX_EVERY: u64 = 64 << 10;
/// In `Fsync` mode, acks are made durable at least this often (if any arrived).
const ACK_SYNC_EVERY: Duration = Duration::from_secs(1);

/// When `append` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the bytes are `fdatasync`ed. Concurrent appenders share one fsync (group commit).
    Fsync,
    /// At once, once the bytes are in the page cache (so they survive the process being
    /// killed); a background flusher fsyncs at least every interval. An OS crash or power loss
    /// can lose the appends of the last interval.
    Interval(Duration),
}

/// What `append` does when the spool holds `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Fail at once with [`SpoolError::Full`].
    Reject,
    /// Wait up to this long for acks to free space, then fail with [`SpoolError::Full`].
    Wait(Duration),
}

/// Options of [`Spool::open`].
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Bound on the bytes of all segment files (headers included).
    pub max_bytes: u64,
    /// A segment is closed and a new one started when the next write would pass this size.
    /// Space is reclaimed a whole segment at a time, so keep this well below `max_bytes`
    /// (it is lowered to `max_bytes / 4` if larger).
    pub segment_bytes: u64,
    pub durability: Durability,
    pub when_full: WhenFull,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            durability: Durability::Fsync,
            when_full: WhenFull::Reject,
        }
    }
}

/// What [`Spool::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged records recovered (they will be read first).
    pub records: u64,
    /// Bytes of the segment files kept.
    pub bytes: u64,
    /// Segment files kept.
    pub segments: usize,
    /// Every seq below this was acknowledged (from the ack log).
    pub acked_watermark: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// Records whose checksum failed (estimated per damaged region), moved into `damaged/`.
    pub damaged_records: u64,
    pub damaged_bytes: u64,
    /// Bytes of incomplete writes cut off the end of segments.
    pub torn_tail_bytes: u64,
    /// Segment files removed because they held no unacknowledged record.
    pub removed_segments: usize,
    /// Files and directories that are not the spool's, left alone.
    pub unknown_files: Vec<String>,
    /// Segment files that could not be opened or repaired; left alone, not used.
    pub unreadable_segments: Vec<String>,
}

/// Point-in-time statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Unacknowledged records.
    pub records: u64,
    /// Bytes of the segment files.
    pub bytes: u64,
    pub segments: usize,
    /// Age of the oldest unacknowledged record (from the append time in its header).
    pub oldest_unacked_age: Option<Duration>,
    /// Damaged records found since open (by recovery or by reads).
    pub damaged_records: u64,
    /// Failed fsyncs since open.
    pub sync_failures: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
}

/// A reader position. Starts at the oldest unacknowledged record; [`Spool::read_from`]
/// advances it. Reset it (or make a new one) to read everything unacknowledged again, e.g.
/// after a reconnect.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    next_seq: u64,
    /// (segment id, offset of the record with seq >= next_seq)
    hint: Option<(u64, u64)>,
}

impl Cursor {
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

#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    seq: u64,
    offset: u64,
    ts_nanos: u64,
}

struct Segment {
    path: PathBuf,
    file: Arc<dyn SpoolFile>,
    /// (first, last) seq of the records in it.
    seqs: Option<(u64, u64)>,
    /// End of the valid data (file size).
    written: u64,
    /// Durable prefix.
    synced: u64,
    /// Last seq within the synced prefix.
    synced_last_seq: Option<u64>,
    /// No more appends go here.
    sealed: bool,
    index: Vec<IndexEntry>,
}

impl Segment {
    fn index_lookup(&self, seq: u64) -> Option<IndexEntry> {
        let i = self.index.partition_point(|e| e.seq <= seq);
        (i > 0).then(|| self.index[i - 1])
    }
}

/// (segment id, file, written offset to make durable, last seq within it)
type SyncJob = (u64, Arc<dyn SpoolFile>, u64, Option<u64>);

struct State {
    segments: BTreeMap<u64, Segment>,
    active: Option<u64>,
    next_segment_id: u64,
    next_seq: u64,
    /// Lowest unacknowledged seq (or `next_seq`): everything below is acknowledged.
    watermark: u64,
    /// Seqs of stored records `>= watermark`.
    exists: RangeSet,
    /// Acknowledged seqs above the watermark (acks that came out of order).
    acked: BTreeSet<u64>,
    total_bytes: u64,
    /// Segments whose fsync failed, with the offset that was durable.
    failed: HashMap<u64, (u64, Arc<io::Error>)>,
    acklog: Option<AckLog>,
    /// A write or fsync of the ack log failed: write a fresh one (tmp file + rename) at the
    /// flusher's next cycle rather than trusting the old file.
    ack_rewrite: bool,
    ack_synced_at: Instant,
    damaged_records: u64,
    damaged_seen: HashSet<(u64, u64)>,
    sync_failures: u64,
    scratch: Vec<u8>,
    space_waiters: usize,
    flush_requested: u64,
    flush_done: u64,
    shutdown: bool,
}

impl State {
    fn unacked(&self) -> u64 {
        self.exists.count() - self.acked.len() as u64
    }

    fn advance_watermark(&mut self) -> bool {
        let old = self.watermark;
        loop {
            match self.exists.next_at_or_after(self.watermark) {
                None => {
                    self.watermark = self.next_seq;
                    break;
                }
                Some(x) => {
                    if self.acked.remove(&x) {
                        self.watermark = x + 1;
                    } else {
                        self.watermark = x;
                        break;
                    }
                }
            }
        }
        if self.watermark != old {
            self.exists.remove_below(self.watermark);
            true
        } else {
            false
        }
    }

    /// Remove `[lo, hi)` from the stored set (failed or damaged records).
    fn forget(&mut self, lo: u64, hi: u64) {
        self.exists.remove(lo, hi);
        let gone: Vec<u64> = self.acked.range(lo..hi).copied().collect();
        for s in gone {
            self.acked.remove(&s);
        }
    }

    fn dirty(&self) -> bool {
        self.segments.values().any(|s| s.synced < s.written)
    }
}

pub(crate) struct Inner {
    dir: PathBuf,
    io: Arc<dyn SpoolIo>,
    opts: SpoolOptions,
    state: Mutex<State>,
    /// Fsync progress (waiters for durability, flush callers).
    synced_cv: Condvar,
    /// Wakes the flusher.
    work_cv: Condvar,
    /// Space freed.
    space_cv: Condvar,
    _lock: Box<dyn LockGuard>,
}

/// The disk queue. `Send + Sync`: share it with `Arc`.
pub struct Spool {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spool {
    /// Open (creating if needed) the spool in `dir` on the real file system.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        Self::open_with_io(dir, opts, Arc::new(StdIo))
    }

    /// Open with the given file I/O (tests inject faults through it).
    pub fn open_with_io(
        dir: &Path,
        mut opts: SpoolOptions,
        io: Arc<dyn SpoolIo>,
    ) -> Result<(Spool, Recovery), SpoolError> {
        if opts.max_bytes < 4 * MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidOptions(format!(
                "max_bytes {} is below the minimum {}",
                opts.max_bytes,
                4 * MIN_SEGMENT_BYTES
            )));
        }
        if opts.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidOptions(format!(
                "segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES}",
                opts.segment_bytes
            )));
        }
        if opts.segment_bytes > opts.max_bytes / 4 {
            opts.segment_bytes = opts.max_bytes / 4;
            info!(
                segment_bytes = opts.segment_bytes,
                "spool: segment_bytes lowered to max_bytes / 4"
            );
        }
        if let Durability::Interval(d) = opts.durability
            && d.is_zero()
        {
            return Err(SpoolError::InvalidOptions("Interval(0): use Fsync".into()));
        }
        io.create_dir_all(dir)
            .map_err(|e| SpoolError::io("create directory", dir, e))?;
        let guard = io.lock(dir).map_err(|e| match e {
            LockError::Held { pid } => SpoolError::Locked {
                dir: dir.to_path_buf(),
                pid,
            },
            LockError::Io(e) => SpoolError::io("lock", dir.join(crate::io::LOCK_FILE), e),
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
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("spool-flusher".into())
                .spawn(move || inner.flusher())
                .map_err(|e| SpoolError::io("spawn flusher thread", dir, e))?
        };
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

    pub fn options(&self) -> &SpoolOptions {
        &self.inner.opts
    }

    /// Append one record; returns its seq. Durable per [`Durability`] when `Ok`.
    pub fn append(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_batch(&[payload]).map(|r| r.start)
    }

    /// Append several records with one write and (in `Fsync` mode) one shared fsync. All or
    /// none: on error none of them is stored.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<u64>, SpoolError> {
        self.inner.append_batch(payloads)
    }

    /// Up to `max_records` unacknowledged records after the cursor, in seq order, read from
    /// the segment files (only records that are durable in `Fsync` mode, or written in
    /// `Interval` mode). An empty result means nothing more is available now.
    pub fn read_from(
        &self,
        cursor: &mut Cursor,
        max_records: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        self.inner.read_from(cursor, max_records)
    }

    /// Acknowledge records (any order; unknown or repeated seqs are ignored). Segments whose
    /// records are all acknowledged are deleted. Acks are persisted lazily (see crate docs).
    pub fn ack(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        self.inner.ack(seqs);
        Ok(())
    }

    /// Make everything appended and acknowledged so far durable (useful in `Interval` mode).
    /// Returns the error of a failed fsync.
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.inner.flush()
    }

    pub fn stats(&self) -> SpoolStats {
        self.inner.stats()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.inner.state);
            st.shutdown = true;
        }
        self.inner.work_cv.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

impl Inner {
    fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<u64>, SpoolError> {
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
        let mut st = lock(&self.state);
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
            let sealed = seg.sealed;
            st.next_seq = first + n;
            if sealed {
                st.active = None;
            }
            st.scratch = buf;
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
                self.work_cv.notify_one();
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

    /// Delete sealed segments holding nothing unacknowledged. With `pressure`, also close
    /// and delete a fully acknowledged active segment.
    fn reclaim(&self, st: &mut State, pressure: bool) {
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
        if let Some(log) = st.acklog.as_mut()
            && log.dirty
        {
            match log.file().sync_data() {
                Ok(()) => log.dirty = false,
                Err(e) => {
                    warn!(error = %e, "spool: fsync of the ack log failed; will rewrite it");
                    st.ack_rewrite = true;
                }
            }
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
            st.total_bytes -= seg.written;
            if st.active == Some(id) {
                st.active = None;
            }
            debug!(segment = %path.display(), "spool: segment fully acknowledged, deleted");
        }
        self.space_cv.notify_all();
    }

    fn ack(&self, seqs: &[u64]) {
        let mut st = lock(&self.state);
        for &s in seqs {
            if s >= st.watermark && s < st.next_seq && st.exists.contains(s) {
                st.acked.insert(s);
            }
        }
        self.update_watermark(&mut st);
    }

    /// Advance the watermark; if it moved, record it in the ack log and reclaim segments.
    fn update_watermark(&self, st: &mut State) {
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

    fn flush(&self) -> Result<(), SpoolError> {
        let mut st = lock(&self.state);
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
        let mut st = lock(&self.state);
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
            let flush_gen = st.flush_requested;
            if st.ack_rewrite {
                match AckLog::create(&*self.io, &self.dir, st.watermark, st.next_seq) {
                    Ok(l) => {
                        st.acklog = Some(l);
                        st.ack_rewrite = false;
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
            drop(st);

            let results: Vec<io::Result<()>> = jobs.iter().map(|j| j.1.sync_data()).collect();
            let ack_failed = match ack_file.map(|f| f.sync_data()) {
                Some(Err(e)) => {
                    warn!(error = %e, "spool: fsync of the ack log failed; will rewrite it");
                    true
                }
                _ => false,
            };
            last_sync = Instant::now();

            st = lock(&self.state);
            st.ack_rewrite |= ack_failed;
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
            self.synced_cv.notify_all();
            if shutting_down && !st.dirty() {
                return;
            }
        }
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
        let removed = seg.written - good.min(seg.written);
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

    fn read_from(
        &self,
        cursor: &mut Cursor,
        max_records: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        while out.len() < max_records {
            // Locate the segment and range to read.
            let st = lock(&self.state);
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
                    Scanned::Damaged { offset, len } | Scanned::TornTail { offset, len } => {
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
        let st = lock(&self.state);
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
            let mut st = lock(&self.state);
            if !st.damaged_seen.insert((id, offset)) {
                return;
            }
            let n = st.exists.count_in(lo, hi).max(1);
            st.damaged_records += n;
            st.forget(lo, hi);
            self.update_watermark(&mut st);
        }
        let name = segment_name(id);
        match recovery::save_damaged(&*self.io, &self.dir, &name, file, offset, len) {
            Ok(p) => error!(segment = %name, offset, bytes = len, moved_to = %p.display(),
                "spool: damaged record(s) found while reading (checksum mismatch); copied aside"),
            Err(e) => error!(segment = %name, offset, bytes = len, error = %e,
                "spool: damaged record(s) found while reading; copying them aside failed"),
        }
    }

    fn stats(&self) -> SpoolStats {
        let st = lock(&self.state);
        let mut stats = SpoolStats {
            records: st.unacked(),
            bytes: st.total_bytes,
            segments: st.segments.len(),
            oldest_unacked_age: None,
            damaged_records: st.damaged_records,
            sync_failures: st.sync_failures,
            next_seq: st.next_seq,
        };
        let Some(oldest) = st.exists.next_at_or_after(st.watermark) else {
            return stats;
        };
        let Some(seg) = st
            .segments
            .values()
            .find(|s| s.seqs.is_some_and(|(_, l)| l >= oldest))
        else {
            return stats;
        };
        let Some(entry) = seg.index_lookup(oldest) else {
            return stats;
        };
        let file = seg.file.clone();
        let end = seg.written;
        drop(st);
        let mut ts = entry.ts_nanos;
        let mut sc = Scanner::new(file, entry.offset, end, false);
        while let Ok(Some(item)) = sc.next_item() {
            if let Scanned::Record { header, .. } = item
                && header.seq >= oldest
            {
                ts = header.ts_nanos;
                break;
            }
            if sc.pos() > entry.offset + 2 * INDEX_EVERY {
                break;
            }
        }
        stats.oldest_unacked_age = Some(Duration::from_nanos(now_nanos().saturating_sub(ts)));
        stats
    }
}

/// Recover the state of `dir` (the lock is held).
fn recover(io: &dyn SpoolIo, dir: &Path) -> Result<(State, Recovery), SpoolError> {
    let mut rec = Recovery::default();
    let listing = recovery::list(io, dir).map_err(|e| SpoolError::io("list directory", dir, e))?;
    for name in &listing.unknown {
        warn!(dir = %dir.display(), file = %name, "spool: unknown file in the spool directory, left alone");
    }
    rec.unknown_files = listing.unknown.clone();
    for name in &listing.tmp_files {
        let _ = io.remove_file(&dir.join(name));
    }
    let ack = match acklog::read(io, dir) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "spool: could not read the ack log; unacknowledged records \
                may include some that were acknowledged before");
            Default::default()
        }
    };
    if ack.damaged_entries > 0 {
        warn!(
            entries = ack.damaged_entries,
            "spool: damaged entries in the ack log ignored"
        );
    }
    let w = ack.watermark;
    let mut segments = BTreeMap::new();
    let mut exists = RangeSet::default();
    let mut total = 0u64;
    let mut last_seq: Option<u64> = None;
    let mut max_id = None;
    for &id in &listing.segments {
        max_id = Some(id);
        let name = segment_name(id);
        let path = dir.join(&name);
        match recover_segment(io, dir, id, last_seq, w, &mut rec, &mut exists) {
            Ok((seg, last)) => {
                last_seq = last.or(last_seq);
                if let Some(seg) = seg {
                    total += seg.written;
                    segments.insert(id, seg);
                }
            }
            Err(e) => {
                warn!(segment = %path.display(), error = %e, "spool: segment could not be \
                    recovered; left alone and not used");
                rec.unreadable_segments.push(name);
            }
        }
    }
    let next_seq = last_seq
        .map(|l| l + 1)
        .unwrap_or(0)
        .max(ack.next_seq)
        .max(w);
    let acklog = match AckLog::create(io, dir, w, next_seq) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "spool: could not write the ack log; acks will not be persisted \
                (acknowledged records may be delivered again after a restart)");
            None
        }
    };
    rec.records = exists.count();
    rec.bytes = total;
    rec.segments = segments.len();
    rec.acked_watermark = w;
    rec.next_seq = next_seq;
    if rec.records > 0 || rec.damaged_records > 0 || rec.torn_tail_bytes > 0 {
        info!(dir = %dir.display(), records = rec.records, segments = rec.segments,
            damaged = rec.damaged_records, torn_bytes = rec.torn_tail_bytes, "spool: recovered");
    }
    let mut st = State {
        segments,
        active: None,
        next_segment_id: max_id.map(|i| i + 1).unwrap_or(1),
        next_seq,
        watermark: w,
        exists,
        acked: BTreeSet::new(),
        total_bytes: total,
        failed: HashMap::new(),
        ack_rewrite: acklog.is_none(),
        acklog,
        ack_synced_at: Instant::now(),
        damaged_records: rec.damaged_records,
        damaged_seen: HashSet::new(),
        sync_failures: 0,
        scratch: Vec::new(),
        space_waiters: 0,
        flush_requested: 0,
        flush_done: 0,
        shutdown: false,
    };
    st.advance_watermark();
    Ok((st, rec))
}

/// Scan, repair and index one segment. `None`: removed (empty, or everything acknowledged).
fn recover_segment(
    io: &dyn SpoolIo,
    dir: &Path,
    id: u64,
    prev_seq: Option<u64>,
    watermark: u64,
    rec: &mut Recovery,
    exists: &mut RangeSet,
) -> io::Result<(Option<Segment>, Option<u64>)> {
    let path = dir.join(segment_name(id));
    let mut file = io.open(&path, OpenMode::ReadWrite)?;
    let mut scan = scan_segment(&file, prev_seq)?;
    if !scan.damaged.is_empty() || (scan.bad_header && !scan.records.is_empty()) {
        rec.damaged_records += scan.damaged_records();
        rec.damaged_bytes += scan.damaged.iter().map(|d| d.1).sum::<u64>();
        file = repair_segment(io, dir, id, &file, &scan)?;
        scan = scan_segment(&file, prev_seq)?;
    }
    if let Some((off, len)) = scan.torn_tail {
        warn!(segment = %path.display(), offset = off, bytes = len,
            "spool: incomplete write at the end of a segment (torn tail) cut off");
        rec.torn_tail_bytes += len;
        if let Err(e) = file.set_len(scan.valid_end()) {
            // Harmless: the next scan finds the same torn tail; new data goes to new segments.
            warn!(segment = %path.display(), error = %e, "spool: could not cut off a torn tail");
        }
    }
    let last_seq = scan.records.last().map(|r| r.seq);
    if last_seq.is_none_or(|l| l < watermark) {
        io.remove_file(&path)?;
        rec.removed_segments += 1;
        return Ok((None, last_seq));
    }
    // Records >= watermark are unacknowledged: add them as runs of consecutive seqs.
    let mut run: Option<(u64, u64)> = None;
    for r in scan.records.iter().filter(|r| r.seq >= watermark) {
        run = match run {
            Some((s, e)) if e == r.seq => Some((s, e + 1)),
            Some((s, e)) => {
                exists.insert(s, e);
                Some((r.seq, r.seq + 1))
            }
            None => Some((r.seq, r.seq + 1)),
        };
    }
    if let Some((s, e)) = run {
        exists.insert(s, e);
    }
    let written = scan.valid_end();
    // The previous process may have died before its flusher ran: make what we recovered
    // durable. Failure is not fatal (the bytes are still readable), just logged.
    if let Err(e) = file.sync_data() {
        warn!(segment = %path.display(), error = %e, "spool: fsync of a recovered segment failed");
    }
    let mut index = Vec::new();
    let mut next_at = 0;
    for r in &scan.records {
        if r.offset >= next_at {
            index.push(IndexEntry {
                seq: r.seq,
                offset: r.offset,
                ts_nanos: r.ts_nanos,
            });
            next_at = r.offset + INDEX_EVERY;
        }
    }
    let last = scan.records.last().unwrap().seq;
    Ok((
        Some(Segment {
            path,
            file,
            seqs: Some((scan.records[0].seq, last)),
            written,
            synced: written,
            synced_last_seq: Some(last),
            sealed: true,
            index,
        }),
        last_seq,
    ))
}

/// Result of [`inspect`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// `records`, `bytes`, `segments`, `oldest_unacked_age`, `damaged_records`, `next_seq`.
    pub stats: SpoolStats,
    pub damaged_bytes: u64,
    pub torn_tail_bytes: u64,
    /// Acknowledged records still on disk (in partly acknowledged segments).
    pub acked_records_on_disk: u64,
    pub acked_watermark: u64,
    pub unknown_files: Vec<String>,
    /// Files under `damaged/`.
    pub damaged_files: usize,
    /// Pid in the LOCK file, if the lock is currently held.
    pub locked_by: Option<u32>,
}

/// Read-only look at a spool directory; works while another process holds the lock (the
/// numbers are then a snapshot that may be slightly inconsistent).
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let io = StdIo;
    let listing = recovery::list(&io, dir).map_err(|e| SpoolError::io("list directory", dir, e))?;
    let ack = acklog::read(&io, dir).unwrap_or_default();
    let mut out = Inspection {
        acked_watermark: ack.watermark,
        unknown_files: listing.unknown,
        locked_by: crate::io::lock_holder(dir),
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
