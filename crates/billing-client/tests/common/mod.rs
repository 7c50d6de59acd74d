//! Shared helpers for the client's integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use billing_client::testing::TestIngester;
use billing_client::{AmountType, Amounts, Client, Config, Metadata, Metrics};

/// Long enough to never fire on a healthy machine; tests never assert on time.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn amounts(pairs: &[(&AmountType, i64)]) -> Amounts {
    pairs.iter().map(|(t, v)| ((*t).clone(), *v)).collect()
}

pub fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A client with its own metrics, pointed at `ingester`, changed by `tweak`.
pub fn client_for(ingester: &TestIngester, tweak: impl FnOnce(&mut Config)) -> (Client, Metrics) {
    let mut cfg = ingester.client_config();
    tweak(&mut cfg);
    let metrics = Metrics::new();
    (
        Client::with_metrics(cfg, metrics.clone()).expect("valid config"),
        metrics,
    )
}

/// The set of `unique_key`s among received records.
pub fn unique_keys(ingester: &TestIngester) -> BTreeSet<String> {
    ingester
        .records()
        .iter()
        .map(|r| {
            r["unique_key"]
                .as_str()
                .expect("unique_key is a string")
                .to_string()
        })
        .collect()
}

/// An address where nothing listens (a listener bound and closed at once).
pub fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

pub fn now() -> SystemTime {
    SystemTime::now()
}
