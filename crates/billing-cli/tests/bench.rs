//! `billing bench` as a load generator pointed at a real `billing ingest`: every event is
//! acknowledged, the JSON report has the documented fields, and a rerun with the same
//! `--key-prefix` re-adds the same events, which the store counts as duplicates only.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn bench(addr: std::net::SocketAddr, extra: &[&str]) -> Value {
    let mut c = Command::new(billing_bin());
    c.args([
        "bench",
        "--sink",
        "external",
        "--billing.ingester",
        &addr.to_string(),
    ])
    .args(["--events", "600", "--types", "2", "--producers", "3"])
    .args(["--key-prefix", "load", "--format", "json"])
    .args(extra);
    let out = run("billing bench", c);
    assert!(out.status.success(), "bench failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("bench printed no JSON object ({e}): {}", out.stdout))
}

#[test]
fn bench_against_an_external_ingester_is_acked_and_a_rerun_with_the_same_prefix_only_duplicates() {
    let dir = temp_dir("bench-external");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let server = ingest_sqlite(&db, "127.0.0.1:0", &[]);

    let first = bench(server.addr, &[]);
    for field in [
        "delivered_records_per_s",
        "add_p50_ns",
        "add_p99_ns",
        "add_p999_ns",
        "peak_rss_bytes",
        "cpu_s",
    ] {
        assert!(
            first[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {first}"
        );
    }
    assert_eq!(first["records"], 1200, "{first}");
    let s = summary(&store);
    assert_eq!(
        (&s["records"], &s["duplicates"]),
        (&1200.into(), &0.into()),
        "{s}"
    );

    // The same events again, paced this time: all acked, none stored twice.
    let second = bench(server.addr, &["--rate", "20000"]);
    assert_eq!(second["rate"], 20000.0, "{second}");
    let s = summary(&store);
    assert_eq!(
        (&s["records"], &s["duplicates"], &s["conflicts"]),
        (&1200.into(), &1200.into(), &0.into()),
        "{s}"
    );
}
