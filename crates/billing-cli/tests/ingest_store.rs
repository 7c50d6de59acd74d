//! `billing ingest` on a SQLite store, as a real process: its Prometheus endpoint counts what the
//! store did with each record, and a chunk committed but not acked when the ingester is
//! SIGKILLed is resent by the client and counted once.
//!
//! No sleeps as synchronisation: readiness and the commit are stdout lines, acks are awaited by
//! the client, the metrics are polled (bounded) only for counters the server bumps after the
//! ack was written.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use billing_client::{AmountType, Amounts, Client, Config, Metadata, Metrics};
use common::*;
use serde_json::Value;

const AT: &str = "2026-11-27T04:33:58Z";

fn send(addr: SocketAddr, key: &str, amounts: &[&str]) {
    let mut c = Command::new(billing_bin());
    c.args(["send", "--billing.ingester", &addr.to_string()])
        .args([
            "--key",
            key,
            "--instance",
            "i-7",
            "--at",
            AT,
            "--timeout",
            "20s",
        ]);
    for a in amounts {
        c.args(["--amount", a]);
    }
    let out = run("billing send", c);
    assert!(
        out.status.success(),
        "send {key} {amounts:?}: {}",
        out.stderr
    );
}

/// Bytes that are not a frame; returns once the ingester closed the connection.
fn send_garbage(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    s.write_all(&[0xc1, 0x00, 0x01]).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "connection closed");
}

/// Scrapes until `done` holds for the exposition text (bounded by POLL_DEADLINE).
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let r = http_get(addr, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{}",
            r.body
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn metrics_endpoint_counts_each_record_by_store_outcome_and_the_connections() {
    let dir = temp_dir("metrics");
    let db = dir.path().join("billing.db");
    let mut ingest = ingest_sqlite(&db, "127.0.0.1:0", &["--metrics-listen", "127.0.0.1:0"]);
    let metrics: SocketAddr = ingest
        .wait_line("metrics on ")
        .parse()
        .expect("`metrics on ADDR` names an address");
    assert_ne!(metrics.port(), 0, "the bound port is printed");
    let addr = ingest.addr;

    let before = http_get(metrics, "/metrics");
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(before.header("connection"), Some("close"));
    assert_eq!(
        sample(&before.body, "billing_ingest_records_received_total"),
        Some(0.0),
        "{}",
        before.body
    );
    // `/` is the usage dashboard since the HTTP surface serves more than metrics.
    assert_eq!(http_get(metrics, "/").status, 200);
    assert_eq!(http_get(metrics, "/metrics/x").status, 404);

    send(addr, "a", &["samples=5", "node-seconds=7"]); // 2 stored
    send(addr, "b", &["samples=3"]); // 1 stored
    send(addr, "a", &["samples=5", "node-seconds=7"]); // 2 duplicates
    send(addr, "b", &["samples=4"]); // 1 conflict
    send_invalid_record(addr, "i-7", AT); // 1 quarantined
    send_garbage(addr); // 1 protocol error

    // Acks and closed connections are counted after the client saw them: poll for those.
    let text = scrape_until(metrics, "5 acks and no open connection", |t| {
        sample(t, "billing_ingest_chunks_acked_total") == Some(5.0)
            && sample(t, "billing_ingest_connections_open") == Some(0.0)
    });
    let expect = [
        ("billing_ingest_records_received_total", 7.0),
        ("billing_ingest_records_total{outcome=\"stored\"}", 3.0),
        ("billing_ingest_records_total{outcome=\"duplicate\"}", 2.0),
        ("billing_ingest_records_total{outcome=\"conflict\"}", 1.0),
        ("billing_ingest_records_total{outcome=\"quarantined\"}", 1.0),
        ("billing_ingest_commit_duration_seconds_count", 5.0),
        ("billing_ingest_store_errors_total", 0.0),
        ("billing_ingest_connections_total", 6.0),
        ("billing_ingest_connections_open", 0.0),
        ("billing_ingest_frames_total", 5.0),
        ("billing_ingest_chunks_acked_total", 5.0),
        ("billing_ingest_protocol_errors_total", 1.0),
    ];
    for (name, want) in expect {
        assert_eq!(sample(&text, name), Some(want), "{name} in:\n{text}");
    }
    // The endpoint and the store agree.
    let s = summary(&format!("sqlite:{}", db.display()));
    assert_eq!(
        (
            &s["received"],
            &s["records"],
            &s["duplicates"],
            &s["conflicts"],
            &s["quarantined"]
        ),
        (
            &Value::from(7),
            &Value::from(3),
            &Value::from(2),
            &Value::from(1),
            &Value::from(1)
        ),
        "{s}"
    );
    assert!(ingest.exited().is_none(), "{}", ingest.stderr());
}

#[test]
fn without_metrics_listen_only_the_listening_line_is_printed() {
    let dir = temp_dir("no-metrics");
    let mut ingest = ingest_sqlite(&dir.path().join("billing.db"), "127.0.0.1:0", &[]);
    send(ingest.addr, "k", &["samples=1"]);
    let lines = ingest.kill_and_read_stdout();
    assert!(lines.is_empty(), "unexpected stdout lines: {lines:?}");
}

#[test]
fn a_chunk_committed_but_not_acked_when_the_ingester_is_sigkilled_is_resent_and_counted_once() {
    let dir = temp_dir("sigkill");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    // One frame at a time, so that exactly one chunk is committed before the hold (with
    // several in flight the first commit could hold several frames: `kill_ingest.rs` covers
    // that default path with an exact reconciliation).
    let mut a = ingest_sqlite(
        &db,
        "127.0.0.1:0",
        &["--test-hold-after-commits", "1", "--frames-in-flight", "1"],
    );
    let addr = a.addr;

    let client = Client::with_metrics(
        {
            let mut c = Config::default();
            c.ingester = addr.to_string();
            // Resends come from the broken connection, never from an ack timeout.
            c.ack_timeout = Duration::from_secs(120);
            c.retry_delay = Duration::from_millis(20);
            c.retry_delay_max = Duration::from_millis(200);
            c.batch_max_records = 8;
            c
        },
        Metrics::new(),
    )
    .unwrap();
    const EVENTS: i64 = 20;
    let at = billing_schema::parse_rfc3339(AT).unwrap();
    for i in 1..=EVENTS {
        let amounts = Amounts::from([
            (AmountType::SAMPLES, i),
            (AmountType::CONTAINER_SECONDS, 100 * i),
        ]);
        let metadata = Metadata::from([("n".to_string(), i.to_string())]);
        client
            .add_amounts(format!("crash-{i}"), "i-9", at, amounts, metadata)
            .unwrap();
    }

    // A committed its first frame and will never ack it.
    assert_eq!(a.wait_line("committed "), "1");
    assert_eq!(client.pending(), EVENTS as usize, "nothing was acked");
    let status = a.kill();
    assert!(!status.success(), "killed, not exited: {status}");

    // The commit is on disk although no ack was sent.
    let committed = summary(&store);
    let first_chunk = committed["records"].as_i64().unwrap();
    assert!(
        (1..=8).contains(&first_chunk),
        "one chunk of at most 8 records committed before the kill: {committed}"
    );

    // B takes over the same file and port; the client reconnects and resends everything
    // unacked, the committed chunk included.
    let b = ingest_sqlite(&db, &addr.to_string(), &[]);
    assert_eq!(b.addr, addr);
    client
        .flush(RUN_TIMEOUT)
        .expect("everything acked by the second ingester");
    client.close();

    let usage: Value = serde_json::from_str(&report(&store, &["--format", "json"])).unwrap();
    let rows = usage.as_array().expect("a JSON array");
    let total = |t: &str| -> (i64, i64) {
        rows.iter()
            .filter(|r| r["amount_type"] == t)
            .fold((0, 0), |(v, n), r| {
                (
                    v + r["value"].as_i64().unwrap(),
                    n + r["records"].as_i64().unwrap(),
                )
            })
    };
    let sum: i64 = (1..=EVENTS).sum();
    assert_eq!(total("samples"), (sum, EVENTS), "{usage}");
    assert_eq!(total("container-seconds"), (100 * sum, EVENTS), "{usage}");

    let s = summary(&store);
    assert_eq!(s["records"], 2 * EVENTS, "{s}");
    assert!(
        s["duplicates"].as_i64().unwrap() >= first_chunk,
        "the resent committed chunk is counted as duplicates: {s}"
    );
    assert_eq!(s["conflicts"], 0, "{s}");
    assert_eq!(s["quarantined"], 0, "{s}");
    assert_eq!(
        s["received"].as_i64(),
        Some(s["records"].as_i64().unwrap() + s["duplicates"].as_i64().unwrap()),
        "{s}"
    );
}

#[test]
fn ingest_help_shows_metrics_listen_and_hides_the_test_hold_flag() {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--help"]);
    let out = run("billing ingest --help", c);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("--metrics-listen"), "{}", out.stdout);
    assert!(!out.stdout.contains("test-hold"), "{}", out.stdout);
}

/// fluentd's `heartbeat_type udp` sends a datagram to the ingester's port; `in_forward`
/// answers with one NUL byte, and so must `billing ingest`, or fluentd marks it down.
#[test]
fn the_ingester_answers_fluentds_udp_heartbeat_on_its_port() {
    let dir = temp_dir("heartbeat");
    let ingest = ingest_sqlite(&dir.path().join("billing.db"), "127.0.0.1:0", &[]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    udp.send_to(b"\0", ingest.addr).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = udp.recv_from(&mut buf).expect("a heartbeat answer");
    assert_eq!((&buf[..n], from), (&b"\0"[..], ingest.addr));
}
