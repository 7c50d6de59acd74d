//! The forward server's limits as `billing ingest` flags (each also an env var
//! `BILLING_INGEST_*`), defined once so that the flag names, env vars and defaults come from
//! `forward`'s `DEFAULT_*` constants and cannot drift from what the server enforces.
//!
//! Sizes accept bytes or a binary unit (`512MiB`, `1GiB`, `64KiB`; `K`, `M`, `G` and `KB`,
//! `MB`, `GB` are read as the same binary units); durations use Go's syntax (`30s`, `5m`,
//! `1m30s`), as the Go client's flags do.

use std::time::Duration;

/// Limits of the forward listener, flattened into `billing ingest`'s args.
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
}

impl ServerArgs {
    /// The server settings these flags describe.
    ///
    /// # Errors
    /// The combination is not one the server accepts (see `forward::ServerConfig::validate`).
    pub fn config(&self) -> Result<forward::ServerConfig, forward::ConfigError> {
        let config = forward::ServerConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_records_per_frame: self.max_records_per_frame,
            memory_limit: self.memory_limit,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
        };
        config.validate()?;
        Ok(config)
    }
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
        assert_eq!(c.frame_timeout, d.frame_timeout);
    }
}
