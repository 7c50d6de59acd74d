//! Start-up recovery: classify the directory, scan every segment, move damaged bytes aside,
//! truncate torn tails. Also the read-only variant used by [`crate::inspect`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::acklog::{ACK_FILE, ACK_TMP_FILE};
use crate::format::{
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, Scanned, Scanner, parse_header, segment_header,
};
use crate::io::{LOCK_FILE, OpenMode, SpoolFile, SpoolIo};

pub const DAMAGED_DIR: &str = "damaged";
pub const SEGMENT_SUFFIX: &str = ".seg";
pub const TMP_SUFFIX: &str = ".tmp";

pub fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the directory holds.
#[derive(Debug, Default)]
pub struct Listing {
    pub segments: Vec<u64>,
    pub tmp_files: Vec<String>,
    pub unknown: Vec<String>,
}

pub fn list(io: &dyn SpoolIo, dir: &Path) -> io::Result<Listing> {
    let mut l = Listing::default();
    for e in io.read_dir(dir)? {
        let name = e.name;
        if e.is_dir {
            if name != DAMAGED_DIR {
                l.unknown.push(name);
            }
            continue;
        }
        if name == LOCK_FILE || name == ACK_FILE {
            continue;
        }
        if name == ACK_TMP_FILE
            || name
                .strip_suffix(TMP_SUFFIX)
                .and_then(parse_segment_name)
                .is_some()
        {
            l.tmp_files.push(name);
            continue;
        }
        match parse_segment_name(&name) {
            Some(id) => l.segments.push(id),
            None => l.unknown.push(name),
        }
    }
    l.segments.sort_unstable();
    l.unknown.sort();
    Ok(l)
}

/// An intact record found by a scan.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub offset: u64,
    pub seq: u64,
    pub ts_nanos: u64,
    pub len: u64,
}

/// Result of scanning one segment file.
#[derive(Debug, Default)]
pub struct SegmentScan {
    pub records: Vec<Found>,
    /// `(offset, len, estimated record count)`.
    pub damaged: Vec<(u64, u64, u64)>,
    pub torn_tail: Option<(u64, u64)>,
    pub bad_header: bool,
    pub file_len: u64,
}

impl SegmentScan {
    pub fn valid_end(&self) -> u64 {
        self.records
            .last()
            .map(|r| r.offset + r.len)
            .unwrap_or(SEGMENT_HEADER_LEN)
    }
    pub fn damaged_records(&self) -> u64 {
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

/// Scan a segment. `min_seq`: a record whose seq is not above the previous one (within this
/// segment or before it, passed in) is stale and counted as damage.
pub fn scan_segment(
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
            Scanned::TornTail { offset, len } => s.torn_tail = Some((offset, len)),
        }
    }
    Ok(s)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Copy `[offset, offset+len)` of segment `name` into `damaged/`, durably.
pub fn save_damaged(
    io: &dyn SpoolIo,
    dir: &Path,
    name: &str,
    file: &Arc<dyn SpoolFile>,
    offset: u64,
    len: u64,
) -> io::Result<PathBuf> {
    let ddir = dir.join(DAMAGED_DIR);
    io.create_dir_all(&ddir)?;
    let mut sc = Scanner::new(file.clone(), offset, offset + len, false);
    let bytes = sc.raw(offset, len)?;
    let path = ddir.join(format!("{name}-at-{offset}-{}.bin", now_nanos()));
    let f = io.open(&path, OpenMode::CreateTruncate)?;
    f.write_all_at(&bytes, 0)?;
    f.sync_data()?;
    io.sync_dir(&ddir)?;
    io.sync_dir(dir)?;
    Ok(path)
}

/// Repair a segment whose scan found damage: damaged regions are saved under `damaged/`, then
/// the segment is rewritten with only its intact records (tmp file, fsync, rename, fsync dir).
/// Returns the new file.
pub fn repair_segment(
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
