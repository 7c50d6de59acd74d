//! The `--store URL` option of `billing ingest` and `billing report`, defined once. The writer
//! and the reader of a store must agree on how it is named: with one definition the env var
//! (`BILLING_INGEST_STORE`), the default and the accepted URLs cannot drift apart, so
//! `billing report` with no flags reads the very store `billing ingest` with no flags writes.
//!
//! The help text here is the writer's (it describes every URL form); a command that needs
//! other wording overrides only the text (`mut_arg(ID, ...)` on its args, as `billing report`
//! does with [`REPORT_HELP`]), never the name, env var or default.

use billing_ingest::StoreUrl;

/// The `--store` option, flattened into a command's args.
#[derive(Debug, Clone, clap::Args)]
// clap would make the doc above the `about` of any command this is flattened into.
#[command(about = None, long_about = None)]
pub struct StoreArgs {
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
        id = ID,
        long = "store",
        env = "BILLING_INGEST_STORE",
        default_value = billing_ingest::DEFAULT_STORE,
        value_name = "URL"
    )]
    pub url: StoreUrl,
}

/// The option's id, for `mut_arg`.
pub const ID: &str = "store";

/// `billing report`'s help for `--store`: it only reads, and jsonl: cannot be read back.
/// (No final period: clap's derive drops it from one-line docs, and this must read the same.)
pub const REPORT_HELP: &str =
    "The store to read (the same URLs as `billing ingest --store`; jsonl: has no reports)";

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn ingest_and_report_take_the_same_store_option() {
        let cli = crate::Cli::command();
        cli.clone().debug_assert();
        for name in ["ingest", "report"] {
            let cmd = cli.find_subcommand(name).expect(name);
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == ID)
                .unwrap_or_else(|| panic!("billing {name} has no --store"));
            assert_eq!(arg.get_long(), Some("store"), "{name}");
            assert_eq!(
                arg.get_env(),
                Some(std::ffi::OsStr::new("BILLING_INGEST_STORE")),
                "{name}"
            );
            assert_eq!(
                arg.get_default_values(),
                [billing_ingest::DEFAULT_STORE],
                "{name}"
            );
        }
    }
}
