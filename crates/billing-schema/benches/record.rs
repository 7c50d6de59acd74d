//! Record building and checking, per record, without sockets or threads: what the client
//! spends turning an event's amount into wire bytes, and what the ingester spends checking
//! one. `cargo bench -p billing-schema --bench record`; figures in BENCHMARKS.md.
//!
//! - `rfc3339`: `occurred_at`'s text (the client formats it once per event);
//! - `write_msgpack` / `write_json`: one record into a reused buffer (MessagePack is the
//!   default framing; JSON is the Go client's);
//! - `validate`: the ingester's checks and normalisation of one decoded record.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use billing_schema::record::RecordRef;
use billing_schema::validate::{Policy, validate};
use billing_schema::{AmountType, Metadata, Rfc3339};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 1000;

fn record(c: &mut Criterion) {
    let now = SystemTime::now();
    let times: Vec<SystemTime> = (0..N)
        .map(|i| now - Duration::from_nanos(1_000_003 * i as u64))
        .collect();
    let texts: Vec<Rfc3339> = times.iter().map(|t| Rfc3339::new(*t)).collect();
    let keys: Vec<String> = (0..N).map(|i| format!("bench-{i:08}")).collect();
    let ty = AmountType::from("container_seconds");
    let metadata: Metadata = [("region".to_string(), "eu-west-1".to_string())].into();
    let refs: Vec<RecordRef<'_>> = (0..N)
        .map(|i| RecordRef {
            key: &keys[i],
            instance: "instance-0001",
            amount_type: &ty,
            value: 1 + i as i64,
            occurred_at: texts[i].as_str(),
            metadata: &metadata,
        })
        .collect();

    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("rfc3339_1000", |b| {
        b.iter(|| {
            for t in &times {
                black_box(Rfc3339::new(*t));
            }
        })
    });
    let mut buf = Vec::with_capacity(256 * N);
    group.bench_function("write_msgpack_1000", |b| {
        b.iter(|| {
            buf.clear();
            for r in &refs {
                r.write_msgpack(&mut buf);
            }
            black_box(buf.len())
        })
    });
    group.bench_function("write_json_1000", |b| {
        b.iter(|| {
            buf.clear();
            for r in &refs {
                r.write_json(&mut buf);
            }
            black_box(buf.len())
        })
    });

    // What the ingester gets: each record decoded to a MessagePack value.
    let values: Vec<rmpv::Value> = refs
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            r.write_msgpack(&mut b);
            rmpv::decode::read_value(&mut b.as_slice()).expect("a record")
        })
        .collect();
    let policy = Policy::default();
    assert!(values.iter().all(|v| validate(v, &policy, now).is_ok()));
    group.bench_function("validate_1000", |b| {
        b.iter(|| {
            for v in &values {
                black_box(validate(v, &policy, now).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
