//! `billing bench`: throughput of the client, side by side with the Go baseline in one run;
//! with `--sink`, the load generator of `bench_load.rs` instead.
//!
//! Targets, all in this process except the Go baseline:
//! - `discard`: a socket that reads and throws away (what the Go baseline's README measures);
//!   our client runs with acks off there, like the Go client;
//! - `ack`: a forward server that decodes every frame and acks it without storing: the full
//!   acked path of the client;
//! - `sqlite`, `postgres`: end to end into a real store: the client library into an in-process
//!   ingester (the same handler and store code as `billing ingest`, on its own 2-thread
//!   runtime) writing a SQLite file in a temp dir, or PostgreSQL (`--postgres URL`, in a schema
//!   `bench_<pid>` created for the run and dropped after it). Timed until the client's `flush`
//!   returns: every chunk acked, so every record committed (deduped, rolled up).
//!
//! The producer loop mirrors the Go baseline's: add N events as fast as possible, retrying
//! a refused event after a short pause, then wait until everything is delivered.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use billing_client::{AmountType, Amounts, Client, Config, Metadata, Metrics};
use billing_ingest::{AnyStore, PgUrl, RunningIngester, StoreUrl};
use forward::{Disposition, Frame, Handler};

/// Where `--sink` sends the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sink {
    /// The ingester named by --billing.ingester (every --billing.* flag applies).
    External,
    /// An in-process peer that only delimits frames and acks their chunk ids, without decoding
    /// entries: what the client needs from a peer, so the figure is the client's own.
    Ack,
    /// An in-process `forward::Server` that decodes every frame in full and acks it, without
    /// storing it: the ingester's network and decode path without a store.
    Forward,
    /// An in-process ingester on a SQLite file in a temp dir.
    Sqlite,
    /// An in-process ingester on PostgreSQL (--postgres URL; a schema made for the run).
    Postgres,
}

/// Output of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run the load generator against this sink (see `bench_load`); without it, the
    /// side-by-side suite (discard socket, ack server, stores, Go baseline with --go).
    #[arg(long, value_enum, value_name = "SINK")]
    pub sink: Option<Sink>,
    /// Load generator: producer threads adding events concurrently.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub producers: u16,
    /// Load generator: pace all producers together to this many events/s (latency measured
    /// unsaturated) [default: as fast as possible].
    #[arg(long, value_name = "EVENTS_PER_S", value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Load generator: pace with --rate as if the run had started at this Unix time (seconds),
    /// so a load generator restarted after a crash re-adds the events it is behind on at once
    /// (with --key-prefix the store counts them as duplicates) and then keeps the rate
    /// [default: pacing starts now].
    #[arg(long, value_name = "UNIX_SECONDS", requires = "rate")]
    pub rate_since: Option<u64>,
    /// Load generator: keys PREFIX-i and amounts, instances and times a pure function of i,
    /// so a rerun the same UTC day re-adds the same events (the store dedupes them)
    /// [default: keys unique to the run].
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Load generator: output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: BenchFormat,
    /// The client's settings for the load generator (--billing.ingester with --sink external).
    #[command(flatten)]
    pub billing: billing_client::Args,
    /// Also measure the disk spool: acceptance from two producer threads in both durability
    /// modes, and client memory with a growing backlog.
    #[arg(long)]
    pub spool: bool,
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
    /// PostgreSQL to run the store target against, e.g.
    /// postgres://postgres@127.0.0.1:5432/test (a schema bench_<pid> is created there and
    /// dropped after the run) [default: no PostgreSQL run].
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Only the store targets (sqlite, postgres when given), not discard/ack/Go.
    #[arg(long)]
    pub stores_only: bool,
    /// Client's most records per chunk in the store runs.
    #[arg(long, default_value_t = STORE_BATCH, value_name = "N")]
    pub store_batch: usize,
    /// Client's most unacked chunks in the store runs.
    #[arg(long, default_value_t = STORE_IN_FLIGHT, value_name = "N")]
    pub store_in_flight: usize,
    /// Client's most buffered events in the store runs.
    #[arg(long, default_value_t = STORE_BUFFERED, value_name = "N")]
    pub store_buffered: usize,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of events per second"
        )),
    }
}

/// The amount types of bench events, in order: `--types K` takes the first K.
pub(crate) const TYPES: [AmountType; 4] = [
    AmountType::CONTAINER_SECONDS,
    AmountType::NODE_SECONDS,
    AmountType::WEAVENET_SECONDS,
    AmountType::SAMPLES,
];

/// Client settings of the store runs: the client's defaults (the flags try others).
const STORE_BATCH: usize = billing_client::DEFAULT_BATCH_MAX_RECORDS;
const STORE_IN_FLIGHT: usize = billing_client::DEFAULT_MAX_IN_FLIGHT;
const STORE_BUFFERED: usize = billing_client::DEFAULT_MAX_BUFFERED_EVENTS;

struct AckAll;

impl Handler for AckAll {
    type Error = std::convert::Infallible;
    async fn handle(
        &self,
        _peer: forward::PeerAddr,
        _frame: Frame,
    ) -> Result<Disposition, Self::Error> {
        Ok(Disposition::Ack)
    }
}

/// An in-process forward server that acks every frame, on a 1-worker runtime of its own: with
/// `full_decode`, a `forward::Server` (every frame decoded into values, as the ingester does);
/// without, a peer that finds each frame's end and its `chunk` option and acks it (the entries
/// are not decoded: [`forward::chunk_option`]).
pub(crate) struct AckTarget {
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

impl AckTarget {
    pub(crate) fn start() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    pub(crate) fn start_with(full_decode: bool) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let addr = runtime.block_on(async {
            if full_decode {
                let server =
                    forward::Server::bind("127.0.0.1:0", forward::ServerConfig::default()).await?;
                let addr = server.local_addr()?;
                tokio::spawn(server.serve(Arc::new(AckAll), std::future::pending()));
                return anyhow::Ok(addr);
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Err(e) = ack_frames(socket).await {
                            tracing::warn!(reason = %e, "bench ack sink: connection closed");
                        }
                    });
                }
            });
            anyhow::Ok(addr)
        })?;
        Ok(Self {
            _runtime: runtime,
            addr,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Acks every frame on `socket` by its chunk id, without decoding entries; all the acks of
/// the frames that arrived together go out in one write.
async fn ack_frames(mut socket: tokio::net::TcpStream) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const MAX_FRAME: usize = 64 << 20;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut acks = Vec::new();
    loop {
        if socket.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut start = 0;
        while start < buf.len() {
            let rest = &buf[start..];
            let n = match forward::check_frame(rest, MAX_FRAME)? {
                forward::Check::Complete(n) => n,
                forward::Check::Incomplete => break,
            };
            let frame = &rest[..n];
            let json = frame
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| matches!(b, b'[' | b'{'));
            if json {
                // The JSON framing: its options are read by the full parser.
                if let Some(chunk) = forward::parse_frame(frame, MAX_FRAME)?.options.chunk {
                    forward::encode::write_ack(&mut acks, &chunk, forward::Framing::Json);
                }
            } else if let Some(chunk) = forward::chunk_option(frame)? {
                forward::encode::write_ack(&mut acks, chunk, forward::Framing::MessagePack);
            }
            start += n;
        }
        buf.drain(..start);
        if !acks.is_empty() {
            socket.write_all(&acks).await?;
            acks.clear();
        }
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

/// Sends `args.events` events and returns the seconds until all were delivered.
fn run_client(addr: SocketAddr, args: &BenchArgs, cfg: Config) -> anyhow::Result<f64> {
    let names = &TYPES;
    let mut cfg = cfg;
    cfg.ingester = addr.to_string();
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
        .flush(Duration::from_secs(600))
        .context("not delivered")?;
    let secs = start.elapsed().as_secs_f64();
    client.close();
    Ok(secs)
}

fn run_ours(addr: SocketAddr, args: &BenchArgs, require_ack: bool) -> anyhow::Result<f64> {
    let cfg = {
        let mut c = Config::default();
        c.require_ack = require_ack;
        c
    };
    Ok(args.events as f64 / run_client(addr, args, cfg)?)
}

/// An in-process ingester on `store` (`billing-ingest`'s harness: the forward server, handler
/// and store code of `billing ingest`), on a 2-worker runtime of its own as `billing ingest`
/// runs on. Not [`billing_ingest::BackgroundIngester`]: its runtime has a single thread, which
/// would measure another ingester and break comparison with earlier figures.
pub(crate) struct StoreTarget {
    runtime: tokio::runtime::Runtime,
    ingester: RunningIngester<AnyStore>,
}

impl StoreTarget {
    pub(crate) fn start(url: &StoreUrl) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ingester = runtime.block_on(async {
            let store = Arc::new(
                AnyStore::open(url)
                    .await
                    .with_context(|| format!("cannot open store {url}"))?,
            );
            anyhow::Ok(RunningIngester::start("127.0.0.1:0", store).await?)
        })?;
        Ok(Self { runtime, ingester })
    }

    /// Runs the client against this ingester; records per second, checked against the store,
    /// and where the time went.
    fn run(&self, args: &BenchArgs) -> anyhow::Result<(f64, Breakdown)> {
        let cfg = {
            let mut c = Config::default();
            c.batch_max_records = args.store_batch;
            c.max_in_flight = args.store_in_flight;
            c.max_buffered_events = args.store_buffered;
            c
        };
        let secs = run_client(self.ingester.addr(), args, cfg)?;
        let records = (args.events * usize::from(args.types)) as i64;
        self.check_records(records)?;
        let (frames, store_secs) = self.ingester.metrics().commits();
        let breakdown = Breakdown {
            frames,
            records_per_frame: records as f64 / frames.max(1) as f64,
            store_share: store_secs / secs,
        };
        Ok((records as f64 / secs, breakdown))
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.ingester.addr()
    }

    /// Fails unless the store holds `records` records.
    pub(crate) fn check_records(&self, records: i64) -> anyhow::Result<()> {
        let summary = self.runtime.block_on(self.ingester.store().summary())?;
        anyhow::ensure!(
            summary.records == records,
            "the store holds {} records, {records} were sent",
            summary.records
        );
        Ok(())
    }

    pub(crate) fn stop(self) {
        self.runtime.block_on(self.ingester.shutdown());
    }
}

/// Where a store run's time went, from the ingester's own metrics.
struct Breakdown {
    frames: u64,
    records_per_frame: f64,
    /// Time inside `Store::store` (validation, transaction, commit) over the run's wall time.
    store_share: f64,
}

impl std::fmt::Display for Breakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {} frames, {:.0} records/frame, store() busy {:.0}% of the run",
            self.frames,
            self.records_per_frame,
            self.store_share * 100.0
        )
    }
}

/// A schema made for one PostgreSQL run; dropped with everything in it.
pub(crate) struct BenchSchema {
    pub(crate) name: String,
    pub(crate) url: PgUrl,
    /// `--postgres` without this crate's own parameters, for tokio-postgres: stripped here
    /// because [`PgUrl`] keeps its own tokio-postgres string private.
    conn: String,
}

impl BenchSchema {
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let name = format!("bench_{}", std::process::id());
        let url = base.parse::<PgUrl>()?.with_schema(&name)?;
        let (head, query) = base.split_once('?').unwrap_or((base, ""));
        let rest: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("schema=") && !p.starts_with("pool_size="))
            .collect();
        let conn = if rest.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", rest.join("&"))
        };
        Ok(Self { name, url, conn })
    }

    pub(crate) fn drop_schema(&self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.conn, tokio_postgres::NoTls).await?;
            let conn = tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
                .await?;
            drop(client);
            let _ = conn.await;
            anyhow::Ok(())
        })
    }
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
    if args.spool {
        crate::bench_spool::run()?;
    }
    let records = args.events * usize::from(args.types);
    println!(
        "events per run: {}, records per event: {}, records per run: {records}",
        args.events, args.types
    );
    println!("{:<62} {:>12} {:>12}", "run", "events/s", "records/s");
    let row = |name: &str, events_per_s: f64| {
        println!(
            "{name:<62} {events_per_s:>12.0} {:>12.0}",
            events_per_s * f64::from(args.types)
        );
    };
    if !args.stores_only {
        let discard = discard_server()?;
        let ack = AckTarget::start()?;
        let ack_addr = ack.addr();
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
    }
    let store_row = |name: &str, (records_per_s, breakdown): (f64, Breakdown)| {
        row(name, records_per_s / f64::from(args.types));
        println!("{breakdown}");
    };
    {
        let dir = tempfile::tempdir()?;
        let url = StoreUrl::Sqlite(dir.path().join("bench.db"));
        let target = StoreTarget::start(&url)?;
        let result = target.run(&args);
        target.stop();
        store_row(
            "rust client, acked -> ingester -> SQLite (temp file)",
            result?,
        );
    }
    if let Some(base) = &args.postgres {
        let schema = BenchSchema::new(base)?;
        let result = StoreTarget::start(&StoreUrl::Postgres(schema.url.clone())).and_then(|t| {
            let r = t.run(&args);
            t.stop();
            r
        });
        let cleanup = schema.drop_schema();
        let result = result?;
        cleanup.with_context(|| format!("cannot drop the bench schema {}", schema.name))?;
        store_row("rust client, acked -> ingester -> PostgreSQL", result);
    }
    Ok(())
}
