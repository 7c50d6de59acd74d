//! Flipped bits: the record's crc32c fails, it is counted as damaged, its bytes are moved into
//! `damaged/`, and scanning resyncs to the next record; every intact record is recovered.
mod common;
use common::*;

fn damaged_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let d = dir.join("damaged");
    let Ok(rd) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    rd.map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn flipped_record_is_moved_aside(target: u64, byte_in_record: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 20);
    drop(s);
    let seg = segment_files(dir.path()).pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let (off, len) = offsets(20)[target as usize];
    flip_bit(&seg, off + byte_in_record);

    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(
        rec.damaged_records, 1,
        "target {target} byte {byte_in_record}"
    );
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.records, 19);
    let got = drain(&s);
    let want: Vec<u64> = (0..20).filter(|&i| i != target).collect();
    assert_eq!(seqs(&got), want);
    assert!(got.iter().all(|(q, p)| *p == payload(*q)));
    assert_eq!(s.stats().damaged_records, 1);
    // The bytes were moved aside, not dropped.
    let saved = damaged_files(dir.path());
    assert_eq!(saved.len(), 1);
    let mut expect = original[off as usize..(off + len) as usize].to_vec();
    expect[byte_in_record as usize] ^= 0x10;
    assert_eq!(saved[0], expect);
    drop(s);
    // Moved means gone from the segment: a second open finds no damage.
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!((rec.damaged_records, rec.records), (0, 19));
    assert_eq!(seqs(&drain(&s)), want);
}

#[test]
fn flipped_payload_bit() {
    flipped_record_is_moved_aside(7, RECORD_HEADER + 3);
}

#[test]
fn flipped_magic() {
    flipped_record_is_moved_aside(7, 1);
}

#[test]
fn flipped_length_field() {
    // A wrong length makes the record look longer or shorter; resync finds the next one.
    flipped_record_is_moved_aside(7, 9);
    flipped_record_is_moved_aside(7, 10);
}

#[test]
fn flipped_seq_and_timestamp() {
    flipped_record_is_moved_aside(3, 13);
    flipped_record_is_moved_aside(3, 22);
}

#[test]
fn flipped_first_and_last_record() {
    flipped_record_is_moved_aside(0, RECORD_HEADER);
    // The last record is complete: damage, not a torn tail.
    flipped_record_is_moved_aside(19, RECORD_HEADER + 1);
}

#[test]
fn several_damaged_regions() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 50);
    drop(s);
    let seg = segment_files(dir.path()).pop().unwrap();
    let offs = offsets(50);
    for t in [2usize, 3, 20, 49] {
        flip_bit(&seg, offs[t].0 + RECORD_HEADER + 2);
    }
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(rec.records, 46);
    assert!(rec.damaged_records >= 3, "{rec:?}"); // 2 and 3 are adjacent: one region or two
    let want: Vec<u64> = (0..50).filter(|i| ![2, 3, 20, 49].contains(i)).collect();
    assert_eq!(seqs(&drain(&s)), want);
}

#[test]
fn damaged_segment_header_keeps_records() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 5);
    drop(s);
    let seg = segment_files(dir.path()).pop().unwrap();
    flip_bit(&seg, 2);
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(rec.records, 5);
    assert_eq!(drain(&s).len(), 5);
    assert_eq!(damaged_files(dir.path()).len(), 1);
}

/// Corruption after the write, found while the spool is open: the reader skips the record,
/// counts it, copies it aside, and the acknowledgement watermark is not stuck on it.
#[test]
fn damage_found_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 20);
    let seg = segment_files(dir.path()).pop().unwrap();
    let (off, _) = offsets(20)[5];
    // Overwrite in place (the spool holds the file open).
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0xEE], off + RECORD_HEADER + 1).unwrap();
    }
    let got = drain(&s);
    let want: Vec<u64> = (0..20).filter(|&i| i != 5).collect();
    assert_eq!(seqs(&got), want);
    assert_eq!(s.stats().damaged_records, 1);
    assert_eq!(s.stats().records, 19);
    assert_eq!(damaged_files(dir.path()).len(), 1);
    // Reading again does not count it twice.
    assert_eq!(seqs(&drain(&s)), want);
    assert_eq!(s.stats().damaged_records, 1);
    s.ack(&want).unwrap();
    assert_eq!(s.stats().records, 0);
    assert_eq!(s.stats().oldest_unacked_age, None);
}
