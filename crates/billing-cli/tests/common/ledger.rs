//! What a client accepted, and the exact reconciliation of a fault scenario against it.
//!
//! A [`Ledger`] adds events through a `billing_client::Client` and keeps every one the client
//! accepted (key, instance, hour, amounts). [`Ledger::reconcile`] then checks, exactly:
//! the store's usage per instance, amount type and hour (`billing report --format json`) is the
//! sum of the accepted amounts; records stored = distinct events x types; no conflict, nothing
//! quarantined; every arrival is a record or a counted duplicate; the client's metrics and its
//! close report account for every accepted event (all delivered, none dropped).
//!
//! Event times are relative to the ledger's creation (a few hours back from now), never to a
//! calendar date.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Client, CloseReport, Event, Metrics, Status};
use serde_json::Value;

/// The amount types of ledger events.
pub const TYPES: [AmountType; 2] = [AmountType::SAMPLES, AmountType::CONTAINER_SECONDS];

/// Usage per (instance, amount type, hour start in Unix seconds): (sum, records).
pub type Usage = BTreeMap<(String, String, i64), (i128, u64)>;

/// One accepted event, as the store must account for it.
#[derive(Debug, Clone)]
struct Accepted {
    instance: String,
    hour: i64,
    amounts: Amounts,
}

/// The events a client accepted, by unique key.
#[derive(Debug)]
pub struct Ledger {
    prefix: String,
    base: SystemTime,
    next: u64,
    accepted: BTreeMap<String, Accepted>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Ledger {
    /// Events `PREFIX-0, PREFIX-1, ...` (the prefix must be unique to the test's store).
    pub fn new(prefix: &str) -> Ledger {
        Ledger {
            prefix: prefix.to_string(),
            // Ten minutes back, so that no event is ahead of the ingester's clock.
            base: SystemTime::now() - Duration::from_secs(600),
            next: 0,
            accepted: BTreeMap::new(),
        }
    }

    /// Event `i`: instance `inst-(i % 7)`, spread over the last four hours, two amount types
    /// whose values depend on `i`.
    fn event(&self, i: u64) -> Event {
        let back = Duration::from_secs((i % 4) * 3600 + (i % 600));
        let amounts: Amounts = [
            (TYPES[0].clone(), (i % 97) as i64 + 1),
            (TYPES[1].clone(), 3 * i as i64 + 1),
        ]
        .into_iter()
        .collect();
        Event {
            unique_key: format!("{}-{i}", self.prefix),
            internal_instance_id: format!("inst-{}", i % 7),
            occurred_at: self.base - back,
            amounts,
            metadata: Default::default(),
        }
    }

    /// Adds the next `count` events through `client` (a full buffer is waited out; any other
    /// refusal fails the test); each accepted one is recorded.
    pub fn add(&mut self, client: &Client, count: u64) {
        for _ in 0..count {
            let i = self.next;
            self.next += 1;
            let mut event = self.event(i);
            let accepted = Accepted {
                instance: event.internal_instance_id.clone(),
                hour: unix(event.occurred_at).div_euclid(3600) * 3600,
                amounts: event.amounts.clone(),
            };
            loop {
                match client.add(event) {
                    Ok(()) => break,
                    Err(e) if e.is_retriable() => {
                        event = e.into_event();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("event {i} refused: {e}"),
                }
            }
            self.accepted
                .insert(format!("{}-{i}", self.prefix), accepted);
        }
    }

    /// Events accepted.
    pub fn events(&self) -> u64 {
        self.accepted.len() as u64
    }

    /// Records accepted (events x amount types).
    pub fn records(&self) -> u64 {
        self.accepted.values().map(|a| a.amounts.len() as u64).sum()
    }

    /// The usage the store must hold.
    pub fn expected(&self) -> Usage {
        let mut usage = Usage::new();
        for a in self.accepted.values() {
            for (t, v) in &a.amounts {
                let e = usage
                    .entry((a.instance.clone(), t.to_string(), a.hour))
                    .or_default();
                e.0 += i128::from(*v);
                e.1 += 1;
            }
        }
        usage
    }

    /// Closes `client` (bounded) and checks everything it and the store say against the
    /// ledger, exactly; returns the store's summary (for the scenario's own checks, such as
    /// duplicates > 0).
    pub fn close_and_reconcile(&self, client: Client, store: &str) -> Value {
        let metrics = client.metrics().clone();
        let report = client.close_within(Duration::from_secs(60));
        self.reconcile_client(&metrics, &report);
        self.reconcile_store(store)
    }

    /// The client accounts for every accepted event: all delivered, none dropped.
    pub fn reconcile_client(&self, metrics: &Metrics, report: &CloseReport) {
        assert_eq!(
            report.delivered + report.dropped_total(),
            self.events(),
            "every accepted event is delivered or dropped with a reason: {report:?}"
        );
        assert_eq!(
            (report.delivered, report.dropped_total()),
            (self.events(), 0),
            "all delivered, none dropped: {report:?}"
        );
        for t in &TYPES {
            let (count, sum) = self
                .accepted
                .values()
                .filter_map(|a| a.amounts.get(t))
                .fold((0u64, 0u64), |(n, s), v| (n + 1, s + *v as u64));
            assert_eq!(
                metrics.events_total(Status::Success, t),
                count,
                "client success count for {t}"
            );
            assert_eq!(
                metrics.amounts_total(Status::Success, t),
                sum,
                "client success amounts for {t}"
            );
            for s in [Status::Stopping, Status::BufferFull, Status::Invalid] {
                assert_eq!(metrics.events_total(s, t), 0, "{} for {t}", s.as_str());
            }
        }
        assert_eq!(metrics.queued_events(), 0, "nothing left queued");
    }

    /// The store holds exactly the accepted usage; returns its summary.
    pub fn reconcile_store(&self, store: &str) -> Value {
        let stored = stored_usage(store);
        let expected = self.expected();
        if stored != expected {
            let diff: Vec<String> = expected
                .keys()
                .chain(stored.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| expected.get(*k) != stored.get(*k))
                .map(|k| {
                    format!(
                        "{k:?}: accepted {:?}, stored {:?}",
                        expected.get(k),
                        stored.get(k)
                    )
                })
                .collect();
            panic!(
                "stored usage differs from the accepted amounts in {} of {} buckets:\n{}",
                diff.len(),
                expected.len(),
                diff.join("\n")
            );
        }
        let s = super::summary(store);
        assert_eq!(
            s["records"].as_u64(),
            Some(self.records()),
            "records stored = distinct events x types: {s}"
        );
        assert_eq!(s["conflicts"], 0, "{s}");
        assert_eq!(s["quarantined"], 0, "{s}");
        assert_eq!(
            s["received"].as_u64().unwrap(),
            self.records() + s["duplicates"].as_u64().unwrap(),
            "every arrival is a record or a counted duplicate: {s}"
        );
        s
    }
}

/// `billing report --store STORE --format json` (by hour, every instance and type) as
/// [`Usage`].
pub fn stored_usage(store: &str) -> Usage {
    let out = super::report(store, &["--format", "json"]);
    let rows: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("report is not JSON ({e}): {out}"));
    let mut usage = Usage::new();
    for r in rows {
        let bucket = super::parse_rfc3339(r["bucket"].as_str().expect("bucket")).0;
        let key = (
            r["instance"].as_str().expect("instance").to_string(),
            r["amount_type"].as_str().expect("amount_type").to_string(),
            bucket,
        );
        let value = r["value"]
            .as_i64()
            .unwrap_or_else(|| panic!("value beyond i64 in {r}"));
        let records = r["records"].as_u64().expect("records");
        let previous = usage.insert(key.clone(), (i128::from(value), records));
        assert!(previous.is_none(), "bucket {key:?} reported twice");
    }
    usage
}

/// A client configuration for fault scenarios: `ingester` (one address or a list), quick
/// retries, small chunks (several in flight), `ack_timeout`, room for every event, and a long
/// close timeout (nothing is dropped for lack of time).
pub fn client_config(ingester: &str, ack_timeout: Duration) -> billing_client::Config {
    let mut config = billing_client::Config::default();
    config.ingester = ingester.to_string();
    config.retry_delay = Duration::from_millis(10);
    config.retry_delay_max = Duration::from_millis(100);
    config.ack_timeout = ack_timeout;
    config.connect_timeout = Duration::from_secs(2);
    config.write_timeout = Duration::from_secs(5);
    config.close_timeout = Duration::from_secs(60);
    config.batch_max_records = 50;
    config.max_buffered_events = 100_000;
    config
}

/// Events of type `TYPES[0]` the client counted delivered so far.
pub fn delivered(metrics: &Metrics) -> u64 {
    metrics.events_total(Status::Success, &TYPES[0])
}

/// Events of type `TYPES[0]` the client counted `retrying` (in flight on a failed
/// connection, to be resent) so far.
pub fn retried(metrics: &Metrics) -> u64 {
    metrics.events_total(Status::Retrying, &TYPES[0])
}

/// As `common::wait_until` (for [`super::POLL_DEADLINE`]); a timeout's message ends with `state()`.
pub fn wait_until_with(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + super::POLL_DEADLINE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {:?} waiting for {what}; {}",
            super::POLL_DEADLINE,
            state()
        );
        std::thread::sleep(super::POLL_INTERVAL);
    }
}

/// The value of sample `name` on the ingester's `/metrics` now (0 when absent).
pub fn ingest_metric(server: &mut super::Server, name: &str) -> f64 {
    let addr: std::net::SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    super::sample(&super::http_get(addr, "/metrics").body, name).unwrap_or(0.0)
}
