//! A server with authentication (`ServerConfig::auth`) over real sockets: a client that
//! passes the handshake is served and acked; one with a wrong key, a wrong user, a malformed
//! PING, no PING in time, or JSON framing is refused and closed, and nothing it sent reaches
//! the handler; other clients are served meanwhile. Every wait is for a socket event (a
//! message, an ack, an end of stream), never a sleep.
//!
//! On the code before the handshake was wired, every test here fails: `ServerConfig` had
//! no `auth` nor `handshake_timeout` (nor `ServerStats` its handshake counters), and a server
//! sent no HELO.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use forward::{
    AckReader, Check, ClientAuth, ClientHandshake, Disposition, Frame, Handler, Pong, Server,
    ServerAuth, ServerConfig, ServerStats, SpawnedServer, check_message, parse_helo, parse_pong,
    write_ping,
};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const KEY: &str = "the-shared-key";

struct Recorder(mpsc::UnboundedSender<Frame>);

impl Handler for Recorder {
    type Error = std::convert::Infallible;

    async fn handle(&self, _: forward::PeerAddr, frame: Frame) -> Result<Disposition, Self::Error> {
        let _ = self.0.send(frame);
        Ok(Disposition::Ack)
    }
}

struct Running {
    server: SpawnedServer,
    seen: mpsc::UnboundedReceiver<Frame>,
}

impl Running {
    fn stats(&self) -> Arc<ServerStats> {
        self.server.stats()
    }

    /// Every frame the handler received so far.
    fn handled(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(f) = self.seen.try_recv() {
            out.push(f);
        }
        out
    }
}

fn auth(users: Option<&[(&str, &str)]>) -> ServerAuth {
    ServerAuth {
        shared_key: KEY.into(),
        hostname: "ingester".into(),
        users: users.map(|u| {
            u.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<HashMap<_, _>>()
        }),
    }
}

async fn start(auth: ServerAuth, handshake_timeout: Duration) -> Running {
    let config = ServerConfig {
        auth: Some(auth),
        handshake_timeout,
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0", config).await.unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let server = SpawnedServer::spawn(server, Arc::new(Recorder(tx))).unwrap();
    Running { server, seen }
}

fn client_auth(key: &str, user: &str, password: &str) -> ClientAuth {
    ClientAuth {
        shared_key: key.into(),
        hostname: "client".into(),
        username: user.into(),
        password: password.into(),
    }
}

/// Reads one handshake message (bounded by the protocol's limit).
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Check::Complete(n) = check_message(buf, forward::MAX_HANDSHAKE_BYTES).unwrap() {
            return buf.drain(..n).collect();
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole handshake message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects, answers the HELO with a PING made from `auth` and returns the PONG with the
/// client's verdict on it. `after_ping` is written right behind the PING (pipelined), as a
/// client that does not wait for the PONG would.
async fn handshake(
    addr: SocketAddr,
    auth: ClientAuth,
    after_ping: &[u8],
) -> (TcpStream, Pong, Result<(), forward::HandshakeError>) {
    let (stream, pong, verdict, rest) = handshake_rest(addr, auth, after_ping).await;
    assert!(
        rest.is_empty(),
        "nothing after the PONG before a frame was sent"
    );
    (stream, pong, verdict)
}

/// As [`handshake`], also returning the bytes read after the PONG.
async fn handshake_rest(
    addr: SocketAddr,
    auth: ClientAuth,
    after_ping: &[u8],
) -> (
    TcpStream,
    Pong,
    Result<(), forward::HandshakeError>,
    Vec<u8>,
) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let helo = parse_helo(&read_message(&mut stream, &mut buf).await).unwrap();
    let mut hs = ClientHandshake::new(auth).unwrap();
    let mut out = Vec::new();
    write_ping(&mut out, &hs.on_helo(&helo).unwrap());
    out.extend_from_slice(after_ping);
    stream.write_all(&out).await.unwrap();
    let pong = parse_pong(&read_message(&mut stream, &mut buf).await).unwrap();
    let verdict = hs.on_pong(&pong);
    (stream, pong, verdict, buf)
}

/// A Message-mode frame with a chunk id.
fn message(n: i64, chunk: &str) -> Vec<u8> {
    mp(&Value::Array(vec![
        Value::from("billing"),
        Value::from(1_795_754_038 + n),
        record(n),
        map(&[("chunk", Value::from(chunk))]),
    ]))
}

/// Reads until the peer closes; the bytes it sent meanwhile.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    rest
}

async fn ack(stream: &mut TcpStream) -> Vec<u8> {
    AckReader::new(stream).read_ack().await.unwrap().unwrap()
}

#[tokio::test]
async fn the_right_key_is_served_and_acked() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    let (mut stream, pong, verdict) =
        handshake(srv.server.addr(), client_auth(KEY, "", ""), &[]).await;
    verdict.unwrap();
    assert!(pong.ok);
    assert_eq!(pong.hostname, "ingester");
    stream.write_all(&message(1, "c1")).await.unwrap();
    assert_eq!(ack(&mut stream).await, b"c1");
    stream.write_all(&message(2, "c2")).await.unwrap();
    assert_eq!(ack(&mut stream).await, b"c2");
    assert_eq!(srv.handled().len(), 2);
    let stats = srv.stats();
    assert_eq!(stats.handshakes_ok.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handshakes_failed.load(Ordering::SeqCst), 0);
    assert_eq!(stats.acks.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn frames_pipelined_behind_a_valid_ping_are_served() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    let (mut stream, _, verdict, rest) = handshake_rest(
        srv.server.addr(),
        client_auth(KEY, "", ""),
        &message(1, "early"),
    )
    .await;
    verdict.unwrap();
    // The ack may come in the same read as the PONG.
    let mut acks = AckReader::with_buffered(&mut stream, &rest);
    assert_eq!(acks.read_ack().await.unwrap().unwrap(), b"early");
    assert_eq!(srv.handled().len(), 1);
}

#[tokio::test]
async fn a_wrong_key_gets_a_refusing_pong_and_nothing_it_sent_is_handled() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    let (mut stream, pong, verdict) = handshake(
        srv.server.addr(),
        client_auth("not-the-key", "", ""),
        &message(1, "forged"),
    )
    .await;
    assert!(!pong.ok);
    assert_eq!(pong.reason, "shared_key mismatch");
    assert!(pong.hostname.is_empty() && pong.digest.is_empty());
    assert!(matches!(
        verdict,
        Err(forward::HandshakeError::Refused { .. })
    ));
    assert!(read_to_end(&mut stream).await.is_empty(), "no ack, closed");
    assert!(
        srv.handled().is_empty(),
        "the forged frame reached the handler"
    );
    let stats = srv.stats();
    assert_eq!(stats.handshakes_failed.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handshakes_ok.load(Ordering::SeqCst), 0);
    assert_eq!(stats.frames.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn users_must_name_a_known_user_with_the_right_password() {
    let mut srv = start(auth(Some(&[("alice", "pw")])), Duration::from_secs(30)).await;
    let addr = srv.server.addr();
    for (user, password) in [("alice", "wrong"), ("mallory", "pw")] {
        let (mut stream, pong, _) =
            handshake(addr, client_auth(KEY, user, password), &message(1, "x")).await;
        assert!(!pong.ok);
        assert_eq!(pong.reason, "username/password mismatch");
        assert!(read_to_end(&mut stream).await.is_empty());
    }
    let (mut stream, _, verdict) = handshake(addr, client_auth(KEY, "alice", "pw"), &[]).await;
    verdict.unwrap();
    stream.write_all(&message(1, "ok")).await.unwrap();
    assert_eq!(ack(&mut stream).await, b"ok");
    assert_eq!(srv.handled().len(), 1);
    assert_eq!(srv.stats().handshakes_failed.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_client_with_the_servers_hostname_is_refused() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    let mut looped = client_auth(KEY, "", "");
    looped.hostname = "ingester".into();
    let (mut stream, pong, _) = handshake(srv.server.addr(), looped, &[]).await;
    assert!(!pong.ok);
    assert!(pong.reason.contains("same hostname"), "{}", pong.reason);
    assert!(read_to_end(&mut stream).await.is_empty());
    assert!(srv.handled().is_empty());
}

#[tokio::test]
async fn a_frame_instead_of_a_ping_gets_a_refusing_pong_and_is_not_handled() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(srv.server.addr()).await.unwrap();
    let mut buf = Vec::new();
    parse_helo(&read_message(&mut stream, &mut buf).await).unwrap();
    stream.write_all(&message(1, "no-ping")).await.unwrap();
    let pong = parse_pong(&read_message(&mut stream, &mut buf).await).unwrap();
    assert!(!pong.ok);
    assert_eq!(pong.reason, "invalid ping message");
    assert!(read_to_end(&mut stream).await.is_empty());
    assert!(srv.handled().is_empty());
    assert_eq!(srv.stats().handshakes_failed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn json_framing_is_refused_with_authentication_on() {
    let mut srv = start(auth(None), Duration::from_secs(30)).await;
    // Without a handshake: a JSON line is not a PING.
    let mut stream = TcpStream::connect(srv.server.addr()).await.unwrap();
    let mut buf = Vec::new();
    parse_helo(&read_message(&mut stream, &mut buf).await).unwrap();
    stream.write_all(GO_LINE.as_bytes()).await.unwrap();
    let pong = parse_pong(&read_message(&mut stream, &mut buf).await).unwrap();
    assert!(!pong.ok);
    assert!(read_to_end(&mut stream).await.is_empty());
    // After a valid handshake: the JSON frame is refused before the handler.
    let json = r#"["billing",1795754038,{"n":1},{"chunk":"j1"}]"#;
    let (mut stream, _, verdict) =
        handshake(srv.server.addr(), client_auth(KEY, "", ""), json.as_bytes()).await;
    verdict.unwrap();
    assert!(read_to_end(&mut stream).await.is_empty(), "no ack, closed");
    assert!(srv.handled().is_empty());
    assert_eq!(srv.stats().refused_json_with_auth.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn silent_and_wrong_key_clients_are_cut_off_while_another_is_served() {
    let mut srv = start(auth(None), Duration::from_millis(300)).await;
    let addr = srv.server.addr();
    // A client that never sends its PING: it holds a connection until the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    parse_helo(&read_message(&mut silent, &mut buf).await).unwrap();
    // A client with a wrong key, at the same time.
    let (mut wrong, pong, _) =
        handshake(addr, client_auth("wrong", "", ""), &message(9, "forged")).await;
    assert!(!pong.ok);
    // Meanwhile an authenticated client is served.
    let (mut good, _, verdict) = handshake(addr, client_auth(KEY, "", ""), &[]).await;
    verdict.unwrap();
    for i in 0..3 {
        let chunk = format!("good-{i}");
        good.write_all(&message(i, &chunk)).await.unwrap();
        assert_eq!(ack(&mut good).await, chunk.as_bytes());
    }
    assert!(read_to_end(&mut wrong).await.is_empty());
    // The silent client is closed by the handshake timeout, with no PONG.
    assert!(
        read_to_end(&mut silent).await.is_empty(),
        "no PONG on a timeout"
    );
    let handled = srv.handled();
    assert_eq!(handled.len(), 3);
    let stats = srv.stats();
    assert_eq!(stats.handshake_timeouts.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handshakes_failed.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handshakes_ok.load(Ordering::SeqCst), 1);
    // The good client's connection is still open and served after the others were cut off.
    good.write_all(&message(4, "after")).await.unwrap();
    assert_eq!(ack(&mut good).await, b"after");
}

#[tokio::test]
async fn an_invalid_auth_config_is_refused_at_bind() {
    let mut bad = auth(None);
    bad.shared_key.clear();
    let config = ServerConfig {
        auth: Some(bad),
        ..ServerConfig::default()
    };
    let e = Server::bind("127.0.0.1:0", config).await.unwrap_err();
    assert!(e.to_string().contains("shared key"), "{e}");
    assert!(!e.to_string().contains(KEY));
}
