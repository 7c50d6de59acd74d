//! Interoperability tests: third-party Forward protocol peers (Python
//! `fluent-logger`, Node `@fluent-org/logger`, the Go client's JSON bytes)
//! against our `billing` binary, over real processes and sockets on 127.0.0.1.
//!
//! The Python/Node peers live in tests/peers and are installed by
//! `scripts/test.sh`, which exports PEER_PYTHON and PEERS_DIR. Tests that need
//! a peer fail (never silently pass) when those are missing.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Formats unix seconds + nanoseconds as `YYYY-MM-DDTHH:MM:SS[.nnnnnnnnn]Z`,
/// the way the peers write `occurred_at`.
fn utc(epoch: i64, nanos: Option<u32>) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match nanos {
        Some(n) => format!("{base}.{n:09}Z"),
        None => format!("{base}Z"),
    }
}

/// Finds the single store/peer line whose record has `unique_key`.
fn one_with_key<'a>(lines: &'a [Value], key: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["record"]["unique_key"] == key)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one line with unique_key {key:?}, found {}:\n{}",
        found.len(),
        show(lines)
    );
    found[0]
}

// ---------------------------------------------------------------------------
// Python fluent-logger -> billing ingest
// ---------------------------------------------------------------------------

#[test]
fn python_fluent_logger_message_mode_records_all_land_in_jsonl_store() {
    let peers = Peers::get();
    let mut ingest = Ingest::start("py");
    const N: usize = 25;

    let out = run("py_send.py", peers.py_send(ingest.addr(), N, "py"));
    assert!(
        out.status.success(),
        "py_send.py (fluent-logger) reported failed emits: {}\n{}\ningest stderr:\n{}",
        out.status,
        out.stderr,
        ingest.server.stderr()
    );

    let lines = ingest.wait_lines("all python records", |l| with_prefix(l, "py-").len() >= N);
    assert_eq!(
        with_prefix(&lines, "py-").len(),
        N,
        "duplicate records in store:\n{}",
        show(&lines)
    );
    for i in 0..N {
        let key = format!("py-{i}:node-seconds");
        let line = one_with_key(&lines, &key);
        let epoch = BASE_EPOCH + i as i64;
        assert_eq!(line["tag"], "billing", "tag of {key}: {line}");
        // fluent-logger sends integer seconds as the event time
        assert_time(&line["time"], epoch, 0, &format!("event time of {key}"));
        assert_eq!(
            line["record"],
            json!({
                "unique_key": key,
                "internal_instance_id": "py-instance",
                "amount_type": "node-seconds",
                "amount_value": i + 1,
                "occurred_at": utc(epoch, None),
                "metadata": {"peer": "python", "seq": i.to_string()},
            }),
            "record of {key}"
        );
    }
    ingest.assert_running();
}

// ---------------------------------------------------------------------------
// Node FluentClient (acks on) -> billing ingest, one test per event mode
// ---------------------------------------------------------------------------

fn node_client_with_acks_lands_all_records(mode: &str) {
    let peers = Peers::get();
    let mut ingest = Ingest::start(mode);
    const N: usize = 10;
    const NANOS: u32 = 467_902_040;
    let prefix = format!("node-{mode}");

    let out = run(
        "node_client.mjs",
        peers.node_client(ingest.addr(), mode, N, &prefix),
    );
    assert!(
        out.status.success(),
        "FluentClient ({mode} mode, acks on) did not get every record acknowledged: {}\n{}\ningest stderr:\n{}",
        out.status,
        out.stderr,
        ingest.server.stderr()
    );

    // Every emit resolved on {"ack": chunk}; the ingest acks a chunk only after
    // its lines are written and flushed, so they must all be in the store now.
    let lines = ingest.lines_now();
    let ours = with_prefix(&lines, &format!("{prefix}-"));
    assert_eq!(
        ours.len(),
        N,
        "client got acks for {N} records in {mode} mode but the store holds {} of them (acked before written?):\n{}",
        ours.len(),
        show(&lines)
    );
    for i in 0..N {
        let key = format!("{prefix}-{i}:node-seconds");
        let line = one_with_key(&lines, &key);
        let epoch = BASE_EPOCH + i as i64;
        assert_eq!(line["tag"], "billing", "tag of {key}: {line}");
        // the Node client sends EventTime (ext type 0) with nanoseconds
        assert_time(&line["time"], epoch, NANOS, &format!("event time of {key}"));
        assert_eq!(
            line["record"],
            json!({
                "unique_key": key,
                "internal_instance_id": "node-instance",
                "amount_type": "node-seconds",
                "amount_value": i + 1,
                "occurred_at": utc(epoch, Some(NANOS)),
                "metadata": {"peer": "node", "mode": mode, "seq": i.to_string()},
            }),
            "record of {key}"
        );
    }
    ingest.assert_running();
}

#[test]
fn node_fluent_client_message_mode_with_acks_lands_all_records() {
    node_client_with_acks_lands_all_records("Message");
}

#[test]
fn node_fluent_client_forward_mode_with_acks_lands_all_records() {
    node_client_with_acks_lands_all_records("Forward");
}

#[test]
fn node_fluent_client_packed_forward_mode_with_acks_lands_all_records() {
    node_client_with_acks_lands_all_records("PackedForward");
}

#[test]
fn node_fluent_client_compressed_packed_forward_mode_with_acks_lands_all_records() {
    node_client_with_acks_lands_all_records("CompressedPackedForward");
}

// ---------------------------------------------------------------------------
// billing send -> Node FluentServer
// ---------------------------------------------------------------------------

const AT: &str = "2026-11-27T04:33:58.46790204Z";
const AT_NANOS: u32 = 467_902_040;

/// Runs `billing send` (key k-1, amounts node-seconds=2, gpu-seconds=5,
/// cpu-seconds=0) against a fresh Node FluentServer with the given framing,
/// asserts it exited 0 (= acknowledged) and returns every entry line the server
/// printed, parsed (the `billing send` ones and a trailing barrier record).
fn billing_send_to_node_server(framing: Option<&str>) -> Vec<Value> {
    let peers = Peers::get();
    let mut srv = peers.node_server();

    let mut c = Command::new(billing_bin());
    c.arg("send")
        .arg("--billing.ingester")
        .arg(srv.addr.to_string())
        .args(["--key", "k-1", "--instance", "inst-9", "--at", AT])
        .args([
            "--amount",
            "node-seconds=2",
            "--amount",
            "gpu-seconds=5",
            "--amount",
            "cpu-seconds=0",
        ])
        .args(["--meta", "report=r-1", "--meta", "region=eu"])
        .args(["--timeout", "10s"]);
    if let Some(f) = framing {
        c.args(["--billing.framing", f]);
    }
    let out = run("billing send", c);
    assert!(
        out.status.success(),
        "billing send ({framing:?}) to FluentServer failed (no ack?): {}\nstderr: {}\nnode server stdout so far: {:?}\nnode server stderr:\n{}",
        out.status,
        out.stderr,
        srv.wait_stdout("nothing", |_| true),
        srv.stderr()
    );

    let parse = |raw: &[String]| -> Vec<Value> {
        raw.iter()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("node server printed non-JSON ({e}): {l:?}"))
            })
            .collect()
    };
    srv.wait_stdout("both records of billing send", |raw| {
        let lines = parse(raw);
        ["k-1:node-seconds", "k-1:gpu-seconds"]
            .iter()
            .all(|k| lines.iter().any(|l| l["record"]["unique_key"] == *k))
    });
    // Barrier: one more (acked) record from the Node client on a new connection.
    // The server prints entries in the order it processes them, so once the
    // barrier line is read every line belonging to `billing send` has been too.
    let barrier = run(
        "node_client.mjs",
        peers.node_client(srv.addr, "Message", 1, "barrier"),
    );
    assert!(
        barrier.status.success(),
        "barrier client failed: {}",
        barrier.stderr
    );
    let raw = srv.wait_stdout("the barrier record", |raw| {
        parse(raw)
            .iter()
            .any(|l| l["record"]["unique_key"] == "barrier-0:node-seconds")
    });
    parse(&raw)
}

/// The records `billing send` delivered to the Node server carry exactly the
/// contract's fields, one per non-zero amount.
fn assert_billing_send_records(lines: &[Value]) {
    for (ty, value) in [("node-seconds", 2), ("gpu-seconds", 5)] {
        let key = format!("k-1:{ty}");
        let line = one_with_key(lines, &key);
        assert_eq!(line["tag"], "billing", "tag of {key}: {line}");
        let rec = &line["record"];
        assert_eq!(rec["internal_instance_id"], "inst-9", "{key}: {rec}");
        assert_eq!(rec["amount_type"], ty, "{key}: {rec}");
        assert_eq!(rec["amount_value"], value, "{key}: {rec}");
        assert_eq!(
            rec["metadata"],
            json!({"report": "r-1", "region": "eu"}),
            "{key}: {rec}"
        );
        assert_time(
            &rec["occurred_at"],
            BASE_EPOCH,
            AT_NANOS,
            &format!("occurred_at of {key}"),
        );
        let fields: Vec<&String> = rec.as_object().expect("record is a map").keys().collect();
        assert_eq!(
            fields.len(),
            6,
            "{key}: record must have exactly unique_key, internal_instance_id, amount_type, amount_value, occurred_at, metadata; has {fields:?}"
        );
        assert!(
            line["time_kind"] == "eventtime" || line["time_kind"] == "integer",
            "{key}: entry time must be an EventTime or an integer: {line}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l["record"]["amount_type"] == "cpu-seconds"),
        "zero amount cpu-seconds=0 was sent:\n{}",
        show(lines)
    );
    assert_eq!(
        lines.len(),
        3,
        "expected the 2 records of billing send + the barrier record:\n{}",
        show(lines)
    );
}

#[test]
fn billing_send_default_framing_is_acked_by_node_fluent_server_which_receives_each_nonzero_amount_intact()
 {
    assert_billing_send_records(&billing_send_to_node_server(None));
}

#[test]
fn billing_send_compressed_packed_forward_framing_is_acked_by_node_fluent_server_with_records_intact()
 {
    assert_billing_send_records(&billing_send_to_node_server(Some(
        "compressed-packed-forward",
    )));
}

#[test]
fn billing_send_forward_framing_is_acked_by_node_fluent_server_with_records_intact() {
    assert_billing_send_records(&billing_send_to_node_server(Some("forward")));
}

#[test]
fn billing_send_message_framing_is_acked_by_node_fluent_server_with_records_intact() {
    assert_billing_send_records(&billing_send_to_node_server(Some("message")));
}

// ---------------------------------------------------------------------------
// billing send ack handling (against an in-test TCP peer that never answers)
// ---------------------------------------------------------------------------

/// Accepts one connection on 127.0.0.1, reads everything until EOF and never
/// writes a byte back. Returns its address and a receiver for the bytes read.
fn silent_peer() -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let _ = tx.send(buf);
        }
    });
    (addr, rx)
}

fn send_cmd(addr: std::net::SocketAddr) -> Command {
    let mut c = Command::new(billing_bin());
    c.arg("send")
        .arg("--billing.ingester")
        .arg(addr.to_string())
        .args(["--key", "noack-1", "--instance", "inst-1", "--at", AT])
        .args(["--amount", "node-seconds=3"]);
    c
}

/// fixarray(2|3), fixstr(7) "billing", then a bin (or str) header: a MessagePack
/// PackedForward message `[tag, entries-stream, option?]` tagged `billing`.
fn starts_as_msgpack_packed_forward_billing(bytes: &[u8]) -> bool {
    bytes.len() > 10
        && (bytes[0] == 0x92 || bytes[0] == 0x93)
        && &bytes[1..9] == b"\xa7billing"
        && matches!(bytes[9], 0xc4..=0xc6 | 0xd9..=0xdb)
}

#[test]
fn billing_send_exits_nonzero_with_one_stderr_line_when_no_ack_arrives() {
    let (addr, received) = silent_peer();
    let mut c = send_cmd(addr);
    c.args(["--timeout", "1s"]);
    let out = run("billing send", c);
    assert!(
        !out.status.success(),
        "billing send exited 0 although the server never acknowledged; stderr: {}",
        out.stderr
    );
    let err_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        err_lines.len(),
        1,
        "expected exactly one stderr line, got:\n{}",
        out.stderr
    );

    let bytes = received
        .recv_timeout(Duration::from_secs(10))
        .expect("billing send never connected/closed");
    assert!(
        starts_as_msgpack_packed_forward_billing(&bytes),
        "default framing should be MessagePack PackedForward tagged billing; got bytes {:02x?}",
        &bytes[..bytes.len().min(64)]
    );
    assert!(
        bytes.windows(5).any(|w| w == b"chunk"),
        "an ack-waiting send must carry the `chunk` option; got bytes {:02x?}",
        &bytes[..bytes.len().min(256)]
    );
}

#[test]
fn billing_send_with_require_ack_false_exits_zero_without_ack() {
    let (addr, received) = silent_peer();
    let mut c = send_cmd(addr);
    c.args(["--timeout", "5s", "--billing.require-ack=false"]);
    let out = run("billing send", c);
    assert!(
        out.status.success(),
        "billing send --billing.require-ack=false must not wait for an ack: {}\nstderr: {}",
        out.status,
        out.stderr
    );
    let bytes = received
        .recv_timeout(Duration::from_secs(10))
        .expect("billing send never connected/closed");
    assert!(
        starts_as_msgpack_packed_forward_billing(&bytes),
        "expected a MessagePack PackedForward message tagged billing; got bytes {:02x?}",
        &bytes[..bytes.len().min(64)]
    );
}

// ---------------------------------------------------------------------------
// billing send -> billing ingest (our two halves together)
// ---------------------------------------------------------------------------

fn billing_send_round_trip(framing: Option<&str>) {
    let mut ingest = Ingest::start("roundtrip");
    let key = format!("rt-{}", framing.unwrap_or("default"));
    let mut c = Command::new(billing_bin());
    c.arg("send")
        .arg("--billing.ingester")
        .arg(ingest.addr().to_string())
        .args(["--key", &key, "--instance", "inst-rt", "--at", AT])
        .args([
            "--amount",
            "node-seconds=7",
            "--meta",
            "report=r-9",
            "--timeout",
            "10s",
        ]);
    if let Some(f) = framing {
        c.args(["--billing.framing", f]);
    }
    let out = run("billing send", c);
    assert!(
        out.status.success(),
        "billing send ({framing:?}) -> billing ingest failed: {}\nsend stderr: {}\ningest stderr:\n{}",
        out.status,
        out.stderr,
        ingest.server.stderr()
    );
    let full_key = format!("{key}:node-seconds");
    let lines = ingest.wait_lines("the sent record", |l| {
        l.iter().any(|x| x["record"]["unique_key"] == full_key)
    });
    let line = one_with_key(&lines, &full_key);
    assert_eq!(line["tag"], "billing");
    let rec = &line["record"];
    assert_eq!(rec["internal_instance_id"], "inst-rt", "{rec}");
    assert_eq!(rec["amount_type"], "node-seconds", "{rec}");
    assert_eq!(rec["amount_value"], 7, "{rec}");
    assert_eq!(rec["metadata"], json!({"report": "r-9"}), "{rec}");
    assert_time(&rec["occurred_at"], BASE_EPOCH, AT_NANOS, "occurred_at");
}

#[test]
fn billing_send_default_framing_round_trips_through_billing_ingest() {
    billing_send_round_trip(None);
}

#[test]
fn billing_send_json_message_framing_round_trips_through_billing_ingest() {
    billing_send_round_trip(Some("json-message"));
}

#[test]
fn billing_send_compressed_packed_forward_framing_round_trips_through_billing_ingest() {
    billing_send_round_trip(Some("compressed-packed-forward"));
}

#[test]
fn billing_send_forward_framing_round_trips_through_billing_ingest() {
    billing_send_round_trip(Some("forward"));
}

#[test]
fn billing_send_message_framing_round_trips_through_billing_ingest() {
    billing_send_round_trip(Some("message"));
}

// ---------------------------------------------------------------------------
// Go client JSON bytes on a raw TcpStream -> billing ingest
// ---------------------------------------------------------------------------

/// What fluent-logger-golang writes with MarshalAsJSON (Message mode, empty
/// option map, no chunk so no ack, no separator between messages).
const GO_FIXTURE: &str = r#"["billing",1795754038,{"amount_type":"node-seconds","amount_value":2,"internal_instance_id":"1234","metadata":{"report":"r-1"},"occurred_at":"2026-11-27T04:33:58.46790204Z","unique_key":"seed-1:node-seconds"},{}]"#;

fn go_fixture(seed: &str) -> String {
    GO_FIXTURE.replace("seed-1", seed)
}

#[test]
fn go_client_json_messages_back_to_back_and_split_across_writes_are_all_stored() {
    let mut ingest = Ingest::start("go-json");
    let mut s = TcpStream::connect(ingest.addr()).unwrap();
    s.set_nodelay(true).unwrap();

    // three messages back-to-back in a single write
    let batch = format!(
        "{}{}{}",
        go_fixture("seed-1"),
        go_fixture("seed-2"),
        go_fixture("seed-3")
    );
    s.write_all(batch.as_bytes()).unwrap();
    // a fourth message split inside a string value across two writes; the first
    // half goes out now, the second only after the first three are persisted,
    // so the server really sees a partial message at the end of its buffer.
    let split = go_fixture("seed-4");
    let cut = split.find("04:33").expect("fixture contains the time") + 2;
    s.write_all(&split.as_bytes()[..cut]).unwrap();
    s.flush().unwrap();

    ingest.wait_lines("seed-1..3 (connection still open)", |l| {
        ["seed-1", "seed-2", "seed-3"].iter().all(|k| {
            l.iter()
                .any(|x| x["record"]["unique_key"] == format!("{k}:node-seconds"))
        })
    });
    s.write_all(&split.as_bytes()[cut..]).unwrap();
    s.flush().unwrap();
    s.shutdown(Shutdown::Write).unwrap();

    let lines = ingest.wait_lines("seed-4 (split message)", |l| {
        l.iter()
            .any(|x| x["record"]["unique_key"] == "seed-4:node-seconds")
    });
    assert_eq!(
        lines.len(),
        4,
        "store should hold exactly the 4 sent records:\n{}",
        show(&lines)
    );

    let fixture: Value = serde_json::from_str(GO_FIXTURE).unwrap();
    for seed in ["seed-1", "seed-2", "seed-3", "seed-4"] {
        let key = format!("{seed}:node-seconds");
        let line = one_with_key(&lines, &key);
        assert_eq!(line["tag"], "billing", "{key}: {line}");
        assert_time(
            &line["time"],
            BASE_EPOCH,
            0,
            &format!("event time of {key}"),
        );
        let mut expected = fixture[2].clone();
        expected["unique_key"] = json!(key);
        assert_eq!(line["record"], expected, "record of {key}");
    }
    ingest.assert_running();
}

// ---------------------------------------------------------------------------
// Garbage connections do not stop the server
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), starting with 0xc1, which
/// MessagePack never uses.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = vec![0xc1];
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn garbage_connections_do_not_stop_ingest_from_serving_a_following_good_client() {
    let peers = Peers::get();
    let mut ingest = Ingest::start("garbage");
    let addr = ingest.addr();

    // 1. random bytes / invalid msgpack, then close
    let mut a = TcpStream::connect(addr).unwrap();
    a.write_all(&garbage(4096, 0x9e37_79b9_7f4a_7c15)).unwrap();
    drop(a);
    // 2. random bytes, connection kept open
    let mut b = TcpStream::connect(addr).unwrap();
    b.write_all(&garbage(2048, 42)).unwrap();
    // 3. a truncated MessagePack forward message, kept open (server waits for more)
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"\x93\xa7billing\x92\x92\xce\x6b\x08\x2a\xb6\x81\xa3key")
        .unwrap();
    // 4. malformed JSON, then close
    let mut d = TcpStream::connect(addr).unwrap();
    d.write_all(br#"["billing",1795754038,{"unique_key":}]"#)
        .unwrap();
    drop(d);
    // 5. a msgpack value of the wrong shape (a map instead of an array), then close
    let mut e = TcpStream::connect(addr).unwrap();
    e.write_all(b"\x81\xa3tag\xa7billing").unwrap();
    drop(e);

    // a good client is still served: every record acknowledged and stored
    let out = run(
        "node_client.mjs",
        peers.node_client(addr, "PackedForward", 5, "after-garbage"),
    );
    assert!(
        out.status.success(),
        "good client after garbage connections was not served: {}\n{}\ningest stderr:\n{}",
        out.status,
        out.stderr,
        ingest.server.stderr()
    );
    let lines = ingest.lines_now();
    assert_eq!(
        with_prefix(&lines, "after-garbage-").len(),
        5,
        "records of the good client after garbage:\n{}",
        show(&lines)
    );
    assert!(
        lines.iter().all(|l| l["record"]["unique_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("after-garbage-"))),
        "garbage produced store lines:\n{}",
        show(&lines)
    );
    ingest.assert_running();
    drop((b, c));
}
