//! Why a record is refused: [`Reason`], a stable low-cardinality label (the ingester's
//! quarantine reason and metric label), and [`Invalid`], the reason with a human-readable
//! detail.
//!
//! Invariant: labels never change once released (dashboards and alerts use them); new rules
//! add new reasons.

use std::fmt;

/// Why a record is invalid: a stable, low-cardinality label (see the module docs' table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The record is not a map.
    NotAMap,
    /// A field (or metadata key) appears twice.
    DuplicateField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong MessagePack type.
    WrongType,
    /// A string is not UTF-8.
    InvalidUtf8,
    /// A key, instance or type is longer than allowed.
    FieldTooLong,
    /// A key, instance or type contains NUL.
    NulCharacter,
    /// `unique_key` is empty or whitespace only.
    BlankKey,
    /// `internal_instance_id` is empty.
    EmptyField,
    /// `amount_type` is not of the safe syntax.
    InvalidAmountType,
    /// `amount_type` is not one of the types the ingester bills.
    UnknownAmountType,
    /// `amount_value` does not fit an `i64`.
    AmountOutOfRange,
    /// `amount_value` is negative and the policy does not allow credits.
    NegativeAmount,
    /// `occurred_at` is not an RFC 3339 time.
    InvalidTime,
    /// `occurred_at` is older than the policy's window.
    TooOld,
    /// `occurred_at` is further ahead than the policy's window.
    InFuture,
    /// The metadata is larger than the policy allows.
    MetadataTooLarge,
}

impl Reason {
    /// Every reason, for metrics that list each one from the start.
    pub const ALL: [Reason; 17] = [
        Reason::NotAMap,
        Reason::DuplicateField,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidUtf8,
        Reason::FieldTooLong,
        Reason::NulCharacter,
        Reason::BlankKey,
        Reason::EmptyField,
        Reason::InvalidAmountType,
        Reason::UnknownAmountType,
        Reason::AmountOutOfRange,
        Reason::NegativeAmount,
        Reason::InvalidTime,
        Reason::TooOld,
        Reason::InFuture,
        Reason::MetadataTooLarge,
    ];

    /// The label: snake case, stable across versions.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAMap => "not_a_map",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::FieldTooLong => "field_too_long",
            Reason::NulCharacter => "nul_character",
            Reason::BlankKey => "blank_key",
            Reason::EmptyField => "empty_field",
            Reason::InvalidAmountType => "invalid_amount_type",
            Reason::UnknownAmountType => "unknown_amount_type",
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::NegativeAmount => "negative_amount",
            Reason::InvalidTime => "invalid_time",
            Reason::TooOld => "too_old",
            Reason::InFuture => "in_future",
            Reason::MetadataTooLarge => "metadata_too_large",
        }
    }
}

impl Reason {
    /// Whether the rule is one of the ingester's [`Policy`](super::Policy) (the *policy* rows
    /// of the module docs' table: known amount types, credits, the time window, metadata size):
    /// a record refused for such a reason may pass under another policy, while the other
    /// reasons are about the record itself and refuse it under every policy.
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Reason::UnknownAmountType
                | Reason::NegativeAmount
                | Reason::TooOld
                | Reason::InFuture
                | Reason::MetadataTooLarge
        )
    }

    /// The reason whose label is `label`, if any.
    pub fn from_label(label: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == label)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record: the rule it broke and a human-readable detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The rule.
    pub reason: Reason,
    /// What exactly was wrong, e.g. `amount_value is not an integer`. May quote parts of the
    /// record: escape it before logging.
    pub detail: String,
}

impl Invalid {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Invalid {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Invalid {}
