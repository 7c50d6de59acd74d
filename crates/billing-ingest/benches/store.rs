//! Store commit: one frame of new records made durable (checked, inserted, rollups and
//! counters updated, committed with its fsync), the work the ingester does before an ack.
//! `cargo bench -p billing-ingest --bench store`; with `BENCH_POSTGRES=postgres://...` the
//! PostgreSQL store too (in a schema made for the run and dropped after it). Figures in
//! BENCHMARKS.md.
//!
//! Frames of 114 records (what the client's defaults send under load, BENCHMARKS.md) and of
//! 1,000; every key is new, so the store inserts every record (the common case).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use billing_ingest::{Checked, PgStore, PgUrl, SqliteStore, Store};
use billing_schema::record::{RecordRef, TAG};
use billing_schema::validate::Policy;
use billing_schema::{AmountType, Metadata, Rfc3339};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use forward::{Entry, EventTime, Frame, Framing, Mode, Options};

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A frame of `n` records with keys never used before, and its check.
fn frame(n: usize, prefix: &str) -> (Frame, Checked) {
    let now = SystemTime::now();
    let ty = AmountType::from("container_seconds");
    let metadata = Metadata::new();
    let entries = (0..n)
        .map(|i| {
            let key = format!("{prefix}-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
            let at = Rfc3339::new(now - Duration::from_millis(i as u64));
            let mut body = Vec::new();
            RecordRef {
                key: &key,
                instance: "instance-0001",
                amount_type: &ty,
                value: 60,
                occurred_at: at.as_str(),
                metadata: &metadata,
            }
            .write_msgpack(&mut body);
            Entry {
                time: EventTime::now(),
                record: rmpv::decode::read_value(&mut body.as_slice()).expect("a record"),
                metadata: None,
            }
        })
        .collect();
    let frame = Frame {
        tag: TAG.to_string(),
        entries,
        options: Options::default(),
        mode: Mode::Forward,
        framing: Framing::MessagePack,
    };
    let checked = Checked::frame(&frame, &Policy::default(), now);
    assert_eq!(checked.valid.len(), n);
    (frame, checked)
}

fn commit<S: Store>(c: &mut Criterion, name: &str, store: &S, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("store_commit");
    for n in [114, 1000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{name}/frame_{n}"), |b| {
            b.iter_batched(
                || frame(n, &format!("{name}-{}", std::process::id())),
                |(frame, checked)| {
                    let out = rt.block_on(store.store(&frame, checked)).expect("stored");
                    assert_eq!(out.stored, n as u64);
                    black_box(out)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite = rt
        .block_on(SqliteStore::open(&dir.path().join("bench.db")))
        .expect("a SQLite store");
    commit(c, "sqlite", &sqlite, &rt);
    drop(sqlite);

    let Ok(base) = std::env::var("BENCH_POSTGRES") else {
        return;
    };
    let schema = format!("bench_store_{}", std::process::id());
    let url = base
        .parse::<PgUrl>()
        .and_then(|u| u.with_schema(&schema))
        .expect("BENCH_POSTGRES: a postgres:// URL");
    let pg = rt
        .block_on(PgStore::open(&url))
        .expect("a PostgreSQL store");
    commit(c, "postgres", &pg, &rt);
    drop(pg);
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(base.split('?').next().unwrap(), tokio_postgres::NoTls)
                .await
                .expect("connect to drop the schema");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .expect("drop the schema");
        drop(client);
        let _ = conn.await;
    });
}

criterion_group!(benches, stores);
criterion_main!(benches);
