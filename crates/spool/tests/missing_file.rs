//! Missing files (a segment, the ack log, the lock file) never stop start-up.
mod common;
use common::*;

#[test]
fn missing_middle_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 200);
    drop(s);
    let segs = segment_files(dir.path());
    std::fs::remove_file(&segs[2]).unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    let got = drain(&s);
    assert_eq!(rec.records as usize, got.len());
    assert!(got.len() < 200 && got.len() > 100);
    assert!(got.iter().all(|(q, p)| *p == payload(*q)));
    assert!(seqs(&got).contains(&0) && seqs(&got).contains(&199));
    // Appending continues after the highest seq.
    assert_eq!(s.append(b"x").unwrap(), 200);
}

#[test]
fn missing_ack_log_redelivers_but_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 20);
    s.ack(&(0..5).collect::<Vec<_>>()).unwrap();
    drop(s);
    std::fs::remove_file(dir.path().join("ACKS")).unwrap();
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(rec.acked_watermark, 0);
    assert_eq!(seqs(&drain(&s)), (0..20).collect::<Vec<_>>());
}

#[test]
fn all_segments_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 100);
    s.ack(&(0..30).collect::<Vec<_>>()).unwrap();
    drop(s);
    for p in segment_files(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 0);
    assert!(drain(&s).is_empty());
    // Seqs are not reused.
    assert!(s.append(b"x").unwrap() >= 100);
}

#[test]
fn missing_lock_file_and_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 3);
    drop(s);
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 3);
    drop(s);
    // A directory that does not exist yet is created (with parents).
    let nested = dir.path().join("a/b/c");
    let (s, rec) = open_dir(&nested, opts());
    assert_eq!(rec.records, 0);
    s.append(b"x").unwrap();
}
