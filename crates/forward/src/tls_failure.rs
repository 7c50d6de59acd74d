//! What went wrong in a TLS session, as one line an operator can act on: which check failed
//! (unknown issuer, expired, name mismatch, no or refused client certificate, not TLS at all)
//! instead of rustls's debug-formatted enums.
//!
//! Why: a TLS failure surfaces far from the code that configured TLS (a client's retry log, a
//! `billing send` exit line, a server's rate-limited log), always as an `io::Error`. The
//! [`Stream`](crate::Stream) and the connect and accept paths replace an `io::Error` that
//! carries a `rustls::Error` by one that carries a [`TlsFailure`], so every layer above gets
//! the clear text, and [`TlsFailure::from_io`] gets the typed reason back (metrics labels).
//!
//! Invariants: messages are one line and hold no key material; names shown come from
//! certificates or our own configuration and are printed with `{:?}` (escaped). A leaf
//! module: it imports nothing from the crate.

use std::io;

use rustls::{AlertDescription, CertificateError};

/// Why a TLS session failed, each variant one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate does not chain to a CA we trust.
    #[error(
        "TLS: certificate verify failed: unknown issuer (the peer's certificate is not signed by a trusted CA)"
    )]
    UnknownIssuer,
    /// The peer's certificate is past its `notAfter` date.
    #[error("TLS: certificate verify failed: the peer's certificate has expired")]
    Expired,
    /// The peer's certificate is before its `notBefore` date.
    #[error("TLS: certificate verify failed: the peer's certificate is not valid yet")]
    NotValidYet,
    /// The server's certificate does not name the host we connected to.
    #[error(
        "TLS: certificate verify failed: name mismatch: the server's certificate is not valid for {expected:?} (it names {presented:?})"
    )]
    NameMismatch {
        /// The name we checked the certificate against.
        expected: String,
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// Another certificate check failed (bad signature, wrong purpose, revoked, ...).
    #[error("TLS: certificate verify failed: {0}")]
    BadCertificate(String),
    /// The server requires a client certificate and we sent none (its alert).
    #[error("TLS: the server requires a client certificate and none was sent")]
    ClientCertificateRequired,
    /// The peer refused the certificate we sent (its alert).
    #[error("TLS: the peer refused our certificate (alert: {alert})")]
    CertificateRefused {
        /// The alert the peer sent.
        alert: String,
    },
    /// A server requiring client certificates got a connection without one.
    #[error("TLS: the client sent no certificate (a client certificate is required)")]
    NoClientCertificate,
    /// The peer does not speak TLS (it sent bytes that are not a TLS record).
    #[error("TLS: the peer does not speak TLS ({0})")]
    NotTls(String),
    /// The peer closed the connection during the TLS handshake.
    #[error("TLS: the peer closed the connection during the handshake (does it speak TLS?)")]
    Closed,
    /// Any other TLS failure.
    #[error("TLS: {0}")]
    Other(String),
}

impl TlsFailure {
    /// A short stable label, for metrics (`unknown_issuer`, `expired`, `not_valid_yet`,
    /// `name_mismatch`, `bad_certificate`, `client_certificate_required`,
    /// `certificate_refused`, `no_client_certificate`, `not_tls`, `closed`, `other`).
    pub fn label(&self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "unknown_issuer",
            TlsFailure::Expired => "expired",
            TlsFailure::NotValidYet => "not_valid_yet",
            TlsFailure::NameMismatch { .. } => "name_mismatch",
            TlsFailure::BadCertificate(_) => "bad_certificate",
            TlsFailure::ClientCertificateRequired => "client_certificate_required",
            TlsFailure::CertificateRefused { .. } => "certificate_refused",
            TlsFailure::NoClientCertificate => "no_client_certificate",
            TlsFailure::NotTls(_) => "not_tls",
            TlsFailure::Closed => "closed",
            TlsFailure::Other(_) => "other",
        }
    }

    /// The failure a rustls error stands for.
    pub fn from_rustls(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(c) => certificate(c),
            rustls::Error::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsFailure::ClientCertificateRequired
            }
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied),
            ) => TlsFailure::CertificateRefused {
                alert: format!("{alert:?}"),
            },
            rustls::Error::InvalidMessage(m) => TlsFailure::NotTls(format!("{m:?}")),
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// The failure an `io::Error` from a TLS stream carries: a [`TlsFailure`] put there by
    /// this crate, or a raw `rustls::Error`; `None` for other errors.
    pub fn from_io(e: &io::Error) -> Option<TlsFailure> {
        let inner = e.get_ref()?;
        if let Some(f) = inner.downcast_ref::<TlsFailure>() {
            return Some(f.clone());
        }
        inner.downcast_ref::<rustls::Error>().map(Self::from_rustls)
    }
}

fn certificate(c: &CertificateError) -> TlsFailure {
    match c {
        CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            TlsFailure::NotValidYet
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => TlsFailure::NameMismatch {
            expected: expected.to_str().into_owned(),
            presented: presented.clone(),
        },
        CertificateError::NotValidForName => TlsFailure::NameMismatch {
            expected: "?".into(),
            presented: Vec::new(),
        },
        other => TlsFailure::BadCertificate(format!("{other:?}")),
    }
}

/// `e`, with a rustls error inside replaced by the [`TlsFailure`] it stands for (same kind);
/// other errors unchanged.
pub(crate) fn explain(e: io::Error) -> io::Error {
    let failure = match e.get_ref() {
        Some(inner) if inner.is::<rustls::Error>() => TlsFailure::from_io(&e),
        _ => None,
    };
    match failure {
        Some(f) => io::Error::new(e.kind(), f),
        None => e,
    }
}

/// As [`explain`], for a failed handshake: an end of stream becomes [`TlsFailure::Closed`].
pub(crate) fn explain_handshake(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof
        && e.get_ref().is_none_or(|i| !i.is::<rustls::Error>())
    {
        return io::Error::new(io::ErrorKind::UnexpectedEof, TlsFailure::Closed);
    }
    explain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_become_one_clear_line() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = explain(e);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("unknown issuer"), "{e}");
        assert_eq!(TlsFailure::from_io(&e), Some(TlsFailure::UnknownIssuer));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(
            TlsFailure::from_rustls(&alert),
            TlsFailure::ClientCertificateRequired
        );
        let plain = io::Error::other("boom");
        assert_eq!(explain(plain).to_string(), "boom");
        let eof = explain_handshake(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        ));
        assert_eq!(TlsFailure::from_io(&eof), Some(TlsFailure::Closed));
    }
}
