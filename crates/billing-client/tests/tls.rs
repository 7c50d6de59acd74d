//! The client over TLS, mutual TLS and a Unix socket, against `TestIngester` (real sockets,
//! certificates made here with rcgen): the right CA delivers and is acked; a wrong CA, an
//! expired certificate, a wrong name or a missing client certificate deliver nothing, keep the
//! events and count the failure by the check that failed; the shared-key handshake runs inside
//! TLS; bad TLS settings are a `NewClientError` naming the problem. Waits are for events
//! (flush, a counter reaching a value, polled with a bound), never sleeps as synchronisation.

mod common;
// One copy for every crate's TLS tests (certificates made with rcgen).
#[path = "../../../tests/support/pki.rs"]
mod pki;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use billing_client::testing::TestIngester;
use billing_client::{AmountType, Client, Config, Metrics, NewClientError, Secret, Status};
use common::*;
use pki::{Ca, Leaf};

const SAMPLES: AmountType = AmountType::SAMPLES;

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn server_tls(leaf: &Leaf, client_ca: Option<&Ca>) -> forward::ServerTls {
    forward::ServerTls::from_pem(
        leaf.cert.as_bytes(),
        leaf.key.as_bytes(),
        client_ca.map(|c| c.pem.as_bytes()),
    )
    .unwrap()
}

/// Points the client at `tls://localhost:PORT` (the certificate's name) and trusts `ca`.
fn trusting(dir: &Path, ingester: &TestIngester, ca: &Ca) -> impl FnOnce(&mut Config) {
    let ca = pki::write(dir, "ca.pem", &ca.pem);
    let ingester_addr = format!("tls://localhost:{}", ingester.addr().port());
    move |c: &mut Config| {
        c.ingester = ingester_addr;
        c.tls_ca = Some(ca);
    }
}

fn send_one(client: &Client, key: &str) {
    client
        .add_amounts(key, "42", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
}

fn not_delivered(client: &Client, metrics: &Metrics, ingester: &TestIngester, reason: &str) {
    send_one(client, "held");
    eventually(&format!("a TLS failure counted as {reason}"), || {
        metrics.tls_failures(reason) > 0
    });
    assert!(client.flush(Duration::from_millis(50)).is_err());
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 0);
    assert!(
        ingester.records().is_empty(),
        "stored over a failed TLS session"
    );
    // The event is kept, not dropped.
    assert_eq!(metrics.queued_events(), 1);
    // Not waiting for an ingester that will never take it.
    client.close_within(Duration::ZERO);
}

#[test]
fn the_right_ca_delivers_and_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("billing CA");
    let ingester =
        TestIngester::start_with_tls(server_tls(&ca.leaf(&["localhost"]), None)).unwrap();
    assert!(ingester.endpoint().is_tls());
    let (client, metrics) = client_for(&ingester, trusting(dir.path(), &ingester, &ca));
    send_one(&client, "tls-1");
    client.flush(PATIENCE).expect("delivered over TLS");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert_eq!(unique_keys(&ingester).len(), 1);
}

#[test]
fn a_wrong_ca_delivers_nothing_and_counts_an_unknown_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("billing CA");
    let ingester =
        TestIngester::start_with_tls(server_tls(&ca.leaf(&["localhost"]), None)).unwrap();
    let (client, metrics) = client_for(
        &ingester,
        trusting(dir.path(), &ingester, &Ca::new("other CA")),
    );
    not_delivered(&client, &metrics, &ingester, "unknown_issuer");
}

#[test]
fn an_expired_certificate_and_a_wrong_name_are_counted_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("billing CA");
    let expired =
        TestIngester::start_with_tls(server_tls(&ca.expired_leaf(&["localhost"]), None)).unwrap();
    let (client, metrics) = client_for(&expired, trusting(dir.path(), &expired, &ca));
    not_delivered(&client, &metrics, &expired, "expired");

    let elsewhere =
        TestIngester::start_with_tls(server_tls(&ca.leaf(&["ingest.example"]), None)).unwrap();
    let (client, metrics) = client_for(&elsewhere, trusting(dir.path(), &elsewhere, &ca));
    not_delivered(&client, &metrics, &elsewhere, "name_mismatch");
    // With the certificate's name set, the same ingester is trusted.
    let (client, _) = client_for(&elsewhere, |c| {
        trusting(dir.path(), &elsewhere, &ca)(c);
        c.tls_server_name = Some("ingest.example".into());
    });
    send_one(&client, "named");
    client
        .flush(PATIENCE)
        .expect("delivered with the server name set");
}

#[test]
fn mutual_tls_needs_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("billing CA");
    let ingester =
        TestIngester::start_with_tls(server_tls(&ca.leaf(&["localhost"]), Some(&ca))).unwrap();
    let (client, metrics) = client_for(&ingester, trusting(dir.path(), &ingester, &ca));
    not_delivered(&client, &metrics, &ingester, "client_certificate_required");
    assert!(
        ingester
            .stats()
            .tls_handshake_failures
            .load(Ordering::SeqCst)
            >= 1
    );

    let ours = ca.leaf(&["billing-client"]);
    let cert = pki::write(dir.path(), "client.pem", &ours.cert);
    let key = pki::write(dir.path(), "client.key", &ours.key);
    let (client, metrics) = client_for(&ingester, |c| {
        trusting(dir.path(), &ingester, &ca)(c);
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    });
    send_one(&client, "mtls");
    client
        .flush(PATIENCE)
        .expect("delivered with a client certificate");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert_eq!(
        unique_keys(&ingester).into_iter().collect::<Vec<_>>(),
        ["mtls:samples"]
    );
}

#[test]
fn the_shared_key_handshake_runs_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("billing CA");
    let config = forward::ServerConfig {
        tls: Some(server_tls(&ca.leaf(&["localhost"]), None)),
        auth: Some(forward::ServerAuth {
            shared_key: "k".into(),
            hostname: "test-ingester".into(),
            users: None,
        }),
        ..forward::ServerConfig::default()
    };
    let ingester =
        TestIngester::start_on_endpoint(&"tls://127.0.0.1:0".parse().unwrap(), config).unwrap();
    let (client, metrics) = client_for(&ingester, |c| {
        trusting(dir.path(), &ingester, &ca)(c);
        c.shared_key = Some(Secret::new("k".to_string()));
        c.hostname = Some("billing-client-test".into());
    });
    send_one(&client, "both");
    client
        .flush(PATIENCE)
        .expect("delivered after TLS and the shared-key handshake");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert!(ingester.stats().handshakes_ok.load(Ordering::SeqCst) >= 1);
}

#[test]
fn delivers_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint: forward::Endpoint = format!("unix://{}/ingest.sock", dir.path().display())
        .parse()
        .unwrap();
    let ingester =
        TestIngester::start_on_endpoint(&endpoint, forward::ServerConfig::default()).unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    send_one(&client, "unix-1");
    client
        .flush(PATIENCE)
        .expect("delivered over the Unix socket");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert_eq!(unique_keys(&ingester).len(), 1);
}

#[test]
fn bad_tls_settings_are_clear_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |change: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        change(&mut c);
        match Client::with_metrics(c, Metrics::new()) {
            Err(e @ NewClientError::InvalidTls(_)) => e.to_string(),
            Err(other) => panic!("not a TLS error: {other}"),
            Ok(_) => panic!("accepted"),
        }
    };
    let e = refused(&|c| c.ingester = "tls://localhost:1".into());
    assert!(e.contains("--billing.tls-ca"), "{e}");
    let missing = dir.path().join("nope.pem");
    let e = refused(&|c| c.tls_ca = Some(missing.clone()));
    assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");
    let ca = pki::write(dir.path(), "ca.pem", &Ca::new("ca").pem);
    let e = refused(&|c| {
        c.tls_ca = Some(ca.clone());
        c.tls_cert = Some(ca.clone());
    });
    assert!(e.contains("tls_key"), "{e}");
    let e = refused(&|c| c.tls_server_name = Some("x".into()));
    assert!(e.contains("tls_ca"), "{e}");
}
