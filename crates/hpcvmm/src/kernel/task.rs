//! One guest thread's kernel state.

use std::sync::Arc;

use super::signals::TaskSignals;

/// `stack_t` of sigaltstack: ss_sp, ss_flags (SS_DISABLE = 2 by default), ss_size.
pub const NO_ALTSTACK: [u64; 3] = [0, 2, 0];

/// What a task did that the kernel accounts per thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskCounters {
    pub futex_waits: u64,
    /// Seconds blocked in futex waits.
    pub futex_wait_s: f64,
}

/// A guest thread.
#[derive(Clone, Debug)]
pub struct Task {
    pub tid: i32,
    /// Guest-visible affinity mask (guest CPU numbers), inherited by threads it creates.
    pub affinity: Vec<usize>,
    /// Guest CPU this thread runs on (one of `affinity`).
    pub core: usize,
    /// The vCPU (and clock slot) the thread runs on.
    pub vcpu: usize,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    /// Blocked signals (change it with [`Task::set_sigmask`], which keeps `sig` in step).
    pub sigmask: u64,
    pub altstack: [u64; 3],
    /// What other threads see of this thread's signals: pending queue, blocked mirror.
    pub sig: Arc<TaskSignals>,
    /// The mask to restore after a handler that sigsuspend/ppoll... ran with a temporary
    /// mask (Linux's saved_sigmask).
    pub saved_sigmask: Option<u64>,
    pub counters: TaskCounters,
    /// The thread's name (prctl PR_SET_NAME, /proc/self/comm): 15 bytes and a NUL.
    pub comm: [u8; 16],
    /// prctl(PR_SET_PDEATHSIG): recorded; the parent is the VMM, which outlives the guest.
    pub pdeathsig: i32,
}

/// A thread name as Linux truncates it: the first 15 bytes.
pub fn comm_of(name: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    let n = name.len().min(15);
    c[..n].copy_from_slice(&name[..n]);
    c
}

impl Task {
    /// The main thread: tid = pid, may run on all `ncpus` guest CPUs, on CPU 0.
    pub fn main(tid: i32, ncpus: usize) -> Self {
        Task {
            tid,
            affinity: (0..ncpus).collect(),
            core: 0,
            vcpu: 0,
            clear_child_tid: 0,
            robust_list: 0,
            sigmask: 0,
            altstack: NO_ALTSTACK,
            sig: TaskSignals::new(tid, 0),
            saved_sigmask: None,
            counters: TaskCounters::default(),
            comm: [0; 16],
            pdeathsig: 0,
        }
    }

    /// Set the blocked mask (SIGKILL and SIGSTOP can never be blocked).
    pub fn set_sigmask(&mut self, mask: u64) {
        self.sigmask = mask & !super::signals::UNBLOCKABLE;
        self.sig.set_blocked(self.sigmask);
    }

    /// A thread created by `self` (clone): inherits the mask and affinity.
    pub fn child(&self, tid: i32, clear_child_tid: u64) -> Self {
        Task {
            tid,
            affinity: self.affinity.clone(),
            core: 0,
            vcpu: 0,
            clear_child_tid,
            robust_list: 0,
            sigmask: self.sigmask,
            altstack: NO_ALTSTACK,
            sig: TaskSignals::new(tid, self.sigmask),
            saved_sigmask: None,
            counters: TaskCounters::default(),
            comm: self.comm,
            pdeathsig: 0,
        }
    }
}
