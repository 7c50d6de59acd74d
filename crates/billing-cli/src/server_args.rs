//! The forward server's limits as `billing ingest` flags (each also an env var
//! `BILLING_INGEST_*`), defined once so that the flag names, env vars and defaults come from
//! `forward`'s `DEFAULT_*` constants and cannot drift from what the server enforces.
//!
//! Sizes accept bytes or a binary unit (`512MiB`, `1GiB`, `64KiB`; `K`, `M`, `G` and `KB`,
//! `MB`, `GB` are read as the same binary units); durations use Go's syntax (`30s`, `5m`,
//! `1m30s`), as the Go client's flags do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use billing_client::Secret;

/// Limits and authentication of the forward listener, flattened into `billing ingest`'s args.
/// `Debug` shows no key.
#[derive(Debug, Clone, clap::Args)]
#[command(about = None, long_about = None)]
pub struct ServerArgs {
    /// Most client connections open at once; more are closed as soon as they connect (also
    /// capped by the open-file limit minus 64 descriptors kept for the store and logs).
    #[arg(
        long,
        env = "BILLING_INGEST_MAX_CONNECTIONS",
        default_value_t = forward::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Most frames of one connection being stored at once: the next frames are read and
    /// decoded while earlier ones are stored, and acked in the order they came (1: one at a
    /// time).
    #[arg(
        long,
        env = "BILLING_INGEST_FRAMES_IN_FLIGHT",
        default_value_t = forward::DEFAULT_FRAMES_IN_FLIGHT,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        value_name = "N"
    )]
    pub frames_in_flight: usize,
    /// Close a connection that sends no frame for this long (Go duration, e.g. 5m).
    #[arg(
        long,
        env = "BILLING_INGEST_IDLE_TIMEOUT",
        default_value = "5m",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub idle_timeout: Duration,
    /// Close a connection whose frame is not complete this long after its first byte, or that
    /// does not read its ack within it (time spent waiting for memory does not count).
    #[arg(
        long,
        env = "BILLING_INGEST_FRAME_TIMEOUT",
        default_value = "30s",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub frame_timeout: Duration,
    /// Memory for frames of all connections together: partial frames, frames being decoded
    /// and frames being stored (bytes, or e.g. 512MiB, 1GiB). At least 8 × --max-frame-bytes
    /// + 1MiB; a connection that would exceed it waits (stops reading) instead.
    #[arg(
        long,
        env = "BILLING_INGEST_MEMORY_LIMIT",
        default_value = "512MiB",
        value_parser = parse_size,
        value_name = "SIZE"
    )]
    pub memory_limit: usize,
    /// Largest frame accepted, compressed or not, and largest decompressed entry stream
    /// (bytes, or e.g. 8MiB).
    #[arg(
        long,
        env = "BILLING_INGEST_MAX_FRAME_BYTES",
        default_value = "8MiB",
        value_parser = parse_size,
        value_name = "SIZE"
    )]
    pub max_frame_bytes: usize,
    /// Most entries (records) in one frame; a frame with more is refused before it is decoded.
    #[arg(
        long,
        env = "BILLING_INGEST_MAX_RECORDS_PER_FRAME",
        default_value_t = forward::DEFAULT_MAX_RECORDS_PER_FRAME,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        value_name = "N"
    )]
    pub max_records_per_frame: usize,
    /// Require the Forward protocol handshake with this shared key (as fluentd's
    /// `<security> shared_key`): a client that does not prove it knows the key stores
    /// nothing. A command line is visible to other users: prefer --shared-key-file or the
    /// environment variable. [default: no authentication]
    #[arg(long, env = "BILLING_INGEST_SHARED_KEY", hide_env_values = true, value_parser = secret, value_name = "KEY", conflicts_with = "shared_key_file")]
    pub shared_key: Option<Secret>,
    /// File holding the shared key (its contents without the final line end); a warning is
    /// logged when its group or others may read it.
    #[arg(long, env = "BILLING_INGEST_SHARED_KEY_FILE", value_name = "PATH")]
    pub shared_key_file: Option<PathBuf>,
    /// Also require a user: a file of `username:password` lines (`#` starts a comment line);
    /// needs a shared key. A warning is logged when its group or others may read it.
    #[arg(long, env = "BILLING_INGEST_USERS", value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Our hostname in the handshake (a client with the same one is refused, as fluentd does)
    /// [default: the machine's host name].
    #[arg(long, env = "BILLING_INGEST_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// With TLS: close a connection whose TLS handshake is not done this long after it
    /// connected; with a shared key: one that sends no valid PING this long after that
    /// (Go duration).
    #[arg(
        long,
        env = "BILLING_INGEST_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub handshake_timeout: Duration,
    /// Speak TLS with this certificate (chain), PEM; needs --tls-key. Any listen address but
    /// a Unix socket then speaks TLS, `host:port` as well as `tls://host:port`.
    #[arg(
        long,
        env = "BILLING_INGEST_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(
        long,
        env = "BILLING_INGEST_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require every client to present a certificate signed by this CA (PEM);
    /// needs --tls-cert and --tls-key.
    #[arg(
        long,
        env = "BILLING_INGEST_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerArgs {
    /// The server settings these flags describe (reading the key and users files).
    ///
    /// # Errors
    /// A key or users file that cannot be read or parsed, users without a shared key, no
    /// readable host name, or a combination the server does not accept (see
    /// `forward::ServerConfig::validate`).
    pub fn config(&self) -> anyhow::Result<forward::ServerConfig> {
        let config = forward::ServerConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_records_per_frame: self.max_records_per_frame,
            memory_limit: self.memory_limit,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            frames_in_flight: self.frames_in_flight,
            frame_timeout: self.frame_timeout,
            auth: self.auth()?,
            handshake_timeout: self.handshake_timeout,
            tls: self.tls()?,
        };
        config.validate()?;
        Ok(config)
    }

    /// The TLS settings, loaded (`None` without --tls-cert).
    fn tls(&self) -> anyhow::Result<Option<forward::ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            if self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_client_ca.is_some() {
                bail!("TLS needs both --tls-cert and --tls-key");
            }
            return Ok(None);
        };
        Ok(Some(forward::ServerTls::from_pem_files(
            cert,
            key,
            self.tls_client_ca.as_deref(),
        )?))
    }

    fn auth(&self) -> anyhow::Result<Option<forward::ServerAuth>> {
        let key = match (&self.shared_key, &self.shared_key_file) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(path)) => {
                Some(billing_client::read_secret_file(path).map_err(anyhow::Error::msg)?)
            }
            (None, None) => None,
        };
        let Some(key) = key else {
            if let Some(users) = &self.users {
                bail!(
                    "--users {} needs a shared key (--shared-key or --shared-key-file): users                      are checked in the shared-key handshake",
                    users.display()
                );
            }
            return Ok(None);
        };
        let users = match &self.users {
            Some(path) => Some(read_users(path)?),
            None => None,
        };
        let hostname = match &self.hostname {
            Some(h) => h.clone(),
            None => {
                forward::local_hostname().context("cannot read the host name; set --hostname")?
            }
        };
        Ok(Some(forward::ServerAuth {
            shared_key: key.expose().to_string(),
            hostname,
            users,
        }))
    }
}

fn secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret::new(s))
}

/// Reads a users file: `username:password` per line (split at the first `:`), blank lines and
/// lines starting with `#` ignored.
fn read_users(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = billing_client::read_private_file(path).map_err(anyhow::Error::msg)?;
    parse_users(&text).with_context(|| format!("users file {}", path.display()))
}

/// Parses the users file's text. Errors name the line, never its password.
fn parse_users(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            bail!("line {n}: not username:password");
        };
        if user.is_empty() {
            bail!("line {n}: empty username");
        }
        if users
            .insert(user.to_string(), password.to_string())
            .is_some()
        {
            bail!("line {n}: user {user:?} appears twice");
        }
    }
    Ok(users)
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = billing_client::duration::parse(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// Parses `1048576`, `512MiB`, `1GiB`, `64KiB`, `8M`, `1.5GiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let err = || format!("invalid size {s:?} (examples: 1048576, 64KiB, 512MiB, 1GiB)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| err())?;
        let b = f * scale as f64;
        if !b.is_finite() || b < 0.0 || b >= u64::MAX as f64 {
            return Err(err());
        }
        b as u64
    } else {
        num.parse::<u64>()
            .map_err(|_| err())?
            .checked_mul(scale)
            .ok_or_else(err)?
    };
    usize::try_from(bytes).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn defaults_are_forwards() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            server: ServerArgs,
        }
        let c = Cli::parse_from(["x"]).server.config().unwrap();
        let d = forward::ServerConfig::default();
        assert_eq!(c.max_frame_bytes, d.max_frame_bytes);
        assert_eq!(c.max_records_per_frame, d.max_records_per_frame);
        assert_eq!(c.memory_limit, d.memory_limit);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.idle_timeout, d.idle_timeout);
        assert_eq!(c.frames_in_flight, d.frames_in_flight);
        assert_eq!(c.frame_timeout, d.frame_timeout);
        assert_eq!(c.handshake_timeout, forward::DEFAULT_HANDSHAKE_TIMEOUT);
        assert!(c.auth.is_none());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<forward::ServerConfig> {
        use clap::Parser as _;
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.server.config()
    }

    #[test]
    fn auth_flags_make_the_server_auth() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "# ops\nalice:pw:with:colons\n\nbob:\r\n").unwrap();
        let users_flag = format!("--users={}", users.display());
        let c = parse(&[
            "--shared-key=s3cret",
            "--hostname=ingester-1",
            users_flag.as_str(),
            "--handshake-timeout=2s",
        ])
        .unwrap();
        let auth = c.auth.clone().unwrap();
        assert_eq!(auth.shared_key, "s3cret");
        assert_eq!(auth.hostname, "ingester-1");
        let u = auth.users.unwrap();
        assert_eq!(u["alice"], "pw:with:colons");
        assert_eq!(u["bob"], "");
        assert_eq!(c.handshake_timeout, Duration::from_secs(2));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("pw:with"));

        let key = dir.path().join("key");
        std::fs::write(&key, "from-file\n").unwrap();
        let key_flag = format!("--shared-key-file={}", key.display());
        let c = parse(&[key_flag.as_str()]).unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(auth.shared_key, "from-file");
        assert!(
            !auth.hostname.is_empty(),
            "the machine's host name by default"
        );
    }

    #[test]
    fn tls_flags_go_together_and_name_a_bad_file() {
        assert!(parse(&[]).unwrap().tls.is_none());
        assert!(parse(&["--tls-cert=/x"]).is_err());
        assert!(parse(&["--tls-client-ca=/x"]).is_err());
        let e = parse(&[
            "--tls-cert=/nonexistent/c.pem",
            "--tls-key=/nonexistent/k.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn users_without_a_key_and_bad_users_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice:pw\n").unwrap();
        let users_flag = format!("--users={}", users.display());
        let e = parse(&[users_flag.as_str()]).unwrap_err().to_string();
        assert!(e.contains("needs a shared key"), "{e}");
        std::fs::write(&users, "alice:pw\nno-colon-s3cret\n").unwrap();
        let e = format!(
            "{:#}",
            parse(&["--shared-key=k", users_flag.as_str()]).unwrap_err()
        );
        assert!(e.contains("line 2") && !e.contains("s3cret"), "{e}");
        std::fs::write(&users, "alice:pw\nalice:other\n").unwrap();
        let e = format!(
            "{:#}",
            parse(&["--shared-key=k", users_flag.as_str()]).unwrap_err()
        );
        assert!(e.contains("twice"), "{e}");
        assert!(parse(&["--shared-key=k", "--shared-key-file=/x"]).is_err());
        assert!(parse(&["--shared-key-file=/nonexistent/key"]).is_err());
    }
}
