//! SIGKILL at any moment: every append for which `append` returned Ok (Fsync mode) is read
//! back after reopening; in Interval mode too (the bytes are in the page cache). The writer is a
//! real child process killed with SIGKILL while two of its threads append; this happens several
//! times over the same directory.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use spool::Spool;

const DIR_VAR: &str = "SPOOL_KILL_TEST_DIR";

fn child_payload(round: u64, t: u64, i: u64) -> Vec<u8> {
    let mut p = format!("r{round}-t{t}-i{i}-").into_bytes();
    p.resize(60 + (i as usize % 150), b'x');
    p
}

/// The rest of an "OK seq t i" line (libtest may print its "test ... " prefix before the first).
fn ok_fields(line: &str) -> Option<&str> {
    line.find("OK ").map(|i| &line[i + 3..])
}

/// Not a test of its own: the body of the child process.
#[test]
fn child_process_helper() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var("SPOOL_KILL_ROUND").unwrap().parse().unwrap();
    let o = if round >= 4 { interval_opts() } else { opts() };
    let (s, _) = Spool::open(dir.as_ref(), o).unwrap();
    let s = Arc::new(s);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let hs: Vec<_> = (0..2u64)
        .map(|t| {
            let s = s.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let p = child_payload(round, t, i);
                    let seq = if i % 3 == 0 {
                        let p2 = child_payload(round, t + 10, i);
                        let r = s.append_batch(&[&p, &p2]).unwrap();
                        let mut o = out.lock().unwrap();
                        writeln!(o, "OK {} {t} {i}", r.start).unwrap();
                        writeln!(o, "OK {} {} {i}", r.start + 1, t + 10).unwrap();
                        continue;
                    } else {
                        s.append(&p).unwrap()
                    };
                    writeln!(out.lock().unwrap(), "OK {seq} {t} {i}").unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn sigkill_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (round, kill_after) in [
        (0u64, 50usize),
        (1, 400),
        (2, 7),
        (3, 1500),
        // Interval mode: appends return before any fsync; a killed process (not a crashed
        // machine) still loses none of them.
        (4, 3000),
        (5, 20),
    ] {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_helper",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env("SPOOL_KILL_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        let mut n = 0;
        while n < kill_after {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "child died early");
            let Some(rest) = ok_fields(&line) else {
                continue;
            };
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            expected.insert(f[0], child_payload(round, f[1], f[2]));
            n += 1;
        }
        c.kill().unwrap(); // SIGKILL, while both threads are appending
        // Lines already printed were Ok'ed before the kill (a line cut by the kill is skipped).
        line.clear();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = ok_fields(&line)
                && line.ends_with('\n')
            {
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if f.len() == 3 {
                    expected.insert(f[0], child_payload(round, f[1], f[2]));
                }
            }
            line.clear();
        }
        c.wait().unwrap();

        let (s, rec) = open_dir(dir.path(), opts());
        assert_eq!(rec.damaged_records, 0);
        let got: BTreeMap<u64, Vec<u8>> = drain(&s).into_iter().collect();
        for (seq, p) in &expected {
            assert_eq!(
                got.get(seq),
                Some(p),
                "round {round}: Ok'ed append {seq} lost"
            );
        }
        // Records that were written but not yet Ok'ed may survive too; they are well-formed.
        let prev: Vec<u64> = got.keys().copied().collect();
        assert!(prev.windows(2).all(|w| w[0] < w[1]));
    }
}
