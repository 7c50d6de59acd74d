//! Client settings: a plain [`Config`] with documented `DEFAULT_*` values. The same settings as
//! clap flags are in [`crate::args`] (feature `clap`, on by default).

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// Default bound on events accepted but not yet delivered (Go: 1024).
pub const DEFAULT_MAX_BUFFERED_EVENTS: usize = 1024;
/// Default first retry delay (Go: 500ms, and Go never grew it).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Default cap of the growing retry delay.
pub const DEFAULT_RETRY_DELAY_MAX: Duration = Duration::from_secs(30);
/// Default ingester address (Go: the sidecar on localhost).
pub const DEFAULT_INGESTER: &str = "localhost:24225";
/// Default time to wait for a chunk's ack before the connection is deemed broken (this is
/// what detects a half-open connection: a peer gone without a FIN or RST).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for a TCP connection (and its handshake, with a shared key).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time one write may take before the connection is deemed broken (a peer that
/// stopped reading fills the socket buffers and blocks the write).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval at which, in the failover policy, a client delivering to a standby checks
/// in the background whether the primary ingester answers again.
pub const DEFAULT_PRIMARY_RECHECK: Duration = Duration::from_secs(30);
/// Default bound of `close()` (and drop) for delivering what is queued.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default most records per chunk.
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 4096;
/// Default most unacknowledged chunks on a connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Default connections to each ingester: one carries more than a million records a second
/// (BENCHMARKS.md), so more pay only where one connection is the limit (see
/// [`Config::connections`]).
pub const DEFAULT_CONNECTIONS: usize = 1;
/// Default linger: once the sender took events, how long later events may wait before it
/// looks again (1 ms; see [`Config::linger`]).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
/// Default bound of the spool's files on disk (1 GiB).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Default longest time an accepted event waits in the page cache before an fsync, in the
/// `interval` durability mode: the window of loss on an OS crash or power cut.
pub const DEFAULT_SPOOL_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Default wait for space when the spool is full and `spool_when_full` is `wait`.
pub const DEFAULT_SPOOL_FULL_TIMEOUT: Duration = Duration::from_secs(1);

/// When `add_amounts` returns `Ok` with a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum SpoolSync {
    /// Once the event is fsynced (group commit: concurrent callers share each fsync). An `Ok`
    /// event survives a process kill, an OS crash and a power cut.
    #[default]
    Fsync,
    /// At once, with the event written to the OS and fsynced within
    /// `spool_sync_interval`: survives a process kill; an OS crash or power cut can lose the
    /// last interval.
    Interval,
}

/// What `add_amounts` does when the spool holds `spool_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum SpoolWhenFull {
    /// Refuse the event (`AddError::SpoolFull`, counted `spool_full`).
    #[default]
    Reject,
    /// Wait up to `spool_full_timeout` for acks to free space (the call blocks), then refuse.
    Wait,
}

/// How chunks are spread over several ingesters (`ingester` is a comma-separated list).
/// With one ingester both policies behave the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum IngesterPolicy {
    /// The first ingester is the primary, the others standbys in order: everything goes to one
    /// ingester at a time; when it fails, its unacked chunks and the new ones go to the next
    /// at once. While on a standby, the primary is rechecked every `primary_recheck` and
    /// traffic returns to it once it answers.
    #[default]
    Failover,
    /// A connection to every ingester that answers; chunks are spread over them in turn (each
    /// connection with its own `max_in_flight`); a failed one's unacked chunks go to the others.
    RoundRobin,
}

/// How records are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Framing {
    /// MessagePack PackedForward, one chunk per batch (the default: fastest, acked).
    #[default]
    PackedForward,
    /// PackedForward with gzip-compressed entries.
    CompressedPackedForward,
    /// MessagePack Forward mode (an array of entries).
    Forward,
    /// One MessagePack Message per record, each with its own chunk id.
    Message,
    /// One JSON Message per record: the Go client's bytes, for ingesters that expect them.
    JsonMessage,
}

/// Client settings (`Debug` shows no key or password). Start from `Config::default()` and change what you need
/// (`let mut c = Config::default(); c.ingester = ...;`); new settings can be added without
/// breaking callers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Most events accepted and not yet delivered or dropped; `add_amounts` refuses more.
    pub max_buffered_events: usize,
    /// First delay before reconnecting after a failure.
    pub retry_delay: Duration,
    /// Cap of the retry delay, which doubles with jitter from `retry_delay`; set it equal to
    /// `retry_delay` for a fixed delay without jitter (the Go client's behaviour).
    pub retry_delay_max: Duration,
    /// The ingester's address, or a comma-separated list of addresses for failover or
    /// round-robin (see `ingester_policy`), as [`forward::Endpoint::parse_list`] reads them:
    /// `host:port` (plain TCP, or TLS when `tls_ca` is set), `:port` (this machine),
    /// `tls://host:port` (TLS; needs `tls_ca`), or `unix:///path` (a Unix socket; the TLS
    /// settings do not apply to it).
    pub ingester: String,
    /// How chunks are spread over several ingesters.
    pub ingester_policy: IngesterPolicy,
    /// Failover policy: how often the primary is rechecked (connect and handshake, in the
    /// background) while chunks go to a standby.
    pub primary_recheck: Duration,
    /// Wait for the ingester's ack before counting an event delivered. Turning this off (for
    /// peers that cannot ack) makes "delivered" mean "written to the socket": records in the
    /// socket buffers or in flight when a connection dies are lost, uncounted.
    pub require_ack: bool,
    /// How long a chunk may wait for its ack before the connection is replaced and everything
    /// unacked is resent (to the next ingester, with several). This is what detects a
    /// half-open connection (the peer gone without closing it): nothing else does.
    pub ack_timeout: Duration,
    /// How long to wait for a TCP connection (and its handshake, with a shared key). It does
    /// not detect a connection that goes half-open later: `ack_timeout` does.
    pub connect_timeout: Duration,
    /// How long one write may take before the connection is deemed broken and everything
    /// unacked is resent (a peer that stopped reading).
    pub write_timeout: Duration,
    /// Bound of `close()` for delivering what is queued; the rest is dropped as `stopping`.
    pub close_timeout: Duration,
    /// Wire framing.
    pub framing: Framing,
    /// Most records per chunk.
    pub batch_max_records: usize,
    /// Most unacknowledged chunks on one connection.
    pub max_in_flight: usize,
    /// Connections to each ingester, each with its own `max_in_flight`; chunks are spread over
    /// the connected ones in turn. More than one pays where one connection is the limit: an
    /// ingester that decodes each connection on one core, a long round trip, a TLS
    /// connection's encryption on one core. With failover, all connections go to the current
    /// target; the ingester's failure (every one of its connections down) moves them on.
    pub connections: usize,
    /// Once the sender took events, it takes the next ones after at most this long (or as soon
    /// as half the buffer, capped at a chunk, is waiting) instead of being woken for each: the
    /// caller's `add` then never pays a thread wake-up while events keep coming, and chunks
    /// fill up. The first event after a quiet spell still wakes the sender at once. Zero: wake
    /// the sender for every event (lowest delivery latency, highest cost per `add`).
    pub linger: Duration,
    /// Keep accepted events in this directory until acknowledged, so they survive crashes
    /// and restarts (`None`: in memory only, as the Go client).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Bound of the spool's files.
    pub spool_max_bytes: u64,
    /// Durability of an accepted event with a spool.
    pub spool_sync: SpoolSync,
    /// Longest fsync delay in [`SpoolSync::Interval`] mode.
    pub spool_sync_interval: Duration,
    /// Behaviour when the spool is full.
    pub spool_when_full: SpoolWhenFull,
    /// Longest wait for space with [`SpoolWhenFull::Wait`].
    pub spool_full_timeout: Duration,
    /// Reserve each spool segment's space when it is created (`fallocate`), so that an fsync
    /// after an event commits data only (see [`spool::SpoolOptions::preallocate`]); the
    /// reserved bytes count against `spool_max_bytes`. Off for file systems where reserving
    /// does not help (copy-on-write ones such as btrfs or ZFS).
    pub spool_preallocate: bool,
    /// The ingester's shared key: `Some` makes every connection start with the Forward
    /// Protocol v1 handshake (read HELO, send PING, check PONG, within `connect_timeout`), so
    /// that the ingester knows this client and this client knows it talks to the real
    /// ingester. `None` (the default): no handshake, for ingesters without authentication.
    pub shared_key: Option<Secret>,
    /// Username for an ingester with user authentication (empty: none).
    pub username: String,
    /// Password for an ingester with user authentication.
    pub password: Secret,
    /// Our hostname in the handshake; `None`: the machine's host name
    /// ([`forward::local_hostname`]). It must differ from the ingester's.
    pub hostname: Option<String>,
    /// CA certificate(s), PEM, that must have signed the ingester's certificate: `Some`
    /// makes TCP connections TLS. There is no default trust store: a `tls://` ingester needs
    /// this.
    pub tls_ca: Option<PathBuf>,
    /// Our certificate, PEM, for an ingester that requires client certificates (mutual TLS);
    /// goes with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, PEM.
    pub tls_key: Option<PathBuf>,
    /// The name the ingester's certificate must hold; `None`: the ingester address's host.
    pub tls_server_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_buffered_events: DEFAULT_MAX_BUFFERED_EVENTS,
            retry_delay: DEFAULT_RETRY_DELAY,
            retry_delay_max: DEFAULT_RETRY_DELAY_MAX,
            ingester: DEFAULT_INGESTER.to_string(),
            ingester_policy: IngesterPolicy::Failover,
            primary_recheck: DEFAULT_PRIMARY_RECHECK,
            require_ack: true,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            framing: Framing::PackedForward,
            batch_max_records: DEFAULT_BATCH_MAX_RECORDS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            connections: DEFAULT_CONNECTIONS,
            linger: DEFAULT_LINGER,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_sync: SpoolSync::Fsync,
            spool_sync_interval: DEFAULT_SPOOL_SYNC_INTERVAL,
            spool_when_full: SpoolWhenFull::Reject,
            spool_full_timeout: DEFAULT_SPOOL_FULL_TIMEOUT,
            spool_preallocate: spool::DEFAULT_PREALLOCATE,
            shared_key: None,
            username: String::new(),
            password: Secret::default(),
            hostname: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
        }
    }
}

impl Config {
    /// The handshake credentials these settings ask for: `None` without a shared key.
    ///
    /// # Errors
    /// The machine's host name cannot be read (and none is configured).
    pub fn client_auth(&self) -> Result<Option<forward::ClientAuth>, String> {
        let Some(key) = &self.shared_key else {
            return Ok(None);
        };
        let hostname = match &self.hostname {
            Some(h) => h.clone(),
            None => forward::local_hostname()
                .map_err(|e| format!("cannot read the host name (set a hostname): {e}"))?,
        };
        Ok(Some(forward::ClientAuth {
            shared_key: key.expose().to_string(),
            hostname,
            username: self.username.clone(),
            password: self.password.expose().to_string(),
        }))
    }

    /// The TLS settings these settings ask for, loaded: `None` without `tls_ca` (and no other
    /// TLS setting).
    ///
    /// # Errors
    /// A TLS setting without `tls_ca`, a certificate without its key (or the reverse), or a
    /// file that cannot be loaded (the message names it and what is wrong).
    pub fn client_tls(&self) -> Result<Option<forward::ClientTls>, String> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "tls_cert (--billing.tls-cert) needs its private key, tls_key \
                            (--billing.tls-key)"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "tls_key (--billing.tls-key) needs its certificate, tls_cert \
                            (--billing.tls-cert)"
                        .into(),
                );
            }
        };
        let Some(ca) = &self.tls_ca else {
            if identity.is_some() || self.tls_server_name.is_some() {
                return Err(
                    "TLS settings need the CA that signs the ingester's certificate: \
                            tls_ca (--billing.tls-ca)"
                        .into(),
                );
            }
            return Ok(None);
        };
        forward::ClientTls::from_pem_files(ca, identity, self.tls_server_name.as_deref())
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The spool options these settings ask for.
    pub fn spool_options(&self) -> spool::SpoolOptions {
        spool::SpoolOptions::default()
            .with_max_bytes(self.spool_max_bytes)
            .with_preallocate(self.spool_preallocate)
            .with_durability(match self.spool_sync {
                SpoolSync::Fsync => spool::Durability::Fsync,
                SpoolSync::Interval => spool::Durability::Interval(self.spool_sync_interval),
            })
            .with_when_full(match self.spool_when_full {
                SpoolWhenFull::Reject => spool::WhenFull::Reject,
                SpoolWhenFull::Wait => spool::WhenFull::Wait(self.spool_full_timeout),
            })
    }
}

/// Splits `host:port` as Go's `net.SplitHostPort` does, with a numeric port.
///
/// # Errors
/// A message naming what does not parse.
pub fn parse_host_port(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{addr:?}: missing ']' in address"))?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("{addr:?}: missing port in address"))?;
        (host, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr:?}: missing port in address"))?;
        if host.contains(':') {
            return Err(format!("{addr:?}: too many colons in address"));
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{addr:?}: invalid port {port:?}"))?;
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_like_go() {
        assert_eq!(
            parse_host_port("localhost:24225").unwrap(),
            ("localhost".into(), 24225)
        );
        assert_eq!(parse_host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(parse_host_port(":80").unwrap(), ("".into(), 80));
        for bad in ["localhost", "a:b:c", "h:99999", "h:", "[::1]"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }
}
