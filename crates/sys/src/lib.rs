//! The few raw host system calls no crate wraps for us, each in one small function, shared by
//! the HPC VMM (guest memory, vCPU threads) and the zone code (zone memory, host task steering).

use std::io;

/// madvise(2) on a host range.
pub fn madvise(ptr: *mut u8, len: usize, advice: i32) -> io::Result<()> {
    // SAFETY: madvise only changes paging advice for the range; callers pass ranges they own.
    let r = unsafe { libc::madvise(ptr.cast(), len, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mlock(2) a host range.
pub fn mlock(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: mlock does not touch memory contents; callers pass ranges they own.
    let r = unsafe { libc::mlock(ptr.cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind a host range to one NUMA node (MPOL_BIND), moving nothing that is already there.
pub fn mbind_node(ptr: *mut u8, len: usize, node: u32) -> io::Result<()> {
    const MPOL_BIND: libc::c_long = 2;
    if node >= 1024 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut mask = [0u64; 16];
    mask[(node / 64) as usize] |= 1 << (node % 64);
    // SAFETY: mbind reads `mask` (1024 bits, passed as maxnode) and only changes the memory
    // policy of a range the caller owns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr as libc::c_long,
            len as libc::c_long,
            MPOL_BIND,
            mask.as_ptr() as libc::c_long,
            1024 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restrict thread `tid` (0: the calling thread) to a set of host CPUs. Allocates nothing, so
/// it may run in a forked child before exec. A CPU number beyond `CPU_SETSIZE` is `EINVAL`.
pub fn set_thread_affinity(
    tid: libc::pid_t,
    cpus: impl IntoIterator<Item = usize>,
) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `c` was checked to be below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restrict the calling thread to a set of host CPUs (allocates nothing).
pub fn set_current_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    set_thread_affinity(0, cpus.iter().copied())
}

/// The host CPUs the calling thread may run on.
pub fn current_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| {
            // SAFETY: `c` is below CPU_SETSIZE.
            unsafe { libc::CPU_ISSET(c, &set) }
        })
        .collect())
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Send `sig` to one thread of this process.
pub fn tgkill_self(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: sends a signal to a thread of our own process only (tgid = getpid()).
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_round_trips_and_rejects_cpus_beyond_the_set() {
        let cpus = current_affinity().unwrap();
        assert!(!cpus.is_empty());
        set_current_thread_affinity(&cpus).unwrap();
        assert_eq!(current_affinity().unwrap(), cpus);
        let e = set_current_thread_affinity(&[libc::CPU_SETSIZE as usize]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn mbind_rejects_a_node_beyond_the_mask() {
        let mut buf = vec![0u8; 4096];
        let e = mbind_node(buf.as_mut_ptr(), buf.len(), 1024).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
