//! `billing ingest`'s forward limits against a real process and real sockets: a gzip bomb of
//! tiny entries is refused and nothing reaches the store; idle, trickling and excess
//! connections are cut while a normal client still gets its acks; a flood of partial frames
//! larger than the memory budget does not stop a normal client's acks.
//!
//! No sleeps as synchronisation: the limits are short flags, and the tests wait (bounded) for
//! what the server does: a socket closed, an ack, a store count.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const AT: &str = "2026-11-27T04:33:58Z";

/// `billing send` of one record (`key`); must be acked.
fn send(addr: SocketAddr, key: &str) {
    let mut c = Command::new(billing_bin());
    c.args(["send", "--billing.ingester", &addr.to_string()])
        .args(["--key", key, "--instance", "i-1", "--at", AT])
        .args(["--timeout", "30s", "--amount", "node-seconds=1"]);
    let out = run("billing send", c);
    assert!(out.status.success(), "send {key}: {}", out.stderr);
}

/// Reads until the server closes the connection (bounded); returns what it sent.
fn closed_by_server(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        // A reset also means closed by the server; a timeout does not.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the server did not close the connection within {RUN_TIMEOUT:?}: {e}"),
    }
}

fn str8(out: &mut Vec<u8>, s: &str) {
    forward::encode::write_str(out, s.as_bytes());
}

/// A CompressedPackedForward frame of `n` `[0, nil]` entries with a chunk id.
fn gzip_bomb(n: usize, chunk: &str) -> Vec<u8> {
    let options = forward::Options {
        chunk: Some(chunk.as_bytes().to_vec()),
        compressed: Some(forward::Compression::Gzip),
        ..Default::default()
    };
    let mut f = Vec::new();
    forward::encode::write_packed_forward(&mut f, "billing", &b"\x92\x00\xc0".repeat(n), &options);
    f
}

fn sqlite_ingest(label: &str, extra: &[&str]) -> (Server, String, tempfile::TempDir) {
    let dir = temp_dir(label);
    let db = dir.path().join("store.db");
    let server = ingest_sqlite(&db, "127.0.0.1:0", extra);
    (server, format!("sqlite:{}", db.display()), dir)
}

#[test]
fn a_gzip_bomb_is_refused_and_the_store_is_unchanged() {
    let (server, store, _dir) = sqlite_ingest("limits-bomb", &[]);
    // 2.79 million entries in a few dozen KB: over the 100,000-entry limit, under the 8 MiB
    // cap on inflated entries.
    let bomb = gzip_bomb(2_790_000, "bomb-1");
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&bomb).unwrap();
    assert!(closed_by_server(&mut s).is_empty(), "the bomb is not acked");
    // A normal client still gets its ack, and its record is the only one stored.
    send(server.addr, "after-bomb");
    let s: Value = summary(&store);
    assert_eq!(s["received"], 1, "{s}");
    assert_eq!(s["records"], 1, "{s}");
    assert_eq!(s["quarantined"], 0, "{s}");
}

#[test]
fn idle_trickling_and_slow_clients_are_cut_while_a_normal_client_is_acked() {
    let (server, store, _dir) = sqlite_ingest(
        "limits-timeouts",
        &["--idle-timeout", "500ms", "--frame-timeout", "1s"],
    );
    let addr = server.addr;
    // Idle: connects and sends nothing.
    let mut idle = TcpStream::connect(addr).unwrap();
    // Trickling: a frame (an empty-looking Message) one byte every 50 ms, ~10 s in all.
    let mut frame = vec![0x94];
    str8(&mut frame, "billing");
    frame.push(0x01);
    frame.push(0x81);
    str8(&mut frame, "k");
    str8(&mut frame, &"v".repeat(150));
    frame.push(0x81);
    str8(&mut frame, "chunk");
    str8(&mut frame, "trickled");
    let trickle = TcpStream::connect(addr).unwrap();
    let mut reader = trickle.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut w = trickle;
        for b in frame {
            if w.write_all(&[b]).is_err() {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
        true
    });
    send(addr, "normal-1");
    assert!(closed_by_server(&mut idle).is_empty());
    assert!(
        closed_by_server(&mut reader).is_empty(),
        "the trickled frame is cut, not acked"
    );
    let _ = reader.shutdown(Shutdown::Both);
    writer.join().unwrap();
    send(addr, "normal-2");
    let s = summary(&store);
    assert_eq!(s["received"], 2, "only the normal records: {s}");
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let (server, store, _dir) = sqlite_ingest("limits-conns", &["--max-connections", "2"]);
    let addr = server.addr;
    // Two connections, each proven served by an ack, then held open.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut frame = vec![0x93];
        str8(&mut frame, "probe");
        frame.push(0x90); // Forward mode, no entries
        frame.push(0x81);
        str8(&mut frame, "chunk");
        str8(&mut frame, &format!("held-{i}"));
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
        s.write_all(&frame).unwrap();
        let mut ack = [0u8; 16];
        let n = s.read(&mut ack).expect("an ack");
        assert!(
            String::from_utf8_lossy(&ack[..n]).contains(&format!("held-{i}")),
            "{:?}",
            &ack[..n]
        );
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    assert!(closed_by_server(&mut extra).is_empty());
    // A slot freed: a normal client is served again (retrying while the server notices the
    // close is `billing send`'s own job: it reconnects until its timeout).
    drop(held.pop());
    send(addr, "after-slot");
    assert_eq!(summary(&store)["received"], 1);
}

#[test]
fn a_flood_of_partial_frames_over_the_memory_budget_does_not_stop_acks() {
    let (server, store, _dir) = sqlite_ingest(
        "limits-flood",
        &["--memory-limit", "16MiB", "--max-frame-bytes", "1MiB"],
    );
    let addr = server.addr;
    // 200 connections × 256 KiB of frames announcing 512 KiB: 50 MiB against 16 MiB.
    let each = 256 * 1024;
    let mut partial = vec![0x92];
    str8(&mut partial, "flood");
    partial.push(0xc6);
    partial.extend_from_slice(&u32::try_from(2 * each).unwrap().to_be_bytes());
    partial.resize(each, 0);
    let partial = std::sync::Arc::new(partial);
    let mut flood = Vec::new();
    for _ in 0..200 {
        let s = TcpStream::connect(addr).unwrap();
        let handle = s.try_clone().unwrap();
        let bytes = partial.clone();
        let t = thread::spawn(move || {
            let mut s = s;
            // Blocks once the server stops reading; ends when the test shuts it down.
            let _ = s.write_all(&bytes);
        });
        flood.push((handle, t));
    }
    for i in 0..3 {
        send(addr, &format!("during-flood-{i}"));
    }
    for (s, t) in flood {
        let _ = s.shutdown(Shutdown::Both);
        t.join().unwrap();
    }
    let s = summary(&store);
    assert_eq!(s["received"], 3, "{s}");
}
