//! Validation and normalization of received records: the rules the client's records always
//! meet and every ingester store applies, so that the client, SQLite and PostgreSQL accept,
//! refuse and compare records identically.
//!
//! A record (the entry's MessagePack map; the frame's tag and the entry's time are not part of
//! it) is checked against these rules, in this order; the first one broken refuses it with its
//! [`Reason`] (a stable label: the ingester's quarantine reason and metric label) and a
//! human-readable detail. Rules marked *policy* have a default in [`Policy`] that an ingester
//! can override (`billing ingest` flags in brackets).
//!
//! | rule | reason |
//! |---|---|
//! | the record is a map | `not_a_map` |
//! | no field appears twice | `duplicate_field` |
//! | `unique_key`, `internal_instance_id`, `amount_type`, `amount_value`, `occurred_at` are present | `missing_field` |
//! | strings are strings, `amount_value` an integer (a float, even `2.0`, is refused), `metadata` absent, nil (Go's nil map) or a map of string to string | `wrong_type` |
//! | strings are UTF-8 | `invalid_utf8` |
//! | `unique_key`, `internal_instance_id`, `amount_type` are at most [`MAX_FIELD_BYTES`] bytes (indexed columns) | `field_too_long` |
//! | no NUL in them (the databases refuse it, which would poison the whole transaction) | `nul_character` |
//! | `unique_key` not blank: empty or whitespace only, as the client refuses it ([`is_blank_key`]) | `blank_key` |
//! | `internal_instance_id` not empty | `empty_field` |
//! | `amount_type` of the safe syntax: 1 to [`MAX_AMOUNT_TYPE_BYTES`] bytes of `a-z`, `0-9`, `-`, `_`, `.` ([`check_amount_type`]) | `invalid_amount_type` |
//! | `amount_type` one of the ingester's known types, when it names them (*policy*: [`Policy::amount_types`], default any; `--amount-types`) | `unknown_amount_type` |
//! | `amount_value` fits an `i64` | `amount_out_of_range` |
//! | `amount_value` ≥ 0 (*policy*: [`Policy::allow_negative`], `--allow-negative`, for credits) | `negative_amount` |
//! | `occurred_at` is an RFC 3339 time (any offset) | `invalid_time` |
//! | `occurred_at` not older than now − [`Policy::max_event_age`] (*policy*, default 35 days, the common grace period of billing systems; `--max-event-age`) | `too_old` |
//! | `occurred_at` not later than now + [`Policy::max_event_future`] (*policy*, default 5 minutes of clock skew; `--max-event-future`) | `in_future` |
//! | no metadata key appears twice | `duplicate_field` |
//! | metadata keys and values together at most [`Policy::max_metadata_bytes`] bytes (*policy*, default 64 KiB; `--max-metadata-bytes`) | `metadata_too_large` |
//!
//! Other fields are ignored and not stored. "Now" is a parameter of [`validate`], so the window
//! is testable without depending on today's date.
//!
//! A valid record is normalized into a [`Record`]; its **body** (what dedupe compares) is
//! `(instance, amount_type, value, occurred_at, metadata)` where `occurred_at` is the instant
//! written in one canonical form (UTC, `Z`, up to nine fraction digits with trailing zeros
//! dropped, as [`crate::rfc3339()`] writes it), so `…T05:00:00+01:00`,
//! `…T04:00:00Z` and `…T04:00:00.000Z` are the same body; and `metadata` is the canonical JSON
//! object with keys sorted bytewise, so key order on the wire does not matter. Two records with
//! the same key are duplicates exactly when these five normalized values are equal.

mod event;
mod policy;
mod reason;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rmpv::Value;

use crate::record as schema;
use crate::rfc3339::{parse_rfc3339, rfc3339};

pub use event::{check_amount_type, check_event, is_blank_key};
pub use policy::{
    DEFAULT_MAX_EVENT_AGE, DEFAULT_MAX_EVENT_FUTURE, DEFAULT_MAX_METADATA_BYTES,
    MAX_AMOUNT_TYPE_BYTES, MAX_FIELD_BYTES, Policy,
};
pub use reason::{Invalid, Reason};

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

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, Invalid> {
    match v {
        Value::String(s) => s.as_str().ok_or_else(|| {
            Invalid::new(Reason::InvalidUtf8, format!("{field} is not valid UTF-8"))
        }),
        _ => Err(Invalid::new(
            Reason::WrongType,
            format!("{field} is not a string"),
        )),
    }
}

fn column_text<'a>(v: &'a Value, field: &str) -> Result<&'a str, Invalid> {
    let s = text(v, field)?;
    if s.len() > MAX_FIELD_BYTES {
        return Err(Invalid::new(
            Reason::FieldTooLong,
            format!("{field} is longer than {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(Invalid::new(
            Reason::NulCharacter,
            format!("{field} contains a NUL character"),
        ));
    }
    Ok(s)
}

fn present<'a>(v: Option<&'a Value>, name: &str) -> Result<&'a Value, Invalid> {
    v.ok_or_else(|| Invalid::new(Reason::MissingField, format!("{name} is missing")))
}

/// Unix seconds of `t`, rounded toward negative infinity.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => {
            let before = e.duration();
            -(before.as_secs() as i64) - i64::from(before.subsec_nanos() > 0)
        }
    }
}

/// Validates and normalizes one record under `policy`, with `now` as the ingester's clock.
///
/// # Errors
/// The first rule (see the module docs) the record breaks.
pub fn validate(record: &Value, policy: &Policy, now: SystemTime) -> Result<Record, Invalid> {
    let Value::Map(fields) = record else {
        return Err(Invalid::new(Reason::NotAMap, "record is not a map"));
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
            return Err(Invalid::new(
                Reason::DuplicateField,
                format!("{name} appears twice"),
            ));
        }
    }
    let key = column_text(present(key, schema::UNIQUE_KEY)?, schema::UNIQUE_KEY)?;
    if is_blank_key(key) {
        return Err(Invalid::new(
            Reason::BlankKey,
            if key.is_empty() {
                "unique_key is empty"
            } else {
                "unique_key is blank (whitespace only)"
            },
        ));
    }
    let instance = column_text(
        present(instance, schema::INTERNAL_INSTANCE_ID)?,
        schema::INTERNAL_INSTANCE_ID,
    )?;
    if instance.is_empty() {
        return Err(Invalid::new(
            Reason::EmptyField,
            "internal_instance_id is empty",
        ));
    }
    let amount_type = column_text(
        present(amount_type, schema::AMOUNT_TYPE)?,
        schema::AMOUNT_TYPE,
    )?;
    check_amount_type(amount_type)?;
    if let Some(known) = &policy.amount_types
        && !known.contains(amount_type)
    {
        return Err(Invalid::new(
            Reason::UnknownAmountType,
            format!("amount_type {amount_type:?} is not one of the billed types"),
        ));
    }
    let value = match present(value, schema::AMOUNT_VALUE)? {
        Value::Integer(i) => i.as_i64().ok_or_else(|| {
            Invalid::new(
                Reason::AmountOutOfRange,
                format!("{} does not fit a 64-bit integer", schema::AMOUNT_VALUE),
            )
        })?,
        _ => {
            return Err(Invalid::new(
                Reason::WrongType,
                format!("{} is not an integer", schema::AMOUNT_VALUE),
            ));
        }
    };
    if value < 0 && !policy.allow_negative {
        return Err(Invalid::new(
            Reason::NegativeAmount,
            format!(
                "{} is negative ({value}) and credits are not allowed",
                schema::AMOUNT_VALUE
            ),
        ));
    }
    let occurred_text = text(
        present(occurred_at, schema::OCCURRED_AT)?,
        schema::OCCURRED_AT,
    )?;
    let at = parse_rfc3339(occurred_text)
        .map_err(|e| Invalid::new(Reason::InvalidTime, format!("{}: {e}", schema::OCCURRED_AT)))?;
    if now
        .checked_sub(policy.max_event_age)
        .is_some_and(|oldest| at < oldest)
    {
        return Err(Invalid::new(
            Reason::TooOld,
            format!(
                "{} {} is older than the accepted window ({} s)",
                schema::OCCURRED_AT,
                rfc3339(at),
                policy.max_event_age.as_secs()
            ),
        ));
    }
    if now
        .checked_add(policy.max_event_future)
        .is_some_and(|latest| at > latest)
    {
        return Err(Invalid::new(
            Reason::InFuture,
            format!(
                "{} {} is more than {} s ahead of the ingester's clock",
                schema::OCCURRED_AT,
                rfc3339(at),
                policy.max_event_future.as_secs()
            ),
        ));
    }
    let metadata = normalize_metadata(metadata, policy.max_metadata_bytes)?;
    Ok(Record {
        unique_key: key.to_string(),
        hour: unix_seconds(at).div_euclid(HOUR_SECONDS) * HOUR_SECONDS,
        body: Body {
            instance: instance.to_string(),
            amount_type: amount_type.to_string(),
            value,
            occurred_at: rfc3339(at),
            metadata,
        },
    })
}

fn normalize_metadata(v: Option<&Value>, max_bytes: usize) -> Result<String, Invalid> {
    let entries = match v {
        None | Some(Value::Nil) => return Ok("{}".to_string()),
        Some(Value::Map(m)) => m,
        Some(_) => {
            return Err(Invalid::new(
                Reason::WrongType,
                format!("{} is not a map", schema::METADATA),
            ));
        }
    };
    let mut map = BTreeMap::new();
    let mut bytes = 0usize;
    for (k, v) in entries {
        let k = text(k, "a metadata key")?;
        let v = text(v, &format!("metadata value of {k:?}"))?;
        bytes = bytes.saturating_add(k.len() + v.len());
        if bytes > max_bytes {
            return Err(Invalid::new(
                Reason::MetadataTooLarge,
                format!("metadata is larger than {max_bytes} bytes"),
            ));
        }
        if map.insert(k, v).is_some() {
            return Err(Invalid::new(
                Reason::DuplicateField,
                format!("metadata key {k:?} appears twice"),
            ));
        }
    }
    serde_json::to_string(&map)
        .map_err(|e| Invalid::new(Reason::WrongType, format!("metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc3339::rfc3339_secs;
    use std::time::Duration;

    /// The validation clock of these tests: one hour after the records' time.
    fn now() -> SystemTime {
        parse_rfc3339("2026-11-27T05:33:58Z").unwrap()
    }

    fn check(record: &Value) -> Result<Record, Invalid> {
        validate(record, &Policy::default(), now())
    }

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

    fn with(i: usize, v: Value) -> Value {
        let mut f = good();
        f[i].1 = v;
        rec(&f)
    }

    #[test]
    fn normalizes_instant_and_metadata_order() {
        let r = check(&rec(&good())).unwrap();
        assert_eq!(r.body.occurred_at, "2026-11-27T04:33:58.5Z");
        assert_eq!(r.body.metadata, r#"{"a":"2","z":"1"}"#);
        assert_eq!(rfc3339_secs(r.hour), "2026-11-27T04:00:00Z");
    }

    #[test]
    fn hour_of_a_time_before_1970_rounds_down() {
        let policy = Policy::default().with_window(Duration::MAX, Duration::MAX);
        let r = validate(
            &with(4, Value::from("1969-12-31T23:59:59.5Z")),
            &policy,
            now(),
        );
        assert_eq!(r.unwrap().hour, -3600);
    }

    #[test]
    fn nil_or_absent_metadata_is_empty() {
        assert_eq!(check(&with(5, Value::Nil)).unwrap().body.metadata, "{}");
        let mut f = good();
        f.pop();
        assert_eq!(check(&rec(&f)).unwrap().body.metadata, "{}");
    }

    #[test]
    fn each_rule_refuses_with_its_reason_and_names_the_field() {
        let cases: Vec<(usize, Value, Reason, &str)> = vec![
            (0, Value::from(""), Reason::BlankKey, "unique_key is empty"),
            (0, Value::from(" \t"), Reason::BlankKey, "whitespace"),
            (
                0,
                Value::from(1),
                Reason::WrongType,
                "unique_key is not a string",
            ),
            (
                1,
                Value::from(1),
                Reason::WrongType,
                "internal_instance_id is not a string",
            ),
            (
                1,
                Value::from(""),
                Reason::EmptyField,
                "internal_instance_id is empty",
            ),
            (2, Value::from(""), Reason::InvalidAmountType, "amount_type"),
            (
                2,
                Value::from("free-money!"),
                Reason::InvalidAmountType,
                "amount_type",
            ),
            (
                2,
                Value::from("Bad Type"),
                Reason::InvalidAmountType,
                "amount_type",
            ),
            (
                2,
                Value::from("a".repeat(65)),
                Reason::InvalidAmountType,
                "amount_type",
            ),
            (
                3,
                Value::F64(2.0),
                Reason::WrongType,
                "amount_value is not an integer",
            ),
            (
                3,
                Value::from(u64::MAX),
                Reason::AmountOutOfRange,
                "amount_value does not fit",
            ),
            (
                3,
                Value::from(-1),
                Reason::NegativeAmount,
                "amount_value is negative",
            ),
            (
                4,
                Value::from("yesterday"),
                Reason::InvalidTime,
                "occurred_at",
            ),
            (
                4,
                Value::from("0001-01-01T00:00:00Z"),
                Reason::TooOld,
                "older",
            ),
            (
                4,
                Value::from("9999-12-31T23:59:59Z"),
                Reason::InFuture,
                "ahead",
            ),
            (
                5,
                Value::from("x"),
                Reason::WrongType,
                "metadata is not a map",
            ),
            (0, Value::from("a\0b"), Reason::NulCharacter, "NUL"),
            (
                0,
                Value::from("k".repeat(MAX_FIELD_BYTES + 1)),
                Reason::FieldTooLong,
                "longer",
            ),
            (
                0,
                Value::Binary(vec![0xff, 0xfe]),
                Reason::WrongType,
                "unique_key is not a string",
            ),
        ];
        for (i, v, reason, want) in cases {
            let err = check(&with(i, v.clone())).unwrap_err();
            assert_eq!(err.reason, reason, "{v:?}: {err}");
            assert!(err.detail.contains(want), "{err:?} should mention {want:?}");
        }
        let mut f = good();
        f.remove(3);
        let err = check(&rec(&f)).unwrap_err();
        assert_eq!(
            (err.reason, err.detail.as_str()),
            (Reason::MissingField, "amount_value is missing")
        );
        let mut f = good();
        f.push(("unique_key", Value::from("other")));
        assert_eq!(check(&rec(&f)).unwrap_err().reason, Reason::DuplicateField);
        assert_eq!(check(&Value::from(1)).unwrap_err().reason, Reason::NotAMap);
        let big = Value::Map(vec![(
            Value::from("k"),
            Value::from("v".repeat(DEFAULT_MAX_METADATA_BYTES)),
        )]);
        assert_eq!(
            check(&with(5, big)).unwrap_err().reason,
            Reason::MetadataTooLarge
        );
    }

    #[test]
    fn policy_overrides_accept_credits_other_windows_and_larger_metadata() {
        let credit = with(3, Value::from(-5));
        let p = Policy::default().with_allow_negative(true);
        assert_eq!(validate(&credit, &p, now()).unwrap().body.value, -5);

        // The window is relative to the clock given: a day-old record is too old for a
        // one-hour window and fine for the default.
        let day_later = now() + Duration::from_secs(24 * 3600);
        assert!(validate(&rec(&good()), &Policy::default(), day_later).is_ok());
        let hour = Policy::default().with_window(Duration::from_secs(3600), Duration::ZERO);
        assert_eq!(
            validate(&rec(&good()), &hour, day_later)
                .unwrap_err()
                .reason,
            Reason::TooOld
        );
        let day_earlier = now() - Duration::from_secs(24 * 3600);
        assert_eq!(
            validate(&rec(&good()), &hour, day_earlier)
                .unwrap_err()
                .reason,
            Reason::InFuture
        );

        let big = Value::Map(vec![(Value::from("k"), Value::from("v".repeat(100)))]);
        let small = Policy::default().with_max_metadata_bytes(50);
        assert_eq!(
            validate(&with(5, big.clone()), &small, now())
                .unwrap_err()
                .reason,
            Reason::MetadataTooLarge
        );
        assert!(validate(&with(5, big), &Policy::default(), now()).is_ok());
    }

    #[test]
    fn an_amount_type_list_refuses_the_others() {
        let p = Policy::default().with_amount_types(Some(["samples".to_string()].into()));
        assert!(validate(&rec(&good()), &p, now()).is_ok());
        let other = with(2, Value::from("free-money"));
        assert!(
            check(&other).is_ok(),
            "any type of the safe syntax by default"
        );
        assert_eq!(
            validate(&other, &p, now()).unwrap_err().reason,
            Reason::UnknownAmountType
        );
    }

    #[test]
    fn amount_type_syntax() {
        for ok in [
            "samples",
            "container-seconds",
            "gpu_seconds.v2",
            "a",
            &"a".repeat(64),
        ] {
            assert!(check_amount_type(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Samples", "free money", "x\ny", "ü", &"a".repeat(65)] {
            assert!(check_amount_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_policy_reasons_can_change_under_another_policy() {
        let policy: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.is_policy())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            policy,
            [
                "unknown_amount_type",
                "negative_amount",
                "too_old",
                "in_future",
                "metadata_too_large"
            ]
        );
        for r in Reason::ALL {
            assert_eq!(Reason::from_label(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_label("store_rejected"), None);
        // Every policy refusal passes under the most permissive policy.
        let open = Policy::default()
            .with_allow_negative(true)
            .with_window(Duration::MAX, Duration::MAX)
            .with_max_metadata_bytes(usize::MAX);
        let strict = Policy::default()
            .with_amount_types(Some(["other".to_string()].into()))
            .with_window(Duration::from_secs(1), Duration::ZERO)
            .with_max_metadata_bytes(1);
        let refused = validate(&with(3, Value::from(-5)), &strict, now()).unwrap_err();
        assert!(refused.reason.is_policy(), "{refused:?}");
        assert!(validate(&with(3, Value::from(-5)), &open, now()).is_ok());
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
