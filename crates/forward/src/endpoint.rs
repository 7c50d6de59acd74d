//! Where a forward peer is: the one address syntax both halves accept, so that a client's
//! `--billing.ingester` and a server's `--listen` name the same things the same way.
//!
//! Forms (Go's `host:port` first, as every existing configuration has it):
//! - `host:port`, `[v6]:port`, `tcp://host:port`: plain TCP;
//! - `:port` (Go's form): every interface when listening, this machine when connecting;
//! - `tls://host:port`: TCP with TLS (the certificates are configured beside the address);
//! - `unix:///absolute/path`: a Unix domain socket.
//!
//! Invariants: parsing refuses what it cannot represent (no port, a port out of range, a
//! relative socket path, an unknown scheme) with a message naming the input; `Display` prints
//! a form that parses back to the same value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A forward peer's address: TCP, TLS over TCP, or a Unix domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// Plain TCP. An empty host (Go's `:port`) means every interface when listening and this
    /// machine when connecting.
    Tcp {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port (0 when listening: any free port).
        port: u16,
    },
    /// TLS over TCP.
    Tls {
        /// Host name or IP address, without brackets; also the name the server's certificate
        /// is checked against unless another is configured.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket at an absolute path.
    Unix(PathBuf),
}

/// Why an address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}")]
pub struct EndpointError {
    /// The address as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// The host and port of a TCP or TLS endpoint, with Go's empty host replaced by `any_host`
    /// (`0.0.0.0`-like when listening, `127.0.0.1`-like when connecting); `None` for a Unix
    /// socket.
    pub fn host_port<'a>(&'a self, any_host: &'a str) -> Option<(&'a str, u16)> {
        match self {
            Endpoint::Tcp { host, port } | Endpoint::Tls { host, port } => {
                let host = if host.is_empty() { any_host } else { host };
                Some((host, *port))
            }
            Endpoint::Unix(_) => None,
        }
    }

    /// Whether connections to this endpoint are wrapped in TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tls { .. })
    }

    /// Parses a comma-separated list of addresses (blanks around commas allowed).
    ///
    /// # Errors
    /// The first address that does not parse, or an empty list.
    pub fn parse_list(list: &str) -> Result<Vec<Endpoint>, EndpointError> {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Endpoint>, _>>()?;
        if endpoints.is_empty() {
            return Err(EndpointError {
                input: list.to_string(),
                reason: "no address",
            });
        }
        Ok(endpoints)
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| EndpointError {
            input: input.to_string(),
            reason,
        };
        if let Some(path) = input.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(err("a Unix socket path must be absolute (unix:///path)"));
            }
            if path.len() == 1 {
                return Err(err("no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = if let Some(rest) = input.strip_prefix("tls://") {
            (true, rest)
        } else if let Some(rest) = input.strip_prefix("tcp://") {
            (false, rest)
        } else if input.contains("://") {
            return Err(err("unknown scheme (use tcp://, tls:// or unix://)"));
        } else {
            (false, input)
        };
        let (host, port) = split_host_port(rest).map_err(err)?;
        if tls && host.is_empty() {
            return Err(err(
                "a tls:// address needs a host name to check the certificate against",
            ));
        }
        let host = host.to_string();
        Ok(if tls {
            Endpoint::Tls { host, port }
        } else {
            Endpoint::Tcp { host, port }
        })
    }
}

fn split_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or("missing ']' in address")?;
        (
            host,
            tail.strip_prefix(':').ok_or("missing port in address")?,
        )
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or("missing port in address")?;
        if host.contains(':') {
            return Err("too many colons in address (write an IPv6 address as [addr]:port)");
        }
        (host, port)
    };
    if host.contains(['/', ' ']) {
        return Err("invalid host");
    }
    let port = port.parse::<u16>().map_err(|_| "invalid port")?;
    Ok((host, port))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host, port) = match self {
            Endpoint::Unix(path) => return write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host, port } => ("", host, port),
            Endpoint::Tls { host, port } => ("tls://", host, port),
        };
        if host.contains(':') {
            write!(f, "{scheme}[{host}]:{port}")
        } else {
            write!(f, "{scheme}{host}:{port}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn every_form_parses() {
        assert_eq!("127.0.0.1:24224".parse(), Ok(tcp("127.0.0.1", 24224)));
        assert_eq!("tcp://ingest:1".parse(), Ok(tcp("ingest", 1)));
        assert_eq!("[::1]:9".parse(), Ok(tcp("::1", 9)));
        assert_eq!(":24225".parse(), Ok(tcp("", 24225)));
        assert_eq!(
            "tls://billing.example:24224".parse(),
            Ok(Endpoint::Tls {
                host: "billing.example".into(),
                port: 24224
            })
        );
        assert_eq!(
            "unix:///run/billing.sock".parse(),
            Ok(Endpoint::Unix("/run/billing.sock".into()))
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        for (input, why) in [
            ("localhost", "missing port"),
            ("::1:9", "too many colons"),
            ("h:99999", "invalid port"),
            ("unix://relative.sock", "absolute"),
            ("unix:///", "no socket path"),
            ("http://h:1", "unknown scheme"),
            ("tls://:1", "needs a host"),
            ("[::1:9", "missing ']'"),
        ] {
            let e = input.parse::<Endpoint>().unwrap_err();
            assert!(e.to_string().contains(why), "{input}: {e}");
            assert!(e.to_string().contains(input), "{input}: {e}");
        }
    }

    #[test]
    fn display_parses_back() {
        for s in [
            "h:1",
            "[::1]:2",
            ":3",
            "tls://h:4",
            "tls://[::1]:5",
            "unix:///a/b",
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e, "{s}");
        }
        assert_eq!(tcp("h", 1).to_string(), "h:1");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            Endpoint::parse_list("a:1, tls://b:2,unix:///c").unwrap(),
            vec![
                tcp("a", 1),
                Endpoint::Tls {
                    host: "b".into(),
                    port: 2
                },
                Endpoint::Unix("/c".into())
            ]
        );
        assert!(Endpoint::parse_list(" , ").is_err());
        assert!(Endpoint::parse_list("a:1,b").is_err());
    }

    #[test]
    fn empty_host_means_any_or_local() {
        assert_eq!(tcp("", 5).host_port("0.0.0.0"), Some(("0.0.0.0", 5)));
        assert_eq!(tcp("h", 5).host_port("0.0.0.0"), Some(("h", 5)));
        assert_eq!(Endpoint::Unix("/s".into()).host_port("x"), None);
    }
}
