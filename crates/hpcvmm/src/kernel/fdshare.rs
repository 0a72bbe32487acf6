//! Guest descriptors shared between the VMs of one user: what `open("/proc/<pid>/fd/<n>")`
//! of another rank gives (issue 12). UCX's posix shared-memory transport names its segment
//! that way by default ("proc link": the segment file is unlinked at once and its peers
//! re-open it through the creator's descriptor), and on Linux that works between processes of
//! one user.
//!
//! A VMM whose guest has the VMM's host pid (an MPI rank, `RunConfig::host_pid`) runs a
//! [`Broker`]: a thread accepting on the abstract Unix socket `@dualstack-fd/<host pid>`. A
//! request names a guest descriptor number and the access mode; the answer is a fresh open
//! file description of that guest file (a re-open, as `/proc/<pid>/fd/<n>` gives on Linux),
//! passed with `SCM_RIGHTS`, or an errno. What the broker hands out and to whom:
//! - only descriptors of the **guest's** table, looked up by guest number, never the VMM's own
//!   (its KVM, memory, socket and log descriptors have no guest number);
//! - only regular files (memfd, `/dev/shm`, files: what a shared mapping needs); anything
//!   else answers EACCES;
//! - only to a peer whose `SO_PEERCRED` uid is the guest's uid or root: who could open the
//!   guest's `/proc/<pid>/fd/<n>` on Linux (the guest is that user's process). Another
//!   tenant's VM gets EACCES.
//!
//! The asking side ([`fetch`]) checks the answering socket's `SO_PEERCRED` too: its pid must be
//! the pid the guest named and its uid the guest's uid or root, so a process squatting on the
//! name cannot pass itself off as that VMM. No broker at that pid (connection refused): the
//! caller opens the host path as before (another process of the user, natively).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::Errno;

/// First word of a request ("DSFD").
const MAGIC: u32 = 0x4446_5344;

/// How long the asking VMM waits for an answer before giving up (EAGAIN to the guest's open).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The abstract socket name of the broker of the VMM with host pid `pid`.
pub fn socket_name(pid: i32) -> String {
    format!("dualstack-fd/{pid}")
}

/// What the broker asks of the run: guest descriptor `n` re-opened with `flags`
/// (`O_RDONLY`/`O_WRONLY`/`O_RDWR`), or the errno the guest's own `/proc/self/fd/<n>` gives.
pub type Resolver = dyn Fn(i32, i32) -> Result<OwnedFd, Errno> + Send + Sync;

/// A running broker; dropping it stops its thread (and drops the resolver).
pub struct Broker {
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Listen as `@dualstack-fd/<pid>` and serve requests from peers of `uid` (or root)
    /// with `resolve`.
    pub fn start(pid: i32, uid: u32, resolve: Box<Resolver>) -> std::io::Result<Broker> {
        let addr = SocketAddr::from_abstract_name(socket_name(pid))?;
        let listener = Arc::new(UnixListener::bind_addr(&addr)?);
        let l = listener.clone();
        let thread = std::thread::Builder::new()
            .name("fdshare".into())
            .spawn(move || serve(&l, uid, &*resolve))?;
        Ok(Broker {
            listener,
            thread: Some(thread),
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // shutdown(2) on the listening socket makes the blocked accept return.
        // SAFETY: shutdown on a socket we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(l: &UnixListener, uid: u32, resolve: &Resolver) {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_read_timeout(Some(ANSWER_TIMEOUT));
                let _ = s.set_write_timeout(Some(ANSWER_TIMEOUT));
                answer(&s, uid, resolve);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The listener was shut down (the run ends), or cannot accept any more.
            Err(_) => return,
        }
    }
}

/// The peer's (pid, uid) from SO_PEERCRED.
fn peer(s: &UnixStream) -> Option<(i32, u32)> {
    // SAFETY: ucred is plain data.
    let mut c: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `c`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some((c.pid, c.uid))
}

fn answer(s: &UnixStream, uid: u32, resolve: &Resolver) {
    let mut req = [0u8; 12];
    if read_exact(s, &mut req).is_err() {
        return;
    }
    let word = |i: usize| i32::from_ne_bytes(req[i..i + 4].try_into().unwrap());
    let result = match peer(s) {
        _ if word(0) as u32 != MAGIC => Err(Errno(libc::EINVAL)),
        Some((_, p)) if p == uid || p == 0 => resolve(word(4), word(8) & libc::O_ACCMODE),
        _ => Err(Errno(libc::EACCES)),
    };
    let (code, fd) = match &result {
        Ok(fd) => (0, Some(fd.as_raw_fd())),
        Err(e) => (e.0, None),
    };
    let _ = send_with_fd(s, &code.to_ne_bytes(), fd);
}

fn read_exact(s: &UnixStream, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    let mut s = s;
    s.read_exact(buf)
}

/// Send `data` with descriptor `fd` attached (SCM_RIGHTS), if any.
fn send_with_fd(s: &UnixStream, data: &[u8], fd: Option<i32>) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer below outlives the call.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_ptr() as *mut libc::iovec;
    m.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(4) } as usize;
        m.msg_control = cbuf.as_mut_ptr().cast();
        m.msg_controllen = space;
        // SAFETY: the control buffer holds one cmsg with room for one int.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        }
    }
    // SAFETY: sendmsg reads the iovec and control buffer set up above.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &m, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receive `buf.len()` bytes and at most one descriptor.
fn recv_with_fd(s: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer below outlives the call.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_mut_ptr().cast();
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg writes into the iovec and control buffer set up above.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut m, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote into `cbuf`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    // More than one descriptor is not an answer: all are closed.
    let fd = if fds.len() == 1 { fds.pop() } else { None };
    Ok((n as usize, fd))
}

/// Ask the broker of the VMM with host pid `pid` for its guest's descriptor `n`, re-opened
/// with `flags`' access mode, on behalf of a guest of user `uid`. `Ok(None)`: no dualstack VMM
/// answers at that pid (open the host path instead).
pub fn fetch(pid: i32, n: i32, flags: i32, uid: u32) -> Result<Option<OwnedFd>, Errno> {
    let addr = SocketAddr::from_abstract_name(socket_name(pid)).map_err(Errno::from)?;
    let s = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match peer(&s) {
        Some((p, u)) if p == pid && (u == uid || u == 0) => {}
        // Someone else holds the name: not that VMM, and not to be trusted with the open.
        _ => return Err(Errno(libc::EACCES)),
    }
    s.set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(Errno::from)?;
    let mut req = Vec::with_capacity(12);
    req.extend_from_slice(&MAGIC.to_ne_bytes());
    req.extend_from_slice(&n.to_ne_bytes());
    req.extend_from_slice(&(flags & libc::O_ACCMODE).to_ne_bytes());
    send_with_fd(&s, &req, None).map_err(Errno::from)?;
    let mut code = [0u8; 4];
    let (got, fd) = recv_with_fd(&s, &mut code).map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN) => Errno(libc::EAGAIN),
        _ => Errno::from(e),
    })?;
    if got != 4 {
        return Err(Errno(libc::EIO));
    }
    match (i32::from_ne_bytes(code), fd) {
        (0, Some(fd)) => Ok(Some(fd)),
        (0, None) => Err(Errno(libc::EIO)),
        (e, _) => Err(Errno(e)),
    }
}

/// Re-open host descriptor `raw` (behind a guest descriptor) with access mode `flags`, as
/// `/proc/<pid>/fd/<n>` does: regular files only.
pub fn reopen_regular(raw: i32, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: stat is plain data; fstat writes one for a descriptor we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(raw, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno(libc::EACCES));
    }
    let c = std::ffi::CString::new(format!("/proc/self/fd/{raw}")).unwrap();
    // SAFETY: opens a NUL-terminated path; returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), (flags & libc::O_ACCMODE) | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn own_uid() -> u32 {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    }

    fn own_pid() -> i32 {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() }
    }

    #[test]
    fn a_peer_gets_a_reopen_of_a_guest_file_and_nothing_else() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"segment").unwrap();
        let file: OwnedFd = f.into();
        let raw = file.as_raw_fd();
        let keep = Arc::new(file);
        let k = keep.clone();
        // Guest fd 7 is the file; guest fd 8 a pipe; every other number is not open.
        let (pr, _pw) = std::io::pipe().unwrap();
        let pipe: OwnedFd = pr.into();
        let praw = pipe.as_raw_fd();
        let broker = Broker::start(
            own_pid(),
            own_uid(),
            Box::new(move |n, flags| {
                let _ = (&k, &pipe);
                match n {
                    7 => reopen_regular(raw, flags),
                    8 => reopen_regular(praw, flags),
                    _ => Err(Errno(libc::ENOENT)),
                }
            }),
        )
        .unwrap();
        let got = fetch(own_pid(), 7, libc::O_RDONLY, own_uid())
            .unwrap()
            .expect("the broker answers");
        let mut s = String::new();
        use std::io::Read;
        std::fs::File::from(got).read_to_string(&mut s).unwrap();
        assert_eq!(
            s, "segment",
            "a new description: its own offset, from the start"
        );
        assert_eq!(
            fetch(own_pid(), 9, libc::O_RDWR, own_uid()).unwrap_err(),
            Errno(libc::ENOENT)
        );
        assert_eq!(
            fetch(own_pid(), 8, libc::O_RDONLY, own_uid()).unwrap_err(),
            Errno(libc::EACCES),
            "only regular files are shared"
        );
        drop(broker);
        // Gone with the run: nobody answers any more.
        assert!(matches!(
            fetch(own_pid(), 7, libc::O_RDONLY, own_uid()),
            Ok(None)
        ));
        drop(keep);
    }

    #[test]
    fn the_answering_socket_must_be_the_named_pid() {
        // A broker listening under another pid's name is not believed.
        let fake = own_pid() + 1_000_000;
        let _b = Broker::start(fake, own_uid(), Box::new(|_, _| Err(Errno(libc::ENOENT)))).unwrap();
        assert_eq!(
            fetch(fake, 3, libc::O_RDONLY, own_uid()).unwrap_err(),
            Errno(libc::EACCES)
        );
    }

    #[test]
    fn a_malformed_request_is_refused() {
        let pid = own_pid() + 2_000_000;
        let _b = Broker::start(pid, own_uid(), Box::new(|_, _| Err(Errno(libc::ENOENT)))).unwrap();
        let addr = SocketAddr::from_abstract_name(socket_name(pid)).unwrap();
        let s = UnixStream::connect_addr(&addr).unwrap();
        (&s).write_all(&[0u8; 12]).unwrap();
        let mut code = [0u8; 4];
        let (n, fd) = recv_with_fd(&s, &mut code).unwrap();
        assert_eq!((n, fd.is_none()), (4, true));
        assert_eq!(i32::from_ne_bytes(code), libc::EINVAL);
    }
}
