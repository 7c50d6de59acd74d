//! Serving on a Unix domain socket: delivery end to end, an owner-only socket file, a stale
//! file replaced, a live one refused, the file removed on shutdown. Real sockets; no sleeps.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use forward::{
    AckReader, Disposition, Endpoint, EventTime, Frame, Handler, Options, PeerAddr, Server,
    ServerConfig, SpawnedServer, connect, encode,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const HANG: Duration = Duration::from_secs(30);

struct Recorder(mpsc::UnboundedSender<PeerAddr>);

impl Handler for Recorder {
    type Error = String;
    async fn handle(&self, peer: PeerAddr, _: Frame) -> Result<Disposition, String> {
        let _ = self.0.send(peer);
        Ok(Disposition::Ack)
    }
}

fn chunk(id: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    encode::write_entry(&mut entries, EventTime::new(1, 0), &[0x80]);
    let mut buf = Vec::new();
    let options = Options {
        chunk: Some(id.as_bytes().to_vec()),
        ..Options::default()
    };
    encode::write_forward(&mut buf, "t", &entries, 1, &options);
    buf
}

fn spawn(endpoint: &Endpoint) -> (SpawnedServer, mpsc::UnboundedReceiver<PeerAddr>) {
    let server = Server::bind_endpoint(endpoint, ServerConfig::default()).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    (
        SpawnedServer::spawn(server, Arc::new(Recorder(tx))).unwrap(),
        rx,
    )
}

async fn acked(endpoint: &Endpoint, id: &str) -> bool {
    let stream = connect(endpoint, None).await.unwrap();
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(&chunk(id)).await.unwrap();
    let ack = tokio::time::timeout(HANG, AckReader::new(read).read_ack())
        .await
        .expect("hang");
    matches!(ack, Ok(Some(a)) if a == id.as_bytes())
}

#[tokio::test]
async fn delivers_over_a_unix_socket_that_only_its_owner_may_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest.sock");
    let endpoint: Endpoint = format!("unix://{}", path.display()).parse().unwrap();
    let (server, mut peers) = spawn(&endpoint);
    assert_eq!(server.endpoint(), &endpoint);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(acked(&endpoint, "u1").await);
    let peer = peers.recv().await.unwrap();
    assert_eq!(peer, PeerAddr::Unix(None));
    assert_eq!(peer.to_string(), "unix");
    // No temporary directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ingest.sock")]);
    server.shutdown().await;
    assert!(!path.exists(), "socket file left after a clean shutdown");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // A server that died without removing its socket file.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let endpoint: Endpoint = format!("unix://{}", path.display()).parse().unwrap();
    let (server, _peers) = spawn(&endpoint);
    assert!(acked(&endpoint, "fresh").await);

    let e = Server::bind_endpoint(&endpoint, ServerConfig::default()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("address in use"), "{e}");
    // The live server still serves on its file.
    assert!(acked(&endpoint, "still").await);

    // A path that is not a socket is never removed.
    let plain = dir.path().join("data");
    std::fs::write(&plain, b"keep").unwrap();
    let e = Server::bind_endpoint(
        &format!("unix://{}", plain.display()).parse().unwrap(),
        ServerConfig::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");
    server.shutdown().await;
}
