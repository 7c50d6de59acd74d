//! `billing report --key` and `billing quarantine release`, on real `billing` processes, each
//! behaviour on a SQLite file and on PostgreSQL (its own schema, dropped at the end; skipped
//! with a printed reason when `BILLING_TEST_POSTGRES=skip` or PostgreSQL does not answer).
//!
//! Event times are relative to the clock (whole seconds, hours back), never fixed dates, so
//! the validation window means the same whatever day the tests run. Every send is acked
//! before the next step (`send_event`), and every `billing` command has exited before its
//! output is read: nothing waits on time.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// `hours` hours before now, on a whole second, as RFC 3339.
fn hours_ago(hours: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    billing_schema::rfc3339(UNIX_EPOCH + Duration::from_secs(now - hours * 3600))
}

/// `billing ARGS... --store STORE`, which must succeed; its stdout.
fn billing_ok(store: &str, args: &[&str]) -> String {
    let mut c = Command::new(billing_bin());
    c.args(args).arg("--store").arg(store);
    let out = run("billing", c);
    assert!(
        out.status.success(),
        "billing {args:?} failed ({}): {}",
        out.status,
        out.stderr
    );
    out.stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `billing quarantine release --store STORE ARGS... --format json`, parsed.
fn release(store: &str, args: &[&str]) -> Value {
    let mut all = vec!["quarantine", "release"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    json(&billing_ok(store, &all))
}

/// The usage totals per amount type over the whole store: `{type: (value, records)}`.
fn totals(store: &str) -> std::collections::BTreeMap<String, (i64, i64)> {
    let rows = json(&report(store, &["--by", "instance", "--format", "json"]));
    let mut out = std::collections::BTreeMap::new();
    for r in rows.as_array().unwrap() {
        let t: &mut (i64, i64) = out
            .entry(r["amount_type"].as_str().unwrap().to_string())
            .or_default();
        t.0 += r["value"].as_i64().unwrap();
        t.1 += r["records"].as_i64().unwrap();
    }
    out
}

fn quarantine(store: &str) -> Value {
    json(&billing_ok(
        store,
        &["quarantine", "list", "--format", "json"],
    ))
}

// ---------------------------------------------------------------------------------------------
// billing report --key
// ---------------------------------------------------------------------------------------------

/// Sends `order-17` three times with one body and once with another, then reads the key back.
fn key_lookup_shows_the_record_its_duplicates_and_a_conflict(
    store: &str,
    addr: SocketAddr,
    http: Option<SocketAddr>,
) {
    let at = hours_ago(1);
    for _ in 0..3 {
        send_event(addr, "order-17", "i-1", "samples=5", &at);
    }
    send_event(addr, "order-17", "i-1", "samples=6", &at);

    let text = report(store, &["--key", "order-17:samples", "--format", "json"]);
    let shown = json(&text);
    let record = &shown["record"];
    assert_eq!(shown["unique_key"], "order-17:samples", "{shown}");
    assert_eq!(
        (
            &record["instance"],
            &record["amount_type"],
            &record["value"],
            &record["occurred_at"]
        ),
        (
            &Value::from("i-1"),
            &Value::from("samples"),
            &Value::from(5),
            &Value::from(at.as_str())
        ),
        "{shown}"
    );
    assert!(record["stored_at"].is_string(), "{shown}");
    assert_eq!(record["duplicates"], 2, "two identical repeats: {shown}");
    assert!(record["last_duplicate_at"].is_string(), "{shown}");
    let conflicts = shown["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{shown}");
    assert_eq!(conflicts[0]["count"], 1);
    assert_eq!(conflicts[0]["received_body"]["value"], 6, "{shown}");
    assert!(conflicts[0]["first_seen"].is_string(), "{shown}");

    // The same in CSV (one line per version) and in a table.
    let csv = report(store, &["--key", "order-17:samples", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with(&format!("order-17:samples,stored,i-1,samples,5,{at},"))
            && lines[1].ends_with(",2"),
        "{csv}"
    );
    assert!(
        lines[2].starts_with(&format!("order-17:samples,conflict,i-1,samples,6,{at},"))
            && lines[2].ends_with(",1"),
        "{csv}"
    );
    let table = report(store, &["--key", "order-17:samples"]);
    assert!(table.contains("duplicates   2 (last "), "{table}");
    assert!(table.contains("conflicts    1"), "{table}");

    // The HTTP API answers the same JSON, byte for byte.
    if let Some(http) = http {
        let api = http_get(http, "/api/v1/key?key=order-17:samples");
        assert_eq!((api.status, api.body.as_str()), (200, text.as_str()));
        assert_eq!(http_get(http, "/api/v1/key?key=nope:samples").status, 404);
    }
}

/// A key the store does not know: exit 1, nothing on stdout, one line on stderr.
fn unknown_key_exits_1_with_one_line(store: &str) {
    for (key, hint) in [("nope:samples", false), ("order-17", true)] {
        let mut c = Command::new(billing_bin());
        c.args(["report", "--key", key, "--store", store]);
        let out = run("billing report --key", c);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{key}: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{key}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("no record or conflict with unique key \"{key}\"")),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.contains("KEY:TYPE"), hint, "{}", out.stderr);
    }
}

#[test]
fn sqlite_key_lookup_shows_the_stored_record_three_sends_as_two_duplicates_and_the_conflict() {
    let dir = temp_dir("key-lookup");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let mut server = ingest_sqlite(&db, "127.0.0.1:0", &["--http-listen", "127.0.0.1:0"]);
    let http: SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    key_lookup_shows_the_record_its_duplicates_and_a_conflict(&store, server.addr, Some(http));
    unknown_key_exits_1_with_one_line(&store);
}

#[test]
fn postgres_key_lookup_shows_the_stored_record_three_sends_as_two_duplicates_and_the_conflict() {
    let Some(pg) = PgSchema::reachable("key_lookup") else {
        return;
    };
    let server = ingest_store(&pg.url, &[]);
    key_lookup_shows_the_record_its_duplicates_and_a_conflict(&pg.url, server.addr, None);
    unknown_key_exits_1_with_one_line(&pg.url);
}

// ---------------------------------------------------------------------------------------------
// billing quarantine release
// ---------------------------------------------------------------------------------------------

/// The policy the ingester ran with: a 2-hour window, samples only.
const NARROW: &[&str] = &["--max-event-age", "2h", "--amount-types", "samples"];
/// The widened policy: a 12-hour window, samples only.
const WIDE: &[&str] = &["--max-event-age", "12h", "--amount-types", "samples"];

fn with(first: &[&'static str], then: &[&'static str]) -> Vec<&'static str> {
    first.iter().chain(then).copied().collect()
}

/// Under `NARROW`: one stored record, then six quarantined entries: three too old for 2 hours
/// but not for 12 (`late-a` twice with one body, `late-b`), one too old for 12 hours, one of
/// a type not billed, one with a string amount (never valid). `WIDE` releases exactly the
/// three late ones: 10 + 20 samples stored once, the repeat of `late-a` a duplicate.
fn release_stores_exactly_the_now_valid_records_once(store: &str, addr: SocketAddr) {
    send_event(addr, "fresh", "i-1", "samples=1", &hours_ago(1));
    let late_a = hours_ago(5);
    send_event(addr, "late-a", "i-1", "samples=10", &late_a);
    send_event(addr, "late-a", "i-1", "samples=10", &late_a);
    send_event(addr, "late-b", "i-2", "samples=20", &hours_ago(6));
    send_event(addr, "ancient", "i-1", "samples=100", &hours_ago(20 * 24));
    send_event(addr, "gpu", "i-1", "node-seconds=7", &hours_ago(1));
    send_invalid_record(addr, "i-1", &hours_ago(1));

    let before = summary(store);
    assert_eq!(
        (
            &before["received"],
            &before["records"],
            &before["quarantined"]
        ),
        (&Value::from(7), &Value::from(1), &Value::from(6)),
        "{before}"
    );
    assert_eq!(totals(store)["samples"], (1, 1));
    let listed = quarantine(store);
    assert_eq!(listed.as_array().unwrap().len(), 6, "{listed}");

    // A dry run says what a release would do, and changes nothing.
    let dry = release(store, &with(WIDE, &["--dry-run"]));
    let expected = |dry_run: bool| {
        serde_json::json!({
            "dry_run": dry_run, "examined": 6, "released": 3, "stored": 2, "duplicates": 1,
            "conflicts": 0, "still_failing": 3,
            "still_failing_by_reason": {"too_old": 1, "unknown_amount_type": 1, "wrong_type": 1},
            "stored_amounts": {"samples": {"value": 30, "records": 2}},
        })
    };
    assert_eq!(dry, expected(true));
    assert_eq!(summary(store), before);
    assert_eq!(quarantine(store), listed);
    assert_eq!(totals(store)["samples"], (1, 1));
    let dry_table = billing_ok(store, &with(&["quarantine", "release", "--dry-run"], WIDE));
    assert!(
        dry_table.starts_with("dry run, nothing changed: would release 3 of 6"),
        "{dry_table}"
    );

    // The release stores exactly the three late records, once.
    assert_eq!(release(store, WIDE), expected(false));
    assert_eq!(totals(store)["samples"], (31, 3), "1 + 10 + 20");
    let after = summary(store);
    assert_eq!(
        (
            &after["received"],
            &after["records"],
            &after["duplicates"],
            &after["quarantined"],
            &after["released"]
        ),
        (
            &Value::from(7),
            &Value::from(3),
            &Value::from(1),
            &Value::from(6),
            &Value::from(3)
        ),
        "quarantined stays a count of arrivals; released counts the way out: {after}"
    );
    let late = json(&report(
        store,
        &["--key", "late-a:samples", "--format", "json"],
    ));
    assert_eq!(
        (&late["record"]["value"], &late["record"]["duplicates"]),
        (&Value::from(10), &Value::from(1)),
        "{late}"
    );
    // The others stay, with the reason of the current policy.
    let left = quarantine(store);
    let reasons: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{left}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("too_old") && r.contains("(43200 s)")),
        "the 12-hour window is named: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("unknown_amount_type")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("wrong_type")),
        "{reasons:?}"
    );

    // A second release stores nothing.
    let again = release(store, WIDE);
    assert_eq!(
        (
            &again["examined"],
            &again["released"],
            &again["still_failing"]
        ),
        (&Value::from(3), &Value::from(0), &Value::from(3)),
        "{again}"
    );
    assert_eq!(totals(store)["samples"], (31, 3));
    assert_eq!(summary(store), after);

    // Filters: by reason, then by id; each releases only what it names.
    let gpu = release(
        store,
        &[
            "--amount-types",
            "samples,node-seconds",
            "--reason",
            "unknown_amount_type",
        ],
    );
    assert_eq!(
        (&gpu["examined"], &gpu["stored"]),
        (&Value::from(1), &Value::from(1))
    );
    assert_eq!(totals(store)["node-seconds"], (7, 1));
    let ancient = left
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"].as_str().unwrap().starts_with("too_old"))
        .unwrap()["id"]
        .to_string();
    let by_id = release(store, &["--max-event-age", "30d", "--id", &ancient]);
    assert_eq!(
        (&by_id["examined"], &by_id["stored"]),
        (&Value::from(1), &Value::from(1)),
        "{by_id}"
    );
    assert_eq!(totals(store)["samples"], (131, 4));
    let last = quarantine(store);
    assert_eq!(last.as_array().unwrap().len(), 1, "{last}");
    assert!(
        last[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("wrong_type")
    );
}

#[test]
fn sqlite_release_after_widening_the_policy_stores_exactly_the_now_valid_records_once() {
    let dir = temp_dir("release");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let server = ingest_sqlite(&db, "127.0.0.1:0", NARROW);
    release_stores_exactly_the_now_valid_records_once(&store, server.addr);
}

#[test]
fn postgres_release_after_widening_the_policy_stores_exactly_the_now_valid_records_once() {
    let Some(pg) = PgSchema::reachable("release") else {
        return;
    };
    let server = ingest_store(&pg.url, NARROW);
    release_stores_exactly_the_now_valid_records_once(&pg.url, server.addr);
}
