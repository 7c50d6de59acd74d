//! The usage dashboard (`/`) and the `/conflicts` and `/quarantine` lists: server-side
//! rendered HTML, readable without JavaScript (the pages carry none), served from the binary.
//!
//! What `/` shows for a period (from/to, instance and type filters as a plain GET form):
//! - usage over time per amount type as an SVG bar chart (`svg.rs`), hour buckets for periods
//!   up to [`HOURLY_UP_TO_SECS`], day buckets beyond (or as `by=` says);
//! - the totals per amount type, the top instances per amount type and a table per instance
//!   and amount type;
//! - the store's counts of received, stored, duplicate, conflicting and quarantined entries
//!   (all time: the counters are not kept per period), linking to the lists.
//!
//! Invariants:
//! - the numbers come from the same query path as `billing report` ([`crate::AnyStore::usage`]
//!   with the same [`crate::UsageQuery`], totals by [`crate::totals`]), so the totals equal the
//!   report's for the same filters, digit for digit (exact `i128`, printed in full);
//! - without `from` and `to` in the query string the period is the last
//!   [`DEFAULT_PERIOD_SECS`] up to the end of the current hour (the form shows it); `from=`
//!   or `to=` given empty means unbounded, as `billing report` without the flag;
//! - every number a test or a script may read is also in a `data-` attribute (`data-value`,
//!   `data-records`, `data-count`, `data-instance`, `data-amount-type`), digits only;
//! - every string from the store or the request is escaped ([`esc`]); the lists are bounded
//!   ([`crate::MAX_LIST_ROWS`]), the chart to [`MAX_BARS`] buckets, the table to
//!   [`MAX_TABLE_ROWS`] rows (the totals always cover everything).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use super::html::{esc, page};
use super::params::Filters;
use super::state::HttpSurface;
use super::svg::bar_chart;
use crate::validate::{HOUR_SECONDS, rfc3339_secs};
use crate::{ConflictRow, Granularity, QuarantineRow, StoreError, Summary, UsageRow};

/// The dashboard's period when none is asked for: 7 days.
pub const DEFAULT_PERIOD_SECS: i64 = 7 * 24 * HOUR_SECONDS;
/// Periods up to this long are charted by the hour, longer ones by the day.
pub const HOURLY_UP_TO_SECS: i64 = 3 * 24 * HOUR_SECONDS;
/// Most bars of a chart (the last ones of the period are shown).
pub const MAX_BARS: i64 = 1000;
/// Most rows of the per-instance table.
pub const MAX_TABLE_ROWS: usize = 1000;
/// Rows a list page shows unless `limit=` says otherwise.
pub const DEFAULT_LIST_ROWS: usize = 200;

/// A rendered page and its HTTP status.
pub(crate) type Page = (u16, String);

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn status_of(e: &StoreError) -> u16 {
    match e {
        StoreError::Range(_) => 400,
        StoreError::Unsupported(_) => 501,
        _ => 500,
    }
}

fn error_page(title: &str, status: u16, message: &str, before: &str) -> Page {
    let body = format!(
        "{before}<section class=\"error\" id=\"error\"><strong>{}</strong></section>",
        esc(message)
    );
    (status, page(title, &body))
}

/// `/`: the usage dashboard for the filters in `pairs`, `now` deciding the default period.
pub(crate) async fn usage(s: &HttpSurface, pairs: &[(String, String)], now: SystemTime) -> Page {
    let mut filters = Filters::from_pairs(pairs);
    if !filters.names_range {
        let end = unix(now).div_euclid(HOUR_SECONDS) * HOUR_SECONDS + HOUR_SECONDS;
        filters.from = Some(rfc3339_secs(end - DEFAULT_PERIOD_SECS));
        filters.to = Some(rfc3339_secs(end));
    }
    let span = match (&filters.from, &filters.to) {
        (Some(f), Some(t)) => match (crate::parse_report_time(f), crate::parse_report_time(t)) {
            (Ok(f), Ok(t)) => Some(unix(t) - unix(f)),
            _ => None,
        },
        _ => None,
    };
    let default_by = match span {
        Some(s) if s <= HOURLY_UP_TO_SECS => Granularity::Hour,
        _ => Granularity::Day,
    };
    let form = form(&filters, default_by);
    let query = match filters.query(default_by) {
        Ok(q) if matches!(q.by, Granularity::Month | Granularity::Instance) => {
            return error_page(
                "Usage",
                400,
                "by: the dashboard charts hour or day buckets (billing report --by month or --by instance, or /api/v1/usage?by=month|instance, sums those)",
                &form,
            );
        }
        Ok(q) => q,
        Err(e) => return error_page("Usage", 400, &e, &form),
    };
    let rows = match s.store.usage(&query).await {
        Ok(r) => r,
        Err(e) => return error_page("Usage", status_of(&e), &e.to_string(), &form),
    };
    let summary = match s.store.summary().await {
        Ok(r) => r,
        Err(e) => return error_page("Usage", status_of(&e), &e.to_string(), &form),
    };
    let totals = match crate::totals(&rows) {
        Ok(t) => t,
        Err(e) => return error_page("Usage", 500, &e.to_string(), &form),
    };
    let bucket = if query.by == Granularity::Hour {
        HOUR_SECONDS
    } else {
        24 * HOUR_SECONDS
    };
    let range = (query.from.map(unix), query.to.map(unix));
    let body = render(&form, &rows, &totals, &summary, bucket, range);
    (200, page("Usage", &body))
}

/// The filter form, refilled with `f`.
fn form(f: &Filters, default_by: Granularity) -> String {
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let by = f.by.as_deref().unwrap_or(match default_by {
        Granularity::Hour => "hour",
        _ => "day",
    });
    let opt = |name: &str| {
        format!(
            "<option value=\"{name}\"{}>{name}</option>",
            if by == name { " selected" } else { "" }
        )
    };
    format!(
        "<section><form class=\"filters\" method=\"get\" action=\"/\">\
         <label>From (UTC hour or date)<input name=\"from\" id=\"from\" value=\"{}\" placeholder=\"2026-12-01\"></label>\
         <label>To (exclusive)<input name=\"to\" id=\"to\" value=\"{}\" placeholder=\"2026-12-08\"></label>\
         <label>Instance<input name=\"instance\" id=\"instance\" value=\"{}\" placeholder=\"all\"></label>\
         <label>Amount type<input name=\"type\" id=\"type\" value=\"{}\" placeholder=\"all\"></label>\
         <label>Buckets<select name=\"by\" id=\"by\">{}{}</select></label>\
         <button type=\"submit\">Show</button></form></section>",
        v(&f.from),
        v(&f.to),
        v(&f.instance),
        v(&f.amount_type),
        opt("hour"),
        opt("day"),
    )
}

fn render(
    form: &str,
    rows: &[UsageRow],
    totals: &[(String, i128, i64)],
    summary: &Summary,
    bucket: i64,
    (from, to): (Option<i64>, Option<i64>),
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(form);

    // Store counts (all time).
    out.push_str("<section><h2>Store (all time)</h2><div class=\"cards\">");
    for (id, label, n, link) in [
        ("received", "entries received", summary.received, None),
        ("records", "records stored", summary.records, None),
        ("duplicates", "duplicates", summary.duplicates, None),
        (
            "conflicts",
            "conflicting arrivals",
            summary.conflicts,
            Some("/conflicts"),
        ),
        (
            "quarantined",
            "quarantined",
            summary.quarantined,
            Some("/quarantine"),
        ),
    ] {
        let number = match link {
            Some(href) => format!("<a href=\"{href}\">{n}</a>"),
            None => n.to_string(),
        };
        let _ = write!(
            out,
            "<div class=\"card\" id=\"count-{id}\" data-count=\"{n}\"><span class=\"n\">{number}</span><span class=\"k\">{label}</span></div>"
        );
    }
    out.push_str("</div></section>");

    // Totals per amount type.
    out.push_str("<section><h2>Totals of the period</h2>");
    if totals.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-usage\">No usage in this period.</p>");
    } else {
        out.push_str("<table id=\"totals\"><thead><tr><th>Amount type</th><th class=\"num\">Total</th><th class=\"num\">Records</th></tr></thead><tbody>");
        for (t, value, records) in totals {
            let t = esc(t);
            let _ = write!(
                out,
                "<tr class=\"total\" data-amount-type=\"{t}\" data-value=\"{value}\" data-records=\"{records}\"><td>{t}</td><td class=\"num\">{value}</td><td class=\"num\">{records}</td></tr>"
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    // Charts per amount type.
    let mut series: BTreeMap<&str, BTreeMap<i64, i128>> = BTreeMap::new();
    for r in rows {
        let slot = series
            .entry(&r.amount_type)
            .or_default()
            .entry(r.bucket)
            .or_default();
        *slot = slot.saturating_add(r.value);
    }
    if !series.is_empty() {
        let lo_data = rows.iter().map(|r| r.bucket).min().unwrap_or(0);
        let hi_data = rows.iter().map(|r| r.bucket).max().unwrap_or(0) + bucket;
        let lo = from.map_or(lo_data, |f| f.div_euclid(bucket) * bucket);
        let hi = to.map_or(hi_data, |t| {
            let c = t.div_euclid(bucket) * bucket;
            if c == t { c } else { c + bucket }
        });
        let n = ((hi - lo) / bucket).max(1);
        let (lo, cut) = if n > MAX_BARS {
            (hi - MAX_BARS * bucket, true)
        } else {
            (lo, false)
        };
        out.push_str("<section id=\"charts\"><h2>Usage over time</h2>");
        if cut {
            let _ = write!(
                out,
                "<p class=\"muted\">The charts show the last {MAX_BARS} buckets of the period; the totals cover all of it.</p>"
            );
        }
        for (t, by_bucket) in &series {
            let bars: Vec<(i64, i128)> = (0..(hi - lo) / bucket)
                .map(|i| {
                    let b = lo + i * bucket;
                    (b, by_bucket.get(&b).copied().unwrap_or(0))
                })
                .collect();
            let _ = write!(
                out,
                "<figure data-amount-type=\"{}\"><figcaption>{}</figcaption>{}</figure>",
                esc(t),
                esc(t),
                bar_chart(t, &bars, bucket)
            );
        }
        out.push_str("</section>");
    }

    // Per instance and amount type.
    let mut per: BTreeMap<(&str, &str), (i128, i64)> = BTreeMap::new();
    for r in rows {
        let slot = per.entry((&r.instance, &r.amount_type)).or_default();
        slot.0 = slot.0.saturating_add(r.value);
        slot.1 = slot.1.saturating_add(r.records);
    }
    if !per.is_empty() {
        // Top instances per amount type.
        let mut by_type: BTreeMap<&str, Vec<(&str, i128)>> = BTreeMap::new();
        for (&(i, t), &(v, _)) in &per {
            by_type.entry(t).or_default().push((i, v));
        }
        out.push_str("<section><h2>Top instances</h2><div class=\"top\">");
        for (t, mut list) in by_type {
            list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let _ = write!(
                out,
                "<div><strong>{}</strong><ol class=\"top-instances\" data-amount-type=\"{}\">",
                esc(t),
                esc(t)
            );
            for (i, v) in list.iter().take(5) {
                let i = esc(i);
                let _ = write!(
                    out,
                    "<li data-instance=\"{i}\" data-value=\"{v}\"><span class=\"id\">{i}</span>: {v}</li>"
                );
            }
            out.push_str("</ol></div>");
        }
        out.push_str("</div></section>");

        out.push_str("<section><h2>By instance</h2><table id=\"instances\"><thead><tr><th>Instance</th><th>Amount type</th><th class=\"num\">Total</th><th class=\"num\">Records</th></tr></thead><tbody>");
        for (&(i, t), &(v, n)) in per.iter().take(MAX_TABLE_ROWS) {
            let (i, t) = (esc(i), esc(t));
            let _ = write!(
                out,
                "<tr data-instance=\"{i}\" data-amount-type=\"{t}\" data-value=\"{v}\" data-records=\"{n}\"><td class=\"id\">{i}</td><td>{t}</td><td class=\"num\">{v}</td><td class=\"num\">{n}</td></tr>"
            );
        }
        out.push_str("</tbody></table>");
        if per.len() > MAX_TABLE_ROWS {
            let _ = write!(
                out,
                "<p class=\"muted\">First {MAX_TABLE_ROWS} of {} rows; narrow the filters or use <a href=\"/api/v1/usage\">the API</a>.</p>",
                per.len()
            );
        }
        out.push_str("</section>");
    }
    out
}

/// The `limit=` of a list page, bounded.
fn limit_of(pairs: &[(String, String)]) -> usize {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(DEFAULT_LIST_ROWS)
        .clamp(1, crate::MAX_LIST_ROWS)
}

/// `/conflicts`: the newest conflict rows.
pub(crate) async fn conflicts(s: &HttpSurface, pairs: &[(String, String)]) -> Page {
    let limit = limit_of(pairs);
    let rows: Vec<ConflictRow> = match s.store.conflicts(&crate::ListFilter::newest(limit)).await {
        Ok(r) => r,
        Err(e) => return error_page("Conflicts", status_of(&e), &e.to_string(), ""),
    };
    let mut out = format!(
        "<section><h2>Conflicts</h2><p class=\"muted\">Arrivals of a stored key with a different body: the first version stays billed, each differing version is kept here. Newest first, at most {limit} (<code>?limit=N</code>, up to {}).</p>",
        crate::MAX_LIST_ROWS
    );
    if rows.is_empty() {
        out.push_str("<p id=\"empty\">No conflicts.</p>");
    } else {
        out.push_str("<table id=\"conflicts\"><thead><tr><th>Key</th><th>First seen</th><th>Last seen</th><th class=\"num\">Count</th><th>Stored body</th><th>Received body</th></tr></thead><tbody>");
        for r in &rows {
            let _ = write!(
                out,
                "<tr data-key=\"{}\" data-count=\"{}\"><td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"raw\">{}</td><td class=\"raw\">{}</td></tr>",
                esc(&r.unique_key),
                r.count,
                esc(&r.unique_key),
                esc(&r.first_seen),
                esc(&r.last_seen),
                r.count,
                esc(&r.stored_body),
                esc(&r.received_body)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    (200, page("Conflicts", &out))
}

/// The `unique_key` in a quarantined entry's raw JSON (`record.unique_key`, or top level).
fn raw_key(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let key = v
        .get("record")
        .and_then(|r| r.get("unique_key"))
        .or_else(|| v.get("unique_key"))?;
    Some(match key {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// `/quarantine`: the newest quarantine rows.
pub(crate) async fn quarantine(s: &HttpSurface, pairs: &[(String, String)]) -> Page {
    let limit = limit_of(pairs);
    let rows: Vec<QuarantineRow> = match s.store.quarantine(&crate::ListFilter::newest(limit)).await
    {
        Ok(r) => r,
        Err(e) => return error_page("Quarantine", status_of(&e), &e.to_string(), ""),
    };
    let mut out = format!(
        "<section><h2>Quarantine</h2><p class=\"muted\">Entries that were not billed: invalid ones, and records the database refused. Newest first, at most {limit} (<code>?limit=N</code>, up to {}).</p>",
        crate::MAX_LIST_ROWS
    );
    if rows.is_empty() {
        out.push_str("<p id=\"empty\">Nothing quarantined.</p>");
    } else {
        out.push_str("<table id=\"quarantine\"><thead><tr><th class=\"num\">Id</th><th>Key</th><th>Received</th><th>Reason</th><th>Raw entry</th></tr></thead><tbody>");
        for r in &rows {
            let key = raw_key(&r.raw).unwrap_or_default();
            let _ = write!(
                out,
                "<tr data-id=\"{}\" data-key=\"{}\"><td class=\"num\">{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"raw\">{}</td></tr>",
                r.id,
                esc(&key),
                r.id,
                esc(&key),
                esc(&r.received_at),
                esc(&r.reason),
                esc(&r.raw)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    (200, page("Quarantine", &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(instance: &str, t: &str, bucket: i64, value: i128) -> UsageRow {
        UsageRow {
            instance: instance.into(),
            amount_type: t.into(),
            bucket,
            value,
            records: 1,
        }
    }

    #[test]
    fn renders_totals_top_instances_and_escapes_ids() {
        let rows = vec![
            row("<script>alert(1)</script>", "samples", 0, 5),
            row("i-2", "samples", 3600, 7),
            row("i-2", "samples", 7200, 1),
        ];
        let totals = crate::totals(&rows).unwrap();
        let html = render(
            "",
            &rows,
            &totals,
            &Summary::default(),
            3600,
            (Some(0), Some(4 * 3600)),
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("data-amount-type=\"samples\" data-value=\"13\" data-records=\"3\""));
        assert!(
            html.contains("<li data-instance=\"i-2\" data-value=\"8\">"),
            "{html}"
        );
        assert_eq!(html.matches("<rect class=\"bar\"").count(), 4, "{html}");
        assert_eq!(
            raw_key(r#"{"tag":"t","record":{"unique_key":"k<1>"}}"#).as_deref(),
            Some("k<1>")
        );
        assert_eq!(raw_key("not json"), None);
    }
}
