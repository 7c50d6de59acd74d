//! Bytes on the wire: the JSON framing reproduces the Go client's bytes, and metrics carry the
//! Go names.

mod common;

use std::io::Read;
use std::time::Duration;

use billing_client::{AmountType, Client, Config, Framing, Metrics};
use common::*;

const GO_FIXTURE: &str = r#"["billing",1795754038,{"amount_type":"node-seconds","amount_value":2,"internal_instance_id":"1234","metadata":{"report":"r-1"},"occurred_at":"2026-11-27T04:33:58.46790204Z","unique_key":"seed-1:node-seconds"},{}]"#;

#[test]
fn json_message_framing_writes_the_go_clients_bytes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = {
        let mut c = Config::default();
        c.ingester = listener.local_addr().unwrap().to_string();
        c.framing = Framing::JsonMessage;
        c.require_ack = false;
        c
    };
    let client = Client::with_metrics(cfg, Metrics::new()).unwrap();
    let at = std::time::UNIX_EPOCH + Duration::new(1_795_754_038, 467_902_040);
    client
        .add_amounts(
            "seed-1",
            "1234",
            at,
            amounts(&[(&AmountType::NODE_SECONDS, 2)]),
            meta(&[("report", "r-1")]),
        )
        .unwrap();
    client.flush(PATIENCE).unwrap();
    client.close();
    let (mut sock, _) = listener.accept().unwrap();
    let mut got = String::new();
    sock.read_to_string(&mut got).unwrap();
    // The only allowed difference: the send time (second element).
    let (head, rest) = got.split_once(',').unwrap();
    let (_send_time, tail) = rest.split_once(',').unwrap();
    let normalized = format!("{head},1795754038,{tail}");
    assert_eq!(normalized, GO_FIXTURE);
}

#[test]
fn metrics_register_with_the_go_names() {
    let ingester = billing_client::testing::TestIngester::start().unwrap();
    let (client, metrics) = client_for(&ingester, |_| {});
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    client
        .add_amounts(
            "m-1",
            "1",
            now(),
            amounts(&[(&AmountType::SAMPLES, 3)]),
            meta(&[]),
        )
        .unwrap();
    client.flush(PATIENCE).unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for expected in [
        r#"billing_client_events_total{status="success",amount_type="samples"} 1"#,
        r#"billing_client_amounts_total{status="success",amount_type="samples"} 3"#,
        r#"billing_client_request_duration_seconds_count{method="Billing.AddAmounts",status_code="200"} 1"#,
        "billing_client_queued_events 0",
        r#"billing_client_unacked_amounts{amount_type="samples"} 0"#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
