//! What one sender may cost the server, and how the server says it refused.
//!
//! Why: the ingester must not be knockable by one bad sender. Each limit here is a
//! [`ServerConfig`] field with a `DEFAULT_*` constant; each time one is hit the connection is
//! closed (or not accepted), the reason is counted in [`ServerStats`](crate::ServerStats) and
//! logged, at most one line per reason every [`LOG_INTERVAL`] with the number of lines left
//! out since the last one, so a flood of bad clients cannot flood the log either.
//!
//! Invariants: a config that [`ServerConfig::validate`] refused is never served; the
//! effective connection limit leaves [`NOFILE_HEADROOM`] descriptors for everything else
//! the process opens (its listener, its store, its metrics endpoint, logs).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::budget::{SMALL_FRAME_BYTES, decode_ceiling};
use crate::handshake::{ServerAuth, ServerHandshake};
use crate::model::{DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_RECORDS_PER_FRAME};
use crate::peer_addr::PeerAddr;
use crate::tls::ServerTls;

/// Default most connections open at once; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default longest time a connection may stay open without sending a frame (measured from
/// its opening or its last frame, until a frame's first byte).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Default longest time a client may take to send one frame, from its first byte to its
/// last (time the server spent waiting for memory does not count), and to read one ack.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default longest time a client of a server with authentication ([`ServerConfig::auth`]) may
/// take, from its connection, to send a valid PING (fluentd has no such limit; without one, a
/// peer that never answers the HELO would hold a connection slot until the idle timeout).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default most frames of one connection being handled at once: the server reads and decodes
/// the next frames while earlier ones are stored, and acks them in order.
pub const DEFAULT_FRAMES_IN_FLIGHT: usize = 8;

/// Default memory budget of the whole server (partial frames buffered, frames being decoded
/// or handled), in bytes.
pub const DEFAULT_MEMORY_LIMIT: usize = 512 * 1024 * 1024;

/// Descriptors kept free for the rest of the process: the connection limit is at most the
/// open-file soft limit minus this.
pub const NOFILE_HEADROOM: usize = 64;

/// Least memory budget per byte of `max_frame_bytes`: half the budget is the reserve that
/// always lets one frame complete, and it must hold the frame's buffer, its inflated
/// entries, and its decoded form (at least twice its size).
pub const MEMORY_LIMIT_PER_FRAME_BYTE: usize = 8;

/// Shortest interval between two log lines for the same reason.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Server settings. Defaults are the `DEFAULT_*` constants; [`ServerConfig::validate`] says
/// which combinations are served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted, compressed or not (and largest decompressed entry stream).
    pub max_frame_bytes: usize,
    /// Most entries in one frame; a frame announcing or holding more is refused before its
    /// entries are decoded.
    pub max_records_per_frame: usize,
    /// Memory budget of all connections together, in bytes (see [`MEMORY_LIMIT_PER_FRAME_BYTE`]).
    pub memory_limit: usize,
    /// Most connections open at once (further capped by the open-file limit, see
    /// [`NOFILE_HEADROOM`]).
    pub max_connections: usize,
    /// Longest time without a frame before the connection is closed (a connection whose
    /// frames are being handled is not idle).
    pub idle_timeout: Duration,
    /// Most frames of one connection handed to the handler and not yet answered: the server
    /// reads and decodes the next frames while earlier ones are handled (concurrently, each in
    /// its own task), and answers them in the order they came. 1: one frame at a time.
    pub frames_in_flight: usize,
    /// Longest time to send one frame once its first byte arrived (and to read one ack).
    pub frame_timeout: Duration,
    /// Shared key (and optional user) authentication: `Some` makes every connection start with
    /// the Forward Protocol v1 handshake (HELO, PING, PONG) and refuses JSON framing, as
    /// fluentd's `<security>` does; `None` (the default) serves anyone who connects.
    pub auth: Option<ServerAuth>,
    /// Longest time from a connection's accept to a valid PING when [`ServerConfig::auth`] is
    /// set; the connection is closed (counted `handshake_timeouts`) when it passes.
    pub handshake_timeout: Duration,
    /// TLS: `Some` makes every TCP connection start with a TLS handshake (in the connection's
    /// own task, within `handshake_timeout`; a failure is counted `tls_handshake_failures`),
    /// and the shared-key handshake, if any, then runs inside TLS. A Unix socket cannot be
    /// served with TLS (its file permissions are its access control). `None`: plain TCP.
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_records_per_frame: DEFAULT_MAX_RECORDS_PER_FRAME,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            frames_in_flight: DEFAULT_FRAMES_IN_FLIGHT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            auth: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls: None,
        }
    }
}

/// Why a [`ServerConfig`] cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server config: {0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// Checks the settings: every limit positive, `auth` (when set) within the handshake's
    /// bounds (shared key and hostname 1 to 1024 and 255 bytes, credentials at most 1024), `max_frame_bytes` at least
    /// [`SMALL_FRAME_BYTES`], and `memory_limit` at least [`MEMORY_LIMIT_PER_FRAME_BYTE`] ×
    /// `max_frame_bytes` + 1 MiB (so that one frame of the largest size can always be read,
    /// inflated and decoded within the reserve, however the rest of the budget is held).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that does not fit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.max_frame_bytes < SMALL_FRAME_BYTES {
            return err(format!(
                "max_frame_bytes must be at least {SMALL_FRAME_BYTES}"
            ));
        }
        if self.max_records_per_frame == 0 {
            return err("max_records_per_frame must be at least 1".into());
        }
        if self.max_connections == 0 {
            return err("max_connections must be at least 1".into());
        }
        if self.frames_in_flight == 0 {
            return err("frames_in_flight must be at least 1".into());
        }
        if self.idle_timeout.is_zero()
            || self.frame_timeout.is_zero()
            || self.handshake_timeout.is_zero()
        {
            return err("timeouts must be longer than zero".into());
        }
        if let Some(auth) = &self.auth {
            // The same checks a connection's handshake makes, once, before serving.
            if let Err(e) = ServerHandshake::new(auth.clone()) {
                return err(format!("auth: {e}"));
            }
        }
        let least = self
            .max_frame_bytes
            .saturating_mul(MEMORY_LIMIT_PER_FRAME_BYTE)
            .saturating_add(1 << 20);
        if self.memory_limit < least
            || decode_ceiling(self.memory_limit, self.max_frame_bytes) < 2 * self.max_frame_bytes
        {
            return err(format!(
                "memory_limit ({}) must be at least {MEMORY_LIMIT_PER_FRAME_BYTE} × max_frame_bytes + 1 MiB ({least})",
                self.memory_limit
            ));
        }
        Ok(())
    }

    /// The connection limit in force under an open-file soft limit of `nofile` descriptors:
    /// `min(max_connections, nofile - NOFILE_HEADROOM)`, and at least 1.
    pub fn effective_max_connections(&self, nofile: u64) -> usize {
        let by_fd =
            usize::try_from(nofile.saturating_sub(NOFILE_HEADROOM as u64)).unwrap_or(usize::MAX);
        self.max_connections.min(by_fd).max(1)
    }
}

/// Raises this process's open-file soft limit to its hard limit and returns the new
/// `(soft, hard)` limits (unchanged if the soft limit already was the hard one).
///
/// # Errors
/// The `getrlimit`/`setrlimit` failure.
// `rlim_t` is not `u64` on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// The open-file soft limit, if it can be read.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `raise_nofile_limit`.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur as u64)
}

/// Why the server refused or closed a connection because of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    MaxConnections,
    IdleTimeout,
    FrameTimeout,
    TooManyRecords,
    FrameTooLarge,
    DecodedTooLarge,
    MemoryWait,
    AcceptError,
    HandshakeFailed,
    HandshakeTimeout,
    JsonWithAuth,
    TlsHandshake,
}

const REASONS: usize = 12;

impl Reason {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Reason::MaxConnections => "max_connections",
            Reason::IdleTimeout => "idle_timeout",
            Reason::FrameTimeout => "frame_timeout",
            Reason::TooManyRecords => "too_many_records",
            Reason::FrameTooLarge => "frame_too_large",
            Reason::DecodedTooLarge => "decoded_too_large",
            Reason::MemoryWait => "memory_wait",
            Reason::AcceptError => "accept_error",
            Reason::HandshakeFailed => "handshake_failed",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::JsonWithAuth => "json_with_auth",
            Reason::TlsHandshake => "tls_handshake",
        }
    }
}

/// One log line per reason per [`LOG_INTERVAL`], with the count of lines left out.
#[derive(Debug, Default)]
pub(crate) struct RateLog {
    slots: Mutex<[(Option<Instant>, u64); REASONS]>,
}

impl RateLog {
    /// Logs `detail` for `reason` at warn level unless a line for it was written less than
    /// [`LOG_INTERVAL`] ago (then it only counts it).
    pub(crate) fn hit(&self, reason: Reason, peer: Option<&PeerAddr>, detail: &str) {
        let now = Instant::now();
        let suppressed = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let (last, skipped) = &mut slots[reason.index()];
            if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
                *skipped += 1;
                return;
            }
            *last = Some(now);
            std::mem::take(skipped)
        };
        let reason = reason.name();
        match peer {
            Some(peer) => tracing::warn!(%peer, reason, suppressed, "forward limit: {detail}"),
            None => tracing::warn!(reason, suppressed, "forward limit: {detail}"),
        }
    }
}
