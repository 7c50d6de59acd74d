//! A failed fsync: the appends it covered fail, the page cache is not trusted (the segment is
//! cut back to the last synced offset and closed; writing continues in a new segment), nothing
//! accepted before is lost, and the spool works on.
mod common;
use common::*;
use spool::SpoolError;
use spool::sim::SimFs;

#[test]
fn failed_fsync_fails_the_append_and_starts_a_new_segment() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, one_segment_opts());
    fill(&s, 10);
    let files_before = fs.list(&sim_dir()).len();
    fs.faults(|f| f.fail_syncs = 1);
    let e = s.append(b"not durable").unwrap_err();
    assert!(matches!(e, SpoolError::Sync { .. }), "{e}");
    assert!(e.to_string().contains("fsync"), "{e}");
    assert_eq!(s.stats().sync_failures, 1);
    // Earlier records are intact; the failed one is not readable.
    assert_eq!(seqs(&drain(&s)), (0..10).collect::<Vec<_>>());
    let q = s.append(b"durable").unwrap();
    assert_eq!(fs.list(&sim_dir()).len(), files_before + 1, "new segment");
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, one_segment_opts());
    let got = drain(&s);
    assert_eq!(got.len(), 11);
    assert_eq!(got[10], (q, b"durable".to_vec()));
    assert_eq!(rec.damaged_records, 0);
}

#[test]
fn fsync_broken_for_a_while() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts());
    fill(&s, 5);
    fs.faults(|f| f.syncs_broken = true);
    for i in 0..10 {
        assert!(s.append(&payload(i)).is_err());
    }
    fs.faults(|f| f.syncs_broken = false);
    let r = s.append_batch(&[b"a", b"b"]).unwrap();
    assert_eq!(r.end - r.start, 2);
    assert_eq!(drain(&s).len(), 7);
    fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, opts());
    assert_eq!(drain(&s).len(), 7);
}

#[test]
fn failed_fsync_and_failed_truncate() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, one_segment_opts());
    fill(&s, 3);
    fs.faults(|f| {
        f.fail_syncs = 1;
        f.fail_set_len = 1;
    });
    assert!(s.append(b"failed").is_err());
    let q = s.append(b"ok").unwrap();
    drop(s); // clean close
    let (s, _) = open_sim(&fs, one_segment_opts());
    let got = drain(&s);
    // The failed record may come back (the caller was told it failed; delivery is
    // at-least-once), but in order, once, and everything accepted is there.
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.1.as_slice()).collect();
    assert_eq!(
        &payloads[..3],
        &[&payload(0)[..], &payload(1)[..], &payload(2)[..]]
    );
    assert_eq!(got.last().unwrap(), &(q, b"ok".to_vec()));
    assert!(got.len() == 4 || got.len() == 5);
}

#[test]
fn interval_mode_flush_reports_fsync_failure() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, interval_opts());
    fill(&s, 5);
    s.flush().unwrap();
    s.append(b"window").unwrap();
    fs.faults(|f| f.fail_syncs = 1);
    assert!(matches!(s.flush(), Err(SpoolError::Sync { .. })));
    // The unsynced window is discarded, accepted-and-flushed records stay.
    assert_eq!(seqs(&drain(&s)), (0..5).collect::<Vec<_>>());
    s.append(b"later").unwrap();
    s.flush().unwrap();
    fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, interval_opts());
    let got = drain(&s);
    assert_eq!(got.len(), 6);
    assert_eq!(got[5].1, b"later".to_vec());
}

/// The ack log's fsync fails: it is rewritten, and acks made durable by flush stay durable.
#[test]
fn ack_log_fsync_failure() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, one_segment_opts());
    fill(&s, 10);
    s.ack(&[0, 1, 2]).unwrap();
    fs.faults(|f| f.fail_syncs = 1);
    let _ = s.flush(); // the ack log fsync fails
    s.flush().unwrap(); // rewritten
    fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, one_segment_opts());
    assert_eq!(seqs(&drain(&s)), (3..10).collect::<Vec<_>>());
}

/// An acknowledged segment is deleted only once the ack log holding its acks is durable: with
/// the ack log's fsync failing, deleting first could let a crash lower the next seq below one
/// already handed out, so that a later event reuses a seq the older ack log calls acked.
#[test]
fn acked_segments_stay_until_the_ack_log_is_durable_again() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts()); // 4 KiB segments
    fill(&s, 300);
    let before = fs.list(&sim_dir()).len();
    fs.faults(|f| f.syncs_broken = true);
    s.ack(&(0..300).collect::<Vec<_>>()).unwrap();
    assert_eq!(
        fs.list(&sim_dir()).len(),
        before,
        "nothing deleted while the ack log cannot be made durable"
    );
    fs.faults(|f| f.syncs_broken = false);
    s.flush().unwrap(); // the flusher rewrites the ack log durably, then reclaims
    let left = fs.list(&sim_dir()).len();
    assert!(
        left < before / 2,
        "reclaimed once durable: {before} -> {left}"
    );
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, opts());
    assert_eq!(rec.records, 0, "the acks survived the crash");
    assert!(s.append(b"next").unwrap() >= 300, "no seq handed out twice");
    assert_eq!(seqs(&drain(&s)).len(), 1);
}
