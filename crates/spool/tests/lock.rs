//! Exclusive lock: a second opener (another process, or another `Spool` in this process) gets
//! `SpoolError::Locked` naming the holder's pid. The lock goes away with its holder, even when
//! the holder is killed.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use spool::{Spool, SpoolError};

const DIR_VAR: &str = "SPOOL_LOCK_TEST_DIR";
const MODE_VAR: &str = "SPOOL_LOCK_TEST_MODE";

/// Not a test of its own: the body of the child process the other tests spawn.
#[test]
fn child_process_helper() {
    let (Ok(dir), Ok(mode)) = (std::env::var(DIR_VAR), std::env::var(MODE_VAR)) else {
        return;
    };
    let res = Spool::open(dir.as_ref(), opts());
    let mut out = std::io::stdout();
    match (mode.as_str(), res) {
        ("try", Err(SpoolError::Locked { pid, .. })) => {
            writeln!(out, "RESULT locked {}", pid.map_or(-1, |p| p as i64)).unwrap()
        }
        ("try", Err(e)) => writeln!(out, "RESULT error {e}").unwrap(),
        ("try", Ok(_)) => writeln!(out, "RESULT opened").unwrap(),
        ("hold", Ok((s, _))) => {
            s.append(b"from child").unwrap();
            writeln!(out, "RESULT held").unwrap();
            out.flush().unwrap();
            // Hold the lock until the parent closes our stdin (or kills us).
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
            drop(s);
        }
        (m, r) => panic!("unexpected {m} {:?}", r.err()),
    }
}

fn child(dir: &std::path::Path, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn result_line(c: &mut std::process::Child) -> String {
    let out = c.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("child ended without a result; its output: {seen:?}");
        }
        seen.push_str(&line);
        // (libtest may print "test child_process_helper ... " on the same line)
        if let Some(i) = line.find("RESULT ") {
            return line[i + 7..].trim().to_string();
        }
    }
}

#[test]
fn second_open_in_the_same_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    let err = Spool::open(dir.path(), opts())
        .err()
        .expect("must be locked");
    let me = std::process::id();
    match &err {
        SpoolError::Locked { pid, dir: d } => {
            assert_eq!(*pid, Some(me));
            assert_eq!(d, dir.path());
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("process {me}")), "{msg}");
    assert!(msg.contains("locked"), "{msg}");
    drop(s);
    let (_s, _) = open_dir(dir.path(), opts());
}

#[test]
fn another_process_is_told_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, _) = open_dir(dir.path(), opts());
    let mut c = child(dir.path(), "try");
    assert_eq!(
        result_line(&mut c),
        format!("locked {}", std::process::id())
    );
    c.wait().unwrap();
}

#[test]
fn lock_is_released_when_the_holder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child(dir.path(), "hold");
    assert_eq!(result_line(&mut c), "held");
    match Spool::open(dir.path(), opts()) {
        Err(SpoolError::Locked { pid, .. }) => assert_eq!(pid, Some(c.id())),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    // The inspector works without the lock and reports the holder.
    let insp = spool::inspect(dir.path()).unwrap();
    assert_eq!(insp.locked_by, Some(c.id()));
    assert_eq!(insp.stats.records, 1);
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 1);
    assert_eq!(drain(&s)[0].1, b"from child".to_vec());
    assert_eq!(
        spool::inspect(dir.path()).unwrap().locked_by,
        Some(std::process::id())
    );
}

#[test]
fn lock_is_released_on_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child(dir.path(), "hold");
    assert_eq!(result_line(&mut c), "held");
    drop(c.stdin.take()); // child closes the spool and exits
    assert!(c.wait().unwrap().success());
    let (_s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 1);
}
