//! The shared-key handshake end to end, against peers written elsewhere: the Node
//! `@fluent-org/logger` `FluentServer` and `FluentClient` with `security` options (set by
//! `PEER_SHARED_KEY` in `tests/peers/node_*.mjs`), real `billing send` and `billing ingest`
//! processes, a SQLite store read back with `billing report --summary`.
//!
//! Needs the peers installed by `scripts/test.sh` (PEER_PYTHON, PEERS_DIR). On the code
//! before the handshake was wired, these fail: `billing send` and `billing ingest` had no
//! `--billing.shared-key` / `--shared-key` flags (clap refuses them), and an ingester without
//! authentication stores what an unauthenticated client sends.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use common::*;

const KEY: &str = "interop-shared-key";
const AT: &str = "2026-11-27T04:33:58.46790204Z";

/// A child process killed (and reaped) when dropped, a failed assertion included.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_server_with_key(peers: &Peers, key: &str) -> Server {
    let mut c = Command::new(Peers::node());
    c.current_dir(&peers.dir)
        .arg(peers.dir.join("node_server.mjs"))
        .env("PEER_SHARED_KEY", key)
        .env("PEER_HOSTNAME", "node-server");
    Server::spawn("node_server.mjs (shared key)", c)
}

fn send_with_key(addr: SocketAddr, key: &str, unique: &str, timeout: &str) -> Finished {
    let mut c = Command::new(billing_bin());
    c.arg("send")
        .arg("--billing.ingester")
        .arg(addr.to_string())
        .args(["--billing.shared-key", key])
        .args(["--billing.hostname", "billing-send"])
        .args(["--key", unique, "--instance", "inst-hs", "--at", AT])
        .args(["--amount", "node-seconds=5", "--timeout", timeout]);
    run("billing send", c)
}

fn node_client_with_key(
    peers: &Peers,
    addr: SocketAddr,
    n: usize,
    prefix: &str,
    key: Option<&str>,
) -> Finished {
    let mut c = peers.node_client(addr, "PackedForward", n, prefix);
    if let Some(key) = key {
        c.env("PEER_SHARED_KEY", key)
            .env("PEER_HOSTNAME", "node-client");
    }
    run("node_client.mjs", c)
}

fn sqlite_ingest(label: &str, extra: &[&str]) -> (Server, String, tempfile::TempDir) {
    let dir = temp_dir(label);
    let db = dir.path().join("billing.db");
    let server = ingest_sqlite(&db, "127.0.0.1:0", extra);
    (server, format!("sqlite:{}", db.display()), dir)
}

// --- (a) billing send -> Node FluentServer with a shared key -------------------------------

#[test]
fn billing_send_with_the_right_key_is_acked_by_a_node_fluent_server_with_a_shared_key() {
    let peers = Peers::get();
    let mut srv = node_server_with_key(&peers, KEY);
    let out = send_with_key(srv.addr, KEY, "hs-ok", "20s");
    assert!(
        out.status.success(),
        "billing send with the right key failed ({}): {}\nnode stderr: {}",
        out.status,
        out.stderr,
        srv.stderr()
    );
    let lines = srv.wait_stdout("the record at the Node server", |seen| {
        seen.iter().any(|l| l.contains("hs-ok:node-seconds"))
    });
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("hs-ok:node-seconds"))
            .count(),
        1
    );
}

#[test]
fn billing_send_with_a_wrong_key_fails_clearly_against_a_node_fluent_server() {
    let peers = Peers::get();
    let mut srv = node_server_with_key(&peers, KEY);
    let out = send_with_key(srv.addr, "not-the-key", "hs-wrong", "3s");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("handshake failed: the ingester refused our shared key"),
        "no clear handshake error: {}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(
        !out.stderr.contains("not-the-key"),
        "the key leaked: {}",
        out.stderr
    );
    let lines = srv.kill_and_read_stdout();
    assert!(
        lines.iter().all(|l| !l.contains("hs-wrong")),
        "a record got through: {lines:?}"
    );
}

// --- (b) Node FluentClient with a shared key -> billing ingest --shared-key ----------------

#[test]
fn node_fluent_client_with_the_right_key_is_stored_by_billing_ingest_with_a_shared_key() {
    let peers = Peers::get();
    let (mut ingest, store, _dir) = sqlite_ingest("hs-node-ok", &["--shared-key", KEY]);
    let out = node_client_with_key(&peers, ingest.addr, 7, "hs-node", Some(KEY));
    assert!(
        out.status.success(),
        "node client with the right key failed: {}\ningest stderr:\n{}",
        out.stderr,
        ingest.stderr()
    );
    let s = summary(&store);
    assert_eq!(s["records"], 7, "{s}");
    assert!(
        ingest.exited().is_none(),
        "billing ingest died:\n{}",
        ingest.stderr()
    );
}

#[test]
fn node_fluent_client_with_a_wrong_or_no_key_stores_nothing_in_billing_ingest() {
    let peers = Peers::get();
    let (mut ingest, store, _dir) = sqlite_ingest("hs-node-bad", &["--shared-key", KEY]);
    let wrong = node_client_with_key(&peers, ingest.addr, 3, "hs-wrong", Some("wrong-key"));
    assert!(
        !wrong.status.success(),
        "a wrong key was acked: {}",
        wrong.stderr
    );
    let none = node_client_with_key(&peers, ingest.addr, 3, "hs-none", None);
    assert!(!none.status.success(), "no key was acked: {}", none.stderr);
    let s = summary(&store);
    assert_eq!(s["records"], 0, "{s}");
    assert_eq!(s["received"], 0, "{s}");
    assert!(
        ingest.exited().is_none(),
        "billing ingest died:\n{}",
        ingest.stderr()
    );
    let log = ingest.stderr();
    assert!(
        log.contains("handshake"),
        "no handshake failure logged:\n{log}"
    );
    assert!(
        !log.contains("wrong-key") && !log.contains(KEY),
        "a key in the log:\n{log}"
    );
}

// --- (c) cut off while another client is served --------------------------------------------

#[test]
fn a_silent_and_a_wrong_key_client_are_cut_off_while_an_authenticated_one_is_served() {
    let peers = Peers::get();
    let (mut ingest, store, _dir) = sqlite_ingest(
        "hs-cutoff",
        &[
            "--shared-key",
            KEY,
            "--handshake-timeout",
            "1s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics: SocketAddr = ingest.wait_line("metrics on ").parse().unwrap();
    // A client that reads the HELO and never answers.
    let mut silent = TcpStream::connect(ingest.addr).unwrap();
    let mut helo = [0u8; 1];
    silent.read_exact(&mut helo).unwrap();
    assert_eq!(
        helo[0] & 0xf0,
        0x90,
        "a HELO (MessagePack array) comes first"
    );
    // A wrong key, retrying in the background for as long as it runs.
    let mut wrong = Command::new(billing_bin());
    wrong
        .arg("send")
        .arg("--billing.ingester")
        .arg(ingest.addr.to_string())
        .args([
            "--billing.shared-key",
            "wrong-key",
            "--billing.retry-delay",
            "50ms",
        ])
        .args(["--key", "forged", "--instance", "inst-x", "--at", AT])
        .args(["--amount", "node-seconds=1000", "--timeout", "30s"]);
    wrong.stdout(Stdio::null()).stderr(Stdio::null());
    let wrong = KillOnDrop(wrong.spawn().expect("spawn billing send"));
    // Meanwhile an authenticated client is served.
    let good = node_client_with_key(&peers, ingest.addr, 6, "hs-good", Some(KEY));
    assert!(good.status.success(), "{}", good.stderr);
    // The silent connection is closed by the handshake timeout, without a PONG.
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    let body = http_get(metrics, "/metrics").body;
    let timeouts = sample(
        &body,
        "billing_ingest_handshakes_total{outcome=\"timeout\"}",
    );
    assert!(timeouts.unwrap_or(0.0) >= 1.0, "{body}");
    let ok = sample(&body, "billing_ingest_handshakes_total{outcome=\"ok\"}");
    assert!(ok.unwrap_or(0.0) >= 1.0, "{body}");
    // The wrong key was refused at least once by now (the send retries every 50ms).
    let deadline = std::time::Instant::now() + POLL_DEADLINE;
    loop {
        let body = http_get(metrics, "/metrics").body;
        let failed = sample(&body, "billing_ingest_handshakes_total{outcome=\"failed\"}");
        if failed.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed handshake:\n{body}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    drop(wrong);
    let s = summary(&store);
    assert_eq!(
        s["records"], 6,
        "only the authenticated client's records: {s}"
    );
    assert!(
        ingest.exited().is_none(),
        "billing ingest died:\n{}",
        ingest.stderr()
    );
}
