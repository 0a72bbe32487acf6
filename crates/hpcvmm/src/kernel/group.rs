//! The thread group (the guest process): what its threads share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::files::FdTable;
use super::fsroot::FsRoot;
use super::futex::FutexTable;
use super::mem::GuestRam;
use super::mm::AddressSpace;
use super::signals::Signals;
use super::{err, Errno, GUEST_PID};

/// Ids the guest runs with (the VMM's user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

impl Credentials {
    /// The calling host process's ids.
    pub fn of_host() -> Self {
        // SAFETY: these id getters have no preconditions and cannot fail.
        unsafe {
            Credentials {
                uid: libc::getuid(),
                euid: libc::geteuid(),
                gid: libc::getgid(),
                egid: libc::getegid(),
            }
        }
    }
}

/// What uname(2) reports besides constants.
#[derive(Clone, Debug, Default)]
pub struct Uts {
    pub release: String,
    pub nodename: String,
}

/// Resource limits (RLIMIT_*), soft and hard.
#[derive(Clone, Debug)]
pub struct Limits(BTreeMap<u32, (u64, u64)>);

/// Number of RLIMIT_* resources.
pub const RLIM_NLIMITS: u32 = 16;

impl Limits {
    /// Linux's defaults for a process, with `stack` bytes of main stack and at most
    /// `max_threads` threads.
    pub fn new(stack: u64, max_threads: u64) -> Self {
        let inf = u64::MAX;
        let mut m = BTreeMap::new();
        for r in 0..RLIM_NLIMITS {
            m.insert(r, (inf, inf));
        }
        m.insert(libc::RLIMIT_STACK, (stack, inf));
        m.insert(libc::RLIMIT_NOFILE, (1024, 4096));
        m.insert(libc::RLIMIT_CORE, (0, inf));
        m.insert(libc::RLIMIT_NPROC, (max_threads, max_threads));
        Limits(m)
    }

    pub fn get(&self, res: u32) -> Result<(u64, u64), Errno> {
        self.0.get(&res).copied().ok_or(Errno(libc::EINVAL))
    }

    /// Set a limit as an unprivileged process may: soft <= hard, hard never raised.
    pub fn set(&mut self, res: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let cur = self.get(res)?;
        if soft > hard {
            return err(libc::EINVAL);
        }
        if hard > cur.1 {
            return err(libc::EPERM);
        }
        self.0.insert(res, (soft, hard));
        Ok(())
    }
}

/// Live and created thread counts of the group.
#[derive(Debug)]
pub struct ThreadCounts {
    next_tid: i32,
    live: u64,
    created: u64,
    max_live: u64,
    oversubscribed: bool,
}

impl ThreadCounts {
    /// The main thread (tid = pid) exists.
    pub fn new() -> Self {
        ThreadCounts {
            next_tid: GUEST_PID + 1,
            live: 1,
            created: 1,
            max_live: 1,
            oversubscribed: false,
        }
    }

    /// Reserve a tid for a new thread; `ncpus` tells when threads start sharing cores.
    pub fn reserve(&mut self, ncpus: usize) -> i32 {
        let tid = self.next_tid;
        self.next_tid += 1;
        self.live += 1;
        self.created += 1;
        self.max_live = self.max_live.max(self.live);
        if self.live as usize > ncpus {
            self.oversubscribed = true;
        }
        tid
    }

    /// A reserved thread could not be started.
    pub fn cancel(&mut self) {
        self.live -= 1;
    }

    /// A thread exited; true if it was the last one.
    pub fn exit_one(&mut self) -> bool {
        self.live -= 1;
        self.live == 0
    }

    pub fn live(&self) -> u64 {
        self.live
    }

    /// The tid the next thread gets (every guest tid so far is below it).
    pub fn next_tid(&self) -> i32 {
        self.next_tid
    }

    /// (threads created, most live at once, more threads than CPUs at some point)
    pub fn totals(&self) -> (u64, u64, bool) {
        (self.created, self.max_live, self.oversubscribed)
    }
}

impl Default for ThreadCounts {
    fn default() -> Self {
        Self::new()
    }
}

/// The guest process.
pub struct ThreadGroup {
    pub mem: Arc<dyn GuestRam>,
    pub mm: Mutex<AddressSpace>,
    pub files: Mutex<FdTable>,
    pub fs: FsRoot,
    pub futexes: FutexTable,
    pub signals: Signals,
    pub timers: super::timers::Timers,
    pub creds: Credentials,
    pub limits: Mutex<Limits>,
    umask: AtomicU32,
    /// Guest-visible path of the program (AT_EXECFN, /proc/self/exe).
    pub exe_path: String,
    pub uts: Uts,
    pub threads: Mutex<ThreadCounts>,
    /// personality(2) of the group (PER_LINUX plus no-op flags).
    pub personality: std::sync::atomic::AtomicU32,
    /// The guest's pid (see [`ThreadGroup::set_pid`]).
    pid: AtomicI32,
    /// What the guest's own /proc shows about it (set once when the run is built).
    pub proc: ProcInfo,
}

/// What the guest's /proc describes that the kernel objects do not hold: its argv and
/// environment, the auxiliary vector, the program's host path, the run's host cores, the
/// VMM's host pid (which the guest also sees as itself) and the guest user's groups.
#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// The auxiliary vector as on the initial stack (u64 pairs, AT_NULL included).
    pub auxv: Vec<u8>,
    /// Host path of the program (opened for `/proc/self/exe`).
    pub exe_host: std::path::PathBuf,
    /// Host CPUs of the run (for /proc/cpuinfo).
    pub host_cpus: Vec<usize>,
    /// Guest memory in bytes (MemTotal).
    pub mem_total: u64,
    /// Supplementary groups of the guest's user.
    pub groups: Vec<u32>,
}

/// What a thread group is made of (see [`ThreadGroup`]'s fields).
pub struct GroupParts {
    pub mem: Arc<dyn GuestRam>,
    pub mm: AddressSpace,
    pub files: FdTable,
    pub fs: FsRoot,
    pub creds: Credentials,
    pub limits: Limits,
    pub exe_path: String,
    pub uts: Uts,
}

impl ThreadGroup {
    pub fn new(p: GroupParts) -> Self {
        ThreadGroup {
            mem: p.mem,
            mm: Mutex::new(p.mm),
            files: Mutex::new(p.files),
            fs: p.fs,
            futexes: FutexTable::default(),
            signals: Signals::default(),
            timers: super::timers::Timers::default(),
            creds: p.creds,
            limits: Mutex::new(p.limits),
            umask: AtomicU32::new(0o022),
            exe_path: p.exe_path,
            uts: p.uts,
            threads: Mutex::new(ThreadCounts::new()),
            personality: std::sync::atomic::AtomicU32::new(0),
            pid: AtomicI32::new(GUEST_PID),
            proc: ProcInfo::default(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Use `pid` as the guest's pid (and its main thread's tid) instead of [`GUEST_PID`]:
    /// set once before the guest runs (an MPI rank is its VMM's host pid, see
    /// `RunConfig::host_pid`).
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    pub fn umask(&self) -> u32 {
        self.umask.load(Ordering::Relaxed)
    }

    /// Set the umask; returns the old one.
    pub fn set_umask(&self, m: u32) -> u32 {
        self.umask.swap(m & 0o777, Ordering::Relaxed)
    }
}
