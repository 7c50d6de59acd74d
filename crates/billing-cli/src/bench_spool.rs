//! `billing bench --spool`: the spool's acceptance rate from two producer threads in both
//! durability modes, single `add` against `add_batch`, and the client's memory with a growing
//! backlog on disk (the ingester down), which must not grow with the backlog.

use std::time::{Duration, Instant, SystemTime};

use billing_client::{AmountType, Client, Config, Event, Metrics, SpoolSync};

const PRODUCERS: usize = 2;

fn event(t: usize, i: usize) -> Event {
    Event {
        unique_key: format!("p{t}-{i}"),
        internal_instance_id: "1234".into(),
        occurred_at: SystemTime::now(),
        amounts: [(AmountType::SAMPLES, i as i64 + 1)].into(),
        metadata: [("report".to_string(), format!("r-{i}"))].into(),
    }
}

/// Resident set size of this process in bytes (Linux), 0 elsewhere.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn dead_address() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

/// Events accepted per second by `PRODUCERS` threads adding `per_thread` events each, in
/// batches of `batch` (1 = single `add`).
fn accept_rate(sync: SpoolSync, per_thread: usize, batch: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let cfg = {
        let mut c = Config::default();
        c.ingester = dead_address()?;
        c.spool_dir = Some(dir.path().to_path_buf());
        c.spool_sync = sync;
        c
    };
    let client = Client::with_metrics(cfg, Metrics::new())?;
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|t| {
                let client = &client;
                s.spawn(move || -> anyhow::Result<()> {
                    let mut i = 0;
                    while i < per_thread {
                        let n = batch.min(per_thread - i);
                        if batch == 1 {
                            client.add(event(t, i))?;
                        } else {
                            client
                                .add_batch((i..i + n).map(|j| event(t, j)).collect())
                                .map_err(|e| anyhow::anyhow!("{e}"))?;
                        }
                        i += n;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        }
        Ok(())
    })?;
    let rate = (PRODUCERS * per_thread) as f64 / start.elapsed().as_secs_f64();
    client.close_within(Duration::ZERO);
    Ok(rate)
}

pub fn run() -> anyhow::Result<()> {
    println!(
        "spool, {PRODUCERS} producer threads, ingester down (acceptance only), 1 record per event:"
    );
    println!("{:<62} {:>12}", "run", "events/s");
    for (name, sync, per_thread, batch) in [
        (
            "fsync, add (one event per call)",
            SpoolSync::Fsync,
            2_000,
            1,
        ),
        ("fsync, add_batch of 1000", SpoolSync::Fsync, 500_000, 1000),
        (
            "interval (100ms), add (one event per call)",
            SpoolSync::Interval,
            250_000,
            1,
        ),
        (
            "interval (100ms), add_batch of 1000",
            SpoolSync::Interval,
            500_000,
            1000,
        ),
    ] {
        println!("{name:<62} {:>12.0}", accept_rate(sync, per_thread, batch)?);
    }
    // Memory with a growing backlog: the sender reads ahead a bounded window only.
    let dir = tempfile::tempdir()?;
    let cfg = {
        let mut c = Config::default();
        c.ingester = dead_address()?;
        c.spool_dir = Some(dir.path().to_path_buf());
        c.spool_sync = SpoolSync::Interval;
        c
    };
    let client = Client::with_metrics(cfg, Metrics::new())?;
    let mut marks = Vec::new();
    for step in 0..4 {
        for b in 0..250 {
            client
                .add_batch((0..1000).map(|i| event(step, b * 1000 + i)).collect())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        marks.push((client.pending(), rss_bytes()));
    }
    client.close_within(Duration::ZERO);
    println!("client RSS with the backlog on disk (ingester down):");
    for (pending, rss) in marks {
        println!(
            "  {pending:>9} events in the spool: RSS {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
