//! The server's limits over real sockets: entries per frame, connection count, idle and frame
//! timeouts, and the memory budget (a flood of partial frames must not starve small frames,
//! and large frames must still complete when the budget is short).
//!
//! No sleep is used to synchronise: tests wait (with generous bounds) for what the server does
//! — a socket closed, an ack, a counter — and short timeouts are configured, not measured.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use forward::{
    AckReader, Disposition, EventTime, Frame, Handler, Options, Server, ServerConfig, ServerStats,
    SpawnedServer, encode,
};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything a test waits for.
const BOUND: Duration = Duration::from_secs(30);

/// Acks everything; counts frames and entries.
#[derive(Default)]
struct Count {
    frames: AtomicUsize,
    entries: AtomicUsize,
}

impl Handler for Count {
    type Error = String;
    async fn handle(&self, _: forward::PeerAddr, frame: Frame) -> Result<Disposition, String> {
        self.frames.fetch_add(1, Ordering::SeqCst);
        self.entries
            .fetch_add(frame.entries.len(), Ordering::SeqCst);
        Ok(Disposition::Ack)
    }
}

async fn start(config: ServerConfig) -> (SpawnedServer, Arc<Count>) {
    let server = Server::bind("127.0.0.1:0", config).await.unwrap();
    let count = Arc::new(Count::default());
    (SpawnedServer::spawn(server, count.clone()).unwrap(), count)
}

fn message(tag: &str, chunk: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let options = Options {
        chunk: Some(chunk.as_bytes().to_vec()),
        ..Options::default()
    };
    encode::write_message(
        &mut buf,
        tag,
        EventTime::new(1, 0),
        &mp(&record(1)),
        &options,
    );
    buf
}

/// A normal client: one frame with a chunk id on a new connection, and its ack.
async fn acked(addr: SocketAddr, chunk: &str) {
    let run = async {
        let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        wr.write_all(&message("ok", chunk)).await.unwrap();
        AckReader::new(rd).read_ack().await.unwrap()
    };
    let ack = tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("no ack for {chunk} within {BOUND:?}"));
    assert_eq!(ack, Some(chunk.as_bytes().to_vec()));
}

/// Reads until the server closes the connection; returns what it sent.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(BOUND, stream.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("the server did not close the connection within {BOUND:?}"),
    }
}

/// Waits (bounded) until `cond` holds for the server's counters.
async fn until(stats: &ServerStats, what: &str, cond: impl Fn(&ServerStats) -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !cond(stats) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pair(n: usize) -> Vec<Value> {
    vec![Value::Array(vec![Value::from(0), Value::Nil]); n]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_too_many_records_is_refused_before_it_is_decoded() {
    let (srv, count) = start(ServerConfig {
        max_records_per_frame: 10,
        ..ServerConfig::default()
    })
    .await;
    // Forward: 11 entries, with a chunk id.
    let frame = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Array(pair(11)),
        map(&[("chunk", Value::from("c"))]),
    ]));
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(&frame).await.unwrap();
    assert!(closed_by_server(&mut s).await.is_empty(), "no ack");
    // Forward, only the header of an array of 1,000,000 entries: refused on the header.
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(&[0x92, 0xa1, b't', 0xdd, 0x00, 0x0f, 0x42, 0x40])
        .await
        .unwrap();
    assert!(closed_by_server(&mut s).await.is_empty());
    // PackedForward: 11 packed entries.
    let packed = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Binary(b"\x92\x00\xc0".repeat(11)),
    ]));
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(&packed).await.unwrap();
    assert!(closed_by_server(&mut s).await.is_empty());
    let stats = srv.stats();
    assert_eq!(stats.refused_too_many_records.load(Ordering::SeqCst), 3);
    assert_eq!(count.frames.load(Ordering::SeqCst), 0, "never handed on");
    // 10 entries are fine
    let ok = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Array(pair(10)),
        map(&[("chunk", Value::from("ten"))]),
    ]));
    let (rd, mut wr) = TcpStream::connect(srv.addr()).await.unwrap().into_split();
    wr.write_all(&ok).await.unwrap();
    let ack = tokio::time::timeout(BOUND, AckReader::new(rd).read_ack()).await;
    assert_eq!(ack.unwrap().unwrap(), Some(b"ten".to_vec()));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_of_tiny_entries_is_refused() {
    let (srv, count) = start(ServerConfig::default()).await;
    // 2.79 million `[0, nil]` entries in about 8 KB.
    let bomb = mp(&Value::Array(vec![
        Value::from("t"),
        Value::Binary(gzip(&b"\x92\x00\xc0".repeat(2_790_000))),
        map(&[
            ("chunk", Value::from("bomb")),
            ("compressed", Value::from("gzip")),
        ]),
    ]));
    assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(&bomb).await.unwrap();
    assert!(closed_by_server(&mut s).await.is_empty(), "no ack");
    let stats = srv.stats();
    assert_eq!(stats.refused_too_many_records.load(Ordering::SeqCst), 1);
    assert_eq!(count.frames.load(Ordering::SeqCst), 0);
    acked(srv.addr(), "after").await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let (srv, _) = start(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut idle = TcpStream::connect(srv.addr()).await.unwrap();
    // A client sending a frame per round trip stays open across many idle timeouts' worth of
    // frames, as long as none of its gaps is that long.
    let busy = TcpStream::connect(srv.addr()).await.unwrap();
    let (rd, mut wr) = busy.into_split();
    let mut acks = AckReader::new(rd);
    for i in 0..5 {
        let chunk = format!("busy-{i}");
        wr.write_all(&message("b", &chunk)).await.unwrap();
        let ack = tokio::time::timeout(BOUND, acks.read_ack()).await.unwrap();
        assert_eq!(ack.unwrap(), Some(chunk.into_bytes()));
    }
    assert!(closed_by_server(&mut idle).await.is_empty());
    let stats = srv.stats();
    until(&stats, "an idle close", |s| {
        s.closed_idle_timeout.load(Ordering::SeqCst) >= 1
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_cut_off_by_the_frame_timeout() {
    let (srv, count) = start(ServerConfig {
        frame_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let frame = message("slow", "slow-1");
    let stream = TcpStream::connect(srv.addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // One byte every 20 ms: the whole frame would take seconds; the writer stops when the
    // server closed (or after the frame, which must not be acked).
    let writer = tokio::spawn(async move {
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // A normal client meanwhile gets its ack.
    acked(srv.addr(), "normal").await;
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, rd.read_to_end(&mut got))
        .await
        .expect("closed by the server")
        .ok();
    assert!(got.is_empty(), "the trickled frame is not acked");
    let stats = srv.stats();
    until(&stats, "a frame timeout", |s| {
        s.closed_frame_timeout.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        count.frames.load(Ordering::SeqCst),
        1,
        "only the normal frame"
    );
    writer.abort();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (srv, _) = start(ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    })
    .await;
    let stats = srv.stats();
    let mut held = Vec::new();
    for i in 0..3 {
        let (rd, mut wr) = TcpStream::connect(srv.addr()).await.unwrap().into_split();
        let chunk = format!("held-{i}");
        wr.write_all(&message("h", &chunk)).await.unwrap();
        let mut acks = AckReader::new(rd);
        let ack = tokio::time::timeout(BOUND, acks.read_ack()).await.unwrap();
        assert_eq!(ack.unwrap(), Some(chunk.into_bytes()));
        held.push((acks, wr));
    }
    let mut extra = TcpStream::connect(srv.addr()).await.unwrap();
    // The frame may or may not be written before the close: either way, no ack.
    let _ = extra.write_all(&message("x", "extra")).await;
    assert!(closed_by_server(&mut extra).await.is_empty());
    assert_eq!(stats.refused_max_connections.load(Ordering::SeqCst), 1);
    // One slot freed: a new client is served.
    drop(held.pop());
    until(&stats, "the freed slot", |s| {
        s.connections_open.load(Ordering::SeqCst) == 2
    })
    .await;
    acked(srv.addr(), "after").await;
    srv.shutdown().await;
}

/// `count` connections each sending `each` bytes of a PackedForward frame that announces
/// twice as many, and holding them.
async fn flood(addr: SocketAddr, count: usize, each: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut head = vec![0x92, 0xa1, b'f', 0xc6];
    head.extend_from_slice(&u32::try_from(2 * each).unwrap().to_be_bytes());
    let mut bytes = head;
    bytes.resize(each, 0);
    let bytes = Arc::new(bytes);
    let mut tasks = Vec::new();
    for _ in 0..count {
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&bytes).await;
            // hold it: wait for the server (or the test's end)
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_partial_frames_waits_for_memory_and_small_frames_still_get_through() {
    let limit = 16 << 20;
    let (srv, _) = start(ServerConfig {
        memory_limit: limit,
        max_frame_bytes: 1 << 20,
        ..ServerConfig::default()
    })
    .await;
    let stats = srv.stats();
    // 100 × 256 KiB = 25 MiB of partial frames against a 16 MiB budget.
    let tasks = flood(srv.addr(), 100, 256 * 1024).await;
    until(&stats, "connections waiting for memory", |s| {
        s.memory_waits.load(Ordering::SeqCst) > 0
    })
    .await;
    for i in 0..5 {
        acked(srv.addr(), &format!("small-{i}")).await;
        let charged = stats.memory_charged_bytes.load(Ordering::SeqCst);
        assert!(charged <= limit as u64, "charged {charged} > {limit}");
    }
    for t in tasks {
        t.abort();
    }
    srv.shutdown().await;
}

/// Acks every frame once the server has made some connection wait for memory (so frames
/// are held in the handler, with their memory, until the budget is short).
#[derive(Default)]
struct HoldUntilWait {
    stats: std::sync::OnceLock<Arc<ServerStats>>,
    entries: AtomicUsize,
}

impl Handler for HoldUntilWait {
    type Error = String;
    async fn handle(&self, _: forward::PeerAddr, frame: Frame) -> Result<Disposition, String> {
        let stats = self.stats.get().expect("set after spawn");
        until(stats, "a connection waiting for memory", |s| {
            s.memory_waits.load(Ordering::SeqCst) > 0
        })
        .await;
        self.entries
            .fetch_add(frame.entries.len(), Ordering::SeqCst);
        Ok(Disposition::Ack)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_complete_when_the_budget_is_short() {
    // Shared pool: 7 MiB. 20 frames of ~190 KB, each decoding to ~3.5 MB, at once: most
    // connections wait for memory while holding their frame's bytes, and the reserve lets
    // one at a time finish.
    let server = Server::bind(
        "127.0.0.1:0",
        ServerConfig {
            memory_limit: 16 << 20,
            max_frame_bytes: 1 << 20,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let handler = Arc::new(HoldUntilWait::default());
    let _ = handler.stats.set(server.stats());
    let srv = SpawnedServer::spawn(server, handler.clone()).unwrap();
    let entries: Vec<u8> = (0..6000)
        .flat_map(|i| {
            let mut e = Vec::new();
            encode::write_entry(&mut e, EventTime::new(1, 0), &mp(&record(i)));
            e
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut frame = Vec::new();
        let chunk = format!("big-{i}");
        let options = Options {
            chunk: Some(chunk.clone().into_bytes()),
            ..Options::default()
        };
        encode::write_packed_forward(&mut frame, "big", &entries, &options);
        let addr = srv.addr();
        tasks.push(tokio::spawn(async move {
            let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
            wr.write_all(&frame).await.unwrap();
            AckReader::new(rd).read_ack().await.unwrap() == Some(chunk.into_bytes())
        }));
    }
    for t in tasks {
        let ok = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("every large frame completes")
            .unwrap();
        assert!(ok);
    }
    assert_eq!(handler.entries.load(Ordering::SeqCst), 20 * 6000);
    let stats = srv.stats();
    until(&stats, "all memory given back", |s| {
        s.memory_charged_bytes.load(Ordering::SeqCst) == 0
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_budget_too_small_for_the_frame_limit_is_refused() {
    let err = Server::bind(
        "127.0.0.1:0",
        ServerConfig {
            memory_limit: 4 << 20,
            max_frame_bytes: 1 << 20,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(ServerConfig::default().validate().is_ok());
}

#[test]
fn the_connection_limit_keeps_descriptors_for_the_rest_of_the_process() {
    let c = ServerConfig::default();
    assert_eq!(c.effective_max_connections(1 << 20), c.max_connections);
    assert_eq!(
        c.effective_max_connections(256),
        256 - forward::NOFILE_HEADROOM
    );
    assert_eq!(c.effective_max_connections(10), 1);
    let (soft, hard) = forward::raise_nofile_limit().unwrap();
    assert_eq!(soft, hard);
}
