//! Memory shared between VMs: the guest's `MAP_SHARED` file mappings (`/dev/shm`,
//! `shm_open`, `mkstemp` + `ftruncate` + `mmap`, memfds) and SysV segments map the *same host
//! pages* into every VM that maps them, so one rank's store is visible to another rank's load
//! at memory speed, with no exit.
//!
//! How: above guest RAM lies a window of guest physical (= guest virtual) addresses with its
//! own KVM memory slot, identity-mapped by the guest page tables from the start
//! ([`crate::layout::build_with_window`]). The slot is backed by a host reservation
//! (`PROT_NONE`, no memory). Mapping a file there is one host `mmap(MAP_SHARED | MAP_FIXED)`
//! of the file over the matching part of the reservation (a SysV segment: `shmat` with
//! `SHM_REMAP`); KVM's MMU notifier drops its old translations and the guest's next access
//! faults in the file's pages. Unmapping puts the `PROT_NONE` reservation back. No guest page
//! table changes at run time, so no guest TLB shootdown is needed.
//!
//! The host kernel checks the access: a file opened read-only cannot be mapped writable
//! (EACCES), exactly as for the guest's user natively. A guest access to a part of the window
//! nothing is mapped at finds no host page and ends the run (Linux would raise SIGSEGV).

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::memory::MemoryRegion;

/// Size of the shared window (guest addresses for shared mappings).
pub const WINDOW_SIZE: u64 = 16 << 30;
/// KVM slot of the window (RAM is slot 0).
pub const WINDOW_SLOT: u32 = 1;
const PAGE: u64 = 4096;

/// Where the window starts for a guest of `ram` bytes: the next GiB boundary above RAM, if the
/// window still fits the first 512 GiB (one page-directory-pointer table).
pub fn window_for(ram: u64) -> Option<(u64, u64)> {
    let start = ram.checked_next_multiple_of(1 << 30)?.max(1 << 30);
    (start + WINDOW_SIZE <= 512 << 30).then_some((start, start + WINDOW_SIZE))
}

/// The host reservation behind the window and what is mapped in it.
#[derive(Debug)]
pub struct SharedWindow {
    gpa: u64,
    size: u64,
    host: *mut u8,
    /// Mapped ranges, guest start -> guest end.
    maps: RwLock<BTreeMap<u64, u64>>,
}

// SAFETY: the reservation is owned by this value; the guest and the VMM reach it only
// through raw pointers handed to copies, the same contract as the guest's RAM.
unsafe impl Send for SharedWindow {}
// SAFETY: as for Send; the bookkeeping is behind a lock.
unsafe impl Sync for SharedWindow {}

impl SharedWindow {
    /// Reserve host address space for the window `[start, end)` (no memory is committed).
    pub fn reserve((start, end): (u64, u64)) -> std::io::Result<Self> {
        let size = end - start;
        // SAFETY: a fresh anonymous PROT_NONE mapping at an address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedWindow {
            gpa: start,
            size,
            host: p.cast(),
            maps: RwLock::new(BTreeMap::new()),
        })
    }

    /// The KVM memory slot of the window.
    pub fn region(&self) -> MemoryRegion {
        MemoryRegion {
            slot: WINDOW_SLOT,
            guest_phys_addr: self.gpa,
            size: self.size,
            host_addr: self.host as u64,
        }
    }

    /// `[start, end)` of the window in guest addresses.
    pub fn bounds(&self) -> (u64, u64) {
        (self.gpa, self.gpa + self.size)
    }

    /// True if `addr` lies in the window (mapped or not).
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.gpa && addr - self.gpa < self.size
    }

    /// Host pointer to `[addr, addr+len)` if all of it lies inside one mapping.
    pub fn host_range(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let end = addr.checked_add(len)?;
        let maps = self.maps.read().unwrap();
        let (&s, &e) = maps.range(..=addr).next_back()?;
        if addr < s || end > e {
            return None;
        }
        // SAFETY: `addr` lies inside the window, hence inside the reservation.
        Some(unsafe { self.host.add((addr - self.gpa) as usize) })
    }

    fn host_at(&self, addr: u64, len: u64) -> std::io::Result<*mut libc::c_void> {
        let ok = addr % PAGE == 0
            && self.contains(addr)
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= self.gpa + self.size);
        if !ok {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: inside the reservation (checked above).
        Ok(unsafe { self.host.add((addr - self.gpa) as usize) }.cast())
    }

    /// Map `len` bytes of host file `fd` from `offset` at guest `addr` (page-aligned, inside
    /// the window), shared with every other mapping of the file. Of the guest's mmap flags,
    /// the huge page request travels along (the host refuses MAP_HUGETLB for a file outside
    /// hugetlbfs with EINVAL, as the guest's program expects: UCX probes that way).
    pub fn map_file(
        &self,
        addr: u64,
        len: u64,
        prot: i32,
        guest_flags: i32,
        fd: i32,
        offset: u64,
    ) -> std::io::Result<()> {
        let huge = guest_flags & (libc::MAP_HUGETLB | (0x3f << libc::MAP_HUGE_SHIFT));
        let len = len.next_multiple_of(PAGE);
        let at = self.host_at(addr, len)?;
        let prot = prot & (libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: replaces part of our own reservation with a shared mapping of `fd`.
        let p = unsafe {
            libc::mmap(
                at,
                len as usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED | huge,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.maps.write().unwrap().insert(addr, addr + len);
        Ok(())
    }

    /// Attach SysV segment `shmid` (of `len` bytes) at guest `addr`.
    pub fn attach_sysv(
        &self,
        addr: u64,
        len: u64,
        shmid: i32,
        readonly: bool,
    ) -> std::io::Result<()> {
        let len = len.next_multiple_of(PAGE);
        let at = self.host_at(addr, len)?;
        let flags = libc::SHM_REMAP | if readonly { libc::SHM_RDONLY } else { 0 };
        // SAFETY: attaches the segment over part of our own reservation.
        let p = unsafe { libc::shmat(shmid, at, flags) };
        if p as isize == -1 {
            return Err(std::io::Error::last_os_error());
        }
        self.maps.write().unwrap().insert(addr, addr + len);
        Ok(())
    }

    /// The mapping that starts at `addr`, as `(start, end)`.
    pub fn mapping_at(&self, addr: u64) -> Option<(u64, u64)> {
        self.maps.read().unwrap().get(&addr).map(|&e| (addr, e))
    }

    /// Unmap `[addr, addr+len)`: the reservation comes back there (a SysV segment's
    /// attachment is dropped by the same mmap, as shmdt would).
    pub fn unmap(&self, addr: u64, len: u64) -> std::io::Result<()> {
        let len = len.next_multiple_of(PAGE);
        let at = self.host_at(addr, len)?;
        // SAFETY: puts our own PROT_NONE reservation back over part of it.
        let p = unsafe {
            libc::mmap(
                at,
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let end = addr + len;
        let mut maps = self.maps.write().unwrap();
        let hit: Vec<(u64, u64)> = maps
            .range(..end)
            .filter(|(_, &e)| e > addr)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            maps.remove(&s);
            if s < addr {
                maps.insert(s, addr);
            }
            if e > end {
                maps.insert(end, e);
            }
        }
        Ok(())
    }
}

impl Drop for SharedWindow {
    fn drop(&mut self) {
        // SAFETY: the reservation (and whatever is mapped in it) is ours alone; the VM that
        // used it is gone before the memory is dropped.
        unsafe { libc::munmap(self.host.cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn two_windows_share_one_file() {
        let (lo, hi) = window_for(512 << 20).unwrap();
        assert_eq!((lo, hi), (1 << 30, (1 << 30) + WINDOW_SIZE));
        assert_eq!(window_for(500 << 30), None);
        let a = SharedWindow::reserve((lo, hi)).unwrap();
        let b = SharedWindow::reserve((lo, hi)).unwrap();
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        a.map_file(lo, 8192, rw, 0, f.as_raw_fd(), 0).unwrap();
        b.map_file(lo + (1 << 20), 4096, rw, 0, f.as_raw_fd(), 4096)
            .unwrap();
        let pa = a.host_range(lo + 4096, 8).unwrap();
        let pb = b.host_range(lo + (1 << 20), 8).unwrap();
        // SAFETY: both point into live shared mappings of the same file page.
        unsafe {
            pa.cast::<u64>().write_volatile(0x1234);
            assert_eq!(pb.cast::<u64>().read_volatile(), 0x1234);
        }
        assert!(
            a.host_range(lo + 8190, 8).is_none(),
            "runs past the mapping"
        );
        assert!(a.host_range(lo + (2 << 20), 8).is_none(), "nothing mapped");
        assert_eq!(a.mapping_at(lo), Some((lo, lo + 8192)));
        a.unmap(lo, 8192).unwrap();
        assert!(a.host_range(lo, 8).is_none());
        assert!(a.map_file(lo + 1, 4096, rw, 0, f.as_raw_fd(), 0).is_err());
        assert!(a
            .map_file(hi - 4096, 8192, rw, 0, f.as_raw_fd(), 0)
            .is_err());
        let e = a
            .map_file(lo, 4096, rw, libc::MAP_HUGETLB, f.as_raw_fd(), 0)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "not a hugetlbfs file");
        // A read-only file cannot be mapped writable: the host refuses it.
        let ro = std::fs::File::open("/proc/self/exe").unwrap();
        let e = a.map_file(lo, 4096, rw, 0, ro.as_raw_fd(), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
