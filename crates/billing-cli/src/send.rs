//! `billing send`: one event through the library, exit status telling whether it was
//! acknowledged. Exit codes: 0 acknowledged; 1 not acknowledged within `--timeout` (ingester
//! unreachable or not acking); 2 refused before sending (bad flags, blank key, bad amount,
//! spool full or unwritable); 3 with `--billing.spool-dir`: not acknowledged within `--timeout`
//! but safely in the spool, to be delivered later.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use billing_client::{AmountType, Amounts, Client, Metadata, Metrics};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub billing: billing_client::Args,
    /// The event's unique key (records are keyed KEY:TYPE); must not be blank.
    #[arg(long, value_name = "KEY")]
    pub key: String,
    /// Internal instance id the usage belongs to.
    #[arg(long, value_name = "ID")]
    pub instance: String,
    /// When the usage occurred, RFC 3339 [default: now]. The stored record is the key's
    /// first arrival: a retry of a send must pass the same --at (and amounts), or it is a
    /// different record under the same key, counted as a conflict and not billed.
    #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
    pub at: Option<SystemTime>,
    /// An amount, TYPE=N with N an integer; repeatable, one per type (container-seconds,
    /// node-seconds, weavenet-seconds, samples, or any other type). Zero amounts are not
    /// billable and not sent.
    #[arg(long = "amount", value_name = "TYPE=N", value_parser = parse_amount, required = true)]
    pub amounts: Vec<(String, i64)>,
    /// Metadata K=V; repeatable.
    #[arg(long = "meta", value_name = "K=V", value_parser = parse_meta)]
    pub metadata: Vec<(String, String)>,
    /// How long to wait for the acknowledgement (Go syntax: 500ms, 1m30s).
    #[arg(long, default_value = "10s", value_parser = billing_client::duration::parse, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Why nothing was acknowledged, when the handshake is the reason (`billing send` logs
/// nothing else, so this is the one line that says it). `last_failure` tells a refusal for
/// our hostname (the ingester's own: fluentd's loop check) from one for the key or user.
fn handshake_hint(metrics: &Metrics, last_failure: Option<&str>) -> String {
    let same_hostname = last_failure.is_some_and(|f| f.contains("same hostname"));
    let refused = if same_hostname {
        "the ingester refused our hostname, which is its own (set --billing.hostname, or the \
         ingester's --hostname)"
    } else {
        "the ingester refused our shared key (or user)"
    };
    let reasons = [
        ("refused", refused),
        (
            "digest_mismatch",
            "the ingester does not know the shared key",
        ),
        ("hostname_loop", "the ingester has our own hostname"),
        (
            "timeout",
            "no handshake within the connect timeout (no shared key on the ingester?)",
        ),
        (
            "closed",
            "the ingester closed the connection during the handshake",
        ),
        (
            "protocol",
            "the ingester's handshake messages are malformed",
        ),
        ("io", "a socket error during the handshake"),
    ];
    let failed: Vec<&str> = reasons
        .into_iter()
        .filter(|(label, _)| metrics.handshake_failures(label) > 0)
        .map(|(_, why)| why)
        .collect();
    if failed.is_empty() {
        String::new()
    } else {
        format!("; handshake failed: {}", failed.join("; "))
    }
}

/// Why nothing was acknowledged, when TLS is the reason: the check that failed, by the
/// client's `billing_client_tls_failures_total{reason}`.
fn tls_hint(metrics: &Metrics) -> String {
    let reasons = [
        (
            "unknown_issuer",
            "certificate verify failed: unknown issuer (the ingester's certificate is not signed by the CA in --billing.tls-ca)",
        ),
        (
            "expired",
            "certificate verify failed: the ingester's certificate has expired",
        ),
        (
            "not_valid_yet",
            "certificate verify failed: the ingester's certificate is not valid yet",
        ),
        (
            "name_mismatch",
            "certificate verify failed: name mismatch (the ingester's certificate does not hold the host of --billing.ingester; see --billing.tls-server-name)",
        ),
        (
            "bad_certificate",
            "certificate verify failed: the ingester's certificate is invalid",
        ),
        (
            "client_certificate_required",
            "the ingester requires a client certificate (--billing.tls-cert, --billing.tls-key)",
        ),
        (
            "certificate_refused",
            "the ingester refused our client certificate",
        ),
        ("not_tls", "the ingester does not speak TLS"),
        (
            "closed",
            "the ingester closed the connection during the TLS handshake (does it speak TLS?)",
        ),
        ("other", "the TLS session failed"),
    ];
    let failed: Vec<&str> = reasons
        .into_iter()
        .filter(|(label, _)| metrics.tls_failures(label) > 0)
        .map(|(_, why)| why)
        .collect();
    if failed.is_empty() {
        String::new()
    } else {
        format!("; TLS: {}", failed.join("; "))
    }
}

fn parse_at(s: &str) -> Result<SystemTime, String> {
    billing_schema::parse_rfc3339(s)
}

fn parse_amount(s: &str) -> Result<(String, i64), String> {
    let (t, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not TYPE=N"))?;
    if t.trim().is_empty() {
        return Err(format!("{s:?}: amount type is empty"));
    }
    let n = n
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{s:?}: {n:?} is not an integer"))?;
    Ok((t.to_string(), n))
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not K=V"))?;
    Ok((k.to_string(), v.to_string()))
}

pub fn run(args: SendArgs) -> ExitCode {
    let fail = |code: u8, msg: String| {
        eprintln!("billing send: {msg}");
        ExitCode::from(code)
    };
    let mut amounts = Amounts::new();
    for (t, n) in args.amounts {
        if amounts.insert(AmountType::from(t.clone()), n).is_some() {
            return fail(
                2,
                format!("--amount {t} is given twice: one amount per type (add them up)"),
            );
        }
    }
    if amounts.values().all(|&n| n == 0) {
        // The library sends no record for a zero amount (as the Go client): say so rather
        // than exit 0 as if something had been acknowledged.
        println!("nothing is billable: every amount is 0, so nothing was sent");
        return ExitCode::SUCCESS;
    }
    let config: billing_client::Config = args.billing.into();
    let spooled = config.spool_dir.clone();
    let ingester = config.ingester.clone();
    let metrics = Metrics::new();
    let client = match Client::with_metrics(config, metrics.clone()) {
        Ok(c) => c,
        Err(e) => return fail(2, e.to_string()),
    };
    let metadata: Metadata = args.metadata.into_iter().collect();
    let at = args.at.unwrap_or_else(SystemTime::now);
    if let Err(e) = client.add_amounts(args.key, args.instance, at, amounts, metadata) {
        return fail(2, e.to_string());
    }
    let outcome = client.flush(args.timeout);
    let last_failure = client.last_failure();
    // Whatever is still unacknowledged is dropped at once: the exit code reports it.
    client.close_within(Duration::ZERO);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(billing_client::FlushError::Timeout { .. }) if spooled.is_some() => fail(
            3,
            format!(
                "not yet acknowledged by {ingester} within {}; the event is safe in the spool {} and will be delivered later",
                billing_client::duration::format(args.timeout),
                spooled
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ),
        ),
        Err(billing_client::FlushError::Timeout { .. }) => {
            // The cause in words: a handshake or TLS check explained, else the last failure
            // as the client saw it (refused, DNS, timeout, closed by the ingester, ...).
            let mut cause = format!(
                "{}{}",
                handshake_hint(&metrics, last_failure.as_deref()),
                tls_hint(&metrics)
            );
            if cause.is_empty() {
                cause = match last_failure {
                    Some(f) => format!(": {f}"),
                    None => {
                        ": no answer yet (still connecting, or connected and waiting for the ack)"
                            .to_string()
                    }
                };
            }
            fail(
                1,
                format!(
                    "not acknowledged by {ingester} within {}{cause}",
                    billing_client::duration::format(args.timeout),
                ),
            )
        }
        Err(e) => fail(1, e.to_string()),
    }
}
