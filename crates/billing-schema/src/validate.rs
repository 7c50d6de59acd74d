//! Validation and normalization of received records: the rules the client's records always
//! meet and every ingester store applies, so that the client, SQLite and PostgreSQL accept,
//! refuse and compare records identically.
//!
//! A record (the entry's MessagePack map; the frame's tag and the entry's time are not part of
//! it) is **valid** when:
//! - `unique_key` is a non-empty string (the client refuses a blank key before it is sent:
//!   [`is_blank_key`]);
//! - `internal_instance_id` is a string (it may be empty);
//! - `amount_type` is a non-empty string;
//! - `amount_value` is an integer that fits an `i64` (a float, even `2.0`, is refused);
//! - `occurred_at` is an RFC 3339 string (any offset);
//! - `metadata` is absent, nil (Go marshals a nil map as `null`), or a map of string to string;
//! - none of those fields appears twice, no metadata key appears twice;
//! - `unique_key`, `internal_instance_id` and `amount_type` are at most [`MAX_FIELD_BYTES`]
//!   bytes and contain no NUL (they are indexed text columns: an over-long or NUL-bearing value
//!   would make the database refuse the whole transaction, so the chunk could never be acked).
//!
//! Strings must be UTF-8. Other fields are ignored and not stored. A record that breaks any rule
//! is refused with the first reason found (the ingester quarantines it).
//!
//! A valid record is normalized into a [`Record`]; its **body** (what dedupe compares) is
//! `(instance, amount_type, value, occurred_at, metadata)` where `occurred_at` is the instant
//! written in one canonical form (UTC, `Z`, up to nine fraction digits with trailing zeros
//! dropped, as [`crate::rfc3339()`] writes it), so `…T05:00:00+01:00`,
//! `…T04:00:00Z` and `…T04:00:00.000Z` are the same body; and `metadata` is the canonical JSON
//! object with keys sorted bytewise, so key order on the wire does not matter. Two records with
//! the same key are duplicates exactly when these five normalized values are equal.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use rmpv::Value;

use crate::record as schema;
use crate::rfc3339::{parse_rfc3339, rfc3339};

/// Longest `unique_key`, `internal_instance_id` or `amount_type` accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Seconds in one rollup bucket.
pub const HOUR_SECONDS: i64 = 3600;

/// A valid record, normalized for storage and comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The dedupe key.
    pub unique_key: String,
    /// The rest of the record, as compared by dedupe.
    pub body: Body,
    /// Start of the UTC hour of `occurred_at`, in Unix seconds.
    pub hour: i64,
}

/// The normalized part of a record that dedupe compares (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// `internal_instance_id`.
    pub instance: String,
    /// `amount_type`.
    pub amount_type: String,
    /// `amount_value`.
    pub value: i64,
    /// `occurred_at` in canonical UTC RFC 3339.
    pub occurred_at: String,
    /// `metadata` as canonical JSON (keys sorted, `{}` when absent).
    pub metadata: String,
}

impl Body {
    /// The body as a JSON object
    /// `{"instance","amount_type","value","occurred_at","metadata"}`, as kept in the conflicts
    /// table.
    pub fn to_json(&self) -> String {
        let metadata: serde_json::Value =
            serde_json::from_str(&self.metadata).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "instance": self.instance,
            "amount_type": self.amount_type,
            "value": self.value,
            "occurred_at": self.occurred_at,
            "metadata": metadata,
        })
        .to_string()
    }
}

/// Whether a caller's key is blank (empty or whitespace only): the client refuses such an
/// event (the Go client's `billing: units uniqueKey cannot be blank`).
pub fn is_blank_key(key: &str) -> bool {
    key.trim().is_empty()
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    match v {
        Value::String(s) => s
            .as_str()
            .ok_or_else(|| format!("{field} is not valid UTF-8")),
        _ => Err(format!("{field} is not a string")),
    }
}

fn column_text<'a>(v: &'a Value, field: &str, non_empty: bool) -> Result<&'a str, String> {
    let s = text(v, field)?;
    if non_empty && s.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if s.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is longer than {MAX_FIELD_BYTES} bytes"));
    }
    if s.contains('\0') {
        return Err(format!("{field} contains a NUL character"));
    }
    Ok(s)
}

/// Validates and normalizes one record.
///
/// # Errors
/// The first rule (see the module docs) the record breaks, as a human-readable reason.
pub fn validate(record: &Value) -> Result<Record, String> {
    let Value::Map(fields) = record else {
        return Err("record is not a map".to_string());
    };
    let mut key = None;
    let mut instance = None;
    let mut amount_type = None;
    let mut value = None;
    let mut occurred_at = None;
    let mut metadata = None;
    for (k, v) in fields {
        let Some(name) = k.as_str() else { continue };
        let slot = match name {
            schema::UNIQUE_KEY => &mut key,
            schema::INTERNAL_INSTANCE_ID => &mut instance,
            schema::AMOUNT_TYPE => &mut amount_type,
            schema::AMOUNT_VALUE => &mut value,
            schema::OCCURRED_AT => &mut occurred_at,
            schema::METADATA => &mut metadata,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(format!("{name} appears twice"));
        }
    }
    let missing = |name: &str| format!("{name} is missing");
    let key = column_text(
        key.ok_or_else(|| missing(schema::UNIQUE_KEY))?,
        schema::UNIQUE_KEY,
        true,
    )?;
    let instance = column_text(
        instance.ok_or_else(|| missing(schema::INTERNAL_INSTANCE_ID))?,
        schema::INTERNAL_INSTANCE_ID,
        false,
    )?;
    let amount_type = column_text(
        amount_type.ok_or_else(|| missing(schema::AMOUNT_TYPE))?,
        schema::AMOUNT_TYPE,
        true,
    )?;
    let value = match value.ok_or_else(|| missing(schema::AMOUNT_VALUE))? {
        Value::Integer(i) => i
            .as_i64()
            .ok_or_else(|| format!("{} does not fit a 64-bit integer", schema::AMOUNT_VALUE))?,
        _ => return Err(format!("{} is not an integer", schema::AMOUNT_VALUE)),
    };
    let occurred_text = text(
        occurred_at.ok_or_else(|| missing(schema::OCCURRED_AT))?,
        schema::OCCURRED_AT,
    )?;
    let at = parse_rfc3339(occurred_text).map_err(|e| format!("{}: {e}", schema::OCCURRED_AT))?;
    let metadata = normalize_metadata(metadata)?;
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        // Before 1970: round toward negative infinity.
        Err(e) => {
            let before = e.duration();
            -(before.as_secs() as i64) - i64::from(before.subsec_nanos() > 0)
        }
    };
    Ok(Record {
        unique_key: key.to_string(),
        hour: secs.div_euclid(HOUR_SECONDS) * HOUR_SECONDS,
        body: Body {
            instance: instance.to_string(),
            amount_type: amount_type.to_string(),
            value,
            occurred_at: rfc3339(at),
            metadata,
        },
    })
}

fn normalize_metadata(v: Option<&Value>) -> Result<String, String> {
    let entries = match v {
        None | Some(Value::Nil) => return Ok("{}".to_string()),
        Some(Value::Map(m)) => m,
        Some(_) => return Err(format!("{} is not a map", schema::METADATA)),
    };
    let mut map = BTreeMap::new();
    for (k, v) in entries {
        let k = text(k, "a metadata key")?;
        let v = text(v, &format!("metadata value of {k:?}"))?;
        if map.insert(k, v).is_some() {
            return Err(format!("metadata key {k:?} appears twice"));
        }
    }
    serde_json::to_string(&map).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc3339::rfc3339_secs;

    fn rec(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    fn good() -> Vec<(&'static str, Value)> {
        vec![
            ("unique_key", Value::from("k:samples")),
            ("internal_instance_id", Value::from("i-1")),
            ("amount_type", Value::from("samples")),
            ("amount_value", Value::from(5)),
            ("occurred_at", Value::from("2026-11-27T05:33:58.5+01:00")),
            (
                "metadata",
                Value::Map(vec![
                    (Value::from("z"), Value::from("1")),
                    (Value::from("a"), Value::from("2")),
                ]),
            ),
        ]
    }

    #[test]
    fn normalizes_instant_and_metadata_order() {
        let r = validate(&rec(&good())).unwrap();
        assert_eq!(r.body.occurred_at, "2026-11-27T04:33:58.5Z");
        assert_eq!(r.body.metadata, r#"{"a":"2","z":"1"}"#);
        assert_eq!(rfc3339_secs(r.hour), "2026-11-27T04:00:00Z");
    }

    #[test]
    fn hour_of_a_time_before_1970_rounds_down() {
        let mut f = good();
        f[4].1 = Value::from("1969-12-31T23:59:59.5Z");
        assert_eq!(validate(&rec(&f)).unwrap().hour, -3600);
    }

    #[test]
    fn nil_or_absent_metadata_is_empty() {
        let mut f = good();
        f[5].1 = Value::Nil;
        assert_eq!(validate(&rec(&f)).unwrap().body.metadata, "{}");
        f.pop();
        assert_eq!(validate(&rec(&f)).unwrap().body.metadata, "{}");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(usize, Value, &str)> = vec![
            (0, Value::from(""), "unique_key is empty"),
            (0, Value::from(1), "unique_key is not a string"),
            (1, Value::from(1), "internal_instance_id is not a string"),
            (2, Value::from(""), "amount_type is empty"),
            (3, Value::F64(2.0), "amount_value is not an integer"),
            (3, Value::from(u64::MAX), "amount_value does not fit"),
            (4, Value::from("yesterday"), "occurred_at"),
            (5, Value::from("x"), "metadata is not a map"),
            (0, Value::from("a\0b"), "NUL"),
            (0, Value::from("k".repeat(MAX_FIELD_BYTES + 1)), "longer"),
        ];
        for (i, v, want) in cases {
            let mut f = good();
            f[i].1 = v;
            let err = validate(&rec(&f)).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let mut f = good();
        f.remove(3);
        assert_eq!(validate(&rec(&f)).unwrap_err(), "amount_value is missing");
        let mut f = good();
        f.push(("unique_key", Value::from("other")));
        assert_eq!(validate(&rec(&f)).unwrap_err(), "unique_key appears twice");
        assert_eq!(
            validate(&Value::from(1)).unwrap_err(),
            "record is not a map"
        );
    }
}
