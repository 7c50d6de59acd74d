//! `billing ingest`: binds (TCP, TLS over TCP with `--tls-cert`/`--tls-key`, or a Unix
//! socket for `--listen unix:///path`; for TCP and TLS also UDP on the same port for fluentd's
//! heartbeat), prints `listening on ENDPOINT` on stdout (`127.0.0.1:24225`,
//! `tls://127.0.0.1:24225`, `unix:///run/billing.sock`: tests and scripts wait for that line;
//! with `--http-listen` (alias `--metrics-listen`), a second line `metrics on ADDR` follows),
//! then serves until SIGINT/SIGTERM (a Unix socket file is removed then).
//!
//! The HTTP listener serves the ingester's HTTP surface ([`billing_ingest::http`]): `/metrics`,
//! `/healthz`, `/readyz`, `/api/v1/usage`, `/api/v1/summary` and the dashboard at `/`, reading
//! the same store the ingester writes.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;
use billing_ingest::{AnyStore, Checked, IngestMetrics, Store, StoreError, StoreOutcome};
use billing_schema::validate::Policy;
use forward::Frame;

use crate::store_args::StoreArgs;
use crate::store_flags::StoreFlags;
use crate::validation_args::ValidationArgs;

use crate::server_args::ServerArgs;

/// Default listen address: where the Go client's default `--billing.ingester` points.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:24225";

/// Options of `billing ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Address to listen on: host:port or :port (port 0 picks a free port; the bound address
    /// is printed), tls://host:port (needs --tls-cert and --tls-key; with them a plain
    /// host:port speaks TLS too), or unix:///path (a Unix socket, owner-only; a stale socket
    /// file is replaced, a live one refused).
    #[arg(long, env = "BILLING_INGEST_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub store_flags: StoreFlags,
    #[command(flatten)]
    pub validation: ValidationArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Serve HTTP on ADDR [default: none]: Prometheus metrics at /metrics, /healthz, /readyz,
    /// the usage API at /api/v1/usage and /api/v1/summary, and a usage dashboard at /.
    /// --metrics-listen is the same flag (and BILLING_INGEST_METRICS_LISTEN is still read when
    /// BILLING_INGEST_HTTP_LISTEN is not set).
    #[arg(
        long,
        visible_alias = "metrics-listen",
        env = "BILLING_INGEST_HTTP_LISTEN",
        value_name = "ADDR"
    )]
    pub http_listen: Option<String>,
    /// Test only: after the N-th committed frame print `committed N` and never ack it, nor
    /// take another frame (so a test can kill the process between commit and ack).
    #[arg(long, hide = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub test_hold_after_commits: Option<u64>,
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = args.server.config()?;
    let endpoint: forward::Endpoint = args.listen.parse()?;
    match forward::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let config_auth = config.auth.clone();
    runtime.block_on(async move {
        let url = &args.store.url;
        let store = AnyStore::open_with(url, &args.store_flags.options())
            .await
            .with_context(|| format!("cannot open store {url}"))?;
        let server = forward::Server::bind_endpoint(&endpoint, config)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // The former flag's environment variable, still honoured under the new name's.
        let http_listen = args
            .http_listen
            .clone()
            .or_else(|| std::env::var("BILLING_INGEST_METRICS_LISTEN").ok().filter(|a| !a.is_empty()));
        let metrics_listener = match &http_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen for HTTP on {a}"))?,
            ),
            None => None,
        };
        let addr = server.local_endpoint()?;
        // fluentd's `heartbeat_type udp` asks on the same port over UDP, as in_forward
        // answers; an ingester whose UDP port is taken still serves TCP. A Unix socket has
        // no port to ask on.
        if let Ok(tcp) = server.local_addr() {
            match tokio::net::UdpSocket::bind(tcp).await {
                Ok(udp) => {
                    let answered = std::sync::Arc::new(AtomicU64::new(0));
                    tokio::spawn(forward::serve_udp_heartbeat(
                        udp,
                        answered,
                        std::future::pending(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(%tcp, reason = %e, "UDP heartbeat not answered: cannot bind");
                }
            }
        }
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            if let Some(l) = &metrics_listener {
                writeln!(out, "metrics on {}", l.local_addr()?)?;
            }
            out.flush()?;
        }
        match &config_auth {
            Some(auth) => tracing::info!(%addr, store = %url, hostname = ?auth.hostname, users = auth.users.as_ref().map_or(0, |u| u.len()), "ingester listening; clients must pass the shared-key handshake"),
            None => tracing::info!(%addr, store = %url, "ingester listening; no authentication (anyone who can connect can write records)"),
        }
        let metrics = IngestMetrics::new();
        let store = Arc::new(store);
        // Bound above; /readyz reports it until the forward server stops serving.
        let forward_bound = Arc::new(AtomicBool::new(true));
        if let Some(listener) = metrics_listener {
            let surface = billing_ingest::http::HttpSurface::new(
                store.clone(),
                metrics.registry(server.stats()),
                forward_bound.clone(),
            );
            tokio::spawn(billing_ingest::http::serve(
                listener,
                surface,
                std::future::pending(),
            ));
        }
        let policy = args.validation.policy();
        match args.test_hold_after_commits {
            Some(n) => {
                let held = HoldAfter {
                    store,
                    commits: AtomicU64::new(0),
                    hold_at: n,
                };
                serve(server, held, metrics, policy).await;
            }
            None => serve(server, store, metrics, policy).await,
        }
        forward_bound.store(false, Ordering::Release);
        tracing::info!("ingester stopped");
        Ok(())
    })
}

async fn serve(server: forward::Server, store: impl Store, metrics: IngestMetrics, policy: Policy) {
    let store = Arc::new(store);
    billing_ingest::serve_with_metrics(server, store, metrics, policy, shutdown_signal()).await;
}

/// `--test-hold-after-commits`: the store that commits, then stops before the ack.
struct HoldAfter {
    store: Arc<AnyStore>,
    commits: AtomicU64,
    hold_at: u64,
}

impl Store for HoldAfter {
    async fn store(&self, frame: &Frame, checked: Checked) -> Result<StoreOutcome, StoreError> {
        if self.commits.load(Ordering::SeqCst) >= self.hold_at {
            // Held: take nothing more.
            return std::future::pending().await;
        }
        let outcome = self.store.store(frame, checked).await?;
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.hold_at {
            if n == self.hold_at {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "committed {n}");
                let _ = out.flush();
            }
            std::future::pending::<()>().await;
        }
        Ok(outcome)
    }
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
