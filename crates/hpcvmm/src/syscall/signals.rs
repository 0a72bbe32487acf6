//! Signals: dispositions and masks are recorded so libc sees consistent answers, but no signal
//! is delivered to a handler yet. A signal the program sends itself whose action is the default
//! "terminate" ends the run with 128+signal, like Linux (abort() gives 134): the handler
//! returns [`SysOutcome::Deliver`] and the vCPU loop ends the group.

use super::{err, Args, Ctx, Errno, SysOutcome, SysResult};
use crate::kernel::signals::{fatal_by_default, SIG_DFL};

pub fn rt_sigaction(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (sig, act, old, size) = (a.u64(0), a.ptr(1), a.ptr(2), a.usize(3));
    if size != 8 || sig == 0 || sig > 64 {
        return err(libc::EINVAL);
    }
    let sig = sig as u32;
    if act != 0 && (sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32) {
        return err(libc::EINVAL);
    }
    let new = if act != 0 {
        Some(ctx.get::<[u64; 4]>(act)?)
    } else {
        None
    };
    let cur = ctx.tg.signals.swap(sig, new);
    if old != 0 {
        ctx.put(old, &cur)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (how, set, old, size) = (a.i32(0), a.ptr(1), a.ptr(2), a.usize(3));
    if size != 8 {
        return err(libc::EINVAL);
    }
    let cur = ctx.task.sigmask;
    if set != 0 {
        let s: u64 = ctx.get(set)?;
        let unblockable = (1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1));
        ctx.task.sigmask = match how {
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

pub fn sigaltstack(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let cur = ctx.task.altstack;
    if a.ptr(0) != 0 {
        ctx.task.altstack = ctx.get(a.ptr(0))?;
    }
    if a.ptr(1) != 0 {
        ctx.put(a.ptr(1), &cur)?;
    }
    Ok(0)
}

fn raise(ctx: &mut Ctx<'_>, sig: i32) -> Result<SysOutcome, Errno> {
    if sig == 0 {
        return Ok(SysOutcome::Return(0));
    }
    if !(1..=64).contains(&sig) {
        return err(libc::EINVAL);
    }
    let handler = ctx.tg.signals.handler(sig as u32);
    let blocked = ctx.task.sigmask & (1 << (sig - 1)) != 0 && sig != libc::SIGKILL;
    // SIG_DFL = 0, SIG_IGN = 1. Handlers are never run: a caught signal is dropped.
    if (handler == SIG_DFL && fatal_by_default(sig) && !blocked) || sig == libc::SIGKILL {
        return Ok(SysOutcome::Deliver(sig));
    }
    Ok(SysOutcome::Return(0))
}

pub fn tgkill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    if a.i32(0) != ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    raise(ctx, a.i32(2))
}

pub fn tkill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    raise(ctx, a.i32(1))
}

pub fn kill(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    let pid = a.i32(0);
    if pid != ctx.tg.pid() && pid != 0 && pid != -1 {
        return err(libc::ESRCH);
    }
    raise(ctx, a.i32(1))
}
