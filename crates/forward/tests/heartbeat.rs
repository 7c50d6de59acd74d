//! fluentd's UDP heartbeat: every datagram gets one `\0` byte back, and nothing larger.

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
