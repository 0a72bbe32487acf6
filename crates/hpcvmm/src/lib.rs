//! The HPC VMM: runs one unmodified static Linux x86-64 program in a KVM VM that owns its
//! memory (preallocated, pinned, mapped with large pages) and its cores (one pinned vCPU per
//! guest thread), serving the program's Linux system calls in host user space.
//!
//! ```no_run
//! let cfg = dualstack_hpcvmm::RunConfig::new("./hello", vec!["hello".into()]);
//! let stats = dualstack_hpcvmm::run(&cfg).unwrap();
//! println!("{}", stats.summary());
//! ```

//!
//! Layers, each depending only on the ones above it:
//! - [`memory`], [`layout`], [`elf`], [`stack`], [`vdso`]: guest memory and what goes in it;
//! - [`kernel`]: the objects system calls act on (run, thread group, task);
//! - [`syscall`]: the system call table and handlers, acting on `kernel`;
//! - [`stats`]: run statistics (names calls through the syscall table);
//! - [`vcpu`]: vCPU set-up and the vCPU thread loop, serving exits through `syscall` and
//!   delivering signals where the guest resumes;
//! - [`pump`]: the host thread that brings outside signals and timer expiries to the guest;
//! - `vm`: building a run in named phases and running it ([`run`], [`run_with`]).

pub mod elf;
pub mod fastcall;
pub mod jail;
pub mod kernel;
pub mod layout;
pub mod memory;
pub mod pump;
pub mod shmem;
pub mod stack;
pub mod stats;
pub mod syscall;
pub mod vcpu;
pub mod vdso;
mod vm;

// The raw host system calls (mbind, affinity, mlock, tgkill) live in one crate shared with zones.
use dualstack_sys as sys;

pub use layout::GuestPageSize;
pub use memory::{Backing, HugePageSize, MemorySource, WarmMemory, WarmPart};
pub use stats::{ExitReport, FaultReport, RunStats};
pub use vm::{run, run_with, RunConfig, RunHooks, ThreadStartHook, VmmError};

/// Host CPUs the calling thread may run on (the default core set of a run).
pub fn host_affinity() -> std::io::Result<Vec<usize>> {
    sys::current_affinity()
}

/// Restrict the calling thread to `cpus`. Allocates nothing, so it may run in a forked child
/// before exec (`CommandExt::pre_exec`).
pub fn set_thread_affinity(cpus: &[usize]) -> std::io::Result<()> {
    sys::set_current_thread_affinity(cpus)
}
