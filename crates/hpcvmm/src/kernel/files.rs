//! Descriptors and open file descriptions, as Linux has them.
//!
//! A guest fd number indexes the thread group's [`FdTable`], which is the VMM's own table: a
//! guest number never names a host fd directly, so the guest cannot reach the VMM's KVM fds,
//! statistics files or anything else the host process has open. Each entry holds per-fd flags
//! (FD_CLOEXEC) and a shared reference to an [`OpenFile`] (the open file description): `dup`
//! copies the reference, so duplicates share the offset and status flags, which live in the
//! description (for host-backed kinds: in the one host fd behind it).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use super::{err, Errno};

/// A kind of file the HPC VMM does not implement yet. Uninhabited: its variants below are
/// places to fill, not working features.
#[derive(Debug)]
pub enum NotYet {}

/// What an open file description refers to.
#[derive(Debug)]
pub enum FileKind {
    /// One of the VMM's own standard streams (fd 0, 1, 2 of the host process). Closing the
    /// guest fd never closes the VMM's stream.
    Stdio(i32),
    /// A host file or directory opened inside the guest's root (or a redirected std stream).
    Host(OwnedFd),
    /// One end of a host pipe.
    Pipe(OwnedFd),
    /// A virtual file the VMM generated (procfs/sysfs), served from a memfd snapshot of its
    /// content taken at open.
    Virtual(OwnedFd),
    /// A directory the VMM generated (the guest's /proc/self, its fd/ and task/), listed by
    /// getdents64 from its own entries.
    VirtualDir(VirtualDir),
    /// Sockets (next issue: socket/connect/... on host sockets).
    Socket(NotYet),
    /// An epoll set: a host epoll fd watching the host fds behind guest descriptors.
    Epoll(OwnedFd),
    /// An eventfd counter (a host eventfd).
    EventFd(OwnedFd),
    /// A timerfd: a host timerfd on the same clocks the guest reads.
    TimerFd(OwnedFd),
    /// A signalfd: reads take the guest's pending signals in `mask`. The host eventfd (never
    /// signalled) carries the status flags (O_NONBLOCK) and stands in for fstat.
    SignalFd(SignalFd),
}

/// A guest signalfd.
#[derive(Debug)]
pub struct SignalFd {
    pub mask: std::sync::atomic::AtomicU64,
    pub host: OwnedFd,
}

/// A generated directory: its entries (name, `DT_*` type) and the listing cursor. The host fd
/// behind it is an empty directory that was removed right after it was opened, so fstat says
/// "directory" and nothing can be opened or created relative to it.
#[derive(Debug)]
pub struct VirtualDir {
    fd: OwnedFd,
    entries: Vec<(String, u8)>,
    pos: std::sync::Mutex<usize>,
}

impl VirtualDir {
    pub fn new(fd: OwnedFd, entries: Vec<(String, u8)>) -> Self {
        VirtualDir {
            fd,
            entries,
            pos: std::sync::Mutex::new(0),
        }
    }

    pub fn entries(&self) -> &[(String, u8)] {
        &self.entries
    }

    /// The listing cursor (index of the next entry getdents64 returns).
    pub fn pos(&self) -> std::sync::MutexGuard<'_, usize> {
        self.pos.lock().unwrap()
    }
}

/// An open file description: what the file is and the guest path it was opened by.
#[derive(Debug)]
pub struct OpenFile {
    kind: FileKind,
    /// Guest path the description was opened with (for *at calls relative to it).
    path: Option<String>,
}

impl OpenFile {
    pub fn new(kind: FileKind, path: Option<String>) -> Arc<Self> {
        Arc::new(OpenFile { kind, path })
    }

    pub fn kind(&self) -> &FileKind {
        &self.kind
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The host fd behind a host-backed description (every kind implemented today).
    pub fn raw(&self) -> i32 {
        match &self.kind {
            FileKind::Stdio(n) => *n,
            FileKind::Host(f)
            | FileKind::Pipe(f)
            | FileKind::Virtual(f)
            | FileKind::Epoll(f)
            | FileKind::EventFd(f)
            | FileKind::TimerFd(f) => f.as_raw_fd(),
            FileKind::VirtualDir(d) => d.fd.as_raw_fd(),
            FileKind::SignalFd(s) => s.host.as_raw_fd(),
            FileKind::Socket(n) => match *n {},
        }
    }
}

/// Shared reference to an open file description.
pub type FileRef = Arc<OpenFile>;

/// One descriptor: per-fd flags and the description it refers to.
#[derive(Clone, Debug)]
pub struct FdEntry {
    pub file: FileRef,
    pub cloexec: bool,
}

/// The guest's descriptor table.
#[derive(Debug)]
pub struct FdTable {
    map: BTreeMap<i32, FdEntry>,
    limit: i32,
}

impl FdTable {
    /// fds 0, 1, 2 are the VMM's own standard streams.
    pub fn with_stdio() -> Self {
        let mut map = BTreeMap::new();
        for n in 0..3 {
            map.insert(
                n,
                FdEntry {
                    file: OpenFile::new(FileKind::Stdio(n), None),
                    cloexec: false,
                },
            );
        }
        FdTable { map, limit: 1024 }
    }

    /// Standard streams, each either the VMM's own or a file.
    pub fn with_stdio_files(
        stdin: Option<&Path>,
        stdout: Option<&Path>,
        stderr: Option<&Path>,
    ) -> Result<Self, (&'static str, String, std::io::Error)> {
        let mut t = Self::with_stdio();
        let specs = [
            (0, "stdin", stdin, false),
            (1, "stdout", stdout, true),
            (2, "stderr", stderr, true),
        ];
        for (n, what, path, write) in specs {
            if let Some(p) = path {
                let f = if write {
                    std::fs::File::create(p)
                } else {
                    std::fs::File::open(p)
                }
                .map_err(|e| (what, p.display().to_string(), e))?;
                t.map.insert(
                    n,
                    FdEntry {
                        file: OpenFile::new(FileKind::Host(f.into()), None),
                        cloexec: false,
                    },
                );
            }
        }
        Ok(t)
    }

    /// The description guest fd `fd` refers to; EBADF if none.
    pub fn get(&self, fd: i32) -> Result<FileRef, Errno> {
        self.entry(fd).map(|e| e.file.clone())
    }

    pub fn entry(&self, fd: i32) -> Result<&FdEntry, Errno> {
        self.map.get(&fd).ok_or(Errno(libc::EBADF))
    }

    /// The open descriptor numbers, in order (what /proc/self/fd lists).
    pub fn numbers(&self) -> Vec<i32> {
        self.map.keys().copied().collect()
    }

    /// One past the highest fd number the table may hold (RLIMIT_NOFILE).
    pub fn limit(&self) -> i32 {
        self.limit
    }

    fn lowest_free(&self, min: i32) -> Result<i32, Errno> {
        let mut n = min.max(0);
        for (&k, _) in self.map.range(n..) {
            if k != n {
                break;
            }
            n += 1;
        }
        if n >= self.limit {
            return err(libc::EMFILE);
        }
        Ok(n)
    }

    /// Install `e` at the lowest free number >= `min`.
    pub fn insert(&mut self, min: i32, e: FdEntry) -> Result<i32, Errno> {
        let n = self.lowest_free(min)?;
        self.map.insert(n, e);
        Ok(n)
    }

    /// Install a new description at the lowest free number.
    pub fn add(&mut self, file: FileRef, cloexec: bool) -> Result<i32, Errno> {
        self.insert(0, FdEntry { file, cloexec })
    }

    /// Install `e` at exactly `fd`, closing what was there (dup2/dup3).
    pub fn install_at(&mut self, fd: i32, e: FdEntry) -> Result<(), Errno> {
        if fd < 0 || fd >= self.limit {
            return err(libc::EBADF);
        }
        self.map.insert(fd, e);
        Ok(())
    }

    /// Close `fd`: drops this reference to its description.
    pub fn close(&mut self, fd: i32) -> Result<(), Errno> {
        self.map.remove(&fd).map(|_| ()).ok_or(Errno(libc::EBADF))
    }

    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), Errno> {
        let e = self.map.get_mut(&fd).ok_or(Errno(libc::EBADF))?;
        e.cloexec = on;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_numbers_are_not_host_fds() {
        let t = FdTable::with_stdio();
        // A host fd the VMM holds (think: the KVM VM fd) is not reachable by its number.
        let host = std::fs::File::open("/dev/null").unwrap();
        let n = host.as_raw_fd();
        assert!(n > 2);
        assert_eq!(t.get(n).unwrap_err(), Errno(libc::EBADF));
        assert_eq!(t.get(-1).unwrap_err(), Errno(libc::EBADF));
    }

    #[test]
    fn dup_shares_the_description_but_not_cloexec() {
        let mut t = FdTable::with_stdio();
        let f = OpenFile::new(
            FileKind::Host(std::fs::File::open("/dev/null").unwrap().into()),
            None,
        );
        let a = t.add(f, true).unwrap();
        assert_eq!(a, 3);
        let mut e = t.entry(a).unwrap().clone();
        e.cloexec = false;
        let b = t.insert(0, e).unwrap();
        assert_eq!(b, 4);
        assert!(Arc::ptr_eq(&t.get(a).unwrap(), &t.get(b).unwrap()));
        assert!(t.entry(a).unwrap().cloexec && !t.entry(b).unwrap().cloexec);
        t.close(a).unwrap();
        assert!(
            t.get(b).is_ok(),
            "closing one fd keeps the description alive"
        );
        assert_eq!(t.close(a), Err(Errno(libc::EBADF)));
        assert_eq!(
            t.install_at(1 << 20, t.entry(b).unwrap().clone()),
            Err(Errno(libc::EBADF))
        );
    }
}
