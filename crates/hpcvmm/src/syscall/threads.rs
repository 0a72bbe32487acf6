//! Threads: clone/clone3 validate the request and reserve a tid, then hand a [`NewThread`] to
//! the vCPU layer, which creates its vCPU and host thread; exit cleans up (robust list,
//! clear_child_tid wake) and ends the thread; exit_group ends the group.

use std::sync::atomic::Ordering;

use super::{err, Args, Ctx, Errno, SysOutcome, SysResult};
use crate::kernel::futex::atomic_word;
use crate::kernel::task::Task;

const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD) as u64;

struct CloneArgs {
    flags: u64,
    stack: u64,
    ptid: u64,
    ctid: u64,
    tls: u64,
}

/// A thread the guest asked for, with its tid reserved in the thread group. The vCPU layer
/// starts it, or calls [`NewThread::cancel`] if it cannot.
#[derive(Debug)]
pub struct NewThread {
    pub task: Task,
    /// Registers the child starts with (RAX = 0, after the `syscall`).
    pub regs: kvm_bindings::kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
    /// CLONE_PARENT_SETTID / CLONE_CHILD_SETTID addresses to receive the tid.
    set_ptid: Option<u64>,
    set_ctid: Option<u64>,
}

impl NewThread {
    /// Store the child's tid where CLONE_*_SETTID asked (before the child runs).
    pub fn publish_tid(&self, mem: &dyn crate::kernel::mem::GuestRam) -> Result<(), Errno> {
        for addr in [self.set_ptid, self.set_ctid].into_iter().flatten() {
            mem.write_u32(addr, self.task.tid as u32)?;
        }
        Ok(())
    }

    /// The thread could not be started: give its reservation back.
    pub fn cancel(&self, tg: &crate::kernel::group::ThreadGroup) {
        tg.threads.lock().unwrap().cancel();
    }
}

pub fn clone(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    // x86-64 argument order: flags, newsp, parent_tid, child_tid, tls.
    do_clone(
        ctx,
        CloneArgs {
            flags: a.flags::<u64>(0),
            stack: a.ptr(1),
            ptid: a.ptr(2),
            ctid: a.ptr(3),
            tls: a.u64(4),
        },
    )
}

pub fn clone3(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    let size = a.usize(1);
    if !(64..=4096).contains(&size) {
        return err(libc::EINVAL);
    }
    let v: [u64; 8] = ctx.get(a.ptr(0))?;
    let [flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls] = v;
    if exit_signal != 0 && flags & libc::CLONE_THREAD as u64 != 0 {
        return err(libc::EINVAL);
    }
    let stack = if stack == 0 {
        0
    } else {
        stack.checked_add(stack_size).ok_or(Errno(libc::EINVAL))?
    };
    do_clone(
        ctx,
        CloneArgs {
            flags,
            stack,
            ptid: parent_tid,
            ctid: child_tid,
            tls,
        },
    )
}

fn do_clone(ctx: &mut Ctx<'_>, c: CloneArgs) -> Result<SysOutcome, Errno> {
    if c.flags & THREAD_FLAGS != THREAD_FLAGS {
        // A new process (fork-like, posix_spawn's CLONE_VM|CLONE_VFORK...): not supported.
        ctx.unsupported = true;
        return err(libc::ENOSYS);
    }
    let tid = {
        let mut t = ctx.tg.threads.lock().unwrap();
        if ctx.run.ending() {
            return err(libc::EAGAIN);
        }
        t.reserve(ctx.run.ncpus())
    };
    let f = ctx.frame;
    let mut regs = f.regs;
    regs.rax = 0;
    regs.rip = f.rip;
    regs.rflags = f.rflags;
    if c.stack != 0 {
        regs.rsp = c.stack;
    }
    let fs_base = if c.flags & libc::CLONE_SETTLS as u64 != 0 {
        c.tls
    } else {
        f.fs_base
    };
    let flag = |bit: i32| c.flags & bit as u64 != 0;
    let clear_child_tid = if flag(libc::CLONE_CHILD_CLEARTID) {
        c.ctid
    } else {
        0
    };
    Ok(SysOutcome::Clone(Box::new(NewThread {
        task: ctx.task.child(tid, clear_child_tid),
        regs,
        fs_base,
        gs_base: f.gs_base,
        set_ptid: flag(libc::CLONE_PARENT_SETTID).then_some(c.ptid),
        set_ctid: flag(libc::CLONE_CHILD_SETTID).then_some(c.ctid),
    })))
}

/// Thread exit: CLONE_CHILD_CLEARTID wake, robust-list cleanup. The last thread's exit ends
/// the group with its status.
pub fn exit(ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    thread_cleanup(ctx);
    let last = ctx.tg.threads.lock().unwrap().exit_one();
    Ok(if last {
        SysOutcome::ExitGroup(a.i32(0) & 0xff)
    } else {
        SysOutcome::ExitThread
    })
}

pub fn exit_group(_ctx: &mut Ctx<'_>, a: &Args) -> Result<SysOutcome, Errno> {
    Ok(SysOutcome::ExitGroup(a.i32(0) & 0xff))
}

fn thread_cleanup(ctx: &mut Ctx<'_>) {
    robust_cleanup(ctx);
    let ctid = ctx.task.clear_child_tid;
    if ctid != 0 && ctx.mem.write_u32(ctid, 0).is_ok() {
        ctx.tg.futexes.wake(ctx.mem, ctid, 1, u32::MAX);
    }
}

fn robust_cleanup(ctx: &mut Ctx<'_>) {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    let head = ctx.task.robust_list;
    if head == 0 {
        return;
    }
    let mem = ctx.mem;
    let Ok(offset) = mem.read_u64(head + 8) else {
        return;
    };
    let pending = mem.read_u64(head + 16).unwrap_or(0);
    let tid = ctx.task.tid as u32;
    let handle = |entry: u64| {
        let uaddr = (entry & !1).wrapping_add(offset);
        if let Some(word) = atomic_word(mem, uaddr) {
            let v = word.load(Ordering::SeqCst);
            if v & FUTEX_TID_MASK == tid {
                let new = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
                if word
                    .compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                    && v & FUTEX_WAITERS != 0
                {
                    ctx.tg.futexes.wake(mem, uaddr, 1, u32::MAX);
                }
            }
        }
    };
    let mut entry = mem.read_u64(head).unwrap_or(head);
    let mut n = 0;
    while entry != head && entry != 0 && n < 2048 {
        let next = mem.read_u64(entry & !1).unwrap_or(head);
        if entry != pending {
            handle(entry);
        }
        entry = next;
        n += 1;
    }
    if pending != 0 {
        handle(pending);
    }
}

pub fn set_tid_address(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    ctx.task.clear_child_tid = a.ptr(0);
    Ok(ctx.task.tid as u64)
}

pub fn set_robust_list(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.usize(1) != 24 {
        return err(libc::EINVAL);
    }
    ctx.task.robust_list = a.ptr(0);
    Ok(0)
}

pub fn get_robust_list(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    if a.i32(0) != 0 && a.i32(0) != ctx.task.tid {
        return err(libc::ESRCH);
    }
    ctx.put(a.ptr(1), &ctx.task.robust_list)?;
    ctx.put(a.ptr(2), &24u64)?;
    Ok(0)
}

pub fn gettid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(ctx.task.tid as u64)
}

fn own_thread(ctx: &Ctx<'_>, pid: i32) -> bool {
    pid == 0 || pid == ctx.task.tid
}

pub fn sched_getaffinity(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (pid, len, mask) = (a.i32(0), a.usize(1), a.ptr(2));
    let n = ctx.run.ncpus();
    let bytes = n.div_ceil(64) as u64 * 8;
    if len < bytes || len % 8 != 0 {
        return err(libc::EINVAL);
    }
    // Our own mask; other threads are reported with the run's full set.
    let cpus: Vec<usize> = if own_thread(ctx, pid) {
        ctx.task.affinity.clone()
    } else {
        (0..n).collect()
    };
    let mut words = vec![0u64; n.div_ceil(64)];
    for i in cpus {
        words[i / 64] |= 1 << (i % 64);
    }
    for (i, w) in words.iter().enumerate() {
        ctx.put(mask + 8 * i as u64, w)?;
    }
    Ok(bytes)
}

pub fn sched_setaffinity(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (pid, len, mask) = (a.i32(0), a.usize(1), a.ptr(2));
    let n = ctx.run.ncpus();
    let len = len.min(128);
    let bytes = ctx.mem.read_vec(mask, len)?;
    let set: Vec<usize> = (0..n)
        .filter(|&i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect();
    if set.is_empty() {
        return err(libc::EINVAL);
    }
    if own_thread(ctx, pid) {
        if !set.contains(&ctx.task.core) {
            ctx.task.core = set[0];
            ctx.fx.repin = Some(set[0]);
        }
        ctx.task.affinity = set;
    }
    Ok(0)
}

pub fn sched_yield(_ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    std::thread::yield_now();
    Ok(0)
}

pub fn getcpu(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let cpu = ctx.task.core as u32;
    if a.ptr(0) != 0 {
        ctx.put(a.ptr(0), &cpu)?;
    }
    if a.ptr(1) != 0 {
        ctx.put(a.ptr(1), &0u32)?;
    }
    Ok(0)
}

/// A pid argument of the sched_* queries: 0 or a live thread of the guest.
fn sched_target(ctx: &Ctx<'_>, pid: i32) -> Result<(), crate::kernel::Errno> {
    if pid < 0 {
        return err(libc::EINVAL);
    }
    // Thread ids are handed out in order from the pid: one created so far may be asked about.
    let created = ctx.tg.threads.lock().unwrap().totals().0;
    let pid0 = ctx.tg.pid();
    if pid == 0 || pid == ctx.task.tid || (pid >= pid0 && i64::from(pid - pid0) < created as i64) {
        return Ok(());
    }
    err(libc::ESRCH)
}

/// Every guest thread runs SCHED_OTHER, priority 0 (it owns its core).
pub fn sched_getparam(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    sched_target(ctx, a.i32(0))?;
    if a.ptr(1) == 0 {
        return err(libc::EINVAL);
    }
    ctx.put(a.ptr(1), &0i32)?;
    Ok(0)
}

pub fn sched_getscheduler(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    sched_target(ctx, a.i32(0))?;
    Ok(libc::SCHED_OTHER as u64)
}

pub fn sched_get_priority_max(_ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    match a.i32(0) {
        libc::SCHED_FIFO | libc::SCHED_RR => Ok(99),
        libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE => Ok(0),
        _ => err(libc::EINVAL),
    }
}

pub fn sched_get_priority_min(_ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    match a.i32(0) {
        libc::SCHED_FIFO | libc::SCHED_RR => Ok(1),
        libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE => Ok(0),
        _ => err(libc::EINVAL),
    }
}
