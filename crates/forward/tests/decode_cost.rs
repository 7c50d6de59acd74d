//! The decoded form of a frame costs at most what `decoded_cost` says, measured with a
//! counting allocator: a frame of tiny values cannot expand past the bound the server charges
//! to its memory budget before decoding.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use forward::{DecodeLimits, FrameError, decoded_cost, parse_frame_with};
use rmpv::Value;

/// Counts the bytes allocated by the current thread, and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // Old and new blocks both live during a move.
        add(new as isize);
        let p = unsafe { System.realloc(ptr, layout, new) };
        add(-(layout.size() as isize));
        p
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak bytes requested while parsing `bytes` (allocator headers not included: the cost
/// model adds them, so the bound checked here is looser than the real one by those).
fn peak_of_parse(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> (usize, Result<forward::Frame, FrameError>) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let res = parse_frame_with(bytes, limits);
    let peak = PEAK.with(Cell::get) - base;
    (peak as usize, res)
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_frame_bytes: 8 << 20,
        max_records: 1_000_000,
    }
}

fn check_bound(name: &str, bytes: &[u8]) {
    check_bound_of(name, bytes, bytes.len());
}

/// `size`: the bytes the bound is a multiple of (the inflated entries for compressed frames).
fn check_bound_of(name: &str, bytes: &[u8], size: usize) {
    let cost = decoded_cost(bytes, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (peak, res) = peak_of_parse(bytes, &limits());
    let frame = res.unwrap_or_else(|e| panic!("{name}: {e}"));
    drop(frame);
    assert!(peak <= cost, "{name}: peak {peak} > cost {cost}");
    eprintln!(
        "{name}: {size} bytes, peak {peak} ({:.1}x), cost {cost} ({:.1}x)",
        peak as f64 / size as f64,
        cost as f64 / size as f64
    );
    // The bound is a bounded multiple of the bytes (MessagePack: 75x at worst, for Forward
    // entries `[0, nil]`; JSON: a flat 160x), never the open-ended expansion of before.
    let factor = if bytes.first() == Some(&b'[') {
        160
    } else {
        80
    };
    assert!(
        cost <= factor * size + 8192,
        "{name}: cost {cost} for {size} bytes"
    );
}

fn forward_frame(entries: Vec<Value>) -> Vec<u8> {
    mp(&Value::Array(vec![Value::from("t"), Value::Array(entries)]))
}

#[test]
fn tiny_values_cost_what_the_plan_says() {
    let n = 20_000;
    check_bound(
        "forward of [0, nil]",
        &forward_frame(vec![Value::Array(vec![Value::from(0), Value::Nil]); n]),
    );
    check_bound(
        "a record of nils",
        &forward_frame(vec![Value::Array(vec![
            Value::from(0),
            Value::Array(vec![Value::Nil; n]),
        ])]),
    );
    check_bound(
        "a record of empty arrays",
        &forward_frame(vec![Value::Array(vec![
            Value::from(0),
            Value::Array(vec![Value::Array(vec![]); n]),
        ])]),
    );
    check_bound(
        "records of one-element arrays",
        &forward_frame(vec![Value::Array(vec![
            Value::from(0),
            Value::Array(vec![Value::Array(vec![Value::Nil]); n]),
        ])]),
    );
    check_bound(
        "small maps",
        &forward_frame(vec![
            Value::Array(vec![
                et(1, 2),
                map(&[("a", Value::from(1)), ("b", Value::from("x"))]),
            ]);
            n
        ]),
    );
    let packed: Vec<u8> = (0..n as i64)
        .flat_map(|i| mp(&Value::Array(vec![Value::from(i), record(i)])))
        .collect();
    check_bound(
        "packed records",
        &mp(&Value::Array(vec![
            Value::from("t"),
            Value::Binary(packed.clone()),
        ])),
    );
    check_bound_of(
        "compressed packed [0, nil]",
        &mp(&Value::Array(vec![
            Value::from("t"),
            Value::Binary(gzip(&b"\x92\x00\xc0".repeat(n))),
            map(&[("compressed", Value::from("gzip"))]),
        ])),
        3 * n,
    );
    check_bound(
        "message with a deep record",
        &mp(&Value::Array(vec![
            Value::from("t"),
            Value::from(1),
            (0..60).fold(Value::Nil, |v, _| Value::Array(vec![v, Value::from("s")])),
        ])),
    );
}

#[test]
fn json_frames_cost_what_the_plan_says() {
    let n = 5_000;
    let cases = [
        ("array of zeros", format!("[\"t\",1,[{}0]]", "0,".repeat(n))),
        (
            "array of empty arrays",
            format!("[\"t\",1,[{}[]]]", "[],".repeat(n)),
        ),
        (
            "one-key objects",
            format!("[\"t\",1,[{}{{}}]]", "{\"\":0},".repeat(n)),
        ),
        (
            "forward of pairs",
            format!("[\"t\",[{}[1,{{}}]]]", "[1,{\"a\":1}],".repeat(n)),
        ),
    ];
    for (name, text) in cases {
        check_bound(name, text.as_bytes());
    }
}

#[test]
fn a_frame_of_empty_entries_is_refused_before_decoding() {
    // `[[]]` entries (the 880 MiB frame): not pairs, refused by the plan, nothing decoded.
    let bytes = forward_frame(vec![Value::Array(vec![Value::Array(vec![])]); 50_000]);
    let (peak, res) = peak_of_parse(&bytes, &limits());
    assert!(matches!(res, Err(FrameError::Invalid(_))), "{res:?}");
    assert!(peak < 4096, "peak {peak}");
}

#[test]
fn too_many_records_are_refused_before_decoding() {
    let limits = DecodeLimits {
        max_frame_bytes: 8 << 20,
        max_records: 1000,
    };
    let forward = forward_frame(vec![Value::Array(vec![Value::from(0), Value::Nil]); 1001]);
    let (peak, res) = peak_of_parse(&forward, &limits);
    assert_eq!(res.unwrap_err(), FrameError::TooManyRecords { limit: 1000 });
    assert!(peak < 4096, "peak {peak}");
    let bomb = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Binary(gzip(&b"\x92\x00\xc0".repeat(1_000_000))),
        map(&[("compressed", Value::from("gzip"))]),
    ]));
    assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    let res = parse_frame_with(&bomb, &limits);
    assert_eq!(res.unwrap_err(), FrameError::TooManyRecords { limit: 1000 });
    let packed = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Binary(b"\x92\x00\xc0".repeat(1001)),
    ]));
    let res = parse_frame_with(&packed, &limits);
    assert_eq!(res.unwrap_err(), FrameError::TooManyRecords { limit: 1000 });
    // exactly at the limit is fine
    let ok = forward_frame(vec![Value::Array(vec![Value::from(0), Value::Nil]); 1000]);
    assert_eq!(parse_frame_with(&ok, &limits).unwrap().entries.len(), 1000);
}
