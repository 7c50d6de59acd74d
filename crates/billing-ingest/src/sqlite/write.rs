//! One frame into a SQLite store, in one `BEGIN IMMEDIATE` transaction, on the store's thread.
//!
//! Two ways, same result for every record the database accepts:
//! - [`fast`], always tried first: every record in wire order (`INSERT ... ON CONFLICT
//!   (unique_key) DO NOTHING`; one row changed means stored, none means the key exists and the
//!   stored body decides duplicate or conflict, see [`crate::validate`]), the rollups summed
//!   per `(instance, amount_type, hour)` in memory and written once per bucket, then the
//!   quarantine rows and the counters. Any error rolls the whole frame back.
//! - [`one_by_one`], only when `fast` failed with an error about the data
//!   ([`crate::store_error`]): every record in its own savepoint, with its rollup; a record the
//!   database refuses is rolled back to its savepoint and quarantined as `store_rejected` with
//!   the database's message, and the rest is committed. A later arrival of a refused key in
//!   the same frame is offered for insertion in its turn, as if the refused one never came.
//!
//! Rollups are exact `i128` sums kept as decimal text (schema version 2): the bucket's row is
//! read, added to in Rust and written back inside the write transaction. That is safe because
//! `BEGIN IMMEDIATE` holds SQLite's write lock from the start: no other writer, in this process
//! or another, can change the row between the read and the write. Decimal text rather than two
//! 64-bit halves: it stays readable by an operator's `sqlite3` and is what reports parse; the
//! extra read per bucket per frame is an indexed lookup in a page the write touches anyway.
//!
//! Quarantine rows are written up to the store's bound ([`StoreOptions`]), the first entries in
//! wire order, validation's refusals before the store's; all are counted.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::quarantine::{self, Wrote};
use crate::report::parse_sum;
use crate::schema;
use crate::store_error::is_about_data;
use crate::store_options::StoreOptions;
use crate::validate::{Body, Checked, Quarantined, Record, RollupSums, add_to_rollup};
use crate::{StoreError, Written};

/// The current time as SQLite writes it in the tables.
pub(crate) const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// What became of one valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Stored,
    Duplicate,
    Conflict,
}

/// Stores the frame in one go; on failure nothing of it is stored (see the module docs).
///
/// # Errors
/// Any failure; [`is_about_data`] tells whether [`one_by_one`] may store it.
pub(crate) fn fast(
    conn: &mut Connection,
    checked: &Checked,
    options: &StoreOptions,
) -> Result<Wrote, StoreError> {
    if checked.is_empty() {
        return fast_in(conn, checked, options);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let w = fast_in(&tx, checked, options)?;
    tx.commit()?;
    Ok(w)
}

/// Several frames in one transaction (group commit: one WAL fsync for all of them), each
/// in its own savepoint, so that one frame the database refuses (an error about its data) is
/// rolled back alone and reported in its place while the others are committed. `Err`: the
/// group failed as a whole (nothing of it is stored).
///
/// # Errors
/// Failures not about one frame's data, and the commit's.
pub(crate) fn fast_group(
    conn: &mut Connection,
    frames: &[(&Checked, &StoreOptions)],
) -> Result<Vec<Result<Wrote, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(frames.len());
    for (checked, options) in frames {
        // Prepared once (cached): `execute_batch` would parse the SQL for every frame.
        tx.prepare_cached("SAVEPOINT frame")?.execute([])?;
        match fast_in(&tx, checked, options) {
            Ok(w) => {
                tx.prepare_cached("RELEASE frame")?.execute([])?;
                results.push(Ok(w));
            }
            Err(e) if is_about_data(&e) => {
                tx.execute_batch("ROLLBACK TO frame; RELEASE frame")?;
                results.push(Err(e));
            }
            Err(e) => return Err(e),
        }
    }
    tx.commit()?;
    Ok(results)
}

/// [`fast`]'s work inside the caller's open transaction.
fn fast_in(
    tx: &Connection,
    checked: &Checked,
    options: &StoreOptions,
) -> Result<Wrote, StoreError> {
    let mut w = Wrote::default();
    w.written.outcome.received = checked.len() as u64;
    if checked.is_empty() {
        return Ok(w);
    }
    let mut rollups = RollupSums::new();
    let mut insert = tx.prepare_cached(INSERT_RECORD)?;
    let now = write_time(tx)?;
    for r in &checked.valid {
        let arrival = arrive_with(tx, &mut insert, r, &now)?;
        if arrival == Arrival::Stored {
            add_to_rollup(&mut rollups, r).ok_or(StoreError::Overflow)?;
        }
        tally(&mut w.written, r, arrival);
    }
    for ((instance, amount_type, hour), (value, records)) in rollups {
        add_rollup(tx, instance, amount_type, hour, value, records)?;
        w.written.add_stored(amount_type, value, records)?;
    }
    let entries: Vec<&Quarantined> = checked.invalid.iter().collect();
    finish(tx, &mut w, &entries, options)?;
    Ok(w)
}

/// Stores the frame record by record, quarantining the records the database refuses;
/// `raws[i]` is the raw form of `checked.valid[i]`.
///
/// # Errors
/// Failures not about one record's data: nothing of the frame is then stored.
pub(crate) fn one_by_one(
    conn: &mut Connection,
    checked: &Checked,
    mut raws: Vec<String>,
    options: &StoreOptions,
) -> Result<Wrote, StoreError> {
    let mut w = Wrote::default();
    w.written.outcome.received = checked.len() as u64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let valid: Vec<&Record> = checked.valid.iter().collect();
    let rejected: Vec<Quarantined> = each_in_savepoint(&tx, &valid, &mut w.written)?
        .into_iter()
        .map(|(i, e)| quarantine::rejected(std::mem::take(&mut raws[i]), valid[i], &e))
        .collect();
    let entries: Vec<&Quarantined> = checked.invalid.iter().chain(&rejected).collect();
    finish(&tx, &mut w, &entries, options)?;
    tx.commit()?;
    w.rejected = rejected;
    Ok(w)
}

/// Offers `records` in order inside the open transaction `tx`, each in its own savepoint with
/// its rollup, counting each outcome into `w`; a record the database refuses (an error about
/// its data) is rolled back to its savepoint and returned, by index, with the error. Used by
/// [`one_by_one`] and by quarantine releases (`sqlite/release.rs`).
///
/// # Errors
/// Failures not about one record's data; the caller's transaction must then be abandoned.
pub(crate) fn each_in_savepoint(
    tx: &Connection,
    records: &[&Record],
    w: &mut Written,
) -> Result<Vec<(usize, StoreError)>, StoreError> {
    let mut refused = Vec::new();
    for (i, r) in records.iter().enumerate() {
        tx.execute_batch("SAVEPOINT record")?;
        let attempt = (|| {
            let arrival = arrive(tx, r)?;
            if arrival == Arrival::Stored {
                let b = &r.body;
                add_rollup(tx, &b.instance, &b.amount_type, r.hour, b.value.into(), 1)?;
            }
            Ok::<_, StoreError>(arrival)
        })();
        match attempt {
            Ok(arrival) => {
                tx.execute_batch("RELEASE record")?;
                if arrival == Arrival::Stored {
                    w.add_stored(&r.body.amount_type, r.body.value.into(), 1)?;
                }
                tally(w, r, arrival);
            }
            Err(e) if is_about_data(&e) => {
                tx.execute_batch("ROLLBACK TO record; RELEASE record")?;
                refused.push((i, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

fn tally(w: &mut Written, r: &Record, arrival: Arrival) {
    match arrival {
        Arrival::Stored => w.outcome.stored += 1,
        Arrival::Duplicate => w.outcome.duplicates += 1,
        Arrival::Conflict => {
            w.outcome.conflicts += 1;
            w.conflicts.push(r.unique_key.clone());
        }
    }
}

/// Inserts `r` when its key is new (with `stored_at`), else compares it with the stored body:
/// a duplicate is counted on the key's row (`duplicates`, `last_duplicate_at`), a conflicting
/// version is kept in `conflicts`.
/// The insert of a new record; `?8` is the time of the write (see [`write_time`]).
const INSERT_RECORD: &str = "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata, stored_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (unique_key) DO NOTHING";

/// The time of a write as SQLite writes [`NOW`], read once per frame rather than formatted
/// by SQLite for every row.
fn write_time(c: &Connection) -> Result<String, StoreError> {
    Ok(c.prepare_cached(&format!("SELECT {NOW}"))?
        .query_row([], |r| r.get(0))?)
}

/// [`arrive_with`], preparing its insert.
fn arrive(c: &Connection, r: &Record) -> Result<Arrival, StoreError> {
    let mut insert = c.prepare_cached(INSERT_RECORD)?;
    arrive_with(c, &mut insert, r, &write_time(c)?)
}

/// Offers one record: inserted (stored) or, when its key exists, a duplicate or a conflict.
fn arrive_with(
    c: &Connection,
    insert: &mut rusqlite::Statement<'_>,
    r: &Record,
    now: &str,
) -> Result<Arrival, StoreError> {
    let b = &r.body;
    let inserted = insert.execute(params![
        r.unique_key,
        b.instance,
        b.amount_type,
        b.value,
        b.occurred_at,
        r.hour,
        b.metadata,
        now
    ])?;
    if inserted == 1 {
        return Ok(Arrival::Stored);
    }
    let stored = c
        .prepare_cached(
            "SELECT instance, amount_type, value, occurred_at, metadata FROM records WHERE unique_key = ?1",
        )?
        .query_row([&r.unique_key], |row| {
            Ok(Body {
                instance: row.get(0)?,
                amount_type: row.get(1)?,
                value: row.get(2)?,
                occurred_at: row.get(3)?,
                metadata: row.get(4)?,
            })
        })?;
    if stored == *b {
        // Rare (a resent chunk): one UPDATE of the key's row, in the frame's transaction.
        c.prepare_cached(&format!(
            "UPDATE records SET duplicates = duplicates + 1, last_duplicate_at = {NOW}
             WHERE unique_key = ?1"
        ))?
        .execute([&r.unique_key])?;
        return Ok(Arrival::Duplicate);
    }
    let received_body = b.to_json();
    let bumped = c
        .prepare_cached(&format!(
            "UPDATE conflicts SET count = count + 1, last_seen = {NOW}
             WHERE unique_key = ?1 AND received_body = ?2"
        ))?
        .execute(params![r.unique_key, received_body])?;
    if bumped == 0 {
        c.prepare_cached(
            "INSERT INTO conflicts (unique_key, stored_body, received_body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![r.unique_key, stored.to_json(), received_body])?;
    }
    Ok(Arrival::Conflict)
}

/// Adds `value` and `records` to a bucket's rollup: read, exact `i128` sum, write back.
fn add_rollup(
    c: &Connection,
    instance: &str,
    amount_type: &str,
    hour: i64,
    value: i128,
    records: i64,
) -> Result<(), StoreError> {
    let old: Option<String> = c
        .prepare_cached(
            "SELECT value FROM rollups WHERE instance = ?1 AND amount_type = ?2 AND hour = ?3",
        )?
        .query_row(params![instance, amount_type, hour], |r| r.get(0))
        .optional()?;
    let sum = match old {
        Some(text) => parse_sum(&text)?
            .checked_add(value)
            .ok_or(StoreError::Overflow)?,
        None => value,
    };
    c.prepare_cached(
        "INSERT INTO rollups (instance, amount_type, hour, value, records) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (instance, amount_type, hour)
         DO UPDATE SET value = excluded.value, records = records + excluded.records",
    )?
    .execute(params![instance, amount_type, hour, sum.to_string(), records])?;
    Ok(())
}

/// Writes the quarantine rows the bound allows, then the frame's counters.
fn finish(
    c: &Connection,
    w: &mut Wrote,
    entries: &[&Quarantined],
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let mut kept = 0;
    if !entries.is_empty() {
        let rows: i64 = c.query_row(schema::QUARANTINE_ROWS, [], |r| r.get(0))?;
        kept = options.quarantine_room(rows, entries.len());
        let mut insert =
            c.prepare_cached("INSERT INTO quarantine (reason, raw) VALUES (?1, ?2)")?;
        for q in &entries[..kept] {
            insert.execute(params![q.reason_text(), q.raw])?;
        }
    }
    w.unstored = (entries.len() - kept) as u64;
    w.written.outcome.quarantined = entries.len() as u64;
    let o = &w.written.outcome;
    c.prepare_cached(
        "INSERT INTO counters (slot, received, stored, duplicates, conflicts, quarantined, quarantine_rows)
         VALUES (0, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (slot) DO UPDATE SET
           received = received + excluded.received,
           stored = stored + excluded.stored,
           duplicates = duplicates + excluded.duplicates,
           conflicts = conflicts + excluded.conflicts,
           quarantined = quarantined + excluded.quarantined,
           quarantine_rows = quarantine_rows + excluded.quarantine_rows",
    )?
    .execute(params![
        o.received as i64,
        o.stored as i64,
        o.duplicates as i64,
        o.conflicts as i64,
        o.quarantined as i64,
        kept as i64
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use billing_schema::AmountType;
    use billing_schema::record::{RecordRef, TAG};
    use billing_schema::validate::Policy;

    use super::*;

    /// A PackedForward frame of `samples` records with these keys, checked at a fixed `now`.
    fn checked(keys: &[&str]) -> Checked {
        let at = "2026-11-27T04:33:58Z";
        let mut entries = Vec::new();
        for key in keys {
            forward::encode::write_entry_head(&mut entries, forward::EventTime::new(1, 0));
            RecordRef {
                key,
                instance: "i-1",
                amount_type: &AmountType::SAMPLES,
                value: 5,
                occurred_at: at,
                metadata: &Default::default(),
            }
            .write_msgpack(&mut entries);
        }
        let mut bytes = Vec::new();
        forward::encode::write_packed_forward(&mut bytes, TAG, &entries, &Default::default());
        let frame = forward::parse_frame(&bytes, 1 << 20).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_754_038 + 60);
        Checked::frame(&frame, &Policy::default(), now)
    }

    #[test]
    fn a_group_commits_every_frame_but_the_refused_one_which_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::connect(&dir.path().join("g.db"), true).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER reject_one BEFORE INSERT ON records WHEN NEW.unique_key = 'bad:samples'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
        let options = StoreOptions::default();
        let (a, b, c) = (
            checked(&["a1", "a2"]),
            checked(&["b1", "bad"]),
            checked(&["c1", "a1"]),
        );
        let results = fast_group(&mut conn, &[(&a, &options), (&b, &options), (&c, &options)])
            .expect("the group commits");
        assert_eq!(results.len(), 3);
        let a_out = results[0].as_ref().expect("frame a stored");
        assert_eq!(a_out.written.outcome.stored, 2);
        let err = results[1].as_ref().expect_err("frame b refused");
        assert!(is_about_data(err), "{err}");
        let c_out = results[2].as_ref().expect("frame c stored");
        assert_eq!(
            (
                c_out.written.outcome.stored,
                c_out.written.outcome.duplicates
            ),
            (1, 1),
            "a1 was stored by frame a of the same transaction"
        );
        let keys: Vec<String> = conn
            .prepare("SELECT unique_key FROM records ORDER BY unique_key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            keys,
            ["a1:samples", "a2:samples", "c1:samples"],
            "nothing of the refused frame, b1 included"
        );
        let received: i64 = conn
            .query_row("SELECT SUM(received) FROM counters", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            received, 4,
            "the refused frame's counters were rolled back too"
        );
    }
}
