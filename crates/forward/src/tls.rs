//! TLS settings of both halves, loaded from PEM files: [`ServerTls`] (certificate, key, and
//! optionally a client CA, which makes a client certificate required: mutual TLS) and
//! [`ClientTls`] (the CA that signs the server's certificate, optionally our own certificate
//! and key, optionally the name to check instead of the address's host).
//!
//! Why here: both the ingester and the client need them, built once at startup so that a bad
//! file is a startup error naming the file, not a failure of every connection.
//!
//! Choices and invariants:
//! - rustls with the `ring` provider, TLS 1.2 and 1.3, rustls's safe defaults;
//! - a client always needs a CA file: there is no default trust store (an ingester is an
//!   internal service with its own CA, and this build has no system roots to fall back on);
//! - with a client CA the server refuses any client without a certificate signed by it
//!   (`WebPkiClientVerifier`);
//! - loading errors ([`TlsConfigError`]) name the file and what is wrong with it: missing or
//!   unreadable, not PEM, no certificate, no private key, key not matching the certificate;
//!   they never hold key material;
//! - `Debug` shows which files' kind of settings are on, never keys.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The file cannot be read (missing, no permission, ...).
    #[error("cannot read the TLS {role} file {path}: {source}")]
    Read {
        /// What the file should hold (`certificate`, `private key`, `CA`, `client CA`).
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM (no `-----BEGIN` block, or a broken one).
    #[error("the TLS {role} file {origin} is not PEM: {detail}")]
    NotPem {
        /// What the file should hold.
        role: &'static str,
        /// The file.
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// The file holds no certificate.
    #[error("the TLS {role} file {origin} holds no certificate (no BEGIN CERTIFICATE block)")]
    NoCertificate {
        /// What the file should hold.
        role: &'static str,
        /// The file.
        origin: String,
    },
    /// The file holds no private key.
    #[error("the TLS private key file {origin} holds no private key (no BEGIN PRIVATE KEY block)")]
    NoPrivateKey {
        /// The file.
        origin: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the TLS private key {key} does not match the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The file's contents are refused (a CA that is not a usable certificate, an
    /// unsupported key type, ...).
    #[error("the TLS {role} file {origin} is refused: {detail}")]
    Invalid {
        /// What the file should hold.
        role: &'static str,
        /// The file.
        origin: String,
        /// Why.
        detail: String,
    },
    /// The server name to check is not a DNS name or an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// A client certificate without its key, or a key without its certificate.
    #[error("a TLS client certificate and its private key go together: {0}")]
    Incomplete(&'static str),
}

/// PEM bytes and where they came from (for error messages).
struct Pem<'a> {
    role: &'static str,
    origin: String,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Pem<'a> {
    fn file(role: &'static str, path: &Path) -> Result<Pem<'static>, TlsConfigError> {
        let bytes = std::fs::read(path).map_err(|source| TlsConfigError::Read {
            role,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Pem {
            role,
            origin: path.display().to_string(),
            bytes: bytes.into(),
        })
    }

    fn memory(role: &'static str, bytes: &'a [u8]) -> Self {
        Pem {
            role,
            origin: "(in memory)".into(),
            bytes: bytes.into(),
        }
    }

    /// Every PEM section, or why the bytes are not PEM.
    fn sections(&self) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsConfigError> {
        let not_pem = |detail: String| TlsConfigError::NotPem {
            role: self.role,
            origin: self.origin.clone(),
            detail,
        };
        let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not_pem(e.to_string()))?;
        if sections.is_empty() {
            return Err(not_pem("no -----BEGIN block".into()));
        }
        Ok(sections)
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
        let certs: Vec<_> = self
            .sections()?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der))
            .collect();
        if certs.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                role: self.role,
                origin: self.origin.clone(),
            });
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
        self.sections()?
            .into_iter()
            .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
            .ok_or_else(|| TlsConfigError::NoPrivateKey {
                origin: self.origin.clone(),
            })
    }

    fn roots(&self) -> Result<RootCertStore, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots.add(cert).map_err(|e| self.invalid(&e))?;
        }
        Ok(roots)
    }

    fn invalid(&self, e: &dyn fmt::Display) -> TlsConfigError {
        TlsConfigError::Invalid {
            role: self.role,
            origin: self.origin.clone(),
            detail: e.to_string(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key; a mismatch names both files.
fn identity(
    cert: &Pem<'_>,
    key: &Pem<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    Ok((cert.certificates()?, key.private_key()?))
}

fn key_error(cert: &Pem<'_>, key: &Pem<'_>, e: rustls::Error) -> TlsConfigError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
            cert: cert.origin.clone(),
            key: key.origin.clone(),
        },
        other => key.invalid(&other),
    }
}

/// A server's TLS settings; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    client_auth: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_certificate_required", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the server's certificate chain and private key, and with `client_ca` the CA
    /// whose certificates clients must present (mutual TLS: a client without one is refused).
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file that cannot be read or used.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsConfigError> {
        let ca = client_ca.map(|p| Pem::file("client CA", p)).transpose()?;
        Self::build(
            &Pem::file("certificate", cert)?,
            &Pem::file("private key", key)?,
            ca.as_ref(),
        )
    }

    /// As [`ServerTls::from_pem_files`], from PEM bytes (errors name them `(in memory)`).
    ///
    /// # Errors
    /// As [`ServerTls::from_pem_files`].
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self, TlsConfigError> {
        let ca = client_ca.map(|b| Pem::memory("client CA", b));
        Self::build(
            &Pem::memory("certificate", cert),
            &Pem::memory("private key", key),
            ca.as_ref(),
        )
    }

    fn build(cert: &Pem<'_>, key: &Pem<'_>, ca: Option<&Pem<'_>>) -> Result<Self, TlsConfigError> {
        let (chain, private) = identity(cert, key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| cert.invalid(&e))?;
        let builder = match ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()?), provider())
                        .build()
                        .map_err(|e| ca.invalid(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, private)
            .map_err(|e| key_error(cert, key, e))?;
        Ok(Self {
            config: Arc::new(config),
            client_auth: ca.is_some(),
        })
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn requires_client_certificate(&self) -> bool {
        self.client_auth
    }

    /// The rustls configuration.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// A client's TLS settings; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
    has_certificate: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.has_certificate)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the CA that must have signed the server's certificate, optionally our own
    /// certificate and key `(cert, key)` for a server that requires one, and the name to check
    /// the server's certificate against (`None`: the host of the address connected to).
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file that cannot be read or used;
    /// [`TlsConfigError::ServerName`] for a name that is neither a DNS name nor an IP.
    pub fn from_pem_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<Self, TlsConfigError> {
        let identity = match identity {
            Some((c, k)) => Some((Pem::file("certificate", c)?, Pem::file("private key", k)?)),
            None => None,
        };
        Self::build(
            &Pem::file("CA", ca)?,
            identity.as_ref().map(|(c, k)| (c, k)),
            server_name,
        )
    }

    /// As [`ClientTls::from_pem_files`], from PEM bytes (errors name them `(in memory)`).
    ///
    /// # Errors
    /// As [`ClientTls::from_pem_files`].
    pub fn from_pem(
        ca: &[u8],
        identity: Option<(&[u8], &[u8])>,
        server_name: Option<&str>,
    ) -> Result<Self, TlsConfigError> {
        let identity =
            identity.map(|(c, k)| (Pem::memory("certificate", c), Pem::memory("private key", k)));
        Self::build(
            &Pem::memory("CA", ca),
            identity.as_ref().map(|(c, k)| (c, k)),
            server_name,
        )
    }

    fn build(
        ca: &Pem<'_>,
        ours: Option<(&Pem<'_>, &Pem<'_>)>,
        server_name: Option<&str>,
    ) -> Result<Self, TlsConfigError> {
        if let Some(name) = server_name {
            ServerName::try_from(name).map_err(|_| TlsConfigError::ServerName(name.into()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ca.invalid(&e))?
            .with_root_certificates(ca.roots()?);
        let config = match ours {
            Some((cert, key)) => {
                let (chain, private) = identity(cert, key)?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| key_error(cert, key, e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
            server_name: server_name.map(str::to_string),
            has_certificate: ours.is_some(),
        })
    }

    /// The name the server's certificate is checked against, when not the address's host.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether we present a client certificate.
    pub fn has_client_certificate(&self) -> bool {
        self.has_certificate
    }

    /// The rustls configuration.
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}
