//! `billing ingest --http-listen` as a real process: health and readiness, the usage API equal
//! to `billing report --format json` for the same filters, refused ranges as 400 JSON, the
//! metrics a send adds (process, per-type stored totals, last commit time), HTML escaping of
//! record strings on the dashboard, and the request limits (oversized head, slow loris).
//!
//! No sleeps as synchronisation: readiness is the `metrics on` stdout line, sends return on the
//! ack (the metrics are updated before it is written); records carry fixed past dates and every
//! query names its range.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// An ingester on `db` with its HTTP surface; the HTTP address.
fn start(db: &Path, flag: &str) -> (Server, SocketAddr) {
    let mut server = ingest_sqlite(db, "127.0.0.1:0", &[flag, "127.0.0.1:0"]);
    let http: SocketAddr = server
        .wait_line("metrics on ")
        .parse()
        .expect("`metrics on ADDR` names an address");
    (server, http)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn health_readiness_and_the_usage_api_equal_billing_report() {
    let dir = temp_dir("http-api");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let (server, http) = start(&db, "--http-listen");

    let health = http_get(http, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http_get(http, "/readyz");
    assert_eq!(ready.status, 200, "{ready:?}");

    send_event(server.addr, "a", "i-1", "samples=5", "2026-11-27T04:10:00Z");
    send_event(server.addr, "b", "i-2", "samples=7", "2026-11-27T05:20:00Z");
    send_event(server.addr, "c", "i-1", "cpu=3", "2026-11-28T01:00:00Z");
    send_event(
        server.addr,
        "d",
        "i-2",
        "samples=9223372036854775807",
        "2026-11-28T01:30:00Z",
    );
    send_event(
        server.addr,
        "e",
        "i-2",
        "samples=9223372036854775807",
        "2026-11-28T01:40:00Z",
    );

    for (query, args) in [
        ("", vec![]),
        (
            "?from=2026-11-27&to=2026-11-28",
            vec!["--from", "2026-11-27", "--to", "2026-11-28"],
        ),
        (
            "?type=samples&by=day",
            vec!["--type", "samples", "--by", "day"],
        ),
        (
            "?instance=i-1&by=month&from=2026-11-27T05:00:00Z",
            vec![
                "--instance",
                "i-1",
                "--by",
                "month",
                "--from",
                "2026-11-27T05:00:00Z",
            ],
        ),
        ("?from=&to=&instance=&type=&by=hour", vec!["--by", "hour"]),
    ] {
        let api = http_get(http, &format!("/api/v1/usage{query}"));
        assert_eq!(api.status, 200, "{query}: {api:?}");
        assert_eq!(api.header("content-type"), Some("application/json"));
        let mut args = args.clone();
        args.extend(["--format", "json"]);
        assert_eq!(api.body, report(&store, &args), "{query}");
    }
    // A day summing two i64::MAX values keeps every digit.
    let day = http_get(http, "/api/v1/usage?type=samples&by=day&from=2026-11-28");
    assert!(
        day.body.contains("\"value\":18446744073709551614,"),
        "{}",
        day.body
    );

    let summary = http_get(http, "/api/v1/summary");
    assert_eq!(summary.status, 200);
    assert_eq!(json(&summary.body), self::summary(&store));

    for (query, want) in [
        (
            "?from=2026-11-27T04:30:00Z",
            "--from 2026-11-27T04:00:00Z or --from 2026-11-27T05:00:00Z",
        ),
        ("?from=2026-11-28&to=2026-11-27", "empty range"),
        ("?to=yesterday", "is not a time"),
        ("?by=week", "hour, day, month or instance"),
    ] {
        let r = http_get(http, &format!("/api/v1/usage{query}"));
        assert_eq!(r.status, 400, "{query}: {r:?}");
        let error = json(&r.body)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(want), "{query}: {error}");
    }
    assert_eq!(http_get(http, "/nope").status, 404);

    // Metrics of the sends: process, stored totals per type, time of the last commit.
    let metrics = http_get(http, "/metrics").body;
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            sample(&metrics, name).unwrap_or(0.0) > 0.0
                || name == "process_cpu_seconds_total" && sample(&metrics, name).is_some(),
            "{name} in:\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "billing_ingest_stored_amount_total{amount_type=\"cpu\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "billing_ingest_stored_records_total{amount_type=\"samples\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    // Beyond 64 bits: exported as a float.
    let samples = sample(
        &metrics,
        "billing_ingest_stored_amount_total{amount_type=\"samples\"}",
    )
    .unwrap();
    assert!((samples - 1.8446744073709552e19).abs() < 1e5, "{samples}");
    let last = sample(&metrics, "billing_ingest_last_commit_timestamp_seconds").unwrap();
    let start = sample(&metrics, "process_start_time_seconds").unwrap();
    assert!(
        last >= start - 1.0,
        "last commit {last} after the start {start}"
    );

    // The schema changed under the running ingester (a newer build migrated it): not ready.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (99, 'test')",
        [],
    )
    .unwrap();
    let not_ready = http_get(http, "/readyz");
    assert_eq!(not_ready.status, 503, "{not_ready:?}");
    assert!(
        not_ready.body.starts_with("not ready: store: ")
            && not_ready.body.contains("99")
            && not_ready.body.lines().count() == 1,
        "{}",
        not_ready.body
    );
    assert_eq!(
        http_get(http, "/healthz").status,
        200,
        "alive while not ready"
    );
}

#[test]
fn readyz_is_503_when_the_postgres_schema_is_gone() {
    let Some(pg) = PgSchema::new("http_ready") else {
        return;
    };
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", "127.0.0.1:0", "--store", &pg.url])
        .args(["--http-listen", "127.0.0.1:0"]);
    let mut server = Server::spawn("billing ingest", c);
    let http: SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    assert_eq!(http_get(http, "/readyz").status, 200);
    // Drop the store's tables under the ingester (the schema is dropped again on drop).
    let schema = pg.url.rsplit("schema=").next().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = std::env::var("BILLING_TEST_POSTGRES")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    });
    let r = http_get(http, "/readyz");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.starts_with("not ready: store: PostgreSQL"),
        "{}",
        r.body
    );
}

#[test]
fn the_former_metrics_flag_and_its_env_var_still_serve() {
    let dir = temp_dir("http-alias");
    let db = dir.path().join("billing.db");
    let (_server, http) = start(&db, "--metrics-listen");
    assert_eq!(http_get(http, "/healthz").status, 200);

    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("env.db").display()))
        .env_remove("BILLING_INGEST_HTTP_LISTEN")
        .env("BILLING_INGEST_METRICS_LISTEN", "127.0.0.1:0");
    let mut server = Server::spawn("billing ingest", c);
    let http: SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    let r = http_get(http, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("billing_ingest_records_received_total"),
        "{}",
        r.body
    );
}

#[test]
fn record_strings_are_escaped_on_the_dashboard() {
    let dir = temp_dir("http-escape");
    let db = dir.path().join("billing.db");
    let (server, http) = start(&db, "--http-listen");
    let evil = "<script>alert(1)</script>";
    send_event(
        server.addr,
        "x\"><b>",
        evil,
        "samples=2",
        "2026-11-27T04:10:00Z",
    );
    let page = http_get(http, "/?from=2026-11-27&to=2026-11-28");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("data-amount-type=\"samples\" data-value=\"2\""),
        "{}",
        page.body
    );
    let bad = http_get(http, "/?from=2026-11-27T04:30:00Z&instance=%3Cb%3E");
    assert_eq!(bad.status, 400);
    assert!(
        !bad.body.contains("<b>") && bad.body.contains("value=\"&lt;b&gt;\""),
        "{}",
        bad.body
    );
}

#[test]
fn an_oversized_head_is_refused_and_a_slow_loris_blocks_nobody() {
    let dir = temp_dir("http-limits");
    let db = dir.path().join("billing.db");
    let (_server, http) = start(&db, "--http-listen");

    // A head beyond 8 KiB: 431 (or, if the close raced the response, a closed connection),
    // never a page.
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'x', 9 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let _ = s.write_all(&req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431 "),
        "oversized head answered: {out}"
    );

    // A slow loris: a head that never ends. Others are served meanwhile...
    let mut slow = TcpStream::connect(http).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for _ in 0..3 {
        assert_eq!(http_get(http, "/healthz").status, 200);
    }
    // ...and the server hangs up on it (after its header timeout; bounded here).
    slow.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest)
        .expect("the slow connection is closed by the server, not left open");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains(" 200 "),
        "no page for an unfinished head: {rest}"
    );
    assert_eq!(http_get(http, "/healthz").status, 200);
}
