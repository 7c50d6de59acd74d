//! `billing`: the ingester, a one-event sender, reports, the demo, benchmarks and spool tools,
//! wiring the libraries together.

mod bench;
mod bench_load;
mod bench_spool;
mod demo;
mod ingest;
mod lists_cmd;
mod quarantine_release;
mod report;
mod send;
mod server_args;
mod spool_cmd;
mod store_args;
mod store_flags;
mod validation_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The client's sender frees on its thread what callers allocated on theirs, and the ingester
// allocates per decoded record: jemalloc's thread caches serve that pattern best of the
// allocators measured (glibc's arenas halve the client's throughput; mimalloc doubles peak
// RSS and the paced `add` p99). BENCHMARKS.md, "The binary's allocator", has the figures.
// Libraries leave the choice to their users; this is the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Report and receive billable usage over the forward protocol.
#[derive(Debug, Parser)]
// A flag given twice takes its last value, as with Go's flag package (and so a wrapper can
// append an override).
#[command(
    name = "billing",
    version,
    about,
    propagate_version = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text, or json (one object per line, for log shippers). What is
    /// logged is chosen with RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=billing_client=debug);
    /// each command has its own default level.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BILLING_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an ingester: a forward server that acks each chunk once its records are stored.
    Ingest(Box<ingest::IngestArgs>),
    /// Print usage per instance, amount type and hour/day/month from a store, its totals, or
    /// one unique key's record, duplicates and conflicts (--key).
    Report(report::ReportArgs),
    /// Send one event through the client library; exit 0 only once it was acknowledged.
    Send(Box<send::SendArgs>),
    /// Run the main job in one process: an ingester and a client report a day of usage through
    /// retries and an ingester restart, then reconcile what was stored.
    Demo(demo::DemoArgs),
    /// Measure the client's throughput, side by side with the Go baseline when given.
    Bench(Box<bench::BenchArgs>),
    /// Inspect or drain a client's disk spool.
    Spool(spool_cmd::SpoolArgs),
    /// List the conflicts a store kept: keys that arrived again with a different body.
    Conflicts(Box<lists_cmd::ConflictsArgs>),
    /// List or show the entries a store quarantined (invalid records), with their reasons, or
    /// release those that pass the current policy.
    Quarantine(Box<lists_cmd::QuarantineArgs>),
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

fn main() -> ExitCode {
    // Go's forms (`-billing.ingester=h:p`, bare booleans) parse as they did for the Go client.
    let cli = match Cli::try_parse_from(billing_client::go_flags(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line: scripts read the reason from stderr. The reason may span lines (e.g.
            // the list of missing flags): they are joined, up to the usage and tip lines.
            let text = e.render().to_string();
            let reason: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| {
                    !l.starts_with("Usage:")
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .filter(|l| !l.is_empty())
                .collect();
            let reason = reason.join(" ");
            eprintln!(
                "billing: {}",
                if reason.is_empty() {
                    "invalid arguments"
                } else {
                    reason.trim_start_matches("error: ")
                }
            );
            return ExitCode::from(2);
        }
    };
    let log_format = cli.log_format;
    let init_logs = |default| init_logs(log_format, default);
    let result = match cli.command {
        Command::Ingest(args) => {
            init_logs("info");
            ingest::run(*args)
        }
        Command::Report(args) => {
            init_logs("warn");
            report::run(args)
        }
        Command::Send(args) => {
            // One line on stderr is the contract of `send`: library logs only when asked.
            init_logs("off");
            return send::run(*args);
        }
        Command::Spool(args) => {
            init_logs("warn");
            return spool_cmd::run(args);
        }
        Command::Bench(args) => {
            // The producer loop retries refused events by design: their warnings are noise here.
            init_logs("error");
            match args.sink {
                Some(sink) => bench_load::run(sink, &args),
                None => bench::run(*args),
            }
        }
        Command::Conflicts(args) => {
            init_logs("warn");
            lists_cmd::conflicts(*args)
        }
        Command::Quarantine(args) => {
            init_logs("warn");
            lists_cmd::quarantine(*args)
        }
        Command::Demo(args) => {
            init_logs("warn");
            demo::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("billing: {e:#}");
            ExitCode::FAILURE
        }
    }
}
