//! `billing ingest`: binds, prints `listening on ADDR` on stdout (tests and scripts wait for
//! that line), then serves until SIGINT/SIGTERM.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use billing_ingest::{AnyStore, StoreUrl};

/// Default listen address: where the Go client's default `--billing.ingester` points.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:24225";

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "BILLING_INGEST_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,
    /// Where records go: sqlite:PATH, postgres://USER@HOST:PORT/DB[?schema=NAME] or jsonl:PATH.
    ///
    /// sqlite:PATH: a SQLite file (created if missing; WAL, fsync on every
    /// commit). postgres://USER@HOST:PORT/DB[?schema=NAME][&pool_size=N]: PostgreSQL, tables
    /// in schema NAME (created if missing; default: the server's search_path), N connections
    /// (default 4); several ingesters may share one. jsonl:PATH: one JSON line per record
    /// ({"tag","time","record"}), no dedupe. Databases dedupe by unique_key, keep conflicting
    /// and invalid records aside and keep hourly rollups; a chunk is acked only after its
    /// transaction committed. Schema migrations run at start.
    #[arg(
        long,
        env = "BILLING_INGEST_STORE",
        default_value = billing_ingest::DEFAULT_STORE,
        value_name = "URL"
    )]
    pub store: StoreUrl,
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = AnyStore::open(&args.store)
            .await
            .with_context(|| format!("cannot open store {}", args.store))?;
        let server = billing_ingest::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = server.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        tracing::info!(%addr, store = %args.store, "ingester listening");
        billing_ingest::serve(server, Arc::new(store), shutdown_signal()).await;
        tracing::info!("ingester stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
