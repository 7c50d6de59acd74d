//! The client works from plain threads and from inside tokio runtimes of either flavour,
//! without needing one.

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
