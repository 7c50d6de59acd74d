//! Usage reports and store summaries: the query types, the roll-up of hourly rows into days and
//! months, and the table / CSV / JSON writers that `billing report` prints.
//!
//! Stores only answer "the hourly rollup rows in `[lo, hi)` matching these filters"; everything
//! calendar-related happens here, once, so both databases report identically. Range bounds:
//! `from` is inclusive and `to` exclusive, and they apply to the **usage**, not to bucket
//! starts: a report covers exactly the hours in `[from, to)`, so a day or month at either end
//! of the range holds only its hours inside the range (its `bucket` still names the day or
//! month). Hourly rollups are the finest grain kept, so bounds must be hour boundaries: a bound
//! inside an hour is refused ([`RangeError::InsideAnHour`], naming the hour boundaries around
//! it) rather than silently widened or narrowed, and an empty or inverted range is refused too
//! ([`RangeError::Empty`]).
//!
//! Output order is by instance, then amount type (both bytewise), then bucket.
//!
//! Sums are exact: a bucket's value is an `i128` (the stores keep hourly sums beyond 64 bits:
//! SQLite as decimal text, PostgreSQL as `NUMERIC`), days and months add hours in `i128`, and
//! every format prints the value's exact decimal digits. JSON: the value is a JSON number in
//! every case (JSON numbers have no size limit; a reader that parses numbers into doubles
//! rounds sums beyond 2^53, so read them as big integers, e.g. Python's `json`, or Rust's
//! serde_json into an `i128`). One instance's huge usage cannot fail another's report: a sum
//! leaves the `i128` range only past 2^64 records of `i64::MAX`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::SystemTime;

use time::{Date, OffsetDateTime, Time};

use crate::StoreError;
use crate::validate::{HOUR_SECONDS, rfc3339_secs};

/// Size of the buckets a report sums into (all in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One bucket per hour.
    #[default]
    Hour,
    /// One bucket per day.
    Day,
    /// One bucket per calendar month.
    Month,
    /// One bucket per instance and amount type over the whole range; its `bucket` is the
    /// first hour with usage in the range.
    Instance,
}

/// What a usage report selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only usage at or after this instant (an hour boundary; see [`UsageQuery::check`]).
    pub from: Option<SystemTime>,
    /// Only usage before this instant (an hour boundary; see [`UsageQuery::check`]).
    pub to: Option<SystemTime>,
    /// Only this `internal_instance_id`.
    pub instance: Option<String>,
    /// Only this `amount_type`.
    pub amount_type: Option<String>,
    /// Bucket size.
    pub by: Granularity,
}

/// One bucket of usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// `internal_instance_id`.
    pub instance: String,
    /// `amount_type`.
    pub amount_type: String,
    /// Start of the bucket, Unix seconds (UTC).
    pub bucket: i64,
    /// Sum of `amount_value`, exact (an `i128`: many records near `i64::MAX` exceed 64 bits).
    pub value: i128,
    /// Number of records.
    pub records: i64,
}

impl UsageRow {
    /// The bucket start as RFC 3339 UTC, e.g. `2026-11-27T04:00:00Z`.
    pub fn bucket_rfc3339(&self) -> String {
        rfc3339_secs(self.bucket)
    }
}

/// Totals over the whole store, across restarts and ingesters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries received in committed chunks.
    pub received: i64,
    /// Records stored (first versions).
    pub records: i64,
    /// Identical repeats of stored records.
    pub duplicates: i64,
    /// Arrivals of a stored key with a different body.
    pub conflicts: i64,
    /// Invalid entries that arrived (quarantined; a historical count, which releases leave
    /// as it is).
    pub quarantined: i64,
    /// Quarantined entries released later (`billing quarantine release`) and stored or
    /// counted as duplicates or conflicts: `received = records + duplicates + conflicts +
    /// quarantined - released`, and `quarantined - released` entries are still invalid.
    pub released: i64,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns with a header, for people.
    #[default]
    Table,
    /// RFC 4180 CSV with a header line.
    Csv,
    /// One JSON array (usage) or object (summary) on one line.
    Json,
}

/// The hourly rows a store must return for a query: `hour` in `[lo, hi)` and the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HourFilter {
    pub lo: i64,
    pub hi: i64,
    pub instance: Option<String>,
    pub amount_type: Option<String>,
}

fn unix(t: SystemTime) -> (i64, u32) {
    let dt = OffsetDateTime::from(t);
    (dt.unix_timestamp(), dt.nanosecond())
}

fn floor(secs: i64, by: Granularity) -> i64 {
    match by {
        Granularity::Hour => secs.div_euclid(HOUR_SECONDS) * HOUR_SECONDS,
        Granularity::Day => secs.div_euclid(24 * HOUR_SECONDS) * 24 * HOUR_SECONDS,
        Granularity::Month => match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(dt) => month_start(dt.year(), dt.month()).unwrap_or(secs),
            Err(_) => secs,
        },
        // One bucket for the whole range: `roll_up` keys it apart and names it by its
        // first hour.
        Granularity::Instance => i64::MIN,
    }
}

fn month_start(year: i32, month: time::Month) -> Option<i64> {
    let date = Date::from_calendar_date(year, month, 1).ok()?;
    Some(date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
}

fn next(bucket: i64, by: Granularity) -> i64 {
    match by {
        Granularity::Hour => bucket.saturating_add(HOUR_SECONDS),
        Granularity::Day => bucket.saturating_add(24 * HOUR_SECONDS),
        Granularity::Month => match OffsetDateTime::from_unix_timestamp(bucket) {
            Ok(dt) => {
                let (y, m) = match dt.month() {
                    time::Month::December => (dt.year() + 1, time::Month::January),
                    m => (dt.year(), m.next()),
                };
                month_start(y, m).unwrap_or(i64::MAX)
            }
            Err(_) => i64::MAX,
        },
        Granularity::Instance => i64::MAX,
    }
}

/// The first bucket start at or after `t`.
fn ceil(t: SystemTime, by: Granularity) -> i64 {
    let (secs, nanos) = unix(t);
    let f = floor(secs, by);
    if f == secs && nanos == 0 {
        f
    } else {
        next(f, by)
    }
}

/// Why a usage query's range cannot be reported exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// A bound lies inside an hour, and usage is kept per hour.
    #[error(
        "--{bound} {given} is inside an hour, and usage is kept per hour: use --{bound} {before} or --{bound} {after}"
    )]
    InsideAnHour {
        /// `from` or `to`.
        bound: &'static str,
        /// The bound as given, RFC 3339.
        given: String,
        /// The hour boundary before it.
        before: String,
        /// The hour boundary after it.
        after: String,
    },
    /// `from` is not before `to`.
    #[error("empty range: --from {from} is not before --to {to}")]
    Empty {
        /// RFC 3339.
        from: String,
        /// RFC 3339.
        to: String,
    },
}

fn rfc3339_of(t: SystemTime) -> String {
    billing_schema::rfc3339(t)
}

impl UsageQuery {
    /// Checks that the range can be reported exactly: both bounds on hour boundaries, `from`
    /// before `to`.
    ///
    /// # Errors
    /// [`RangeError`], which names the hour boundaries around a bound inside an hour.
    pub fn check(&self) -> Result<(), RangeError> {
        for (bound, t) in [("from", self.from), ("to", self.to)] {
            let Some(t) = t else { continue };
            let (secs, nanos) = unix(t);
            let before = floor(secs, Granularity::Hour);
            if before != secs || nanos != 0 {
                return Err(RangeError::InsideAnHour {
                    bound,
                    given: rfc3339_of(t),
                    before: rfc3339_secs(before),
                    after: rfc3339_secs(next(before, Granularity::Hour)),
                });
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(RangeError::Empty {
                from: rfc3339_of(from),
                to: rfc3339_of(to),
            });
        }
        Ok(())
    }

    /// The hourly rows of the range. Bounds inside an hour (refused by [`UsageQuery::check`])
    /// are rounded up here, so that no caller that skipped the check sees an hour twice.
    pub(crate) fn hour_filter(&self) -> HourFilter {
        HourFilter {
            lo: self.from.map_or(i64::MIN, |t| ceil(t, Granularity::Hour)),
            hi: self.to.map_or(i64::MAX, |t| ceil(t, Granularity::Hour)),
            instance: self.instance.clone(),
            amount_type: self.amount_type.clone(),
        }
    }
}

/// A report bound as `billing report --from/--to` and `/api/v1/usage?from=&to=` take it:
/// RFC 3339 (`2026-12-01T10:00:00Z`), or a bare UTC date (`2026-12-01`) meaning its midnight.
/// Whether it is an hour boundary is [`UsageQuery::check`]'s to say.
///
/// # Errors
/// A message naming both accepted forms.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let b = s.as_bytes();
    let is_date = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
    if is_date {
        return billing_schema::parse_rfc3339(&format!("{s}T00:00:00Z"))
            .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"));
    }
    billing_schema::parse_rfc3339(s).map_err(|_| {
        format!("{s:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z) or a date (2026-12-01)")
    })
}

/// Totals per amount type over `rows` (summing different amount types means nothing), in
/// amount-type order: the report's totals rows.
///
/// # Errors
/// [`StoreError::Overflow`] for a sum beyond 128 bits.
pub fn totals(rows: &[UsageRow]) -> Result<Vec<(String, i128, i64)>, StoreError> {
    let mut by_type: BTreeMap<&str, (i128, i64)> = BTreeMap::new();
    for r in rows {
        let t = by_type.entry(&r.amount_type).or_default();
        t.0 = t.0.checked_add(r.value).ok_or(StoreError::Overflow)?;
        t.1 = t.1.checked_add(r.records).ok_or(StoreError::Overflow)?;
    }
    Ok(by_type
        .into_iter()
        .map(|(t, (value, records))| (t.to_string(), value, records))
        .collect())
}

/// Sums hourly rows into the query's buckets and sorts them.
pub(crate) fn roll_up(
    hourly: impl IntoIterator<Item = UsageRow>,
    by: Granularity,
) -> Result<Vec<UsageRow>, StoreError> {
    // (value, records, first hour seen)
    let mut buckets: BTreeMap<(String, String, i64), (i128, i64, i64)> = BTreeMap::new();
    for row in hourly {
        let slot = buckets
            .entry((row.instance, row.amount_type, floor(row.bucket, by)))
            .or_insert((0, 0, i64::MAX));
        slot.0 = slot.0.checked_add(row.value).ok_or(StoreError::Overflow)?;
        slot.1 = slot
            .1
            .checked_add(row.records)
            .ok_or(StoreError::Overflow)?;
        slot.2 = slot.2.min(row.bucket);
    }
    Ok(buckets
        .into_iter()
        .map(
            |((instance, amount_type, bucket), (value, records, first))| UsageRow {
                instance,
                amount_type,
                bucket: if by == Granularity::Instance {
                    first
                } else {
                    bucket
                },
                value,
                records,
            },
        )
        .collect())
}

/// A rollup's value as a store keeps it: the decimal text of an `i128`.
///
/// # Errors
/// [`StoreError::Inconsistent`] for text this build never writes.
pub(crate) fn parse_sum(text: &str) -> Result<i128, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Inconsistent(format!("rollup value {text:?} is not an integer")))
}

/// `s` as one RFC 4180 CSV field: quoted (quotes doubled) when it holds a comma, a quote or
/// a line end.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            // Numbers (the trailing columns) are right-aligned, text left-aligned.
            let pad = w - cell.chars().count();
            if i + 2 >= cells.len() {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, header)?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(out, &cells)?;
    }
    Ok(())
}

/// In the totals rows of tables and CSV: the instance and bucket columns.
pub const TOTAL_INSTANCE: &str = "(all)";
/// See [`TOTAL_INSTANCE`].
pub const TOTAL_BUCKET: &str = "total";

/// Writes usage rows in `format`.
///
/// JSON: `[{"instance","amount_type","bucket","value","records"}, ...]`, `bucket` the RFC 3339
/// UTC start of the bucket, `value` a number with every digit of the exact sum (beyond 64 bits
/// when it is; see the module docs). CSV: the same columns under a header line. Table: the same
/// columns, aligned. Table and CSV end with one totals row per amount type (instance
/// [`TOTAL_INSTANCE`], bucket [`TOTAL_BUCKET`]); JSON readers sum the rows themselves.
///
/// # Errors
/// The writer's; `InvalidData` if a total exceeds 128 bits.
pub fn write_usage(out: &mut impl Write, rows: &[UsageRow], format: Format) -> io::Result<()> {
    let totals = || -> io::Result<Vec<Vec<String>>> {
        let totals = totals(rows).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(totals
            .into_iter()
            .map(|(amount_type, value, records)| {
                vec![
                    TOTAL_INSTANCE.to_string(),
                    amount_type,
                    TOTAL_BUCKET.to_string(),
                    value.to_string(),
                    records.to_string(),
                ]
            })
            .collect())
    };
    match format {
        Format::Json => {
            // Written by hand to keep the documented key order.
            let json = |s: &str| serde_json::Value::from(s).to_string();
            out.write_all(b"[")?;
            for (i, r) in rows.iter().enumerate() {
                write!(
                    out,
                    "{}{{\"instance\":{},\"amount_type\":{},\"bucket\":\"{}\",\"value\":{},\"records\":{}}}",
                    if i == 0 { "" } else { "," },
                    json(&r.instance),
                    json(&r.amount_type),
                    r.bucket_rfc3339(),
                    r.value,
                    r.records
                )?;
            }
            writeln!(out, "]")
        }
        Format::Csv => {
            writeln!(out, "instance,amount_type,bucket,value,records")?;
            for r in rows {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    csv_field(&r.instance),
                    csv_field(&r.amount_type),
                    r.bucket_rfc3339(),
                    r.value,
                    r.records
                )?;
            }
            for t in totals()? {
                let t: Vec<String> = t.iter().map(|c| csv_field(c).into_owned()).collect();
                writeln!(out, "{}", t.join(","))?;
            }
            Ok(())
        }
        Format::Table => {
            let mut cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.instance.clone(),
                        r.amount_type.clone(),
                        r.bucket_rfc3339(),
                        r.value.to_string(),
                        r.records.to_string(),
                    ]
                })
                .collect();
            cells.extend(totals()?);
            write_table(
                out,
                &["INSTANCE", "AMOUNT_TYPE", "BUCKET", "VALUE", "RECORDS"],
                &cells,
            )
        }
    }
}

/// Writes a summary in `format`.
///
/// JSON: `{"received","records","duplicates","conflicts","quarantined","released"}`. CSV:
/// those names as a header, then one line of numbers. Table: one `name  number` line each.
///
/// # Errors
/// The writer's.
pub fn write_summary(out: &mut impl Write, s: &Summary, format: Format) -> io::Result<()> {
    let pairs = [
        ("received", s.received),
        ("records", s.records),
        ("duplicates", s.duplicates),
        ("conflicts", s.conflicts),
        ("quarantined", s.quarantined),
        ("released", s.released),
    ];
    match format {
        Format::Json => {
            let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            writeln!(out, "{{{}}}", fields.join(","))
        }
        Format::Csv => {
            let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
            let values: Vec<String> = pairs.iter().map(|p| p.1.to_string()).collect();
            writeln!(out, "{}", names.join(","))?;
            writeln!(out, "{}", values.join(","))
        }
        Format::Table => {
            let width = pairs
                .iter()
                .map(|p| p.1.to_string().len())
                .max()
                .unwrap_or(1);
            for (name, v) in pairs {
                writeln!(out, "{name:<12}{v:>width$}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_schema::parse_rfc3339;

    fn at(s: &str) -> SystemTime {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn ceil_rounds_up_to_the_next_bucket_start() {
        let t = at("2026-11-27T04:30:00Z");
        assert_eq!(
            rfc3339_secs(ceil(t, Granularity::Hour)),
            "2026-11-27T05:00:00Z"
        );
        assert_eq!(
            rfc3339_secs(ceil(t, Granularity::Day)),
            "2026-11-28T00:00:00Z"
        );
        assert_eq!(
            rfc3339_secs(ceil(t, Granularity::Month)),
            "2026-12-01T00:00:00Z"
        );
        let dec = at("2026-12-31T23:00:00.000000001Z");
        assert_eq!(
            rfc3339_secs(ceil(dec, Granularity::Month)),
            "2027-01-01T00:00:00Z"
        );
        let exact = at("2026-11-01T00:00:00Z");
        assert_eq!(
            rfc3339_secs(ceil(exact, Granularity::Month)),
            "2026-11-01T00:00:00Z"
        );
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let rows = vec![UsageRow {
            instance: "a,\"b\"".into(),
            amount_type: "t".into(),
            bucket: 0,
            value: -1,
            records: 1,
        }];
        let mut out = Vec::new();
        write_usage(&mut out, &rows, Format::Csv).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "instance,amount_type,bucket,value,records\n\"a,\"\"b\"\"\",t,1970-01-01T00:00:00Z,-1,1\n(all),t,total,-1,1\n"
        );
    }

    #[test]
    fn days_sum_hours_beyond_64_bits_and_json_prints_every_digit() {
        let hour = |h: i64, value: i128| UsageRow {
            instance: "i".into(),
            amount_type: "t".into(),
            bucket: h * HOUR_SECONDS,
            value,
            records: 1,
        };
        let max = i128::from(i64::MAX);
        let days = roll_up(
            vec![hour(0, max), hour(1, max), hour(2, 1)],
            Granularity::Day,
        )
        .unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].value, 2 * max + 1);
        let mut json = Vec::new();
        write_usage(&mut json, &days, Format::Json).unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(json.contains(r#""value":18446744073709551615,"#), "{json}");
        assert!(parse_sum("x").is_err());
        assert_eq!(
            parse_sum("-170141183460469231731687303715884105728").unwrap(),
            i128::MIN
        );
    }
}
