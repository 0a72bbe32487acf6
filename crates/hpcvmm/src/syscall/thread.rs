//! Threads: clone/clone3 create a vCPU on its own host thread, pinned to the next core of the
//! run; exit parks the vCPU (kept for reuse); exit_group ends the run.

use std::sync::atomic::Ordering;

use super::{err, futex, Ctx, SysResult};
use crate::process::ThreadState;
use crate::stats::{ExitReport, VcpuStats};

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

pub fn clone(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    // x86-64 argument order: flags, newsp, parent_tid, child_tid, tls.
    do_clone(
        ctx,
        CloneArgs {
            flags: a[0],
            stack: a[1],
            ptid: a[2],
            ctid: a[3],
            tls: a[4],
        },
    )
}

pub fn clone3(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    if a[1] < 64 || a[1] > 4096 {
        return err(libc::EINVAL);
    }
    let v: [u64; 8] = ctx.get(a[0])?;
    let [flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls] = v;
    if exit_signal != 0 && flags & libc::CLONE_THREAD as u64 != 0 {
        return err(libc::EINVAL);
    }
    let stack = if stack == 0 {
        0
    } else {
        stack
            .checked_add(stack_size)
            .ok_or(super::Errno(libc::EINVAL))?
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

/// fork, vfork, execve and process-creating clones: the HPC VMM runs exactly one process.
pub fn no_processes(ctx: &mut Ctx<'_>, _a: [u64; 6]) -> SysResult {
    ctx.proc.note_enosys(ctx.frame.regs.rax);
    err(libc::ENOSYS)
}

fn do_clone(ctx: &mut Ctx<'_>, c: CloneArgs) -> SysResult {
    if c.flags & THREAD_FLAGS != THREAD_FLAGS {
        // A new process (fork-like, posix_spawn's CLONE_VM|CLONE_VFORK...): not supported.
        return no_processes(ctx, [0; 6]);
    }
    let proc = ctx.proc;
    let ncpus = proc.cpus.len();
    let (index, tid, parked) = {
        let mut t = proc.threads.lock().unwrap();
        if proc.control.exiting() {
            return err(libc::EAGAIN);
        }
        let parked = proc.parked.lock().unwrap().pop();
        let index = match &parked {
            Some((i, _)) => *i,
            None => {
                if t.next_vcpu >= crate::layout::MAX_VCPUS {
                    return err(libc::EAGAIN);
                }
                t.next_vcpu += 1;
                t.next_vcpu - 1
            }
        };
        let tid = t.next_tid;
        t.next_tid += 1;
        t.live += 1;
        t.created += 1;
        t.max_live = t.max_live.max(t.live);
        if t.live as usize > ncpus {
            proc.oversubscribed.store(true, Ordering::Relaxed);
        }
        (index, tid, parked.map(|p| p.1))
    };
    let undo = |e: i32| {
        proc.threads.lock().unwrap().live -= 1;
        err(e)
    };
    let fresh = parked.is_none();
    let vcpu = match parked {
        Some(v) => v,
        None => match proc.vm.create_vcpu(index as u64) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("clone: cannot create vCPU {index}: {e}");
                return undo(libc::EAGAIN);
            }
        },
    };
    if let Err(e) = crate::vcpu::configure(proc, &vcpu, index, fresh) {
        tracing::warn!("clone: cannot configure vCPU {index}: {e}");
        return undo(libc::EAGAIN);
    }
    let f = ctx.frame;
    let mut regs = f.regs;
    regs.rax = 0;
    regs.rip = f.rip;
    regs.rflags = 0x2 | (f.rflags & 0x0cd5);
    if c.stack != 0 {
        regs.rsp = c.stack;
    }
    let fs = if c.flags & libc::CLONE_SETTLS as u64 != 0 {
        c.tls
    } else {
        f.fs_base
    };
    if let Err(e) = crate::vcpu::set_entry(&vcpu, &regs, fs, f.gs_base) {
        tracing::warn!("clone: cannot set vCPU {index}'s registers: {e}");
        return undo(libc::EAGAIN);
    }
    if c.flags & libc::CLONE_PARENT_SETTID as u64 != 0
        && proc.mem.write_u32(c.ptid, tid as u32).is_err()
    {
        return undo(libc::EFAULT);
    }
    if c.flags & libc::CLONE_CHILD_SETTID as u64 != 0
        && proc.mem.write_u32(c.ctid, tid as u32).is_err()
    {
        return undo(libc::EFAULT);
    }
    // Linux: the child inherits its creator's affinity mask; the HPC VMM pins it to the next
    // core of that mask.
    let mask = ctx.thread.affinity.clone();
    let core = proc.core_for(index, &mask);
    let th = ThreadState {
        tid,
        vcpu: index,
        affinity: mask,
        core,
        clear_child_tid: if c.flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 {
            c.ctid
        } else {
            0
        },
        robust_list: 0,
        sigmask: ctx.thread.sigmask,
        altstack: [0, 2, 0],
        stats: VcpuStats::new(index, tid, proc.host_cpus_for(core)),
    };
    let p = proc.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || crate::vcpu::run(p, vcpu, th));
    match spawned {
        Ok(h) => {
            proc.threads.lock().unwrap().handles.push(h);
            Ok(tid as u64)
        }
        Err(_) => undo(libc::EAGAIN),
    }
}

/// Thread exit: CLONE_CHILD_CLEARTID wake, robust-list cleanup, park the vCPU. The last
/// thread's exit ends the run with its status.
pub fn exit(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    thread_cleanup(ctx);
    let last = {
        let mut t = ctx.proc.threads.lock().unwrap();
        t.live -= 1;
        t.live == 0
    };
    if last {
        ctx.proc.control.finish(ExitReport::Exited {
            status: (a[0] & 0xff) as i32,
        });
    }
    ctx.fx.thread_exit = true;
    Ok(0)
}

fn thread_cleanup(ctx: &mut Ctx<'_>) {
    robust_cleanup(ctx);
    let ctid = ctx.thread.clear_child_tid;
    if ctid != 0 && ctx.proc.mem.write_u32(ctid, 0).is_ok() {
        ctx.proc.futexes.wake(&ctx.proc.mem, ctid, 1, u32::MAX);
    }
}

fn robust_cleanup(ctx: &mut Ctx<'_>) {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    let head = ctx.thread.robust_list;
    if head == 0 {
        return;
    }
    let mem = &ctx.proc.mem;
    let Ok(offset) = mem.read_u64(head + 8) else {
        return;
    };
    let pending = mem.read_u64(head + 16).unwrap_or(0);
    let tid = ctx.thread.tid as u32;
    let handle = |entry: u64| {
        let uaddr = (entry & !1).wrapping_add(offset);
        if let Some(word) = futex::atomic_word(mem, uaddr) {
            let v = word.load(Ordering::SeqCst);
            if v & FUTEX_TID_MASK == tid {
                let new = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
                if word
                    .compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                    && v & FUTEX_WAITERS != 0
                {
                    ctx.proc.futexes.wake(mem, uaddr, 1, u32::MAX);
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

pub fn exit_group(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    ctx.proc.control.finish(ExitReport::Exited {
        status: (a[0] & 0xff) as i32,
    });
    ctx.proc.kick_all();
    ctx.fx.thread_exit = true;
    Ok(0)
}

pub fn set_tid_address(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    ctx.thread.clear_child_tid = a[0];
    Ok(ctx.thread.tid as u64)
}

pub fn set_robust_list(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    if a[1] != 24 {
        return err(libc::EINVAL);
    }
    ctx.thread.robust_list = a[0];
    Ok(0)
}

pub fn get_robust_list(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    if a[0] != 0 && a[0] as i32 != ctx.thread.tid {
        return err(libc::ESRCH);
    }
    ctx.put(a[1], &ctx.thread.robust_list)?;
    ctx.put(a[2], &24u64)?;
    Ok(0)
}

pub fn gettid(ctx: &mut Ctx<'_>, _a: [u64; 6]) -> SysResult {
    Ok(ctx.thread.tid as u64)
}

fn own_thread(ctx: &Ctx<'_>, pid: u64) -> bool {
    pid == 0 || pid as i32 == ctx.thread.tid
}

pub fn sched_getaffinity(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [pid, len, mask, ..] = a;
    let n = ctx.proc.cpus.len();
    let bytes = n.div_ceil(64) as u64 * 8;
    if len < bytes || len % 8 != 0 {
        return err(libc::EINVAL);
    }
    // Our own mask; other threads are reported with the run's full set.
    let cpus: Vec<usize> = if own_thread(ctx, pid) {
        ctx.thread.affinity.clone()
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

pub fn sched_setaffinity(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let [pid, len, mask, ..] = a;
    let n = ctx.proc.cpus.len();
    let len = len.min(128);
    let bytes = ctx.proc.mem.read_vec(mask, len)?;
    let set: Vec<usize> = (0..n)
        .filter(|&i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect();
    if set.is_empty() {
        return err(libc::EINVAL);
    }
    if own_thread(ctx, pid) {
        if !set.contains(&ctx.thread.core) {
            ctx.thread.core = set[0];
            ctx.fx.repin = Some(set[0]);
        }
        ctx.thread.affinity = set;
    }
    Ok(0)
}

pub fn sched_yield(_ctx: &mut Ctx<'_>, _a: [u64; 6]) -> SysResult {
    std::thread::yield_now();
    Ok(0)
}

pub fn getcpu(ctx: &mut Ctx<'_>, a: [u64; 6]) -> SysResult {
    let cpu = ctx.thread.core as u32;
    if a[0] != 0 {
        ctx.put(a[0], &cpu)?;
    }
    if a[1] != 0 {
        ctx.put(a[1], &0u32)?;
    }
    Ok(0)
}
