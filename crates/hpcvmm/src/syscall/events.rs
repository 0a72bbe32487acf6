//! epoll, passed through to a host epoll instance the VMM holds for the guest
//! ([`FileKind::Epoll`]). `epoll_ctl` names guest fds, which are translated to the host fds
//! behind them; the 64-bit user data travels untouched, so `epoll_wait` hands the guest back
//! exactly what it registered. As on Linux, a registration lives as long as the open file
//! description it names (closing one of two duplicates keeps it).

use std::os::fd::{FromRawFd, OwnedFd};

use super::{err, Args, Ctx, SysResult};
use crate::kernel::files::{FileKind, OpenFile};
use crate::kernel::fsroot::{check, last_err};

/// `struct epoll_event` is packed on x86-64: u32 events, u64 data.
const EVENT_SIZE: u64 = 12;
/// Linux's EP_MAX_EVENTS (INT_MAX / sizeof(struct epoll_event)).
const MAX_EVENTS: i32 = i32::MAX / EVENT_SIZE as i32;

fn create(ctx: &Ctx<'_>, flags: i32) -> SysResult {
    if flags & !libc::EPOLL_CLOEXEC != 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: epoll_create1 takes no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = OpenFile::new(FileKind::Epoll(fd), None);
    let cloexec = flags & libc::EPOLL_CLOEXEC != 0;
    Ok(ctx.tg.files.lock().unwrap().add(file, cloexec)? as u64)
}

pub fn epoll_create(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.i32(0) <= 0 {
        return err(libc::EINVAL);
    }
    create(ctx, 0)
}

pub fn epoll_create1(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    create(ctx, a.i32(0))
}

fn epoll_of(ctx: &Ctx<'_>, fd: i32) -> Result<crate::kernel::files::FileRef, super::Errno> {
    let f = ctx.file(fd)?;
    match f.kind() {
        FileKind::Epoll(_) => Ok(f),
        _ => err(libc::EINVAL),
    }
}

pub fn epoll_ctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (epfd, op, fd, ev) = (a.fd(0), a.i32(1), a.fd(2), a.ptr(3));
    let ep = epoll_of(ctx, epfd)?;
    let target = ctx.file(fd)?;
    if epfd == fd {
        return err(libc::EINVAL);
    }
    let mut e = libc::epoll_event { events: 0, u64: 0 };
    if op != libc::EPOLL_CTL_DEL {
        let raw = ctx.read_user_vec(ev, EVENT_SIZE)?;
        e.events = u32::from_ne_bytes(raw[..4].try_into().unwrap());
        e.u64 = u64::from_ne_bytes(raw[4..].try_into().unwrap());
    }
    // SAFETY: `e` is one epoll_event the host reads.
    check(unsafe { libc::epoll_ctl(ep.raw(), op, target.raw(), &mut e) }.into())
}

fn wait(ctx: &Ctx<'_>, epfd: i32, events: u64, max: i32, timeout: i32) -> SysResult {
    let ep = epoll_of(ctx, epfd)?;
    if max <= 0 || max > MAX_EVENTS {
        return err(libc::EINVAL);
    }
    let p = ctx.user_ptr(events, max as u64 * EVENT_SIZE)?;
    // SAFETY: `p` is checked guest memory for `max` packed epoll_events, which the host
    // writes (its epoll_event is the same packed layout).
    check(unsafe { libc::epoll_wait(ep.raw(), p.cast(), max, timeout) }.into())
}

pub fn epoll_wait(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    wait(ctx, a.fd(0), a.ptr(1), a.i32(2), a.i32(3))
}

/// The signal mask argument is ignored, as for ppoll: no guest signal handler runs.
pub fn epoll_pwait(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    wait(ctx, a.fd(0), a.ptr(1), a.i32(2), a.i32(3))
}

/// statfs/fstatfs: the host filesystem's figures for a path inside the guest's root.
pub fn statfs(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let path = ctx.path(a.ptr(0))?;
    if path.is_empty() {
        return err(libc::ENOENT);
    }
    let full = super::files::full_path(ctx, libc::AT_FDCWD, &path)?;
    let f = ctx.tg.fs.open_full(&full, libc::O_PATH, 0)?;
    put_statfs(ctx, std::os::fd::AsRawFd::as_raw_fd(&f), a.ptr(1))
}

pub fn fstatfs(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = ctx.file(a.fd(0))?;
    put_statfs(ctx, f.raw(), a.ptr(1))
}

fn put_statfs(ctx: &Ctx<'_>, fd: i32, buf: u64) -> SysResult {
    const STATFS_SIZE: usize = 120;
    let mut st = [0u8; STATFS_SIZE];
    const _: () = assert!(std::mem::size_of::<libc::statfs>() == STATFS_SIZE);
    // SAFETY: fstatfs writes one struct statfs (120 bytes) into `st`.
    if unsafe { libc::fstatfs(fd, st.as_mut_ptr().cast()) } < 0 {
        return last_err();
    }
    ctx.write_user(buf, &st)?;
    Ok(0)
}
