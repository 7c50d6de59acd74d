//! The usage dashboard in a real browser: headless Chromium renders `/` of a running
//! `billing ingest`, and the numbers in its DOM (read from `data-` attributes) equal
//! `billing report --format json` / `--summary` for the same period: totals per amount type,
//! the top instance of each type, and the duplicate, conflict and quarantine counts. A
//! screenshot is kept as `target/test-artifacts/dashboard.png`.
//!
//! Needs Debian's `chromium` (`bash scripts/test.sh` installs it); without it the test fails,
//! it never skips. No sleeps as synchronisation: sends return on the ack, Chromium's
//! `--dump-dom` returns once the page loaded (it has no script). Records carry fixed past
//! dates and the page is asked for an explicit period.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const PERIOD: &str = "from=2026-11-27&to=2026-11-29&by=hour";

/// Debian's Chromium, or a failure that says how to get it.
fn chromium() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "chromium is not installed: run `bash scripts/test.sh` from the repository root, which \
         installs it (apt-get install chromium), then run the tests again"
    );
}

/// Headless Chromium with a fresh profile, `args`, then `url`.
fn chromium_run(profile: &Path, args: &[&str], url: &str) -> Finished {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url);
    let out = run("chromium", c);
    assert!(
        out.status.success(),
        "chromium {args:?} {url} failed ({}): {}",
        out.status,
        out.stderr
    );
    out
}

/// The value of attribute `name` in the tag starting at `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let end = tag.find('>')?;
    let tag = &tag[..end];
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Every tag of the DOM that starts with `prefix` (e.g. `<tr class="total"`).
fn tags<'a>(dom: &'a str, prefix: &str) -> Vec<&'a str> {
    dom.match_indices(prefix).map(|(i, _)| &dom[i..]).collect()
}

fn num(v: &Value) -> i128 {
    v.to_string()
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {v}"))
}

#[test]
fn the_dashboard_in_chromium_shows_what_billing_report_says() {
    let dir = temp_dir("dashboard");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let mut server = ingest_sqlite(&db, "127.0.0.1:0", &["--http-listen", "127.0.0.1:0"]);
    let http: SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    let addr = server.addr;

    send_event(addr, "a", "i-1", "samples=5", "2026-11-27T04:10:00Z");
    send_event(addr, "b", "i-2", "samples=7", "2026-11-27T05:20:00Z");
    send_event(addr, "c", "i-2", "samples=4", "2026-11-28T10:00:00Z");
    send_event(addr, "d", "i-1", "cpu=3", "2026-11-27T06:00:00Z");
    send_event(addr, "e", "i-3", "cpu=30", "2026-11-28T23:59:59Z");
    send_event(
        addr,
        "f",
        "<script>alert(1)</script>",
        "samples=1",
        "2026-11-27T07:00:00Z",
    );
    // Outside the period: not in the totals.
    send_event(addr, "g", "i-9", "samples=1000", "2026-11-20T00:00:00Z");
    // A duplicate, a conflict, a quarantined entry.
    send_event(addr, "a", "i-1", "samples=5", "2026-11-27T04:10:00Z");
    send_event(addr, "b", "i-2", "samples=8", "2026-11-27T05:20:00Z");
    send_invalid_record(addr, "i-1", "2026-11-27T04:00:00Z");

    let profile = temp_dir("dashboard-chromium");
    let url = format!("http://{http}/?{PERIOD}");
    let dom = chromium_run(profile.path(), &["--dump-dom"], &url).stdout;
    assert!(
        dom.contains("id=\"totals\""),
        "no totals table in the DOM:\n{dom}"
    );

    // What billing report says for the same period.
    let usage: Value = serde_json::from_str(&report(
        &store,
        &[
            "--from",
            "2026-11-27",
            "--to",
            "2026-11-29",
            "--format",
            "json",
        ],
    ))
    .unwrap();
    let mut totals: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    let mut per_instance: BTreeMap<(String, String), i128> = BTreeMap::new();
    for row in usage.as_array().unwrap() {
        let t = row["amount_type"].as_str().unwrap().to_string();
        let i = row["instance"].as_str().unwrap().to_string();
        let slot = totals.entry(t.clone()).or_default();
        slot.0 += num(&row["value"]);
        slot.1 += num(&row["records"]);
        *per_instance.entry((t, i)).or_default() += num(&row["value"]);
    }
    assert_eq!(totals.get("samples"), Some(&(17, 4)), "report: {usage}");

    // Totals per amount type.
    let shown: BTreeMap<String, (i128, i128)> = tags(&dom, "<tr class=\"total\"")
        .into_iter()
        .map(|t| {
            let v = |n| attr(t, n).unwrap().parse::<i128>().unwrap();
            (
                attr(t, "data-amount-type").unwrap().to_string(),
                (v("data-value"), v("data-records")),
            )
        })
        .collect();
    assert_eq!(shown, totals, "dashboard totals vs billing report");

    // The top instance of each amount type.
    for t in totals.keys() {
        let want = per_instance
            .iter()
            .filter(|((ty, _), _)| ty == t)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.1.cmp(&a.0.1)))
            .map(|((_, i), v)| (i.clone(), *v))
            .unwrap();
        let list = tags(
            &dom,
            &format!("<ol class=\"top-instances\" data-amount-type=\"{t}\""),
        );
        assert_eq!(list.len(), 1, "one top list for {t}");
        let first = &list[0][list[0].find("<li").unwrap()..];
        let got = (
            attr(first, "data-instance").unwrap().to_string(),
            attr(first, "data-value").unwrap().parse::<i128>().unwrap(),
        );
        assert_eq!(got, want, "top instance of {t}");
    }

    // Store counts equal the summary.
    let summary = summary(&store);
    for (id, key) in [
        ("count-duplicates", "duplicates"),
        ("count-conflicts", "conflicts"),
        ("count-quarantined", "quarantined"),
        ("count-records", "records"),
    ] {
        let tag = tags(&dom, &format!("id=\"{id}\""));
        let count: i64 = attr(&format!(" {}", tag[0]), "data-count")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(count, summary[key].as_i64().unwrap(), "{id}");
        assert!(count > 0, "{id} is exercised");
    }
    // One chart per amount type, one bar per hour of the two days.
    assert_eq!(tags(&dom, "<rect class=\"bar\"").len(), 2 * 48, "bars");
    // The instance id is text, not an element.
    assert!(!dom.contains("<script"), "a record's string became markup");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // The lists behind the counts.
    let conflicts = chromium_run(
        profile.path(),
        &["--dump-dom"],
        &format!("http://{http}/conflicts"),
    )
    .stdout;
    assert!(conflicts.contains("data-key=\"b:samples\""), "{conflicts}");
    let quarantine = chromium_run(
        profile.path(),
        &["--dump-dom"],
        &format!("http://{http}/quarantine"),
    )
    .stdout;
    assert!(
        quarantine.contains("data-key=\"bad:samples\""),
        "{quarantine}"
    );

    // A screenshot for people, kept with the build.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium_run(
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
            "--hide-scrollbars",
        ],
        &url,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.len() > 1000, "screenshot is {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let _ = server.wait_stdout("nothing", |_| true);
}
