//! Issue 12, reliability: the PostgreSQL server itself goes away mid-stream and comes back.
//! The shared PostgreSQL at 127.0.0.1:5432 is never touched (other tests use it): this test
//! runs a private cluster (`initdb` into a temp dir, as the `postgres` OS user when run as
//! root, since initdb refuses root; trust auth; its own port and socket directory), stops and
//! restarts it while a client streams events through `billing ingest`, and removes it at the
//! end ([`PrivatePg`]'s drop, also when the test fails). Ends with the exact reconciliation of
//! `common::ledger`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use billing_client::{Client, Metrics};
use common::ledger::*;
use common::*;

/// A private PostgreSQL cluster, stopped and deleted on drop.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the data directory, the socket directory and the log.
    dir: tempfile::TempDir,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb` and `pg_ctl`.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PrivatePg {
    fn start() -> PrivatePg {
        let bin = pg_bin().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (initdb, pg_ctl): \
                 install the postgresql package, or set BILLING_TEST_POSTGRES=skip"
            )
        });
        let dir = temp_dir("private-pg");
        let as_postgres = is_root();
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown: {out:?}");
        }
        let data = dir.path().join("data");
        let mut pg = PrivatePg {
            bin,
            data,
            port: 0,
            dir,
            as_postgres,
        };
        let data = pg.data.to_str().unwrap().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // A free port now may be taken by the time the server binds it: a few tries.
        let mut failures = Vec::new();
        while failures.len() < 3 {
            pg.port = free_port();
            match pg.try_pg_ctl("start") {
                Ok(()) => return pg,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "the private cluster did not start:\n{}",
            failures.join("\n")
        );
    }

    /// Runs one of the cluster's binaries (as `postgres` when we are root); it must succeed.
    fn run(&self, tool: &str, args: &[&str]) {
        if let Err(e) = self.try_run(tool, args) {
            panic!("{e}");
        }
    }

    /// Runs one of the cluster's binaries; why it failed, with the server's log.
    fn try_run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).current_dir(self.dir.path());
        let out = c.output().map_err(|e| format!("run {tool}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{tool} {args:?} failed ({}):\n{}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        ))
    }

    /// `pg_ctl ACTION` (start, stop, restart), waiting for it to complete; it must succeed.
    fn pg_ctl(&self, action: &str) {
        if let Err(e) = self.try_pg_ctl(action) {
            panic!("{e}");
        }
    }

    /// `pg_ctl ACTION`, waiting for it to complete.
    fn try_pg_ctl(&self, action: &str) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data.to_str().unwrap();
        let log = self.log_path();
        let log = log.to_str().unwrap();
        self.try_run(
            "pg_ctl",
            &[
                "-D", data, "-l", log, "-w", "-t", "60", "-m", "fast", "-o", &options, action,
            ],
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn url(&self, schema: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?schema={schema}",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data: &Path = &self.data;
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        // The TempDir removes the cluster's files.
    }
}

#[test]
fn postgres_stopped_and_restarted_mid_stream_loses_nothing_and_counts_nothing_twice() {
    if std::env::var("BILLING_TEST_POSTGRES").as_deref() == Ok("skip") {
        return eprintln!("BILLING_TEST_POSTGRES=skip: skipped");
    }
    let pg = PrivatePg::start();
    let store = pg.url("billing_restart");
    let mut ingester = ingest_store_at(&store, "127.0.0.1:0", &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = Metrics::new();
    let config = client_config(&ingester.addr.to_string(), Duration::from_secs(5));
    let client = Client::with_metrics(config, metrics.clone()).unwrap();
    let mut ledger = Ledger::new("pg-restart");
    let flush = |client: &Client| {
        client
            .flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("not acked: {e}; {:?}", client.last_failure()))
    };

    ledger.add(&client, 200);
    flush(&client);

    // Down mid-stream: commits fail (no ack), the client keeps the events and retries.
    let errors = ingest_metric(&mut ingester, "billing_ingest_store_errors_total");
    pg.pg_ctl("stop");
    ledger.add(&client, 200);
    wait_until(
        "a failed commit while PostgreSQL is down",
        POLL_DEADLINE,
        || ingest_metric(&mut ingester, "billing_ingest_store_errors_total") > errors,
    );
    pg.pg_ctl("start");
    flush(&client);

    // A restart while chunks are being written.
    ledger.add(&client, 200);
    pg.pg_ctl("restart");
    ledger.add(&client, 200);
    flush(&client);

    let s = ledger.close_and_reconcile(client, &store);
    println!("pg restart: {s}");
    drop(ingester);
}
