//! Several real ingesters on one PostgreSQL database (issue 9, point 7): two `billing ingest`
//! processes share a schema, a client lists both, the primary is SIGKILLed mid-stream and
//! restarted on its port. Every event is stored exactly once, the resends the kill caused
//! are counted as duplicates (never as conflicts or second rows), and traffic goes back to
//! the primary once it is up again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use billing_client::{AmountType, Client, Config, IngesterPolicy, Metrics, Status};
use common::*;

fn ingest_pg(url: &str, listen: &str) -> Server {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", listen, "--store", url])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    Server::spawn("billing ingest (postgres)", c)
}

/// The frames an ingester process decoded so far, from its `/metrics`.
fn frames_decoded(server: &mut Server) -> f64 {
    let metrics: std::net::SocketAddr = server.wait_line("metrics on ").parse().unwrap();
    let page = http_get(metrics, "/metrics");
    sample(&page.body, "billing_ingest_frames_total").unwrap_or(0.0)
}

/// Adds `count` events `prefix-i` of 1..=count samples each; returns the sum of their amounts.
fn add(client: &Client, prefix: &str, count: u64) -> i64 {
    let samples = AmountType::SAMPLES;
    let mut sum = 0;
    for i in 1..=count {
        let amount = i as i64;
        client
            .add_amounts(
                format!("{prefix}-{i}"),
                "inst-1",
                SystemTime::now(),
                [(samples.clone(), amount)].into_iter().collect(),
                Default::default(),
            )
            .expect("accepted");
        sum += amount;
    }
    sum
}

#[test]
fn two_ingesters_on_one_postgres_survive_a_sigkilled_primary_exactly_and_traffic_returns() {
    let Some(schema) = PgSchema::new("failover") else {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    };
    let mut primary = ingest_pg(&schema.url, "127.0.0.1:0");
    let primary_addr = primary.addr;
    let mut standby = ingest_pg(&schema.url, "127.0.0.1:0");

    let mut config = Config::default();
    config.ingester = format!("{primary_addr},{}", standby.addr);
    config.ingester_policy = IngesterPolicy::Failover;
    config.primary_recheck = Duration::from_millis(100);
    config.retry_delay = Duration::from_millis(20);
    config.retry_delay_max = Duration::from_millis(200);
    config.ack_timeout = Duration::from_secs(5);
    config.close_timeout = Duration::from_secs(30);
    config.max_buffered_events = 10_000;
    let metrics = Metrics::new();
    let client = Client::with_metrics(config, metrics.clone()).expect("config");

    // On the primary, then killed with events in flight: those not yet acked move to the
    // standby (some of them may have been committed by the primary already).
    let mut sum = add(&client, "before", 3000);
    primary.kill();
    sum += add(&client, "during", 3000);
    client
        .flush(Duration::from_secs(60))
        .expect("delivered to the standby");

    // The primary comes back on its port; traffic returns to it after a recheck. Events keep
    // coming in small flushed batches until the new primary process decoded some.
    let mut primary = ingest_pg(&schema.url, &primary_addr.to_string());
    assert_eq!(primary.addr, primary_addr, "restarted on the same port");
    let deadline = Instant::now() + POLL_DEADLINE;
    let mut round = 0;
    while frames_decoded(&mut primary) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no traffic came back to the restarted primary"
        );
        sum += add(&client, &format!("after-{round}"), 50);
        client.flush(Duration::from_secs(60)).expect("delivered");
        round += 1;
    }
    let events = 6000 + 50 * round;
    client.close();

    let samples = AmountType::SAMPLES;
    assert_eq!(metrics.events_total(Status::Success, &samples), events);
    assert_eq!(metrics.events_total(Status::Stopping, &samples), 0);
    assert_eq!(metrics.amounts_total(Status::Success, &samples), sum as u64);

    let s = summary(&schema.url);
    assert_eq!(s["records"], events, "every event stored once: {s}");
    assert_eq!(s["conflicts"], 0, "{s}");
    assert_eq!(
        s["received"].as_u64().unwrap(),
        events + s["duplicates"].as_u64().unwrap(),
        "every arrival is a record or a counted duplicate: {s}"
    );
    let total = report(&schema.url, &["--by", "month", "--format", "csv"]);
    assert_eq!(
        total.lines().last(),
        Some(format!("(all),samples,total,{sum},{events}").as_str()),
        "the stored total is the sum of the accepted amounts:\n{total}"
    );
    assert!(
        frames_decoded(&mut standby) > 0.0,
        "the standby took the traffic while the primary was down"
    );
    drop(standby);
}
