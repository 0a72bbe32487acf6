//! The run: objects shared by everything inside one HPC VMM run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
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
}
