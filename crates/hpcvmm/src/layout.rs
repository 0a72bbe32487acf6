//! Guest physical (= guest virtual) memory layout and the x86-64 system structures the VMM
//! builds before the guest runs: GDT, IDT, per-vCPU TSS and exception stacks, the system call
//! and exception stubs, and identity-mapping page tables.
//!
//! ```text
//! 0x0000_0000  null page (not present: NULL dereferences fault)
//! 0x0000_1000  GDT (2 pages)                        supervisor
//! 0x0000_3000  IDT (256 gates)                      supervisor
//! 0x0000_4000  syscall entry stub (LSTAR)           user, read/execute
//! 0x0000_6000  fast-path counters                   user, read/write
//! 0x0000_7000  futex waiter buckets (VMM-written)   user, read-only
//! 0x0000_5000  exception stubs, 8 bytes per vector  supervisor
//! 0x0000_8000  TSS array, 256 bytes per vCPU        supervisor
//! 0x0002_0000  exception stacks, 1 KiB per vCPU     supervisor
//! 0x0020_0000  guest program, heap, mmap area, stack (user, RWX)
//! top - N      page tables (not mapped in the guest at all)
//! ```
//! The low 2 MiB are mapped with 4 KiB pages so each page gets its own permissions; the rest
//! with the largest page size the backing allows (2 MiB or 1 GiB), or 4 KiB for the lazy
//! (commodity-style) backing.

use crate::memory::{Efault, GuestMemory};

pub const GDT_ADDR: u64 = 0x1000;
pub const GDT_SIZE: u64 = 0x2000;
pub const IDT_ADDR: u64 = 0x3000;
pub const SYSCALL_STUB: u64 = 0x4000;
pub const EXCEPTION_STUBS: u64 = 0x5000;
pub const EXCEPTION_STUB_SIZE: u64 = 8;
pub const TSS_ARRAY: u64 = 0x8000;
pub const TSS_STRIDE: u64 = 256;
/// TSS limit: the 104-byte TSS plus an I/O bitmap covering ports 0-255 and its end byte.
pub const TSS_LIMIT: u64 = 104 + 32;
pub const EXC_STACKS: u64 = 0x2_0000;
pub const EXC_STACK_SIZE: u64 = 1024;
/// Most vCPUs one VM can have (GDT and TSS space).
pub const MAX_VCPUS: usize = 256;
/// Start of memory the guest program may use.
pub const USER_START: u64 = 2 << 20;

/// Counters the syscall stub bumps on its fast path (u32 each): [0] futex wakes answered
/// without a VM exit.
pub const FAST_COUNTERS: u64 = 0x6000;
/// Futex waiter counts by bucket, kept by the VMM: the stub answers FUTEX_WAKE itself when
/// the bucket of the address has no waiter.
pub const FUTEX_BUCKETS: u64 = 0x7000;
pub const FUTEX_BUCKET_COUNT: u64 = 1024;
/// RIP at a syscall exit (after the stub's `out`).
pub const SYSCALL_EXIT_RIP: u64 = SYSCALL_STUB + 112;

/// Per-vCPU clock slots the fast system call entry reads (128 bytes each, user read-write:
/// the guest can only lie to itself there). See [`crate::kernel::clocks`].
pub const CLOCK_SLOTS: u64 = 0x7_2000;
pub const CLOCK_SLOT_SIZE: u64 = 128;
/// The group's clock fields, in the vDSO data page after the vDSO's own.
pub const CLOCK_VARS: u64 = crate::vdso::VVAR_ADDR + 64;

/// Bucket of a futex address.
pub fn futex_bucket(addr: u64) -> u64 {
    FUTEX_BUCKETS + 4 * ((addr >> 2) & (FUTEX_BUCKET_COUNT - 1))
}

/// I/O port the syscall stub writes to.
pub const SYSCALL_PORT: u16 = 0xf0;
/// I/O port the exception stubs write to.
pub const EXCEPTION_PORT: u16 = 0xf1;
/// I/O port the launch stub writes to once the guest's memory is prefaulted.
pub const LAUNCH_PORT: u16 = 0xf2;

/// The launch stub, in the user-executable stub page: touches one byte of every page in
/// `[rdi, rsi)` with stride `r8` (so the host builds its nested/shadow mappings before the
/// program starts, not during it), reports to the VMM, clears its registers and jumps to the
/// program's entry point (stored at [`LAUNCH_ENTRY_SLOT`]).
pub const LAUNCH_STUB: u64 = SYSCALL_STUB + 0x100;
/// Where the launch stub skips the prefault loop (lazy backing: nothing is prefaulted).
pub const LAUNCH_STUB_NO_PREFAULT: u64 = LAUNCH_STUB + 35;
/// The prefault loop's first instruction (`or byte [rdi], 0`): a second range starts here.
pub const LAUNCH_PREFAULT_LOOP: u64 = LAUNCH_STUB + 24;
/// RIP at the launch exit.
pub const LAUNCH_EXIT_RIP: u64 = LAUNCH_STUB + 37;
/// 8-byte slot holding the program entry point.
pub const LAUNCH_ENTRY_SLOT: u64 = LAUNCH_STUB + 50;
/// Where the prefault loop starts: the fast-path counter page, then every 2 MiB page above.
pub const PREFAULT_START: u64 = FAST_COUNTERS;

// GDT selectors. STAR[63:48] = 0x10 gives SYSRET SS = 0x18|3 and CS = 0x20|3 (Linux's order:
// user data before user code).
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const FIRST_TSS_INDEX: u64 = 5;

/// Selector of vCPU `i`'s TSS.
pub fn tss_selector(i: usize) -> u16 {
    ((FIRST_TSS_INDEX + 2 * i as u64) * 8) as u16
}

pub fn tss_addr(i: usize) -> u64 {
    TSS_ARRAY + TSS_STRIDE * i as u64
}

/// Vectors whose exception frame carries an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Guest page size used to map user memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuestPageSize {
    #[serde(rename = "4K")]
    Size4K,
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

/// Where the page tables ended up and what they map.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub pml4: u64,
    /// End of guest-usable memory (page tables start here).
    pub usable_end: u64,
    pub page_size: GuestPageSize,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Number of 4 KiB page-table pages needed to map `mapped` bytes from 0.
fn table_pages(mapped: u64, ps: GuestPageSize) -> u64 {
    let gib = div_ceil(mapped, 1 << 30);
    let pds = match ps {
        GuestPageSize::Size1G => 2, // the first GiB and a partial last GiB use PDs
        _ => gib,
    };
    let pts = match ps {
        GuestPageSize::Size4K => div_ceil(mapped, 2 << 20),
        _ => 1, // the low 2 MiB
    };
    1 + 1 + pds + pts
}

/// Write all system structures and page tables for `vcpus` vCPUs into guest memory.
pub fn build(mem: &GuestMemory, ps: GuestPageSize) -> Result<Paging, Efault> {
    build_with_window(mem, ps, None)
}

/// [`build`], also identity-mapping `window` (guest addresses above RAM, GiB-aligned, inside
/// the first 512 GiB) user read-write with 2 MiB pages: the shared-memory window of
/// [`crate::shmem`], whose KVM slot is filled in while the guest runs.
pub fn build_with_window(
    mem: &GuestMemory,
    ps: GuestPageSize,
    window: Option<(u64, u64)>,
) -> Result<Paging, Efault> {
    let size = mem.size();
    let window_pds = window.map_or(0, |(lo, hi)| div_ceil(hi - lo, 1 << 30));
    // Find the largest usable end such that page tables for [0, usable_end) fit above it.
    let pt_bytes = (table_pages(size, ps) + window_pds) * 4096;
    let usable_end = match ps {
        GuestPageSize::Size4K => (size - pt_bytes) & !0xfff,
        _ => (size - pt_bytes) & !((2 << 20) - 1),
    };
    let mut next_table = usable_end;
    let mut alloc = || {
        let a = next_table;
        next_table += 4096;
        a
    };
    mem.zero(usable_end, size - usable_end)?;

    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const PS: u64 = 0x80;

    let pml4 = alloc();
    let pdpt = alloc();
    mem.write_u64(pml4, pdpt | P | RW | US)?;
    let gib_count = div_ceil(usable_end, 1 << 30);
    for g in 0..gib_count {
        let gbase = g << 30;
        if ps == GuestPageSize::Size1G && g > 0 && gbase + (1 << 30) <= usable_end {
            mem.write_u64(pdpt + 8 * g, gbase | P | RW | US | PS)?;
            continue;
        }
        let pd = alloc();
        mem.write_u64(pdpt + 8 * g, pd | P | RW | US)?;
        for e in 0..512u64 {
            let base = gbase + (e << 21);
            if base >= usable_end {
                break;
            }
            let use_4k = base == 0 || ps == GuestPageSize::Size4K || base + (2 << 20) > usable_end;
            if !use_4k {
                mem.write_u64(pd + 8 * e, base | P | RW | US | PS)?;
                continue;
            }
            let pt = alloc();
            mem.write_u64(pd + 8 * e, pt | P | RW | US)?;
            for p in 0..512u64 {
                let addr = base + (p << 12);
                if addr >= usable_end {
                    break;
                }
                let flags = if base != 0 {
                    P | RW | US
                } else if addr == 0 {
                    0 // null page
                } else if addr == SYSCALL_STUB
                    || addr == FUTEX_BUCKETS
                    || addr == crate::vdso::VDSO_ADDR
                    || addr == crate::vdso::VVAR_ADDR
                {
                    P | US // user may execute the syscall stub and read buckets, not write
                } else if addr == FAST_COUNTERS
                    || (CLOCK_SLOTS..CLOCK_SLOTS + CLOCK_SLOT_SIZE * MAX_VCPUS as u64)
                        .contains(&addr)
                {
                    P | RW | US
                } else {
                    P | RW // supervisor only
                };
                if flags != 0 {
                    mem.write_u64(pt + 8 * p, addr | flags)?;
                }
            }
        }
    }
    if let Some((lo, hi)) = window {
        debug_assert!(lo % (1 << 30) == 0 && hi <= 512 << 30 && lo >= size);
        for g in lo >> 30..div_ceil(hi, 1 << 30) {
            let pd = alloc();
            mem.write_u64(pdpt + 8 * g, pd | P | RW | US)?;
            for e in 0..512u64 {
                let base = (g << 30) + (e << 21);
                mem.write_u64(pd + 8 * e, base | P | RW | US | PS)?;
            }
        }
    }
    debug_assert!(next_table <= size);

    write_gdt(mem)?;
    write_idt(mem)?;
    write_stubs(mem, usable_end)?;
    for i in 0..MAX_VCPUS {
        write_tss(mem, i)?;
    }
    Ok(Paging {
        pml4,
        usable_end,
        page_size: ps,
    })
}

fn seg_desc(access: u8, flags: u8) -> u64 {
    // limit 0xfffff, base 0
    let limit_lo = 0xffffu64;
    let limit_hi = 0xfu64;
    limit_lo | (u64::from(access) << 40) | (limit_hi << 48) | (u64::from(flags) << 52)
}

fn write_gdt(mem: &GuestMemory) -> Result<(), Efault> {
    mem.zero(GDT_ADDR, GDT_SIZE)?;
    // access: P | DPL | S | type. flags: G | L (code) or G | DB (data).
    mem.write_u64(GDT_ADDR + 8, seg_desc(0x9b, 0xa))?; // kernel code64
    mem.write_u64(GDT_ADDR + 16, seg_desc(0x93, 0xc))?; // kernel data
    mem.write_u64(GDT_ADDR + 24, seg_desc(0xf3, 0xc))?; // user data
    mem.write_u64(GDT_ADDR + 32, seg_desc(0xfb, 0xa))?; // user code64
    for i in 0..MAX_VCPUS {
        let base = tss_addr(i);
        let limit = TSS_LIMIT;
        let lo = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89u64 << 40) // present, 64-bit available TSS
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let hi = base >> 32;
        let at = GDT_ADDR + u64::from(tss_selector(i));
        mem.write_u64(at, lo)?;
        mem.write_u64(at + 8, hi)?;
    }
    Ok(())
}

/// Limit of the GDT (bytes - 1).
pub fn gdt_limit() -> u16 {
    (u64::from(tss_selector(MAX_VCPUS - 1)) + 16 - 1) as u16
}

fn write_idt(mem: &GuestMemory) -> Result<(), Efault> {
    for v in 0..256u64 {
        let handler = EXCEPTION_STUBS + v * EXCEPTION_STUB_SIZE;
        // 64-bit interrupt gate, present; #BP reachable from user mode like Linux's int3.
        let type_attr: u64 = if v == 3 { 0xee } else { 0x8e };
        let lo = (handler & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (type_attr << 40)
            | (((handler >> 16) & 0xffff) << 48);
        let hi = handler >> 32;
        mem.write_u64(IDT_ADDR + v * 16, lo)?;
        mem.write_u64(IDT_ADDR + v * 16 + 8, hi)?;
    }
    Ok(())
}

fn write_stubs(mem: &GuestMemory, usable_end: u64) -> Result<(), Efault> {
    // syscall entry. Fast path: FUTEX_WAKE(_BITSET) with valid arguments (4-byte aligned
    // address inside user memory, non-zero bitset) on an address whose bucket has no waiter
    // returns 0 without leaving the guest (sysretq at CPL0 on VMX hosts, jmp rcx where syscall
    // stayed at CPL3). Everything else, invalid arguments included: `out SYSCALL_PORT, al`,
    // one exit; the VMM serves the call and resumes the guest at RCX itself, so the ud2 is
    // never reached.
    let rel = (FAST_COUNTERS as i64 - (SYSCALL_STUB as i64 + 89)) as i32;
    let r = rel.to_le_bytes();
    let bb = (FUTEX_BUCKETS as u32).to_le_bytes();
    let lo = (USER_START as u32).to_le_bytes();
    let hi = (usable_end - 3).to_le_bytes();
    #[rustfmt::skip]
    let stub: [u8; 114] = [
        0x3d, 0xca, 0x00, 0x00, 0x00, //          0: cmp eax, 202 (futex)
        0x75, 0x67, //                            5: jne slow (110)
        0x89, 0xf0, //                            7: mov eax, esi
        0x83, 0xe0, 0x7f, //                      9: and eax, 0x7f (strip PRIVATE/CLOCK flags)
        0x83, 0xf8, 0x01, //                     12: cmp eax, FUTEX_WAKE
        0x74, 0x0a, //                           15: je wake (27)
        0x83, 0xf8, 0x0a, //                     17: cmp eax, FUTEX_WAKE_BITSET
        0x75, 0x53, //                           20: jne restore (105)
        0x45, 0x85, 0xc9, //                     22: test r9d, r9d (bitset)
        0x74, 0x4e, //                           25: jz restore (EINVAL is the VMM's to say)
        0x40, 0xf6, 0xc7, 0x03, //               27: wake: test dil, 3
        0x75, 0x48, //                           31: jnz restore (unaligned)
        0x48, 0x81, 0xff, lo[0], lo[1], lo[2], lo[3], // 33: cmp rdi, USER_START
        0x72, 0x3f, //                           40: jb restore
        0x48, 0xb8, hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7], // 42: mov rax, end-3
        0x48, 0x39, 0xc7, //                     52: cmp rdi, rax
        0x73, 0x30, //                           55: jae restore (outside user memory)
        0x48, 0x89, 0xf8, //                     57: mov rax, rdi
        0x48, 0xc1, 0xe8, 0x02, //               60: shr rax, 2
        0x25, 0xff, 0x03, 0x00, 0x00, //         64: and eax, 1023
        0x0f, 0xae, 0xf0, //                     69: mfence (order the guest's store before the load)
        0x83, 0x3c, 0x85, bb[0], bb[1], bb[2], bb[3], 0x00, // 72: cmp dword [rax*4 + BUCKETS], 0
        0x75, 0x17, //                           80: jne restore (105)
        0xf0, 0xff, 0x05, r[0], r[1], r[2], r[3], // 82: lock inc dword [rip + counters]
        0x8c, 0xc8, //                           89: mov eax, cs
        0xa8, 0x03, //                           91: test al, 3
        0xb8, 0x00, 0x00, 0x00, 0x00, //         93: mov eax, 0 (woke nobody)
        0x75, 0x03, //                           98: jnz user (103)
        0x48, 0x0f, 0x07, //                    100: sysretq
        0xff, 0xe1, //                          103: user: jmp rcx
        0xb8, 0xca, 0x00, 0x00, 0x00, //        105: restore: mov eax, 202
        0xe6, SYSCALL_PORT as u8, //            110: slow: out SYSCALL_PORT, al
        0x0f, 0x0b, //                          112: ud2
    ];
    let mut page = vec![0xccu8; 4096];
    page[..stub.len()].copy_from_slice(&stub);
    let fb = (FUTEX_BUCKETS as u32).to_le_bytes();
    let vd = (crate::vdso::VDSO_ADDR as u32).to_le_bytes();
    let vv = (crate::vdso::VVAR_ADDR as u32).to_le_bytes();
    #[rustfmt::skip]
    let launch: [u8; 50] = [
        0x80, 0x3c, 0x25, fb[0], fb[1], fb[2], fb[3], 0x00, // 0: cmp byte [BUCKETS], 0 (read-only pages)
        0x80, 0x3c, 0x25, vd[0], vd[1], vd[2], vd[3], 0x00, // 8: cmp byte [VDSO], 0
        0x80, 0x3c, 0x25, vv[0], vv[1], vv[2], vv[3], 0x00, // 16: cmp byte [VVAR], 0
        0x80, 0x0f, 0x00, // 24: or byte [rdi], 0
        0x4c, 0x01, 0xc7, // 27: add rdi, r8
        0x48, 0x39, 0xf7, // 30: cmp rdi, rsi
        0x72, 0xf5, //       33: jb 24
        0xe6, LAUNCH_PORT as u8, // 35: out LAUNCH_PORT, al
        0x31, 0xff, //       37: xor edi, edi
        0x31, 0xf6, //       39: xor esi, esi
        0x45, 0x31, 0xc0, // 41: xor r8d, r8d
        0xff, 0x25, 0x00, 0x00, 0x00, 0x00, // 44: jmp [rip+0] -> entry slot
    ];
    let o = (LAUNCH_STUB - SYSCALL_STUB) as usize;
    page[o..o + launch.len()].copy_from_slice(&launch);
    let f = (crate::fastcall::ENTRY - SYSCALL_STUB) as usize;
    page[f..f + crate::fastcall::CODE.len()].copy_from_slice(&crate::fastcall::CODE);
    mem.write(SYSCALL_STUB, &page)?;
    // exception v: `out EXCEPTION_PORT, al; hlt`, padded with int3; the VMM tells vectors apart
    // by the stub's address.
    let mut stubs = vec![0xccu8; 256 * EXCEPTION_STUB_SIZE as usize];
    for v in 0..256usize {
        let o = v * EXCEPTION_STUB_SIZE as usize;
        stubs[o..o + 3].copy_from_slice(&[0xe6, EXCEPTION_PORT as u8, 0xf4]);
    }
    mem.write(EXCEPTION_STUBS, &stubs)?;
    Ok(())
}

fn write_tss(mem: &GuestMemory, i: usize) -> Result<(), Efault> {
    let tss = tss_addr(i);
    mem.zero(tss, TSS_STRIDE)?;
    let rsp0 = EXC_STACKS + EXC_STACK_SIZE * (i as u64 + 1);
    mem.write_u64(tss + 4, rsp0)?;
    // I/O permission bitmap: user mode may touch exactly the two VMM ports (the syscall stub
    // runs at CPL3 on hosts where `syscall` does not change privilege); every other port
    // faults.
    mem.write(tss + 102, &104u16.to_le_bytes())?;
    let mut bitmap = [0xffu8; 33];
    for port in [SYSCALL_PORT, EXCEPTION_PORT, LAUNCH_PORT] {
        bitmap[usize::from(port / 8)] &= !(1 << (port % 8));
    }
    mem.write(tss + 104, &bitmap)?;
    Ok(())
}

/// Make `[start, start+len)` not present in the guest page tables (a guard: any access
/// faults). Only whole 4 KiB/2 MiB entries are cleared; a range inside a 1 GiB page is
/// refused. Call before any vCPU runs (no TLB to flush).
pub fn unmap_guard(mem: &GuestMemory, pml4: u64, start: u64, len: u64) -> Result<(), Efault> {
    let mut va = start;
    let end = start + len;
    while va < end {
        let e4 = mem.read_u64(pml4 + 8 * ((va >> 39) & 511))?;
        let pdpt = e4 & !0xfff;
        let e3a = pdpt + 8 * ((va >> 30) & 511);
        let e3 = mem.read_u64(e3a)?;
        if e3 & 1 == 0 || e3 & 0x80 != 0 {
            return Err(Efault {
                addr: va,
                len: end - va,
            });
        }
        let e2a = (e3 & !0xfff) + 8 * ((va >> 21) & 511);
        let e2 = mem.read_u64(e2a)?;
        if e2 & 0x80 != 0 {
            if va % (2 << 20) != 0 || end - va < (2 << 20) {
                return Err(Efault {
                    addr: va,
                    len: end - va,
                });
            }
            mem.write_u64(e2a, 0)?;
            va += 2 << 20;
            continue;
        }
        if e2 & 1 == 0 {
            va += 4096;
            continue;
        }
        let e1a = (e2 & !0xfff) + 8 * ((va >> 12) & 511);
        mem.write_u64(e1a, 0)?;
        va += 4096;
    }
    Ok(())
}

/// Vector of the exception whose stub exited at `rip` (the address after the `out`).
pub fn exception_vector(rip: u64) -> Option<u8> {
    let off = rip.checked_sub(EXCEPTION_STUBS + 2)?;
    if off % EXCEPTION_STUB_SIZE != 0 || off / EXCEPTION_STUB_SIZE >= 256 {
        return None;
    }
    Some((off / EXCEPTION_STUB_SIZE) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Backing;

    fn walk(mem: &GuestMemory, pml4: u64, va: u64) -> Option<(u64, u64)> {
        let e4 = mem.read_u64(pml4 + 8 * ((va >> 39) & 511)).ok()?;
        if e4 & 1 == 0 {
            return None;
        }
        let e3 = mem.read_u64((e4 & !0xfff) + 8 * ((va >> 30) & 511)).ok()?;
        if e3 & 1 == 0 {
            return None;
        }
        if e3 & 0x80 != 0 {
            return Some(((e3 & !0x3fff_ffff) + (va & 0x3fff_ffff), e3 & 7));
        }
        let e2 = mem.read_u64((e3 & !0xfff) + 8 * ((va >> 21) & 511)).ok()?;
        if e2 & 1 == 0 {
            return None;
        }
        if e2 & 0x80 != 0 {
            return Some(((e2 & !0x1f_ffff) + (va & 0x1f_ffff), e2 & 7));
        }
        let e1 = mem.read_u64((e2 & !0xfff) + 8 * ((va >> 12) & 511)).ok()?;
        if e1 & 1 == 0 {
            return None;
        }
        Some(((e1 & !0xfff) + (va & 0xfff), e1 & 7))
    }

    #[test]
    fn identity_map_with_protected_low_area() {
        for ps in [GuestPageSize::Size4K, GuestPageSize::Size2M] {
            let mem = GuestMemory::new(64 << 20, Backing::Lazy).unwrap();
            let p = build(&mem, ps).unwrap();
            assert!(p.usable_end <= 64 << 20 && p.usable_end > 60 << 20, "{p:?}");
            assert_eq!(walk(&mem, p.pml4, 0), None, "null page must not be mapped");
            assert_eq!(walk(&mem, p.pml4, GDT_ADDR), Some((GDT_ADDR, 3)));
            assert_eq!(walk(&mem, p.pml4, SYSCALL_STUB), Some((SYSCALL_STUB, 5)));
            assert_eq!(walk(&mem, p.pml4, FUTEX_BUCKETS), Some((FUTEX_BUCKETS, 5)));
            assert_eq!(walk(&mem, p.pml4, FAST_COUNTERS), Some((FAST_COUNTERS, 7)));
            assert_eq!(walk(&mem, p.pml4, 0x40_1234), Some((0x40_1234, 7)));
            assert_eq!(
                walk(&mem, p.pml4, p.usable_end - 1),
                Some((p.usable_end - 1, 7))
            );
            assert_eq!(
                walk(&mem, p.pml4, p.usable_end),
                None,
                "page tables stay unmapped"
            );
        }
    }

    /// The hand-written stub bytes and the addresses the VMM matches exits against must agree:
    /// each constant is checked against the instruction it names.
    #[test]
    fn stub_offsets_match_the_stub_bytes() {
        let mem = GuestMemory::new(64 << 20, Backing::Lazy).unwrap();
        build(&mem, GuestPageSize::Size2M).unwrap();
        let at = |addr: u64, n: u64| mem.read_vec(addr, n).unwrap();
        // The syscall exit: `out SYSCALL_PORT, al` ends right at SYSCALL_EXIT_RIP, then ud2.
        assert_eq!(at(SYSCALL_EXIT_RIP - 2, 2), [0xe6, SYSCALL_PORT as u8]);
        assert_eq!(at(SYSCALL_EXIT_RIP, 2), [0x0f, 0x0b]);
        // The `jne slow` at the top lands on that `out`.
        let jne = at(SYSCALL_STUB + 5, 2);
        assert_eq!(jne[0], 0x75);
        assert_eq!(SYSCALL_STUB + 7 + u64::from(jne[1]), SYSCALL_EXIT_RIP - 2);
        // The fast path's `lock inc [rip+disp]` addresses FAST_COUNTERS.
        let inc = at(SYSCALL_STUB + 82, 7);
        assert_eq!(inc[..3], [0xf0, 0xff, 0x05]);
        let disp = i32::from_le_bytes(inc[3..7].try_into().unwrap());
        assert_eq!(
            (SYSCALL_STUB + 89).wrapping_add_signed(i64::from(disp)),
            FAST_COUNTERS
        );
        // The launch stub: skipping the prefault loop lands on `out LAUNCH_PORT`, whose end
        // is LAUNCH_EXIT_RIP; the final `jmp [rip+0]` reads LAUNCH_ENTRY_SLOT.
        assert_eq!(at(LAUNCH_STUB_NO_PREFAULT, 2), [0xe6, LAUNCH_PORT as u8]);
        assert_eq!(LAUNCH_EXIT_RIP, LAUNCH_STUB_NO_PREFAULT + 2);
        assert_eq!(at(LAUNCH_ENTRY_SLOT - 6, 6), [0xff, 0x25, 0, 0, 0, 0]);
        // The prefault loop's `jb` goes back to its `or byte [rdi], 0`.
        let jb = at(LAUNCH_STUB_NO_PREFAULT - 2, 2);
        assert_eq!(jb[0], 0x72);
        let target = LAUNCH_STUB_NO_PREFAULT.wrapping_add_signed(i64::from(jb[1] as i8));
        assert_eq!(at(target, 3), [0x80, 0x0f, 0x00]);
        assert_eq!(target, LAUNCH_PREFAULT_LOOP);
        // Every exception stub: `out EXCEPTION_PORT, al; hlt`, decoded back to its vector.
        for v in 0..256u64 {
            let stub = EXCEPTION_STUBS + v * EXCEPTION_STUB_SIZE;
            assert_eq!(at(stub, 3), [0xe6, EXCEPTION_PORT as u8, 0xf4]);
            assert_eq!(exception_vector(stub + 2), Some(v as u8));
        }
    }

    #[test]
    fn exception_vectors_decode_from_stub_addresses() {
        assert_eq!(exception_vector(EXCEPTION_STUBS + 2), Some(0));
        assert_eq!(exception_vector(EXCEPTION_STUBS + 14 * 8 + 2), Some(14));
        assert_eq!(exception_vector(EXCEPTION_STUBS + 3), None);
        assert_eq!(exception_vector(SYSCALL_STUB + 2), None);
    }
}
