//! Model-based test: random sequences of append, read, ack, flush, faults (failed fsync,
//! failed write, failed truncate, disk full), crash (unsynced bytes dropped, possibly torn) and
//! clean reopen, run against the simulated file system and checked against a simple model:
//!
//! * every append that returned `Ok` and is not acknowledged is read back, in seq order, with
//!   its payload — after a crash too, in `Fsync` mode; in `Interval` mode only those covered by
//!   a successful `flush` must survive a crash;
//! * nothing is read that was not appended (an append that failed may show up after a restart:
//!   delivery is at-least-once), and acknowledged records are not read again in the session;
//! * an acknowledged record comes back after a crash only if its ack was not yet durable (the
//!   documented allowance); acks made durable by `flush` never come back.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use spool::sim::SimFs;
use spool::{Cursor, Spool, SpoolError};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u16>),
    Read(usize),
    /// Ack the first `n` delivered, unacknowledged records; swap pairs if `shuffle`.
    Ack(usize, bool),
    AckUnknown(u64),
    Flush,
    Check,
    FailSync,
    FailWrite,
    FailTruncate,
    DiskFull(u16),
    DiskFree,
    /// Power loss; keep this percentage of each file's unsynced appended bytes.
    Crash(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec(0u16..400, 1..6).prop_map(Op::Append),
        4 => (1usize..20).prop_map(Op::Read),
        4 => ((1usize..15), any::<bool>()).prop_map(|(n, s)| Op::Ack(n, s)),
        1 => (0u64..2000).prop_map(Op::AckUnknown),
        2 => Just(Op::Flush),
        2 => Just(Op::Check),
        1 => Just(Op::FailSync),
        1 => Just(Op::FailWrite),
        1 => Just(Op::FailTruncate),
        1 => (0u16..2000).prop_map(Op::DiskFull),
        1 => Just(Op::DiskFree),
        2 => (0u8..=100).prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// What the spool must (or, for `uncertain`, may) return now: unacked records.
    live: BTreeMap<u64, Vec<u8>>,
    /// Subset of `live` that a crash may lose (Interval mode: not yet flushed).
    at_risk: BTreeSet<u64>,
    /// Subset of `live` that may be gone even without a crash (a failed fsync discarded it).
    uncertain: BTreeSet<u64>,
    /// Payloads of failed appends: may appear after a restart.
    phantoms: HashSet<Vec<u8>>,
    /// Acked records whose ack may not be durable: may appear after a crash.
    acked_pending: BTreeMap<u64, Vec<u8>>,
    /// Acked records whose ack is durable: must never appear again.
    gone: HashSet<Vec<u8>>,
    /// Watermark the ack log holds (written, maybe not synced).
    log_w: u64,
    delivered: Vec<u64>,
    last_delivered: Option<u64>,
    counter: u64,
}

impl Model {
    fn watermark(&self, next_seq: u64) -> u64 {
        self.live.keys().next().copied().unwrap_or(next_seq)
    }
}

fn faults_armed(fs: &SimFs) -> bool {
    let f = fs.armed();
    f.capacity.is_some() || f.fail_syncs > 0 || f.fail_writes > 0 || f.fail_set_len > 0
}

fn run(interval: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fs = SimFs::new();
    let o = if interval { interval_opts() } else { opts() };
    let mut m = Model::default();
    let mut sp: Option<Spool> = Some(open_sim(&fs, o.clone()).0);
    let mut cursor = Cursor::new();
    let mut next_seq = 0u64;

    for op in ops {
        let s = sp.as_ref().unwrap();
        match op {
            Op::Append(sizes) => {
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&n| {
                        m.counter += 1;
                        let mut p = m.counter.to_le_bytes().to_vec();
                        p.extend((0..n).map(|i| (i as u64 * 7 + m.counter) as u8));
                        p
                    })
                    .collect();
                let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                match s.append_batch(&refs) {
                    Ok(r) => {
                        prop_assert_eq!(r.end - r.start, payloads.len() as u64);
                        prop_assert!(r.start >= next_seq, "seqs increase");
                        next_seq = r.end;
                        for (seq, p) in r.zip(payloads) {
                            if interval {
                                m.at_risk.insert(seq);
                            }
                            m.live.insert(seq, p);
                        }
                    }
                    Err(SpoolError::Full { .. }) => {}
                    Err(e) => {
                        prop_assert!(
                            matches!(e, SpoolError::Write { .. } | SpoolError::Sync { .. }),
                            "unexpected error {e}"
                        );
                        m.phantoms.extend(payloads);
                    }
                }
            }
            Op::Read(n) => {
                let v = s.read_from(&mut cursor, n).unwrap();
                prop_assert!(v.len() <= n);
                for (seq, p) in v {
                    prop_assert!(m.last_delivered.is_none_or(|l| seq > l), "cursor order");
                    prop_assert_eq!(m.live.get(&seq), Some(&p), "read {} not live", seq);
                    m.last_delivered = Some(seq);
                    m.delivered.push(seq);
                }
            }
            Op::Ack(n, shuffle) => {
                let mut pick: Vec<u64> = m
                    .delivered
                    .iter()
                    .copied()
                    .filter(|q| m.live.contains_key(q))
                    .take(n)
                    .collect();
                if shuffle {
                    for c in pick.chunks_mut(2) {
                        c.reverse();
                    }
                }
                let faulty = faults_armed(&fs);
                let w_before = m.watermark(next_seq);
                s.ack(&pick).unwrap();
                for q in pick {
                    let p = m.live.remove(&q).unwrap();
                    m.at_risk.remove(&q);
                    m.uncertain.remove(&q);
                    m.acked_pending.insert(q, p);
                }
                let w_after = m.watermark(next_seq);
                if w_after != w_before && !faulty {
                    m.log_w = w_after;
                }
            }
            Op::AckUnknown(q) => {
                // Only seqs the model does not hold: must be ignored.
                if !m.live.contains_key(&q) {
                    s.ack(&[q]).unwrap();
                }
            }
            Op::Flush => {
                let faulty = faults_armed(&fs);
                match s.flush() {
                    Ok(()) if !faulty => {
                        m.at_risk.clear();
                        let lw = m.log_w;
                        let durable: Vec<u64> =
                            m.acked_pending.range(..lw).map(|(k, _)| *k).collect();
                        for k in durable {
                            let p = m.acked_pending.remove(&k).unwrap();
                            m.gone.insert(p);
                        }
                    }
                    Ok(()) => {}
                    Err(_) => {
                        // The unflushed records may have been discarded.
                        m.uncertain.extend(m.at_risk.iter().copied());
                    }
                }
                if !interval && faulty {
                    // (Fsync mode: every Ok'ed append is already durable.)
                }
            }
            Op::Check => {
                let got = drain(s);
                check_session(&m, &got)?;
            }
            Op::FailSync => fs.faults(|f| f.fail_syncs += 1),
            Op::FailWrite => fs.faults(|f| f.fail_writes += 1),
            Op::FailTruncate => fs.faults(|f| f.fail_set_len += 1),
            Op::DiskFull(headroom) => {
                let used = fs.used();
                fs.faults(|f| f.capacity = Some(used + headroom as u64));
            }
            Op::DiskFree => fs.faults(|f| f.capacity = None),
            Op::Crash(keep) => {
                fs.crash_with(|n| n * keep as usize / 100);
                drop(sp.take());
                fs.faults(|f| *f = Default::default());
                let (s2, _) = open_sim(&fs, o.clone());
                let got = drain(&s2);
                check_restart(&m, &got, true)?;
                reset_after_restart(&mut m, &got);
                next_seq = s2.stats().next_seq;
                sp = Some(s2);
                cursor = Cursor::new();
            }
            Op::Reopen => {
                fs.faults(|f| *f = Default::default());
                drop(sp.take());
                let (s2, _) = open_sim(&fs, o.clone());
                let got = drain(&s2);
                check_restart(&m, &got, false)?;
                reset_after_restart(&mut m, &got);
                next_seq = s2.stats().next_seq;
                sp = Some(s2);
                cursor = Cursor::new();
            }
        }
        let s = sp.as_ref().unwrap();
        let st = s.stats();
        if m.uncertain.is_empty() {
            prop_assert_eq!(st.records, m.live.len() as u64, "stats.records");
        }
    }
    // Final: a crash loses nothing that must survive.
    fs.crash();
    drop(sp.take());
    fs.faults(|f| *f = Default::default());
    let (s2, _) = open_sim(&fs, o);
    let got = drain(&s2);
    check_restart(&m, &got, true)?;
    Ok(())
}

/// In-session: exactly the live records (minus uncertain ones), in order.
fn check_session(m: &Model, got: &[(u64, Vec<u8>)]) -> Result<(), TestCaseError> {
    let mut prev = None;
    for (seq, p) in got {
        prop_assert!(prev.is_none_or(|x| *seq > x), "order");
        prev = Some(*seq);
        prop_assert_eq!(m.live.get(seq), Some(p), "unexpected record {}", seq);
    }
    let got_seqs: BTreeSet<u64> = got.iter().map(|r| r.0).collect();
    for seq in m.live.keys() {
        if !m.uncertain.contains(seq) {
            prop_assert!(got_seqs.contains(seq), "record {} missing", seq);
        }
    }
    Ok(())
}

fn check_restart(m: &Model, got: &[(u64, Vec<u8>)], crashed: bool) -> Result<(), TestCaseError> {
    let mut prev = None;
    let live_payloads: HashSet<&Vec<u8>> = m.live.values().collect();
    let pending: HashSet<&Vec<u8>> = m.acked_pending.values().collect();
    let mut seen = HashSet::new();
    for (seq, p) in got {
        prop_assert!(prev.is_none_or(|x| *seq > x), "order after restart");
        prev = Some(*seq);
        prop_assert!(seen.insert(p.clone()), "duplicate record after restart");
        prop_assert!(
            !m.gone.contains(p),
            "durably acked record {} resurrected",
            seq
        );
        let allowed = live_payloads.contains(p)
            || m.phantoms.contains(p)
            || (crashed && pending.contains(p))
            || (!crashed && m.acked_pending.range(m.log_w..).any(|(_, x)| x == p));
        prop_assert!(allowed, "record {} was never appended (or acked)", seq);
        if let Some(lp) = m.live.get(seq) {
            prop_assert_eq!(lp, p, "payload of {}", seq);
        }
    }
    let got_payloads: HashSet<&Vec<u8>> = got.iter().map(|r| &r.1).collect();
    for (seq, p) in &m.live {
        let may_lose = m.uncertain.contains(seq) || (crashed && m.at_risk.contains(seq));
        if !may_lose {
            prop_assert!(got_payloads.contains(p), "record {} lost", seq);
        }
    }
    Ok(())
}

fn reset_after_restart(m: &mut Model, got: &[(u64, Vec<u8>)]) {
    m.live = got.iter().cloned().collect();
    m.at_risk.clear();
    m.uncertain.clear();
    m.phantoms.clear();
    m.acked_pending.clear();
    m.log_w = 0;
    m.delivered.clear();
    m.last_delivered = None;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn model_fsync(ops in proptest::collection::vec(op(), 1..80)) {
        run(false, ops)?;
    }

    #[test]
    fn model_interval(ops in proptest::collection::vec(op(), 1..80)) {
        run(true, ops)?;
    }
}

/// Concurrent appenders in Fsync mode and a crash at an arbitrary moment: every append that
/// returned Ok before the crash is recovered.
#[test]
fn crash_during_concurrent_appends() {
    for round in 0..20u64 {
        let fs = SimFs::new();
        let (s, _) = open_sim(&fs, opts());
        let s = Arc::new(s);
        let oks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut hs = Vec::new();
        for t in 0..3u64 {
            let s = s.clone();
            let oks = oks.clone();
            let tx = tx.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0.. {
                    let p = format!("t{t}-i{i}").into_bytes();
                    match s.append(&p) {
                        Ok(seq) => oks.lock().unwrap().push((seq, p)),
                        Err(_) => return, // the "process" died
                    }
                    if i == 20 + round * 3 {
                        let _ = tx.send(());
                    }
                }
            }));
        }
        // Crash once the first thread made some progress (no timing assumptions).
        rx.recv().unwrap();
        let acked_before_crash: Vec<(u64, Vec<u8>)> = oks.lock().unwrap().clone();
        fs.crash_with(|n| n / 2);
        for h in hs {
            h.join().unwrap();
        }
        drop(s);
        let (s2, _) = open_sim(&fs, opts());
        let got: BTreeMap<u64, Vec<u8>> = drain(&s2).into_iter().collect();
        for (seq, p) in acked_before_crash {
            assert_eq!(
                got.get(&seq),
                Some(&p),
                "round {round}: Ok'ed append {seq} lost"
            );
        }
    }
}
