//! System call handlers against a kernel with a plain `Vec`-backed guest memory: argument
//! handling (hostile pointers, bad descriptors, lengths, aliases) without a VM.

use std::sync::Arc;

use super::*;
use crate::kernel::files::FdTable;
use crate::kernel::fsroot::FsRoot;
use crate::kernel::group::{Credentials, GroupParts, Limits, Uts};
use crate::kernel::mem::VecMemory;
use crate::kernel::mm::AddressSpace;
use crate::kernel::{Kernel, GUEST_PID};
use crate::layout::USER_START;

const MEM: u64 = 16 << 20;
/// A user address with room to spare.
const BUF: u64 = USER_START + 0x1000;

struct Fake {
    kernel: Kernel,
    task: Task,
    frame: Frame,
    _root: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("hello.txt"), b"hello world").unwrap();
        let mem: Arc<dyn GuestRam> = Arc::new(VecMemory::new(MEM, USER_START));
        let group = ThreadGroup::new(GroupParts {
            mem,
            mm: AddressSpace::new(USER_START, MEM, (USER_START, USER_START + 0x10_0000)),
            files: FdTable::with_stdio(),
            fs: FsRoot::open(root.path(), "/").unwrap(),
            creds: Credentials::of_host(),
            limits: Limits::new(8 << 20, 256),
            exe_path: "/prog".into(),
            uts: Uts::default(),
        });
        Fake {
            kernel: Kernel {
                run: Run::new(2),
                group,
            },
            task: Task::main(GUEST_PID, 2),
            frame: Frame::default(),
            _root: root,
        }
    }

    fn call(&mut self, name: &str, a: [u64; 6]) -> SysOutcome {
        let nr = table::entries()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no syscall {name}"))
            .nr;
        let mut ctx = Ctx::new(
            &self.kernel.run,
            &self.kernel.group,
            &mut self.task,
            &self.frame,
        );
        dispatch(&mut ctx, u64::from(nr), &Args::new(a))
    }

    /// The call's RAX as a result.
    fn sys(&mut self, name: &str, a: [u64; 6]) -> Result<u64, i32> {
        match self.call(name, a) {
            SysOutcome::Return(v) if (v as i64) < 0 && (v as i64) > -4096 => {
                Err(-(v as i64) as i32)
            }
            SysOutcome::Return(v) => Ok(v),
            other => panic!("{name}: unexpected outcome {other:?}"),
        }
    }

    fn mem(&self) -> &dyn GuestRam {
        &*self.kernel.group.mem
    }

    fn put_str(&self, addr: u64, s: &str) {
        self.mem().write(addr, s.as_bytes()).unwrap();
        self.mem().write(addr + s.len() as u64, &[0]).unwrap();
    }
}

#[test]
fn hostile_pointers_are_efault() {
    let mut f = Fake::new();
    // A path that runs off the end of user memory without a NUL.
    f.mem().write(MEM - 4, b"aaaa").unwrap();
    // Into the VMM's own structures (GDT, stubs below USER_START), past the end, wrapping.
    for p in [
        0,
        0x1000,
        crate::layout::SYSCALL_STUB,
        MEM - 4,
        u64::MAX - 8,
    ] {
        assert_eq!(
            f.sys("clock_gettime", [0, p, 0, 0, 0, 0]),
            Err(libc::EFAULT),
            "{p:#x}"
        );
        assert_eq!(
            f.sys("uname", [p, 0, 0, 0, 0, 0]),
            Err(libc::EFAULT),
            "{p:#x}"
        );
        assert_eq!(
            f.sys("write", [1, p, 16, 0, 0, 0]),
            Err(libc::EFAULT),
            "{p:#x}"
        );
        assert_eq!(
            f.sys("open", [p, 0, 0, 0, 0, 0]),
            Err(libc::EFAULT),
            "{p:#x}"
        );
    }
    // A length that runs off the end of user memory.
    assert_eq!(f.sys("read", [0, MEM - 8, 64, 0, 0, 0]), Err(libc::EFAULT));
    assert_eq!(f.sys("clock_gettime", [0, BUF, 0, 0, 0, 0]), Ok(0));
}

#[test]
fn bad_descriptors_are_ebadf() {
    let mut f = Fake::new();
    // A host fd the VMM itself holds (like its KVM fds) is not a guest fd.
    let host = std::fs::File::open("/dev/null").unwrap();
    let n = std::os::fd::AsRawFd::as_raw_fd(&host) as u64;
    for fd in [n, 3, 1000, u64::MAX, (-100i64) as u64] {
        assert_eq!(
            f.sys("read", [fd, BUF, 8, 0, 0, 0]),
            Err(libc::EBADF),
            "fd {fd}"
        );
        assert_eq!(
            f.sys("close", [fd, 0, 0, 0, 0, 0]),
            Err(libc::EBADF),
            "fd {fd}"
        );
        assert_eq!(
            f.sys("fstat", [fd, BUF, 0, 0, 0, 0]),
            Err(libc::EBADF),
            "fd {fd}"
        );
    }
    assert_eq!(f.sys("dup2", [3, 5, 0, 0, 0, 0]), Err(libc::EBADF));
    assert_eq!(f.sys("dup2", [1, 1 << 20, 0, 0, 0, 0]), Err(libc::EBADF));
}

#[test]
fn files_open_read_dup_close() {
    let mut f = Fake::new();
    f.put_str(BUF, "/hello.txt");
    let fd = f
        .sys("open", [BUF, libc::O_RDONLY as u64, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(fd, 3);
    assert_eq!(f.sys("read", [fd, BUF + 0x100, 5, 0, 0, 0]), Ok(5));
    assert_eq!(f.mem().read_vec(BUF + 0x100, 5).unwrap(), b"hello");
    // dup shares the offset; dup2 to itself is a no-op, dup3 to itself is EINVAL.
    let d = f.sys("dup", [fd, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("read", [d, BUF + 0x100, 6, 0, 0, 0]), Ok(6));
    assert_eq!(f.mem().read_vec(BUF + 0x100, 6).unwrap(), b" world");
    assert_eq!(f.sys("dup2", [fd, fd, 0, 0, 0, 0]), Ok(fd));
    assert_eq!(f.sys("dup3", [fd, fd, 0, 0, 0, 0]), Err(libc::EINVAL));
    let flags = libc::O_CLOEXEC as u64;
    assert_eq!(f.sys("dup3", [fd, 9, flags, 0, 0, 0]), Ok(9));
    assert_eq!(f.sys("fcntl", [9, libc::F_GETFD as u64, 0, 0, 0, 0]), Ok(1));
    assert_eq!(
        f.sys("fcntl", [fd, libc::F_GETFD as u64, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(
        f.sys("dup3", [fd, 10, 0x4000_0000, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("close", [fd, 0, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("close", [fd, 0, 0, 0, 0, 0]), Err(libc::EBADF));
    // Paths cannot leave the root.
    f.put_str(BUF, "/../../../../etc/passwd");
    assert_eq!(f.sys("open", [BUF, 0, 0, 0, 0, 0]), Err(libc::ENOENT));
}

#[test]
fn virtual_files_and_links() {
    let mut f = Fake::new();
    f.put_str(BUF, "/sys/devices/system/cpu/online");
    let fd = f
        .sys("openat", [libc::AT_FDCWD as u64, BUF, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(f.sys("read", [fd, BUF + 0x100, 64, 0, 0, 0]), Ok(4));
    assert_eq!(f.mem().read_vec(BUF + 0x100, 4).unwrap(), b"0-1\n");
    f.put_str(BUF, "/proc/self/exe");
    assert_eq!(f.sys("readlink", [BUF, BUF + 0x100, 64, 0, 0, 0]), Ok(5));
    assert_eq!(f.mem().read_vec(BUF + 0x100, 5).unwrap(), b"/prog");
}

#[test]
fn lengths_and_flags_are_checked() {
    let mut f = Fake::new();
    assert_eq!(
        f.sys("rt_sigprocmask", [0, 0, BUF, 4, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("rt_sigaction", [0, 0, 0, 8, 0, 0]), Err(libc::EINVAL));
    assert_eq!(
        f.sys("set_robust_list", [BUF, 23, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("pipe2", [BUF, 0x1234_5678, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("futex", [BUF + 1, 1, 1, 0, 0, 0]), Err(libc::EINVAL));
    assert_eq!(f.sys("futex", [BUF, 1, 1, 0, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("munmap", [BUF, u64::MAX, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("mmap", [0, 0, 3, 0x22, u64::MAX, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("getrlimit", [99, BUF, 0, 0, 0, 0]), Err(libc::EINVAL));
    assert_eq!(
        f.sys("getrlimit", [libc::RLIMIT_NOFILE as u64, BUF, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.mem().read_u64(BUF).unwrap(), 1024);
}

#[test]
fn control_outcomes_and_unsupported_calls() {
    let mut f = Fake::new();
    assert!(matches!(
        f.call("exit_group", [3, 0, 0, 0, 0, 0]),
        SysOutcome::ExitGroup(3)
    ));
    // The only thread's exit ends the group.
    assert!(matches!(
        f.call("exit", [7, 0, 0, 0, 0, 0]),
        SysOutcome::ExitGroup(7)
    ));
    let abrt = libc::SIGABRT as u64;
    assert!(matches!(
        f.call("tgkill", [1000, 1000, abrt, 0, 0, 0]),
        SysOutcome::Deliver(6)
    ));
    assert_eq!(f.sys("tgkill", [1, 1000, abrt, 0, 0, 0]), Err(libc::ESRCH));
    assert_eq!(f.sys("fork", [0; 6]), Err(libc::ENOSYS));
    assert_eq!(f.sys("ptrace", [0; 6]), Err(libc::ENOSYS));
    let mut ctx = Ctx::new(&f.kernel.run, &f.kernel.group, &mut f.task, &f.frame);
    let o = dispatch(&mut ctx, 100_000, &Args::default());
    assert!(matches!(o, SysOutcome::Return(v) if v as i64 == -(libc::ENOSYS as i64)));
    assert!(ctx.unsupported);
}

// ---- sockets (issue 12) ----

const AF_UNIX: u64 = libc::AF_UNIX as u64;
const STREAM: u64 = libc::SOCK_STREAM as u64;

/// A guest `struct msghdr` at `at` with one iovec at `at + 64` over `[buf, buf+len)` and
/// `control`/`controllen` as given.
fn put_msghdr(f: &Fake, at: u64, buf: u64, len: u64, control: u64, controllen: u64) {
    let m = sockets::GuestMsghdr {
        iov: at + 64,
        iovlen: 1,
        control,
        controllen,
        ..Default::default()
    };
    f.mem().put(at, &m).unwrap();
    f.mem().put(at + 64, &[buf, len]).unwrap();
}

fn socketpair(f: &mut Fake) -> (u64, u64) {
    assert_eq!(f.sys("socketpair", [AF_UNIX, STREAM, 0, BUF, 0, 0]), Ok(0));
    let sv: [i32; 2] = f.mem().get(BUF).unwrap();
    (sv[0] as u64, sv[1] as u64)
}

#[test]
fn socketpair_moves_bytes_and_descriptors() {
    let mut f = Fake::new();
    let (a, b) = socketpair(&mut f);
    assert_eq!((a, b), (3, 4));
    f.mem().write(BUF + 0x100, b"ping").unwrap();
    assert_eq!(f.sys("write", [a, BUF + 0x100, 4, 0, 0, 0]), Ok(4));
    assert_eq!(f.sys("read", [b, BUF + 0x200, 16, 0, 0, 0]), Ok(4));
    assert_eq!(f.mem().read_vec(BUF + 0x200, 4).unwrap(), b"ping");
    // SCM_RIGHTS: the read end of a pipe travels over the pair and arrives as a new guest fd.
    assert_eq!(f.sys("pipe", [BUF, 0, 0, 0, 0, 0]), Ok(0));
    let p: [i32; 2] = f.mem().get(BUF).unwrap();
    let ctl = BUF + 0x400;
    f.mem().put(ctl, &[20u64]).unwrap(); // cmsg_len
    f.mem()
        .put(ctl + 8, &[libc::SOL_SOCKET, libc::SCM_RIGHTS, p[0], 0])
        .unwrap();
    put_msghdr(&f, BUF + 0x800, BUF + 0x100, 4, ctl, 24);
    assert_eq!(f.sys("sendmsg", [a, BUF + 0x800, 0, 0, 0, 0]), Ok(4));
    assert_eq!(f.sys("close", [p[0] as u64, 0, 0, 0, 0, 0]), Ok(0));
    f.mem().write(ctl, &[0u8; 64]).unwrap();
    put_msghdr(&f, BUF + 0x800, BUF + 0x200, 16, ctl, 64);
    assert_eq!(f.sys("recvmsg", [b, BUF + 0x800, 0, 0, 0, 0]), Ok(4));
    let m: sockets::GuestMsghdr = f.mem().get(BUF + 0x800).unwrap();
    assert_eq!(m.controllen, 24);
    let hdr: [i32; 4] = f.mem().get(ctl + 8).unwrap();
    assert_eq!((hdr[0], hdr[1]), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
    let got = hdr[2] as u64;
    assert!(got > 2, "a new guest fd: {got}");
    f.mem().write(BUF + 0x100, b"via").unwrap();
    assert_eq!(
        f.sys("write", [p[1] as u64, BUF + 0x100, 3, 0, 0, 0]),
        Ok(3)
    );
    assert_eq!(f.sys("read", [got, BUF + 0x200, 16, 0, 0, 0]), Ok(3));
    assert_eq!(f.mem().read_vec(BUF + 0x200, 3).unwrap(), b"via");
    assert_eq!(
        f.sys("shutdown", [a, libc::SHUT_WR as u64, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.sys("read", [b, BUF + 0x200, 16, 0, 0, 0]), Ok(0), "EOF");
}

#[test]
fn hostile_socket_arguments_fail_like_linux() {
    let mut f = Fake::new();
    let (a, _b) = socketpair(&mut f);
    // Families the VMM does not pass through, bad type flags.
    let packet = libc::AF_PACKET as u64;
    assert_eq!(
        f.sys("socket", [packet, 3, 0, 0, 0, 0]),
        Err(libc::EAFNOSUPPORT)
    );
    assert_eq!(
        f.sys("socket", [AF_UNIX, 1 << 20, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    // Address lengths: too long or negative is EINVAL; unreadable is EFAULT.
    let s = f.sys("socket", [AF_UNIX, STREAM, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("bind", [s, BUF, 129, 0, 0, 0]), Err(libc::EINVAL));
    assert_eq!(
        f.sys("bind", [s, BUF, u64::MAX, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("connect", [s, MEM - 4, 16, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(
        f.sys("connect", [s, 0x1000, 16, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    // Output lengths: negative is EINVAL, an unwritable length word EFAULT.
    f.mem().put(BUF, &(-1i32)).unwrap();
    assert_eq!(
        f.sys("getsockname", [a, BUF + 8, BUF, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("getsockname", [a, BUF + 8, MEM - 2, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(
        f.sys("accept4", [s, 0, 0, 0x4000_0000, 0, 0]),
        Err(libc::EINVAL)
    );
    // Not a socket, not a descriptor.
    f.put_str(BUF, "/hello.txt");
    let file = f.sys("open", [BUF, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("listen", [file, 1, 0, 0, 0, 0]), Err(libc::ENOTSOCK));
    assert_eq!(f.sys("listen", [999, 1, 0, 0, 0, 0]), Err(libc::EBADF));
    // msghdr: unreadable, too many iovecs, too much control data, a lying cmsg_len, a bad fd
    // in SCM_RIGHTS, a negative option length.
    let m = BUF + 0x800;
    assert_eq!(
        f.sys("sendmsg", [a, MEM - 8, 0, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    put_msghdr(&f, m, BUF + 0x100, 4, 0, 0);
    f.mem().put(m + 24, &1025u64).unwrap();
    assert_eq!(f.sys("sendmsg", [a, m, 0, 0, 0, 0]), Err(libc::EMSGSIZE));
    assert_eq!(f.sys("recvmsg", [a, m, 0, 0, 0, 0]), Err(libc::EMSGSIZE));
    put_msghdr(&f, m, BUF + 0x100, 4, BUF + 0x400, 1 << 40);
    assert_eq!(f.sys("sendmsg", [a, m, 0, 0, 0, 0]), Err(libc::ENOBUFS));
    f.mem().put(BUF + 0x400, &[999u64, 1]).unwrap();
    put_msghdr(&f, m, BUF + 0x100, 4, BUF + 0x400, 24);
    assert_eq!(f.sys("sendmsg", [a, m, 0, 0, 0, 0]), Err(libc::EINVAL));
    f.mem().put(BUF + 0x400, &[20u64]).unwrap();
    f.mem()
        .put(BUF + 0x408, &[libc::SOL_SOCKET, libc::SCM_RIGHTS, 77, 0])
        .unwrap();
    assert_eq!(f.sys("sendmsg", [a, m, 0, 0, 0, 0]), Err(libc::EBADF));
    put_msghdr(&f, m, MEM - 2, 4, 0, 0);
    assert_eq!(f.sys("sendmsg", [a, m, 0, 0, 0, 0]), Err(libc::EFAULT));
    let (sol, rcv) = (libc::SOL_SOCKET as u64, libc::SO_RCVBUF as u64);
    assert_eq!(
        f.sys("setsockopt", [a, sol, rcv, BUF, u64::MAX, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("setsockopt", [a, sol, rcv, MEM - 2, 4, 0]),
        Err(libc::EFAULT)
    );
    f.mem().put(BUF, &4i32).unwrap();
    assert_eq!(f.sys("getsockopt", [a, sol, rcv, BUF + 8, BUF, 0]), Ok(0));
    assert!(f.mem().get::<i32>(BUF + 8).unwrap() > 0);
    // Interface ioctls on a socket: unknown requests are ENOTTY, ethtool EOPNOTSUPP.
    assert_eq!(f.sys("ioctl", [a, 0x1234, BUF, 0, 0, 0]), Err(libc::ENOTTY));
    assert_eq!(
        f.sys("ioctl", [a, 0x8946, BUF, 0, 0, 0]),
        Err(libc::EOPNOTSUPP)
    );
}

#[test]
fn unix_paths_resolve_inside_the_root_and_tcp_loopback_works() {
    let mut f = Fake::new();
    // bind "/sock" creates the socket in the guest's root directory.
    let srv = f.sys("socket", [AF_UNIX, STREAM, 0, 0, 0, 0]).unwrap();
    let mut sa = [0u8; 110];
    sa[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    sa[2..8].copy_from_slice(b"/sock\0");
    f.mem().write(BUF, &sa).unwrap();
    assert_eq!(f.sys("bind", [srv, BUF, 8, 0, 0, 0]), Ok(0));
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(f._root.path().join("sock")).unwrap();
    assert!(meta.file_type().is_socket(), "the socket is in the root");
    assert_eq!(f.sys("listen", [srv, 4, 0, 0, 0, 0]), Ok(0));
    let cli = f.sys("socket", [AF_UNIX, STREAM, 0, 0, 0, 0]).unwrap();
    // "../../sock" from "/" is still the root's socket.
    sa[2..13].copy_from_slice(b"../../sock\0");
    f.mem().write(BUF, &sa).unwrap();
    assert_eq!(f.sys("connect", [cli, BUF, 13, 0, 0, 0]), Ok(0));
    let nb = libc::SOCK_NONBLOCK as u64;
    let conn = f.sys("accept4", [srv, 0, 0, nb, 0, 0]).unwrap();
    f.mem().write(BUF + 0x100, b"hi").unwrap();
    assert_eq!(f.sys("sendto", [cli, BUF + 0x100, 2, 0, 0, 0]), Ok(2));
    assert_eq!(f.sys("recvfrom", [conn, BUF + 0x200, 8, 0, 0, 0]), Ok(2));
    assert_eq!(
        f.sys("recvfrom", [conn, BUF + 0x200, 8, 0, 0, 0]),
        Err(libc::EAGAIN)
    );
    // A missing path is ENOENT, not a host path.
    sa[2..8].copy_from_slice(b"/nope\0");
    f.mem().write(BUF, &sa).unwrap();
    let c2 = f.sys("socket", [AF_UNIX, STREAM, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("connect", [c2, BUF, 8, 0, 0, 0]), Err(libc::ENOENT));

    // TCP on loopback: bind to port 0, read the port back, connect, accept with the address.
    let inet = libc::AF_INET as u64;
    let l = f.sys("socket", [inet, STREAM, 0, 0, 0, 0]).unwrap();
    let mut sin = [0u8; 16];
    sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
    f.mem().write(BUF, &sin).unwrap();
    assert_eq!(f.sys("bind", [l, BUF, 16, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("listen", [l, 4, 0, 0, 0, 0]), Ok(0));
    f.mem().put(BUF + 0x40, &128i32).unwrap();
    assert_eq!(f.sys("getsockname", [l, BUF, BUF + 0x40, 0, 0, 0]), Ok(0));
    assert_eq!(f.mem().get::<u32>(BUF + 0x40).unwrap(), 16);
    let port = f.mem().read_vec(BUF + 2, 2).unwrap();
    assert_ne!(port, [0, 0]);
    let c = f.sys("socket", [inet, STREAM, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("connect", [c, BUF, 16, 0, 0, 0]), Ok(0));
    // A 4-byte buffer for a 16-byte address: truncated, full length reported.
    f.mem().put(BUF + 0x40, &4i32).unwrap();
    f.mem().write(BUF + 0x80, &[0xee; 8]).unwrap();
    let a = f
        .sys("accept", [l, BUF + 0x80, BUF + 0x40, 0, 0, 0])
        .unwrap();
    assert!(a > c);
    assert_eq!(f.mem().get::<u32>(BUF + 0x40).unwrap(), 16);
    assert_eq!(
        f.mem().read_vec(BUF + 0x84, 4).unwrap(),
        [0xee; 4],
        "not written past"
    );
    f.mem().put(BUF + 0x40, &128i32).unwrap();
    assert_eq!(
        f.sys("getpeername", [a, BUF + 0x80, BUF + 0x40, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.mem().read_vec(BUF + 0x84, 4).unwrap(), [127, 0, 0, 1]);
    // poll sees the accepted socket readable once the client writes.
    f.mem().write(BUF + 0x100, b"x").unwrap();
    assert_eq!(f.sys("write", [c, BUF + 0x100, 1, 0, 0, 0]), Ok(1));
    f.mem()
        .put(BUF + 0x300, &[a as i32, i32::from(libc::POLLIN)])
        .unwrap();
    assert_eq!(f.sys("poll", [BUF + 0x300, 1, 1000, 0, 0, 0]), Ok(1));
}

#[test]
fn epoll_reports_what_was_registered() {
    let mut f = Fake::new();
    let (a, b) = socketpair(&mut f);
    let ep = f
        .sys("epoll_create1", [libc::EPOLL_CLOEXEC as u64, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        f.sys("epoll_create1", [1, 0, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("epoll_create", [0, 0, 0, 0, 0, 0]), Err(libc::EINVAL));
    // struct epoll_event is packed: u32 events, u64 data.
    let mut ev = [0u8; 12];
    ev[..4].copy_from_slice(&(libc::EPOLLIN as u32).to_ne_bytes());
    ev[4..].copy_from_slice(&0xfeed_beef_u64.to_ne_bytes());
    f.mem().write(BUF, &ev).unwrap();
    let add = libc::EPOLL_CTL_ADD as u64;
    assert_eq!(f.sys("epoll_ctl", [ep, add, b, BUF, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("epoll_ctl", [ep, add, ep, BUF, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("epoll_ctl", [a, add, b, BUF, 0, 0]),
        Err(libc::EINVAL),
        "not epoll"
    );
    assert_eq!(
        f.sys("epoll_ctl", [ep, add, 99, BUF, 0, 0]),
        Err(libc::EBADF)
    );
    assert_eq!(f.sys("epoll_wait", [ep, BUF + 0x100, 4, 0, 0, 0]), Ok(0));
    f.mem().write(BUF + 0x200, b"x").unwrap();
    assert_eq!(f.sys("write", [a, BUF + 0x200, 1, 0, 0, 0]), Ok(1));
    assert_eq!(f.sys("epoll_wait", [ep, BUF + 0x100, 4, 1000, 0, 0]), Ok(1));
    let got = f.mem().read_vec(BUF + 0x104, 8).unwrap();
    assert_eq!(u64::from_ne_bytes(got.try_into().unwrap()), 0xfeed_beef);
    assert_eq!(
        f.sys("epoll_wait", [ep, BUF, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("epoll_wait", [ep, MEM - 4, 4, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    // statfs of a path inside the root, and of an fd.
    f.put_str(BUF, "/hello.txt");
    assert_eq!(f.sys("statfs", [BUF, BUF + 0x100, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("fstatfs", [a, BUF + 0x100, 0, 0, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("statfs", [BUF, MEM - 8, 0, 0, 0, 0]),
        Err(libc::EFAULT)
    );
}

#[test]
fn shared_memory_without_a_window_and_hostile_shmctl() {
    let mut f = Fake::new();
    // The fake memory has no shared window: SysV attach has nowhere to go, and a writable
    // MAP_SHARED file mapping keeps its old answer.
    let id = f
        .sys(
            "shmget",
            [
                libc::IPC_PRIVATE as u64,
                4096,
                0o600 | libc::IPC_CREAT as u64,
                0,
                0,
                0,
            ],
        )
        .unwrap();
    assert_eq!(f.sys("shmat", [id, 0, 0, 0, 0, 0]), Err(libc::ENOMEM));
    assert_eq!(f.sys("shmctl", [id, 999, BUF, 0, 0, 0]), Err(libc::EINVAL));
    let stat = libc::IPC_STAT as u64;
    assert_eq!(
        f.sys("shmctl", [id, stat, MEM - 8, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(f.sys("shmctl", [id, stat, BUF, 0, 0, 0]), Ok(0));
    let segsz: u64 = f.mem().get(BUF + 48).unwrap(); // shm_segsz after the 48-byte ipc_perm
    assert_eq!(segsz, 4096);
    assert_eq!(
        f.sys("shmctl", [id, libc::IPC_RMID as u64, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.sys("shmdt", [BUF, 0, 0, 0, 0, 0]), Err(libc::EINVAL));
    f.put_str(BUF, "/hello.txt");
    let fd = f
        .sys("open", [BUF, libc::O_RDWR as u64, 0, 0, 0, 0])
        .unwrap();
    let (rw, shared) = (3u64, libc::MAP_SHARED as u64);
    assert_eq!(
        f.sys("mmap", [0, 4096, rw, shared, fd, 0]),
        Err(libc::ENODEV)
    );
}

#[test]
fn a_unix_socket_symlink_cannot_lead_out_of_the_root() {
    let mut f = Fake::new();
    // A host socket outside the guest's root, and a symlink to it inside the root.
    let outside = tempfile::tempdir().unwrap();
    let host_sock = outside.path().join("host.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&host_sock).unwrap();
    std::os::unix::fs::symlink(&host_sock, f._root.path().join("esc")).unwrap();
    let s = f.sys("socket", [AF_UNIX, STREAM, 0, 0, 0, 0]).unwrap();
    let mut sa = [0u8; 110];
    sa[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    sa[2..7].copy_from_slice(b"/esc\0");
    f.mem().write(BUF, &sa).unwrap();
    // The absolute link target is resolved inside the root, where it does not exist.
    assert_eq!(f.sys("connect", [s, BUF, 7, 0, 0, 0]), Err(libc::ENOENT));
    // bind on the link's name does not follow it either.
    assert_eq!(f.sys("bind", [s, BUF, 7, 0, 0, 0]), Err(libc::EADDRINUSE));
}
