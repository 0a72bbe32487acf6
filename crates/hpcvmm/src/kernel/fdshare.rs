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

/// What the broker asks of the run.
pub trait SharedGuest: Send + Sync {
    /// Guest descriptor `n` re-opened with `flags` (`O_RDONLY`/`O_WRONLY`/`O_RDWR`), or the
    /// errno the guest's own `/proc/self/fd/<n>` gives.
    fn reopen(&self, n: i32, flags: i32) -> Result<OwnedFd, Errno>;
    /// The guest's user memory `[addr, addr+len)`, if all of it is user memory.
    fn read(&self, addr: u64, len: u64) -> Option<Vec<u8>>;
    /// Write `data` to the guest's user memory at `addr`; false if it is not all user memory.
    fn write(&self, addr: u64, data: &[u8]) -> bool;
}

/// What a closure re-opening descriptors serves (no memory).
pub type Resolver = dyn Fn(i32, i32) -> Result<OwnedFd, Errno> + Send + Sync;

impl SharedGuest for Box<Resolver> {
    fn reopen(&self, n: i32, flags: i32) -> Result<OwnedFd, Errno> {
        self(n, flags)
    }
    fn read(&self, _addr: u64, _len: u64) -> Option<Vec<u8>> {
        None
    }
    fn write(&self, _addr: u64, _data: &[u8]) -> bool {
        false
    }
}

/// First word of a cross-memory read request ("DSRD") and write request ("DSWR").
const MAGIC_READ: u32 = 0x4452_5344;
const MAGIC_WRITE: u32 = 0x5257_5344;

/// Most bytes one cross-memory request moves (a longer one is a partial transfer, as
/// process_vm_readv(2) allows).
pub const MAX_TRANSFER: u64 = 1 << 30;

/// Most iovecs of one side of a cross-memory request (IOV_MAX).
pub const MAX_IOVS: usize = 1024;

/// A running broker; dropping it stops its thread (and drops the resolver).
pub struct Broker {
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Listen as `@dualstack-fd/<pid>` and serve requests from peers of `uid` (or root)
    /// with `resolve`.
    pub fn start(pid: i32, uid: u32, guest: Box<dyn SharedGuest>) -> std::io::Result<Broker> {
        let addr = SocketAddr::from_abstract_name(socket_name(pid))?;
        let listener = Arc::new(UnixListener::bind_addr(&addr)?);
        let l = listener.clone();
        let thread = std::thread::Builder::new()
            .name("fdshare".into())
            .spawn(move || serve(&l, uid, &*guest))?;
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

fn serve(l: &UnixListener, uid: u32, guest: &dyn SharedGuest) {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_read_timeout(Some(ANSWER_TIMEOUT));
                let _ = s.set_write_timeout(Some(ANSWER_TIMEOUT));
                answer(&s, uid, guest);
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

fn answer(s: &UnixStream, uid: u32, guest: &dyn SharedGuest) {
    let mut req = [0u8; 12];
    if read_exact(s, &mut req).is_err() {
        return;
    }
    let word = |i: usize| i32::from_ne_bytes(req[i..i + 4].try_into().unwrap());
    let allowed = matches!(peer(s), Some((_, p)) if p == uid || p == 0);
    let magic = word(0) as u32;
    if magic == MAGIC_READ || magic == MAGIC_WRITE {
        let _ = answer_memory(s, allowed, magic == MAGIC_WRITE, word(4), guest);
        return;
    }
    let result = match allowed {
        _ if magic != MAGIC => Err(Errno(libc::EINVAL)),
        true => guest.reopen(word(4), word(8) & libc::O_ACCMODE),
        false => Err(Errno(libc::EACCES)),
    };
    let (code, fd) = match &result {
        Ok(fd) => (0, Some(fd.as_raw_fd())),
        Err(e) => (e.0, None),
    };
    let _ = send_with_fd(s, &code.to_ne_bytes(), fd);
}

/// A cross-memory request: `count` (base, len) pairs of this guest's memory, then (for a
/// write) the bytes. The answer is the byte count moved (i64; -errno on failure), then (for a
/// read) the bytes. Transfers stop at the first iovec that is not all user memory, as
/// process_vm_readv(2) stops at the first fault (at iovec, not page, granularity here).
fn answer_memory(
    s: &UnixStream,
    allowed: bool,
    write: bool,
    count: i32,
    guest: &dyn SharedGuest,
) -> std::io::Result<()> {
    use std::io::Write;
    let reply = |n: i64, data: &[u8]| -> std::io::Result<()> {
        let mut w = s;
        w.write_all(&n.to_ne_bytes())?;
        w.write_all(data)
    };
    if !(0..=MAX_IOVS as i32).contains(&count) {
        return reply(-i64::from(libc::EINVAL), &[]);
    }
    let mut raw = vec![0u8; count as usize * 16];
    read_exact(s, &mut raw)?;
    let iovs = parse_iovs(&raw);
    let total: u64 = iovs.iter().map(|&(_, l)| l).sum();
    if iovs.iter().any(|&(_, l)| l > MAX_TRANSFER) || total > MAX_TRANSFER {
        return reply(-i64::from(libc::EINVAL), &[]);
    }
    if write {
        // The bytes come first (the asker sends them whatever the answer).
        let mut data = vec![0u8; total as usize];
        read_exact(s, &mut data)?;
        if !allowed {
            return reply(-i64::from(libc::EPERM), &[]);
        }
        let mut done = 0usize;
        for &(base, len) in &iovs {
            if !guest.write(base, &data[done..done + len as usize]) {
                break;
            }
            done += len as usize;
        }
        let n = if done == 0 && total > 0 {
            -i64::from(libc::EFAULT)
        } else {
            done as i64
        };
        return reply(n, &[]);
    }
    if !allowed {
        return reply(-i64::from(libc::EPERM), &[]);
    }
    let mut out = Vec::with_capacity(total as usize);
    for &(base, len) in &iovs {
        match guest.read(base, len) {
            Some(b) => out.extend_from_slice(&b),
            None => break,
        }
    }
    if out.is_empty() && total > 0 {
        return reply(-i64::from(libc::EFAULT), &[]);
    }
    reply(out.len() as i64, &out)
}

fn parse_iovs(raw: &[u8]) -> Vec<(u64, u64)> {
    raw.chunks_exact(16)
        .map(|c| {
            (
                u64::from_ne_bytes(c[..8].try_into().unwrap()),
                u64::from_ne_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect()
}

/// Connect to the broker of `pid`, checking it is that pid's and of user `uid` (or root).
/// `Ok(None)`: nobody listens there.
fn connect(pid: i32, uid: u32) -> Result<Option<UnixStream>, Errno> {
    let addr = SocketAddr::from_abstract_name(socket_name(pid)).map_err(Errno::from)?;
    let s = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match peer(&s) {
        Some((p, u)) if p == pid && (u == uid || u == 0) => {}
        // Someone else holds the name: not that VMM, and not to be trusted.
        _ => return Err(Errno(libc::EACCES)),
    }
    s.set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(Errno::from)?;
    Ok(Some(s))
}

/// Read the guest memory `remote` ((base, len) pairs, at most [`MAX_IOVS`], at most
/// [`MAX_TRANSFER`] bytes in all) of the VM whose VMM has host pid `pid`, for a guest of user
/// `uid`. `Ok(None)`: no dualstack VMM at that pid. The bytes may be fewer than asked (the
/// transfer stopped at an iovec that is not user memory there).
pub fn read_memory(pid: i32, uid: u32, remote: &[(u64, u64)]) -> Result<Option<Vec<u8>>, Errno> {
    let Some(s) = connect(pid, uid)? else {
        return Ok(None);
    };
    send_memory_request(&s, MAGIC_READ, remote, &[])?;
    let n = read_count(&s)?;
    let mut data = vec![0u8; n as usize];
    read_exact(&s, &mut data).map_err(Errno::from)?;
    Ok(Some(data))
}

/// Write `data` to the guest memory `remote` of the VM whose VMM has host pid `pid` (the
/// lengths of `remote` add up to `data.len()`). `Ok(None)`: no dualstack VMM at that pid;
/// else the bytes written.
pub fn write_memory(
    pid: i32,
    uid: u32,
    remote: &[(u64, u64)],
    data: &[u8],
) -> Result<Option<u64>, Errno> {
    let Some(s) = connect(pid, uid)? else {
        return Ok(None);
    };
    send_memory_request(&s, MAGIC_WRITE, remote, data)?;
    read_count(&s).map(Some)
}

fn send_memory_request(
    s: &UnixStream,
    magic: u32,
    remote: &[(u64, u64)],
    data: &[u8],
) -> Result<(), Errno> {
    use std::io::Write;
    let mut req = Vec::with_capacity(12 + remote.len() * 16);
    req.extend_from_slice(&magic.to_ne_bytes());
    req.extend_from_slice(&(remote.len() as i32).to_ne_bytes());
    req.extend_from_slice(&0i32.to_ne_bytes());
    for &(b, l) in remote {
        req.extend_from_slice(&b.to_ne_bytes());
        req.extend_from_slice(&l.to_ne_bytes());
    }
    let mut w = s;
    w.write_all(&req).map_err(Errno::from)?;
    w.write_all(data).map_err(Errno::from)
}

fn read_count(s: &UnixStream) -> Result<u64, Errno> {
    let mut n = [0u8; 8];
    read_exact(s, &mut n).map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN) => Errno(libc::EAGAIN),
        _ => Errno::from(e),
    })?;
    match i64::from_ne_bytes(n) {
        n if n < 0 => Err(Errno((-n) as i32)),
        n => Ok(n as u64),
    }
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
    let Some(s) = connect(pid, uid)? else {
        return Ok(None);
    };
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

    /// Tests whose broker is named after this process's pid, one at a time.
    static OWN_PID: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn none() -> Box<dyn SharedGuest> {
        let r: Box<Resolver> = Box::new(|_, _| Err(Errno(libc::ENOENT)));
        Box::new(r)
    }

    /// A guest memory of 4 KiB at guest address 0x1000.
    struct FakeGuest(std::sync::Mutex<Vec<u8>>);

    impl SharedGuest for FakeGuest {
        fn reopen(&self, _n: i32, _flags: i32) -> Result<OwnedFd, Errno> {
            Err(Errno(libc::ENOENT))
        }
        fn read(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
            let m = self.0.lock().unwrap();
            let at = addr.checked_sub(0x1000)? as usize;
            m.get(at..at.checked_add(len as usize)?).map(<[u8]>::to_vec)
        }
        fn write(&self, addr: u64, data: &[u8]) -> bool {
            let mut m = self.0.lock().unwrap();
            let Some(at) = addr.checked_sub(0x1000) else {
                return false;
            };
            match m.get_mut(at as usize..at as usize + data.len()) {
                Some(d) => {
                    d.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn cross_memory_reads_and_writes_stop_at_the_first_bad_iovec() {
        let _own = OWN_PID.lock().unwrap_or_else(|e| e.into_inner());
        let g = FakeGuest(std::sync::Mutex::new((0..4096).map(|i| i as u8).collect()));
        let _b = Broker::start(own_pid(), own_uid(), Box::new(g)).unwrap();
        let me = own_pid();
        let got = read_memory(me, own_uid(), &[(0x1000, 4), (0x1ffe, 2)])
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 0xfe, 0xff]);
        // The second iovec runs past the end: only the first is read.
        let got = read_memory(me, own_uid(), &[(0x1000, 2), (0x1fff, 2)])
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![0, 1]);
        assert_eq!(
            read_memory(me, own_uid(), &[(0x10, 2)]).unwrap_err(),
            Errno(libc::EFAULT)
        );
        assert_eq!(
            write_memory(me, own_uid(), &[(0x1010, 3), (0x9000, 1)], b"abcd").unwrap(),
            Some(3)
        );
        let got = read_memory(me, own_uid(), &[(0x1010, 3)]).unwrap().unwrap();
        assert_eq!(got, b"abc");
        assert_eq!(
            write_memory(me, own_uid(), &[(0, 1)], b"z").unwrap_err(),
            Errno(libc::EFAULT)
        );
    }

    #[test]
    fn a_peer_gets_a_reopen_of_a_guest_file_and_nothing_else() {
        let _own = OWN_PID.lock().unwrap_or_else(|e| e.into_inner());
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
        let resolve: Box<Resolver> = Box::new(move |n, flags| {
            let _ = (&k, &pipe);
            match n {
                7 => reopen_regular(raw, flags),
                8 => reopen_regular(praw, flags),
                _ => Err(Errno(libc::ENOENT)),
            }
        });
        let broker = Broker::start(own_pid(), own_uid(), Box::new(resolve)).unwrap();
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
        let _b = Broker::start(fake, own_uid(), none()).unwrap();
        assert_eq!(
            fetch(fake, 3, libc::O_RDONLY, own_uid()).unwrap_err(),
            Errno(libc::EACCES)
        );
    }

    #[test]
    fn a_malformed_request_is_refused() {
        let pid = own_pid() + 2_000_000;
        let _b = Broker::start(pid, own_uid(), none()).unwrap();
        let addr = SocketAddr::from_abstract_name(socket_name(pid)).unwrap();
        let s = UnixStream::connect_addr(&addr).unwrap();
        (&s).write_all(&[0u8; 12]).unwrap();
        let mut code = [0u8; 4];
        let (n, fd) = recv_with_fd(&s, &mut code).unwrap();
        assert_eq!((n, fd.is_none()), (4, true));
        assert_eq!(i32::from_ne_bytes(code), libc::EINVAL);
    }
}
