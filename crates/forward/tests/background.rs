//! `SpawnedServer` and `BackgroundServer`: a real listener, real sockets, real acks.
//!
//! No test sleeps to synchronise: acks are read from the socket, a dropped connection is seen
//! as end of stream, a handler says over a channel when it is inside `handle`. Read timeouts
//! only bound a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use forward::{
    AckReader, BackgroundOptions, BackgroundServer, Disposition, EventTime, Frame, Handler,
    Options, Server, ServerConfig, SpawnedServer, encode,
};
use forward::{Check, check_reply, parse_ack};
use forward::{ShutdownError, StartError};
use rmpv::Value;

/// Bounds a hang; never an assertion about speed.
const HANG: Duration = Duration::from_secs(60);

/// Acks every frame; a frame tagged `block` first tells `entered` and waits for `release`.
#[derive(Default)]
struct Acker {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Handler for Acker {
    type Error = String;

    async fn handle(&self, _peer: forward::PeerAddr, frame: Frame) -> Result<Disposition, String> {
        if frame.tag == "block" {
            if let Some(entered) = self.entered.lock().unwrap().as_ref() {
                let _ = entered.send(());
            }
            // Blocks the server's runtime thread on purpose: a handler that misbehaves.
            if let Some(release) = self.release.lock().unwrap().as_ref() {
                let _ = release.recv();
            }
        }
        Ok(Disposition::Ack)
    }
}

fn chunk(tag: &str, id: &str) -> Vec<u8> {
    let mut record = Vec::new();
    rmpv::encode::write_value(&mut record, &Value::from("x")).unwrap();
    let mut entries = Vec::new();
    encode::write_entry(&mut entries, EventTime::new(1, 0), &record);
    let mut buf = Vec::new();
    encode::write_forward(
        &mut buf,
        tag,
        &entries,
        1,
        &Options {
            chunk: Some(id.as_bytes().to_vec()),
            ..Options::default()
        },
    );
    buf
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HANG)).unwrap();
    s
}

/// The next ack on a blocking socket, or `None` once the server closed the connection.
fn read_ack(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 256];
    loop {
        if let Check::Complete(n) = check_reply(&buf, 1024).expect("an ack") {
            return Some(parse_ack(&buf[..n]).expect("an ack"));
        }
        match s.read(&mut piece) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("neither an ack nor a close: {e}"),
        }
    }
}

fn acked(s: &mut TcpStream, id: &str) -> bool {
    s.write_all(&chunk("t", id)).unwrap();
    read_ack(s).as_deref() == Some(id.as_bytes())
}

#[test]
fn background_server_acks_from_a_plain_test_and_frees_its_port_on_shutdown() {
    let server = BackgroundServer::start("127.0.0.1:0", Arc::new(Acker::default())).unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    let mut open = connect(addr);
    assert!(acked(&mut open, "c1"));
    // Counted before the frame is handled, so settled once its ack arrived.
    let frames = &server.stats().frames;
    assert_eq!(frames.load(std::sync::atomic::Ordering::Relaxed), 1);

    server.shutdown().expect("clean shutdown");
    assert_eq!(read_ack(&mut open), None, "connection still open");
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
    // The port is free: a new server takes the same address, as a restarted ingester does.
    let again = BackgroundServer::start(addr, Arc::new(Acker::default())).unwrap();
    assert_eq!(again.addr(), addr);
    assert!(acked(&mut connect(addr), "c2"));
}

#[test]
fn background_server_drop_connections_ends_open_ones_and_keeps_accepting() {
    let server = BackgroundServer::start("127.0.0.1:0", Arc::new(Acker::default())).unwrap();
    let mut first = connect(server.addr());
    assert!(acked(&mut first, "c1"));
    server.drop_connections();
    assert_eq!(read_ack(&mut first), None, "connection not dropped");
    // Connected only once the first is seen closed, so the drop is behind us.
    let mut second = connect(server.addr());
    assert!(acked(&mut second, "c2"));
    let stats = server.stats();
    assert_eq!(
        stats
            .connections_total
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn background_server_shutdown_gives_up_after_its_timeout_when_a_handler_blocks_its_thread() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let handler = Arc::new(Acker {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let timeout = Duration::from_millis(50);
    let (server, ()) = BackgroundServer::start_with(
        "127.0.0.1:0",
        BackgroundOptions::default().shutdown_timeout(timeout),
        async move { Ok::<_, std::convert::Infallible>((handler, ())) },
    )
    .unwrap();
    let mut stuck = connect(server.addr());
    stuck.write_all(&chunk("block", "c1")).unwrap();
    entered.recv_timeout(HANG).expect("the handler was entered");

    // The handler holds the runtime's only thread until released: the thread cannot end.
    let result = server.shutdown();
    assert!(
        matches!(result, Err(ShutdownError::TimedOut(t)) if t == timeout),
        "{result:?}"
    );
    // Let the detached thread finish.
    release.send(()).unwrap();
}

#[test]
fn background_server_start_with_runs_setup_on_the_server_thread_and_reports_its_failure() {
    let (server, seen_from) = BackgroundServer::start_with(
        "127.0.0.1:0",
        BackgroundOptions::default().thread_name("setup-test"),
        async {
            // Setup runs on the server's runtime: a spawned task lives there.
            let on_runtime = tokio::spawn(async { 7 }).await.unwrap();
            let thread = std::thread::current().name().map(str::to_string);
            Ok::<_, String>((Arc::new(Acker::default()), (thread, on_runtime)))
        },
    )
    .unwrap();
    assert_eq!(seen_from, (Some("setup-test".to_string()), 7));
    assert!(acked(&mut connect(server.addr()), "c1"));
    drop(server);

    let failed = BackgroundServer::start_with("127.0.0.1:0", BackgroundOptions::default(), async {
        Err::<(Arc<Acker>, ()), _>("no database".to_string())
    });
    assert!(
        matches!(&failed, Err(StartError::Setup(e)) if e == "no database"),
        "{failed:?}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = BackgroundServer::start(taken.local_addr().unwrap(), Arc::new(Acker::default()));
    assert!(matches!(busy, Err(StartError::Bind(_))), "{busy:?}");
}

#[tokio::test]
async fn background_server_runs_and_is_dropped_inside_a_current_thread_tokio_test() {
    let server = BackgroundServer::start("127.0.0.1:0", Arc::new(Acker::default())).unwrap();
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut write, &chunk("t", "c1"))
        .await
        .unwrap();
    let mut acks = AckReader::new(read);
    let ack = tokio::time::timeout(HANG, acks.read_ack()).await.unwrap();
    assert_eq!(ack.unwrap().as_deref(), Some(&b"c1"[..]));
    // Dropping blocks this runtime's thread briefly; the server has its own, so it can stop.
    drop(server);
    let end = tokio::time::timeout(HANG, acks.read_ack()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_server_serves_on_the_callers_runtime_drops_connections_and_shuts_down() {
    let bound = Server::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    let server = SpawnedServer::spawn(bound, Arc::new(Acker::default())).unwrap();
    let addr = server.addr();
    let first = std::thread::spawn(move || {
        let mut s = connect(addr);
        let ok = acked(&mut s, "c1");
        (s, ok)
    });
    let (mut first, ok) = tokio::task::spawn_blocking(move || first.join().unwrap())
        .await
        .unwrap();
    assert!(ok);

    server.drop_connections();
    let closed = tokio::task::spawn_blocking(move || read_ack(&mut first).is_none())
        .await
        .unwrap();
    assert!(closed, "connection not dropped");
    let second_acked = tokio::task::spawn_blocking(move || acked(&mut connect(addr), "c2"))
        .await
        .unwrap();
    assert!(second_acked);

    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
