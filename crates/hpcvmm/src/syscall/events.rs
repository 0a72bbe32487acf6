//! Event notification: eventfd counters, epoll sets and select/pselect6, each backed by the
//! host's own object on the host fds behind the guest's descriptors (so readiness is the
//! host kernel's, exactly). A blocking wait blocks this vCPU's host thread, as a blocking
//! read does.

use std::os::fd::{FromRawFd, OwnedFd};

use super::{err, Args, Ctx, Errno, SysResult};
use crate::kernel::files::{FileKind, OpenFile};
use crate::kernel::fsroot::{check, last_err};

fn add_fd(ctx: &Ctx<'_>, kind: FileKind, cloexec: bool) -> SysResult {
    let file = OpenFile::new(kind, None);
    Ok(ctx.tg.files.lock().unwrap().add(file, cloexec)? as u64)
}

/// A fresh host fd from a creating call (`-1` = the host's errno).
fn owned(fd: i32) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return last_err();
    }
    // SAFETY: a fresh fd from the kernel, owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd2(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let flags = a.i32(1);
    if flags & !(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE) != 0 {
        return err(libc::EINVAL);
    }
    let host = flags & (libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE) | libc::EFD_CLOEXEC;
    // SAFETY: eventfd creates a new fd; no memory is passed.
    let fd = owned(unsafe { libc::eventfd(a.u32(0), host) })?;
    add_fd(ctx, FileKind::EventFd(fd), flags & libc::EFD_CLOEXEC != 0)
}

pub fn eventfd(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    eventfd2(ctx, &Args::new([a.u64(0), 0, 0, 0, 0, 0]))
}

pub fn epoll_create1(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let flags = a.i32(0);
    if flags & !libc::EPOLL_CLOEXEC != 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: epoll_create1 creates a new fd.
    let fd = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    add_fd(ctx, FileKind::Epoll(fd), flags != 0)
}

pub fn epoll_create(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.i32(0) <= 0 {
        return err(libc::EINVAL);
    }
    epoll_create1(ctx, &Args::new([0; 6]))
}

/// The host epoll fd behind guest fd `fd`; EINVAL if it is not an epoll set.
fn epoll_of(ctx: &Ctx<'_>, fd: i32) -> Result<crate::kernel::files::FileRef, Errno> {
    let f = ctx.file(fd)?;
    match f.kind() {
        FileKind::Epoll(_) => Ok(f),
        _ => err(libc::EINVAL),
    }
}

/// `struct epoll_event` is packed on x86-64: u32 events, u64 data (12 bytes).
const EPOLL_EVENT: u64 = 12;

pub fn epoll_ctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let ep = epoll_of(ctx, a.fd(0))?;
    let target = ctx.file(a.fd(2))?;
    if a.fd(0) == a.fd(2) {
        return err(libc::EINVAL);
    }
    let op = a.i32(1);
    let mut ev = [0u8; EPOLL_EVENT as usize];
    if op != libc::EPOLL_CTL_DEL {
        ev.copy_from_slice(&ctx.read_user_vec(a.ptr(3), EPOLL_EVENT)?);
    }
    // SAFETY: epoll_ctl reads one packed epoll_event from our buffer; both fds are ours.
    check(unsafe {
        libc::epoll_ctl(
            ep.raw(),
            op,
            target.raw(),
            ev.as_mut_ptr().cast::<libc::epoll_event>(),
        )
    } as libc::c_long)
}

fn epoll_wait_common(ctx: &Ctx<'_>, epfd: i32, events: u64, max: i32, timeout: i32) -> SysResult {
    let ep = epoll_of(ctx, epfd)?;
    if max <= 0 || max as u64 > (i32::MAX as u64) / EPOLL_EVENT {
        return err(libc::EINVAL);
    }
    let p = ctx.user_ptr(events, max as u64 * EPOLL_EVENT)?;
    // SAFETY: epoll_wait writes at most `max` packed events into checked guest memory.
    check(unsafe { libc::epoll_wait(ep.raw(), p.cast(), max, timeout) } as libc::c_long)
}

pub fn epoll_wait(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    epoll_wait_common(ctx, a.fd(0), a.ptr(1), a.i32(2), a.i32(3))
}

/// The signal mask argument is not applied (signals are the signal layer's).
pub fn epoll_pwait(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    epoll_wait_common(ctx, a.fd(0), a.ptr(1), a.i32(2), a.i32(3))
}

/// Milliseconds of a guest timeout `{sec, sub}` in units of `per_sec`; EINVAL if invalid.
fn timeout_ms(sec: i64, sub: i64, per_sec: i64) -> Result<i32, Errno> {
    if sec < 0 || !(0..per_sec).contains(&sub) {
        return err(libc::EINVAL);
    }
    let ms = sec
        .saturating_mul(1000)
        .saturating_add((sub * 1000 + per_sec - 1) / per_sec);
    Ok(ms.min(i64::from(i32::MAX)) as i32)
}

/// select's fd sets through the host's poll: readable = POLLIN|POLLHUP|POLLERR, writable =
/// POLLOUT|POLLERR, exceptional = POLLPRI, as Linux's select maps them.
fn select_common(ctx: &Ctx<'_>, a: &Args, timeout: i32) -> SysResult {
    let nfds = a.i32(0);
    if !(0..=1024).contains(&nfds) {
        return err(libc::EINVAL);
    }
    let bytes = (nfds as u64).div_ceil(64) * 8;
    let read_set = |addr: u64| -> Result<Option<Vec<u8>>, Errno> {
        if addr == 0 {
            Ok(None)
        } else {
            Ok(Some(ctx.read_user_vec(addr, bytes)?))
        }
    };
    let sets = [
        read_set(a.ptr(1))?,
        read_set(a.ptr(2))?,
        read_set(a.ptr(3))?,
    ];
    let is_set = |s: &Option<Vec<u8>>, fd: i32| {
        s.as_ref()
            .is_some_and(|b| b[fd as usize / 8] & (1 << (fd % 8)) != 0)
    };
    let mut polls: Vec<(i32, libc::pollfd)> = Vec::new();
    {
        let files = ctx.tg.files.lock().unwrap();
        for fd in 0..nfds {
            let mut events = 0;
            if is_set(&sets[0], fd) {
                events |= libc::POLLIN;
            }
            if is_set(&sets[1], fd) {
                events |= libc::POLLOUT;
            }
            if is_set(&sets[2], fd) {
                events |= libc::POLLPRI;
            }
            if events == 0 {
                continue;
            }
            let host = files.get(fd)?.raw();
            polls.push((
                fd,
                libc::pollfd {
                    fd: host,
                    events,
                    revents: 0,
                },
            ));
        }
    }
    let mut host: Vec<libc::pollfd> = polls.iter().map(|p| p.1).collect();
    // SAFETY: poll reads/writes our own pollfd vector of the given length.
    let r = unsafe { libc::poll(host.as_mut_ptr(), host.len() as u64, timeout) };
    if r < 0 {
        return last_err();
    }
    let mut out = [
        vec![0u8; bytes as usize],
        vec![0u8; bytes as usize],
        vec![0u8; bytes as usize],
    ];
    let mut count = 0u64;
    for ((fd, _), p) in polls.iter().zip(&host) {
        let rev = p.revents;
        let wants = [
            (0, libc::POLLIN | libc::POLLHUP | libc::POLLERR),
            (1, libc::POLLOUT | libc::POLLERR),
            (2, libc::POLLPRI),
        ];
        for (i, mask) in wants {
            if is_set(&sets[i], *fd) && rev & mask != 0 {
                out[i][*fd as usize / 8] |= 1 << (fd % 8);
                count += 1;
            }
        }
    }
    for (i, addr) in [a.ptr(1), a.ptr(2), a.ptr(3)].into_iter().enumerate() {
        if addr != 0 {
            ctx.write_user(addr, &out[i])?;
        }
    }
    Ok(count)
}

pub fn select(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let timeout = if a.ptr(4) == 0 {
        -1
    } else {
        let tv: [i64; 2] = ctx.get(a.ptr(4))?;
        timeout_ms(tv[0], tv[1], 1_000_000)?
    };
    let r = select_common(ctx, a, timeout)?;
    if a.ptr(4) != 0 && r == 0 {
        // Linux leaves the time not slept in the timeval: none, after a timeout.
        ctx.put(a.ptr(4), &[0i64, 0i64])?;
    }
    Ok(r)
}

/// The signal mask argument is not applied (signals are the signal layer's).
pub fn pselect6(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let timeout = if a.ptr(4) == 0 {
        -1
    } else {
        let ts: [i64; 2] = ctx.get(a.ptr(4))?;
        timeout_ms(ts[0], ts[1], 1_000_000_000)?
    };
    let r = select_common(ctx, a, timeout)?;
    if a.ptr(4) != 0 && r == 0 {
        ctx.put(a.ptr(4), &[0i64, 0i64])?;
    }
    Ok(r)
}
