//! Signals as Linux keeps them: the thread group's dispositions and shared pending queue,
//! each thread's private queue and blocked mask ([`TaskSignals`]), sending (with Linux's
//! generation-time rules: ignored signals are discarded, a default-fatal one ends the group),
//! dequeuing at the point the vCPU loop resumes the guest, and the x86-64 `rt_sigframe` the
//! handler runs on (written and read back by [`frame`]).
//!
//! Nothing here knows about vCPUs: waking a thread (a kick out of KVM_RUN or a blocking host
//! call) and ending the group go through [`SignalHost`], which the vCPU layer installs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::{err, Errno};

/// `struct sigaction` as the x86-64 kernel lays it out: handler, flags, restorer, mask.
pub type SigAction = [u64; 4];

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

pub const SA_SIGINFO: u64 = 0x4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// si_code values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_QUEUE: i32 = -1;
pub const SI_TIMER: i32 = -2;
pub const SI_TKILL: i32 = -6;

/// Kernel-internal "restart the call" results (never seen by the guest): the vCPU loop turns
/// them into a restart or EINTR depending on whether a handler runs and its SA_RESTART.
pub const ERESTARTSYS: i32 = 512;
pub const ERESTARTNOINTR: i32 = 513;
pub const ERESTARTNOHAND: i32 = 514;

/// Most real-time signals queued per process (Linux's RLIMIT_SIGPENDING is of this order).
pub const MAX_QUEUED: usize = 32_768;

/// Mask bit of signal `sig` (1..=64).
pub fn bit(sig: i32) -> u64 {
    1u64 << ((sig - 1) as u32 & 63)
}

/// SIGKILL and SIGSTOP: never blocked, caught or ignored.
pub const UNBLOCKABLE: u64 = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));

/// Signals the hardware raises for the thread's own instruction (delivered first).
const SYNCHRONOUS: u64 = (1 << (libc::SIGSEGV - 1))
    | (1 << (libc::SIGBUS - 1))
    | (1 << (libc::SIGILL - 1))
    | (1 << (libc::SIGTRAP - 1))
    | (1 << (libc::SIGFPE - 1))
    | (1 << (libc::SIGSYS - 1));

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

/// Whether the default action of `sig` stops the process.
pub fn stops_by_default(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// A `siginfo_t` (128 bytes on x86-64): signo, errno, code, then the union from byte 16,
/// kept as four 64-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub errno: i32,
    pub code: i32,
    pub fields: [u64; 4],
}

impl SigInfo {
    /// kill()/tgkill() from process `pid` with real uid `uid`.
    pub fn user(signo: i32, code: i32, pid: i32, uid: u32) -> Self {
        SigInfo {
            signo,
            errno: 0,
            code,
            fields: [u64::from(pid as u32) | (u64::from(uid) << 32), 0, 0, 0],
        }
    }

    /// A signal the kernel raises with no sender (SI_KERNEL), or a fault with `code` at `addr`.
    pub fn fault(signo: i32, code: i32, addr: u64) -> Self {
        SigInfo {
            signo,
            errno: 0,
            code,
            fields: [addr, 0, 0, 0],
        }
    }

    /// A POSIX timer's expiry (SI_TIMER): timer id, overrun count, sigev_value.
    pub fn timer(signo: i32, id: i32, overrun: i32, value: u64) -> Self {
        SigInfo {
            signo,
            errno: 0,
            code: SI_TIMER,
            fields: [
                u64::from(id as u32) | (u64::from(overrun as u32) << 32),
                value,
                0,
                0,
            ],
        }
    }

    /// The sender's pid, for kill-style siginfo.
    pub fn pid(&self) -> i32 {
        self.fields[0] as u32 as i32
    }

    pub fn bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[4..8].copy_from_slice(&self.errno.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        for (i, f) in self.fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&f.to_le_bytes());
        }
        b
    }

    /// Parse a guest `siginfo_t` (rt_sigqueueinfo).
    pub fn from_bytes(b: &[u8; 128]) -> Self {
        let i = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        SigInfo {
            signo: i(0),
            errno: i(4),
            code: i(8),
            fields: [q(16), q(24), q(32), q(40)],
        }
    }
}

/// Pending signals: a set, with one siginfo per standard signal and a queue for real-time
/// ones (standard signals coalesce, as on Linux).
#[derive(Debug, Default)]
pub struct SigQueue {
    set: u64,
    infos: VecDeque<SigInfo>,
}

impl SigQueue {
    pub fn set(&self) -> u64 {
        self.set
    }

    /// Queue `info`. False if it was dropped: a standard signal already pending, or the
    /// real-time queue is full.
    pub fn post(&mut self, info: SigInfo) -> bool {
        let b = bit(info.signo);
        if info.signo < 32 && self.set & b != 0 {
            return false;
        }
        if self.infos.len() >= MAX_QUEUED {
            return false;
        }
        self.set |= b;
        self.infos.push_back(info);
        true
    }

    /// Take the lowest-numbered pending signal in `allowed` (synchronous faults first).
    pub fn take(&mut self, allowed: u64) -> Option<SigInfo> {
        let ready = self.set & allowed;
        if ready == 0 {
            return None;
        }
        let pick = if ready & SYNCHRONOUS != 0 {
            ready & SYNCHRONOUS
        } else {
            ready
        };
        let sig = pick.trailing_zeros() as i32 + 1;
        self.take_sig(sig)
    }

    /// Take the first queued instance of `sig`.
    pub fn take_sig(&mut self, sig: i32) -> Option<SigInfo> {
        let pos = self.infos.iter().position(|i| i.signo == sig)?;
        let info = self.infos.remove(pos).expect("position is valid");
        if !self.infos.iter().any(|i| i.signo == sig) {
            self.set &= !bit(sig);
        }
        Some(info)
    }

    /// Discard every pending instance of the signals in `mask`.
    pub fn discard(&mut self, mask: u64) {
        if self.set & mask == 0 {
            return;
        }
        self.infos.retain(|i| bit(i.signo) & mask == 0);
        self.set &= !mask;
    }
}

/// One thread's signal state that other threads touch: its private pending queue and a
/// mirror of its blocked mask (the thread itself owns the mask in its [`super::task::Task`]).
#[derive(Debug)]
pub struct TaskSignals {
    pub tid: i32,
    pending: Mutex<SigQueue>,
    /// Bits of `pending`, readable without the lock (the vCPU loop's fast check).
    pending_bits: AtomicU64,
    blocked: AtomicU64,
}

impl TaskSignals {
    pub fn new(tid: i32, blocked: u64) -> Arc<Self> {
        Arc::new(TaskSignals {
            tid,
            pending: Mutex::new(SigQueue::default()),
            pending_bits: AtomicU64::new(0),
            blocked: AtomicU64::new(blocked),
        })
    }

    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Acquire)
    }

    pub fn set_blocked(&self, mask: u64) {
        self.blocked.store(mask & !UNBLOCKABLE, Ordering::Release);
    }

    pub fn pending(&self) -> u64 {
        self.pending_bits.load(Ordering::Acquire)
    }

    fn with<R>(&self, f: impl FnOnce(&mut SigQueue) -> R) -> R {
        let mut q = self.pending.lock().unwrap();
        let r = f(&mut q);
        self.pending_bits.store(q.set(), Ordering::Release);
        r
    }
}

/// What the vCPU layer does for the signal code.
pub trait SignalHost: Send + Sync {
    /// Make thread `tid` notice a pending signal now: out of KVM_RUN, out of a blocking call.
    fn kick(&self, tid: i32);
    /// End the whole group as killed by `sig` (raised in/for thread `tid`).
    fn terminate(&self, sig: i32, tid: i32);
    /// The timers changed: re-arm whatever fires them.
    fn timers_changed(&self) {}
    /// A signal was queued that no thread takes now (all block it): wake the threads
    /// waiting for it (sigtimedwait, signalfd).
    fn wake_sleepers(&self) {}
}

/// Where a signal is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Process-directed (kill, external signals, ITIMER_REAL): any thread not blocking it.
    Process,
    /// Thread-directed (tgkill, faults, SIGEV_THREAD_ID).
    Thread(i32),
}

/// What the delivery point found.
#[derive(Debug, PartialEq, Eq)]
pub enum Dequeued {
    /// Run this handler for this signal.
    Handler(SigInfo, SigAction),
    /// The group dies of this signal (default action).
    Fatal(i32),
    /// The group stops (default action of a stop signal).
    Stop(i32),
}

/// The thread group's signal state.
pub struct Signals {
    actions: Mutex<[SigAction; 64]>,
    shared: Mutex<SigQueue>,
    shared_bits: AtomicU64,
    tasks: Mutex<BTreeMap<i32, Arc<TaskSignals>>>,
    host: OnceLock<Weak<dyn SignalHost>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("shared", &self.shared_bits.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            actions: Mutex::new([[0; 4]; 64]),
            shared: Mutex::new(SigQueue::default()),
            shared_bits: AtomicU64::new(0),
            tasks: Mutex::new(BTreeMap::new()),
            host: OnceLock::new(),
        }
    }
}

impl Signals {
    /// Install the vCPU layer's side (once per run).
    pub fn set_host(&self, host: Weak<dyn SignalHost>) {
        let _ = self.host.set(host);
    }

    fn host(&self) -> Option<Arc<dyn SignalHost>> {
        self.host.get().and_then(Weak::upgrade)
    }

    /// The timers changed: the pump re-arms.
    pub fn timers_changed(&self) {
        if let Some(h) = self.host() {
            h.timers_changed();
        }
    }

    pub fn action(&self, sig: i32) -> SigAction {
        self.actions.lock().unwrap()[(sig - 1) as usize & 63]
    }

    /// Install `new` (if any) for `sig`; returns the previous action. Setting SIG_IGN (or a
    /// default-ignore SIG_DFL) discards pending instances, as Linux does.
    pub fn swap(&self, sig: i32, new: Option<SigAction>) -> SigAction {
        let old = {
            let mut a = self.actions.lock().unwrap();
            let i = (sig - 1) as usize & 63;
            let old = a[i];
            if let Some(n) = new {
                a[i] = n;
            }
            old
        };
        if let Some(n) = new {
            if self.ignores(sig, &n) {
                self.discard(bit(sig));
            }
        }
        old
    }

    /// Reset `sig` to SIG_DFL (SA_RESETHAND, or a forced fault signal).
    pub fn reset(&self, sig: i32) {
        let mut a = self.actions.lock().unwrap();
        let i = (sig - 1) as usize & 63;
        a[i][0] = SIG_DFL;
        a[i][1] &= !SA_SIGINFO;
    }

    fn ignores(&self, sig: i32, a: &SigAction) -> bool {
        a[0] == SIG_IGN || (a[0] == SIG_DFL && !fatal_by_default(sig) && !stops_by_default(sig))
    }

    /// Register a thread (before it can be the target of anything).
    pub fn add_task(&self, t: Arc<TaskSignals>) {
        self.tasks.lock().unwrap().insert(t.tid, t);
    }

    /// A thread exited: its private pending signals go with it.
    pub fn remove_task(&self, tid: i32) {
        self.tasks.lock().unwrap().remove(&tid);
    }

    pub fn task(&self, tid: i32) -> Option<Arc<TaskSignals>> {
        self.tasks.lock().unwrap().get(&tid).cloned()
    }

    pub fn shared_pending(&self) -> u64 {
        self.shared_bits.load(Ordering::Acquire)
    }

    fn discard(&self, mask: u64) {
        {
            let mut q = self.shared.lock().unwrap();
            q.discard(mask);
            self.shared_bits.store(q.set(), Ordering::Release);
        }
        for t in self.tasks.lock().unwrap().values() {
            t.with(|q| q.discard(mask));
        }
    }

    /// Whether `t` has a signal it does not block waiting (the fast check of the vCPU loop
    /// and of blocking calls: two atomic loads).
    pub fn deliverable(&self, t: &TaskSignals) -> bool {
        (t.pending() | self.shared_pending()) & !t.blocked() != 0
    }

    /// Threads that still have a deliverable signal (the re-kick list).
    pub fn undelivered(&self) -> Vec<i32> {
        let shared = self.shared_pending();
        let tasks = self.tasks.lock().unwrap();
        let mut out: Vec<i32> = tasks
            .values()
            .filter(|t| t.pending() & !t.blocked() != 0)
            .map(|t| t.tid)
            .collect();
        if shared != 0 {
            if let Some(t) = tasks.values().find(|t| shared & !t.blocked() != 0) {
                if !out.contains(&t.tid) {
                    out.push(t.tid);
                }
            }
        }
        out
    }

    /// Send `info` to `target` (Linux's send_signal + complete_signal). ESRCH if the thread
    /// does not exist; EAGAIN if a real-time signal cannot be queued.
    pub fn send(&self, target: Target, info: SigInfo) -> Result<(), Errno> {
        let sig = info.signo;
        if !(1..=64).contains(&sig) {
            return err(libc::EINVAL);
        }
        let thread = match target {
            Target::Thread(tid) => Some(self.task(tid).ok_or(Errno(libc::ESRCH))?),
            Target::Process => None,
        };
        let host = self.host();
        if sig == libc::SIGKILL {
            if let Some(h) = host {
                h.terminate(sig, thread.as_ref().map_or(super::GUEST_PID, |t| t.tid));
            }
            return Ok(());
        }
        if sig == libc::SIGCONT {
            // Continuing discards pending stop signals (the stop itself is the host's).
            self.discard(
                bit(libc::SIGSTOP) | bit(libc::SIGTSTP) | bit(libc::SIGTTIN) | bit(libc::SIGTTOU),
            );
        }
        let act = self.action(sig);
        // Who would take it: the thread, or the first thread that does not block it.
        let taker = match &thread {
            Some(t) => (t.blocked() & bit(sig) == 0).then(|| t.clone()),
            None => {
                let tasks = self.tasks.lock().unwrap();
                tasks
                    .get(&super::GUEST_PID)
                    .filter(|t| t.blocked() & bit(sig) == 0)
                    .or_else(|| tasks.values().find(|t| t.blocked() & bit(sig) == 0))
                    .cloned()
            }
        };
        // Generation-time discard: an ignored signal nobody blocks is dropped.
        if self.ignores(sig, &act) && taker.is_some() {
            return Ok(());
        }
        // A default-fatal signal someone does not block kills the group right away.
        if act[0] == SIG_DFL && fatal_by_default(sig) {
            if let Some(t) = &taker {
                if let Some(h) = host {
                    h.terminate(sig, t.tid);
                }
                return Ok(());
            }
        }
        let queued = match &thread {
            Some(t) => t.with(|q| q.post(info)),
            None => {
                let mut q = self.shared.lock().unwrap();
                let ok = q.post(info);
                self.shared_bits.store(q.set(), Ordering::Release);
                ok
            }
        };
        if !queued && sig >= 32 {
            return err(libc::EAGAIN);
        }
        match (taker, host) {
            (Some(t), Some(h)) => h.kick(t.tid),
            (None, Some(h)) => h.wake_sleepers(),
            _ => {}
        }
        Ok(())
    }

    /// Take the next signal for thread `t` (blocked mask `blocked`) that needs action,
    /// dropping ignored ones. None when nothing deliverable is left.
    pub fn dequeue(&self, t: &TaskSignals, blocked: u64) -> Option<Dequeued> {
        loop {
            let allowed = !blocked | UNBLOCKABLE;
            let info = t.with(|q| q.take(allowed)).or_else(|| {
                if self.shared_pending() & allowed == 0 {
                    return None;
                }
                let mut q = self.shared.lock().unwrap();
                let i = q.take(allowed);
                self.shared_bits.store(q.set(), Ordering::Release);
                i
            })?;
            let sig = info.signo;
            let act = self.action(sig);
            match act[0] {
                SIG_IGN => continue,
                SIG_DFL if sig == libc::SIGKILL => return Some(Dequeued::Fatal(sig)),
                SIG_DFL if stops_by_default(sig) => return Some(Dequeued::Stop(sig)),
                SIG_DFL if fatal_by_default(sig) => return Some(Dequeued::Fatal(sig)),
                SIG_DFL => continue,
                _ => return Some(Dequeued::Handler(info, act)),
            }
        }
    }

    /// Take a pending signal in `set` for thread `t` without running its handler
    /// (sigtimedwait, signalfd).
    pub fn take_waited(&self, t: &TaskSignals, set: u64) -> Option<SigInfo> {
        let set = set & !UNBLOCKABLE;
        t.with(|q| q.take(set)).or_else(|| {
            let mut q = self.shared.lock().unwrap();
            let i = q.take(set);
            self.shared_bits.store(q.set(), Ordering::Release);
            i
        })
    }

    /// Signals pending for `t` (rt_sigpending: private and shared, blocked or not).
    pub fn pending_for(&self, t: &TaskSignals) -> u64 {
        t.pending() | self.shared_pending()
    }

    /// A synchronous signal the thread's own instruction raised (Linux's force_sig): if it is
    /// blocked or ignored the action is reset to the default and it is unblocked, so it
    /// cannot be lost. Returns the new blocked mask.
    pub fn force(&self, t: &TaskSignals, blocked: u64, info: SigInfo) -> u64 {
        let sig = info.signo;
        let act = self.action(sig);
        let mut blocked = blocked;
        if act[0] == SIG_IGN || blocked & bit(sig) != 0 {
            self.reset(sig);
            blocked &= !bit(sig);
            t.set_blocked(blocked);
        }
        t.with(|q| {
            q.discard(bit(sig));
            q.post(info)
        });
        blocked
    }
}

pub mod frame {
    //! The x86-64 `struct rt_sigframe` Linux builds on the user stack for a handler, and the
    //! checks `rt_sigreturn` applies when it reads one back.
    //!
    //! ```text
    //! rsp ->  pretcode (the restorer, sa_restorer)              8
    //!         struct ucontext: uc_flags, uc_link, uc_stack(24),  304
    //!           uc_mcontext (struct sigcontext, 256), uc_sigmask
    //!         siginfo_t                                          128
    //!         ... (padding to 64)
    //!         fpstate: XSAVE image (fxsave area with fpx_sw_bytes, xsave header,
    //!                  extended states) + FP_XSTATE_MAGIC2
    //! ```

    use super::super::mem::GuestRam;
    use super::SigInfo;
    use crate::memory::Efault;

    pub const UC_FP_XSTATE: u64 = 1;
    pub const UC_SIGCONTEXT_SS: u64 = 2;
    pub const UC_STRICT_RESTORE_SS: u64 = 4;
    pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
    pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
    pub const SS_ONSTACK: u64 = 1;
    pub const SS_DISABLE: u64 = 2;
    /// Size of the fxsave (legacy) region.
    pub const FXSAVE_SIZE: usize = 512;
    pub const UCONTEXT_OFF: u64 = 8;
    pub const MCONTEXT_OFF: u64 = UCONTEXT_OFF + 40;
    pub const SIGMASK_OFF: u64 = UCONTEXT_OFF + 296;
    pub const SIGINFO_OFF: u64 = UCONTEXT_OFF + 304;
    pub const FRAME_SIZE: u64 = SIGINFO_OFF + 128;
    const RED_ZONE: u64 = 128;

    /// The user register state a frame saves (sigcontext order: r8..r15, rdi, rsi, rbp,
    /// rbx, rdx, rax, rcx, rsp, rip, eflags).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Gprs(pub [u64; 18]);

    impl Gprs {
        pub fn from_kvm(r: &kvm_bindings::kvm_regs) -> Self {
            Gprs([
                r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx,
                r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.rflags,
            ])
        }

        pub fn to_kvm(&self) -> kvm_bindings::kvm_regs {
            let g = &self.0;
            kvm_bindings::kvm_regs {
                r8: g[0],
                r9: g[1],
                r10: g[2],
                r11: g[3],
                r12: g[4],
                r13: g[5],
                r14: g[6],
                r15: g[7],
                rdi: g[8],
                rsi: g[9],
                rbp: g[10],
                rbx: g[11],
                rdx: g[12],
                rax: g[13],
                rcx: g[14],
                rsp: g[15],
                rip: g[16],
                rflags: g[17],
            }
        }

        pub fn rsp(&self) -> u64 {
            self.0[15]
        }
    }

    /// What a frame is built from.
    pub struct FrameIn<'a> {
        pub regs: Gprs,
        /// cs, gs, fs, ss selectors.
        pub segs: [u16; 4],
        pub err: u64,
        pub trapno: u64,
        pub cr2: u64,
        /// The blocked mask before the handler (uc_sigmask, oldmask).
        pub oldmask: u64,
        pub info: SigInfo,
        pub action: super::SigAction,
        /// The thread's sigaltstack: ss_sp, ss_flags, ss_size.
        pub altstack: [u64; 3],
        /// XSAVE image of the interrupted FPU state (standard format), and how much of it
        /// is the user state (0: no XSAVE, the 512-byte fxsave area only).
        pub xsave: &'a [u8],
        pub xstate_size: usize,
        pub xfeatures: u64,
    }

    /// Where the handler starts.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FrameOut {
        pub rsp: u64,
        pub rip: u64,
        pub rdi: u64,
        pub rsi: u64,
        pub rdx: u64,
    }

    /// Why a frame could not be built (Linux: the thread gets SIGSEGV with the default action).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum FrameError {
        Fault,
        NoRestorer,
        AltstackOverflow,
    }

    impl From<Efault> for FrameError {
        fn from(_: Efault) -> Self {
            FrameError::Fault
        }
    }

    /// ss_flags of the altstack as seen from `sp` (Linux's sas_ss_flags).
    pub fn sas_flags(alt: &[u64; 3], sp: u64) -> u64 {
        if alt[2] == 0 || alt[1] & SS_DISABLE != 0 {
            return SS_DISABLE;
        }
        if on_stack(alt, sp) {
            SS_ONSTACK
        } else {
            0
        }
    }

    pub fn on_stack(alt: &[u64; 3], sp: u64) -> bool {
        alt[2] != 0 && sp > alt[0] && sp - alt[0] <= alt[2]
    }

    fn fpstate_size(f: &FrameIn<'_>) -> u64 {
        if f.xstate_size > 0 {
            f.xstate_size as u64 + 4
        } else {
            FXSAVE_SIZE as u64
        }
    }

    /// Write the frame for `f` below the interrupted stack (or on the altstack).
    pub fn write(mem: &dyn GuestRam, f: &FrameIn<'_>) -> Result<FrameOut, FrameError> {
        if f.action[1] & super::SA_RESTORER == 0 {
            return Err(FrameError::NoRestorer);
        }
        let orig_sp = f.regs.rsp();
        let mut sp = orig_sp.wrapping_sub(RED_ZONE);
        let mut entering_alt = false;
        if f.action[1] & super::SA_ONSTACK != 0 && sas_flags(&f.altstack, sp) == 0 {
            sp = f.altstack[0].wrapping_add(f.altstack[2]);
            entering_alt = true;
        }
        let fp = sp.wrapping_sub(fpstate_size(f)) & !63;
        let frame = ((fp.wrapping_sub(FRAME_SIZE)).wrapping_add(8) & !15).wrapping_sub(8);
        // Already on the altstack and the frame runs off it: SIGSEGV (Linux does the same).
        if !entering_alt && on_stack(&f.altstack, orig_sp) && !on_stack(&f.altstack, frame) {
            return Err(FrameError::AltstackOverflow);
        }
        mem.check(frame, fp + fpstate_size(f) - frame)?;

        // fpstate
        let mut fx = vec![0u8; fpstate_size(f) as usize];
        let n = if f.xstate_size > 0 {
            f.xstate_size
        } else {
            FXSAVE_SIZE
        };
        fx[..n.min(f.xsave.len())].copy_from_slice(&f.xsave[..n.min(f.xsave.len())]);
        for b in &mut fx[464..512] {
            *b = 0;
        }
        if f.xstate_size > 0 {
            fx[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
            fx[468..472].copy_from_slice(&((f.xstate_size as u32) + 4).to_le_bytes());
            fx[472..480].copy_from_slice(&f.xfeatures.to_le_bytes());
            fx[480..484].copy_from_slice(&(f.xstate_size as u32).to_le_bytes());
            fx[n..n + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        }
        mem.write(fp, &fx)?;

        let mut b = vec![0u8; FRAME_SIZE as usize];
        let mut put = |off: u64, v: u64| {
            b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(0, f.action[2]);
        let mut uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
        if f.xstate_size > 0 {
            uc_flags |= UC_FP_XSTATE;
        }
        put(UCONTEXT_OFF, uc_flags);
        put(UCONTEXT_OFF + 8, 0);
        put(UCONTEXT_OFF + 16, f.altstack[0]);
        put(UCONTEXT_OFF + 24, sas_flags(&f.altstack, orig_sp));
        put(UCONTEXT_OFF + 32, f.altstack[2]);
        for (i, r) in f.regs.0.iter().enumerate() {
            put(MCONTEXT_OFF + 8 * i as u64, *r);
        }
        let segs = u64::from(f.segs[0])
            | (u64::from(f.segs[1]) << 16)
            | (u64::from(f.segs[2]) << 32)
            | (u64::from(f.segs[3]) << 48);
        put(MCONTEXT_OFF + 144, segs);
        put(MCONTEXT_OFF + 152, f.err);
        put(MCONTEXT_OFF + 160, f.trapno);
        put(MCONTEXT_OFF + 168, f.oldmask);
        put(MCONTEXT_OFF + 176, f.cr2);
        put(MCONTEXT_OFF + 184, fp);
        put(SIGMASK_OFF, f.oldmask);
        b[SIGINFO_OFF as usize..].copy_from_slice(&f.info.bytes());
        mem.write(frame, &b)?;
        Ok(FrameOut {
            rsp: frame,
            rip: f.action[0],
            rdi: f.info.signo as u64,
            rsi: frame + SIGINFO_OFF,
            rdx: frame + UCONTEXT_OFF,
        })
    }

    /// What rt_sigreturn restores.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Restored {
        pub regs: Gprs,
        pub sigmask: u64,
        /// uc_stack as saved (ss_sp, ss_flags, ss_size).
        pub altstack: [u64; 3],
        /// The FPU image to load (a standard-format XSAVE area of `len` bytes, or the fxsave
        /// area only), None: reset the FPU to its initial state (fpstate was NULL).
        pub fpstate: Option<Vec<u8>>,
        /// The image carries extended (XSAVE) state, not only the legacy area.
        pub xstate: bool,
    }

    /// Read the frame whose ucontext is at `uc` (rt_sigreturn: RSP + 8 - 8 after the
    /// handler's `ret` popped pretcode). `xstate_size`/`xcr0`/`mxcsr_mask` bound what
    /// the image may contain; anything else is a bad frame (Linux: SIGSEGV).
    pub fn read(
        mem: &dyn GuestRam,
        uc: u64,
        xstate_size: usize,
        xcr0: u64,
        mxcsr_mask: u32,
    ) -> Result<Restored, FrameError> {
        let b = mem.read_vec(uc, 304)?;
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut regs = [0u64; 18];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = q(40 + 8 * i);
        }
        let fp = q(40 + 184);
        let sigmask = q(296);
        let altstack = [q(16), q(24) & 0xffff_ffff, q(32)];
        let canonical = |a: u64| {
            let top = (a as i64) >> 47;
            top == 0 || top == -1
        };
        if !canonical(regs[16]) {
            return Err(FrameError::Fault);
        }
        let (fpstate, xstate) = if fp == 0 {
            (None, false)
        } else {
            if fp % 16 != 0 {
                return Err(FrameError::Fault);
            }
            let legacy = mem.read_vec(fp, FXSAVE_SIZE as u64)?;
            let mxcsr = u32::from_le_bytes(legacy[24..28].try_into().unwrap());
            if mxcsr & !mxcsr_mask != 0 {
                return Err(FrameError::Fault);
            }
            let magic1 = u32::from_le_bytes(legacy[464..468].try_into().unwrap());
            let ext = u32::from_le_bytes(legacy[468..472].try_into().unwrap()) as usize;
            let size = u32::from_le_bytes(legacy[480..484].try_into().unwrap()) as usize;
            let use_x = xstate_size > 0
                && magic1 == FP_XSTATE_MAGIC1
                && size >= FXSAVE_SIZE + 64
                && size <= xstate_size
                && ext == size + 4
                && mem.read_u32(fp + size as u64).ok() == Some(FP_XSTATE_MAGIC2);
            if use_x {
                let mut img = mem.read_vec(fp, size as u64)?;
                let bv = u64::from_le_bytes(img[512..520].try_into().unwrap());
                let comp = u64::from_le_bytes(img[520..528].try_into().unwrap());
                if bv & !xcr0 != 0 || comp != 0 || img[528..576].iter().any(|&x| x != 0) {
                    return Err(FrameError::Fault);
                }
                for x in &mut img[464..512] {
                    *x = 0;
                }
                (Some(img), true)
            } else {
                let mut img = legacy;
                for x in &mut img[464..512] {
                    *x = 0;
                }
                (Some(img), false)
            }
        };
        Ok(Restored {
            regs: Gprs(regs),
            sigmask,
            altstack,
            fpstate,
            xstate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::frame::*;
    use super::*;
    use crate::kernel::mem::{GuestRam, VecMemory};

    #[test]
    fn standard_signals_coalesce_and_realtime_ones_queue() {
        let mut q = SigQueue::default();
        assert!(q.post(SigInfo::user(libc::SIGUSR1, SI_USER, 1, 0)));
        assert!(!q.post(SigInfo::user(libc::SIGUSR1, SI_USER, 2, 0)));
        assert!(q.post(SigInfo::user(40, SI_QUEUE, 1, 0)));
        assert!(q.post(SigInfo::user(40, SI_QUEUE, 2, 0)));
        assert!(q.post(SigInfo::fault(libc::SIGSEGV, 1, 0x10)));
        // The fault first, then the lowest number, then the real-time ones in order.
        assert_eq!(q.take(!0).unwrap().signo, libc::SIGSEGV);
        assert_eq!(q.take(!0).unwrap().pid(), 1);
        assert_eq!(q.take(!bit(40)), None);
        assert_eq!(q.take(!0).unwrap().pid(), 1);
        assert_eq!(q.set(), bit(40));
        assert_eq!(q.take(!0).unwrap().pid(), 2);
        assert_eq!(q.set(), 0);
    }

    fn frame_in(xsave: &[u8], xstate_size: usize) -> FrameIn<'_> {
        let mut regs = Gprs::default();
        for (i, r) in regs.0.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        regs.0[15] = USER + 0x8000; // rsp
        regs.0[16] = 0x40_1234; // rip
        FrameIn {
            regs,
            segs: [0x23, 0, 0, 0x1b],
            err: 4,
            trapno: 14,
            cr2: 0xdead,
            oldmask: 0x55,
            info: SigInfo::user(libc::SIGUSR1, SI_USER, 7, 8),
            action: [0x40_2000, SA_SIGINFO | SA_RESTORER, 0x40_3000, 0],
            altstack: [0, SS_DISABLE, 0],
            xsave,
            xstate_size,
            xfeatures: 7,
        }
    }

    const USER: u64 = 0x20_0000;

    #[test]
    fn the_frame_reads_back_as_written() {
        let mem = VecMemory::new(USER + 0x10_0000, USER);
        let mut xs = vec![0u8; 4096];
        xs[0] = 0x7f; // fcw
        xs[1] = 0x03;
        xs[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        xs[512..520].copy_from_slice(&3u64.to_le_bytes()); // XSTATE_BV: x87|SSE
        xs[600] = 0xab;
        let f = frame_in(&xs, 832);
        let out = frame::write(&mem, &f).unwrap();
        // ABI: rsp+8 is 16-byte aligned at handler entry, below the red zone.
        assert_eq!((out.rsp + 8) % 16, 0);
        assert!(out.rsp + FRAME_SIZE <= f.regs.rsp() - 128);
        assert_eq!(mem.read_u64(out.rsp).unwrap(), 0x40_3000);
        assert_eq!(out.rsi, out.rsp + SIGINFO_OFF);
        assert_eq!(mem.read_u32(out.rsi + 16).unwrap(), 7, "si_pid");
        let uc = out.rdx;
        // glibc's REG_RIP (gregs[16]), REG_CR2 (22), uc_sigmask.
        assert_eq!(mem.read_u64(uc + 40 + 16 * 8).unwrap(), 0x40_1234);
        assert_eq!(mem.read_u64(uc + 40 + 22 * 8).unwrap(), 0xdead);
        let fp = mem.read_u64(uc + 40 + 184).unwrap();
        assert_eq!(fp % 64, 0);
        assert_eq!(mem.read_u32(fp + 464).unwrap(), FP_XSTATE_MAGIC1);
        assert_eq!(mem.read_u32(fp + 832).unwrap(), FP_XSTATE_MAGIC2);
        let r = frame::read(&mem, uc, 832, 7, 0xffff).unwrap();
        assert_eq!(r.regs, f.regs);
        assert_eq!(r.sigmask, 0x55);
        assert!(r.xstate);
        let img = r.fpstate.unwrap();
        assert_eq!(img[600], 0xab);
        assert_eq!(&img[..2], &[0x7f, 0x03]);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mem = VecMemory::new(USER + 0x10_0000, USER);
        let xs = vec![0u8; 4096];
        let f = frame_in(&xs, 832);
        let out = frame::write(&mem, &f).unwrap();
        let uc = out.rdx;
        let fp = mem.read_u64(uc + 40 + 184).unwrap();
        // Reserved MXCSR bits.
        mem.write_u32(fp + 24, 0xffff_ffff).unwrap();
        assert_eq!(
            frame::read(&mem, uc, 832, 7, 0xffff),
            Err(FrameError::Fault)
        );
        mem.write_u32(fp + 24, 0x1f80).unwrap();
        // Extended features the guest does not have.
        mem.write_u64(fp + 512, 1 << 9).unwrap();
        assert_eq!(
            frame::read(&mem, uc, 832, 7, 0xffff),
            Err(FrameError::Fault)
        );
        // A ucontext outside user memory.
        assert_eq!(
            frame::read(&mem, 0x10, 832, 7, 0xffff),
            Err(FrameError::Fault)
        );
        // No restorer: the handler could not return.
        let mut g = frame_in(&xs, 832);
        g.action[1] &= !SA_RESTORER;
        assert_eq!(frame::write(&mem, &g), Err(FrameError::NoRestorer));
        // A stack pointer outside memory.
        let mut g = frame_in(&xs, 832);
        g.regs.0[15] = 0x100;
        assert_eq!(frame::write(&mem, &g), Err(FrameError::Fault));
    }

    #[test]
    fn the_altstack_is_used_once_and_overflow_is_caught() {
        let mem = VecMemory::new(USER + 0x10_0000, USER);
        let xs = vec![0u8; 4096];
        let mut f = frame_in(&xs, 832);
        f.action[1] |= SA_ONSTACK;
        f.altstack = [USER + 0x4_0000, 0, 0x4000];
        let out = frame::write(&mem, &f).unwrap();
        assert!(on_stack(&f.altstack, out.rsp));
        // Nested on the altstack: below the current sp, still on it.
        f.regs.0[15] = out.rsp;
        let nested = frame::write(&mem, &f).unwrap();
        assert!(nested.rsp < out.rsp && on_stack(&f.altstack, nested.rsp));
        // Too close to the bottom: overflow.
        f.regs.0[15] = USER + 0x4_0000 + 0x200;
        assert_eq!(frame::write(&mem, &f), Err(FrameError::AltstackOverflow));
    }

    struct Host(Mutex<Vec<(char, i32, i32)>>);
    impl SignalHost for Host {
        fn kick(&self, tid: i32) {
            self.0.lock().unwrap().push(('k', tid, 0));
        }
        fn terminate(&self, sig: i32, tid: i32) {
            self.0.lock().unwrap().push(('t', tid, sig));
        }
    }

    #[test]
    fn sending_follows_linux_generation_rules() {
        let s = Signals::default();
        let h = Arc::new(Host(Mutex::new(Vec::new())));
        let host: Arc<dyn SignalHost> = h.clone();
        s.set_host(Arc::downgrade(&host));
        let main = TaskSignals::new(super::super::GUEST_PID, 0);
        let other = TaskSignals::new(1001, 0);
        s.add_task(main.clone());
        s.add_task(other.clone());
        let log = || std::mem::take(&mut *h.0.lock().unwrap());
        // Default-ignore: dropped.
        s.send(Target::Process, SigInfo::user(libc::SIGCHLD, 0, 1, 0))
            .unwrap();
        assert_eq!(s.shared_pending(), 0);
        // Default-fatal: terminates at once.
        s.send(Target::Process, SigInfo::user(libc::SIGTERM, 0, 1, 0))
            .unwrap();
        assert_eq!(log(), vec![('t', 1000, libc::SIGTERM)]);
        // With a handler: queued, the main thread kicked; the other thread may take it too.
        s.swap(libc::SIGTERM, Some([0x40_0000, SA_RESTORER, 0, 0]));
        main.set_blocked(bit(libc::SIGTERM));
        s.send(Target::Process, SigInfo::user(libc::SIGTERM, 0, 1, 0))
            .unwrap();
        assert_eq!(log(), vec![('k', 1001, 0)]);
        assert!(!s.deliverable(&main));
        assert!(s.deliverable(&other));
        match s.dequeue(&other, 0) {
            Some(Dequeued::Handler(i, _)) => assert_eq!(i.signo, libc::SIGTERM),
            d => panic!("{d:?}"),
        }
        assert_eq!(s.dequeue(&other, 0), None);
        // Unknown thread.
        assert_eq!(
            s.send(Target::Thread(4242), SigInfo::user(10, 0, 1, 0)),
            Err(Errno(libc::ESRCH))
        );
        // A blocked ignored fault is forced: unblocked and back to the default action.
        s.swap(libc::SIGSEGV, Some([SIG_IGN, 0, 0, 0]));
        let m = s.force(
            &main,
            bit(libc::SIGSEGV),
            SigInfo::fault(libc::SIGSEGV, 1, 0),
        );
        assert_eq!(m & bit(libc::SIGSEGV), 0);
        assert_eq!(s.dequeue(&main, m), Some(Dequeued::Fatal(libc::SIGSEGV)));
    }
}
