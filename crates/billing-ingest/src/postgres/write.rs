//! One frame into a PostgreSQL store: one transaction on one pooled connection, at READ
//! COMMITTED (set explicitly, whatever the server's `default_transaction_isolation`).
//!
//! [`fast`], always tried first:
//! 1. valid records are sorted by `unique_key` (stable, so wire order decides among equal
//!    keys). The common frame (valid records of distinct keys, nothing quarantined) is first
//!    stored the quick way ([`pipelined`]): one plain `INSERT ... SELECT FROM unnest(...)`,
//!    the rollup upsert and the counters written to the connection together, then `COMMIT`
//!    (three round trips instead of five). Without `ON CONFLICT` each row costs one descent
//!    of the unique index, where `ON CONFLICT` costs a second one (its pre-check) and a
//!    second WAL record (the speculative insertion's confirmation): about a fifth of
//!    PostgreSQL's time per row (BENCHMARKS.md). When a key exists (a resend, or another
//!    ingester's), the insert fails with `unique_violation`; the transaction is rolled back,
//!    nothing lost, and the frame is stored the general way below. Each failed insert is an
//!    `ERROR` line in the server's log, and resends come in bursts: after one, the store's
//!    next [`CAREFUL_FRAMES`] frames go the general way at once ([`Optimism`]). The general
//!    way offers the first record of each key in one `INSERT ... ON CONFLICT (unique_key) DO
//!    NOTHING RETURNING unique_key`. The unique index is the arbiter between ingesters either
//!    way: a key another transaction inserted but has not committed makes the insert wait for
//!    it, then fail (quick way) or skip the key (general way); so each key is stored once, by
//!    whoever commits first;
//! 2. every other record (the ones not inserted, and repeats inside the frame) is compared with
//!    the stored body (read back with one `SELECT ... = ANY($1)`, which at READ COMMITTED sees
//!    the winner's committed row) and classified as duplicate or conflict; each duplicated
//!    key's row then gets its count (`duplicates`, `last_duplicate_at`): the rows locked in key
//!    order with one `SELECT ... ORDER BY unique_key FOR UPDATE`, then one `UPDATE ... FROM
//!    unnest(...)` for all, only for frames that hold duplicates;
//! 3. rollups of the inserted records are upserted in one statement, rows sorted by
//!    `(instance, amount_type, hour)`, values as exact `NUMERIC` sums (sent as decimal text of
//!    `i128`s); conflicts, quarantine rows (up to the bound, `store_options.rs`) and the
//!    `counters` row follow.
//!
//! [`one_by_one`], only when `fast` failed with an error about the data
//! ([`crate::store_error`]): the same steps in a new transaction, each record's insert, and
//! then each stored record's rollup, in its own savepoint, with deferred constraints checked
//! at each statement (`SET CONSTRAINTS ALL IMMEDIATE`) so that a refusal is met inside its
//! savepoint and not at `COMMIT`. A record refused at its insert is quarantined as
//! `store_rejected` (a later arrival of its key in the frame is offered in its turn); one
//! refused at its rollup is deleted again and quarantined, while arrivals of its key already
//! classified against it keep their classification (only reachable through an operator's
//! trigger on `rollups`: a `NUMERIC` sum does not overflow). Quarantine rows the database
//! refuses are written once more with their text escaped.
//!
//! Deadlock freedom: every transaction, in both ways, takes row locks table by table in the
//! same order (records, rollups, conflicts, counters) and within a table in the same sorted key
//! order, so no two transactions can wait on each other in a cycle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use deadpool_postgres::{Object, Transaction};
use forward::Frame;
use tokio_postgres::IsolationLevel;

use crate::quarantine::{RawIndex, Wrote};
use crate::schema;
use crate::store_error::is_about_data;
use crate::store_options::StoreOptions;
use crate::validate::{Body, Checked, Quarantined, Record, RollupSums, add_to_rollup};
use crate::{StoreError, StoreOutcome, Written};

// Prepared once per connection, through the pool's statement cache.
const INSERT_RECORDS: &str = "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[])
     ON CONFLICT (unique_key) DO NOTHING
     RETURNING unique_key";

/// [`INSERT_RECORDS`] for keys believed new: fails on the first that exists.
const INSERT_NEW_RECORDS: &str = "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[])";

const SELECT_BODIES: &str = "SELECT unique_key, instance, amount_type, value, occurred_at, metadata
     FROM records WHERE unique_key = ANY($1::text[])";

const UPSERT_ROLLUPS: &str = "INSERT INTO rollups (instance, amount_type, hour, value, records)
     SELECT i, t, h, v::numeric, n
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS u(i, t, h, v, n)
     ON CONFLICT (instance, amount_type, hour) DO UPDATE
     SET value = rollups.value + excluded.value, records = rollups.records + excluded.records";

const DELETE_RECORD: &str = "DELETE FROM records WHERE unique_key = $1";

const BUMP_DUPLICATES: &str = "UPDATE records
     SET duplicates = duplicates + $2, last_duplicate_at = now() WHERE unique_key = $1";

/// Locks the rows of several keys in key order (the lock order; `unique_key` compares as
/// bytes, `COLLATE "C"`, as Rust sorts), before [`BUMP_MANY_DUPLICATES`] counts them in one
/// statement whose join may visit them in any order.
const LOCK_RECORDS: &str = "SELECT 1 FROM records WHERE unique_key = ANY($1::text[])
     ORDER BY unique_key FOR UPDATE";

const BUMP_MANY_DUPLICATES: &str = "UPDATE records
     SET duplicates = records.duplicates + d.n, last_duplicate_at = now()
     FROM unnest($1::text[], $2::bigint[]) AS d(k, n) WHERE records.unique_key = d.k";

const BUMP_CONFLICT: &str = "UPDATE conflicts SET count = count + $3, last_seen = now()
     WHERE unique_key = $1 AND received_body = $2";

const INSERT_CONFLICT: &str =
    "INSERT INTO conflicts (unique_key, stored_body, received_body, count)
     VALUES ($1, $2, $3, $4)";

const INSERT_QUARANTINE: &str =
    "INSERT INTO quarantine (reason, raw) SELECT * FROM unnest($1::text[], $2::text[])";

const UPSERT_COUNTERS: &str =
    "INSERT INTO counters (slot, received, stored, duplicates, conflicts, quarantined, quarantine_rows)
     VALUES (pg_backend_pid() % 16, $1, $2, $3, $4, $5, $6)
     ON CONFLICT (slot) DO UPDATE SET
       received = counters.received + excluded.received,
       stored = counters.stored + excluded.stored,
       duplicates = counters.duplicates + excluded.duplicates,
       conflicts = counters.conflicts + excluded.conflicts,
       quarantined = counters.quarantined + excluded.quarantined,
       quarantine_rows = counters.quarantine_rows + excluded.quarantine_rows";

/// Frames that go straight to `ON CONFLICT` after one whose plain insert met a stored key.
const CAREFUL_FRAMES: u32 = 64;

/// Whether [`fast`] tries the plain insert first: not for the [`CAREFUL_FRAMES`] frames after
/// one met a stored key (see the module docs). Shared by a store's connections.
#[derive(Debug, Default)]
pub(crate) struct Optimism(AtomicU32);

impl Optimism {
    /// Whether this frame may try the plain insert (counts a careful frame down if not).
    fn try_plain(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    fn met_stored_key(&self) {
        self.0.store(CAREFUL_FRAMES, Ordering::Relaxed);
    }
}

/// Conflicting arrivals of a frame: (key, received body) -> (stored body, arrivals).
type Conflicts<'a> = BTreeMap<(&'a str, String), (String, i64)>;

/// Rollup deltas of a frame by `(instance, amount_type, hour)`.
type Rollups<'a> = RollupSums<'a>;

/// Duplicate arrivals of a frame by key (sorted: the lock order).
type Duplicates<'a> = BTreeMap<&'a str, i64>;

/// Stores the frame in one go; on failure nothing of it is stored (see the module docs).
///
/// # Errors
/// Any failure; [`is_about_data`] tells whether [`one_by_one`] may store it.
pub(crate) async fn fast(
    client: &mut Object,
    checked: &Checked,
    options: &StoreOptions,
    optimism: &Optimism,
) -> Result<Wrote, StoreError> {
    if checked.is_empty() {
        return Ok(Wrote::default());
    }
    let valid = sorted(checked);
    let firsts: Vec<&Record> = valid
        .iter()
        .enumerate()
        .filter(|(i, r)| *i == 0 || valid[i - 1].unique_key != r.unique_key)
        .map(|(_, r)| *r)
        .collect();

    // Frames with repeats or invalid entries (rare) go straight to `ON CONFLICT`.
    if checked.invalid.is_empty() && firsts.len() == valid.len() && optimism.try_plain() {
        match pipelined(client, checked, &firsts).await? {
            Some(w) => return Ok(w),
            None => optimism.met_stored_key(),
        }
    }
    let tx = begin(client).await?;
    let inserted: HashSet<String> = insert(&tx, &firsts).await?.into_iter().collect();
    fast_after_insert(tx, checked, options, &valid, &firsts, inserted).await
}

/// The common frame (valid records of distinct keys, believed new) with its statements
/// pipelined: the insert, the rollups and the counters are sent together, then the commit,
/// so a frame costs three round trips instead of five. `Ok(None)`: a key exists
/// (`unique_violation`); the transaction was rolled back and nothing is stored.
async fn pipelined(
    client: &mut Object,
    checked: &Checked,
    records: &[&Record],
) -> Result<Option<Wrote>, StoreError> {
    let mut w = Wrote::default();
    w.written.outcome.received = checked.len() as u64;
    w.written.outcome.stored = records.len() as u64;
    let mut rollups = Rollups::new();
    for r in records {
        add_to_rollup(&mut rollups, r).ok_or(StoreError::Overflow)?;
    }
    let outcome = w.written.outcome;
    let tx = begin(client).await?;
    // Prepared first, one after the other (a no-op once in the connection's cache): below,
    // each statement then goes out at its future's first poll, so they reach PostgreSQL in
    // this order (the lock order: records, rollups, counters). A statement still being
    // prepared there would let a later one overtake it.
    for sql in [INSERT_NEW_RECORDS, UPSERT_ROLLUPS, UPSERT_COUNTERS] {
        tx.prepare_cached(sql).await?;
    }
    // Polled together, the three are written to the connection before any answer is read;
    // PostgreSQL runs them in order, and after a failed insert the other two fail too.
    let (inserted, rolled, counted) = tokio::join!(
        insert_new(&tx, records),
        upsert_rollups(&tx, &rollups),
        write_counters(&tx, &outcome, 0),
    );
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            tx.rollback().await?;
            return Ok(None);
        }
        other => other?,
    }
    rolled?;
    counted?;
    tx.commit().await?;
    for ((_, amount_type, _), (value, n)) in &rollups {
        w.written.add_stored(amount_type, *value, *n)?;
    }
    Ok(Some(w))
}

/// The rest of [`fast`] once the frame's first records of each key were offered in `tx`:
/// `inserted` holds the keys stored by it.
async fn fast_after_insert(
    tx: Transaction<'_>,
    checked: &Checked,
    options: &StoreOptions,
    valid: &[&Record],
    firsts: &[&Record],
    inserted: HashSet<String>,
) -> Result<Wrote, StoreError> {
    let mut w = Wrote::default();
    w.written.outcome.received = checked.len() as u64;
    // The stored body of every key that was not inserted here.
    let missing: Vec<&str> = firsts
        .iter()
        .map(|r| r.unique_key.as_str())
        .filter(|k| !inserted.contains(*k))
        .collect();
    let stored = bodies(&tx, &missing).await?;

    let mut rollups = Rollups::new();
    let mut conflicts = Conflicts::new();
    let mut duplicates = Duplicates::new();
    let mut first_of_key: Option<&Record> = None;
    for r in valid {
        let is_first = first_of_key.is_none_or(|f| f.unique_key != r.unique_key);
        if is_first {
            first_of_key = Some(r);
            if inserted.contains(&r.unique_key) {
                w.written.outcome.stored += 1;
                add_to_rollup(&mut rollups, r).ok_or(StoreError::Overflow)?;
                continue;
            }
        }
        let stored_body = match (first_of_key, stored.get(&r.unique_key)) {
            (_, Some(b)) => b,
            (Some(f), None) if inserted.contains(&f.unique_key) => &f.body,
            _ => {
                return Err(StoreError::Inconsistent(format!(
                    "key {:?} was neither inserted nor found",
                    r.unique_key
                )));
            }
        };
        classify(
            &mut w.written,
            &mut conflicts,
            &mut duplicates,
            r,
            stored_body,
        );
    }
    write_duplicates(&tx, &duplicates).await?;
    upsert_rollups(&tx, &rollups).await?;
    for ((_, amount_type, _), (value, records)) in &rollups {
        w.written.add_stored(amount_type, *value, *records)?;
    }
    write_conflicts(&tx, &conflicts).await?;
    let entries: Vec<&Quarantined> = checked.invalid.iter().collect();
    finish(&tx, &mut w, &entries, options, false).await?;
    tx.commit().await?;
    Ok(w)
}

/// Stores the frame record by record, quarantining the records the database refuses.
///
/// # Errors
/// Failures not about one record's data: nothing of the frame is then stored.
pub(crate) async fn one_by_one(
    client: &mut Object,
    checked: &Checked,
    frame: &Frame,
    options: &StoreOptions,
) -> Result<Wrote, StoreError> {
    let mut w = Wrote::default();
    w.written.outcome.received = checked.len() as u64;
    let valid = sorted(checked);
    let index = RawIndex::new(frame);
    let tx = begin_careful(client).await?;
    let rejected: Vec<Quarantined> = each_in_savepoint(&tx, &valid, &mut w.written)
        .await?
        .into_iter()
        .map(|(i, e)| index.rejected(valid[i], &e))
        .collect();
    let entries: Vec<&Quarantined> = checked.invalid.iter().chain(&rejected).collect();
    finish(&tx, &mut w, &entries, options, true).await?;
    tx.commit().await?;
    w.rejected = rejected;
    Ok(w)
}

/// A transaction for [`each_in_savepoint`]: READ COMMITTED, deferred constraints checked at
/// each statement.
pub(crate) async fn begin_careful(client: &mut Object) -> Result<Transaction<'_>, StoreError> {
    let tx = begin(client).await?;
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE").await?;
    Ok(tx)
}

/// Offers `valid` (sorted by key, stably) inside `tx` (from [`begin_careful`]): each record's
/// insert, then each stored record's rollup, in its own savepoint; then the duplicate counts
/// and conflicts. Counts every outcome into `w`; returns the records the database refused
/// (by index into `valid`, in the order refused) with the error. Used by [`one_by_one`] and
/// by quarantine releases (`postgres/release.rs`).
///
/// # Errors
/// Failures not about one record's data; the caller's transaction must then be abandoned.
pub(crate) async fn each_in_savepoint(
    tx: &Transaction<'_>,
    valid: &[&Record],
    w: &mut Written,
) -> Result<Vec<(usize, StoreError)>, StoreError> {
    let mut known: HashMap<&str, Body> = HashMap::new();
    let mut stored: Vec<usize> = Vec::new();
    let mut refused: Vec<(usize, StoreError)> = Vec::new();
    let mut conflicts = Conflicts::new();
    let mut duplicates = Duplicates::new();
    for (i, r) in valid.iter().enumerate() {
        if let Some(body) = known.get(r.unique_key.as_str()) {
            classify(w, &mut conflicts, &mut duplicates, r, body);
            continue;
        }
        tx.batch_execute("SAVEPOINT record").await?;
        let attempt = async {
            if insert(tx, &[r]).await?.is_empty() {
                let mut found = bodies(tx, &[r.unique_key.as_str()]).await?;
                return found.remove(&r.unique_key).map(Some).ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "key {:?} was neither inserted nor found",
                        r.unique_key
                    ))
                });
            }
            Ok(None)
        }
        .await;
        match attempt {
            Ok(None) => {
                tx.batch_execute("RELEASE record").await?;
                w.outcome.stored += 1;
                known.insert(&r.unique_key, r.body.clone());
                stored.push(i);
            }
            Ok(Some(body)) => {
                tx.batch_execute("RELEASE record").await?;
                classify(w, &mut conflicts, &mut duplicates, r, &body);
                known.insert(&r.unique_key, body);
            }
            Err(e) if is_about_data(&e) => {
                tx.batch_execute("ROLLBACK TO record; RELEASE record")
                    .await?;
                refused.push((i, e));
            }
            Err(e) => return Err(e),
        }
    }
    write_duplicates(tx, &duplicates).await?;
    // Rollups in bucket order (the lock order), one record per savepoint.
    stored.sort_by(|a, b| {
        let (a, b) = (&valid[*a], &valid[*b]);
        (&a.body.instance, &a.body.amount_type, a.hour).cmp(&(
            &b.body.instance,
            &b.body.amount_type,
            b.hour,
        ))
    });
    for i in stored {
        let r = valid[i];
        let mut one = Rollups::new();
        one.insert(
            (&r.body.instance, &r.body.amount_type, r.hour),
            (r.body.value.into(), 1),
        );
        tx.batch_execute("SAVEPOINT rollup").await?;
        match upsert_rollups(tx, &one).await {
            Ok(()) => {
                tx.batch_execute("RELEASE rollup").await?;
                w.add_stored(&r.body.amount_type, r.body.value.into(), 1)?;
            }
            Err(e) if is_about_data(&e) => {
                tx.batch_execute("ROLLBACK TO rollup; RELEASE rollup")
                    .await?;
                tx.execute(&tx.prepare_cached(DELETE_RECORD).await?, &[&r.unique_key])
                    .await?;
                w.outcome.stored -= 1;
                refused.push((i, e));
            }
            Err(e) => return Err(e),
        }
    }
    write_conflicts(tx, &conflicts).await?;
    Ok(refused)
}

/// The valid records sorted by key, stably (wire order among equal keys).
fn sorted(checked: &Checked) -> Vec<&Record> {
    let mut valid: Vec<&Record> = checked.valid.iter().collect();
    valid.sort_by(|a, b| a.unique_key.cmp(&b.unique_key));
    valid
}

async fn begin(client: &mut Object) -> Result<Transaction<'_>, StoreError> {
    // Explicit, not the server's default: the dedupe relies on READ COMMITTED (see the module
    // docs); a stricter default would turn every race on a key into a failed frame.
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?)
}

/// Whether `e` is PostgreSQL's `unique_violation` (SQLSTATE 23505).
fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(e)
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
}

/// Inserts `records` (distinct keys, sorted) as new; fails with `unique_violation` when one
/// of the keys exists ([`pipelined`]).
async fn insert_new(tx: &Transaction<'_>, records: &[&Record]) -> Result<(), StoreError> {
    offer(tx, INSERT_NEW_RECORDS, records).await.map(drop)
}

/// Offers `records` (distinct keys) for insertion; the keys inserted.
async fn insert(tx: &Transaction<'_>, records: &[&Record]) -> Result<Vec<String>, StoreError> {
    let rows = offer(tx, INSERT_RECORDS, records).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Runs `sql` (an insert from seven `unnest` arrays) with the columns of `records`.
async fn offer(
    tx: &Transaction<'_>,
    sql: &str,
    records: &[&Record],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&Record) -> &str| -> Vec<&str> { records.iter().map(|r| f(r)).collect() };
    let keys = col(|r| &r.unique_key);
    let instances = col(|r| &r.body.instance);
    let types = col(|r| &r.body.amount_type);
    let occurred = col(|r| &r.body.occurred_at);
    let metadata = col(|r| &r.body.metadata);
    let values: Vec<i64> = records.iter().map(|r| r.body.value).collect();
    let hours: Vec<i64> = records.iter().map(|r| r.hour).collect();
    Ok(tx
        .query(
            &tx.prepare_cached(sql).await?,
            &[
                &keys, &instances, &types, &values, &occurred, &hours, &metadata,
            ],
        )
        .await?)
}

/// The stored bodies of `keys`.
async fn bodies(tx: &Transaction<'_>, keys: &[&str]) -> Result<HashMap<String, Body>, StoreError> {
    let mut stored = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(stored);
    }
    for row in tx
        .query(&tx.prepare_cached(SELECT_BODIES).await?, &[&keys])
        .await?
    {
        stored.insert(
            row.get(0),
            Body {
                instance: row.get(1),
                amount_type: row.get(2),
                value: row.get(3),
                occurred_at: row.get(4),
                metadata: row.get(5),
            },
        );
    }
    Ok(stored)
}

/// Counts `r`, an arrival of a stored key, as a duplicate of `stored` (also into
/// `duplicates`, the per-key counts) or a conflict with it.
fn classify<'a>(
    w: &mut Written,
    conflicts: &mut Conflicts<'a>,
    duplicates: &mut Duplicates<'a>,
    r: &'a Record,
    stored: &Body,
) {
    if *stored == r.body {
        w.outcome.duplicates += 1;
        *duplicates.entry(&r.unique_key).or_default() += 1;
    } else {
        w.outcome.conflicts += 1;
        w.conflicts.push(r.unique_key.clone());
        conflicts
            .entry((&r.unique_key, r.body.to_json()))
            .or_insert_with(|| (stored.to_json(), 0))
            .1 += 1;
    }
}

/// Counts the duplicate arrivals on their keys' rows: one `UPDATE` for one key; for several,
/// their rows locked in key order and then one `UPDATE` for all (a resend of a whole chunk
/// makes every key a duplicate: one statement per key was its cost, BENCHMARKS.md).
async fn write_duplicates(
    tx: &Transaction<'_>,
    duplicates: &Duplicates<'_>,
) -> Result<(), StoreError> {
    match duplicates.len() {
        0 => {}
        1 => {
            let (key, n) = duplicates.iter().next().expect("one");
            tx.execute(&tx.prepare_cached(BUMP_DUPLICATES).await?, &[key, n])
                .await?;
        }
        _ => {
            let keys: Vec<&str> = duplicates.keys().copied().collect();
            let counts: Vec<i64> = duplicates.values().copied().collect();
            tx.execute(&tx.prepare_cached(LOCK_RECORDS).await?, &[&keys])
                .await?;
            tx.execute(
                &tx.prepare_cached(BUMP_MANY_DUPLICATES).await?,
                &[&keys, &counts],
            )
            .await?;
        }
    }
    Ok(())
}

async fn upsert_rollups(tx: &Transaction<'_>, rollups: &Rollups<'_>) -> Result<(), StoreError> {
    if rollups.is_empty() {
        return Ok(());
    }
    let mut instances = Vec::with_capacity(rollups.len());
    let mut types = Vec::with_capacity(rollups.len());
    let mut hours = Vec::with_capacity(rollups.len());
    let mut values = Vec::with_capacity(rollups.len());
    let mut counts = Vec::with_capacity(rollups.len());
    for ((instance, amount_type, hour), (value, count)) in rollups {
        instances.push(*instance);
        types.push(*amount_type);
        hours.push(*hour);
        values.push(value.to_string());
        counts.push(*count);
    }
    tx.execute(
        &tx.prepare_cached(UPSERT_ROLLUPS).await?,
        &[&instances, &types, &hours, &values, &counts],
    )
    .await?;
    Ok(())
}

async fn write_conflicts(
    tx: &Transaction<'_>,
    conflicts: &Conflicts<'_>,
) -> Result<(), StoreError> {
    for ((key, received_body), (stored_body, n)) in conflicts {
        let bumped = tx
            .execute(
                &tx.prepare_cached(BUMP_CONFLICT).await?,
                &[key, received_body, n],
            )
            .await?;
        if bumped == 0 {
            tx.execute(
                &tx.prepare_cached(INSERT_CONFLICT).await?,
                &[key, stored_body, received_body, n],
            )
            .await?;
        }
    }
    Ok(())
}

/// Writes the quarantine rows the bound allows, then the frame's counters. `careful`: in a
/// savepoint, and once more escaped when the database refuses the text.
async fn finish(
    tx: &Transaction<'_>,
    w: &mut Wrote,
    entries: &[&Quarantined],
    options: &StoreOptions,
    careful: bool,
) -> Result<(), StoreError> {
    let mut kept = 0;
    if !entries.is_empty() {
        let rows: i64 = tx.query_one(schema::QUARANTINE_ROWS, &[]).await?.get(0);
        kept = options.quarantine_room(rows, entries.len());
    }
    let keep = &entries[..kept];
    if !keep.is_empty() {
        let reasons: Vec<String> = keep.iter().map(|q| q.reason_text()).collect();
        let raws: Vec<&str> = keep.iter().map(|q| q.raw.as_str()).collect();
        let stmt = tx.prepare_cached(INSERT_QUARANTINE).await?;
        if !careful {
            tx.execute(&stmt, &[&reasons, &raws]).await?;
        } else {
            tx.batch_execute("SAVEPOINT quarantine").await?;
            let attempt = tx.execute(&stmt, &[&reasons, &raws]).await;
            match attempt.map_err(StoreError::from) {
                Ok(_) => tx.batch_execute("RELEASE quarantine").await?,
                Err(e) if is_about_data(&e) => {
                    tx.batch_execute("ROLLBACK TO quarantine; RELEASE quarantine")
                        .await?;
                    let escape = |s: &str| s.escape_debug().to_string();
                    let reasons: Vec<String> = reasons.iter().map(|s| escape(s)).collect();
                    let raws: Vec<String> = raws.iter().map(|s| escape(s)).collect();
                    tx.execute(&stmt, &[&reasons, &raws]).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    w.unstored = (entries.len() - kept) as u64;
    w.written.outcome.quarantined = entries.len() as u64;
    write_counters(tx, &w.written.outcome, kept).await
}

/// Adds a frame's outcome (and `kept` quarantine rows) to this connection's `counters` slot.
async fn write_counters(
    tx: &Transaction<'_>,
    o: &StoreOutcome,
    kept: usize,
) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached(UPSERT_COUNTERS).await?,
        &[
            &(o.received as i64),
            &(o.stored as i64),
            &(o.duplicates as i64),
            &(o.conflicts as i64),
            &(o.quarantined as i64),
            &(kept as i64),
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_frame_meets_a_stored_key_the_next_ones_go_straight_to_on_conflict() {
        let o = Optimism::default();
        assert!(o.try_plain(), "new frames try the plain insert");
        o.met_stored_key();
        for i in 0..CAREFUL_FRAMES {
            assert!(!o.try_plain(), "careful frame {i}");
        }
        assert!(o.try_plain(), "then plain again");
        assert!(o.try_plain());
    }
}
