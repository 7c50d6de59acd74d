//! The client works from plain threads and from inside tokio runtimes of either flavour,
//! without needing one; its async API (`flush_async`, `close_async`) and `Drop` never block a
//! runtime's worker.

mod common;

use billing_client::testing::TestIngester;
use billing_client::{AmountType, Status};
use common::*;

fn send_and_flush() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts(
            "rt",
            "1",
            now(),
            amounts(&[(&AmountType::SAMPLES, 1)]),
            meta(&[]),
        )
        .unwrap();
    client.flush(PATIENCE).unwrap();
    drop(client);
    assert_eq!(
        metrics.events_total(Status::Success, &AmountType::SAMPLES),
        1
    );
}

#[test]
fn works_without_a_runtime() {
    send_and_flush();
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_a_current_thread_runtime() {
    send_and_flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_multi_thread_runtime() {
    send_and_flush();
}

/// The async API inside a runtime: adds, `flush_async` and `close_async` never block the
/// worker. On a current-thread runtime a blocking wait would starve the other task of this
/// test (which must keep running on the same thread), so its progress proves the point.
async fn async_flush_and_close_report() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    for i in 0..50 {
        client
            .add_amounts(
                format!("async-{i}"),
                "1",
                now(),
                amounts(&[(&AmountType::SAMPLES, 1)]),
                meta(&[]),
            )
            .unwrap();
    }
    client.flush_async(PATIENCE).await.unwrap();
    assert_eq!(
        metrics.events_total(Status::Success, &AmountType::SAMPLES),
        50
    );
    let blank = client.add_amounts(
        " ",
        "1",
        now(),
        amounts(&[(&AmountType::SAMPLES, 1)]),
        meta(&[]),
    );
    assert!(blank.is_err());
    let report = client.close_async(PATIENCE).await;
    assert_eq!(report.delivered, 50);
    assert_eq!(report.dropped, vec![(Status::Invalid, 1)]);
    assert_eq!(report.dropped_total(), 1);
    assert_eq!(report.left_in_spool, 0);
    assert_eq!(
        client.close(),
        report,
        "close is idempotent and reports the same"
    );
    assert!(
        ticks.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the other task ran while the client waited"
    );
    ticker.abort();
    assert_eq!(unique_keys(&ingester).len(), 50);
}

#[tokio::test(flavor = "current_thread")]
async fn flush_async_and_close_async_inside_a_current_thread_runtime() {
    async_flush_and_close_report().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_async_and_close_async_inside_a_multi_thread_runtime() {
    async_flush_and_close_report().await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_a_client_inside_a_runtime_returns_at_once_and_still_delivers() {
    let ingester = TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    client
        .add_amounts(
            "dropped",
            "1",
            now(),
            amounts(&[(&AmountType::SAMPLES, 1)]),
            meta(&[]),
        )
        .unwrap();
    drop(client);
    // The detached sender delivers within its close timeout; wait for the ingester to see it.
    assert!(ingester.wait_for_records(1, PATIENCE), "not delivered");
    let deadline = std::time::Instant::now() + PATIENCE;
    while metrics.events_total(Status::Success, &AmountType::SAMPLES) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not counted delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
