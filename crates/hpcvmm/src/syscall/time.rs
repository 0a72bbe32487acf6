//! Time system calls, answered from the host's clocks. Sleeps end early when the run ends.

use std::time::Duration;

use super::{err, Args, Ctx, SysResult};

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

pub fn clock_gettime(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = check_clock(a.i32(0))?;
    let ts = host_clock(clock)?;
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

fn sleep(ctx: &Ctx<'_>, d: Duration) -> SysResult {
    if ctx.run.sleep(d) {
        return err(libc::EINTR);
    }
    Ok(0)
}

pub fn nanosleep(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let d = read_timespec(ctx, a.ptr(0))?;
    sleep(ctx, d)
}

pub fn clock_nanosleep(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let clock = check_clock(a.i32(0))?;
    if clock == libc::CLOCK_THREAD_CPUTIME_ID {
        return err(libc::EINVAL);
    }
    let t = read_timespec(ctx, a.ptr(2))?;
    let d = if a.i32(1) & libc::TIMER_ABSTIME != 0 {
        let now = host_clock(clock)?;
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        t.saturating_sub(now)
    } else {
        t
    };
    sleep(ctx, d)
}

pub fn getrusage(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let who = match a.i32(0) {
        libc::RUSAGE_SELF | libc::RUSAGE_THREAD | libc::RUSAGE_CHILDREN => a.i32(0),
        _ => return err(libc::EINVAL),
    };
    // SAFETY: rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage for a valid `who`. For RUSAGE_THREAD the host thread
    // is this vCPU's thread, so the figures are the guest thread's.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    ctx.put(a.ptr(1), &ru)?;
    Ok(0)
}

pub fn times(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
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
