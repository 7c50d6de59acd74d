//! Failure class: billing data readable by other users. Everything the spool creates is its
//! owner's only, whatever the process umask.

use std::os::unix::fs::PermissionsExt;

use spool::{Spool, SpoolOptions};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_spool_directory_and_its_files_are_private_to_their_owner() {
    // SAFETY: umask is process-wide; a permissive one makes the test meaningful, and no other
    // test in this binary depends on the umask.
    let old = unsafe { libc::umask(0o022) };
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("a/spool");
    let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    spool.append(b"event").unwrap();
    unsafe { libc::umask(old) };
    assert_eq!(mode(&dir), 0o700, "spool directory");
    assert_eq!(mode(&parent.path().join("a")), 0o700, "created parent");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "a segment and the lock: {files:?}");
    for f in files.iter().filter(|f| f.is_file()) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}
