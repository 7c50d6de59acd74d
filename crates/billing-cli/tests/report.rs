//! `billing report` ranges are exact: bounds apply to the usage, not to bucket starts, dates
//! are accepted, a bound inside an hour or an inverted range is refused with a message that
//! says what to use instead, and tables and CSV end with a totals row; `billing conflicts` and
//! `billing quarantine list|show` show what the store kept aside.

mod common;

use std::process::Command;

use common::*;

fn report_fails(store: &str, args: &[&str]) -> String {
    let mut c = Command::new(billing_bin());
    c.arg("report").arg("--store").arg(store).args(args);
    let out = run("billing report", c);
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        out.stdout
    );
    assert!(out.stdout.is_empty(), "nothing printed: {}", out.stdout);
    out.stderr
}

#[test]
fn report_ranges_cover_the_usage_inside_them_and_refuse_what_they_cannot_cover_exactly() {
    let dir = temp_dir("report-range");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let server = ingest_sqlite(&db, "127.0.0.1:0", &[]);
    send_event(server.addr, "a", "i-1", "samples=1", "2026-11-30T23:30:00Z");
    send_event(server.addr, "b", "i-1", "samples=2", "2026-12-01T09:59:59Z");
    send_event(server.addr, "c", "i-1", "samples=4", "2026-12-01T10:00:00Z");
    send_event(server.addr, "d", "i-1", "samples=8", "2026-12-01T23:59:00Z");
    send_event(
        server.addr,
        "e",
        "i-1",
        "samples=16",
        "2026-12-02T00:00:00Z",
    );

    // The day of 2026-12-01 starts before --from: it holds its usage from 10:00 on.
    let day = report(
        &store,
        &[
            "--from",
            "2026-12-01T10:00:00Z",
            "--by",
            "day",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        day,
        "instance,amount_type,bucket,value,records\n\
         i-1,samples,2026-12-01T00:00:00Z,12,2\n\
         i-1,samples,2026-12-02T00:00:00Z,16,1\n\
         (all),samples,total,28,3\n"
    );
    // Dates are midnights, UTC; --to is exclusive.
    let dates = report(
        &store,
        &[
            "--from",
            "2026-12-01",
            "--to",
            "2026-12-02",
            "--by",
            "month",
            "--format",
            "csv",
        ],
    );
    assert!(
        dates.ends_with("i-1,samples,2026-12-01T00:00:00Z,14,3\n(all),samples,total,14,3\n"),
        "{dates}"
    );
    // One row per instance over the range, named by its first hour with usage.
    let per_instance = report(
        &store,
        &[
            "--from",
            "2026-12-01",
            "--by",
            "instance",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        per_instance,
        "instance,amount_type,bucket,value,records\n\
         i-1,samples,2026-12-01T09:00:00Z,30,4\n\
         (all),samples,total,30,4\n"
    );
    // The table has the same totals row.
    let table = report(&store, &["--by", "month"]);
    let last = table.lines().last().unwrap();
    assert!(
        last.starts_with("(all)") && last.contains("total") && last.ends_with(" 31        5"),
        "{table}"
    );

    let inside = report_fails(&store, &["--from", "2026-12-01T10:30:00Z", "--by", "day"]);
    assert!(
        inside.contains("--from 2026-12-01T10:00:00Z or --from 2026-12-01T11:00:00Z"),
        "names the hour boundaries around the bound: {inside}"
    );
    let inverted = report_fails(&store, &["--from", "2026-12-02", "--to", "2026-12-01"]);
    assert!(inverted.contains("empty range"), "{inverted}");
    let bad = report_fails(&store, &["--from", "yesterday"]);
    assert!(
        bad.contains("2026-12-01T10:00:00Z") && bad.contains("date"),
        "{bad}"
    );
}

#[test]
fn conflicts_and_quarantine_are_listed_and_shown_from_the_store() {
    let dir = temp_dir("lists");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let server = ingest_sqlite(&db, "127.0.0.1:0", &["--amount-types", "samples"]);
    send_event(server.addr, "k", "i-1", "samples=1", "2026-11-27T04:10:00Z");
    // The same key again with another amount: a conflict, not billed.
    send_event(server.addr, "k", "i-1", "samples=2", "2026-11-27T04:10:00Z");
    // A type outside --amount-types: acked, quarantined.
    send_event(
        server.addr,
        "q",
        "i-1",
        "node-seconds=3",
        "2026-11-27T04:10:00Z",
    );

    let list = |args: &[&str]| {
        let mut c = Command::new(billing_bin());
        c.args(args).arg("--store").arg(&store);
        let out = run("billing (lists)", c);
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
        out.stdout
    };
    let conflicts: serde_json::Value =
        serde_json::from_str(&list(&["conflicts", "--format", "json"])).unwrap();
    assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
    assert_eq!(conflicts[0]["unique_key"], "k:samples");
    assert_eq!(conflicts[0]["count"], 1);
    assert!(
        conflicts[0]["received_body"]
            .as_str()
            .unwrap()
            .contains('2')
    );
    let none: serde_json::Value = serde_json::from_str(&list(&[
        "conflicts",
        "--key",
        "other:samples",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(none, serde_json::json!([]));
    assert!(list(&["conflicts"]).contains("1 conflicting versions"));

    let quarantined: serde_json::Value =
        serde_json::from_str(&list(&["quarantine", "list", "--format", "json"])).unwrap();
    assert_eq!(quarantined.as_array().unwrap().len(), 1, "{quarantined}");
    let reason = quarantined[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("unknown_amount_type"), "{reason}");
    let csv = list(&[
        "quarantine",
        "list",
        "--reason",
        "unknown_amount",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert_eq!(
        list(&[
            "quarantine",
            "list",
            "--reason",
            "negative",
            "--format",
            "csv"
        ])
        .lines()
        .count(),
        1
    );
    let id = quarantined[0]["id"].to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&list(&["quarantine", "show", &id])).unwrap();
    assert_eq!(
        shown["raw"]["record"]["unique_key"], "q:node-seconds",
        "{shown}"
    );

    let mut c = Command::new(billing_bin());
    c.args(["quarantine", "show", "999999", "--store", &store]);
    let out = run("billing quarantine show", c);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no quarantined entry with id 999999"),
        "{}",
        out.stderr
    );
}
