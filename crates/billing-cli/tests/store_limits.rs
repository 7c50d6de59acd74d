//! The store's limits, against a real `billing ingest` process and `billing report`:
//! records of `i64::MAX` are stored, acked and summed exactly beyond 64 bits by day and month
//! (SQLite, and PostgreSQL unless `BILLING_TEST_POSTGRES=skip`), the quarantine table stops at
//! `--quarantine-max-rows` while every invalid entry is counted, and store files are created
//! 0600 under a umask of 022.
//!
//! No sleeps as synchronisation: readiness is the `listening on` line and every chunk's ack is
//! awaited on its socket before anything is read back.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use common::*;

const MAX: i128 = i64::MAX as i128;

/// One record's MessagePack map.
fn record(key: &str, instance: &str, value: i64, at: &str) -> Vec<u8> {
    use forward::encode::{write_int, write_map_len, write_str};
    let mut r = Vec::new();
    write_map_len(&mut r, 5);
    for (k, v) in [
        ("unique_key", key),
        ("internal_instance_id", instance),
        ("amount_type", "samples"),
        ("occurred_at", at),
    ] {
        write_str(&mut r, k.as_bytes());
        write_str(&mut r, v.as_bytes());
    }
    write_str(&mut r, b"amount_value");
    write_int(&mut r, value);
    r
}

/// A record whose `amount_value` is a string: quarantined (`wrong_type`).
fn invalid(key: &str) -> Vec<u8> {
    use forward::encode::{write_map_len, write_str};
    let mut r = Vec::new();
    write_map_len(&mut r, 5);
    for (k, v) in [
        ("unique_key", key),
        ("internal_instance_id", "i-7"),
        ("amount_type", "samples"),
        ("amount_value", "lots"),
        ("occurred_at", "2026-11-27T04:00:00Z"),
    ] {
        write_str(&mut r, k.as_bytes());
        write_str(&mut r, v.as_bytes());
    }
    r
}

/// Sends `records` as one Forward-mode chunk and insists on its ack.
fn send_acked(addr: SocketAddr, records: &[Vec<u8>], chunk: &str) {
    let mut entries = Vec::new();
    for r in records {
        forward::encode::write_entry(&mut entries, forward::EventTime::now(), r);
    }
    let options = forward::Options {
        chunk: Some(chunk.as_bytes().to_vec()),
        ..Default::default()
    };
    let mut frame = Vec::new();
    forward::encode::write_forward(
        &mut frame,
        "billing",
        &entries,
        records.len() as u32,
        &options,
    );
    send_expect_ack(addr, &frame, chunk);
}

/// `billing ingest --store STORE EXTRA...` on an ephemeral port, through `sh` with umask 022.
fn ingest(store: &str, extra: &[&str]) -> Server {
    let mut c = Command::new("sh");
    c.args(["-c", "umask 022 && exec \"$0\" \"$@\"", billing_bin()])
        .args(["ingest", "--listen", "127.0.0.1:0", "--store", store])
        .args(["--max-event-age", "36500d"])
        .args(extra);
    Server::spawn("billing ingest", c)
}

#[derive(Debug, PartialEq)]
struct Row {
    instance: String,
    bucket: String,
    value: i128,
    records: i64,
}

/// `billing report --by BY --format csv`, parsed (values as `i128`); its last line, the
/// totals row of the one amount type, must be the exact sum of the others.
fn usage(store: &str, by: &str) -> Vec<Row> {
    let out = report(store, &["--by", by, "--format", "csv"]);
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("instance,amount_type,bucket,value,records"),
        "{out}"
    );
    let total = lines.pop().expect("a totals row");
    let rows: Vec<Row> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l}");
            Row {
                instance: f[0].into(),
                bucket: f[2].into(),
                value: f[3].parse().unwrap_or_else(|e| panic!("{l}: {e}")),
                records: f[4].parse().unwrap(),
            }
        })
        .collect();
    let sum: i128 = rows.iter().map(|r| r.value).sum();
    let records: i64 = rows.iter().map(|r| r.records).sum();
    assert_eq!(
        total,
        format!("(all),samples,total,{sum},{records}"),
        "{out}"
    );
    rows
}

fn row(instance: &str, bucket: &str, value: i128, records: i64) -> Row {
    Row {
        instance: instance.into(),
        bucket: bucket.into(),
        value,
        records,
    }
}

/// Records of `i64::MAX` in chunks with another instance's, then more of the same bucket:
/// all acked, and the reports sum beyond 64 bits for that instance and exactly for the other.
fn extreme_amounts_are_stored_acked_and_reported_exactly(store: &str) {
    let server = ingest(store, &[]);
    let addr = server.addr;
    send_acked(
        addr,
        &[
            record("max", "i-big", i64::MAX, "2026-11-27T04:10:00Z"),
            record("s1", "i-small", 5, "2026-11-27T04:20:00Z"),
        ],
        "c1",
    );
    send_acked(
        addr,
        &[
            record("b1", "i-big", 1, "2026-11-27T04:30:00Z"),
            record("s2", "i-small", 6, "2026-11-27T05:40:00Z"),
        ],
        "c2",
    );
    send_acked(
        addr,
        &[
            record("b2", "i-big", 2, "2026-11-27T04:50:00Z"),
            record("max2", "i-big", i64::MAX, "2026-11-28T07:00:00Z"),
        ],
        "c3",
    );
    assert_eq!(
        usage(store, "day"),
        vec![
            row("i-big", "2026-11-27T00:00:00Z", MAX + 3, 3),
            row("i-big", "2026-11-28T00:00:00Z", MAX, 1),
            row("i-small", "2026-11-27T00:00:00Z", 11, 2),
        ]
    );
    assert_eq!(
        usage(store, "month"),
        vec![
            row("i-big", "2026-11-01T00:00:00Z", 2 * MAX + 3, 4),
            row("i-small", "2026-11-01T00:00:00Z", 11, 2),
        ]
    );
    // JSON: a plain number with every digit.
    let json = report(store, &["--by", "month", "--format", "json"]);
    assert!(
        json.contains(&format!("\"value\":{},\"records\":4}}", 2 * MAX + 3)),
        "{json}"
    );
    assert!(json.contains("\"value\":11,"), "{json}");
    let table = report(store, &["--by", "month"]);
    assert!(table.contains(&(2 * MAX + 3).to_string()), "{table}");
    let s = summary(store);
    assert_eq!(
        (&s["records"], &s["quarantined"]),
        (&6.into(), &0.into()),
        "{s}"
    );
    drop(server);
}

#[test]
fn sqlite_records_of_i64_max_are_acked_and_reported_exactly_by_day_and_month() {
    let dir = temp_dir("exact");
    let store = format!("sqlite:{}", dir.path().join("billing.db").display());
    extreme_amounts_are_stored_acked_and_reported_exactly(&store);
}

#[test]
fn postgres_records_of_i64_max_are_acked_and_reported_exactly_by_day_and_month() {
    let Some(schema) = PgSchema::new("exact") else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    extreme_amounts_are_stored_acked_and_reported_exactly(&schema.url);
}

#[test]
fn a_frame_of_50_invalid_records_is_acked_counted_and_only_10_rows_are_kept() {
    let dir = temp_dir("quarantine-bound");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let server = ingest(&store, &["--quarantine-max-rows", "10"]);
    let frame: Vec<Vec<u8>> = (0..50).map(|i| invalid(&format!("bad-{i}"))).collect();
    send_acked(server.addr, &frame, "invalid-50");
    let s = summary(&store);
    assert_eq!(
        (&s["received"], &s["records"], &s["quarantined"]),
        (&50.into(), &0.into(), &50.into()),
        "{s}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 10);
    // The first entries on the wire are the ones kept.
    let first: String = conn
        .query_row("SELECT raw FROM quarantine ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(first.contains("\"bad-0\""), "{first}");
    drop(server);

    // The same bound from the environment; the count survives the restart.
    let mut c = Command::new(billing_bin());
    c.env("BILLING_INGEST_QUARANTINE_MAX_ROWS", "12")
        .args(["ingest", "--listen", "127.0.0.1:0", "--store", &store])
        .args(["--max-event-age", "36500d"]);
    let server = Server::spawn("billing ingest", c);
    send_acked(server.addr, &frame[..5], "invalid-5");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 12);
    assert_eq!(summary(&store)["quarantined"], 55);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn store_files_are_created_readable_by_their_owner_only_under_umask_022() {
    let dir = temp_dir("modes");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let mut server = ingest(&store, &[]);
    send_acked(
        server.addr,
        &[record("a", "i-1", 1, "2026-11-27T04:10:00Z")],
        "c1",
    );
    // WAL mode: the -wal and -shm files exist while the ingester runs.
    for name in ["billing.db", "billing.db-wal", "billing.db-shm"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
    assert!(server.exited().is_none(), "{}", server.stderr());
    drop(server);

    let jsonl = dir.path().join("records.jsonl");
    let server = ingest(&format!("jsonl:{}", jsonl.display()), &[]);
    send_acked(
        server.addr,
        &[record("a", "i-1", 1, "2026-11-27T04:10:00Z")],
        "c1",
    );
    assert_eq!(mode(&jsonl), 0o600);
}

#[test]
fn ingest_help_shows_the_quarantine_bound() {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--help"]);
    let out = run("billing ingest --help", c);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("--quarantine-max-rows <N>")
            && out.stdout.contains("BILLING_INGEST_QUARANTINE_MAX_ROWS")
            && out.stdout.contains("1000000"),
        "{}",
        out.stdout
    );
}
