//! The spool never holds more than `max_bytes`: when full, `Reject` fails at once with
//! `Full`; `Wait(t)` waits for acks to free space, then fails with `Full`.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use spool::{Spool, SpoolError, SpoolOptions, WhenFull};

fn small() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 64 << 10,
        segment_bytes: 8 << 10,
        ..opts()
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn reject_when_full_and_accept_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), small());
    let mut n = 0u64;
    let err = loop {
        match s.append(&payload(n)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(dir_bytes(dir.path()) <= 64 << 10);
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(err.to_string().contains("full"), "{err}");
    assert!(n > 100);
    assert!(s.stats().bytes <= 64 << 10);
    assert_eq!(s.stats().bytes, dir_bytes(dir.path()));
    // Still full on retry; reading does not free space, acking does.
    assert!(s.append(&payload(n)).is_err());
    let all = seqs(&drain(&s));
    assert_eq!(all.len() as u64, n);
    s.ack(&all[..all.len() / 2]).unwrap();
    assert!(s.stats().bytes < 48 << 10, "{:?}", s.stats());
    s.append(b"x").unwrap();
    // Acking everything frees everything (the active segment too, under pressure).
    s.ack(&seqs(&drain(&s))).unwrap();
    assert_eq!(s.stats().records, 0);
    for i in 0..n / 2 {
        s.append(&payload(i)).unwrap();
    }
}

#[test]
fn wait_for_space_freed_by_acks() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        when_full: WhenFull::Wait(Duration::from_secs(600)),
        ..small()
    };
    let (s, _) = open_dir(dir.path(), o);
    let s = Arc::new(s);
    // Fill up (a second spool handle with Reject would be locked; use try-sized writes).
    let mut n = 0u64;
    while s.stats().bytes + 400 < 64 << 10 {
        s.append(&payload(n)).unwrap();
        n += 1;
    }
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || {
            // Needs more than is free: blocks until the acks below free a segment.
            s.append(&vec![1u8; 2000]).unwrap()
        })
    };
    s.ack(&seqs(&drain(&s))).unwrap();
    let seq = waiter.join().unwrap();
    assert!(seq >= n);
    let got = drain(&s);
    assert_eq!(got.last().unwrap().1, vec![1u8; 2000]);
}

#[test]
fn wait_times_out_with_full() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        when_full: WhenFull::Wait(Duration::from_millis(20)),
        ..small()
    };
    let (s, _) = open_dir(dir.path(), o);
    let err = loop {
        if let Err(e) = s.append(&[0u8; 300]) {
            break e;
        }
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
}

#[test]
fn too_large() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), small());
    let big = vec![0u8; 65 << 10];
    assert!(matches!(s.append(&big), Err(SpoolError::TooLarge { .. })));
    let huge = vec![0u8; (16 << 20) + 1];
    assert!(matches!(s.append(&huge), Err(SpoolError::TooLarge { .. })));
    let parts: Vec<&[u8]> = (0..100).map(|_| &big[..1000]).collect();
    assert!(matches!(
        s.append_batch(&parts),
        Err(SpoolError::TooLarge { .. })
    ));
    // A record bigger than a segment gets a segment of its own.
    let q = s.append(&vec![5u8; 12 << 10]).unwrap();
    assert_eq!(drain(&s), vec![(q, vec![5u8; 12 << 10])]);
    assert!(!SpoolError::TooLarge { len: 1, max: 0 }.is_retriable());
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = SpoolOptions {
        max_bytes: 100,
        ..opts()
    };
    assert!(matches!(
        Spool::open(dir.path(), bad),
        Err(SpoolError::InvalidOptions(_))
    ));
    let clamped = SpoolOptions {
        max_bytes: 1 << 20,
        segment_bytes: 1 << 30,
        ..opts()
    };
    let (s, _) = Spool::open(dir.path(), clamped).unwrap();
    assert_eq!(s.options().segment_bytes, 256 << 10);
}

#[test]
fn limit_holds_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), small());
    while s.append(&payload(3)).is_ok() {}
    drop(s);
    let (s, rec) = open_dir(dir.path(), small());
    assert!(rec.bytes <= 64 << 10);
    assert!(matches!(
        s.append(&payload(3)),
        Err(SpoolError::Full { .. })
    ));
}

/// Space a segment reserves counts against `max_bytes` from the start; a roll gives back what
/// the closed segment did not use, and a close cuts the active one back to its data. On a
/// real file system (where `fallocate` works, as on ext4, xfs and tmpfs).
#[test]
fn reserved_space_is_counted_and_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), small());
    s.append(&payload(0)).unwrap();
    let first = segment_files(dir.path()).pop().unwrap();
    if std::fs::metadata(&first).unwrap().len() != 8 << 10 {
        eprintln!("this file system cannot reserve space; nothing to check");
        return;
    }
    assert_eq!(s.stats().bytes, 8 << 10);
    let mut n = 1u64;
    while segment_files(dir.path()).len() < 2 {
        s.append(&payload(n)).unwrap();
        n += 1;
        assert_eq!(s.stats().bytes, dir_bytes(dir.path()));
    }
    // The closed segment holds exactly its records now.
    let data: u64 = (0..n - 1).map(|i| 28 + payload(i).len() as u64).sum();
    assert_eq!(std::fs::metadata(&first).unwrap().len(), 16 + data);
    assert_eq!(s.stats().bytes, 16 + data + (8 << 10));
    drop(s);
    let last = segment_files(dir.path()).pop().unwrap();
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        16 + 28 + payload(n - 1).len() as u64
    );
    let (s, rec) = open_dir(dir.path(), small());
    assert_eq!((rec.records, rec.torn_tail_bytes), (n, 0));
    assert_eq!(seqs(&drain(&s)), (0..n).collect::<Vec<_>>());
}
