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
//! 3. Halfway through, the ingester's shutdown future fires: the server stops accepting and
//!    drops its open connections (chunks not yet acked stay unacked). The producer goes on
//!    adding while the ingester is down for `--downtime`; then a new server starts on the same
//!    port with the same SQLite file, and the client reconnects and resends everything unacked.
//! 4. The producer is well behaved: it never lets the client refuse an event for a full
//!    buffer; when `max_buffered_events` are pending it backs off until there is room (counted),
//!    and should a refusal happen anyway it retries the same event (counted).
//!
//! Invariants checked at the end; any failure makes the command exit non-zero:
//! - per amount type, the sum and the record count of the events `add_amounts` accepted, the
//!   deliberate duplicates left out (unique keys), equal those of the store's hourly rollups;
//! - the client acknowledged every event it accepted (duplicates included) and dropped none:
//!   no `stopping`, and every `buffer_full` refusal was retried until accepted;
//! - the store saw no conflicts and no invalid records, and removed at least the deliberate
//!   duplicates (resends of chunks that were committed but not acked before the restart add
//!   more duplicates).
//!
//! The store is a fresh SQLite file (a temp dir by default, removed at exit; `--db PATH` keeps
//! it, and must not exist yet, since the reconciliation assumes the store holds this run only).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use billing_client::{AddError, AmountType, Amounts, Client, Config, Event, Metrics, Status};
use billing_ingest::{SqliteStore, Store, StoreError, StoreOutcome, Summary, UsageQuery};
use forward::{Frame, ServerStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The amount types every generated event carries, in report column order.
const TYPES: [AmountType; 3] = [
    AmountType::CONTAINER_SECONDS,
    AmountType::NODE_SECONDS,
    AmountType::SAMPLES,
];

/// How far back a deliberate duplicate reaches: a retry re-adds one of the last this many
/// events, as a service replaying its recent work after a crash would.
const RETRY_WINDOW: usize = 256;

/// Longest time the producer waits for room in the client's buffer, or `flush` waits for the
/// acks, before the demo gives up: far beyond what a healthy run needs.
const STALL_LIMIT: Duration = Duration::from_secs(60);

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

fn parse_day(s: &str) -> Result<time::Date, String> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DD date: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Usage generation
// ---------------------------------------------------------------------------------------------

/// One instance's usage pattern, drawn once from the seed.
#[derive(Debug)]
struct Profile {
    id: String,
    region: &'static str,
    /// Typical number of running containers.
    containers: f64,
    /// Containers packed on one node.
    per_node: i64,
    /// Samples ingested per container-second.
    samples_per_sec: f64,
    /// Hour of the day (UTC, fractional) of the highest load.
    peak_hour: f64,
    /// Relative daily swing of the load around its mean.
    swing: f64,
    /// Hours `[from, to)` the instance exists.
    from_hour: u32,
    to_hour: u32,
}

/// Regions and the UTC hour their customers' load peaks (mid-afternoon local time).
const REGIONS: [(&str, f64); 4] = [
    ("eu-west-1", 13.0),
    ("us-east-1", 19.0),
    ("us-west-2", 22.0),
    ("ap-southeast-1", 6.0),
];

impl Profile {
    fn draw(rng: &mut fastrand::Rng, index: u32, hours: u32) -> Self {
        // Sizes are heavy-tailed: most instances are small, a few are large.
        let containers = (rng.f64() * 3.5).exp().round();
        let (from_hour, to_hour) = match rng.u32(0..100) {
            0..=7 => (rng.u32(0..hours), hours), // created during the day
            8..=13 => (0, rng.u32(1..=hours)),   // deleted during the day
            _ => (0, hours),
        };
        // Most customers are in Europe and the US East.
        let (region, peak) = REGIONS[match rng.u32(0..20) {
            0..=7 => 0,
            8..=13 => 1,
            14..=16 => 2,
            _ => 3,
        }];
        Profile {
            id: (100_000 + index * 7).to_string(),
            region,
            containers,
            per_node: rng.i64(4..=16),
            samples_per_sec: 0.5 + rng.f64() * 19.5,
            peak_hour: peak + (rng.f64() - 0.5) * 4.0,
            swing: 0.2 + rng.f64() * 0.6,
            from_hour,
            to_hour,
        }
    }

    fn active(&self, hour: u32) -> bool {
        (self.from_hour..self.to_hour).contains(&hour)
    }
}

/// The day's events in time order: hour, then report slot, then instance.
struct Usage {
    profiles: Vec<Profile>,
    rng: fastrand::Rng,
    day_start: SystemTime,
    day_label: String,
    hours: u32,
    slots: u32,
    slot_secs: u32,
    /// Next (hour, slot, instance) to produce.
    at: (u32, u32, usize),
}

impl Usage {
    fn new(args: &DemoArgs, day: time::Date) -> Self {
        let mut rng = fastrand::Rng::with_seed(args.seed);
        let profiles = (0..args.instances)
            .map(|i| Profile::draw(&mut rng, i, args.hours))
            .collect();
        let day_start = SystemTime::from(day.midnight().assume_utc());
        Usage {
            profiles,
            rng,
            day_start,
            day_label: format!(
                "{:04}{:02}{:02}",
                day.year(),
                u8::from(day.month()),
                day.day()
            ),
            hours: args.hours,
            slots: args.reports_per_hour,
            slot_secs: 3600 / args.reports_per_hour,
            at: (0, 0, 0),
        }
    }

    /// How many events [`Iterator::next`] will produce.
    fn len(&self) -> u64 {
        let instance_hours: u64 = (0..self.hours)
            .map(|h| self.profiles.iter().filter(|p| p.active(h)).count() as u64)
            .sum();
        instance_hours * u64::from(self.slots)
    }

    fn event(&mut self, hour: u32, slot: u32, p: usize) -> Event {
        let rng = &mut self.rng;
        let p = &self.profiles[p];
        let secs = i64::from(self.slot_secs);
        let t = f64::from(hour) + (f64::from(slot) + 0.5) / f64::from(self.slots);
        let load = 1.0 + p.swing * (std::f64::consts::TAU * (t - p.peak_hour) / 24.0).cos();
        let containers = (p.containers * load * (0.9 + rng.f64() * 0.2))
            .round()
            .max(1.0) as i64;
        // Containers starting and stopping inside the window run less than all of it.
        let container_seconds = containers * secs - rng.i64(0..=containers * secs / 20);
        let nodes = (containers + p.per_node - 1) / p.per_node;
        let samples =
            (container_seconds as f64 * p.samples_per_sec * (0.95 + rng.f64() * 0.1)).round();
        let offset = hour * 3600 + slot * self.slot_secs + rng.u32(0..self.slot_secs);
        let minute = slot * self.slot_secs / 60;
        Event {
            unique_key: format!("{}-{}-{hour:02}{minute:02}", p.id, self.day_label),
            internal_instance_id: p.id.clone(),
            occurred_at: self.day_start + Duration::from_secs(u64::from(offset)),
            amounts: Amounts::from([
                (AmountType::CONTAINER_SECONDS, container_seconds),
                (AmountType::NODE_SECONDS, nodes * secs),
                (AmountType::SAMPLES, samples as i64),
            ]),
            metadata: [("region".to_string(), p.region.to_string())].into(),
        }
    }
}

impl Iterator for Usage {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let (hour, slot, p) = self.at;
            if hour >= self.hours {
                return None;
            }
            self.at = if p + 1 < self.profiles.len() {
                (hour, slot, p + 1)
            } else if slot + 1 < self.slots {
                (hour, slot + 1, 0)
            } else {
                (hour + 1, 0, 0)
            };
            if self.profiles[p].active(hour) {
                return Some(self.event(hour, slot, p));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The in-process ingester
// ---------------------------------------------------------------------------------------------

/// The record key the hidden fault loses, once armed (shared by both ingesters).
type Lose = Arc<OnceLock<String>>;

/// The SQLite store, plus the hidden fault: once armed with a record key, every arrival of
/// that record is acked without being stored, as a buggy ingester would; reconciliation must
/// then fail. Unarmed, frames go to SQLite untouched.
struct DemoStore {
    inner: SqliteStore,
    lose: Lose,
}

impl Store for DemoStore {
    async fn store(&self, frame: &Frame) -> Result<StoreOutcome, StoreError> {
        if let Some(key) = self.lose.get() {
            let kept: Vec<_> = frame
                .entries
                .iter()
                .filter(|e| forward::frame::value_to_json(&e.record)["unique_key"] != **key)
                .cloned()
                .collect();
            if kept.len() < frame.entries.len() {
                let mut lossy = frame.clone();
                lossy.entries = kept;
                return self.inner.store(&lossy).await;
            }
        }
        self.inner.store(frame).await
    }
}

/// A running forward server on the demo's store.
struct Ingester {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<DemoStore>,
    stats: Arc<ServerStats>,
}

impl Ingester {
    async fn start(addr: &str, db: &Path, lose: Lose) -> anyhow::Result<Self> {
        let inner = SqliteStore::open(db)
            .await
            .with_context(|| format!("cannot open the store {}", db.display()))?;
        let store = Arc::new(DemoStore { inner, lose });
        let server = billing_ingest::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = server.local_addr()?;
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(billing_ingest::serve(server, store.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Ingester {
            addr,
            stop,
            task,
            store,
            stats,
        })
    }

    /// Fires the shutdown future and waits until the server has dropped every connection.
    /// Returns the store, still open.
    async fn stop_serving(self) -> Arc<DemoStore> {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.store
    }
}

/// Closes a store once no server uses it (waits for its writer thread).
async fn close(store: Arc<DemoStore>) {
    if let Ok(store) = Arc::try_unwrap(store) {
        store.inner.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The producer
// ---------------------------------------------------------------------------------------------

/// What the producer added, per amount type in [`TYPES`] order.
#[derive(Debug, Default)]
struct Ledger {
    /// Sum and record count of accepted events with new unique keys.
    unique_sum: [i64; 3],
    unique_records: [i64; 3],
    unique_events: u64,
    /// The deliberate re-adds of already sent events.
    dup_sum: [i64; 3],
    dup_records: [i64; 3],
    dup_events: u64,
    /// Times the producer found the buffer full and backed off.
    waits: u64,
    /// Refusals for a full buffer that the producer retried.
    refused_retried: u64,
}

impl Ledger {
    fn count(&mut self, amounts: &Amounts, duplicate: bool) {
        let (sum, records, events) = if duplicate {
            (
                &mut self.dup_sum,
                &mut self.dup_records,
                &mut self.dup_events,
            )
        } else {
            (
                &mut self.unique_sum,
                &mut self.unique_records,
                &mut self.unique_events,
            )
        };
        *events += 1;
        for (i, t) in TYPES.iter().enumerate() {
            if let Some(&v) = amounts.get(t).filter(|v| **v != 0) {
                sum[i] += v;
                records[i] += 1;
            }
        }
    }
}

/// Short, growing pause of a producer that found no room (a real service would do other work).
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_micros(50))
    }

    fn pause(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(5));
    }
}

/// Adds `event` the way a well-behaved service does: waits for room in the buffer instead of
/// having the event refused, and retries it should it be refused for a full buffer anyway.
fn add(
    client: &Client,
    capacity: usize,
    mut event: Event,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    if client.pending() >= capacity {
        ledger.waits += 1;
        while client.pending() >= capacity {
            if start.elapsed() > STALL_LIMIT {
                bail!("the client's buffer stayed full for {STALL_LIMIT:?}: is the ingester up?");
            }
            backoff.pause();
        }
    }
    loop {
        match client.add(event) {
            Ok(()) => return Ok(()),
            Err(e @ AddError::QueueFull { .. }) if start.elapsed() <= STALL_LIMIT => {
                ledger.refused_retried += 1;
                event = e.into_event();
                backoff.pause();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {human_pos}/{human_len} events, {elapsed} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Thousands separators: `1234567` → `1,234,567`.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn group_u(n: u64) -> String {
    group(i64::try_from(n).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

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

    let usage = Usage::new(&args, day);
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
    let lose = Lose::default();
    let first = runtime.block_on(Ingester::start("127.0.0.1:0", &db, lose.clone()))?;
    let addr = first.addr;
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
    let config = Config {
        ingester: addr.to_string(),
        // Reconnect promptly once the ingester is back.
        retry_delay: Duration::from_millis(50),
        retry_delay_max: Duration::from_millis(500),
        ..Config::default()
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
            let (db, lose, downtime) = (db.clone(), lose.clone(), args.downtime);
            restart = Some(runtime.spawn(async move {
                let store = old.stop_serving().await;
                let _ = down.send(());
                close(store).await;
                tokio::time::sleep(downtime).await;
                Ingester::start(&addr.to_string(), &db, lose).await
            }));
            // The old server is gone (its connections too) before the client adds more.
            is_down
                .blocking_recv()
                .context("the ingester did not stop")?;
            restarted_at = ledger.unique_events + ledger.dup_events;
        }
        if added + 1 == unique && args.fault_lose_record {
            // A key no earlier frame carried: only the fault can keep it out of the store.
            let _ = lose.set(format!("{}:{}", event.unique_key, TYPES[0]));
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
            let reconnects = second.stats.connections_total.load(Ordering::Relaxed);
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
    let store = runtime.block_on(ingester.stop_serving());
    let (rows, summary) = runtime.block_on(async {
        let rows = store.inner.usage(&UsageQuery::default()).await?;
        let summary = store.inner.summary().await?;
        anyhow::Ok((rows, summary))
    })?;
    runtime.block_on(close(store));

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

/// Per hour (UTC) totals across instances, one column per amount type.
fn print_hourly(rows: &[billing_ingest::UsageRow], day: time::Date) {
    let mut hours: BTreeMap<i64, ([i64; 3], i64)> = BTreeMap::new();
    for r in rows {
        let slot = hours.entry(r.bucket).or_default();
        if let Some(i) = TYPES.iter().position(|t| t.as_str() == r.amount_type) {
            slot.0[i] += r.value;
        }
        slot.1 += r.records;
    }
    let mut total = ([0i64; 3], 0i64);
    let mut lines: Vec<[String; 5]> = Vec::with_capacity(hours.len() + 1);
    for (bucket, (values, records)) in &hours {
        let hour = bucket.rem_euclid(86_400) / 3600;
        for (t, v) in total.0.iter_mut().zip(values) {
            *t += v;
        }
        total.1 += records;
        lines.push([
            format!("{hour:02}:00"),
            group(values[0]),
            group(values[1]),
            group(values[2]),
            group(*records),
        ]);
    }
    lines.push([
        "total".into(),
        group(total.0[0]),
        group(total.0[1]),
        group(total.0[2]),
        group(total.1),
    ]);
    let header = [
        "HOUR".to_string(),
        TYPES[0].to_string(),
        TYPES[1].to_string(),
        TYPES[2].to_string(),
        "records".to_string(),
    ];
    let mut widths = header.each_ref().map(String::len);
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    println!("\nstored usage per hour of {day} (UTC), all instances:");
    for l in std::iter::once(&header).chain(&lines) {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            l[0],
            l[1],
            l[2],
            l[3],
            l[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    }
    println!();
}

/// Prints one reconciliation line per amount type and the drop and duplicate checks; returns
/// what failed.
fn reconcile(
    ledger: &Ledger,
    metrics: &Metrics,
    rows: &[billing_ingest::UsageRow],
    summary: &Summary,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut stored_sum = [0i64; 3];
    let mut stored_records = [0i64; 3];
    for r in rows {
        match TYPES.iter().position(|t| t.as_str() == r.amount_type) {
            Some(i) => {
                stored_sum[i] += r.value;
                stored_records[i] += r.records;
            }
            None => failures.push(format!("unexpected amount type {:?} stored", r.amount_type)),
        }
    }
    for (i, t) in TYPES.iter().enumerate() {
        let ok =
            ledger.unique_sum[i] == stored_sum[i] && ledger.unique_records[i] == stored_records[i];
        println!(
            "reconcile {t}: accepted {} in {} records = stored {} in {} records: {}",
            group(ledger.unique_sum[i]),
            group(ledger.unique_records[i]),
            group(stored_sum[i]),
            group(stored_records[i]),
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            failures.push(format!("{t}: accepted and stored differ"));
        }
    }

    // The client's own account: every accepted event acknowledged, none dropped.
    let mut stopping = 0;
    let mut buffer_full = 0;
    for (i, t) in TYPES.iter().enumerate() {
        stopping += metrics.events_total(Status::Stopping, t);
        // One refusal counts once per type of the event; every event carries every type.
        buffer_full = buffer_full.max(metrics.events_total(Status::BufferFull, t));
        let acked = metrics.amounts_total(Status::Success, t);
        let accepted = ledger.unique_sum[i] + ledger.dup_sum[i];
        if i64::try_from(acked) != Ok(accepted) {
            failures.push(format!(
                "{t}: the client acknowledged {acked}, accepted {accepted}"
            ));
        }
    }
    let dropped = stopping + buffer_full.saturating_sub(ledger.refused_retried);
    println!(
        "dropped: {dropped} (stopping {stopping}, buffer_full {buffer_full}, {} refusals retried); the producer backed off {} times for a full buffer",
        ledger.refused_retried,
        group_u(ledger.waits),
    );
    if dropped > 0 {
        failures.push(format!("{dropped} events dropped by the client"));
    }

    let dup_records: i64 = ledger.dup_records.iter().sum();
    println!(
        "duplicates: {} events ({} records) re-added under keys already sent; the store removed {} duplicate records (with the resends after the restart); conflicts {}, quarantined {}",
        group_u(ledger.dup_events),
        group(dup_records),
        group(summary.duplicates),
        summary.conflicts,
        summary.quarantined,
    );
    if summary.duplicates < dup_records {
        failures.push(format!(
            "the store removed {} duplicates, fewer than the {dup_records} re-added",
            summary.duplicates
        ));
    }
    if summary.conflicts != 0 || summary.quarantined != 0 {
        failures.push(format!(
            "{} conflicts and {} quarantined records in the store",
            summary.conflicts, summary.quarantined
        ));
    }
    let stored_total: i64 = stored_records.iter().sum();
    if summary.records != stored_total {
        failures.push(format!(
            "the store counts {} records but its rollups {stored_total}",
            summary.records
        ));
    }
    failures
}
