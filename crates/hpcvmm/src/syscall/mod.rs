//! Linux system call service. Every `syscall` the guest executes becomes exactly one VM exit
//! (an `out` in the LSTAR stub); [`dispatch`] serves it with the arguments from the `kvm_run`
//! sync registers and returns the value for RAX.

pub mod fs;
pub mod futex;
pub mod misc;
pub mod mm;
pub mod names;
pub mod thread;
pub mod time;

use crate::memory::{CStrError, Efault};
use crate::process::{Process, ThreadState};

/// A Linux errno, returned to the guest as `-errno` in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<Efault> for Errno {
    fn from(_: Efault) -> Self {
        Errno(libc::EFAULT)
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<CStrError> for Errno {
    fn from(e: CStrError) -> Self {
        match e {
            CStrError::Fault => Errno(libc::EFAULT),
            CStrError::TooLong => Errno(libc::ENAMETOOLONG),
        }
    }
}

pub type SysResult = Result<u64, Errno>;

pub fn err<T>(e: i32) -> Result<T, Errno> {
    Err(Errno(e))
}

/// What a system call asks the vCPU loop to do besides returning a value.
#[derive(Debug, Default)]
pub struct Effects {
    /// New FS base (arch_prctl(ARCH_SET_FS)).
    pub fs_base: Option<u64>,
    /// New GS base.
    pub gs_base: Option<u64>,
    /// This thread exits (SYS_exit); the vCPU parks.
    pub thread_exit: bool,
    /// Re-pin this vCPU's host thread to this guest CPU (sched_setaffinity moved it).
    pub repin: Option<usize>,
}

/// The register state at the syscall, for calls that need more than the arguments (clone).
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    /// Where the guest resumes (RCX at `syscall`).
    pub rip: u64,
    /// Guest RFLAGS at `syscall` (R11).
    pub rflags: u64,
    pub rsp: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub regs: kvm_bindings::kvm_regs,
}

/// Context of one system call.
pub struct Ctx<'a> {
    pub proc: &'a std::sync::Arc<Process>,
    pub thread: &'a mut ThreadState,
    pub frame: &'a Frame,
    pub fx: Effects,
}

impl Ctx<'_> {
    /// Read a path argument (NUL-terminated, at most PATH_MAX).
    pub fn path(&self, addr: u64) -> Result<Vec<u8>, Errno> {
        user_cstr(self.proc, addr, libc::PATH_MAX as usize - 1)
    }

    /// Check that `[addr, addr+len)` is guest user memory (see [`user_range`]).
    pub fn check_user(&self, addr: u64, len: u64) -> Result<(), Errno> {
        user_range(self.proc, addr, len)
    }

    /// Host pointer to the guest user buffer `[addr, addr+len)`; EFAULT unless all of it is
    /// user memory. A zero-length buffer may be anywhere (Linux does not look at it).
    pub fn user_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Errno> {
        if len == 0 {
            return Ok(self.proc.mem.host_base());
        }
        self.check_user(addr, len)?;
        Ok(self.proc.mem.host_ptr(addr, len)?)
    }

    /// Copy bytes into guest user memory.
    pub fn write_user(&self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.check_user(addr, bytes.len() as u64)?;
        Ok(self.proc.mem.write(addr, bytes)?)
    }

    /// Copy bytes out of guest user memory.
    pub fn read_user_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.check_user(addr, len)?;
        Ok(self.proc.mem.read_vec(addr, len)?)
    }

    /// Write a plain-data value to guest user memory.
    pub fn put<T: Copy>(&self, addr: u64, v: &T) -> Result<(), Errno> {
        // SAFETY: T is Copy plain data (libc structs); viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        self.write_user(addr, bytes)
    }

    /// Read a plain-data value from guest user memory.
    pub fn get<T: Copy + Default>(&self, addr: u64) -> Result<T, Errno> {
        let mut v = T::default();
        self.check_user(addr, std::mem::size_of::<T>() as u64)?;
        // SAFETY: T is Copy plain data for which every bit pattern is valid (libc structs of
        // integers); we fill all of its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut v as *mut T).cast::<u8>(),
                std::mem::size_of::<T>(),
            )
        };
        self.proc.mem.read(addr, bytes)?;
        Ok(v)
    }
}

/// Check that `[addr, addr+len)` lies in guest *user* memory: `[USER_START, usable_end)`.
///
/// Guest physical memory also holds the VMM's own structures, which the guest program cannot
/// reach at CPL3 and which no system call may touch on its behalf: the null page, GDT, IDT,
/// syscall/exception stubs, TSSs and exception stacks below `USER_START`, and the page tables
/// above `usable_end`. Linux answers EFAULT for such pointers (unmapped or kernel pages), and
/// so do we; letting `read()` or `fstat()` write there would let the guest rewrite its page
/// tables or the syscall stub.
pub fn user_range(proc: &Process, addr: u64, len: u64) -> Result<(), Errno> {
    let end = addr.checked_add(len).ok_or(Errno(libc::EFAULT))?;
    if addr < crate::layout::USER_START || end > proc.paging.usable_end {
        return err(libc::EFAULT);
    }
    Ok(())
}

/// Read a NUL-terminated string of at most `max` bytes from guest user memory. A string that
/// runs off the end of user memory is EFAULT, as on Linux.
pub fn user_cstr(proc: &Process, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
    user_range(proc, addr, 1)?;
    let limit = proc.paging.usable_end;
    let mut out = Vec::new();
    let mut cur = addr;
    while cur < limit {
        let chunk = (256 - (cur % 256)).min(limit - cur);
        let buf = proc.mem.read_vec(cur, chunk)?;
        if let Some(pos) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..pos]);
            if out.len() > max {
                return err(libc::ENAMETOOLONG);
            }
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        if out.len() > max {
            return err(libc::ENAMETOOLONG);
        }
        cur += chunk;
    }
    err(libc::EFAULT)
}

/// Serve system call `nr`. Unknown calls answer -ENOSYS (and are counted by the caller).
#[allow(non_upper_case_globals)]
pub fn dispatch(ctx: &mut Ctx<'_>, nr: u64, a: [u64; 6]) -> Option<SysResult> {
    use libc::*;
    let r = match nr as i64 {
        // files
        SYS_read => fs::read(ctx, a),
        SYS_write => fs::write(ctx, a),
        SYS_readv => fs::readv(ctx, a),
        SYS_writev => fs::writev(ctx, a),
        SYS_pread64 => fs::pread64(ctx, a),
        SYS_pwrite64 => fs::pwrite64(ctx, a),
        SYS_open => fs::openat(ctx, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0]),
        SYS_creat => fs::openat(
            ctx,
            [
                AT_FDCWD as u64,
                a[0],
                (O_CREAT | O_WRONLY | O_TRUNC) as u64,
                a[1],
                0,
                0,
            ],
        ),
        SYS_openat => fs::openat(ctx, a),
        SYS_close => fs::close(ctx, a),
        SYS_fstat => fs::fstat(ctx, a),
        SYS_stat => fs::newfstatat(ctx, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0]),
        SYS_lstat => fs::newfstatat(
            ctx,
            [
                AT_FDCWD as u64,
                a[0],
                a[1],
                AT_SYMLINK_NOFOLLOW as u64,
                0,
                0,
            ],
        ),
        SYS_newfstatat => fs::newfstatat(ctx, a),
        SYS_statx => fs::statx(ctx, a),
        SYS_lseek => fs::lseek(ctx, a),
        SYS_unlink => fs::unlinkat(ctx, [AT_FDCWD as u64, a[0], 0, 0, 0, 0]),
        SYS_rmdir => fs::unlinkat(ctx, [AT_FDCWD as u64, a[0], AT_REMOVEDIR as u64, 0, 0, 0]),
        SYS_unlinkat => fs::unlinkat(ctx, a),
        SYS_mkdir => fs::mkdirat(ctx, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0]),
        SYS_mkdirat => fs::mkdirat(ctx, a),
        SYS_rename => fs::renameat2(ctx, [AT_FDCWD as u64, a[0], AT_FDCWD as u64, a[1], 0, 0]),
        SYS_renameat => fs::renameat2(ctx, [a[0], a[1], a[2], a[3], 0, 0]),
        SYS_renameat2 => fs::renameat2(ctx, a),
        SYS_getdents64 => fs::getdents64(ctx, a),
        SYS_readlink => fs::readlinkat(ctx, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0]),
        SYS_readlinkat => fs::readlinkat(ctx, a),
        SYS_access => fs::faccessat(ctx, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0]),
        SYS_faccessat => fs::faccessat(ctx, [a[0], a[1], a[2], 0, 0, 0]),
        SYS_faccessat2 => fs::faccessat(ctx, a),
        SYS_getcwd => fs::getcwd(ctx, a),
        SYS_chdir => fs::chdir(ctx, a),
        SYS_fchdir => fs::fchdir(ctx, a),
        SYS_ioctl => fs::ioctl(ctx, a),
        SYS_fcntl => fs::fcntl(ctx, a),
        SYS_dup => fs::dup(ctx, a),
        SYS_dup2 => fs::dup3(ctx, [a[0], a[1], u64::MAX, 0, 0, 0]),
        SYS_dup3 => fs::dup3(ctx, a),
        SYS_pipe => fs::pipe2(ctx, [a[0], 0, 0, 0, 0, 0]),
        SYS_pipe2 => fs::pipe2(ctx, a),
        SYS_ftruncate => fs::ftruncate(ctx, a),
        SYS_fsync | SYS_fdatasync => fs::fsync(ctx, a),
        SYS_umask => fs::umask(ctx, a),
        SYS_poll => fs::poll(ctx, a),
        SYS_ppoll => fs::ppoll(ctx, a),
        // memory
        SYS_mmap => mm::mmap(ctx, a),
        SYS_munmap => mm::munmap(ctx, a),
        SYS_mprotect => mm::mprotect(ctx, a),
        SYS_mremap => mm::mremap(ctx, a),
        SYS_madvise => mm::madvise(ctx, a),
        SYS_brk => mm::brk(ctx, a),
        SYS_msync | SYS_mlock | SYS_munlock | SYS_mlockall | SYS_munlockall => mm::accept(ctx, a),
        // process, threads
        SYS_exit => thread::exit(ctx, a),
        SYS_exit_group => thread::exit_group(ctx, a),
        SYS_clone => thread::clone(ctx, a),
        SYS_clone3 => thread::clone3(ctx, a),
        SYS_fork | SYS_vfork | SYS_execve | SYS_execveat => thread::no_processes(ctx, a),
        SYS_futex => futex::futex(ctx, a),
        SYS_set_tid_address => thread::set_tid_address(ctx, a),
        SYS_set_robust_list => thread::set_robust_list(ctx, a),
        SYS_get_robust_list => thread::get_robust_list(ctx, a),
        SYS_gettid => thread::gettid(ctx, a),
        SYS_tgkill => misc::tgkill(ctx, [a[1], a[2], 0, 0, 0, 0], Some(a[0])),
        SYS_tkill => misc::tgkill(ctx, a, None),
        SYS_kill => misc::kill(ctx, a),
        SYS_sched_getaffinity => thread::sched_getaffinity(ctx, a),
        SYS_sched_setaffinity => thread::sched_setaffinity(ctx, a),
        SYS_sched_yield => thread::sched_yield(ctx, a),
        SYS_getcpu => thread::getcpu(ctx, a),
        SYS_arch_prctl => misc::arch_prctl(ctx, a),
        SYS_rseq => err(ENOSYS),
        // identity, limits, system
        SYS_getpid => Ok(ctx.proc.pid() as u64),
        SYS_getppid => Ok(1),
        SYS_getuid => Ok(misc::ids().0),
        SYS_geteuid => Ok(misc::ids().1),
        SYS_getgid => Ok(misc::ids().2),
        SYS_getegid => Ok(misc::ids().3),
        SYS_getpgrp | SYS_getsid => Ok(ctx.proc.pid() as u64),
        SYS_getpgid => Ok(ctx.proc.pid() as u64),
        SYS_prlimit64 => misc::prlimit64(ctx, a),
        SYS_getrlimit => misc::prlimit64(ctx, [0, a[0], 0, a[1], 0, 0]),
        SYS_setrlimit => misc::prlimit64(ctx, [0, a[0], a[1], 0, 0, 0]),
        SYS_getrandom => misc::getrandom(ctx, a),
        SYS_uname => misc::uname(ctx, a),
        SYS_sysinfo => misc::sysinfo(ctx, a),
        SYS_rt_sigaction => misc::rt_sigaction(ctx, a),
        SYS_rt_sigprocmask => misc::rt_sigprocmask(ctx, a),
        SYS_sigaltstack => misc::sigaltstack(ctx, a),
        SYS_getrusage => time::getrusage(ctx, a),
        SYS_times => time::times(ctx, a),
        // time
        SYS_clock_gettime => time::clock_gettime(ctx, a),
        SYS_clock_getres => time::clock_getres(ctx, a),
        SYS_gettimeofday => time::gettimeofday(ctx, a),
        SYS_time => time::time(ctx, a),
        SYS_nanosleep => time::nanosleep(ctx, a),
        SYS_clock_nanosleep => time::clock_nanosleep(ctx, a),
        _ => return None,
    };
    Some(r)
}
