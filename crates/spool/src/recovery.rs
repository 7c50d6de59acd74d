//! Reconstructing the spool's state at open: read the ack log, scan every segment, move
//! damaged bytes aside, cut torn tails, delete what is fully acknowledged, and report it all
//! as a [`Recovery`]. The read-only scan is also what `inspect` uses.
//!
//! Kept in one place because these are the rules that decide, after a crash, what was
//! accepted; the crate docs ("Recovery rules") describe them. Invariants:
//! * Open never fails because of damage: a segment that cannot be read or repaired is logged,
//!   left alone and not used ([`Recovery::unreadable_segments`]).
//! * Damaged bytes are saved under `damaged/` (durably) before a segment is rewritten without
//!   them; the rewrite is a tmp file, fsync, rename, directory fsync.
//! * Within and across segments (in id order) the recovered seqs strictly increase; a record
//!   whose seq is not above the previous one is treated as damaged.
//! * `next_seq` after recovery is above every seq on disk and at least the ack log's
//!   `next_seq` and watermark, so seqs are not reused across restarts.
//! * Recovered segments are sealed and fsynced; writing after open starts a new segment.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::acklog::{self, AckLog};
use crate::damaged::save_damaged;
use crate::error::SpoolError;
use crate::format::{
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, Scanned, Scanner, parse_header, segment_header,
};
use crate::io::{OpenMode, SpoolFile, SpoolIo};
use crate::layout::{self, TMP_SUFFIX, segment_name};
use crate::ranges::RangeSet;
use crate::state::{INDEX_EVERY, IndexEntry, Segment, State};

/// What [`crate::Spool::open`] found and repaired.
///
/// Non-exhaustive: more findings may be reported; read the fields, do not build it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Bytes of those damaged regions.
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

/// Recover the state of `dir` (the lock is held).
pub(crate) fn recover(io: &dyn SpoolIo, dir: &Path) -> Result<(State, Recovery), SpoolError> {
    let mut rec = Recovery::default();
    let listing = layout::list(io, dir).map_err(|e| SpoolError::io("list directory", dir, e))?;
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
                    total += seg.size;
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
        uncovered: 0,
        last_group: 0,
        last_fsync: std::time::Duration::ZERO,
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
    }
    let mut size = scan.file_len.max(SEGMENT_HEADER_LEN);
    if scan.torn_tail.is_some() || scan.unused_tail.is_some() {
        // Recovered segments are never written again: their reserved space goes too.
        match file.set_len(scan.valid_end()) {
            Ok(()) => size = scan.valid_end(),
            // Harmless: the next scan finds the same tail; new data goes to new segments.
            Err(e) => warn!(segment = %path.display(), error = %e,
                "spool: could not cut off the tail of a segment"),
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
            size: size.max(written),
            zeroed: written,
            synced: written,
            synced_last_seq: Some(last),
            sealed: true,
            index,
        }),
        last_seq,
    ))
}

/// An intact record found by a scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub(crate) offset: u64,
    pub(crate) seq: u64,
    pub(crate) ts_nanos: u64,
    /// Bytes on disk, header included.
    pub(crate) len: u64,
}

/// Result of scanning one segment file.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    pub(crate) records: Vec<Found>,
    /// `(offset, len, estimated record count)`.
    pub(crate) damaged: Vec<(u64, u64, u64)>,
    /// `(offset, len)` of an incomplete write at the end (zeros after it not counted).
    pub(crate) torn_tail: Option<(u64, u64)>,
    /// `(offset, len)` of the zeros at the end: reserved space no write reached.
    pub(crate) unused_tail: Option<(u64, u64)>,
    pub(crate) bad_header: bool,
    pub(crate) file_len: u64,
}

impl SegmentScan {
    /// End of the last intact record (or of the header).
    pub(crate) fn valid_end(&self) -> u64 {
        self.records
            .last()
            .map(|r| r.offset + r.len)
            .unwrap_or(SEGMENT_HEADER_LEN)
    }
    /// Estimated records in the damaged regions.
    pub(crate) fn damaged_records(&self) -> u64 {
        self.damaged.iter().map(|d| d.2).sum()
    }
}

/// How many record headers (magic + plausible length) start inside `bytes`; at least 1.
fn estimate_records(bytes: &[u8]) -> u64 {
    let n = (0..bytes.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .filter(|&i| parse_header(&bytes[i..]).is_some())
        .count() as u64;
    n.max(1)
}

/// Scan a segment. `last_seq`: a record whose seq is not above the previous one (within this
/// segment or before it, passed in) is stale and counted as damage.
pub(crate) fn scan_segment(
    file: &Arc<dyn SpoolFile>,
    mut last_seq: Option<u64>,
) -> io::Result<SegmentScan> {
    let file_len = file.len()?;
    let mut s = SegmentScan {
        file_len,
        ..Default::default()
    };
    if file_len < SEGMENT_HEADER_LEN {
        if file_len > 0 {
            s.torn_tail = Some((0, file_len));
        }
        return Ok(s);
    }
    let mut hdr = [0u8; SEGMENT_HEADER_LEN as usize];
    let mut got = 0;
    while got < hdr.len() {
        let k = file.read_at(&mut hdr[got..], got as u64)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    s.bad_header = hdr != segment_header();
    let mut sc = Scanner::new(file.clone(), SEGMENT_HEADER_LEN, file_len, false);
    while let Some(item) = sc.next_item()? {
        match item {
            Scanned::Record { offset, header, .. } => {
                let len = (RECORD_HEADER_LEN + header.len as usize) as u64;
                if last_seq.is_some_and(|l| header.seq <= l) {
                    warn!(
                        offset,
                        seq = header.seq,
                        "spool: record out of sequence order, treating it as damaged"
                    );
                    s.damaged.push((offset, len, 1));
                    continue;
                }
                last_seq = Some(header.seq);
                s.records.push(Found {
                    offset,
                    seq: header.seq,
                    ts_nanos: header.ts_nanos,
                    len,
                });
            }
            Scanned::Damaged { offset, len } => {
                let bytes = sc.raw(offset, len)?;
                s.damaged.push((offset, len, estimate_records(&bytes)));
            }
            Scanned::TornTail {
                offset,
                len,
                data_len,
            } => {
                s.torn_tail = Some((offset, data_len));
                if data_len < len {
                    s.unused_tail = Some((offset + data_len, len - data_len));
                }
            }
            Scanned::Unused { offset, len } => s.unused_tail = Some((offset, len)),
        }
    }
    Ok(s)
}

/// Repair a segment whose scan found damage: damaged regions are saved under `damaged/`, then
/// the segment is rewritten with only its intact records (tmp file, fsync, rename, fsync dir).
/// Returns the new file.
fn repair_segment(
    io: &dyn SpoolIo,
    dir: &Path,
    id: u64,
    file: &Arc<dyn SpoolFile>,
    scan: &SegmentScan,
) -> io::Result<Arc<dyn SpoolFile>> {
    let name = segment_name(id);
    if scan.bad_header {
        warn!(segment = %name, "spool: segment header damaged; saving it and rewriting the segment");
        save_damaged(io, dir, &name, file, 0, SEGMENT_HEADER_LEN)?;
    }
    for &(off, len, n) in &scan.damaged {
        let p = save_damaged(io, dir, &name, file, off, len)?;
        warn!(segment = %name, offset = off, bytes = len, records = n, moved_to = %p.display(),
            "spool: damaged record(s) (checksum mismatch) moved aside");
    }
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    let tmp = io.open(&tmp_path, OpenMode::CreateTruncate)?;
    let mut out = segment_header().to_vec();
    let mut out_off = 0u64; // file offset where `out` goes
    let mut sc = Scanner::new(file.clone(), 0, scan.file_len, false);
    for r in &scan.records {
        out.extend_from_slice(&sc.raw(r.offset, r.len)?);
        if out.len() >= 1 << 20 {
            tmp.write_all_at(&out, out_off)?;
            out_off += out.len() as u64;
            out.clear();
        }
    }
    tmp.write_all_at(&out, out_off)?;
    tmp.sync_data()?;
    io.rename(&tmp_path, &dir.join(&name))?;
    io.sync_dir(dir)?;
    io.open(&dir.join(&name), OpenMode::ReadWrite)
}
