//! The run: objects shared by everything inside one HPC VMM run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Run-level kernel state: whether the run is ending (every blocking call gives up), the
/// guest-visible CPUs, and when the program started (uptime).
#[derive(Debug)]
pub struct Run {
    ending: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    ncpus: usize,
    started: Mutex<Option<Instant>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    fpu: OnceLock<FpuLayout>,
    clock: OnceLock<super::clocks::ClockBase>,
    net: OnceLock<crate::syscall::sockets::NetPolicy>,
}

/// Kinds of guest attempts the kernel refused (the run's statistics count them).
pub mod refusal {
    /// A /proc entry that would be the VMM's own (mem, pagemap, syscall, root, cwd...).
    pub const VMM_PROC: &str = "vmm_proc";
    /// A device node outside the harmless list (/dev/kvm, /dev/mem, block devices...).
    pub const DEVICE: &str = "device";
    /// The host refused an open with EACCES/EPERM: the guest user's rights (or Landlock).
    pub const PERMISSION: &str = "permission";
    /// A descriptor number the guest does not have (`/proc/self/fd/N` of a VMM fd).
    pub const FD: &str = "fd";
    /// Calls on other processes: ptrace, process_vm_readv/writev, kcmp, pidfd_getfd.
    pub const HOST_PROCESS: &str = "host_process";
}

/// The guest's FPU state format, as signal frames carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpuLayout {
    /// Bytes of the XSAVE image for the guest's XCR0 (0: no XSAVE, fxsave only).
    pub xstate_size: usize,
    pub xcr0: u64,
    pub mxcsr_mask: u32,
}

/// Why [`Run::sleep_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Deadline,
    Ending,
    /// The caller's `interrupted` test became true (a signal to take).
    Interrupted,
}

impl Run {
    /// A run whose guest sees `ncpus` CPUs (numbered 0..ncpus).
    pub fn new(ncpus: usize) -> Self {
        assert!(ncpus > 0, "a run has at least one CPU");
        Run {
            ending: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            ncpus,
            started: Mutex::new(None),
            refusals: Mutex::new(BTreeMap::new()),
            fpu: OnceLock::new(),
            clock: OnceLock::new(),
            net: OnceLock::new(),
        }
    }

    /// Count one refused guest attempt of `kind` (see [`refusal`]).
    pub fn refuse(&self, kind: &'static str) {
        *self.refusals.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// Refused attempts so far, by kind.
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        self.refusals
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    /// Set the run's network policy (once, when the VM is built; default `host`).
    pub fn set_net(&self, p: crate::syscall::sockets::NetPolicy) {
        let _ = self.net.set(p);
    }

    /// The run's network policy (`dualstack run --net`).
    pub fn net(&self) -> crate::syscall::sockets::NetPolicy {
        self.net.get().copied().unwrap_or_default()
    }

    /// Record the guest's FPU format (once, when the VM is built).
    pub fn set_fpu(&self, f: FpuLayout) {
        let _ = self.fpu.set(f);
    }

    pub fn fpu(&self) -> FpuLayout {
        self.fpu.get().copied().unwrap_or(FpuLayout {
            xstate_size: 0,
            xcr0: 3,
            mxcsr_mask: 0xffff,
        })
    }

    /// The TSC clock the guest reads (none without an invariant TSC).
    pub fn set_clock(&self, c: super::clocks::ClockBase) {
        let _ = self.clock.set(c);
    }

    pub fn clock(&self) -> Option<super::clocks::ClockBase> {
        self.clock.get().copied()
    }

    /// Wake every sleeper so it re-checks its condition (a signal was sent).
    pub fn nudge(&self) {
        let _g = self.lock.lock().unwrap();
        self.cv.notify_all();
    }

    /// Sleep until `deadline` (None: forever), the run ending, or `interrupted()` (checked
    /// on every [`Run::nudge`]).
    pub fn sleep_until(&self, deadline: Option<Instant>, interrupted: &dyn Fn() -> bool) -> Wake {
        let mut g = self.lock.lock().unwrap();
        loop {
            if self.ending() {
                return Wake::Ending;
            }
            if interrupted() {
                return Wake::Interrupted;
            }
            match deadline {
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return Wake::Deadline;
                    }
                    g = self.cv.wait_timeout(g, dl - now).unwrap().0;
                }
                None => g = self.cv.wait(g).unwrap(),
            }
        }
    }

    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// True once the run is ending: blocking calls return EINTR, no thread is created.
    pub fn ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Start ending the run and wake every sleeper.
    pub fn end(&self) {
        let _g = self.lock.lock().unwrap();
        self.ending.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Sleep up to `d`, waking early when the run ends. Returns true if the run is ending.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut g = self.lock.lock().unwrap();
        loop {
            if self.ending() {
                return true;
            }
            match deadline {
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return false;
                    }
                    g = self.cv.wait_timeout(g, dl - now).unwrap().0;
                }
                None => g = self.cv.wait(g).unwrap(),
            }
        }
    }

    /// The program's first instruction runs now.
    pub fn mark_started(&self) {
        *self.started.lock().unwrap() = Some(Instant::now());
    }

    pub fn started(&self) -> Option<Instant> {
        *self.started.lock().unwrap()
    }
}
