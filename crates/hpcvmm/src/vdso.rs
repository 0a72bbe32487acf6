//! A minimal vDSO, so the guest reads the time without a VM exit.
//!
//! glibc and Rust std call `__vdso_clock_gettime`, `__vdso_gettimeofday` and `__vdso_time`
//! when the auxiliary vector carries AT_SYSINFO_EHDR. Ours computes time from the TSC with
//! parameters the VMM writes into a read-only data page (`VVAR`): the guest TSC at a base
//! instant, a 32.32 fixed-point nanoseconds-per-tick multiplier, and the host's monotonic and
//! real-time clocks at that instant. Clocks other than REALTIME/MONOTONIC (and their COARSE,
//! RAW, BOOTTIME variants) fall back to the real system call. The code is `vdso.s` beside this
//! file, assembled with GNU as (`as --64 vdso.s && objcopy -O binary -j .text`); it uses
//! absolute addresses of the data page, so the image is placed at [`VDSO_ADDR`].
//!
//! Without an invariant TSC the VMM passes no AT_SYSINFO_EHDR and every clock read is a
//! system call, as before.

use crate::memory::{Efault, GuestMemory};

/// Where the vDSO image lives (user read/execute).
pub const VDSO_ADDR: u64 = 0x7_0000;
/// Its data page (user read-only): tsc_base, mult, mono_base_ns, real_base_ns.
pub const VVAR_ADDR: u64 = 0x7_1000;

const CODE_OFFSET: usize = 0x400;
/// Offsets of the entry points in [`CODE`] (see vdso.s).
const CLOCK_GETTIME: u64 = 0x00;
const GETTIMEOFDAY: u64 = 0x72;
const TIME: u64 = 0xb1;

/// Machine code of vdso.s.
#[rustfmt::skip]
const CODE: [u8; 209] = [
    0x83, 0xff, 0x01, 0x74, 0x20, 0x83, 0xff, 0x04, 0x74, 0x1b, 0x83, 0xff, 0x06, 0x74, 0x16, 0x83,
    0xff, 0x07, 0x74, 0x11, 0x85, 0xff, 0x74, 0x17, 0x83, 0xff, 0x05, 0x74, 0x12, 0xb8, 0xe4, 0x00,
    0x00, 0x00, 0x0f, 0x05, 0xc3, 0x4c, 0x8b, 0x14, 0x25, 0x10, 0x10, 0x07, 0x00, 0xeb, 0x08, 0x4c,
    0x8b, 0x14, 0x25, 0x18, 0x10, 0x07, 0x00, 0xe8, 0x14, 0x00, 0x00, 0x00, 0x31, 0xd2, 0xb9, 0x00,
    0xca, 0x9a, 0x3b, 0x48, 0xf7, 0xf1, 0x48, 0x89, 0x06, 0x48, 0x89, 0x56, 0x08, 0x31, 0xc0, 0xc3,
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x2b, 0x04, 0x25, 0x00, 0x10, 0x07,
    0x00, 0x48, 0xf7, 0x24, 0x25, 0x08, 0x10, 0x07, 0x00, 0x48, 0x0f, 0xac, 0xd0, 0x20, 0x4c, 0x01,
    0xd0, 0xc3, 0x48, 0x85, 0xff, 0x74, 0x2b, 0x4c, 0x8b, 0x14, 0x25, 0x18, 0x10, 0x07, 0x00, 0xe8,
    0xcc, 0xff, 0xff, 0xff, 0x31, 0xd2, 0xb9, 0x00, 0xca, 0x9a, 0x3b, 0x48, 0xf7, 0xf1, 0x48, 0x89,
    0x07, 0x48, 0x89, 0xd0, 0x31, 0xd2, 0xb9, 0xe8, 0x03, 0x00, 0x00, 0x48, 0xf7, 0xf1, 0x48, 0x89,
    0x47, 0x08, 0x48, 0x85, 0xf6, 0x74, 0x07, 0x48, 0xc7, 0x06, 0x00, 0x00, 0x00, 0x00, 0x31, 0xc0,
    0xc3, 0x4c, 0x8b, 0x14, 0x25, 0x18, 0x10, 0x07, 0x00, 0xe8, 0x92, 0xff, 0xff, 0xff, 0x31, 0xd2,
    0xb9, 0x00, 0xca, 0x9a, 0x3b, 0x48, 0xf7, 0xf1, 0x48, 0x85, 0xff, 0x74, 0x03, 0x48, 0x89, 0x07,
    0xc3
];

/// The ELF image to place at [`VDSO_ADDR`].
pub fn image() -> Vec<u8> {
    let mut img = vec![0u8; CODE_OFFSET + CODE.len()];
    let put = |img: &mut Vec<u8>, at: usize, b: &[u8]| img[at..at + b.len()].copy_from_slice(b);
    let u16b = |v: u16| v.to_le_bytes();
    let u32b = |v: u32| v.to_le_bytes();
    let u64b = |v: u64| v.to_le_bytes();

    const PHOFF: usize = 0x40;
    const HASH: usize = 0xb0;
    const DYNSYM: usize = 0xd0;
    const DYNSTR: usize = 0x130;
    const DYNAMIC: usize = 0x1c0;
    let total = img.len() as u64;

    // ELF header: 64-bit, little endian, ET_DYN, x86-64, no section headers.
    put(&mut img, 0, b"\x7fELF\x02\x01\x01");
    put(&mut img, 16, &u16b(3)); // ET_DYN
    put(&mut img, 18, &u16b(62)); // EM_X86_64
    put(&mut img, 20, &u32b(1));
    put(&mut img, 32, &u64b(PHOFF as u64));
    put(&mut img, 52, &u16b(64));
    put(&mut img, 54, &u16b(56));
    put(&mut img, 56, &u16b(2));
    put(&mut img, 58, &u16b(64));
    // PT_LOAD: the whole image, linked at 0.
    let ph = |img: &mut Vec<u8>, i: usize, ty: u32, flags: u32, off: u64, size: u64, align: u64| {
        let o = PHOFF + 56 * i;
        img[o..o + 4].copy_from_slice(&ty.to_le_bytes());
        img[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
        img[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
        img[o + 16..o + 24].copy_from_slice(&off.to_le_bytes());
        img[o + 24..o + 32].copy_from_slice(&off.to_le_bytes());
        img[o + 32..o + 40].copy_from_slice(&size.to_le_bytes());
        img[o + 40..o + 48].copy_from_slice(&size.to_le_bytes());
        img[o + 48..o + 56].copy_from_slice(&align.to_le_bytes());
    };
    ph(&mut img, 0, 1, 5, 0, total, 0x1000);
    ph(&mut img, 1, 2, 4, DYNAMIC as u64, 7 * 16, 8);

    // Strings and symbols.
    let names = [
        "__vdso_clock_gettime",
        "__vdso_gettimeofday",
        "__vdso_time",
        "linux-vdso.so.1",
    ];
    let mut strtab = vec![0u8];
    let mut name_off = Vec::new();
    for n in names {
        name_off.push(strtab.len() as u32);
        strtab.extend_from_slice(n.as_bytes());
        strtab.push(0);
    }
    put(&mut img, DYNSTR, &strtab);
    let entries = [CLOCK_GETTIME, GETTIMEOFDAY, TIME];
    for (i, e) in entries.iter().enumerate() {
        let o = DYNSYM + 24 * (i + 1);
        put(&mut img, o, &u32b(name_off[i]));
        img[o + 4] = 0x12; // STB_GLOBAL, STT_FUNC
        put(&mut img, o + 6, &u16b(1)); // defined (any section but UNDEF/ABS)
        put(&mut img, o + 8, &u64b(CODE_OFFSET as u64 + e));
        put(&mut img, o + 16, &u64b(0x20));
    }
    // SysV hash with one bucket: 1 -> 2 -> 3.
    let hash = [1u32, 4, 1, 0, 2, 3, 0];
    for (i, h) in hash.iter().enumerate() {
        put(&mut img, HASH + 4 * i, &u32b(*h));
    }
    // Dynamic section.
    let dynamic: [(u64, u64); 7] = [
        (4, HASH as u64),             // DT_HASH
        (5, DYNSTR as u64),           // DT_STRTAB
        (6, DYNSYM as u64),           // DT_SYMTAB
        (10, strtab.len() as u64),    // DT_STRSZ
        (11, 24),                     // DT_SYMENT
        (14, u64::from(name_off[3])), // DT_SONAME
        (0, 0),                       // DT_NULL
    ];
    for (i, (t, v)) in dynamic.iter().enumerate() {
        put(&mut img, DYNAMIC + 16 * i, &u64b(*t));
        put(&mut img, DYNAMIC + 16 * i + 8, &u64b(*v));
    }
    put(&mut img, CODE_OFFSET, &CODE);
    img
}

/// Time parameters the vDSO reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    pub tsc_base: u64,
    /// Nanoseconds per TSC tick, 32.32 fixed point.
    pub mult: u64,
    pub mono_ns: u64,
    pub real_ns: u64,
    /// guest TSC - host TSC (the VMM reads the guest's clock from the host TSC).
    pub host_offset: u64,
}

impl TimeBase {
    /// Parameters for a TSC of `tsc_khz`, with `tsc_base` read at host clocks `mono_ns`/`real_ns`.
    pub fn new(tsc_khz: u64, tsc_base: u64, mono_ns: u64, real_ns: u64) -> Self {
        let mult = ((1_000_000u128 << 32) / u128::from(tsc_khz.max(1))) as u64;
        TimeBase {
            tsc_base,
            mult,
            mono_ns,
            real_ns,
            host_offset: 0,
        }
    }

    /// Nanoseconds the vDSO computes for a TSC reading (mirror of vdso.s, for tests).
    pub fn ns(&self, tsc: u64, base_ns: u64) -> u64 {
        let d = u128::from(tsc.wrapping_sub(self.tsc_base));
        ((d * u128::from(self.mult)) >> 32) as u64 + base_ns
    }
}

/// Write the image and the data page into guest memory.
pub fn install(mem: &GuestMemory, tb: &TimeBase) -> Result<(), Efault> {
    let img = image();
    let p = mem.system_ptr(VDSO_ADDR, img.len() as u64)?;
    // SAFETY: `system_ptr` checked the destination lies inside guest memory.
    unsafe { std::ptr::copy_nonoverlapping(img.as_ptr(), p, img.len()) };
    let data = [tb.tsc_base, tb.mult, tb.mono_ns, tb.real_ns];
    let q = mem.system_ptr(VVAR_ADDR, 32)?;
    // SAFETY: 32 bytes inside guest memory, checked above.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), q, 32) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_a_well_formed_shared_object() {
        let img = image();
        let elf = goblin::elf::Elf::parse(&img).expect("parses");
        assert_eq!(elf.header.e_type, goblin::elf::header::ET_DYN);
        let names: Vec<&str> = elf
            .dynsyms
            .iter()
            .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
            .collect();
        assert!(names.contains(&"__vdso_clock_gettime"), "{names:?}");
        assert!(names.contains(&"__vdso_time"));
    }

    #[test]
    fn fixed_point_time_is_accurate() {
        let tb = TimeBase::new(3_000_000, 1_000, 5_000_000_000, 0);
        // 3e9 ticks = 1 s at 3 GHz.
        let ns = tb.ns(1_000 + 3_000_000_000, tb.mono_ns);
        assert!((ns as i64 - 6_000_000_000).abs() < 2, "{ns}");
        assert_eq!(tb.ns(1_000, 7), 7);
    }
}
