//! The counters a server keeps ([`ServerStats`]): plain atomics, so the server knows nothing of
//! any metrics library and whoever exports them reads them at scrape time. A leaf module:
//! the budget and the server both write it without importing each other.

use std::sync::atomic::{AtomicI64, AtomicU64};

/// Counters a [`Server`](crate::Server) keeps; read them to export metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Frames decoded.
    pub frames: AtomicU64,
    /// Acks written.
    pub acks: AtomicU64,
    /// `nil` objects received between frames: fluentd's TCP heartbeat, skipped (they keep a
    /// connection from being idle and are never handed to the handler).
    pub heartbeats: AtomicU64,
    /// Connections closed because of bytes that are not a frame.
    pub protocol_errors: AtomicU64,
    /// Frames the handler failed to take (closed without ack).
    pub handler_errors: AtomicU64,
    /// Connections closed as soon as accepted: the connection limit was reached
    /// (reason `max_connections`).
    pub refused_max_connections: AtomicU64,
    /// Connections closed after `idle_timeout` without a frame (reason `idle_timeout`).
    pub closed_idle_timeout: AtomicU64,
    /// Connections closed because a frame was not complete (or an ack not read) within
    /// `frame_timeout` (reason `frame_timeout`).
    pub closed_frame_timeout: AtomicU64,
    /// Frames refused for carrying more than `max_records_per_frame` entries, before they
    /// were decoded (reason `too_many_records`; also counted in `protocol_errors`).
    pub refused_too_many_records: AtomicU64,
    /// Frames refused for exceeding `max_frame_bytes`, on the wire or inflated (reason
    /// `frame_too_large`; also counted in `protocol_errors`).
    pub refused_frame_too_large: AtomicU64,
    /// Frames refused because their decoded form would take more memory than one frame may
    /// (reason `decoded_too_large`; also counted in `protocol_errors`).
    pub refused_decoded_too_large: AtomicU64,
    /// Times a connection had to wait for the memory budget (it stopped reading meanwhile).
    pub memory_waits: AtomicU64,
    /// Bytes charged to the memory budget now (a gauge).
    pub memory_charged_bytes: AtomicU64,
    /// Failed accepts (`EMFILE`, `ENFILE`, ...), each followed by a pause in accepting.
    pub accept_errors: AtomicU64,
    /// Handshakes passed (with [`ServerConfig::auth`](crate::ServerConfig::auth) set).
    pub handshakes_ok: AtomicU64,
    /// Handshakes failed: wrong shared key, unknown user or wrong password, hostname loop, a
    /// malformed or oversized PING, the peer closing first (reason `handshake_failed`).
    pub handshakes_failed: AtomicU64,
    /// Connections closed for sending no valid PING within `handshake_timeout` (reason
    /// `handshake_timeout`).
    pub handshake_timeouts: AtomicU64,
    /// Frames refused for JSON framing on a server with authentication (also counted in
    /// `protocol_errors`).
    pub refused_json_with_auth: AtomicU64,
    /// TLS handshakes that failed (bad or missing client certificate, a peer that does not
    /// speak TLS, ...) or did not complete within `handshake_timeout` (reason
    /// `tls_handshake`).
    pub tls_handshake_failures: AtomicU64,
}
