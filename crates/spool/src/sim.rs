//! An in-memory file system for tests that models what survives a crash, with fault injection.
//!
//! Every file keeps its current bytes (the "page cache") and its durable bytes (what
//! `sync_data` last made durable); a directory entry (creation, rename, removal) becomes
//! durable only when its directory is synced. [`SimFs::crash`] throws away everything not
//! durable, like a power loss, and kills every handle opened before it (the old process is
//! dead: its operations fail with `EIO`). [`SimFs::io`] gives the handle a new "process" uses.
//!
//! Faults: a capacity (writes past it fail with `ENOSPC`, possibly after a partial write),
//! and counters that make the next N `sync_data` / writes / `set_len` fail with `EIO`. A failed
//! `sync_data` makes nothing durable (as a failed `fsync` on Linux may).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::io::{DirEntry, LockError, LockGuard, OpenMode, SpoolFile, SpoolIo};

/// Injected faults; change them with [`SimFs::faults`].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Total bytes all files may hold; writes past it fail with `ENOSPC` (after writing what
    /// fits).
    pub capacity: Option<u64>,
    /// The next N `sync_data` calls fail with `EIO`.
    pub fail_syncs: u32,
    /// The next N writes fail with `EIO` (nothing written).
    pub fail_writes: u32,
    /// The next N `set_len` calls fail with `EIO`.
    pub fail_set_len: u32,
    /// Every `sync_data` fails while set.
    pub syncs_broken: bool,
    /// `allocate` is not supported (as on a file system without `fallocate`).
    pub no_allocate: bool,
}

/// A file is `data` followed by zeros up to `len` (space reserved by `allocate` and not
/// written yet is not materialised, so a reserved segment costs its writes, not its size);
/// `durable` and `durable_len` are the same after the last `sync_data`.
#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    len: u64,
    durable: Vec<u8>,
    durable_len: u64,
}

impl Inode {
    fn set(&mut self, data: &[u8]) {
        self.data = data.to_vec();
        self.len = data.len() as u64;
        self.durable = self.data.clone();
        self.durable_len = self.len;
    }
}

#[derive(Default)]
struct FsState {
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    // Hashed by the path's bytes, not ordered `PathBuf`s: an ordered map compares long
    // common prefixes at every level, which dominated the fuzz target that recovers damaged
    // spools (hundreds of files in `damaged/`). Paths are always built with `join`, so equal
    // paths have equal bytes. Listing a directory scans the map; only opens and tests do.
    names: HashMap<OsString, u64>,
    durable_names: HashMap<OsString, u64>,
    /// Entries of `names` changed since their directory was last synced (created, removed,
    /// renamed): what the next `sync_dir` of that directory makes durable. Kept so that a
    /// sync costs its directory's changes, not its size.
    unsynced: HashSet<OsString>,
    dirs: HashSet<OsString>,
    /// dir -> lock id
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
    faults: Faults,
    syncs: u64,
}

impl FsState {
    /// Bytes of the files that have a name (unlinked files free their space).
    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        live.iter().map(|i| self.inodes[i].len).sum()
    }
}

fn key(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Whether `path` is directly inside `dir` (`dir/name`, no further `/`).
fn in_dir(path: &OsStr, dir: &Path) -> bool {
    let p = path.as_bytes();
    // "/" ends with its separator; every other directory is named without one.
    let d = dir.as_os_str().as_bytes();
    let d = d.strip_suffix(b"/").unwrap_or(d);
    p.len() > d.len() + 1
        && p[d.len()] == b'/'
        && p.starts_with(d)
        && !p[d.len() + 1..].contains(&b'/')
}

/// The paths of `paths` directly inside `dir`, sorted.
fn children<'a>(paths: impl Iterator<Item = &'a OsString>, dir: &Path) -> Vec<&'a OsString> {
    let mut out: Vec<&OsString> = paths.filter(|p| in_dir(p, dir)).collect();
    out.sort();
    out
}

fn file_name(k: &OsStr) -> String {
    Path::new(k)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The simulated file system. Cheap to share: `Arc<SimFs>`.
#[derive(Default)]
pub struct SimFs {
    st: Mutex<FsState>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

fn dead() -> io::Error {
    io::Error::other("simulated crash: this handle belongs to a process that died")
}

impl SimFs {
    /// An empty file system with no faults armed.
    pub fn new() -> Arc<SimFs> {
        Arc::new(SimFs::default())
    }

    fn lock(&self) -> MutexGuard<'_, FsState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for a new process (valid until the next crash).
    pub fn io(self: &Arc<Self>) -> Arc<dyn SpoolIo> {
        let generation = self.lock().generation;
        Arc::new(SimIo {
            fs: self.clone(),
            generation,
        })
    }

    /// Change the injected faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.lock().faults)
    }

    /// The faults currently armed.
    pub fn armed(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Number of successful `sync_data` calls so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Power loss: keep only durable bytes and durable directory entries.
    pub fn crash(&self) {
        self.crash_with(|_| 0)
    }

    /// Power loss where, for a file whose current bytes differ from its durable bytes (an
    /// append, or a write over zeros already there), `keep(n)` of the `n` bytes from the first
    /// difference to the last happen to have reached the disk (a torn write).
    pub fn crash_with(&self, mut keep: impl FnMut(usize) -> usize) {
        let mut st = self.lock();
        st.generation += 1;
        st.locks.clear();
        st.names = st.durable_names.clone();
        st.unsynced.clear();
        let live: BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        for inode in st.inodes.values_mut() {
            let d = inode.durable.len();
            if inode.data.len() >= d {
                // The unsynced change: from the first byte that differs to the last one (or
                // the end of an append). A prefix of it reached the disk.
                let same = |i: &usize| inode.data[*i] == inode.durable[*i];
                let start = (0..d).find(|i| !same(i)).unwrap_or(d);
                let end = if inode.data.len() > d {
                    inode.data.len()
                } else {
                    (start..d).rev().find(|i| !same(i)).map_or(start, |i| i + 1)
                };
                if end > start {
                    let k = keep(end - start).min(end - start);
                    if inode.durable.len() < start + k {
                        inode.durable.resize(start + k, 0);
                    }
                    inode.durable[start..start + k].copy_from_slice(&inode.data[start..start + k]);
                    inode.durable_len = inode.durable_len.max((start + k) as u64);
                }
            }
            inode.data = inode.durable.clone();
            inode.len = inode.durable_len;
        }
    }

    /// Current content of a file.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.names.get(key(path))?;
        let inode = &st.inodes[ino];
        let mut out = inode.data.clone();
        out.resize(inode.len as usize, 0);
        Some(out)
    }

    /// Replace a file's content, durably (like corruption on the disk, or a test setup step).
    pub fn write(&self, path: &Path, data: &[u8]) {
        let mut st = self.lock();
        let ino = match st.names.get(key(path)) {
            Some(i) => *i,
            None => {
                st.next_ino += 1;
                let i = st.next_ino;
                st.inodes.insert(i, Inode::default());
                st.names.insert(key(path).to_owned(), i);
                st.durable_names.insert(key(path).to_owned(), i);
                i
            }
        };
        st.inodes.get_mut(&ino).unwrap().set(data);
    }

    /// Remove a file, durably.
    pub fn remove(&self, path: &Path) {
        let mut st = self.lock();
        st.names.remove(key(path));
        st.durable_names.remove(key(path));
    }

    /// Names of the files in `dir`, sorted.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let st = self.lock();
        children(st.names.keys(), dir)
            .into_iter()
            .map(|k| file_name(k))
            .collect()
    }

    /// Total bytes held by all files.
    pub fn used(&self) -> u64 {
        self.lock().used()
    }
}

struct SimIo {
    fs: Arc<SimFs>,
    generation: u64,
}

impl SimIo {
    fn st(&self) -> io::Result<MutexGuard<'_, FsState>> {
        let st = self.fs.lock();
        if st.generation != self.generation {
            return Err(dead());
        }
        Ok(st)
    }
}

struct SimFile {
    fs: Arc<SimFs>,
    generation: u64,
    ino: u64,
    writable: bool,
}

impl SimFile {
    fn st(&self) -> io::Result<MutexGuard<'_, FsState>> {
        let st = self.fs.lock();
        if st.generation != self.generation {
            return Err(dead());
        }
        Ok(st)
    }
}

impl SpoolFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let st = self.st()?;
        let inode = &st.inodes[&self.ino];
        if offset >= inode.len {
            return Ok(0);
        }
        let n = buf.len().min((inode.len - offset) as usize);
        let data = &inode.data;
        let from_data = data.len().saturating_sub(offset as usize).min(n);
        if from_data > 0 {
            buf[..from_data].copy_from_slice(&data[offset as usize..offset as usize + from_data]);
        }
        buf[from_data..n].fill(0);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let mut st = self.st()?;
        if st.faults.fail_writes > 0 {
            st.faults.fail_writes -= 1;
            return Err(eio("write"));
        }
        let len = st.inodes[&self.ino].len;
        let new_len = len.max(offset + buf.len() as u64);
        let mut n = buf.len();
        let mut err = None;
        if let Some(cap) = st.faults.capacity {
            let used = st.used();
            let growth = new_len - len;
            if used + growth > cap {
                let room = cap.saturating_sub(used);
                // Bytes that fit: those overwriting existing data plus `room` more.
                let fits = (len + room).saturating_sub(offset).min(buf.len() as u64);
                n = fits as usize;
                err = Some(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let inode = st.inodes.get_mut(&self.ino).unwrap();
        let end = offset as usize + n;
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[offset as usize..end].copy_from_slice(&buf[..n]);
        inode.len = inode.len.max(end as u64);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.st()?;
        if st.faults.syncs_broken {
            return Err(eio("fsync"));
        }
        if st.faults.fail_syncs > 0 {
            st.faults.fail_syncs -= 1;
            return Err(eio("fsync"));
        }
        st.syncs += 1;
        let inode = st.inodes.get_mut(&self.ino).unwrap();
        inode.durable = inode.data.clone();
        inode.durable_len = inode.len;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.st()?;
        if st.faults.fail_set_len > 0 {
            st.faults.fail_set_len -= 1;
            return Err(eio("ftruncate"));
        }
        let inode = st.inodes.get_mut(&self.ino).unwrap();
        inode.data.truncate(len as usize);
        inode.len = len;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.st()?.inodes[&self.ino].len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let mut st = self.st()?;
        if st.faults.no_allocate {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let cur = st.inodes[&self.ino].len;
        if let Some(cap) = st.faults.capacity
            && st.used() + len.saturating_sub(cur) > cap
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inode = st.inodes.get_mut(&self.ino).unwrap();
        inode.len = inode.len.max(len);
        Ok(())
    }
}

struct SimLock {
    fs: Arc<SimFs>,
    dir: PathBuf,
    id: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.locks.get(&self.dir) == Some(&self.id) {
            st.locks.remove(&self.dir);
        }
    }
}

impl SpoolIo for SimIo {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st()?;
        for a in path.ancestors() {
            st.dirs.insert(key(a).to_owned());
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.st()?;
        if !st.dirs.contains(key(path)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let mut out: Vec<DirEntry> = children(st.names.keys(), path)
            .into_iter()
            .map(|k| DirEntry {
                name: file_name(k),
                is_dir: false,
            })
            .collect();
        out.extend(
            children(st.dirs.iter(), path)
                .into_iter()
                .map(|p| DirEntry {
                    name: file_name(p),
                    is_dir: true,
                }),
        );
        Ok(out)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn SpoolFile>> {
        let mut st = self.st()?;
        if !path.parent().is_some_and(|p| st.dirs.contains(key(p))) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let existing = st.names.get(key(path)).copied();
        let ino = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(i)) => i,
            (OpenMode::Read | OpenMode::ReadWrite, None) => {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            (OpenMode::CreateTruncate, Some(i)) => {
                let inode = st.inodes.get_mut(&i).unwrap();
                inode.data.clear();
                inode.len = 0;
                i
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                st.next_ino += 1;
                let i = st.next_ino;
                st.inodes.insert(i, Inode::default());
                st.names.insert(key(path).to_owned(), i);
                st.unsynced.insert(key(path).to_owned());
                i
            }
        };
        Ok(Arc::new(SimFile {
            fs: self.fs.clone(),
            generation: self.generation,
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st()?;
        st.names
            .remove(key(path))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        st.unsynced.insert(key(path).to_owned());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st()?;
        let ino = st
            .names
            .remove(key(from))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        st.names.insert(key(to).to_owned(), ino);
        st.unsynced.insert(key(from).to_owned());
        st.unsynced.insert(key(to).to_owned());
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st()?;
        let st = &mut *st;
        let changed: Vec<OsString> = children(st.unsynced.iter(), path)
            .into_iter()
            .cloned()
            .collect();
        for k in changed {
            match st.names.get(&k) {
                Some(&i) => st.durable_names.insert(k.clone(), i),
                None => st.durable_names.remove(&k),
            };
            st.unsynced.remove(&k);
        }
        Ok(())
    }

    fn lock(&self, dir: &Path) -> Result<Box<dyn LockGuard>, LockError> {
        let mut st = self.st().map_err(LockError::Io)?;
        if st.locks.contains_key(dir) {
            return Err(LockError::Held {
                pid: Some(std::process::id()),
            });
        }
        st.next_lock += 1;
        let id = st.next_lock;
        st.locks.insert(dir.to_path_buf(), id);
        Ok(Box::new(SimLock {
            fs: self.fs.clone(),
            dir: dir.to_path_buf(),
            id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_holds_only_its_direct_entries_the_root_included() {
        let p = |s: &str| OsString::from(s);
        assert!(in_dir(&p("/sim/spool/a.seg"), Path::new("/sim/spool")));
        assert!(!in_dir(&p("/sim/spool/damaged/x"), Path::new("/sim/spool")));
        assert!(!in_dir(&p("/sim/spoolx/a"), Path::new("/sim/spool")));
        assert!(!in_dir(&p("/sim/spool"), Path::new("/sim/spool")));
        assert!(in_dir(&p("/sim"), Path::new("/")));
        assert!(!in_dir(&p("/sim/spool"), Path::new("/")));
    }
}
