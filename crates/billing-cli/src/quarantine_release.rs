//! `billing quarantine release`: quarantined entries checked again under the current
//! validation policy (the very flags of `billing ingest`), the ones that now pass stored and
//! taken out of quarantine. Kept apart from the read-only lists (`lists_cmd.rs`): this command
//! writes to the store (and so opens it as `billing ingest` does, migrating it if needed).
//!
//! What a release guarantees is the library's (`billing_ingest::Released`, and its module
//! docs): one transaction per batch, a record stored once whatever happens, counters kept
//! consistent (`quarantined` stays a historical count, `quarantine_rows` drops, `released`
//! grows). This module turns flags into a filter and a policy, and prints what was done: a
//! few lines for people, or one JSON object / `name,value` CSV lines for scripts. Exit 0
//! whenever the release ran, even when entries still fail (they are counted by reason).

use std::io::Write as _;
use std::time::SystemTime;

use anyhow::Context as _;
use billing_ingest::{AnyStore, ReleaseFilter, Released};

use crate::report::OutputFormat;
use crate::store_args::{self, StoreArgs};
use crate::validation_args::ValidationArgs;

/// `billing --help`'s text for the release's `--store`.
const STORE_HELP: &str = "The store to release from (the same URLs as `billing ingest --store`; \
     migrated like ingest would; jsonl: has no quarantine)";

/// Options of `billing quarantine release`.
#[derive(Debug, clap::Args)]
#[command(mut_arg(store_args::ID, |a| a.help(STORE_HELP).long_help(None)))]
pub struct QuarantineReleaseArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The policy to check the entries against, as `billing ingest` takes it.
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Only entries whose reason starts with this, e.g. too_old or unknown_amount_type
    /// [default: every entry].
    #[arg(long, value_name = "PREFIX", conflicts_with = "id")]
    pub reason: Option<String>,
    /// Only the entries with these ids (from `billing quarantine list`): --id 3 --id 7, or
    /// --id 3,7.
    #[arg(long, value_name = "ID", value_delimiter = ',', num_args = 1..)]
    pub id: Vec<i64>,
    /// Check and count as a release would, and change nothing. It runs in one transaction
    /// (with SQLite, ingesters wait for it): narrow it with --reason or --id on a large
    /// quarantine.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `billing quarantine release`.
pub fn run(args: QuarantineReleaseArgs) -> anyhow::Result<()> {
    let mut filter = ReleaseFilter::all();
    if let Some(reason) = &args.reason {
        filter = filter.reason(reason.clone());
    }
    if !args.id.is_empty() {
        filter = filter.ids(args.id.iter().copied());
    }
    let policy = args.validation.policy();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let released = runtime.block_on(async {
        let url = &args.store.url;
        let store = AnyStore::open(url)
            .await
            .with_context(|| format!("cannot open store {url}"))?;
        let released = store
            .release(&filter, &policy, SystemTime::now(), args.dry_run)
            .await
            .with_context(|| format!("release from {url} failed"))?;
        if let AnyStore::Sqlite(s) = store {
            s.close().await;
        }
        anyhow::Ok(released)
    })?;
    let text = match args.format {
        OutputFormat::Json => json(&released),
        OutputFormat::Csv => csv(&released),
        OutputFormat::Table => table(&released),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `{"dry_run","examined","released","stored","duplicates","conflicts","still_failing",
/// "still_failing_by_reason":{REASON:N},"stored_amounts":{TYPE:{"value","records"}}}`, values
/// exact (written by hand: a sum may pass 64 bits).
fn json(r: &Released) -> String {
    let reasons = serde_json::Value::from(
        r.still_failing
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>(),
    );
    let amounts: Vec<String> = r
        .amounts
        .iter()
        .map(|(t, (value, records))| {
            format!(
                "{}:{{\"value\":{value},\"records\":{records}}}",
                serde_json::Value::from(t.as_str())
            )
        })
        .collect();
    format!(
        "{{\"dry_run\":{},\"examined\":{},\"released\":{},\"stored\":{},\"duplicates\":{},\"conflicts\":{},\"still_failing\":{},\"still_failing_by_reason\":{reasons},\"stored_amounts\":{{{}}}}}\n",
        r.dry_run,
        r.examined,
        r.released(),
        r.stored,
        r.duplicates,
        r.conflicts,
        r.failing(),
        amounts.join(",")
    )
}

/// `name,value` lines: the counts, `still_failing:REASON` and `stored_amount:TYPE` (sums).
fn csv(r: &Released) -> String {
    let mut text = format!(
        "name,value\ndry_run,{}\nexamined,{}\nreleased,{}\nstored,{}\nduplicates,{}\nconflicts,{}\nstill_failing,{}\n",
        r.dry_run,
        r.examined,
        r.released(),
        r.stored,
        r.duplicates,
        r.conflicts,
        r.failing()
    );
    for (reason, n) in &r.still_failing {
        text.push_str(&format!(
            "{},{n}\n",
            billing_ingest::csv_field(&format!("still_failing:{reason}"))
        ));
    }
    for (t, (value, _)) in &r.amounts {
        text.push_str(&format!(
            "{},{value}\n",
            billing_ingest::csv_field(&format!("stored_amount:{t}"))
        ));
    }
    text
}

fn table(r: &Released) -> String {
    let verb = if r.dry_run {
        "dry run, nothing changed: would release"
    } else {
        "released"
    };
    let mut text = format!(
        "{verb} {} of {} quarantined entries examined: stored {}, duplicates {}, conflicts {}\n",
        r.released(),
        r.examined,
        r.stored,
        r.duplicates,
        r.conflicts
    );
    if !r.amounts.is_empty() {
        let amounts: Vec<String> = r
            .amounts
            .iter()
            .map(|(t, (value, records))| format!("{t} {value} ({records} records)"))
            .collect();
        text.push_str(&format!("stored amounts: {}\n", amounts.join(", ")));
    }
    let reasons: Vec<String> = r
        .still_failing
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    text.push_str(&format!("still failing {}", r.failing()));
    if !reasons.is_empty() {
        text.push_str(&format!(": {}", reasons.join(", ")));
    }
    text.push('\n');
    text
}
