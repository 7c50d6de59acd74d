//! Releasing quarantined entries (`billing quarantine release`): each entry is checked again
//! under the *current* [`Policy`]; one that now passes is stored exactly as if it had just
//! arrived, and leaves the quarantine.
//!
//! Why: most quarantined entries were refused by the ingester's policy, not for being broken
//! (an event older than the accepted window after an outage, an amount type not billed yet, a
//! credit before credits were allowed). Once the operator widens the policy, those records are
//! owed to the bill; re-sending them is rarely possible, the quarantine keeps their raw form.
//!
//! What a release guarantees (both stores; the SQL is in `sqlite/release.rs` and
//! `postgres/release.rs`, this module holds what they share):
//! - rows are taken in id order, in batches of at most [`RELEASE_BATCH`], **one transaction per
//!   batch**: the records that pass are offered through the ingest path (dedupe by
//!   `unique_key`: stored, or counted as a duplicate or a conflict; rollups and per-key
//!   duplicate counts updated) and their rows are deleted in that same transaction, so a crash
//!   never leaves a record both stored and quarantined, nor neither;
//! - a released record is stored once: a second release finds no row to release, and a row
//!   whose key is already stored (e.g. the same invalid event sent twice) counts as a
//!   duplicate or a conflict, never a second charge;
//! - an entry that still fails stays, with the reason of the current policy (its `reason`
//!   text is rewritten when it changed, e.g. a narrower window named in the detail); a record
//!   the database refuses again stays as [`STORE_REJECTED`] with the new message;
//! - counters: `stored`, `duplicates` and `conflicts` grow by the released entries' outcomes,
//!   `released` by their number, and `quarantine_rows` (rows now in the table) drops by it;
//!   `received` and `quarantined` are historical counts of arrivals and stay, so
//!   `received = stored + duplicates + conflicts + quarantined - released` still holds;
//! - a dry run does all of it in one transaction over every batch and rolls it back: its
//!   counts are exactly what the release would do now (a key released in one batch is a
//!   duplicate in the next, as it would be), and nothing changes. That transaction lasts the
//!   whole run (in SQLite it holds the write lock, so ingesters wait, up to their busy
//!   timeout): narrow the dry run of a large quarantine with a reason or ids.
//!
//! Which entries are checked again: only those refused for a policy reason
//! ([`Reason::is_policy`]) or by the store ([`STORE_REJECTED`]). The quarantine keeps an
//! entry's JSON form, which does not keep every MessagePack detail (binary and text strings
//! look alike, invalid UTF-8 is replaced, a repeated map key is merged), so an entry refused
//! for its structure could look valid once read back; those reasons cannot change under any
//! policy, and such entries stay as they are. (A policy-refused entry is read back from the
//! same JSON, so a field the ingester had not reached when the policy rule refused it, e.g.
//! `metadata` of a record too old, is checked in its JSON form.)

use std::collections::BTreeMap;
use std::time::SystemTime;

use billing_schema::validate::{Policy, Reason, validate};
use rmpv::Value;

use crate::Written;
use crate::validate::{Record, STORE_REJECTED};

/// Most quarantine rows one release transaction takes.
pub const RELEASE_BATCH: usize = 500;

/// Which quarantine rows a release examines: every row matching each filter that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseFilter {
    /// Only rows whose reason starts with this (e.g. `too_old`).
    pub reason: Option<String>,
    /// Only these row ids.
    pub ids: Option<Vec<i64>>,
}

impl ReleaseFilter {
    /// Every quarantine row.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only rows whose reason starts with `prefix`.
    #[must_use]
    pub fn reason(mut self, prefix: impl Into<String>) -> Self {
        self.reason = Some(prefix.into());
        self
    }

    /// Only the rows with these ids.
    #[must_use]
    pub fn ids(mut self, ids: impl IntoIterator<Item = i64>) -> Self {
        let mut ids: Vec<i64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        self.ids = Some(ids);
        self
    }
}

/// What a release did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Released {
    /// Nothing was changed: the counts are what the release would do.
    pub dry_run: bool,
    /// Quarantine rows examined.
    pub examined: u64,
    /// Released records stored (their key was new).
    pub stored: u64,
    /// Released records whose key was stored with the same body (counted, not stored again).
    pub duplicates: u64,
    /// Released records whose key was stored with another body (kept in `conflicts`).
    pub conflicts: u64,
    /// Rows that stay in quarantine, by reason label.
    pub still_failing: BTreeMap<String, u64>,
    /// Per amount type: the exact sum of `amount_value` and the number of records stored.
    pub amounts: BTreeMap<String, (i128, u64)>,
}

impl Released {
    /// Rows that left the quarantine: stored, duplicates and conflicts.
    pub fn released(&self) -> u64 {
        self.stored + self.duplicates + self.conflicts
    }

    /// Rows that stay in quarantine.
    pub fn failing(&self) -> u64 {
        self.still_failing.values().sum()
    }

    /// Adds a batch: what storing its valid records wrote, and the rows that stay.
    pub(crate) fn add(&mut self, written: &Written, failing: &[Failing]) {
        let o = &written.outcome;
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.conflicts += o.conflicts;
        for (amount_type, (value, records)) in &written.amounts {
            let slot = self.amounts.entry(amount_type.clone()).or_default();
            slot.0 = slot.0.saturating_add(*value);
            slot.1 += records;
        }
        for f in failing {
            *self.still_failing.entry(f.label.clone()).or_default() += 1;
        }
    }
}

/// One quarantine row as a release reads it.
#[derive(Debug)]
pub(crate) struct Row {
    pub id: i64,
    pub reason: String,
    pub raw: String,
}

/// A row that stays in quarantine.
#[derive(Debug)]
pub(crate) struct Failing {
    pub id: i64,
    /// The reason's label (the part before `": "`).
    pub label: String,
    /// The reason text to keep.
    pub reason: String,
    /// Whether `reason` differs from the row's.
    pub changed: bool,
}

impl Failing {
    /// The row `id` (whose reason was `old`) stays because the store refused its record.
    pub(crate) fn rejected(id: i64, old: &str, error: &crate::StoreError) -> Failing {
        Failing::new(id, old, STORE_REJECTED.to_string(), error.to_string())
    }

    fn new(id: i64, old: &str, label: String, detail: String) -> Failing {
        let reason = format!("{label}: {detail}");
        Failing {
            id,
            changed: reason != old,
            label,
            reason,
        }
    }

    fn unchanged(row: &Row) -> Failing {
        Failing {
            id: row.id,
            label: label(&row.reason).to_string(),
            reason: row.reason.clone(),
            changed: false,
        }
    }
}

/// A batch's rows under the current policy: the records that pass (with their row id and
/// old reason), in id order, and the rows that stay.
#[derive(Debug, Default)]
pub(crate) struct Rechecked {
    pub valid: Vec<(i64, String, Record)>,
    pub failing: Vec<Failing>,
}

/// The label of a quarantine reason text (`label: detail`).
fn label(reason: &str) -> &str {
    reason.split_once(':').map_or(reason, |(l, _)| l).trim()
}

/// Sorts `rows` (in id order) by what the current `policy` says of them at `now`.
pub(crate) fn recheck(rows: Vec<Row>, policy: &Policy, now: SystemTime) -> Rechecked {
    let mut out = Rechecked::default();
    for row in rows {
        let l = label(&row.reason);
        let again = l == STORE_REJECTED || Reason::from_label(l).is_some_and(Reason::is_policy);
        let record = again.then(|| record_of(&row.raw)).flatten();
        match record.map(|r| validate(&r, policy, now)) {
            Some(Ok(r)) => out.valid.push((row.id, row.reason, r)),
            Some(Err(invalid)) => out.failing.push(Failing::new(
                row.id,
                &row.reason,
                invalid.reason.as_str().to_string(),
                invalid.detail,
            )),
            None => out.failing.push(Failing::unchanged(&row)),
        }
    }
    out
}

/// The record of a quarantine row's raw form (`{"tag","time","record",...}`, as the `jsonl:`
/// store writes an entry), as the MessagePack value validation reads.
fn record_of(raw: &str) -> Option<Value> {
    let mut entry: serde_json::Value = serde_json::from_str(raw).ok()?;
    Some(to_msgpack(entry.get_mut("record")?.take()))
}

fn to_msgpack(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (None, Some(i), _) => Value::from(i),
            (None, None, Some(f)) => Value::F64(f),
            (None, None, None) => Value::Nil,
        },
        J::String(s) => Value::from(s),
        J::Array(a) => Value::Array(a.into_iter().map(to_msgpack).collect()),
        J::Object(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| (Value::from(k), to_msgpack(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn row(id: i64, reason: &str, record: serde_json::Value) -> Row {
        Row {
            id,
            reason: reason.to_string(),
            raw: serde_json::json!({"tag": "billing", "time": "2026-11-27T04:00:00Z", "record": record})
                .to_string(),
        }
    }

    fn record(key: &str, value: i64, at: &str) -> serde_json::Value {
        serde_json::json!({
            "unique_key": key, "internal_instance_id": "i-1", "amount_type": "samples",
            "amount_value": value, "occurred_at": at, "metadata": {"b": "1", "a": "2"},
        })
    }

    #[test]
    fn policy_and_store_refusals_are_checked_again_and_the_others_stay_as_they_are() {
        let now = billing_schema::parse_rfc3339("2026-11-27T05:00:00Z").unwrap();
        let old = "2026-11-26T05:00:00Z";
        let rows = vec![
            row(1, "too_old: x", record("a", 5, old)),
            row(2, "negative_amount: y", record("b", -1, old)),
            row(3, "store_rejected: PostgreSQL: z", record("c", 7, old)),
            // Looks valid in JSON, but its reason is about the record itself.
            row(
                4,
                "wrong_type: amount_value is not an integer",
                record("d", 1, old),
            ),
            Row {
                id: 5,
                reason: "too_old: not JSON".into(),
                raw: "{".into(),
            },
        ];
        let wide = Policy::default().with_window(Duration::from_secs(48 * 3600), Duration::ZERO);
        let checked = recheck(rows, &wide, now);
        let valid: Vec<(i64, &str)> = checked
            .valid
            .iter()
            .map(|(id, _, r)| (*id, r.unique_key.as_str()))
            .collect();
        assert_eq!(valid, [(1, "a"), (3, "c")]);
        assert_eq!(checked.valid[0].2.body.metadata, r#"{"a":"2","b":"1"}"#);
        let failing: Vec<(i64, &str, bool)> = checked
            .failing
            .iter()
            .map(|f| (f.id, f.label.as_str(), f.changed))
            .collect();
        assert_eq!(
            failing,
            [
                (2, "negative_amount", true),
                (4, "wrong_type", false),
                (5, "too_old", false)
            ]
        );
        assert!(
            checked.failing[0]
                .reason
                .starts_with("negative_amount: amount_value is negative")
        );
    }

    #[test]
    fn json_numbers_keep_their_kind() {
        assert_eq!(to_msgpack(serde_json::json!(5)), Value::from(5u64));
        assert_eq!(to_msgpack(serde_json::json!(-5)), Value::from(-5i64));
        assert_eq!(to_msgpack(serde_json::json!(2.0)), Value::F64(2.0));
    }
}
