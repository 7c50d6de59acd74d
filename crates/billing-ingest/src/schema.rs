//! The database schema and its versioned migrations, one list per backend, kept side by side
//! so that SQLite and PostgreSQL hold the same logical schema.
//!
//! Invariants:
//! - `schema_version` holds one row per applied migration; the store's version is its largest
//!   `version` (0 for a database without the table);
//! - migrations are applied on open, all in one transaction with the version rows, so a
//!   database is at exactly one version; concurrent openers serialize (SQLite: `BEGIN
//!   IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock per schema);
//! - a store at a version newer than [`LATEST`] is refused ([`StoreError::SchemaTooNew`]):
//!   this build does not know what the newer tables mean;
//! - migrations are append-only: a released migration is never edited, a change is a new one.
//!
//! Tables (version 1, then changed by versions 2 and 3 as noted):
//! - `records(unique_key PK, instance, amount_type, value, occurred_at, hour, metadata)`: the
//!   first version of every valid record; `occurred_at` is canonical UTC RFC 3339, `hour` the
//!   Unix second starting its UTC hour, `metadata` canonical JSON (see [`crate::validate`]);
//! - `rollups(instance, amount_type, hour, value, records)`, PK `(instance, amount_type,
//!   hour)`: sum of `value` and count of the records of each UTC hour, updated in the same
//!   transaction as `records`. Version 2: `value` holds the exact sum beyond 64 bits (one
//!   bucket may hold several records near `i64::MAX`): PostgreSQL `NUMERIC`; SQLite the
//!   decimal text of an `i128` (SQLite integers are 64-bit and its REAL inexact), which the
//!   store reads, adds to in Rust and writes back in the frame's write transaction (see
//!   `sqlite/write.rs`);
//! - `conflicts(id, unique_key, stored_body, received_body, first_seen, last_seen, count)`: one
//!   row per distinct differing version of a stored key (bodies as JSON, see
//!   [`billing_schema::validate::Body::to_json`]), `count` its arrivals;
//! - `quarantine(id, received_at, reason, raw)`: invalid entries with their raw JSON;
//! - `counters(slot PK, received, stored, duplicates, conflicts, quarantined)`: totals of every
//!   outcome; the summary adds all slots (PostgreSQL ingesters spread over 16 slots by backend
//!   pid so concurrent commits do not queue on one row; SQLite uses slot 0). Version 2 adds
//!   `quarantine_rows`: the rows in `quarantine` (summed over slots), which bounds that table
//!   without counting it per frame (see `store_options.rs`); [`SQLITE_RECOUNT`] /
//!   [`POSTGRES_RECOUNT`] set it from the table at every writer open.
//!
//! Version 2 also keeps an old database working: its rollups are copied exactly (SQLite:
//! `CAST(value AS TEXT)` of each 64-bit sum; PostgreSQL: `ALTER ... TYPE NUMERIC`), and its
//! quarantine rows are counted by the recount that follows the migration at open.
//!
//! Version 3 (per-key history, for `billing report --key` and `billing quarantine release`):
//! - `records` gains `stored_at` (when the record was first stored: SQLite UTC RFC 3339 text
//!   written by the insert, PostgreSQL `TIMESTAMPTZ DEFAULT now()`; `NULL` for records stored
//!   before version 3, when it was not kept), `duplicates` (identical repeats of this key,
//!   `0` for old records: earlier repeats were only counted in `counters`) and
//!   `last_duplicate_at` (`NULL` until a repeat). A duplicate is one `UPDATE` of its record in
//!   the frame's transaction, with the `counters` row, so `SUM(records.duplicates)` never
//!   exceeds `counters.duplicates` (equal on a store created at version 3);
//! - `counters` gains `released`: quarantined entries that `billing quarantine release`
//!   took out of quarantine and stored (or found duplicate or conflicting). `quarantined`
//!   stays the historical count of invalid arrivals, and `quarantine_rows` (the rows now in
//!   the table) drops by each released row, so over every slot
//!   `received = stored + duplicates + conflicts + quarantined - released`.
//!
//! Version 4 (PostgreSQL only; SQLite's entry is empty): the key columns (`records.unique_key`,
//! `conflicts.unique_key`, `rollups.instance` and `rollups.amount_type`) compare as bytes
//! (`COLLATE "C"`), as SQLite's do. Keys are identifiers, not prose: a linguistic collation
//! bought nothing but a `strcoll` per B-tree comparison, the largest single cost of an insert
//! on a database created with a `*.UTF-8` locale (BENCHMARKS.md). Equality is unchanged (byte
//! equality under every deterministic collation), so dedupe is unchanged; orderings in
//! reports become byte order in both stores. The migration rewrites those tables and rebuilds
//! their indexes under an exclusive lock: on a large store, plan the upgrade.

use crate::StoreError;

/// The newest schema version this build knows.
pub const LATEST: i64 = 4;

/// SQLite migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const SQLITE: &[&str] = &[
    r#"
CREATE TABLE records (
    unique_key  TEXT    NOT NULL PRIMARY KEY,
    instance    TEXT    NOT NULL,
    amount_type TEXT    NOT NULL,
    value       INTEGER NOT NULL,
    occurred_at TEXT    NOT NULL,
    hour        INTEGER NOT NULL,
    metadata    TEXT    NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE rollups (
    instance    TEXT    NOT NULL,
    amount_type TEXT    NOT NULL,
    hour        INTEGER NOT NULL,
    value       INTEGER NOT NULL,
    records     INTEGER NOT NULL,
    PRIMARY KEY (instance, amount_type, hour)
) STRICT, WITHOUT ROWID;
CREATE INDEX rollups_hour ON rollups (hour);
CREATE TABLE conflicts (
    id            INTEGER PRIMARY KEY,
    unique_key    TEXT    NOT NULL,
    stored_body   TEXT    NOT NULL,
    received_body TEXT    NOT NULL,
    first_seen    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_seen     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    count         INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX conflicts_key ON conflicts (unique_key);
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    reason      TEXT    NOT NULL,
    raw         TEXT    NOT NULL
) STRICT;
CREATE TABLE counters (
    slot        INTEGER NOT NULL PRIMARY KEY,
    received    INTEGER NOT NULL DEFAULT 0,
    stored      INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    conflicts   INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0
) STRICT;
"#,
    r#"
CREATE TABLE rollups_v2 (
    instance    TEXT    NOT NULL,
    amount_type TEXT    NOT NULL,
    hour        INTEGER NOT NULL,
    value       TEXT    NOT NULL,
    records     INTEGER NOT NULL,
    PRIMARY KEY (instance, amount_type, hour)
) STRICT, WITHOUT ROWID;
INSERT INTO rollups_v2 (instance, amount_type, hour, value, records)
    SELECT instance, amount_type, hour, CAST(value AS TEXT), records FROM rollups;
DROP TABLE rollups;
ALTER TABLE rollups_v2 RENAME TO rollups;
CREATE INDEX rollups_hour ON rollups (hour);
ALTER TABLE counters ADD COLUMN quarantine_rows INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE records ADD COLUMN stored_at TEXT;
ALTER TABLE records ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN last_duplicate_at TEXT;
ALTER TABLE counters ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
"#,
    // Version 4 only changes PostgreSQL's collations: SQLite compares text as bytes already.
    "",
];

/// PostgreSQL migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const POSTGRES: &[&str] = &[
    r#"
CREATE TABLE records (
    unique_key  TEXT   NOT NULL PRIMARY KEY,
    instance    TEXT   NOT NULL,
    amount_type TEXT   NOT NULL,
    value       BIGINT NOT NULL,
    occurred_at TEXT   NOT NULL,
    hour        BIGINT NOT NULL,
    metadata    TEXT   NOT NULL
);
CREATE TABLE rollups (
    instance    TEXT   NOT NULL,
    amount_type TEXT   NOT NULL,
    hour        BIGINT NOT NULL,
    value       BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    PRIMARY KEY (instance, amount_type, hour)
);
CREATE INDEX rollups_hour ON rollups (hour);
CREATE TABLE conflicts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unique_key    TEXT        NOT NULL,
    stored_body   TEXT        NOT NULL,
    received_body TEXT        NOT NULL,
    first_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen     TIMESTAMPTZ NOT NULL DEFAULT now(),
    count         BIGINT      NOT NULL DEFAULT 1
);
CREATE INDEX conflicts_key ON conflicts (unique_key);
CREATE TABLE quarantine (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason      TEXT        NOT NULL,
    raw         TEXT        NOT NULL
);
CREATE TABLE counters (
    slot        INTEGER NOT NULL PRIMARY KEY,
    received    BIGINT  NOT NULL DEFAULT 0,
    stored      BIGINT  NOT NULL DEFAULT 0,
    duplicates  BIGINT  NOT NULL DEFAULT 0,
    conflicts   BIGINT  NOT NULL DEFAULT 0,
    quarantined BIGINT  NOT NULL DEFAULT 0
);
"#,
    r#"
ALTER TABLE rollups ALTER COLUMN value TYPE NUMERIC USING value::numeric;
ALTER TABLE counters ADD COLUMN quarantine_rows BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE records ADD COLUMN stored_at TIMESTAMPTZ;
ALTER TABLE records ALTER COLUMN stored_at SET DEFAULT now();
ALTER TABLE records ADD COLUMN duplicates BIGINT NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN last_duplicate_at TIMESTAMPTZ;
ALTER TABLE counters ADD COLUMN released BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE records ALTER COLUMN unique_key TYPE TEXT COLLATE "C";
ALTER TABLE conflicts ALTER COLUMN unique_key TYPE TEXT COLLATE "C";
ALTER TABLE rollups ALTER COLUMN instance TYPE TEXT COLLATE "C",
                    ALTER COLUMN amount_type TYPE TEXT COLLATE "C";
"#,
];

/// SQLite: sets `counters.quarantine_rows` from the table (slot 0 holds it all).
pub(crate) const SQLITE_RECOUNT: &str = "
UPDATE counters SET quarantine_rows = 0 WHERE slot <> 0;
INSERT INTO counters (slot, quarantine_rows) VALUES (0, (SELECT COUNT(*) FROM quarantine))
    ON CONFLICT (slot) DO UPDATE SET quarantine_rows = excluded.quarantine_rows;";

/// PostgreSQL: as [`SQLITE_RECOUNT`], with the table locked against inserts for the count (a
/// frame inserting quarantine rows commits before, or waits until after, the recount), so the
/// count is exact while other ingesters write. Lock order: `quarantine`, then `counters`, as
/// in every frame.
pub(crate) const POSTGRES_RECOUNT: &str = "
LOCK TABLE quarantine IN SHARE MODE;
UPDATE counters SET quarantine_rows = 0 WHERE slot <> 0;
INSERT INTO counters (slot, quarantine_rows) VALUES (0, (SELECT COUNT(*) FROM quarantine))
    ON CONFLICT (slot) DO UPDATE SET quarantine_rows = excluded.quarantine_rows;";

/// Reads the quarantine row count (same text in both backends).
pub(crate) const QUARANTINE_ROWS: &str =
    "SELECT CAST(COALESCE(SUM(quarantine_rows), 0) AS BIGINT) FROM counters";

/// Creates `schema_version` if needed (same text in both backends).
pub(crate) const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (\
     version BIGINT NOT NULL PRIMARY KEY, \
     applied_at TEXT NOT NULL)";

/// Reads the current version (same text in both backends).
pub(crate) const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_version";

/// The migrations to run from `current`, or the refusal of a newer schema.
pub(crate) fn pending<'a>(
    migrations: &'a [&'a str],
    current: i64,
) -> Result<impl Iterator<Item = (i64, &'a str)> + 'a, StoreError> {
    debug_assert_eq!(migrations.len() as i64, LATEST);
    if current > LATEST {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: LATEST,
        });
    }
    Ok(migrations
        .iter()
        .enumerate()
        .skip(current.max(0) as usize)
        .map(|(i, sql)| (i as i64 + 1, *sql)))
}

/// Refusal for readers (reports), which never migrate: the store must be exactly at
/// [`LATEST`].
pub(crate) fn check_readable(current: i64) -> Result<(), StoreError> {
    match current {
        LATEST => Ok(()),
        v if v > LATEST => Err(StoreError::SchemaTooNew {
            found: v,
            known: LATEST,
        }),
        v => Err(StoreError::SchemaTooOld {
            found: v,
            known: LATEST,
        }),
    }
}
