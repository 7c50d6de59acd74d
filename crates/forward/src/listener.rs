//! Where a server accepts: a TCP listener or a Unix domain socket, bound from an [`Endpoint`].
//!
//! Why a module: a Unix socket is a file, with rules TCP has not:
//! - it is created owner-only (0600) with no window in which anyone else can connect: it is
//!   bound in a fresh 0700 directory beside its final path, chmodded, then hard-linked into
//!   place (`link` fails if the path exists, so a server that appeared meanwhile is never
//!   replaced) and the temporary name removed; no process-wide umask is touched;
//! - a stale socket file (its server was killed) is replaced: connecting to it is refused
//!   (`ECONNREFUSED`), so it is removed and bound again; a live one (a server answers) is an
//!   `AddrInUse` error, and a path that is not a socket is never removed;
//! - the file is removed when the listener is dropped (the server stopped), unless another
//!   server's socket has replaced it since (checked by inode).
//!
//! Binding is synchronous (the standard library's sockets), so it works before a runtime
//! exists ([`crate::BackgroundServer`]); registering with the runtime is a second step.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::endpoint::Endpoint;
use crate::peer_addr::PeerAddr;

/// The host Go's empty `:port` host listens on.
const ANY_HOST: &str = "0.0.0.0";

/// A bound listener not yet registered with a runtime.
#[derive(Debug)]
pub(crate) enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, SocketFile),
}

/// A listener registered with the runtime.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// A connection just accepted, before any TLS.
#[derive(Debug)]
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Binds `endpoint` (TCP and TLS: its host and port; Unix: its socket file).
pub(crate) fn bind_std(endpoint: &Endpoint) -> io::Result<StdListener> {
    match endpoint {
        Endpoint::Unix(path) => {
            let (listener, file) = bind_unix(path)?;
            Ok(StdListener::Unix(listener, file))
        }
        other => {
            let addr = other
                .host_port(ANY_HOST)
                .expect("TCP and TLS endpoints have a host and port");
            Ok(StdListener::Tcp(std::net::TcpListener::bind(addr)?))
        }
    }
}

impl StdListener {
    /// The TCP address (none for a Unix socket) and the endpoint clients connect to.
    pub(crate) fn addresses(
        &self,
        tls: bool,
    ) -> io::Result<(Option<std::net::SocketAddr>, Endpoint)> {
        match self {
            StdListener::Unix(_, file) => Ok((None, Endpoint::Unix(file.path.clone()))),
            StdListener::Tcp(l) => {
                let addr = l.local_addr()?;
                Ok((Some(addr), tcp_endpoint(addr, tls)))
            }
        }
    }

    /// Registers the listener with the current runtime (non-blocking from now on).
    pub(crate) fn register(self) -> io::Result<Listener> {
        match self {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(l)?))
            }
            StdListener::Unix(l, file) => {
                l.set_nonblocking(true)?;
                Ok(Listener::Unix(UnixListener::from_std(l)?, file))
            }
        }
    }
}

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Accepted, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s), PeerAddr::Tcp(peer)))
            }
            Listener::Unix(l, _) => {
                let (s, peer) = l.accept().await?;
                let path = peer.as_pathname().map(Path::to_path_buf);
                Ok((Accepted::Unix(s), PeerAddr::Unix(path)))
            }
        }
    }

    /// The bound TCP address (`None` for a Unix socket).
    pub(crate) fn tcp_addr(&self) -> Option<io::Result<std::net::SocketAddr>> {
        match self {
            Listener::Tcp(l) => Some(l.local_addr()),
            Listener::Unix(..) => None,
        }
    }

    /// The endpoint clients connect to.
    pub(crate) fn endpoint(&self, tls: bool) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => Ok(tcp_endpoint(l.local_addr()?, tls)),
            Listener::Unix(_, file) => Ok(Endpoint::Unix(file.path.clone())),
        }
    }
}

fn tcp_endpoint(addr: std::net::SocketAddr, tls: bool) -> Endpoint {
    let (host, port) = (addr.ip().to_string(), addr.port());
    if tls {
        Endpoint::Tls { host, port }
    } else {
        Endpoint::Tcp { host, port }
    }
}

/// A bound socket file, removed on drop if it is still ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn bind_unix(path: &Path) -> io::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    clear_stale(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    // A private directory: no one else can reach the socket until it is 0600.
    let private = dir.join(format!(".fwd{:08x}", fastrand::u32(..)));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let temporary = private.join("s");
    let bound = (|| -> io::Result<std::os::unix::net::UnixListener> {
        let listener = std::os::unix::net::UnixListener::bind(&temporary)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&temporary, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                in_use(path)
            } else {
                e
            }
        })?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&temporary);
    let _ = std::fs::remove_dir(&private);
    let listener = bound?;
    let m = std::fs::symlink_metadata(path)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        },
    ))
}

fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "address in use: a server is listening on unix://{}",
            path.display()
        ),
    )
}

/// Removes a socket file whose server is gone; refuses a live one or a non-socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(in_use(path)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file (its server is gone)");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot tell whether {} is in use: {e}", path.display()),
        )),
    }
}
