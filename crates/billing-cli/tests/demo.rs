//! `billing demo`, run as the real binary with small parameters: it must exit 0 only when every
//! accepted event was stored exactly once through retried duplicates and an ingester restart,
//! and exit non-zero when the ingester loses a record it acknowledged.
//!
//! Each run is a child process that ends by itself (the demo bounds its own waits); nothing
//! here sleeps or polls.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn billing(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_billing"))
        .args(args)
        .output()
        .expect("billing runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A small day: 8 instances x 2 hours x 12 reports = up to 192 events, with retries and a
/// restart; quick in a debug build.
const SMALL: &[&str] = &[
    "demo",
    "--instances",
    "8",
    "--hours",
    "2",
    "--seed",
    "7",
    "--retry-every",
    "20",
    "--downtime",
    "50ms",
];

fn demo(extra: &[&str]) -> Run {
    let args: Vec<&str> = SMALL.iter().chain(extra).copied().collect();
    billing(&args)
}

/// `1,234` → 1234.
fn number(s: &str) -> i64 {
    s.trim_matches(|c: char| !c.is_ascii_digit())
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("{s:?} is not a number: {e}"))
}

/// The number right after `word` in `line`.
fn after(line: &str, word: &str) -> i64 {
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == word)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
    number(
        words
            .next()
            .unwrap_or_else(|| panic!("nothing after {word:?} in {line:?}")),
    )
}

/// `(type, accepted sum, accepted records, stored sum, stored records, verdict)` per
/// `reconcile` line.
fn reconcile_lines(stdout: &str) -> Vec<(String, i64, i64, i64, i64, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("reconcile "))
        .map(|l| {
            let (ty, rest) = l.split_once(": ").expect("type: ...");
            let words: Vec<&str> = rest.split_whitespace().collect();
            // accepted S in R records = stored S in R records: ok
            (
                ty.to_string(),
                number(words[1]),
                number(words[3]),
                number(words[7]),
                number(words[9]),
                words.last().expect("verdict").to_string(),
            )
        })
        .collect()
}

fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
}

#[test]
fn demo_reconciles_through_duplicates_and_a_restart_and_keeps_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let run = demo(&["--db", db.to_str().unwrap()]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let out = &run.stdout;

    let lines = reconcile_lines(out);
    let types: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        types,
        ["container-seconds", "node-seconds", "samples"],
        "{out}"
    );
    for (ty, accepted, accepted_records, stored, stored_records, verdict) in &lines {
        assert!(*accepted > 0 && *accepted_records > 0, "{ty}: {out}");
        assert_eq!(accepted, stored, "{ty}: {out}");
        assert_eq!(accepted_records, stored_records, "{ty}: {out}");
        assert_eq!(verdict, "ok", "{ty}: {out}");
    }

    let dups = line(out, "duplicates: ");
    let re_added = number(dups.split_whitespace().nth(1).unwrap());
    assert!(re_added > 0, "{dups}");
    let removed = after(dups, "removed");
    let re_added_records = number(dups.split_whitespace().nth(3).unwrap());
    assert!(removed >= re_added_records, "{dups}");

    let restart = line(out, "ingester restarted after ");
    assert!(restart.contains("same port and store"), "{restart}");
    assert!(
        out.contains("dropped: 0 (stopping 0, buffer_full 0"),
        "{out}"
    );
    assert!(
        out.contains("reconciliation ok"),
        "stdout:\n{out}\nstderr:\n{}",
        run.stderr
    );
    // Compact: a screenful.
    assert!(out.lines().count() < 45, "{out}");

    // --db keeps the store; `billing report` reads the same totals from it.
    assert!(db.exists());
    let stored_records: i64 = lines.iter().map(|l| l.4).sum();
    let summary = billing(&[
        "report",
        "--store",
        &format!("sqlite:{}", db.display()),
        "--summary",
        "--format",
        "json",
    ]);
    assert_eq!(summary.code, Some(0), "{}", summary.stderr);
    let summary: serde_json::Value = serde_json::from_str(&summary.stdout).unwrap();
    assert_eq!(summary["records"], stored_records, "{summary}");
    assert_eq!(summary["duplicates"], removed, "{summary}");
}

#[test]
fn the_same_seed_gives_the_same_usage() {
    let a = demo(&[]);
    let b = demo(&[]);
    assert_eq!(a.code, Some(0), "{}\n{}", a.stdout, a.stderr);
    assert_eq!(b.code, Some(0), "{}\n{}", b.stdout, b.stderr);
    let a = reconcile_lines(&a.stdout);
    assert_eq!(a, reconcile_lines(&b.stdout));
    let other = demo(&["--seed", "8"]);
    assert_ne!(a, reconcile_lines(&other.stdout));
}

#[test]
fn a_record_acked_but_not_stored_fails_reconciliation() {
    let run = demo(&["--fault-lose-record"]);
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let lines = reconcile_lines(&run.stdout);
    let bad: Vec<_> = lines.iter().filter(|l| l.5 == "MISMATCH").collect();
    assert_eq!(bad.len(), 1, "{}", run.stdout);
    let (ty, accepted, accepted_records, stored, stored_records, _) = bad[0];
    assert_eq!(ty, "container-seconds", "{}", run.stdout);
    assert_eq!(*stored_records, accepted_records - 1, "{}", run.stdout);
    assert!(stored < accepted, "{}", run.stdout);
    assert!(
        run.stderr.contains("reconciliation failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("reconciliation ok"), "{}", run.stdout);
}

#[test]
fn an_existing_db_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("taken.db");
    std::fs::write(&db, b"").unwrap();
    let run = demo(&["--db", db.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stderr.contains("exists"), "{}", run.stderr);
    assert!(Path::new(&db).exists());
}
