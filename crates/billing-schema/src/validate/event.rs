//! The client-side half of validation: the rules an event must meet before a client accepts
//! it, so that what it sends is never quarantined for a reason it could have known.

use super::policy::{DEFAULT_MAX_METADATA_BYTES, MAX_AMOUNT_TYPE_BYTES, MAX_FIELD_BYTES};
use super::reason::{Invalid, Reason};
use crate::record as schema;

/// Whether a caller's key is blank (empty or whitespace only): the client refuses such an
/// event (the Go client's `billing: units uniqueKey cannot be blank`) and the ingester
/// quarantines such a record.
pub fn is_blank_key(key: &str) -> bool {
    key.trim().is_empty()
}

/// Checks an amount type's syntax: 1 to [`MAX_AMOUNT_TYPE_BYTES`] bytes of `a-z`, `0-9`, `-`,
/// `_`, `.`. Safe in logs, metric labels, CSV and file names without escaping.
///
/// # Errors
/// [`Reason::InvalidAmountType`] with a detail.
pub fn check_amount_type(ty: &str) -> Result<(), Invalid> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if ty.is_empty() || ty.len() > MAX_AMOUNT_TYPE_BYTES || !ty.bytes().all(ok_char) {
        return Err(Invalid::new(
            Reason::InvalidAmountType,
            format!(
                "amount_type {ty:?} is not 1 to {MAX_AMOUNT_TYPE_BYTES} bytes of a-z, 0-9, '-', '_', '.'"
            ),
        ));
    }
    Ok(())
}

/// The rules an event must meet before a client accepts it: those of the table above that
/// depend on the event alone and not on the ingester's policy (blank key, empty instance, field
/// sizes, NUL, amount type syntax, and the default metadata size), so that a record the client
/// sends is never quarantined for them. Negative amounts and the time window are the
/// ingester's policy and are not checked here.
///
/// # Errors
/// The first rule broken.
pub fn check_event(event: &crate::Event) -> Result<(), Invalid> {
    if is_blank_key(&event.unique_key) {
        return Err(Invalid::new(Reason::BlankKey, "unique_key is blank"));
    }
    if event.internal_instance_id.is_empty() {
        return Err(Invalid::new(
            Reason::EmptyField,
            "internal_instance_id is empty",
        ));
    }
    let longest_type = event.amounts.keys().map(|t| t.as_str().len()).max();
    let key_len = event.unique_key.len() + 1 + longest_type.unwrap_or(0);
    for (field, len) in [
        (schema::UNIQUE_KEY, key_len),
        (
            schema::INTERNAL_INSTANCE_ID,
            event.internal_instance_id.len(),
        ),
    ] {
        if len > MAX_FIELD_BYTES {
            return Err(Invalid::new(
                Reason::FieldTooLong,
                format!("{field} is longer than {MAX_FIELD_BYTES} bytes"),
            ));
        }
    }
    if event.unique_key.contains('\0') || event.internal_instance_id.contains('\0') {
        return Err(Invalid::new(
            Reason::NulCharacter,
            "unique_key or internal_instance_id contains a NUL character",
        ));
    }
    for t in event.amounts.keys() {
        check_amount_type(t.as_str())?;
    }
    let metadata: usize = event.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if metadata > DEFAULT_MAX_METADATA_BYTES {
        return Err(Invalid::new(
            Reason::MetadataTooLarge,
            format!("metadata is larger than {DEFAULT_MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}
