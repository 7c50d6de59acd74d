//! Helpers shared by the spool tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spool::sim::SimFs;
use spool::{Cursor, Durability, Recovery, Spool, SpoolOptions, WhenFull};

pub fn opts() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        durability: Durability::Fsync,
        when_full: WhenFull::Reject,
        preallocate: true,
    }
}

pub fn interval_opts() -> SpoolOptions {
    SpoolOptions {
        durability: Durability::Interval(Duration::from_secs(3600)),
        ..opts()
    }
}

pub fn sim_dir() -> PathBuf {
    PathBuf::from("/sim/spool")
}

pub fn open_sim(fs: &Arc<SimFs>, o: SpoolOptions) -> (Spool, Recovery) {
    Spool::open_with_io(&sim_dir(), o, fs.io()).expect("open")
}

pub fn open_dir(dir: &Path, o: SpoolOptions) -> (Spool, Recovery) {
    Spool::open(dir, o).expect("open")
}

/// Everything currently readable, from the start.
pub fn drain(s: &Spool) -> Vec<(u64, Vec<u8>)> {
    let mut c = Cursor::new();
    let mut out = Vec::new();
    loop {
        let v = s.read_from(&mut c, 7).expect("read");
        if v.is_empty() {
            return out;
        }
        out.extend(v);
    }
}

pub fn payload(i: u64) -> Vec<u8> {
    let n = 20 + (i as usize * 37) % 200;
    (0..n).map(|k| (i as usize * 31 + k) as u8).collect()
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Collects `tracing` output is not needed; tests assert on returned values only.
pub fn seqs(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
    v.iter().map(|r| r.0).collect()
}

/// Options with one big segment, so record offsets are easy to compute.
pub fn one_segment_opts() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 8 << 20,
        ..opts()
    }
}

pub const SEGMENT_HEADER: u64 = 16;
pub const RECORD_HEADER: u64 = 28;

/// Offsets of the records `payload(0..n)` in a single segment.
pub fn offsets(n: u64) -> Vec<(u64, u64)> {
    let mut off = SEGMENT_HEADER;
    (0..n)
        .map(|i| {
            let len = RECORD_HEADER + payload(i).len() as u64;
            let r = (off, len);
            off += len;
            r
        })
        .collect()
}

pub fn fill(s: &Spool, n: u64) {
    for i in 0..n {
        assert_eq!(s.append(&payload(i)).unwrap(), i);
    }
}

pub fn flip_bit(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x10;
    std::fs::write(path, b).unwrap();
}
