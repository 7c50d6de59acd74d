//! Disk full, end to end, on real small file systems: a tmpfs the test mounts (`mount -t tmpfs
//! -o size=...`; needs root or CAP_SYS_ADMIN, which the CI of `scripts/test.sh` has; without it
//! these tests fail saying so, unless `BILLING_TEST_TMPFS=skip`). The spool-level behaviour under
//! injected `ENOSPC` is proven in `crates/spool/tests/enospc.rs`; here the real file system,
//! the real client and a real `billing ingest` process.
//!
//! - The client's spool disk fills up (a filler file, then the spool's own backlog while the
//!   ingester is away): an event refused then is handed back to the caller and counted
//!   `spool_error` (the documented design: no silent loss, no blocking); once space returns
//!   (the filler removed, the backlog delivered and acknowledged) the same events are accepted,
//!   and the store holds exactly what was accepted.
//! - The ingester's SQLite disk fills up: it acks nothing it could not commit (the client keeps
//!   resending), and once space returns every event is stored exactly once.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_client::{AddError, AmountType, Amounts, Client, Config, Event, Metrics, Status};
use common::*;

/// A tmpfs mounted on a directory for the test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`) on `dir` (created). `None` only when
    /// `BILLING_TEST_TMPFS=skip` and mounting is not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        if out.status.success() {
            return Some(Tmpfs {
                dir: dir.to_path_buf(),
            });
        }
        let why = String::from_utf8_lossy(&out.stderr);
        if std::env::var("BILLING_TEST_TMPFS").as_deref() == Ok("skip") {
            eprintln!("SKIPPED (BILLING_TEST_TMPFS=skip): cannot mount a tmpfs: {why}");
            return None;
        }
        panic!(
            "this test mounts a small tmpfs to fill a real disk and cannot ({why}); run it as \
             root (or with CAP_SYS_ADMIN), or set BILLING_TEST_TMPFS=skip to skip it"
        );
    }

    /// Changes the size (`mount -o remount,size=...`): space returns without touching files.
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Free bytes (`statvfs`).
    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs writes into the zeroed struct it is given.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a valid out pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Writes a file of zeros taking all but about `leave` bytes of the free space; returns its
    /// path. (A write past the end fails with ENOSPC; what fit stays.)
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.dir.join("filler");
        let want = self.free().saturating_sub(leave);
        let f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        while written < want {
            let n = (want - written).min(block.len() as u64) as usize;
            match std::io::Write::write(&mut &f, &block[..n]) {
                Ok(k) => written += k as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a child that still has a file open there does not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A free port on 127.0.0.1 to start an ingester on later.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Three hours ago, on the hour.
fn base_hour() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 3600 - 3) * 3600
}

/// Event `i` of a scenario: a pure function of `i` (so a resend is identical) and its records.
fn event(prefix: &str, base: i64, i: u64) -> (Event, Vec<Accepted>) {
    let at = base + ((i * 13) % 7200) as i64;
    let instance = format!("{prefix}-i{}", i % 4);
    let mut amounts: Amounts = [(AmountType::CONTAINER_SECONDS, (i % 11) as i64 + 1)].into();
    if i.is_multiple_of(3) {
        amounts.insert(AmountType::SAMPLES, (i % 5) as i64 + 1);
    }
    let records = amounts
        .iter()
        .map(|(t, v)| Accepted {
            instance: instance.clone(),
            amount_type: t.as_str().to_string(),
            at,
            value: i128::from(*v),
        })
        .collect();
    let e = Event {
        unique_key: format!("{prefix}-{i}"),
        internal_instance_id: instance,
        occurred_at: UNIX_EPOCH + Duration::from_secs(at as u64),
        amounts,
        metadata: [("padding".to_string(), "x".repeat(200))].into(),
    };
    (e, records)
}

/// Events with a `samples` amount among `events`, and all of them.
fn count_types(events: &[Event]) -> (u64, u64) {
    let samples = events
        .iter()
        .filter(|e| e.amounts.contains_key(&AmountType::SAMPLES))
        .count() as u64;
    (samples, events.len() as u64)
}

fn spool_error_counts(m: &Metrics) -> (u64, u64) {
    (
        m.events_total(Status::SpoolError, &AmountType::SAMPLES),
        m.events_total(Status::SpoolError, &AmountType::CONTAINER_SECONDS),
    )
}

/// Adds events from `*next` on until `refusals` of them are refused for want of space;
/// returns the accepted and refused events. Every refusal must be a disk-full write error
/// that hands the event back.
fn add_until_full(
    client: &Client,
    base: i64,
    next: &mut u64,
    refusals: usize,
) -> (Vec<Event>, Vec<Event>) {
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    while refused.len() < refusals {
        let (e, _) = event("full", base, *next);
        *next += 1;
        match client.add(e.clone()) {
            Ok(()) => ok.push(e),
            Err(AddError::Spool { source, event }) => {
                assert_eq!(
                    source.io_kind(),
                    Some(std::io::ErrorKind::StorageFull),
                    "{source}"
                );
                assert_eq!(*event, e, "the refused event is handed back unchanged");
                refused.push(*event);
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
        assert!(ok.len() < 100_000, "the disk never filled up");
    }
    (ok, refused)
}

#[test]
fn a_full_spool_disk_refuses_with_a_reason_loses_nothing_and_recovers() {
    let dir = temp_dir("spool-enospc");
    let Some(fs) = Tmpfs::mount(&dir.path().join("spoolfs"), "1m") else {
        return;
    };
    let db = dir.path().join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let addr = free_addr();
    let metrics = Metrics::new();
    let mut config = Config::default();
    config.ingester = addr.to_string();
    config.spool_dir = Some(fs.dir.join("spool"));
    config.retry_delay = Duration::from_millis(10);
    config.retry_delay_max = Duration::from_millis(100);
    let client = Client::with_metrics(config, metrics.clone()).unwrap();
    let base = base_hour();
    let mut next = 0u64;
    let mut accepted: Vec<Event> = Vec::new();

    // 1. Someone else filled the disk (the ingester is not up yet).
    let filler = fs.fill(64 * 1024);
    let (ok, refused) = add_until_full(&client, base, &mut next, 5);
    assert!(!ok.is_empty(), "some events fit in the space left");
    let (s, c) = count_types(&refused);
    assert_eq!(spool_error_counts(&metrics), (s, c), "each refusal counted");
    accepted.extend(ok);

    // 2. Space returns: the refused events, offered again by their caller, are accepted.
    std::fs::remove_file(&filler).unwrap();
    for e in refused {
        client.add(e.clone()).expect("accepted once space returned");
        accepted.push(e);
    }

    // 3. The spool's own backlog fills the disk (the ingester is still away).
    let (ok, refused) = add_until_full(&client, base, &mut next, 3);
    accepted.extend(ok);
    let (s2, c2) = count_types(&refused);
    assert_eq!(spool_error_counts(&metrics), (s + s2, c + c2));

    // 4. The ingester comes up: the backlog is delivered and acknowledged, which frees the
    // disk without a restart, so the refused events are accepted again.
    let _ingest = ingest_sqlite(&db, &addr.to_string(), &[]);
    client
        .flush(Duration::from_secs(60))
        .expect("the backlog is delivered");
    for e in refused {
        client
            .add(e.clone())
            .expect("accepted once the delivered backlog freed the disk");
        accepted.push(e);
    }
    for _ in 0..50 {
        let (e, _) = event("full", base, next);
        next += 1;
        client.add(e.clone()).unwrap();
        accepted.push(e);
    }
    client.flush(Duration::from_secs(60)).expect("delivered");
    let report = client.close();

    // The client's account: every accepted event delivered; every refusal counted with its
    // reason (and handed back, and accepted later).
    assert_eq!(report.delivered, accepted.len() as u64, "{report:?}");
    assert_eq!(report.left_in_spool, 0, "{report:?}");
    assert_eq!(
        report.dropped,
        vec![(Status::SpoolError, c + c2)],
        "{report:?}"
    );
    let mut keys: Vec<&str> = accepted.iter().map(|e| e.unique_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), accepted.len(), "each event accepted once");
    assert_eq!(
        keys.len() as u64,
        next,
        "every event offered was accepted in the end"
    );
    let records: Vec<Accepted> = (0..next).flat_map(|i| event("full", base, i).1).collect();
    let s = reconcile(&store, &records);
    println!("{} events accepted, stored exactly: {s}", accepted.len());
}

#[test]
fn an_ingester_on_a_full_disk_acks_nothing_it_cannot_commit_and_stores_everything_later() {
    let dir = temp_dir("sqlite-enospc");
    let Some(fs) = Tmpfs::mount(&dir.path().join("dbfs"), "2m") else {
        return;
    };
    let db = fs.dir.join("billing.db");
    let store = format!("sqlite:{}", db.display());
    let mut ingest = ingest_sqlite(&db, "127.0.0.1:0", &["--http-listen", "127.0.0.1:0"]);
    let http: SocketAddr = ingest.wait_line("metrics on ").parse().unwrap();
    let metrics = Metrics::new();
    let mut config = Config::default();
    config.ingester = ingest.addr.to_string();
    config.retry_delay = Duration::from_millis(20);
    config.retry_delay_max = Duration::from_millis(200);
    config.batch_max_records = 64;
    config.max_buffered_events = 100_000;
    let client = Client::with_metrics(config, metrics.clone()).unwrap();
    let base = base_hour();

    // A first batch is stored normally.
    let total = 3000u64;
    for i in 0..200 {
        client.add(event("db", base, i).0).unwrap();
    }
    client
        .flush(Duration::from_secs(60))
        .expect("stored before the disk fills");
    // The disk fills up; the rest arrives while SQLite cannot grow its files.
    let filler = fs.fill(16 * 1024);
    for i in 200..total {
        client.add(event("db", base, i).0).unwrap();
    }
    // Wait (bounded) until commits fail: the ingester says so in its log.
    wait_until(
        "a failed commit in the ingester's log",
        POLL_DEADLINE,
        || {
            let log = ingest.stderr();
            log.contains("full") || log.contains("No space")
        },
    );
    ingest.assert_running();
    // Nothing it could not commit was acknowledged: the client still holds those events.
    let delivered = |m: &Metrics| m.events_total(Status::Success, &AmountType::CONTAINER_SECONDS);
    let acked_while_full = delivered(&metrics);
    assert!(
        acked_while_full < total,
        "every event was acknowledged although the disk was full ({acked_while_full})"
    );
    let stored_while_full = summary(&store)["records"].as_u64().unwrap();
    let body = http_get(http, "/metrics").body;
    let log = ingest.stderr();
    println!(
        "disk full: {acked_while_full} of {total} events acked, {stored_while_full} records stored; free {} bytes; ingester: {}",
        fs.free(),
        log.lines()
            .find(|l| l.contains("full") || l.contains("No space"))
            .unwrap_or_default()
    );
    assert!(
        sample(&body, "billing_ingest_records_total{outcome=\"stored\"}").unwrap_or(0.0)
            <= stored_while_full as f64,
        "the ingester counted more stored records than the store holds:\n{body}"
    );

    // Space returns (the filler goes, and the file system grows): the resends are stored.
    std::fs::remove_file(&filler).unwrap();
    fs.resize("16m");
    client
        .flush(Duration::from_secs(120))
        .expect("everything delivered once space returned");
    let report = client.close();
    assert_eq!(report.delivered, total, "{report:?}");
    assert_eq!(report.dropped_total(), 0, "{report:?}");
    ingest.assert_running();
    let records: Vec<Accepted> = (0..total).flat_map(|i| event("db", base, i).1).collect();
    let s = reconcile(&store, &records);
    println!("stored exactly after the disk was full: {s}");
}
