//! Issue 12, reliability: `billing ingest` SIGKILLed and restarted (same port, same store)
//! ten times mid-stream, on SQLite and on PostgreSQL, while an in-process memory client keeps
//! adding events. Before each kill the fault proxy between them drops acks until one chunk
//! was committed but not acknowledged, so every kill leaves committed-but-unacked events in
//! flight: the client must resend them after reconnecting, and the store must dedupe them.
//! Each run ends with the exact reconciliation of `common::ledger`.

mod common;

use std::time::Duration;

use billing_client::{Client, Metrics};
use common::ledger::*;
use common::*;
use faultproxy::{FaultProxy, Faults};

const ROUNDS: u64 = 10;
const PER_PHASE: u64 = 100;

/// The client's and the proxy's view, for a failure message.
fn state(client: &Client, proxy: &FaultProxy) -> String {
    let m = client.metrics();
    format!(
        "client: delivered {}, retried {}, queued {}, last failure {:?}; proxy {:?}",
        delivered(m),
        retried(m),
        m.queued_events(),
        client.last_failure(),
        proxy.stats()
    )
}

fn killed_and_restarted_ten_times(store: &str, label: &str) {
    let mut ingester = ingest_store_at(store, "127.0.0.1:0", &["--metrics-listen", "127.0.0.1:0"]);
    let listen = ingester.addr.to_string();
    let proxy = FaultProxy::start(ingester.addr).unwrap();
    let metrics = Metrics::new();
    let config = client_config(&proxy.addr().to_string(), Duration::from_secs(5));
    let client = Client::with_metrics(config, metrics.clone()).unwrap();
    let mut ledger = Ledger::new(label);
    for round in 0..ROUNDS {
        // From here acks are lost: the chunks of these events get committed, never acked.
        let dropped = proxy.stats().acks_dropped;
        proxy.set_faults(Faults::drop_acks());
        ledger.add(&client, PER_PHASE);
        proxy.wait_for(
            &format!("round {round}: a committed chunk whose ack is lost"),
            POLL_DEADLINE,
            |s| s.acks_dropped > dropped,
        );
        let before = delivered(&metrics);
        ingester.kill();
        // The client keeps going while the ingester is down.
        ledger.add(&client, PER_PHASE);
        ingester = ingest_store_at(store, &listen, &["--metrics-listen", "127.0.0.1:0"]);
        proxy.heal();
        // Delivered to the new process before the next kill (no ack could count meanwhile:
        // the old process is dead and acks were dropped until the heal).
        wait_until_with(
            &format!("round {round}: deliveries after the restart"),
            || delivered(&metrics) > before,
            || state(&client, &proxy),
        );
    }
    client
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("not everything acked: {e}; {}", state(&client, &proxy)));
    let resent = retried(&metrics);
    let s = ledger.close_and_reconcile(client, store);
    assert_eq!(ledger.events(), 2 * ROUNDS * PER_PHASE);
    assert!(resent > 0, "events in flight at the kills were resent");
    assert!(
        s["duplicates"].as_u64().unwrap() >= ROUNDS,
        "every round's committed-but-unacked chunk came back and was deduped: {s}"
    );
    let p = proxy.stats();
    assert!(p.acks_dropped >= ROUNDS, "{p:?}");
    println!("{label}: {s}; proxy {p:?}");
}

#[test]
fn sqlite_ingester_sigkilled_ten_times_mid_stream_stores_exactly_what_was_accepted() {
    let dir = temp_dir("kill10-sqlite");
    let store = format!("sqlite:{}", dir.path().join("billing.db").display());
    killed_and_restarted_ten_times(&store, "kill10-sqlite");
}

#[test]
fn postgres_ingester_sigkilled_ten_times_mid_stream_stores_exactly_what_was_accepted() {
    let Some(schema) = PgSchema::new("kill10") else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    killed_and_restarted_ten_times(&schema.url, "kill10-pg");
}
