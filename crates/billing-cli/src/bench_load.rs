//! `billing bench --sink ...`: a load generator through the client library, pointable at any
//! ingester (`--sink external` and every `--billing.*` flag, shared key and TLS included) or at
//! one embedded in this process (`--sink ack|sqlite|postgres`).
//!
//! What it measures, and how:
//! - `add` latency: every `Client::add` call is timed on its producer thread into an HDR
//!   histogram (merged at the end), so p50/p99/p999 are of the caller's hot path. With
//!   `--rate`, producers are paced together to R events/s (each to R/P, on its own schedule),
//!   so latency is measured while the pipe is not saturated; without it they add as fast as
//!   they can.
//! - delivered records/s: records of events counted `success` by the client's metrics (each
//!   acknowledged by the ingester) over the time from the first add until `flush` returned.
//! - CPU seconds and peak RSS of this process (`getrusage`): with an embedded sink they include
//!   the sink, so point the bench at an external ingester to see the client alone.
//!
//! `--key-prefix P` makes every event a pure function of its index `i`: key `P-i`, instance
//! `i-(i % 100)`, amounts `(i % 1000) + 1`, time yesterday 00:00 UTC plus `i % 86400` seconds.
//! A rerun on the same UTC day (after a crash, say) re-adds identical events, which the store
//! counts as duplicates, never as conflicts or new records.
//!
//! Invariant: the run fails (non-zero exit) unless every event the producers added was
//! acknowledged; an embedded store is also checked to hold the expected number of records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use billing_client::{Amounts, Client, Config, Event, Metrics, Status};
use hdrhistogram::Histogram;

use crate::bench::{AckTarget, BenchArgs, BenchFormat, BenchSchema, Sink, StoreTarget, TYPES};

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    events: u64,
    records: u64,
    adds_per_s: f64,
    delivered_records_per_s: f64,
    latency: Histogram<u64>,
    wall_s: f64,
    cpu_s: f64,
    peak_rss_bytes: u64,
}

/// How events are made.
#[derive(Clone)]
struct Generator {
    prefix: Option<String>,
    types: usize,
    /// `--key-prefix`: yesterday 00:00 UTC, so every time is in the past and stable all day.
    base: SystemTime,
}

impl Generator {
    fn new(prefix: Option<String>, types: usize) -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let yesterday = (now / 86_400).saturating_sub(1) * 86_400;
        Self {
            prefix,
            types,
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(yesterday),
        }
    }

    fn event(&self, run: &str, i: u64) -> Event {
        let (unique_key, occurred_at, value) = match &self.prefix {
            Some(p) => (
                format!("{p}-{i}"),
                self.base + Duration::from_secs(i % 86_400),
                (i % 1000) as i64 + 1,
            ),
            None => (
                format!("{run}-{i}"),
                SystemTime::now(),
                (i % 1000) as i64 + 1,
            ),
        };
        let amounts: Amounts = TYPES[..self.types]
            .iter()
            .map(|t| (t.clone(), value))
            .collect();
        Event {
            unique_key,
            internal_instance_id: format!("i-{}", i % 100),
            occurred_at,
            amounts,
            metadata: Default::default(),
        }
    }
}

/// `getrusage(RUSAGE_SELF)`: CPU seconds (user + system) and peak RSS in bytes.
fn rusage() -> (f64, u64) {
    // SAFETY: getrusage writes into the zeroed struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports ru_maxrss in KiB.
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        (usage.ru_maxrss as u64).saturating_mul(1024),
    )
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Adds events `from, from + step, ...` below `events`, paced to `rate` events/s from `start`
/// if given.
fn produce(
    client: &Client,
    generator: &Generator,
    run: &str,
    (from, step, events): (u64, u64, u64),
    (rate, start): (Option<f64>, Instant),
    added: &AtomicU64,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = new_histogram();
    let mut n = 0u64;
    let mut i = from;
    while i < events {
        if let Some(rate) = rate {
            // Open-loop pacing: event n is due at n / rate, whatever the earlier ones took.
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut event = generator.event(run, i);
        loop {
            let t = Instant::now();
            let result = client.add(event);
            let took = t.elapsed().as_nanos().max(1) as u64;
            match result {
                Ok(()) => {
                    latency.saturating_record(took);
                    break;
                }
                Err(e) if e.is_retriable() => {
                    // Buffer full: the pipe is saturated; wait for room as the Go baseline
                    // does. Refused calls are not in the latency figures.
                    event = e.into_event();
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e).context("event refused"),
            }
        }
        added.fetch_add(1, Ordering::Relaxed);
        n += 1;
        i += step;
    }
    Ok(latency)
}

fn run_load(
    config: Config,
    args: &BenchArgs,
    expect_store: Option<&StoreTarget>,
) -> anyhow::Result<Outcome> {
    let events = args.events as u64;
    let producers = args.producers.max(1) as u64;
    let types = usize::from(args.types);
    let metrics = Metrics::new();
    let spooled = config.spool_dir.is_some();
    let client = Arc::new(Client::with_metrics(config, metrics.clone())?);
    let generator = Generator::new(args.key_prefix.clone(), types);
    let run = format!("bench-{}-{}", std::process::id(), fastrand::u64(..));
    let rate = args.rate.map(|r| r / producers as f64);
    // `--rate-since`: the schedule started that long ago (never in the future).
    let behind = args.rate_since.map_or(Duration::ZERO, |since| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(since))
            .unwrap_or_default()
    });
    let paced_from = Instant::now()
        .checked_sub(behind)
        .unwrap_or_else(Instant::now);
    let added = Arc::new(AtomicU64::new(0));
    let bar = progress(events);
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let client = client.clone();
            let generator = generator.clone();
            let run = run.clone();
            let added = added.clone();
            std::thread::Builder::new()
                .name(format!("bench-producer-{p}"))
                .spawn(move || {
                    produce(
                        &client,
                        &generator,
                        &run,
                        (p, producers, events),
                        (rate, paced_from),
                        &added,
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    while let Some(bar) = &bar {
        let done = added.load(Ordering::Relaxed);
        bar.set_position(done);
        if done >= events || threads.iter().all(|t| t.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut latency = new_histogram();
    for t in threads {
        let h = t
            .join()
            .map_err(|_| anyhow::anyhow!("a producer panicked"))??;
        latency.add(h).context("merging latency histograms")?;
    }
    let adds_s = start.elapsed().as_secs_f64();
    if let Some(bar) = &bar {
        bar.set_message("waiting for acks");
    }
    client
        .flush(Duration::from_secs(600))
        .context("not every event was acknowledged within 10 minutes")?;
    let wall_s = start.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let delivered: u64 = TYPES[..types]
        .iter()
        .map(|t| metrics.events_total(Status::Success, t))
        .sum();
    let records = events * types as u64;
    // With a spool, events a previous (killed) process left on disk are delivered by this one
    // too and count as its successes: then at least this run's records must be acked.
    let all_acked = if spooled {
        delivered >= records
    } else {
        delivered == records
    };
    anyhow::ensure!(all_acked, "{delivered} of {records} records acknowledged");
    if let Some(store) = expect_store {
        store.check_records(records as i64)?;
    }
    client.close();
    let (cpu_s, peak_rss_bytes) = rusage();
    Ok(Outcome {
        events,
        records,
        adds_per_s: events as f64 / adds_s,
        delivered_records_per_s: records as f64 / wall_s,
        latency,
        wall_s,
        cpu_s,
        peak_rss_bytes,
    })
}

fn progress(events: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(events);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn print(outcome: &Outcome, sink: &str, args: &BenchArgs) {
    let q = |p: f64| outcome.latency.value_at_quantile(p);
    if args.format == BenchFormat::Json {
        let json = serde_json::json!({
            "sink": sink,
            "events": outcome.events,
            "records": outcome.records,
            "producers": args.producers,
            "rate": args.rate,
            "add_calls_per_s": outcome.adds_per_s,
            "delivered_records_per_s": outcome.delivered_records_per_s,
            "add_p50_ns": q(0.5),
            "add_p99_ns": q(0.99),
            "add_p999_ns": q(0.999),
            "add_max_ns": outcome.latency.max(),
            "wall_s": outcome.wall_s,
            "cpu_s": outcome.cpu_s,
            "peak_rss_bytes": outcome.peak_rss_bytes,
        });
        println!("{json}");
        return;
    }
    println!("sink:                     {sink}");
    println!(
        "events / records:         {} / {} ({} producers{})",
        outcome.events,
        outcome.records,
        args.producers,
        args.rate
            .map_or(String::new(), |r| format!(", paced to {r:.0} events/s"))
    );
    println!("add calls/s:              {:.0}", outcome.adds_per_s);
    println!(
        "add latency:              p50 {} ns, p99 {} ns, p999 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(0.999),
        outcome.latency.max()
    );
    println!(
        "delivered+acked records/s: {:.0} ({:.2} s wall)",
        outcome.delivered_records_per_s, outcome.wall_s
    );
    println!("cpu seconds:              {:.2}", outcome.cpu_s);
    println!(
        "peak RSS:                 {:.1} MiB",
        outcome.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
}

/// Runs the load generator against `sink`.
pub fn run(sink: Sink, args: &BenchArgs) -> anyhow::Result<()> {
    let mut config: Config = args.billing.clone().into();
    let name = match sink {
        Sink::External => {
            let outcome = run_load(config.clone(), args, None)?;
            print(&outcome, &format!("external {}", config.ingester), args);
            return Ok(());
        }
        Sink::Ack => "ack (in-process peer: frames delimited and acked, entries not decoded)",
        Sink::Forward => "forward (in-process forward::Server: frames decoded and acked, no store)",
        Sink::Sqlite => "sqlite (in-process ingester, temp file)",
        Sink::Postgres => "postgres (in-process ingester)",
    };
    let outcome = match sink {
        Sink::Ack | Sink::Forward => {
            let target = AckTarget::start_with(sink == Sink::Forward)?;
            config.ingester = target.addr().to_string();
            run_load(config, args, None)?
        }
        Sink::Sqlite => {
            let dir = tempfile::tempdir()?;
            let target = StoreTarget::start(&billing_ingest::StoreUrl::Sqlite(
                dir.path().join("bench.db"),
            ))?;
            config.ingester = target.addr().to_string();
            let outcome = run_load(config, args, Some(&target));
            target.stop();
            outcome?
        }
        Sink::Postgres => {
            let base = args
                .postgres
                .as_deref()
                .context("--sink postgres needs --postgres URL")?;
            let schema = BenchSchema::new(base)?;
            let result =
                StoreTarget::start(&billing_ingest::StoreUrl::Postgres(schema.url.clone()))
                    .and_then(|target| {
                        let mut config = config.clone();
                        config.ingester = target.addr().to_string();
                        let outcome = run_load(config, args, Some(&target));
                        target.stop();
                        outcome
                    });
            let cleanup = schema.drop_schema();
            let outcome = result?;
            cleanup.with_context(|| format!("cannot drop the bench schema {}", schema.name))?;
            outcome
        }
        Sink::External => unreachable!("returned above"),
    };
    print(&outcome, name, args);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_events_are_a_pure_function_of_the_index() {
        let a = Generator::new(Some("P".into()), 2);
        let b = Generator::new(Some("P".into()), 2);
        let (x, y) = (a.event("run-a", 90_061), b.event("run-b", 90_061));
        assert_eq!(x, y);
        assert_eq!(x.unique_key, "P-90061");
        assert_eq!(x.internal_instance_id, "i-61");
        assert_eq!(x.amounts.len(), 2);
        assert!(x.amounts.values().all(|&v| v == 62));
        assert!(x.occurred_at < SystemTime::now(), "always in the past");
        let unprefixed = Generator::new(None, 1).event("run", 3);
        assert_eq!(unprefixed.unique_key, "run-3");
    }
}
