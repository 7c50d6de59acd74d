//! With `spool_dir`, accepted events live on disk until acknowledged: they survive a closed
//! client and a dead ingester, one client owns a directory, and a full spool refuses clearly.

mod common;

use std::time::Duration;

use billing_client::testing::TestIngester;
use billing_client::{
    AddBatchErrorKind, AddError, AmountType, Client, Config, Metrics, NewClientError, SpoolSync,
    Status,
};
use common::*;

const SAMPLES: AmountType = AmountType::SAMPLES;

fn spool_client(
    dir: &std::path::Path,
    ingester: String,
    tweak: impl FnOnce(&mut Config),
) -> (Client, Metrics) {
    let mut cfg = {
        let mut c = Config::default();
        c.ingester = ingester;
        c.spool_dir = Some(dir.to_path_buf());
        c.retry_delay = Duration::from_millis(5);
        c.retry_delay_max = Duration::from_millis(50);
        c
    };
    tweak(&mut cfg);
    let metrics = Metrics::new();
    (
        Client::with_metrics(cfg, metrics.clone()).expect("spool opens"),
        metrics,
    )
}

#[test]
fn spooled_events_outlive_the_client_and_are_delivered_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let down = dead_address();
    let (client, metrics) = spool_client(dir.path(), down.clone(), |_| {});
    for i in 0..300 {
        client
            .add_amounts(
                format!("s-{i}"),
                "3",
                now(),
                amounts(&[(&SAMPLES, 2)]),
                meta(&[("r", "1")]),
            )
            .unwrap();
    }
    assert_eq!(client.pending(), 300);
    client.close_within(Duration::ZERO);
    // Not dropped: they stay on disk for the next client.
    assert_eq!(metrics.events_total(Status::Stopping, &SAMPLES), 0);
    drop(client);

    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = spool_client(dir.path(), ingester.addr().to_string(), |_| {});
    assert_eq!(
        metrics.spool_records(),
        300,
        "the spool gauge shows the recovered backlog"
    );
    assert_eq!(metrics.spool_damaged_records(), 0);
    client.flush(PATIENCE).expect("recovered events delivered");
    assert_eq!(unique_keys(&ingester).len(), 300);
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 300);
    assert_eq!(metrics.amounts_total(Status::Success, &SAMPLES), 600);
    assert_eq!(client.pending(), 0);
    assert_eq!(
        metrics.queued_events(),
        0,
        "recovered events entered and left the gauge"
    );
    assert_eq!(metrics.unacked_amounts(&SAMPLES), 0);
}

#[test]
fn both_durability_modes_deliver_every_event() {
    for sync in [SpoolSync::Fsync, SpoolSync::Interval] {
        let dir = tempfile::tempdir().unwrap();
        let ingester = TestIngester::start().unwrap();
        let (client, metrics) = spool_client(dir.path(), ingester.addr().to_string(), |c| {
            c.spool_sync = sync
        });
        std::thread::scope(|s| {
            for t in 0..2 {
                let client = &client;
                s.spawn(move || {
                    for i in 0..200 {
                        client
                            .add_amounts(
                                format!("{t}-{i}"),
                                "1",
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
        assert_eq!(
            metrics.events_total(Status::Success, &SAMPLES),
            400,
            "{sync:?}"
        );
        assert_eq!(unique_keys(&ingester).len(), 400, "{sync:?}");
    }
}

#[test]
fn a_second_client_on_the_same_spool_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = spool_client(dir.path(), dead_address(), |_| {});
    let err = Client::with_metrics(
        {
            let mut c = Config::default();
            c.spool_dir = Some(dir.path().to_path_buf());
            c
        },
        Metrics::new(),
    )
    .unwrap_err();
    assert!(matches!(err, NewClientError::Spool(_)), "{err:?}");
    assert!(
        err.to_string().contains(&std::process::id().to_string()),
        "the holder's pid must be named: {err}"
    );
}

#[test]
fn a_full_spool_refuses_with_spool_full_and_hands_the_event_back() {
    let dir = tempfile::tempdir().unwrap();
    let (client, metrics) = spool_client(dir.path(), dead_address(), |c| {
        c.spool_max_bytes = 64 * 1024
    });
    let mut accepted = 0;
    let err = loop {
        match client.add_amounts(
            format!("full-{accepted}"),
            "1",
            now(),
            amounts(&[(&SAMPLES, 1)]),
            meta(&[("pad", &"x".repeat(200))]),
        ) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "the spool never filled up");
    };
    assert!(matches!(err, AddError::SpoolFull { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert_eq!(err.into_event().unique_key, format!("full-{accepted}"));
    assert_eq!(metrics.events_total(Status::SpoolFull, &SAMPLES), 1);
    assert!(accepted > 10, "a 64 KiB spool holds more than a few events");
    assert_eq!(client.pending(), accepted);
}

fn batch(prefix: &str, n: usize) -> Vec<billing_client::Event> {
    (0..n)
        .map(|i| billing_client::Event {
            unique_key: format!("{prefix}-{i}"),
            internal_instance_id: "1".into(),
            occurred_at: now(),
            amounts: amounts(&[(&SAMPLES, 1)]),
            metadata: meta(&[]),
        })
        .collect()
}

#[test]
fn a_batch_shares_one_spool_write_and_every_event_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = spool_client(dir.path(), ingester.addr().to_string(), |_| {});
    for b in 0..5 {
        client.add_batch(batch(&format!("b{b}"), 1000)).unwrap();
    }
    client.flush(PATIENCE).unwrap();
    assert_eq!(metrics.events_total(Status::Success, &SAMPLES), 5000);
    assert_eq!(unique_keys(&ingester).len(), 5000);
}

#[test]
fn a_batch_that_does_not_fit_the_spool_is_refused_whole_and_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let (client, metrics) = spool_client(dir.path(), dead_address(), |c| {
        c.spool_max_bytes = 64 * 1024
    });
    client.add_batch(batch("first", 150)).unwrap();
    let err = client.add_batch(batch("big", 200)).unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(err.kind(), AddBatchErrorKind::SpoolFull, "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(err.events().len(), 200);
    assert_eq!(err.events()[199].unique_key, "big-199");
    assert_eq!(client.pending(), 150, "all or none");
    assert_eq!(metrics.events_total(Status::SpoolFull, &SAMPLES), 200);
    // A batch larger than the whole spool can never fit: refused, not retriable.
    let err = client.add_batch(batch("huge", 2000)).unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let mut with_blank = batch("ok", 3);
    with_blank[1].unique_key = " ".into();
    let err = client.add_batch(with_blank).unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert_eq!(err.kind(), AddBatchErrorKind::BlankKey);
    assert!(err.to_string().contains("blank"), "{err}");
    assert_eq!(client.pending(), 150);
}

#[test]
fn a_batch_without_a_spool_respects_max_buffered_events() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |c| c.max_buffered_events = 100);
    let err = client.add_batch(batch("m", 101)).unwrap_err();
    assert!(err.is_retriable());
    assert_eq!(err.kind(), AddBatchErrorKind::QueueFull { limit: 100 });
    assert_eq!(metrics.events_total(Status::BufferFull, &SAMPLES), 101);
    client.add_batch(batch("m", 100)).unwrap();
    client.flush(PATIENCE).unwrap();
    assert_eq!(unique_keys(&ingester).len(), 100);
}

/// The value of an unlabelled sample in Prometheus text.
fn scraped(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_registry_scrape_shows_the_spool_gauges_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _) = spool_client(dir.path(), dead_address(), |_| {});
    client.add_batch(batch("g", 40)).unwrap();
    client.close_within(Duration::ZERO);
    drop(client);

    // The next client recovers the 40 events; a scrape must show them.
    let (client, metrics) = spool_client(dir.path(), dead_address(), |_| {});
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(
        scraped(&text, "billing_client_spool_records"),
        Some(40.0),
        "{text}"
    );
    let bytes = scraped(&text, "billing_client_spool_bytes").expect("spool_bytes registered");
    assert!(
        bytes > 40.0 * 50.0,
        "40 events take more than {bytes} bytes"
    );
    assert_eq!(
        scraped(&text, "billing_client_spool_damaged_records"),
        Some(0.0)
    );
    let age = scraped(&text, "billing_client_spool_oldest_unacked_age_seconds")
        .expect("oldest_unacked_age registered");
    assert!(age >= 0.0);
    drop(client);
}
