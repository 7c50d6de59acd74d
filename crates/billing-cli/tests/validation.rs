//! `billing ingest` as a real process against records no billing system should accept: each
//! validation rule quarantines its record with its own reason and counter while the rest of
//! the chunk is stored and acked; each policy default can be overridden by its flag; and a key
//! full of control characters cannot forge a log line.
//!
//! Times are relative to now (the window is relative to the ingester's clock), so nothing here
//! depends on today's date.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;

/// A field value of a hand-written record.
enum F<'a> {
    S(&'a str),
    I(i64),
    Map(&'a [(&'a str, &'a str)]),
}

fn record(fields: &[(&str, F<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    forward::encode::write_map_len(&mut out, fields.len() as u32);
    for (k, v) in fields {
        forward::encode::write_str(&mut out, k.as_bytes());
        match v {
            F::S(s) => forward::encode::write_str(&mut out, s.as_bytes()),
            F::I(i) => forward::encode::write_int(&mut out, *i),
            F::Map(m) => {
                forward::encode::write_map_len(&mut out, m.len() as u32);
                for (mk, mv) in *m {
                    forward::encode::write_str(&mut out, mk.as_bytes());
                    forward::encode::write_str(&mut out, mv.as_bytes());
                }
            }
        }
    }
    out
}

/// A record with every field right, `key` and the overrides aside.
fn rec(key: &str, overrides: &[(&str, F<'_>)]) -> Vec<u8> {
    let now = billing_schema::rfc3339(SystemTime::now());
    let unique = format!("{key}:samples");
    let mut fields: Vec<(&str, F<'_>)> = vec![
        ("amount_type", F::S("samples")),
        ("amount_value", F::I(5)),
        ("internal_instance_id", F::S("i-1")),
        ("metadata", F::Map(&[("source", "test")])),
        ("occurred_at", F::S(&now)),
        ("unique_key", F::S(&unique)),
    ];
    for (name, value) in overrides {
        let slot = fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("known field");
        slot.1 = match value {
            F::S(s) => F::S(s),
            F::I(i) => F::I(*i),
            F::Map(m) => F::Map(m),
        };
    }
    record(&fields)
}

/// Sends one PackedForward chunk of `records` and returns once it is acked.
fn send_acked(addr: SocketAddr, records: &[Vec<u8>], chunk: &str) {
    let mut entries = Vec::new();
    for r in records {
        forward::encode::write_entry(&mut entries, forward::EventTime::now(), r);
    }
    let options = forward::Options {
        size: Some(records.len() as u64),
        chunk: Some(chunk.as_bytes().to_vec()),
        ..Default::default()
    };
    let mut frame = Vec::new();
    forward::encode::write_packed_forward(&mut frame, "billing", &entries, &options);
    send_expect_ack(addr, &frame, chunk);
}

fn ingest(db: &std::path::Path, extra: &[&str]) -> (Server, SocketAddr, SocketAddr) {
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    // The common helper widens the window for fixed-date tests; these use relative times and
    // restore the defaults unless the test overrides them.
    args.extend(["--max-event-age", "35d"]);
    args.extend(extra);
    let mut server = ingest_sqlite(db, "127.0.0.1:0", &args);
    let metrics = server.wait_line("metrics on ").parse().unwrap();
    let addr = server.addr;
    (server, addr, metrics)
}

fn quarantined(metrics: SocketAddr, reason: &str) -> f64 {
    let body = http_get(metrics, "/metrics").body;
    sample(
        &body,
        &format!("billing_ingest_quarantined_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("no counter for {reason} in:\n{body}"))
}

fn rfc(t: SystemTime) -> String {
    billing_schema::rfc3339(t)
}

#[test]
fn each_validation_rule_quarantines_its_record_with_its_reason_and_the_chunk_is_acked() {
    let dir = temp_dir("rules");
    let db = dir.path().join("billing.db");
    let (mut server, addr, metrics) = ingest(&db, &[]);
    let old = rfc(SystemTime::now() - Duration::from_secs(36 * 86_400));
    let ahead = rfc(SystemTime::now() + Duration::from_secs(3600));
    let big = "x".repeat(70 * 1024);
    let big_md = [("blob", big.as_str())];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "negative_amount",
            rec("neg", &[("amount_value", F::I(-1_000_000))]),
        ),
        (
            "empty_field",
            rec("noinst", &[("internal_instance_id", F::S(""))]),
        ),
        (
            "invalid_amount_type",
            rec("t1", &[("amount_type", F::S("Bad Type!"))]),
        ),
        ("blank_key", rec("blank", &[("unique_key", F::S(" "))])),
        (
            "too_old",
            rec("old", &[("occurred_at", F::S("0001-01-01T00:00:00Z"))]),
        ),
        ("too_old", rec("old2", &[("occurred_at", F::S(&old))])),
        (
            "in_future",
            rec("fut", &[("occurred_at", F::S("9999-12-31T23:59:59Z"))]),
        ),
        ("in_future", rec("fut2", &[("occurred_at", F::S(&ahead))])),
        (
            "metadata_too_large",
            rec("md", &[("metadata", F::Map(&big_md))]),
        ),
    ];
    let mut chunk = vec![rec("good", &[])];
    chunk.extend(cases.iter().map(|(_, r)| r.clone()));
    send_acked(addr, &chunk, "mixed");

    let store = format!("sqlite:{}", db.display());
    let s = summary(&store);
    assert_eq!(s["records"], 1, "only the good record is billable: {s}");
    assert_eq!(s["quarantined"], cases.len() as i64, "{s}");
    for reason in [
        "negative_amount",
        "empty_field",
        "invalid_amount_type",
        "blank_key",
        "metadata_too_large",
    ] {
        assert_eq!(quarantined(metrics, reason), 1.0, "{reason}");
    }
    assert_eq!(quarantined(metrics, "too_old"), 2.0);
    assert_eq!(quarantined(metrics, "in_future"), 2.0);
    assert_eq!(
        quarantined(metrics, "unknown_amount_type"),
        0.0,
        "listed from the start"
    );
    // One summary line for the frame, not one per record.
    server.kill();
    let log = server.stderr();
    assert_eq!(
        log.matches("invalid records quarantined").count(),
        1,
        "{log}"
    );
    assert!(log.contains("negative_amount=1"), "{log}");
}

#[test]
fn each_policy_flag_overrides_its_default() {
    let dir = temp_dir("policy");
    let db = dir.path().join("billing.db");
    let (_server, addr, metrics) = ingest(
        &db,
        &[
            "--allow-negative",
            "--max-event-age",
            "40d",
            "--max-event-future",
            "2h",
            "--max-metadata-bytes",
            "100",
            "--amount-types",
            "samples,node-seconds",
        ],
    );
    let old = rfc(SystemTime::now() - Duration::from_secs(36 * 86_400));
    let ahead = rfc(SystemTime::now() + Duration::from_secs(3600));
    let md = [("k", "v".repeat(200))];
    let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send_acked(
        addr,
        &[
            rec("credit", &[("amount_value", F::I(-5))]),
            rec("late", &[("occurred_at", F::S(&old))]),
            rec("early", &[("occurred_at", F::S(&ahead))]),
            rec("md", &[("metadata", F::Map(&md))]),
            rec("gpu", &[("amount_type", F::S("gpu-seconds"))]),
        ],
        "policy",
    );
    let s = summary(&format!("sqlite:{}", db.display()));
    assert_eq!(s["records"], 3, "credit, late and early accepted: {s}");
    assert_eq!(quarantined(metrics, "metadata_too_large"), 1.0);
    assert_eq!(quarantined(metrics, "unknown_amount_type"), 1.0);
}

#[test]
fn a_key_with_control_characters_is_logged_escaped_and_forges_no_line() {
    let dir = temp_dir("escape");
    let db = dir.path().join("billing.db");
    let (mut server, addr, _) = ingest(&db, &[]);
    let forged = "k\n2026-12-03T00:00:00.000000Z  INFO billing: ingester stopped\u{1b}[2J";
    let key = format!("{forged}:samples");
    // Quarantined (negative), then a conflict: both log the key.
    send_acked(
        addr,
        &[rec(
            "",
            &[("unique_key", F::S(&key)), ("amount_value", F::I(-1))],
        )],
        "a",
    );
    send_acked(addr, &[rec("", &[("unique_key", F::S(&key))])], "b");
    send_acked(
        addr,
        &[rec(
            "",
            &[("unique_key", F::S(&key)), ("amount_value", F::I(6))],
        )],
        "c",
    );
    server.kill();
    let log = server.stderr();
    assert!(log.contains("conflict"), "the conflict is logged: {log}");
    assert!(log.contains("invalid records quarantined"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-03T00:00:00.000000Z"),
            "forged line: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "raw ESC in the log: {line:?}");
    }
    assert!(
        log.contains("\\n2026-12-03T00:00:00.000000Z"),
        "escaped newline: {log}"
    );
}
