//! State shared by all vCPUs of one guest program (the "process"), and per-thread state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VmFd};
use serde::{Deserialize, Serialize};

use crate::addrspace::AddressSpace;
use crate::layout::Paging;
use crate::memory::GuestMemory;
use crate::stats::{ExitReport, VcpuStats};
use crate::syscall::fs::{FdTable, FsRoot};
use crate::syscall::futex::FutexTable;
use crate::syscall::misc::Signals;

/// Where and why the guest faulted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultReport {
    /// Linux signal number the fault maps to (SIGSEGV, SIGILL, SIGFPE...).
    pub signal: i32,
    pub signal_name: String,
    /// What happened, e.g. "page fault (#PF) writing a not-present page".
    pub what: String,
    /// Guest thread id and vCPU index that faulted.
    pub tid: i32,
    pub vcpu: usize,
    /// Guest instruction pointer at the fault.
    pub rip: u64,
    /// Faulting address (CR2 for #PF), when the fault has one.
    pub addr: Option<u64>,
    pub error_code: Option<u64>,
}

/// Shared run-control: who ended the run and how.
#[derive(Debug, Default)]
pub struct Control {
    exiting: AtomicBool,
    outcome: Mutex<Option<ExitReport>>,
    cv: Condvar,
}

impl Control {
    pub fn exiting(&self) -> bool {
        self.exiting.load(Ordering::Acquire)
    }

    /// Record how the run ends (the first report wins) and start tearing down.
    pub fn finish(&self, report: ExitReport) {
        let mut o = self.outcome.lock().unwrap();
        if o.is_none() {
            *o = Some(report);
        }
        self.exiting.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    pub fn outcome(&self) -> Option<ExitReport> {
        self.outcome.lock().unwrap().clone()
    }

    /// Sleep up to `d`, waking early when the run ends. Returns true if the run is ending.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.outcome.lock().unwrap();
        loop {
            if self.exiting() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

/// Registry of the guest's threads.
#[derive(Debug, Default)]
pub struct Threads {
    pub next_tid: i32,
    pub live: u64,
    pub created: u64,
    pub max_live: u64,
    pub next_vcpu: usize,
    /// Host thread ids of running vCPU threads (to kick them out of KVM_RUN).
    pub host_tids: BTreeMap<usize, i32>,
    pub handles: Vec<std::thread::JoinHandle<()>>,
    pub finished: Vec<VcpuStats>,
}

/// One guest program.
pub struct Process {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub cpuid: CpuId,
    pub xcr0: u64,
    pub mem: GuestMemory,
    pub paging: Paging,
    pub mm: Mutex<AddressSpace>,
    pub files: Mutex<FdTable>,
    pub fsroot: FsRoot,
    pub futexes: FutexTable,
    pub signals: Signals,
    pub threads: Mutex<Threads>,
    /// vCPUs of exited threads, kept for reuse by later clones (KVM never frees a vCPU id).
    pub parked: Mutex<Vec<(usize, kvm_ioctls::VcpuFd)>>,
    pub control: Control,
    /// Host CPUs the run owns; vCPU i runs on cpus[i % len].
    pub cpus: Vec<usize>,
    /// Whether vCPUs are pinned one per core (else they float over `cpus`).
    pub pin_vcpus: bool,
    pub limits: Mutex<BTreeMap<u32, (u64, u64)>>,
    /// Guest-visible path of the program (AT_EXECFN, /proc/self/exe).
    pub exe_path: String,
    /// When the program's first instruction ran (after the launch stub), and KVM's vCPU
    /// statistics accumulated by then (memory prefaulting).
    pub guest_start: Mutex<Option<Instant>>,
    pub launch_kvm: Mutex<BTreeMap<String, u64>>,
    pub enosys: Mutex<BTreeMap<u64, u64>>,
    pub oversubscribed: AtomicBool,
    pub umask: AtomicU64,
    pub uname_release: String,
    pub hostname: String,
}

/// Guest pid (and tid of the main thread). Guest ids are the VMM's own, not host ids.
pub const GUEST_PID: i32 = 1000;

impl Process {
    pub fn pid(&self) -> i32 {
        GUEST_PID
    }

    /// Host CPUs a thread pinned to guest CPU `core` runs on (all of the run's CPUs when
    /// vCPUs are not pinned).
    pub fn host_cpus_for(&self, core: usize) -> Vec<usize> {
        if !self.pin_vcpus {
            return self.cpus.clone();
        }
        vec![self.cpus[core % self.cpus.len()]]
    }

    /// The guest CPU a new thread on vCPU `index` is pinned to: the next core of its
    /// inherited affinity mask.
    pub fn core_for(&self, index: usize, mask: &[usize]) -> usize {
        if mask.is_empty() {
            return index % self.cpus.len();
        }
        mask[index % mask.len()]
    }

    /// Count an -ENOSYS answer.
    pub fn note_enosys(&self, nr: u64) {
        *self.enosys.lock().unwrap().entry(nr).or_default() += 1;
    }

    /// Ask every running vCPU thread to leave KVM_RUN (and any blocking host call) now.
    pub fn kick_all(&self) {
        let tids: Vec<i32> = self
            .threads
            .lock()
            .unwrap()
            .host_tids
            .values()
            .copied()
            .collect();
        for t in tids {
            let _ = crate::sys::tgkill_self(t, crate::vcpu::kick_signal());
        }
        self.futexes.wake_everyone();
    }
}

/// Per-thread (per-vCPU) state.
#[derive(Debug)]
pub struct ThreadState {
    pub tid: i32,
    pub vcpu: usize,
    /// Guest CPU numbers (indexes into the run's cpus) this thread may use.
    /// Guest-visible affinity mask (guest CPU numbers), inherited by threads it creates.
    pub affinity: Vec<usize>,
    /// Guest CPU this thread's vCPU is pinned to (one of `affinity`).
    pub core: usize,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub sigmask: u64,
    pub altstack: [u64; 3],
    pub stats: VcpuStats,
}
