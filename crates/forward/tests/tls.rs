//! TLS and mutual TLS between `forward::connect` and a `Server` bound with `bind_endpoint`:
//! real sockets, certificates made in the test (rcgen). Each failure must come back as one
//! line naming the check that failed. No sleeps: acks and closes are read from the socket;
//! timeouts only bound a hang.

// One copy for every crate's TLS tests (certificates made with rcgen).
#[path = "../../../tests/support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use forward::{
    AckReader, ClientTls, ConnectError, Disposition, Endpoint, EventTime, Frame, Handler, Options,
    PeerAddr, Server, ServerConfig, ServerTls, SpawnedServer, TlsConfigError, TlsFailure, connect,
    encode,
};
use pki::{Ca, Leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const HANG: Duration = Duration::from_secs(30);

struct Recorder(mpsc::UnboundedSender<(PeerAddr, String)>);

impl Handler for Recorder {
    type Error = String;
    async fn handle(&self, peer: PeerAddr, frame: Frame) -> Result<Disposition, String> {
        let _ = self.0.send((peer, frame.tag));
        Ok(Disposition::Ack)
    }
}

fn chunk(tag: &str, id: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    encode::write_entry(&mut entries, EventTime::new(1, 0), &[0x80]);
    let mut buf = Vec::new();
    let options = Options {
        chunk: Some(id.as_bytes().to_vec()),
        ..Options::default()
    };
    encode::write_forward(&mut buf, tag, &entries, 1, &options);
    buf
}

struct Running {
    server: SpawnedServer,
    frames: mpsc::UnboundedReceiver<(PeerAddr, String)>,
    port: u16,
}

async fn serve(
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Running {
    let tls = ServerTls::from_pem(
        leaf.cert.as_bytes(),
        leaf.key.as_bytes(),
        client_ca.map(|c| c.pem.as_bytes()),
    )
    .unwrap();
    let mut config = ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    let endpoint: Endpoint = "tls://127.0.0.1:0".parse().unwrap();
    let server = Server::bind_endpoint(&endpoint, config).unwrap();
    let (tx, frames) = mpsc::unbounded_channel();
    let server = SpawnedServer::spawn(server, Arc::new(Recorder(tx))).unwrap();
    let port = server.addr().port();
    assert_eq!(
        server.endpoint().to_string(),
        format!("tls://127.0.0.1:{port}")
    );
    Running {
        server,
        frames,
        port,
    }
}

fn localhost(port: u16) -> Endpoint {
    format!("tls://localhost:{port}").parse().unwrap()
}

fn client(ca: &Ca, ours: Option<&Leaf>) -> ClientTls {
    ClientTls::from_pem(
        ca.pem.as_bytes(),
        ours.map(|l| (l.cert.as_bytes(), l.key.as_bytes())),
        None,
    )
    .unwrap()
}

/// Sends one chunk and returns its ack, or the error reading it.
async fn deliver(stream: forward::Stream, id: &str) -> Result<Vec<u8>, String> {
    let (read, mut write) = tokio::io::split(stream);
    write
        .write_all(&chunk("t", id))
        .await
        .map_err(|e| e.to_string())?;
    let mut acks = AckReader::new(read);
    match tokio::time::timeout(HANG, acks.read_ack())
        .await
        .expect("hang")
    {
        Ok(Some(ack)) => Ok(ack),
        Ok(None) => Err("closed without an ack".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn connect_err(endpoint: &Endpoint, tls: &ClientTls) -> ConnectError {
    match connect(endpoint, Some(tls)).await {
        Ok(_) => panic!("connected to {endpoint}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn the_right_ca_delivers_and_acks() {
    let ca = Ca::new("billing CA");
    let mut s = serve(&ca.leaf(&["localhost"]), None, |_| {}).await;
    let stream = connect(&localhost(s.port), Some(&client(&ca, None)))
        .await
        .unwrap();
    assert!(stream.is_tls());
    assert_eq!(deliver(stream, "c1").await.unwrap(), b"c1");
    let (peer, tag) = s.frames.recv().await.unwrap();
    assert_eq!(tag, "t");
    assert!(peer.socket_addr().is_some());
    // A plain `host:port` with TLS settings speaks TLS too.
    let plain: Endpoint = format!("localhost:{}", s.port).parse().unwrap();
    let stream = connect(&plain, Some(&client(&ca, None))).await.unwrap();
    assert_eq!(deliver(stream, "c2").await.unwrap(), b"c2");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_ca_is_an_unknown_issuer() {
    let ca = Ca::new("billing CA");
    let s = serve(&ca.leaf(&["localhost"]), None, |_| {}).await;
    let other = Ca::new("another CA");
    let e = connect_err(&localhost(s.port), &client(&other, None)).await;
    assert!(
        matches!(e, ConnectError::Tls(TlsFailure::UnknownIssuer)),
        "{e:?}"
    );
    assert!(e.to_string().contains("unknown issuer"), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[tokio::test]
async fn an_expired_server_certificate_says_expired() {
    let ca = Ca::new("billing CA");
    let s = serve(&ca.expired_leaf(&["localhost"]), None, |_| {}).await;
    let e = connect_err(&localhost(s.port), &client(&ca, None)).await;
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn a_wrong_server_name_says_which_name_was_expected() {
    let ca = Ca::new("billing CA");
    let s = serve(&ca.leaf(&["ingest.example"]), None, |_| {}).await;
    let e = connect_err(&localhost(s.port), &client(&ca, None)).await;
    let text = e.to_string();
    assert!(
        text.contains("name mismatch") && text.contains("\"localhost\""),
        "{text}"
    );
    assert!(text.contains("ingest.example"), "{text}");
    // The override checks the name the certificate holds.
    let named = ClientTls::from_pem(ca.pem.as_bytes(), None, Some("ingest.example")).unwrap();
    let stream = connect(&localhost(s.port), Some(&named)).await.unwrap();
    assert_eq!(deliver(stream, "n").await.unwrap(), b"n");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_stores_nothing() {
    let ca = Ca::new("billing CA");
    let mut s = serve(&ca.leaf(&["localhost"]), Some(&ca), |_| {}).await;
    // TLS 1.3: the client finishes its handshake before the server checked it, so the
    // refusal may come at connect or on the first read; either way it says why.
    let text = match connect(&localhost(s.port), Some(&client(&ca, None))).await {
        Err(e) => e.to_string(),
        Ok(stream) => deliver(stream, "x").await.unwrap_err(),
    };
    assert!(text.contains("requires a client certificate"), "{text}");
    // A certificate from another CA is refused as well.
    let stranger = Ca::new("stranger");
    let theirs = stranger.leaf(&["client"]);
    let text = match connect(&localhost(s.port), Some(&client(&ca, Some(&theirs)))).await {
        Err(e) => e.to_string(),
        Ok(stream) => deliver(stream, "y").await.unwrap_err(),
    };
    assert!(text.contains("refused our certificate"), "{text}");
    // The server saw nothing; a client with a good certificate is served.
    let ours = ca.leaf(&["client"]);
    let stream = connect(&localhost(s.port), Some(&client(&ca, Some(&ours))))
        .await
        .unwrap();
    assert_eq!(deliver(stream, "ok").await.unwrap(), b"ok");
    let (_, tag) = s.frames.recv().await.unwrap();
    assert_eq!(tag, "t");
    assert!(
        s.frames.try_recv().is_err(),
        "a refused client's frame was handled"
    );
    assert_eq!(s.server.stats().frames.load(Ordering::Relaxed), 1);
    assert!(
        s.server
            .stats()
            .tls_handshake_failures
            .load(Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_cut_off_while_another_is_served() {
    let ca = Ca::new("billing CA");
    let s = serve(&ca.leaf(&["localhost"]), None, |c| {
        c.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    // Served meanwhile: the silent one does not hold up the accept loop.
    let stream = connect(&localhost(s.port), Some(&client(&ca, None)))
        .await
        .unwrap();
    assert_eq!(deliver(stream, "busy").await.unwrap(), b"busy");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(HANG, silent.read(&mut byte))
        .await
        .expect("not cut off")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server wrote to a client that never started TLS");
    assert_eq!(
        s.server
            .stats()
            .tls_handshake_failures
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_plain_client_talking_to_a_tls_server_is_refused() {
    let ca = Ca::new("billing CA");
    let mut s = serve(&ca.leaf(&["localhost"]), None, |_| {}).await;
    let plain: Endpoint = format!("127.0.0.1:{}", s.port).parse().unwrap();
    let stream = connect(&plain, None).await.unwrap();
    assert!(deliver(stream, "p").await.is_err());
    assert!(s.frames.try_recv().is_err());
}

#[tokio::test]
async fn tls_without_settings_and_tls_over_unix_are_config_errors() {
    let e = Server::bind_endpoint(
        &"tls://127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs TLS settings"), "{e}");
    let ca = Ca::new("ca");
    let leaf = ca.leaf(&["localhost"]);
    let config = ServerConfig {
        tls: Some(ServerTls::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes(), None).unwrap()),
        ..ServerConfig::default()
    };
    let e = Server::bind_endpoint(&"unix:///tmp/never.sock".parse().unwrap(), config).unwrap_err();
    assert!(e.to_string().contains("Unix socket"), "{e}");
    let e = connect(&"tls://localhost:1".parse().unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::NoTlsSettings(_)), "{e}");
}

#[test]
fn loading_errors_name_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let leaf = ca.leaf(&["localhost"]);
    let other = ca.leaf(&["localhost"]);
    let cert = pki::write(dir.path(), "cert.pem", &leaf.cert);
    let key = pki::write(dir.path(), "key.pem", &leaf.key);
    let other_key = pki::write(dir.path(), "other.key", &other.key);
    let garbage = pki::write(dir.path(), "garbage.pem", "hello, not a certificate\n");
    let missing = dir.path().join("missing.pem");

    let text = |e: TlsConfigError| e.to_string();
    let e = text(ServerTls::from_pem_files(&missing, &key, None).unwrap_err());
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    let e = text(ServerTls::from_pem_files(&garbage, &key, None).unwrap_err());
    assert!(e.contains("garbage.pem") && e.contains("not PEM"), "{e}");
    let e = text(ServerTls::from_pem_files(&key, &key, None).unwrap_err());
    assert!(e.contains("key.pem") && e.contains("no certificate"), "{e}");
    let e = text(ServerTls::from_pem_files(&cert, &cert, None).unwrap_err());
    assert!(
        e.contains("cert.pem") && e.contains("no private key"),
        "{e}"
    );
    let e = text(ServerTls::from_pem_files(&cert, &other_key, None).unwrap_err());
    assert!(
        e.contains("does not match") && e.contains("other.key"),
        "{e}"
    );
    let e = text(ClientTls::from_pem_files(&missing, None, None).unwrap_err());
    assert!(e.contains("CA") && e.contains("missing.pem"), "{e}");
    let e = text(ClientTls::from_pem_files(&cert, Some((&cert, &other_key)), None).unwrap_err());
    assert!(e.contains("does not match"), "{e}");
    let e = text(ClientTls::from_pem_files(&cert, None, Some("bad name!")).unwrap_err());
    assert!(e.contains("server name"), "{e}");
    // Nothing secret in any message.
    assert!(!e.contains("PRIVATE"));
    let ok = ServerTls::from_pem_files(&cert, &key, Some(&cert)).unwrap();
    assert!(ok.requires_client_certificate());
    assert!(!format!("{ok:?}").contains("PRIVATE"));
}
