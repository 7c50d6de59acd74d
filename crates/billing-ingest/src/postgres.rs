//! The `postgres://` store: one PostgreSQL database (and schema) shared by any number of
//! ingesters, which dedupe together.
//!
//! URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME][&pool_size=N][&OTHER=...]`.
//! `schema=NAME` (letters, digits, `_`; used as written, case-sensitive) puts every table in
//! that schema, created if missing; without it the server's `search_path` decides (normally
//! `public`). `pool_size=N` (default [`DEFAULT_POOL_SIZE`]) is how many connections this store
//! opens, lazily, so that frames of different forward connections commit concurrently. Other
//! parameters are tokio-postgres' own (`connect_timeout`, `application_name`, `options`, ...).
//! TLS is not supported (`NoTls`).
//!
//! One frame is one transaction on one pooled connection, at READ COMMITTED:
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use forward::Frame;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Statement};

use crate::report::{self, HourFilter, Summary, UsageQuery, UsageRow};
use crate::schema;
use crate::validate::{Body, Checked};
use crate::{Store, StoreError, StoreOutcome, StoreUrlError, Written};

/// Connections a store opens when the URL does not say `pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// Longest schema name PostgreSQL keeps.
const MAX_SCHEMA_BYTES: usize = 63;

/// A parsed `postgres://` store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// As given (may hold a password; never displayed).
    full: String,
    /// What tokio-postgres parses: `full` without this crate's parameters.
    conn: String,
    schema: Option<String>,
    pool_size: usize,
}

impl PgUrl {
    /// The schema the tables live in, when the URL names one.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Connections the store may open.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The same URL with another schema.
    ///
    /// # Errors
    /// When `schema` is not a valid name.
    pub fn with_schema(&self, schema: &str) -> Result<Self, StoreUrlError> {
        check_schema(schema)?;
        let mut u = self.clone();
        u.schema = Some(schema.to_string());
        let (base, query) = u.full.split_once('?').unwrap_or((&u.full, ""));
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("schema="))
            .map(str::to_string)
            .collect();
        params.insert(0, format!("schema={schema}"));
        u.full = format!("{base}?{}", params.join("&"));
        Ok(u)
    }

    fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        Ok(self.conn.parse()?)
    }
}

fn check_schema(s: &str) -> Result<(), StoreUrlError> {
    let mut chars = s.chars();
    let ok = s.len() <= MAX_SCHEMA_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreUrlError::Postgres(format!(
            "schema {s:?} must be letters, digits and _ (not first), at most {MAX_SCHEMA_BYTES} bytes"
        )))
    }
}

impl std::str::FromStr for PgUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rest = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("schema", name)) => {
                    check_schema(name)?;
                    schema = Some(name.to_string());
                }
                Some(("pool_size", n)) => {
                    pool_size = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        StoreUrlError::Postgres(format!(
                            "pool_size {n:?} is not a positive integer"
                        ))
                    })?;
                }
                _ => rest.push(param),
            }
        }
        let conn = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        conn.parse::<tokio_postgres::Config>()
            .map_err(|e| StoreUrlError::Postgres(e.to_string()))?;
        Ok(PgUrl {
            full: s.to_string(),
            conn,
            schema,
            pool_size,
        })
    }
}

impl std::fmt::Display for PgUrl {
    /// The URL with its password, if any, replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.full;
        let Some(start) = s.find("://").map(|i| i + 3) else {
            return f.write_str(s);
        };
        let end = s[start..].find(['/', '?']).map_or(s.len(), |i| start + i);
        let authority = &s[start..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let user_end = start + authority[..at].find(':').unwrap_or(at);
                write!(f, "{}:***{}", &s[..user_end], &s[start + at..])
            }
            _ => f.write_str(s),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One connection with its prepared statements.
struct PgConn {
    client: Client,
    insert_records: Statement,
    select_bodies: Statement,
    upsert_rollups: Statement,
    bump_conflict: Statement,
    insert_conflict: Statement,
    insert_quarantine: Statement,
    upsert_counters: Statement,
}

/// A PostgreSQL database, through a small pool of connections.
pub struct PgStore {
    url: PgUrl,
    config: tokio_postgres::Config,
    slots: Vec<Mutex<Option<PgConn>>>,
    next: AtomicUsize,
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
    /// Must be called inside a tokio runtime: connections run as tasks on it.
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
            config: url.config()?,
            url: url.clone(),
            slots: (0..url.pool_size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        let mut client = store.connect_raw().await?;
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
        let first = prepare(client).await?;
        *store.slots[0].lock().await = Some(first);
        Ok(store)
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    async fn connect_raw(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection failed");
            }
        });
        if let Some(schema) = self.url.schema() {
            client
                .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
                .await?;
        }
        Ok(client)
    }

    /// A pooled connection, connected: a free one if any, else waits for one in turn.
    async fn conn(&self) -> Result<MutexGuard<'_, Option<PgConn>>, StoreError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let free = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok());
        let mut guard = match free {
            Some(g) => g,
            None => self.slots[start].lock().await,
        };
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(prepare(self.connect_raw().await?).await?);
        }
        Ok(guard)
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
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(StoreError::Closed)?;
        let rows = conn
            .client
            .query(
                "SELECT instance, amount_type, hour, value, records FROM rollups
                 WHERE hour >= $1 AND hour < $2
                   AND ($3::text IS NULL OR instance = $3)
                   AND ($4::text IS NULL OR amount_type = $4)",
                &[&lo, &hi, &instance, &amount_type],
            )
            .await?;
        drop(guard);
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
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(StoreError::Closed)?;
        let r = conn
            .client
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

async fn migrate_schema(client: &mut Client, schema_name: Option<&str>) -> Result<(), StoreError> {
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

async fn prepare(client: Client) -> Result<PgConn, StoreError> {
    Ok(PgConn {
        insert_records: client
            .prepare(
                "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[])
                 ON CONFLICT (unique_key) DO NOTHING
                 RETURNING unique_key",
            )
            .await?,
        select_bodies: client
            .prepare(
                "SELECT unique_key, instance, amount_type, value, occurred_at, metadata
                 FROM records WHERE unique_key = ANY($1::text[])",
            )
            .await?,
        upsert_rollups: client
            .prepare(
                "INSERT INTO rollups (instance, amount_type, hour, value, records)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                 ON CONFLICT (instance, amount_type, hour) DO UPDATE
                 SET value = rollups.value + excluded.value, records = rollups.records + excluded.records",
            )
            .await?,
        bump_conflict: client
            .prepare(
                "UPDATE conflicts SET count = count + $3, last_seen = now()
                 WHERE unique_key = $1 AND received_body = $2",
            )
            .await?,
        insert_conflict: client
            .prepare(
                "INSERT INTO conflicts (unique_key, stored_body, received_body, count)
                 VALUES ($1, $2, $3, $4)",
            )
            .await?,
        insert_quarantine: client
            .prepare(
                "INSERT INTO quarantine (reason, raw) SELECT * FROM unnest($1::text[], $2::text[])",
            )
            .await?,
        upsert_counters: client
            .prepare(
                "INSERT INTO counters (slot, received, stored, duplicates, conflicts, quarantined)
                 VALUES (pg_backend_pid() % 16, $1, $2, $3, $4, $5)
                 ON CONFLICT (slot) DO UPDATE SET
                   received = counters.received + excluded.received,
                   stored = counters.stored + excluded.stored,
                   duplicates = counters.duplicates + excluded.duplicates,
                   conflicts = counters.conflicts + excluded.conflicts,
                   quarantined = counters.quarantined + excluded.quarantined",
            )
            .await?,
        client,
    })
}

async fn write_frame(conn: &mut PgConn, checked: Checked) -> Result<Written, StoreError> {
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

    let tx = conn.client.transaction().await?;
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
                &conn.insert_records,
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
        for row in tx.query(&conn.select_bodies, &[&missing]).await? {
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
            &conn.upsert_rollups,
            &[&instances, &types, &hours, &values, &counts],
        )
        .await?;
    }
    for ((key, received_body), (stored_body, n)) in &conflicts {
        let bumped = tx
            .execute(&conn.bump_conflict, &[key, received_body, n])
            .await?;
        if bumped == 0 {
            tx.execute(&conn.insert_conflict, &[key, stored_body, received_body, n])
                .await?;
        }
    }
    if !checked.invalid.is_empty() {
        let reasons: Vec<&str> = checked.invalid.iter().map(|q| q.reason.as_str()).collect();
        let raws: Vec<&str> = checked.invalid.iter().map(|q| q.raw.as_str()).collect();
        tx.execute(&conn.insert_quarantine, &[&reasons, &raws])
            .await?;
        w.quarantined = reasons.iter().map(|r| r.to_string()).collect();
    }
    w.outcome.quarantined = checked.invalid.len() as u64;
    let o = w.outcome;
    tx.execute(
        &conn.upsert_counters,
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
    async fn store(&self, frame: &Frame) -> Result<StoreOutcome, StoreError> {
        let checked = Checked::frame(frame);
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(StoreError::Closed)?;
        let written = write_frame(conn, checked).await?;
        drop(guard);
        Ok(written.log())
    }
}
