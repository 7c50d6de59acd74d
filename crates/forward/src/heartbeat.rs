//! fluentd's UDP heartbeat: `out_forward` with `heartbeat_type udp` sends a datagram to the
//! server's port and counts the server alive when any answer comes back; `in_forward` answers
//! every datagram with one `\0` byte. This is that answer, so that fluentd (and anything that
//! checks liveness the same way) sees the ingester as up.
//!
//! Invariants: an answer is never larger than the datagram that asked for it (one byte), so a
//! spoofed sender cannot use the ingester to amplify traffic; datagrams are read into a small
//! fixed buffer, so none costs memory; a send error (unreachable peer) is ignored, since the
//! next heartbeat will ask again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;

/// The answer to a heartbeat, as `in_forward` sends it.
pub const HEARTBEAT_REPLY: &[u8] = b"\0";

/// Answers heartbeats on `socket` until `shutdown` completes; counts them into `answered`.
pub async fn serve_udp_heartbeat(
    socket: UdpSocket,
    answered: Arc<AtomicU64>,
    shutdown: impl Future<Output = ()>,
) {
    let mut buf = [0u8; 64];
    tokio::pin!(shutdown);
    loop {
        let peer = tokio::select! {
            _ = &mut shutdown => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((_, peer)) => peer,
                // ICMP errors of earlier sends surface here on some systems: not ours to fix.
                Err(_) => continue,
            },
        };
        if socket.send_to(HEARTBEAT_REPLY, peer).await.is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
