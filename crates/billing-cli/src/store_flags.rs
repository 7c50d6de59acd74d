//! Store settings of `billing ingest` beyond the store's URL, turned into the store's
//! [`StoreOptions`] at open. Kept apart from `--store` (`store_args.rs`), which `billing
//! report` shares: these only matter to the writer.

use billing_ingest::{DEFAULT_QUARANTINE_MAX_ROWS, StoreOptions};

/// The store settings of `billing ingest`, flattened into its args.
#[derive(Debug, Clone, clap::Args)]
// clap would make the doc above the `about` of any command this is flattened into.
#[command(about = None, long_about = None)]
pub struct StoreFlags {
    /// Most rows kept in the store's quarantine table; invalid records past it are counted
    /// (report --summary, metrics) but their rows are not kept.
    ///
    /// Bounds the disk a sender's invalid records can fill. A warning is logged at most once a
    /// minute while rows are left unstored. The count is taken again at every start, so
    /// deleting reviewed quarantine rows makes room. With several PostgreSQL ingesters on one
    /// database the bound may be passed by one frame per concurrently committing connection.
    #[arg(
        long,
        env = "BILLING_INGEST_QUARANTINE_MAX_ROWS",
        default_value_t = DEFAULT_QUARANTINE_MAX_ROWS,
        value_name = "N"
    )]
    pub quarantine_max_rows: u64,
}

impl StoreFlags {
    /// The store's options for these flags.
    pub fn options(&self) -> StoreOptions {
        StoreOptions::default().quarantine_max_rows(self.quarantine_max_rows)
    }
}
