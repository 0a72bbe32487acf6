//! Identity, limits, system information, random bytes and arch_prctl.

use super::{err, Args, Ctx, SysResult};

pub fn getpid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(ctx.tg.pid() as u64)
}

pub fn getppid(_ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(1)
}

pub fn getuid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(u64::from(ctx.tg.creds.uid))
}

pub fn geteuid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(u64::from(ctx.tg.creds.euid))
}

pub fn getgid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(u64::from(ctx.tg.creds.gid))
}

pub fn getegid(ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(u64::from(ctx.tg.creds.egid))
}

fn rlimit(ctx: &mut Ctx<'_>, pid: i32, res: u32, new: u64, old: u64) -> SysResult {
    if pid != 0 && pid != ctx.tg.pid() {
        return err(libc::ESRCH);
    }
    let mut limits = ctx.tg.limits.lock().unwrap();
    let cur = limits.get(res)?;
    if old != 0 {
        ctx.put(old, &[cur.0, cur.1])?;
    }
    if new != 0 {
        let v: [u64; 2] = ctx.get(new)?;
        limits.set(res, v[0], v[1])?;
    }
    Ok(0)
}

pub fn prlimit64(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    rlimit(ctx, a.i32(0), a.u32(1), a.ptr(2), a.ptr(3))
}

pub fn getrlimit(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    rlimit(ctx, 0, a.u32(0), 0, a.ptr(1))
}

pub fn setrlimit(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    rlimit(ctx, 0, a.u32(0), a.ptr(1), 0)
}

pub fn getrandom(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let len = a.usize(1).min(1 << 25);
    let p = ctx.user_ptr(a.ptr(0), len)?;
    let flags = a.flags::<u32>(2) & libc::GRND_NONBLOCK;
    // SAFETY: `p..p+len` is checked guest memory.
    let n = unsafe { libc::getrandom(p.cast(), len as usize, flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(n as u64)
}

pub fn uname(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    // SAFETY: utsname is plain data (char arrays); all zeroes is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    let set = |f: &mut [libc::c_char], s: &str| {
        for (d, b) in f.iter_mut().zip(s.bytes().take(64)) {
            *d = b as libc::c_char;
        }
    };
    set(&mut u.sysname, "Linux");
    set(&mut u.nodename, &ctx.tg.uts.nodename);
    set(&mut u.release, &ctx.tg.uts.release);
    set(&mut u.version, "#1 SMP dualstack HPC VMM");
    set(&mut u.machine, "x86_64");
    set(&mut u.domainname, "(none)");
    ctx.put(a.ptr(0), &u)?;
    Ok(0)
}

/// `struct sysinfo` with its padding spelled out (libc's has implicit padding, which must
/// not be copied to the guest).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Sysinfo {
    uptime: i64,
    loads: [u64; 3],
    totalram: u64,
    freeram: u64,
    sharedram: u64,
    bufferram: u64,
    totalswap: u64,
    freeswap: u64,
    procs: u16,
    pad: u16,
    pad2: u32,
    totalhigh: u64,
    freehigh: u64,
    mem_unit: u32,
    pad3: u32,
}
crate::plain!(Sysinfo => [i64, [u64; 3], [u64; 6], u16, u16, u32, u64, u64, u32, u32]);
const _: () = assert!(std::mem::size_of::<Sysinfo>() == std::mem::size_of::<libc::sysinfo>());

pub fn sysinfo(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (size, used) = {
        let mm = ctx.tg.mm.lock().unwrap();
        (mm.high(), mm.mapped_bytes())
    };
    let si = Sysinfo {
        uptime: ctx
            .run
            .started()
            .map(|s| s.elapsed().as_secs() as i64)
            .unwrap_or(0),
        totalram: size,
        freeram: size.saturating_sub(used),
        procs: ctx.tg.threads.lock().unwrap().live() as u16,
        mem_unit: 1,
        ..Default::default()
    };
    ctx.put(a.ptr(0), &si)?;
    Ok(0)
}

pub fn arch_prctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    const SET_GS: i32 = 0x1001;
    const SET_FS: i32 = 0x1002;
    const GET_FS: i32 = 0x1003;
    const GET_GS: i32 = 0x1004;
    let canonical = |v: u64| v < (1 << 47);
    let addr = a.u64(1);
    match a.i32(0) {
        SET_FS if canonical(addr) => {
            ctx.fx.fs_base = Some(addr);
            Ok(0)
        }
        SET_GS if canonical(addr) => {
            ctx.fx.gs_base = Some(addr);
            Ok(0)
        }
        SET_FS | SET_GS => err(libc::EPERM),
        GET_FS => {
            ctx.put(addr, &ctx.frame.fs_base)?;
            Ok(0)
        }
        GET_GS => {
            ctx.put(addr, &ctx.frame.gs_base)?;
            Ok(0)
        }
        _ => err(libc::EINVAL),
    }
}

/// restartable sequences: glibc probes rseq at start and works without it.
pub fn rseq(_ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    err(libc::ENOSYS)
}

/// PER_LINUX with the flags that change nothing here (no address randomization exists to
/// turn off; READ_IMPLIES_EXEC: memory is executable anyway).
const PERSONA_FLAGS_OK: u32 = 0x0040000 /* ADDR_NO_RANDOMIZE */
    | 0x0400000 /* READ_IMPLIES_EXEC */
    | 0x0200000 /* ADDR_COMPAT_LAYOUT */;

pub fn personality(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let want = a.u32(0);
    let old = ctx
        .tg
        .personality
        .load(std::sync::atomic::Ordering::Relaxed);
    if want == 0xffff_ffff {
        return Ok(u64::from(old));
    }
    if want & 0xff != 0 || want & !0xff & !PERSONA_FLAGS_OK != 0 {
        // Other execution domains (PER_LINUX32, PER_BSD...) and address-space limits do not
        // exist in the HPC VMM.
        return err(libc::EINVAL);
    }
    ctx.tg
        .personality
        .store(want, std::sync::atomic::Ordering::Relaxed);
    Ok(u64::from(old))
}

pub fn prctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    match a.i32(0) {
        libc::PR_SET_NAME => {
            let name = ctx.mem.read_cstr(a.ptr(1), 4096)?;
            let mut comm = [0u8; 16];
            let n = name.len().min(15);
            comm[..n].copy_from_slice(&name[..n]);
            ctx.task.comm = comm;
            Ok(0)
        }
        libc::PR_GET_NAME => {
            ctx.write_user(a.ptr(1), &ctx.task.comm)?;
            Ok(0)
        }
        libc::PR_SET_PDEATHSIG => {
            let sig = a.u64(1);
            if sig > 64 {
                return err(libc::EINVAL);
            }
            // The parent is the VMM, which outlives the guest: the signal never comes.
            ctx.task.pdeathsig = sig as i32;
            Ok(0)
        }
        libc::PR_GET_PDEATHSIG => {
            ctx.put(a.ptr(1), &ctx.task.pdeathsig)?;
            Ok(0)
        }
        libc::PR_GET_DUMPABLE => Ok(1),
        libc::PR_SET_DUMPABLE => match a.u64(1) {
            0 | 1 => Ok(0),
            _ => err(libc::EINVAL),
        },
        // The VMM runs the guest with no_new_privs set.
        libc::PR_GET_NO_NEW_PRIVS => Ok(1),
        libc::PR_SET_NO_NEW_PRIVS if a.u64(1) == 1 => Ok(0),
        libc::PR_GET_TIMERSLACK => Ok(50_000),
        libc::PR_SET_TIMERSLACK => Ok(0),
        // No capabilities in the bounding set of a guest.
        libc::PR_CAPBSET_READ if a.u64(1) <= 63 => Ok(0),
        libc::PR_GET_SECUREBITS => Ok(0),
        libc::PR_GET_THP_DISABLE => Ok(0),
        _ => err(libc::EINVAL),
    }
}

/// The supplementary groups of the process serving the guest (the job's user's, after the
/// jail's privilege drop), as the guest's own.
pub fn getgroups(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let size = a.i32(0);
    if size < 0 {
        return err(libc::EINVAL);
    }
    let mut groups = vec![0 as libc::gid_t; 65536];
    // SAFETY: getgroups writes at most groups.len() ids into our vector.
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    groups.truncate(n as usize);
    if size == 0 {
        return Ok(groups.len() as u64);
    }
    if (size as usize) < groups.len() {
        return err(libc::EINVAL);
    }
    let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    ctx.write_user(a.ptr(1), &bytes)?;
    Ok(groups.len() as u64)
}
