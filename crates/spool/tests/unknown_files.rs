//! Files the spool does not own are left alone (and reported), never a reason to fail.
mod common;
use common::*;

#[test]
fn unknown_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_dir(dir.path(), opts());
    fill(&s, 50);
    drop(s);
    let strangers = [
        ("notes.txt", b"hello".to_vec()),
        ("00000000000000000001.seg.bak", b"backup".to_vec()),
        ("123.seg", b"short name".to_vec()),
        ("ACKS.old", vec![0u8; 100]),
    ];
    for (n, c) in &strangers {
        std::fs::write(dir.path().join(n), c).unwrap();
    }
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    std::fs::write(dir.path().join("subdir/x"), b"x").unwrap();

    let (s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 50);
    let mut want: Vec<String> = strangers.iter().map(|(n, _)| n.to_string()).collect();
    want.push("subdir".into());
    want.sort();
    assert_eq!(rec.unknown_files, want);
    // Use the spool fully: append, ack everything (segments get deleted), reopen.
    fill_more(&s);
    let all = seqs(&drain(&s));
    s.ack(&all).unwrap();
    drop(s);
    let (_s, rec) = open_dir(dir.path(), opts());
    assert_eq!(rec.records, 0);
    for (n, c) in &strangers {
        assert_eq!(&std::fs::read(dir.path().join(n)).unwrap(), c, "{n}");
    }
    assert_eq!(std::fs::read(dir.path().join("subdir/x")).unwrap(), b"x");
    let inspected = spool::inspect(dir.path()).unwrap();
    assert_eq!(inspected.unknown_files, want);
}

fn fill_more(s: &spool::Spool) {
    for i in 0..50 {
        s.append(&payload(i)).unwrap();
    }
}
