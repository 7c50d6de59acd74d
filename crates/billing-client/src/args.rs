//! The client's settings as clap flags, with the Go client's `--billing.*` names and a
//! `BILLING_*` environment variable each, for any binary to flatten into its own command line.
//! Behind the `clap` feature (on by default) so that a service configured in code does not
//! compile clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    Config, DEFAULT_BATCH_MAX_RECORDS, DEFAULT_CONNECTIONS, DEFAULT_INGESTER,
    DEFAULT_MAX_BUFFERED_EVENTS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SPOOL_MAX_BYTES, Framing,
    IngesterPolicy, SpoolSync, SpoolWhenFull,
};
use crate::duration;
use crate::secret::{Secret, read_secret_file};

fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

fn key_file(s: &str) -> Result<Secret, String> {
    read_secret_file(std::path::Path::new(s))
}

fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a positive integer")),
        Ok(n) => Ok(n),
    }
}

/// The client's command-line flags (`#[command(flatten)]` them into your own `Parser`).
/// Every flag also reads a `BILLING_*` environment variable. `Debug` shows no key or password.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Maximum number of billing events to buffer in memory (accepted, not yet delivered).
    #[arg(long = "billing.max-buffered-events", env = "BILLING_MAX_BUFFERED_EVENTS", default_value_t = DEFAULT_MAX_BUFFERED_EVENTS, value_parser = positive, value_name = "N")]
    pub max_buffered_events: usize,
    /// How long to wait before retrying to send events to the billing ingester (first retry;
    /// later retries grow with jitter up to --billing.retry-delay-max). Go syntax: 500ms, 1m30s.
    #[arg(long = "billing.retry-delay", env = "BILLING_RETRY_DELAY", default_value = "500ms", value_parser = go_duration, value_name = "DURATION")]
    pub retry_delay: Duration,
    /// Cap of the growing retry delay; equal to --billing.retry-delay for a fixed delay.
    #[arg(long = "billing.retry-delay-max", env = "BILLING_RETRY_DELAY_MAX", default_value = "30s", value_parser = go_duration, value_name = "DURATION")]
    pub retry_delay_max: Duration,
    /// Address of the billing ingester (the sidecar, normally on localhost): host:port,
    /// tls://host:port or unix:///path; or a comma-separated list of them for failover or
    /// round-robin (--billing.ingester-policy): a,b,c.
    #[arg(long = "billing.ingester", env = "BILLING_INGESTER", default_value = DEFAULT_INGESTER, value_name = "ADDR[,...]")]
    pub ingester: String,
    /// With several ingesters: failover (the first is the primary, the others standbys in
    /// order; everything goes to one at a time) or round-robin (chunks spread over every
    /// ingester that answers).
    #[arg(long = "billing.ingester-policy", env = "BILLING_INGESTER_POLICY", value_enum, default_value_t = IngesterPolicy::Failover, value_name = "POLICY")]
    pub ingester_policy: IngesterPolicy,
    /// Failover: while chunks go to a standby, how often to check in the background whether
    /// the primary answers again (traffic returns to it once it does).
    #[arg(long = "billing.primary-recheck", env = "BILLING_PRIMARY_RECHECK", default_value = "30s", value_parser = go_duration, value_name = "DURATION")]
    pub primary_recheck: Duration,
    /// Count an event delivered only once the ingester acknowledged it. false only for peers
    /// that cannot ack: events written to a connection that then dies are lost.
    /// Given alone (Go's bare boolean form), it means true.
    #[arg(long = "billing.require-ack", env = "BILLING_REQUIRE_ACK", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = false, default_missing_value = "true", value_name = "BOOL")]
    pub require_ack: bool,
    /// How long a chunk may wait for its ack before everything unacked is resent on a new
    /// connection (to the next ingester, with several). This is what detects a half-open
    /// connection (an ingester gone without closing it).
    #[arg(long = "billing.ack-timeout", env = "BILLING_ACK_TIMEOUT", default_value = "10s", value_parser = go_duration, value_name = "DURATION")]
    pub ack_timeout: Duration,
    /// How long to wait for a TCP connection to the ingester (and its handshake). A
    /// connection that goes half-open later is detected by --billing.ack-timeout.
    #[arg(long = "billing.connect-timeout", env = "BILLING_CONNECT_TIMEOUT", default_value = "5s", value_parser = go_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// How long one write to the ingester may take (an ingester that stopped reading) before
    /// the connection is replaced and everything unacked resent.
    #[arg(long = "billing.write-timeout", env = "BILLING_WRITE_TIMEOUT", default_value = "10s", value_parser = go_duration, value_name = "DURATION")]
    pub write_timeout: Duration,
    /// How long closing the client may spend delivering what is queued.
    #[arg(long = "billing.close-timeout", env = "BILLING_CLOSE_TIMEOUT", default_value = "5s", value_parser = go_duration, value_name = "DURATION")]
    pub close_timeout: Duration,
    /// Wire framing: packed-forward (default), compressed-packed-forward, forward, message, or
    /// json-message (the Go client's JSON bytes).
    #[arg(long = "billing.framing", env = "BILLING_FRAMING", value_enum, default_value_t = Framing::PackedForward, value_name = "FRAMING")]
    pub framing: Framing,
    /// Most records per chunk.
    #[arg(long = "billing.batch-max-records", env = "BILLING_BATCH_MAX_RECORDS", default_value_t = DEFAULT_BATCH_MAX_RECORDS, value_parser = positive, value_name = "N")]
    pub batch_max_records: usize,
    /// Most unacknowledged chunks on one connection.
    #[arg(long = "billing.max-in-flight", env = "BILLING_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT, value_parser = positive, value_name = "N")]
    pub max_in_flight: usize,
    /// Connections to each ingester (each with its own --billing.max-in-flight); chunks are
    /// spread over them in turn. More than one helps where one connection is the limit.
    #[arg(long = "billing.connections", env = "BILLING_CONNECTIONS", default_value_t = DEFAULT_CONNECTIONS, value_parser = positive, value_name = "N")]
    pub connections: usize,
    /// Once the sender took events, how long later ones may wait before it takes them (it is
    /// woken sooner when half the buffer is waiting); 0: woken for every event.
    #[arg(long = "billing.linger", env = "BILLING_LINGER", default_value = "1ms", value_parser = go_duration, value_name = "DURATION")]
    pub linger: Duration,
    /// Directory of the crash-safe disk spool: accepted events survive crashes, restarts and
    /// ingester outages (one process per directory). Unset: events are kept in memory.
    #[arg(
        long = "billing.spool-dir",
        env = "BILLING_SPOOL_DIR",
        value_name = "DIR"
    )]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Bound of the spool's files in bytes.
    #[arg(long = "billing.spool-max-bytes", env = "BILLING_SPOOL_MAX_BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES, value_name = "BYTES")]
    pub spool_max_bytes: u64,
    /// When an event is accepted with a spool: fsync (after it is fsynced; group commit) or
    /// interval (at once; fsynced within --billing.spool-sync-interval, the window of loss on
    /// an OS crash).
    #[arg(long = "billing.spool-sync", env = "BILLING_SPOOL_SYNC", value_enum, default_value_t = SpoolSync::Fsync, value_name = "MODE")]
    pub spool_sync: SpoolSync,
    /// Longest fsync delay in the interval mode.
    #[arg(long = "billing.spool-sync-interval", env = "BILLING_SPOOL_SYNC_INTERVAL", default_value = "100ms", value_parser = go_duration, value_name = "DURATION")]
    pub spool_sync_interval: Duration,
    /// When the spool is full: reject (refuse the event, status spool_full) or wait (block up
    /// to --billing.spool-full-timeout for space).
    #[arg(long = "billing.spool-when-full", env = "BILLING_SPOOL_WHEN_FULL", value_enum, default_value_t = SpoolWhenFull::Reject, value_name = "POLICY")]
    pub spool_when_full: SpoolWhenFull,
    /// Longest wait for spool space with --billing.spool-when-full=wait.
    #[arg(long = "billing.spool-full-timeout", env = "BILLING_SPOOL_FULL_TIMEOUT", default_value = "1s", value_parser = go_duration, value_name = "DURATION")]
    pub spool_full_timeout: Duration,
    /// Reserve each spool segment's space when it is created, so that an fsync after an event
    /// commits data only (cheaper on ext4 and xfs); false for copy-on-write file systems.
    #[arg(long = "billing.spool-preallocate", env = "BILLING_SPOOL_PREALLOCATE", default_value_t = spool::DEFAULT_PREALLOCATE, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub spool_preallocate: bool,
    /// Shared key of an ingester with authentication (Forward protocol handshake: HELO, PING,
    /// PONG); unset: no handshake. A command line is visible to other users of the machine:
    /// prefer --billing.shared-key-file or the environment variable.
    #[arg(long = "billing.shared-key", env = "BILLING_SHARED_KEY", hide_env_values = true, value_parser = secret, value_name = "KEY", conflicts_with = "shared_key_file")]
    pub shared_key: Option<Secret>,
    /// File holding the shared key (its contents without the final line end), read when the
    /// flags are parsed; a warning is logged when its group or others may read it.
    #[arg(
        long = "billing.shared-key-file",
        env = "BILLING_SHARED_KEY_FILE",
        value_parser = key_file,
        value_name = "PATH"
    )]
    pub shared_key_file: Option<Secret>,
    /// Username for an ingester with user authentication (with a shared key).
    #[arg(
        long = "billing.username",
        env = "BILLING_USERNAME",
        default_value = "",
        value_name = "NAME"
    )]
    pub username: String,
    /// Password for an ingester with user authentication.
    #[arg(long = "billing.password", env = "BILLING_PASSWORD", hide_env_values = true, default_value = "", hide_default_value = true, value_parser = secret, value_name = "PASSWORD")]
    pub password: Secret,
    /// Our hostname in the handshake; it must differ from the ingester's [default: the
    /// machine's host name].
    #[arg(
        long = "billing.hostname",
        env = "BILLING_HOSTNAME",
        value_name = "NAME"
    )]
    pub hostname: Option<String>,
    /// CA certificate file (PEM) that signs the ingester's certificate; set, TCP connections
    /// use TLS (required for a tls:// ingester: there is no default trust store).
    #[arg(long = "billing.tls-ca", env = "BILLING_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Our certificate file (PEM) for an ingester that requires client certificates (mutual
    /// TLS); needs --billing.tls-key.
    #[arg(
        long = "billing.tls-cert",
        env = "BILLING_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key file (PEM) of --billing.tls-cert.
    #[arg(
        long = "billing.tls-key",
        env = "BILLING_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the ingester's certificate must hold [default: the host of --billing.ingester].
    #[arg(
        long = "billing.tls-server-name",
        env = "BILLING_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

/// [`Config::from_env`] found a `BILLING_*` variable it cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid BILLING_* environment: {0}")]
pub struct EnvError(String);

impl Config {
    /// The settings from the `BILLING_*` environment variables (those of [`Args`]: e.g.
    /// `BILLING_INGESTER`, `BILLING_SPOOL_DIR`), defaults for the rest; for services configured
    /// by their environment rather than flags. Needs the `clap` feature.
    ///
    /// # Errors
    /// [`EnvError`] naming the variable whose value does not parse.
    pub fn from_env() -> Result<Config, EnvError> {
        #[derive(clap::Parser)]
        struct EnvOnly {
            #[command(flatten)]
            billing: Args,
        }
        let parsed =
            <EnvOnly as clap::Parser>::try_parse_from(["billing-client"]).map_err(|e| {
                let text = e.render().to_string();
                EnvError(
                    text.lines()
                        .next()
                        .unwrap_or("invalid value")
                        .trim_start_matches("error: ")
                        .to_string(),
                )
            })?;
        Ok(parsed.billing.into())
    }
}

impl From<Args> for Config {
    fn from(a: Args) -> Self {
        Config {
            max_buffered_events: a.max_buffered_events,
            retry_delay: a.retry_delay,
            retry_delay_max: a.retry_delay_max,
            ingester: a.ingester,
            ingester_policy: a.ingester_policy,
            primary_recheck: a.primary_recheck,
            require_ack: a.require_ack,
            ack_timeout: a.ack_timeout,
            connect_timeout: a.connect_timeout,
            write_timeout: a.write_timeout,
            close_timeout: a.close_timeout,
            framing: a.framing,
            batch_max_records: a.batch_max_records,
            max_in_flight: a.max_in_flight,
            connections: a.connections,
            linger: a.linger,
            spool_dir: a.spool_dir,
            spool_max_bytes: a.spool_max_bytes,
            spool_sync: a.spool_sync,
            spool_sync_interval: a.spool_sync_interval,
            spool_when_full: a.spool_when_full,
            spool_full_timeout: a.spool_full_timeout,
            spool_preallocate: a.spool_preallocate,
            shared_key: a.shared_key.or(a.shared_key_file),
            username: a.username,
            password: a.password,
            hostname: a.hostname,
            tls_ca: a.tls_ca,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            tls_server_name: a.tls_server_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        billing: Args,
    }

    #[test]
    fn defaults_match_the_go_client() {
        let c: Config = Cli::try_parse_from(["x"]).unwrap().billing.into();
        assert_eq!(c, Config::default());
        assert_eq!(c.max_buffered_events, 1024);
        assert_eq!(c.retry_delay, Duration::from_millis(500));
        assert_eq!(c.ingester, "localhost:24225");
    }

    #[test]
    fn go_flag_names_and_durations_parse() {
        let c: Config = Cli::try_parse_from([
            "x",
            "--billing.max-buffered-events",
            "7",
            "--billing.retry-delay=1m30s",
            "--billing.ingester",
            "[::1]:9",
            "--billing.require-ack=false",
            "--billing.framing=json-message",
        ])
        .unwrap()
        .billing
        .into();
        assert_eq!(c.max_buffered_events, 7);
        assert_eq!(c.retry_delay, Duration::from_secs(90));
        assert_eq!(c.ingester, "[::1]:9");
        assert!(!c.require_ack);
        assert_eq!(c.framing, Framing::JsonMessage);
    }

    #[test]
    fn several_ingesters_policy_and_timeouts_parse() {
        let c: Config = Cli::try_parse_from([
            "x",
            "--billing.ingester=a:1,b:2",
            "--billing.ingester-policy=round-robin",
            "--billing.primary-recheck=1m",
            "--billing.write-timeout=250ms",
            "--billing.connections=3",
        ])
        .unwrap()
        .billing
        .into();
        assert_eq!(c.ingester, "a:1,b:2");
        assert_eq!(c.ingester_policy, IngesterPolicy::RoundRobin);
        assert_eq!(c.primary_recheck, Duration::from_secs(60));
        assert_eq!(c.write_timeout, Duration::from_millis(250));
        assert_eq!(c.connections, 3);
        let d: Config = Cli::try_parse_from(["x"]).unwrap().billing.into();
        assert_eq!(d.ingester_policy, IngesterPolicy::Failover);
        assert_eq!(d.primary_recheck, crate::config::DEFAULT_PRIMARY_RECHECK);
        assert_eq!(d.write_timeout, crate::config::DEFAULT_WRITE_TIMEOUT);
        assert_eq!(d.connections, 1);
        assert!(Cli::try_parse_from(["x", "--billing.connections=0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--billing.ingester-policy=random"]).is_err());
    }

    #[test]
    fn spool_preallocate_is_on_by_default_and_can_be_turned_off() {
        let d: Config = Cli::try_parse_from(["x"]).unwrap().billing.into();
        assert!(d.spool_preallocate && d.spool_options().preallocate);
        let c: Config = Cli::try_parse_from(["x", "--billing.spool-preallocate=false"])
            .unwrap()
            .billing
            .into();
        assert!(!c.spool_preallocate && !c.spool_options().preallocate);
        assert!(Cli::try_parse_from(["x", "--billing.spool-preallocate=maybe"]).is_err());
    }

    #[test]
    fn credentials_parse_and_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--billing.shared-key=k3y-s3cret",
            "--billing.username=alice",
            "--billing.password=pa55-s3cret",
            "--billing.hostname=client-1",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.billing);
        let c: Config = cli.billing.into();
        let shown_config = format!("{c:?}");
        for text in [&shown, &shown_config] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("alice"), "{text}");
        }
        let auth = c.client_auth().unwrap().unwrap();
        assert_eq!(auth.shared_key, "k3y-s3cret");
        assert_eq!(auth.password, "pa55-s3cret");
        assert_eq!(auth.hostname, "client-1");
        let from_file = format!("--billing.shared-key-file={}", file.display());
        let c: Config = Cli::try_parse_from(["x", from_file.as_str()])
            .unwrap()
            .billing
            .into();
        assert_eq!(c.shared_key.as_ref().map(Secret::expose), Some("from-file"));
        assert!(!c.client_auth().unwrap().unwrap().hostname.is_empty());
        assert!(
            Cli::try_parse_from(["x", "--billing.shared-key=a", from_file.as_str()]).is_err(),
            "a key and a key file conflict"
        );
        assert!(Cli::try_parse_from(["x", "--billing.shared-key-file=/nonexistent/k"]).is_err());
    }

    #[test]
    fn bad_flag_values_are_clear_errors() {
        for args in [
            ["x", "--billing.retry-delay=soon"],
            ["x", "--billing.max-buffered-events=0"],
            ["x", "--billing.framing=xml"],
        ] {
            let e = Cli::try_parse_from(args).err().expect("must fail");
            assert!(e.to_string().contains("billing."), "{e}");
        }
    }
}
