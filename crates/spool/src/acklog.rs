//! The ack log `ACKS`: fixed 24-byte entries, each `magic u32, crc32c u32 (over the next 16
//! bytes), watermark u64, next_seq u64`. The entry with the highest valid watermark wins; damaged
//! entries are ignored. Rewritten (tmp file + rename) at open and when it grows past a limit.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::{OpenMode, SpoolFile, SpoolIo};

pub const ACK_FILE: &str = "ACKS";
pub const ACK_TMP_FILE: &str = "ACKS.tmp";
const ENTRY_LEN: usize = 24;
const ACK_MAGIC: u32 = 0x4B43_41B5;
const COMPACT_AT: u64 = 1 << 20;

fn encode(watermark: u64, next_seq: u64) -> [u8; ENTRY_LEN] {
    let mut e = [0u8; ENTRY_LEN];
    e[0..4].copy_from_slice(&ACK_MAGIC.to_le_bytes());
    e[8..16].copy_from_slice(&watermark.to_le_bytes());
    e[16..24].copy_from_slice(&next_seq.to_le_bytes());
    let crc = crc32c::crc32c(&e[8..]);
    e[4..8].copy_from_slice(&crc.to_le_bytes());
    e
}

/// What the ack log says: every seq below `watermark` was acknowledged; `next_seq` was the next
/// sequence number to assign when it was written. `damaged` counts invalid entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckState {
    pub watermark: u64,
    pub next_seq: u64,
    pub damaged_entries: u64,
}

/// Read the ack log of `dir` (missing file: all zero).
pub fn read(io: &dyn SpoolIo, dir: &Path) -> io::Result<AckState> {
    let file = match io.open(&dir.join(ACK_FILE), OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AckState::default()),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let k = file.read_at(&mut buf[filled..], filled as u64)?;
        if k == 0 {
            break;
        }
        filled += k;
    }
    buf.truncate(filled);
    let mut st = AckState::default();
    for e in buf.chunks(ENTRY_LEN) {
        let valid = e.len() == ENTRY_LEN
            && u32::from_le_bytes(e[0..4].try_into().unwrap()) == ACK_MAGIC
            && u32::from_le_bytes(e[4..8].try_into().unwrap()) == crc32c::crc32c(&e[8..]);
        if !valid {
            st.damaged_entries += 1;
            continue;
        }
        let w = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let n = u64::from_le_bytes(e[16..24].try_into().unwrap());
        st.watermark = st.watermark.max(w);
        st.next_seq = st.next_seq.max(n);
    }
    Ok(st)
}

/// The writable ack log.
pub struct AckLog {
    dir: PathBuf,
    file: Arc<dyn SpoolFile>,
    off: u64,
    /// Written since the last sync.
    pub dirty: bool,
}

impl AckLog {
    /// Write a fresh log holding one entry (tmp file, fsync, rename, fsync dir).
    pub fn create(io: &dyn SpoolIo, dir: &Path, watermark: u64, next_seq: u64) -> io::Result<Self> {
        let tmp = dir.join(ACK_TMP_FILE);
        let f = io.open(&tmp, OpenMode::CreateTruncate)?;
        f.write_all_at(&encode(watermark, next_seq), 0)?;
        f.sync_data()?;
        io.rename(&tmp, &dir.join(ACK_FILE))?;
        io.sync_dir(dir)?;
        Ok(AckLog {
            dir: dir.to_path_buf(),
            file: f,
            off: ENTRY_LEN as u64,
            dirty: false,
        })
    }

    /// Record a new watermark (not synced; see [`AckLog::file`]).
    pub fn record(&mut self, io: &dyn SpoolIo, watermark: u64, next_seq: u64) -> io::Result<()> {
        if self.off >= COMPACT_AT {
            *self = AckLog::create(io, &self.dir, watermark, next_seq)?;
            return Ok(());
        }
        self.file
            .write_all_at(&encode(watermark, next_seq), self.off)?;
        self.off += ENTRY_LEN as u64;
        self.dirty = true;
        Ok(())
    }

    pub fn file(&self) -> Arc<dyn SpoolFile> {
        self.file.clone()
    }
}
