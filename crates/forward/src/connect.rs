//! The client half's way to a server: connect to any [`Endpoint`] and, for TLS, verify the
//! server and hand back a [`Stream`] ready for the forward protocol.
//!
//! Rules (documented for both `billing` halves):
//! - `host:port` / `tcp://`: plain TCP, unless TLS settings are given: then TLS, as a server
//!   with a certificate speaks TLS on a plain `host:port` too;
//! - `tls://host:port`: TLS; without settings it is [`ConnectError::NoTlsSettings`] (there is
//!   no default trust store);
//! - `unix:///path`: a Unix socket; TLS settings do not apply (the socket file's permissions
//!   are its access control), so a list of endpoints may mix the two;
//! - Go's empty host (`:port`) connects to `127.0.0.1`.
//!
//! Invariant: a TLS failure comes back as [`ConnectError::Tls`], one line naming the check
//! that failed ([`TlsFailure`]). No timeout here: callers bound the whole attempt.

use std::io;

use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use crate::endpoint::Endpoint;
use crate::stream::Stream;
use crate::tls::ClientTls;
use crate::tls_failure::{TlsFailure, explain_handshake};

/// The host Go's empty `:port` host connects to.
const LOCAL_HOST: &str = "127.0.0.1";

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No connection (refused, unreachable, no such socket file, ...).
    #[error("{0}")]
    Io(#[source] io::Error),
    /// Connected, but the TLS handshake failed.
    #[error("{0}")]
    Tls(#[source] TlsFailure),
    /// A `tls://` endpoint without TLS settings.
    #[error("{0} is a tls:// address but no TLS settings (CA file) are given")]
    NoTlsSettings(Endpoint),
    /// The name to check the server's certificate against is not a DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// Connects to `endpoint`, with TLS when it is `tls://` or `tls` is given for a TCP endpoint
/// (see the module's rules).
///
/// # Errors
/// [`ConnectError`]: no connection, a failed TLS handshake (which check failed), a `tls://`
/// endpoint without settings, an invalid server name.
pub async fn connect(endpoint: &Endpoint, tls: Option<&ClientTls>) -> Result<Stream, ConnectError> {
    let (host, port) = match endpoint {
        Endpoint::Unix(path) => {
            return UnixStream::connect(path)
                .await
                .map(Stream::Unix)
                .map_err(ConnectError::Io);
        }
        other => other
            .host_port(LOCAL_HOST)
            .expect("TCP and TLS endpoints have a host and port"),
    };
    if endpoint.is_tls() && tls.is_none() {
        return Err(ConnectError::NoTlsSettings(endpoint.clone()));
    }
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnectError::Io)?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    let name = tls.server_name().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| ConnectError::ServerName(name.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls.rustls_config());
    match connector.connect(server_name, tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s.into()))),
        Err(e) => {
            let e = explain_handshake(e);
            Err(match TlsFailure::from_io(&e) {
                Some(f) => ConnectError::Tls(f),
                None => ConnectError::Io(e),
            })
        }
    }
}
