//! `billing demo`: an ingester and a client in one process; sends a few events and shows
//! what the ingester stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use billing_client::{AmountType, Amounts, Client, Config, Metrics, Status};
use billing_ingest::jsonl::JsonlStore;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Events to send.
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("billing-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("records.jsonl");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (addr, stop) = runtime.block_on(async {
        let store = JsonlStore::open(&path).await?;
        let server = billing_ingest::bind("127.0.0.1:0").await?;
        let addr = server.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(billing_ingest::serve(server, Arc::new(store), async move {
            let _ = stopped.await;
        }));
        anyhow::Ok((addr, stop))
    })?;
    println!(
        "ingester listening on {addr}, storing into {}",
        path.display()
    );
    let metrics = Metrics::new();
    let client = Client::with_metrics(
        Config {
            ingester: addr.to_string(),
            max_buffered_events: args.events.max(1),
            ..Config::default()
        },
        metrics.clone(),
    )?;
    let types = [
        AmountType::CONTAINER_SECONDS,
        AmountType::NODE_SECONDS,
        AmountType::SAMPLES,
    ];
    for i in 0..args.events {
        let amounts: Amounts = types
            .iter()
            .enumerate()
            .map(|(j, t)| (t.clone(), ((i + j) % 5) as i64))
            .collect();
        client.add_amounts(
            format!("demo-{i}"),
            format!("{}", 1000 + i % 7),
            SystemTime::now(),
            amounts,
            Default::default(),
        )?;
    }
    client
        .flush(Duration::from_secs(30))
        .context("events not acknowledged")?;
    client.close();
    let _ = stop.send(());
    let lines = std::fs::read_to_string(&path)?.lines().count();
    for t in &types {
        println!(
            "{t}: {} events acknowledged, amounts {}",
            metrics.events_total(Status::Success, t),
            metrics.amounts_total(Status::Success, t)
        );
    }
    println!("{lines} records stored in {}", path.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
