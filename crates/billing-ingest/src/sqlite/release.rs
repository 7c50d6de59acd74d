//! Quarantine releases in a SQLite store (see `release.rs` for what a release guarantees): each
//! batch is one `BEGIN IMMEDIATE` transaction that reads its rows, stores the records that
//! pass through the ingest path (`write::each_in_savepoint`), deletes their rows, rewrites the
//! reasons that changed, and updates the counters; a dry run keeps every batch in one
//! transaction and rolls it back.

use std::time::SystemTime;

use billing_schema::validate::Policy;
use rusqlite::{Connection, TransactionBehavior, params};

use super::write;
use crate::release::{self, Failing, RELEASE_BATCH, ReleaseFilter, Released, Row};
use crate::{StoreError, Written};

/// Releases the rows `filter` selects under `policy` at `now` (see `release.rs`).
///
/// # Errors
/// Query failures: the batch in progress is rolled back, the batches before it stay released.
pub(crate) fn release(
    conn: &mut Connection,
    filter: &ReleaseFilter,
    policy: &Policy,
    now: SystemTime,
    dry_run: bool,
) -> Result<Released, StoreError> {
    let mut total = Released {
        dry_run,
        ..Released::default()
    };
    let mut after = i64::MIN;
    if dry_run {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        while let Some(last) = batch(&tx, filter, after, policy, now, &mut total)? {
            after = last;
        }
        tx.rollback()?;
        return Ok(total);
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut counted = total.clone();
        let Some(last) = batch(&tx, filter, after, policy, now, &mut counted)? else {
            break;
        };
        tx.commit()?;
        total = counted;
        after = last;
    }
    Ok(total)
}

/// One batch inside `tx`: the rows after id `after`; the last id examined, `None` when there
/// was none left.
fn batch(
    tx: &Connection,
    filter: &ReleaseFilter,
    after: i64,
    policy: &Policy,
    now: SystemTime,
    total: &mut Released,
) -> Result<Option<i64>, StoreError> {
    let ids = filter
        .ids
        .as_ref()
        .map(|ids| serde_json::Value::from(ids.clone()).to_string());
    let rows = tx
        .prepare_cached(
            "SELECT id, reason, raw FROM quarantine
             WHERE id > ?1
               AND (?2 IS NULL OR substr(reason, 1, length(?2)) = ?2)
               AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))
             ORDER BY id LIMIT ?4",
        )?
        .query_map(
            params![after, filter.reason, ids, RELEASE_BATCH as i64],
            |r| {
                Ok(Row {
                    id: r.get(0)?,
                    reason: r.get(1)?,
                    raw: r.get(2)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let Some(last) = rows.last().map(|r| r.id) else {
        return Ok(None);
    };
    total.examined += rows.len() as u64;
    let checked = release::recheck(rows, policy, now);
    let mut failing = checked.failing;
    let records: Vec<_> = checked.valid.iter().map(|(_, _, r)| r).collect();
    let mut written = Written::default();
    let mut refused = write::each_in_savepoint(tx, &records, &mut written)?;
    refused.sort_by_key(|(i, _)| *i);
    let mut refused = refused.into_iter().peekable();
    let mut delete = tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
    let mut released = 0i64;
    for (i, (id, old, _)) in checked.valid.iter().enumerate() {
        match refused.next_if(|(j, _)| *j == i) {
            Some((_, e)) => failing.push(Failing::rejected(*id, old, &e)),
            None => {
                delete.execute([id])?;
                released += 1;
            }
        }
    }
    let mut update = tx.prepare_cached("UPDATE quarantine SET reason = ?2 WHERE id = ?1")?;
    for f in failing.iter().filter(|f| f.changed) {
        update.execute(params![f.id, f.reason])?;
    }
    let o = &written.outcome;
    tx.prepare_cached(
        "INSERT INTO counters (slot, stored, duplicates, conflicts, released, quarantine_rows)
         VALUES (0, ?1, ?2, ?3, ?4, -?4)
         ON CONFLICT (slot) DO UPDATE SET
           stored = stored + excluded.stored,
           duplicates = duplicates + excluded.duplicates,
           conflicts = conflicts + excluded.conflicts,
           released = released + excluded.released,
           quarantine_rows = quarantine_rows + excluded.quarantine_rows",
    )?
    .execute(params![
        o.stored as i64,
        o.duplicates as i64,
        o.conflicts as i64,
        released
    ])?;
    total.add(&written, &failing);
    Ok(Some(last))
}
