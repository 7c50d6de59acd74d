//! The amount types of the demo, in one place because three jobs must agree on their order:
//! the ledger counts per type, the hourly table prints one column per type, and the run arms
//! the hidden fault on the first type. A leaf: it imports no other demo module.
//!
//! Invariant: every event the usage generator makes carries exactly these types; the ledger's
//! `[_; 3]` arrays are indexed by position in [`TYPES`].

use billing_client::AmountType;

/// The amount types every generated event carries, in report column order.
pub(super) const TYPES: [AmountType; 3] = [
    AmountType::CONTAINER_SECONDS,
    AmountType::NODE_SECONDS,
    AmountType::SAMPLES,
];
