//! `billing spool`: look into a client's disk spool, deliver what it holds, and (hidden) a
//! load generator the crash tests kill at random moments.
//!
//! Exit codes of `drain`: 0 everything delivered; 1 not everything within `--timeout`;
//! 2 the spool cannot be opened (e.g. locked by a running client, named by pid), or the
//! directory holds no spool (it is never created by `drain`).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Client, Metrics};

#[derive(Debug, clap::Args)]
pub struct SpoolArgs {
    #[command(subcommand)]
    pub command: SpoolCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SpoolCommand {
    /// Print what a spool directory holds: records, bytes, oldest unacked age, damaged
    /// records. Read-only; works while a client holds the directory.
    Inspect {
        /// The spool directory.
        dir: std::path::PathBuf,
    },
    /// Deliver everything in a spool directory, then exit 0; non-zero with a reason if that
    /// cannot be done within --timeout.
    Drain(Box<DrainArgs>),
    /// Add events K-0..K-(N-1) to a spool, printing each key whose add returned Ok (for crash
    /// tests); with --at, each event is a pure function of its index (see `LoadArgs::at`).
    #[command(hide = true)]
    Load(Box<LoadArgs>),
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("spool_dir", |a| a.hide(true)))]
pub struct DrainArgs {
    /// The spool directory.
    pub dir: std::path::PathBuf,
    #[command(flatten)]
    pub billing: billing_client::Args,
    /// How long to keep trying to deliver (Go syntax: 30s, 5m).
    #[arg(long, default_value = "1m", value_parser = billing_client::duration::parse, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The spool directory.
    pub dir: std::path::PathBuf,
    #[command(flatten)]
    pub billing: billing_client::Args,
    /// Key prefix.
    #[arg(long, default_value = "K")]
    pub prefix: String,
    /// First key number.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Keys to add.
    #[arg(long)]
    pub count: u64,
    /// Make event `i` a pure function of `i` and this time (RFC 3339), so a restarted loader
    /// re-adds an event with the same body (a duplicate, never a conflict): instance
    /// `torture-{i % 3}`, `occurred_at` = AT + `(i * 37) % 7200` s, `samples` = `i % 7 + 1`,
    /// and for even `i` also `node-seconds` = `i % 5 + 1` [default: instance `torture`,
    /// `samples` = 1, the time of the add].
    #[arg(long, value_parser = billing_schema::parse_rfc3339, value_name = "RFC3339")]
    pub at: Option<SystemTime>,
}

/// Event `i` of `billing spool load` (key, instance, time, amounts); see [`LoadArgs::at`].
fn load_event(
    prefix: &str,
    at: Option<SystemTime>,
    i: u64,
) -> (String, String, SystemTime, Amounts) {
    let key = format!("{prefix}-{i}");
    let Some(at) = at else {
        let amounts: Amounts = [(AmountType::SAMPLES, 1)].into();
        return (key, "torture".into(), SystemTime::now(), amounts);
    };
    let mut amounts: Amounts = [(AmountType::SAMPLES, (i % 7) as i64 + 1)].into();
    if i.is_multiple_of(2) {
        amounts.insert(AmountType::NODE_SECONDS, (i % 5) as i64 + 1);
    }
    let time = at + Duration::from_secs((i * 37) % 7200);
    (key, format!("torture-{}", i % 3), time, amounts)
}

pub fn run(args: SpoolArgs) -> ExitCode {
    match args.command {
        SpoolCommand::Inspect { dir } => inspect(&dir),
        SpoolCommand::Drain(a) => drain(*a),
        SpoolCommand::Load(a) => load(*a),
    }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("billing spool: {msg}");
    ExitCode::from(code)
}

fn inspect(dir: &std::path::Path) -> ExitCode {
    let i = match spool::inspect(dir) {
        Ok(i) => i,
        Err(e) => return fail(2, e),
    };
    let age = i
        .stats
        .oldest_unacked_age
        .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
    println!("directory:           {}", dir.display());
    println!("records (unacked):   {}", i.stats.records);
    println!("bytes:               {}", i.stats.bytes);
    println!("segments:            {}", i.stats.segments);
    println!("oldest unacked age:  {age}");
    println!(
        "damaged records:     {} ({} bytes, {} files under damaged/)",
        i.stats.damaged_records, i.damaged_bytes, i.damaged_files
    );
    println!("torn tail bytes:     {}", i.torn_tail_bytes);
    println!(
        "locked by pid:       {}",
        i.locked_by.map_or("-".to_string(), |p| p.to_string())
    );
    if !i.unknown_files.is_empty() {
        println!("unknown files:       {}", i.unknown_files.join(", "));
    }
    ExitCode::SUCCESS
}

fn open(dir: std::path::PathBuf, billing: billing_client::Args) -> Result<Client, ExitCode> {
    let mut config: billing_client::Config = billing.into();
    config.spool_dir = Some(dir);
    Client::with_metrics(config, Metrics::new()).map_err(|e| fail(2, e))
}

fn drain(a: DrainArgs) -> ExitCode {
    // Opening a spool creates one: a misspelt directory must not become an empty spool
    // "drained" successfully.
    match spool::holds_spool(&a.dir) {
        Ok(true) => {}
        Ok(false) => {
            return fail(
                2,
                format!(
                    "{} holds no spool (no LOCK, ACKS or segment file)",
                    a.dir.display()
                ),
            );
        }
        Err(e) => return fail(2, e),
    }
    if let Some(other) = &a.billing.spool_dir
        && other != &a.dir
    {
        return fail(
            2,
            format!(
                "the spool to drain is the DIR argument; --billing.spool-dir (or BILLING_SPOOL_DIR) names another: {}",
                other.display()
            ),
        );
    }
    let ingester = a.billing.ingester.clone();
    let client = match open(a.dir, a.billing) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let before = client.pending();
    let outcome = client.flush(a.timeout);
    let left = client.pending();
    client.close_within(Duration::ZERO);
    match outcome {
        Ok(()) if left == 0 => {
            println!("delivered {before} events");
            ExitCode::SUCCESS
        }
        _ => fail(
            1,
            format!(
                "{left} of {before} events not acknowledged by {ingester} within {}; they stay in the spool",
                billing_client::duration::format(a.timeout)
            ),
        ),
    }
}

fn load(a: LoadArgs) -> ExitCode {
    let client = match open(a.dir, a.billing) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    for i in a.from..a.from + a.count {
        let (key, instance, time, amounts) = load_event(&a.prefix, a.at, i);
        match client.add_amounts(key.clone(), instance, time, amounts, Default::default()) {
            Ok(()) => {
                // Printed only after Ok: every printed key must reach the ingester.
                if writeln!(out, "{key}").and_then(|_| out.flush()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => return fail(1, e),
        }
    }
    client.close_within(Duration::ZERO);
    ExitCode::SUCCESS
}
