//! Reporting usage from inside a tokio runtime: `add_amounts` never blocks, and
//! `flush_async` / `close_async` await the sender instead of blocking a worker.
//!
//! `BILLING_INGESTER=127.0.0.1:24225 cargo run -p billing-client --example tokio`
//! (run `billing ingest` first).

use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Client, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new(Config::from_env()?)?;
    for i in 0..100 {
        let amounts = Amounts::from([(AmountType::SAMPLES, 1)]);
        client.add_amounts(
            format!("tokio-example-{i}"),
            "instance-1",
            SystemTime::now(),
            amounts,
            Default::default(),
        )?;
        // The caller's own async work goes on meanwhile.
        tokio::task::yield_now().await;
    }
    if let Err(e) = client.flush_async(Duration::from_secs(10)).await {
        eprintln!(
            "not all delivered yet: {e}; last failure: {:?}",
            client.last_failure()
        );
    }
    let report = client.close_async(Duration::from_secs(5)).await;
    println!(
        "delivered {}, dropped {:?}",
        report.delivered, report.dropped
    );
    Ok(())
}
