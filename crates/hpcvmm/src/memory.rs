//! Guest memory: one host mapping, preallocated before the guest runs, mapped at guest physical
//! address 0.
//!
//! Backings:
//! - `Hugetlb` (default): hugetlbfs 2 MiB or 1 GiB pages, bound to a NUMA node when asked,
//!   populated up front and locked. A shortage is reported before the guest exists, never as a
//!   SIGBUS halfway through.
//! - `Lazy`: anonymous 4 KiB pages faulted in on first touch, what a commodity VMM does. Kept
//!   for comparison.
//! - Warm zone memory ([`WarmMemory`]): pieces of hugetlbfs files a zone populated when it was
//!   made (and zeroed between jobs), mapped shared at fixed, page-aligned addresses one after
//!   the other. Nothing is allocated, zeroed or populated here: a job only maps pages.
//!
//! Every access the VMM makes on behalf of the guest goes through the bounds-checked accessors
//! here; a pointer or length outside guest memory is an [`Efault`].

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestRegionMmap, MemoryRegionAddress, MmapRegion};

/// Huge page size for the hugetlb backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePageSize {
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

impl HugePageSize {
    pub fn bytes(self) -> u64 {
        match self {
            HugePageSize::Size2M => 2 << 20,
            HugePageSize::Size1G => 1 << 30,
        }
    }
    /// The sysfs directory name of this pool (`hugepages-2048kB`).
    pub fn sysfs_name(self) -> &'static str {
        match self {
            HugePageSize::Size2M => "hugepages-2048kB",
            HugePageSize::Size1G => "hugepages-1048576kB",
        }
    }
    fn mmap_flag(self) -> i32 {
        match self {
            HugePageSize::Size2M => libc::MAP_HUGE_2MB,
            HugePageSize::Size1G => libc::MAP_HUGE_1GB,
        }
    }
}

impl fmt::Display for HugePageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HugePageSize::Size2M => "2M",
            HugePageSize::Size1G => "1G",
        })
    }
}

/// How guest memory is backed on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Backing {
    /// Preallocated, pinned hugetlbfs pages (optionally from one NUMA node).
    Hugetlb {
        page_size: HugePageSize,
        numa_node: Option<u32>,
    },
    /// Anonymous 4 KiB pages faulted on demand.
    Lazy,
}

impl Backing {
    /// The granularity the backing can be sized in.
    pub fn granule(&self) -> u64 {
        match self {
            Backing::Hugetlb { page_size, .. } => page_size.bytes(),
            Backing::Lazy => 2 << 20,
        }
    }
}

/// One piece of a zone's memory file, mapped at the next guest physical address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPart {
    pub path: PathBuf,
    /// Offset in the file (a multiple of the page size).
    pub offset: u64,
    /// Bytes (a multiple of the page size).
    pub len: u64,
    pub page_size: HugePageSize,
}

/// Guest memory a zone already holds, populated and zeroed: the pieces in guest address order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmMemory {
    pub parts: Vec<WarmPart>,
}

impl WarmMemory {
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }
    /// The smallest page size of the pieces (what the guest's page tables can use).
    pub fn page_size(&self) -> HugePageSize {
        if self
            .parts
            .iter()
            .all(|p| p.page_size == HugePageSize::Size1G)
        {
            HugePageSize::Size1G
        } else {
            HugePageSize::Size2M
        }
    }
}

/// How a run's guest memory was obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// Mapped from a zone's populated, pre-zeroed memory: no allocation, no zeroing.
    WarmZone,
    /// Huge pages allocated, zeroed and populated for this run.
    #[default]
    ColdHugetlb,
    /// Anonymous pages faulted on demand.
    Lazy,
}

/// A guest pointer or length that does not lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest range {addr:#x}+{len:#x} is outside guest memory")]
pub struct Efault {
    pub addr: u64,
    pub len: u64,
}

/// Failure to create guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Not enough free huge pages.
    #[error(
        "guest memory needs {needed} free {size} huge pages ({needed_mib} MiB){node}, but only {free} are free. \
         Reserve them, e.g. `echo {suggest} > {pool}` (or create an HPC zone with `dualstack zone create`), \
         or run with `--memory-backing lazy`"
    )]
    NotEnoughHugePages {
        size: HugePageSize,
        needed: u64,
        needed_mib: u64,
        free: u64,
        node: String,
        suggest: u64,
        pool: String,
    },
    /// The kernel has no pool of that size.
    #[error("this host has no {0} huge page pool ({1} does not exist)")]
    NoPool(HugePageSize, String),
    /// mmap failed.
    #[error("cannot map {size} bytes of guest memory ({backing})")]
    Map {
        size: u64,
        backing: String,
        #[source]
        source: std::io::Error,
    },
    /// mbind failed.
    #[error("cannot bind guest memory to NUMA node {node}")]
    Bind {
        node: u32,
        #[source]
        source: std::io::Error,
    },
    /// Populating failed even though the pool looked large enough (raced with another user).
    #[error("cannot populate {size} bytes of guest memory with huge pages: the pool ran out while allocating (another user took pages?)")]
    Populate {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    /// The size is unusable.
    #[error("guest memory size {0} bytes is invalid: {1}")]
    BadSize(u64, &'static str),
    /// A zone memory file could not be mapped.
    #[error("cannot map zone memory {path} (offset {offset:#x}, {len} bytes)")]
    Warm {
        path: PathBuf,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Guest physical memory: one region at GPA 0.
///
/// Accesses on the guest's behalf (system call arguments) are confined to the user range set
/// with [`GuestMemory::restrict_to`]: the VMM's own structures (GDT, IDT, TSS, stubs, page
/// tables) answer EFAULT like kernel addresses do on Linux. The `system_*` accessors are for
/// the VMM itself.
pub struct GuestMemory {
    region: GuestRegionMmap,
    size: u64,
    backing: Backing,
    source: MemorySource,
    user_lo: u64,
    user_hi: u64,
    /// The window for memory shared with other VMs (issue 12), if the guest has one.
    shared: Option<crate::shmem::SharedWindow>,
    /// The mapping this value made itself (warm memory), unmapped on drop.
    owned_map: Option<(usize, usize)>,
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        if let Some((addr, len)) = self.owned_map {
            // SAFETY: unmapping exactly the range `from_warm` mapped; the region only borrows it
            // (it was built with `build_raw`) and is not used after this.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemory")
            .field("size", &self.size)
            .field("backing", &self.backing)
            .finish()
    }
}

/// Free huge pages of `size` on `node` (or system wide), read from sysfs under `sysfs`.
pub fn free_huge_pages(
    sysfs: &Path,
    size: HugePageSize,
    node: Option<u32>,
) -> Result<(u64, String), MemoryError> {
    let dir = match node {
        Some(n) => sysfs.join(format!(
            "devices/system/node/node{n}/hugepages/{}",
            size.sysfs_name()
        )),
        None => sysfs.join(format!("kernel/mm/hugepages/{}", size.sysfs_name())),
    };
    if !dir.is_dir() {
        return Err(MemoryError::NoPool(size, dir.display().to_string()));
    }
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((
        read("free_hugepages"),
        dir.join("nr_hugepages").display().to_string(),
    ))
}

impl GuestMemory {
    /// Map, bind and populate `size` bytes of guest memory.
    pub fn new(size: u64, backing: Backing) -> Result<Self, MemoryError> {
        Self::with_sysfs(size, backing, Path::new("/sys"))
    }

    /// As [`GuestMemory::new`], reading huge page pools under `sysfs`.
    pub fn with_sysfs(size: u64, backing: Backing, sysfs: &Path) -> Result<Self, MemoryError> {
        if size == 0 || size % backing.granule() != 0 {
            return Err(MemoryError::BadSize(
                size,
                "must be a non-zero multiple of the page size",
            ));
        }
        if size > (512u64 << 30) {
            return Err(MemoryError::BadSize(
                size,
                "the HPC VMM maps at most 512 GiB",
            ));
        }
        let region = match backing {
            Backing::Lazy => {
                let region = MmapRegion::build(
                    None,
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                )
                .map_err(|e| MemoryError::Map {
                    size,
                    backing: "anonymous 4 KiB pages".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                // Keep transparent huge pages away: this backing models a commodity VMM's
                // 4 KiB, faulted-on-demand memory.
                crate::sys::madvise(region.as_ptr(), size as usize, libc::MADV_NOHUGEPAGE)
                    .map_err(|source| MemoryError::Map {
                        size,
                        backing: "anonymous 4 KiB pages (madvise)".into(),
                        source,
                    })?;
                region
            }
            Backing::Hugetlb {
                page_size,
                numa_node,
            } => {
                let needed = size / page_size.bytes();
                let (free, pool) = free_huge_pages(sysfs, page_size, numa_node)?;
                if free < needed {
                    // `pool` names the nr_hugepages file; the suggestion grows it by the
                    // shortfall.
                    let total: u64 = std::fs::read_to_string(&pool)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0);
                    return Err(MemoryError::NotEnoughHugePages {
                        size: page_size,
                        needed,
                        needed_mib: size >> 20,
                        free,
                        node: numa_node
                            .map(|n| format!(" on NUMA node {n}"))
                            .unwrap_or_default(),
                        suggest: total + (needed - free),
                        pool,
                    });
                }
                let flags = libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_HUGETLB
                    | page_size.mmap_flag();
                let region = MmapRegion::build(
                    None,
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                )
                .map_err(|e| MemoryError::Map {
                    size,
                    backing: format!("hugetlb {page_size}"),
                    source: std::io::Error::other(e.to_string()),
                })?;
                if let Some(node) = numa_node {
                    crate::sys::mbind_node(region.as_ptr(), size as usize, node)
                        .map_err(|source| MemoryError::Bind { node, source })?;
                }
                // Fault every page in now (from the bound node) and lock it: the guest never
                // takes a host page fault and never meets a SIGBUS.
                crate::sys::madvise(region.as_ptr(), size as usize, libc::MADV_POPULATE_WRITE)
                    .map_err(|source| MemoryError::Populate { size, source })?;
                // Huge pages are never swapped out, so the lock only makes it explicit; a
                // user whose RLIMIT_MEMLOCK is below the guest's size (a job step running as
                // its user: 8 MiB by default) runs without it rather than not at all.
                match crate::sys::mlock(region.as_ptr(), size as usize) {
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EPERM)) => {
                        tracing::debug!("mlock of {size} bytes of huge pages refused ({e}): RLIMIT_MEMLOCK; hugetlb pages stay resident anyway")
                    }
                    r => r.map_err(|source| MemoryError::Populate { size, source })?,
                }
                region
            }
        };
        let region = GuestRegionMmap::new(region, vm_memory::GuestAddress(0)).ok_or(
            MemoryError::BadSize(size, "guest region does not fit the address space"),
        )?;
        Ok(GuestMemory {
            region,
            size,
            backing,
            source: match backing {
                Backing::Lazy => MemorySource::Lazy,
                Backing::Hugetlb { .. } => MemorySource::ColdHugetlb,
            },
            user_lo: 0,
            user_hi: size,
            shared: None,
            owned_map: None,
        })
    }

    /// Map a zone's warm memory: each piece shared, at fixed addresses aligned to its page
    /// size, one after the other from guest address 0. Nothing is populated or zeroed (the zone
    /// did both); the pages are the zone's, so nothing needs locking either.
    pub fn from_warm(warm: &WarmMemory, numa_node: Option<u32>) -> Result<Self, MemoryError> {
        let size = warm.size();
        if size == 0 || warm.parts.iter().any(|p| p.len % p.page_size.bytes() != 0) {
            return Err(MemoryError::BadSize(
                size,
                "zone memory pieces must be whole pages",
            ));
        }
        let align = warm
            .parts
            .iter()
            .map(|p| p.page_size.bytes())
            .max()
            .unwrap_or(2 << 20);
        // Reserve address space with room to align, then map every piece over it.
        let reserve = size + align;
        // SAFETY: a new inaccessible anonymous mapping; it touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(MemoryError::Map {
                size,
                backing: "address space for zone memory".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let raw = raw as usize;
        let base = raw.div_ceil(align as usize) * align as usize;
        // SAFETY: giving back the unaligned head and the tail of our own reservation.
        unsafe {
            if base > raw {
                libc::munmap(raw as *mut libc::c_void, base - raw);
            }
            let end = base + size as usize;
            let rend = raw + reserve as usize;
            if rend > end {
                libc::munmap(end as *mut libc::c_void, rend - end);
            }
        }
        let unmap_all = || {
            // SAFETY: unmapping the aligned reservation this function owns.
            unsafe { libc::munmap(base as *mut libc::c_void, size as usize) };
        };
        let mut at = base;
        for p in &warm.parts {
            let err = |source| MemoryError::Warm {
                path: p.path.clone(),
                offset: p.offset,
                len: p.len,
                source,
            };
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p.path)
            {
                Ok(f) => f,
                Err(e) => {
                    unmap_all();
                    return Err(err(e));
                }
            };
            // SAFETY: MAP_FIXED over part of the reservation made above (which nothing else
            // uses); the file is a hugetlbfs file whose pages the zone holds.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    p.len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    p.offset as libc::off_t,
                )
            };
            if r == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                unmap_all();
                return Err(err(e));
            }
            at += p.len as usize;
        }
        if let Some(node) = numa_node {
            // The pages already live on the zone's node; the policy only matters if one is
            // ever replaced. A refusal is harmless.
            let _ = crate::sys::mbind_node(base as *mut u8, size as usize, node);
        }
        // SAFETY: [base, base+size) is the mapping made above, kept until `self` drops.
        let region = unsafe {
            MmapRegion::build_raw(
                base as *mut u8,
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
            )
        }
        .map_err(|e| {
            unmap_all();
            MemoryError::Map {
                size,
                backing: "zone memory".into(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let region = GuestRegionMmap::new(region, vm_memory::GuestAddress(0)).ok_or_else(|| {
            unmap_all();
            MemoryError::BadSize(size, "guest region does not fit the address space")
        })?;
        Ok(GuestMemory {
            region,
            size,
            backing: Backing::Hugetlb {
                page_size: warm.page_size(),
                numa_node,
            },
            source: MemorySource::WarmZone,
            user_lo: 0,
            user_hi: size,
            owned_map: Some((base, size as usize)),
            shared: None,
        })
    }

    /// How this memory was obtained.
    pub fn source(&self) -> MemorySource {
        self.source
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Host address of the start of guest memory (for KVM_SET_USER_MEMORY_REGION).
    pub fn host_base(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// `[lo, hi)`: where guest-originated accesses may go (see [`GuestMemory::restrict_to`]).
    pub fn user_bounds(&self) -> (u64, u64) {
        (self.user_lo, self.user_hi)
    }

    /// From now on, guest-originated accesses must lie inside `[lo, hi)`.
    pub fn restrict_to(&mut self, lo: u64, hi: u64) {
        self.user_lo = lo.min(self.size);
        self.user_hi = hi.min(self.size);
    }

    /// Check that `[addr, addr+len)` lies inside the guest's user memory.
    pub fn check(&self, addr: u64, len: u64) -> Result<(), Efault> {
        match addr.checked_add(len) {
            Some(end) if addr >= self.user_lo && end <= self.user_hi => Ok(()),
            _ => Err(Efault { addr, len }),
        }
    }

    fn check_system(&self, addr: u64, len: u64) -> Result<(), Efault> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Efault { addr, len }),
        }
    }

    /// Host pointer to `[addr, addr+len)` of user memory, bounds checked. The pointer stays
    /// valid as long as `self` lives; the guest may change the bytes concurrently, so only
    /// hand it to copies (host syscalls, volatile reads).
    pub fn host_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        self.check(addr, len)?;
        // SAFETY: the range was checked to lie inside the mapping, so the offset stays inside
        // the same allocation.
        Ok(unsafe { self.host_base().add(addr as usize) })
    }

    /// Host pointer to any part of guest memory, for the VMM's own structures.
    pub fn system_ptr(&self, addr: u64, len: u64) -> Result<*mut u8, Efault> {
        self.check_system(addr, len)?;
        // SAFETY: the range was checked to lie inside the mapping.
        Ok(unsafe { self.host_base().add(addr as usize) })
    }

    /// Read a u64 anywhere in guest memory (VMM use: exception frames).
    pub fn system_read_u64(&self, addr: u64) -> Result<u64, Efault> {
        let p = self.system_ptr(addr, 8)?;
        // SAFETY: 8 bytes inside the mapping; read_unaligned copes with any alignment.
        Ok(unsafe { std::ptr::read_unaligned(p as *const u64) })
    }

    /// Read a u32 anywhere in guest memory (VMM use: stub counters).
    pub fn system_read_u32(&self, addr: u64) -> Result<u32, Efault> {
        let p = self.system_ptr(addr, 4)?;
        // SAFETY: 4 bytes inside the mapping.
        Ok(unsafe { std::ptr::read_unaligned(p as *const u32) })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Efault> {
        self.check(addr, buf.len() as u64)?;
        self.region
            .read_slice(buf, MemoryRegionAddress(addr))
            .map_err(|_| Efault {
                addr,
                len: buf.len() as u64,
            })
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Efault> {
        self.check(addr, buf.len() as u64)?;
        self.region
            .write_slice(buf, MemoryRegionAddress(addr))
            .map_err(|_| Efault {
                addr,
                len: buf.len() as u64,
            })
    }

    pub fn read_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>, Efault> {
        self.check(addr, len)?;
        let mut v = vec![0u8; len as usize];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, Efault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, addr: u64) -> Result<u32, Efault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn write_u64(&self, addr: u64, v: u64) -> Result<(), Efault> {
        self.write(addr, &v.to_le_bytes())
    }

    pub fn write_u32(&self, addr: u64, v: u32) -> Result<(), Efault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Fill `[addr, addr+len)` with zeroes.
    pub fn zero(&self, addr: u64, len: u64) -> Result<(), Efault> {
        let p = self.host_ptr(addr, len)?;
        // SAFETY: `host_ptr` checked the range lies inside our mapping; the guest owns these
        // bytes and zeroing them is what it asked for (fresh anonymous memory).
        unsafe { std::ptr::write_bytes(p, 0, len as usize) };
        Ok(())
    }

    /// Copy `len` bytes inside guest memory (overlap allowed).
    pub fn copy_within(&self, src: u64, dst: u64, len: u64) -> Result<(), Efault> {
        let s = self.host_ptr(src, len)?;
        let d = self.host_ptr(dst, len)?;
        // SAFETY: both ranges were checked to lie inside the mapping; `copy` handles overlap.
        unsafe { std::ptr::copy(s, d, len as usize) };
        Ok(())
    }
}

/// One host mapping that backs a contiguous range of guest physical memory: one KVM memory
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// KVM memory slot number.
    pub slot: u32,
    pub guest_phys_addr: u64,
    pub size: u64,
    /// Host virtual address of the region's first byte.
    pub host_addr: u64,
}

/// The regions guest physical memory is made of, in guest address order and without overlap.
/// Today the HPC VMM builds one (all of RAM at GPA 0); shared regions between VMs will add
/// slots here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionList(Vec<MemoryRegion>);

impl RegionList {
    /// A list from regions; panics if they overlap or are out of order (a VMM bug).
    pub fn new(regions: Vec<MemoryRegion>) -> Self {
        for w in regions.windows(2) {
            assert!(
                w[0].guest_phys_addr + w[0].size <= w[1].guest_phys_addr && w[0].slot != w[1].slot,
                "guest memory regions overlap or share a slot: {w:?}"
            );
        }
        RegionList(regions)
    }

    pub fn iter(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.0.iter()
    }

    /// The region holding guest physical address `gpa`.
    pub fn find(&self, gpa: u64) -> Option<&MemoryRegion> {
        self.0
            .iter()
            .find(|r| gpa >= r.guest_phys_addr && gpa - r.guest_phys_addr < r.size)
    }
}

impl GuestMemory {
    /// The KVM memory slots this memory is registered as: RAM, then the shared window.
    pub fn regions(&self) -> RegionList {
        let mut v = vec![MemoryRegion {
            slot: 0,
            guest_phys_addr: 0,
            size: self.size,
            host_addr: self.host_base() as u64,
        }];
        v.extend(self.shared.as_ref().map(|w| w.region()));
        RegionList::new(v)
    }

    /// Give the guest a window for memory shared with other VMs ([`crate::shmem`]).
    pub fn attach_shared_window(&mut self, w: crate::shmem::SharedWindow) {
        self.shared = Some(w);
    }

    /// The shared window, if any.
    pub fn shared_window(&self) -> Option<&crate::shmem::SharedWindow> {
        self.shared.as_ref()
    }
}

/// Failure to read a guest C string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CStrError {
    /// Outside guest memory (EFAULT).
    Fault,
    /// Longer than allowed (ENAMETOOLONG / E2BIG).
    TooLong,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::mem::GuestRam;

    #[test]
    fn bounds_are_checked_without_overflow() {
        let m = GuestMemory::new(2 << 20, Backing::Lazy).unwrap();
        assert!(m.check(0, 2 << 20).is_ok());
        assert!(m.check(1, 2 << 20).is_err());
        assert!(m.check(u64::MAX, 2).is_err());
        assert!(m.check((2 << 20) - 8, 8).is_ok());
        assert!(m.read_u64((2 << 20) - 4).is_err());
        m.write_u64(8, 0xdead_beef).unwrap();
        assert_eq!(m.read_u64(8).unwrap(), 0xdead_beef);
    }

    #[test]
    fn cstrings_stop_at_nul_and_at_the_end_of_memory() {
        let m = GuestMemory::new(2 << 20, Backing::Lazy).unwrap();
        m.write(1000, b"hello\0").unwrap();
        assert_eq!(m.read_cstr(1000, 100).unwrap(), b"hello");
        assert_eq!(m.read_cstr(1000, 3), Err(CStrError::TooLong));
        let end = (2 << 20) - 3;
        m.write(end, b"abc").unwrap();
        assert_eq!(m.read_cstr(end, 100), Err(CStrError::Fault));
    }

    #[test]
    fn missing_huge_pages_are_reported_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("kernel/mm/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("free_hugepages"), "3\n").unwrap();
        std::fs::write(pool.join("nr_hugepages"), "3\n").unwrap();
        let err = GuestMemory::with_sysfs(
            64 << 20,
            Backing::Hugetlb {
                page_size: HugePageSize::Size2M,
                numa_node: None,
            },
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("needs 32 free 2M huge pages"), "{msg}");
        assert!(msg.contains("only 3 are free"), "{msg}");
        assert!(msg.contains("echo 32 >"), "{msg}");
    }
}
