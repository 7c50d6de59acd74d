//! Reporting usage from plain threads: one client shared by reference, `close` at the end.
//!
//! `cargo run -p billing-client --example thread -- --billing.ingester 127.0.0.1:24225`
//! (run `billing ingest` first; every flag also reads its `BILLING_*` variable).

use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Args, Client, Config};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    billing: Args,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Go's `-billing.ingester=host:port` works too.
    let cli = Cli::parse_from(billing_client::go_flags(std::env::args_os()));
    let config: Config = cli.billing.into();
    let client = Client::new(config)?;
    std::thread::scope(|s| {
        for worker in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..25 {
                    let amounts = Amounts::from([(AmountType::CONTAINER_SECONDS, 60)]);
                    // A key unique per unit of usage: a retry of the same usage reuses it.
                    let key = format!("example-{worker}-{i}");
                    if let Err(e) = client.add_amounts(
                        key,
                        "instance-1",
                        SystemTime::now(),
                        amounts,
                        Default::default(),
                    ) {
                        eprintln!("not accepted: {e}");
                    }
                }
            });
        }
    });
    if let Err(e) = client.flush(Duration::from_secs(10)) {
        eprintln!(
            "not all delivered yet: {e}; last failure: {:?}",
            client.last_failure()
        );
    }
    let report = client.close();
    println!(
        "delivered {}, dropped {}",
        report.delivered,
        report.dropped_total()
    );
    Ok(())
}
