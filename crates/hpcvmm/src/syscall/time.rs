//! Time system calls, answered from the host's clocks. Sleeps end early when the run ends.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{err, Args, Ctx, SysResult};
use crate::kernel::clocks;
use crate::kernel::run::Wake;
use crate::kernel::signals::ERESTARTNOHAND;
use crate::kernel::timers::{SigEvent, SIGEV_SIGNAL};

fn host_clock(clock: i32) -> Result<libc::timespec, super::Errno> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; an invalid clock id returns EINVAL.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(ts)
}

fn check_clock(clock: i32) -> Result<i32, super::Errno> {
    match clock {
        libc::CLOCK_REALTIME
        | libc::CLOCK_MONOTONIC
        | libc::CLOCK_PROCESS_CPUTIME_ID
        | libc::CLOCK_THREAD_CPUTIME_ID
        | libc::CLOCK_MONOTONIC_RAW
        | libc::CLOCK_REALTIME_COARSE
        | libc::CLOCK_MONOTONIC_COARSE
        | libc::CLOCK_BOOTTIME => Ok(clock),
        _ => err(libc::EINVAL),
    }
}

/// CPU time of the calling thread or the group, from the clock slots the guest reads too
/// (None without the TSC clock: the host's figures then).
fn cpu_ns(ctx: &Ctx<'_>, thread: bool) -> Option<(u64, u64)> {
    let c = ctx.run.clock()?;
    let now = c.now();
    Some(if thread {
        clocks::thread(ctx.mem, ctx.task.vcpu, now)
    } else {
        clocks::group(ctx.mem, now)
    })
}

pub fn clock_gettime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = check_clock(a.i32(0))?;
    let cpu = match clock {
        libc::CLOCK_PROCESS_CPUTIME_ID => cpu_ns(ctx, false),
        libc::CLOCK_THREAD_CPUTIME_ID => cpu_ns(ctx, true),
        _ => None,
    };
    let ts = match cpu {
        Some((u, s)) => ts_of(Duration::from_nanos(u + s)),
        None => host_clock(clock)?,
    };
    ctx.put(a.ptr(1), &ts)?;
    Ok(0)
}

pub fn clock_getres(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = check_clock(a.i32(0))?;
    if a.ptr(1) != 0 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec.
        if unsafe { libc::clock_getres(clock, &mut ts) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        ctx.put(a.ptr(1), &ts)?;
    }
    Ok(0)
}

pub fn gettimeofday(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.ptr(0) != 0 {
        let ts = host_clock(libc::CLOCK_REALTIME)?;
        let tv = libc::timeval {
            tv_sec: ts.tv_sec,
            tv_usec: ts.tv_nsec / 1000,
        };
        ctx.put(a.ptr(0), &tv)?;
    }
    if a.ptr(1) != 0 {
        ctx.put(a.ptr(1), &[0i32; 2])?;
    }
    Ok(0)
}

pub fn time(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let ts = host_clock(libc::CLOCK_REALTIME)?;
    if a.ptr(0) != 0 {
        ctx.put(a.ptr(0), &ts.tv_sec)?;
    }
    Ok(ts.tv_sec as u64)
}

fn read_timespec(ctx: &Ctx<'_>, addr: u64) -> Result<Duration, super::Errno> {
    let ts: libc::timespec = ctx.get(addr)?;
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return err(libc::EINVAL);
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Sleep `d`; a signal to take ends it early with EINTR (after writing what was left to
/// `rem`, when given), the run's end with EINTR.
fn sleep(ctx: &Ctx<'_>, d: Duration, rem: u64) -> SysResult {
    let start = Instant::now();
    let deadline = start.checked_add(d);
    let (signals, me) = (&ctx.tg.signals, ctx.task.sig.clone());
    match ctx.run.sleep_until(deadline, &|| signals.deliverable(&me)) {
        Wake::Deadline => Ok(0),
        Wake::Ending => err(libc::EINTR),
        Wake::Interrupted => {
            if rem != 0 {
                let left = d.saturating_sub(start.elapsed());
                let ts = libc::timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                ctx.put(rem, &ts)?;
            }
            err(ERESTARTNOHAND)
        }
    }
}

pub fn nanosleep(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let d = read_timespec(ctx, a.ptr(0))?;
    sleep(ctx, d, a.ptr(1))
}

pub fn clock_nanosleep(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = check_clock(a.i32(0))?;
    if clock == libc::CLOCK_THREAD_CPUTIME_ID {
        return err(libc::EINVAL);
    }
    let t = read_timespec(ctx, a.ptr(2))?;
    let abs = a.i32(1) & libc::TIMER_ABSTIME != 0;
    let d = if abs {
        let now = host_clock(clock)?;
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        t.saturating_sub(now)
    } else {
        t
    };
    // An absolute sleep restarts to the same deadline; a relative one reports what is left.
    sleep(ctx, d, if abs { 0 } else { a.ptr(3) })
}

fn process_cpu_ns() -> u64 {
    host_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
        .map(|t| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
        .unwrap_or(0)
}

fn dur_of_tv(tv: &libc::timeval) -> Result<Duration, super::Errno> {
    if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
        return err(libc::EINVAL);
    }
    Ok(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
}

fn tv_of(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as i64,
        tv_usec: i64::from(d.subsec_micros()),
    }
}

fn dur_of_ts(ts: &libc::timespec) -> Result<Duration, super::Errno> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return err(libc::EINVAL);
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn ts_of(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

fn timers_changed(ctx: &Ctx<'_>) {
    ctx.tg.signals.timers_changed();
}

pub fn setitimer(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let which = a.i32(0);
    let (value, interval) = if a.ptr(1) == 0 {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let v: [libc::timeval; 2] = ctx.get(a.ptr(1))?;
        (dur_of_tv(&v[1])?, dur_of_tv(&v[0])?)
    };
    if a.ptr(2) != 0 {
        ctx.check_user(a.ptr(2), 32)?;
    }
    let (ov, oi) =
        ctx.tg
            .timers
            .set_itimer(which, value, interval, Instant::now(), process_cpu_ns())?;
    timers_changed(ctx);
    if a.ptr(2) != 0 {
        ctx.put(a.ptr(2), &[tv_of(oi), tv_of(ov)])?;
    }
    Ok(0)
}

pub fn getitimer(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (v, i) = ctx
        .tg
        .timers
        .get_itimer(a.i32(0), Instant::now(), process_cpu_ns())?;
    ctx.put(a.ptr(1), &[tv_of(i), tv_of(v)])?;
    Ok(0)
}

pub fn alarm(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let secs = Duration::from_secs(u64::from(a.u32(0)));
    let (old, _) = ctx
        .tg
        .timers
        .set_itimer(0, secs, Duration::ZERO, Instant::now(), 0)?;
    timers_changed(ctx);
    // Seconds left, rounded to nearest (a pending alarm never reports 0).
    let mut s = old.as_secs();
    if old.subsec_micros() >= 500_000 || (s == 0 && !old.is_zero()) {
        s += 1;
    }
    Ok(s)
}

pub fn timer_create(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = a.i32(0);
    let ev = if a.ptr(1) == 0 {
        SigEvent {
            notify: SIGEV_SIGNAL,
            signo: libc::SIGALRM,
            value: 0,
            tid: 0,
        }
    } else {
        // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), tid (4)...
        let b: [u32; 6] = ctx.get(a.ptr(1))?;
        SigEvent {
            value: u64::from(b[0]) | (u64::from(b[1]) << 32),
            signo: b[2] as i32,
            notify: b[3] as i32,
            tid: b[4] as i32,
        }
    };
    if ev.notify == crate::kernel::timers::SIGEV_THREAD_ID && ctx.tg.signals.task(ev.tid).is_none()
    {
        return err(libc::EINVAL);
    }
    ctx.check_user(a.ptr(2), 4)?;
    let id = ctx.tg.timers.create(clock, ev, ctx.tg.pid())?;
    if let Err(e) = ctx.put(a.ptr(2), &id) {
        let _ = ctx.tg.timers.delete(id);
        return Err(e);
    }
    Ok(0)
}

pub fn timer_settime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let id = a.i32(0);
    let v: [libc::timespec; 2] = ctx.get(a.ptr(2))?;
    let interval = dur_of_ts(&v[0])?;
    let mut value = dur_of_ts(&v[1])?;
    let clock = ctx.tg.timers.clock_of(id)?;
    if a.i32(1) & libc::TIMER_ABSTIME != 0 && !value.is_zero() {
        let now = host_clock(clock)?;
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        value = value.saturating_sub(now).max(Duration::from_nanos(1));
    }
    if a.ptr(3) != 0 {
        ctx.check_user(a.ptr(3), 32)?;
    }
    let (ov, oi) = ctx
        .tg
        .timers
        .settime(id, value, interval, Instant::now(), process_cpu_ns())?;
    timers_changed(ctx);
    if a.ptr(3) != 0 {
        ctx.put(a.ptr(3), &[ts_of(oi), ts_of(ov)])?;
    }
    Ok(0)
}

pub fn timer_gettime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (v, i) = ctx
        .tg
        .timers
        .gettime(a.i32(0), Instant::now(), process_cpu_ns())?;
    ctx.put(a.ptr(1), &[ts_of(i), ts_of(v)])?;
    Ok(0)
}

pub fn timer_getoverrun(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    Ok(ctx.tg.timers.overrun(a.i32(0))? as u64)
}

pub fn timerfd_create(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = a.i32(0);
    let flags = a.i32(1);
    match clock {
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME => {}
        libc::CLOCK_REALTIME_ALARM | libc::CLOCK_BOOTTIME_ALARM => return err(libc::EPERM),
        _ => return err(libc::EINVAL),
    }
    if flags & !(libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) != 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: no pointers; returns a new fd or -1.
    let fd =
        unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | (flags & libc::TFD_NONBLOCK)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd we own.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    let file =
        crate::kernel::files::OpenFile::new(crate::kernel::files::FileKind::TimerFd(f), None);
    let g = ctx
        .tg
        .files
        .lock()
        .unwrap()
        .add(file, flags & libc::TFD_CLOEXEC != 0)?;
    Ok(g as u64)
}

fn timerfd_of(ctx: &Ctx<'_>, fd: i32) -> Result<crate::kernel::files::FileRef, super::Errno> {
    let f = ctx.file(fd)?;
    match f.kind() {
        crate::kernel::files::FileKind::TimerFd(_) => Ok(f),
        _ => err(libc::EINVAL),
    }
}

pub fn timerfd_settime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = timerfd_of(ctx, a.fd(0))?;
    let flags = a.i32(1);
    if flags & !(libc::TFD_TIMER_ABSTIME | 2) != 0 {
        return err(libc::EINVAL);
    }
    let new: [libc::timespec; 2] = ctx.get(a.ptr(2))?;
    dur_of_ts(&new[0])?;
    dur_of_ts(&new[1])?;
    if a.ptr(3) != 0 {
        ctx.check_user(a.ptr(3), 32)?;
    }
    let host_new = libc::itimerspec {
        it_interval: new[0],
        it_value: new[1],
    };
    // SAFETY: itimerspec is plain data.
    let mut old: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: our host timerfd; both structs are ours.
    if unsafe { libc::timerfd_settime(f.raw(), flags, &host_new, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if a.ptr(3) != 0 {
        ctx.put(a.ptr(3), &[old.it_interval, old.it_value])?;
    }
    Ok(0)
}

pub fn timerfd_gettime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let f = timerfd_of(ctx, a.fd(0))?;
    ctx.check_user(a.ptr(1), 32)?;
    // SAFETY: itimerspec is plain data.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: our host timerfd, writing one itimerspec.
    if unsafe { libc::timerfd_gettime(f.raw(), &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    ctx.put(a.ptr(1), &[cur.it_interval, cur.it_value])?;
    Ok(0)
}

pub fn timer_delete(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    ctx.tg.timers.delete(a.i32(0))?;
    timers_changed(ctx);
    Ok(0)
}

pub fn getrusage(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let who = match a.i32(0) {
        libc::RUSAGE_SELF | libc::RUSAGE_THREAD | libc::RUSAGE_CHILDREN => a.i32(0),
        _ => return err(libc::EINVAL),
    };
    // SAFETY: rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if who == libc::RUSAGE_CHILDREN {
        // No child processes.
    } else if let Some((u, s)) = cpu_ns(ctx, who == libc::RUSAGE_THREAD) {
        // What the fast entry answers too: guest time as user time, VMM service time as
        // system time, the peak of mapped memory as maxrss.
        ru.ru_utime = tv_of(Duration::from_nanos(u));
        ru.ru_stime = tv_of(Duration::from_nanos(s));
        ru.ru_maxrss = clocks::maxrss(ctx.mem) as i64;
        if who == libc::RUSAGE_THREAD {
            ru.ru_nvcsw = clocks::voluntary_switches(ctx.mem, ctx.task.vcpu) as i64;
        }
    } else {
        // SAFETY: getrusage writes one rusage for a valid `who`. For RUSAGE_THREAD the host
        // thread is this vCPU's thread, so the figures are the guest thread's.
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    ctx.put(a.ptr(1), &ru)?;
    Ok(0)
}

pub fn times(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if let (Some(c), Some((u, s))) = (ctx.run.clock(), cpu_ns(ctx, false)) {
        // Clock ticks (USER_HZ = 100), as the fast entry computes them.
        let t = [(u / 10_000_000) as i64, (s / 10_000_000) as i64, 0, 0];
        if a.ptr(0) != 0 {
            ctx.put(a.ptr(0), &t)?;
        }
        return Ok(c.now() / 10_000_000);
    }
    // SAFETY: tms is plain data.
    let mut t: libc::tms = unsafe { std::mem::zeroed() };
    // SAFETY: times writes one tms.
    let r = unsafe { libc::times(&mut t) };
    if r == -1i64 as libc::clock_t {
        return Err(std::io::Error::last_os_error().into());
    }
    if a.ptr(0) != 0 {
        ctx.put(a.ptr(0), &t)?;
    }
    Ok(r as u64)
}
