//! The client's side of the handshake on a fresh connection: read the ingester's HELO, send
//! our PING, check its PONG. The decisions are `forward`'s sans-IO [`ClientHandshake`]'s; this
//! module moves the bytes and names each failure.
//!
//! Invariants: nothing is read beyond [`MAX_HANDSHAKE_BYTES`] per message; the caller bounds
//! the whole exchange by its deadline; bytes received after the PONG are handed back, not
//! lost; a failure message never holds the key or the password, and the ingester's own text
//! (a PONG's reason, a hostname) is escaped.

use forward::{
    Check, ClientAuth, ClientHandshake, HandshakeError, MAX_HANDSHAKE_BYTES, check_message,
    parse_helo, parse_pong, write_ping,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `kind` of a failure that is TLS's, not the handshake's (with TLS 1.3 a server's refusal
/// of our client certificate arrives on the first read: here, the HELO's).
pub(super) const TLS: &str = "tls";

/// Why a handshake failed: the metric's `reason` label and a one-line message.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) kind: &'static str,
    pub(super) message: String,
    /// With `kind` [`TLS`]: the TLS failure's metric label.
    pub(super) tls_reason: &'static str,
}

fn failed(kind: &'static str, message: String) -> Failed {
    Failed {
        kind,
        message,
        tls_reason: "",
    }
}

/// A socket error during the handshake; a TLS failure is reported as such.
fn io_failed(e: &std::io::Error, doing: &str) -> Failed {
    match forward::TlsFailure::from_io(e) {
        Some(tls) => Failed {
            kind: TLS,
            message: tls.to_string(),
            tls_reason: tls.label(),
        },
        None => failed("io", format!("handshake failed: {doing}: {e}")),
    }
}

/// Runs the handshake on `stream`; `Ok` with the bytes that followed the PONG (ack replies
/// that arrived early) when the ingester passed us and proved it knows the key.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &ClientAuth,
) -> Result<Vec<u8>, Failed> {
    let mut handshake = ClientHandshake::new(auth.clone())
        .map_err(|e| failed("config", format!("handshake not possible: {e}")))?;
    let mut buf = Vec::with_capacity(512);
    let helo = read_message(stream, &mut buf, "HELO").await?;
    let helo = parse_helo(&helo).map_err(|e| protocol("HELO", &e))?;
    let ping = handshake.on_helo(&helo).map_err(|e| protocol("HELO", &e))?;
    let mut out = Vec::with_capacity(512);
    write_ping(&mut out, &ping);
    stream
        .write_all(&out)
        .await
        .map_err(|e| io_failed(&e, "PING not written"))?;
    let pong = read_message(stream, &mut buf, "PONG").await?;
    let pong = parse_pong(&pong).map_err(|e| protocol("PONG", &e))?;
    match handshake.on_pong(&pong) {
        Ok(()) => Ok(buf),
        Err(HandshakeError::Refused { reason }) => Err(failed(
            "refused",
            format!(
                "handshake refused by the ingester: {}",
                reason.escape_debug()
            ),
        )),
        Err(HandshakeError::SharedKeyMismatch) => Err(failed(
            "digest_mismatch",
            "handshake failed: the ingester's PONG does not prove it knows the shared key \
             (shared_key mismatch)"
                .into(),
        )),
        Err(HandshakeError::HostnameLoop { hostname }) => Err(failed(
            "hostname_loop",
            format!(
                "handshake failed: the ingester's hostname {hostname:?} is our own; set a \
                 distinct hostname on either side"
            ),
        )),
        Err(e) => Err(protocol("PONG", &e)),
    }
}

fn protocol(what: &str, e: &HandshakeError) -> Failed {
    failed("protocol", format!("handshake failed: bad {what}: {e}"))
}

/// Reads one handshake message into `buf` and takes it off the front; what follows stays.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, Failed> {
    loop {
        match check_message(buf, MAX_HANDSHAKE_BYTES).map_err(|e| protocol(what, &e))? {
            Check::Complete(n) => {
                let message = buf[..n].to_vec();
                buf.drain(..n);
                return Ok(message);
            }
            Check::Incomplete if buf.len() >= MAX_HANDSHAKE_BYTES => {
                return Err(protocol(
                    what,
                    &HandshakeError::TooLarge {
                        limit: MAX_HANDSHAKE_BYTES,
                    },
                ));
            }
            Check::Incomplete => {}
        }
        let mut chunk = [0u8; 1024];
        let want = chunk.len().min(MAX_HANDSHAKE_BYTES - buf.len());
        let n = stream
            .read(&mut chunk[..want])
            .await
            .map_err(|e| io_failed(&e, &format!("reading the {what}")))?;
        if n == 0 {
            return Err(failed(
                "closed",
                format!(
                    "handshake failed: the ingester closed the connection before its {what} \
                     (wrong key or user, or too slow)"
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
