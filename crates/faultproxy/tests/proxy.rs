//! The proxy against plain servers on 127.0.0.1: an echo server (what reaches the server comes
//! back as "acks", so a duplicated frame comes back twice) and a recording server (exactly
//! which bytes arrived, and whether the connection ended). Synchronous clients with read
//! timeouts; conditions polled through the proxy's counters, never slept on.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use faultproxy::{Direction, FaultProxy, Faults};

const WAIT: Duration = Duration::from_secs(20);

/// An echo server: every byte read is written back on the same connection.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// What a recording server saw on one connection.
#[derive(Debug, Default, Clone)]
struct Seen {
    bytes: Vec<u8>,
    closed: bool,
}

/// A server that records what each connection sent and never answers.
struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let all = conns.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let i = {
                    let mut all = all.lock().unwrap();
                    all.push(Seen::default());
                    all.len() - 1
                };
                let all = all.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                all.lock().unwrap()[i].closed = true;
                                return;
                            }
                            Ok(n) => all.lock().unwrap()[i].bytes.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        Recorder { addr, conns }
    }

    fn seen(&self) -> Vec<Seen> {
        self.conns.lock().unwrap().clone()
    }

    /// Polls until `done` holds for the connections seen so far.
    fn wait(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {seen:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A small Forward-like frame: `["t", i]`.
fn frame(i: u16) -> Vec<u8> {
    let [hi, lo] = i.to_be_bytes();
    vec![0x92, 0xa1, b't', 0xcd, hi, lo]
}

/// A frame of `len` bytes: `["t", bin]`.
fn big_frame(len: usize) -> Vec<u8> {
    assert!((5..=255 + 5).contains(&len));
    let body = len - 5;
    let mut f = vec![0x92, 0xa1, b't', 0xc4, body as u8];
    f.extend((0..body).map(|i| i as u8));
    f
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads `count` whole MessagePack values.
fn read_values(s: &mut TcpStream, count: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < count {
        if let Some(n) = forward::msgpack::value_len(&buf, 1 << 20).unwrap() {
            out.push(buf.drain(..n).collect());
            continue;
        }
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("read value {} of {count}: {e}", out.len() + 1));
        assert_ne!(n, 0, "closed after {} of {count} values", out.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(buf.is_empty(), "more than {count} values: {buf:02x?}");
    out
}

#[test]
fn a_clean_pipe_forwards_both_ways_and_counts_what_it_did() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut c = connect(proxy.addr());
    let frames: Vec<Vec<u8>> = (1..=3).map(frame).collect();
    c.write_all(&frames.concat()).unwrap();
    assert_eq!(read_values(&mut c, 3), frames);
    // Counted once written, which may be just after the client read the bytes.
    let s = proxy.wait_for("3 frames and 3 acks", WAIT, |s| {
        s.frames_to_server == 3 && s.acks_from_server == 3 && s.bytes_to_client == 18
    });
    assert_eq!(s.bytes_to_server, 18);
    assert_eq!((s.connections_accepted, s.connections_open), (1, 1));
    drop(c);
    proxy.wait_for("the connection closed", WAIT, |s| s.connections_open == 0);
}

#[test]
fn duplicated_frames_are_whole_frames_however_the_bytes_were_cut() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    proxy.set_faults(Faults::duplicate_frames(1));
    let mut c = connect(proxy.addr());
    let frames = [frame(1), big_frame(200), frame(3)];
    // Written a few bytes at a time: the proxy must find the frames' ends across reads.
    for piece in frames.concat().chunks(7) {
        c.write_all(piece).unwrap();
        c.flush().unwrap();
    }
    let back = read_values(&mut c, 6);
    let want: Vec<Vec<u8>> = frames.iter().flat_map(|f| [f.clone(), f.clone()]).collect();
    assert_eq!(back, want);
    assert_eq!(proxy.stats().frames_duplicated, 3);

    // Every second frame (counted over the proxy's life: frames 4..=7 now).
    proxy.set_faults(Faults::duplicate_frames(2));
    let frames: Vec<Vec<u8>> = (4..=7).map(frame).collect();
    c.write_all(&frames.concat()).unwrap();
    let back = read_values(&mut c, 6);
    let f = &frames;
    assert_eq!(
        back,
        [&f[0], &f[0], &f[1], &f[2], &f[2], &f[3]].map(|v| v.clone())
    );
    assert_eq!(proxy.stats().frames_duplicated, 5);
}

#[test]
fn dropped_acks_never_arrive_and_the_pipe_works_again_once_healed() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut c = connect(proxy.addr());
    proxy.set_faults(Faults::drop_acks());
    c.write_all(&[frame(1), frame(2)].concat()).unwrap();
    proxy.wait_for("two acks dropped", WAIT, |s| s.acks_dropped == 2);
    proxy.heal();
    c.write_all(&frame(3)).unwrap();
    assert_eq!(
        read_values(&mut c, 1),
        [frame(3)],
        "the first value back is the one sent after the heal"
    );
    let s = proxy.stats();
    assert_eq!((s.frames_to_server, s.acks_from_server), (3, 3));
}

#[test]
fn delayed_acks_keep_their_order_and_are_not_early() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut c = connect(proxy.addr());
    let delay = Duration::from_millis(300);
    proxy.set_faults(Faults::delay_acks(delay));
    let frames: Vec<Vec<u8>> = (1..=4).map(frame).collect();
    let sent = Instant::now();
    c.write_all(&frames.concat()).unwrap();
    assert_eq!(read_values(&mut c, 4), frames);
    assert!(sent.elapsed() >= delay, "an ack came back before the delay");
    assert_eq!(proxy.stats().acks_delayed, 4);
}

#[test]
fn reordered_acks_come_back_reversed_in_groups_or_when_held_too_long() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut c = connect(proxy.addr());
    proxy.set_faults(Faults::reorder_acks(3, Duration::from_secs(60)));
    let frames: Vec<Vec<u8>> = (1..=3).map(frame).collect();
    c.write_all(&frames.concat()).unwrap();
    let back = read_values(&mut c, 3);
    assert_eq!(back, [frame(3), frame(2), frame(1)]);
    assert_eq!(proxy.stats().acks_reordered, 3);

    // Two of a group of three: released, reversed, once the first was held max_hold.
    proxy.set_faults(Faults::reorder_acks(3, Duration::from_millis(50)));
    c.write_all(&[frame(4), frame(5)].concat()).unwrap();
    assert_eq!(read_values(&mut c, 2), [frame(5), frame(4)]);
    assert_eq!(proxy.stats().acks_reordered, 5);
}

#[test]
fn a_partition_holds_everything_both_ways_and_loses_nothing_once_healed() {
    let server = Recorder::start();
    let proxy = FaultProxy::start(server.addr).unwrap();
    let mut live = connect(proxy.addr());
    live.write_all(&frame(1)).unwrap();
    server.wait("the first frame", |s| {
        s.len() == 1 && s[0].bytes == frame(1)
    });
    proxy.wait_for("the first frame counted", WAIT, |s| s.bytes_to_server == 6);

    proxy.set_faults(Faults::partition());
    proxy.wait_for("the live connection stalled", WAIT, |s| {
        s.partition_stalls >= 1
    });
    live.write_all(&frame(2)).unwrap();
    // A new connection during the partition is accepted but not connected upstream.
    let mut new = connect(proxy.addr());
    new.write_all(&frame(3)).unwrap();
    proxy.wait_for("the new connection accepted and stalled", WAIT, |s| {
        s.connections_accepted == 2 && s.partition_stalls >= 3
    });
    assert_eq!(
        proxy.stats().bytes_to_server,
        6,
        "nothing crossed the partition"
    );
    assert_eq!(
        server.seen().len(),
        1,
        "no upstream connection during the partition"
    );

    proxy.heal();
    let seen = server.wait("both frames after the heal", |s| {
        s.len() == 2 && s[0].bytes == [frame(1), frame(2)].concat() && s[1].bytes == frame(3)
    });
    assert!(!seen[0].closed && !seen[1].closed);
    drop(new);
    drop(live);
}

#[test]
fn cut_all_closes_and_reset_all_resets_the_live_connections() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut a = connect(proxy.addr());
    a.write_all(&frame(1)).unwrap();
    read_values(&mut a, 1);
    assert_eq!(proxy.cut_all(), 1);
    let mut buf = [0u8; 16];
    assert_eq!(a.read(&mut buf).unwrap(), 0, "a cut is an orderly close");
    proxy.wait_for("the cut counted", WAIT, |s| s.connections_cut == 1);

    let mut b = connect(proxy.addr());
    b.write_all(&frame(2)).unwrap();
    read_values(&mut b, 1);
    assert_eq!(proxy.reset_all(), 1);
    let err = b.read(&mut buf).expect_err("a reset is an error");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    proxy.wait_for("the reset counted", WAIT, |s| s.connections_reset == 1);

    // New connections are not affected.
    let mut c = connect(proxy.addr());
    c.write_all(&frame(3)).unwrap();
    assert_eq!(read_values(&mut c, 1), [frame(3)]);
}

#[test]
fn a_mid_frame_cut_delivers_exactly_the_bytes_before_it_then_closes() {
    let server = Recorder::start();
    let proxy = FaultProxy::start(server.addr).unwrap();
    proxy.cut_mid_frame(10, 1);
    let mut c = connect(proxy.addr());
    // A frame no longer than the cut point passes; the next, longer one is cut inside.
    c.write_all(&frame(1)).unwrap();
    c.write_all(&big_frame(40)).unwrap();
    let seen = server.wait("the truncated frame and the close", |s| {
        s.len() == 1 && s[0].closed
    });
    assert_eq!(
        seen[0].bytes,
        [&frame(1)[..], &big_frame(40)[..10]].concat()
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        c.read(&mut buf).unwrap(),
        0,
        "the client's side is closed too"
    );
    let s = proxy.stats();
    assert_eq!((s.frames_cut, s.connections_cut), (1, 1));

    // The armed cut is used up: the next connection passes the long frame whole.
    let mut c = connect(proxy.addr());
    c.write_all(&big_frame(40)).unwrap();
    server.wait("the whole frame", |s| {
        s.len() == 2 && s[1].bytes == big_frame(40)
    });
    assert_eq!(proxy.stats().frames_cut, 1);
}

#[test]
fn trickled_bytes_all_arrive_one_at_a_time() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    proxy.set_faults(Faults::trickle(
        Direction::ToServer,
        Duration::from_millis(1),
    ));
    let mut c = connect(proxy.addr());
    let f = big_frame(50);
    c.write_all(&f).unwrap();
    assert_eq!(read_values(&mut c, 1), [f]);
    proxy.wait_for("50 bytes trickled", WAIT, |s| s.bytes_trickled == 50);
}

#[test]
fn refused_connections_are_reset_and_never_reach_the_server() {
    let server = Recorder::start();
    let proxy = FaultProxy::start(server.addr).unwrap();
    proxy.set_faults(Faults::refuse_connections());
    let mut c = connect(proxy.addr());
    let _ = c.write_all(&frame(1));
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert_eq!(proxy.stats().connections_refused, 1);
    proxy.heal();
    let mut c = connect(proxy.addr());
    c.write_all(&frame(2)).unwrap();
    let seen = server.wait("the frame after the heal", |s| !s.is_empty());
    assert_eq!(
        seen.len(),
        1,
        "the refused connection never reached the server"
    );
    drop(c);
}

#[test]
fn bytes_that_are_not_msgpack_are_forwarded_raw_and_new_connections_follow_the_upstream() {
    let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap()).unwrap();
    let mut c = connect(proxy.addr());
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "nothing listens upstream");
    proxy.wait_for("an upstream failure", WAIT, |s| s.upstream_failures == 1);

    proxy.set_upstream(echo_server());
    proxy.set_faults(Faults::duplicate_frames(1));
    let mut c = connect(proxy.addr());
    // 0xc1 is never MessagePack: from there the stream is raw bytes, nothing duplicated.
    let raw = [0xc1, 0x92, 0x01, 0x02, 0xff];
    c.write_all(&raw).unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, raw);
    assert_eq!(proxy.stats().frames_duplicated, 0);
}
