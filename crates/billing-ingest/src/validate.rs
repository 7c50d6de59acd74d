//! A frame's entries sorted into valid records and quarantined ones, by the schema's rules
//! ([`billing_schema::validate`]), shared by every database store so that SQLite and
//! PostgreSQL sort a frame identically. An invalid entry keeps its raw form (as the `jsonl:`
//! store writes it) and the first reason found.

pub(crate) use billing_schema::rfc3339::rfc3339_secs;
use billing_schema::validate::validate;
pub(crate) use billing_schema::validate::{Body, HOUR_SECONDS, Record};
use forward::Entry;

/// An entry that failed validation, kept aside with its raw form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Why it was refused.
    pub reason: String,
    /// `{"tag","time","record"[,"metadata"]}` as the `jsonl:` store writes it.
    pub raw: String,
}

/// A frame's entries sorted into valid and invalid ones, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Valid records.
    pub valid: Vec<Record>,
    /// Invalid entries.
    pub invalid: Vec<Quarantined>,
}

impl Checked {
    /// Validates every entry of a frame.
    pub fn frame(frame: &forward::Frame) -> Self {
        let mut out = Checked {
            valid: Vec::with_capacity(frame.entries.len()),
            invalid: Vec::new(),
        };
        for entry in &frame.entries {
            match validate(&entry.record) {
                Ok(r) => out.valid.push(r),
                Err(reason) => out.invalid.push(Quarantined {
                    raw: raw_json(&frame.tag, entry),
                    reason,
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
