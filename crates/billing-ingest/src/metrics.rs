//! The ingester's Prometheus metrics, all named `billing_ingest_*`.
//!
//! Three sources:
//! - [`IngestMetrics`]: what the ingest handler counts itself, from each
//!   [`Store::store_counted`] call: records by outcome, stored amounts per amount type, store
//!   errors, the commit latency and the time of the last commit;
//! - the forward server's [`ServerStats`] (connections, frames, acks, protocol errors), read
//!   at scrape time by a collector, so the server keeps plain atomics and knows nothing of
//!   Prometheus;
//! - the process itself (`process_*`, without the prefix, by the Prometheus convention; see
//!   `process.rs`): CPU seconds, resident and virtual memory, open and maximum fds, start time.
//!
//! Per-amount-type totals are kept exactly (`i128` sums) and exported as counters at scrape
//! time: the value as an integer while it fits 64 bits, as a float beyond (Prometheus keeps
//! floats anyway: compare with `billing report` for exact sums). At most
//! [`MAX_AMOUNT_TYPES`] label values are kept; the amounts of further types are added under
//! `amount_type="(other)"`, so a sender cannot grow the scrape without bound.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `billing_ingest_records_received_total` | counter | entries in frames whose transaction committed |
//! | `billing_ingest_records_total{outcome}` | counter | those entries by outcome: `stored`, `duplicate`, `conflict`, `quarantined` (they add up to `received`) |
//! | `billing_ingest_quarantined_total{reason}` | counter | invalid entries of committed frames by reason (every reason listed from the start, see [`crate::quarantine_reasons`]) |
//! | `billing_ingest_stored_amount_total{amount_type}` | counter | sum of `amount_value` of the records stored (first versions), by amount type |
//! | `billing_ingest_stored_records_total{amount_type}` | counter | records stored (first versions), by amount type |
//! | `billing_ingest_last_commit_timestamp_seconds` | gauge | Unix time of the last successful `store()` call (0: none yet) |
//! | `billing_ingest_commit_duration_seconds` | histogram | time of each successful `store()` call (validation, transaction, commit) |
//! | `billing_ingest_store_errors_total` | counter | `store()` calls that failed (chunk not acked, connection closed) |
//! | `billing_ingest_connections_open` | gauge | forward connections open now |
//! | `billing_ingest_connections_total` | counter | forward connections accepted |
//! | `billing_ingest_frames_total` | counter | frames decoded |
//! | `billing_ingest_chunks_acked_total` | counter | acks written |
//! | `billing_ingest_protocol_errors_total` | counter | connections closed for bytes that are not a frame |
//! | `billing_ingest_tcp_heartbeats_total` | counter | `nil` objects between frames (fluentd's TCP heartbeat), skipped |
//! | `billing_ingest_limit_hits_total{reason}` | counter | server limits hit: `max_connections`, `idle_timeout`, `frame_timeout`, `too_many_records`, `frame_too_large`, `decoded_too_large`, `accept_error` |
//! | `billing_ingest_memory_waits_total` | counter | times a connection waited for the memory budget |
//! | `billing_ingest_memory_bytes` | gauge | bytes of the memory budget in use |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | | the process (Linux; absent elsewhere) |
//!
//! [`Store::store_counted`]: crate::Store::store_counted

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use forward::ServerStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;
use crate::{StoreError, StoreOutcome};

/// The prefix of every metric name.
pub const PREFIX: &str = "billing_ingest";

/// Amount types counted under their own label; further ones are added under
/// [`OTHER_AMOUNT_TYPES`].
pub const MAX_AMOUNT_TYPES: usize = 256;

/// The `amount_type` label of the amounts beyond [`MAX_AMOUNT_TYPES`] types.
pub const OTHER_AMOUNT_TYPES: &str = "(other)";

/// Exact stored sums and record counts per amount type.
type AmountTotals = Arc<Mutex<BTreeMap<String, (i128, u64)>>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AmountTypeLabel {
    amount_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What the ingest handler counts; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    received: Counter,
    records: Family<OutcomeLabel, Counter>,
    stored: Counter,
    duplicates: Counter,
    conflicts: Counter,
    quarantined: Counter,
    by_reason: Family<ReasonLabel, Counter>,
    store_errors: Counter,
    commit_seconds: Histogram,
    /// Count and total time of the successful calls, for [`IngestMetrics::commits`] (the
    /// histogram's own are not readable).
    commit_totals: Arc<(AtomicU64, AtomicU64)>,
    /// Stored amounts per type, exact.
    amounts: AmountTotals,
    /// Unix seconds of the last successful `store()` call.
    last_commit: Gauge<f64, AtomicU64>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestMetrics {
    /// A fresh set, all zero.
    pub fn new() -> Self {
        let records = Family::<OutcomeLabel, Counter>::default();
        let get = |outcome| records.get_or_create(&OutcomeLabel { outcome }).clone();
        Self {
            received: Counter::default(),
            stored: get("stored"),
            duplicates: get("duplicate"),
            conflicts: get("conflict"),
            quarantined: get("quarantined"),
            records,
            by_reason: {
                let family = Family::<ReasonLabel, Counter>::default();
                for reason in crate::quarantine_reasons() {
                    let _ = family.get_or_create(&ReasonLabel { reason });
                }
                family
            },
            store_errors: Counter::default(),
            // 100 µs .. ~13 s: an fsync-bound commit of one small frame up to a stalled database.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            commit_totals: Arc::default(),
            amounts: AmountTotals::default(),
            last_commit: Gauge::default(),
        }
    }

    /// Adds a committed frame's stored amounts per type (see [`crate::Stored::amounts`]).
    pub fn stored_amounts(&self, amounts: &BTreeMap<String, (i128, u64)>) {
        if amounts.is_empty() {
            return;
        }
        let mut totals = self.amounts.lock().unwrap_or_else(|e| e.into_inner());
        for (amount_type, &(value, records)) in amounts {
            let key = if totals.contains_key(amount_type) || totals.len() < MAX_AMOUNT_TYPES {
                amount_type.clone()
            } else {
                OTHER_AMOUNT_TYPES.to_string()
            };
            let slot = totals.entry(key).or_default();
            slot.0 = slot.0.saturating_add(value);
            slot.1 = slot.1.saturating_add(records);
        }
    }

    /// Stored sum and records of `amount_type` so far.
    pub fn stored_amount(&self, amount_type: &str) -> (i128, u64) {
        let totals = self.amounts.lock().unwrap_or_else(|e| e.into_inner());
        totals.get(amount_type).copied().unwrap_or_default()
    }

    /// Counts one `store()` call that took `elapsed`.
    pub fn observe(&self, result: &Result<StoreOutcome, StoreError>, elapsed: Duration) {
        match result {
            Ok(o) => {
                self.received.inc_by(o.received);
                self.stored.inc_by(o.stored);
                self.duplicates.inc_by(o.duplicates);
                self.conflicts.inc_by(o.conflicts);
                self.quarantined.inc_by(o.quarantined);
                self.commit_seconds.observe(elapsed.as_secs_f64());
                self.commit_totals.0.fetch_add(1, Ordering::Relaxed);
                let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                self.commit_totals.1.fetch_add(nanos, Ordering::Relaxed);
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_commit.set(now.as_secs_f64());
            }
            Err(_) => {
                self.store_errors.inc();
            }
        }
    }

    /// Counts a committed frame's quarantined entries by reason.
    pub fn quarantined_by(&self, counts: &[(&'static str, u64)]) {
        for &(reason, n) in counts {
            self.by_reason
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
    }

    /// Quarantined entries counted under `reason` so far.
    pub fn quarantined_total(&self, reason: &'static str) -> u64 {
        self.by_reason.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Successful `store()` calls so far and the seconds they took in total.
    pub fn commits(&self) -> (u64, f64) {
        let (count, nanos) = &*self.commit_totals;
        (
            count.load(Ordering::Relaxed),
            Duration::from_nanos(nanos.load(Ordering::Relaxed)).as_secs_f64(),
        )
    }

    /// A registry holding these metrics and `server`'s counters, every name prefixed
    /// `billing_ingest_`, and the `process_*` metrics; encode it with [`encode`].
    pub fn registry(&self, server: Arc<ServerStats>) -> Registry {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix(PREFIX);
        registry.register(
            "records_received",
            "Entries received in frames whose transaction committed",
            self.received.clone(),
        );
        registry.register(
            "records",
            "Entries of committed frames by outcome: stored, duplicate, conflict, quarantined",
            self.records.clone(),
        );
        registry.register(
            "quarantined",
            "Invalid entries of committed frames by reason",
            self.by_reason.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to validate, store and commit one frame (successful store calls)",
            self.commit_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Frames the store failed to take (not acked; the client resends)",
            self.store_errors.clone(),
        );
        registry.register(
            "last_commit_timestamp_seconds",
            "Unix time of the last successful store call (0: none yet)",
            self.last_commit.clone(),
        );
        registry.register_collector(Box::new(AmountCollector(self.amounts.clone())));
        registry.register_collector(Box::new(ServerCollector(server)));
        root
    }
}

/// Encodes `registry` in the Prometheus text format, version 0.0.4 ([`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Exports the exact stored sums per amount type at scrape time.
#[derive(Debug)]
struct AmountCollector(AmountTotals);

impl Collector for AmountCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals: Vec<(String, (i128, u64))> = {
            let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
            t.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        let mut family = encoder.encode_descriptor(
            "stored_amount",
            "Sum of amount_value of the records stored (first versions), by amount type.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (amount_type, (value, _)) in &totals {
            let label = AmountTypeLabel {
                amount_type: amount_type.clone(),
            };
            match u64::try_from(*value) {
                Ok(v) => ConstCounter::new(v).encode(family.encode_family(&label)?)?,
                Err(_) => ConstCounter::new(*value as f64).encode(family.encode_family(&label)?)?,
            }
        }
        let mut family = encoder.encode_descriptor(
            "stored_records",
            "Records stored (first versions), by amount type.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (amount_type, (_, records)) in totals {
            ConstCounter::new(records)
                .encode(family.encode_family(&AmountTypeLabel { amount_type })?)?;
        }
        Ok(())
    }
}

/// Reads a forward server's atomics at scrape time.
#[derive(Debug)]
struct ServerCollector(Arc<ServerStats>);

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let open = ConstGauge::new(s.connections_open.load(Ordering::Relaxed));
        open.encode(encoder.encode_descriptor(
            "connections_open",
            "Forward connections open now.",
            None,
            open.metric_type(),
        )?)?;
        let counters = [
            (
                "connections",
                "Forward connections accepted.",
                &s.connections_total,
            ),
            ("frames", "Forward frames decoded.", &s.frames),
            (
                "chunks_acked",
                "Chunks acknowledged (after their frame was stored).",
                &s.acks,
            ),
            (
                "protocol_errors",
                "Connections closed because they sent bytes that are not a forward frame.",
                &s.protocol_errors,
            ),
            (
                "tcp_heartbeats",
                "nil objects received between frames (fluentd's TCP heartbeat), skipped.",
                &s.heartbeats,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value.load(Ordering::Relaxed));
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        // Every limit hit, by reason, in one family so one alert covers them all.
        let limits = [
            ("max_connections", &s.refused_max_connections),
            ("idle_timeout", &s.closed_idle_timeout),
            ("frame_timeout", &s.closed_frame_timeout),
            ("too_many_records", &s.refused_too_many_records),
            ("frame_too_large", &s.refused_frame_too_large),
            ("decoded_too_large", &s.refused_decoded_too_large),
            ("accept_error", &s.accept_errors),
        ];
        let mut family = encoder.encode_descriptor(
            "limit_hits",
            "Connections closed or frames refused by a server limit, by reason.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, value) in limits {
            let c = ConstCounter::new(value.load(Ordering::Relaxed));
            c.encode(family.encode_family(&ReasonLabel { reason })?)?;
        }
        // Handshakes (with a shared key), by outcome, in one family.
        let handshakes = [
            ("ok", &s.handshakes_ok),
            ("failed", &s.handshakes_failed),
            ("timeout", &s.handshake_timeouts),
        ];
        let mut family = encoder.encode_descriptor(
            "handshakes",
            "Forward handshakes (shared key authentication) by outcome: ok, failed (wrong key, user or password, hostname loop, malformed PING, peer gone), timeout.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, value) in handshakes {
            let c = ConstCounter::new(value.load(Ordering::Relaxed));
            c.encode(family.encode_family(&OutcomeLabel { outcome })?)?;
        }
        let json = ConstCounter::new(s.refused_json_with_auth.load(Ordering::Relaxed));
        json.encode(encoder.encode_descriptor(
            "json_refused_with_auth",
            "JSON frames refused because authentication is on (JSON framing has no handshake).",
            None,
            json.metric_type(),
        )?)?;
        let tls = ConstCounter::new(s.tls_handshake_failures.load(Ordering::Relaxed));
        tls.encode(encoder.encode_descriptor(
            "tls_handshake_failures",
            "TLS handshakes that failed (no or refused client certificate, not TLS, ...) or did not complete within the handshake timeout.",
            None,
            tls.metric_type(),
        )?)?;
        let waits = ConstCounter::new(s.memory_waits.load(Ordering::Relaxed));
        waits.encode(encoder.encode_descriptor(
            "memory_waits",
            "Times a connection waited for the memory budget (TCP backpressure).",
            None,
            waits.metric_type(),
        )?)?;
        let charged = ConstGauge::new(
            i64::try_from(s.memory_charged_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        charged.encode(encoder.encode_descriptor(
            "memory_bytes",
            "Bytes of the memory budget in use (partial frames buffered, frames decoded or being stored).",
            None,
            charged.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_outcomes_and_server_counters_with_the_prefix() {
        let m = IngestMetrics::new();
        let stats = Arc::new(ServerStats::default());
        stats.connections_total.fetch_add(3, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        stats.acks.fetch_add(2, Ordering::Relaxed);
        stats.closed_idle_timeout.fetch_add(4, Ordering::Relaxed);
        stats
            .memory_charged_bytes
            .fetch_add(4096, Ordering::Relaxed);
        m.quarantined_by(&[("too_old", 2)]);
        m.observe(
            &Ok(StoreOutcome {
                received: 5,
                stored: 2,
                duplicates: 1,
                conflicts: 1,
                quarantined: 1,
            }),
            Duration::from_millis(3),
        );
        m.observe(&Err(StoreError::Closed), Duration::from_millis(1));
        let mut amounts = BTreeMap::new();
        amounts.insert("samples".to_string(), (7_i128, 2_u64));
        m.stored_amounts(&amounts);
        amounts.insert("huge".to_string(), (i128::from(u64::MAX) + 1, 1));
        m.stored_amounts(&amounts);
        let text = encode(&m.registry(stats));
        for line in [
            "billing_ingest_records_received_total 5",
            "billing_ingest_records_total{outcome=\"stored\"} 2",
            "billing_ingest_records_total{outcome=\"duplicate\"} 1",
            "billing_ingest_records_total{outcome=\"conflict\"} 1",
            "billing_ingest_records_total{outcome=\"quarantined\"} 1",
            "billing_ingest_store_errors_total 1",
            "billing_ingest_commit_duration_seconds_count 1",
            "billing_ingest_connections_open 1",
            "billing_ingest_connections_total 3",
            "billing_ingest_chunks_acked_total 2",
            "billing_ingest_frames_total 0",
            "billing_ingest_protocol_errors_total 0",
            "billing_ingest_limit_hits_total{reason=\"idle_timeout\"} 4",
            "billing_ingest_limit_hits_total{reason=\"max_connections\"} 0",
            "billing_ingest_memory_bytes 4096",
            "billing_ingest_quarantined_total{reason=\"too_old\"} 2",
            "billing_ingest_quarantined_total{reason=\"negative_amount\"} 0",
            "billing_ingest_stored_amount_total{amount_type=\"samples\"} 14",
            "billing_ingest_stored_records_total{amount_type=\"samples\"} 4",
            "billing_ingest_stored_amount_total{amount_type=\"huge\"} 18446744073709553000.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let last = text
            .lines()
            .find_map(|l| l.strip_prefix("billing_ingest_last_commit_timestamp_seconds "))
            .expect("last commit time");
        assert!(last.parse::<f64>().unwrap() > 1.0e9, "{last}");
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "missing {name:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn amount_types_beyond_the_bound_are_added_under_other() {
        let m = IngestMetrics::new();
        for i in 0..MAX_AMOUNT_TYPES + 3 {
            let mut a = BTreeMap::new();
            a.insert(format!("t{i:04}"), (1_i128, 1_u64));
            m.stored_amounts(&a);
        }
        assert_eq!(m.stored_amount(OTHER_AMOUNT_TYPES), (3, 3));
        assert_eq!(m.stored_amount("t0000"), (1, 1));
    }
}
