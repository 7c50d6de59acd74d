//! Quarantine entries made by a store itself: valid records the database refused
//! ([`STORE_REJECTED`]), and what a database store hands back for one frame ([`Wrote`]).
//!
//! Why: when the database refuses one record (see [`crate::store_error`]) the store redoes the
//! frame record by record and keeps the refused ones in `quarantine`, with the database's
//! message as the detail, so that the rest of the chunk is stored and acked. The row keeps the
//! entry's raw form as the `jsonl:` store writes it, so that the record can be billed once the
//! cause is fixed.
//!
//! Invariant: the raw form of a refused record is that of a frame entry with the same
//! `unique_key`, `internal_instance_id`, `amount_type` and `amount_value` (the first such
//! entry in wire order); when none matches (never, for a frame the store was given with its
//! own checked records) it is the normalized record, without `time`.

use std::collections::HashMap;

use forward::{Entry, Frame};

use crate::log::Escaped;
use crate::validate::{Quarantined, Record, STORE_REJECTED};
use crate::{StoreError, Written};

/// Refused records named in a frame's warning, at most.
const LOGGED: usize = 3;

/// What a database store did with a frame, once committed.
#[derive(Debug, Default)]
pub(crate) struct Wrote {
    /// The outcome and conflicts, as for any frame.
    pub written: Written,
    /// Quarantine rows counted but not written (the bound was reached).
    pub unstored: u64,
    /// Records the database refused, kept in quarantine as [`STORE_REJECTED`].
    pub rejected: Vec<Quarantined>,
}

impl Wrote {
    /// Logs the refused records (one line per frame) and returns the written part.
    pub(crate) fn log_rejected(self) -> (Written, u64) {
        if let Some(first) = self.rejected.first() {
            let keys: Vec<String> = self
                .rejected
                .iter()
                .take(LOGGED)
                .map(|q| Escaped(q.key.as_deref().unwrap_or("")).to_string())
                .collect();
            tracing::warn!(
                rejected = self.rejected.len(),
                first_keys = ?keys,
                error = %Escaped(&first.detail),
                "the store refused records; they are quarantined as {STORE_REJECTED} and the \
                 rest of the chunk is stored"
            );
        }
        (self.written, self.unstored)
    }
}

/// The frame's entries by `unique_key`, to find a refused record's raw form.
pub(crate) struct RawIndex<'a> {
    frame: &'a Frame,
    by_key: HashMap<&'a str, Vec<&'a Entry>>,
}

impl<'a> RawIndex<'a> {
    /// Indexes `frame`'s entries that have a string `unique_key`.
    pub(crate) fn new(frame: &'a Frame) -> Self {
        let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
        for entry in &frame.entries {
            if let Some(key) = field(&entry.record, billing_schema::record::UNIQUE_KEY)
                .and_then(rmpv::Value::as_str)
            {
                by_key.entry(key).or_default().push(entry);
            }
        }
        RawIndex { frame, by_key }
    }

    /// The raw JSON of `record`'s entry (see the module docs).
    pub(crate) fn raw(&self, record: &Record) -> String {
        use billing_schema::record as f;
        let entry = self.by_key.get(record.unique_key.as_str()).and_then(|es| {
            es.iter().find(|e| {
                let text = |name| field(&e.record, name).and_then(rmpv::Value::as_str);
                text(f::INTERNAL_INSTANCE_ID) == Some(record.body.instance.as_str())
                    && text(f::AMOUNT_TYPE) == Some(record.body.amount_type.as_str())
                    && field(&e.record, f::AMOUNT_VALUE).and_then(rmpv::Value::as_i64)
                        == Some(record.body.value)
            })
        });
        let mut out = Vec::with_capacity(256);
        if let Some(e) = entry
            && crate::jsonl::write_entry_line(&mut out, &self.frame.tag, e).is_ok()
        {
            if out.last() == Some(&b'\n') {
                out.pop();
            }
            return String::from_utf8_lossy(&out).into_owned();
        }
        normalized(&self.frame.tag, record)
    }

    /// A [`STORE_REJECTED`] entry for `record`, refused with `error`.
    pub(crate) fn rejected(&self, record: &Record, error: &StoreError) -> Quarantined {
        rejected(self.raw(record), record, error)
    }
}

/// A [`STORE_REJECTED`] entry for `record` with the raw form `raw`, refused with `error`.
pub(crate) fn rejected(raw: String, record: &Record, error: &StoreError) -> Quarantined {
    Quarantined {
        reason: STORE_REJECTED,
        detail: error.to_string(),
        raw,
        key: Some(record.unique_key.clone()),
    }
}

fn field<'v>(record: &'v rmpv::Value, name: &str) -> Option<&'v rmpv::Value> {
    match record {
        rmpv::Value::Map(fields) => fields
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn normalized(tag: &str, r: &Record) -> String {
    let metadata: serde_json::Value =
        serde_json::from_str(&r.body.metadata).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "tag": tag,
        "record": {
            "unique_key": r.unique_key,
            "internal_instance_id": r.body.instance,
            "amount_type": r.body.amount_type,
            "amount_value": r.body.value,
            "occurred_at": r.body.occurred_at,
            "metadata": metadata,
        },
    })
    .to_string()
}
