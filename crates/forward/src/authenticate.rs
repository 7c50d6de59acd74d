//! The server's side of the handshake on a socket: HELO out at once, a PING in within the
//! handshake timeout, PONG out, and a verdict.
//!
//! Why: with [`ServerConfig::auth`](crate::ServerConfig::auth) set, only a peer that proves it
//! knows the shared key (and, with users, a password) may write records; a forged record is
//! fraud. The decisions are the sans-IO [`ServerHandshake`]'s; this module only moves bytes
//! and counts.
//!
//! Invariants:
//! - no frame is read, let alone handed to the handler, before [`authenticate`] returned
//!   `true`; after `false` the caller closes the connection;
//! - the whole exchange (HELO written, PING read, PONG written) is bounded by the handshake
//!   timeout from the call, and its bytes go through the connection's buffer, so they are
//!   charged to the memory budget and bounded by [`crate::MAX_HANDSHAKE_BYTES`];
//! - every refusal the protocol lets us explain (a PING that is wrong or not a PING) gets a
//!   refusing PONG before the close; a timeout or a peer that closed gets none;
//! - each outcome is counted once in [`ServerStats`] (`handshakes_ok`, `handshakes_failed`,
//!   `handshake_timeouts`); failures are logged rate-limited, peer-controlled text escaped
//!   (hostnames and usernames are shown with `{:?}` by [`HandshakeError`]'s messages), and
//!   keys, passwords and digests never.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::ConnectionError;
use crate::connection::Connection;
use crate::handshake::{
    HandshakeError, Peer, Pong, ServerAuth, ServerHandshake, parse_ping, write_helo, write_pong,
};
use crate::limits::{RateLog, Reason};
use crate::peer_addr::PeerAddr;
use crate::stats::ServerStats;

/// Reason of the refusing PONG answering something that is not a valid PING (fluentd's
/// wording).
const REASON_INVALID_PING: &str = "invalid ping message";

/// Why a handshake did not pass.
enum Failure {
    /// No valid PING in time.
    Timeout,
    /// The peer closed, or the socket failed, before the handshake ended.
    Gone(String),
    /// The PING was refused, or was not a PING.
    Refused(HandshakeError),
}

/// Runs the handshake on a freshly accepted connection; `true` when the peer passed and the
/// connection may carry frames, `false` when it must be closed (counted and logged here).
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    auth: &ServerAuth,
    timeout: Duration,
    peer: &PeerAddr,
    stats: &ServerStats,
    log: &RateLog,
) -> bool {
    let outcome = match tokio::time::timeout(timeout, exchange(conn, auth)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout),
    };
    match outcome {
        Ok(who) => {
            stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, hostname = ?who.hostname, username = ?who.username, "forward handshake passed");
            true
        }
        Err(Failure::Timeout) => {
            stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            log.hit(
                Reason::HandshakeTimeout,
                Some(peer),
                &format!("no valid PING within the handshake timeout of {timeout:?}; closing"),
            );
            false
        }
        Err(Failure::Gone(why)) => {
            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            log.hit(
                Reason::HandshakeFailed,
                Some(peer),
                &format!("handshake not completed: {why}"),
            );
            false
        }
        Err(Failure::Refused(e)) => {
            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            log.hit(
                Reason::HandshakeFailed,
                Some(peer),
                &format!("handshake refused: {e}; closing"),
            );
            false
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    auth: &ServerAuth,
) -> Result<Peer, Failure> {
    // `ServerConfig::validate` made this handshake once already: only randomness can fail.
    let mut handshake = ServerHandshake::new(auth.clone()).map_err(Failure::Refused)?;
    let mut out = Vec::with_capacity(128);
    write_helo(&mut out, &handshake.helo());
    conn.write_raw(&out)
        .await
        .map_err(|e| Failure::Gone(format!("HELO not written: {e}")))?;
    let ping = match conn.read_handshake().await {
        Ok(Some(bytes)) => parse_ping(&bytes),
        Ok(None) => return Err(Failure::Gone("closed by the peer before its PING".into())),
        Err(ConnectionError::Handshake(e)) => Err(e),
        Err(ConnectionError::IdleTimeout | ConnectionError::FrameTimeout) => {
            return Err(Failure::Timeout);
        }
        Err(e) => return Err(Failure::Gone(e.to_string())),
    };
    let reply = match ping {
        Ok(ping) => handshake.on_ping(&ping).map_err(Failure::Refused)?,
        Err(e) => {
            let pong = Pong {
                ok: false,
                reason: REASON_INVALID_PING.into(),
                hostname: String::new(),
                digest: String::new(),
            };
            send_pong(conn, &pong).await;
            return Err(Failure::Refused(e));
        }
    };
    send_pong(conn, &reply.pong).await;
    reply.outcome.map_err(Failure::Refused)
}

/// Writes a PONG; a failure to write only matters for a passing one, whose frames will then
/// fail to arrive on the same broken socket.
async fn send_pong<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>, pong: &Pong) {
    let mut out = Vec::with_capacity(256);
    write_pong(&mut out, pong);
    let _ = conn.write_raw(&out).await;
}
