//! `billing ingest` and `billing send` over a Unix socket, TLS and mutual TLS, as real
//! processes (certificates made here with rcgen, a SQLite store read back with `billing
//! report --summary`): the record is stored; a wrong CA makes `billing send` fail with one
//! line naming the certificate problem and stores nothing; a SIGKILLed ingester's socket file
//! is replaced by the next one.

mod common;
// One copy for every crate's TLS tests (certificates made with rcgen).
#[path = "../../../tests/support/pki.rs"]
mod pki;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use pki::Ca;

const AT: &str = "2026-11-27T04:33:58.46790204Z";

fn sqlite_ingest(dir: &Path, listen: &str, extra: &[&str]) -> (Server, String) {
    let db = dir.join("billing.db");
    let server = ingest_sqlite(&db, listen, extra);
    (server, format!("sqlite:{}", db.display()))
}

fn send(ingester: &str, unique: &str, extra: &[&str]) -> Finished {
    let mut c = Command::new(billing_bin());
    c.arg("send")
        .args(["--billing.ingester", ingester])
        .args(["--key", unique, "--instance", "inst-t", "--at", AT])
        .args(["--amount", "node-seconds=5", "--timeout", "5s"])
        .args(extra);
    run("billing send", c)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn send_and_ingest_over_a_unix_socket() {
    let dir = temp_dir("unix");
    let sock = dir.path().join("ingest.sock");
    let listen = format!("unix://{}", sock.display());
    let (mut ingest, store) = sqlite_ingest(dir.path(), &listen, &[]);
    assert_eq!(ingest.endpoint, listen);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let out = send(&listen, "unix-1", &[]);
    assert!(out.status.success(), "billing send failed: {}", out.stderr);
    assert_eq!(summary(&store)["records"], 1);

    // Killed without a chance to clean up: its socket file stays, and the next ingester
    // replaces it; while that one lives, a third is refused.
    ingest.kill();
    assert!(
        sock.exists(),
        "a SIGKILLed ingester removed its socket file"
    );
    let (_again, _) = sqlite_ingest(dir.path(), &listen, &[]);
    let out = send(&listen, "unix-2", &[]);
    assert!(out.status.success(), "billing send failed: {}", out.stderr);
    assert_eq!(summary(&store)["records"], 2);
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", &listen, "--store"])
        .arg(format!("sqlite:{}", dir.path().join("other.db").display()));
    let refused = run("billing ingest (socket in use)", c);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("address in use"),
        "{}",
        refused.stderr
    );
}

#[test]
fn send_and_ingest_over_tls_and_mutual_tls() {
    let dir = temp_dir("tls");
    let ca = Ca::new("billing CA");
    let leaf = ca.leaf(&["localhost"]);
    let client = ca.leaf(&["billing-send"]);
    let ca_file = pki::write(dir.path(), "ca.pem", &ca.pem);
    let cert = pki::write(dir.path(), "server.pem", &leaf.cert);
    let key = pki::write(dir.path(), "server.key", &leaf.key);
    let client_cert = pki::write(dir.path(), "client.pem", &client.cert);
    let client_key = pki::write(dir.path(), "client.key", &client.key);
    let tls = ["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)];

    // TLS: a plain host:port listen address speaks TLS once a certificate is given.
    let (ingest, store) = sqlite_ingest(dir.path(), "127.0.0.1:0", &tls);
    assert!(
        ingest.endpoint.starts_with("tls://127.0.0.1:"),
        "{}",
        ingest.endpoint
    );
    let at = format!("tls://localhost:{}", ingest.addr.port());
    let out = send(&at, "tls-1", &["--billing.tls-ca", path_str(&ca_file)]);
    assert!(
        out.status.success(),
        "billing send over TLS failed: {}",
        out.stderr
    );
    assert_eq!(summary(&store)["records"], 1);

    // The wrong CA: not acknowledged, one line saying why, nothing stored.
    let other = pki::write(dir.path(), "other-ca.pem", &Ca::new("other CA").pem);
    let out = send(
        &at,
        "tls-wrong",
        &["--billing.tls-ca", path_str(&other), "--timeout", "1s"],
    );
    assert!(!out.status.success());
    let last = out
        .stderr
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("billing send:") && last.contains("unknown issuer"),
        "{}",
        out.stderr
    );
    assert_eq!(summary(&store)["records"], 1);
    drop(ingest);

    // Mutual TLS: no client certificate is refused; ours is accepted.
    let mtls_dir = temp_dir("mtls");
    let mut args = tls.to_vec();
    args.extend(["--tls-client-ca", path_str(&ca_file)]);
    let (ingest, store) = sqlite_ingest(mtls_dir.path(), "tls://127.0.0.1:0", &args);
    let at = format!("tls://localhost:{}", ingest.addr.port());
    let out = send(
        &at,
        "mtls-none",
        &["--billing.tls-ca", path_str(&ca_file), "--timeout", "1s"],
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("requires a client certificate"),
        "{}",
        out.stderr
    );
    let out = send(
        &at,
        "mtls-ok",
        &[
            "--billing.tls-ca",
            path_str(&ca_file),
            "--billing.tls-cert",
            path_str(&client_cert),
            "--billing.tls-key",
            path_str(&client_key),
        ],
    );
    assert!(
        out.status.success(),
        "billing send with a client certificate failed: {}",
        out.stderr
    );
    assert_eq!(summary(&store)["records"], 1);
    assert!(
        ingest.stderr().contains("tls_handshake"),
        "{}",
        ingest.stderr()
    );
}

#[test]
fn tls_without_a_certificate_is_a_clear_error() {
    let dir = temp_dir("tls-bad");
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", "tls://127.0.0.1:0", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("b.db").display()));
    let out = run("billing ingest (tls:// without a certificate)", c);
    assert!(!out.status.success());
    assert!(out.stderr.contains("needs TLS settings"), "{}", out.stderr);
    let out = send("tls://localhost:1", "x", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--billing.tls-ca"), "{}", out.stderr);
}
