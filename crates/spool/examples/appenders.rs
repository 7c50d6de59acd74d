//! Single appends from several threads in `Fsync` mode: how well group commit shares fsyncs.
//!
//! `cargo run --release -p spool --example appenders -- THREADS [APPENDS_PER_THREAD]`
//! (defaults 8 and 4000) prints appends/s. The spool lives in a temporary directory under
//! `/tmp`, on the disk whose fsync it measures. BENCHMARKS.md compares builds with it.

use std::sync::Arc;
use std::time::Instant;

use spool::{Durability, Spool, SpoolOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(8, |s| s.parse().expect("THREADS"));
    let per: usize = args
        .next()
        .map_or(4000, |s| s.parse().expect("APPENDS_PER_THREAD"));
    let dir = tempfile::tempdir_in("/tmp").expect("temporary directory");
    let opts = SpoolOptions::default().with_durability(Durability::Fsync);
    let spool = Arc::new(Spool::open(dir.path(), opts).expect("open the spool").0);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                let payload = [7u8; 200];
                for _ in 0..per {
                    spool.append(&payload).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{threads} threads: {:.0} appends/s",
        (threads * per) as f64 / secs
    );
}
