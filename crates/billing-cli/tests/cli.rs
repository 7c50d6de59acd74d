//! The `billing` command line: exit codes and one-line reasons of `send`, flags from
//! `BILLING_*` environment variables, `--help` naming every flag's default, and the ingester's
//! log line for a broken connection, the top-level help and JSON logs.

mod common;

use std::io::Write as _;
use std::process::Command;

use common::*;

fn send(addr: &str) -> Command {
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        "--billing.ingester",
        addr,
        "--instance",
        "7",
        "--timeout",
        "20s",
    ]);
    c
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be one line, got: {stderr:?}");
    lines[0]
}

#[test]
fn send_with_a_blank_key_exits_2_with_the_go_message() {
    let mut c = send("127.0.0.1:9");
    c.args(["--key", "  ", "--amount", "samples=1"]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        one_line(&out.stderr).contains("uniqueKey cannot be blank"),
        "{}",
        out.stderr
    );
}

#[test]
fn send_with_a_bad_amount_exits_2_naming_it() {
    for bad in ["samples=1.5", "samples", "=3", "samples=lots"] {
        let mut c = send("127.0.0.1:9");
        c.args(["--key", "k", "--amount", bad]);
        let out = run("billing send", c);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            one_line(&out.stderr).contains("--amount"),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[test]
fn send_without_an_amount_or_with_a_type_twice_exits_2_naming_it() {
    let mut c = send("127.0.0.1:9");
    c.args(["--key", "k"]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out.stderr).contains("--amount"), "{}", out.stderr);

    let mut c = send("127.0.0.1:9");
    c.args([
        "--key",
        "k",
        "--amount",
        "samples=1",
        "--amount",
        "samples=2",
    ]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("samples") && line.contains("twice"), "{line}");
}

#[test]
fn send_of_only_zero_amounts_says_nothing_is_billable_and_exits_0_without_connecting() {
    // Nothing listens at port 9: exit 0 proves no delivery was attempted.
    let mut c = send("127.0.0.1:9");
    c.args([
        "--key",
        "k",
        "--amount",
        "samples=0",
        "--amount",
        "node-seconds=0",
    ]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("nothing is billable"), "{}", out.stdout);
}

#[test]
fn send_to_an_unparsable_ingester_address_exits_2() {
    let mut c = send("no-port-here");
    c.args(["--key", "k", "--amount", "samples=1"]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        one_line(&out.stderr).contains("invalid ingester address"),
        "{}",
        out.stderr
    );
}

#[test]
fn send_to_an_unreachable_ingester_exits_1_within_its_timeout() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        "--billing.ingester",
        &dead,
        "--key",
        "k",
        "--instance",
        "7",
        "--amount",
        "samples=1",
        "--timeout",
        "300ms",
    ]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("not acknowledged") && line.contains(&dead) && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn send_to_a_host_that_does_not_resolve_says_so_in_its_one_line() {
    let mut c = Command::new(billing_bin());
    c.args(["send", "--billing.ingester", "no-such-host.invalid:24225"])
        .args(["--key", "k", "--instance", "7", "--amount", "samples=1"])
        .args(["--timeout", "2s", "--billing.retry-delay", "50ms"]);
    let out = run("billing send", c);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("no-such-host.invalid")
            && line.contains("cannot connect")
            && line.contains("lookup"),
        "{line}"
    );
}

#[test]
fn client_flags_are_read_from_billing_environment_variables() {
    let mut ingest = Ingest::start("env");
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        "--key",
        "env-1",
        "--instance",
        "7",
        "--amount",
        "samples=2",
        "--timeout",
        "20s",
    ])
    .env("BILLING_INGESTER", ingest.addr().to_string())
    .env("BILLING_FRAMING", "json-message");
    let out = run("billing send", c);
    assert!(out.status.success(), "{}", out.stderr);
    let lines = ingest.wait_lines("env-1 record", |l| !l.is_empty());
    assert_eq!(lines[0]["record"]["unique_key"], "env-1:samples");
    // JSON framing sends the time in whole seconds: the env var was honoured.
    assert!(
        !lines[0]["time"].as_str().unwrap().contains('.'),
        "{}",
        lines[0]
    );
}

#[test]
fn help_of_every_command_names_each_flag_and_its_default() {
    for (cmd, expected) in [
        (
            "send",
            &[
                "--billing.max-buffered-events",
                "[default: 1024]",
                "--billing.retry-delay",
                "[default: 500ms]",
                "--billing.ingester",
                "[default: localhost:24225]",
                "BILLING_INGESTER",
                "--timeout",
                "[default: 10s]",
            ][..],
        ),
        (
            "ingest",
            &["--listen", "[default: 127.0.0.1:24225]", "--store"][..],
        ),
        (
            "demo",
            &["--instances", "[default: 200]", "--seed", "--db"][..],
        ),
        ("bench", &["--events", "--types", "--go"][..]),
    ] {
        let mut c = Command::new(billing_bin());
        c.args([cmd, "--help"]);
        let out = run("billing --help", c);
        assert!(out.status.success(), "{cmd}: {}", out.stderr);
        for e in expected {
            assert!(
                out.stdout.contains(e),
                "`billing {cmd} --help` lacks {e:?}:\n{}",
                out.stdout
            );
        }
    }
}

#[test]
fn a_connection_sending_garbage_is_closed_with_a_log_line_naming_peer_and_reason() {
    let mut ingest = Ingest::start("garbage-log");
    let mut bad = std::net::TcpStream::connect(ingest.addr()).unwrap();
    let local = bad.local_addr().unwrap();
    bad.write_all(&[0xc1, 0x00, 0x01]).unwrap();
    // The server closes the connection: reading sees EOF.
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut bad, &mut buf).unwrap_or(0), 0);
    let stderr = wait_for(|| {
        let s = ingest.server.stderr();
        s.contains("closing forward connection").then_some(s)
    });
    let line = stderr
        .lines()
        .find(|l| l.contains("closing forward connection"))
        .unwrap();
    assert!(line.contains(&local.to_string()), "peer missing: {line}");
    assert!(
        line.contains("frame must be an array"),
        "reason missing: {line}"
    );
    ingest.assert_running();
}

/// Polls `f` until it returns a value, bounded by POLL_DEADLINE.
fn wait_for<T>(f: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + POLL_DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in {POLL_DEADLINE:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn top_level_help_names_every_command_and_the_log_format() {
    let mut c = Command::new(billing_bin());
    c.arg("--help");
    let out = run("billing --help", c);
    assert!(out.status.success(), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    for cmd in ["ingest", "report", "send", "demo", "bench", "spool"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "`billing --help` does not list {cmd}:\n{}",
            out.stdout
        );
        assert!(first.contains(cmd), "the first line names {cmd}: {first}");
    }
    assert!(out.stdout.contains("--log-format"), "{}", out.stdout);
}

#[test]
fn log_format_json_writes_one_json_object_per_stderr_line() {
    let dir = temp_dir("json-logs");
    let mut c = Command::new(billing_bin());
    c.env("RUST_LOG", "info")
        .args(["--log-format", "json", "ingest", "--listen", "127.0.0.1:0"])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.path().join("b.db").display()));
    let server = Server::spawn("billing ingest --log-format json", c);
    let stderr = wait_for(|| {
        let s = server.stderr();
        s.contains("ingester listening").then_some(s)
    });
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let listening = stderr
        .lines()
        .find(|l| l.contains("ingester listening"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(listening).unwrap();
    assert_eq!(v["level"], "INFO", "{listening}");
    assert!(v["fields"]["addr"].is_string(), "{listening}");
}

#[test]
fn go_form_flags_are_accepted_as_the_go_client_wrote_them() {
    let mut ingest = Ingest::start("go-flags");
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        &format!("-billing.ingester={}", ingest.addr()),
        "-billing.retry-delay",
        "100ms",
        "-billing.require-ack",
        "-billing.framing=json-message",
        "--key",
        "go-1",
        "--instance",
        "7",
        "--amount",
        "samples=3",
        "--timeout",
        "20s",
    ]);
    let out = run("billing send (Go flags)", c);
    assert!(out.status.success(), "{}", out.stderr);
    let lines = ingest.wait_lines("go-1 record", |l| !l.is_empty());
    assert_eq!(lines[0]["record"]["unique_key"], "go-1:samples");
    // -billing.framing=json-message was honoured: whole seconds on the wire.
    assert!(
        !lines[0]["time"].as_str().unwrap().contains('.'),
        "{}",
        lines[0]
    );

    // An explicit value still parses in Go's `-flag=value` form.
    let mut c = Command::new(billing_bin());
    c.args([
        "send",
        &format!("-billing.ingester={}", ingest.addr()),
        "-billing.require-ack=false",
        "--key",
        "go-2",
        "--instance",
        "7",
        "--amount",
        "samples=4",
        "--timeout",
        "20s",
    ]);
    let out = run("billing send (Go flags, no ack)", c);
    assert!(out.status.success(), "{}", out.stderr);
    ingest.wait_lines("go-2 record", |l| {
        l.iter()
            .any(|r| r["record"]["unique_key"] == "go-2:samples")
    });
}

#[test]
fn listen_on_go_form_colon_port_binds_every_interface() {
    let dir = temp_dir("colon-port");
    let mut child = Command::new(billing_bin())
        .args(["ingest", "--listen", ":0", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("b.db").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let addr: std::net::SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .parse()
        .unwrap();
    assert!(
        addr.ip().is_unspecified(),
        "{addr}: all interfaces, as Go's :PORT"
    );
    assert_ne!(addr.port(), 0);
}
