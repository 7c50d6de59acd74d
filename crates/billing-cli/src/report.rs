//! `billing report`: usage per instance, amount type and hour/day/month from a store, or the
//! store's totals (`--summary`). Read-only: it never creates or migrates a store.
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
        if args.summary {
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
