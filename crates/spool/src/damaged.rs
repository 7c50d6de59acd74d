//! Moving damaged bytes aside into `damaged/`.
//!
//! Events are billable, so bytes that fail their checksum are not silently dropped: recovery
//! copies them here before rewriting a segment without them (and leaves the segment alone if
//! it cannot), and readers copy them here when they find corruption while open (logging an
//! error if the copy fails). Invariant: when [`save_damaged`] returns `Ok`, the copy and its
//! directory entry are durable, so a crash right after cannot lose them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::{Scanner, now_nanos};
use crate::io::{OpenMode, SpoolFile, SpoolIo};

/// Directory (inside the spool directory) holding damaged bytes.
pub(crate) const DAMAGED_DIR: &str = "damaged";

/// Copy `[offset, offset+len)` of segment `name` into `damaged/`, durably.
pub(crate) fn save_damaged(
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
