//! A segment file cut short (anywhere) never stops start-up; everything before the cut and
//! every other segment is recovered.
mod common;
use common::*;

#[test]
fn truncated_middle_segment() {
    let probe = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(probe.path(), opts());
    fill(&s, 200);
    drop(s);
    let n_segments = segment_files(probe.path()).len();
    assert!(n_segments >= 4, "{n_segments}");

    for cut in [0u64, 5, 16, 17, 44, 100, 1000, 2500] {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open_dir(dir.path(), opts());
        fill(&s, 200);
        drop(s);
        let segs = segment_files(dir.path());
        let victim = &segs[1];
        let len = std::fs::metadata(victim).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(victim)
            .unwrap()
            .set_len(cut.min(len))
            .unwrap();

        let (s, rec) = open_dir(dir.path(), opts());
        let got = drain(&s);
        assert!(got.iter().all(|(q, p)| *p == payload(*q)));
        let got_seqs = seqs(&got);
        // Nothing from the other segments is missing: the lost seqs form one contiguous run.
        let missing: Vec<u64> = (0..200).filter(|q| !got_seqs.contains(q)).collect();
        if let (Some(a), Some(b)) = (missing.first(), missing.last()) {
            assert_eq!(
                (b - a + 1) as usize,
                missing.len(),
                "cut {cut}: {missing:?}"
            );
            assert!(*a > 0, "first segment intact");
        }
        assert!(got_seqs.contains(&199), "last segment intact");
        assert_eq!(rec.records as usize, got.len());
        assert_eq!(rec.damaged_records, 0);
        // Still usable.
        s.append(b"more").unwrap();
    }
}

#[test]
fn truncated_ack_log() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 50);
    s.ack(&(0..10).collect::<Vec<_>>()).unwrap();
    drop(s);
    let ack = dir.path().join("ACKS");
    let len = std::fs::metadata(&ack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ack)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    // Acks may be forgotten (redelivery is allowed), unacked records never.
    let got = seqs(&drain(&s));
    assert!((10..50).all(|q| got.contains(&q)));
    assert_eq!(rec.records as usize, got.len());
}

#[test]
fn empty_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 3);
    drop(s);
    std::fs::write(dir.path().join("00000000000000000050.seg"), b"").unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 3);
    assert_eq!(s.append(b"x").unwrap(), 3);
}
