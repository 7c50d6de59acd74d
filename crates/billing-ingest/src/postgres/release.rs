//! Quarantine releases in a PostgreSQL store (see `release.rs` for what a release
//! guarantees): each batch is one READ COMMITTED transaction on one pooled connection that
//! locks its quarantine rows (`FOR UPDATE`, in id order, so two releases never take a row
//! twice: the second waits, then skips the rows the first deleted), stores the records that
//! pass through the ingest path (`write::each_in_savepoint`, records sorted by key: the lock
//! order of every frame), deletes their rows, rewrites the reasons that changed, and updates
//! the counters last, as a frame does. A dry run keeps every batch in one transaction and
//! rolls it back.

use std::time::SystemTime;

use billing_schema::validate::Policy;
use deadpool_postgres::{Object, Transaction};

use super::write;
use crate::release::{self, Failing, RELEASE_BATCH, ReleaseFilter, Released, Row};
use crate::{StoreError, Written};

const SELECT_ROWS: &str = "SELECT id, reason, raw FROM quarantine
     WHERE id > $1
       AND ($2::TEXT IS NULL OR starts_with(reason, $2))
       AND ($3::BIGINT[] IS NULL OR id = ANY($3))
     ORDER BY id LIMIT $4
     FOR UPDATE";

const DELETE_ROWS: &str = "DELETE FROM quarantine WHERE id = ANY($1::BIGINT[])";

const SET_REASON: &str = "UPDATE quarantine SET reason = $2 WHERE id = $1";

const COUNT_RELEASED: &str =
    "INSERT INTO counters (slot, stored, duplicates, conflicts, released, quarantine_rows)
     VALUES (pg_backend_pid() % 16, $1::BIGINT, $2::BIGINT, $3::BIGINT, $4::BIGINT, -$4::BIGINT)
     ON CONFLICT (slot) DO UPDATE SET
       stored = counters.stored + excluded.stored,
       duplicates = counters.duplicates + excluded.duplicates,
       conflicts = counters.conflicts + excluded.conflicts,
       released = counters.released + excluded.released,
       quarantine_rows = counters.quarantine_rows + excluded.quarantine_rows";

/// Releases the rows `filter` selects under `policy` at `now` (see `release.rs`).
///
/// # Errors
/// Query failures: the batch in progress is rolled back, the batches before it stay released.
pub(crate) async fn release(
    client: &mut Object,
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
        let tx = write::begin_careful(client).await?;
        while let Some(last) = batch(&tx, filter, after, policy, now, &mut total).await? {
            after = last;
        }
        tx.rollback().await?;
        return Ok(total);
    }
    loop {
        let tx = write::begin_careful(client).await?;
        let mut counted = total.clone();
        let Some(last) = batch(&tx, filter, after, policy, now, &mut counted).await? else {
            tx.rollback().await?;
            break;
        };
        tx.commit().await?;
        total = counted;
        after = last;
    }
    Ok(total)
}

/// One batch inside `tx`: the rows after id `after`; the last id examined, `None` when there
/// was none left.
async fn batch(
    tx: &Transaction<'_>,
    filter: &ReleaseFilter,
    after: i64,
    policy: &Policy,
    now: SystemTime,
    total: &mut Released,
) -> Result<Option<i64>, StoreError> {
    let limit = RELEASE_BATCH as i64;
    let rows: Vec<Row> = tx
        .query(
            &tx.prepare_cached(SELECT_ROWS).await?,
            &[&after, &filter.reason, &filter.ids, &limit],
        )
        .await?
        .iter()
        .map(|r| Row {
            id: r.get(0),
            reason: r.get(1),
            raw: r.get(2),
        })
        .collect();
    let Some(last) = rows.last().map(|r| r.id) else {
        return Ok(None);
    };
    total.examined += rows.len() as u64;
    let mut checked = release::recheck(rows, policy, now);
    // By key, stably (id order among equal keys): the lock order of `records`.
    checked
        .valid
        .sort_by(|a, b| a.2.unique_key.cmp(&b.2.unique_key));
    let mut failing = checked.failing;
    let records: Vec<_> = checked.valid.iter().map(|(_, _, r)| r).collect();
    let mut written = Written::default();
    let mut refused = write::each_in_savepoint(tx, &records, &mut written).await?;
    refused.sort_by_key(|(i, _)| *i);
    let mut refused = refused.into_iter().peekable();
    let mut released: Vec<i64> = Vec::with_capacity(checked.valid.len());
    for (i, (id, old, _)) in checked.valid.iter().enumerate() {
        match refused.next_if(|(j, _)| *j == i) {
            Some((_, e)) => failing.push(Failing::rejected(*id, old, &e)),
            None => released.push(*id),
        }
    }
    if !released.is_empty() {
        tx.execute(&tx.prepare_cached(DELETE_ROWS).await?, &[&released])
            .await?;
    }
    for f in failing.iter().filter(|f| f.changed) {
        tx.execute(&tx.prepare_cached(SET_REASON).await?, &[&f.id, &f.reason])
            .await?;
    }
    let o = &written.outcome;
    tx.execute(
        &tx.prepare_cached(COUNT_RELEASED).await?,
        &[
            &(o.stored as i64),
            &(o.duplicates as i64),
            &(o.conflicts as i64),
            &(released.len() as i64),
        ],
    )
    .await?;
    total.add(&written, &failing);
    Ok(Some(last))
}
