//! `billing conflicts` and `billing quarantine list|show`: what a store kept aside, as tables,
//! CSV or JSON, without `sqlite3` or `psql`. Read-only: the store is opened for reading only
//! (`billing quarantine release`, which writes, is dispatched from here but lives in
//! `quarantine_release.rs`).
//!
//! Every list is bounded (newest first, at most `billing_ingest::MAX_LIST_ROWS` rows); bodies
//! and raw entries are printed as stored (JSON text), escaped for the format (CSV quoting, JSON
//! strings; a table shows them on one line with control characters escaped).

use std::io::Write as _;

use anyhow::Context as _;
use billing_ingest::{AnyStore, ConflictRow, ListFilter, QuarantineRow, csv_field as csv};
use serde_json::json;

use crate::quarantine_release::{self, QuarantineReleaseArgs};
use crate::report::OutputFormat;
use crate::store_args::{self, StoreArgs};

/// Options of `billing conflicts`.
#[derive(Debug, clap::Args)]
#[command(mut_arg(store_args::ID, |a| a.help(store_args::REPORT_HELP).long_help(None)))]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this unique key (KEY:TYPE, as stored).
    #[arg(long, value_name = "UNIQUE_KEY")]
    pub key: Option<String>,
    /// Most rows, newest first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `billing quarantine`.
#[derive(Debug, clap::Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined entries, newest first: id, arrival, reason, raw entry.
    List(QuarantineListArgs),
    /// Show one quarantined entry in full (JSON).
    Show(QuarantineShowArgs),
    /// Check quarantined entries again under the current policy (the flags of `billing
    /// ingest`) and store the ones that now pass, exactly once, taking them out of quarantine.
    ///
    /// Each batch of entries is one transaction: a released record is stored (or counted as a
    /// duplicate or a conflict of its key, as ingest would) and its quarantine row deleted
    /// together. Entries that still fail stay, with their current reason. Only entries refused
    /// by a policy rule (unknown_amount_type, negative_amount, too_old, in_future,
    /// metadata_too_large) or by the store (store_rejected) are checked again: the others are
    /// about the record itself. Running it twice stores nothing the second time. Counters:
    /// report --summary's records, duplicates and conflicts grow, `released` counts the
    /// entries released, `quarantined` (entries that arrived invalid) stays.
    Release(Box<QuarantineReleaseArgs>),
}

#[derive(Debug, clap::Args)]
#[command(mut_arg(store_args::ID, |a| a.help(store_args::REPORT_HELP).long_help(None)))]
pub struct QuarantineListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only reasons starting with this, e.g. amount_type or store_rejected.
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// Most rows, newest first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg(store_args::ID, |a| a.help(store_args::REPORT_HELP).long_help(None)))]
pub struct QuarantineShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The entry's id (from `billing quarantine list`).
    pub id: i64,
}

fn open(store: &StoreArgs) -> anyhow::Result<(tokio::runtime::Runtime, AnyStore)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = &store.url;
    let opened = runtime
        .block_on(AnyStore::open_reader(url))
        .with_context(|| format!("cannot read store {url}"))?;
    Ok((runtime, opened))
}

/// One line for a table: control characters escaped, so a raw entry cannot break the layout
/// or the terminal.
fn one_line(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

fn conflict_json(r: &ConflictRow) -> serde_json::Value {
    json!({
        "unique_key": r.unique_key, "first_seen": r.first_seen, "last_seen": r.last_seen,
        "count": r.count, "stored_body": r.stored_body, "received_body": r.received_body,
    })
}

fn quarantine_json(r: &QuarantineRow) -> serde_json::Value {
    json!({"id": r.id, "received_at": r.received_at, "reason": r.reason, "raw": r.raw})
}

fn print(text: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `billing conflicts`.
pub fn conflicts(args: ConflictsArgs) -> anyhow::Result<()> {
    let (runtime, store) = open(&args.store)?;
    let mut filter = ListFilter::newest(args.limit);
    if let Some(key) = args.key {
        filter = filter.key(key);
    }
    let rows = runtime.block_on(store.conflicts(&filter))?;
    let mut text = String::new();
    match args.format {
        OutputFormat::Json => {
            let all: Vec<_> = rows.iter().map(conflict_json).collect();
            text = format!("{}\n", serde_json::Value::from(all));
        }
        OutputFormat::Csv => {
            text.push_str("unique_key,first_seen,last_seen,count,stored_body,received_body\n");
            for r in &rows {
                text.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    csv(&r.unique_key),
                    r.first_seen,
                    r.last_seen,
                    r.count,
                    csv(&r.stored_body),
                    csv(&r.received_body)
                ));
            }
        }
        OutputFormat::Table => {
            for r in &rows {
                text.push_str(&format!(
                    "{}  seen {}x, first {}, last {}\n  stored:   {}\n  received: {}\n",
                    one_line(&r.unique_key),
                    r.count,
                    r.first_seen,
                    r.last_seen,
                    one_line(&r.stored_body),
                    one_line(&r.received_body)
                ));
            }
            text.push_str(&format!("{} conflicting versions\n", rows.len()));
        }
    }
    print(text)
}

/// `billing quarantine ...`.
pub fn quarantine(args: QuarantineArgs) -> anyhow::Result<()> {
    match args.command {
        QuarantineCommand::List(a) => quarantine_list(a),
        QuarantineCommand::Release(a) => quarantine_release::run(*a),
        QuarantineCommand::Show(a) => {
            let (runtime, store) = open(&a.store)?;
            let rows = runtime.block_on(store.quarantine(&ListFilter::newest(1).id(a.id)))?;
            let row = rows
                .first()
                .with_context(|| format!("no quarantined entry with id {}", a.id))?;
            let mut shown = quarantine_json(row);
            // The raw entry as JSON when it is (it is stored as JSON text).
            if let Ok(raw) = serde_json::from_str::<serde_json::Value>(&row.raw) {
                shown["raw"] = raw;
            }
            print(format!("{}\n", serde_json::to_string_pretty(&shown)?))
        }
    }
}

fn quarantine_list(args: QuarantineListArgs) -> anyhow::Result<()> {
    let (runtime, store) = open(&args.store)?;
    let mut filter = ListFilter::newest(args.limit);
    if let Some(reason) = args.reason {
        filter = filter.reason(reason);
    }
    let rows = runtime.block_on(store.quarantine(&filter))?;
    let mut text = String::new();
    match args.format {
        OutputFormat::Json => {
            let all: Vec<_> = rows.iter().map(quarantine_json).collect();
            text = format!("{}\n", serde_json::Value::from(all));
        }
        OutputFormat::Csv => {
            text.push_str("id,received_at,reason,raw\n");
            for r in &rows {
                text.push_str(&format!(
                    "{},{},{},{}\n",
                    r.id,
                    r.received_at,
                    csv(&r.reason),
                    csv(&r.raw)
                ));
            }
        }
        OutputFormat::Table => {
            for r in &rows {
                text.push_str(&format!(
                    "{:>8}  {}  {}  {}\n",
                    r.id,
                    r.received_at,
                    one_line(&r.reason),
                    one_line(&r.raw)
                ));
            }
            text.push_str(&format!("{} quarantined entries shown\n", rows.len()));
        }
    }
    print(text)
}
