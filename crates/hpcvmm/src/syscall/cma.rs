//! Cross-memory attach (CMA): `process_vm_readv`/`process_vm_writev` between the guest and
//! another dualstack VM of the guest's user (the ranks of one MPI job), or the guest itself.
//! Open MPI's vader BTL (single_copy_mechanism=cma, its default) and UCX's cma transport move
//! large messages this way. The other VM's memory is reached through its VMM's broker
//! ([`crate::kernel::fdshare`]): that VMM copies its guest's user memory into or out of the
//! request (the VMM never calls the host's process_vm_* on anyone, which its seccomp filter
//! forbids). Any other process answers EPERM (as Linux does for a process one may not
//! ptrace), a pid that does not exist ESRCH.
//!
//! Linux's argument rules: flags other than 0 are EINVAL, more than IOV_MAX iovecs EINVAL, an
//! unreadable iovec array or a local buffer outside user memory EFAULT, nothing to move 0.
//! A transfer stops at the first remote iovec that is not all user memory (Linux stops at the
//! first page that faults); nothing moved then is EFAULT. At most
//! [`fdshare::MAX_TRANSFER`] bytes move per call (a partial transfer, as Linux allows).

use super::{err, Args, Ctx, Errno, SysResult};
use crate::kernel::fdshare::{self, MAX_IOVS, MAX_TRANSFER};
use crate::kernel::run::refusal;

pub fn process_vm_readv(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    transfer(ctx, a, false)
}

pub fn process_vm_writev(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    transfer(ctx, a, true)
}

/// The (base, len) pairs of a guest iovec array.
fn iovs(ctx: &Ctx<'_>, addr: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > MAX_IOVS as u64 {
        return err(libc::EINVAL);
    }
    let raw = ctx.read_user_vec(addr, count * 16)?;
    let v: Vec<(u64, u64)> = raw
        .chunks_exact(16)
        .map(|c| {
            (
                u64::from_ne_bytes(c[..8].try_into().unwrap()),
                u64::from_ne_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect();
    let mut total = 0u64;
    for &(_, l) in &v {
        total = total
            .checked_add(l)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or(Errno(libc::EINVAL))?;
    }
    Ok(v)
}

/// The first `want` bytes of `v` as (base, len) pairs.
fn clip(v: &[(u64, u64)], mut want: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(b, l) in v {
        if want == 0 {
            break;
        }
        if l == 0 {
            continue;
        }
        let n = l.min(want);
        out.push((b, n));
        want -= n;
    }
    out
}

fn transfer(ctx: &mut Ctx<'_>, a: &Args, write: bool) -> SysResult {
    let (pid, flags) = (a.i32(0), a.u64(5));
    if flags != 0 {
        return err(libc::EINVAL);
    }
    let local = iovs(ctx, a.ptr(1), a.u64(2))?;
    let remote = iovs(ctx, a.ptr(3), a.u64(4))?;
    for &(b, l) in &local {
        if l > 0 {
            ctx.check_user(b, l)?;
        }
    }
    let sum = |v: &[(u64, u64)]| v.iter().map(|&(_, l)| l).sum::<u64>();
    let want = sum(&local).min(sum(&remote)).min(MAX_TRANSFER);
    if want == 0 {
        return Ok(0);
    }
    let (local, remote) = (clip(&local, want), clip(&remote, want));
    if pid <= 0 {
        return err(libc::ESRCH);
    }
    let own = pid == ctx.tg.pid();
    let uid = ctx.tg.creds.uid;
    let not_a_vm = |ctx: &Ctx<'_>| {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            ctx.run.refuse(refusal::HOST_PROCESS);
            Errno(libc::EPERM)
        } else {
            Errno(libc::ESRCH)
        }
    };
    if write {
        let mut data = Vec::with_capacity(want as usize);
        for &(b, l) in &local {
            data.extend_from_slice(&ctx.read_user_vec(b, l)?);
        }
        let n = if own {
            let mut done = 0usize;
            for &(b, l) in &remote {
                if ctx.check_user(b, l).is_err()
                    || ctx.write_user(b, &data[done..done + l as usize]).is_err()
                {
                    break;
                }
                done += l as usize;
            }
            if done == 0 {
                return err(libc::EFAULT);
            }
            done as u64
        } else {
            fdshare::write_memory(pid, uid, &remote, &data)?.ok_or_else(|| not_a_vm(ctx))?
        };
        return Ok(n);
    }
    let data = if own {
        let mut out = Vec::with_capacity(want as usize);
        for &(b, l) in &remote {
            match ctx.check_user(b, l).and_then(|_| ctx.read_user_vec(b, l)) {
                Ok(v) => out.extend_from_slice(&v),
                Err(_) => break,
            }
        }
        if out.is_empty() {
            return err(libc::EFAULT);
        }
        out
    } else {
        fdshare::read_memory(pid, uid, &remote)?.ok_or_else(|| not_a_vm(ctx))?
    };
    let mut done = 0usize;
    for &(b, l) in &local {
        if done >= data.len() {
            break;
        }
        let n = (l as usize).min(data.len() - done);
        ctx.write_user(b, &data[done..done + n])?;
        done += n;
    }
    Ok(done as u64)
}
