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
//! Writing a frame (`postgres/write.rs`): one transaction on one pooled connection at READ
//! COMMITTED; the unique index on `unique_key` arbitrates between ingesters, so each key is
//! stored once; rollups are exact `NUMERIC` sums; row locks are taken in one fixed order, so
//! concurrent frames never deadlock. When the database refuses one record, the frame is redone
//! record by record in savepoints and the refused records are quarantined (`store_rejected`).
//!
//! Errors: a server error shows its SQLSTATE and message (`StoreError`'s Display, e.g.
//! `PostgreSQL: 22003 numeric value out of range`), in the log and in quarantine details.

mod release;
mod url;
mod write;

use billing_schema::validate::Policy;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
};
use forward::Frame;
use tokio_postgres::NoTls;

use crate::key::{KeyRecord, KeyReport};
use crate::lists::{self, ConflictRow, ListFilter, MAX_LIST_ROWS, QuarantineRow};
use crate::release::{ReleaseFilter, Released};
use crate::report::{self, HourFilter, Summary, UsageQuery, UsageRow, parse_sum};
use crate::schema;
use crate::store_error::is_about_data;
use crate::store_options::{StoreOptions, UnstoredWarnings};
use crate::validate::Checked;
use crate::{Store, StoreError, StoreOutcome, Stored};

pub use url::{DEFAULT_POOL_SIZE, PgUrl};

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL database, through a pool of at most `pool_size` connections.
pub struct PgStore {
    url: PgUrl,
    pool: Pool,
    options: StoreOptions,
    unstored: UnstoredWarnings,
    optimism: write::Optimism,
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
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// As [`PgStore::open`], with `options`.
    ///
    /// # Errors
    /// As [`PgStore::open`].
    pub async fn open_with(url: &PgUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        Self::start(url, true, options).await
    }

    /// Connects for reports: creates and migrates nothing.
    ///
    /// # Errors
    /// Connection failure; [`StoreError::SchemaTooOld`] (e.g. no such schema) or
    /// [`StoreError::SchemaTooNew`] when the schema is not this build's.
    pub async fn open_reader(url: &PgUrl) -> Result<Self, StoreError> {
        Self::start(url, false, &StoreOptions::default()).await
    }

    async fn start(url: &PgUrl, migrate: bool, options: &StoreOptions) -> Result<Self, StoreError> {
        let store = PgStore {
            pool: build_pool(url)?,
            url: url.clone(),
            options: options.clone(),
            unstored: UnstoredWarnings::default(),
            optimism: write::Optimism::default(),
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
    /// Query failures, [`StoreError::Overflow`], [`StoreError::Range`] (see [`UsageQuery::check`]).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        query.check()?;
        let HourFilter {
            lo,
            hi,
            instance,
            amount_type,
        } = query.hour_filter();
        let client = self.conn().await?;
        let rows = client
            .query(
                "SELECT instance, amount_type, hour, value::text, records FROM rollups
                 WHERE hour >= $1 AND hour < $2
                   AND ($3::text IS NULL OR instance = $3)
                   AND ($4::text IS NULL OR amount_type = $4)",
                &[&lo, &hi, &instance, &amount_type],
            )
            .await?;
        drop(client);
        let hourly = rows
            .iter()
            .map(|r| {
                Ok(UsageRow {
                    instance: r.get(0),
                    amount_type: r.get(1),
                    bucket: r.get(2),
                    value: parse_sum(r.get(3))?,
                    records: r.get(4),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        report::roll_up(hourly, query.by)
    }

    /// Checks that the database answers and the store's schema is at this build's version (the
    /// readiness probe). Waits for a pooled connection like any query: bound it with a timeout.
    ///
    /// # Errors
    /// Connection or query failures (e.g. the schema was dropped);
    /// [`StoreError::SchemaTooOld`] / [`StoreError::SchemaTooNew`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.conn().await?;
        let version: i64 = client.query_one(schema::CURRENT_VERSION, &[]).await?.get(0);
        schema::check_readable(version)
    }

    /// The newest conflict rows `filter` selects (at most [`MAX_LIST_ROWS`](crate::MAX_LIST_ROWS)).
    ///
    /// # Errors
    /// Query failures.
    pub async fn conflicts(&self, filter: &ListFilter) -> Result<Vec<ConflictRow>, StoreError> {
        let client = self.conn().await?;
        let rows = client
            .query(
                "SELECT unique_key,
                        to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        count, stored_body, received_body
                 FROM conflicts WHERE ($2::TEXT IS NULL OR unique_key = $2)
                 ORDER BY last_seen DESC, id DESC LIMIT $1",
                &[&lists::bounded(filter.limit), &filter.key],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ConflictRow {
                unique_key: r.get(0),
                first_seen: r.get(1),
                last_seen: r.get(2),
                count: r.get(3),
                stored_body: r.get(4),
                received_body: r.get(5),
            })
            .collect())
    }

    /// The newest quarantine rows `filter` selects (at most [`MAX_LIST_ROWS`](crate::MAX_LIST_ROWS)).
    ///
    /// # Errors
    /// Query failures.
    pub async fn quarantine(&self, filter: &ListFilter) -> Result<Vec<QuarantineRow>, StoreError> {
        let client = self.conn().await?;
        let rows = client
            .query(
                "SELECT id,
                        to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        reason, raw
                 FROM quarantine
                 WHERE ($2::TEXT IS NULL OR starts_with(reason, $2))
                   AND ($3::BIGINT IS NULL OR id = $3)
                 ORDER BY id DESC LIMIT $1",
                &[&lists::bounded(filter.limit), &filter.reason, &filter.id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| QuarantineRow {
                id: r.get(0),
                received_at: r.get(1),
                reason: r.get(2),
                raw: r.get(3),
            })
            .collect())
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
                        COALESCE(SUM(quarantined), 0)::BIGINT, COALESCE(SUM(released), 0)::BIGINT
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
            released: r.get(5),
        })
    }

    /// What the store holds for `unique_key`: its record, duplicate count and conflicting
    /// versions (see [`KeyReport`]).
    ///
    /// # Errors
    /// Query failures.
    pub async fn key(&self, unique_key: &str) -> Result<KeyReport, StoreError> {
        let client = self.conn().await?;
        let row = client
            .query_opt(
                "SELECT instance, amount_type, value, occurred_at, metadata,
                        to_char(stored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        duplicates,
                        to_char(last_duplicate_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                 FROM records WHERE unique_key = $1",
                &[&unique_key],
            )
            .await?;
        drop(client);
        let record = row.map(|r| {
            KeyRecord::new(
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        });
        let conflicts = self
            .conflicts(&ListFilter::newest(MAX_LIST_ROWS).key(unique_key))
            .await?;
        Ok(KeyReport::new(unique_key, record, conflicts))
    }

    /// Releases the quarantine rows `filter` selects that pass `policy` at `now`: stores them
    /// as ingest would and deletes their rows, one transaction per batch (see
    /// [`Released`] and `release.rs`); `dry_run` changes nothing and tells what it would do.
    ///
    /// # Errors
    /// Connection or query failures: the batch in progress is rolled back, earlier batches
    /// stay released.
    pub async fn release(
        &self,
        filter: &ReleaseFilter,
        policy: &Policy,
        now: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<Released, StoreError> {
        let mut client = self.conn().await?;
        release::release(&mut client, filter, policy, now, dry_run).await
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
    tx.batch_execute(schema::POSTGRES_RECOUNT).await?;
    tx.commit().await?;
    Ok(())
}

impl Store for PgStore {
    /// Stores the frame in one transaction; when the database refuses a record, redoes it
    /// record by record and quarantines the refused ones (see `postgres/write.rs`).
    async fn store(&self, frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        Ok(self.store_counted(frame, checked).await?.outcome)
    }

    async fn store_counted(&self, frame: &Frame, checked: Checked) -> Result<Stored, StoreError> {
        let mut client = self.conn().await?;
        let wrote = match write::fast(&mut client, &checked, &self.options, &self.optimism).await {
            Ok(wrote) => wrote,
            Err(e) if is_about_data(&e) => {
                tracing::warn!(error = %e, "the store refused a record of the frame; storing it record by record");
                write::one_by_one(&mut client, &checked, frame, &self.options).await?
            }
            Err(e) => return Err(e),
        };
        drop(client);
        let (written, unstored) = wrote.log_rejected();
        self.unstored
            .note(unstored, self.options.quarantine_max_rows);
        Ok(written.log())
    }
}
