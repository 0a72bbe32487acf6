//! The kernel layer: the objects the guest's Linux system calls act on, owned at three levels
//! as in Linux.
//!
//! - [`run::Run`]: one per HPC VMM run, shared by everything in it (the run's life cycle, the
//!   guest-visible CPUs; later shared-memory files and cross-VM futex keys).
//! - [`group::ThreadGroup`]: the process: guest memory and its address space, descriptor
//!   table, filesystem root and cwd, futex queues, signal dispositions, credentials, rlimits,
//!   umask, thread counts.
//! - [`task::Task`]: one guest thread: tid, signal mask, altstack, affinity, clear_child_tid,
//!   robust list, per-thread counters.
//!
//! Nothing here knows about KVM, vCPUs or run statistics: this module depends on no other
//! module of the crate except the memory and layout definitions, and the system call handlers
//! ([`crate::syscall`]) depend on it.

pub mod clocks;
pub mod fdshare;
pub mod files;
pub mod fsroot;
pub mod futex;
pub mod group;
pub mod mem;
pub mod mm;
pub mod run;
pub mod signals;
pub mod task;
pub mod timers;

use crate::memory::{CStrError, Efault};

/// A Linux errno, returned to the guest as `-errno` in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<Efault> for Errno {
    fn from(_: Efault) -> Self {
        Errno(libc::EFAULT)
    }
}

impl From<std::io::Error> for Errno {
    /// A host call the vCPU kick interrupted (EINTR) was interrupted for a guest signal or
    /// the run's end: it restarts or fails with EINTR as the guest's handler says.
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EINTR) => Errno(signals::ERESTARTSYS),
            Some(n) => Errno(n),
            None => Errno(libc::EIO),
        }
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

/// A system call's value for RAX, or the errno it fails with.
pub type SysResult = Result<u64, Errno>;

pub fn err<T>(e: i32) -> Result<T, Errno> {
    Err(Errno(e))
}

/// Guest pid (and tid of the main thread). Guest ids are the VMM's own, not host ids.
pub const GUEST_PID: i32 = 1000;

/// Everything the system calls of one run act on.
pub struct Kernel {
    pub run: run::Run,
    pub group: group::ThreadGroup,
}
