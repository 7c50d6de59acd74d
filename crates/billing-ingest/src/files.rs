//! Store files readable by their owner only.
//!
//! Why: a store holds every customer's usage and metadata; created with the usual umask
//! (022) it would be world-readable (0644). The process umask is process-global, so it is
//! left alone: the file is created by us, before anything else opens it, with mode 0600 (the
//! umask can only take bits away, so it ends at most 0600).
//!
//! Invariants:
//! - a file this module creates has mode 0600 or less, whatever the umask;
//! - SQLite creates a database's `-wal` and `-shm` files with the database file's own mode
//!   (its unix VFS copies the mode and `fchmod`s a new file to it, past the umask), so they
//!   are 0600 too once the database file is;
//! - an existing file keeps its mode: an operator's choice is not overridden, but a file that
//!   its group or others can read is warned about once at open.

use std::path::Path;

/// Creates `path` empty with mode 0600 when it does not exist (an empty file is an empty
/// SQLite database); warns when an existing one is group- or world-readable.
pub(crate) fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Warns when `path` exists and its group or others may read it.
pub(crate) fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:04o}"),
                    "store file is readable by its group or others; it holds billing data \
                     (chmod 600 it unless that is intended)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        create_private(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        create_private(&old).unwrap();
        assert_eq!(mode(&old), 0o640, "an operator's file is not chmodded");
    }
}
