//! The client against a forward server with authentication (`TestIngester::start_with_auth`,
//! real sockets): the right key delivers and is acked; a wrong key, or a server that never
//! greets, delivers nothing, keeps the events queued, counts the failure, and once the server
//! has the right key (restarted on the same port) the events are delivered. Waits are for
//! events (a flush, a counter reaching a value, polled with a bound), never sleeps.
//!
//! On the code before the handshake was wired these tests do not compile: `Config` had no
//! `shared_key`, `Metrics` no handshake counter and `TestIngester` no auth.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use billing_client::testing::TestIngester;
use billing_client::{AmountType, Config, Metrics, Secret, Status};
use common::*;

const SAMPLES: AmountType = AmountType::SAMPLES;

fn with_key(key: &str) -> impl FnOnce(&mut Config) {
    let key = key.to_string();
    move |c: &mut Config| {
        c.shared_key = Some(Secret::new(key));
        c.hostname = Some("billing-client-test".into());
    }
}

/// Polls `cond` until it holds (bounded by [`PATIENCE`]).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn failures(metrics: &Metrics) -> u64 {
    [
        "refused",
        "digest_mismatch",
        "hostname_loop",
        "timeout",
        "closed",
        "protocol",
        "io",
        "config",
    ]
    .iter()
    .map(|r| metrics.handshake_failures(r))
    .sum()
}

#[test]
fn the_right_key_delivers_and_is_acked() {
    let ingester = TestIngester::start_with_auth("127.0.0.1:0".parse().unwrap(), "k").unwrap();
    let (client, metrics) = client_for(&ingester, with_key("k"));
    for i in 0..3 {
        client
            .add_amounts(
                format!("ok-{i}"),
                "42",
                now(),
                amounts(&[(&SAMPLES, 1)]),
                meta(&[]),
            )
            .unwrap();
    }
    client.flush(PATIENCE).expect("delivered and acked");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 3);
    assert_eq!(unique_keys(&ingester).len(), 3);
    assert!(ingester.stats().handshakes_ok.load(Ordering::SeqCst) >= 1);
    assert_eq!(ingester.stats().handshakes_failed.load(Ordering::SeqCst), 0);
    assert_eq!(failures(&metrics), 0);
}

#[test]
fn a_wrong_key_delivers_nothing_keeps_the_events_and_delivers_once_the_key_is_fixed() {
    let ingester =
        TestIngester::start_with_auth("127.0.0.1:0".parse().unwrap(), "server-key").unwrap();
    let addr = ingester.addr();
    let (client, metrics) = client_for(&ingester, with_key("client-key"));
    client
        .add_amounts("held-1", "42", now(), amounts(&[(&SAMPLES, 7)]), meta(&[]))
        .unwrap();
    eventually("a refused handshake counted twice (a retry too)", || {
        metrics.handshake_failures("refused") >= 2
    });
    assert!(ingester.records().is_empty(), "a record got through");
    assert_eq!(ingester.frames(), (0, 0));
    assert!(ingester.stats().handshakes_failed.load(Ordering::SeqCst) >= 2);
    assert_eq!(metrics.queued_events(), 1, "the event stays queued");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 0);
    assert_eq!(metrics.unacked_amounts(&SAMPLES), 7);

    // The operator fixes the ingester's key: restarted on the same port.
    drop(ingester);
    let fixed = TestIngester::start_with_auth(addr, "client-key").unwrap();
    client
        .flush(PATIENCE)
        .expect("delivered once the keys match");
    assert_eq!(
        unique_keys(&fixed).into_iter().collect::<Vec<_>>(),
        vec!["held-1:samples".to_string()]
    );
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert_eq!(metrics.queued_events(), 0);
}

#[test]
fn a_server_without_authentication_times_out_the_handshake_and_keeps_the_events() {
    // No HELO ever comes: the handshake fails at the connect timeout.
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |c| {
        with_key("k")(c);
        c.connect_timeout = Duration::from_millis(200);
    });
    client
        .add_amounts("t-1", "42", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    eventually("a handshake timeout counted", || {
        metrics.handshake_failures("timeout") >= 1
    });
    assert!(ingester.records().is_empty());
    assert_eq!(metrics.queued_events(), 1);
}

#[test]
fn a_client_without_a_key_stores_nothing_on_a_server_with_authentication() {
    let ingester = TestIngester::start_with_auth("127.0.0.1:0".parse().unwrap(), "k").unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts("nokey-1", "42", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    eventually("the server refused a handshake", || {
        ingester.stats().handshakes_failed.load(Ordering::SeqCst) >= 1
    });
    assert!(ingester.records().is_empty());
    assert_eq!(ingester.frames(), (0, 0));
    assert_eq!(metrics.queued_events(), 1);
}

#[test]
fn a_key_out_of_bounds_is_refused_when_the_client_is_made() {
    let ingester = TestIngester::start().unwrap();
    let mut cfg = ingester.client_config();
    cfg.shared_key = Some(Secret::new(""));
    let Err(e) = billing_client::Client::with_metrics(cfg, Metrics::new()) else {
        panic!("an empty key is refused");
    };
    assert!(e.to_string().contains("shared key"), "{e}");
}
