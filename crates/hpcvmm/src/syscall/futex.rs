//! futex(2): argument decoding; the wait queues are [`crate::kernel::futex::FutexTable`].

use std::time::{Duration, Instant};

use super::{err, Args, Ctx, Errno, SysResult};

const FUTEX_WAIT: u32 = 0;
const FUTEX_WAKE: u32 = 1;
const FUTEX_REQUEUE: u32 = 3;
const FUTEX_CMP_REQUEUE: u32 = 4;
const FUTEX_WAKE_OP: u32 = 5;
const FUTEX_WAIT_BITSET: u32 = 9;
const FUTEX_WAKE_BITSET: u32 = 10;
const FUTEX_PRIVATE_FLAG: u32 = 128;
const FUTEX_CLOCK_REALTIME: u32 = 256;

fn read_timeout(ctx: &Ctx<'_>, addr: u64) -> Result<Option<libc::timespec>, Errno> {
    if addr == 0 {
        return Ok(None);
    }
    let ts: libc::timespec = ctx.get(addr)?;
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return err(libc::EINVAL);
    }
    Ok(Some(ts))
}

fn deadline_from(ts: Option<libc::timespec>, absolute: bool, clock: i32) -> Option<Instant> {
    let ts = ts?;
    let d = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let rel = if absolute {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(clock, &mut now) };
        d.saturating_sub(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
    } else {
        d
    };
    // An absurdly far deadline is the same as none.
    Instant::now().checked_add(rel)
}

pub fn futex(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let addr = a.ptr(0);
    let op = a.u32(1);
    let val = a.u32(2);
    let timeout_or_val2 = a.u64(3);
    let addr2 = a.ptr(4);
    let val3 = a.u32(5);
    if super::shm::in_window(ctx, addr) {
        // A word other VMs may share: a host futex, not this VM's wait queues.
        return super::shm::futex(ctx, a);
    }
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = op & FUTEX_CLOCK_REALTIME != 0;
    let futexes = &ctx.tg.futexes;
    let (signals, me) = (&ctx.tg.signals, ctx.task.sig.clone());
    let interrupted = move || signals.deliverable(&me);
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let ts = read_timeout(ctx, timeout_or_val2)?;
            // FUTEX_WAIT: a relative timeout on CLOCK_MONOTONIC, woken by any waker;
            // FUTEX_WAIT_BITSET: an absolute one on the clock asked for, woken by `val3`'s.
            let (dl, bitset) = if cmd == FUTEX_WAIT {
                (deadline_from(ts, false, libc::CLOCK_MONOTONIC), u32::MAX)
            } else {
                let clock = if realtime {
                    libc::CLOCK_REALTIME
                } else {
                    libc::CLOCK_MONOTONIC
                };
                (deadline_from(ts, true, clock), val3)
            };
            futexes.wait(
                ctx.mem,
                ctx.run,
                &interrupted,
                &mut ctx.task.counters,
                addr,
                val,
                dl,
                bitset,
            )
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bitset = if cmd == FUTEX_WAKE { u32::MAX } else { val3 };
            if bitset == 0 {
                return err(libc::EINVAL);
            }
            if addr % 4 != 0 {
                return err(libc::EINVAL);
            }
            ctx.mem.check(addr, 4)?;
            Ok(u64::from(futexes.wake(ctx.mem, addr, val, bitset)))
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if addr % 4 != 0 || addr2 % 4 != 0 {
                return err(libc::EINVAL);
            }
            ctx.mem.check(addr, 4)?;
            ctx.mem.check(addr2, 4)?;
            let cmp = (cmd == FUTEX_CMP_REQUEUE).then_some(val3);
            futexes.requeue(ctx.mem, addr, addr2, val, timeout_or_val2 as u32, cmp)
        }
        FUTEX_WAKE_OP => {
            if addr % 4 != 0 || addr2 % 4 != 0 {
                return err(libc::EINVAL);
            }
            ctx.mem.check(addr, 4)?;
            futexes.wake_op(ctx.mem, addr, val, addr2, timeout_or_val2 as u32, val3)
        }
        _ => err(libc::ENOSYS),
    }
}
