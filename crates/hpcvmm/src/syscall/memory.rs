//! Memory system calls: brk, mmap, munmap, mremap, mprotect, madvise.
//!
//! All guest memory is preallocated and mapped, so these only manage the address space
//! bookkeeping and give the guest zeroed memory where Linux would. Protection changes are
//! accepted but not enforced (user memory is mapped RWX with large pages).

use super::{err, Args, Ctx, SysResult};
use crate::kernel::mm::{MmError, VmaAttrs, VmaBacking};

fn mm_errno(e: MmError) -> crate::kernel::Errno {
    crate::kernel::Errno(match e {
        MmError::NoMem => libc::ENOMEM,
        MmError::Inval => libc::EINVAL,
        MmError::Exists => libc::EEXIST,
    })
}

/// Linux's TASK_SIZE on x86-64 (4-level paging): user addresses lie below it.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// `len` rounded up to whole pages, if that neither wraps nor leaves user space from `addr`.
/// Linux answers EINVAL for such ranges in munmap, madvise and mremap (before anything else
/// happens: a wrapped length must not turn into "unmap everything above addr").
fn user_len(addr: u64, len: u64) -> Result<u64, crate::kernel::Errno> {
    let l = len
        .checked_next_multiple_of(4096)
        .ok_or(crate::kernel::Errno(libc::EINVAL))?;
    if l > TASK_SIZE || addr > TASK_SIZE - l {
        return err(libc::EINVAL);
    }
    Ok(l)
}

fn zero(ctx: &Ctx<'_>, ranges: &[(u64, u64)]) -> Result<(), crate::kernel::Errno> {
    for &(s, e) in ranges {
        ctx.mem.zero(s, e - s)?;
    }
    Ok(())
}

/// Linux's checks of a file mapping's descriptor: a regular file or device (not a pipe,
/// socket or directory: ENODEV), opened for reading (EACCES), and for writing too if the
/// mapping is shared and writable; writable shared mappings are ENODEV here (copies only).
fn check_mappable(host_fd: i32, shared: bool, prot: i32) -> Result<(), crate::kernel::Errno> {
    // SAFETY: stat is plain data; fstat writes one for a host fd we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(host_fd, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFCHR => {}
        _ => return err(libc::ENODEV),
    }
    // SAFETY: F_GETFL on a host fd we own.
    let acc = unsafe { libc::fcntl(host_fd, libc::F_GETFL) } & libc::O_ACCMODE;
    if acc == libc::O_WRONLY {
        return err(libc::EACCES);
    }
    if shared && prot & libc::PROT_WRITE != 0 {
        if acc != libc::O_RDWR {
            return err(libc::EACCES);
        }
        return err(libc::ENODEV);
    }
    Ok(())
}

pub fn brk(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let mut mm = ctx.tg.mm.lock().unwrap();
    if a.ptr(0) == 0 {
        return Ok(mm.brk());
    }
    let (b, z) = mm.set_brk(a.ptr(0));
    drop(mm);
    zero(ctx, &z)?;
    Ok(b)
}

pub fn mmap(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (addr, len, prot, flags, fd, off) = (
        a.ptr(0),
        a.usize(1),
        a.i32(2),
        a.flags::<i32>(3),
        a.fd(4),
        a.u64(5),
    );
    if len == 0 {
        return err(libc::EINVAL);
    }
    let anon = flags & libc::MAP_ANONYMOUS != 0;
    let shared = flags & libc::MAP_SHARED != 0 && flags & libc::MAP_PRIVATE == 0;
    if !anon && off % 4096 != 0 {
        return err(libc::EINVAL);
    }
    if shared && !anon {
        let f = ctx.file(fd)?;
        let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
        if super::shm::wants_window(ctx, &f, addr, fixed) {
            return super::shm::mmap_file(ctx, addr, len, prot, flags, &f, off);
        }
    }
    // File mappings are copies: fine for MAP_PRIVATE and read-only MAP_SHARED. MAP_DENYWRITE
    // and MAP_EXECUTABLE are ignored, as Linux ignores them.
    let file = if anon {
        None
    } else {
        let f = ctx.file(fd)?;
        check_mappable(f.raw(), shared, prot)?;
        Some(f)
    };
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    let noreplace = flags & libc::MAP_FIXED_NOREPLACE != 0;
    let attrs = VmaAttrs {
        prot,
        backing: match &file {
            None => VmaBacking::Anonymous,
            Some(f) => VmaBacking::FileCopy {
                path: f.path().map(str::to_string),
                offset: off,
            },
        },
        label: None,
    };
    let (at, z) = ctx
        .tg
        .mm
        .lock()
        .unwrap()
        .map_with(addr, len, fixed, noreplace, attrs)
        .map_err(mm_errno)?;
    zero(ctx, &z)?;
    if let Some(f) = file {
        let len = len.next_multiple_of(4096);
        let p = ctx.mem.host_ptr(at, len)?;
        let mut done = 0u64;
        while done < len {
            // SAFETY: `p..p+len` is checked guest memory; pread writes at most len-done bytes.
            let n = unsafe {
                libc::pread(
                    f.raw(),
                    p.add(done as usize).cast(),
                    (len - done) as usize,
                    (off + done) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                let _ = ctx.tg.mm.lock().unwrap().unmap(at, len);
                return Err(e.into());
            }
            if n == 0 {
                break; // past EOF: the rest stays zero
            }
            done += n as u64;
        }
    }
    Ok(at)
}

pub fn munmap(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    user_len(a.ptr(0), a.usize(1))?;
    if super::shm::in_window(ctx, a.ptr(0)) {
        return super::shm::munmap(ctx, a.ptr(0), a.usize(1));
    }
    ctx.tg
        .mm
        .lock()
        .unwrap()
        .unmap(a.ptr(0), a.usize(1))
        .map_err(mm_errno)?;
    Ok(0)
}

pub fn mremap(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (old, old_len, new_len, flags, new_addr) = (
        a.ptr(0),
        a.usize(1),
        a.usize(2),
        a.flags::<i32>(3),
        a.ptr(4),
    );
    if new_len == 0 {
        return err(libc::EINVAL);
    }
    user_len(old, old_len)?;
    user_len(0, new_len)?;
    if super::shm::in_window(ctx, old) {
        // Shared mappings keep their place and size.
        return err(libc::ENOMEM);
    }
    if flags & libc::MREMAP_FIXED != 0 {
        // Move to a fixed place: map there (replacing), copy, unmap the old range.
        if flags & libc::MREMAP_MAYMOVE == 0 {
            return err(libc::EINVAL);
        }
        let mut mm = ctx.tg.mm.lock().unwrap();
        if !mm.is_mapped(old, old_len.max(1)) {
            return err(libc::EFAULT);
        }
        let (at, z) = mm.map(new_addr, new_len, true, false).map_err(mm_errno)?;
        drop(mm);
        zero(ctx, &z)?;
        ctx.mem.copy_within(old, at, old_len.min(new_len))?;
        ctx.tg
            .mm
            .lock()
            .unwrap()
            .unmap(old, old_len)
            .map_err(mm_errno)?;
        return Ok(at);
    }
    let (at, z, copy) = ctx
        .tg
        .mm
        .lock()
        .unwrap()
        .remap(old, old_len, new_len, flags & libc::MREMAP_MAYMOVE != 0)
        .map_err(mm_errno)?;
    // Zero the dirty parts of the new range first: when the mapping moved, the copy lands in
    // that range, and zeroing afterwards would wipe the contents just moved.
    zero(ctx, &z)?;
    if let Some((from, to, len)) = copy {
        ctx.mem.copy_within(from, to, len)?;
    }
    Ok(at)
}

/// Records the new protection on the VMAs; not enforced (user memory is mapped RWX with
/// large pages, see the table's support level).
pub fn mprotect(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (addr, len, prot) = (a.ptr(0), a.usize(1), a.i32(2));
    if addr % 4096 != 0 {
        return err(libc::EINVAL);
    }
    if super::shm::in_window(ctx, addr) {
        return super::shm::accept_if_mapped(ctx, addr, len);
    }
    ctx.tg
        .mm
        .lock()
        .unwrap()
        .protect(addr, len, prot)
        .map_err(mm_errno)?;
    Ok(0)
}

pub fn madvise(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (addr, len, advice) = (a.ptr(0), a.usize(1), a.i32(2));
    if addr % 4096 != 0 {
        return err(libc::EINVAL);
    }
    let len = user_len(addr, len)?;
    if super::shm::in_window(ctx, addr) {
        // Shared file pages keep their contents whatever the advice (as on Linux).
        return super::shm::accept_if_mapped(ctx, addr, len);
    }
    if advice == libc::MADV_DONTNEED {
        // Anonymous private memory reads back as zero afterwards.
        if !ctx.tg.mm.lock().unwrap().is_mapped(addr, len.max(1)) {
            return err(libc::ENOMEM);
        }
        ctx.mem.zero(addr, len)?;
    }
    Ok(0)
}

/// Calls that need no work: all guest memory is already resident and locked.
pub fn accept(_ctx: &mut Ctx<'_>, _a: &Args) -> SysResult {
    Ok(0)
}

/// All guest memory is resident (preallocated and locked): every mapped page is in core.
pub fn mincore(ctx: &mut Ctx<'_>, a: &Args) -> SysResult {
    let (addr, len, vec) = (a.ptr(0), a.usize(1), a.ptr(2));
    if addr % 4096 != 0 {
        return err(libc::EINVAL);
    }
    let len = user_len(addr, len).map_err(|_| crate::kernel::Errno(libc::ENOMEM))?;
    if len == 0 {
        return Ok(0);
    }
    if !ctx.tg.mm.lock().unwrap().is_mapped(addr, len) {
        return err(libc::ENOMEM);
    }
    ctx.write_user(vec, &vec![1u8; (len / 4096) as usize])?;
    Ok(0)
}
