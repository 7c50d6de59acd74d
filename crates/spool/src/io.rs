//! File I/O behind a small trait, so tests can inject faults (the `sim` feature's `SimFs`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// An open file. Positioned reads and writes only; the spool never relies on a file cursor.
pub trait SpoolFile: Send + Sync {
    /// Read at `offset`; returns the number of bytes read (0 at end of file).
    ///
    /// # Errors
    /// The read failed (e.g. `EIO`).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write all of `buf` at `offset`.
    ///
    /// # Errors
    /// The write failed (e.g. `ENOSPC`, `EIO`); some prefix of `buf` may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: make written data (and the file size) durable.
    ///
    /// # Errors
    /// The fsync failed: what was written since the last successful one may be lost, even
    /// if a later fsync succeeds (so the spool never retries one).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncate or extend.
    ///
    /// # Errors
    /// The size could not be changed.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current size.
    ///
    /// # Errors
    /// The size could not be read.
    fn len(&self) -> io::Result<u64>;
    /// Reserve disk space for the first `len` bytes (Linux `fallocate(2)`, mode 0): the file
    /// grows to at least `len`, the new bytes read as zeros, and later writes into them need
    /// no block allocation and no size change, so their `fdatasync` is cheaper.
    ///
    /// # Errors
    /// The space could not be reserved (`ENOSPC`), or the file system or platform cannot
    /// (`Unsupported`, the default): the file is then as it was.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Whether the file is empty.
    ///
    /// # Errors
    /// As [`SpoolFile::len`].
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// Create a new file (fails if it exists), read and write.
    CreateNew,
    /// Create or truncate, read and write.
    CreateTruncate,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// File name (not the path).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// Why the directory lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another opener holds it; `pid` is what the LOCK file says (if readable).
    Held {
        /// The holder's pid, if the lock file names one.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    Io(io::Error),
}

/// Held lock; releasing happens on drop.
pub trait LockGuard: Send + Sync {}

/// File system operations used by the spool.
pub trait SpoolIo: Send + Sync {
    /// Create a directory and its parents.
    ///
    /// # Errors
    /// A directory could not be created (not if it exists already).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory (names that are not UTF-8 are reported lossily).
    ///
    /// # Errors
    /// The directory could not be listed.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Open a file.
    ///
    /// # Errors
    /// It could not be opened: `NotFound` if it is missing ([`OpenMode::Read`],
    /// [`OpenMode::ReadWrite`]), `AlreadyExists` if it exists ([`OpenMode::CreateNew`]).
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn SpoolFile>>;
    /// Remove a file (durable once its directory is synced).
    ///
    /// # Errors
    /// It could not be removed (`NotFound` if it is missing).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Rename atomically, replacing `to` (durable once the directory is synced).
    ///
    /// # Errors
    /// The rename failed.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync a directory, making creations, renames and removals in it durable.
    ///
    /// # Errors
    /// The fsync failed.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Take the exclusive lock of the spool directory `dir` (non-blocking).
    ///
    /// # Errors
    /// [`LockError::Held`] if another opener holds it, [`LockError::Io`] if the lock file
    /// could not be opened, locked or written.
    fn lock(&self, dir: &Path) -> Result<Box<dyn LockGuard>, LockError>;
}

/// Name of the lock file inside the spool directory.
pub const LOCK_FILE: &str = "LOCK";

/// The real file system (`std::fs`, `flock(2)`, `fdatasync(2)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdIo;

struct StdFile(File);

impl SpoolFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    #[cfg(target_os = "linux")]
    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        loop {
            // SAFETY: the descriptor is open for as long as `self.0` lives; mode 0 only
            // reserves space and extends the size.
            let r = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, len) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP) => return Err(io::ErrorKind::Unsupported.into()),
                _ => return Err(e),
            }
        }
    }
}

/// Mode of the files the spool creates: readable by their owner only (billing data). The
/// umask can only take bits away, so they are never more open than this.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories the spool creates.
pub const FILE_DIR_MODE: u32 = 0o700;

struct StdLock(#[allow(dead_code)] File);
impl LockGuard for StdLock {}

impl SpoolIo for StdIo {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Billing data: directories we create are the owner's only (an existing one keeps its
        // mode: it is the operator's).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(FILE_DIR_MODE)
            .create(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                is_dir: e.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn SpoolFile>> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateNew => {
                o.write(true).create_new(true).mode(FILE_MODE);
            }
            OpenMode::CreateTruncate => {
                o.write(true).create(true).truncate(true).mode(FILE_MODE);
            }
        }
        Ok(Arc::new(StdFile(o.open(path)?)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn lock(&self, dir: &Path) -> Result<Box<dyn LockGuard>, LockError> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(dir.join(LOCK_FILE))
            .map_err(LockError::Io)?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut s = String::new();
                let pid = f
                    .read_to_string(&mut s)
                    .ok()
                    .and_then(|_| s.trim().parse().ok());
                return Err(LockError::Held { pid });
            }
            return Err(LockError::Io(err));
        }
        let pid = std::process::id();
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| writeln!(f, "{pid}"))
            .map_err(LockError::Io)?;
        Ok(Box::new(StdLock(f)))
    }
}

/// Read the pid written in `dir/LOCK` and whether the lock is currently held (by anyone,
/// including this process through another open file description).
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let f = File::open(dir.join(LOCK_FILE)).ok()?;
    // SAFETY: flock on a valid, owned descriptor; a shared probe lock released at once.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    std::fs::read_to_string(dir.join(LOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl fmt::Debug for dyn SpoolIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpoolIo")
    }
}
