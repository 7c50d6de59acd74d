//! One conformance suite, run against every database store: each behaviour below is a plain
//! `async fn(TestDb)`, and `conformance!` turns it into `sqlite::NAME` and `postgres::NAME`.
//!
//! SQLite runs on a file in a fresh temp dir. PostgreSQL runs at `BILLING_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`; set it to `skip` to skip those tests),
//! each test in its own freshly created schema, dropped by a guard when the test ends, whether
//! it passed or panicked.
//!
//! Ingesters are the crate's own in-process harness ([`billing_ingest::harness`]) on real
//! sockets; temp dirs come from `tempfile` and are removed when a test ends.
//!
//! No test sleeps to synchronise: acks are awaited on the socket, a closed connection is seen
//! as end of stream, threads meet at barriers, and the pool tests poll PostgreSQL's own view
//! (`pg_stat_activity`) or the pool's status until the state they need holds. Timeouts only
//! bound a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use billing_ingest::{
    AnyStore, BackgroundIngester, Checked, Format, Granularity, IngesterOptions, PgStore, PgUrl,
    ReleaseFilter, Released, RunningIngester, Store, StoreError, StoreOptions, StoreOutcome,
    StoreUrl, UsageQuery, UsageRow,
};
use billing_ingest::{write_summary, write_usage};
use billing_schema::parse_rfc3339;
use billing_schema::validate::Policy;
use forward::{AckReader, Entry, EventTime, Frame, Framing, Mode, Options};
use rmpv::Value;
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Bounds a hang; never an assertion about speed.
const HANG: Duration = Duration::from_secs(60);

fn pg_base() -> Option<String> {
    match std::env::var("BILLING_TEST_POSTGRES") {
        Ok(v) if v == "skip" => None,
        Ok(v) if !v.is_empty() => Some(v),
        _ => Some(PG_DEFAULT.to_string()),
    }
}

enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(tokio_postgres::Client),
}

/// A store location made for one test, with raw SQL access for assertions and sabotage.
struct TestDb {
    url: StoreUrl,
    raw: Raw,
    backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    schema: Option<SchemaGuard>,
}

/// Drops its PostgreSQL schema when dropped, also while a failing test unwinds.
struct SchemaGuard {
    base: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Drop cannot await, and may run inside a runtime: use a thread with its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is needed by the postgres:: tests ({e}); \
                 set BILLING_TEST_POSTGRES=URL, or =skip to skip them"
            )
        });
    tokio::spawn(conn);
    client
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("billing.db");
        TestDb {
            url: StoreUrl::Sqlite(path.clone()),
            raw: Raw::Sqlite(path),
            backend: "sqlite",
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres() -> Option<TestDb> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = pg_base()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "billing_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = pg_connect(&base).await;
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
            ))
            .await
            .expect("create test schema");
        let guard = SchemaGuard {
            base: base.clone(),
            schema: schema.clone(),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let url: StoreUrl = format!("{base}{sep}schema={schema}")
            .parse()
            .expect("store url");
        Some(TestDb {
            url,
            raw: Raw::Postgres(admin),
            backend: "postgres",
            _dir: None,
            schema: Some(guard),
        })
    }

    /// This test's PostgreSQL schema and server.
    fn pg(&self) -> &SchemaGuard {
        self.schema.as_ref().expect("a PostgreSQL test database")
    }

    /// A store URL for this test's PostgreSQL schema, with more parameters (`a=1&b=2`).
    fn pg_url(&self, params: &str) -> PgUrl {
        let SchemaGuard { base, schema } = self.pg();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={schema}&{params}")
            .parse()
            .expect("store url")
    }

    /// A new PostgreSQL session on this test's schema, outside any store.
    async fn pg_session(&self) -> tokio_postgres::Client {
        let SchemaGuard { base, schema } = self.pg();
        let client = pg_connect(base).await;
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .expect("set search_path");
        client
    }

    async fn open(&self) -> AnyStore {
        AnyStore::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// Runs statements outside the store.
    async fn exec(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(p) => rusqlite::Connection::open(p)
                .and_then(|c| c.execute_batch(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Raw::Postgres(c) => c
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// One integer (use `CAST(... AS BIGINT)` around sums: valid in both dialects).
    async fn int(&self, sql: &str) -> i64 {
        match &self.raw {
            Raw::Sqlite(p) => rusqlite::Connection::open(p)
                .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Raw::Postgres(c) => c
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0),
        }
    }

    /// Rows of text columns.
    async fn texts(&self, sql: &str) -> Vec<Vec<String>> {
        match &self.raw {
            Raw::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| (0..n).map(|i| r.get::<_, String>(i)).collect())
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Raw::Postgres(c) => c
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
                .collect(),
        }
    }

    /// Makes every later frame's transaction fail, for a reason that is not about a record's
    /// data (so the store fails the frame rather than quarantining its records). SQLite: a
    /// trigger whose body names a missing table makes the rollup write fail with a plain
    /// `SQLITE_ERROR` (after the records were inserted); PostgreSQL: a deferred constraint
    /// trigger raises a plain exception (`P0001`) at `COMMIT` itself.
    async fn sabotage(&self) {
        match self.raw {
            Raw::Sqlite(_) => {
                self.exec(
                    "CREATE TRIGGER sabotage BEFORE INSERT ON rollups
                     BEGIN INSERT INTO sabotage_no_such_table VALUES (1); END;",
                )
                .await
            }
            Raw::Postgres(_) => {
                self.exec(
                    "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN RAISE EXCEPTION 'injected commit failure'; END $$;
                     CREATE CONSTRAINT TRIGGER sabotage AFTER INSERT ON records
                       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sabotage();",
                )
                .await
            }
        }
    }

    async fn repair(&self) {
        match self.raw {
            Raw::Sqlite(_) => self.exec("DROP TRIGGER sabotage").await,
            Raw::Postgres(_) => self.exec("DROP TRIGGER sabotage ON records").await,
        }
    }
}

/// The validation rules of these tests: the defaults with an unbounded time window, since the
/// records carry fixed dates, and credits accepted, since rollups must sum negative amounts
/// exactly (both rules are tested in billing-schema and against `billing ingest`).
fn policy() -> Policy {
    Policy::default()
        .with_window(Duration::MAX, Duration::MAX)
        .with_allow_negative(true)
}

/// Stores a frame as the ingester does: checked under [`policy`], then handed to the store.
async fn store_frame<S: Store + ?Sized>(store: &S, f: Frame) -> Result<StoreOutcome, StoreError> {
    let checked = Checked::frame(&f, &policy(), SystemTime::now());
    store.store(&f, checked).await
}

/// An ingester on a real forward listener, as the crate's harness runs it.
async fn start_ingester(store: Arc<AnyStore>) -> RunningIngester<AnyStore> {
    let options = IngesterOptions::default().policy(policy());
    RunningIngester::start_with("127.0.0.1:0", store, options)
        .await
        .expect("start ingester")
}

/// A test's client side of a running ingester.
trait SendChunks {
    /// Sends one chunk on a new connection and returns what came back: `Ok(Some(ack))`,
    /// `Ok(None)` when the server closed the connection, or the socket error.
    async fn send(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>, forward::ConnectionError>;

    /// Sends a chunk and insists on its ack.
    async fn send_acked(&self, records: &[Value], chunk: &str);
}

impl<S: Store> SendChunks for RunningIngester<S> {
    async fn send(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>, forward::ConnectionError> {
        let stream = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(bytes).await.unwrap();
        let mut acks = AckReader::new(read);
        tokio::time::timeout(HANG, acks.read_ack())
            .await
            .expect("the server neither acked nor closed the connection")
    }

    async fn send_acked(&self, records: &[Value], chunk: &str) {
        let ack = self.send(&wire(records, chunk)).await;
        assert_eq!(
            ack.expect("socket").as_deref(),
            Some(chunk.as_bytes()),
            "chunk {chunk} not acked"
        );
    }
}

const TAG: &str = "billing";

fn md(pairs: &[(&str, &str)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), Value::from(*v)))
            .collect(),
    )
}

/// A record with the schema's fields, metadata `{"source":"test"}`.
fn rec(key: &str, instance: &str, ty: &str, value: i64, at: &str) -> Value {
    rec_md(key, instance, ty, value, at, md(&[("source", "test")]))
}

fn rec_md(key: &str, instance: &str, ty: &str, value: i64, at: &str, metadata: Value) -> Value {
    Value::Map(vec![
        (Value::from("amount_type"), Value::from(ty)),
        (Value::from("amount_value"), Value::from(value)),
        (Value::from("internal_instance_id"), Value::from(instance)),
        (Value::from("metadata"), metadata),
        (Value::from("occurred_at"), Value::from(at)),
        (
            Value::from("unique_key"),
            Value::from(format!("{key}:{ty}")),
        ),
    ])
}

/// `record` with `field` replaced (or added) with `value`.
fn with(record: &Value, field: &str, value: Value) -> Value {
    let Value::Map(mut fields) = record.clone() else {
        unreachable!()
    };
    fields.retain(|(k, _)| k.as_str() != Some(field));
    fields.push((Value::from(field), value));
    Value::Map(fields)
}

fn without(record: &Value, field: &str) -> Value {
    let Value::Map(mut fields) = record.clone() else {
        unreachable!()
    };
    fields.retain(|(k, _)| k.as_str() != Some(field));
    Value::Map(fields)
}

const EVENT_TIME: EventTime = EventTime::new(1_795_754_038, 0);

fn frame(records: &[Value]) -> Frame {
    Frame {
        tag: TAG.to_string(),
        entries: records
            .iter()
            .map(|r| Entry {
                time: EVENT_TIME,
                record: r.clone(),
                metadata: None,
            })
            .collect(),
        options: Options::default(),
        mode: Mode::Forward,
        framing: Framing::MessagePack,
    }
}

/// A Forward-mode chunk asking for an ack, as a client sends it.
fn wire(records: &[Value], chunk: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for r in records {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, r).unwrap();
        forward::encode::write_entry(&mut entries, EVENT_TIME, &body);
    }
    let mut buf = Vec::new();
    forward::encode::write_forward(
        &mut buf,
        TAG,
        &entries,
        records.len() as u32,
        &Options {
            chunk: Some(chunk.as_bytes().to_vec()),
            ..Options::default()
        },
    );
    buf
}

async fn put(s: &AnyStore, records: &[Value]) -> StoreOutcome {
    store_frame(s, frame(records)).await.expect("store")
}

fn outcome(received: u64, stored: u64, dup: u64, conflicts: u64, quarantined: u64) -> StoreOutcome {
    StoreOutcome {
        received,
        stored,
        duplicates: dup,
        conflicts,
        quarantined,
    }
}

async fn usage(s: &AnyStore, by: Granularity) -> Vec<UsageRow> {
    s.usage(&UsageQuery {
        by,
        ..UsageQuery::default()
    })
    .await
    .expect("usage")
}

fn row(instance: &str, ty: &str, bucket: &str, value: i128, records: i64) -> UsageRow {
    let bucket = time::OffsetDateTime::from(parse_rfc3339(bucket).unwrap()).unix_timestamp();
    UsageRow {
        instance: instance.into(),
        amount_type: ty.into(),
        bucket,
        value,
        records,
    }
}

/// Rollups must equal the records they summarize, at every commit (summed here in `i128`: the
/// databases' own sums of 64-bit columns would overflow past `i64::MAX`).
async fn assert_rollups_match_records(db: &TestDb) {
    type Buckets = std::collections::BTreeMap<(String, String, String), (i128, i64)>;
    let mut from_records = Buckets::new();
    for r in db
        .texts("SELECT instance, amount_type, CAST(hour AS TEXT), CAST(value AS TEXT) FROM records")
        .await
    {
        let slot = from_records
            .entry((r[0].clone(), r[1].clone(), r[2].clone()))
            .or_default();
        slot.0 += r[3].parse::<i128>().unwrap();
        slot.1 += 1;
    }
    let from_rollups: Buckets = db
        .texts(
            "SELECT instance, amount_type, CAST(hour AS TEXT), CAST(value AS TEXT),
                    CAST(records AS TEXT) FROM rollups",
        )
        .await
        .into_iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone(), r[2].clone()),
                (r[3].parse().unwrap(), r[4].parse().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        from_rollups, from_records,
        "{}: rollups differ from records",
        db.backend
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        conformance!(sqlite, postgres: $($name),*);
    };
    ($sqlite:ident, $postgres:ident: $($name:ident),* $(,)?) => {
        mod $sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod $postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match super::TestDb::postgres().await {
                        Some(db) => super::$name(db).await,
                        None => eprintln!("BILLING_TEST_POSTGRES=skip: skipped"),
                    }
                }
            )*
        }
    };
}

conformance!(
    acked_chunk_is_stored_with_rollups_and_counted,
    identical_repeat_is_a_counted_duplicate_and_still_acked,
    same_instant_in_another_offset_and_reordered_metadata_is_a_duplicate,
    different_body_under_a_stored_key_is_a_conflict_and_the_first_version_stays,
    repeats_inside_one_chunk_count_like_repeats_across_chunks,
    invalid_records_are_quarantined_and_the_rest_of_the_chunk_is_stored_and_acked,
    rollups_sum_values_and_count_records_per_utc_hour_across_boundaries,
    report_rolls_hours_up_into_days_and_months,
    report_filters_by_instance_type_and_exact_hour_range,
    report_writes_json_csv_and_table,
    summary_totals_persist_across_reopening,
    migrations_run_once_and_reopening_keeps_data,
    store_with_a_newer_schema_version_is_refused,
    reader_refuses_a_store_that_does_not_exist,
    failed_commit_sends_no_ack_closes_the_connection_and_stores_nothing,
    ingester_restarted_on_the_same_address_and_store_counts_the_resend_as_a_duplicate,
);

// ---------------------------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------------------------

async fn acked_chunk_is_stored_with_rollups_and_counted(db: TestDb) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let records = [
        rec("e1", "i-1", "samples", 3, "2026-11-27T04:10:00Z"),
        rec("e1", "i-1", "node-seconds", 5, "2026-11-27T04:10:00Z"),
        rec("e2", "i-1", "samples", 4, "2026-11-27T04:50:00.5Z"),
    ];
    ingester.send_acked(&records, "chunk-1").await;
    // The ack came after the commit: everything is visible now.
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 3);
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![
            row("i-1", "node-seconds", "2026-11-27T04:00:00Z", 5, 1),
            row("i-1", "samples", "2026-11-27T04:00:00Z", 7, 2),
        ]
    );
    let s = store.summary().await.unwrap();
    assert_eq!((s.received, s.records, s.duplicates), (3, 3, 0));
    ingester.shutdown().await;
}

async fn identical_repeat_is_a_counted_duplicate_and_still_acked(db: TestDb) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let records = [
        rec("e1", "i-1", "samples", 3, "2026-11-27T04:10:00Z"),
        rec("e2", "i-1", "samples", 4, "2026-11-27T04:20:00Z"),
    ];
    // The client resends a chunk whose ack it never saw: same records, new chunk id.
    ingester.send_acked(&records, "first").await;
    ingester.send_acked(&records, "resent").await;
    assert_eq!(
        store_frame(&store, frame(&records)).await.unwrap(),
        outcome(2, 0, 2, 0, 0)
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 2);
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![row("i-1", "samples", "2026-11-27T04:00:00Z", 7, 2)]
    );
    let s = store.summary().await.unwrap();
    assert_eq!(
        (s.received, s.records, s.duplicates, s.conflicts),
        (6, 2, 4, 0)
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM conflicts").await, 0);
    ingester.shutdown().await;
}

async fn same_instant_in_another_offset_and_reordered_metadata_is_a_duplicate(db: TestDb) {
    let store = db.open().await;
    let first = rec_md(
        "e1",
        "i-1",
        "samples",
        3,
        "2026-11-27T04:10:00Z",
        md(&[("a", "1"), ("b", "2")]),
    );
    let same = rec_md(
        "e1",
        "i-1",
        "samples",
        3,
        "2026-11-27T05:10:00.000+01:00",
        md(&[("b", "2"), ("a", "1")]),
    );
    assert_eq!(put(&store, &[first]).await, outcome(1, 1, 0, 0, 0));
    assert_eq!(put(&store, &[same]).await, outcome(1, 0, 1, 0, 0));
    // Absent and nil metadata are both the empty map.
    let bare = without(
        &rec("e2", "i-1", "samples", 1, "2026-11-27T04:10:00Z"),
        "metadata",
    );
    let nil = with(&bare, "metadata", Value::Nil);
    assert_eq!(put(&store, &[bare]).await, outcome(1, 1, 0, 0, 0));
    assert_eq!(put(&store, &[nil]).await, outcome(1, 0, 1, 0, 0));
    // The canonical instant is what is stored.
    assert_eq!(
        db.texts("SELECT occurred_at FROM records WHERE unique_key = 'e1:samples'")
            .await,
        vec![vec!["2026-11-27T04:10:00Z".to_string()]]
    );
}

async fn different_body_under_a_stored_key_is_a_conflict_and_the_first_version_stays(db: TestDb) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let original = rec("e1", "i-1", "samples", 3, "2026-11-27T04:10:00Z");
    ingester
        .send_acked(std::slice::from_ref(&original), "c1")
        .await;
    let variants = [
        with(&original, "amount_value", Value::from(4)),
        with(&original, "internal_instance_id", Value::from("i-2")),
        with(
            &original,
            "occurred_at",
            Value::from("2026-11-27T04:10:00.001Z"),
        ),
        with(&original, "metadata", md(&[("source", "other")])),
    ];
    for (i, v) in variants.iter().enumerate() {
        // Acked: the client must not resend a conflict forever.
        ingester
            .send_acked(std::slice::from_ref(v), &format!("v{i}"))
            .await;
    }
    // The same conflicting version again: counted again, still one row, its count grows.
    assert_eq!(
        put(&store, &[variants[0].clone()]).await,
        outcome(1, 0, 0, 1, 0)
    );
    let stored = db
        .texts("SELECT instance, occurred_at, metadata FROM records")
        .await;
    assert_eq!(
        stored,
        vec![vec![
            "i-1".to_string(),
            "2026-11-27T04:10:00Z".into(),
            r#"{"source":"test"}"#.into()
        ]]
    );
    assert_eq!(db.int("SELECT value FROM records").await, 3);
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![row("i-1", "samples", "2026-11-27T04:00:00Z", 3, 1)]
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM conflicts").await, 4);
    assert_eq!(
        db.int("SELECT CAST(SUM(count) AS BIGINT) FROM conflicts")
            .await,
        5
    );
    let rows = db
        .texts(
            "SELECT unique_key, stored_body, received_body FROM conflicts
             WHERE received_body LIKE '%\"value\":4%'",
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let stored_body: serde_json::Value = serde_json::from_str(&rows[0][1]).unwrap();
    let received_body: serde_json::Value = serde_json::from_str(&rows[0][2]).unwrap();
    assert_eq!(rows[0][0], "e1:samples");
    assert_eq!(
        stored_body,
        serde_json::json!({"instance":"i-1","amount_type":"samples","value":3,
            "occurred_at":"2026-11-27T04:10:00Z","metadata":{"source":"test"}})
    );
    assert_eq!(received_body["value"], 4);
    let s = store.summary().await.unwrap();
    assert_eq!((s.records, s.conflicts, s.duplicates), (1, 5, 0));
    ingester.shutdown().await;
}

async fn repeats_inside_one_chunk_count_like_repeats_across_chunks(db: TestDb) {
    let store = db.open().await;
    let a = rec("e1", "i-1", "samples", 3, "2026-11-27T04:10:00Z");
    let a_changed = with(&a, "amount_value", Value::from(9));
    let b = rec("e2", "i-1", "samples", 4, "2026-11-27T04:10:00Z");
    // The first on the wire wins; later ones compare against it.
    assert_eq!(
        put(
            &store,
            &[
                a.clone(),
                b.clone(),
                a.clone(),
                a_changed.clone(),
                b.clone()
            ]
        )
        .await,
        outcome(5, 2, 2, 1, 0)
    );
    assert_eq!(
        db.int("SELECT value FROM records WHERE unique_key = 'e1:samples'")
            .await,
        3
    );
    // Against stored keys in a later chunk: same classification.
    assert_eq!(
        put(&store, &[a_changed.clone(), a.clone(), a]).await,
        outcome(3, 0, 2, 1, 0)
    );
    assert_rollups_match_records(&db).await;
}

async fn invalid_records_are_quarantined_and_the_rest_of_the_chunk_is_stored_and_acked(db: TestDb) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let good = rec("ok", "i-1", "samples", 3, "2026-11-27T04:10:00Z");
    let base = rec("bad", "i-1", "samples", 3, "2026-11-27T04:10:00Z");
    let invalid = [
        (
            with(&base, "unique_key", Value::from("")),
            "unique_key is empty",
        ),
        (without(&base, "unique_key"), "unique_key is missing"),
        (
            with(&base, "internal_instance_id", Value::from(7)),
            "internal_instance_id is not a string",
        ),
        (
            with(&base, "amount_type", Value::from("")),
            "invalid_amount_type",
        ),
        (
            with(&base, "amount_value", Value::F64(1.5)),
            "amount_value is not an integer",
        ),
        (
            with(&base, "amount_value", Value::from(u64::MAX)),
            "amount_value does not fit",
        ),
        (
            with(&base, "occurred_at", Value::from("27/11/2026")),
            "occurred_at",
        ),
        (
            with(&base, "occurred_at", Value::from(1_795_754_038)),
            "occurred_at is not a string",
        ),
        (
            with(&base, "metadata", Value::from("x")),
            "metadata is not a map",
        ),
        (with(&base, "metadata", md(&[("k", "v")])), ""), // valid, key "bad:samples"
        (
            with(
                &base,
                "metadata",
                Value::Map(vec![(Value::from("k"), Value::from(1))]),
            ),
            "metadata value",
        ),
        (Value::from("not a map"), "record is not a map"),
    ];
    let mut chunk = vec![good.clone()];
    chunk.extend(invalid.iter().map(|(r, _)| r.clone()));
    let ack = ingester.send(&wire(&chunk, "mixed")).await.unwrap();
    assert_eq!(
        ack.as_deref(),
        Some(&b"mixed"[..]),
        "a mixed chunk is acked"
    );
    let expected_invalid = invalid.iter().filter(|(_, why)| !why.is_empty()).count() as i64;
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 2);
    assert_eq!(
        db.int("SELECT COUNT(*) FROM quarantine").await,
        expected_invalid
    );
    let quarantined = db
        .texts("SELECT reason, raw FROM quarantine ORDER BY id")
        .await;
    for ((_, why), q) in invalid
        .iter()
        .filter(|(_, why)| !why.is_empty())
        .zip(&quarantined)
    {
        assert!(
            q[0].contains(why),
            "reason {:?} should mention {why:?}",
            q[0]
        );
        let raw: serde_json::Value = serde_json::from_str(&q[1]).expect("raw is JSON");
        assert_eq!(raw["tag"], TAG, "{raw}");
        assert!(raw.get("record").is_some(), "{raw}");
    }
    let first: serde_json::Value = serde_json::from_str(&quarantined[0][1]).unwrap();
    assert_eq!(first["record"]["unique_key"], "");
    assert_eq!(first["record"]["amount_value"], 3);
    let s = store.summary().await.unwrap();
    assert_eq!(
        (s.received, s.records, s.quarantined),
        (chunk.len() as i64, 2, expected_invalid)
    );
    ingester.shutdown().await;
}

async fn rollups_sum_values_and_count_records_per_utc_hour_across_boundaries(db: TestDb) {
    let store = db.open().await;
    let chunk1 = [
        rec("a", "i-1", "samples", 1, "2026-11-27T03:59:59.999999999Z"),
        rec("b", "i-1", "samples", 2, "2026-11-27T04:00:00Z"),
        rec("c", "i-1", "samples", 3, "2026-11-27T04:59:59Z"),
        rec("d", "i-1", "samples", -4, "2026-11-27T06:30:00+01:00"), // 05:30Z
        rec("e", "i-2", "samples", 10, "2026-11-27T04:15:00Z"),
        rec("f", "i-1", "node-seconds", 7, "2026-11-27T04:15:00Z"),
    ];
    let chunk2 = [
        rec("g", "i-1", "samples", 100, "2026-11-27T04:30:00Z"),
        rec("h", "i-1", "samples", 5, "2026-11-28T00:00:00Z"),
        rec("b", "i-1", "samples", 2, "2026-11-27T04:00:00Z"), // duplicate: not counted twice
    ];
    put(&store, &chunk1).await;
    assert_rollups_match_records(&db).await;
    put(&store, &chunk2).await;
    assert_rollups_match_records(&db).await;
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![
            row("i-1", "node-seconds", "2026-11-27T04:00:00Z", 7, 1),
            row("i-1", "samples", "2026-11-27T03:00:00Z", 1, 1),
            row("i-1", "samples", "2026-11-27T04:00:00Z", 105, 3),
            row("i-1", "samples", "2026-11-27T05:00:00Z", -4, 1),
            row("i-1", "samples", "2026-11-28T00:00:00Z", 5, 1),
            row("i-2", "samples", "2026-11-27T04:00:00Z", 10, 1),
        ]
    );
}

async fn seed_for_reports(store: &AnyStore) {
    let records = [
        rec("a", "i-1", "samples", 1, "2026-10-31T23:10:00Z"),
        rec("b", "i-1", "samples", 2, "2026-11-01T00:10:00Z"),
        rec("c", "i-1", "samples", 3, "2026-11-01T05:10:00Z"),
        rec("d", "i-1", "samples", 4, "2026-11-02T05:10:00Z"),
        rec("e", "i-1", "samples", 5, "2026-12-01T00:00:00Z"),
        rec("f", "i-2", "samples", 6, "2026-11-01T05:20:00Z"),
        rec("g", "i-1", "node-seconds", 7, "2026-11-01T05:30:00Z"),
    ];
    put(store, &records).await;
}

async fn report_rolls_hours_up_into_days_and_months(db: TestDb) {
    let store = db.open().await;
    seed_for_reports(&store).await;
    assert_eq!(
        usage(&store, Granularity::Day).await,
        vec![
            row("i-1", "node-seconds", "2026-11-01T00:00:00Z", 7, 1),
            row("i-1", "samples", "2026-10-31T00:00:00Z", 1, 1),
            row("i-1", "samples", "2026-11-01T00:00:00Z", 5, 2),
            row("i-1", "samples", "2026-11-02T00:00:00Z", 4, 1),
            row("i-1", "samples", "2026-12-01T00:00:00Z", 5, 1),
            row("i-2", "samples", "2026-11-01T00:00:00Z", 6, 1),
        ]
    );
    assert_eq!(
        usage(&store, Granularity::Month).await,
        vec![
            row("i-1", "node-seconds", "2026-11-01T00:00:00Z", 7, 1),
            row("i-1", "samples", "2026-10-01T00:00:00Z", 1, 1),
            row("i-1", "samples", "2026-11-01T00:00:00Z", 9, 3),
            row("i-1", "samples", "2026-12-01T00:00:00Z", 5, 1),
            row("i-2", "samples", "2026-11-01T00:00:00Z", 6, 1),
        ]
    );
}

async fn report_filters_by_instance_type_and_exact_hour_range(db: TestDb) {
    let store = db.open().await;
    seed_for_reports(&store).await;
    let q = |from: Option<&str>, to: Option<&str>, by| UsageQuery {
        from: from.map(|t| parse_rfc3339(t).unwrap()),
        to: to.map(|t| parse_rfc3339(t).unwrap()),
        instance: Some("i-1".into()),
        amount_type: Some("samples".into()),
        by,
    };
    // from inclusive, to exclusive, on the usage's hour.
    assert_eq!(
        store
            .usage(&q(
                Some("2026-11-01T00:00:00Z"),
                Some("2026-11-01T05:00:00Z"),
                Granularity::Hour
            ))
            .await
            .unwrap(),
        vec![row("i-1", "samples", "2026-11-01T00:00:00Z", 2, 1)]
    );
    // A bound inside an hour is refused, naming the hour boundaries around it; so is an
    // empty range.
    let inside = store
        .usage(&q(
            Some("2026-11-01T00:00:00Z"),
            Some("2026-11-01T05:00:00.000000001Z"),
            Granularity::Hour,
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        inside.contains("--to 2026-11-01T05:00:00Z or --to 2026-11-01T06:00:00Z"),
        "{inside}"
    );
    let empty = store
        .usage(&q(
            Some("2026-11-02T00:00:00Z"),
            Some("2026-11-01T00:00:00Z"),
            Granularity::Day,
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(empty.contains("empty range"), "{empty}");
    // A day that starts before `from` holds exactly its hours from `from` on (here 05:10's 3,
    // not 00:10's 2).
    assert_eq!(
        store
            .usage(&q(Some("2026-11-01T03:00:00Z"), None, Granularity::Day))
            .await
            .unwrap(),
        vec![
            row("i-1", "samples", "2026-11-01T00:00:00Z", 3, 1),
            row("i-1", "samples", "2026-11-02T00:00:00Z", 4, 1),
            row("i-1", "samples", "2026-12-01T00:00:00Z", 5, 1),
        ]
    );
    // Likewise a month that ends after `to`.
    assert_eq!(
        store
            .usage(&q(None, Some("2026-11-02T00:00:00Z"), Granularity::Month))
            .await
            .unwrap(),
        vec![
            row("i-1", "samples", "2026-10-01T00:00:00Z", 1, 1),
            row("i-1", "samples", "2026-11-01T00:00:00Z", 5, 2),
        ]
    );
    let only_i2 = UsageQuery {
        instance: Some("i-2".into()),
        ..UsageQuery::default()
    };
    assert_eq!(
        store.usage(&only_i2).await.unwrap(),
        vec![row("i-2", "samples", "2026-11-01T05:00:00Z", 6, 1)]
    );
    let only_node = UsageQuery {
        amount_type: Some("node-seconds".into()),
        ..UsageQuery::default()
    };
    assert_eq!(store.usage(&only_node).await.unwrap().len(), 1);
    let nobody = UsageQuery {
        instance: Some("nobody".into()),
        ..UsageQuery::default()
    };
    assert!(store.usage(&nobody).await.unwrap().is_empty());
}

async fn report_writes_json_csv_and_table(db: TestDb) {
    let store = db.open().await;
    seed_for_reports(&store).await;
    let rows = store
        .usage(&UsageQuery {
            instance: Some("i-1".into()),
            amount_type: Some("samples".into()),
            by: Granularity::Month,
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let mut json = Vec::new();
    write_usage(&mut json, &rows, Format::Json).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!([
            {"instance":"i-1","amount_type":"samples","bucket":"2026-10-01T00:00:00Z","value":1,"records":1},
            {"instance":"i-1","amount_type":"samples","bucket":"2026-11-01T00:00:00Z","value":9,"records":3},
            {"instance":"i-1","amount_type":"samples","bucket":"2026-12-01T00:00:00Z","value":5,"records":1},
        ])
    );
    assert!(
        String::from_utf8(json)
            .unwrap()
            .starts_with(r#"[{"instance":"i-1","amount_type":"samples","bucket":"#),
        "documented key order"
    );
    let mut csv = Vec::new();
    write_usage(&mut csv, &rows, Format::Csv).unwrap();
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "instance,amount_type,bucket,value,records\n\
         i-1,samples,2026-10-01T00:00:00Z,1,1\n\
         i-1,samples,2026-11-01T00:00:00Z,9,3\n\
         i-1,samples,2026-12-01T00:00:00Z,5,1\n\
         (all),samples,total,15,5\n"
    );
    let mut table = Vec::new();
    write_usage(&mut table, &rows, Format::Table).unwrap();
    let table = String::from_utf8(table).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[4].starts_with("(all)") && lines[4].ends_with(" 15        5"),
        "a totals row: {table}"
    );
    assert!(lines[0].starts_with("INSTANCE"), "{table}");
    assert!(
        lines[2].contains("2026-11-01T00:00:00Z") && lines[2].ends_with(" 9        3"),
        "{table}"
    );
    let mut summary = Vec::new();
    write_summary(&mut summary, &store.summary().await.unwrap(), Format::Json).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&summary).unwrap(),
        serde_json::json!({"received":7,"records":7,"duplicates":0,"conflicts":0,"quarantined":0,"released":0})
    );
}

async fn summary_totals_persist_across_reopening(db: TestDb) {
    let a = rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z");
    let b = rec("b", "i-1", "samples", 2, "2026-11-27T04:10:00Z");
    {
        let store = db.open().await;
        put(&store, &[a.clone(), b.clone()]).await;
        put(
            &store,
            &[a.clone(), with(&b, "amount_value", Value::from(3))],
        )
        .await;
    }
    let store = db.open().await;
    put(&store, &[a, Value::Nil]).await;
    let s = store.summary().await.unwrap();
    assert_eq!(
        (
            s.received,
            s.records,
            s.duplicates,
            s.conflicts,
            s.quarantined
        ),
        (6, 2, 2, 1, 1)
    );
    // A reader (what `billing report --summary` opens) sees the same.
    let reader = AnyStore::open_reader(&db.url).await.unwrap();
    assert_eq!(reader.summary().await.unwrap(), s);
}

async fn migrations_run_once_and_reopening_keeps_data(db: TestDb) {
    {
        let store = db.open().await;
        put(
            &store,
            &[rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z")],
        )
        .await;
    }
    let store = db.open().await;
    assert_eq!(
        db.int("SELECT COUNT(*) FROM schema_version").await,
        billing_ingest::SCHEMA_VERSION
    );
    assert_eq!(
        db.int("SELECT MAX(version) FROM schema_version").await,
        billing_ingest::SCHEMA_VERSION
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 1);
    assert_eq!(usage(&store, Granularity::Hour).await.len(), 1);
}

async fn store_with_a_newer_schema_version_is_refused(db: TestDb) {
    drop(db.open().await);
    let newer = billing_ingest::SCHEMA_VERSION + 1;
    db.exec(&format!(
        "INSERT INTO schema_version (version, applied_at) VALUES ({newer}, 'by a newer build')"
    ))
    .await;
    let err = AnyStore::open(&db.url)
        .await
        .expect_err("newer schema accepted");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, known } if found == newer && known == newer - 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer than this build"), "{err}");
    let err = AnyStore::open_reader(&db.url)
        .await
        .expect_err("reader accepted newer schema");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err:?}");
}

async fn reader_refuses_a_store_that_does_not_exist(db: TestDb) {
    let err = AnyStore::open_reader(&db.url)
        .await
        .expect_err("reader opened a store that was never created");
    assert!(
        matches!(
            err,
            StoreError::NotFound(_) | StoreError::SchemaTooOld { found: 0, .. }
        ),
        "{err:?}"
    );
    // ... and created nothing: an ingester then migrates from scratch.
    let store = db.open().await;
    assert_eq!(store.summary().await.unwrap().received, 0);
}

async fn failed_commit_sends_no_ack_closes_the_connection_and_stores_nothing(db: TestDb) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let records = [
        rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z"),
        rec("b", "i-1", "samples", 2, "2026-11-27T04:10:00Z"),
        Value::Nil, // would be quarantined
    ];
    db.sabotage().await;
    let reply = ingester.send(&wire(&records, "doomed")).await;
    assert!(
        !matches!(reply, Ok(Some(_))),
        "{}: a chunk whose transaction failed was acked: {reply:?}",
        db.backend
    );
    // Whole transaction rolled back: no record, rollup, quarantine or count of it.
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 0);
    assert_eq!(db.int("SELECT COUNT(*) FROM rollups").await, 0);
    assert_eq!(db.int("SELECT COUNT(*) FROM quarantine").await, 0);
    assert_eq!(store.summary().await.unwrap(), Default::default());
    // Once the store works again, the client's resend is acked and stored once.
    db.repair().await;
    ingester.send_acked(&records, "doomed").await;
    ingester.send_acked(&records, "doomed-again").await;
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 2);
    let s = store.summary().await.unwrap();
    assert_eq!(
        (s.received, s.records, s.duplicates, s.quarantined),
        (6, 2, 2, 2)
    );
    assert_rollups_match_records(&db).await;
    ingester.shutdown().await;
}

async fn ingester_restarted_on_the_same_address_and_store_counts_the_resend_as_a_duplicate(
    db: TestDb,
) {
    let store = Arc::new(db.open().await);
    let first = start_ingester(store).await;
    let addr = first.addr();
    let records = [
        rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z"),
        rec("b", "i-1", "samples", 2, "2026-11-27T04:10:00Z"),
    ];
    first.send_acked(&records, "before").await;
    assert_eq!(first.metrics().commits().0, 1);
    let store = first.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a stopped ingester still accepts"
    );

    let second =
        RunningIngester::start_with(addr, store, IngesterOptions::default().policy(policy()))
            .await
            .expect("restart on the same address");
    assert_eq!(second.addr(), addr);
    // A client that never saw its ack resends the chunk to the new ingester.
    second.send_acked(&records, "before").await;
    let s = second.store().summary().await.unwrap();
    assert_eq!((s.received, s.records, s.duplicates), (4, 2, 2));
    assert_eq!(
        second.metrics().commits().0,
        1,
        "each ingester counts its own frames"
    );
    let store = second.shutdown().await;
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "a stopped ingester still holds its store"
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 2);
    assert_rollups_match_records(&db).await;
}

// ---------------------------------------------------------------------------------------------
// The ingester on its own thread, for callers without a runtime
// ---------------------------------------------------------------------------------------------

/// Sends one chunk on a new blocking connection; the ack, or `None` when the server closed.
fn send_blocking(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HANG)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let mut piece = [0u8; 256];
    loop {
        if let forward::Check::Complete(n) = forward::check_reply(&buf, 1024).unwrap() {
            return Some(forward::parse_ack(&buf[..n]).unwrap());
        }
        match s.read(&mut piece) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e) => panic!("neither an ack nor a close: {e}"),
        }
    }
}

#[test]
fn background_ingester_serves_a_sqlite_store_to_a_caller_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("billing.db"));
    let ingester = BackgroundIngester::open(
        "127.0.0.1:0",
        &url,
        IngesterOptions::default().policy(policy()),
    )
    .unwrap();
    let records = [
        rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z"),
        Value::Nil,
    ];
    assert_eq!(
        send_blocking(ingester.addr(), &wire(&records, "c1")).as_deref(),
        Some(&b"c1"[..])
    );
    let s = ingester.run(|s| async move { s.summary().await }).unwrap();
    assert_eq!((s.received, s.records, s.quarantined), (2, 1, 1));
    assert_eq!(ingester.metrics().commits().0, 1);
    let addr = ingester.addr();
    let store = ingester.shutdown().expect("clean shutdown");
    assert_eq!(Arc::strong_count(&store), 1);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// The test's own runtime only prepares the schema and is idle while the ingester serves: the
/// store's connections must live on the ingester's runtime. After shutdown, the store still
/// works on another runtime (its pool replaces the connections that ended with the thread).
#[test]
fn background_ingester_keeps_a_postgres_store_on_its_own_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    let url = StoreUrl::Postgres(db.pg_url("pool_size=2"));
    let options = IngesterOptions::default()
        .thread_name("pg-ingester")
        .policy(policy());
    let ingester = BackgroundIngester::open("127.0.0.1:0", &url, options).unwrap();
    let records = [rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z")];
    assert_eq!(
        send_blocking(ingester.addr(), &wire(&records, "c1")).as_deref(),
        Some(&b"c1"[..])
    );
    assert_eq!(
        ingester
            .run(|s| async move { s.summary().await })
            .unwrap()
            .records,
        1
    );
    let store = ingester.shutdown().expect("clean shutdown");
    let s = rt
        .block_on(store.summary())
        .expect("the store after shutdown");
    assert_eq!((s.received, s.records), (1, 1));
    assert_eq!(rt.block_on(db.int("SELECT COUNT(*) FROM records")), 1);
}

// ---------------------------------------------------------------------------------------------
// Backend-specific
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jsonl_store_reports_every_entry_as_stored_and_has_no_reports() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Jsonl(dir.path().join("r.jsonl"));
    let store = AnyStore::open(&url).await.unwrap();
    let records = [
        rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z"),
        Value::Nil,
    ];
    assert_eq!(put(&store, &records).await, outcome(2, 2, 0, 0, 0));
    assert_eq!(put(&store, &records).await, outcome(2, 2, 0, 0, 0));
    let text = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(matches!(
        store.summary().await,
        Err(StoreError::Unsupported(_))
    ));
    assert!(matches!(
        AnyStore::open_reader(&url).await,
        Err(StoreError::Unsupported(_))
    ));
}

/// Two ingesters (two stores, each with its own connection pool and runtime, on their own
/// threads) share one PostgreSQL schema and receive the same chunks at the same time, with
/// their records in opposite orders. Each key must be stored once, the rest
/// counted as duplicates, and the rollups must add up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_ingesters_receiving_the_same_events_concurrently_store_each_once() {
    let Some(db) = TestDb::postgres().await else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    const N: usize = 2000;
    let hours = ["03", "04", "05", "06"];
    let records: Vec<Value> = (0..N)
        .map(|i| {
            rec(
                &format!("k{i:04}"),
                &format!("i-{}", i % 3),
                if i % 2 == 0 {
                    "samples"
                } else {
                    "node-seconds"
                },
                (i % 7) as i64 + 1,
                &format!("2026-11-27T{}:{:02}:00Z", hours[i % 4], i % 60),
            )
        })
        .collect();
    let expected_sum: i64 = (0..N).map(|i| (i % 7) as i64 + 1).sum();
    let expected_total = i128::from(expected_sum);
    // The same chunks, in opposite record order: without a fixed lock order the two
    // transactions of a chunk would each hold keys the other one waits for.
    let forward_chunks: Vec<Vec<Value>> = records.chunks(50).map(<[Value]>::to_vec).collect();
    let backward_chunks: Vec<Vec<Value>> = forward_chunks
        .iter()
        .map(|c| c.iter().rev().cloned().collect())
        .collect();

    let barrier = Arc::new(std::sync::Barrier::new(2));
    let spawn = |chunks: Vec<Vec<Value>>, url: StoreUrl| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                barrier.wait();
                // Both open (and so migrate) at once, too.
                let store = Arc::new(AnyStore::open(&url).await.expect("open"));
                let mut total = StoreOutcome::default();
                // Two chunks in flight per ingester, as two client connections would do.
                let (even, odd): (Vec<_>, Vec<_>) = chunks
                    .into_iter()
                    .enumerate()
                    .partition(|(i, _)| i % 2 == 0);
                let mut tasks = Vec::new();
                for half in [even, odd] {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut sub = StoreOutcome::default();
                        for (_, chunk) in half {
                            sub.add(&store_frame(&store, frame(&chunk)).await.expect("store"));
                        }
                        sub
                    }));
                }
                for t in tasks {
                    total.add(&t.await.unwrap());
                }
                total
            })
        })
    };
    let a = spawn(forward_chunks, db.url.clone());
    let b = spawn(backward_chunks, db.url.clone());
    let (a, b) = tokio::task::spawn_blocking(move || (a.join(), b.join()))
        .await
        .unwrap();
    let (a, b) = (a.expect("ingester A"), b.expect("ingester B"));
    let mut both = a;
    both.add(&b);
    assert_eq!(
        both,
        outcome(2 * N as u64, N as u64, N as u64, 0, 0),
        "A {a:?} B {b:?}"
    );

    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, N as i64);
    assert_eq!(
        db.int("SELECT CAST(SUM(value) AS BIGINT) FROM rollups")
            .await,
        expected_sum
    );
    assert_eq!(
        db.int("SELECT CAST(SUM(records) AS BIGINT) FROM rollups")
            .await,
        N as i64
    );
    assert_rollups_match_records(&db).await;
    assert_eq!(
        db.int("SELECT COUNT(*) FROM schema_version").await,
        billing_ingest::SCHEMA_VERSION
    );
    let reader = AnyStore::open_reader(&db.url).await.unwrap();
    let s = reader.summary().await.unwrap();
    assert_eq!(
        (s.received, s.records, s.duplicates, s.conflicts),
        (2 * N as i64, N as i64, N as i64, 0)
    );
    let by_day = usage(&reader, Granularity::Day).await;
    assert_eq!(by_day.iter().map(|r| r.value).sum::<i128>(), expected_total);
    assert_eq!(
        by_day.len(),
        6,
        "3 instances x 2 types on one day: {by_day:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL connection pool
// ---------------------------------------------------------------------------------------------

/// Polls `check` until it holds; panics after [`HANG`]. The pause between polls only spaces
/// the queries: what the test waits for is the condition itself.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let waited = tokio::time::timeout(HANG, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

/// Backends of one store (told apart by `application_name`) as PostgreSQL sees them: all,
/// and those waiting for a lock.
async fn backends(db: &TestDb, app: &str) -> (i64, i64) {
    let all = db
        .int(&format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await;
    let on_lock = db
        .int(&format!(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE application_name = '{app}' AND wait_event_type = 'Lock'"
        ))
        .await;
    (all, on_lock)
}

/// Stores a one-record frame under key `key` on a task of its own.
fn spawn_store(store: &Arc<PgStore>, key: &str) -> tokio::task::JoinHandle<StoreOutcome> {
    let (store, key) = (store.clone(), key.to_string());
    tokio::spawn(async move {
        store_frame(
            &store,
            frame(&[rec(&key, "i-1", "samples", 1, "2026-11-27T04:10:00Z")]),
        )
        .await
        .expect("store")
    })
}

/// A session that holds an uncommitted row under `key`: a frame inserting that key waits for
/// it (the unique index makes it), keeping its pooled connection busy until [`release`].
async fn hold_key(db: &TestDb, key: &str) -> tokio_postgres::Client {
    let session = db.pg_session().await;
    session
        .batch_execute(&format!(
            "BEGIN; INSERT INTO records (unique_key, instance, amount_type, value, occurred_at, hour, metadata)
             VALUES ('{key}:samples', 'held', 'samples', 1, '2026-11-27T04:10:00Z', 0, '{{}}')"
        ))
        .await
        .expect("hold key");
    session
}

async fn release(session: &tokio_postgres::Client) {
    session.batch_execute("ROLLBACK").await.expect("release");
}

/// With `pool_size=2` and both connections busy in transactions that wait on row locks, a
/// third caller waits for a connection; when the *second* busy one finishes, the third gets
/// that connection and completes while the first is still held (a pool of fixed slots would
/// have queued it behind the first). PostgreSQL never sees a third connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_gives_a_waiting_caller_the_first_connection_to_come_free() {
    let Some(db) = TestDb::postgres().await else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    let app = format!("pool_{}", db.pg().schema);
    let store = PgStore::open(&db.pg_url(&format!("pool_size=2&application_name={app}")))
        .await
        .expect("open");
    let store = Arc::new(store);
    let holds_a = hold_key(&db, "a").await;
    let holds_b = hold_key(&db, "b").await;

    let first = spawn_store(&store, "a");
    until("the first frame waits on its key", async || {
        backends(&db, &app).await.1 == 1
    })
    .await;
    let second = spawn_store(&store, "b");
    until("the second frame waits on its key", async || {
        backends(&db, &app).await.1 == 2
    })
    .await;
    let third = spawn_store(&store, "c");
    until("the third caller waits for a connection", async || {
        store.pool_status().waiting == 1
    })
    .await;
    assert_eq!(
        backends(&db, &app).await,
        (2, 2),
        "pool_size=2: two connections, both busy"
    );

    release(&holds_b).await;
    let third = tokio::time::timeout(HANG, third)
        .await
        .expect("the third caller never got the connection the second freed")
        .unwrap();
    assert_eq!(third, outcome(1, 1, 0, 0, 0));
    assert_eq!(second.await.unwrap(), outcome(1, 1, 0, 0, 0));
    // The first is still held by its key's lock: the third did not need its connection.
    assert!(
        !first.is_finished(),
        "the first frame ended while its key was held"
    );
    assert_eq!(backends(&db, &app).await, (2, 1));

    release(&holds_a).await;
    assert_eq!(first.await.unwrap(), outcome(1, 1, 0, 0, 0));
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 3);
    let status = store.pool_status();
    assert_eq!((status.max_size, status.open, status.waiting), (2, 2, 0));
}

/// A connection the server terminated is not reused: at worst the frame that meets it fails
/// (unacked, so its client resends it), and the next checkout opens a new connection that
/// still writes into the store's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_replaces_a_connection_the_server_terminated() {
    let Some(db) = TestDb::postgres().await else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    let app = format!("pool_{}", db.pg().schema);
    let store = PgStore::open(&db.pg_url(&format!("pool_size=1&application_name={app}")))
        .await
        .expect("open");
    let a = rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z");
    let b = rec("b", "i-1", "samples", 2, "2026-11-27T04:10:00Z");
    assert_eq!(
        store_frame(&store, frame(&[a])).await.unwrap(),
        outcome(1, 1, 0, 0, 0)
    );
    let pid_of_store = format!(
        "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity WHERE application_name = '{app}'"
    );
    let old = db.int(&pid_of_store).await;
    // Waits (bounded) until the backend is gone, not only signalled.
    let terminated = db
        .int(&format!(
            "SELECT CAST(CASE WHEN pg_terminate_backend({old}, {}) THEN 1 ELSE 0 END AS BIGINT)",
            HANG.as_millis()
        ))
        .await;
    assert_eq!(terminated, 1);

    let mut failed = 0;
    let stored = loop {
        match store_frame(&store, frame(std::slice::from_ref(&b))).await {
            Ok(o) => break o,
            Err(e) => {
                assert!(matches!(e, StoreError::Postgres(_)), "{e:?}");
                failed += 1;
                assert!(failed < 2, "the terminated connection was used again: {e}");
            }
        }
    };
    assert_eq!(stored, outcome(1, 1, 0, 0, 0));
    let new = db.int(&pid_of_store).await;
    assert_ne!(new, old);
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 2);
    assert_eq!(store.pool_status().open, 1);
}

// ---------------------------------------------------------------------------------------------
// Store limits: exact rollups beyond 64 bits, records the store refuses, the quarantine bound,
// migration from schema version 1, private files
// ---------------------------------------------------------------------------------------------

conformance!(
    sqlite_limits,
    postgres_limits: a_record_of_i64_max_and_later_records_of_its_bucket_are_stored_and_summed_exactly,
    a_record_the_store_refuses_is_quarantined_as_store_rejected_and_its_chunk_is_stored_and_acked,
    quarantine_rows_stop_at_the_bound_but_every_entry_is_counted,
    a_store_of_schema_version_1_is_migrated_keeping_its_rollups_and_quarantine,
    a_record_whose_rollup_the_store_refuses_is_quarantined_and_not_stored,
);

impl TestDb {
    /// Makes the database refuse the record under `key` (only that one), with an error about
    /// the data: SQLite `RAISE(ABORT)` (`SQLITE_CONSTRAINT_TRIGGER`), PostgreSQL a
    /// `check_violation` (`23514`).
    async fn reject_key(&self, key: &str) {
        match self.raw {
            Raw::Sqlite(_) => {
                self.exec(&format!(
                    "CREATE TRIGGER reject_one BEFORE INSERT ON records WHEN NEW.unique_key = '{key}'
                     BEGIN SELECT RAISE(ABORT, 'rejected by test'); END;"
                ))
                .await
            }
            Raw::Postgres(_) => {
                self.exec(&format!(
                    "CREATE FUNCTION reject_one() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN
                            IF NEW.unique_key = '{key}' THEN
                              RAISE EXCEPTION 'rejected by test' USING ERRCODE = 'check_violation';
                            END IF;
                            RETURN NEW;
                          END $$;
                     CREATE TRIGGER reject_one BEFORE INSERT ON records
                       FOR EACH ROW EXECUTE FUNCTION reject_one();"
                ))
                .await
            }
        }
    }

    async fn accept_all(&self) {
        match self.raw {
            Raw::Sqlite(_) => self.exec("DROP TRIGGER reject_one").await,
            Raw::Postgres(_) => self.exec("DROP TRIGGER reject_one ON records").await,
        }
    }

    async fn open_with(&self, options: &StoreOptions) -> AnyStore {
        AnyStore::open_with(&self.url, options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// Rows in `quarantine`, and the count the store keeps of them.
    async fn quarantine_rows(&self) -> (i64, i64) {
        (
            self.int("SELECT COUNT(*) FROM quarantine").await,
            self.int("SELECT CAST(SUM(quarantine_rows) AS BIGINT) FROM counters")
                .await,
        )
    }
}

const MAX: i128 = i64::MAX as i128;

async fn a_record_of_i64_max_and_later_records_of_its_bucket_are_stored_and_summed_exactly(
    db: TestDb,
) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    // The extreme record shares its chunk with another instance's.
    ingester
        .send_acked(
            &[
                rec("max", "i-big", "samples", i64::MAX, "2026-11-27T04:10:00Z"),
                rec("s1", "i-small", "samples", 5, "2026-11-27T04:20:00Z"),
            ],
            "c1",
        )
        .await;
    // Later chunks with records of the same bucket, and of the other instance.
    ingester
        .send_acked(
            &[
                rec("b1", "i-big", "samples", 1, "2026-11-27T04:30:00Z"),
                rec("s2", "i-small", "samples", 6, "2026-11-27T04:40:00Z"),
            ],
            "c2",
        )
        .await;
    ingester
        .send_acked(
            &[
                rec("b2", "i-big", "samples", 2, "2026-11-27T04:50:00Z"),
                rec("max2", "i-big", "samples", i64::MAX, "2026-11-27T04:55:00Z"),
                // Another hour of the same day and month.
                rec("max3", "i-big", "samples", i64::MAX, "2026-11-28T07:00:00Z"),
            ],
            "c3",
        )
        .await;
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 7);
    assert_rollups_match_records(&db).await;
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![
            row("i-big", "samples", "2026-11-27T04:00:00Z", 2 * MAX + 3, 4),
            row("i-big", "samples", "2026-11-28T07:00:00Z", MAX, 1),
            row("i-small", "samples", "2026-11-27T04:00:00Z", 11, 2),
        ]
    );
    assert_eq!(
        usage(&store, Granularity::Day).await,
        vec![
            row("i-big", "samples", "2026-11-27T00:00:00Z", 2 * MAX + 3, 4),
            row("i-big", "samples", "2026-11-28T00:00:00Z", MAX, 1),
            row("i-small", "samples", "2026-11-27T00:00:00Z", 11, 2),
        ]
    );
    let month = usage(&store, Granularity::Month).await;
    assert_eq!(
        month,
        vec![
            row("i-big", "samples", "2026-11-01T00:00:00Z", 3 * MAX + 3, 5),
            row("i-small", "samples", "2026-11-01T00:00:00Z", 11, 2),
        ]
    );
    // Every format prints every digit.
    let mut json = Vec::new();
    write_usage(&mut json, &month, Format::Json).unwrap();
    #[derive(serde::Deserialize)]
    struct Row {
        value: i128,
    }
    let parsed: Vec<Row> = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed[0].value, 3 * MAX + 3);
    let mut csv = Vec::new();
    write_usage(&mut csv, &month, Format::Csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.contains(&format!(",{},5\n", 3 * MAX + 3)), "{csv}");
    let mut table = Vec::new();
    write_usage(&mut table, &month, Format::Table).unwrap();
    assert!(
        String::from_utf8(table)
            .unwrap()
            .contains(&(3 * MAX + 3).to_string())
    );
    // A reader (what `billing report` opens) sums the same.
    let reader = AnyStore::open_reader(&db.url).await.unwrap();
    assert_eq!(usage(&reader, Granularity::Month).await, month);
    let s = store.summary().await.unwrap();
    assert_eq!((s.received, s.records, s.quarantined), (7, 7, 0));
    ingester.shutdown().await;
}

async fn a_record_the_store_refuses_is_quarantined_as_store_rejected_and_its_chunk_is_stored_and_acked(
    db: TestDb,
) {
    let store = Arc::new(db.open().await);
    let ingester = start_ingester(store.clone()).await;
    let bad = rec("bad", "i-1", "samples", 7, "2026-11-27T04:10:00Z");
    ingester
        .send_acked(
            &[rec("old", "i-1", "samples", 1, "2026-11-27T04:00:00Z")],
            "before",
        )
        .await;
    db.reject_key("bad:samples").await;
    let chunk = [
        rec("a", "i-1", "samples", 3, "2026-11-27T04:10:00Z"),
        bad.clone(),
        rec("old", "i-1", "samples", 1, "2026-11-27T04:00:00Z"), // duplicate
        Value::Nil,                                              // invalid
        bad.clone(),                                             // refused again
        rec("b", "i-2", "samples", 4, "2026-11-27T04:20:00Z"),
    ];
    ingester.send_acked(&chunk, "mixed").await;
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 3);
    assert_rollups_match_records(&db).await;
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![
            row("i-1", "samples", "2026-11-27T04:00:00Z", 4, 2),
            row("i-2", "samples", "2026-11-27T04:00:00Z", 4, 1),
        ]
    );
    let rows = db
        .texts("SELECT reason, raw FROM quarantine ORDER BY id")
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0][0].starts_with("not_a_map"), "{rows:?}");
    for q in &rows[1..] {
        assert!(q[0].starts_with("store_rejected: "), "{q:?}");
        assert!(q[0].contains("rejected by test"), "{q:?}");
        if db.backend == "postgres" {
            assert!(q[0].contains("PostgreSQL: 23514 rejected by test"), "{q:?}");
        }
        let raw: serde_json::Value = serde_json::from_str(&q[1]).unwrap();
        assert_eq!(raw["record"]["unique_key"], "bad:samples", "{raw}");
        assert_eq!(raw["record"]["amount_value"], 7, "{raw}");
        assert_eq!(raw["tag"], TAG, "{raw}");
        assert!(raw["time"].is_string(), "the entry's raw form: {raw}");
    }
    let s = store.summary().await.unwrap();
    assert_eq!(
        (s.received, s.records, s.duplicates, s.quarantined),
        (7, 3, 1, 3)
    );
    assert_eq!(ingester.metrics().quarantined_total("store_rejected"), 2);
    assert_eq!(ingester.metrics().quarantined_total("not_a_map"), 1);
    // Once the cause is gone, the record is stored like any other.
    db.accept_all().await;
    ingester.send_acked(&[bad], "after").await;
    assert_eq!(db.int("SELECT COUNT(*) FROM records").await, 4);
    assert_rollups_match_records(&db).await;
    ingester.shutdown().await;
}

async fn quarantine_rows_stop_at_the_bound_but_every_entry_is_counted(db: TestDb) {
    let invalid = |n: usize| -> Vec<Value> { (0..n).map(|i| Value::from(i as i64)).collect() };
    {
        let store = db
            .open_with(&StoreOptions::default().quarantine_max_rows(10))
            .await;
        assert_eq!(put(&store, &invalid(50)).await, outcome(50, 0, 0, 0, 50));
        assert_eq!(db.quarantine_rows().await, (10, 10));
        let good = rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z");
        let mut mixed = invalid(5);
        mixed.push(good);
        assert_eq!(put(&store, &mixed).await, outcome(6, 1, 0, 0, 5));
        assert_eq!(db.quarantine_rows().await, (10, 10));
        let s = store.summary().await.unwrap();
        assert_eq!((s.received, s.records, s.quarantined), (56, 1, 55));
        // The first entries on the wire are the ones kept.
        let first: serde_json::Value = serde_json::from_str(
            &db.texts("SELECT raw FROM quarantine ORDER BY id LIMIT 1")
                .await[0][0],
        )
        .unwrap();
        assert_eq!(first["record"], 0);
    }
    // A higher bound leaves room at once; rows an operator deleted are recounted at open.
    {
        let store = db
            .open_with(&StoreOptions::default().quarantine_max_rows(12))
            .await;
        put(&store, &invalid(5)).await;
        assert_eq!(db.quarantine_rows().await, (12, 12));
    }
    db.exec("DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT 4)")
        .await;
    let store = db
        .open_with(&StoreOptions::default().quarantine_max_rows(12))
        .await;
    assert_eq!(db.quarantine_rows().await, (8, 8));
    put(&store, &invalid(3)).await;
    assert_eq!(db.quarantine_rows().await, (11, 11));
    let s = store.summary().await.unwrap();
    assert_eq!(s.quarantined, 63, "every entry counted");
}

/// Version 1 as released (`schema.rs`), for the migration test.
const SQLITE_V1: &str = r#"
CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT INTO schema_version VALUES (1, 'by the previous build');
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
"#;

const POSTGRES_V1: &str = r#"
CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT INTO schema_version VALUES (1, 'by the previous build');
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
"#;

async fn a_store_of_schema_version_1_is_migrated_keeping_its_rollups_and_quarantine(db: TestDb) {
    let hour =
        time::OffsetDateTime::from(parse_rfc3339("2026-11-27T04:00:00Z").unwrap()).unix_timestamp();
    // What the previous build wrote: a record near the top of the 64-bit range, its rollup,
    // two quarantined entries and the counters of those three entries.
    db.exec(if db.backend == "sqlite" {
        SQLITE_V1
    } else {
        POSTGRES_V1
    })
    .await;
    db.exec(&format!(
        "INSERT INTO records VALUES ('old:samples', 'i-1', 'samples', {big}, '2026-11-27T04:10:00Z', {hour}, '{{}}');
         INSERT INTO rollups VALUES ('i-1', 'samples', {hour}, {big}, 1);
         INSERT INTO quarantine (reason, raw) VALUES ('not_a_map: x', '{{}}'), ('not_a_map: y', '{{}}');
         INSERT INTO counters (slot, received, stored, quarantined) VALUES (0, 3, 1, 2);",
        big = i64::MAX - 1
    ))
    .await;
    // A reader refuses the old schema (readers never migrate).
    assert!(matches!(
        AnyStore::open_reader(&db.url).await,
        Err(StoreError::SchemaTooOld { found: 1, .. })
    ));
    let store = Arc::new(db.open().await);
    assert_eq!(
        db.int("SELECT MAX(version) FROM schema_version").await,
        billing_ingest::SCHEMA_VERSION
    );
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![row("i-1", "samples", "2026-11-27T04:00:00Z", MAX - 1, 1)]
    );
    assert_eq!(db.quarantine_rows().await, (2, 2));
    let s = store.summary().await.unwrap();
    assert_eq!((s.received, s.records, s.quarantined), (3, 1, 2));
    // Version 3: an old record did not keep when it was stored, nor its duplicates.
    let old = store.key("old:samples").await.unwrap().record.unwrap();
    assert_eq!((old.stored_at, old.duplicates), (None, 0));
    // Version 4: PostgreSQL's key columns compare as bytes, as SQLite's always did.
    if db.backend == "postgres" {
        assert_eq!(
            db.int(
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND collation_name = 'C'
                   AND (table_name, column_name) IN (('records', 'unique_key'),
                       ('conflicts', 'unique_key'), ('rollups', 'instance'),
                       ('rollups', 'amount_type'))"
            )
            .await,
            4
        );
    }
    // The old bucket now sums past 64 bits.
    let ingester = start_ingester(store.clone()).await;
    ingester
        .send_acked(
            &[
                rec("new", "i-1", "samples", i64::MAX, "2026-11-27T04:20:00Z"),
                Value::Nil,
            ],
            "c1",
        )
        .await;
    assert_eq!(
        usage(&store, Granularity::Day).await,
        vec![row(
            "i-1",
            "samples",
            "2026-11-27T00:00:00Z",
            2 * MAX - 1,
            2
        )]
    );
    assert_eq!(db.quarantine_rows().await, (3, 3));
    assert_rollups_match_records(&db).await;
    ingester.shutdown().await;
    let reader = AnyStore::open_reader(&db.url).await.unwrap();
    assert_eq!(reader.summary().await.unwrap().quarantined, 3);
}

/// A PostgreSQL error names its SQLSTATE and the server's message, not only `db error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_errors_show_the_sqlstate_and_the_server_message() {
    let Some(db) = TestDb::postgres().await else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    let store = db.open().await;
    db.sabotage().await;
    let err = store_frame(
        &store,
        frame(&[rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z")]),
    )
    .await
    .expect_err("sabotaged");
    assert_eq!(
        err.to_string(),
        "PostgreSQL: P0001 injected commit failure",
        "{err:?}"
    );
}

/// The database, its `-wal` and `-shm` files and a `jsonl:` file are created readable by their
/// owner only, whatever the umask lets through; an existing file keeps its mode.
#[cfg(unix)]
#[tokio::test]
async fn store_files_are_created_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("billing.db");
    let store = AnyStore::open(&StoreUrl::Sqlite(db.clone())).await.unwrap();
    put(
        &store,
        &[rec("a", "i-1", "samples", 1, "2026-11-27T04:10:00Z")],
    )
    .await;
    // WAL mode: both files exist while the store is open.
    for name in ["billing.db", "billing.db-wal", "billing.db-shm"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
    drop(store);
    let jsonl = dir.path().join("r.jsonl");
    let store = AnyStore::open(&StoreUrl::Jsonl(jsonl.clone()))
        .await
        .unwrap();
    put(&store, &[Value::Nil]).await;
    assert_eq!(mode(&jsonl), 0o600);
    // An operator's file keeps its mode.
    let shared = dir.path().join("shared.jsonl");
    std::fs::write(&shared, b"").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(
        AnyStore::open(&StoreUrl::Jsonl(shared.clone()))
            .await
            .unwrap(),
    );
    assert_eq!(mode(&shared), 0o644);
}

async fn a_record_whose_rollup_the_store_refuses_is_quarantined_and_not_stored(db: TestDb) {
    let store = Arc::new(db.open().await);
    // Refuses any rollup write of instance i-bad, inserts and updates alike.
    match db.raw {
        Raw::Sqlite(_) => {
            db.exec(
                "CREATE TRIGGER reject_rollup_insert BEFORE INSERT ON rollups WHEN NEW.instance = 'i-bad'
                 BEGIN SELECT RAISE(ABORT, 'rollup refused by test'); END;
                 CREATE TRIGGER reject_rollup_update BEFORE UPDATE ON rollups WHEN NEW.instance = 'i-bad'
                 BEGIN SELECT RAISE(ABORT, 'rollup refused by test'); END;",
            )
            .await
        }
        Raw::Postgres(_) => {
            db.exec(
                "CREATE FUNCTION reject_rollup() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN
                        IF NEW.instance = 'i-bad' THEN
                          RAISE EXCEPTION 'rollup refused by test' USING ERRCODE = 'check_violation';
                        END IF;
                        RETURN NEW;
                      END $$;
                 CREATE TRIGGER reject_rollup BEFORE INSERT OR UPDATE ON rollups
                   FOR EACH ROW EXECUTE FUNCTION reject_rollup();",
            )
            .await
        }
    }
    let ingester = start_ingester(store.clone()).await;
    ingester
        .send_acked(
            &[
                rec("a", "i-1", "samples", 3, "2026-11-27T04:10:00Z"),
                rec("x", "i-bad", "samples", 9, "2026-11-27T04:10:00Z"),
                rec("b", "i-1", "samples", 4, "2026-11-27T04:20:00Z"),
            ],
            "c1",
        )
        .await;
    assert_eq!(
        db.texts("SELECT unique_key FROM records ORDER BY unique_key")
            .await,
        vec![vec!["a:samples".to_string()], vec!["b:samples".to_string()]]
    );
    assert_rollups_match_records(&db).await;
    let reasons = db.texts("SELECT reason FROM quarantine").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0][0].starts_with("store_rejected: ")
            && reasons[0][0].contains("rollup refused by test"),
        "{reasons:?}"
    );
    let s = store.summary().await.unwrap();
    assert_eq!((s.received, s.records, s.quarantined), (3, 2, 1));
    ingester.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Per-key history and quarantine releases (schema version 3)
// ---------------------------------------------------------------------------------------------

conformance!(
    sqlite_release,
    postgres_release: each_key_counts_its_own_duplicates_in_one_chunk_across_chunks_and_record_by_record,
    policy_refused_records_are_released_once_under_a_wider_policy_and_the_rest_stay,
    a_store_rejected_record_stays_while_the_store_refuses_it_and_is_released_once_it_accepts,
);

/// Stores a frame checked under `policy` (not the suite's wide one).
async fn put_under(s: &AnyStore, policy: &Policy, records: &[Value]) -> StoreOutcome {
    let f = frame(records);
    let checked = Checked::frame(&f, policy, SystemTime::now());
    s.store(&f, checked).await.expect("store")
}

async fn release_all(s: &AnyStore, policy: &Policy, dry_run: bool) -> Released {
    s.release(&ReleaseFilter::all(), policy, SystemTime::now(), dry_run)
        .await
        .expect("release")
}

/// `received = records + duplicates + conflicts + quarantined - released`, and the rows the
/// counters say are in quarantine are there.
async fn assert_counters_consistent(db: &TestDb, s: &AnyStore) {
    let t = s.summary().await.unwrap();
    assert_eq!(
        t.received,
        t.records + t.duplicates + t.conflicts + t.quarantined - t.released,
        "{}: {t:?}",
        db.backend
    );
    let (rows, counted) = db.quarantine_rows().await;
    assert_eq!(rows, counted, "{}: quarantine_rows", db.backend);
    assert_eq!(
        db.int("SELECT COUNT(*) FROM records").await,
        t.records,
        "{}",
        db.backend
    );
}

fn reasons(r: &Released) -> Vec<(&str, u64)> {
    r.still_failing
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

async fn each_key_counts_its_own_duplicates_in_one_chunk_across_chunks_and_record_by_record(
    db: TestDb,
) {
    let store = db.open().await;
    let a = rec("e1", "i-1", "samples", 3, "2026-11-27T04:10:00Z");
    let a_changed = with(&a, "amount_value", Value::from(9));
    let b = rec("e2", "i-1", "samples", 4, "2026-11-27T04:10:00Z");
    let dups = |key: &'static str| {
        let store = &store;
        async move {
            let r = store.key(key).await.unwrap().record.unwrap();
            assert!(r.stored_at.is_some(), "{key}: {r:?}");
            (r.duplicates, r.last_duplicate_at.is_some())
        }
    };
    put(
        &store,
        &[a.clone(), b.clone(), a.clone(), a_changed.clone()],
    )
    .await;
    assert_eq!(dups("e1:samples").await, (1, true));
    assert_eq!(dups("e2:samples").await, (0, false));
    put(
        &store,
        &[a_changed.clone(), a.clone(), b.clone(), a.clone()],
    )
    .await;
    assert_eq!(dups("e1:samples").await, (3, true));
    assert_eq!(dups("e2:samples").await, (1, true));
    // Record by record (a record of the frame is refused): the same counts.
    db.reject_key("bad:samples").await;
    let bad = rec("bad", "i-1", "samples", 1, "2026-11-27T04:10:00Z");
    assert_eq!(
        put(&store, &[bad, a.clone(), b.clone(), a]).await,
        outcome(4, 0, 3, 0, 1)
    );
    assert_eq!(dups("e1:samples").await, (5, true));
    assert_eq!(dups("e2:samples").await, (2, true));
    let report = store.key("e1:samples").await.unwrap();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(report.conflicts[0].count, 2);
    assert!(!store.key("nope:samples").await.unwrap().found());
    // Every duplicate counted in the totals is counted on its key.
    assert_eq!(
        db.int("SELECT CAST(SUM(duplicates) AS BIGINT) FROM records")
            .await,
        store.summary().await.unwrap().duplicates
    );
}

async fn policy_refused_records_are_released_once_under_a_wider_policy_and_the_rest_stay(
    db: TestDb,
) {
    let store = db.open().await;
    // No credits: negative amounts are quarantined.
    let strict = Policy::default().with_window(Duration::MAX, Duration::MAX);
    let credit = rec("c1", "i-1", "samples", -5, "2026-11-27T04:10:00Z");
    let chunk = [
        rec("s", "i-1", "samples", 3, "2026-11-27T04:20:00Z"),
        credit.clone(),
        Value::Nil,
        credit.clone(),
        rec("c2", "i-2", "samples", -7, "2026-11-27T05:10:00Z"),
    ];
    assert_eq!(
        put_under(&store, &strict, &chunk).await,
        outcome(5, 1, 0, 0, 4)
    );
    // Under the same policy nothing passes.
    let same = release_all(&store, &strict, false).await;
    assert_eq!((same.examined, same.released()), (4, 0));
    assert_eq!(reasons(&same), [("negative_amount", 3), ("not_a_map", 1)]);

    // A dry run tells what a release would do, and changes nothing.
    let before = (
        db.texts("SELECT CAST(id AS TEXT), reason FROM quarantine ORDER BY id")
            .await,
        store.summary().await.unwrap(),
        usage(&store, Granularity::Hour).await,
    );
    let dry = release_all(&store, &policy(), true).await;
    assert!(dry.dry_run);
    assert_eq!(
        (dry.examined, dry.stored, dry.duplicates, dry.conflicts),
        (4, 2, 1, 0)
    );
    assert_eq!(reasons(&dry), [("not_a_map", 1)]);
    let after_dry = (
        db.texts("SELECT CAST(id AS TEXT), reason FROM quarantine ORDER BY id")
            .await,
        store.summary().await.unwrap(),
        usage(&store, Granularity::Hour).await,
    );
    assert_eq!(after_dry, before);

    let done = release_all(&store, &policy(), false).await;
    assert_eq!(
        (done.dry_run, done.stored, done.duplicates, done.released()),
        (false, 2, 1, 3)
    );
    assert_eq!(done.amounts["samples"], (-12, 2));
    assert_eq!(
        usage(&store, Granularity::Hour).await,
        vec![
            row("i-1", "samples", "2026-11-27T04:00:00Z", -2, 2),
            row("i-2", "samples", "2026-11-27T05:00:00Z", -7, 1),
        ]
    );
    assert_rollups_match_records(&db).await;
    assert_eq!(db.quarantine_rows().await, (1, 1));
    let s = store.summary().await.unwrap();
    assert_eq!(
        (
            s.received,
            s.records,
            s.duplicates,
            s.quarantined,
            s.released
        ),
        (5, 3, 1, 4, 3)
    );
    assert_counters_consistent(&db, &store).await;
    let c1 = store.key("c1:samples").await.unwrap().record.unwrap();
    assert_eq!((c1.value, c1.duplicates), (-5, 1));

    // A second release stores nothing.
    let again = release_all(&store, &policy(), false).await;
    assert_eq!((again.examined, again.released()), (1, 0));
    assert_eq!(store.summary().await.unwrap(), s);
}

async fn a_store_rejected_record_stays_while_the_store_refuses_it_and_is_released_once_it_accepts(
    db: TestDb,
) {
    let store = db.open().await;
    db.reject_key("bad:samples").await;
    let bad = rec("bad", "i-1", "samples", 7, "2026-11-27T04:10:00Z");
    assert_eq!(put(&store, &[bad]).await, outcome(1, 0, 0, 0, 1));
    let refused = release_all(&store, &policy(), false).await;
    assert_eq!(
        (refused.released(), reasons(&refused)),
        (0, vec![("store_rejected", 1)])
    );
    let kept = db.texts("SELECT reason FROM quarantine").await;
    assert_eq!(kept.len(), 1);
    assert!(kept[0][0].starts_with("store_rejected: "), "{kept:?}");
    assert_counters_consistent(&db, &store).await;

    db.accept_all().await;
    let done = release_all(&store, &policy(), false).await;
    assert_eq!((done.stored, done.released()), (1, 1));
    assert_eq!(db.quarantine_rows().await, (0, 0));
    assert!(store.key("bad:samples").await.unwrap().found());
    assert_rollups_match_records(&db).await;
    assert_counters_consistent(&db, &store).await;
    assert_eq!(
        release_all(&store, &policy(), false).await.examined,
        0,
        "nothing left to release"
    );
}
