//! The `postgres://` store: one PostgreSQL database (and schema) shared by any number of
//! ingesters, which dedupe together.
//!
//! URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME][&pool_size=N][&OTHER=...]`.
//! `schema=NAME` (letters, digits, `_`; used as written, case-sensitive) puts every table in
//! that schema, created if missing; without it the server's `search_path` decides (normally
//! `public`). `pool_size=N` (default [`DEFAULT_POOL_SIZE`]) is the most connections this store
//! opens, lazily, so that frames of different forward connections commit concurrently. Other
//! parameters are tokio-postgres' own (`connect_timeout`, `application_name`, `options`, ...).
//! TLS is not supported (`NoTls`). See [`url`] for parsing.
//!
//! The pool (deadpool-postgres) and its invariants:
//! - at most `pool_size` connections exist; a caller that finds none idle waits in a fair
//!   queue for the *first* connection to come free (not for one fixed connection), with no
//!   deadline of its own (a new connection is bounded by the URL's `connect_timeout`);
//! - every connection uses the store's schema: a post-create hook runs `SET search_path` on
//!   each new connection before it is handed out. A hook rather than the startup `options`
//!   parameter, because a connection pooler in front of PostgreSQL may drop startup options
//!   silently, and the tables would then land in `public`;
//! - a connection found closed when checked out is dropped and replaced (`RecyclingMethod::
//!   Fast`: `is_closed()` only, no round trip per frame). A connection that dies under a frame
//!   fails that frame (no ack, the client resends) and is replaced at its next checkout;
//! - prepared statements are cached per connection: each is prepared once per connection;
//! - a frame abandoned mid-transaction (its connection task aborted at shutdown) rolls back:
//!   tokio-postgres sends `ROLLBACK` when an unfinished transaction is dropped, before the
//!   connection serves its next caller.
//!
//! One frame is one transaction on one pooled connection, at READ COMMITTED (set explicitly,
//! whatever the server's `default_transaction_isolation`):
//! 1. valid records are sorted by `unique_key` (stable, so wire order decides among equal
//!    keys) and the first of each key is offered in one `INSERT ... SELECT FROM unnest(...) ON
//!    CONFLICT (unique_key) DO NOTHING RETURNING unique_key`. The unique index is the arbiter
//!    between ingesters: a key another transaction inserted but has not committed makes this
//!    insert wait for it, then skip the key; so each key is stored once, by whoever commits
//!    first;
//! 2. every other record (the ones not inserted, and repeats inside the frame) is compared with
//!    the stored body (read back with one `SELECT ... = ANY($1)`, which at READ COMMITTED sees
//!    the winner's committed row) and classified as duplicate or conflict;
//! 3. rollups of the inserted records are upserted in one statement, rows sorted by
//!    `(instance, amount_type, hour)`; conflicts, quarantine and the `counters` row follow.
//!
//! Deadlock freedom: every transaction takes row locks table by table in the same order
//! (records, rollups, conflicts, counters) and within a table in the same sorted key order, so
//! no two transactions can wait on each other in a cycle.

mod url;

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
};
use forward::Frame;
use tokio_postgres::{IsolationLevel, NoTls};

use crate::report::{self, HourFilter, Summary, UsageQuery, UsageRow};
use crate::schema;
use crate::validate::{Body, Checked};
use crate::{Store, StoreError, StoreOutcome, Written};

pub use url::{DEFAULT_POOL_SIZE, PgUrl};

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL database, through a pool of at most `pool_size` connections.
pub struct PgStore {
    url: PgUrl,
    pool: Pool,
}

/// A snapshot of a store's connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Most connections the pool opens (the URL's `pool_size`).
    pub max_size: usize,
    /// Connections open now (idle or in use).
    pub open: usize,
    /// Open connections idle now.
    pub idle: usize,
    /// Callers waiting for a connection to come free.
    pub waiting: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, creates the schema (when the URL names one) and applies pending migrations.
    ///
    /// Must be called inside a tokio runtime: connections run as tasks on the runtime that
    /// opens them (this first one on the caller's, later ones on whichever runtime needs
    /// them). Use a store from runtimes that keep running: a connection whose runtime was
    /// dropped is seen closed and replaced, but one whose runtime is merely idle (a
    /// current-thread runtime between `block_on` calls) stalls whoever it is handed to next.
    ///
    /// # Errors
    /// Connection or migration failure; [`StoreError::SchemaTooNew`] when the database was
    /// migrated by a newer build.
    pub async fn open(url: &PgUrl) -> Result<Self, StoreError> {
        Self::start(url, true).await
    }

    /// Connects for reports: creates and migrates nothing.
    ///
    /// # Errors
    /// Connection failure; [`StoreError::SchemaTooOld`] (e.g. no such schema) or
    /// [`StoreError::SchemaTooNew`] when the schema is not this build's.
    pub async fn open_reader(url: &PgUrl) -> Result<Self, StoreError> {
        Self::start(url, false).await
    }

    async fn start(url: &PgUrl, migrate: bool) -> Result<Self, StoreError> {
        let store = PgStore {
            pool: build_pool(url)?,
            url: url.clone(),
        };
        // Also proves the database reachable now, not at the first frame.
        let mut client = store.conn().await?;
        if migrate {
            migrate_schema(&mut client, url.schema()).await?;
        } else {
            let exists: bool = client
                .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
                .await?
                .get(0);
            let current = if exists {
                client.query_one(schema::CURRENT_VERSION, &[]).await?.get(0)
            } else {
                0
            };
            schema::check_readable(current)?;
        }
        drop(client);
        Ok(store)
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// How many connections are open, idle and awaited now.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            max_size: s.max_size,
            open: s.size,
            idle: s.available,
            waiting: s.waiting,
        }
    }

    /// The first pooled connection to be free, opened if the pool is not full yet.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => {
                StoreError::Postgres(e)
            }
            other => StoreError::Pool(other.to_string()),
        })
    }

    /// Hourly rows rolled up as `query` asks, sorted by instance, type and bucket.
    ///
    /// # Errors
    /// Query failures, [`StoreError::Overflow`].
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let HourFilter {
            lo,
            hi,
            instance,
            amount_type,
        } = query.hour_filter();
        let client = self.conn().await?;
        let rows = client
            .query(
                "SELECT instance, amount_type, hour, value, records FROM rollups
                 WHERE hour >= $1 AND hour < $2
                   AND ($3::text IS NULL OR instance = $3)
                   AND ($4::text IS NULL OR amount_type = $4)",
                &[&lo, &hi, &instance, &amount_type],
            )
            .await?;
        drop(client);
        report::roll_up(
            rows.iter().map(|r| UsageRow {
                instance: r.get(0),
                amount_type: r.get(1),
                bucket: r.get(2),
                value: r.get(3),
                records: r.get(4),
            }),
            query.by,
        )
    }

    /// Totals over every committed frame of every ingester.
    ///
    /// # Errors
    /// Query failures.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        let client = self.conn().await?;
        let r = client
            .query_one(
                "SELECT COALESCE(SUM(received), 0)::BIGINT, COALESCE(SUM(stored), 0)::BIGINT,
                        COALESCE(SUM(duplicates), 0)::BIGINT, COALESCE(SUM(conflicts), 0)::BIGINT,
                        COALESCE(SUM(quarantined), 0)::BIGINT
                 FROM counters",
                &[],
            )
            .await?;
        Ok(Summary {
            received: r.get(0),
            records: r.get(1),
            duplicates: r.get(2),
            conflicts: r.get(3),
            quarantined: r.get(4),
        })
    }
}

fn build_pool(url: &PgUrl) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        url.config()?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut pool = Pool::builder(manager).max_size(url.pool_size());
    if let Some(schema) = url.schema() {
        let set_path = format!("SET search_path TO {}", quote_ident(schema));
        pool = pool.post_create(Hook::async_fn(move |client, _| {
            let sql = set_path.clone();
            Box::pin(async move { client.batch_execute(&sql).await.map_err(HookError::Backend) })
        }));
    }
    pool.build()
        .map_err(|e| StoreError::Pool(format!("cannot build the pool: {e}")))
}

async fn migrate_schema(client: &mut Object, schema_name: Option<&str>) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Serialize concurrent openers of the same schema: CREATE ... IF NOT EXISTS races.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('billing-ingest migrate ' || COALESCE($1::text, current_schema(), '')))",
        &[&schema_name],
    )
    .await?;
    if let Some(s) = schema_name {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)))
            .await?;
    }
    tx.batch_execute(schema::CREATE_VERSION_TABLE).await?;
    let current: i64 = tx.query_one(schema::CURRENT_VERSION, &[]).await?.get(0);
    for (version, sql) in schema::pending(schema::POSTGRES, current)? {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at)
             VALUES ($1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))",
            &[&version],
        )
        .await?;
        tracing::info!(
            version,
            schema = schema_name.unwrap_or("(search_path)"),
            "PostgreSQL store migrated"
        );
    }
    tx.commit().await?;
    Ok(())
}

// Prepared once per connection, through the pool's statement cache.
const INSERT_RECORDS: &str = "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[])
     ON CONFLICT (unique_key) DO NOTHING
     RETURNING unique_key";

const SELECT_BODIES: &str = "SELECT unique_key, instance, amount_type, value, occurred_at, metadata
     FROM records WHERE unique_key = ANY($1::text[])";

const UPSERT_ROLLUPS: &str = "INSERT INTO rollups (instance, amount_type, hour, value, records)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
     ON CONFLICT (instance, amount_type, hour) DO UPDATE
     SET value = rollups.value + excluded.value, records = rollups.records + excluded.records";

const BUMP_CONFLICT: &str = "UPDATE conflicts SET count = count + $3, last_seen = now()
     WHERE unique_key = $1 AND received_body = $2";

const INSERT_CONFLICT: &str =
    "INSERT INTO conflicts (unique_key, stored_body, received_body, count)
     VALUES ($1, $2, $3, $4)";

const INSERT_QUARANTINE: &str =
    "INSERT INTO quarantine (reason, raw) SELECT * FROM unnest($1::text[], $2::text[])";

const UPSERT_COUNTERS: &str =
    "INSERT INTO counters (slot, received, stored, duplicates, conflicts, quarantined)
     VALUES (pg_backend_pid() % 16, $1, $2, $3, $4, $5)
     ON CONFLICT (slot) DO UPDATE SET
       received = counters.received + excluded.received,
       stored = counters.stored + excluded.stored,
       duplicates = counters.duplicates + excluded.duplicates,
       conflicts = counters.conflicts + excluded.conflicts,
       quarantined = counters.quarantined + excluded.quarantined";

async fn write_frame(client: &mut Object, checked: Checked) -> Result<Written, StoreError> {
    let mut w = Written::default();
    w.outcome.received = checked.len() as u64;
    if checked.is_empty() {
        return Ok(w);
    }
    let mut valid = checked.valid;
    // Stable: among equal keys, the first on the wire is the one offered for insertion.
    valid.sort_by(|a, b| a.unique_key.cmp(&b.unique_key));
    let firsts: Vec<&crate::validate::Record> = valid
        .iter()
        .enumerate()
        .filter(|(i, r)| *i == 0 || valid[i - 1].unique_key != r.unique_key)
        .map(|(_, r)| r)
        .collect();

    // Explicit, not the server's default: the dedupe below relies on READ COMMITTED (see the
    // module docs); a stricter default would turn every race on a key into a failed frame.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;
    let mut inserted: HashSet<String> = HashSet::new();
    if !firsts.is_empty() {
        let col = |f: fn(&crate::validate::Record) -> &str| -> Vec<&str> {
            firsts.iter().map(|r| f(r)).collect()
        };
        let keys = col(|r| &r.unique_key);
        let instances = col(|r| &r.body.instance);
        let types = col(|r| &r.body.amount_type);
        let occurred = col(|r| &r.body.occurred_at);
        let metadata = col(|r| &r.body.metadata);
        let values: Vec<i64> = firsts.iter().map(|r| r.body.value).collect();
        let hours: Vec<i64> = firsts.iter().map(|r| r.hour).collect();
        let rows = tx
            .query(
                &tx.prepare_cached(INSERT_RECORDS).await?,
                &[
                    &keys, &instances, &types, &values, &occurred, &hours, &metadata,
                ],
            )
            .await?;
        inserted = rows.iter().map(|r| r.get(0)).collect();
    }

    // The stored body of every key that was not inserted here.
    let missing: Vec<&str> = firsts
        .iter()
        .map(|r| r.unique_key.as_str())
        .filter(|k| !inserted.contains(*k))
        .collect();
    let mut stored: HashMap<String, Body> = HashMap::with_capacity(missing.len());
    if !missing.is_empty() {
        for row in tx
            .query(&tx.prepare_cached(SELECT_BODIES).await?, &[&missing])
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
    }

    let mut rollups: BTreeMap<(&str, &str, i64), (i64, i64)> = BTreeMap::new();
    // (key, received body) -> (stored body, arrivals)
    let mut conflicts: BTreeMap<(&str, String), (String, i64)> = BTreeMap::new();
    let mut first_of_key: Option<&crate::validate::Record> = None;
    for r in &valid {
        let is_first = first_of_key.is_none_or(|f| f.unique_key != r.unique_key);
        if is_first {
            first_of_key = Some(r);
            if inserted.contains(&r.unique_key) {
                w.outcome.stored += 1;
                let slot = rollups
                    .entry((&r.body.instance, &r.body.amount_type, r.hour))
                    .or_default();
                slot.0 = slot
                    .0
                    .checked_add(r.body.value)
                    .ok_or(StoreError::Overflow)?;
                slot.1 += 1;
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
        if *stored_body == r.body {
            w.outcome.duplicates += 1;
        } else {
            w.outcome.conflicts += 1;
            w.conflicts.push(r.unique_key.clone());
            conflicts
                .entry((&r.unique_key, r.body.to_json()))
                .or_insert_with(|| (stored_body.to_json(), 0))
                .1 += 1;
        }
    }

    if !rollups.is_empty() {
        let mut instances = Vec::with_capacity(rollups.len());
        let mut types = Vec::with_capacity(rollups.len());
        let mut hours = Vec::with_capacity(rollups.len());
        let mut values = Vec::with_capacity(rollups.len());
        let mut counts = Vec::with_capacity(rollups.len());
        for ((instance, amount_type, hour), (value, count)) in &rollups {
            instances.push(*instance);
            types.push(*amount_type);
            hours.push(*hour);
            values.push(*value);
            counts.push(*count);
        }
        tx.execute(
            &tx.prepare_cached(UPSERT_ROLLUPS).await?,
            &[&instances, &types, &hours, &values, &counts],
        )
        .await?;
    }
    for ((key, received_body), (stored_body, n)) in &conflicts {
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
    if !checked.invalid.is_empty() {
        let reasons: Vec<String> = checked.invalid.iter().map(|q| q.reason_text()).collect();
        let raws: Vec<&str> = checked.invalid.iter().map(|q| q.raw.as_str()).collect();
        tx.execute(
            &tx.prepare_cached(INSERT_QUARANTINE).await?,
            &[&reasons, &raws],
        )
        .await?;
    }
    w.outcome.quarantined = checked.invalid.len() as u64;
    let o = w.outcome;
    tx.execute(
        &tx.prepare_cached(UPSERT_COUNTERS).await?,
        &[
            &(o.received as i64),
            &(o.stored as i64),
            &(o.duplicates as i64),
            &(o.conflicts as i64),
            &(o.quarantined as i64),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(w)
}
impl Store for PgStore {
    async fn store(&self, _frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        let mut client = self.conn().await?;
        let written = write_frame(&mut client, checked).await?;
        drop(client);
        Ok(written.log())
    }
}
