//! Identity, limits, system information, arch_prctl and signal bookkeeping.
//!
//! Signals: dispositions and masks are recorded so libc sees consistent answers, but no signal
//! is ever delivered to a handler. A signal the program sends itself whose action is the
//! default "terminate" ends the run with 128+signal, like Linux (abort() gives 134).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{err, Ctx, SysResult};
use crate::stats::ExitReport;

/// Recorded signal dispositions (64 signals, `struct sigaction` as the kernel lays it out).
#[derive(Debug, Default)]
pub struct Signals {
    actions: Mutex<BTreeMap<u32, [u64; 4]>>,
}

/// real uid, effective uid, gid, effective gid of the VMM (the guest runs as its user).
pub fn ids() -> (u64, u64, u64, u64) {
    // SAFETY: these getters have no preconditions and cannot fail.
    unsafe {
        (
            u64::from(libc::getuid()),
            u64::from(libc::geteuid()),
            u64::from(libc::getgid()),
            u64::from(libc::getegid()),
        )
    }
}

pub fn default_limits() -> BTreeMap<u32, (u64, u64)> {
    let inf = u64::MAX;
    let mut m = BTreeMap::new();
    for r in 0..16u32 {
        m.insert(r, (inf, inf));
    }
    m.insert(libc::RLIMIT_STACK, (crate::vm::MAIN_STACK, inf));
    m.insert(libc::RLIMIT_NOFILE, (1024, 4096));
    m.insert(libc::RLIMIT_CORE, (0, inf));
    m.insert(
        libc::RLIMIT_NPROC,
        (
            crate::layout::MAX_VCPUS as u64,
            crate::layout::MAX_VCPUS as u64,
        ),
    );
    m
}

pub fn prlimit64(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [pid, res, new, old, ..] = a;
    if pid != 0 && pid as i32 != ctx.proc.pid() {
        return err(libc::ESRCH);
    }
    let res = res as u32;
    if res >= 16 {
        return err(libc::EINVAL);
    }
    let mut limits = ctx.proc.limits.lock().unwrap();
    let cur = limits[&res];
    if old != 0 {
        ctx.put(old, &[cur.0, cur.1])?;
    }
    if new != 0 {
        let v: [u64; 2] = ctx.get(new)?;
        if v[0] > v[1] || v[1] > cur.1 {
            return err(if v[0] > v[1] {
                libc::EINVAL
            } else {
                libc::EPERM
            });
        }
        limits.insert(res, (v[0], v[1]));
    }
    Ok(0)
}

pub fn getrandom(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let len = a[1].min(1 << 25);
    let p = ctx.user_ptr(a[0], len)?;
    // SAFETY: `p..p+len` is checked guest memory.
    let n = unsafe { libc::getrandom(p.cast(), len as usize, a[2] as u32 & libc::GRND_NONBLOCK) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(n as u64)
}

pub fn uname(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    // SAFETY: utsname is plain data.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    let set = |f: &mut [libc::c_char], s: &str| {
        for (d, b) in f.iter_mut().zip(s.bytes().take(64)) {
            *d = b as libc::c_char;
        }
    };
    set(&mut u.sysname, "Linux");
    set(&mut u.nodename, &ctx.proc.hostname);
    set(&mut u.release, &ctx.proc.uname_release);
    set(&mut u.version, "#1 SMP dualstack HPC VMM");
    set(&mut u.machine, "x86_64");
    set(&mut u.domainname, "(none)");
    ctx.put(a[0], &u)?;
    Ok(0)
}

pub fn sysinfo(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    // SAFETY: sysinfo is plain data.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    let size = ctx.proc.mm.lock().unwrap().high();
    let used = ctx.proc.mm.lock().unwrap().mapped_bytes();
    let start = *ctx.proc.guest_start.lock().unwrap();
    si.uptime = start.map(|s| s.elapsed().as_secs() as i64).unwrap_or(0);
    si.totalram = size;
    si.freeram = size.saturating_sub(used);
    si.procs = ctx.proc.threads.lock().unwrap().live as u16;
    si.mem_unit = 1;
    ctx.put(a[0], &si)?;
    Ok(0)
}

pub fn arch_prctl(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    const SET_GS: u64 = 0x1001;
    const SET_FS: u64 = 0x1002;
    const GET_FS: u64 = 0x1003;
    const GET_GS: u64 = 0x1004;
    let canonical = |v: u64| v < (1 << 47);
    match a[0] {
        SET_FS if canonical(a[1]) => {
            ctx.fx.fs_base = Some(a[1]);
            Ok(0)
        }
        SET_GS if canonical(a[1]) => {
            ctx.fx.gs_base = Some(a[1]);
            Ok(0)
        }
        SET_FS | SET_GS => err(libc::EPERM),
        GET_FS => {
            ctx.put(a[1], &ctx.frame.fs_base)?;
            Ok(0)
        }
        GET_GS => {
            ctx.put(a[1], &ctx.frame.gs_base)?;
            Ok(0)
        }
        _ => err(libc::EINVAL),
    }
}

pub fn rt_sigaction(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [sig, act, old, size, ..] = a;
    if size != 8 || sig == 0 || sig > 64 {
        return err(libc::EINVAL);
    }
    let sig = sig as u32;
    if act != 0 && (sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32) {
        return err(libc::EINVAL);
    }
    let mut actions = ctx.proc.signals.actions.lock().unwrap();
    let cur = actions.get(&sig).copied().unwrap_or([0; 4]);
    if act != 0 {
        let new: [u64; 4] = ctx.get(act)?;
        actions.insert(sig, new);
    }
    if old != 0 {
        ctx.put(old, &cur)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [how, set, old, size, ..] = a;
    if size != 8 {
        return err(libc::EINVAL);
    }
    let cur = ctx.thread.sigmask;
    if set != 0 {
        let s: u64 = ctx.get(set)?;
        let unblockable = (1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1));
        ctx.thread.sigmask = match how as i32 {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return err(libc::EINVAL),
        } & !unblockable;
    }
    if old != 0 {
        ctx.put(old, &cur)?;
    }
    Ok(0)
}

pub fn sigaltstack(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let cur = ctx.thread.altstack;
    if a[0] != 0 {
        let new: [u64; 3] = ctx.get(a[0])?;
        ctx.thread.altstack = new;
    }
    if a[1] != 0 {
        ctx.put(a[1], &cur)?;
    }
    Ok(0)
}

/// Default action of `sig` terminates the process.
fn fatal_by_default(sig: i32) -> bool {
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

fn raise(ctx: &mut Ctx<'_>, sig: i32) -> SysResult {
    if sig == 0 {
        return Ok(0);
    }
    if !(1..=64).contains(&sig) {
        return err(libc::EINVAL);
    }
    let handler = ctx
        .proc
        .signals
        .actions
        .lock()
        .unwrap()
        .get(&(sig as u32))
        .map(|a| a[0])
        .unwrap_or(0);
    let blocked = ctx.thread.sigmask & (1 << (sig - 1)) != 0 && sig != libc::SIGKILL;
    // SIG_DFL = 0, SIG_IGN = 1. Handlers are never run: a caught signal is dropped.
    if (handler == 0 && fatal_by_default(sig) && !blocked) || sig == libc::SIGKILL {
        let r = crate::vcpu::signal_report(sig, ctx.thread.tid, ctx.thread.vcpu, ctx.frame.rip);
        ctx.proc.control.finish(ExitReport::Faulted(r));
        ctx.proc.kick_all();
    }
    Ok(0)
}

pub fn tgkill(ctx: &mut Ctx<'_>, a: [u64; 6], tgid: Option<u64>) -> SysResult {
    if let Some(g) = tgid {
        if g as i32 != ctx.proc.pid() {
            return err(libc::ESRCH);
        }
    }
    raise(ctx, a[1] as i32)
}

pub fn kill(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let pid = a[0] as i32;
    if pid != ctx.proc.pid() && pid != 0 && pid != -1 {
        return err(libc::ESRCH);
    }
    raise(ctx, a[1] as i32)
}
