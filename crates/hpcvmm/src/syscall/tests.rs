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
        let task = Task::main(GUEST_PID, 2);
        group.signals.add_task(task.sig.clone());
        Fake {
            kernel: Kernel {
                run: Run::new(2),
                group,
            },
            task,
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

/// What ld.so and dlopen do with a library: reserve its span with one file mapping (longer
/// than the file), map segments over parts of it with MAP_FIXED (one PROT_EXEC, one at a
/// file offset), zero the bss past EOF, mprotect part and munmap part; every step recorded as
/// a VMA with its file offset.
#[test]
fn file_mappings_as_the_dynamic_loader_makes_them() {
    use crate::kernel::mm::VmaBacking;
    let mut f = Fake::new();
    let lib: Vec<u8> = (0..0x2800u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(f._root.path().join("lib.so"), &lib).unwrap();
    f.put_str(BUF, "/lib.so");
    let fd = f.sys("open", [BUF, 0, 0, 0, 0, 0]).unwrap();
    let (r, rx, rw) = (1u64, 5u64, 3u64);
    let private = libc::MAP_PRIVATE as u64;
    let denywrite = libc::MAP_DENYWRITE as u64;
    let fixed = libc::MAP_FIXED as u64;
    // Dirty memory where the library will land: the mapping must not show it.
    let (base, _) = {
        let mut mm = f.kernel.group.mm.lock().unwrap();
        mm.map(0, 0x8000, false, false).unwrap()
    };
    f.mem().write(base, &[0xee; 0x8000]).unwrap();
    f.kernel
        .group
        .mm
        .lock()
        .unwrap()
        .unmap(base, 0x8000)
        .unwrap();
    let at = f
        .sys("mmap", [base, 0x8000, r, private | denywrite, fd, 0])
        .unwrap();
    assert_eq!(at, base, "the hint is free: taken");
    assert_eq!(f.mem().read_vec(at, 0x2800).unwrap(), lib);
    assert!(
        f.mem()
            .read_vec(at + 0x2800, 0x5800)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "past end of file: zero filled"
    );
    // Text: MAP_FIXED over the second page from file offset 0x1000, executable.
    let flags = private | denywrite | fixed;
    assert_eq!(
        f.sys("mmap", [at + 0x1000, 0x1000, rx, flags, fd, 0x1000]),
        Ok(at + 0x1000)
    );
    // Data: writable copy of the last file page at a later address; bss after it anonymous.
    assert_eq!(
        f.sys("mmap", [at + 0x3000, 0x1000, rw, flags, fd, 0x2000]),
        Ok(at + 0x3000)
    );
    assert_eq!(f.mem().read_vec(at + 0x3000, 0x800).unwrap(), lib[0x2000..]);
    assert!(f
        .mem()
        .read_vec(at + 0x3800, 0x800)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64;
    assert_eq!(
        f.sys("mmap", [at + 0x4000, 0x2000, rw, anon, u64::MAX, 0]),
        Ok(at + 0x4000)
    );
    // The gap becomes PROT_NONE, the tail is unmapped.
    assert_eq!(f.sys("mprotect", [at + 0x2000, 0x1000, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("munmap", [at + 0x6000, 0x2000, 0, 0, 0, 0]), Ok(0));
    let mm = f.kernel.group.mm.lock().unwrap();
    let v = |a: u64| mm.vmas().get(a).cloned();
    let text = v(at + 0x1000).unwrap();
    assert_eq!(
        (text.start, text.end, text.attrs.prot),
        (at + 0x1000, at + 0x2000, 5)
    );
    assert_eq!(
        text.attrs.backing,
        VmaBacking::FileCopy {
            path: Some("/lib.so".into()),
            offset: 0x1000
        }
    );
    assert_eq!(v(at + 0x2000).unwrap().attrs.prot, 0);
    assert_eq!(
        v(at + 0x2000).unwrap().attrs.backing,
        VmaBacking::FileCopy {
            path: Some("/lib.so".into()),
            offset: 0x2000
        },
        "the reservation's offset follows the cut"
    );
    assert_eq!(v(at + 0x4000).unwrap().attrs.backing, VmaBacking::Anonymous);
    assert!(v(at + 0x6000).is_none());
    assert!(mm.is_mapped(at, 0x6000) && !mm.is_mapped(at + 0x6000, 0x1000));
    drop(mm);
    // Descriptors that cannot be mapped.
    assert_eq!(
        f.sys("mmap", [0, 0x1000, r, private, 99, 0]),
        Err(libc::EBADF)
    );
    f.put_str(BUF, "/");
    let dir = f
        .sys("open", [BUF, libc::O_DIRECTORY as u64, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        f.sys("mmap", [0, 0x1000, r, private, dir, 0]),
        Err(libc::ENODEV)
    );
    f.put_str(BUF, "/lib.so");
    let wo = f
        .sys("open", [BUF, libc::O_WRONLY as u64, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        f.sys("mmap", [0, 0x1000, r, private, wo, 0]),
        Err(libc::EACCES)
    );
    let shared = libc::MAP_SHARED as u64;
    assert_eq!(
        f.sys("mmap", [0, 0x1000, rw, shared, fd, 0]),
        Err(libc::EACCES)
    );
    assert_eq!(
        f.sys("mmap", [0, 0x1000, r, shared, fd, 0x1000])
            .map(|_| ()),
        Ok(())
    );
}

impl Fake {
    fn path_at(&self, addr: u64, s: &str) -> u64 {
        self.put_str(addr, s);
        addr
    }

    fn root(&self) -> &std::path::Path {
        self._root.path()
    }
}

const P1: u64 = BUF + 0x2000;
const P2: u64 = BUF + 0x3000;
const OUT: u64 = BUF + 0x4000;

#[test]
fn statfs_sysinfo_groups_and_scheduler_queries() {
    let mut f = Fake::new();
    let p = f.path_at(P1, "/hello.txt");
    assert_eq!(f.sys("statfs", [p, OUT, 0, 0, 0, 0]), Ok(0));
    let bsize = f.mem().read_u64(OUT + 8).unwrap();
    assert!(bsize >= 512, "f_bsize {bsize}");
    let fd = f.sys("open", [p, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("fstatfs", [fd, OUT + 0x100, 0, 0, 0, 0]), Ok(0));
    assert_eq!(
        f.mem().read_u64(OUT).unwrap(),
        f.mem().read_u64(OUT + 0x100).unwrap()
    );
    assert_eq!(
        f.sys("fstatfs", [fd, 0x1000, 0, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    let missing = f.path_at(P1, "/nope");
    assert_eq!(
        f.sys("statfs", [missing, OUT, 0, 0, 0, 0]),
        Err(libc::ENOENT)
    );
    // getgroups: the count, then the list, then EINVAL for a short buffer.
    let n = f.sys("getgroups", [0, 0, 0, 0, 0, 0]).unwrap();
    // SAFETY: getgroups(0, NULL) only counts.
    let host = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    assert_eq!(n, host as u64);
    assert_eq!(f.sys("getgroups", [n.max(1), OUT, 0, 0, 0, 0]), Ok(n));
    if n > 1 {
        assert_eq!(f.sys("getgroups", [1, OUT, 0, 0, 0, 0]), Err(libc::EINVAL));
    }
    assert_eq!(
        f.sys("getgroups", [u64::MAX, OUT, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    // SCHED_OTHER, priority 0, for the guest's own threads only.
    f.mem().write(OUT, &[0xff; 4]).unwrap();
    assert_eq!(f.sys("sched_getparam", [0, OUT, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.mem().read_u32(OUT).unwrap(), 0);
    assert_eq!(
        f.sys("sched_getscheduler", [GUEST_PID as u64, 0, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(
        f.sys("sched_getscheduler", [99_999, 0, 0, 0, 0, 0]),
        Err(libc::ESRCH)
    );
    assert_eq!(
        f.sys("sched_getparam", [u64::MAX, OUT, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("sched_getparam", [0, 0, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("sched_get_priority_max", [1, 0, 0, 0, 0, 0]), Ok(99));
    assert_eq!(f.sys("sched_get_priority_min", [0, 0, 0, 0, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("sched_get_priority_max", [77, 0, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    // mincore: every mapped page resident; unmapped ENOMEM; unaligned EINVAL.
    assert_eq!(f.sys("mincore", [USER_START, 0x3000, OUT, 0, 0, 0]), Ok(0));
    assert_eq!(f.mem().read_vec(OUT, 3).unwrap(), [1, 1, 1]);
    assert_eq!(
        f.sys("mincore", [MEM - 0x1000, 0x1000, OUT, 0, 0, 0]),
        Err(libc::ENOMEM)
    );
    assert_eq!(
        f.sys("mincore", [USER_START + 1, 1, OUT, 0, 0, 0]),
        Err(libc::EINVAL)
    );
}

#[test]
fn personality_and_prctl() {
    let mut f = Fake::new();
    assert_eq!(f.sys("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("personality", [0x0040000, 0, 0, 0, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        Ok(0x0040000)
    );
    assert_eq!(
        f.sys("personality", [0x0008, 0, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    let name = f.path_at(P1, "a-very-long-thread-name");
    let pr = |o: i32| o as u64;
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_SET_NAME), name, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_GET_NAME), OUT, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.mem().read_vec(OUT, 16).unwrap(), b"a-very-long-thr\0");
    assert_eq!(
        f.task.child(1001, 0).comm,
        f.task.comm,
        "threads inherit the name"
    );
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_SET_PDEATHSIG), 9, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_GET_PDEATHSIG), OUT, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(f.mem().read_u32(OUT).unwrap(), 9);
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_SET_PDEATHSIG), 65, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_GET_NAME), 0x1000, 0, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(f.sys("prctl", [0x7777, 0, 0, 0, 0, 0]), Err(libc::EINVAL));
    assert_eq!(
        f.sys("prctl", [pr(libc::PR_GET_DUMPABLE), 0, 0, 0, 0, 0]),
        Ok(1)
    );
}

#[test]
fn eventfd_epoll_and_select() {
    let mut f = Fake::new();
    let efd = f
        .sys("eventfd2", [0, libc::EFD_NONBLOCK as u64, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(f.sys("read", [efd, OUT, 8, 0, 0, 0]), Err(libc::EAGAIN));
    assert_eq!(f.sys("eventfd2", [0, 0x10, 0, 0, 0, 0]), Err(libc::EINVAL));
    let ep = f
        .sys("epoll_create1", [libc::EPOLL_CLOEXEC as u64, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        f.sys("fcntl", [ep, libc::F_GETFD as u64, 0, 0, 0, 0]),
        Ok(1)
    );
    assert_eq!(
        f.sys("epoll_create1", [1, 0, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.sys("epoll_create", [0, 0, 0, 0, 0, 0]), Err(libc::EINVAL));
    // struct epoll_event { u32 events; u64 data } packed.
    let mut ev = Vec::new();
    ev.extend_from_slice(&(libc::EPOLLIN as u32).to_le_bytes());
    ev.extend_from_slice(&0x1234_5678_9abc_u64.to_le_bytes());
    f.mem().write(P1, &ev).unwrap();
    let add = libc::EPOLL_CTL_ADD as u64;
    assert_eq!(f.sys("epoll_ctl", [ep, add, efd, P1, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("epoll_ctl", [ep, add, efd, P1, 0, 0]),
        Err(libc::EEXIST)
    );
    assert_eq!(
        f.sys("epoll_ctl", [efd, add, ep, P1, 0, 0]),
        Err(libc::EINVAL),
        "not epoll"
    );
    assert_eq!(
        f.sys("epoll_ctl", [ep, add, ep, P1, 0, 0]),
        Err(libc::EINVAL),
        "itself"
    );
    assert_eq!(f.sys("epoll_wait", [ep, OUT, 4, 0, 0, 0]), Ok(0));
    f.mem().write(P2, &5u64.to_le_bytes()).unwrap();
    assert_eq!(f.sys("write", [efd, P2, 8, 0, 0, 0]), Ok(8));
    assert_eq!(f.sys("epoll_pwait", [ep, OUT, 4, 1000, 0, 8]), Ok(1));
    assert_eq!(f.mem().read_u32(OUT).unwrap(), libc::EPOLLIN as u32);
    assert_eq!(
        f.mem().read_vec(OUT + 4, 8).unwrap(),
        0x1234_5678_9abc_u64.to_le_bytes()
    );
    assert_eq!(
        f.sys("epoll_wait", [ep, OUT, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.sys("epoll_wait", [ep, 0x1000, 1, 0, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(f.sys("read", [efd, OUT, 8, 0, 0, 0]), Ok(8));
    assert_eq!(f.mem().read_u64(OUT).unwrap(), 5);
    // select on a pipe: the write end is writable, the read end readable once written.
    assert_eq!(f.sys("pipe2", [P2, 0, 0, 0, 0, 0]), Ok(0));
    let (r, w) = (
        u64::from(f.mem().read_u32(P2).unwrap()),
        u64::from(f.mem().read_u32(P2 + 4).unwrap()),
    );
    let set = |fd: u64| (1u64 << fd).to_le_bytes();
    let (rs, ws, tv) = (OUT, OUT + 0x100, OUT + 0x200);
    f.mem().write(rs, &set(r)).unwrap();
    f.mem().write(ws, &set(w)).unwrap();
    f.mem().write(tv, &[0u8; 16]).unwrap();
    let nfds = w.max(r) + 1;
    assert_eq!(f.sys("select", [nfds, rs, ws, 0, tv, 0]), Ok(1));
    assert_eq!(f.mem().read_u64(rs).unwrap(), 0, "nothing to read yet");
    assert_eq!(f.mem().read_u64(ws).unwrap(), 1 << w);
    assert_eq!(f.sys("write", [w, P1, 3, 0, 0, 0]), Ok(3));
    f.mem().write(rs, &set(r)).unwrap();
    assert_eq!(
        f.sys("pselect6", [nfds, rs, 0, 0, 0, 0]),
        Ok(1),
        "no timeout: blocks until ready"
    );
    assert_eq!(f.mem().read_u64(rs).unwrap(), 1 << r);
    f.mem().write(rs, &set(60)).unwrap();
    assert_eq!(f.sys("select", [61, rs, 0, 0, tv, 0]), Err(libc::EBADF));
    assert_eq!(f.sys("select", [2000, rs, 0, 0, tv, 0]), Err(libc::EINVAL));
    f.mem().write(tv, &[0xff; 16]).unwrap();
    assert_eq!(f.sys("select", [1, 0, 0, 0, tv, 0]), Err(libc::EINVAL));
}

#[test]
fn memfd_sendfile_copy_file_range_fallocate_fadvise_flock() {
    let mut f = Fake::new();
    let name = f.path_at(P1, "scratch");
    let m = f
        .sys("memfd_create", [name, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(f.sys("fcntl", [m, libc::F_GETFD as u64, 0, 0, 0, 0]), Ok(1));
    assert_eq!(
        f.sys("memfd_create", [name, 0x100, 0, 0, 0, 0]),
        Err(libc::EINVAL)
    );
    let hello = f.path_at(P2, "/hello.txt");
    let h = f.sys("open", [hello, 0, 0, 0, 0, 0]).unwrap();
    // sendfile with an offset leaves the file position alone.
    f.mem().write(OUT, &6u64.to_le_bytes()).unwrap();
    assert_eq!(f.sys("sendfile", [m, h, OUT, 100, 0, 0]), Ok(5));
    assert_eq!(f.mem().read_u64(OUT).unwrap(), 11);
    assert_eq!(f.sys("sendfile", [m, h, 0, 5, 0, 0]), Ok(5));
    assert_eq!(
        f.sys("sendfile", [m, h, 0x1000, 5, 0, 0]),
        Err(libc::EFAULT)
    );
    assert_eq!(f.sys("pread64", [m, OUT, 64, 0, 0, 0]), Ok(10));
    assert_eq!(f.mem().read_vec(OUT, 10).unwrap(), b"worldhello");
    // copy_file_range from hello.txt into a new file.
    let copy = f.path_at(P1, "/copy.txt");
    let flags = (libc::O_CREAT | libc::O_RDWR) as u64;
    let c = f.sys("open", [copy, flags, 0o644, 0, 0, 0]).unwrap();
    f.mem().write(OUT, &0u64.to_le_bytes()).unwrap();
    assert_eq!(f.sys("copy_file_range", [h, OUT, c, 0, 64, 0]), Ok(11));
    assert_eq!(
        std::fs::read(f.root().join("copy.txt")).unwrap(),
        b"hello world"
    );
    assert_eq!(
        f.sys("copy_file_range", [h, OUT, c, 0, 64, 7]),
        Err(libc::EINVAL)
    );
    // fallocate grows, fadvise advises, flock locks.
    assert_eq!(f.sys("fallocate", [c, 0, 0, 8192, 0, 0]), Ok(0));
    assert_eq!(
        std::fs::metadata(f.root().join("copy.txt")).unwrap().len(),
        8192
    );
    let dontneed = libc::POSIX_FADV_DONTNEED as u64;
    assert_eq!(f.sys("fadvise64", [c, 0, 0, dontneed, 0, 0]), Ok(0));
    assert_eq!(f.sys("fadvise64", [c, 0, 0, 99, 0, 0]), Err(libc::EINVAL));
    let ex_nb = (libc::LOCK_EX | libc::LOCK_NB) as u64;
    assert_eq!(f.sys("flock", [c, ex_nb, 0, 0, 0, 0]), Ok(0));
    // A second description of the same file conflicts, as on Linux.
    let c2 = f.sys("open", [copy, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        f.sys("flock", [c2, ex_nb, 0, 0, 0, 0]),
        Err(libc::EWOULDBLOCK)
    );
    assert_eq!(f.sys("flock", [c, libc::LOCK_UN as u64, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("flock", [c2, ex_nb, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("flock", [99, ex_nb, 0, 0, 0, 0]), Err(libc::EBADF));
}

#[test]
fn modes_owners_times_and_links_stay_inside_the_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut f = Fake::new();
    let root = f.root().to_path_buf();
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let hello = f.path_at(P1, "/hello.txt");
    assert_eq!(f.sys("chmod", [hello, 0o600, 0, 0, 0, 0]), Ok(0));
    assert_eq!(mode("hello.txt"), 0o600);
    let at = libc::AT_FDCWD as u64;
    assert_eq!(f.sys("fchmodat", [at, hello, 0o640, 0, 0, 0]), Ok(0));
    assert_eq!(mode("hello.txt"), 0o640);
    let fd = f.sys("open", [hello, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(f.sys("fchmod", [fd, 0o604, 0, 0, 0, 0]), Ok(0));
    assert_eq!(mode("hello.txt"), 0o604);
    let (uid, gid) = (
        u64::from(f.kernel.group.creds.euid),
        u64::from(f.kernel.group.creds.egid),
    );
    assert_eq!(f.sys("fchown", [fd, uid, gid, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("fchownat", [at, hello, uid, gid, 0, 0]), Ok(0));
    assert_eq!(
        f.sys("fchownat", [at, hello, uid, gid, 0x8000_0000, 0]),
        Err(libc::EINVAL)
    );
    // symlinks: relative and absolute targets resolve inside the root.
    let link = f.path_at(P2, "/link");
    let target = f.path_at(OUT, "hello.txt");
    assert_eq!(f.sys("symlink", [target, link, 0, 0, 0, 0]), Ok(0));
    assert_eq!(f.sys("readlink", [link, OUT + 0x100, 64, 0, 0, 0]), Ok(9));
    assert_eq!(
        f.sys("symlink", [target, link, 0, 0, 0, 0]),
        Err(libc::EEXIST)
    );
    assert_eq!(f.sys("chmod", [link, 0o644, 0, 0, 0, 0]), Ok(0));
    assert_eq!(mode("hello.txt"), 0o644, "chmod follows the link");
    // An absolute symlink to a host file: every call through it stays in the root.
    let escape = f.path_at(P2, "/escape");
    let host_file = tempfile::NamedTempFile::new().unwrap();
    let host_path = host_file.path().display().to_string();
    let t = f.path_at(OUT, &host_path);
    assert_eq!(f.sys("symlinkat", [t, at, escape, 0, 0, 0]), Ok(0));
    let before = std::fs::metadata(host_file.path()).unwrap();
    assert_eq!(
        f.sys("chmod", [escape, 0o777, 0, 0, 0, 0]),
        Err(libc::ENOENT)
    );
    assert_eq!(
        f.sys("fchownat", [at, escape, uid, gid, 0, 0]),
        Err(libc::ENOENT)
    );
    assert_eq!(
        f.sys("utimensat", [at, escape, 0, 0, 0, 0]),
        Err(libc::ENOENT)
    );
    let copy = f.path_at(P1, "/hard-escape");
    let follow = libc::AT_SYMLINK_FOLLOW as u64;
    assert_eq!(
        f.sys("linkat", [at, escape, at, copy, follow, 0]),
        Err(libc::ENOENT)
    );
    let after = std::fs::metadata(host_file.path()).unwrap();
    assert_eq!(before.mode(), after.mode());
    assert_eq!(before.mtime(), after.mtime());
    // Without AT_SYMLINK_NOFOLLOW's opposite, link(2) links the symlink itself.
    assert_eq!(f.sys("link", [escape, copy, 0, 0, 0, 0]), Ok(0));
    assert!(std::fs::symlink_metadata(root.join("hard-escape"))
        .unwrap()
        .file_type()
        .is_symlink());
    let hard = f.path_at(OUT, "/hard");
    let link = f.path_at(P2, "/link");
    assert_eq!(f.sys("linkat", [at, link, at, hard, follow, 0]), Ok(0));
    assert_eq!(
        std::fs::metadata(root.join("hard")).unwrap().nlink(),
        2,
        "the target, not the link"
    );
    // utimensat: explicit times on the file, then on the link itself.
    let times: [i64; 4] = [1_000_000, 0, 2_000_000, 0];
    let tb: Vec<u8> = times.iter().flat_map(|v| v.to_le_bytes()).collect();
    f.mem().write(OUT + 0x200, &tb).unwrap();
    let hello = f.path_at(P1, "/hello.txt");
    assert_eq!(f.sys("utimensat", [at, hello, OUT + 0x200, 0, 0, 0]), Ok(0));
    assert_eq!(
        std::fs::metadata(root.join("hello.txt")).unwrap().mtime(),
        2_000_000
    );
    let link = f.path_at(P2, "/link");
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
    assert_eq!(
        f.sys("utimensat", [at, link, OUT + 0x200, nofollow, 0, 0]),
        Ok(0)
    );
    assert_eq!(
        std::fs::symlink_metadata(root.join("link"))
            .unwrap()
            .mtime(),
        2_000_000
    );
    // futimens: a null path acts on the descriptor.
    assert_eq!(f.sys("utimensat", [fd, 0, 0, 0, 0, 0]), Ok(0));
    assert!(std::fs::metadata(root.join("hello.txt")).unwrap().mtime() > 2_000_000);
    assert_eq!(
        f.sys("utimensat", [at, hello, 0x1000, 0, 0, 0]),
        Err(libc::EFAULT)
    );
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
