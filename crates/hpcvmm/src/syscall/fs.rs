//! Files. The guest sees one host directory as its filesystem root. Every path is resolved by
//! the kernel with `openat2(RESOLVE_IN_ROOT)` from that root, so `..`, absolute paths and
//! symlinks (absolute or relative) can never lead outside it. Calls that act on a name itself
//! (unlink, mkdir, rename, readlink, lstat) resolve the parent directory that way and then act
//! on one final component with the `*at` call. stdin, stdout and stderr are the VMM's own.
//!
//! Guest file descriptors are the VMM's own numbers mapping to host fds (opened O_CLOEXEC);
//! dup'ed descriptors share one host fd, hence one file offset, as on Linux.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{err, Ctx, Errno, SysResult};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
/// How often a path lookup is retried when openat2 reports a racing rename (EAGAIN).
const OPENAT2_RETRIES: u32 = 128;
/// Most bytes one read/write moves (Linux's MAX_RW_COUNT).
const MAX_RW: u64 = 0x7fff_f000;

/// A host file descriptor backing guest descriptors.
#[derive(Debug)]
pub enum HostFd {
    /// One of the VMM's standard streams (never closed by the guest).
    Stdio(i32),
    Owned(OwnedFd),
}

/// Shared handle to a host fd.
#[derive(Clone, Debug)]
pub struct FileRef(Arc<HostFd>);

impl FileRef {
    pub fn raw(&self) -> i32 {
        match &*self.0 {
            HostFd::Stdio(n) => *n,
            HostFd::Owned(f) => f.as_raw_fd(),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    file: FileRef,
    cloexec: bool,
    /// Guest path the descriptor was opened with (for *at calls relative to it).
    path: Option<String>,
}

/// The guest's descriptor table.
#[derive(Debug)]
pub struct FdTable {
    map: BTreeMap<i32, Entry>,
    limit: i32,
}

impl FdTable {
    pub fn with_stdio() -> Self {
        let mut map = BTreeMap::new();
        for n in 0..3 {
            map.insert(
                n,
                Entry {
                    file: FileRef(Arc::new(HostFd::Stdio(n))),
                    cloexec: false,
                    path: None,
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
                    Entry {
                        file: FileRef(Arc::new(HostFd::Owned(f.into()))),
                        cloexec: false,
                        path: None,
                    },
                );
            }
        }
        Ok(t)
    }

    pub fn host_fd(&self, fd: i32) -> Result<FileRef, Errno> {
        self.map
            .get(&fd)
            .map(|e| e.file.clone())
            .ok_or(Errno(libc::EBADF))
    }

    fn entry(&self, fd: i32) -> Result<&Entry, Errno> {
        self.map.get(&fd).ok_or(Errno(libc::EBADF))
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

    fn insert(&mut self, min: i32, e: Entry) -> Result<i32, Errno> {
        let n = self.lowest_free(min)?;
        self.map.insert(n, e);
        Ok(n)
    }

    fn add(&mut self, fd: OwnedFd, cloexec: bool, path: Option<String>) -> Result<i32, Errno> {
        self.insert(
            0,
            Entry {
                file: FileRef(Arc::new(HostFd::Owned(fd))),
                cloexec,
                path,
            },
        )
    }
}

/// The guest's filesystem view: a root directory and the working directory inside it.
///
/// The working directory is held open (like a kernel's cwd reference): if it is renamed
/// later, relative paths keep resolving in it. Its guest path is read back from the kernel
/// (`/proc/self/fd`) when needed; the string is the fallback if that fails.
#[derive(Debug)]
pub struct FsRoot {
    root: OwnedFd,
    root_host: PathBuf,
    cwd: Mutex<String>,
    cwd_fd: Mutex<Option<OwnedFd>>,
}

fn cstring(b: &[u8]) -> Result<CString, Errno> {
    CString::new(b).map_err(|_| Errno(libc::EINVAL))
}

fn last_err<T>() -> Result<T, Errno> {
    Err(std::io::Error::last_os_error().into())
}

fn check(r: libc::c_long) -> SysResult {
    if r < 0 {
        last_err()
    } else {
        Ok(r as u64)
    }
}

impl FsRoot {
    /// Open `root` as the guest's `/`, with the guest working directory `cwd`.
    pub fn open(root: &Path, cwd: &str) -> std::io::Result<Self> {
        let root_host = std::fs::canonicalize(root)?;
        if !root_host.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let c = CString::new(root_host.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        // SAFETY: opens a path we own as a string; returns a new fd or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just opened and is owned by nobody else.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        let fs = FsRoot {
            root,
            root_host,
            cwd: Mutex::new("/".into()),
            cwd_fd: Mutex::new(None),
        };
        let dir = fs
            .open_in_root(cwd.as_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
        *fs.cwd.lock().unwrap() = fs.guest_path_of(&dir).unwrap_or_else(|| "/".into());
        *fs.cwd_fd.lock().unwrap() = Some(dir);
        Ok(fs)
    }

    /// Resolve `path` (absolute, or relative to the cwd) strictly inside the root.
    fn open_in_root(&self, path: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let full = self.full_path(None, path);
        self.open_full(&full, flags, mode)
    }

    fn full_path(&self, base: Option<&str>, path: &[u8]) -> String {
        let p = String::from_utf8_lossy(path);
        if p.starts_with('/') {
            return p.into_owned();
        }
        let base = base.map(str::to_string).unwrap_or_else(|| self.cwd());
        format!("{}/{}", base.trim_end_matches('/'), p)
    }

    fn open_full(&self, full: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let c = cstring(full.as_bytes())?;
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        let how: [u64; 3] = [
            (flags | libc::O_CLOEXEC) as u64,
            if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
                u64::from(mode & 0o7777)
            } else {
                0
            },
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        ];
        // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename anywhere on the host
        // raced with resolving a ".." component (it cannot prove the walk stayed inside): the
        // documented answer is to retry. Seen in practice while other processes rename files.
        let mut tries = 0;
        loop {
            // SAFETY: openat2 reads the path and the open_how struct of the size we pass; it
            // returns a new fd or -1.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    how.as_ptr(),
                    std::mem::size_of_val(&how),
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd from the kernel, owned by us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let e = std::io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EAGAIN) || tries >= OPENAT2_RETRIES {
                return Err(e.into());
            }
        }
    }

    /// Guest path of an fd opened inside the root (from the kernel's view of it).
    fn guest_path_of(&self, fd: &OwnedFd) -> Option<String> {
        self.guest_path_of_raw(fd.as_raw_fd())
    }

    /// Guest path of a host fd, as the kernel names it now (after any renames). None if it is
    /// not a live file below the root.
    fn guest_path_of_raw(&self, fd: i32) -> Option<String> {
        let host = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        if host.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
            return None;
        }
        let rel = host.strip_prefix(&self.root_host).ok()?;
        Some(format!("/{}", rel.display()).replace("//", "/"))
    }

    /// The working directory's guest path, following renames of the directory.
    pub fn cwd(&self) -> String {
        let now = self
            .cwd_fd
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|fd| self.guest_path_of(fd));
        let mut cwd = self.cwd.lock().unwrap();
        if let Some(p) = now {
            *cwd = p;
        }
        cwd.clone()
    }

    fn set_cwd(&self, path: String, fd: OwnedFd) {
        *self.cwd.lock().unwrap() = path;
        *self.cwd_fd.lock().unwrap() = Some(fd);
    }
}

/// How a path argument is to be interpreted: `dirfd` + `path` as the *at calls take them.
fn full_path(ctx: &Ctx<'_>, dirfd: u64, path: &[u8]) -> Result<String, Errno> {
    let dirfd = dirfd as i32;
    if path.first() == Some(&b'/') || dirfd == libc::AT_FDCWD {
        return Ok(ctx.proc.fsroot.full_path(None, path));
    }
    let (stored, host) = {
        let files = ctx.proc.files.lock().unwrap();
        let e = files.entry(dirfd)?;
        (e.path.clone().ok_or(Errno(libc::ENOTDIR))?, e.file.clone())
    };
    // Where the directory is now: it may have been renamed since it was opened.
    let base = ctx
        .proc
        .fsroot
        .guest_path_of_raw(host.raw())
        .unwrap_or(stored);
    Ok(ctx.proc.fsroot.full_path(Some(&base), path))
}

/// A path's parent directory (opened inside the root) and final component.
struct Name {
    parent: OwnedFd,
    name: CString,
    /// The path ended in '/': the final component must be a directory.
    trailing_slash: bool,
}

impl Name {
    /// With a trailing slash, an existing final component that is not a directory (after
    /// following symlinks, as Linux does for "name/") is ENOTDIR.
    fn check_trailing_slash(&self) -> Result<(), Errno> {
        if !self.trailing_slash {
            return Ok(());
        }
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat reads one C string and writes one stat.
        let r = unsafe { libc::fstatat(self.parent.as_raw_fd(), self.name.as_ptr(), &mut st, 0) };
        if r == 0 && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return err(libc::ENOTDIR);
        }
        Ok(())
    }
}

/// Split a full guest path into its parent (opened inside the root) and final component.
fn parent_and_name(ctx: &Ctx<'_>, full: &str) -> Result<(OwnedFd, CString), Errno> {
    let n = name_of(ctx, full)?;
    n.check_trailing_slash()?;
    Ok((n.parent, n.name))
}

fn name_of(ctx: &Ctx<'_>, full: &str) -> Result<Name, Errno> {
    let trimmed = full.trim_end_matches('/');
    let trailing_slash = trimmed.len() != full.len();
    let (dir, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let dir = if dir.is_empty() { "/" } else { dir };
    if name.is_empty() {
        // The root itself: acting on it by name is refused like Linux refuses "/".
        return err(libc::EBUSY);
    }
    let parent = ctx
        .proc
        .fsroot
        .open_full(dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok(Name {
        parent,
        name: cstring(name.as_bytes())?,
        trailing_slash,
    })
}

fn is_dot(name: &CString) -> bool {
    matches!(name.as_bytes(), b"." | b"..")
}

/// Virtual files the VMM answers itself.
fn virtual_file(ctx: &Ctx<'_>, full: &str) -> Option<Vec<u8>> {
    let n = ctx.proc.cpus.len();
    match full {
        "/sys/devices/system/cpu/online"
        | "/sys/devices/system/cpu/possible"
        | "/sys/devices/system/cpu/present" => Some(if n == 1 {
            b"0\n".to_vec()
        } else {
            format!("0-{}\n", n - 1).into_bytes()
        }),
        _ => None,
    }
}

fn memfd_with(content: &[u8]) -> Result<OwnedFd, Errno> {
    // SAFETY: memfd_create reads a static C string; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"dualstack-virtual".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: fresh fd owned by us.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: writes `content` (a valid slice) to the memfd.
    unsafe { libc::pwrite(f.as_raw_fd(), content.as_ptr().cast(), content.len(), 0) };
    Ok(f)
}

/// `struct flock` as plain data (libc's has no Default).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Flock {
    l_type: i16,
    l_whence: i16,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}

// ---- data transfer ----

pub fn read(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let len = a[2].min(MAX_RW);
    let p = ctx.user_ptr(a[1], len)?;
    // SAFETY: `p..p+len` is checked guest memory; read writes at most len bytes there.
    check(unsafe { libc::read(f.raw(), p.cast(), len as usize) } as libc::c_long)
}

pub fn write(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let len = a[2].min(MAX_RW);
    let p = ctx.user_ptr(a[1], len)?;
    // SAFETY: `p..p+len` is checked guest memory; write only reads it.
    check(unsafe { libc::write(f.raw(), p.cast(), len as usize) } as libc::c_long)
}

pub fn pread64(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let len = a[2].min(MAX_RW);
    let p = ctx.user_ptr(a[1], len)?;
    if (a[3] as i64) < 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: checked guest memory, at most len bytes written.
    check(unsafe { libc::pread(f.raw(), p.cast(), len as usize, a[3] as i64) } as libc::c_long)
}

pub fn pwrite64(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let len = a[2].min(MAX_RW);
    let p = ctx.user_ptr(a[1], len)?;
    if (a[3] as i64) < 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: checked guest memory, only read.
    check(unsafe { libc::pwrite(f.raw(), p.cast(), len as usize, a[3] as i64) } as libc::c_long)
}

fn host_iovecs(ctx: &Ctx<'_>, addr: u64, count: u64) -> Result<Vec<libc::iovec>, Errno> {
    if count > 1024 {
        return err(libc::EINVAL);
    }
    let raw = ctx.read_user_vec(addr, count * 16)?;
    let mut total = 0u64;
    raw.chunks(16)
        .map(|c| {
            let base = u64::from_le_bytes(c[..8].try_into().unwrap());
            let len = u64::from_le_bytes(c[8..].try_into().unwrap());
            if len > MAX_RW {
                return err(libc::EINVAL);
            }
            total += len;
            if total > MAX_RW {
                return err(libc::EINVAL);
            }
            let p = if len == 0 {
                std::ptr::null_mut()
            } else {
                ctx.user_ptr(base, len)?
            };
            Ok(libc::iovec {
                iov_base: p.cast(),
                iov_len: len as usize,
            })
        })
        .collect()
}

pub fn readv(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let iov = host_iovecs(ctx, a[1], a[2])?;
    // SAFETY: every iovec points into checked guest memory.
    check(unsafe { libc::readv(f.raw(), iov.as_ptr(), iov.len() as i32) } as libc::c_long)
}

pub fn writev(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let iov = host_iovecs(ctx, a[1], a[2])?;
    // SAFETY: every iovec points into checked guest memory; writev only reads it.
    check(unsafe { libc::writev(f.raw(), iov.as_ptr(), iov.len() as i32) } as libc::c_long)
}

pub fn lseek(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    // SAFETY: lseek on a host fd we own; invalid whence/offset give EINVAL.
    check(unsafe { libc::lseek(f.raw(), a[1] as i64, a[2] as i32) } as libc::c_long)
}

// ---- open, close, descriptors ----

pub fn openat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    if path.is_empty() {
        return err(libc::ENOENT);
    }
    let flags = a[2] as i32;
    let full = full_path(ctx, a[0], &path)?;
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let fd = match virtual_file(ctx, &full) {
        Some(content) => memfd_with(&content)?,
        None => ctx.proc.fsroot.open_full(
            &full,
            flags & !libc::O_CLOEXEC,
            (a[3] as u32) & !(ctx.proc.umask.load(std::sync::atomic::Ordering::Relaxed) as u32),
        )?,
    };
    let n = ctx
        .proc
        .files
        .lock()
        .unwrap()
        .add(fd, cloexec, Some(full))?;
    Ok(n as u64)
}

pub fn close(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    match ctx.proc.files.lock().unwrap().map.remove(&(a[0] as i32)) {
        Some(_) => Ok(0),
        None => err(libc::EBADF),
    }
}

pub fn dup(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let mut files = ctx.proc.files.lock().unwrap();
    let mut e = files.entry(a[0] as i32)?.clone();
    e.cloexec = false;
    Ok(files.insert(0, e)? as u64)
}

/// dup3; `a[2] == u64::MAX` marks dup2 semantics (same fd is fine, no flags).
pub fn dup3(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let (old, new) = (a[0] as i32, a[1] as i32);
    let dup2 = a[2] == u64::MAX;
    let mut files = ctx.proc.files.lock().unwrap();
    let mut e = files.entry(old)?.clone();
    if old == new {
        return if dup2 {
            Ok(new as u64)
        } else {
            err(libc::EINVAL)
        };
    }
    if !dup2 && a[2] as i32 & !libc::O_CLOEXEC != 0 {
        return err(libc::EINVAL);
    }
    if new < 0 || new >= files.limit {
        return err(libc::EBADF);
    }
    e.cloexec = !dup2 && a[2] as i32 & libc::O_CLOEXEC != 0;
    files.map.insert(new, e);
    Ok(new as u64)
}

pub fn fcntl(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let fd = a[0] as i32;
    let mut files = ctx.proc.files.lock().unwrap();
    let host = files.entry(fd)?.file.raw();
    match a[1] as i32 {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let mut e = files.entry(fd)?.clone();
            e.cloexec = a[1] as i32 == libc::F_DUPFD_CLOEXEC;
            if a[2] as i64 >= i64::from(files.limit) {
                return err(libc::EINVAL);
            }
            Ok(files.insert(a[2] as i32, e)? as u64)
        }
        libc::F_GETFD => Ok(u64::from(files.entry(fd)?.cloexec)),
        libc::F_SETFD => {
            if let Some(e) = files.map.get_mut(&fd) {
                e.cloexec = a[2] & 1 != 0;
            }
            Ok(0)
        }
        libc::F_GETFL => {
            // SAFETY: fcntl F_GETFL on our host fd.
            check(unsafe { libc::fcntl(host, libc::F_GETFL) } as libc::c_long)
        }
        libc::F_SETFL => {
            let allowed = libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;
            // SAFETY: fcntl F_SETFL on our host fd with status flags only.
            check(
                unsafe { libc::fcntl(host, libc::F_SETFL, a[2] as i32 & allowed) } as libc::c_long,
            )
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => {
            drop(files);
            let mut fl: Flock = ctx.get(a[2])?;
            // SAFETY: fcntl lock commands read/write one flock we own.
            let r = unsafe { libc::fcntl(host, a[1] as i32, &mut fl) };
            if r < 0 {
                return last_err();
            }
            ctx.put(a[2], &fl)?;
            Ok(0)
        }
        _ => err(libc::EINVAL),
    }
}

pub fn ioctl(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    ctx.proc.files.lock().unwrap().entry(a[0] as i32)?;
    // Terminal and device ioctls are never passed to the host.
    err(libc::ENOTTY)
}

pub fn pipe2(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let flags = a[1] as i32;
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) != 0 {
        return err(libc::EINVAL);
    }
    ctx.check_user(a[0], 8)?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe {
        libc::pipe2(
            fds.as_mut_ptr(),
            libc::O_CLOEXEC | (flags & (libc::O_NONBLOCK | libc::O_DIRECT)),
        )
    } < 0
    {
        return last_err();
    }
    // SAFETY: both fds are fresh from the kernel and owned by us.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let mut files = ctx.proc.files.lock().unwrap();
    let gr = files.add(r, cloexec, None)?;
    let gw = match files.add(w, cloexec, None) {
        Ok(g) => g,
        Err(e) => {
            files.map.remove(&gr);
            return Err(e);
        }
    };
    drop(files);
    ctx.put(a[0], &[gr, gw])?;
    Ok(0)
}

pub fn ftruncate(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    // SAFETY: ftruncate on our host fd.
    check(unsafe { libc::ftruncate(f.raw(), a[1] as i64) } as libc::c_long)
}

pub fn fsync(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    // SAFETY: fsync on our host fd.
    check(unsafe { libc::fsync(f.raw()) } as libc::c_long)
}

pub fn umask(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    Ok(ctx
        .proc
        .umask
        .swap(a[0] & 0o777, std::sync::atomic::Ordering::Relaxed))
}

// ---- metadata ----

fn fstat_host(fd: i32) -> Result<libc::stat, Errno> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat for our fd.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return last_err();
    }
    Ok(st)
}

pub fn fstat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let st = fstat_host(f.raw())?;
    ctx.put(a[1], &st)?;
    Ok(0)
}

/// Open what a path names for metadata: O_PATH, following a final symlink or not.
fn open_for_stat(ctx: &Ctx<'_>, dirfd: u64, path: &[u8], flags: i32) -> Result<Target, Errno> {
    if path.is_empty() {
        if flags & libc::AT_EMPTY_PATH == 0 {
            return err(libc::ENOENT);
        }
        if dirfd as i32 == libc::AT_FDCWD {
            let cwd = ctx.proc.fsroot.cwd();
            return Ok(Target::Fd(ctx.proc.fsroot.open_full(
                &cwd,
                libc::O_PATH,
                0,
            )?));
        }
        let f = ctx.proc.files.lock().unwrap().host_fd(dirfd as i32)?;
        return Ok(Target::Guest(f));
    }
    let full = full_path(ctx, dirfd, path)?;
    if let Some(content) = virtual_file(ctx, &full) {
        return Ok(Target::Fd(memfd_with(&content)?));
    }
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        // "name/" follows a final symlink even for lstat: only plain names act on the link.
        if let Ok(n) = name_of(ctx, &full) {
            if !is_dot(&n.name) && !n.trailing_slash {
                return Ok(Target::At(n.parent, n.name));
            }
        }
    }
    Ok(Target::Fd(ctx.proc.fsroot.open_full(
        &full,
        libc::O_PATH,
        0,
    )?))
}

enum Target {
    Fd(OwnedFd),
    Guest(FileRef),
    At(OwnedFd, CString),
}

impl Target {
    fn statx(&self, mask: u32, sync_flags: i32, buf: *mut u8) -> SysResult {
        let (fd, name, flags) = match self {
            Target::Fd(f) => (f.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH),
            Target::Guest(f) => (f.raw(), c"".as_ptr(), libc::AT_EMPTY_PATH),
            Target::At(d, n) => (d.as_raw_fd(), n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW),
        };
        // SAFETY: statx writes one struct statx (256 bytes) at `buf`, which the caller checked.
        check(unsafe { libc::syscall(libc::SYS_statx, fd, name, flags | sync_flags, mask, buf) })
    }

    fn stat(&self) -> Result<libc::stat, Errno> {
        let (fd, name, flags) = match self {
            Target::Fd(f) => (f.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH),
            Target::Guest(f) => (f.raw(), c"".as_ptr(), libc::AT_EMPTY_PATH),
            Target::At(d, n) => (d.as_raw_fd(), n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW),
        };
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat writes one stat.
        if unsafe { libc::fstatat(fd, name, &mut st, flags) } < 0 {
            return last_err();
        }
        Ok(st)
    }
}

pub fn newfstatat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    let t = open_for_stat(ctx, a[0], &path, a[3] as i32)?;
    let st = t.stat()?;
    ctx.put(a[2], &st)?;
    Ok(0)
}

pub fn statx(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [dirfd, path, flags, mask, buf, _] = a;
    let path = ctx.path(path)?;
    let p = ctx.user_ptr(buf, 256)?;
    let t = open_for_stat(ctx, dirfd, &path, flags as i32)?;
    let sync = flags as i32 & 0x6000; // AT_STATX_SYNC_TYPE
    t.statx(mask as u32, sync, p)
}

pub fn faccessat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    let flags = a[3] as i32;
    if a[2] & !7 != 0 {
        return err(libc::EINVAL);
    }
    let t = open_for_stat(ctx, a[0], &path, flags)?;
    let (fd, name, f) = match &t {
        Target::Fd(f) => (f.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH),
        Target::Guest(f) => (f.raw(), c"".as_ptr(), libc::AT_EMPTY_PATH),
        Target::At(d, n) => (d.as_raw_fd(), n.as_ptr(), libc::AT_SYMLINK_NOFOLLOW),
    };
    // SAFETY: faccessat2 reads a C string and checks access; no memory is written.
    check(unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd,
            name,
            a[2] as i32,
            f | (flags & libc::AT_EACCESS),
        )
    })
}

pub fn readlinkat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    if (a[3] as i64) <= 0 {
        return err(libc::EINVAL);
    }
    let full = full_path(ctx, a[0], &path)?;
    let target: Vec<u8> = if full == "/proc/self/exe" {
        ctx.proc.exe_path.as_bytes().to_vec()
    } else {
        let (parent, name) = parent_and_name(ctx, &full)?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: readlinkat writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::readlinkat(
                parent.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return last_err();
        }
        buf.truncate(n as usize);
        buf
    };
    let n = target.len().min(a[3] as usize);
    ctx.write_user(a[2], &target[..n])?;
    Ok(n as u64)
}

// ---- names ----

pub fn unlinkat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    let flags = a[2] as i32;
    if flags & !libc::AT_REMOVEDIR != 0 {
        return err(libc::EINVAL);
    }
    let full = full_path(ctx, a[0], &path)?;
    let (parent, name) = parent_and_name(ctx, &full)?;
    if is_dot(&name) {
        return err(if flags & libc::AT_REMOVEDIR != 0 {
            libc::EINVAL
        } else {
            libc::EISDIR
        });
    }
    // SAFETY: unlinkat on one name inside a directory fd we opened within the root.
    check(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) } as libc::c_long)
}

pub fn mkdirat(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[1])?;
    let full = full_path(ctx, a[0], &path)?;
    // "dir/" is fine for mkdir (an existing name of any kind is EEXIST).
    let Name { parent, name, .. } = name_of(ctx, &full)?;
    if is_dot(&name) {
        return err(libc::EEXIST);
    }
    let mode = (a[2] as u32 & 0o7777)
        & !(ctx.proc.umask.load(std::sync::atomic::Ordering::Relaxed) as u32);
    // SAFETY: mkdirat of one name inside a directory fd we opened within the root.
    check(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode) } as libc::c_long)
}

pub fn renameat2(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let old = ctx.path(a[1])?;
    let new = ctx.path(a[3])?;
    let old_full = full_path(ctx, a[0], &old)?;
    let new_full = full_path(ctx, a[2], &new)?;
    let (op, on) = parent_and_name(ctx, &old_full)?;
    let (np, nn) = parent_and_name(ctx, &new_full)?;
    if is_dot(&on) || is_dot(&nn) {
        return err(libc::EBUSY);
    }
    // SAFETY: renameat2 of single names inside directory fds we opened within the root.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            op.as_raw_fd(),
            on.as_ptr(),
            np.as_raw_fd(),
            nn.as_ptr(),
            a[4] as u32,
        )
    })
}

pub fn getdents64(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let f = ctx.proc.files.lock().unwrap().host_fd(a[0] as i32)?;
    let len = a[2].min(MAX_RW);
    let p = ctx.user_ptr(a[1], len)?;
    // SAFETY: getdents64 writes at most len bytes into checked guest memory.
    check(unsafe { libc::syscall(libc::SYS_getdents64, f.raw(), p, len as usize) })
}

pub fn getcwd(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let mut cwd = ctx.proc.fsroot.cwd().into_bytes();
    cwd.push(0);
    if (a[1] as usize) < cwd.len() {
        return err(libc::ERANGE);
    }
    ctx.write_user(a[0], &cwd)?;
    Ok(cwd.len() as u64)
}

fn set_cwd(ctx: &Ctx<'_>, fd: OwnedFd) -> SysResult {
    let st = fstat_host(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return err(libc::ENOTDIR);
    }
    let p = ctx
        .proc
        .fsroot
        .guest_path_of(&fd)
        .ok_or(Errno(libc::ENOENT))?;
    ctx.proc.fsroot.set_cwd(p, fd);
    Ok(0)
}

pub fn chdir(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let path = ctx.path(a[0])?;
    if path.is_empty() {
        return err(libc::ENOENT);
    }
    let fd = ctx
        .proc
        .fsroot
        .open_in_root(&path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    set_cwd(ctx, fd)
}

pub fn fchdir(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let host = {
        let files = ctx.proc.files.lock().unwrap();
        let e = files.entry(a[0] as i32)?;
        e.path.as_ref().ok_or(Errno(libc::ENOTDIR))?;
        e.file.clone()
    };
    // The directory the descriptor refers to now, wherever it was moved: "." of the host fd.
    // SAFETY: openat of "." relative to a host fd we own; returns a new fd or -1.
    let fd = unsafe {
        libc::openat(
            host.raw(),
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: a fresh fd from the kernel, owned by us.
    set_cwd(ctx, unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---- polling ----

fn poll_common(ctx: &mut Ctx<'_>, addr: u64, nfds: u64, timeout_ms: i32) -> SysResult {
    if nfds > 1024 {
        return err(libc::EINVAL);
    }
    let raw = ctx.read_user_vec(addr, nfds * 8)?;
    let mut host: Vec<libc::pollfd> = Vec::with_capacity(nfds as usize);
    let mut invalid = Vec::new();
    {
        let files = ctx.proc.files.lock().unwrap();
        for (i, c) in raw.chunks(8).enumerate() {
            let fd = i32::from_le_bytes(c[..4].try_into().unwrap());
            let events = i16::from_le_bytes(c[4..6].try_into().unwrap());
            let hfd = if fd < 0 {
                -1
            } else {
                match files.host_fd(fd) {
                    Ok(f) => f.raw(),
                    Err(_) => {
                        invalid.push(i);
                        -1
                    }
                }
            };
            host.push(libc::pollfd {
                fd: hfd,
                events,
                revents: 0,
            });
        }
    }
    let timeout = if invalid.is_empty() { timeout_ms } else { 0 };
    // SAFETY: poll reads/writes our own pollfd vector of the given length.
    let r = unsafe { libc::poll(host.as_mut_ptr(), host.len() as u64, timeout) };
    if r < 0 {
        return last_err();
    }
    let mut ready = 0u64;
    for (i, p) in host.iter().enumerate() {
        let rev = if invalid.contains(&i) {
            libc::POLLNVAL
        } else {
            p.revents
        };
        if rev != 0 {
            ready += 1;
        }
        ctx.proc
            .mem
            .write(addr + 8 * i as u64 + 6, &rev.to_le_bytes())?;
    }
    Ok(ready)
}

pub fn poll(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    poll_common(ctx, a[0], a[1], a[2] as i32)
}

pub fn ppoll(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let timeout = if a[2] == 0 {
        -1
    } else {
        let ts: libc::timespec = ctx.get(a[2])?;
        if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
            return err(libc::EINVAL);
        }
        (ts.tv_sec
            .saturating_mul(1000)
            .saturating_add(ts.tv_nsec / 1_000_000))
        .min(i64::from(i32::MAX)) as i32
    };
    poll_common(ctx, a[0], a[1], timeout)
}
