//! `billing report`: usage per instance, amount type and hour/day/month from a store, the
//! store's totals (`--summary`), or one unique key's history (`--key`: its record, duplicates
//! and conflicts; exit 1 when the store does not know the key). Read-only: it never creates
//! or migrates a store.
//!
//! Values are exact sums (128-bit): a day or month of records near `i64::MAX` is printed with
//! every digit in each format; in JSON as a plain number, which readers that parse numbers
//! into doubles would round (read it as a big integer).

use std::io::Write as _;
use std::time::SystemTime;

use anyhow::Context as _;
use billing_ingest::{AnyStore, Format, Granularity, UsageQuery};

use crate::store_args::{self, StoreArgs};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum By {
    /// One bucket per UTC hour.
    Hour,
    /// One bucket per UTC day.
    Day,
    /// One bucket per UTC calendar month.
    Month,
    /// One row per instance and amount type over the whole range (bucket: its first hour
    /// with usage).
    Instance,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of {"instance","amount_type","bucket","value","records"} (summary: one
    /// object); value is an exact integer, possibly beyond 64 bits.
    Json,
}

/// Options of `billing report`.
#[derive(Debug, clap::Args)]
#[command(mut_arg(store_args::ID, |a| a.help(store_args::REPORT_HELP).long_help(None)))]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only usage at or after this hour: RFC 3339 on an hour boundary
    /// (2026-12-01T10:00:00Z) or a UTC date (2026-12-01) [default: no lower bound]. A day or
    /// month that starts before it holds only its usage from here on.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<SystemTime>,
    /// Only usage before this hour (exclusive), as --from [default: no upper bound].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<SystemTime>,
    /// Only this internal instance id [default: all].
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Only this amount type, e.g. container-seconds [default: all].
    #[arg(long = "type", value_name = "TYPE")]
    pub amount_type: Option<String>,
    /// Bucket size (UTC); day, month and instance add up the hourly rollups.
    #[arg(long, value_enum, default_value = "hour")]
    pub by: By,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Print the store's totals instead: records received, stored, duplicates, conflicts and
    /// quarantined, over every ingester and restart.
    #[arg(long, conflicts_with_all = ["from", "to", "instance", "amount_type", "by"])]
    pub summary: bool,
    /// Show one unique key instead (KEY:TYPE as stored, e.g. order-17:samples): its stored
    /// record (instance, type, amount, event time, when stored), how many duplicates of it
    /// arrived, and each conflicting version (body, first and last arrival). Exits 1, with one
    /// line on stderr, when the store has neither a record nor a conflict for the key.
    #[arg(long, value_name = "UNIQUE_KEY", conflicts_with_all = ["from", "to", "instance", "amount_type", "by", "summary"])]
    pub key: Option<String>,
}

/// RFC 3339, or a bare date meaning its midnight UTC (shared with the ingester's
/// `/api/v1/usage`, so both accept the same bounds).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    billing_ingest::parse_report_time(s)
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    let query = UsageQuery {
        from: args.from,
        to: args.to,
        instance: args.instance,
        amount_type: args.amount_type,
        by: match args.by {
            By::Hour => Granularity::Hour,
            By::Day => Granularity::Day,
            By::Month => Granularity::Month,
            By::Instance => Granularity::Instance,
        },
    };
    // Before the store is opened: a range that cannot be reported exactly is the caller's
    // mistake, whatever the store holds.
    query.check()?;
    let mut out = Vec::new();
    runtime.block_on(async {
        let url = &args.store.url;
        let store = AnyStore::open_reader(url)
            .await
            .with_context(|| format!("cannot read store {url}"))?;
        if let Some(key) = &args.key {
            let report = store.key(key).await?;
            if !report.found() {
                anyhow::bail!("{}", not_found(key));
            }
            billing_ingest::write_key(&mut out, &report, format)?;
        } else if args.summary {
            let summary = store.summary().await?;
            billing_ingest::write_summary(&mut out, &summary, format)?;
        } else {
            let rows = store.usage(&query).await?;
            billing_ingest::write_usage(&mut out, &rows, format)?;
        }
        anyhow::Ok(())
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// The one line of `--key` for a key the store does not know.
fn not_found(key: &str) -> String {
    let hint = if key.contains(':') {
        ""
    } else {
        " (unique keys are stored as KEY:TYPE, e.g. KEY:samples)"
    };
    format!("no record or conflict with unique key {key:?}{hint}")
}
