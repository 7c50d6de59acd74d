//! One unique key's history (`billing report --key`, `GET /api/v1/key?key=`): its stored
//! record, how many identical repeats (duplicates) arrived, and every conflicting version.
//!
//! Why: "was this event billed, once, and with which amount?" is the question a support case
//! starts with; the answer was spread over `records`, `conflicts` and the aggregate counters.
//! Both stores answer it with one indexed lookup per table (schema version 3 keeps the
//! duplicate count on the record's row), and the writers here print it the same way for
//! every store and for the HTTP API (whose JSON is byte for byte the command's).
//!
//! Invariants: a key is *found* when it has a record or a conflict row ([`KeyReport::found`]);
//! bodies and metadata are printed as stored (canonical JSON), a table escapes control
//! characters so that peer text cannot break the layout or the terminal.

use std::io::{self, Write};

use crate::lists::ConflictRow;
use crate::report::{Format, csv_field};

/// The stored (first) record of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// `internal_instance_id`.
    pub instance: String,
    /// `amount_type`.
    pub amount_type: String,
    /// `amount_value`.
    pub value: i64,
    /// `occurred_at`, canonical UTC RFC 3339.
    pub occurred_at: String,
    /// `metadata` as canonical JSON.
    pub metadata: String,
    /// When it was first stored (RFC 3339 UTC); `None` for a record stored before the store's
    /// schema version 3, which did not keep it.
    pub stored_at: Option<String>,
    /// Identical repeats of the key that arrived after it (counted since schema version 3).
    pub duplicates: i64,
    /// The last of those repeats (RFC 3339 UTC).
    pub last_duplicate_at: Option<String>,
}

/// What a store holds for one unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyReport {
    /// The key looked up.
    pub unique_key: String,
    /// Its stored record, if any.
    pub record: Option<KeyRecord>,
    /// Its conflicting versions, newest first.
    pub conflicts: Vec<ConflictRow>,
}

impl KeyReport {
    /// The report of `unique_key` from what a store read.
    pub(crate) fn new(
        unique_key: &str,
        record: Option<KeyRecord>,
        conflicts: Vec<ConflictRow>,
    ) -> Self {
        KeyReport {
            unique_key: unique_key.to_string(),
            record,
            conflicts,
        }
    }

    /// Whether the store knows the key at all (a record or a conflict).
    pub fn found(&self) -> bool {
        self.record.is_some() || !self.conflicts.is_empty()
    }
}

impl KeyRecord {
    /// A record read from a store's `records` row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        instance: String,
        amount_type: String,
        value: i64,
        occurred_at: String,
        metadata: String,
        stored_at: Option<String>,
        duplicates: i64,
        last_duplicate_at: Option<String>,
    ) -> Self {
        KeyRecord {
            instance,
            amount_type,
            value,
            occurred_at,
            metadata,
            stored_at,
            duplicates,
            last_duplicate_at,
        }
    }
}

/// JSON text as a JSON value, or as a string when it is not JSON.
fn json_or_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::from(text))
}

/// Control characters escaped (a table keeps one line per field).
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of a conflicting body (`{"instance","amount_type","value","occurred_at",
/// "metadata"}`, see `Body::to_json`), as text; empty for a body that is not such an object.
fn body_fields(body: &str) -> [String; 5] {
    let v = json_or_text(body);
    let text = |name: &str| match v.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    [
        text("instance"),
        text("amount_type"),
        text("value"),
        text("occurred_at"),
        text("metadata"),
    ]
}

/// Writes a key's report in `format`.
///
/// JSON (one line): `{"unique_key", "record": {"instance","amount_type","value","occurred_at",
/// "metadata","stored_at","duplicates","last_duplicate_at"} or null, "conflicts":
/// [{"first_seen","last_seen","count","received_body"}]}`, `metadata` and `received_body` as
/// JSON objects, unknown times `null`. CSV: a header, then one line per version of the key:
/// `kind` `stored` (first_seen: when stored, last_seen: the last duplicate, count: the
/// duplicates) then `conflict` (first and last arrival of that body, count: its arrivals).
/// Table: one `name  value` line per field, then one line per conflicting version.
///
/// # Errors
/// The writer's.
pub fn write_key(out: &mut impl Write, report: &KeyReport, format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            let record = report.record.as_ref().map(|r| {
                serde_json::json!({
                    "instance": r.instance, "amount_type": r.amount_type, "value": r.value,
                    "occurred_at": r.occurred_at, "metadata": json_or_text(&r.metadata),
                    "stored_at": r.stored_at, "duplicates": r.duplicates,
                    "last_duplicate_at": r.last_duplicate_at,
                })
            });
            let conflicts: Vec<serde_json::Value> = report
                .conflicts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "first_seen": c.first_seen, "last_seen": c.last_seen, "count": c.count,
                        "received_body": json_or_text(&c.received_body),
                    })
                })
                .collect();
            let all = serde_json::json!({
                "unique_key": report.unique_key, "record": record, "conflicts": conflicts,
            });
            writeln!(out, "{all}")
        }
        Format::Csv => {
            writeln!(
                out,
                "unique_key,kind,instance,amount_type,value,occurred_at,metadata,first_seen,last_seen,count"
            )?;
            let key = csv_field(&report.unique_key);
            if let Some(r) = &report.record {
                writeln!(
                    out,
                    "{key},stored,{},{},{},{},{},{},{},{}",
                    csv_field(&r.instance),
                    csv_field(&r.amount_type),
                    r.value,
                    r.occurred_at,
                    csv_field(&r.metadata),
                    r.stored_at.as_deref().unwrap_or(""),
                    r.last_duplicate_at.as_deref().unwrap_or(""),
                    r.duplicates
                )?;
            }
            for c in &report.conflicts {
                let f = body_fields(&c.received_body);
                let f: Vec<_> = f.iter().map(|s| csv_field(s)).collect();
                writeln!(
                    out,
                    "{key},conflict,{},{},{},{},{},{},{},{}",
                    f[0], f[1], f[2], f[3], f[4], c.first_seen, c.last_seen, c.count
                )?;
            }
            Ok(())
        }
        Format::Table => {
            let mut lines: Vec<(&str, String)> = vec![("unique_key", one_line(&report.unique_key))];
            match &report.record {
                Some(r) => {
                    lines.extend([
                        ("instance", one_line(&r.instance)),
                        ("amount_type", one_line(&r.amount_type)),
                        ("value", r.value.to_string()),
                        ("occurred_at", r.occurred_at.clone()),
                        ("metadata", one_line(&r.metadata)),
                        (
                            "stored_at",
                            r.stored_at
                                .clone()
                                .unwrap_or_else(|| "(not kept: stored before schema 3)".into()),
                        ),
                        (
                            "duplicates",
                            match &r.last_duplicate_at {
                                Some(last) => format!("{} (last {last})", r.duplicates),
                                None => r.duplicates.to_string(),
                            },
                        ),
                    ]);
                }
                None => lines.push(("record", "(none stored)".into())),
            }
            lines.push(("conflicts", report.conflicts.len().to_string()));
            for (name, value) in lines {
                writeln!(out, "{name:<12} {value}")?;
            }
            for c in &report.conflicts {
                writeln!(
                    out,
                    "  seen {}x, first {}, last {}: {}",
                    c.count,
                    c.first_seen,
                    c.last_seen,
                    one_line(&c.received_body)
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> KeyReport {
        KeyReport::new(
            "k:samples",
            Some(KeyRecord::new(
                "i-1".into(),
                "samples".into(),
                5,
                "2026-11-27T04:10:00Z".into(),
                r#"{"a":"x,y"}"#.into(),
                Some("2026-11-27T04:10:01.000Z".into()),
                2,
                Some("2026-11-27T04:12:00.000Z".into()),
            )),
            vec![ConflictRow {
                unique_key: "k:samples".into(),
                first_seen: "2026-11-27T04:11:00.000Z".into(),
                last_seen: "2026-11-27T04:11:00.000Z".into(),
                count: 1,
                stored_body: "{}".into(),
                received_body: r#"{"instance":"i-1","amount_type":"samples","value":6,"occurred_at":"2026-11-27T04:10:00Z","metadata":{}}"#.into(),
            }],
        )
    }

    fn text(format: Format) -> String {
        let mut out = Vec::new();
        write_key(&mut out, &report(), format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_shows_the_record_its_duplicates_and_its_conflicts() {
        let json: serde_json::Value = serde_json::from_str(&text(Format::Json)).unwrap();
        assert_eq!(json["record"]["duplicates"], 2);
        assert_eq!(json["record"]["metadata"]["a"], "x,y");
        assert_eq!(json["conflicts"][0]["received_body"]["value"], 6);
        assert_eq!(
            text(Format::Csv),
            "unique_key,kind,instance,amount_type,value,occurred_at,metadata,first_seen,last_seen,count\n\
             k:samples,stored,i-1,samples,5,2026-11-27T04:10:00Z,\"{\"\"a\"\":\"\"x,y\"\"}\",2026-11-27T04:10:01.000Z,2026-11-27T04:12:00.000Z,2\n\
             k:samples,conflict,i-1,samples,6,2026-11-27T04:10:00Z,{},2026-11-27T04:11:00.000Z,2026-11-27T04:11:00.000Z,1\n"
        );
        let table = text(Format::Table);
        assert!(
            table.contains("duplicates   2 (last 2026-11-27T04:12:00.000Z)"),
            "{table}"
        );
        assert!(
            table.contains("  seen 1x, first 2026-11-27T04:11:00.000Z"),
            "{table}"
        );
        assert!(report().found());
        assert!(!KeyReport::new("x", None, Vec::new()).found());
    }
}
