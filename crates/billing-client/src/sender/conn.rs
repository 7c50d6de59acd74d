//! One connection to the ingester: the write half, owned by the sender's loop, and a task
//! that reads acks from the read half and hands them over a channel, so that writing a large
//! batch never stops acks from being read.
//!
//! The socket is whatever `forward::connect` opens for the endpoint: TCP, TLS over TCP (the
//! server verified, our certificate presented if configured) or a Unix socket. With
//! credentials, the shared-key handshake runs on it (inside TLS) before it is split, within
//! the same `connect_timeout` as the connection; the ack task starts only once it passed.
//! A TLS failure is [`OpenError::Tls`]; one that TLS 1.3 delivers after the handshake (a
//! refused client certificate) ends the ack task with the same one-line reason and is
//! counted there.
//!
//! Invariants: the ack task ends with the connection (it is aborted when the [`Conn`] drops);
//! it reports the end of the stream or a read error as one `Err` and then stops.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

use super::handshake;

/// Why [`Conn::open`] failed.
#[derive(Debug)]
pub(super) enum OpenError {
    /// No TCP connection, as one line.
    Connect(String),
    /// Connected, but the handshake failed: the metric's `reason` label and one line.
    Handshake { kind: &'static str, message: String },
    /// The TLS session failed: the TLS metric's `reason` label and one line naming the check.
    Tls {
        reason: &'static str,
        message: String,
    },
}

/// An ack's chunk id, or why the connection can no longer deliver acks.
pub(super) type Ack = Result<Vec<u8>, String>;

/// A connected ingester.
#[derive(Debug)]
pub(super) struct Conn {
    writer: WriteHalf<forward::Stream>,
    acks: UnboundedReceiver<Ack>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    /// Connects and, with `auth`, passes the handshake, all within `timeout`; then starts
    /// reading acks.
    ///
    /// # Errors
    /// Why the connection or its handshake failed.
    pub(super) async fn open(
        endpoint: &forward::Endpoint,
        tls: Option<&forward::ClientTls>,
        timeout: Duration,
        auth: Option<&forward::ClientAuth>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Conn, OpenError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream =
            match tokio::time::timeout_at(deadline, forward::connect(endpoint, tls)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(forward::ConnectError::Tls(f))) => {
                    return Err(OpenError::Tls {
                        reason: f.label(),
                        message: f.to_string(),
                    });
                }
                Ok(Err(e)) => return Err(OpenError::Connect(e.to_string())),
                Err(_) => return Err(OpenError::Connect("connect timed out".to_string())),
            };
        let early = match auth {
            None => Vec::new(),
            Some(auth) => {
                match tokio::time::timeout_at(deadline, handshake::run(&mut stream, auth)).await {
                    Ok(Ok(early)) => early,
                    Ok(Err(f)) if f.kind == handshake::TLS => {
                        return Err(OpenError::Tls {
                            reason: f.tls_reason,
                            message: f.message,
                        });
                    }
                    Ok(Err(f)) => {
                        return Err(OpenError::Handshake {
                            kind: f.kind,
                            message: f.message,
                        });
                    }
                    Err(_) => {
                        return Err(OpenError::Handshake {
                            kind: "timeout",
                            message: format!(
                                "handshake failed: not completed within the connect timeout of                                  {} (does the ingester have a shared key set?)",
                                crate::duration::format(timeout)
                            ),
                        });
                    }
                }
            }
        };
        let (read, writer) = tokio::io::split(stream);
        let (tx, acks) = unbounded_channel();
        let metrics = metrics.clone();
        let reader = tokio::spawn(async move {
            let mut reader = forward::AckReader::with_buffered(read, &early);
            loop {
                let item = match reader.read_ack().await {
                    Ok(Some(id)) => Ok(id),
                    Ok(None) => Err("connection closed by the ingester".to_string()),
                    Err(forward::ConnectionError::Io(e)) => {
                        match forward::TlsFailure::from_io(&e) {
                            Some(tls) => {
                                metrics.tls_failure(tls.label());
                                Err(tls.to_string())
                            }
                            None => Err(format!("socket error: {e}")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    return;
                }
            }
        });
        Ok(Conn {
            writer,
            acks,
            reader,
        })
    }

    /// Writes `bytes` within `timeout`.
    ///
    /// # Errors
    /// Why the write failed, as one line.
    pub(super) async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err("write timed out".to_string()),
        }
    }

    /// The next ack (or the end of the connection).
    pub(super) async fn ack(&mut self) -> Ack {
        self.acks
            .recv()
            .await
            .unwrap_or_else(|| Err("ack reader stopped".into()))
    }

    /// Closes the write side so the ingester sees a clean end of stream.
    pub(super) async fn shutdown(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// The next ack of `conn`, or never when there is no connection (for `select!`).
pub(super) async fn next_ack(conn: &mut Option<Conn>) -> Ack {
    match conn {
        Some(c) => c.ack().await,
        None => std::future::pending().await,
    }
}
