//! The validation policy of `billing ingest` as flags: each overridable rule of the record
//! schema (see `billing_schema::validate`, whose module docs hold the whole table) with its
//! default and an environment variable. A record that breaks a rule is quarantined with the
//! rule's reason and counted in `billing_ingest_quarantined_total{reason}`, never dropped.

use std::time::Duration;

use billing_schema::validate::{DEFAULT_MAX_METADATA_BYTES, Policy};

/// Flags of the validation policy.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidationArgs {
    /// Accept negative amount_value (credits). Without it they are quarantined
    /// (negative_amount).
    #[arg(long, env = "BILLING_INGEST_ALLOW_NEGATIVE")]
    pub allow_negative: bool,
    /// Oldest accepted occurred_at, back from the ingester's clock; older records are
    /// quarantined (too_old). Go syntax plus days: 35d, 72h.
    #[arg(long, env = "BILLING_INGEST_MAX_EVENT_AGE", default_value = "35d", value_parser = billing_client::duration::parse, value_name = "DURATION")]
    pub max_event_age: Duration,
    /// Latest accepted occurred_at, ahead of the ingester's clock; later records are
    /// quarantined (in_future).
    #[arg(long, env = "BILLING_INGEST_MAX_EVENT_FUTURE", default_value = "5m", value_parser = billing_client::duration::parse, value_name = "DURATION")]
    pub max_event_future: Duration,
    /// Most bytes of metadata keys and values per record; larger records are quarantined
    /// (metadata_too_large).
    #[arg(long, env = "BILLING_INGEST_MAX_METADATA_BYTES", default_value_t = DEFAULT_MAX_METADATA_BYTES, value_name = "BYTES")]
    pub max_metadata_bytes: usize,
    /// The amount types billed, comma-separated (e.g. container-seconds,node-seconds,samples);
    /// records of other types are quarantined (unknown_amount_type). Default: any type of the
    /// safe syntax (a-z, 0-9, '-', '_', '.'; at most 64 bytes).
    #[arg(
        long,
        env = "BILLING_INGEST_AMOUNT_TYPES",
        value_delimiter = ',',
        value_name = "TYPES"
    )]
    pub amount_types: Option<Vec<String>>,
}

impl ValidationArgs {
    /// The policy these flags ask for.
    pub fn policy(&self) -> Policy {
        Policy::default()
            .with_allow_negative(self.allow_negative)
            .with_window(self.max_event_age, self.max_event_future)
            .with_max_metadata_bytes(self.max_metadata_bytes)
            .with_amount_types(
                self.amount_types
                    .as_ref()
                    .map(|t| t.iter().map(|s| s.trim().to_string()).collect()),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_schema::validate::{DEFAULT_MAX_EVENT_AGE, DEFAULT_MAX_EVENT_FUTURE};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        v: ValidationArgs,
    }

    #[test]
    fn flag_defaults_are_the_schema_defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.v.policy(), Policy::default());
        assert_eq!(cli.v.max_event_age, DEFAULT_MAX_EVENT_AGE);
        assert_eq!(cli.v.max_event_future, DEFAULT_MAX_EVENT_FUTURE);
    }

    #[test]
    fn each_flag_overrides_its_rule() {
        let cli = Cli::try_parse_from([
            "x",
            "--allow-negative",
            "--max-event-age=2h",
            "--max-event-future=0",
            "--max-metadata-bytes=10",
            "--amount-types=samples, node-seconds",
        ])
        .unwrap();
        let p = cli.v.policy();
        assert!(p.allow_negative);
        assert_eq!(p.max_event_age, Duration::from_secs(7200));
        assert_eq!(p.max_event_future, Duration::ZERO);
        assert_eq!(p.max_metadata_bytes, 10);
        let types: Vec<_> = p.amount_types.unwrap().into_iter().collect();
        assert_eq!(types, ["node-seconds", "samples"]);
    }
}
