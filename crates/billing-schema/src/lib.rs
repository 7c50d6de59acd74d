//! The billing record schema, in one place for the client that writes records and the
//! ingester that reads them, so the two cannot drift apart.
//!
//! - `event.rs`: the caller's view of usage ([`AmountType`], [`Amounts`], [`Metadata`],
//!   [`Event`]), with the Go client's field names when serialized;
//! - [`record`]: the wire record: [`record::TAG`], the field names, and [`record::RecordRef`], the writer of one
//!   record as MessagePack or as the Go client's JSON;
//! - `rfc3339.rs`: the one time format of `occurred_at` ([`rfc3339()`] and
//!   [`parse_rfc3339`]);
//! - [`validate`](mod@validate): the rules a received record must meet and its normalized
//!   form, which decides dedupe.
//!
//! Invariant: every record [`record::RecordRef`] writes from an event the client accepts passes
//! [`validate()`](validate::validate), and its normalized fields equal the event's (tested in
//! `tests/write_then_validate.rs`).
//!
//! Module graph (no cycles): `rfc3339` ← `event` ← `record`; `validate` uses `rfc3339` and
//! `record`'s field names.

mod event;
pub mod record;
mod rfc3339;
pub mod validate;

pub use event::{AmountType, Amounts, Event, Metadata};
pub use rfc3339::{Rfc3339, parse_rfc3339, rfc3339, rfc3339_secs};
