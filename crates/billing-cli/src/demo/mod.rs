//! `billing demo`: the project's main job in one process. An ingester writes a SQLite file; the
//! client library reports a realistic day of usage from many instances into it; the ingester is
//! restarted mid-stream; then the stored hourly rollups are printed and **reconciled** against
//! what the client accepted. It exists to show, end to end and on one screen, the promise of the
//! project: every accepted event is stored exactly once, through retried duplicates and an
//! ingester restart, and nothing is dropped silently.
//!
//! What happens, in order:
//! 1. Usage is generated from `--seed` alone (same seed, same events): each instance has a
//!    size (containers, containers per node, samples per container-second), a daily swing
//!    around its own peak hour, and some instances start or stop during the day. Each reports
//!    `--reports-per-hour` events, each with `container-seconds`, `node-seconds` and `samples`.
//! 2. After every `--retry-every`th event the producer re-adds one recently sent event with the
//!    same unique key and body, as a service retrying after a crash does (counted).
//! 3. Halfway through, the ingester is shut down: the server stops accepting and drops its open
//!    connections (chunks not yet acked stay unacked). The producer goes on adding while the
//!    ingester is down for `--downtime`; then a new server starts on the same port with the
//!    same SQLite file, and the client reconnects and resends everything unacked.
//! 4. The producer is well behaved: it never lets the client refuse an event for a full
//!    buffer; when `max_buffered_events` are pending it backs off until there is room (counted),
//!    and should a refusal happen anyway it retries the same event (counted).
//!
//! Invariants checked at the end; any failure makes the command exit non-zero:
//! - per amount type, the sum and the record count of the events `Client::add` accepted, the
//!   deliberate duplicates left out (unique keys), equal those of the store's hourly rollups;
//! - the client acknowledged every event it accepted (duplicates included) and dropped none:
//!   no `stopping`, and every `buffer_full` refusal was retried until accepted;
//! - the store saw no conflicts and no invalid records, and removed at least the deliberate
//!   duplicates (resends of chunks that were committed but not acked before the restart add
//!   more duplicates).
//!
//! The store is a fresh SQLite file (a temp dir by default, removed at exit; `--db PATH` keeps
//! it, and must not exist yet, since the reconciliation assumes the store holds this run only).
//!
//! Layout, a DAG: this module only orchestrates; the others never import it, and import each
//! other only downwards (producer → ledger → print → columns):
//! - [`usage`]: the generator, from the seed alone;
//! - [`ingester`]: the store with its hidden fault, served by `billing-ingest`'s harness;
//! - [`producer`]: how events are handed to the client (backoff, retried refusals);
//! - [`ledger`]: the books of what was accepted, and the reconciliation;
//! - [`print`]: progress bar, number grouping, the hourly table;
//! - [`columns`]: the amount types, shared by the ledger, the table and the run.

mod columns;
mod ingester;
mod ledger;
mod print;
mod producer;
mod usage;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use billing_client::{Client, Config, Event, Metrics, Status};

use columns::TYPES;
use ingester::{DemoStore, Fault, Ingester};
use ledger::{Ledger, reconcile};
use print::{group, group_u, print_hourly, progress_bar};
use producer::{STALL_LIMIT, add};
use usage::{Spec, Usage};

/// How far back a deliberate duplicate reaches: a retry re-adds one of the last this many
/// events, as a service replaying its recent work after a crash would.
const RETRY_WINDOW: usize = 256;

/// Options of `billing demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Instances reporting usage.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub instances: u32,
    /// Hours of the day to report, from 00:00 UTC.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub hours: u32,
    /// Usage reports per instance and hour (12: one every 5 minutes).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub reports_per_hour: u32,
    /// Seed of the generated usage: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The UTC day the usage happens on, YYYY-MM-DD [default: yesterday].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
    pub day: Option<time::Date>,
    /// After every Nth event, re-add a recently sent event with the same unique key, as a
    /// service retrying after a crash does (0: never).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub retry_every: u64,
    /// How long the ingester stays down during its restart.
    #[arg(long, default_value = "200ms", value_parser = billing_client::duration::parse)]
    pub downtime: Duration,
    /// Keep the SQLite store at this path, which must not exist yet [default: a temp dir,
    /// removed at exit].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Testing only: the ingester acks the last event's container-seconds record without
    /// storing it, so reconciliation must fail.
    #[arg(long, hide = true)]
    pub fault_lose_record: bool,
}

/// The demo's ingester settings: the default validation rules, with a time window that
/// reaches the simulated day whatever `--day` says (the window is about late senders, not
/// about a replayed day).
fn ingester_options() -> billing_ingest::IngesterOptions {
    let policy = billing_schema::validate::Policy::default()
        .with_window(std::time::Duration::MAX, std::time::Duration::MAX);
    billing_ingest::IngesterOptions::default().policy(policy)
}

fn parse_day(s: &str) -> Result<time::Date, String> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DD date: {e}"))
}

/// Runs the demo; an error when it could not run or reconciliation failed.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let day = match args.day {
        Some(d) => d,
        None => time::OffsetDateTime::now_utc()
            .date()
            .previous_day()
            .context("no day before today")?,
    };
    let temp;
    let db = match &args.db {
        Some(path) => {
            if path.exists() {
                bail!(
                    "--db {}: the file exists; the demo reconciles against a store holding this run only, so name a new file",
                    path.display()
                );
            }
            path.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("billing-demo-").tempdir()?;
            temp.path().join("billing.db")
        }
    };

    let usage = Usage::new(Spec {
        seed: args.seed,
        instances: args.instances,
        hours: args.hours,
        reports_per_hour: args.reports_per_hour,
        day,
    });
    let unique = usage.len();
    let duplicates = unique.checked_div(args.retry_every).unwrap_or(0);
    let total = unique + duplicates;
    println!(
        "billing demo: {} instances x {} h x {} reports/h on {day} (UTC), seed {}: {} events + {} retried duplicates",
        args.instances,
        args.hours,
        args.reports_per_hour,
        args.seed,
        group_u(unique),
        group_u(duplicates),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo-ingester")
        .enable_all()
        .build()?;
    let fault = Fault::default();
    let first = runtime.block_on(async {
        let store = DemoStore::open(&db, fault.clone()).await?;
        anyhow::Ok(Ingester::start_with("127.0.0.1:0", store, ingester_options()).await?)
    })?;
    let addr = first.addr();
    println!(
        "ingester listening on {addr}, store sqlite:{}{}",
        db.display(),
        if args.db.is_none() {
            " (removed at exit; --db PATH keeps it)"
        } else {
            ""
        }
    );

    let metrics = Metrics::new();
    let config = {
        let mut c = Config::default();
        c.ingester = addr.to_string();
        // Reconnect promptly once the ingester is back.
        c.retry_delay = Duration::from_millis(50);
        c.retry_delay_max = Duration::from_millis(500);
        c
    };
    let capacity = config.max_buffered_events;
    let client = Client::with_metrics(config, metrics.clone())?;

    let bar = progress_bar(total);
    let mut ledger = Ledger::default();
    let mut recent: VecDeque<Event> = VecDeque::with_capacity(RETRY_WINDOW);
    let mut retry_rng = fastrand::Rng::with_seed(args.seed ^ 0x5eed_d0b1);
    let restart_after = unique / 2;
    let mut first = Some(first);
    let mut restart = None;
    let mut restarted_at = 0;
    let start = Instant::now();
    let mut added = 0u64;
    for event in usage {
        if added == restart_after
            && let Some(old) = first.take()
        {
            bar.set_message("ingester restarting");
            let (down, is_down) = tokio::sync::oneshot::channel();
            let (db, fault, downtime) = (db.clone(), fault.clone(), args.downtime);
            restart = Some(runtime.spawn(async move {
                let store = old.shutdown().await;
                let _ = down.send(());
                store.close().await;
                tokio::time::sleep(downtime).await;
                let store = DemoStore::open(&db, fault).await?;
                anyhow::Ok(Ingester::start_with(addr, store, ingester_options()).await?)
            }));
            // The old server is gone (its connections too) before the client adds more.
            is_down
                .blocking_recv()
                .context("the ingester did not stop")?;
            restarted_at = ledger.unique_events + ledger.dup_events;
        }
        if added + 1 == unique && args.fault_lose_record {
            // A key no earlier frame carried: only the fault can keep it out of the store.
            fault.arm(format!("{}:{}", event.unique_key, TYPES[0]));
        }
        ledger.count(&event.amounts, false);
        add(&client, capacity, event.clone(), &mut ledger)?;
        bar.inc(1);
        added += 1;
        if recent.len() == RETRY_WINDOW {
            recent.pop_front();
        }
        recent.push_back(event);
        if args.retry_every > 0 && added.is_multiple_of(args.retry_every) {
            let again = recent[retry_rng.usize(0..recent.len())].clone();
            ledger.count(&again.amounts, true);
            add(&client, capacity, again, &mut ledger)?;
            bar.inc(1);
        }
        if restart.as_ref().is_some_and(|r| r.is_finished()) && !bar.message().is_empty() {
            bar.set_message("");
        }
    }
    // A restart that failed would leave the flush waiting for nothing: learn it first.
    let second = match restart {
        Some(task) => Some(runtime.block_on(task).context("the restart panicked")??),
        None => None,
    };
    client
        .flush(STALL_LIMIT)
        .context("the client's events were not all acknowledged")?;
    let elapsed = start.elapsed();
    client.close();
    bar.finish_and_clear();

    let sent = ledger.unique_events + ledger.dup_events;
    println!(
        "sent {} events in {:.1} s ({} events/s), every one acknowledged",
        group_u(sent),
        elapsed.as_secs_f64(),
        group((sent as f64 / elapsed.as_secs_f64().max(1e-9)) as i64),
    );
    let resent = TYPES
        .iter()
        .map(|t| metrics.events_total(Status::Retrying, t))
        .max()
        .unwrap_or(0);

    // The report and the reconciliation read the store the last ingester wrote.
    let (ingester, restart_note) = match (second, first) {
        (Some(second), _) => {
            // Every connection the second server accepted is a reconnect of the client.
            let reconnects = second.stats().connections_total.load(Ordering::Relaxed);
            let note = format!(
                "ingester restarted after {} of {} events (connections dropped, down {}, same port and store); the client reconnected ({reconnects}x) and resent {} unacked events",
                group_u(restarted_at),
                group_u(sent),
                billing_client::duration::format(args.downtime),
                group_u(resent),
            );
            (second, Some(note))
        }
        (None, Some(first)) => (first, None),
        (None, None) => bail!("no ingester left to report from"),
    };
    if let Some(note) = &restart_note {
        println!("{note}");
    }
    let store = runtime.block_on(ingester.shutdown());
    let (rows, summary) = runtime.block_on(store.read())?;
    runtime.block_on(store.close());

    print_hourly(&rows, day);
    let failures = reconcile(&ledger, &metrics, &rows, &summary);
    if restart_note.is_none() {
        // Only a run without events has none; say so rather than pretend.
        println!("no restart: the run had no events");
    }
    if failures.is_empty() {
        println!("reconciliation ok: every accepted event stored exactly once");
        Ok(())
    } else {
        bail!("reconciliation failed: {}", failures.join("; "))
    }
}
