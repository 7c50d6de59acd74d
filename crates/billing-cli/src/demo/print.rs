//! How the demo looks on screen: the progress bar, number grouping and the hourly table. Kept
//! apart from the run and the ledger so their logic reads without formatting noise, and so
//! the output format has one home. Imports only [`super::columns`].
//!
//! Invariants: the table and every number are written to stdout in a fixed, locale-free
//! format (tests and users parse `1,234,567`); the progress bar draws to stdout only when it
//! is a terminal (indicatif hides it otherwise), so piped output holds the report alone.

use std::collections::BTreeMap;

use billing_ingest::UsageRow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::columns::TYPES;

/// A bar over `len` events, on stdout.
pub(super) fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {human_pos}/{human_len} events, {elapsed} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Thousands separators: `1234567` → `1,234,567`.
pub(super) fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// [`group`] for counts; saturates at `i64::MAX`, far beyond any demo's counts.
pub(super) fn group_u(n: u64) -> String {
    group(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Per hour (UTC) totals across instances, one column per amount type.
pub(super) fn print_hourly(rows: &[UsageRow], day: time::Date) {
    let mut hours: BTreeMap<i64, ([i64; 3], i64)> = BTreeMap::new();
    for r in rows {
        let slot = hours.entry(r.bucket).or_default();
        if let Some(i) = TYPES.iter().position(|t| t.as_str() == r.amount_type) {
            slot.0[i] += i64::try_from(r.value).unwrap_or(i64::MAX);
        }
        slot.1 += r.records;
    }
    let mut total = ([0i64; 3], 0i64);
    let mut lines: Vec<[String; 5]> = Vec::with_capacity(hours.len() + 1);
    for (bucket, (values, records)) in &hours {
        let hour = bucket.rem_euclid(86_400) / 3600;
        for (t, v) in total.0.iter_mut().zip(values) {
            *t += v;
        }
        total.1 += records;
        lines.push([
            format!("{hour:02}:00"),
            group(values[0]),
            group(values[1]),
            group(values[2]),
            group(*records),
        ]);
    }
    lines.push([
        "total".into(),
        group(total.0[0]),
        group(total.0[1]),
        group(total.0[2]),
        group(total.1),
    ]);
    let header = [
        "HOUR".to_string(),
        TYPES[0].to_string(),
        TYPES[1].to_string(),
        TYPES[2].to_string(),
        "records".to_string(),
    ];
    let mut widths = header.each_ref().map(String::len);
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    println!("\nstored usage per hour of {day} (UTC), all instances:");
    for l in std::iter::once(&header).chain(&lines) {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            l[0],
            l[1],
            l[2],
            l[3],
            l[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(-1_234), "-1,234");
        assert_eq!(group(i64::MIN), "-9,223,372,036,854,775,808");
        assert_eq!(group_u(u64::MAX), group(i64::MAX));
    }
}
