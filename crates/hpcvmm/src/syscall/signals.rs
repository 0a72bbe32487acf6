//! Signals: dispositions, masks, the altstack, sending between guest threads, waiting for
//! signals, and rt_sigreturn. Delivery itself happens where the vCPU loop resumes the guest
//! (see `vcpu.rs`): it dequeues through [`crate::kernel::signals::Signals::dequeue`] and
//! writes the frame with [`crate::kernel::signals::frame`].
//!
//! A signal a thread sends itself whose action is the default "terminate" ends the run at
//! once with 128+signal and a report naming the caller's RIP (abort() gives 134): the handler
//! returns [`SysOutcome::Deliver`].

use std::time::{Duration, Instant};

use super::{err, Args, Ctx, Errno, SysOutcome, SysResult};
use crate::kernel::run::Wake;
use crate::kernel::signals::{
    bit, fatal_by_default, frame, SigInfo, Target, ERESTARTNOHAND, SIG_DFL, SI_QUEUE, SI_TKILL,
    SI_USER, UNBLOCKABLE,
};

/// MINSIGSTKSZ on x86-64.
const MINSIGSTKSZ: u64 = 2048;
const SS_ONSTACK: u64 = 1;
const SS_DISABLE: u64 = 2;
const SS_AUTODISARM: u64 = 1 << 31;

fn check_sig(sig: u64) -> Result<i32, Errno> {
    if sig == 0 || sig > 64 {
        return err(libc::EINVAL);
    }
    Ok(sig as i32)
}

pub fn rt_sigaction(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (act, old, size) = (a.ptr(1), a.ptr(2), a.usize(3));
    if size != 8 {
        return err(libc::EINVAL);
    }
    let sig = check_sig(a.u64(0))?;
    if act != 0 && (sig == libc::SIGKILL || sig == libc::SIGSTOP) {
        return err(libc::EINVAL);
    }
    let new = if act != 0 {
        let mut n: [u64; 4] = ctx.get(act)?;
        n[3] &= !UNBLOCKABLE;
        Some(n)
    } else {
        None
    };
    if old != 0 {
        ctx.check_user(old, 32)?;
    }
    let cur = ctx.tg.signals.swap(sig, new);
    if old != 0 {
        ctx.put(old, &cur)?;
    }
    Ok(0)
}

fn read_sigset(ctx: &Ctx<'_>, addr: u64, size: u64) -> Result<u64, Errno> {
    if size != 8 {
        return err(libc::EINVAL);
    }
    ctx.get(addr)
}

pub fn rt_sigprocmask(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (how, set, old, size) = (a.i32(0), a.ptr(1), a.ptr(2), a.usize(3));
    if size != 8 {
        return err(libc::EINVAL);
    }
    let cur = ctx.task.sigmask;
    if set != 0 {
        let s: u64 = ctx.get(set)?;
        let new = match how {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return err(libc::EINVAL),
        };
        if old != 0 {
            ctx.check_user(old, 8)?;
        }
        ctx.task.set_sigmask(new);
    }
    if old != 0 {
        ctx.put(old, &cur)?;
    }
    Ok(0)
}

pub fn rt_sigpending(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.usize(1) > 8 {
        return err(libc::EINVAL);
    }
    let p = ctx.tg.signals.pending_for(&ctx.task.sig) & ctx.task.sigmask;
    let b = p.to_le_bytes();
    ctx.write_user(a.ptr(0), &b[..a.usize(1) as usize])?;
    Ok(0)
}

pub fn sigaltstack(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let cur = ctx.task.altstack;
    let sp = ctx.frame.rsp;
    let old = [cur[0], frame::sas_flags(&cur, sp), cur[2]];
    if a.ptr(0) != 0 {
        let new: [u64; 3] = ctx.get(a.ptr(0))?;
        if frame::on_stack(&cur, sp) {
            return err(libc::EPERM);
        }
        let flags = new[1] & 0xffff_ffff;
        let mode = flags & !SS_AUTODISARM;
        if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
            return err(libc::EINVAL);
        }
        if mode == SS_DISABLE {
            ctx.task.altstack = [0, SS_DISABLE, 0];
        } else {
            if new[2] < MINSIGSTKSZ {
                return err(libc::ENOMEM);
            }
            ctx.task.altstack = [new[0], 0, new[2]];
        }
    }
    if a.ptr(1) != 0 {
        ctx.put(a.ptr(1), &old)?;
    }
    Ok(0)
}

/// rt_sigreturn: read back the frame below RSP; a frame that cannot be read or holds state
/// the CPU would refuse is Linux's "bad frame": SIGSEGV.
pub fn rt_sigreturn(ctx: &mut Ctx<'_>, _a: &Args) -> Result<SysOutcome, Errno> {
    let fpu = ctx.run.fpu();
    // The handler's `ret` popped pretcode: the ucontext starts at RSP.
    let uc = ctx.frame.rsp;
    match frame::read(ctx.mem, uc, fpu.xstate_size, fpu.xcr0, fpu.mxcsr_mask) {
        Ok(r) => {
            ctx.task.set_sigmask(r.sigmask);
            let alt = r.altstack;
            let mode = alt[1] & !SS_AUTODISARM;
            if !frame::on_stack(&ctx.task.altstack, r.regs.rsp()) {
                if mode == SS_DISABLE {
                    ctx.task.altstack = [0, SS_DISABLE, 0];
                } else if (mode == 0 || mode == SS_ONSTACK) && alt[2] >= MINSIGSTKSZ {
                    ctx.task.altstack = [alt[0], 0, alt[2]];
                }
            }
            Ok(SysOutcome::Sigreturn(Box::new(r)))
        }
        Err(_) => Ok(SysOutcome::ForceSigsegv),
    }
}

/// Whether sending `sig` to this very thread kills the group at once (default action,
/// not blocked): the report then names this thread and its RIP.
fn kills_self(ctx: &Ctx<'_>, sig: i32) -> bool {
    let act = ctx.tg.signals.action(sig);
    sig == libc::SIGKILL
        || (act[0] == SIG_DFL && fatal_by_default(sig) && ctx.task.sigmask & bit(sig) == 0)
}

fn send(ctx: &mut Ctx<'_>, target: Target, info: SigInfo) -> Result<SysOutcome, Errno> {
    let sig = info.signo;
    if sig == 0 {
        // Existence check only.
        if let Target::Thread(tid) = target {
            ctx.tg.signals.task(tid).ok_or(Errno(libc::ESRCH))?;
        }
        return Ok(SysOutcome::Return(0));
    }
    check_sig(sig as u64)?;
    let to_me = match target {
        Target::Thread(tid) => tid == ctx.task.tid,
        Target::Process => {
            // Linux picks the main thread if it takes the signal, else any other.
            ctx.task.tid == ctx.tg.pid() || ctx.tg.signals.task(ctx.tg.pid()).is_none()
        }
    };
    if to_me && kills_self(ctx, sig) {
        return Ok(SysOutcome::Deliver(sig));
    }
    ctx.tg.signals.send(target, info)?;
    Ok(SysOutcome::Return(0))
}

fn user_info(ctx: &Ctx<'_>, sig: i32, code: i32) -> SigInfo {
    SigInfo::user(sig, code, ctx.tg.pid(), ctx.tg.creds.uid)
}

pub fn tgkill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    let (tgid, tid) = (a.i32(0), a.i32(1));
    if tgid <= 0 || tid <= 0 {
        return err(libc::EINVAL);
    }
    if tgid != ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    let sig = a.i32(2);
    if !(0..=64).contains(&sig) {
        return err(libc::EINVAL);
    }
    let info = user_info(ctx, sig, SI_TKILL);
    send(ctx, Target::Thread(tid), info)
}

pub fn tkill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    let tid = a.i32(0);
    if tid <= 0 {
        return err(libc::EINVAL);
    }
    let sig = a.i32(1);
    if !(0..=64).contains(&sig) {
        return err(libc::EINVAL);
    }
    let info = user_info(ctx, sig, SI_TKILL);
    send(ctx, Target::Thread(tid), info)
}

pub fn kill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    let pid = a.i32(0);
    let sig = a.i32(1);
    if !(0..=64).contains(&sig) {
        return err(libc::EINVAL);
    }
    // The guest is alone in its world: its pid, its process group (0, -pid) and "every
    // process" (-1) all name it.
    if pid != ctx.tg.pid() && pid != 0 && pid != -1 && pid != -ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    let info = user_info(ctx, sig, SI_USER);
    send(ctx, Target::Process, info)
}

fn queue_info(ctx: &Ctx<'_>, sig: i32, addr: u64) -> Result<SigInfo, Errno> {
    let b: [u8; 128] = ctx.get(addr)?;
    let mut info = SigInfo::from_bytes(&b);
    // Only the kernel may claim SI_USER/SI_KERNEL codes for another process; to oneself
    // Linux allows any code but SI_TKILL... keep the caller's code, fix the number.
    if info.code >= 0 || info.code == SI_TKILL {
        info.code = SI_QUEUE;
    }
    info.signo = sig;
    Ok(info)
}

pub fn rt_sigqueueinfo(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    if a.i32(0) != ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    let sig = a.i32(1);
    let info = queue_info(ctx, sig, a.ptr(2))?;
    send(ctx, Target::Process, info)
}

pub fn rt_tgsigqueueinfo(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    if a.i32(0) != ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    let sig = a.i32(2);
    let info = queue_info(ctx, sig, a.ptr(3))?;
    send(ctx, Target::Thread(a.i32(1)), info)
}

/// Block until a signal not blocked by `mask` is pending (or the run ends): sigsuspend and
/// pause return ERESTARTNOHAND, which becomes EINTR once the handler has run.
fn suspend(ctx: &mut Ctx<'_>, mask: u64) -> SysResult {
    let old = ctx.task.sigmask;
    ctx.task.set_sigmask(mask);
    let (signals, me) = (&ctx.tg.signals, ctx.task.sig.clone());
    ctx.run.sleep_until(None, &|| signals.deliverable(&me));
    // The handler runs with the temporary mask; the frame saves the caller's.
    ctx.task.saved_sigmask = Some(old);
    err(ERESTARTNOHAND)
}

pub fn rt_sigsuspend(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let mask = read_sigset(ctx, a.ptr(0), a.usize(1))?;
    suspend(ctx, mask)
}

pub fn pause(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    let m = ctx.task.sigmask;
    suspend(ctx, m)
}

fn timeout_of(ctx: &Ctx<'_>, addr: u64) -> Result<Option<Duration>, Errno> {
    if addr == 0 {
        return Ok(None);
    }
    let ts: libc::timespec = ctx.get(addr)?;
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return err(libc::EINVAL);
    }
    Ok(Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)))
}

/// Wait for a signal of `set` and take it (rt_sigtimedwait, a blocking signalfd read).
/// Err(EAGAIN) on timeout; ERESTARTNOHAND when another, unblocked signal arrives first.
pub fn wait_for(ctx: &mut Ctx<'_>, set: u64, timeout: Option<Duration>) -> Result<SigInfo, Errno> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let (signals, me) = (&ctx.tg.signals, ctx.task.sig.clone());
    loop {
        if let Some(i) = signals.take_waited(&me, set) {
            return Ok(i);
        }
        let ready =
            || signals.pending_for(&me) & set & !UNBLOCKABLE != 0 || signals.deliverable(&me);
        match ctx.run.sleep_until(deadline, &ready) {
            Wake::Deadline => return err(libc::EAGAIN),
            Wake::Ending => return err(libc::EINTR),
            Wake::Interrupted => {
                if signals.pending_for(&me) & set & !UNBLOCKABLE == 0 {
                    return err(ERESTARTNOHAND);
                }
            }
        }
    }
}

pub fn rt_sigtimedwait(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let set = read_sigset(ctx, a.ptr(0), a.usize(3))?;
    let timeout = timeout_of(ctx, a.ptr(2))?;
    if a.ptr(1) != 0 {
        ctx.check_user(a.ptr(1), 128)?;
    }
    let info = match wait_for(ctx, set, timeout) {
        Err(Errno(e)) if e == ERESTARTNOHAND => return err(libc::EINTR),
        r => r?,
    };
    if a.ptr(1) != 0 {
        ctx.write_user(a.ptr(1), &info.bytes())?;
    }
    Ok(info.signo as u64)
}

fn new_signalfd(mask: u64) -> Result<crate::kernel::files::FileRef, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers; returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let sfd = crate::kernel::files::SignalFd {
        mask: std::sync::atomic::AtomicU64::new(mask),
        // SAFETY: a fresh fd we own.
        host: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
    };
    Ok(crate::kernel::files::OpenFile::new(
        crate::kernel::files::FileKind::SignalFd(sfd),
        None,
    ))
}

fn signalfd_common(ctx: &mut Ctx<'_>, fd: i32, mask_at: u64, size: u64, flags: i32) -> SysResult {
    use crate::kernel::files::FileKind;
    if flags & !(libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) != 0 || size != 8 {
        return err(libc::EINVAL);
    }
    let mask: u64 = ctx.get(mask_at)?;
    let mask = mask & !UNBLOCKABLE;
    if fd != -1 {
        let f = ctx.file(fd)?;
        return match f.kind() {
            FileKind::SignalFd(s) => {
                s.mask.store(mask, std::sync::atomic::Ordering::Relaxed);
                Ok(fd as u64)
            }
            _ => err(libc::EINVAL),
        };
    }
    let file = new_signalfd(mask)?;
    if flags & libc::SFD_NONBLOCK != 0 {
        // SAFETY: fcntl on the host fd we just made.
        unsafe { libc::fcntl(file.raw(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let g = ctx
        .tg
        .files
        .lock()
        .unwrap()
        .add(file, flags & libc::SFD_CLOEXEC != 0)?;
    Ok(g as u64)
}

pub fn signalfd4(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    signalfd_common(ctx, a.fd(0), a.ptr(1), a.usize(2), a.i32(3))
}

pub fn signalfd(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    signalfd_common(ctx, a.fd(0), a.ptr(1), a.usize(2), 0)
}

/// `struct signalfd_siginfo` (128 bytes) for `i`.
fn signalfd_siginfo(i: &SigInfo) -> [u8; 128] {
    let mut b = [0u8; 128];
    let put32 = |b: &mut [u8; 128], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut [u8; 128], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut b, 0, i.signo as u32);
    put32(&mut b, 4, i.errno as u32);
    put32(&mut b, 8, i.code as u32);
    let lo = i.fields[0] as u32;
    let hi = (i.fields[0] >> 32) as u32;
    match i.code {
        crate::kernel::signals::SI_TIMER => {
            put32(&mut b, 24, lo); // ssi_tid (the timer id)
            put32(&mut b, 32, hi); // ssi_overrun
            put32(&mut b, 44, i.fields[1] as u32); // ssi_int
            put64(&mut b, 48, i.fields[1]); // ssi_ptr
        }
        c if c <= 0 => {
            put32(&mut b, 12, lo); // ssi_pid
            put32(&mut b, 16, hi); // ssi_uid
            put32(&mut b, 44, i.fields[1] as u32);
            put64(&mut b, 48, i.fields[1]);
        }
        _ => put64(&mut b, 72, i.fields[0]), // ssi_addr
    }
    b
}

/// read(2) on a signalfd: take pending signals of its mask, 128 bytes each.
pub fn signalfd_read(
    ctx: &mut Ctx<'_>,
    s: &crate::kernel::files::SignalFd,
    buf: u64,
    len: u64,
) -> SysResult {
    if len < 128 {
        return err(libc::EINVAL);
    }
    ctx.check_user(buf, 128)?;
    let mask = s.mask.load(std::sync::atomic::Ordering::Relaxed);
    let me = ctx.task.sig.clone();
    let mut n = 0u64;
    while n + 128 <= len {
        match ctx.tg.signals.take_waited(&me, mask) {
            Some(i) => {
                ctx.write_user(buf + n, &signalfd_siginfo(&i))?;
                n += 128;
            }
            None => break,
        }
    }
    if n > 0 {
        return Ok(n);
    }
    let host = std::os::fd::AsRawFd::as_raw_fd(&s.host);
    // SAFETY: F_GETFL on the host fd behind the signalfd.
    let nonblock = unsafe { libc::fcntl(host, libc::F_GETFL) } & libc::O_NONBLOCK != 0;
    if nonblock {
        return err(libc::EAGAIN);
    }
    let i = wait_for(ctx, mask, None)?;
    ctx.write_user(buf, &signalfd_siginfo(&i))?;
    Ok(128)
}
