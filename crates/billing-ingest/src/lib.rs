//! The billing ingester: a forward server that acknowledges a chunk only once its records are
//! safely in the store.
//!
//! Stores are named by URL ([`StoreUrl`]):
//! - `sqlite:PATH` (the default, `sqlite:billing.db`): one SQLite file, see [`SqliteStore`] (`sqlite.rs`);
//! - `postgres://USER@HOST:PORT/DB[?schema=NAME][&pool_size=N]`: PostgreSQL, shared by several
//!   ingesters that dedupe together, see [`PgStore`] (`postgres.rs`);
//! - `jsonl:PATH`: one JSON line per received entry, a debugging and export sink with no
//!   dedupe, see [`JsonlStore`] (`jsonl.rs`).
//!
//! What every database store guarantees for one frame (one chunk), in **one transaction**:
//! each entry is validated (`validate.rs`, by the rules of [`billing_schema::validate`]); a valid record whose `unique_key` is new is stored
//! and added to its hourly rollup; a repeat with the same body is a *duplicate*; a repeat with a
//! different body is a *conflict* (the first version stays, the new one is kept in `conflicts`
//! and logged); an invalid entry goes to `quarantine` with its raw form and the reason; the
//! totals go to `counters`. The ack is sent only after that transaction committed; when it
//! fails, [`Store::store`] returns an error and the server closes the connection without ack,
//! so the client resends the whole chunk, which the unique key then makes harmless.
//!
//! Observability: [`serve_with_metrics`] counts every frame's outcome into [`IngestMetrics`]
//! (records by outcome, stored amounts per type, commit latency and last commit time, store
//! errors), exported with the forward server's connection counters as `billing_ingest_*`
//! Prometheus metrics (`metrics.rs`) and the process's `process_*` ones (`process.rs`). The
//! HTTP surface in [`http`] (axum on hyper) serves them with health and readiness probes, the
//! usage API (the same JSON as `billing report`) and a server-rendered usage dashboard; the
//! stores answer its `/conflicts` and `/quarantine` lists and its readiness ping (`lists.rs`),
//! and one key's history: record, duplicates, conflicts (`key.rs`).
//!
//! Quarantined entries can be released once the policy that refused them changed
//! (`release.rs`): checked again, stored through the same path as a frame, and taken out of
//! quarantine in the same transaction.
//!
//! In-process: `harness.rs` runs an ingester inside another program (tests, `billing demo`),
//! as a task on the caller's runtime ([`RunningIngester`]) or on its own thread
//! ([`BackgroundIngester`]), and hands the store back, still open, when it stops.
//!
//! No record can make a chunk unstorable: a record the database refuses (e.g. a value it cannot
//! hold) is quarantined as [`STORE_REJECTED`] with the database's message, and the rest of its
//! chunk is stored and acked (`store_error.rs`, `quarantine.rs`). Rollups and reports sum
//! exactly beyond 64 bits (`i128`; PostgreSQL `NUMERIC`, SQLite decimal text). The quarantine
//! table is bounded ([`StoreOptions`]); store files are created readable by their owner only
//! (`files.rs`).

mod harness;
pub mod http;
mod jsonl;
mod key;
mod lists;
pub mod log;
mod metrics;
mod postgres;
mod process;
mod release;
mod report;
mod schema;
mod sqlite;
mod validate;
// Store internals of the exact-rollups work (kept apart from the modules above).
mod files;
mod quarantine;
mod store_error;
mod store_options;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use billing_schema::validate::Policy;
use forward::{Disposition, Frame, Handler, Server, ServerConfig};

pub use harness::{BackgroundIngester, IngesterError, IngesterOptions, RunningIngester};
pub use jsonl::JsonlStore;
pub use key::{KeyRecord, KeyReport, write_key};
pub use lists::{ConflictRow, ListFilter, MAX_LIST_ROWS, QuarantineRow};
pub use metrics::{
    CONTENT_TYPE as METRICS_CONTENT_TYPE, IngestMetrics, PREFIX as METRICS_PREFIX,
    encode as encode_metrics,
};
pub use postgres::{DEFAULT_POOL_SIZE, PgStore, PgUrl, PoolStatus};
pub use release::{RELEASE_BATCH, ReleaseFilter, Released};
pub use report::{
    Format, Granularity, RangeError, Summary, TOTAL_BUCKET, TOTAL_INSTANCE, UsageQuery, UsageRow,
    csv_field, parse_time as parse_report_time, totals, write_summary, write_usage,
};
pub use schema::LATEST as SCHEMA_VERSION;
pub use sqlite::SqliteStore;
pub use store_options::{DEFAULT_QUARANTINE_MAX_ROWS, StoreOptions};
pub use validate::{Checked, Quarantined, STORE_REJECTED, quarantine_reasons};

/// The store `billing ingest` and `billing report` use when none is named.
pub const DEFAULT_STORE: &str = "sqlite:billing.db";

/// Where received records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `jsonl:PATH`: append one JSON line per entry.
    Jsonl(PathBuf),
    /// `sqlite:PATH` (also `sqlite://PATH`): a SQLite database file.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`: a PostgreSQL database.
    Postgres(PgUrl),
}

/// Why a store URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrlError {
    /// The scheme is not one this build knows.
    #[error(
        "unsupported store {0:?}: expected sqlite:PATH, postgres://USER@HOST:PORT/DB[?schema=NAME] or jsonl:PATH"
    )]
    Unsupported(String),
    /// `jsonl:` or `sqlite:` without a path.
    #[error("store {0:?} has no path")]
    MissingPath(String),
    /// A PostgreSQL URL that does not parse.
    #[error("invalid PostgreSQL store URL: {0}")]
    Postgres(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = |p: &str| {
            if p.is_empty() {
                Err(StoreUrlError::MissingPath(s.to_string()))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        match s.split_once(':') {
            Some(("jsonl", p)) => Ok(StoreUrl::Jsonl(path(p)?)),
            // `sqlite://rel` and `sqlite:///abs` as other tools write them.
            Some(("sqlite", p)) => Ok(StoreUrl::Sqlite(path(p.strip_prefix("//").unwrap_or(p))?)),
            Some(("postgres" | "postgresql", _)) => Ok(StoreUrl::Postgres(s.parse()?)),
            _ => Err(StoreUrlError::Unsupported(s.to_string())),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    /// The URL with any password replaced by `***`, fit for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// Why a store could not take a chunk, open, or answer a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// File or socket error.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused a statement or the commit.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement or the commit, or the connection failed. Displayed with
    /// the server's SQLSTATE and message, e.g. `PostgreSQL: 22003 numeric value out of range`.
    #[error("PostgreSQL: {}", store_error::postgres_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL connection pool failed for a reason of its own (e.g. it was closed).
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    /// The database was migrated by a newer build; this one does not know its tables.
    #[error(
        "store schema version {found} is newer than this build knows ({known}): upgrade billing"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A reader found a schema older than this build's (readers never migrate).
    #[error(
        "store schema version {found} is older than this build's ({known}); version 0 means no billing store there: run `billing ingest` on it once to create or migrate it"
    )]
    SchemaTooOld {
        /// Version in the database.
        found: i64,
        /// Version this build reads.
        known: i64,
    },
    /// A reader was pointed at a SQLite file that does not exist.
    #[error("no store at {0}")]
    NotFound(String),
    /// The store cannot do this (e.g. reports from a `jsonl:` store).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The SQLite thread has stopped (it panicked or the store is closing).
    #[error("the SQLite store's thread has stopped")]
    Closed,
    /// The database holds something this build never writes (e.g. a row vanished while a
    /// frame was being stored).
    #[error("store is inconsistent: {0}")]
    Inconsistent(String),
    /// A sum exceeded the 128-bit range.
    #[error("a usage sum exceeds the 128-bit integer range")]
    Overflow,
    /// A usage query whose range cannot be reported exactly (see [`UsageQuery::check`]).
    #[error(transparent)]
    Range(#[from] RangeError),
}

/// What became of a frame's entries. `received == stored + duplicates + conflicts +
/// quarantined`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Entries in the frame.
    pub received: u64,
    /// New records stored.
    pub stored: u64,
    /// Identical repeats of stored records.
    pub duplicates: u64,
    /// Repeats of a stored key with a different body (kept in `conflicts`).
    pub conflicts: u64,
    /// Invalid entries (kept in `quarantine`).
    pub quarantined: u64,
}

impl StoreOutcome {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &StoreOutcome) {
        self.received += other.received;
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
        self.quarantined += other.quarantined;
    }
}

/// What a store did with one frame: the outcome counts, and the sums of what it newly stored
/// per amount type (for `billing_ingest_stored_amount_total{amount_type}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The counts by outcome.
    pub outcome: StoreOutcome,
    /// Per amount type: the exact sum of `amount_value` and the number of the records stored
    /// (first versions only: duplicates, conflicts and quarantined entries are not in it).
    /// Empty for a store that does not tell (`jsonl:`, or a [`Store`] with only
    /// [`Store::store`]).
    pub amounts: BTreeMap<String, (i128, u64)>,
}

/// What a database store wrote for one frame; logged once committed.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub outcome: StoreOutcome,
    /// Keys of conflicting arrivals.
    pub conflicts: Vec<String>,
    /// Stored sums per amount type (see [`Stored::amounts`]).
    pub amounts: BTreeMap<String, (i128, u64)>,
}

/// Conflicts logged one line each, at most this many per frame (the rest are counted).
const MAX_CONFLICT_LINES: usize = 5;

impl Written {
    /// Logs the conflicts of a committed frame: a few lines, then a count, so that a frame of
    /// conflicting repeats cannot flood the log.
    pub(crate) fn log(self) -> Stored {
        for key in self.conflicts.iter().take(MAX_CONFLICT_LINES) {
            tracing::warn!(
                unique_key = %log::Escaped(key),
                "conflict: a stored key arrived with a different body; the first version stays, the new one is kept in conflicts"
            );
        }
        if self.conflicts.len() > MAX_CONFLICT_LINES {
            tracing::warn!(
                more = self.conflicts.len() - MAX_CONFLICT_LINES,
                "more conflicts in the same frame (kept in conflicts)"
            );
        }
        Stored {
            outcome: self.outcome,
            amounts: self.amounts,
        }
    }

    /// Adds `records` stored records of `amount_type` summing to `value` (called where their
    /// rollup was written, inside the frame's transaction).
    ///
    /// # Errors
    /// [`StoreError::Overflow`] for a sum beyond 128 bits.
    pub(crate) fn add_stored(
        &mut self,
        amount_type: &str,
        value: i128,
        records: i64,
    ) -> Result<(), StoreError> {
        let slot = self.amounts.entry(amount_type.to_string()).or_default();
        slot.0 = slot.0.checked_add(value).ok_or(StoreError::Overflow)?;
        slot.1 = slot.1.saturating_add(u64::try_from(records).unwrap_or(0));
        Ok(())
    }
}

/// Something that makes a frame's entries durable before the ack.
pub trait Store: Send + Sync + 'static {
    /// Stores the entries of `frame`, sorted by the ingester into `checked` (valid records and
    /// quarantined entries, see [`Checked::frame`]); returns only once they are safe
    /// (committed).
    ///
    /// # Errors
    /// Any failure; nothing of the frame is then stored, the chunk is not acked and the client
    /// resends it.
    fn store(
        &self,
        frame: &Frame,
        checked: Checked,
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send;

    /// As [`Store::store`], also telling what was stored per amount type ([`Stored`]); the
    /// ingest handler calls this one. The default calls [`Store::store`] and tells no amounts.
    ///
    /// # Errors
    /// As [`Store::store`].
    fn store_counted(
        &self,
        frame: &Frame,
        checked: Checked,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send {
        async move {
            Ok(Stored {
                outcome: self.store(frame, checked).await?,
                amounts: BTreeMap::new(),
            })
        }
    }
}

/// Any store a [`StoreUrl`] names, for binaries that pick one at run time.
#[derive(Debug)]
pub enum AnyStore {
    /// `jsonl:`
    Jsonl(jsonl::JsonlStore),
    /// `sqlite:`
    Sqlite(SqliteStore),
    /// `postgres://` (boxed: its pool and config are large)
    Postgres(Box<PgStore>),
}

impl AnyStore {
    /// Opens the store for ingesting: creates the file, schema and tables when missing and
    /// applies pending migrations.
    ///
    /// # Errors
    /// The store cannot be opened or migrated, or its schema is newer than this build
    /// ([`StoreError::SchemaTooNew`]).
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// As [`AnyStore::open`], with `options` (a `jsonl:` store has none to take).
    ///
    /// # Errors
    /// As [`AnyStore::open`].
    pub async fn open_with(url: &StoreUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Jsonl(p) => AnyStore::Jsonl(jsonl::JsonlStore::open(p).await?),
            StoreUrl::Sqlite(p) => AnyStore::Sqlite(SqliteStore::open_with(p, options).await?),
            StoreUrl::Postgres(u) => {
                AnyStore::Postgres(Box::new(PgStore::open_with(u, options).await?))
            }
        })
    }

    /// Opens the store for reports only: creates and migrates nothing.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] for `jsonl:`, [`StoreError::NotFound`] for a missing
    /// SQLite file, [`StoreError::SchemaTooOld`] / [`StoreError::SchemaTooNew`] when the schema
    /// is not this build's, or the connection failure.
    pub async fn open_reader(url: &StoreUrl) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Jsonl(_) => return Err(NO_JSONL_REPORTS),
            StoreUrl::Sqlite(p) => AnyStore::Sqlite(SqliteStore::open_reader(p).await?),
            StoreUrl::Postgres(u) => AnyStore::Postgres(Box::new(PgStore::open_reader(u).await?)),
        })
    }

    /// Usage per instance, amount type and bucket, sorted (see [`UsageQuery`]).
    ///
    /// # Errors
    /// Query failures; [`StoreError::Range`] for a range [`UsageQuery::check`] refuses;
    /// [`StoreError::Unsupported`] for `jsonl:`.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(NO_JSONL_REPORTS),
            AnyStore::Sqlite(s) => s.usage(query).await,
            AnyStore::Postgres(s) => s.usage(query).await,
        }
    }

    /// Totals of received, stored, duplicate, conflicting and quarantined entries.
    ///
    /// # Errors
    /// Query failures; [`StoreError::Unsupported`] for `jsonl:`.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(NO_JSONL_REPORTS),
            AnyStore::Sqlite(s) => s.summary().await,
            AnyStore::Postgres(s) => s.summary().await,
        }
    }
}

impl AnyStore {
    /// The readiness probe: the store answers a cheap query and is at this build's schema
    /// version. A `jsonl:` store (an open file, no queries) is always ready. Not bounded in time here
    /// (a PostgreSQL store waits for a pooled connection): the caller bounds it.
    ///
    /// # Errors
    /// Why the store is not ready: the query's failure, a schema changed under the store
    /// ([`StoreError::SchemaTooOld`] / [`StoreError::SchemaTooNew`]).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Jsonl(_) => Ok(()),
            AnyStore::Sqlite(s) => s.ping().await,
            AnyStore::Postgres(s) => s.ping().await,
        }
    }

    /// The newest rows of `conflicts` that `filter` selects (at most [`MAX_LIST_ROWS`]).
    ///
    /// # Errors
    /// Query failures; [`StoreError::Unsupported`] for `jsonl:`.
    pub async fn conflicts(&self, filter: &ListFilter) -> Result<Vec<ConflictRow>, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(NO_JSONL_REPORTS),
            AnyStore::Sqlite(s) => s.conflicts(filter).await,
            AnyStore::Postgres(s) => s.conflicts(filter).await,
        }
    }

    /// The newest rows of `quarantine` that `filter` selects (at most [`MAX_LIST_ROWS`]).
    ///
    /// # Errors
    /// Query failures; [`StoreError::Unsupported`] for `jsonl:`.
    pub async fn quarantine(&self, filter: &ListFilter) -> Result<Vec<QuarantineRow>, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(NO_JSONL_REPORTS),
            AnyStore::Sqlite(s) => s.quarantine(filter).await,
            AnyStore::Postgres(s) => s.quarantine(filter).await,
        }
    }
}

impl AnyStore {
    /// What the store holds for one `unique_key`: its record (with when it was stored and its
    /// duplicate count) and its conflicting versions; [`KeyReport::found`] tells whether the
    /// key is known at all.
    ///
    /// # Errors
    /// Query failures; [`StoreError::Unsupported`] for `jsonl:`.
    pub async fn key(&self, unique_key: &str) -> Result<KeyReport, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(NO_JSONL_REPORTS),
            AnyStore::Sqlite(s) => s.key(unique_key).await,
            AnyStore::Postgres(s) => s.key(unique_key).await,
        }
    }

    /// Checks the quarantine rows `filter` selects again under `policy` at `now`, and
    /// releases those that pass: each is stored as ingest would store it (dedupe, rollups,
    /// counters) and its row deleted, in one transaction per batch of [`RELEASE_BATCH`] rows;
    /// the rows that still fail stay, with their current reason. `dry_run` rolls everything
    /// back and tells what would happen. Open the store for writing ([`AnyStore::open`]).
    ///
    /// # Errors
    /// Query failures (the batch in progress is rolled back; earlier batches stay released);
    /// [`StoreError::Unsupported`] for `jsonl:`, which keeps no quarantine.
    pub async fn release(
        &self,
        filter: &ReleaseFilter,
        policy: &Policy,
        now: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<Released, StoreError> {
        match self {
            AnyStore::Jsonl(_) => Err(StoreError::Unsupported(
                "a jsonl: store keeps raw lines only and has no quarantine",
            )),
            AnyStore::Sqlite(s) => s.release(filter, policy, now, dry_run).await,
            AnyStore::Postgres(s) => s.release(filter, policy, now, dry_run).await,
        }
    }
}

const NO_JSONL_REPORTS: StoreError =
    StoreError::Unsupported("a jsonl: store keeps raw lines only and has no reports");

impl Store for AnyStore {
    async fn store(&self, frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        match self {
            AnyStore::Jsonl(s) => s.store(frame, checked).await,
            AnyStore::Sqlite(s) => s.store(frame, checked).await,
            AnyStore::Postgres(s) => s.store(frame, checked).await,
        }
    }

    async fn store_counted(&self, frame: &Frame, checked: Checked) -> Result<Stored, StoreError> {
        match self {
            AnyStore::Jsonl(s) => s.store_counted(frame, checked).await,
            AnyStore::Sqlite(s) => s.store_counted(frame, checked).await,
            AnyStore::Postgres(s) => s.store_counted(frame, checked).await,
        }
    }
}

impl<S: Store> Store for Arc<S> {
    fn store(
        &self,
        frame: &Frame,
        checked: Checked,
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send {
        (**self).store(frame, checked)
    }

    fn store_counted(
        &self,
        frame: &Frame,
        checked: Checked,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send {
        (**self).store_counted(frame, checked)
    }
}

/// Keys of quarantined entries named in a frame's summary line, at most.
const LOGGED_KEYS: usize = 3;

/// The forward handler of an ingester: validates each frame under its policy, stores it, and
/// acks it once committed.
pub(crate) struct Ingest<S> {
    pub(crate) store: Arc<S>,
    pub(crate) metrics: IngestMetrics,
    pub(crate) policy: Policy,
}

impl<S: Store> Handler for Ingest<S> {
    type Error = StoreError;

    async fn handle(
        &self,
        peer: forward::PeerAddr,
        frame: Frame,
    ) -> Result<Disposition, StoreError> {
        let start = std::time::Instant::now();
        let checked = Checked::frame(&frame, &self.policy, std::time::SystemTime::now());
        let invalid = summarize(&checked.invalid);
        let result = self.store.store_counted(&frame, checked).await;
        let result = result.map(|stored| {
            self.metrics.stored_amounts(&stored.amounts);
            stored.outcome
        });
        self.metrics.observe(&result, start.elapsed());
        let outcome = result?;
        // Records the store itself refused (quarantined as store_rejected, logged by it).
        let checked_invalid = invalid
            .as_ref()
            .map_or(0, |(c, _)| c.iter().map(|(_, n)| n).sum());
        if let Some(rejected) = outcome
            .quarantined
            .checked_sub(checked_invalid)
            .filter(|n| *n > 0)
        {
            self.metrics.quarantined_by(&[(STORE_REJECTED, rejected)]);
        }
        if let Some((counts, keys)) = invalid {
            self.metrics.quarantined_by(&counts);
            // One line per frame whatever its size: counts by reason and the first keys.
            let reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{r}={n}")).collect();
            // Escaped: no space or control character of a key survives unescaped, so the
            // space-separated list cannot be confused.
            let keys: Vec<String> = keys
                .iter()
                .map(|k| log::Escaped(k).to_string().replace(' ', "\\x20"))
                .collect();
            tracing::warn!(
                %peer,
                quarantined = counts.iter().map(|(_, n)| n).sum::<u64>(),
                reasons = %reasons.join(" "),
                first_keys = %keys.join(" "),
                "invalid records quarantined"
            );
        }
        tracing::debug!(%peer, mode = ?frame.mode, ?outcome, "frame stored");
        Ok(Disposition::Ack)
    }
}

/// Counts by reason and the first few keys of a frame's invalid entries.
type InvalidSummary = (Vec<(&'static str, u64)>, Vec<String>);

fn summarize(invalid: &[Quarantined]) -> Option<InvalidSummary> {
    if invalid.is_empty() {
        return None;
    }
    let mut counts = std::collections::BTreeMap::<&'static str, u64>::new();
    for q in invalid {
        *counts.entry(q.reason).or_default() += 1;
    }
    let keys = invalid
        .iter()
        .filter_map(|q| q.key.clone())
        .take(LOGGED_KEYS)
        .collect();
    Some((counts.into_iter().collect(), keys))
}

/// Serves forward connections on `server` into `store` until `shutdown` completes, with the
/// default validation [`Policy`].
pub async fn serve<S: Store>(server: Server, store: Arc<S>, shutdown: impl Future<Output = ()>) {
    serve_with_metrics(
        server,
        store,
        IngestMetrics::new(),
        Policy::default(),
        shutdown,
    )
    .await;
}

/// As [`serve`] under `policy`, counting every frame's outcome into `metrics` (export them
/// with [`IngestMetrics::registry`], built from the same `server`'s [`Server::stats`]).
pub async fn serve_with_metrics<S: Store>(
    server: Server,
    store: Arc<S>,
    metrics: IngestMetrics,
    policy: Policy,
    shutdown: impl Future<Output = ()>,
) {
    let handler = Ingest {
        store,
        metrics,
        policy,
    };
    server.serve(Arc::new(handler), shutdown).await;
}

/// Binds a forward listener with default limits.
///
/// # Errors
/// The bind failure.
pub async fn bind(addr: &str) -> std::io::Result<Server> {
    Server::bind(addr, ServerConfig::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse() {
        assert_eq!(
            "sqlite:billing.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("billing.db".into()))
        );
        assert_eq!(
            "sqlite:///var/lib/b.db".parse::<StoreUrl>(),
            Ok(StoreUrl::Sqlite("/var/lib/b.db".into()))
        );
        assert_eq!(
            "jsonl:x.jsonl".parse::<StoreUrl>(),
            Ok(StoreUrl::Jsonl("x.jsonl".into()))
        );
        assert!(matches!(
            "sqlite:".parse::<StoreUrl>(),
            Err(StoreUrlError::MissingPath(_))
        ));
        assert!(matches!(
            "mysql://x".parse::<StoreUrl>(),
            Err(StoreUrlError::Unsupported(_))
        ));
        let pg: StoreUrl = "postgres://postgres:secret@127.0.0.1:5432/test?schema=t_1&pool_size=2"
            .parse()
            .unwrap();
        let StoreUrl::Postgres(u) = &pg else {
            panic!("{pg:?}")
        };
        assert_eq!(u.schema(), Some("t_1"));
        assert_eq!(u.pool_size(), 2);
        assert_eq!(
            pg.to_string(),
            "postgres://postgres:***@127.0.0.1:5432/test?schema=t_1&pool_size=2"
        );
        assert!(matches!(
            "postgres://h/db?schema=a;drop".parse::<StoreUrl>(),
            Err(StoreUrlError::Postgres(_))
        ));
        assert!(matches!(
            "postgres://h/db?pool_size=0".parse::<StoreUrl>(),
            Err(StoreUrlError::Postgres(_))
        ));
    }
}
