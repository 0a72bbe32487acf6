//! Linux system call service. Every `syscall` the guest executes becomes exactly one VM exit
//! (an `out` in the LSTAR stub); [`dispatch`] looks the number up in the one [`table`] and
//! runs its handler against the [`kernel`](crate::kernel) objects. A handler returns a
//! [`SysOutcome`]: most return a value for RAX, some end the thread or the thread group,
//! deliver a signal or ask for a new thread. The vCPU loop owns what happens next.
//!
//! Handlers are grouped by area: [`files`], [`events`] (eventfd, epoll, select), [`memory`], [`time`], [`threads`] and [`futex`],
//! [`signals`], [`system`] (identity, limits, uname), [`sockets`] (none yet), [`procfs`].

pub mod cma;
pub mod events;
pub mod files;
pub mod futex;
pub mod memory;
pub mod procfs;
pub mod shm;
pub mod signals;
pub mod sockets;
pub mod system;
pub mod table;
pub mod threads;
pub mod time;

use crate::kernel::files::FileRef;
use crate::kernel::group::ThreadGroup;
use crate::kernel::mem::{GuestRam, Plain};
use crate::kernel::run::Run;
use crate::kernel::task::Task;
pub use crate::kernel::{err, Errno, SysResult};

/// What the vCPU loop does after a system call.
#[derive(Debug)]
pub enum SysOutcome {
    /// Resume the guest with this value in RAX (a negative errno for failures).
    Return(u64),
    /// This thread exits (SYS_exit of a thread that is not the last one).
    ExitThread,
    /// The whole thread group exits with this status (exit_group, or the last thread's exit).
    ExitGroup(i32),
    /// A signal this thread sent itself whose default action ends the group (abort(),
    /// raise(SIGTERM) without a handler).
    Deliver(i32),
    /// rt_sigreturn: resume with these registers, FPU state and (already applied) mask.
    Sigreturn(Box<crate::kernel::signals::frame::Restored>),
    /// rt_sigreturn found a bad frame: SIGSEGV, as Linux forces it.
    ForceSigsegv,
    /// Start a thread (clone): the vCPU layer creates its vCPU and host thread.
    Clone(Box<threads::NewThread>),
}

/// The six system call arguments (RDI, RSI, RDX, R10, R8, R9), read by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Args([u64; 6]);

impl Args {
    pub fn new(a: [u64; 6]) -> Self {
        Args(a)
    }
    /// Argument `i` as a file descriptor (a C int).
    pub fn fd(&self, i: usize) -> i32 {
        self.0[i] as i32
    }
    /// Argument `i` as a guest pointer.
    pub fn ptr(&self, i: usize) -> u64 {
        self.0[i]
    }
    /// Argument `i` as a size or count (size_t).
    pub fn usize(&self, i: usize) -> u64 {
        self.0[i]
    }
    /// Argument `i` as a C int.
    pub fn i32(&self, i: usize) -> i32 {
        self.0[i] as i32
    }
    /// Argument `i` as a C unsigned int.
    pub fn u32(&self, i: usize) -> u32 {
        self.0[i] as u32
    }
    /// Argument `i` as a signed 64-bit value (off_t, long).
    pub fn i64(&self, i: usize) -> i64 {
        self.0[i] as i64
    }
    /// Argument `i` as an unsigned 64-bit value.
    pub fn u64(&self, i: usize) -> u64 {
        self.0[i]
    }
    /// Argument `i` as a flags word of integer type `T` (truncated as the C prototype does).
    pub fn flags<T: FlagWord>(&self, i: usize) -> T {
        T::from_arg(self.0[i])
    }
}

/// Integer types a flags argument is declared with.
pub trait FlagWord {
    fn from_arg(v: u64) -> Self;
}
impl FlagWord for i32 {
    fn from_arg(v: u64) -> Self {
        v as i32
    }
}
impl FlagWord for u32 {
    fn from_arg(v: u64) -> Self {
        v as u32
    }
}
impl FlagWord for u64 {
    fn from_arg(v: u64) -> Self {
        v
    }
}

/// Register changes a system call asks for besides its return value.
#[derive(Debug, Default)]
pub struct Effects {
    /// New FS base (arch_prctl(ARCH_SET_FS)).
    pub fs_base: Option<u64>,
    /// New GS base.
    pub gs_base: Option<u64>,
    /// Re-pin this vCPU's host thread to this guest CPU (sched_setaffinity moved it).
    pub repin: Option<usize>,
}

/// The register state at the syscall, for calls that need more than the arguments (clone).
#[derive(Clone, Copy, Debug, Default)]
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

/// Context of one system call: the kernel objects it may act on.
pub struct Ctx<'a> {
    pub run: &'a Run,
    pub tg: &'a ThreadGroup,
    pub mem: &'a dyn GuestRam,
    pub task: &'a mut Task,
    pub frame: &'a Frame,
    pub fx: Effects,
    /// The call is one the HPC VMM does not implement (counted as ENOSYS in the stats).
    pub unsupported: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(run: &'a Run, tg: &'a ThreadGroup, task: &'a mut Task, frame: &'a Frame) -> Self {
        Ctx {
            run,
            tg,
            mem: &*tg.mem,
            task,
            frame,
            fx: Effects::default(),
            unsupported: false,
        }
    }

    /// The open file description of guest fd `fd`; EBADF if none.
    pub fn file(&self, fd: i32) -> Result<FileRef, Errno> {
        self.tg.files.lock().unwrap().get(fd)
    }

    /// Read a path argument (NUL-terminated, at most PATH_MAX).
    pub fn path(&self, addr: u64) -> Result<Vec<u8>, Errno> {
        Ok(self.mem.read_cstr(addr, libc::PATH_MAX as usize - 1)?)
    }

    /// Check that `[addr, addr+len)` is guest user memory. Guest physical memory also holds
    /// the VMM's own structures (null page, GDT, IDT, stubs, TSSs, page tables), which no
    /// system call may touch on the guest's behalf: Linux answers EFAULT for kernel pages, and
    /// so do we.
    pub fn check_user(&self, addr: u64, len: u64) -> Result<(), Errno> {
        Ok(self.mem.check(addr, len)?)
    }

    /// Host pointer to the guest user buffer `[addr, addr+len)`; EFAULT unless all of it is
    /// user memory. A zero-length buffer may be anywhere (Linux does not look at it).
    pub fn user_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Errno> {
        if len == 0 {
            return Ok(self.mem.system_ptr(0, 0)?);
        }
        Ok(self.mem.host_ptr(addr, len)?)
    }

    /// Copy bytes into guest user memory.
    pub fn write_user(&self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        if bytes.is_empty() {
            return Ok(());
        }
        Ok(self.mem.write(addr, bytes)?)
    }

    /// Copy bytes out of guest user memory.
    pub fn read_user_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(self.mem.read_vec(addr, len)?)
    }

    /// Write a plain-data value to guest user memory.
    pub fn put<T: Plain>(&self, addr: u64, v: &T) -> Result<(), Errno> {
        Ok(self.mem.put(addr, v)?)
    }

    /// Read a plain-data value from guest user memory.
    pub fn get<T: Plain>(&self, addr: u64) -> Result<T, Errno> {
        Ok(self.mem.get(addr)?)
    }
}

/// Calls that act on another process by pid (the table answers them ENOSYS); counted as
/// refusals of kind `host_process`.
const HOST_PROCESS_CALLS: [i64; 3] = [libc::SYS_ptrace, libc::SYS_kcmp, libc::SYS_pidfd_getfd];

/// Serve system call `nr` with `args`.
pub fn dispatch(ctx: &mut Ctx<'_>, nr: u64, args: &Args) -> SysOutcome {
    if HOST_PROCESS_CALLS.contains(&(nr as i64)) {
        // Never passed on: the guest has no other process to act on, least of all the VMM.
        ctx.run.refuse(crate::kernel::run::refusal::HOST_PROCESS);
    }
    let r = match table::lookup(nr) {
        Some(e) => match e.handler {
            table::Handler::Value(f) => f(ctx, args).map(SysOutcome::Return),
            table::Handler::Control(f) => f(ctx, args),
            table::Handler::None => {
                ctx.unsupported = true;
                match e.support {
                    table::Support::Unsupported(errno) => err(errno),
                    _ => err(libc::ENOSYS),
                }
            }
        },
        None => {
            ctx.unsupported = true;
            err(libc::ENOSYS)
        }
    };
    let o = match r {
        Ok(o) => o,
        Err(Errno(e)) => SysOutcome::Return((-(e as i64)) as u64),
    };
    if *TRACE {
        let name = table::name(nr).unwrap_or("?");
        let a: Vec<String> = args.0.iter().map(|v| format!("{v:#x}")).collect();
        match &o {
            SysOutcome::Return(v) => {
                eprintln!(
                    "[dualstack-strace] {name}({}) = {}",
                    a.join(", "),
                    *v as i64
                )
            }
            other => eprintln!("[dualstack-strace] {name}({}) -> {other:?}", a.join(", ")),
        }
    }
    o
}

/// `DUALSTACK_STRACE=1` in the VMM's environment prints every guest system call, its
/// arguments and its outcome on the VMM's stderr (a debugging aid, like strace).
static TRACE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("DUALSTACK_STRACE").is_some_and(|v| v == "1"));

#[cfg(test)]
mod tests;
