//! The signal pump: one host thread per run that brings signals from outside into the guest
//! and keeps guest signals from getting stuck.
//!
//! - Signals sent to the VMM process (SIGTERM from Slurm, SIGINT from a terminal, SIGUSR1...;
//!   see [`FORWARDED`]) are blocked in every VMM thread and read from a signalfd here, then
//!   sent to the guest process as Linux delivers a signal from outside its pid namespace
//!   (si_pid 0, si_uid of the sender).
//! - The guest's timers (alarm, setitimer, timer_create) fire from here.
//! - A kick can be lost when it lands just before a vCPU thread enters KVM_RUN or a blocking
//!   host call; while any thread has a deliverable signal pending the pump kicks it again
//!   every [`REKICK`]. With nothing pending and no timer armed the pump sleeps in poll(2)
//!   until woken: no cost to the vCPUs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kernel::signals::{SigInfo, Target, SI_USER};
use crate::kernel::timers::CPU_POLL;
use crate::vcpu::Machine;

/// Signals from outside the VMM that go to the guest.
pub const FORWARDED: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
    libc::SIGCONT,
    libc::SIGQUIT,
];

/// How often a still-pending signal's thread is kicked again.
pub const REKICK: Duration = Duration::from_millis(2);

fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// The forwarded signals blocked on the calling thread (inherited by every thread it starts)
/// and readable from a signalfd, until dropped.
pub struct OutsideSignals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl OutsideSignals {
    /// Block [`FORWARDED`] on this thread and open a signalfd for them.
    pub fn capture() -> std::io::Result<Self> {
        let set = forwarded_set();
        // SAFETY: sigset_t is plain data.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointers.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        // SAFETY: valid sigset; returns a new fd or -1.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: restoring the mask we saved.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(e);
        }
        Ok(OutsideSignals {
            // SAFETY: a fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            old,
        })
    }

    /// The signalfd, for the pump (which never outlives this).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn drain(&self) -> Vec<(i32, u32)> {
        drain(self.fd.as_raw_fd())
    }
}

/// Read the signals that arrived on signalfd `fd` (non-blocking): (signo, sender uid).
fn drain(fd: i32) -> Vec<(i32, u32)> {
    {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most n bytes into `si`.
            let r = unsafe { libc::read(fd, (&mut si as *mut libc::signalfd_siginfo).cast(), n) };
            if r != n as isize {
                break;
            }
            out.push((si.ssi_signo as i32, si.ssi_uid));
        }
        out
    }
}

impl Drop for OutsideSignals {
    fn drop(&mut self) {
        // What arrived after the guest ended is dropped, not left to kill the caller.
        let _ = self.drain();
        // SAFETY: restoring the mask saved in capture().
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The pump loop; returns when the run ends. `outside`: the signalfd of [`OutsideSignals`],
/// which the caller keeps open until this returns.
pub fn run(m: Arc<Machine>, outside: Option<i32>) {
    let sigs = &m.kernel.group.signals;
    let timers = &m.kernel.group.timers;
    loop {
        if m.kernel.run.ending() {
            return;
        }
        let now = Instant::now();
        for (target, info) in timers.fire_due(now, process_cpu_ns()) {
            let _ = sigs.send(target, info);
        }
        if let Some(fd) = outside {
            for (signo, uid) in drain(fd) {
                tracing::debug!("signal {signo} from outside goes to the guest");
                let _ = sigs.send(Target::Process, SigInfo::user(signo, SI_USER, 0, uid));
            }
        }
        let stuck = sigs.undelivered();
        for tid in &stuck {
            m.kick_guest_thread(*tid);
        }
        if !stuck.is_empty() {
            m.kernel.run.nudge();
            m.kernel.group.futexes.wake_everyone();
        }
        let mut timeout: Option<Duration> = timers
            .next_wake()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if !stuck.is_empty() {
            timeout = Some(timeout.map_or(REKICK, |t| t.min(REKICK)));
        }
        if timers.cpu_armed() {
            timeout = Some(timeout.map_or(CPU_POLL, |t| t.min(CPU_POLL)));
        }
        let ms = match timeout {
            None => -1,
            Some(t) => (t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32,
        };
        let mut fds = vec![libc::pollfd {
            fd: m.pump_wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(fd) = outside {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll over our own pollfd vector.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if fds[0].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 8];
            // SAFETY: reads 8 bytes from our eventfd into `b`.
            unsafe { libc::read(m.pump_wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
        }
    }
}
