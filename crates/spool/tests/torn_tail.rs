//! A write that never finished leaves a partial record at the end of a segment: recovery cuts
//! it off, keeps every intact record, and does not count it as damage.
mod common;
use std::io::Write;

use common::*;
use spool::sim::SimFs;

fn append_bytes(path: &std::path::Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn partial_record_at_tail_is_truncated() {
    for cut in [1usize, 4, 12, 27, 28, 29, 60] {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open_dir(dir.path(), one_segment_opts());
        fill(&s, 30);
        drop(s);
        let seg = segment_files(dir.path()).pop().unwrap();
        let clean_len = std::fs::metadata(&seg).unwrap().len();
        // A prefix of a real record (the last one's bytes, re-used) is what a torn write leaves.
        let (off, len) = offsets(30)[29];
        let bytes = std::fs::read(&seg).unwrap()[off as usize..(off + len) as usize].to_vec();
        let cut = cut.min(bytes.len() - 1);
        append_bytes(&seg, &bytes[..cut]);

        let (s, rec) = open_dir(dir.path(), one_segment_opts());
        // Zeros at the end are not told apart from reserved space, so they are not counted.
        let torn = bytes[..cut]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        assert_eq!(rec.torn_tail_bytes, torn as u64, "cut {cut}");
        assert_eq!(rec.damaged_records, 0);
        assert_eq!(rec.records, 30);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), clean_len);
        let got = drain(&s);
        assert_eq!(seqs(&got), (0..30).collect::<Vec<_>>());
        assert!(got.iter().all(|(q, p)| *p == payload(*q)));
        // Appending continues, and everything survives another restart.
        assert_eq!(s.append(b"after").unwrap(), 30);
        drop(s);
        let (s, rec) = open_dir(dir.path(), one_segment_opts());
        assert_eq!((rec.records, rec.torn_tail_bytes), (31, 0));
        assert_eq!(drain(&s).last().unwrap().1, b"after".to_vec());
    }
}

/// Zeros at the end are space the segment reserved that no write reached (what a process
/// killed before closing the spool leaves): cut off, and neither torn nor damaged.
#[test]
fn zero_filled_tail_is_unused_space_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 10);
    drop(s);
    let seg = segment_files(dir.path()).pop().unwrap();
    let clean_len = std::fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &[0u8; 4096]);
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.damaged_records, 0);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), clean_len);
    assert_eq!(drain(&s).len(), 10);
}

/// A torn write into reserved space: the partial record is followed by zeros to the end of
/// the file. Recovery cuts both, counts only the partial record's bytes, and keeps the rest.
#[test]
fn torn_write_into_reserved_space() {
    let fs = SimFs::new();
    let o = one_segment_opts().with_durability(interval_opts().durability);
    let (s, _) = open_sim(&fs, o.clone());
    fill(&s, 10);
    s.flush().unwrap();
    let seg = sim_dir().join("00000000000000000001.seg");
    assert_eq!(
        fs.read(&seg).unwrap().len() as u64,
        o.segment_bytes,
        "reserved"
    );
    // Record 10 is written, not synced; the power goes with 40 of its bytes on the disk.
    s.append(&payload(10)).unwrap();
    fs.crash_with(|_| 40);
    drop(s);
    let (s, rec) = open_sim(&fs, o);
    assert_eq!((rec.records, rec.damaged_records), (10, 0));
    assert_eq!(rec.torn_tail_bytes, 40);
    assert_eq!(seqs(&drain(&s)), (0..10).collect::<Vec<_>>());
    let (off, len) = offsets(10)[9];
    assert_eq!(
        fs.read(&seg).unwrap().len() as u64,
        off + len,
        "cut back to the data"
    );
}

#[test]
fn segment_with_only_a_torn_header_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 5);
    drop(s);
    std::fs::write(dir.path().join("00000000000000000099.seg"), b"SPOOL").unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 5);
    assert_eq!(drain(&s).len(), 5);
    assert!(!dir.path().join("00000000000000000099.seg").exists());
    // New segments are numbered after the highest seen, so no clash.
    s.append(b"x").unwrap();
}

/// Power loss in Interval mode where part of the unsynced bytes reached the disk: a prefix of
/// the unflushed records survives, the partial one is cut, nothing else is lost.
#[test]
fn power_loss_with_partial_unsynced_bytes() {
    for keep_pct in [0usize, 13, 50, 77, 99, 100] {
        let fs = SimFs::new();
        let (s, _) = open_sim(&fs, interval_opts());
        for i in 0..10 {
            s.append(&payload(i)).unwrap();
        }
        s.flush().unwrap();
        for i in 10..14 {
            s.append(&payload(i)).unwrap();
        }
        fs.crash_with(|n| n * keep_pct / 100);
        drop(s);
        let (s, _) = open_sim(&fs, interval_opts());
        let got = drain(&s);
        assert!(got.len() >= 10, "flushed records survive");
        for (q, p) in &got {
            assert_eq!(p, &payload(*q));
        }
        assert_eq!(seqs(&got), (0..got.len() as u64).collect::<Vec<_>>());
        assert_eq!(s.stats().damaged_records, 0);
    }
}
