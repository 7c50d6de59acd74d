//! Frame codec throughput. Run: `cargo bench -p forward --bench frame`
//!
//! * `encode/packed_forward_1000`: 1000 billing-shaped records written as MessagePack entries and
//!   wrapped in one PackedForward frame (what a client does per chunk);
//! * `check/packed_forward_1000`: finding that frame's end in a buffer (the server's scan);
//! * `parse/packed_forward_1000`: decoding it into a `Frame` of `rmpv` values.
//!
//! Throughput is in records (elements) per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forward::{EventTime, Options, encode};

const RECORDS: usize = 1000;

fn frame(entries: &mut Vec<u8>, out: &mut Vec<u8>) {
    entries.clear();
    out.clear();
    let mut record = Vec::with_capacity(256);
    for i in 0..RECORDS {
        record.clear();
        // The billing record's shape (billing-schema's writer, which depends on this crate).
        encode::write_map_len(&mut record, 6);
        for (k, v) in [
            ("amount_type", "container-seconds"),
            ("internal_instance_id", "1234"),
            ("occurred_at", "2026-11-27T04:33:58.123456789Z"),
        ] {
            encode::write_str(&mut record, k.as_bytes());
            encode::write_str(&mut record, v.as_bytes());
        }
        encode::write_str(&mut record, b"amount_value");
        encode::write_int(&mut record, i as i64 + 1);
        encode::write_str(&mut record, b"metadata");
        encode::write_map_len(&mut record, 1);
        encode::write_str(&mut record, b"report");
        encode::write_str(&mut record, b"r-1");
        encode::write_str(&mut record, b"unique_key");
        encode::write_str_parts(
            &mut record,
            &[b"bench-", i.to_string().as_bytes(), b":container-seconds"],
        );
        encode::write_entry(entries, EventTime::new(1_795_754_038, 0), &record);
    }
    let options = Options {
        chunk: Some(b"Y2h1bmstMDAwMDAwMDAwMDE=".to_vec()),
        ..Options::default()
    };
    encode::write_packed_forward(out, "billing", entries, &options);
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let (mut entries, mut wire) = (Vec::new(), Vec::new());
    group.bench_function("encode/packed_forward_1000", |b| {
        b.iter(|| {
            frame(&mut entries, &mut wire);
            black_box(wire.len())
        })
    });
    frame(&mut entries, &mut wire);
    let limit = forward::DEFAULT_MAX_FRAME_BYTES;
    group.bench_function("check/packed_forward_1000", |b| {
        b.iter(|| black_box(forward::check_frame(black_box(&wire), limit).unwrap()))
    });
    group.bench_function("parse/packed_forward_1000", |b| {
        b.iter(|| black_box(forward::parse_frame(black_box(&wire), limit).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
