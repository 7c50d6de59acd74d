//! The caller's hot path. Run: `cargo bench -p billing-client --bench add`
//!
//! * `add/add_amounts_1_type`, `add/add_amounts_4_types`: one `Client::add_amounts` call
//!   (validation, encoding the records on the caller's thread, admission, the channel send),
//!   into a client whose in-process ingester acks everything; timed in runs of 1000 calls,
//!   each run flushed before the next (untimed) so the buffer never fills;
//! * `add/add_batch_1000`: one `add_batch` of 1000 one-type events.
//!
//! Throughput is in events (elements) per second.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use billing_client::testing::TestIngester;
use billing_client::{AmountType, Amounts, Client, Event, Metrics};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RUN: u64 = 1000;

fn amounts(types: usize, i: u64) -> Amounts {
    [
        AmountType::CONTAINER_SECONDS,
        AmountType::NODE_SECONDS,
        AmountType::WEAVENET_SECONDS,
        AmountType::SAMPLES,
    ][..types]
        .iter()
        .map(|t| (t.clone(), i as i64 + 1))
        .collect()
}

fn add(c: &mut Criterion) {
    let ingester = TestIngester::start().expect("test ingester");
    let mut config = ingester.client_config();
    config.max_buffered_events = 4 * RUN as usize;
    let client = Client::with_metrics(config, Metrics::new()).expect("client");
    let mut group = c.benchmark_group("add");
    group.throughput(Throughput::Elements(RUN));
    let mut next = 0u64;
    for types in [1, 4] {
        group.bench_function(
            format!(
                "add_amounts_{types}_type{}",
                if types > 1 { "s" } else { "" }
            ),
            |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for _ in 0..RUN {
                            next += 1;
                            let r = client.add_amounts(
                                format!("bench-{next}"),
                                "1234",
                                SystemTime::now(),
                                amounts(types, next),
                                Default::default(),
                            );
                            black_box(r).expect("accepted");
                        }
                        spent += start.elapsed();
                        client.flush(Duration::from_secs(60)).expect("delivered");
                    }
                    spent
                })
            },
        );
    }
    group.bench_function("add_batch_1000", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let events: Vec<Event> = (0..RUN)
                    .map(|_| {
                        next += 1;
                        Event {
                            unique_key: format!("bench-{next}"),
                            internal_instance_id: "1234".into(),
                            occurred_at: SystemTime::now(),
                            amounts: amounts(1, next),
                            metadata: Default::default(),
                        }
                    })
                    .collect();
                let start = Instant::now();
                client.add_batch(events).expect("accepted");
                spent += start.elapsed();
                client.flush(Duration::from_secs(60)).expect("delivered");
            }
            spent
        })
    });
    group.finish();
    client.close();
}

criterion_group!(benches, add);
criterion_main!(benches);
