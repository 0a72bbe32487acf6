//! Descriptors and open file descriptions, as Linux has them.
//!
//! A guest fd number indexes the thread group's [`FdTable`], which is the VMM's own table: a
//! guest number never names a host fd directly, so the guest cannot reach the VMM's KVM fds,
//! statistics files or anything else the host process has open. Each entry holds per-fd flags
//! (FD_CLOEXEC) and a shared reference to an [`OpenFile`] (the open file description): `dup`
//! copies the reference, so duplicates share the offset and status flags, which live in the
//! description (for host-backed kinds: in the one host fd behind it).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    /// A host socket (created by the guest, received over SCM_RIGHTS, or inherited from the
    /// launcher); [`crate::syscall::sockets`] passes the socket calls through to it.
    Socket(OwnedFd),
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
            | FileKind::Socket(f)
            | FileKind::Epoll(f)
            | FileKind::EventFd(f)
            | FileKind::TimerFd(f) => f.as_raw_fd(),
            FileKind::VirtualDir(d) => d.fd.as_raw_fd(),
            FileKind::SignalFd(s) => s.host.as_raw_fd(),
        }
    }
}

/// Why a descriptor named as inherited from the launcher cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("inherited descriptor {0} is outside the guest's descriptor range 0..{1}")]
    Range(i32, i32),
    #[error("inherited descriptor {0} is not open in the VMM")]
    NotOpen(i32, #[source] std::io::Error),
}

/// Host descriptors above 2 that a native `exec` would pass on: open and without FD_CLOEXEC,
/// below the guest's descriptor limit (1024; a higher one is left to the VMM and logged).
/// Called by `dualstack run` before it opens anything of its own.
pub fn inheritable_host_fds() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut v: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&n: &i32| {
            // SAFETY: F_GETFD only reads the descriptor flags (-1 if not open: the
            // directory's own fd is closed again by the time we ask).
            n > 2 && unsafe { libc::fcntl(n, libc::F_GETFD) } == 0
        })
        .filter(|&n| {
            let fits = n < 1024;
            if !fits {
                tracing::warn!(
                    "inherited descriptor {n} is above the guest's limit: not passed on"
                );
            }
            fits
        })
        .collect();
    v.sort_unstable();
    v
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

    /// Import descriptors the launcher passed to the VMM (an MPI launcher's `PMI_FD`, a
    /// socket or pipe it set up) at the same guest numbers, as a native exec would inherit
    /// them: sockets become [`FileKind::Socket`], pipes and FIFOs [`FileKind::Pipe`], anything
    /// else [`FileKind::Host`].
    ///
    /// The table gets a duplicate (close-on-exec) of each; the launcher's own descriptor
    /// stays open until this process ends, so the launcher sees it close at the moment the
    /// rank's process ends, as natively, and never earlier: Hydra takes a PMI connection that
    /// closes before the process is gone for a crash and kills the whole job, which would
    /// beat the VMM reporting the guest's real exit status or signal.
    pub fn import_inherited(&mut self, fds: &[i32]) -> Result<(), InheritError> {
        for &n in fds {
            if n < 0 || n >= self.limit {
                return Err(InheritError::Range(n, self.limit));
            }
            // SAFETY: stat is plain data; all zeroes is valid.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes one stat; an fd that is not open gives EBADF.
            if unsafe { libc::fstat(n, &mut st) } != 0 {
                return Err(InheritError::NotOpen(n, std::io::Error::last_os_error()));
            }
            // SAFETY: duplicates an fd fstat just found open; the original is left alone.
            let dup = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                return Err(InheritError::NotOpen(n, std::io::Error::last_os_error()));
            }
            // SAFETY: sets FD_CLOEXEC on the launcher's fd, which this process keeps open
            // (and never uses) until it ends.
            unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: `dup` is a fresh fd owned by nobody else.
            let owned = unsafe { OwnedFd::from_raw_fd(dup) };
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFSOCK => FileKind::Socket(owned),
                libc::S_IFIFO => FileKind::Pipe(owned),
                _ => FileKind::Host(owned),
            };
            self.map.insert(
                n,
                FdEntry {
                    file: OpenFile::new(kind, None),
                    cloexec: false,
                },
            );
        }
        Ok(())
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
    fn inherited_fds_keep_their_numbers_and_kinds() {
        let mut sv = [0i32; 2];
        // SAFETY: socketpair writes two fds into `sv`.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
        assert_eq!(r, 0);
        let mut t = FdTable::with_stdio();
        t.import_inherited(&[sv[0]]).unwrap();
        let f = t.get(sv[0]).unwrap();
        assert!(matches!(f.kind(), FileKind::Socket(_)));
        assert_ne!(f.raw(), sv[0], "a duplicate: the launcher's fd stays open");
        assert!(!t.entry(sv[0]).unwrap().cloexec);
        // SAFETY: F_GETFD reads the flags of the fd the table now owns.
        let flags = unsafe { libc::fcntl(sv[0], libc::F_GETFD) };
        assert_eq!(flags, libc::FD_CLOEXEC);
        assert!(matches!(
            t.import_inherited(&[5000]),
            Err(InheritError::Range(5000, _))
        ));
        // SAFETY: closes both ends we created (the table holds its own duplicate).
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1])
        };
        let closed = sv[1];
        assert!(matches!(
            t.import_inherited(&[closed]),
            Err(InheritError::NotOpen(..))
        ));
        assert!(
            !inheritable_host_fds().contains(&f.raw()),
            "the duplicate is cloexec"
        );
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
