//! Disk full (`ENOSPC`, also part-way through a write): the appender gets a clear error, nothing
//! accepted before is lost, a failed batch stores none of its records, and appending works again
//! once space returns. With preallocation (the default) a segment's space is reserved when it
//! is created, so the disk filling up fails only the append that needs a new segment; the tests
//! of writes failing part-way turn it off, as on a file system without `fallocate`.
mod common;
use common::*;
use spool::SpoolError;
use spool::sim::SimFs;

#[test]
fn disk_full_then_space_returns() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts());
    fill(&s, 20);
    let used = fs.used();
    fs.faults(|f| f.capacity = Some(used + 100));
    let mut failures = 0;
    let mut oks = Vec::new();
    for i in 20..40 {
        match s.append(&payload(i)) {
            Ok(q) => oks.push(q),
            Err(e) => {
                failures += 1;
                assert!(matches!(e, SpoolError::Write { .. }), "{e}");
                assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull));
                assert!(e.to_string().contains("No space left on device"), "{e}");
                assert!(e.is_retriable());
            }
        }
    }
    assert!(failures > 0);
    // Everything accepted is intact and readable.
    let got = drain(&s);
    assert!(
        got.iter()
            .all(|(q, p)| *p == payload(*q) || oks.contains(q))
    );
    assert_eq!(got.len(), 20 + oks.len());

    // Space returns: appending works again, in the same session.
    fs.faults(|f| f.capacity = None);
    let q = s.append(b"after").unwrap();
    assert!(q >= 40);
    // And a power loss loses nothing that was accepted.
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, opts());
    let got = drain(&s);
    assert_eq!(rec.damaged_records, 0);
    assert_eq!(got.len(), 20 + oks.len() + 1);
    assert_eq!(got.last().unwrap(), &(q, b"after".to_vec()));
}

#[test]
fn batch_is_all_or_nothing() {
    let fs = SimFs::new();
    let o = one_segment_opts().with_preallocate(false);
    let (s, _) = open_sim(&fs, o.clone());
    fill(&s, 5);
    let used = fs.used();
    fs.faults(|f| f.capacity = Some(used + 300)); // part of the batch fits
    let big: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 100]).collect();
    let refs: Vec<&[u8]> = big.iter().map(|v| v.as_slice()).collect();
    assert!(matches!(
        s.append_batch(&refs),
        Err(SpoolError::Write { .. })
    ));
    assert_eq!(seqs(&drain(&s)), (0..5).collect::<Vec<_>>());
    fs.faults(|f| f.capacity = None);
    let r = s.append_batch(&refs).unwrap();
    assert_eq!(r.end - r.start, 10);
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, o);
    assert_eq!(
        (rec.records, rec.damaged_records, rec.torn_tail_bytes),
        (15, 0, 0)
    );
    assert_eq!(drain(&s).len(), 15);
}

#[test]
fn disk_full_when_a_new_segment_is_needed() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts().with_preallocate(false)); // 4 KiB segments
    fill(&s, 10);
    let used = fs.used();
    fs.faults(|f| f.capacity = Some(used));
    let mut errs = 0;
    for i in 0..40 {
        if s.append(&payload(i)).is_err() {
            errs += 1;
        }
    }
    assert_eq!(errs, 40);
    fs.faults(|f| f.capacity = None);
    for i in 0..40 {
        s.append(&payload(i)).unwrap();
    }
    assert_eq!(drain(&s).len(), 50);
}

#[test]
fn write_error_eio() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts());
    fill(&s, 3);
    fs.faults(|f| f.fail_writes = 1);
    let e = s.append(b"lost").unwrap_err();
    assert!(e.to_string().contains("simulated I/O error"), "{e}");
    s.append(b"kept").unwrap();
    fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, opts());
    let got = drain(&s);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].1, b"kept".to_vec());
}

/// ENOSPC part-way through a write and the truncate back fails too: the segment is closed,
/// writing goes on in a new one, and recovery never mixes up the leftovers.
#[test]
fn partial_write_and_failed_truncate() {
    let fs = SimFs::new();
    let o = one_segment_opts().with_preallocate(false);
    let (s, _) = open_sim(&fs, o.clone());
    fill(&s, 5);
    let used = fs.used();
    fs.faults(|f| {
        f.capacity = Some(used + 50);
        f.fail_set_len = 1;
    });
    assert!(s.append(&[7u8; 200]).is_err());
    fs.faults(|f| f.capacity = None);
    let q = s.append(b"next").unwrap();
    fs.crash();
    drop(s);
    let (s, _) = open_sim(&fs, o);
    let got = drain(&s);
    assert_eq!(seqs(&got)[..5], [0, 1, 2, 3, 4]);
    assert_eq!(got.last().unwrap(), &(q, b"next".to_vec()));
    assert_eq!(got.len(), 6);
}

/// The spool's own backlog fills the disk (the file system is smaller than `max_bytes`, the
/// receiver is away): appends fail with `ENOSPC`. Then the receiver acknowledges everything.
/// The space the acknowledged records hold must come back without a restart: the next append
/// succeeds. (A fully acknowledged *active* segment used to be kept until the spool passed half
/// of `max_bytes`, which a disk smaller than that never reaches: every append failed with
/// `ENOSPC` until the process restarted.)
#[test]
fn disk_filled_by_the_backlog_frees_itself_once_acknowledged() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, one_segment_opts()); // 64 MiB max, 8 MiB segments
    let capacity = 64 * 1024;
    fs.faults(|f| f.capacity = Some(capacity));
    let mut accepted = Vec::new();
    let full = loop {
        match s.append(&payload(accepted.len() as u64)) {
            Ok(q) => accepted.push(q),
            Err(e) => break e,
        }
        assert!(accepted.len() < 10_000, "the capacity is never reached");
    };
    assert_eq!(
        full.io_kind(),
        Some(std::io::ErrorKind::StorageFull),
        "{full}"
    );
    assert!(accepted.len() > 10);
    // Still full while nothing is acknowledged.
    assert!(s.append(&payload(accepted.len() as u64)).is_err());
    // Delivered: everything acknowledged. No restart, the disk is as small as before.
    let got = drain(&s);
    assert_eq!(seqs(&got), accepted);
    s.ack(&accepted).unwrap();
    let q = s
        .append(b"after the backlog was delivered")
        .expect("space held by acknowledged records comes back");
    // And again a whole disk's worth: the space is really free.
    for i in 0..accepted.len() as u64 / 2 {
        s.append(&payload(i)).unwrap();
    }
    assert!(q > *accepted.last().unwrap());
    assert!(fs.used() <= capacity);
}

/// The disk fills up while a segment has reserved space left: appends go on into it, and
/// only the one that needs a new segment fails (`fallocate` and then the write get `ENOSPC`).
/// Nothing accepted is lost, across a power loss too.
#[test]
fn reserved_space_takes_appends_while_the_disk_is_full() {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts()); // 4 KiB segments, reserved whole
    s.append(&payload(0)).unwrap();
    let seg = sim_dir().join("00000000000000000001.seg");
    assert_eq!(
        fs.read(&seg).unwrap().len(),
        4096,
        "the segment reserved its size"
    );
    let used = fs.used();
    fs.faults(|f| f.capacity = Some(used));
    let mut accepted = vec![0];
    let err = loop {
        let i = accepted.len() as u64;
        match s.append(&payload(i)) {
            Ok(q) => accepted.push(q),
            Err(e) => break e,
        }
    };
    assert!(
        accepted.len() > 5,
        "appends into the reserved space succeed"
    );
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::StorageFull),
        "{err}"
    );
    let bytes: u64 = accepted.iter().map(|&q| 28 + payload(q).len() as u64).sum();
    assert!(
        16 + bytes <= 4096 && 16 + bytes + 28 + 220 > 4096,
        "failed only when full"
    );
    fs.faults(|f| f.capacity = None);
    let q = s.append(b"after").unwrap();
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, opts());
    assert_eq!((rec.damaged_records, rec.torn_tail_bytes), (0, 0));
    let got = drain(&s);
    assert_eq!(got.len(), accepted.len() + 1);
    assert!(got[..accepted.len()].iter().all(|(q, p)| *p == payload(*q)));
    assert_eq!(got.last().unwrap(), &(q, b"after".to_vec()));
}

/// Where space cannot be reserved (no `fallocate`), segments grow as they are written and
/// everything works as without the option.
#[test]
fn without_fallocate_segments_grow_as_written() {
    let fs = SimFs::new();
    fs.faults(|f| f.no_allocate = true);
    let (s, _) = open_sim(&fs, opts());
    fill(&s, 30);
    let data: u64 = (0..30).map(|i| 28 + payload(i).len() as u64).sum();
    assert!(
        fs.used() >= data && fs.used() < data + 16 * 4,
        "no space reserved"
    );
    assert!((data..data + 16 * 4).contains(&s.stats().bytes));
    fs.crash();
    drop(s);
    let (s, rec) = open_sim(&fs, opts());
    assert_eq!((rec.records, rec.damaged_records), (30, 0));
    assert_eq!(seqs(&drain(&s)), (0..30).collect::<Vec<_>>());
}
