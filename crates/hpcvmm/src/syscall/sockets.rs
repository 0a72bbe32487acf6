//! Sockets, passed through to host sockets the VMM holds for the guest
//! ([`FileKind::Socket`]). The guest's socket calls become the same host calls on the host fd
//! behind its guest fd, with every guest pointer checked and every structure that carries
//! pointers or descriptors (`msghdr`, `iovec`s, `SCM_RIGHTS`) rebuilt on the VMM's side:
//! the host kernel never sees a guest address or a guest fd number.
//!
//! - Addresses (`sockaddr`) are copied in and out with Linux's length rules: a length above
//!   `sizeof(struct sockaddr_storage)` or negative is EINVAL, an unreadable one EFAULT; output
//!   addresses are truncated to the guest's buffer and the full length reported.
//! - Unix socket paths resolve inside the guest's root like every other path: `bind` creates
//!   the socket in the parent directory opened inside the root, `connect`/`sendto` reach the
//!   socket through an `O_PATH` descriptor of it (opened inside the root, so a symlink cannot
//!   lead out). Abstract and autobound names pass through unchanged.
//! - Families: AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (NETLINK_ROUTE only, the route dumps
//!   getifaddrs, UCX and hwloc make); anything else is EAFNOSUPPORT.
//! - `ioctl` on a socket: the read-only interface queries (`SIOCGIF*` on a `struct ifreq`
//!   without pointers), the interface list `SIOCGIFCONF` (copied through a VMM buffer),
//!   `FIONREAD`, `SIOCOUTQ` and `FIONBIO`; others are ENOTTY or, for
//!   `SIOCETHTOOL` (its ifreq carries a pointer), EOPNOTSUPP as for a device without ethtool.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::files::{full_path, host_iovecs, name_of};
use super::{err, Args, Ctx, Errno, SysResult};
use crate::kernel::files::{FileKind, FileRef, OpenFile};
use crate::kernel::fsroot::{check, last_err};

/// `sizeof(struct sockaddr_storage)`: the longest address any family takes.
pub const SOCKADDR_MAX: usize = 128;
/// Linux's UIO_MAXIOV: most iovecs one sendmsg/recvmsg takes.
const UIO_MAXIOV: u64 = 1024;
/// Most ancillary data one sendmsg/recvmsg moves through the VMM.
const CONTROL_MAX: u64 = 64 << 10;
/// Linux's SCM_MAX_FD: most descriptors one SCM_RIGHTS message carries.
const SCM_MAX_FD: usize = 253;
/// Most bytes of a socket option value (Linux has no single limit; this covers every option
/// a program uses, filters and TCP_INFO included).
const OPTVAL_MAX: u32 = 64 << 10;

/// Flags socket()/socketpair()/accept4() take in their type or flags argument.
const SOCK_FLAGS: i32 = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;

/// The host fd of guest fd `fd`, if it is a socket: EBADF if no such fd, ENOTSOCK if it is
/// another kind of file.
fn sock(ctx: &Ctx<'_>, fd: i32) -> Result<FileRef, Errno> {
    let f = ctx.file(fd)?;
    match f.kind() {
        FileKind::Socket(_) => Ok(f),
        _ => err(libc::ENOTSOCK),
    }
}

fn family_allowed(domain: i32, protocol: i32) -> bool {
    match domain {
        libc::AF_UNIX | libc::AF_INET | libc::AF_INET6 => true,
        libc::AF_NETLINK => protocol == libc::NETLINK_ROUTE,
        _ => false,
    }
}

fn install(ctx: &Ctx<'_>, fd: OwnedFd, cloexec: bool) -> SysResult {
    let file = OpenFile::new(FileKind::Socket(fd), None);
    Ok(ctx.tg.files.lock().unwrap().add(file, cloexec)? as u64)
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: callers pass an fd the host kernel just returned to us and nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn socket(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (domain, ty, protocol) = (a.i32(0), a.i32(1), a.i32(2));
    if ty & !(SOCK_FLAGS | 0xf) != 0 {
        return err(libc::EINVAL);
    }
    if !family_allowed(domain, protocol) {
        return err(libc::EAFNOSUPPORT);
    }
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return last_err();
    }
    install(ctx, owned(fd), ty & libc::SOCK_CLOEXEC != 0)
}

pub fn socketpair(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (domain, ty, protocol, sv) = (a.i32(0), a.i32(1), a.i32(2), a.ptr(3));
    if ty & !(SOCK_FLAGS | 0xf) != 0 {
        return err(libc::EINVAL);
    }
    if domain != libc::AF_UNIX {
        return err(libc::EOPNOTSUPP);
    }
    ctx.check_user(sv, 8)?;
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into our array.
    if unsafe { libc::socketpair(domain, ty | libc::SOCK_CLOEXEC, protocol, fds.as_mut_ptr()) } < 0
    {
        return last_err();
    }
    let (x, y) = (owned(fds[0]), owned(fds[1]));
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    let mut files = ctx.tg.files.lock().unwrap();
    let gx = files.add(OpenFile::new(FileKind::Socket(x), None), cloexec)?;
    let gy = match files.add(OpenFile::new(FileKind::Socket(y), None), cloexec) {
        Ok(g) => g,
        Err(e) => {
            let _ = files.close(gx);
            return Err(e);
        }
    };
    drop(files);
    ctx.put(sv, &[gx, gy])?;
    Ok(0)
}

/// A socket address copied in from the guest, ready for the host.
pub struct SockAddr {
    buf: [u8; SOCKADDR_MAX],
    len: u32,
    /// Keeps the directory or socket a rewritten Unix path names open while the call runs.
    _anchor: Option<OwnedFd>,
}

impl SockAddr {
    fn ptr(&self) -> *const libc::sockaddr {
        self.buf.as_ptr().cast()
    }
}

/// What a Unix path is about to be used for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UnixUse {
    /// bind: the final component is created.
    Create,
    /// connect/sendto: an existing socket is reached.
    Reach,
}

/// Read a guest `sockaddr` of `len` bytes (Linux's move_addr_to_kernel rules), resolving a
/// Unix path inside the guest's root.
fn sockaddr_in(ctx: &Ctx<'_>, addr: u64, len: u64, how: UnixUse) -> Result<SockAddr, Errno> {
    let len = len as i32;
    if len < 0 || len as usize > SOCKADDR_MAX {
        return err(libc::EINVAL);
    }
    let mut buf = [0u8; SOCKADDR_MAX];
    let bytes = ctx.read_user_vec(addr, len as u64)?;
    buf[..bytes.len()].copy_from_slice(&bytes);
    let mut sa = SockAddr {
        buf,
        len: len as u32,
        _anchor: None,
    };
    let family = u16::from_ne_bytes([buf[0], buf[1]]);
    if len > 2 && i32::from(family) == libc::AF_UNIX && buf[2] != 0 {
        unix_path(ctx, &mut sa, how)?;
    }
    Ok(sa)
}

/// Rewrite a Unix pathname address to a host path that names the same file as the guest path
/// does inside its root: `/proc/self/fd/N/name` (N: the parent directory, opened inside the
/// root) for bind, `/proc/self/fd/N` (N: the socket itself, `O_PATH`) for connect.
fn unix_path(ctx: &Ctx<'_>, sa: &mut SockAddr, how: UnixUse) -> Result<(), Errno> {
    let path_bytes = &sa.buf[2..sa.len as usize];
    let end = path_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(path_bytes.len());
    let path = path_bytes[..end].to_vec();
    let full = full_path(ctx, libc::AT_FDCWD, &path)?;
    let (host, anchor) = match how {
        UnixUse::Create => {
            let n = name_of(ctx, &full)?;
            let host = format!(
                "/proc/self/fd/{}/{}",
                n.parent.as_raw_fd(),
                String::from_utf8_lossy(n.name.as_bytes())
            );
            (host, n.parent)
        }
        UnixUse::Reach => {
            let f = ctx.tg.fs.open_full(&full, libc::O_PATH, 0)?;
            (format!("/proc/self/fd/{}", f.as_raw_fd()), f)
        }
    };
    let h = host.as_bytes();
    if h.len() >= 108 {
        return err(libc::ENAMETOOLONG);
    }
    sa.buf[2..].fill(0);
    sa.buf[2..2 + h.len()].copy_from_slice(h);
    sa.len = (2 + h.len() + 1) as u32;
    sa._anchor = Some(anchor);
    Ok(())
}

/// Where an output address goes: the guest buffer and its `socklen_t` length word.
struct AddrOut {
    addr: u64,
    len_ptr: u64,
    /// The guest's buffer size (the length word's value on entry).
    cap: u32,
}

/// Read the length word of an output address (accept, getsockname, recvfrom...). A null
/// address means "not wanted".
fn addr_out(ctx: &Ctx<'_>, addr: u64, len_ptr: u64) -> Result<Option<AddrOut>, Errno> {
    if addr == 0 {
        return Ok(None);
    }
    let cap: i32 = ctx.get(len_ptr)?;
    if cap < 0 {
        return err(libc::EINVAL);
    }
    Ok(Some(AddrOut {
        addr,
        len_ptr,
        cap: cap as u32,
    }))
}

/// Copy a host address back: at most the guest's buffer, and the full length in the word.
fn put_addr(ctx: &Ctx<'_>, out: &AddrOut, buf: &[u8], len: u32) -> Result<(), Errno> {
    let n = (len as usize).min(out.cap as usize).min(buf.len());
    ctx.write_user(out.addr, &buf[..n])?;
    ctx.put(out.len_ptr, &len)?;
    Ok(())
}

pub fn bind(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let sa = sockaddr_in(ctx, a.ptr(1), a.u64(2), UnixUse::Create)?;
    // SAFETY: `sa` holds `len` valid bytes.
    check(unsafe { libc::bind(f.raw(), sa.ptr(), sa.len) }.into())
}

pub fn connect(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let sa = sockaddr_in(ctx, a.ptr(1), a.u64(2), UnixUse::Reach)?;
    // SAFETY: `sa` holds `len` valid bytes.
    check(unsafe { libc::connect(f.raw(), sa.ptr(), sa.len) }.into())
}

pub fn listen(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    // SAFETY: listen takes no pointers.
    check(unsafe { libc::listen(f.raw(), a.i32(1)) }.into())
}

pub fn shutdown(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    // SAFETY: shutdown takes no pointers.
    check(unsafe { libc::shutdown(f.raw(), a.i32(1)) }.into())
}

fn accept_with(ctx: &Ctx<'_>, fd: i32, addr: u64, len_ptr: u64, flags: i32) -> SysResult {
    if flags & !SOCK_FLAGS != 0 {
        return err(libc::EINVAL);
    }
    let f = sock(ctx, fd)?;
    let out = addr_out(ctx, addr, len_ptr)?;
    let mut buf = [0u8; SOCKADDR_MAX];
    let mut len = SOCKADDR_MAX as u32;
    // SAFETY: the host writes at most `len` bytes into `buf` and the length into `len`.
    let r = unsafe {
        libc::accept4(
            f.raw(),
            buf.as_mut_ptr().cast(),
            &mut len,
            flags | libc::SOCK_CLOEXEC,
        )
    };
    if r < 0 {
        return last_err();
    }
    let new = owned(r);
    if let Some(o) = &out {
        put_addr(ctx, o, &buf, len)?;
    }
    install(ctx, new, flags & libc::SOCK_CLOEXEC != 0)
}

pub fn accept(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    accept_with(ctx, a.fd(0), a.ptr(1), a.ptr(2), 0)
}

pub fn accept4(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    accept_with(ctx, a.fd(0), a.ptr(1), a.ptr(2), a.i32(3))
}

type NameFn = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn name_call(ctx: &Ctx<'_>, a: &Args, call: NameFn) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let cap: i32 = ctx.get(a.ptr(2))?;
    if cap < 0 {
        return err(libc::EINVAL);
    }
    let mut buf = [0u8; SOCKADDR_MAX];
    let mut len = SOCKADDR_MAX as u32;
    // SAFETY: the host writes at most `len` bytes into `buf`.
    if unsafe { call(f.raw(), buf.as_mut_ptr().cast(), &mut len) } < 0 {
        return last_err();
    }
    let out = AddrOut {
        addr: a.ptr(1),
        len_ptr: a.ptr(2),
        cap: cap as u32,
    };
    put_addr(ctx, &out, &buf, len)?;
    Ok(0)
}

pub fn getsockname(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    name_call(ctx, a, libc::getsockname)
}

pub fn getpeername(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    name_call(ctx, a, libc::getpeername)
}

pub fn setsockopt(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let (level, name, val, len) = (a.i32(1), a.i32(2), a.ptr(3), a.i32(4));
    if len < 0 {
        return err(libc::EINVAL);
    }
    if len as u32 > OPTVAL_MAX {
        return err(libc::ENOMEM);
    }
    let v = ctx.read_user_vec(val, len as u64)?;
    let p = if v.is_empty() {
        std::ptr::null()
    } else {
        v.as_ptr()
    };
    // SAFETY: `p` is `len` readable bytes (or null with length 0).
    check(unsafe { libc::setsockopt(f.raw(), level, name, p.cast(), len as u32) }.into())
}

pub fn getsockopt(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let (level, name, val, len_ptr) = (a.i32(1), a.i32(2), a.ptr(3), a.ptr(4));
    let cap: i32 = ctx.get(len_ptr)?;
    if cap < 0 {
        return err(libc::EINVAL);
    }
    let mut buf = vec![0u8; (cap as u32).min(OPTVAL_MAX) as usize];
    let mut len = buf.len() as u32;
    // SAFETY: the host writes at most `len` bytes into `buf`.
    let r = unsafe { libc::getsockopt(f.raw(), level, name, buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return last_err();
    }
    let n = (len as usize).min(buf.len());
    ctx.write_user(val, &buf[..n])?;
    ctx.put(len_ptr, &len)?;
    Ok(0)
}

pub fn sendto(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let (buf, len, flags, addr, alen) = (a.ptr(1), a.usize(2), a.i32(3), a.ptr(4), a.u64(5));
    let len = len.min(0x7fff_f000);
    let p = ctx.user_ptr(buf, len)?;
    let sa = if addr == 0 {
        None
    } else {
        Some(sockaddr_in(ctx, addr, alen, UnixUse::Reach)?)
    };
    let (sp, sl) = sa
        .as_ref()
        .map_or((std::ptr::null(), 0), |s| (s.ptr(), s.len));
    // SAFETY: `p..p+len` is checked guest memory the host only reads; `sp` is `sl` bytes.
    check(unsafe { libc::sendto(f.raw(), p.cast(), len as usize, flags, sp, sl) } as libc::c_long)
}

pub fn recvfrom(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let (buf, len, flags, addr, len_ptr) = (a.ptr(1), a.usize(2), a.i32(3), a.ptr(4), a.ptr(5));
    let len = len.min(0x7fff_f000);
    let p = ctx.user_ptr(buf, len)?;
    let out = addr_out(ctx, addr, len_ptr)?;
    let mut sbuf = [0u8; SOCKADDR_MAX];
    let mut slen = SOCKADDR_MAX as u32;
    let (sp, lp) = if out.is_some() {
        (sbuf.as_mut_ptr().cast(), &mut slen as *mut u32)
    } else {
        (std::ptr::null_mut(), std::ptr::null_mut())
    };
    // SAFETY: the host writes at most `len` bytes at `p` (checked guest memory) and at most
    // `slen` bytes into `sbuf`.
    let r = unsafe { libc::recvfrom(f.raw(), p.cast(), len as usize, flags, sp, lp) };
    if r < 0 {
        return last_err();
    }
    if let Some(o) = &out {
        put_addr(ctx, o, &sbuf, slen)?;
    }
    Ok(r as u64)
}

/// The guest's `struct msghdr`, as plain data.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct GuestMsghdr {
    pub name: u64,
    pub namelen: u32,
    pub pad: u32,
    pub iov: u64,
    pub iovlen: u64,
    pub control: u64,
    pub controllen: u64,
    pub flags: i32,
    pub pad2: u32,
}
crate::plain!(GuestMsghdr => [u64, u32, u32, u64, u64, u64, u64, i32, u32]);

const CMSG_HDR: usize = 16; // cmsg_len (size_t), cmsg_level, cmsg_type

fn cmsg_align(n: usize) -> usize {
    (n + 7) & !7
}

/// Control messages of a guest sendmsg, rebuilt for the host: SCM_RIGHTS carry host fds
/// (EBADF for a guest number that is not open), everything else is copied. A malformed
/// header is EINVAL, as on Linux.
fn control_out(ctx: &Ctx<'_>, raw: &[u8]) -> Result<(Vec<u8>, Vec<FileRef>), Errno> {
    let mut out = raw.to_vec();
    let mut keep = Vec::new();
    let mut off = 0;
    while off + CMSG_HDR <= raw.len() {
        let clen = u64::from_ne_bytes(raw[off..off + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(raw[off + 8..off + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(raw[off + 12..off + 16].try_into().unwrap());
        if clen < CMSG_HDR || clen > raw.len() - off {
            return err(libc::EINVAL);
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            let n = (clen - CMSG_HDR) / 4;
            if n > SCM_MAX_FD {
                return err(libc::EINVAL);
            }
            for i in 0..n {
                let at = off + CMSG_HDR + 4 * i;
                let g = i32::from_ne_bytes(raw[at..at + 4].try_into().unwrap());
                let f = ctx.file(g)?;
                out[at..at + 4].copy_from_slice(&f.raw().to_ne_bytes());
                keep.push(f);
            }
        } else if level == libc::SOL_SOCKET && ty == libc::SCM_CREDENTIALS && clen >= CMSG_HDR + 12
        {
            // struct ucred { pid, uid, gid }: the guest's own pid is the VMM's on the host.
            let at = off + CMSG_HDR;
            let pid = i32::from_ne_bytes(raw[at..at + 4].try_into().unwrap());
            if pid == ctx.tg.pid() {
                // SAFETY: getpid has no preconditions.
                let host = unsafe { libc::getpid() };
                out[at..at + 4].copy_from_slice(&host.to_ne_bytes());
            }
        }
        off += cmsg_align(clen);
    }
    Ok((out, keep))
}

/// Control messages a recvmsg got from the host, rewritten for the guest: SCM_RIGHTS fds
/// become new guest fds (the host ones are owned by their new descriptions).
fn control_in(ctx: &Ctx<'_>, buf: &mut [u8], cloexec: bool) -> Result<(), Errno> {
    let mut off = 0;
    while off + CMSG_HDR <= buf.len() {
        let clen = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap());
        if clen < CMSG_HDR || clen > buf.len() - off {
            break;
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            for i in 0..(clen - CMSG_HDR) / 4 {
                let at = off + CMSG_HDR + 4 * i;
                let h = i32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
                let fd = owned(h);
                // SAFETY: stat is plain data; all zeroes is valid.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: fstat writes one stat for an fd we own.
                let is_sock = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
                let kind = if is_sock {
                    FileKind::Socket(fd)
                } else {
                    FileKind::Host(fd)
                };
                let g = ctx
                    .tg
                    .files
                    .lock()
                    .unwrap()
                    .add(OpenFile::new(kind, None), cloexec)
                    .unwrap_or(-1);
                buf[at..at + 4].copy_from_slice(&g.to_ne_bytes());
            }
        }
        off += cmsg_align(clen);
    }
    Ok(())
}

/// The guest msghdr's name: clamped like Linux (null name: no name; longer than a
/// sockaddr_storage: the storage's size; negative: EINVAL).
fn msg_namelen(m: &GuestMsghdr) -> Result<u32, Errno> {
    if m.name == 0 {
        return Ok(0);
    }
    if (m.namelen as i32) < 0 {
        return err(libc::EINVAL);
    }
    Ok(m.namelen.min(SOCKADDR_MAX as u32))
}

pub fn sendmsg(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let flags = a.i32(2);
    let m: GuestMsghdr = ctx.get(a.ptr(1))?;
    if m.iovlen > UIO_MAXIOV {
        return err(libc::EMSGSIZE);
    }
    let namelen = msg_namelen(&m)?;
    let sa = if namelen > 0 {
        Some(sockaddr_in(
            ctx,
            m.name,
            u64::from(namelen),
            UnixUse::Reach,
        )?)
    } else {
        None
    };
    let mut iov = host_iovecs(ctx, m.iov, m.iovlen)?;
    if m.controllen > CONTROL_MAX {
        return err(libc::ENOBUFS);
    }
    let raw = ctx.read_user_vec(m.control, m.controllen)?;
    let (mut control, _keep) = control_out(ctx, &raw)?;
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(s) = &sa {
        h.msg_name = s.ptr() as *mut _;
        h.msg_namelen = s.len;
    }
    h.msg_iov = iov.as_mut_ptr();
    h.msg_iovlen = iov.len();
    if !control.is_empty() {
        h.msg_control = control.as_mut_ptr().cast();
        h.msg_controllen = control.len();
    }
    // SAFETY: every pointer in `h` is to VMM buffers or checked guest memory.
    check(unsafe { libc::sendmsg(f.raw(), &h, flags) } as libc::c_long)
}

pub fn recvmsg(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = sock(ctx, a.fd(0))?;
    let flags = a.i32(2);
    let maddr = a.ptr(1);
    let m: GuestMsghdr = ctx.get(maddr)?;
    if m.iovlen > UIO_MAXIOV {
        return err(libc::EMSGSIZE);
    }
    let namelen = msg_namelen(&m)?;
    let mut iov = host_iovecs(ctx, m.iov, m.iovlen)?;
    let clen = m.controllen.min(CONTROL_MAX) as usize;
    if clen > 0 {
        ctx.check_user(m.control, clen as u64)?;
    }
    let mut control = vec![0u8; clen];
    let mut name = [0u8; SOCKADDR_MAX];
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if namelen > 0 {
        h.msg_name = name.as_mut_ptr().cast();
        h.msg_namelen = SOCKADDR_MAX as u32;
    }
    h.msg_iov = iov.as_mut_ptr();
    h.msg_iovlen = iov.len();
    if clen > 0 {
        h.msg_control = control.as_mut_ptr().cast();
        h.msg_controllen = clen;
    }
    let cloexec = flags & libc::MSG_CMSG_CLOEXEC != 0;
    // SAFETY: every pointer in `h` is to VMM buffers or checked guest memory.
    let r = unsafe { libc::recvmsg(f.raw(), &mut h, flags | libc::MSG_CMSG_CLOEXEC) };
    if r < 0 {
        return last_err();
    }
    let got = h.msg_controllen.min(clen);
    control_in(ctx, &mut control[..got], cloexec)?;
    let mut back = m;
    if namelen > 0 {
        let n = (h.msg_namelen as usize).min(namelen as usize);
        ctx.write_user(m.name, &name[..n])?;
        back.namelen = h.msg_namelen;
    } else {
        back.namelen = 0;
    }
    ctx.write_user(m.control, &control[..got])?;
    back.controllen = got as u64;
    back.flags = h.msg_flags;
    ctx.put(maddr, &back)?;
    Ok(r as u64)
}

/// `struct ifreq`: a name and a 24-byte union.
const IFREQ: u64 = 40;

/// ioctl on a socket: the interface queries whose argument is a pointer-free `struct ifreq`,
/// and the int-valued queue/blocking requests.
pub fn ioctl(ctx: &mut Ctx<'_>, f: &FileRef, a: &Args) -> SysResult {
    let (req, arg) = (a.u64(1) as libc::c_ulong, a.ptr(2));
    match req {
        libc::SIOCGIFNAME
        | libc::SIOCGIFINDEX
        | libc::SIOCGIFFLAGS
        | libc::SIOCGIFADDR
        | libc::SIOCGIFDSTADDR
        | libc::SIOCGIFBRDADDR
        | libc::SIOCGIFNETMASK
        | libc::SIOCGIFMTU
        | libc::SIOCGIFHWADDR
        | libc::SIOCGIFTXQLEN => {
            let mut ifr = ctx.read_user_vec(arg, IFREQ)?;
            // SAFETY: `ifr` is a 40-byte struct ifreq the host reads and writes.
            let r = unsafe { libc::ioctl(f.raw(), req, ifr.as_mut_ptr()) };
            if r < 0 {
                return last_err();
            }
            ctx.write_user(arg, &ifr)?;
            Ok(r as u64)
        }
        libc::FIONREAD | libc::TIOCOUTQ => {
            let mut v = 0i32;
            // SAFETY: the request writes one int.
            if unsafe { libc::ioctl(f.raw(), req, &mut v) } < 0 {
                return last_err();
            }
            ctx.put(arg, &v)?;
            Ok(0)
        }
        libc::FIONBIO => {
            let v: i32 = ctx.get(arg)?;
            // SAFETY: the request reads one int.
            check(unsafe { libc::ioctl(f.raw(), req, &v) }.into())
        }
        libc::SIOCGIFCONF => ifconf(ctx, f, arg),
        0x8946 => err(libc::EOPNOTSUPP), // SIOCETHTOOL: its ifreq carries a pointer
        _ => err(libc::ENOTTY),
    }
}

/// Most bytes of `struct ifreq`s one SIOCGIFCONF copies (1638 interfaces).
const IFCONF_MAX: usize = 64 << 10;

/// `struct ifconf` as the host takes it: a length and a buffer pointer.
#[repr(C)]
struct HostIfconf {
    len: i32,
    buf: *mut u8,
}

/// SIOCGIFCONF (Open MPI's and hwloc's interface list): `struct ifconf { int ifc_len; char
/// *ifc_buf; }` in guest memory. A NULL buffer asks for the size needed; else as many whole
/// `ifreq`s as fit in `ifc_len` bytes are written there and `ifc_len` says how many bytes (a
/// negative length fits none, as on Linux). A bad `ifconf` or buffer is EFAULT.
fn ifconf(ctx: &Ctx<'_>, f: &FileRef, arg: u64) -> SysResult {
    let raw = ctx.read_user_vec(arg, 16)?;
    let len = i32::from_ne_bytes(raw[0..4].try_into().unwrap());
    let buf = u64::from_ne_bytes(raw[8..16].try_into().unwrap());
    let mut host = vec![
        0u8;
        if buf == 0 {
            0
        } else {
            len.clamp(0, IFCONF_MAX as i32) as usize
        }
    ];
    let mut hc = HostIfconf {
        len: host.len() as i32,
        buf: if buf == 0 {
            std::ptr::null_mut()
        } else {
            host.as_mut_ptr()
        },
    };
    // SAFETY: the host fills at most `hc.len` bytes of `host` (or only the length, for NULL).
    if unsafe { libc::ioctl(f.raw(), libc::SIOCGIFCONF, &mut hc) } < 0 {
        return last_err();
    }
    if buf != 0 {
        let n = (hc.len.max(0) as usize).min(host.len());
        ctx.write_user(buf, &host[..n])?;
    }
    ctx.write_user(arg, &hc.len.to_ne_bytes())?;
    Ok(0)
}
