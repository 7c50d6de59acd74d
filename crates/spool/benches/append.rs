//! Spool throughput. Run: `cargo bench -p spool --bench append`
//!
//! * `fdatasync/4k_append`: raw `write(4 KiB)` + `fdatasync` at the end of a file (the floor
//!   for one `Fsync` append), on the same file system as the spool.
//! * `fsync/append_2_threads`, `fsync/append_8_threads`: two or eight threads calling `append`
//!   (one 200-byte record each call); they share fsyncs (group commit).
//! * `fsync/append_batch_1000_2_threads`: two threads calling `append_batch` with 1000 records.
//! * `interval/append_{2,8}_threads`, `interval/append_batch_1000_2_threads`: `Interval(1s)`.
//!
//! Throughput is in records (elements) per second. Records are acknowledged between samples
//! (not timed) so the spool does not fill up.

use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spool::{Durability, Spool, SpoolOptions};

const PAYLOAD: usize = 200;
const BATCH: usize = 1000;

fn open(durability: Durability) -> (tempfile::TempDir, Arc<Spool>) {
    // Next to the build output: the same disk the spool would use in production here.
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        max_bytes: 8 << 30,
        durability,
        ..SpoolOptions::default()
    };
    let (s, _) = Spool::open(dir.path(), opts).unwrap();
    (dir, Arc::new(s))
}

/// Acknowledge everything appended so far (untimed), so segments are reclaimed.
fn ack_all(s: &Spool, from: &mut u64) {
    let to = s.stats().next_seq;
    let seqs: Vec<u64> = (*from..to).collect();
    s.ack(&seqs).unwrap();
    *from = to;
}

/// Run `per_thread(iters_for_this_thread)` on `threads` threads; returns the wall time.
fn on_threads(s: &Arc<Spool>, threads: u64, iters: u64, f: fn(&Spool, u64)) -> Duration {
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|i| iters / threads + u64::from(i < iters % threads))
        .map(|n| {
            let s = s.clone();
            std::thread::spawn(move || f(&s, n))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
}

fn appends(s: &Spool, n: u64) {
    let p = [7u8; PAYLOAD];
    for _ in 0..n {
        black_box(s.append(&p).unwrap());
    }
}

fn batches(s: &Spool, n: u64) {
    let p = [7u8; PAYLOAD];
    let batch: Vec<&[u8]> = vec![&p[..]; BATCH];
    for _ in 0..n {
        black_box(s.append_batch(&batch).unwrap());
    }
}

fn bench_fdatasync(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdatasync");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let buf = [1u8; 4096];
    g.bench_function("4k_append", |b| {
        b.iter(|| {
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
        })
    });
    let f2 = std::fs::File::create(dir.path().join("probe2")).unwrap();
    f2.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    f2.sync_all().unwrap();
    let mut off = 0u64;
    g.bench_function("4k_overwrite", |b| {
        b.iter(|| {
            f2.write_all_at(&buf, off).unwrap();
            off = (off + 4096) % (1 << 20);
            f2.sync_data().unwrap();
        })
    });
    g.finish();
}

fn bench_mode(c: &mut Criterion, name: &str, durability: Durability) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    let (_dir, s) = open(durability);
    let mut acked = 0u64;

    g.throughput(Throughput::Elements(1));
    for threads in [2, 8] {
        g.bench_function(format!("append_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let t = on_threads(&s, threads, iters, appends);
                ack_all(&s, &mut acked);
                t
            })
        });
    }
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("append_batch_1000_2_threads", |b| {
        b.iter_custom(|iters| {
            let t = on_threads(&s, 2, iters, batches);
            ack_all(&s, &mut acked);
            t
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_fdatasync(c);
    bench_mode(c, "fsync", Durability::Fsync);
    bench_mode(c, "interval", Durability::Interval(Duration::from_secs(1)));
}

criterion_group!(spool_benches, benches);
criterion_main!(spool_benches);
