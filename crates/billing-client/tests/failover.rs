//! Several ingesters (`--billing.ingester a,b,c`): failover to a standby and back to the
//! primary, round-robin, the per-ingester metrics, and the write timeout. Real sockets; every
//! wait is on a condition with a deadline, never on time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use billing_client::testing::{AckMode, TestIngester};
use billing_client::{
    AmountType, Client, Config, IngesterPolicy, Metadata, Metrics, NewClientError, Status,
};
use common::*;

const SAMPLES: AmountType = AmountType::SAMPLES;
/// Long enough that a test never sees it pass.
const NEVER: Duration = Duration::from_secs(3600);

/// A client with its own metrics for `ingesters` (a comma-separated list), short retry
/// delays, changed by `tweak`.
fn client_to(ingesters: &str, tweak: impl FnOnce(&mut Config)) -> (Client, Metrics) {
    let mut cfg = Config::default();
    cfg.ingester = ingesters.to_string();
    cfg.retry_delay = Duration::from_millis(10);
    cfg.retry_delay_max = Duration::from_millis(100);
    cfg.connect_timeout = Duration::from_secs(2);
    tweak(&mut cfg);
    let metrics = Metrics::new();
    let client = Client::with_metrics(cfg, metrics.clone()).expect("valid config");
    (client, metrics)
}

fn add(client: &Client, prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let key = format!("{prefix}-{i}");
            client
                .add_amounts(&key, "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
                .unwrap();
            format!("{key}:samples")
        })
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_unreachable_primary_sends_everything_to_the_standby() {
    let primary = dead_address();
    let standby = TestIngester::start().unwrap();
    let s = standby.addr().to_string();
    let (client, m) = client_to(&format!("{primary}, {s}"), |c| {
        c.batch_max_records = 5;
        c.primary_recheck = NEVER;
    });
    let keys = add(&client, "a", 20);
    client.flush(PATIENCE).expect("delivered by the standby");
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 20);
    assert_eq!(unique_keys(&standby), keys);
    assert!(m.ingester_failures(&primary, "connect") >= 1);
    assert_eq!(m.ingester_chunks_sent(&primary), 0);
    assert!(m.ingester_acks(&s) >= 4, "20 events in chunks of 5");
    assert!(m.ingester_chunks_sent(&s) >= m.ingester_acks(&s));
    assert_eq!(m.ingester_acks(&primary), 0);
    assert_eq!((m.ingester_active(&primary), m.ingester_active(&s)), (0, 1));
    assert_eq!(m.ingester_connected(&s), 1);
    assert_eq!(m.ingester_connected(&primary), 0);
}

#[test]
fn chunks_a_primary_never_acks_move_to_the_standby_after_the_ack_timeout() {
    let primary = TestIngester::start().unwrap();
    primary.set_ack_mode(AckMode::Withhold);
    let standby = TestIngester::start().unwrap();
    let (p, s) = (primary.addr().to_string(), standby.addr().to_string());
    let (client, m) = client_to(&format!("{p},{s}"), |c| {
        c.batch_max_records = 5;
        c.ack_timeout = Duration::from_millis(200);
        c.primary_recheck = NEVER;
    });
    let keys = add(&client, "b", 30);
    assert!(
        primary.wait_for_records(1, PATIENCE),
        "the primary got chunks"
    );
    client.flush(PATIENCE).expect("acked by the standby");
    // The primary recorded some of them too: what counts is each key once, success exact.
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 30);
    assert!(m.events_total(Status::Retrying, &SAMPLES) >= 1);
    assert_eq!(
        unique_keys(&standby),
        keys,
        "every key acked by the standby"
    );
    assert!(m.ingester_failures(&p, "ack_timeout") >= 1);
    assert_eq!(m.ingester_acks(&p), 0);
    assert!(m.ingester_acks(&s) >= 6);
    assert_eq!(m.queued_events(), 0);
    assert_eq!(m.unacked_amounts(&SAMPLES), 0);
}

#[test]
fn traffic_returns_to_the_primary_once_it_answers_again() {
    let p = dead_address();
    let standby = TestIngester::start().unwrap();
    let s = standby.addr().to_string();
    let (client, m) = client_to(&format!("{p},{s}"), |c| {
        c.primary_recheck = Duration::from_millis(20);
    });
    let before = add(&client, "before", 10);
    client.flush(PATIENCE).unwrap();
    assert_eq!(unique_keys(&standby), before);
    assert_eq!(m.ingester_active(&s), 1);

    let primary = TestIngester::start_on(p.parse().unwrap()).unwrap();
    wait_until("the primary is the target again", || {
        m.ingester_active(&p) == 1
    });
    wait_until("the idle standby connection is closed", || {
        m.ingester_connected(&s) == 0
    });
    assert_eq!(m.ingester_active(&s), 0);
    let after = add(&client, "after", 10);
    client.flush(PATIENCE).unwrap();
    assert_eq!(
        unique_keys(&primary),
        after,
        "new events land on the primary"
    );
    assert!(unique_keys(&standby).is_disjoint(&after));
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 20);
    assert!(m.ingester_acks(&p) >= 1);
}

#[test]
fn round_robin_spreads_chunks_and_survives_losing_an_ingester() {
    let a = TestIngester::start().unwrap();
    let b = TestIngester::start().unwrap();
    let c = TestIngester::start().unwrap();
    let labels: Vec<String> = [&a, &b, &c].iter().map(|i| i.addr().to_string()).collect();
    let (client, m) = client_to(&labels.join(","), |cfg| {
        cfg.ingester_policy = IngesterPolicy::RoundRobin;
        cfg.batch_max_records = 2;
        cfg.max_in_flight = 2;
        cfg.ack_timeout = NEVER;
    });
    // Work makes the client connect to every ingester.
    let mut all = add(&client, "warm", 1);
    client.flush(PATIENCE).unwrap();
    wait_until("connected to all three", || {
        labels.iter().all(|l| m.ingester_connected(l) == 1)
    });
    assert!(labels.iter().all(|l| m.ingester_active(l) == 1));
    all.extend(add(&client, "first", 60));
    client.flush(PATIENCE).unwrap();
    for (ingester, label) in [&a, &b, &c].iter().zip(&labels) {
        assert!(!ingester.records().is_empty(), "{label} got no chunk");
        assert!(m.ingester_acks(label) >= 1, "{label}");
    }

    // c stops acking, gets chunks, and goes away with them unacked.
    c.set_ack_mode(AckMode::Withhold);
    let c_before = c.records().len();
    let c_keys_before = unique_keys(&c);
    all.extend(add(&client, "mid", 60));
    assert!(
        c.wait_for_records(c_before + 1, PATIENCE),
        "c got new chunks"
    );
    let c_acked = m.ingester_acks(&labels[2]);
    drop(c);
    client
        .flush(PATIENCE)
        .expect("c's chunks delivered by a and b");
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 121);
    assert_eq!(m.queued_events(), 0);
    assert!(m.ingester_failures(&labels[2], "closed") >= 1);
    assert_eq!(m.ingester_acks(&labels[2]), c_acked, "c acked nothing more");
    let mut delivered = unique_keys(&a);
    delivered.extend(unique_keys(&b));
    delivered.extend(c_keys_before);
    assert_eq!(delivered, all, "every key delivered");
}

#[test]
fn a_list_with_a_bad_address_is_refused_naming_it() {
    let mut cfg = Config::default();
    cfg.ingester = "127.0.0.1:1, nope, 127.0.0.1:2".into();
    let err = Client::with_metrics(cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, NewClientError::InvalidAddress(_)), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let mut cfg = Config::default();
    cfg.write_timeout = Duration::ZERO;
    let err = Client::with_metrics(cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, NewClientError::InvalidConfig(_)), "{err}");

    for good in ["127.0.0.1:1,127.0.0.1:2", " [::1]:3 , :4 ", "127.0.0.1:5"] {
        let (client, _) = client_to(good, |_| {});
        client.close_within(Duration::ZERO);
    }
}

#[test]
fn a_peer_that_stops_reading_fails_the_write_and_the_chunks_move_on() {
    // Accepts connections (the kernel does) and never reads: the socket buffers fill and the
    // write blocks until the write timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = silent.local_addr().unwrap().to_string();
    let standby = TestIngester::start().unwrap();
    let s = standby.addr().to_string();
    let (client, m) = client_to(&format!("{p},{s}"), |c| {
        c.write_timeout = Duration::from_millis(300);
        c.ack_timeout = NEVER;
        c.primary_recheck = NEVER;
        c.batch_max_records = 20;
        c.max_buffered_events = 2000;
    });
    // About 35 MB, more than any loopback socket buffers hold.
    let filler = "x".repeat(900);
    let metadata: Metadata = (0..40).map(|i| (format!("m{i}"), filler.clone())).collect();
    let events: Vec<billing_client::Event> = (0..1000)
        .map(|i| billing_client::Event {
            unique_key: format!("w-{i}"),
            internal_instance_id: "1".into(),
            occurred_at: now(),
            amounts: amounts(&[(&SAMPLES, 1)]),
            metadata: metadata.clone(),
        })
        .collect();
    client.add_batch(events).unwrap();
    client.flush(PATIENCE).expect("delivered by the standby");
    assert!(m.ingester_failures(&p, "write") >= 1);
    assert_eq!(m.ingester_acks(&p), 0);
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 1000);
    assert_eq!(unique_keys(&standby).len(), 1000);
    drop(silent);
}

#[test]
fn several_connections_to_one_ingester_each_carry_chunks_in_flight() {
    let ingester = TestIngester::start().unwrap();
    ingester.set_ack_mode(AckMode::Withhold);
    let label = ingester.addr().to_string();
    // One record per chunk and one chunk in flight per connection: without acks, the
    // ingester can receive three chunks only over three connections.
    let (client, m) = client_to(&label, |c| {
        c.connections = 3;
        c.batch_max_records = 1;
        c.max_in_flight = 1;
        c.ack_timeout = NEVER;
    });
    let keys = add(&client, "c", 12);
    assert!(
        ingester.wait_for_records(3, PATIENCE),
        "three chunks in flight at once: one per connection"
    );
    assert_eq!(ingester.connections(), 3);
    assert_eq!(m.ingester_connected(&label), 3);
    assert_eq!(m.ingester_active(&label), 1);
    assert_eq!(m.ingester_acks(&label), 0);
    // Acked from now on; the connections holding unacked chunks are closed, so the client
    // reconnects and resends them.
    ingester.set_ack_mode(AckMode::Ack);
    ingester.drop_connections();
    client.flush(PATIENCE).expect("delivered");
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 12);
    assert_eq!(unique_keys(&ingester), keys);
    assert_eq!(m.queued_events(), 0);
}

#[test]
fn failover_moves_every_connection_to_the_standby() {
    let p = dead_address();
    let standby = TestIngester::start().unwrap();
    let s = standby.addr().to_string();
    let (client, m) = client_to(&format!("{p},{s}"), |c| {
        c.connections = 2;
        c.batch_max_records = 1;
        c.primary_recheck = NEVER;
    });
    let keys = add(&client, "f", 40);
    client.flush(PATIENCE).expect("delivered by the standby");
    assert_eq!(unique_keys(&standby), keys);
    assert_eq!(m.events_total(Status::Success, &SAMPLES), 40);
    wait_until("both connections to the standby", || {
        m.ingester_connected(&s) == 2
    });
    assert_eq!(standby.connections(), 2);
    assert_eq!((m.ingester_active(&p), m.ingester_active(&s)), (0, 1));
    assert_eq!(m.ingester_connected(&p), 0);
    assert!(
        m.ingester_failures(&p, "connect") >= 2,
        "each connection tried it"
    );
}
