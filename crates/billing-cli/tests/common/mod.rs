//! Shared helpers for the interoperability tests: child-process guards, readiness
//! via the `listening on` line, bounded polling of the jsonl store, peer discovery.
//!
//! Everything here uses real processes and real sockets on 127.0.0.1.
#![allow(dead_code)]

pub mod ledger;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server child may take to print its `listening on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a peer/client child process to finish.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound when waiting for records to show up (store file / peer stdout).
pub const POLL_DEADLINE: Duration = Duration::from_secs(20);
/// Interval between checks of a polled condition (never used as synchronisation by itself).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// `2026-11-27T04:33:58Z`, the base event time the peers use.
pub const BASE_EPOCH: i64 = 1_795_754_038;

pub fn billing_bin() -> &'static str {
    env!("CARGO_BIN_EXE_billing")
}

// ---------------------------------------------------------------------------
// Peers (installed by scripts/test.sh)
// ---------------------------------------------------------------------------

pub struct Peers {
    pub python: PathBuf,
    pub dir: PathBuf,
}

impl Peers {
    /// Locates the interop peers. Panics (fails the test) with instructions when
    /// they are not installed: these tests must never silently pass.
    pub fn get() -> Peers {
        const HOW: &str = "the interop peers (Python fluent-logger, Node @fluent-org/logger) are not set up; \
             run `bash scripts/test.sh` from the repository root, which installs them and exports \
             PEER_PYTHON and PEERS_DIR before running cargo test";
        let python = std::env::var_os("PEER_PYTHON")
            .unwrap_or_else(|| panic!("PEER_PYTHON is not set: {HOW}"));
        let dir =
            std::env::var_os("PEERS_DIR").unwrap_or_else(|| panic!("PEERS_DIR is not set: {HOW}"));
        let peers = Peers {
            python: PathBuf::from(python),
            dir: PathBuf::from(dir),
        };
        assert!(
            peers.python.exists(),
            "PEER_PYTHON={} does not exist: {HOW}",
            peers.python.display()
        );
        for f in [
            "py_send.py",
            "node_client.mjs",
            "node_server.mjs",
            "node_modules/@fluent-org/logger/package.json",
        ] {
            let p = peers.dir.join(f);
            assert!(p.exists(), "{} is missing: {HOW}", p.display());
        }
        peers
    }

    pub fn node() -> String {
        std::env::var("PEER_NODE").unwrap_or_else(|_| "node".to_string())
    }

    pub fn py_send(&self, addr: SocketAddr, n: usize, prefix: &str) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.join("py_send.py"))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(n.to_string())
            .arg(prefix);
        c
    }

    pub fn node_client(&self, addr: SocketAddr, mode: &str, n: usize, prefix: &str) -> Command {
        let mut c = Command::new(Self::node());
        c.current_dir(&self.dir)
            .arg(self.dir.join("node_client.mjs"))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(mode)
            .arg(n.to_string())
            .arg(prefix);
        c
    }

    pub fn node_server(&self) -> Server {
        let mut c = Command::new(Self::node());
        c.current_dir(&self.dir)
            .arg(self.dir.join("node_server.mjs"));
        Server::spawn("node_server.mjs", c)
    }
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

/// A fresh directory under `std::env::temp_dir()`, removed on drop. The name starts with
/// `billing-interop-LABEL-`, so a directory left behind (a test process killed mid-run) names
/// the test that made it.
pub fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("billing-interop-{label}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp dir for {label}: {e}"))
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Collects a child's stream in a background thread.
fn collect<R: Read + Send + 'static>(mut r: R) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// A long-running server child (our `billing ingest` or the Node FluentServer).
/// Killed (and reaped) on drop.
pub struct Server {
    pub name: String,
    child: Child,
    pub addr: SocketAddr,
    /// What the readiness line printed: `127.0.0.1:PORT`, `tls://127.0.0.1:PORT` or
    /// `unix:///path` (then `addr` is `0.0.0.0:0`).
    pub endpoint: String,
    lines: Receiver<String>,
    /// stdout lines after the `listening on` line, as received so far
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Spawns `cmd` and waits (bounded) for its first stdout line, which must be
    /// exactly `listening on 127.0.0.1:PORT`.
    pub fn spawn(name: &str, mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut server = Server {
            name: name.to_string(),
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            endpoint: String::new(),
            lines: rx,
            seen: Vec::new(),
            stderr,
        };
        let first = match server.lines.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{name} printed no `listening on` line within {READY_TIMEOUT:?}; stderr:\n{}",
                    server.stderr()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().ok();
                // give the stderr collector a chance to drain the closed pipe
                let stderr = wait_text(&server.stderr);
                panic!(
                    "{name} closed stdout before printing `listening on` (exit: {status:?}); stderr:\n{stderr}"
                )
            }
        };
        let endpoint = first
            .strip_prefix("listening on ")
            .map(|a| a.trim_end().to_string())
            .unwrap_or_default();
        server.endpoint = endpoint.clone();
        if endpoint.starts_with("unix:///") {
            return server;
        }
        let addr = Some(endpoint.strip_prefix("tls://").unwrap_or(&endpoint))
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| {
                panic!("{name}: first stdout line must be `listening on 127.0.0.1:PORT`, got {first:?}; stderr:\n{}", server.stderr())
            });
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "{name} listens on {addr}, expected 127.0.0.1"
        );
        assert_ne!(
            addr.port(),
            0,
            "{name} printed port 0 instead of the real bound port"
        );
        server.addr = addr;
        server
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Non-blocking: has the server process exited?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (bounded by POLL_DEADLINE) until the stdout lines printed after the
    /// readiness line satisfy `done`; returns all of them.
    pub fn wait_stdout<F: Fn(&[String]) -> bool>(&mut self, what: &str, done: F) -> Vec<String> {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            if done(&self.seen) {
                return self.seen.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{}: timed out after {POLL_DEADLINE:?} waiting for {what}; stdout so far:\n{}\nstderr:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr()
                );
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: stdout closed (process exited: {:?}) while waiting for {what}; stdout so far:\n{}\nstderr:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    // bounded: the pipe is closed once the child exited, the reader finishes promptly
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = usize::MAX;
    while Instant::now() < deadline {
        let len = buf.lock().unwrap().len();
        if len == last {
            break;
        }
        last = len;
        thread::sleep(POLL_INTERVAL);
    }
    text(buf)
}

/// Result of running a short-lived client process to completion.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, bounded by RUN_TIMEOUT (killed and the test failed
/// if it hangs). stdin is closed.
pub fn run(name: &str, mut cmd: Command) -> Finished {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
    let out_r = child.stdout.take().unwrap();
    let err_r = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = BufReader::new(out_r).read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = BufReader::new(err_r).read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish within {RUN_TIMEOUT:?} ({cmd:?})");
        }
        thread::sleep(POLL_INTERVAL);
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// Our binary
// ---------------------------------------------------------------------------

/// `billing ingest` on an ephemeral port writing to `<dir>/store.jsonl`.
pub struct Ingest {
    pub server: Server,
    pub store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ingest {
    pub fn start(label: &str) -> Ingest {
        let dir = temp_dir(label);
        let store = dir.path().join("store.jsonl");
        let mut c = Command::new(billing_bin());
        c.arg("ingest")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--store")
            .arg(format!("jsonl:{}", store.display()));
        let server = Server::spawn("billing ingest", c);
        Ingest {
            server,
            store,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Current complete lines of the store, each parsed as JSON (a partially
    /// written last line without its newline is left out).
    pub fn lines_now(&self) -> Vec<Value> {
        let data = match fs::read(&self.store) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read {}: {e}", self.store.display()),
        };
        let complete = match data.iter().rposition(|&b| b == b'\n') {
            Some(i) => &data[..=i],
            None => return Vec::new(),
        };
        String::from_utf8(complete.to_vec())
            .unwrap_or_else(|e| panic!("store {} is not UTF-8: {e}", self.store.display()))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("store line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// Polls the store (bounded by POLL_DEADLINE) until `done` holds for its lines.
    pub fn wait_lines<F: Fn(&[Value]) -> bool>(&mut self, what: &str, done: F) -> Vec<Value> {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let lines = self.lines_now();
            if done(&lines) {
                return lines;
            }
            if let Some(st) = self.server.exited() {
                panic!(
                    "billing ingest exited ({st}) while waiting for {what}; store has {} lines:\n{}\nstderr:\n{}",
                    lines.len(),
                    show(&lines),
                    self.server.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {POLL_DEADLINE:?} waiting for {what}; store has {} lines:\n{}\ningest stderr:\n{}",
                    lines.len(),
                    show(&lines),
                    self.server.stderr()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Panics if the ingest process is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.server.exited() {
            panic!(
                "billing ingest exited ({st}); stderr:\n{}",
                self.server.stderr()
            );
        }
    }
}

pub fn show(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines whose record.unique_key starts with `prefix`.
pub fn with_prefix<'a>(lines: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l["record"]["unique_key"]
                .as_str()
                .is_some_and(|k| k.starts_with(prefix))
        })
        .collect()
}

/// Parses an RFC3339 timestamp into (unix seconds, nanoseconds).
pub fn parse_rfc3339(s: &str) -> (i64, u32) {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not an RFC3339 timestamp: {e}"));
    (t.unix_timestamp(), t.nanosecond())
}

/// Asserts that a JSON value is an RFC3339 string for the given instant.
pub fn assert_time(v: &Value, epoch: i64, nanos: u32, ctx: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: expected an RFC3339 string, got {v}"));
    assert!(
        s.ends_with('Z') || s.ends_with("+00:00"),
        "{ctx}: time {s:?} is not expressed in UTC"
    );
    assert_eq!(parse_rfc3339(s), (epoch, nanos), "{ctx}: time {s:?}");
}

// ---------------------------------------------------------------------------
// Database stores, kills, metrics scrapes
// ---------------------------------------------------------------------------

impl Server {
    /// SIGKILLs the process (`Child::kill`) and reaps it: no shutdown code runs.
    pub fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait")
    }

    /// SIGKILLs the process and returns every stdout line it printed after the readiness line.
    pub fn kill_and_read_stdout(&mut self) -> Vec<String> {
        self.kill();
        // The pipe is closed: the reader thread ends once it read everything.
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Disconnected) => return self.seen.clone(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout not closed after kill", self.name)
                }
            }
        }
    }

    /// Waits (bounded) for a stdout line starting with `prefix` after the readiness line;
    /// returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let lines = self.wait_stdout(&format!("a line `{prefix}...`"), |seen| {
            seen.iter().any(|l| l.starts_with(prefix))
        });
        let line = lines.iter().find(|l| l.starts_with(prefix)).unwrap();
        line[prefix.len()..].trim_end().to_string()
    }
}

/// `billing ingest --listen LISTEN --store sqlite:DB EXTRA...`, ready, on a SQLite file. The tests' records carry fixed dates, so the accepted
/// window reaches 100 years back (tests of the window itself pass their own `--max-event-age`,
/// which comes later on the command line and wins).
pub fn ingest_sqlite(db: &Path, listen: &str, extra: &[&str]) -> Server {
    let mut c = Command::new(billing_bin());
    c.arg("ingest")
        .arg("--listen")
        .arg(listen)
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .args(["--max-event-age", "36500d"])
        .args(extra);
    Server::spawn("billing ingest", c)
}

/// `billing ingest --listen 127.0.0.1:0 --store STORE EXTRA...`, ready, on any store URL (a
/// PostgreSQL schema of [`PgSchema`], `sqlite:PATH`), with the default validation policy
/// unless `extra` says otherwise.
pub fn ingest_store(store: &str, extra: &[&str]) -> Server {
    ingest_store_at(store, "127.0.0.1:0", extra)
}

/// `billing ingest --listen LISTEN --store STORE EXTRA...` (a fixed `LISTEN` lets a test
/// restart it on the same port).
pub fn ingest_store_at(store: &str, listen: &str, extra: &[&str]) -> Server {
    let mut c = Command::new(billing_bin());
    c.args(["ingest", "--listen", listen, "--store", store])
        .args(extra);
    Server::spawn("billing ingest", c)
}

/// `billing report --store STORE ARGS...`, which must succeed; its stdout.
pub fn report(store: &str, args: &[&str]) -> String {
    let mut c = Command::new(billing_bin());
    c.arg("report").arg("--store").arg(store).args(args);
    let out = run("billing report", c);
    assert!(
        out.status.success(),
        "billing report {args:?} failed ({}): {}",
        out.status,
        out.stderr
    );
    out.stdout
}

/// `billing report --summary --format json` parsed.
pub fn summary(store: &str) -> Value {
    let out = report(store, &["--summary", "--format", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {out}"))
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines as written, without the status line.
    pub headers: Vec<String>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// `GET path` over a plain TcpStream (HTTP/1.1, `Connection: close`), read to EOF.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    use std::io::Write as _;
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: billing-test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the response of GET {path}: {e}"));
    let text = String::from_utf8(raw).expect("response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let resp = HttpResponse {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    };
    if let Some(len) = resp.header("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(resp.body.len()),
            "Content-Length"
        );
    }
    resp
}

/// The value of the sample `name` (with its labels exactly as written, e.g.
/// `x_total{outcome="stored"}`) in Prometheus text, if present.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

// ---------------------------------------------------------------------------
// PostgreSQL stores
// ---------------------------------------------------------------------------

/// A PostgreSQL schema for one test at `BILLING_TEST_POSTGRES` (default
/// `postgres://postgres@127.0.0.1:5432/test`), named in `url` (`billing ingest` creates it),
/// dropped on drop, also while a failing test unwinds.
pub struct PgSchema {
    /// The store URL: the server's URL with `schema=NAME`.
    pub url: String,
    base: String,
    name: String,
}

impl PgSchema {
    /// `None` when `BILLING_TEST_POSTGRES=skip`. `label`: letters, digits and `_`.
    pub fn new(label: &str) -> Option<PgSchema> {
        let base = match std::env::var("BILLING_TEST_POSTGRES") {
            Ok(v) if v == "skip" => return None,
            Ok(v) if !v.is_empty() => v,
            _ => "postgres://postgres@127.0.0.1:5432/test".to_string(),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("billing_cli_{label}_{}_{nanos}", std::process::id());
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            url: format!("{base}{sep}schema={name}"),
            base,
            name,
        })
    }
}

impl PgSchema {
    /// As [`PgSchema::new`], also `None` when PostgreSQL does not answer at all: the reason is
    /// printed, so a skipped test says why.
    pub fn reachable(label: &str) -> Option<PgSchema> {
        let Some(schema) = PgSchema::new(label) else {
            eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
            return None;
        };
        let base = schema.base.clone();
        let answered = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.map(drop)
            })
        })
        .join()
        .expect("connect thread");
        match answered {
            Ok(()) => Some(schema),
            Err(e) => {
                eprintln!(
                    "PostgreSQL at {} is unreachable ({e}): skipped",
                    schema.base
                );
                // Nothing was created: nothing to drop.
                std::mem::forget(schema);
                None
            }
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let done = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// Writes `frame` on a new connection and returns once the ack of `chunk` came back (MessagePack
/// framing); fails the test if the connection closes or the ack differs.
pub fn send_expect_ack(addr: SocketAddr, frame: &[u8], chunk: &str) {
    use std::io::{Read as _, Write as _};
    let mut want = Vec::new();
    forward::encode::write_ack(&mut want, chunk.as_bytes(), forward::Framing::MessagePack);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(RUN_TIMEOUT)).unwrap();
    s.write_all(frame).unwrap();
    let mut ack = vec![0u8; want.len()];
    s.read_exact(&mut ack)
        .unwrap_or_else(|e| panic!("chunk {chunk} not acked: {e}"));
    assert_eq!(ack, want, "chunk {chunk}");
}

/// `billing send` of one event (`--amount TYPE=N` at `at`) to `addr`, which must be acked.
pub fn send_event(addr: SocketAddr, key: &str, instance: &str, amount: &str, at: &str) {
    let mut c = Command::new(billing_bin());
    c.args(["send", "--billing.ingester", &addr.to_string()])
        .args(["--key", key, "--instance", instance, "--amount", amount])
        .args(["--at", at, "--timeout", "20s"]);
    let out = run("billing send", c);
    assert!(out.status.success(), "send {key}: {}", out.stderr);
}

/// A Message frame for `instance` whose record has a string `amount_value` (the ingester
/// quarantines it); returns once its chunk is acked.
pub fn send_invalid_record(addr: SocketAddr, instance: &str, at: &str) {
    let mut record = vec![0x85];
    for (k, v) in [
        ("unique_key", "bad:samples"),
        ("internal_instance_id", instance),
        ("amount_type", "samples"),
        ("amount_value", "lots"),
        ("occurred_at", at),
    ] {
        forward::encode::write_str(&mut record, k.as_bytes());
        forward::encode::write_str(&mut record, v.as_bytes());
    }
    let options = forward::Options {
        chunk: Some(b"bad-chunk".to_vec()),
        ..Default::default()
    };
    let mut frame = Vec::new();
    forward::encode::write_message(
        &mut frame,
        "billing",
        forward::EventTime::now(),
        &record,
        &options,
    );
    send_expect_ack(addr, &frame, "bad-chunk");
}

// ---------------------------------------------------------------------------
// Processes by pid, exact reconciliation
// ---------------------------------------------------------------------------

impl Server {
    /// The process id (for `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with its stderr) if the process is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.exited() {
            panic!("{} exited ({st}); stderr:\n{}", self.name, self.stderr());
        }
    }
}

/// `VmRSS` of a live process, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Open file descriptors of a live process (`/proc/PID/fd`).
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
        .count()
}

/// Polls `cond` every POLL_INTERVAL until it holds; panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(POLL_INTERVAL);
    }
}

/// One record a client accepted: what the store must hold for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub instance: String,
    pub amount_type: String,
    /// `occurred_at`, Unix seconds.
    pub at: i64,
    pub value: i128,
}

/// Expected `billing report --format json` rows (hourly) of `records`: `(instance, type,
/// bucket) -> (value, records)`.
pub fn hourly(
    records: &[Accepted],
) -> std::collections::BTreeMap<(String, String, String), (i128, u64)> {
    let mut rows = std::collections::BTreeMap::new();
    for r in records {
        let hour = r.at.div_euclid(3600) * 3600;
        let row = rows
            .entry((
                r.instance.clone(),
                r.amount_type.clone(),
                billing_schema::rfc3339_secs(hour),
            ))
            .or_insert((0i128, 0u64));
        row.0 += r.value;
        row.1 += 1;
    }
    rows
}

/// The exact reconciliation every reliability scenario ends with: the store's hourly usage
/// (`billing report --format json`, the whole range) equals, row for row, the records the
/// client accepted (`accepted`: one entry per distinct record); the summary holds exactly that
/// many records, no conflicts and nothing quarantined, and every record received beyond them is
/// a duplicate. Returns the summary.
pub fn reconcile(store: &str, accepted: &[Accepted]) -> Value {
    let want = hourly(accepted);
    let out = report(store, &["--format", "json"]);
    let rows: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("report is not JSON ({e}): {out}"));
    let mut got = std::collections::BTreeMap::new();
    for r in &rows {
        let s = |k: &str| {
            r[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {r}"))
                .to_string()
        };
        // Exact: the value as written, every digit.
        let value: i128 = r["value"]
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        let records = r["records"].as_u64().unwrap_or_else(|| panic!("{r}"));
        let prev = got.insert(
            (s("instance"), s("amount_type"), s("bucket")),
            (value, records),
        );
        assert!(prev.is_none(), "row twice in the report: {r}");
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .collect();
    let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored usage differs from what the client accepted:\n  expected but not stored as such ({}): {:?}\n  stored, not expected ({}): {:?}\n  (stored rows for the expected keys: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        extra.len(),
        &extra[..extra.len().min(10)],
        missing
            .iter()
            .take(10)
            .map(|(k, _)| got.get(*k))
            .collect::<Vec<_>>()
    );
    let s = summary(store);
    assert_eq!(s["records"], accepted.len() as u64, "records stored: {s}");
    assert_eq!(s["conflicts"], 0, "{s}");
    assert_eq!(s["quarantined"], 0, "{s}");
    assert_eq!(
        s["received"].as_u64().unwrap(),
        s["records"].as_u64().unwrap() + s["duplicates"].as_u64().unwrap(),
        "{s}"
    );
    s
}
