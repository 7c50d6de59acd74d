//! `billing bench`: throughput of the client, side by side with the Go baseline in one run.
//!
//! Targets, all in this process except the Go baseline:
//! - `discard`: a socket that reads and throws away (what the Go baseline's README measures);
//!   our client runs with acks off there, like the Go client;
//! - `ack`: a forward server that decodes every frame and acks it without storing: the full
//!   acked path of the client.
//!
//! The producer loop mirrors the Go baseline's: add N events as fast as possible, retrying
//! a refused event after a short pause, then wait until everything is delivered.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use billing_client::{AmountType, Amounts, Client, Config, Metadata, Metrics};
use forward::{Disposition, Frame, Handler};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events to send per run.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Amount types per event (1-4): records per event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub types: u8,
    /// Path of the Go baseline binary (shared/baselines/go-seed-client/build.sh builds it);
    /// when given, it runs against the same discard socket in the same run.
    #[arg(long, value_name = "PATH")]
    pub go: Option<std::path::PathBuf>,
}

struct AckAll;

impl Handler for AckAll {
    type Error = std::convert::Infallible;
    async fn handle(&self, _peer: SocketAddr, _frame: Frame) -> Result<Disposition, Self::Error> {
        Ok(Disposition::Ack)
    }
}

fn discard_server() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("bench-discard".into())
        .spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        })?;
    Ok(addr)
}

fn run_ours(addr: SocketAddr, args: &BenchArgs, require_ack: bool) -> anyhow::Result<f64> {
    let names = [
        AmountType::CONTAINER_SECONDS,
        AmountType::NODE_SECONDS,
        AmountType::WEAVENET_SECONDS,
        AmountType::SAMPLES,
    ];
    let cfg = Config {
        ingester: addr.to_string(),
        require_ack,
        ..Config::default()
    };
    let client = Client::with_metrics(cfg, Metrics::new())?;
    let start = Instant::now();
    for i in 0..args.events {
        let amounts: Amounts = names[..usize::from(args.types)]
            .iter()
            .map(|t| (t.clone(), i as i64 + 1))
            .collect();
        let metadata: Metadata = [("report".to_string(), format!("r-{i}"))].into();
        let mut event = billing_client::Event {
            unique_key: format!("seed-{i}"),
            internal_instance_id: "1234".into(),
            occurred_at: SystemTime::now(),
            amounts,
            metadata,
        };
        loop {
            match client.add(event) {
                Ok(()) => break,
                Err(e) if e.is_retriable() => {
                    event = e.into_event();
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    client
        .flush(Duration::from_secs(120))
        .context("not delivered")?;
    let secs = start.elapsed().as_secs_f64();
    client.close();
    Ok(args.events as f64 / secs)
}

fn run_go(
    go: &std::path::Path,
    addr: SocketAddr,
    args: &BenchArgs,
    json: bool,
) -> anyhow::Result<f64> {
    let out = std::process::Command::new(go)
        .arg(format!("-billing.ingester={addr}"))
        .arg(format!("-n={}", args.events))
        .arg(format!("-types={}", args.types))
        .arg("-transport=sync")
        .arg(format!("-json={json}"))
        .output()
        .with_context(|| format!("cannot run {}", go.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "Go baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("Go baseline printed no JSON line")?;
    line["events_per_s"]
        .as_f64()
        .context("no events_per_s in the Go baseline's output")
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let discard = discard_server()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ack_addr = runtime.block_on(async {
        let server = forward::Server::bind("127.0.0.1:0", forward::ServerConfig::default()).await?;
        let addr = server.local_addr()?;
        tokio::spawn(server.serve(Arc::new(AckAll), std::future::pending()));
        anyhow::Ok(addr)
    })?;
    println!(
        "events per run: {}, records per event: {}",
        args.events, args.types
    );
    println!("{:<58} {:>14}", "run", "events/s");
    let row = |name: &str, v: f64| println!("{name:<58} {v:>14.0}");
    if let Some(go) = &args.go {
        row(
            "go baseline, JSON, no acks -> discard socket",
            run_go(go, discard, &args, true)?,
        );
        row(
            "go baseline, MessagePack, no acks -> discard socket",
            run_go(go, discard, &args, false)?,
        );
    }
    row(
        "rust client, PackedForward, no acks -> discard socket",
        run_ours(discard, &args, false)?,
    );
    row(
        "rust client, PackedForward, acked -> forward server",
        run_ours(ack_addr, &args, true)?,
    );
    Ok(())
}
