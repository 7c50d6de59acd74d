//! What `add_amounts` refuses, what it hands back, and how each refusal or drop is counted.

mod common;

use std::time::Duration;

use billing_client::testing::TestIngester;
use billing_client::{
    AddError, AmountType, Client, Config, Event, Metrics, NewClientError, Status,
};
use common::*;

const SAMPLES: AmountType = AmountType::SAMPLES;

fn unreachable_client(tweak: impl FnOnce(&mut Config)) -> (Client, Metrics) {
    let mut cfg = {
        let mut c = Config::default();
        c.ingester = dead_address();
        c.retry_delay = Duration::from_millis(5);
        c
    };
    tweak(&mut cfg);
    let metrics = Metrics::new();
    (Client::with_metrics(cfg, metrics.clone()).unwrap(), metrics)
}

#[test]
fn a_blank_key_is_refused_with_the_go_message_and_the_event() {
    let (client, _) = unreachable_client(|_| {});
    for key in ["", "   "] {
        let err = client
            .add_amounts(
                key,
                "1",
                now(),
                amounts(&[(&SAMPLES, 1)]),
                meta(&[("a", "b")]),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "billing: units uniqueKey cannot be blank");
        assert!(!err.is_retriable());
        let event = err.into_event();
        assert_eq!(event.metadata["a"], "b");
    }
    assert_eq!(client.pending(), 0);
}

#[test]
fn an_event_the_ingester_would_quarantine_is_refused_counted_and_handed_back() {
    let (client, metrics) = unreachable_client(|_| {});
    let bad_type = AmountType::from("Free Money");
    let cases: Vec<(&str, &str, AmountType, &str)> = vec![
        ("k1", "", SAMPLES, "internal_instance_id is empty"),
        ("k2", "1", bad_type.clone(), "amount_type"),
        ("k\u{0}3", "1", SAMPLES, "NUL"),
    ];
    for (key, instance, ty, why) in cases {
        let err = client
            .add_amounts(key, instance, now(), amounts(&[(&ty, 1)]), meta(&[]))
            .unwrap_err();
        assert!(matches!(err, AddError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err} should mention {why}");
        assert!(!err.is_retriable());
        assert_eq!(err.into_event().unique_key, key);
    }
    assert_eq!(metrics.events_total(Status::Invalid, &SAMPLES), 2);
    assert_eq!(metrics.events_total(Status::Invalid, &bad_type), 1);
    assert_eq!(client.pending(), 0);
}

#[test]
fn a_full_buffer_refuses_without_blocking_and_counts_buffer_full() {
    let (client, metrics) = unreachable_client(|c| c.max_buffered_events = 3);
    for i in 0..3 {
        client
            .add_amounts(
                format!("q-{i}"),
                "1",
                now(),
                amounts(&[(&SAMPLES, 2)]),
                meta(&[]),
            )
            .unwrap();
    }
    let err = client
        .add_amounts("q-3", "1", now(), amounts(&[(&SAMPLES, 2)]), meta(&[]))
        .unwrap_err();
    assert!(err.is_retriable());
    assert!(err.to_string().contains("buffer limit (3)"), "{err}");
    match err {
        AddError::QueueFull { limit, event } => {
            assert_eq!(limit, 3);
            assert_eq!(event.unique_key, "q-3");
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(metrics.events_total(Status::BufferFull, &SAMPLES), 1);
    assert_eq!(metrics.amounts_total(Status::BufferFull, &SAMPLES), 2);
    assert_eq!(metrics.queued_events(), 3);
    // Close cannot deliver: the three queued events are dropped and counted, none vanish.
    client.close_within(Duration::ZERO);
    assert_eq!(metrics.events_total(Status::Stopping, &SAMPLES), 3);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 0);
    assert_eq!(metrics.queued_events(), 0);
    assert_eq!(metrics.unacked_amounts(&SAMPLES), 0);
}

#[test]
fn after_close_events_are_refused_and_counted_stopping() {
    let (client, metrics) = unreachable_client(|_| {});
    client.close();
    let err = client
        .add_amounts("late", "1", now(), amounts(&[(&SAMPLES, 4)]), meta(&[]))
        .unwrap_err();
    assert!(matches!(err, AddError::Closed(_)), "{err:?}");
    assert_eq!(err.into_event().unique_key, "late");
    assert_eq!(metrics.events_total(Status::Stopping, &SAMPLES), 1);
    assert_eq!(metrics.amounts_total(Status::Stopping, &SAMPLES), 4);
    assert_eq!(
        client.flush(Duration::from_secs(1)),
        Err(billing_client::FlushError::Closed)
    );
}

#[test]
fn close_delivers_what_is_queued() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    for i in 0..100 {
        client
            .add_amounts(
                format!("c-{i}"),
                "1",
                now(),
                amounts(&[(&SAMPLES, 1)]),
                meta(&[]),
            )
            .unwrap();
    }
    client.close_within(PATIENCE);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 100);
    assert_eq!(unique_keys(&ingester).len(), 100);
}

#[test]
fn dropping_the_client_closes_it_and_delivers() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts("drop-1", "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    drop(client);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 1);
    assert!(unique_keys(&ingester).contains("drop-1:samples"));
}

#[test]
fn new_refuses_an_address_that_does_not_parse_and_does_not_wait_to_connect() {
    for bad in ["localhost", "host:port", "a:b:c:1", "h:70000"] {
        let err = Client::with_metrics(
            {
                let mut c = Config::default();
                c.ingester = bad.into();
                c
            },
            Metrics::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, NewClientError::InvalidAddress(_)),
            "{bad}: {err}"
        );
    }
    // Nothing listens there, yet the client starts and accepts events.
    let (client, _) = unreachable_client(|_| {});
    client
        .add_amounts("x", "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    assert_eq!(client.pending(), 1);
    client.close_within(Duration::ZERO);
}

#[test]
fn only_zero_amounts_send_nothing_and_count_success() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts("z", "1", now(), amounts(&[(&SAMPLES, 0)]), meta(&[]))
        .unwrap();
    client
        .add_amounts("nz", "1", now(), amounts(&[(&SAMPLES, 1)]), meta(&[]))
        .unwrap();
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 2);
    assert_eq!(
        unique_keys(&ingester).into_iter().collect::<Vec<_>>(),
        vec!["nz:samples".to_string()]
    );
}

#[test]
fn event_serializes_with_the_go_field_names() {
    let event = Event {
        unique_key: "k".into(),
        internal_instance_id: "1234".into(),
        occurred_at: std::time::UNIX_EPOCH + Duration::new(1_795_754_038, 467_902_040),
        amounts: amounts(&[(&AmountType::CONTAINER_SECONDS, 1)]),
        metadata: meta(&[("m", "n")]),
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"unique_key":"k","internal_instance_id":"1234","occurred_at":"2026-11-27T04:33:58.46790204Z","amounts":{"container-seconds":1},"metadata":{"m":"n"}})
    );
    assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
}
