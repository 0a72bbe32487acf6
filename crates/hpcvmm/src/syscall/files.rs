//! Files. The guest sees one host directory as its filesystem root. Every path is resolved by
//! the kernel with `openat2(RESOLVE_IN_ROOT)` from that root, so `..`, absolute paths and
//! symlinks (absolute or relative) can never lead outside it. Calls that act on a name itself
//! (unlink, mkdir, rename, readlink, lstat) resolve the parent directory that way and then act
//! on one final component with the `*at` call. stdin, stdout and stderr are the VMM's own.
//!
//! Guest file descriptors are the VMM's own numbers ([`crate::kernel::files::FdTable`]) for open
//! file descriptions backed by host fds (opened O_CLOEXEC); dup'ed descriptors share one
//! description, hence one file offset, as on Linux. Virtual files come from [`super::procfs`].
//!
//! The legacy path calls (open, stat, unlink, ...) are their `*at` forms relative to
//! AT_FDCWD, exactly as Linux defines them.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{err, procfs, Args, Ctx, Errno, SysResult};
use crate::kernel::files::{FileKind, FileRef, OpenFile, VirtualDir};
use crate::kernel::fsroot::{check, cstring, last_err};
use crate::kernel::run::refusal;

const AT_FDCWD: u64 = libc::AT_FDCWD as u64;
/// Most bytes one read/write moves (Linux's MAX_RW_COUNT).
const MAX_RW: u64 = 0x7fff_f000;

/// How a path argument is to be interpreted: `dirfd` + `path` as the *at calls take them.
pub(super) fn full_path(ctx: &Ctx<'_>, dirfd: i32, path: &[u8]) -> Result<String, Errno> {
    if path.first() == Some(&b'/') || dirfd == libc::AT_FDCWD {
        return Ok(ctx.tg.fs.full_path(None, path));
    }
    let (stored, host) = {
        let files = ctx.tg.files.lock().unwrap();
        let e = files.entry(dirfd)?;
        let stored = e.file.path().ok_or(Errno(libc::ENOTDIR))?.to_string();
        (stored, e.file.clone())
    };
    // Where the directory is now: it may have been renamed since it was opened.
    let base = ctx.tg.fs.guest_path_of_raw(host.raw()).unwrap_or(stored);
    Ok(ctx.tg.fs.full_path(Some(&base), path))
}

/// A path's parent directory (opened inside the root) and final component.
pub(super) struct Name {
    pub(super) parent: OwnedFd,
    pub(super) name: CString,
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

pub(super) fn name_of(ctx: &Ctx<'_>, full: &str) -> Result<Name, Errno> {
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
        .tg
        .fs
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

fn memfd_with(content: &[u8]) -> Result<OwnedFd, Errno> {
    // SAFETY: memfd_create reads a static C string; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"dualstack-virtual".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: fresh fd owned by us.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut done = 0;
    while done < content.len() {
        let rest = &content[done..];
        // SAFETY: writes `rest` (a valid slice) to the memfd we own.
        let n = unsafe {
            libc::pwrite(
                f.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                done as libc::off_t,
            )
        };
        if n <= 0 {
            return if n < 0 { last_err() } else { err(libc::EIO) };
        }
        done += n as usize;
    }
    Ok(f)
}

/// `struct flock` as plain data (libc's has no Default).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Flock {
    l_type: i16,
    l_whence: i16,
    pad: u32,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
    pad2: u32,
}
crate::plain!(Flock => [i16, i16, u32, i64, i64, i32, u32]);

// ---- data transfer ----

pub fn read(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    if let FileKind::SignalFd(s) = f.kind() {
        return super::signals::signalfd_read(ctx, s, a.ptr(1), a.usize(2));
    }
    let len = a.usize(2).min(MAX_RW);
    let p = ctx.user_ptr(a.ptr(1), len)?;
    // SAFETY: `p..p+len` is checked guest memory; read writes at most len bytes there.
    check(unsafe { libc::read(f.raw(), p.cast(), len as usize) } as libc::c_long)
}

pub fn write(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let len = a.usize(2).min(MAX_RW);
    let p = ctx.user_ptr(a.ptr(1), len)?;
    // SAFETY: `p..p+len` is checked guest memory; write only reads it.
    check(unsafe { libc::write(f.raw(), p.cast(), len as usize) } as libc::c_long)
}

pub fn pread64(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let len = a.usize(2).min(MAX_RW);
    let p = ctx.user_ptr(a.ptr(1), len)?;
    if (a.i64(3)) < 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: checked guest memory, at most len bytes written.
    check(unsafe { libc::pread(f.raw(), p.cast(), len as usize, a.i64(3)) } as libc::c_long)
}

pub fn pwrite64(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let len = a.usize(2).min(MAX_RW);
    let p = ctx.user_ptr(a.ptr(1), len)?;
    if (a.i64(3)) < 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: checked guest memory, only read.
    check(unsafe { libc::pwrite(f.raw(), p.cast(), len as usize, a.i64(3)) } as libc::c_long)
}

pub(super) fn host_iovecs(ctx: &Ctx<'_>, addr: u64, count: u64) -> Result<Vec<libc::iovec>, Errno> {
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

pub fn readv(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let iov = host_iovecs(ctx, a.ptr(1), a.usize(2))?;
    // SAFETY: every iovec points into checked guest memory.
    check(unsafe { libc::readv(f.raw(), iov.as_ptr(), iov.len() as i32) } as libc::c_long)
}

pub fn writev(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let iov = host_iovecs(ctx, a.ptr(1), a.usize(2))?;
    // SAFETY: every iovec points into checked guest memory; writev only reads it.
    check(unsafe { libc::writev(f.raw(), iov.as_ptr(), iov.len() as i32) } as libc::c_long)
}

pub fn lseek(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    if let FileKind::VirtualDir(d) = f.kind() {
        // rewinddir/seekdir: offsets are entry indices.
        let off = a.i64(1);
        if a.i32(2) != libc::SEEK_SET || off < 0 {
            return err(libc::EINVAL);
        }
        *d.pos() = (off as usize).min(d.entries().len());
        return Ok(off as u64);
    }
    // SAFETY: lseek on a host fd we own; invalid whence/offset give EINVAL.
    check(unsafe { libc::lseek(f.raw(), a.i64(1), a.i32(2)) } as libc::c_long)
}

// ---- open, close, descriptors ----

fn open_at(ctx: &mut Ctx<'_>, dirfd: i32, path: u64, flags: i32, mode: u32) -> SysResult {
    let path = ctx.path(path)?;
    if path.is_empty() {
        return err(libc::ENOENT);
    }
    let full = full_path(ctx, dirfd, &path)?;
    let cloexec = flags & libc::O_CLOEXEC != 0;
    if let Some(fd) = procfs::open_peer_fd(ctx, &full, flags) {
        let file = OpenFile::new(FileKind::Host(fd?), Some(full));
        let n = ctx.tg.files.lock().unwrap().add(file, cloexec)?;
        return Ok(n as u64);
    }
    let (kind, path) = match procfs::answer(ctx, &full) {
        procfs::Answer::Host => {
            let fd = ctx
                .tg
                .fs
                .open_full(&full, flags & !libc::O_CLOEXEC, mode & !ctx.tg.umask())
                .inspect_err(|e| {
                    if e.0 == libc::EACCES || e.0 == libc::EPERM {
                        ctx.run.refuse(refusal_kind(ctx, &full));
                    }
                })?;
            // A path that reached the VMM's procfs files some other way, or a device.
            match procfs::check_host_fd(ctx, &fd)? {
                None => (FileKind::Host(fd), Some(full)),
                Some(a) => {
                    drop(fd);
                    open_answer(ctx, a, flags, full)?
                }
            }
        }
        a => open_answer(ctx, a, flags, full)?,
    };
    let file = OpenFile::new(kind, path);
    let n = ctx.tg.files.lock().unwrap().add(file, cloexec)?;
    Ok(n as u64)
}

/// The kind of a refused open: a device node (Landlock or its mode kept it out), or the
/// user's rights on a file.
fn refusal_kind(ctx: &Ctx<'_>, full: &str) -> &'static str {
    let Ok(fd) = ctx.tg.fs.open_full(full, libc::O_PATH, 0) else {
        return refusal::PERMISSION;
    };
    match fstat_host(fd.as_raw_fd()) {
        Ok(st) if matches!(st.st_mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) => {
            refusal::DEVICE
        }
        _ => refusal::PERMISSION,
    }
}

/// Open what the guest's own /proc answers for `full`.
fn open_answer(
    ctx: &Ctx<'_>,
    a: procfs::Answer,
    flags: i32,
    full: String,
) -> Result<(FileKind, Option<String>), Errno> {
    match a {
        procfs::Answer::Host => unreachable!("host paths are opened by the caller"),
        procfs::Answer::File(content) => {
            if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_CREAT != 0 {
                ctx.run.refuse(refusal::VMM_PROC);
                return err(libc::EACCES);
            }
            if flags & libc::O_DIRECTORY != 0 {
                return err(libc::ENOTDIR);
            }
            Ok((FileKind::Virtual(memfd_with(&content)?), Some(full)))
        }
        procfs::Answer::Exe => Ok((
            FileKind::Host(procfs::open_exe(ctx, flags)?),
            Some(ctx.tg.exe_path.clone()),
        )),
        procfs::Answer::Fd(n) => {
            let (fd, path) = procfs::reopen_fd(ctx, n, flags)?;
            Ok((FileKind::Host(fd), path))
        }
        procfs::Answer::Dir(entries) => {
            if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_CREAT != 0 {
                return err(libc::EISDIR);
            }
            let dir = VirtualDir::new(procfs::empty_dir()?, entries);
            Ok((FileKind::VirtualDir(dir), Some(full)))
        }
        procfs::Answer::Refused(e) => Err(e),
    }
}

pub fn openat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    open_at(ctx, a.fd(0), a.ptr(1), a.flags(2), a.u32(3))
}

pub fn open(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    open_at(ctx, libc::AT_FDCWD, a.ptr(0), a.flags(1), a.u32(2))
}

pub fn creat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    open_at(ctx, libc::AT_FDCWD, a.ptr(0), flags, a.u32(1))
}

pub fn close(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    ctx.tg.files.lock().unwrap().close(a.fd(0))?;
    Ok(0)
}

pub fn dup(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let mut files = ctx.tg.files.lock().unwrap();
    let mut e = files.entry(a.fd(0))?.clone();
    e.cloexec = false;
    Ok(files.insert(0, e)? as u64)
}

pub fn dup2(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (old, new) = (a.fd(0), a.fd(1));
    let mut files = ctx.tg.files.lock().unwrap();
    let mut e = files.entry(old)?.clone();
    if old == new {
        return Ok(new as u64);
    }
    e.cloexec = false;
    files.install_at(new, e)?;
    Ok(new as u64)
}

pub fn dup3(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (old, new, flags) = (a.fd(0), a.fd(1), a.flags::<i32>(2));
    let mut files = ctx.tg.files.lock().unwrap();
    let mut e = files.entry(old)?.clone();
    if old == new || flags & !libc::O_CLOEXEC != 0 {
        return err(libc::EINVAL);
    }
    e.cloexec = flags & libc::O_CLOEXEC != 0;
    files.install_at(new, e)?;
    Ok(new as u64)
}

pub fn fcntl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let fd = a.fd(0);
    let mut files = ctx.tg.files.lock().unwrap();
    let host = files.entry(fd)?.file.raw();
    match a.i32(1) {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let mut e = files.entry(fd)?.clone();
            e.cloexec = a.i32(1) == libc::F_DUPFD_CLOEXEC;
            if a.i64(2) >= i64::from(files.limit()) {
                return err(libc::EINVAL);
            }
            Ok(files.insert(a.i32(2), e)? as u64)
        }
        libc::F_GETFD => Ok(u64::from(files.entry(fd)?.cloexec)),
        libc::F_SETFD => {
            files.set_cloexec(fd, a.u64(2) & 1 != 0)?;
            Ok(0)
        }
        libc::F_GETFL => {
            // SAFETY: fcntl F_GETFL on our host fd.
            check(unsafe { libc::fcntl(host, libc::F_GETFL) } as libc::c_long)
        }
        libc::F_SETFL => {
            let allowed = libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;
            // SAFETY: fcntl F_SETFL on our host fd with status flags only.
            check(unsafe { libc::fcntl(host, libc::F_SETFL, a.i32(2) & allowed) } as libc::c_long)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => {
            drop(files);
            let mut fl: Flock = ctx.get(a.ptr(2))?;
            // SAFETY: fcntl lock commands read/write one flock we own.
            let r = unsafe { libc::fcntl(host, a.i32(1), &mut fl) };
            if r < 0 {
                return last_err();
            }
            ctx.put(a.ptr(2), &fl)?;
            Ok(0)
        }
        _ => err(libc::EINVAL),
    }
}

pub fn ioctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.tg.files.lock().unwrap().get(a.fd(0))?;
    if let FileKind::Socket(_) = f.kind() {
        return super::sockets::ioctl(ctx, &f, a);
    }
    // Terminal and device ioctls are never passed to the host.
    err(libc::ENOTTY)
}

pub fn pipe(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    pipe_with(ctx, a.ptr(0), 0)
}

pub fn pipe2(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    pipe_with(ctx, a.ptr(0), a.flags(1))
}

fn pipe_with(ctx: &mut Ctx<'_>, fds_addr: u64, flags: i32) -> SysResult {
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) != 0 {
        return err(libc::EINVAL);
    }
    ctx.check_user(fds_addr, 8)?;
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
    let mut files = ctx.tg.files.lock().unwrap();
    let gr = files.add(OpenFile::new(FileKind::Pipe(r), None), cloexec)?;
    let gw = match files.add(OpenFile::new(FileKind::Pipe(w), None), cloexec) {
        Ok(g) => g,
        Err(e) => {
            let _ = files.close(gr);
            return Err(e);
        }
    };
    drop(files);
    ctx.put(fds_addr, &[gr, gw])?;
    Ok(0)
}

pub fn ftruncate(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: ftruncate on our host fd.
    check(unsafe { libc::ftruncate(f.raw(), a.i64(1)) } as libc::c_long)
}

pub fn fsync(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: fsync on our host fd.
    check(unsafe { libc::fsync(f.raw()) } as libc::c_long)
}

pub fn umask(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    Ok(u64::from(ctx.tg.set_umask(a.u32(0))))
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

pub fn fstat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let st = fstat_host(f.raw())?;
    ctx.put(a.ptr(1), &st)?;
    Ok(0)
}

/// Open what a path names for metadata: O_PATH, following a final symlink or not.
fn open_for_stat(ctx: &Ctx<'_>, dirfd: i32, path: &[u8], flags: i32) -> Result<Target, Errno> {
    if path.is_empty() {
        if flags & libc::AT_EMPTY_PATH == 0 {
            return err(libc::ENOENT);
        }
        if dirfd == libc::AT_FDCWD {
            let cwd = ctx.tg.fs.cwd();
            return Ok(Target::Fd(ctx.tg.fs.open_full(&cwd, libc::O_PATH, 0)?));
        }
        let f = ctx.file(dirfd)?;
        return Ok(Target::Guest(f));
    }
    let full = full_path(ctx, dirfd, path)?;
    match procfs::answer(ctx, &full) {
        procfs::Answer::Host => {}
        procfs::Answer::File(content) => return Ok(Target::Fd(memfd_with(&content)?)),
        procfs::Answer::Exe => return Ok(Target::Fd(procfs::open_exe(ctx, libc::O_RDONLY)?)),
        procfs::Answer::Fd(n) => return Ok(Target::Guest(ctx.file(n)?)),
        procfs::Answer::Dir(_) => return Ok(Target::Fd(procfs::empty_dir()?)),
        procfs::Answer::Refused(e) => return Err(e),
    }
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        // "name/" follows a final symlink even for lstat: only plain names act on the link.
        if let Ok(n) = name_of(ctx, &full) {
            if !is_dot(&n.name) && !n.trailing_slash {
                return Ok(Target::At(n.parent, n.name));
            }
        }
    }
    Ok(Target::Fd(ctx.tg.fs.open_full(&full, libc::O_PATH, 0)?))
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

pub fn newfstatat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(1))?;
    let t = open_for_stat(ctx, a.fd(0), &path, a.i32(3))?;
    let st = t.stat()?;
    ctx.put(a.ptr(2), &st)?;
    Ok(0)
}

pub fn statx(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (dirfd, path, flags, mask, buf) = (a.fd(0), a.ptr(1), a.i32(2), a.u32(3), a.ptr(4));
    let path = ctx.path(path)?;
    let p = ctx.user_ptr(buf, 256)?;
    let t = open_for_stat(ctx, dirfd, &path, flags)?;
    let sync = flags & 0x6000; // AT_STATX_SYNC_TYPE
    t.statx(mask, sync, p)
}

pub fn faccessat2(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(1))?;
    let flags = a.i32(3);
    if a.u64(2) & !7 != 0 {
        return err(libc::EINVAL);
    }
    let t = open_for_stat(ctx, a.fd(0), &path, flags)?;
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
            a.i32(2),
            f | (flags & libc::AT_EACCESS),
        )
    })
}

pub fn readlinkat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(1))?;
    if (a.i64(3)) <= 0 {
        return err(libc::EINVAL);
    }
    let full = full_path(ctx, a.fd(0), &path)?;
    let target: Vec<u8> = if let Some(t) = procfs::readlink(ctx, &full) {
        t?
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
    let n = target.len().min(a.usize(3) as usize);
    ctx.write_user(a.ptr(2), &target[..n])?;
    Ok(n as u64)
}

// ---- names ----

pub fn unlinkat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(1))?;
    let flags = a.i32(2);
    if flags & !libc::AT_REMOVEDIR != 0 {
        return err(libc::EINVAL);
    }
    let full = full_path(ctx, a.fd(0), &path)?;
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

pub fn mkdirat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(1))?;
    let full = full_path(ctx, a.fd(0), &path)?;
    // "dir/" is fine for mkdir (an existing name of any kind is EEXIST).
    let Name { parent, name, .. } = name_of(ctx, &full)?;
    if is_dot(&name) {
        return err(libc::EEXIST);
    }
    let mode = (a.u32(2) & 0o7777) & !(ctx.tg.umask());
    // SAFETY: mkdirat of one name inside a directory fd we opened within the root.
    check(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode) } as libc::c_long)
}

pub fn renameat2(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let old = ctx.path(a.ptr(1))?;
    let new = ctx.path(a.ptr(3))?;
    let old_full = full_path(ctx, a.fd(0), &old)?;
    let new_full = full_path(ctx, a.fd(2), &new)?;
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
            a.u32(4),
        )
    })
}

/// getdents64 of a generated directory: `struct linux_dirent64` records (ino, next offset,
/// record length, type, NUL-terminated name, padded to 8 bytes) from the cursor on.
fn virtual_getdents(ctx: &Ctx<'_>, d: &VirtualDir, addr: u64, len: u64) -> SysResult {
    let mut out = Vec::new();
    let mut pos = d.pos();
    while let Some((name, kind)) = d.entries().get(*pos) {
        let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
        if (out.len() + reclen) as u64 > len {
            if out.is_empty() {
                return err(libc::EINVAL);
            }
            break;
        }
        let start = out.len();
        out.extend_from_slice(&(*pos as u64 + 1).to_le_bytes());
        out.extend_from_slice(&(*pos as i64 + 1).to_le_bytes());
        out.extend_from_slice(&(reclen as u16).to_le_bytes());
        out.push(*kind);
        out.extend_from_slice(name.as_bytes());
        out.resize(start + reclen, 0);
        *pos += 1;
    }
    ctx.write_user(addr, &out)?;
    Ok(out.len() as u64)
}

pub fn getdents64(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    if let FileKind::VirtualDir(d) = f.kind() {
        return virtual_getdents(ctx, d, a.ptr(1), a.usize(2));
    }
    let len = a.usize(2).min(MAX_RW);
    let p = ctx.user_ptr(a.ptr(1), len)?;
    // SAFETY: getdents64 writes at most len bytes into checked guest memory.
    check(unsafe { libc::syscall(libc::SYS_getdents64, f.raw(), p, len as usize) })
}

pub fn getcwd(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let mut cwd = ctx.tg.fs.cwd().into_bytes();
    cwd.push(0);
    if (a.usize(1) as usize) < cwd.len() {
        return err(libc::ERANGE);
    }
    ctx.write_user(a.ptr(0), &cwd)?;
    Ok(cwd.len() as u64)
}

fn set_cwd(ctx: &Ctx<'_>, fd: OwnedFd) -> SysResult {
    let st = fstat_host(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return err(libc::ENOTDIR);
    }
    let p = ctx.tg.fs.guest_path_of(&fd).ok_or(Errno(libc::ENOENT))?;
    ctx.tg.fs.set_cwd(p, fd);
    Ok(0)
}

pub fn chdir(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(0))?;
    if path.is_empty() {
        return err(libc::ENOENT);
    }
    let fd = ctx
        .tg
        .fs
        .open_in_root(&path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    set_cwd(ctx, fd)
}

pub fn fchdir(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let host = {
        let files = ctx.tg.files.lock().unwrap();
        let e = files.entry(a.fd(0))?;
        e.file.path().ok_or(Errno(libc::ENOTDIR))?;
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
        let files = ctx.tg.files.lock().unwrap();
        for (i, c) in raw.chunks(8).enumerate() {
            let fd = i32::from_le_bytes(c[..4].try_into().unwrap());
            let events = i16::from_le_bytes(c[4..6].try_into().unwrap());
            let hfd = if fd < 0 {
                -1
            } else {
                match files.get(fd) {
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
    // Signalfds: readable when a signal of their mask is pending (checked every 10 ms).
    let sigfds: Vec<(usize, u64)> = {
        let files = ctx.tg.files.lock().unwrap();
        raw.chunks(8)
            .enumerate()
            .filter_map(|(i, c)| {
                let fd = i32::from_le_bytes(c[..4].try_into().unwrap());
                match files.get(fd).ok()?.kind() {
                    FileKind::SignalFd(s) => {
                        Some((i, s.mask.load(std::sync::atomic::Ordering::Relaxed)))
                    }
                    _ => None,
                }
            })
            .collect()
    };
    for (i, _) in &sigfds {
        host[*i].fd = -1;
    }
    let sig_ready = |ctx: &Ctx<'_>| -> Vec<usize> {
        let pending = ctx.tg.signals.pending_for(&ctx.task.sig);
        sigfds
            .iter()
            .filter(|(_, m)| pending & m != 0)
            .map(|(i, _)| *i)
            .collect()
    };
    let timeout = if invalid.is_empty() { timeout_ms } else { 0 };
    let deadline = (timeout > 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout as u64));
    let mut sready;
    loop {
        sready = sig_ready(ctx);
        let slice = if sigfds.is_empty() {
            timeout
        } else if !sready.is_empty() || timeout == 0 {
            0
        } else {
            deadline.map_or(10, |d| {
                (d.saturating_duration_since(std::time::Instant::now())
                    .as_millis() as i32)
                    .min(10)
            })
        };
        // SAFETY: poll reads/writes our own pollfd vector of the given length.
        let r = unsafe { libc::poll(host.as_mut_ptr(), host.len() as u64, slice) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                // Linux's poll answers EINTR whatever SA_RESTART says.
                return err(crate::kernel::signals::ERESTARTNOHAND);
            }
            return Err(e.into());
        }
        let expired = deadline.is_some_and(|d| std::time::Instant::now() >= d);
        if r > 0 || sigfds.is_empty() || !sready.is_empty() || timeout == 0 || expired {
            if !sigfds.is_empty() {
                sready = sig_ready(ctx);
            }
            break;
        }
        if ctx.run.ending() || ctx.tg.signals.deliverable(&ctx.task.sig) {
            return err(crate::kernel::signals::ERESTARTNOHAND);
        }
    }
    let mut ready = 0u64;
    for (i, p) in host.iter().enumerate() {
        let rev = if invalid.contains(&i) {
            libc::POLLNVAL
        } else if sready.contains(&i) {
            libc::POLLIN
        } else if sigfds.iter().any(|(j, _)| *j == i) {
            0
        } else {
            p.revents
        };
        if rev != 0 {
            ready += 1;
        }
        ctx.mem.write(addr + 8 * i as u64 + 6, &rev.to_le_bytes())?;
    }
    Ok(ready)
}

pub fn poll(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    poll_common(ctx, a.ptr(0), a.usize(1), a.i32(2))
}

pub fn ppoll(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let timeout = if a.ptr(2) == 0 {
        -1
    } else {
        let ts: libc::timespec = ctx.get(a.ptr(2))?;
        if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
            return err(libc::EINVAL);
        }
        (ts.tv_sec
            .saturating_mul(1000)
            .saturating_add(ts.tv_nsec / 1_000_000))
        .min(i64::from(i32::MAX)) as i32
    };
    poll_common(ctx, a.ptr(0), a.usize(1), timeout)
}

// ---- legacy path calls: the *at form relative to AT_FDCWD, as Linux defines them ----

pub fn stat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    newfstatat(ctx, &Args::new([AT_FDCWD, a.ptr(0), a.ptr(1), 0, 0, 0]))
}

pub fn lstat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
    newfstatat(
        ctx,
        &Args::new([AT_FDCWD, a.ptr(0), a.ptr(1), nofollow, 0, 0]),
    )
}

pub fn unlink(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    unlinkat(ctx, &Args::new([AT_FDCWD, a.ptr(0), 0, 0, 0, 0]))
}

pub fn rmdir(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let removedir = libc::AT_REMOVEDIR as u64;
    unlinkat(ctx, &Args::new([AT_FDCWD, a.ptr(0), removedir, 0, 0, 0]))
}

pub fn mkdir(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    mkdirat(ctx, &Args::new([AT_FDCWD, a.ptr(0), a.u64(1), 0, 0, 0]))
}

pub fn rename(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    renameat2(
        ctx,
        &Args::new([AT_FDCWD, a.ptr(0), AT_FDCWD, a.ptr(1), 0, 0]),
    )
}

pub fn renameat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    renameat2(
        ctx,
        &Args::new([a.u64(0), a.ptr(1), a.u64(2), a.ptr(3), 0, 0]),
    )
}

pub fn readlink(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    readlinkat(
        ctx,
        &Args::new([AT_FDCWD, a.ptr(0), a.ptr(1), a.u64(2), 0, 0]),
    )
}

pub fn access(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    faccessat2(ctx, &Args::new([AT_FDCWD, a.ptr(0), a.u64(1), 0, 0, 0]))
}

/// faccessat has no flags argument (faccessat2 added it).
pub fn faccessat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    faccessat2(ctx, &Args::new([a.u64(0), a.ptr(1), a.u64(2), 0, 0, 0]))
}

// ---- file systems, metadata, links, locks, copies (issue 11) ----

/// A host fd for what `dirfd` + `path` name, following a final symlink inside the root (or the
/// descriptor itself for an empty path with AT_EMPTY_PATH), as an O_PATH fd or the guest's
/// own description.
fn target_following(ctx: &Ctx<'_>, dirfd: i32, path: &[u8], flags: i32) -> Result<Target, Errno> {
    open_for_stat(ctx, dirfd, path, flags & !libc::AT_SYMLINK_NOFOLLOW)
}

impl Target {
    fn raw(&self) -> i32 {
        match self {
            Target::Fd(f) => f.as_raw_fd(),
            Target::Guest(f) => f.raw(),
            Target::At(d, _) => d.as_raw_fd(),
        }
    }
}

/// The kernel's magic link for a host fd: acting through it acts on the object the fd names,
/// never on a path outside the root.
fn proc_fd_path(fd: i32) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

pub fn statfs(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(0))?;
    let t = target_following(ctx, libc::AT_FDCWD, &path, 0)?;
    let p = ctx.user_ptr(a.ptr(1), std::mem::size_of::<libc::statfs>() as u64)?;
    // SAFETY: fstatfs writes one struct statfs into checked guest memory.
    check(unsafe { libc::fstatfs(t.raw(), p.cast()) } as libc::c_long)
}

pub fn fstatfs(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    let p = ctx.user_ptr(a.ptr(1), std::mem::size_of::<libc::statfs>() as u64)?;
    // SAFETY: fstatfs writes one struct statfs into checked guest memory.
    check(unsafe { libc::fstatfs(f.raw(), p.cast()) } as libc::c_long)
}

/// A guest `loff_t *` argument as a host pointer (null stays null).
fn offset_ptr(ctx: &Ctx<'_>, addr: u64) -> Result<*mut i64, Errno> {
    if addr == 0 {
        return Ok(std::ptr::null_mut());
    }
    Ok(ctx.user_ptr(addr, 8)?.cast())
}

pub fn sendfile(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let out = ctx.file(a.fd(0))?;
    let inp = ctx.file(a.fd(1))?;
    let off = offset_ptr(ctx, a.ptr(2))?;
    // SAFETY: sendfile between two host fds we own; the offset, if any, is checked guest memory.
    check(
        unsafe { libc::sendfile(out.raw(), inp.raw(), off, a.usize(3).min(MAX_RW) as usize) }
            as libc::c_long,
    )
}

pub fn copy_file_range(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let inp = ctx.file(a.fd(0))?;
    let out = ctx.file(a.fd(2))?;
    let off_in = offset_ptr(ctx, a.ptr(1))?;
    let off_out = offset_ptr(ctx, a.ptr(3))?;
    // SAFETY: copy_file_range between host fds we own; offsets are checked guest memory.
    check(unsafe {
        libc::syscall(
            libc::SYS_copy_file_range,
            inp.raw(),
            off_in,
            out.raw(),
            off_out,
            a.usize(4).min(MAX_RW) as usize,
            a.u32(5),
        )
    })
}

pub fn fadvise64(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: fadvise64 on a host fd we own; advice only.
    check(unsafe { libc::syscall(libc::SYS_fadvise64, f.raw(), a.i64(1), a.i64(2), a.i32(3)) })
}

pub fn fallocate(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: fallocate on a host fd we own.
    check(unsafe { libc::syscall(libc::SYS_fallocate, f.raw(), a.i32(1), a.i64(2), a.i64(3)) })
}

pub fn flock(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: flock on a host fd we own.
    check(unsafe { libc::flock(f.raw(), a.i32(1)) } as libc::c_long)
}

pub fn utimensat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let flags = a.i32(3);
    if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return err(libc::EINVAL);
    }
    let times = if a.ptr(2) == 0 {
        std::ptr::null()
    } else {
        ctx.user_ptr(a.ptr(2), 32)?
            .cast_const()
            .cast::<libc::timespec>()
    };
    if a.ptr(1) == 0 {
        // futimens: the descriptor itself.
        let f = ctx.file(a.fd(0))?;
        // The raw call: glibc's wrapper refuses a null path, the kernel takes it as futimens.
        // SAFETY: utimensat with a null path acts on our host fd; `times` is checked memory.
        return check(unsafe {
            libc::syscall(
                libc::SYS_utimensat,
                f.raw(),
                std::ptr::null::<libc::c_char>(),
                times,
                0,
            )
        });
    }
    let path = ctx.path(a.ptr(1))?;
    let t = open_for_stat(ctx, a.fd(0), &path, flags)?;
    let r = match &t {
        // SAFETY: one name inside a directory we opened within the root, not followed.
        Target::At(d, n) => unsafe {
            libc::utimensat(d.as_raw_fd(), n.as_ptr(), times, libc::AT_SYMLINK_NOFOLLOW)
        },
        // SAFETY: the object an fd names, through its magic link (never a path outside).
        _ => unsafe { libc::utimensat(libc::AT_FDCWD, proc_fd_path(t.raw()).as_ptr(), times, 0) },
    };
    check(r as libc::c_long)
}

pub fn fchmod(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: fchmod on a host fd we own.
    check(unsafe { libc::fchmod(f.raw(), a.u32(1) & 0o7777) } as libc::c_long)
}

fn chmod_at(ctx: &Ctx<'_>, dirfd: i32, path: u64, mode: u32) -> SysResult {
    let path = ctx.path(path)?;
    let t = target_following(ctx, dirfd, &path, 0)?;
    let p = proc_fd_path(t.raw());
    // SAFETY: chmod of the object an fd names, through its magic link.
    check(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode & 0o7777, 0) } as libc::c_long)
}

pub fn fchmodat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    chmod_at(ctx, a.fd(0), a.ptr(1), a.u32(2))
}

pub fn chmod(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    chmod_at(ctx, libc::AT_FDCWD, a.ptr(0), a.u32(1))
}

pub fn fchown(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    // SAFETY: fchown on a host fd we own.
    check(unsafe { libc::fchown(f.raw(), a.u32(1), a.u32(2)) } as libc::c_long)
}

fn chown_at(ctx: &Ctx<'_>, dirfd: i32, path: u64, uid: u32, gid: u32, flags: i32) -> SysResult {
    if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return err(libc::EINVAL);
    }
    let path = ctx.path(path)?;
    let t = open_for_stat(ctx, dirfd, &path, flags)?;
    let r = match &t {
        // SAFETY: one name inside a directory we opened within the root, not followed.
        Target::At(d, n) => unsafe {
            libc::fchownat(
                d.as_raw_fd(),
                n.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        // SAFETY: the object an O_PATH fd (or the guest's description) names.
        _ => unsafe { libc::fchownat(t.raw(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) },
    };
    check(r as libc::c_long)
}

pub fn fchownat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    chown_at(ctx, a.fd(0), a.ptr(1), a.u32(2), a.u32(3), a.i32(4))
}

pub fn chown(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    chown_at(ctx, libc::AT_FDCWD, a.ptr(0), a.u32(1), a.u32(2), 0)
}

pub fn lchown(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    chown_at(ctx, libc::AT_FDCWD, a.ptr(0), a.u32(1), a.u32(2), nofollow)
}

pub fn symlinkat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let target = cstring(&ctx.path(a.ptr(0))?)?;
    let link = ctx.path(a.ptr(2))?;
    let full = full_path(ctx, a.fd(1), &link)?;
    let Name { parent, name, .. } = name_of(ctx, &full)?;
    if is_dot(&name) {
        return err(libc::EEXIST);
    }
    // The target is stored as given: resolving it later stays inside the root like any path.
    // SAFETY: symlinkat of one name inside a directory fd we opened within the root.
    check(
        unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), name.as_ptr()) }
            as libc::c_long,
    )
}

pub fn symlink(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    symlinkat(ctx, &Args::new([a.ptr(0), AT_FDCWD, a.ptr(1), 0, 0, 0]))
}

pub fn linkat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let flags = a.i32(4);
    if flags & !(libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return err(libc::EINVAL);
    }
    let old = ctx.path(a.ptr(1))?;
    let new = ctx.path(a.ptr(3))?;
    let new_full = full_path(ctx, a.fd(2), &new)?;
    let Name {
        parent: np,
        name: nn,
        ..
    } = name_of(ctx, &new_full)?;
    if is_dot(&nn) {
        return err(libc::EEXIST);
    }
    if flags & libc::AT_SYMLINK_FOLLOW != 0 || old.is_empty() {
        // Link what the old path resolves to (inside the root), through its magic link.
        let t = open_for_stat(ctx, a.fd(0), &old, flags & libc::AT_EMPTY_PATH)?;
        let p = proc_fd_path(t.raw());
        // SAFETY: linkat from an fd's magic link to one name inside a directory we opened.
        return check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                p.as_ptr(),
                np.as_raw_fd(),
                nn.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        } as libc::c_long);
    }
    let old_full = full_path(ctx, a.fd(0), &old)?;
    let (op, on) = parent_and_name(ctx, &old_full)?;
    // SAFETY: linkat of single names inside directory fds we opened within the root.
    check(
        unsafe { libc::linkat(op.as_raw_fd(), on.as_ptr(), np.as_raw_fd(), nn.as_ptr(), 0) }
            as libc::c_long,
    )
}

pub fn link(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    linkat(
        ctx,
        &Args::new([AT_FDCWD, a.ptr(0), AT_FDCWD, a.ptr(1), 0, 0]),
    )
}

pub fn memfd_create(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let name = ctx.mem.read_cstr(a.ptr(0), 249)?;
    let flags = a.u32(1);
    // MFD_HUGETLB may carry a page size in bits 26..31.
    let known = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB | (0x3f << 26);
    if flags & !known != 0 || (flags & (0x3f << 26) != 0 && flags & libc::MFD_HUGETLB == 0) {
        return err(libc::EINVAL);
    }
    let c = cstring(&name)?;
    // Huge-page memfds are ordinary ones here: the guest never maps them shared.
    let host_flags = libc::MFD_CLOEXEC | (flags & libc::MFD_ALLOW_SEALING);
    // SAFETY: memfd_create reads one C string; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), host_flags) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: a fresh fd from the kernel, owned by us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = OpenFile::new(FileKind::Host(fd), None);
    let n = ctx
        .tg
        .files
        .lock()
        .unwrap()
        .add(file, flags & libc::MFD_CLOEXEC != 0)?;
    Ok(n as u64)
}
