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
