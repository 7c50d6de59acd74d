//! The `sqlite:PATH` store: one SQLite file, the ingester's default.
//!
//! Why a dedicated thread: rusqlite is synchronous and a connection is not `Sync`. The store
//! owns one connection on one named thread (`billing-sqlite`) and sends it jobs over a channel;
//! async callers validate their frame on their own task, then await the job's reply. Frames are
//! written one at a time, each in its own `BEGIN IMMEDIATE` transaction with cached prepared
//! statements, so a frame costs one commit (one WAL fsync), not one per record.
//!
//! Durability: `journal_mode=WAL`, `synchronous=FULL`: a commit returns only after the WAL is
//! fsynced, so an acked chunk survives a crash of the ingester or the machine. `busy_timeout`
//! lets a second process (another ingester, or `billing report`) share the file.
//!
//! Per record, inside the frame's transaction: `INSERT ... ON CONFLICT (unique_key) DO
//! NOTHING`; one row changed means stored; none means the key exists, so the stored body is read
//! and compared ([`crate::validate`]) to classify the arrival as duplicate or conflict. Records
//! repeated inside one frame therefore behave exactly as if they came in separate frames.
//! Rollups are summed per `(instance, amount_type, hour)` in memory and upserted once per key
//! before the commit. A failure anywhere rolls the whole frame back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use forward::Frame;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use crate::report::{self, HourFilter, Summary, UsageQuery, UsageRow};
use crate::schema;
use crate::validate::{Body, Checked};
use crate::{Store, StoreError, StoreOutcome, Written};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A SQLite database file, written from a dedicated thread.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
    path: PathBuf,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// The file cannot be opened or migrated, or its schema is newer than this build
    /// ([`StoreError::SchemaTooNew`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::start(path, true).await
    }

    /// Opens an existing database for reports: creates and migrates nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no file; [`StoreError::SchemaTooOld`] /
    /// [`StoreError::SchemaTooNew`] when its schema is not this build's.
    pub async fn open_reader(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        Self::start(path, false).await
    }

    async fn start(path: &Path, migrate: bool) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = tokio::sync::oneshot::channel();
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("billing-sqlite".into())
            .spawn(move || {
                let mut conn = match connect(&owned, migrate) {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for job in queue {
                    job(&mut conn);
                }
            })?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok(Self {
            jobs,
            thread,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store's thread.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Hourly rows rolled up as `query` asks, sorted by instance, type and bucket.
    ///
    /// # Errors
    /// Query failures, [`StoreError::Overflow`].
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let filter = query.hour_filter();
        let hourly = self.call(move |conn| hourly_rows(conn, &filter)).await?;
        report::roll_up(hourly, query.by)
    }

    /// Totals over every committed frame.
    ///
    /// # Errors
    /// Query failures.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        self.call(|conn| {
            Ok(conn.query_row(
                "SELECT CAST(COALESCE(SUM(received), 0) AS INTEGER),
                        CAST(COALESCE(SUM(stored), 0) AS INTEGER),
                        CAST(COALESCE(SUM(duplicates), 0) AS INTEGER),
                        CAST(COALESCE(SUM(conflicts), 0) AS INTEGER),
                        CAST(COALESCE(SUM(quarantined), 0) AS INTEGER)
                 FROM counters",
                [],
                |r| {
                    Ok(Summary {
                        received: r.get(0)?,
                        records: r.get(1)?,
                        duplicates: r.get(2)?,
                        conflicts: r.get(3)?,
                        quarantined: r.get(4)?,
                    })
                },
            )?)
        })
        .await
    }

    /// Finishes the queued jobs, then closes the connection and waits for its thread to end
    /// (dropping the store does the same without waiting).
    pub async fn close(self) {
        let Self { jobs, thread, .. } = self;
        drop(jobs);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn connect(path: &Path, migrate: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if migrate {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(32);
    if migrate {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(schema::CREATE_VERSION_TABLE)?;
        let current: i64 = tx.query_row(schema::CURRENT_VERSION, [], |r| r.get(0))?;
        for (version, sql) in schema::pending(schema::SQLITE, current)? {
            tx.execute_batch(sql)?;
            tx.execute(
                &format!("INSERT INTO schema_version (version, applied_at) VALUES (?1, {NOW})"),
                [version],
            )?;
            tracing::info!(version, path = %path.display(), "SQLite store migrated");
        }
        tx.commit()?;
    } else {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'schema_version')",
            [],
            |r| r.get(0),
        )?;
        let current = if exists {
            conn.query_row(schema::CURRENT_VERSION, [], |r| r.get(0))?
        } else {
            0
        };
        schema::check_readable(current)?;
    }
    Ok(conn)
}

fn stored_body(stmt: &mut rusqlite::CachedStatement<'_>, key: &str) -> rusqlite::Result<Body> {
    stmt.query_row([key], |r| {
        Ok(Body {
            instance: r.get(0)?,
            amount_type: r.get(1)?,
            value: r.get(2)?,
            occurred_at: r.get(3)?,
            metadata: r.get(4)?,
        })
    })
}

fn write_frame(conn: &mut Connection, checked: Checked) -> Result<Written, StoreError> {
    let mut w = Written::default();
    w.outcome.received = checked.len() as u64;
    if checked.is_empty() {
        return Ok(w);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (unique_key) DO NOTHING",
        )?;
        let mut select = tx.prepare_cached(
            "SELECT instance, amount_type, value, occurred_at, metadata FROM records WHERE unique_key = ?1",
        )?;
        let mut rollups: BTreeMap<(&str, &str, i64), (i64, i64)> = BTreeMap::new();
        for r in &checked.valid {
            let b = &r.body;
            let inserted = insert.execute(params![
                r.unique_key,
                b.instance,
                b.amount_type,
                b.value,
                b.occurred_at,
                r.hour,
                b.metadata
            ])?;
            if inserted == 1 {
                w.outcome.stored += 1;
                let slot = rollups
                    .entry((&b.instance, &b.amount_type, r.hour))
                    .or_default();
                slot.0 = slot.0.checked_add(b.value).ok_or(StoreError::Overflow)?;
                slot.1 += 1;
                continue;
            }
            let stored = stored_body(&mut select, &r.unique_key)?;
            if stored == *b {
                w.outcome.duplicates += 1;
                continue;
            }
            w.outcome.conflicts += 1;
            w.conflicts.push(r.unique_key.clone());
            let received_body = b.to_json();
            let mut bump = tx.prepare_cached(&format!(
                "UPDATE conflicts SET count = count + 1, last_seen = {NOW}
                 WHERE unique_key = ?1 AND received_body = ?2"
            ))?;
            if bump.execute(params![r.unique_key, received_body])? == 0 {
                tx.prepare_cached(
                    "INSERT INTO conflicts (unique_key, stored_body, received_body) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![r.unique_key, stored.to_json(), received_body])?;
            }
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO rollups (instance, amount_type, hour, value, records) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (instance, amount_type, hour)
             DO UPDATE SET value = value + excluded.value, records = records + excluded.records",
        )?;
        for ((instance, amount_type, hour), (value, records)) in rollups {
            upsert.execute(params![instance, amount_type, hour, value, records])?;
        }
        let mut quarantine =
            tx.prepare_cached("INSERT INTO quarantine (reason, raw) VALUES (?1, ?2)")?;
        for q in &checked.invalid {
            quarantine.execute(params![q.reason_text(), q.raw])?;
        }
        w.outcome.quarantined = checked.invalid.len() as u64;
        let o = &w.outcome;
        tx.prepare_cached(
            "INSERT INTO counters (slot, received, stored, duplicates, conflicts, quarantined)
             VALUES (0, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (slot) DO UPDATE SET
               received = received + excluded.received,
               stored = stored + excluded.stored,
               duplicates = duplicates + excluded.duplicates,
               conflicts = conflicts + excluded.conflicts,
               quarantined = quarantined + excluded.quarantined",
        )?
        .execute(params![
            o.received as i64,
            o.stored as i64,
            o.duplicates as i64,
            o.conflicts as i64,
            o.quarantined as i64
        ])?;
    }
    tx.commit()?;
    Ok(w)
}

fn hourly_rows(conn: &mut Connection, f: &HourFilter) -> Result<Vec<UsageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance, amount_type, hour, value, records FROM rollups
         WHERE hour >= ?1 AND hour < ?2
           AND (?3 IS NULL OR instance = ?3) AND (?4 IS NULL OR amount_type = ?4)",
    )?;
    let rows = stmt
        .query_map(params![f.lo, f.hi, f.instance, f.amount_type], |r| {
            Ok(UsageRow {
                instance: r.get(0)?,
                amount_type: r.get(1)?,
                bucket: r.get(2)?,
                value: r.get(3)?,
                records: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

impl Store for SqliteStore {
    async fn store(&self, _frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        let written = self.call(move |conn| write_frame(conn, checked)).await?;
        Ok(written.log())
    }
}
