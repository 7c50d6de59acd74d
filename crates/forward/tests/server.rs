//! `Server` acks a chunk only when its handler said so, and isolates bad connections.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use forward::encode;
use forward::{AckReader, Disposition, EventTime, Frame, Handler, Options, Server, ServerConfig};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// What the handler should answer; chosen by the record's `"do"` field.
fn wanted(frame: &Frame) -> &'static str {
    let rec = &frame.entries.first().expect("an entry").record;
    let Value::Map(m) = rec else { return "ack" };
    match m
        .iter()
        .find(|(k, _)| k.as_str() == Some("do"))
        .and_then(|(_, v)| v.as_str())
    {
        Some("withhold") => "withhold",
        Some("close") => "close",
        Some("fail") => "fail",
        Some("gate") => "gate",
        _ => "ack",
    }
}

/// Records every frame it sees; `"gate"` frames wait for the test to release them.
struct TestHandler {
    seen: mpsc::UnboundedSender<Frame>,
    gates: Mutex<Vec<oneshot::Receiver<()>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Handler for TestHandler {
    type Error = String;

    async fn handle(&self, _peer: forward::PeerAddr, frame: Frame) -> Result<Disposition, String> {
        let what = wanted(&frame);
        let tag = frame.tag.clone();
        let _ = self.seen.send(frame);
        let gate = if what == "gate" {
            self.gates.lock().unwrap().pop()
        } else {
            None
        };
        if let Some(gate) = gate {
            gate.await.expect("the test releases the gate");
        }
        let answer = match what {
            "withhold" => Ok(Disposition::Withhold),
            "close" => Ok(Disposition::Close),
            "fail" => Err("storage down".to_string()),
            _ => Ok(Disposition::Ack),
        };
        self.log.lock().unwrap().push(format!("handled {tag}"));
        answer
    }
}

struct Running {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Frame>,
    log: Arc<Mutex<Vec<String>>>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(gates: Vec<oneshot::Receiver<()>>) -> Running {
    start_with(gates, ServerConfig::default()).await
}

async fn start_with(gates: Vec<oneshot::Receiver<()>>, config: ServerConfig) -> Running {
    let server = Server::bind("127.0.0.1:0", config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(TestHandler {
        seen: tx,
        gates: Mutex::new(gates),
        log: log.clone(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(handler, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        seen,
        log,
        stop,
        task,
    }
}

impl Running {
    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn message(tag: &str, action: &str, chunk: Option<&str>) -> Vec<u8> {
    let rec = mp(&map(&[("do", Value::from(action))]));
    let mut buf = Vec::new();
    let options = Options {
        chunk: chunk.map(|c| c.as_bytes().to_vec()),
        ..Options::default()
    };
    encode::write_message(&mut buf, tag, EventTime::new(1, 0), &rec, &options);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_a_chunk_after_the_handler_returns_ack() {
    let (release, gate) = oneshot::channel();
    let mut srv = start(vec![gate]).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    wr.write_all(&message("gated", "gate", Some("chunk-1")))
        .await
        .unwrap();
    let log = srv.log.clone();
    let acks = tokio::spawn(async move {
        let mut r = AckReader::new(rd);
        let ack = r.read_ack().await.unwrap();
        log.lock().unwrap().push("ack received".to_string());
        ack
    });
    // the handler has the frame and is blocked on its gate
    let frame = srv.seen.recv().await.unwrap();
    assert_eq!(frame.tag, "gated");
    assert!(
        srv.log.lock().unwrap().is_empty(),
        "nothing handled or acked while the handler runs"
    );
    release.send(()).unwrap();
    assert_eq!(acks.await.unwrap(), Some(b"chunk-1".to_vec()));
    assert_eq!(*srv.log.lock().unwrap(), ["handled gated", "ack received"]);
    srv.shutdown().await;
}

#[tokio::test]
async fn withhold_sends_nothing_and_keeps_the_connection() {
    let mut srv = start(vec![]).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    wr.write_all(&message("a", "withhold", Some("held")))
        .await
        .unwrap();
    wr.write_all(&message("b", "ack", Some("acked")))
        .await
        .unwrap();
    wr.write_all(&message("c", "ack", None)).await.unwrap();
    wr.write_all(&message("d", "withhold", Some("held-2")))
        .await
        .unwrap();
    for tag in ["a", "b", "c", "d"] {
        assert_eq!(srv.seen.recv().await.unwrap().tag, tag);
    }
    wr.shutdown().await.unwrap();
    // everything the server ever sent on this connection, up to its close
    let mut r = AckReader::new(rd);
    assert_eq!(
        r.read_ack().await.unwrap(),
        Some(b"acked".to_vec()),
        "the only ack is the acked chunk"
    );
    assert_eq!(r.read_ack().await.unwrap(), None);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_handler_error_closes_the_connection_without_an_ack() {
    let mut srv = start(vec![]).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    wr.write_all(&message("x", "fail", Some("lost")))
        .await
        .unwrap();
    assert_eq!(srv.seen.recv().await.unwrap().tag, "x");
    // the server closes its side although ours stays open: EOF with no ack
    let mut r = AckReader::new(rd);
    assert_eq!(r.read_ack().await.unwrap(), None);
    srv.shutdown().await;
    drop(wr);
}

#[tokio::test]
async fn close_disposition_closes_without_an_ack_and_reads_no_further_frame() {
    // One frame at a time: with several in flight, the next frame may already be taken (and
    // handled) when the first one's answer closes the connection; it is never acked either.
    let config = ServerConfig {
        frames_in_flight: 1,
        ..ServerConfig::default()
    };
    let mut srv = start_with(vec![], config).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    let mut both = message("first", "close", Some("c1"));
    both.extend(message("second", "ack", Some("c2")));
    wr.write_all(&both).await.unwrap();
    assert_eq!(srv.seen.recv().await.unwrap().tag, "first");
    let mut r = AckReader::new(rd);
    assert_eq!(r.read_ack().await.unwrap(), None);
    // the connection's task ended before its socket closed: the second frame was never taken
    assert!(matches!(
        srv.seen.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_frames_are_handled_while_an_earlier_one_is_and_acks_keep_the_frames_order() {
    let (release, gate) = oneshot::channel();
    let mut srv = start(vec![gate]).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    let mut both = message("slow", "gate", Some("first"));
    both.extend(message("fast", "ack", Some("second")));
    wr.write_all(&both).await.unwrap();
    assert_eq!(srv.seen.recv().await.unwrap().tag, "slow");
    // Read ahead: the second frame reaches the handler while the first is still held.
    assert_eq!(srv.seen.recv().await.unwrap().tag, "fast");
    while !srv
        .log
        .lock()
        .unwrap()
        .contains(&"handled fast".to_string())
    {
        tokio::task::yield_now().await;
    }
    let mut r = AckReader::new(rd);
    let first = tokio::spawn(async move {
        let ack = r.read_ack().await.unwrap();
        (r, ack)
    });
    tokio::task::yield_now().await;
    assert!(
        !first.is_finished(),
        "no ack before the first frame is answered"
    );
    release.send(()).unwrap();
    let (mut r, ack) = first.await.unwrap();
    assert_eq!(ack, Some(b"first".to_vec()), "acks in the frames' order");
    assert_eq!(r.read_ack().await.unwrap(), Some(b"second".to_vec()));
    srv.shutdown().await;
    drop(wr);
}

#[tokio::test]
async fn json_frames_are_acked_in_json() {
    let mut srv = start(vec![]).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    encode::write_json_message(&mut buf, "j", 5, br#"{"do":"ack"}"#, Some("json-chunk"));
    buf.push(b'\n');
    s.write_all(&buf).await.unwrap();
    assert_eq!(
        srv.seen.recv().await.unwrap().framing,
        forward::Framing::Json
    );
    let mut reply = vec![0u8; br#"{"ack":"json-chunk"}"#.len()];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, br#"{"ack":"json-chunk"}"#);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_connection_is_closed_and_a_good_one_keeps_being_served() {
    let mut srv = start(vec![]).await;
    let good = TcpStream::connect(srv.addr).await.unwrap();
    let (good_rd, mut good_wr) = good.into_split();
    let mut acks = AckReader::new(good_rd);
    good_wr
        .write_all(&message("g", "ack", Some("g-1")))
        .await
        .unwrap();
    assert_eq!(acks.read_ack().await.unwrap(), Some(b"g-1".to_vec()));

    // garbage: not a frame at all, then a frame that lies about its tag
    for garbage in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x93, 0x01, 0x02, 0x03],
        vec![0xc1],
    ] {
        let mut bad = TcpStream::connect(srv.addr).await.unwrap();
        bad.write_all(&garbage).await.unwrap();
        let mut rest = Vec::new();
        // the server closes it although this side never closes
        bad.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no reply to garbage");
    }

    // the good connection is still served, frames and acks in order
    good_wr
        .write_all(&message("g", "ack", Some("g-2")))
        .await
        .unwrap();
    good_wr
        .write_all(&message("g", "ack", Some("g-3")))
        .await
        .unwrap();
    assert_eq!(acks.read_ack().await.unwrap(), Some(b"g-2".to_vec()));
    assert_eq!(acks.read_ack().await.unwrap(), Some(b"g-3".to_vec()));
    let tags: Vec<_> = std::iter::from_fn(|| srv.seen.try_recv().ok())
        .map(|f| f.options.chunk.unwrap())
        .collect();
    assert_eq!(
        tags,
        [b"g-1".to_vec(), b"g-2".to_vec(), b"g-3".to_vec()],
        "garbage never reached the handler"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn frames_of_every_mode_reach_the_handler_in_order() {
    let mut srv = start(vec![]).await;
    let (rd, mut wr) = TcpStream::connect(srv.addr).await.unwrap().into_split();
    let rec = mp(&map(&[("do", Value::from("ack"))]));
    let mut entries = Vec::new();
    encode::write_entry(&mut entries, EventTime::new(1, 0), &rec);
    encode::write_entry(&mut entries, EventTime::new(2, 0), &rec);
    let chunk = |c: &str| Options {
        chunk: Some(c.as_bytes().to_vec()),
        size: Some(2),
        ..Options::default()
    };
    let mut buf = Vec::new();
    encode::write_forward(&mut buf, "fwd", &entries, 2, &chunk("1"));
    encode::write_packed_forward(&mut buf, "packed", &entries, &chunk("2"));
    encode::write_packed_forward(
        &mut buf,
        "gz",
        &entries,
        &Options {
            compressed: Some(forward::Compression::Gzip),
            ..chunk("3")
        },
    );
    wr.write_all(&buf).await.unwrap();
    wr.shutdown().await.unwrap();
    let mut r = AckReader::new(rd);
    for c in ["1", "2", "3"] {
        assert_eq!(r.read_ack().await.unwrap(), Some(c.as_bytes().to_vec()));
    }
    assert_eq!(r.read_ack().await.unwrap(), None);
    for (tag, mode) in [
        ("fwd", forward::Mode::Forward),
        ("packed", forward::Mode::PackedForward),
        ("gz", forward::Mode::CompressedPackedForward),
    ] {
        let f = srv.seen.recv().await.unwrap();
        assert_eq!((f.tag.as_str(), f.mode, f.entries.len()), (tag, mode, 2));
    }
    srv.shutdown().await;
}
