//! The spool's promise under SIGKILL: a child adds events `K-0, K-1, ...` through a spooled
//! client and prints each key whose `add_amounts` returned `Ok`; the test kills it with SIGKILL
//! at random moments (the ingester alternately up and down), restarts it on the same spool,
//! and at the end every printed key is in the ingester's output. Also: `billing send` exit 3
//! and `billing spool inspect` / `drain`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;

/// `billing ingest` on a fixed address (so clients can come back to it) into `store`.
fn ingest_on(listen: &str, store: &std::path::Path) -> Server {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", listen, "--store"])
        .arg(format!("jsonl:{}", store.display()));
    Server::spawn("billing ingest", c)
}

fn stored_keys(store: &std::path::Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(store).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["record"]["unique_key"]
                .as_str()
                .map(|k| k.trim_end_matches(":samples").to_string())
        })
        .collect()
}

/// Small deterministic generator; the seed is printed so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn every_key_whose_add_returned_ok_survives_sigkill_and_is_delivered() {
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("TORTURE_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = temp_dir("torture");
    let spool = dir.path().join("spool");
    let store = dir.path().join("store.jsonl");
    let mut ingester = Some(ingest_on("127.0.0.1:0", &store));
    let addr: SocketAddr = ingester.as_ref().unwrap().addr;
    let mut ok_keys: Vec<String> = Vec::new();
    let mut next = 0u64;
    let rounds = 24;
    for round in 0..rounds {
        // The ingester goes down and comes back on the same port every few rounds.
        if round % 3 == 2 {
            ingester = match ingester {
                Some(_) => None,
                None => Some(ingest_on(&addr.to_string(), &store)),
            };
        }
        let mut child = Command::new(billing_bin())
            .args(["spool", "load"])
            .arg(&spool)
            .args([
                "--billing.ingester",
                &addr.to_string(),
                "--billing.retry-delay",
                "10ms",
                "--billing.retry-delay-max",
                "50ms",
            ])
            .args([
                "--prefix",
                "K",
                "--from",
                &next.to_string(),
                "--count",
                "1000000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn billing spool load");
        let kill_after = rng.next(120);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = 0;
        while printed < kill_after {
            match lines.next() {
                Some(Ok(key)) => {
                    ok_keys.push(key);
                    printed += 1;
                }
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        // Lines the child printed before it died were Ok'd too.
        for key in lines.map_while(Result::ok) {
            ok_keys.push(key);
        }
        if let Some(last) = ok_keys.last() {
            next = last.trim_start_matches("K-").parse::<u64>().unwrap() + 1;
        }
    }
    if ingester.is_none() {
        ingester = Some(ingest_on(&addr.to_string(), &store));
    }
    let out = run("billing spool drain", {
        let mut c = Command::new(billing_bin());
        c.args(["spool", "drain"]).arg(&spool).args([
            "--billing.ingester",
            &addr.to_string(),
            "--timeout",
            "50s",
        ]);
        c
    });
    assert!(out.status.success(), "drain failed: {}", out.stderr);
    drop(ingester);
    let stored = stored_keys(&store);
    let lost: Vec<&String> = ok_keys.iter().filter(|k| !stored.contains(*k)).collect();
    println!(
        "{} keys Ok'd across {rounds} SIGKILLed children, {} distinct keys stored",
        ok_keys.len(),
        stored.len()
    );
    assert!(
        ok_keys.len() > rounds,
        "the children accepted too few events to prove anything: {}",
        ok_keys.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} Ok'd keys lost (seed {seed}): {:?}",
        lost.len(),
        ok_keys.len(),
        &lost[..lost.len().min(20)]
    );
}

#[test]
fn send_with_a_spool_exits_3_when_not_yet_acked_and_drain_delivers_it_later() {
    let dir = temp_dir("send3");
    let spool = dir.path().join("spool");
    let store = dir.path().join("store.jsonl");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut c = Command::new(billing_bin());
    c.args(["send", "--billing.ingester", &dead, "--billing.spool-dir"])
        .arg(&spool)
        .args([
            "--key",
            "later",
            "--instance",
            "1",
            "--amount",
            "samples=5",
            "--timeout",
            "200ms",
        ]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("safe in the spool"), "{}", out.stderr);

    let mut c = Command::new(billing_bin());
    c.args(["spool", "inspect"]).arg(&spool);
    let out = run("billing spool inspect", c);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("records (unacked):   1"),
        "{}",
        out.stdout
    );

    let mut c = Command::new(billing_bin());
    c.args(["spool", "drain"]).arg(&spool).args([
        "--billing.ingester",
        &dead,
        "--timeout",
        "200ms",
    ]);
    let out = run("billing spool drain", c);
    assert_eq!(
        out.status.code(),
        Some(1),
        "drain without an ingester must fail: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 of 1 events not acknowledged"),
        "{}",
        out.stderr
    );

    let ingester = ingest_on("127.0.0.1:0", &store);
    let mut c = Command::new(billing_bin());
    c.args(["spool", "drain"]).arg(&spool).args([
        "--billing.ingester",
        &ingester.addr.to_string(),
        "--timeout",
        "30s",
    ]);
    let out = run("billing spool drain", c);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(stored_keys(&store).contains("later"));
}

#[test]
fn drain_refuses_a_directory_without_a_spool_and_a_second_spool_directory() {
    let dir = temp_dir("drain-refuses");
    let drain = |spool: &std::path::Path, extra: &[&str]| {
        let mut c = Command::new(billing_bin());
        c.args(["spool", "drain"])
            .arg(spool)
            .args(["--billing.ingester", "127.0.0.1:9", "--timeout", "1s"])
            .args(extra);
        run("billing spool drain", c)
    };
    let misspelt = dir.path().join("spoool");
    let out = drain(&misspelt, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("spoool"), "{}", out.stderr);
    assert!(
        !misspelt.exists(),
        "drain created the directory it was asked to drain"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = drain(&empty, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("holds no spool"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing written"
    );

    // A real spool named twice, differently: refused, not silently one of them.
    let spool = dir.path().join("spool");
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        "--billing.ingester",
        "127.0.0.1:9",
        "--billing.spool-dir",
    ])
    .arg(&spool)
    .args(["--key", "k", "--instance", "1", "--amount", "samples=5"])
    .args(["--timeout", "100ms"]);
    assert_eq!(run("billing send", c).status.code(), Some(3));
    let out = drain(&spool, &["--billing.spool-dir", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--billing.spool-dir"), "{}", out.stderr);
}
