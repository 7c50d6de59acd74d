//! The seeds of the `spool_recover` fuzz target (`fuzz/seeds/spool_recover/`), made by the
//! spool itself on the in-memory file system, then damaged on purpose: valid spools (one and
//! two segments, with and without acknowledgements), a torn tail, a flipped checksum, a broken
//! segment header, a damaged ack log entry, a header-only segment, nothing at all.
//!
//! `UPDATE_FUZZ_SEEDS=1 cargo test -p spool --test fuzz_seeds` rewrites them; without it the
//! test checks that the committed seeds are there and recover as their names say (a seed that
//! no longer reaches the code it was made for fails here, not silently in the fuzzer).
//!
//! Input layout (see `fuzz/fuzz_targets/spool_recover.rs`): `u16 LE` length and bytes of the
//! first segment, `u16 LE` length and bytes of the ack log, the rest the second segment.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use spool::sim::SimFs;
use spool::{Recovery, Spool};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/spool_recover")
}

/// The files of a spool after `appends` records of `payload(i)` (4 KiB segments), the first
/// `acked` of them acknowledged: (segments in id order, ACKS).
fn spool_files(appends: u64, acked: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
    let fs = SimFs::new();
    let (s, _) = open_sim(&fs, opts());
    for i in 0..appends {
        s.append(&payload(i)).unwrap();
    }
    s.ack(&(0..acked).collect::<Vec<_>>()).unwrap();
    s.flush().unwrap();
    drop(s);
    let dir = sim_dir();
    let segs = fs
        .list(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| fs.read(&dir.join(n)).unwrap())
        .collect();
    (segs, fs.read(&dir.join("ACKS")).unwrap_or_default())
}

/// One input: both length-prefixed parts (`None`: an empty file, which recovery reads as an
/// absent one), then the second segment.
fn input(first: Option<&[u8]>, acks: Option<&[u8]>, second: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [first, acks] {
        let p = part.unwrap_or_default();
        out.extend_from_slice(&u16::try_from(p.len()).unwrap().to_le_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(second);
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (one, acks_one) = spool_files(12, 0);
    let (two, acks_two) = spool_files(40, 15);
    assert_eq!(two.len(), 2, "40 records span two 4 KiB segments");
    let mut torn = one[0].clone();
    torn.truncate(torn.len() - 30);
    let mut flipped = one[0].clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let mut header = two[0].clone();
    header[3] ^= 0xff;
    let mut acks_damaged = acks_two.clone();
    acks_damaged[10] ^= 0x01;
    acks_damaged.extend_from_slice(&acks_two);
    acks_damaged.extend_from_slice(&[0xb5, 0x41]);
    vec![
        (
            "valid-one-segment",
            input(Some(&one[0]), Some(&acks_one), &[]),
        ),
        (
            "valid-two-segments-acked",
            input(Some(&two[0]), Some(&acks_two), &two[1]),
        ),
        ("valid-no-ack-log", input(Some(&one[0]), None, &[])),
        ("torn-tail", input(Some(&torn), Some(&acks_one), &[])),
        (
            "damaged-checksum",
            input(Some(&flipped), Some(&acks_one), &[]),
        ),
        (
            "damaged-segment-header",
            input(Some(&header), Some(&acks_two), &two[1]),
        ),
        (
            "acks-damaged-entry",
            input(Some(&two[0]), Some(&acks_damaged), &two[1]),
        ),
        (
            "header-only",
            input(Some(&one[0][..16]), Some(&acks_one), &[]),
        ),
        ("empty", Vec::new()),
    ]
}

/// What the fuzz target does with an input, up to recovery and reading everything back.
fn recover(data: &[u8]) -> Recovery {
    let fs = SimFs::new();
    let dir = sim_dir();
    drop(open_sim(&fs, opts()));
    for f in fs.list(&dir) {
        fs.remove(&dir.join(f));
    }
    let mut rest = data;
    let mut part = || {
        if rest.len() < 2 {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let p = &rest[2..2 + n];
        rest = &rest[2 + n..];
        Some(p)
    };
    let first = part();
    let acks = part();
    if let Some(b) = first {
        fs.write(&dir.join("00000000000000000001.seg"), b);
    }
    if let Some(b) = acks {
        fs.write(&dir.join("ACKS"), b);
    }
    if !rest.is_empty() {
        fs.write(&dir.join("00000000000000000002.seg"), rest);
    }
    let (s, rec) = Spool::open_with_io(&dir, opts(), fs.io()).expect("open");
    assert_eq!(drain(&s).len() as u64, rec.records);
    rec
}

#[test]
fn fuzz_seeds_are_committed_and_reach_what_they_were_made_for() {
    let dir = seeds_dir();
    if std::env::var_os("UPDATE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    let names: Vec<&str> = seeds().iter().map(|(n, _)| *n).collect();
    for name in names {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!(
                "fuzz seed {name}: {e}; run UPDATE_FUZZ_SEEDS=1 cargo test -p spool --test fuzz_seeds"
            )
        });
        let rec = recover(&data);
        let clean = rec.damaged_records == 0 && rec.torn_tail_bytes == 0;
        let ok = match name {
            "valid-one-segment" | "valid-no-ack-log" => clean && rec.records == 12,
            "valid-two-segments-acked" => clean && rec.records == 25 && rec.acked_watermark == 15,
            "torn-tail" => rec.torn_tail_bytes > 0 && rec.records == 11,
            "damaged-checksum" => rec.damaged_records > 0 && rec.records < 12,
            // The header is saved aside and rewritten; the records behind it all survive.
            "damaged-segment-header" => rec.records == 25,
            "acks-damaged-entry" => clean && rec.acked_watermark == 15,
            "header-only" | "empty" => rec.records == 0,
            other => unreachable!("{other}"),
        };
        assert!(ok, "seed {name} recovers as {rec:?}");
    }
}
