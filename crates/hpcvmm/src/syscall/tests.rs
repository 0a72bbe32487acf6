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
    assert_eq!(f.sys("socket", [2, 1, 0, 0, 0, 0]), Err(libc::ENOSYS));
    let mut ctx = Ctx::new(&f.kernel.run, &f.kernel.group, &mut f.task, &f.frame);
    let o = dispatch(&mut ctx, 100_000, &Args::default());
    assert!(matches!(o, SysOutcome::Return(v) if v as i64 == -(libc::ENOSYS as i64)));
    assert!(ctx.unsupported);
}
