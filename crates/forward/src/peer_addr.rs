//! Who is on the other end of a server's connection: an IP address and port for TCP (with or
//! without TLS), or a Unix socket, whose clients usually have no address at all.
//!
//! Why: the handler, the logs and the rate-limited limit log all name the peer, and a Unix
//! peer has no `SocketAddr`. Invariant: `Display` is one line and escapes what a peer chose
//! (a Unix client may bind its socket to any path), so it can go into a log as is.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The address of a server's peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer (also over TLS).
    Tcp(SocketAddr),
    /// A Unix domain socket peer: the path its socket is bound to, `None` when unnamed (the
    /// usual case for a client).
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// The IP address and port of a TCP peer; `None` for a Unix socket peer.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(addr) => Some(*addr),
            PeerAddr::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr::Tcp(addr)
    }
}

impl fmt::Display for PeerAddr {
    /// `127.0.0.1:5000`, `[::1]:5000`, `unix:/path/of/the/client` (escaped) or `unix`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(None) => f.write_str("unix"),
            PeerAddr::Unix(Some(path)) => {
                write!(f, "unix:{}", path.to_string_lossy().escape_debug())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_escaped_line() {
        let tcp: PeerAddr = "127.0.0.1:9".parse::<SocketAddr>().unwrap().into();
        assert_eq!(tcp.to_string(), "127.0.0.1:9");
        assert_eq!(PeerAddr::Unix(None).to_string(), "unix");
        let odd = PeerAddr::Unix(Some("/tmp/a\nb".into()));
        assert_eq!(odd.to_string(), "unix:/tmp/a\\nb");
        assert_eq!(odd.socket_addr(), None);
    }
}
