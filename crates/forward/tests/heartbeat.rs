//! fluentd's heartbeats: every UDP datagram gets one `\0` byte back, and nothing larger; a `nil`
//! on a forward connection is skipped as a TCP heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use forward::{HEARTBEAT_REPLY, serve_udp_heartbeat};
use tokio::net::UdpSocket;

#[tokio::test]
async fn every_heartbeat_datagram_is_answered_with_one_nul_byte() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_udp_heartbeat(server, answered.clone(), async {
        let _ = stopped.await;
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for ping in [&b"\0"[..], b"", &[7u8; 200][..]] {
        client.send_to(ping, addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = tokio::time::timeout(Duration::from_secs(20), client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(from, addr);
        assert_eq!(
            &buf[..n],
            HEARTBEAT_REPLY,
            "one NUL byte, whatever was sent"
        );
    }
    assert_eq!(answered.load(Ordering::Relaxed), 3);
    let _ = stop.send(());
    task.await.unwrap();
}

/// Acks every frame and counts them.
struct Counting(AtomicU64);

impl forward::Handler for Counting {
    type Error = String;

    async fn handle(
        &self,
        _peer: forward::PeerAddr,
        _frame: forward::Frame,
    ) -> Result<forward::Disposition, String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(forward::Disposition::Ack)
    }
}

#[tokio::test]
async fn a_nil_on_the_tcp_connection_is_a_heartbeat_not_a_frame() {
    use tokio::io::AsyncWriteExt;

    let server = forward::Server::bind("127.0.0.1:0", forward::ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let handler = Arc::new(Counting(AtomicU64::new(0)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(handler.clone(), async {
        let _ = stopped.await;
    }));
    let (rd, mut wr) = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap()
        .into_split();
    let frame = |chunk: &str| {
        let mut buf = Vec::new();
        let options = forward::Options {
            chunk: Some(chunk.as_bytes().to_vec()),
            ..forward::Options::default()
        };
        let record = [0x81, 0xa1, b'n', 0x01]; // {"n": 1}
        forward::encode::write_message(
            &mut buf,
            "t",
            forward::EventTime::new(1, 0),
            &record,
            &options,
        );
        buf
    };
    // Heartbeats before, between (in the same write) and after frames.
    let mut bytes = vec![0xc0, 0xc0];
    bytes.extend(frame("c1"));
    bytes.push(0xc0);
    bytes.extend(frame("c2"));
    bytes.push(0xc0);
    wr.write_all(&bytes).await.unwrap();
    let mut acks = forward::AckReader::new(rd);
    for want in ["c1", "c2"] {
        let ack = tokio::time::timeout(Duration::from_secs(20), acks.read_ack())
            .await
            .expect("an ack")
            .unwrap();
        assert_eq!(ack, Some(want.as_bytes().to_vec()));
    }
    // The last heartbeat follows the acked frame; one more frame proves it was consumed and
    // the connection is still good.
    wr.write_all(&frame("c3")).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(20), acks.read_ack())
        .await
        .expect("an ack")
        .unwrap();
    assert_eq!(ack, Some(b"c3".to_vec()));
    assert_eq!(
        handler.0.load(Ordering::Relaxed),
        3,
        "only frames reach the handler"
    );
    assert_eq!(stats.heartbeats.load(Ordering::Relaxed), 4);
    assert_eq!(stats.protocol_errors.load(Ordering::Relaxed), 0);
    let _ = stop.send(());
    task.await.unwrap();
}
