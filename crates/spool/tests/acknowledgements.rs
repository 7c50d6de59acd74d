mod common;
use common::*;
use spool::Cursor;

#[test]
fn append_read_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 0);
    let mut seqs = Vec::new();
    for i in 0..100 {
        seqs.push(s.append(&payload(i)).unwrap());
    }
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let all = drain(&s);
    assert_eq!(all.len(), 100);
    for (i, (seq, p)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(p, &payload(i as u64));
    }
    assert_eq!(s.stats().records, 100);
    s.ack(&(0..60).collect::<Vec<_>>()).unwrap();
    assert_eq!(s.stats().records, 40);
    assert_eq!(seqs_of(&drain(&s)), (60..100).collect::<Vec<_>>());
    s.flush().unwrap();
    drop(s);
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 40);
    assert_eq!(seqs_of(&drain(&s)), (60..100).collect::<Vec<_>>());
    assert_eq!(s.append(b"x").unwrap(), 100);
}

fn seqs_of(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
    seqs(v)
}

#[test]
fn cursor_continues_and_sees_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    let mut c = Cursor::new();
    assert!(s.read_from(&mut c, 10).unwrap().is_empty());
    for i in 0..30 {
        s.append(&payload(i)).unwrap();
    }
    let a = s.read_from(&mut c, 10).unwrap();
    assert_eq!(seqs(&a), (0..10).collect::<Vec<_>>());
    let b = s.read_from(&mut c, 100).unwrap();
    assert_eq!(seqs(&b), (10..30).collect::<Vec<_>>());
    assert!(s.read_from(&mut c, 10).unwrap().is_empty());
    s.append(b"new").unwrap();
    assert_eq!(
        s.read_from(&mut c, 10).unwrap(),
        vec![(30, b"new".to_vec())]
    );
    c.reset();
    assert_eq!(s.read_from(&mut c, 100).unwrap().len(), 31);
}

#[test]
fn out_of_order_duplicate_and_unknown_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), one_segment_opts());
    fill(&s, 10);
    s.ack(&[5, 3, 4]).unwrap(); // above the watermark: held in memory
    assert_eq!(s.stats().records, 7);
    assert_eq!(seqs(&drain(&s)), vec![0, 1, 2, 6, 7, 8, 9]);
    s.ack(&[5, 5, 1000, u64::MAX, 2, 0]).unwrap(); // duplicates and unknown seqs are ignored
    assert_eq!(s.stats().records, 5);
    s.ack(&[1]).unwrap(); // watermark jumps to 6
    assert_eq!(seqs(&drain(&s)), vec![6, 7, 8, 9]);
    assert_eq!(s.stats().records, 4);
    s.flush().unwrap();
    drop(s);
    let (s, rec) = open_dir(dir.path(), one_segment_opts());
    assert_eq!(rec.acked_watermark, 6);
    assert_eq!(seqs(&drain(&s)), vec![6, 7, 8, 9]);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts()); // 4 KiB segments
    fill(&s, 300);
    let before = segment_files(dir.path()).len();
    assert!(before > 10);
    let bytes_before = s.stats().bytes;
    s.ack(&(0..150).collect::<Vec<_>>()).unwrap();
    let after = segment_files(dir.path()).len();
    assert!(after < before * 2 / 3, "{before} -> {after}");
    assert!(s.stats().bytes < bytes_before);
    assert_eq!(s.stats().segments, after);
    // Acking the rest leaves at most the active segment.
    s.ack(&(150..300).collect::<Vec<_>>()).unwrap();
    assert!(segment_files(dir.path()).len() <= 1);
    assert_eq!(s.stats().records, 0);
    assert!(drain(&s).is_empty());
    drop(s);
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 0);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(s.append(b"x").unwrap(), 300);
}

/// After a crash, acks made durable (by flush, or because their segment was deleted) stay;
/// only acks since the last ack-log fsync may be forgotten, and nothing unacked is lost.
#[test]
fn acks_after_a_crash() {
    use spool::sim::SimFs;
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts());
    fill(&s, 200);
    s.ack(&(0..100).collect::<Vec<_>>()).unwrap();
    s.flush().unwrap();
    s.ack(&(100..120).collect::<Vec<_>>()).unwrap(); // not yet durable
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, opts());
    let got = seqs(&drain(&s));
    assert!(rec.acked_watermark >= 100);
    assert!(
        got.iter().all(|&q| q >= 100),
        "durable acks are not redelivered"
    );
    assert!(
        (120..200).all(|q| got.contains(&q)),
        "unacked records are kept"
    );
    assert!(got.len() <= 100);
}

#[test]
fn stats_report_oldest_unacked_age() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    assert_eq!(s.stats().oldest_unacked_age, None);
    fill(&s, 100);
    let st = s.stats();
    assert_eq!(st.records, 100);
    assert!(st.oldest_unacked_age.is_some());
    assert!(st.bytes > 100 * 28);
    assert_eq!(st.next_seq, 100);
    s.ack(&(0..99).collect::<Vec<_>>()).unwrap();
    let st = s.stats();
    assert_eq!(st.records, 1);
    assert!(st.oldest_unacked_age.is_some());
    // The age comes from the timestamp in the record, so it survives a restart.
    drop(s);
    let insp = spool::inspect(dir.path()).unwrap();
    assert_eq!(insp.stats.records, 1);
    assert!(insp.stats.oldest_unacked_age.is_some());
    assert_eq!(insp.locked_by, None);
    let (s, _) = open_dir(dir.path(), opts());
    assert!(s.stats().oldest_unacked_age.is_some());
}

#[test]
fn concurrent_producers_reader_and_acks() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    let s = Arc::new(s);
    let producers: Vec<_> = (0..3u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    if i % 10 == 0 {
                        let a = payload(t * 1000 + i);
                        let b = payload(t * 1000 + i + 1);
                        s.append_batch(&[&a, &b]).unwrap();
                    } else {
                        s.append(&payload(t * 1000 + i)).unwrap();
                    }
                }
            })
        })
        .collect();
    let total = 3 * (300 + 30);
    let mut c = Cursor::new();
    let mut seen = Vec::new();
    while seen.len() < total {
        let v = s.read_from(&mut c, 50).unwrap();
        if v.is_empty() {
            std::thread::yield_now();
            continue;
        }
        let q = seqs(&v);
        // Ack in a slightly shuffled order.
        let mut shuffled = q.clone();
        shuffled.reverse();
        s.ack(&shuffled).unwrap();
        seen.extend(q);
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen.len(), total);
    assert_eq!(s.stats().records, 0);
}

#[test]
fn interval_mode_reads_written_records_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), interval_opts());
    fill(&s, 10);
    assert_eq!(drain(&s).len(), 10);
    // Closing flushes (SIGKILL in Interval mode is covered by kill.rs).
    drop(s);
    let (s, rec) = open_dir(dir.path(), interval_opts());
    assert_eq!(rec.records, 10);
    assert_eq!(drain(&s).len(), 10);
}
