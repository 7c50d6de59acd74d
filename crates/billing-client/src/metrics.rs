//! Prometheus metrics with the Go client's names, labels and statuses, plus the gauges the Go
//! client lacked.
//!
//! - `billing_client_events_total{status, amount_type}`: one per amount type of an event;
//! - `billing_client_amounts_total{status, amount_type}`: the sum of the amounts;
//! - `billing_client_request_duration_seconds{method="Billing.AddAmounts", status_code}`: one
//!   observation per chunk, from its first write to its ack ("200") or failure ("500");
//! - `billing_client_queued_events`: events accepted and not yet delivered or dropped;
//! - `billing_client_unacked_amounts{amount_type}`: amounts accepted and not yet acknowledged.
//!
//! - `billing_client_handshake_failures_total{reason}`: connection attempts whose handshake
//!   failed (with a shared key): `refused` (the ingester's PONG said no),
//!   `digest_mismatch` (its PONG digest is wrong: it does not know the key),
//!   `hostname_loop`, `timeout`, `closed`, `protocol` (not a HELO/PONG), `io`;
//! - `billing_client_tls_failures_total{reason}`: connections whose TLS session failed, at
//!   connect or (TLS 1.3: a refused client certificate shows on the first read) later, by the
//!   check that failed: `unknown_issuer`, `expired`, `not_valid_yet`, `name_mismatch`,
//!   `bad_certificate`, `client_certificate_required`, `certificate_refused`, `not_tls`,
//!   `closed` (the ingester hung up during the TLS handshake), `other`
//!   (`forward::TlsFailure::label`);
//! - with a spool: `billing_client_spool_bytes`, `_spool_records`,
//!   `_spool_oldest_unacked_age_seconds`, `_spool_damaged_records`.
//!
//! Per ingester (label `ingester`: the address as `forward::Endpoint` prints it; one series
//! per address of `--billing.ingester`, counted per chunk, never per event):
//! - `billing_client_ingester_connected{ingester}`: the connections to it that are up (0 or
//!   1, or up to `--billing.connections`);
//! - `billing_client_ingester_active{ingester}`: 1 while new chunks go to it (failover: the
//!   current target; round-robin: every connected ingester);
//! - `billing_client_ingester_chunks_sent_total{ingester}`: chunks (batches) written to it,
//!   resends included;
//! - `billing_client_ingester_acks_total{ingester}`: chunks it acknowledged in full;
//! - `billing_client_ingester_failures_total{ingester, reason}`: connection attempts and
//!   connections that failed: `connect`, `handshake`, `write` (error or `write_timeout`),
//!   `closed` (the peer closed the connection or reading from it failed), `ack_timeout` (no ack
//!   within `ack_timeout`: a stalled or half-open connection).
//!
//! Statuses: `success` (acknowledged), `retrying` (a delivery attempt failed; counted per
//! attempt, as Go did), `stopping` (dropped because the client was closing), `buffer_full`
//! (refused: `max_buffered_events` reached), `spool_full` and `spool_error` (refused: the spool
//! is full or cannot write), `invalid` (refused: the event breaks a schema rule, e.g. a blank
//! key or an amount type of the wrong syntax). Like the Go package, metrics are process-wide by
//! default ([`Metrics::global`]); tests and multi-client programs can give each client its own.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use billing_schema::AmountType;

/// Why an event's amounts are counted: the `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Acknowledged by the ingester.
    Success,
    /// A delivery attempt failed; the event will be tried again.
    Retrying,
    /// Dropped because the client was closing.
    Stopping,
    /// Refused because the buffer was full.
    BufferFull,
    /// Refused because the spool was full.
    SpoolFull,
    /// Refused because the spool could not write it (disk full, I/O error).
    SpoolError,
    /// Refused because it breaks a rule of the record schema (the ingester would quarantine
    /// it).
    Invalid,
}

impl Status {
    /// How many statuses there are.
    pub(crate) const COUNT: usize = 7;

    /// Position in [`Status::ALL`] (which lists the variants in declaration order).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) const ALL: [Status; Self::COUNT] = [
        Status::Success,
        Status::Retrying,
        Status::Stopping,
        Status::BufferFull,
        Status::SpoolFull,
        Status::SpoolError,
        Status::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Retrying => "retrying",
            Status::Stopping => "stopping",
            Status::BufferFull => "buffer_full",
            Status::SpoolFull => "spool_full",
            Status::SpoolError => "spool_error",
            Status::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: String,
    amount_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    amount_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IngesterLabels {
    ingester: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IngesterReasonLabels {
    ingester: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status_code: String,
}

/// Go's `prometheus.DefBuckets`.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn new_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// Counters of one amount type, resolved once so the hot path does no label allocation.
#[derive(Debug)]
struct PerType {
    events: [Counter; 7],
    amounts: [Counter; 7],
    unacked: Gauge,
}

#[derive(Debug)]
struct Inner {
    events: Family<StatusLabels, Counter>,
    amounts: Family<StatusLabels, Counter>,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    queued: Gauge,
    unacked: Family<TypeLabels, Gauge>,
    spool_bytes: Gauge,
    spool_records: Gauge,
    spool_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    spool_damaged: Gauge,
    handshake_failures: Family<ReasonLabels, Counter>,
    ingester_connected: Family<IngesterLabels, Gauge>,
    ingester_active: Family<IngesterLabels, Gauge>,
    ingester_chunks_sent: Family<IngesterLabels, Counter>,
    ingester_acks: Family<IngesterLabels, Counter>,
    ingester_failures: Family<IngesterReasonLabels, Counter>,
    tls_failures: Family<ReasonLabels, Counter>,
    per_type: RwLock<HashMap<AmountType, Arc<PerType>>>,
}

/// Why a connection to an ingester (or an attempt to make one) failed: the `reason` label of
/// `billing_client_ingester_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Connect,
    Handshake,
    Write,
    Closed,
    AckTimeout,
}

impl Failure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Handshake => "handshake",
            Failure::Write => "write",
            Failure::Closed => "closed",
            Failure::AckTimeout => "ack_timeout",
        }
    }
}

/// One ingester's series, resolved once so that counting a chunk allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct IngesterMetrics {
    metrics: Metrics,
    label: String,
    connected: Gauge,
    active: Gauge,
    chunks_sent: Counter,
    acks: Counter,
}

impl IngesterMetrics {
    /// `n`: the connections to this ingester that are up.
    pub(crate) fn connected(&self, n: usize) {
        self.connected.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn active(&self, on: bool) {
        self.active.set(i64::from(on));
    }

    pub(crate) fn chunk_sent(&self) {
        self.chunks_sent.inc();
    }

    pub(crate) fn chunk_acked(&self) {
        self.acks.inc();
    }

    /// Failures are rare: the labelled series is looked up each time.
    pub(crate) fn failure(&self, reason: Failure) {
        self.metrics
            .0
            .ingester_failures
            .get_or_create(&IngesterReasonLabels {
                ingester: self.label.clone(),
                reason: reason.as_str().into(),
            })
            .inc();
    }
}

/// The amounts of many events summed per amount type, so that counting a batch of events looks
/// each type's series up once instead of once per event (the sender counts per batch).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Events added.
    pub events: u64,
    types: Vec<TypeSum>,
}

#[derive(Debug)]
struct TypeSum {
    amount_type: AmountType,
    /// Events carrying this type.
    events: u64,
    /// Sum of the positive amounts (counters cannot go down: credits are not added).
    positive: u64,
    /// Sum of all amounts (the unacked gauge moves by it).
    signed: i64,
}

impl Tally {
    /// Adds one event's amounts.
    pub(crate) fn add(&mut self, amounts: &billing_schema::Amounts) {
        self.events += 1;
        for (t, &v) in amounts {
            // A handful of types at most: a linear search beats hashing.
            let sum = match self.types.iter_mut().position(|s| s.amount_type == *t) {
                Some(i) => &mut self.types[i],
                None => {
                    self.types.push(TypeSum {
                        amount_type: t.clone(),
                        events: 0,
                        positive: 0,
                        signed: 0,
                    });
                    self.types.last_mut().expect("just pushed")
                }
            };
            sum.events += 1;
            sum.positive = sum.positive.saturating_add(u64::try_from(v).unwrap_or(0));
            sum.signed = sum.signed.saturating_add(v);
        }
    }

    /// A tally of `events`' amounts.
    pub(crate) fn of<'a>(events: impl IntoIterator<Item = &'a billing_schema::Amounts>) -> Self {
        let mut t = Tally::default();
        events.into_iter().for_each(|a| t.add(a));
        t
    }

    /// Whether no event was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }
}

/// A set of client metrics; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh, unregistered set.
    pub fn new() -> Self {
        Metrics(Arc::new(Inner {
            events: Family::default(),
            amounts: Family::default(),
            request_duration: Family::new_with_constructor(new_histogram as fn() -> Histogram),
            queued: Gauge::default(),
            unacked: Family::default(),
            spool_bytes: Gauge::default(),
            spool_records: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            spool_damaged: Gauge::default(),
            handshake_failures: Family::default(),
            ingester_connected: Family::default(),
            ingester_active: Family::default(),
            ingester_chunks_sent: Family::default(),
            ingester_acks: Family::default(),
            ingester_failures: Family::default(),
            tls_failures: Family::default(),
            per_type: RwLock::new(HashMap::new()),
        }))
    }

    /// The process-wide set every client uses unless given another.
    pub fn global() -> Metrics {
        GLOBAL.clone()
    }

    /// Registers these metrics (names `billing_client_*`) into a caller's registry.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("billing_client");
        r.register(
            "events",
            "Number and type of billing events",
            self.0.events.clone(),
        );
        r.register(
            "amounts",
            "Number and type of billing amounts",
            self.0.amounts.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a chunk's first write to its ack or failure",
            self.0.request_duration.clone(),
        );
        r.register(
            "queued_events",
            "Billing events accepted and not yet delivered or dropped",
            self.0.queued.clone(),
        );
        r.register(
            "unacked_amounts",
            "Billing amounts accepted and not yet acknowledged",
            self.0.unacked.clone(),
        );
        // Registered with or without a spool (0 without one), so dashboards and alerts can be
        // written once for every deployment.
        r.register(
            "spool_bytes",
            "Bytes of the disk spool's segment files (0 without a spool)",
            self.0.spool_bytes.clone(),
        );
        r.register(
            "spool_records",
            "Events in the disk spool not yet acknowledged",
            self.0.spool_records.clone(),
        );
        r.register(
            "spool_oldest_unacked_age_seconds",
            "Age of the oldest unacknowledged event in the disk spool",
            self.0.spool_oldest_age.clone(),
        );
        r.register(
            "handshake_failures",
            "Connection attempts whose shared-key handshake with the ingester failed, by reason",
            self.0.handshake_failures.clone(),
        );
        r.register(
            "tls_failures",
            "Connections whose TLS session with the ingester failed, by the check that failed",
            self.0.tls_failures.clone(),
        );
        r.register(
            "spool_damaged_records",
            "Spool records found damaged (checksum or format) and moved aside",
            self.0.spool_damaged.clone(),
        );
        r.register(
            "ingester_connected",
            "Connections to this ingester that are up (at most --billing.connections)",
            self.0.ingester_connected.clone(),
        );
        r.register(
            "ingester_active",
            "1 while new chunks go to this ingester",
            self.0.ingester_active.clone(),
        );
        r.register(
            "ingester_chunks_sent",
            "Chunks written to this ingester, resends included",
            self.0.ingester_chunks_sent.clone(),
        );
        r.register(
            "ingester_acks",
            "Chunks this ingester acknowledged in full",
            self.0.ingester_acks.clone(),
        );
        r.register(
            "ingester_failures",
            "Failed connections and connection attempts to this ingester, by reason",
            self.0.ingester_failures.clone(),
        );
    }

    /// The series of the ingester labelled `label`, created (at zero) if new.
    pub(crate) fn ingester(&self, label: &str) -> IngesterMetrics {
        let l = IngesterLabels {
            ingester: label.to_string(),
        };
        IngesterMetrics {
            metrics: self.clone(),
            label: label.to_string(),
            connected: self.0.ingester_connected.get_or_create(&l).clone(),
            active: self.0.ingester_active.get_or_create(&l).clone(),
            chunks_sent: self.0.ingester_chunks_sent.get_or_create(&l).clone(),
            acks: self.0.ingester_acks.get_or_create(&l).clone(),
        }
    }

    fn ingester_labels(ingester: &str) -> IngesterLabels {
        IngesterLabels {
            ingester: ingester.to_string(),
        }
    }

    /// Current value of `billing_client_ingester_connected{ingester}`.
    pub fn ingester_connected(&self, ingester: &str) -> i64 {
        let l = Self::ingester_labels(ingester);
        self.0.ingester_connected.get_or_create(&l).get()
    }

    /// Current value of `billing_client_ingester_active{ingester}`.
    pub fn ingester_active(&self, ingester: &str) -> i64 {
        let l = Self::ingester_labels(ingester);
        self.0.ingester_active.get_or_create(&l).get()
    }

    /// Current count of `billing_client_ingester_chunks_sent_total{ingester}`.
    pub fn ingester_chunks_sent(&self, ingester: &str) -> u64 {
        let l = Self::ingester_labels(ingester);
        self.0.ingester_chunks_sent.get_or_create(&l).get()
    }

    /// Current count of `billing_client_ingester_acks_total{ingester}`.
    pub fn ingester_acks(&self, ingester: &str) -> u64 {
        let l = Self::ingester_labels(ingester);
        self.0.ingester_acks.get_or_create(&l).get()
    }

    /// Current count of `billing_client_ingester_failures_total{ingester, reason}`.
    pub fn ingester_failures(&self, ingester: &str, reason: &str) -> u64 {
        let l = IngesterReasonLabels {
            ingester: ingester.to_string(),
            reason: reason.to_string(),
        };
        self.0.ingester_failures.get_or_create(&l).get()
    }

    fn per_type(&self, t: &AmountType) -> Arc<PerType> {
        if let Some(p) = self
            .0
            .per_type
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(t)
        {
            return p.clone();
        }
        let mut map = self.0.per_type.write().unwrap_or_else(|e| e.into_inner());
        map.entry(t.clone())
            .or_insert_with(|| {
                let get = |fam: &Family<StatusLabels, Counter>, s: Status| {
                    fam.get_or_create(&StatusLabels {
                        status: s.as_str().into(),
                        amount_type: t.as_str().into(),
                    })
                    .clone()
                };
                Arc::new(PerType {
                    events: Status::ALL.map(|s| get(&self.0.events, s)),
                    amounts: Status::ALL.map(|s| get(&self.0.amounts, s)),
                    unacked: self
                        .0
                        .unacked
                        .get_or_create(&TypeLabels {
                            amount_type: t.as_str().into(),
                        })
                        .clone(),
                })
            })
            .clone()
    }

    /// Counts one event's amounts under `status` (every amount type, zero ones included, as Go did).
    pub(crate) fn track<'a>(
        &self,
        status: Status,
        amounts: impl IntoIterator<Item = (&'a AmountType, &'a i64)>,
    ) {
        let i = Status::ALL
            .iter()
            .position(|s| *s == status)
            .expect("listed");
        for (t, v) in amounts {
            let p = self.per_type(t);
            p.events[i].inc();
            // Counters cannot go down: negative amounts (credits) are not added.
            p.amounts[i].inc_by(u64::try_from(*v).unwrap_or(0));
        }
    }

    /// Moves amounts into (`delta` = 1) or out of (-1) the unacked gauge.
    pub(crate) fn unacked<'a>(
        &self,
        delta: i64,
        amounts: impl IntoIterator<Item = (&'a AmountType, &'a i64)>,
    ) {
        for (t, v) in amounts {
            self.per_type(t).unacked.inc_by(delta * *v);
        }
    }

    /// [`Metrics::track`] for every event of `tally`, one update per amount type.
    pub(crate) fn track_tally(&self, status: Status, tally: &Tally) {
        for s in &tally.types {
            let p = self.per_type(&s.amount_type);
            p.events[status.index()].inc_by(s.events);
            p.amounts[status.index()].inc_by(s.positive);
        }
    }

    /// Moves every event of `tally` into (`sign` = 1) or out of (-1) the unacked gauge.
    pub(crate) fn unacked_tally(&self, sign: i64, tally: &Tally) {
        for s in &tally.types {
            self.per_type(&s.amount_type)
                .unacked
                .inc_by(sign.saturating_mul(s.signed));
        }
    }

    pub(crate) fn spool(&self, stats: &spool::SpoolStats) {
        self.0
            .spool_bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        self.0
            .spool_records
            .set(i64::try_from(stats.records).unwrap_or(i64::MAX));
        self.0
            .spool_oldest_age
            .set(stats.oldest_unacked_age.map_or(0.0, |d| d.as_secs_f64()));
        self.0
            .spool_damaged
            .set(i64::try_from(stats.damaged_records).unwrap_or(i64::MAX));
    }

    /// Current value of `billing_client_spool_records`.
    pub fn spool_records(&self) -> i64 {
        self.0.spool_records.get()
    }

    /// Current value of `billing_client_spool_damaged_records`.
    pub fn spool_damaged_records(&self) -> i64 {
        self.0.spool_damaged.get()
    }

    pub(crate) fn queued(&self, delta: i64) {
        self.0.queued.inc_by(delta);
    }

    pub(crate) fn observe_request(&self, ok: bool, seconds: f64) {
        let labels = RequestLabels {
            method: "Billing.AddAmounts".into(),
            status_code: if ok { "200" } else { "500" }.into(),
        };
        self.0
            .request_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Current count of one `(status, amount_type)` pair of `billing_client_events_total`.
    pub fn events_total(&self, status: Status, amount_type: &AmountType) -> u64 {
        let i = Status::ALL
            .iter()
            .position(|s| *s == status)
            .expect("listed");
        self.per_type(amount_type).events[i].get()
    }

    /// Current sum of one `(status, amount_type)` pair of `billing_client_amounts_total`.
    pub fn amounts_total(&self, status: Status, amount_type: &AmountType) -> u64 {
        let i = Status::ALL
            .iter()
            .position(|s| *s == status)
            .expect("listed");
        self.per_type(amount_type).amounts[i].get()
    }

    pub(crate) fn handshake_failure(&self, reason: &'static str) {
        self.0
            .handshake_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Current count of `billing_client_handshake_failures_total{reason}`.
    pub fn handshake_failures(&self, reason: &str) -> u64 {
        self.0
            .handshake_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .get()
    }

    pub(crate) fn tls_failure(&self, reason: &'static str) {
        self.0
            .tls_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Current count of `billing_client_tls_failures_total{reason}`.
    pub fn tls_failures(&self, reason: &str) -> u64 {
        self.0
            .tls_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .get()
    }

    /// Current value of `billing_client_queued_events`.
    pub fn queued_events(&self) -> i64 {
        self.0.queued.get()
    }

    /// Current value of `billing_client_unacked_amounts{amount_type}`.
    pub fn unacked_amounts(&self, amount_type: &AmountType) -> i64 {
        self.per_type(amount_type).unacked.get()
    }
}

/// Registers the process-wide client metrics into `registry` (Go: `MustRegisterMetrics`).
pub fn register_metrics(registry: &mut Registry) {
    Metrics::global().register(registry);
}

#[cfg(test)]
mod status_tests {
    use super::Status;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i, "{}", s.as_str());
        }
    }
}
