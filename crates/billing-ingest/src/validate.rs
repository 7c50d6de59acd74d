//! A frame's entries sorted into valid records and quarantined ones, by the schema's rules
//! under the ingester's [`Policy`] ([`billing_schema::validate`]), so that every store sorts a
//! frame identically. The ingest handler checks each frame once, counts the refusals by
//! reason, and hands the result to the store with the frame.
//!
//! Invariants: `valid.len() + invalid.len()` is the frame's entry count, in wire order within
//! each list; an invalid entry keeps its raw form (as the `jsonl:` store writes it), its
//! reason label and a detail, and its key when it has a readable one (for the log summary).

use std::collections::BTreeMap;
use std::time::SystemTime;

pub(crate) use billing_schema::rfc3339_secs;
pub(crate) use billing_schema::validate::{Body, HOUR_SECONDS, Record};
use billing_schema::validate::{Policy, validate};
use forward::Entry;

/// A frame's rollup deltas by `(instance, amount_type, hour)`: the exact sum of the values and
/// the number of records.
pub(crate) type RollupSums<'a> = BTreeMap<(&'a str, &'a str, i64), (i128, i64)>;

/// Adds `r` to its bucket of `sums`; `None` when the sum would pass 128 bits.
pub(crate) fn add_to_rollup<'a>(sums: &mut RollupSums<'a>, r: &'a Record) -> Option<()> {
    let slot = sums
        .entry((&r.body.instance, &r.body.amount_type, r.hour))
        .or_default();
    slot.0 = slot.0.checked_add(i128::from(r.body.value))?;
    slot.1 += 1;
    Some(())
}

/// Label of a record the store itself refused (counted with the validation reasons).
pub const STORE_REJECTED: &str = "store_rejected";

/// Every quarantine reason label: the schema's validation reasons and [`STORE_REJECTED`].
pub fn quarantine_reasons() -> impl Iterator<Item = &'static str> {
    billing_schema::validate::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(std::iter::once(STORE_REJECTED))
}

/// An entry that failed validation, kept aside with its raw form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantined {
    /// Why, as a stable label (a [`billing_schema::validate::Reason`] or [`STORE_REJECTED`]).
    pub reason: &'static str,
    /// What exactly was wrong. Peer-controlled: escape it before logging.
    pub detail: String,
    /// `{"tag","time","record"[,"metadata"]}` as the `jsonl:` store writes it.
    pub raw: String,
    /// The entry's `unique_key`, when it is a string. Peer-controlled.
    pub key: Option<String>,
}

impl Quarantined {
    /// The text kept in the quarantine table's `reason` column: `label: detail`.
    pub fn reason_text(&self) -> String {
        format!("{}: {}", self.reason, self.detail)
    }
}

/// A frame's entries sorted into valid and invalid ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checked {
    /// Valid records.
    pub valid: Vec<Record>,
    /// Invalid entries.
    pub invalid: Vec<Quarantined>,
}

impl Checked {
    /// Validates every entry of a frame under `policy`, with `now` as the ingester's clock.
    pub fn frame(frame: &forward::Frame, policy: &Policy, now: SystemTime) -> Self {
        let mut out = Checked {
            valid: Vec::with_capacity(frame.entries.len()),
            invalid: Vec::new(),
        };
        for entry in &frame.entries {
            match validate(&entry.record, policy, now) {
                Ok(r) => out.valid.push(r),
                Err(invalid) => out.invalid.push(Quarantined {
                    raw: raw_json(&frame.tag, entry),
                    reason: invalid.reason.as_str(),
                    detail: invalid.detail,
                    key: key_of(&entry.record),
                }),
            }
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.valid.len() + self.invalid.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(record: &rmpv::Value) -> Option<String> {
    let rmpv::Value::Map(fields) = record else {
        return None;
    };
    fields
        .iter()
        .find(|(k, _)| k.as_str() == Some(billing_schema::record::UNIQUE_KEY))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
}

fn raw_json(tag: &str, entry: &Entry) -> String {
    let mut out = Vec::with_capacity(256);
    if crate::jsonl::write_entry_line(&mut out, tag, entry).is_err() {
        return String::from("{}");
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
