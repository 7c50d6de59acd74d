//! Success means acknowledged: what the ingester must have done before an event counts
//! `success`, and how unacked events are resent.

mod common;

use std::time::Duration;

use billing_client::testing::{AckMode, TestIngester};
use billing_client::{AmountType, FlushError, Framing, Status};
use common::*;

const SAMPLES: AmountType = AmountType::SAMPLES;
const NODE: AmountType = AmountType::NODE_SECONDS;

#[test]
fn an_event_counts_success_only_once_acked() {
    let ingester = TestIngester::start().unwrap();
    ingester.set_ack_mode(AckMode::Withhold);
    let (client, metrics) = client_for(&ingester, |c| c.ack_timeout = Duration::from_millis(200));
    client
        .add_amounts("k-1", "42", now(), amounts(&[(&SAMPLES, 5)]), meta(&[]))
        .unwrap();
    assert!(
        ingester.wait_for_records(1, PATIENCE),
        "the record was never written"
    );
    // Written, received, but not acked: not delivered.
    assert!(matches!(
        client.flush(Duration::from_millis(50)),
        Err(FlushError::Timeout { pending: 1 })
    ));
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 0);
    assert_eq!(metrics.unacked_amounts(&SAMPLES), 5);
    assert_eq!(metrics.queued_events(), 1);

    ingester.set_ack_mode(AckMode::Ack);
    client
        .flush(PATIENCE)
        .expect("resent after the ack timeout and acked");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert_eq!(metrics.amounts_total(Status::Success, &SAMPLES), 5);
    assert!(metrics.events_total(Status::Retrying, &SAMPLES) >= 1);
    assert_eq!(metrics.unacked_amounts(&SAMPLES), 0);
    assert_eq!(metrics.queued_events(), 0);
    assert!(
        ingester.records().len() >= 2,
        "the unacked chunk must have been sent again"
    );
    assert_eq!(
        unique_keys(&ingester).into_iter().collect::<Vec<_>>(),
        vec!["k-1:samples".to_string()]
    );
}

#[test]
fn everything_unacked_is_resent_after_a_dropped_connection() {
    let ingester = TestIngester::start().unwrap();
    ingester.set_ack_mode(AckMode::Withhold);
    let (client, metrics) = client_for(&ingester, |c| {
        c.batch_max_records = 7;
        c.max_in_flight = 4;
    });
    for i in 0..20 {
        client
            .add_amounts(
                format!("e-{i}"),
                "1",
                now(),
                amounts(&[(&SAMPLES, 1)]),
                meta(&[]),
            )
            .unwrap();
    }
    // Four chunks in flight at once (7 + 7 + 6 records), none acked.
    assert!(ingester.wait_for_records(20, PATIENCE));
    assert!(
        ingester.frames().0 >= 3,
        "several chunks were in flight: {:?}",
        ingester.frames()
    );
    ingester.set_ack_mode(AckMode::Ack);
    ingester.drop_connections();
    client
        .flush(PATIENCE)
        .expect("delivered on a new connection");
    assert!(ingester.connections() >= 2);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 20);
    assert_eq!(unique_keys(&ingester).len(), 20);
    assert!(
        ingester.records().len() >= 40,
        "every unacked record was resent"
    );
}

#[test]
fn a_refusing_ingester_gets_the_chunk_again_until_it_acks() {
    let ingester = TestIngester::start().unwrap();
    ingester.set_ack_mode(AckMode::Refuse);
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts("r-1", "1", now(), amounts(&[(&NODE, 3)]), meta(&[]))
        .unwrap();
    // Each refusal closes the connection; wait until the client came back twice.
    let deadline = std::time::Instant::now() + PATIENCE;
    while ingester.connections() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not reconnect"
        );
        std::thread::yield_now();
    }
    assert_eq!(metrics.events_total(Status::Success, &NODE), 0);
    ingester.set_ack_mode(AckMode::Ack);
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &NODE), 1);
    assert!(metrics.events_total(Status::Retrying, &NODE) >= 2);
}

#[test]
fn events_queued_while_the_ingester_is_down_arrive_when_it_returns() {
    let first = TestIngester::start().unwrap();
    let addr = first.addr();
    let (client, metrics) = client_for(&first, |_| {});
    drop(first);
    for i in 0..50 {
        client
            .add_amounts(
                format!("d-{i}"),
                "7",
                now(),
                amounts(&[(&SAMPLES, 2), (&NODE, 1)]),
                meta(&[("report", "r")]),
            )
            .unwrap();
    }
    assert!(matches!(
        client.flush(Duration::from_millis(100)),
        Err(FlushError::Timeout { .. })
    ));
    let second = TestIngester::start_on(addr).unwrap();
    client.flush(PATIENCE).unwrap();
    assert_eq!(unique_keys(&second).len(), 100);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 50);
    assert_eq!(metrics.amounts_total(Status::Success, &SAMPLES), 100);
    assert_eq!(metrics.events_total(Status::Stopping, &SAMPLES), 0);
}

#[test]
fn many_chunks_in_flight_deliver_every_event_from_many_threads() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |c| {
        c.batch_max_records = 16;
        c.max_buffered_events = 10_000;
    });
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..500 {
                    client
                        .add_amounts(
                            format!("t{t}-{i}"),
                            "9",
                            now(),
                            amounts(&[(&SAMPLES, 1)]),
                            meta(&[]),
                        )
                        .unwrap();
                }
            });
        }
    });
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 2000);
    assert_eq!(unique_keys(&ingester).len(), 2000);
    assert!(
        ingester.frames().1 >= 2000 / 16,
        "records were batched into chunks of at most 16"
    );
}

#[test]
fn every_framing_delivers_the_same_records() {
    for framing in [
        Framing::PackedForward,
        Framing::CompressedPackedForward,
        Framing::Forward,
        Framing::Message,
        Framing::JsonMessage,
    ] {
        let ingester = TestIngester::start().unwrap();
        let (client, metrics) = client_for(&ingester, |c| c.framing = framing);
        for i in 0..3 {
            client
                .add_amounts(
                    format!("f-{i}"),
                    "5",
                    now(),
                    amounts(&[
                        (&SAMPLES, 4),
                        (&NODE, 0),
                        (&AmountType::from("gpu-seconds"), 9),
                    ]),
                    meta(&[("k", "v")]),
                )
                .unwrap();
        }
        client
            .flush(PATIENCE)
            .unwrap_or_else(|e| panic!("{framing:?}: {e}"));
        let records = ingester.records();
        assert_eq!(records.len(), 6, "{framing:?}: zero amounts send nothing");
        assert_eq!(
            metrics.events_total(Status::Success, &SAMPLES),
            3,
            "{framing:?}"
        );
        let r = records
            .iter()
            .find(|r| r["unique_key"] == "f-1:gpu-seconds")
            .expect("record present");
        assert_eq!(r["amount_value"], 9);
        assert_eq!(r["internal_instance_id"], "5");
        assert_eq!(r["metadata"]["k"], "v");
        assert!(
            r["occurred_at"].as_str().unwrap().ends_with('Z'),
            "{framing:?}: occurred_at must be an RFC 3339 string"
        );
        let expected_mode = match framing {
            Framing::PackedForward => forward::Mode::PackedForward,
            Framing::CompressedPackedForward => forward::Mode::CompressedPackedForward,
            Framing::Forward => forward::Mode::Forward,
            Framing::Message | Framing::JsonMessage => forward::Mode::Message,
            other => panic!("add {other:?} to this test"),
        };
        assert!(
            ingester
                .received()
                .iter()
                .all(|r| r.mode == expected_mode && r.tag == "billing"),
            "{framing:?}"
        );
    }
}

#[test]
fn without_acks_success_means_written() {
    let ingester = TestIngester::start().unwrap();
    ingester.set_ack_mode(AckMode::Withhold);
    let (client, metrics) = client_for(&ingester, |c| c.require_ack = false);
    client
        .add_amounts("n-1", "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert!(ingester.wait_for_records(1, PATIENCE));
    assert_eq!(ingester.frames().1, 0, "nothing was acked");
}

/// Linger (`Config::linger`): while the sender lingers, events wake it only once half the
/// buffer waits. With an hour-long linger, the later events below are delivered only because
/// of that wake-up (or the flush): nothing else would look at the channel within the test.
#[test]
fn a_lingering_sender_is_woken_once_half_the_buffer_waits() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |c| {
        c.linger = Duration::from_secs(3600);
        c.max_buffered_events = 8;
    });
    let add = |key: &str| {
        client
            .add_amounts(key, "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
            .unwrap()
    };
    // The first event after a quiet spell wakes the sender at once.
    add("first");
    assert!(ingester.wait_for_records(1, PATIENCE), "first event sent");
    // The sender lingers now; four waiting events (half of 8) wake it.
    for i in 0..4 {
        add(&format!("next-{i}"));
    }
    assert!(
        ingester.wait_for_records(5, PATIENCE),
        "half the buffer waiting must wake a lingering sender: {:?}",
        unique_keys(&ingester)
    );
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 5);
}

#[test]
fn flush_and_close_do_not_wait_for_the_linger() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |c| c.linger = Duration::from_secs(3600));
    for i in 0..3 {
        client
            .add_amounts(
                format!("l-{i}"),
                "1",
                now(),
                amounts(&[(&SAMPLES, 2)]),
                meta(&[]),
            )
            .unwrap();
    }
    client
        .flush(PATIENCE)
        .expect("a flush nudges the lingering sender");
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 3);
    client
        .add_amounts("l-last", "1", now(), amounts(&[(&SAMPLES, 2)]), meta(&[]))
        .unwrap();
    let report = client.close_within(PATIENCE);
    assert_eq!(report.delivered, 4, "{report:?}");
    assert_eq!(report.dropped_total(), 0, "{report:?}");
}

/// Issue 12 (found by `billing-cli/tests/kill_ingest.rs` through the fault proxy): a write that
/// fails while the sender writes chunks (here a write timeout: the peer accepted but never
/// reads) must schedule the reconnect after the backoff by itself. It used to be scheduled only
/// when something else woke the sender (a new event, a flush or close request), so a client
/// that stopped adding events kept them queued for ever.
#[test]
fn a_failed_write_reconnects_after_the_backoff_without_a_new_event() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts, never reads: the client's writes fill the socket buffers and time out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let (accepted, held) = (accepted.clone(), held.clone());
        move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                held.lock().unwrap().push(conn);
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut config = billing_client::Config::default();
    config.ingester = addr.to_string();
    config.write_timeout = Duration::from_millis(200);
    config.retry_delay = Duration::from_millis(10);
    config.retry_delay_max = Duration::from_millis(10);
    config.close_timeout = Duration::from_millis(100);
    config.max_buffered_events = 10_000;
    let client = billing_client::Client::new(config).unwrap();
    // Far more than the loopback socket buffers hold: 2000 events of ~30 KB, in one call so
    // that nothing else reaches the sender after they did.
    let big = "x".repeat(30_000);
    let events = (0..2000)
        .map(|i| billing_client::Event {
            unique_key: format!("w-{i}"),
            internal_instance_id: "7".into(),
            occurred_at: now(),
            amounts: amounts(&[(&SAMPLES, 1)]),
            metadata: meta(&[("blob", &big)]),
        })
        .collect();
    client.add_batch(events).unwrap();
    // No call into the client from here on: the sender must reconnect on its own.
    let deadline = std::time::Instant::now() + PATIENCE;
    while accepted.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect after the write failed ({} connection(s), last failure {:?})",
            accepted.load(Ordering::SeqCst),
            client.last_failure()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
