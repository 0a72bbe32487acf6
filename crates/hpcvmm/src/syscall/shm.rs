//! Memory shared with other VMs and processes (issue 12): `MAP_SHARED` mappings of host
//! files, SysV shared memory and futexes on shared words. The mappings live in the guest's
//! shared window ([`crate::shmem`]); the bookkeeping is
//! [`crate::kernel::mm::SharedArea`]. Without a window (unit tests' fake memory) shared file
//! mappings keep the older behaviour in [`super::memory`].

use std::time::{Duration, Instant};

use super::{err, Args, Ctx, Errno, SysResult};
use crate::kernel::files::{FileKind, FileRef};
use crate::kernel::fsroot::last_err;
use crate::kernel::mm::{MmError, VmaAttrs, VmaBacking};
use crate::shmem::WINDOW_SLOT;

fn mm_errno(e: MmError) -> Errno {
    Errno(match e {
        MmError::NoMem => libc::ENOMEM,
        MmError::Inval => libc::EINVAL,
        MmError::Exists => libc::EEXIST,
    })
}

/// True if `addr` lies in the guest's shared window.
pub fn in_window(ctx: &Ctx<'_>, addr: u64) -> bool {
    ctx.mem.shared().is_some_and(|w| w.contains(addr))
}

/// Whether mmap should place this mapping in the shared window: a MAP_SHARED mapping of a
/// host file (regular file, /dev/shm object, memfd) when the guest has a window, and either
/// no fixed address or one inside the window.
pub fn wants_window(ctx: &Ctx<'_>, f: &FileRef, addr: u64, fixed: bool) -> bool {
    ctx.mem.shared().is_some()
        && matches!(f.kind(), FileKind::Host(_))
        && (!fixed || in_window(ctx, addr))
}

/// mmap(MAP_SHARED) of a host file: the file's own pages, shared with every other mapping.
pub fn mmap_file(
    ctx: &Ctx<'_>,
    addr: u64,
    len: u64,
    prot: i32,
    flags: i32,
    f: &FileRef,
    off: u64,
) -> SysResult {
    let w = ctx.mem.shared().ok_or(Errno(libc::ENODEV))?;
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    let noreplace = flags & libc::MAP_FIXED_NOREPLACE != 0;
    let attrs = VmaAttrs {
        prot,
        backing: VmaBacking::SharedFile {
            path: f.path().map(str::to_string),
            offset: off,
        },
        label: None,
    };
    let mut mm = ctx.tg.mm.lock().unwrap();
    let at = mm
        .shared
        .place(addr, len, fixed, noreplace, attrs)
        .map_err(mm_errno)?;
    if let Err(e) = w.map_file(at, len, prot, flags, f.raw(), off) {
        let _ = w.unmap(at, len);
        mm.shared.unmap(at, len);
        return Err(e.into());
    }
    Ok(at)
}

/// munmap inside the window.
pub fn munmap(ctx: &Ctx<'_>, addr: u64, len: u64) -> SysResult {
    if addr % 4096 != 0 || len == 0 {
        return err(libc::EINVAL);
    }
    let w = ctx.mem.shared().ok_or(Errno(libc::EINVAL))?;
    let parts = ctx.tg.mm.lock().unwrap().shared.unmap(addr, len);
    for (s, e) in parts {
        w.unmap(s, e - s)?;
    }
    Ok(0)
}

/// mprotect/madvise inside the window: accepted on mapped ranges (protection is recorded by
/// the host mapping's own rights, which the file's open mode decides).
pub fn accept_if_mapped(ctx: &Ctx<'_>, addr: u64, len: u64) -> SysResult {
    if ctx.tg.mm.lock().unwrap().shared.is_mapped(addr, len) {
        Ok(0)
    } else {
        err(libc::ENOMEM)
    }
}

// ---- SysV shared memory ----

pub fn shmget(_ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (key, size, flags) = (a.i32(0), a.usize(1), a.i32(2));
    // SAFETY: shmget takes no pointers; the segment lives in the host's IPC namespace, shared
    // with the other ranks, and the host checks the guest user's rights on it.
    let r = unsafe { libc::shmget(key, size as usize, flags) };
    if r < 0 {
        return last_err();
    }
    Ok(r as u64)
}

const SHM_STAT: i32 = 13;
const SHM_INFO: i32 = 14;
const SHM_STAT_ANY: i32 = 15;

/// Bytes of the structure a shmctl command reads or writes.
fn shmctl_size(cmd: i32) -> Option<usize> {
    match cmd {
        libc::IPC_STAT | libc::IPC_SET | SHM_STAT | SHM_STAT_ANY => {
            Some(std::mem::size_of::<libc::shmid_ds>())
        }
        libc::IPC_INFO => Some(72), // struct shminfo
        SHM_INFO => Some(48),       // struct shm_info
        libc::IPC_RMID | libc::SHM_LOCK | libc::SHM_UNLOCK => Some(0),
        _ => None,
    }
}

pub fn shmctl(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (id, cmd, buf) = (a.i32(0), a.i32(1) & !0x100 /* IPC_64 */, a.ptr(2));
    let n = shmctl_size(cmd).ok_or(Errno(libc::EINVAL))?;
    let mut local = [0u8; 256];
    if cmd == libc::IPC_SET {
        let v = ctx.read_user_vec(buf, n as u64)?;
        local[..n].copy_from_slice(&v);
    } else if n > 0 {
        ctx.check_user(buf, n as u64)?;
    }
    let p = if n > 0 {
        local.as_mut_ptr().cast()
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: the host reads or writes at most `n` bytes of `local`.
    let r = unsafe { libc::shmctl(id, cmd, p) };
    if r < 0 {
        return last_err();
    }
    if n > 0 && cmd != libc::IPC_SET {
        ctx.write_user(buf, &local[..n])?;
    }
    Ok(r as u64)
}

fn segment_size(id: i32) -> Result<u64, Errno> {
    // SAFETY: shmid_ds is plain data; all zeroes is valid.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return last_err();
    }
    Ok(ds.shm_segsz as u64)
}

pub fn shmat(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (id, addr, flags) = (a.i32(0), a.ptr(1), a.i32(2));
    let w = ctx.mem.shared().ok_or(Errno(libc::ENOMEM))?;
    let size = segment_size(id)?;
    let mut at = addr;
    if flags & libc::SHM_RND != 0 {
        at &= !4095;
    }
    if at != 0 && (at % 4096 != 0 || !in_window(ctx, at)) {
        return err(libc::EINVAL);
    }
    let readonly = flags & libc::SHM_RDONLY != 0;
    let prot = libc::PROT_READ | if readonly { 0 } else { libc::PROT_WRITE };
    let attrs = VmaAttrs {
        prot,
        backing: VmaBacking::Region { slot: WINDOW_SLOT },
        label: None,
    };
    let mut mm = ctx.tg.mm.lock().unwrap();
    let noreplace = at != 0 && flags & libc::SHM_REMAP == 0;
    let at = mm
        .shared
        .place(at, size, at != 0, noreplace, attrs)
        .map_err(|e| match e {
            MmError::Exists => Errno(libc::EINVAL),
            e => mm_errno(e),
        })?;
    if let Err(e) = w.attach_sysv(at, size, id, readonly) {
        let _ = w.unmap(at, size);
        mm.shared.unmap(at, size);
        return Err(e.into());
    }
    Ok(at)
}

pub fn shmdt(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let addr = a.ptr(0);
    let w = ctx.mem.shared().ok_or(Errno(libc::EINVAL))?;
    let mut mm = ctx.tg.mm.lock().unwrap();
    let v = mm
        .shared
        .vmas()
        .get(addr)
        .filter(|v| v.start == addr && matches!(v.attrs.backing, VmaBacking::Region { .. }))
        .map(|v| (v.start, v.end))
        .ok_or(Errno(libc::EINVAL))?;
    mm.shared.unmap(v.0, v.1 - v.0);
    w.unmap(v.0, v.1 - v.0)?;
    Ok(0)
}

// ---- futexes on shared words ----

const FUTEX_WAIT: u32 = 0;
const FUTEX_WAKE: u32 = 1;
const FUTEX_REQUEUE: u32 = 3;
const FUTEX_CMP_REQUEUE: u32 = 4;
const FUTEX_WAKE_OP: u32 = 5;
const FUTEX_WAIT_BITSET: u32 = 9;
const FUTEX_WAKE_BITSET: u32 = 10;
const FUTEX_CLOCK_REALTIME: u32 = 256;
/// How long one host wait lasts before the waiter checks whether the run is ending.
const WAIT_SLICE: Duration = Duration::from_millis(50);

fn host_word(ctx: &Ctx<'_>, addr: u64) -> Result<*mut u32, Errno> {
    if addr % 4 != 0 {
        return err(libc::EINVAL);
    }
    Ok(ctx.mem.host_ptr(addr, 4)?.cast())
}

fn now(clock: i32) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// futex(2) on a word in the shared window: a host futex on the shared page (not private),
/// so waiters and wakers in different VMs meet. Waits are cut into slices so a waiter notices
/// the run ending.
pub fn futex(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (addr, op, val, t_or_v2, addr2, val3) =
        (a.ptr(0), a.u32(1), a.u32(2), a.u64(3), a.ptr(4), a.u32(5));
    let cmd = op & 0x7f;
    let word = host_word(ctx, addr)?;
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 };
            if bitset == 0 {
                return err(libc::EINVAL);
            }
            let clock = if cmd == FUTEX_WAIT_BITSET && op & FUTEX_CLOCK_REALTIME != 0 {
                libc::CLOCK_REALTIME
            } else {
                libc::CLOCK_MONOTONIC
            };
            let deadline = if t_or_v2 == 0 {
                None
            } else {
                let ts: libc::timespec = ctx.get(t_or_v2)?;
                if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
                    return err(libc::EINVAL);
                }
                let d = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                Some(if cmd == FUTEX_WAIT { now(clock) + d } else { d })
            };
            let t0 = Instant::now();
            ctx.task.counters.futex_waits += 1;
            let r = loop {
                if ctx.run.ending() {
                    break err(libc::EINTR);
                }
                let t = now(clock);
                let slice_end = match deadline {
                    Some(d) if d <= t => break err(libc::ETIMEDOUT),
                    Some(d) => d.min(t + WAIT_SLICE),
                    None => t + WAIT_SLICE,
                };
                let ts = libc::timespec {
                    tv_sec: slice_end.as_secs() as i64,
                    tv_nsec: i64::from(slice_end.subsec_nanos()),
                };
                let hop = if clock == libc::CLOCK_REALTIME {
                    FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME
                } else {
                    FUTEX_WAIT_BITSET
                };
                // SAFETY: `word` points at a mapped, aligned word of the shared window; the
                // timeout is ours.
                let r =
                    unsafe { libc::syscall(libc::SYS_futex, word, hop, val, &ts, 0usize, bitset) };
                if r == 0 {
                    break Ok(0);
                }
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::ETIMEDOUT) | Some(libc::EINTR) => continue,
                    Some(e) => break err(e),
                    None => break err(libc::EIO),
                }
            };
            ctx.task.counters.futex_wait_s += t0.elapsed().as_secs_f64();
            r
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bitset = if cmd == FUTEX_WAKE { u32::MAX } else { val3 };
            if bitset == 0 {
                return err(libc::EINVAL);
            }
            // SAFETY: as above; FUTEX_WAKE_BITSET reads no memory besides the key.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word,
                    FUTEX_WAKE_BITSET,
                    val,
                    0usize,
                    0usize,
                    bitset,
                )
            };
            if r < 0 {
                return last_err();
            }
            Ok(r as u64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE | FUTEX_WAKE_OP => {
            if !in_window(ctx, addr2) {
                return err(libc::EINVAL);
            }
            let word2 = host_word(ctx, addr2)?;
            // SAFETY: both words are mapped and aligned in the shared window; the fourth
            // argument is a count here, not a pointer.
            let r = unsafe { libc::syscall(libc::SYS_futex, word, cmd, val, t_or_v2, word2, val3) };
            if r < 0 {
                return last_err();
            }
            Ok(r as u64)
        }
        _ => err(libc::ENOSYS),
    }
}
