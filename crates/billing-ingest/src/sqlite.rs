//! The `sqlite:PATH` store: one SQLite file, the ingester's default.
//!
//! Why a dedicated thread: rusqlite is synchronous and a connection is not `Sync`. The store
//! owns one connection on one named thread (`billing-sqlite`) and sends it jobs over a channel;
//! async callers validate their frame on their own task, then await the job's reply. Frames are
//! written in `BEGIN IMMEDIATE` transactions with cached prepared statements; the frames that
//! queued up while the previous commit ran are committed together (group commit, each frame
//! in its own savepoint: one refused frame is rolled back alone), so a frame costs at most one
//! commit (one WAL fsync), not one per record, and under load much less. Replies (and so
//! acks) go out only after the commit that holds the frame.
//!
//! Durability: `journal_mode=WAL`, `synchronous=FULL`: a commit returns only after the WAL is
//! fsynced, so an acked chunk survives a crash of the ingester or the machine. `busy_timeout`
//! lets a second process (another ingester, or `billing report`) share the file.
//!
//! Writing a frame (`sqlite/write.rs`): per record, inside the frame's transaction, `INSERT ...
//! ON CONFLICT (unique_key) DO NOTHING`; one row changed means stored; none means the key
//! exists, so the stored body is read and compared ([`crate::validate`]) to classify the
//! arrival as duplicate or conflict. Records repeated inside one frame therefore behave exactly
//! as if they came in separate frames. Rollups are exact `i128` sums kept as decimal text. A
//! failure rolls the whole frame back; when it was about one record's data, the frame is
//! redone record by record and the refused records are quarantined (`store_rejected`).
//!
//! Files: a database this store creates is created 0600 before SQLite opens it, and SQLite
//! gives its `-wal` and `-shm` files the same mode (`files.rs`).

mod release;
mod write;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use billing_schema::validate::Policy;
use forward::Frame;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::key::{KeyRecord, KeyReport};
use crate::lists::{self, ConflictRow, ListFilter, MAX_LIST_ROWS, QuarantineRow};
use crate::quarantine::{RawIndex, Wrote};
use crate::release::{ReleaseFilter, Released};
use crate::report::{self, HourFilter, Summary, UsageQuery, UsageRow, parse_sum};
use crate::store_error::is_about_data;
use crate::store_options::{StoreOptions, UnstoredWarnings};
use crate::validate::Checked;
use crate::{Store, StoreError, StoreOutcome, Stored, files, schema};

use write::NOW;

/// Work for the store's thread.
enum Job {
    /// Anything run on the connection (reports, lists, migrations' checks, releases).
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
    /// A frame to store: writes waiting together are committed together (see [`group_commit`]).
    Write(WriteJob),
}

/// A frame to store and where its outcome goes: on a failure about its data, the frame comes
/// back with the error so that the caller can store it record by record.
struct WriteJob {
    checked: Checked,
    options: StoreOptions,
    reply: tokio::sync::oneshot::Sender<Result<Wrote, (StoreError, Checked, StoreOptions)>>,
}

/// SQLite's page cache per connection, in KiB (SQLite's default is 2,000): enough for the
/// inner pages of a records B-tree of tens of millions of keys, so that an insert reads only
/// its leaf. It bounds what the cache adds to the ingester's RSS.
const CACHE_KIB: i64 = 32 * 1024;

/// Most frames committed in one transaction.
const MAX_GROUP: usize = 64;

/// Runs jobs in order; a write takes every write queued behind it (up to [`MAX_GROUP`], and
/// not past another kind of job) into one transaction, so frames that arrive while a commit
/// is under way share the next commit's fsync. Each frame's reply goes out only after the
/// commit that holds it: an ack still follows a durable commit.
fn run_jobs(conn: &mut Connection, queue: &mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Call(f) => f(conn),
            Job::Write(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(Job::Write(w)) => group.push(w),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                group_commit(conn, group);
            }
        }
    }
}

/// Stores `group` (see [`run_jobs`]) and answers each frame.
fn group_commit(conn: &mut Connection, group: Vec<WriteJob>) {
    if group.len() == 1 {
        let WriteJob {
            checked,
            options,
            reply,
        } = group.into_iter().next().expect("one");
        let _ = reply.send(match write::fast(conn, &checked, &options) {
            Ok(wrote) => Ok(wrote),
            Err(e) => Err((e, checked, options)),
        });
        return;
    }
    let frames: Vec<(&Checked, &StoreOptions)> =
        group.iter().map(|w| (&w.checked, &w.options)).collect();
    match write::fast_group(conn, &frames) {
        Ok(results) => {
            for (job, result) in group.into_iter().zip(results) {
                let _ = job.reply.send(match result {
                    Ok(wrote) => Ok(wrote),
                    Err(e) => Err((e, job.checked, job.options)),
                });
            }
        }
        Err(e) => {
            let text = e.to_string();
            tracing::debug!(frames = group.len(), error = %text, "group commit failed");
            for job in group {
                let _ = job
                    .reply
                    .send(Err((replicate(&e), job.checked, job.options)));
            }
        }
    }
}

/// The same error again, for each frame of a failed group (errors are not `Clone`): SQLite's
/// code and message are kept, so a full disk still reads as one.
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, message)) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        StoreError::Io(io) => StoreError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => StoreError::Io(std::io::Error::other(other.to_string())),
    }
}

/// A SQLite database file, written from a dedicated thread.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
    path: PathBuf,
    options: StoreOptions,
    unstored: UnstoredWarnings,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// The file cannot be opened or migrated, or its schema is newer than this build
    /// ([`StoreError::SchemaTooNew`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreOptions::default()).await
    }

    /// As [`SqliteStore::open`], with `options`.
    ///
    /// # Errors
    /// As [`SqliteStore::open`]; also when a new database file cannot be created.
    pub async fn open_with(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        Self::start(path, true, options).await
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
        Self::start(path, false, &StoreOptions::default()).await
    }

    async fn start(path: &Path, migrate: bool, options: &StoreOptions) -> Result<Self, StoreError> {
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
                run_jobs(&mut conn, &queue);
            })?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok(Self {
            jobs,
            thread,
            path: path.to_path_buf(),
            options: options.clone(),
            unstored: UnstoredWarnings::default(),
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
            .send(Job::Call(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            })))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a frame on the store's thread, in a group commit with the frames queued with it.
    async fn write(
        &self,
        checked: Checked,
        options: StoreOptions,
    ) -> Result<Result<Wrote, (StoreError, Checked, StoreOptions)>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Write(WriteJob {
                checked,
                options,
                reply,
            }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }

    /// Hourly rows rolled up as `query` asks, sorted by instance, type and bucket.
    ///
    /// # Errors
    /// Query failures, [`StoreError::Overflow`], [`StoreError::Range`] (see [`UsageQuery::check`]).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        query.check()?;
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
                        CAST(COALESCE(SUM(quarantined), 0) AS INTEGER),
                        CAST(COALESCE(SUM(released), 0) AS INTEGER)
                 FROM counters",
                [],
                |r| {
                    Ok(Summary {
                        received: r.get(0)?,
                        records: r.get(1)?,
                        duplicates: r.get(2)?,
                        conflicts: r.get(3)?,
                        quarantined: r.get(4)?,
                        released: r.get(5)?,
                    })
                },
            )?)
        })
        .await
    }

    /// Checks that the database answers and is at this build's schema version (the
    /// readiness probe).
    ///
    /// # Errors
    /// Query failures; [`StoreError::SchemaTooOld`] / [`StoreError::SchemaTooNew`] when the
    /// schema was changed under the store.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            let version: i64 = conn.query_row(schema::CURRENT_VERSION, [], |r| r.get(0))?;
            schema::check_readable(version)
        })
        .await
    }

    /// The newest conflict rows `filter` selects (at most [`MAX_LIST_ROWS`](crate::MAX_LIST_ROWS)).
    ///
    /// # Errors
    /// Query failures.
    pub async fn conflicts(&self, filter: &ListFilter) -> Result<Vec<ConflictRow>, StoreError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT unique_key, first_seen, last_seen, count, stored_body, received_body
                 FROM conflicts WHERE (?2 IS NULL OR unique_key = ?2)
                 ORDER BY last_seen DESC, id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map(
                    rusqlite::params![lists::bounded(filter.limit), filter.key],
                    |r| {
                        Ok(ConflictRow {
                            unique_key: r.get(0)?,
                            first_seen: r.get(1)?,
                            last_seen: r.get(2)?,
                            count: r.get(3)?,
                            stored_body: r.get(4)?,
                            received_body: r.get(5)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The newest quarantine rows `filter` selects (at most [`MAX_LIST_ROWS`](crate::MAX_LIST_ROWS)).
    ///
    /// # Errors
    /// Query failures.
    pub async fn quarantine(&self, filter: &ListFilter) -> Result<Vec<QuarantineRow>, StoreError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, received_at, reason, raw FROM quarantine
                 WHERE (?2 IS NULL OR substr(reason, 1, length(?2)) = ?2)
                   AND (?3 IS NULL OR id = ?3)
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let params = rusqlite::params![lists::bounded(filter.limit), filter.reason, filter.id];
            let rows = stmt
                .query_map(params, |r| {
                    Ok(QuarantineRow {
                        id: r.get(0)?,
                        received_at: r.get(1)?,
                        reason: r.get(2)?,
                        raw: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// What the store holds for `unique_key`: its record, duplicate count and conflicting
    /// versions (see [`KeyReport`]).
    ///
    /// # Errors
    /// Query failures.
    pub async fn key(&self, unique_key: &str) -> Result<KeyReport, StoreError> {
        let key = unique_key.to_string();
        let record = self
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT instance, amount_type, value, occurred_at, metadata, stored_at,
                                duplicates, last_duplicate_at
                         FROM records WHERE unique_key = ?1",
                    )?
                    .query_row([key], |r| {
                        Ok(KeyRecord::new(
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    })
                    .optional()?)
            })
            .await?;
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
    /// Query failures: the batch in progress is rolled back, earlier batches stay released.
    pub async fn release(
        &self,
        filter: &ReleaseFilter,
        policy: &Policy,
        now: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<Released, StoreError> {
        let (filter, policy) = (filter.clone(), policy.clone());
        self.call(move |conn| release::release(conn, &filter, &policy, now, dry_run))
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
        let name = path.to_string_lossy();
        if name != ":memory:" && !name.starts_with("file:") {
            files::create_private(path)?;
        }
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Each frame of a group commit runs in a savepoint, whose statement journal copies every
    // page the frame touches first: keep it in memory, not in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The records B-tree outgrows SQLite's default 2 MiB page cache after ~100k records, and
    // every insert then reads its path from the OS page cache again (see BENCHMARKS.md).
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
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
        tx.execute_batch(schema::SQLITE_RECOUNT)?;
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

fn hourly_rows(conn: &mut Connection, f: &HourFilter) -> Result<Vec<UsageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance, amount_type, hour, value, records FROM rollups
         WHERE hour >= ?1 AND hour < ?2
           AND (?3 IS NULL OR instance = ?3) AND (?4 IS NULL OR amount_type = ?4)",
    )?;
    let rows = stmt
        .query_map(params![f.lo, f.hi, f.instance, f.amount_type], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(instance, amount_type, bucket, value, records)| {
            Ok(UsageRow {
                instance,
                amount_type,
                bucket,
                value: parse_sum(&value)?,
                records,
            })
        })
        .collect()
}

impl Store for SqliteStore {
    /// Stores the frame in one transaction; when the database refuses a record, redoes it
    /// record by record and quarantines the refused ones (see `sqlite/write.rs`).
    async fn store(&self, frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        Ok(self.store_counted(frame, checked).await?.outcome)
    }

    async fn store_counted(&self, frame: &Frame, checked: Checked) -> Result<Stored, StoreError> {
        let options = self.options.clone();
        let first = self.write(checked, options).await?;
        let wrote = match first {
            Ok(wrote) => wrote,
            Err((e, checked, options)) if is_about_data(&e) => {
                tracing::warn!(error = %e, "the store refused a record of the frame; storing it record by record");
                let index = RawIndex::new(frame);
                let raws = checked.valid.iter().map(|r| index.raw(r)).collect();
                self.call(move |conn| write::one_by_one(conn, &checked, raws, &options))
                    .await?
            }
            Err((e, ..)) => return Err(e),
        };
        let (written, unstored) = wrote.log_rejected();
        self.unstored
            .note(unstored, self.options.quarantine_max_rows);
        Ok(written.log())
    }
}
