//! Security checks of a real `billing ingest`, what the other suites do not already prove:
//!
//! - Shared key: our own client (`billing send`) without a key and with a wrong key, and a raw
//!   frame written without any handshake, store nothing, while the authenticated client is
//!   stored. (Node's `FluentClient` with a wrong or no key: `handshake.rs`,
//!   `node_fluent_client_with_a_wrong_or_no_key_stores_nothing_in_billing_ingest`; silent and
//!   wrong-key clients cut off while an authenticated one is served: `handshake.rs`,
//!   `a_silent_and_a_wrong_key_client_are_cut_off_while_an_authenticated_one_is_served`.)
//! - TLS: a client that trusts the wrong CA is refused and stores nothing (`transport.rs`,
//!   `send_and_ingest_over_tls_and_mutual_tls`; mutual TLS without a client certificate there
//!   too). Added here: a plaintext client, raw frame or `billing send`, against a TLS listener
//!   stores nothing.
//! - A flood of connections: hundreds of idle connections and slow senders holding partial
//!   frames (more than the memory budget), up to and past the connection limit. A good client
//!   is served while the flood holds most slots, the excess connections are closed, a good
//!   client waiting while every slot is taken is served as soon as one frees, and the
//!   ingester's RSS stays under a generous bound (`--memory-limit` + 128 MiB, the documented
//!   ceiling). (Idle, trickling and excess connections at small scale, and partial frames over
//!   the memory budget: `server_limits.rs`.)

mod common;
// One copy for every crate's TLS tests (certificates made with rcgen).
#[path = "../../../tests/support/pki.rs"]
mod pki;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const KEY: &str = "security-shared-key";
const AT: &str = "2026-11-27T04:33:58Z";

fn sqlite_ingest(dir: &Path, extra: &[&str]) -> (Server, String) {
    let db = dir.join("billing.db");
    let server = ingest_sqlite(&db, "127.0.0.1:0", extra);
    (server, format!("sqlite:{}", db.display()))
}

fn send(ingester: &str, unique: &str, extra: &[&str]) -> Finished {
    let mut c = Command::new(billing_bin());
    c.arg("send")
        .args(["--billing.ingester", ingester])
        .args(["--key", unique, "--instance", "inst-sec", "--at", AT])
        .args(["--amount", "node-seconds=5"])
        .args(extra);
    run("billing send", c)
}

/// A Message frame with a chunk id, written as is (no handshake, no TLS).
fn raw_frame(key: &str, chunk: &str) -> Vec<u8> {
    let mut record = vec![0x84];
    for (k, v) in [
        ("unique_key", format!("{key}:node-seconds")),
        ("internal_instance_id", "inst-sec".to_string()),
        ("amount_type", "node-seconds".to_string()),
        ("occurred_at", AT.to_string()),
    ] {
        forward::encode::write_str(&mut record, k.as_bytes());
        forward::encode::write_str(&mut record, v.as_bytes());
    }
    let options = forward::Options {
        chunk: Some(chunk.as_bytes().to_vec()),
        ..Default::default()
    };
    let mut frame = Vec::new();
    forward::encode::write_message(
        &mut frame,
        "billing",
        forward::EventTime::now(),
        &record,
        &options,
    );
    frame
}

/// Writes `frame` on a plain TCP connection and reads until the server closes it (bounded);
/// returns whether an ack for `chunk` came back.
fn raw_send_is_acked(addr: SocketAddr, frame: &[u8], chunk: &str) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    // The server may close before all of it is read: that is a refusal too.
    let _ = s.write_all(frame);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server neither acked nor closed within {RUN_TIMEOUT:?}: {e}"),
    }
    got.windows(chunk.len()).any(|w| w == chunk.as_bytes())
}

#[test]
fn with_a_shared_key_only_the_authenticated_client_is_stored() {
    let dir = temp_dir("sec-key");
    let (mut ingest, store) = sqlite_ingest(
        dir.path(),
        &["--shared-key", KEY, "--handshake-timeout", "2s"],
    );
    let at = ingest.addr.to_string();
    // Both sides default to this machine's host name, which the handshake refuses as a loop
    // (as fluentd does): the right key, refused, and the message says why.
    let same_host = send(
        &at,
        "same-host",
        &["--billing.shared-key", KEY, "--timeout", "2s"],
    );
    assert_eq!(same_host.status.code(), Some(1), "{}", same_host.stderr);
    assert!(
        same_host.stderr.contains("refused our hostname"),
        "the refusal names the hostname, not the key: {}",
        same_host.stderr
    );

    // No handshake at all: a frame straight away is never read as a frame.
    assert!(!raw_send_is_acked(
        ingest.addr,
        &raw_frame("raw", "raw-chunk"),
        "raw-chunk"
    ));
    // Our client without a key, and with the wrong one: not acknowledged.
    let none = send(&at, "no-key", &["--timeout", "2s"]);
    assert_eq!(none.status.code(), Some(1), "{}", none.stderr);
    let wrong = send(
        &at,
        "wrong-key",
        &[
            "--billing.shared-key",
            "not-the-key",
            "--billing.hostname",
            "security-client",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("shared key"),
        "the refusal names the key: {}",
        wrong.stderr
    );
    let s = summary(&store);
    assert_eq!(
        s["received"], 0,
        "nothing unauthenticated reached the store: {s}"
    );
    assert_eq!(s["records"], 0, "{s}");

    // The authenticated client is stored, alone.
    let good = send(
        &at,
        "good",
        &[
            "--billing.shared-key",
            KEY,
            "--billing.hostname",
            "security-client",
            "--timeout",
            "20s",
        ],
    );
    assert!(good.status.success(), "{}", good.stderr);
    let s = summary(&store);
    assert_eq!(
        (s["received"].as_u64(), s["records"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let usage = report(&store, &["--format", "csv"]);
    assert!(usage.contains("inst-sec,node-seconds,"), "{usage}");
    assert!(usage.ends_with("(all),node-seconds,total,5,1\n"), "{usage}");
    ingest.assert_running();
    let log = ingest.stderr();
    assert!(
        !log.contains(KEY) && !log.contains("not-the-key"),
        "a key in the log:\n{log}"
    );
}

#[test]
fn a_plaintext_client_against_a_tls_listener_stores_nothing() {
    let dir = temp_dir("sec-tls");
    let ca = pki::Ca::new("billing CA");
    let leaf = ca.leaf(&["localhost"]);
    let ca_file = pki::write(dir.path(), "ca.pem", &ca.pem);
    let cert = pki::write(dir.path(), "server.pem", &leaf.cert);
    let key = pki::write(dir.path(), "server.key", &leaf.key);
    let (mut ingest, store) = sqlite_ingest(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--handshake-timeout",
            "2s",
        ],
    );
    // A forward frame in the clear is not a TLS ClientHello: closed, no ack.
    assert!(!raw_send_is_acked(
        ingest.addr,
        &raw_frame("clear", "clear-chunk"),
        "clear-chunk"
    ));
    // Our client, told plain TCP (no CA): not acknowledged.
    let plain = send(&ingest.addr.to_string(), "plain", &["--timeout", "2s"]);
    assert_eq!(plain.status.code(), Some(1), "{}", plain.stderr);
    assert_eq!(summary(&store)["received"], 0);
    // With the CA it is stored.
    let tls = format!("tls://localhost:{}", ingest.addr.port());
    let good = send(
        &tls,
        "tls-ok",
        &[
            "--billing.tls-ca",
            ca_file.to_str().unwrap(),
            "--timeout",
            "20s",
        ],
    );
    assert!(good.status.success(), "{}", good.stderr);
    let s = summary(&store);
    assert_eq!(
        (s["received"].as_u64(), s["records"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    ingest.assert_running();
}

/// The ingester's `/metrics` value of `name` (0 when absent).
fn metric(http: SocketAddr, name: &str) -> f64 {
    sample(&http_get(http, "/metrics").body, name).unwrap_or(0.0)
}

/// A connection holding a partial frame: its header announces `announce` bytes of entries, and
/// as much of them as the server takes without blocking is written (up to `write` bytes).
fn slow_sender(addr: SocketAddr, announce: usize, write: usize) -> TcpStream {
    let mut partial = vec![0x92];
    forward::encode::write_str(&mut partial, b"flood");
    partial.push(0xc6); // bin32: PackedForward entries
    partial.extend_from_slice(&u32::try_from(announce).unwrap().to_be_bytes());
    partial.resize(write, 0);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut sent = 0;
    while sent < partial.len() {
        match s.write(&partial[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("slow sender: {e}"),
        }
    }
    s
}

#[test]
fn a_flood_of_idle_and_slow_connections_past_the_limit_does_not_stop_a_good_client() {
    const LIMIT: usize = 400;
    const MEMORY_LIMIT_MIB: u64 = 32;
    let dir = temp_dir("sec-flood");
    let (mut ingest, store) = sqlite_ingest(
        dir.path(),
        &[
            "--max-connections",
            &LIMIT.to_string(),
            "--memory-limit",
            &format!("{MEMORY_LIMIT_MIB}MiB"),
            "--max-frame-bytes",
            "2MiB",
            // Long: the flood holds its slots for the whole test; the test frees them.
            "--idle-timeout",
            "5m",
            "--frame-timeout",
            "5m",
            "--http-listen",
            "127.0.0.1:0",
        ],
    );
    let http: SocketAddr = ingest.wait_line("metrics on ").parse().unwrap();
    let addr = ingest.addr;
    let pid = ingest.pid();
    let open = || metric(http, "billing_ingest_connections_open") as usize;
    let refused = || {
        metric(
            http,
            "billing_ingest_limit_hits_total{reason=\"max_connections\"}",
        ) as usize
    };
    let good = |key: &str| {
        let out = send(&addr.to_string(), key, &["--timeout", "30s"]);
        assert!(out.status.success(), "{key}: {}", out.stderr);
    };
    good("before-flood");
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);

    // 150 idle connections and 150 slow senders, each holding a partial frame that announces
    // 1 MiB (up to 75 MiB written against a 32 MiB budget).
    let mut flood: Vec<TcpStream> = Vec::new();
    for _ in 0..150 {
        flood.push(TcpStream::connect(addr).unwrap());
    }
    for _ in 0..150 {
        flood.push(slow_sender(addr, 1 << 20, 512 * 1024));
    }
    wait_until("300 flood connections open", POLL_DEADLINE, || {
        open() == 300
    });
    // Served while the flood holds most of the slots.
    good("during-flood");
    wait_until("the good client's connection closed", POLL_DEADLINE, || {
        open() == 300
    });

    // Past the limit: 150 more, of which 100 fit.
    for _ in 0..150 {
        flood.push(TcpStream::connect(addr).unwrap());
    }
    wait_until(
        "every slot taken, the excess refused",
        POLL_DEADLINE,
        || open() == LIMIT && refused() == 50,
    );
    let rss_peak = rss_kib(pid);
    let fds_peak = open_fds(pid);

    // A good client arriving while every slot is taken: refused (counted), retrying...
    let mut late = Command::new(billing_bin());
    late.arg("send")
        .args(["--billing.ingester", &addr.to_string()])
        .args([
            "--billing.retry-delay",
            "20ms",
            "--billing.retry-delay-max",
            "100ms",
        ])
        .args(["--key", "when-full", "--instance", "inst-sec", "--at", AT])
        .args(["--amount", "node-seconds=5", "--timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut late = late.spawn().unwrap();
    wait_until("the late client refused while full", POLL_DEADLINE, || {
        refused() > 50
    });
    // ... and served as soon as slots free: 20 of the first idle connections go (the flood
    // still holds the rest).
    drop(flood.drain(..20));
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = late.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the late client never finished"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut err = String::new();
    let _ = late.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "the late client was not served: {err}");
    assert!(open() >= LIMIT - 20, "the flood still holds its slots");
    drop(flood);
    wait_until("the flood's connections closed", POLL_DEADLINE, || {
        open() == 0
    });
    good("after-flood");
    let rss_after = rss_kib(pid);
    let fds_after = open_fds(pid);
    println!(
        "ingester RSS KiB before/peak/after: {rss_before}/{rss_peak}/{rss_after}; fds {fds_before}/{fds_peak}/{fds_after}"
    );

    let bound = (MEMORY_LIMIT_MIB + 128) * 1024;
    assert!(rss_peak < bound, "peak RSS {rss_peak} KiB over {bound} KiB");
    assert!(
        rss_after < bound,
        "RSS after {rss_after} KiB over {bound} KiB"
    );
    assert!(
        fds_peak >= fds_before + LIMIT,
        "the flood was held: {fds_peak} fds"
    );
    assert!(
        fds_after <= fds_before + 8,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
    let s = summary(&store);
    assert_eq!(
        (s["received"].as_u64(), s["records"].as_u64()),
        (Some(4), Some(4)),
        "only the good clients' records: {s}"
    );
    ingest.assert_running();
}
