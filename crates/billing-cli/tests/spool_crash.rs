//! The spool's promise under SIGKILL, reconciled exactly: a child (`billing spool load --at`)
//! adds events `K-0, K-1, ...` (each a pure function of its index) through a spooled client and
//! prints each key whose `add_amounts` returned `Ok`; the test SIGKILLs it 20 times at varied
//! points (after some adds, while it opens and recovers the spool, while the ingester is
//! storing its chunks), with the SQLite ingester alternately up and down, and restarts it on
//! the same spool. At the end every accepted event is stored exactly once: the hourly totals
//! equal the accepted amounts, no conflicts. Also: `billing send` exit 3 and `billing spool
//! inspect` / `drain`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
/// `billing ingest` on a fixed address (so clients can come back to it) into `store`.
fn ingest_on(listen: &str, store: &Path) -> Server {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", listen, "--store"])
        .arg(format!("jsonl:{}", store.display()));
    Server::spawn("billing ingest", c)
}

fn stored_keys(store: &Path) -> BTreeSet<String> {
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

/// The records of event `i` of `billing spool load --at AT` (its documented pure function).
fn load_records(at: i64, i: u64) -> Vec<Accepted> {
    let instance = format!("torture-{}", i % 3);
    let time = at + ((i * 37) % 7200) as i64;
    let mut out = vec![Accepted {
        instance: instance.clone(),
        amount_type: "samples".into(),
        at: time,
        value: (i % 7) as i128 + 1,
    }];
    if i.is_multiple_of(2) {
        out.push(Accepted {
            instance,
            amount_type: "node-seconds".into(),
            at: time,
            value: (i % 5) as i128 + 1,
        });
    }
    out
}

/// The SQLite ingester of the torture test: on `listen`, with its HTTP surface for the stored
/// records counter.
struct Ingester {
    server: Server,
    metrics: SocketAddr,
}

impl Ingester {
    fn start(db: &Path, listen: &str) -> Ingester {
        let mut server = ingest_sqlite(db, listen, &["--http-listen", "127.0.0.1:0"]);
        let metrics = server.wait_line("metrics on ").parse().unwrap();
        Ingester { server, metrics }
    }

    /// Entries this ingester process committed (stored or duplicate) so far.
    fn committed(&self) -> f64 {
        let body = http_get(self.metrics, "/metrics").body;
        ["stored", "duplicate"]
            .iter()
            .map(|o| {
                sample(
                    &body,
                    &format!("billing_ingest_records_total{{outcome=\"{o}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum()
    }
}

/// How a round's child dies.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// After it printed this many accepted keys (adding, fsyncing, sending).
    AfterAdds(usize),
    /// As soon as it holds the spool's lock: while it recovers the spool or starts sending.
    AtOpen,
    /// As soon as the ingester committed more of its entries: while chunks are in flight.
    WhileStoring,
}

#[test]
fn a_spooled_client_sigkilled_20_times_loses_nothing_and_reconciles_exactly() {
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("TORTURE_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = temp_dir("torture");
    let spool = dir.path().join("spool");
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    // Three hours ago, on the hour: the events span two hours, all in the past.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = (now / 3600 - 3) * 3600;
    let at_text = billing_schema::rfc3339_secs(at);
    let mut ingester = Some(Ingester::start(&db, "127.0.0.1:0"));
    let addr: SocketAddr = ingester.as_ref().unwrap().server.addr;
    let load = |from: u64, count: u64| {
        let mut c = Command::new(billing_bin());
        c.args(["spool", "load"])
            .arg(&spool)
            .args(["--billing.ingester", &addr.to_string()])
            .args([
                "--billing.retry-delay",
                "10ms",
                "--billing.retry-delay-max",
                "50ms",
            ])
            .args(["--billing.batch-max-records", "16"])
            .args(["--prefix", "K", "--at", &at_text])
            .args(["--from", &from.to_string(), "--count", &count.to_string()]);
        c
    };
    let ok_keys: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut next = 0u64;
    let mut points = Vec::new();
    let rounds = 20;
    for round in 0..rounds {
        // The ingester goes down and comes back on the same port every few rounds.
        if round % 4 == 3 {
            ingester = match ingester {
                Some(_) => None,
                None => Some(Ingester::start(&db, &addr.to_string())),
            };
        }
        let point = match (round % 3, &ingester) {
            (1, _) => KillPoint::AtOpen,
            (2, Some(_)) => KillPoint::WhileStoring,
            _ => KillPoint::AfterAdds(1 + rng.next(100) as usize),
        };
        points.push(point);
        let baseline = ingester.as_ref().map_or(0.0, Ingester::committed);
        // Its log goes to a file: a pipe nobody reads could fill up and stall it.
        let log = dir.path().join(format!("load-{round}.log"));
        let mut child = load(next, 1_000_000)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn billing spool load");
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let printed = Arc::new(Mutex::new(0usize));
        let reader = {
            let (ok_keys, printed) = (ok_keys.clone(), printed.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let i = line.strip_prefix("K-").and_then(|n| n.parse().ok());
                    ok_keys
                        .lock()
                        .unwrap()
                        .push(i.unwrap_or_else(|| panic!("{line:?}")));
                    *printed.lock().unwrap() += 1;
                }
            })
        };
        let what = format!("round {round}: kill point {point:?}");
        wait_until(&what, RUN_TIMEOUT, || {
            if let Some(st) = child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("billing spool load exited ({st}) before {what}: {err}");
            }
            match point {
                KillPoint::AfterAdds(n) => *printed.lock().unwrap() >= n,
                KillPoint::AtOpen => std::fs::read_to_string(spool.join("LOCK"))
                    .is_ok_and(|l| l.trim() == pid.to_string()),
                KillPoint::WhileStoring => ingester.as_ref().unwrap().committed() > baseline,
            }
        });
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        // Keys the child printed before it died were Ok'd too.
        reader.join().unwrap();
        // The next child starts after the last Ok'd key. The one after it may have been
        // accepted without being printed: the next child adds it again, identically.
        if let Some(last) = ok_keys.lock().unwrap().last() {
            next = last + 1;
        }
    }
    println!("kill points: {points:?}");
    if ingester.is_none() {
        ingester = Some(Ingester::start(&db, &addr.to_string()));
    }
    // A last child that is not killed: it re-adds the key a killed child may have accepted
    // without printing, adds a few more, and exits.
    let out = run("billing spool load (last)", load(next, 20));
    assert!(out.status.success(), "{}", out.stderr);
    let last: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| l[2..].parse().unwrap())
        .collect();
    assert_eq!(last, (next..next + 20).collect::<Vec<_>>());
    ok_keys.lock().unwrap().extend(last);
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

    // Every key up to the last was Ok'd (some twice: a killed child's last key, re-added).
    let ok: BTreeSet<u64> = ok_keys.lock().unwrap().iter().copied().collect();
    let end = next + 20;
    assert_eq!(ok, (0..end).collect::<BTreeSet<_>>(), "seed {seed}");
    assert!(
        end > 2 * rounds,
        "the children accepted too few events to prove anything: {end}"
    );
    let accepted: Vec<Accepted> = (0..end).flat_map(|i| load_records(at, i)).collect();
    let s = reconcile(&store, &accepted);
    println!(
        "{end} events ({} records) Ok'd across {rounds} SIGKILLed children; stored exactly: {s}",
        accepted.len()
    );
    let inspect = {
        let mut c = Command::new(billing_bin());
        c.args(["spool", "inspect"]).arg(&spool);
        run("billing spool inspect", c)
    };
    assert!(
        inspect.stdout.contains("records (unacked):   0"),
        "{}",
        inspect.stdout
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
