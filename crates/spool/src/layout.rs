//! The spool directory's file names, and sorting a listing into segments, leftovers and
//! foreign files.
//!
//! Separate from recovery because the running spool names files too (new segments, error
//! messages) and `inspect` lists the directory without recovering it. Invariants: a segment's
//! name is its id as exactly 20 decimal digits plus [`SEGMENT_SUFFIX`], so name order is id
//! order; [`list`] never classifies a file it does not recognise as the spool's, so nothing
//! foreign is ever removed.

use std::io;
use std::path::Path;

use crate::acklog::{ACK_FILE, ACK_TMP_FILE};
use crate::damaged::DAMAGED_DIR;
use crate::io::{LOCK_FILE, SpoolIo};

pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of a segment rewrite in progress.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// File name of segment `id`.
pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The segment id in a file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segment ids, ascending.
    pub(crate) segments: Vec<u64>,
    /// Rewrites that never finished (ack log, segments); safe to remove.
    pub(crate) tmp_files: Vec<String>,
    /// Not the spool's; sorted.
    pub(crate) unknown: Vec<String>,
}

/// Classify the entries of `dir`.
pub(crate) fn list(io: &dyn SpoolIo, dir: &Path) -> io::Result<Listing> {
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
