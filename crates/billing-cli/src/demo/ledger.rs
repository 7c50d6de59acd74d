//! The demo's books: what the producer had accepted, and the reconciliation of those books
//! against the client's metrics and the store. This is the module that decides whether the
//! demo passes, so it is kept free of delivery and generation code and can be read on its
//! own. Imports [`super::columns`] and [`super::print`] (for the reconciliation lines).
//!
//! Invariants:
//! - the books hold exactly the events the client accepted: the run books each event as it
//!   adds it and ends with an error on any add that fails for good;
//! - deliberate re-adds are booked apart from the unique events: only the unique ones may show
//!   up in the store, which dedupes by unique key;
//! - one record per non-zero amount, as the client turns an event into records;
//! - [`reconcile`] reports every failed check rather than stopping at the first, so one run
//!   shows everything that went wrong.

use billing_client::{Amounts, Metrics, Status};
use billing_ingest::{Summary, UsageRow};

use super::columns::TYPES;
use super::print::{group, group_u};

/// What the producer added, per amount type in [`TYPES`] order.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Sum and record count of accepted events with new unique keys.
    pub unique_sum: [i64; 3],
    pub unique_records: [i64; 3],
    pub unique_events: u64,
    /// The deliberate re-adds of already sent events.
    pub dup_sum: [i64; 3],
    pub dup_records: [i64; 3],
    pub dup_events: u64,
    /// Times the producer found the buffer full and backed off.
    pub waits: u64,
    /// Refusals for a full buffer that the producer retried.
    pub refused_retried: u64,
}

impl Ledger {
    /// Books one event's amounts, as a unique event or as a deliberate `duplicate`.
    pub(super) fn count(&mut self, amounts: &Amounts, duplicate: bool) {
        let (sum, records, events) = if duplicate {
            (
                &mut self.dup_sum,
                &mut self.dup_records,
                &mut self.dup_events,
            )
        } else {
            (
                &mut self.unique_sum,
                &mut self.unique_records,
                &mut self.unique_events,
            )
        };
        *events += 1;
        for (i, t) in TYPES.iter().enumerate() {
            if let Some(&v) = amounts.get(t).filter(|v| **v != 0) {
                sum[i] += v;
                records[i] += 1;
            }
        }
    }
}

/// Prints one reconciliation line per amount type and the drop and duplicate checks; returns
/// what failed.
pub(super) fn reconcile(
    ledger: &Ledger,
    metrics: &Metrics,
    rows: &[UsageRow],
    summary: &Summary,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut stored_sum = [0i64; 3];
    let mut stored_records = [0i64; 3];
    for r in rows {
        match TYPES.iter().position(|t| t.as_str() == r.amount_type) {
            Some(i) => {
                stored_sum[i] += i64::try_from(r.value).unwrap_or(i64::MAX);
                stored_records[i] += r.records;
            }
            None => failures.push(format!("unexpected amount type {:?} stored", r.amount_type)),
        }
    }
    for (i, t) in TYPES.iter().enumerate() {
        let ok =
            ledger.unique_sum[i] == stored_sum[i] && ledger.unique_records[i] == stored_records[i];
        println!(
            "reconcile {t}: accepted {} in {} records = stored {} in {} records: {}",
            group(ledger.unique_sum[i]),
            group(ledger.unique_records[i]),
            group(stored_sum[i]),
            group(stored_records[i]),
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            failures.push(format!("{t}: accepted and stored differ"));
        }
    }

    // The client's own account: every accepted event acknowledged, none dropped.
    let mut stopping = 0;
    let mut buffer_full = 0;
    for (i, t) in TYPES.iter().enumerate() {
        stopping += metrics.events_total(Status::Stopping, t);
        // One refusal counts once per type of the event; every event carries every type.
        buffer_full = buffer_full.max(metrics.events_total(Status::BufferFull, t));
        let acked = metrics.amounts_total(Status::Success, t);
        let accepted = ledger.unique_sum[i] + ledger.dup_sum[i];
        if i64::try_from(acked) != Ok(accepted) {
            failures.push(format!(
                "{t}: the client acknowledged {acked}, accepted {accepted}"
            ));
        }
    }
    let dropped = stopping + buffer_full.saturating_sub(ledger.refused_retried);
    println!(
        "dropped: {dropped} (stopping {stopping}, buffer_full {buffer_full}, {} refusals retried); the producer backed off {} times for a full buffer",
        ledger.refused_retried,
        group_u(ledger.waits),
    );
    if dropped > 0 {
        failures.push(format!("{dropped} events dropped by the client"));
    }

    let dup_records: i64 = ledger.dup_records.iter().sum();
    println!(
        "duplicates: {} events ({} records) re-added under keys already sent; the store removed {} duplicate records (with the resends after the restart); conflicts {}, quarantined {}",
        group_u(ledger.dup_events),
        group(dup_records),
        group(summary.duplicates),
        summary.conflicts,
        summary.quarantined,
    );
    if summary.duplicates < dup_records {
        failures.push(format!(
            "the store removed {} duplicates, fewer than the {dup_records} re-added",
            summary.duplicates
        ));
    }
    if summary.conflicts != 0 || summary.quarantined != 0 {
        failures.push(format!(
            "{} conflicts and {} quarantined records in the store",
            summary.conflicts, summary.quarantined
        ));
    }
    let stored_total: i64 = stored_records.iter().sum();
    if summary.records != stored_total {
        failures.push(format!(
            "the store counts {} records but its rollups {stored_total}",
            summary.records
        ));
    }
    failures
}
