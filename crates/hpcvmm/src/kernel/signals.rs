//! Signal dispositions of a thread group. Recorded so libc sees consistent answers; handlers
//! are not run yet (see `syscall::signals`).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// `struct sigaction` as the x86-64 kernel lays it out: handler, flags, restorer, mask.
pub type SigAction = [u64; 4];

pub const SIG_DFL: u64 = 0;

/// The dispositions of signals 1..=64.
#[derive(Debug, Default)]
pub struct SigActions {
    actions: Mutex<BTreeMap<u32, SigAction>>,
}

impl SigActions {
    pub fn get(&self, sig: u32) -> SigAction {
        self.actions
            .lock()
            .unwrap()
            .get(&sig)
            .copied()
            .unwrap_or([0; 4])
    }

    /// Install `new` (if any); returns the previous action.
    pub fn swap(&self, sig: u32, new: Option<SigAction>) -> SigAction {
        let mut a = self.actions.lock().unwrap();
        let cur = a.get(&sig).copied().unwrap_or([0; 4]);
        if let Some(n) = new {
            a.insert(sig, n);
        }
        cur
    }

    pub fn handler(&self, sig: u32) -> u64 {
        self.get(sig)[0]
    }
}

/// Whether the default action of `sig` terminates the process.
pub fn fatal_by_default(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}
