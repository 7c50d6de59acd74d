//! Arbitrary bytes as a spool directory left behind by a dead process: two segment files and
//! an ack log, recovered by `Spool::open` (the spool's on-disk decoders: segment header, record
//! headers and checksums with resync, the ack log's entries) on the in-memory file system.
//!
//! Input layout (what `crates/spool/tests/fuzz_seeds.rs` writes): `u16 LE` length and bytes of
//! the first segment, `u16 LE` length and bytes of the ack log, the rest the second segment. A
//! missing part is an absent file.
//!
//! Besides "no panic", it asserts what the spool promises after any damage:
//! - open never fails because of what the files hold;
//! - records come back in strictly increasing seq order, as many as recovery counted;
//! - a new append gets a seq above every recovered one and the ack log's watermark (seqs are
//!   never reused);
//! - once everything is acknowledged and the spool closed, a second open finds no record, no
//!   damage, and keeps the seq order.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use spool::sim::SimFs;
use spool::{Cursor, Durability, Spool, SpoolOptions, WhenFull};

// Recovery does not depend on the durability mode; `Interval` keeps the append from waiting on
// the flusher thread (a thread hand-off per input), and the close still syncs everything.
fn opts() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        durability: Durability::Interval(Duration::from_secs(3600)),
        when_full: WhenFull::Reject,
        preallocate: true,
    }
}

fn part<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    if data.len() < 2 {
        return None;
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    let n = n.min(rest.len());
    let (head, tail) = rest.split_at(n);
    *data = tail;
    Some(head)
}

fn read_all(s: &Spool) -> Vec<u64> {
    let mut cursor = Cursor::new();
    let mut seqs = Vec::new();
    loop {
        let batch = s.read_from(&mut cursor, 64).expect("read a recovered spool");
        if batch.is_empty() {
            return seqs;
        }
        seqs.extend(batch.into_iter().map(|(q, _)| q));
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("/sim/spool");
    let fs = SimFs::new();
    // The directory, then the files a dead process left.
    fs.io().create_dir_all(dir).expect("create the directory");
    let mut rest = data;
    let first = part(&mut rest);
    let acks = part(&mut rest);
    if let Some(b) = first {
        fs.write(&dir.join("00000000000000000001.seg"), b);
    }
    if let Some(b) = acks {
        fs.write(&dir.join("ACKS"), b);
    }
    if !rest.is_empty() {
        fs.write(&dir.join("00000000000000000002.seg"), rest);
    }

    let (s, rec) = Spool::open_with_io(dir, opts(), fs.io()).expect("open never fails on damage");
    let seqs = read_all(&s);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs.len() as u64, rec.records, "{rec:?}");
    assert!(seqs.iter().all(|&q| q >= rec.acked_watermark && q < rec.next_seq), "{rec:?}");
    let q = s.append(b"after recovery").expect("append after recovery");
    assert!(q >= rec.next_seq && q >= rec.acked_watermark, "{q} {rec:?}");
    let mut all = seqs.clone();
    all.push(q);
    s.ack(&all).unwrap();
    drop(s);

    let (s, again) = Spool::open_with_io(dir, opts(), fs.io()).expect("reopen");
    assert_eq!((again.records, again.damaged_records), (0, 0), "{again:?}");
    assert!(again.next_seq > q, "{again:?}");
    assert!(read_all(&s).is_empty());
});
