//! The initial process stack, laid out exactly as Linux's `create_elf_tables` does: strings at
//! the top, then AT_RANDOM bytes, then (16-byte aligned) argc, argv[], NULL, envp[], NULL, auxv.

use crate::elf::LoadedImage;
use crate::memory::{Efault, GuestMemory};

pub const AT_NULL: u64 = 0;
pub const AT_IGNORE: u64 = 1;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_PLATFORM: u64 = 15;
pub const AT_HWCAP: u64 = 16;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_HWCAP2: u64 = 26;
pub const AT_EXECFN: u64 = 31;
pub const AT_SYSINFO_EHDR: u64 = 33;
pub const AT_MINSIGSTKSZ: u64 = 51;

/// Everything that goes on the initial stack.
pub struct StackSpec<'a> {
    pub argv: &'a [Vec<u8>],
    pub envp: &'a [Vec<u8>],
    pub execfn: &'a [u8],
    pub image: &'a LoadedImage,
    /// Where the interpreter was loaded (AT_BASE), 0 for a program without one.
    pub interp_base: u64,
    pub hwcap: u64,
    pub hwcap2: u64,
    pub ids: [u64; 4],
    pub random: [u8; 16],
    /// Address of the vDSO image, if the guest gets one.
    pub vdso: Option<u64>,
}

/// Build the stack below `top`; returns the initial RSP (pointing at argc).
pub fn build(mem: &GuestMemory, top: u64, spec: &StackSpec<'_>) -> Result<u64, Efault> {
    let mut sp = top;
    let push_bytes = |sp: &mut u64, b: &[u8]| -> Result<u64, Efault> {
        *sp = sp
            .checked_sub(b.len() as u64 + 1)
            .ok_or(Efault { addr: 0, len: 0 })?;
        mem.write(*sp, b)?;
        mem.write(*sp + b.len() as u64, &[0])?;
        Ok(*sp)
    };
    sp -= 8; // end marker, like Linux
    let execfn = push_bytes(&mut sp, spec.execfn)?;
    let mut envp = Vec::with_capacity(spec.envp.len());
    for e in spec.envp.iter().rev() {
        envp.push(push_bytes(&mut sp, e)?);
    }
    envp.reverse();
    let mut argv = Vec::with_capacity(spec.argv.len());
    for a in spec.argv.iter().rev() {
        argv.push(push_bytes(&mut sp, a)?);
    }
    argv.reverse();
    let platform = push_bytes(&mut sp, b"x86_64")?;
    sp &= !15;
    sp -= 16;
    let random = sp;
    mem.write(random, &spec.random)?;

    let img = spec.image;
    let vdso = match spec.vdso {
        Some(a) => (AT_SYSINFO_EHDR, a),
        None => (AT_IGNORE, 0),
    };
    let auxv: [(u64, u64); 21] = [
        vdso,
        (AT_HWCAP, spec.hwcap),
        (AT_PAGESZ, 4096),
        (AT_CLKTCK, 100),
        (AT_PHDR, img.phdr),
        (AT_PHENT, img.phent),
        (AT_PHNUM, img.phnum),
        (AT_BASE, spec.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, img.entry),
        (AT_UID, spec.ids[0]),
        (AT_EUID, spec.ids[1]),
        (AT_GID, spec.ids[2]),
        (AT_EGID, spec.ids[3]),
        (AT_SECURE, 0),
        (AT_RANDOM, random),
        (AT_HWCAP2, spec.hwcap2),
        (AT_EXECFN, execfn),
        (AT_PLATFORM, platform),
        (AT_MINSIGSTKSZ, 2048),
        (AT_NULL, 0),
    ];
    let words = 1 + argv.len() + 1 + envp.len() + 1 + 2 * auxv.len();
    sp -= 8 * words as u64;
    sp &= !15;
    let mut w = sp;
    let mut put = |v: u64| -> Result<(), Efault> {
        mem.write_u64(w, v)?;
        w += 8;
        Ok(())
    };
    put(argv.len() as u64)?;
    for a in &argv {
        put(*a)?;
    }
    put(0)?;
    for e in &envp {
        put(*e)?;
    }
    put(0)?;
    for (k, v) in auxv {
        put(k)?;
        put(v)?;
    }
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::mem::GuestRam;
    use crate::memory::Backing;

    #[test]
    fn layout_matches_linux() {
        let mem = GuestMemory::new(4 << 20, Backing::Lazy).unwrap();
        let img = LoadedImage {
            entry: 0x401000,
            phdr: 0x400040,
            phnum: 9,
            phent: 56,
            bias: 0,
            start: 0x400000,
            end: 0x500000,
        };
        let argv = [b"prog".to_vec(), b"a b".to_vec()];
        let envp = [b"X=1".to_vec()];
        let spec = StackSpec {
            argv: &argv,
            envp: &envp,
            execfn: b"/prog",
            image: &img,
            interp_base: 0x7f_0000,
            hwcap: 1,
            hwcap2: 2,
            ids: [0, 0, 0, 0],
            random: [7; 16],
            vdso: Some(0x70000),
        };
        let sp = build(&mem, 4 << 20, &spec).unwrap();
        assert_eq!(sp % 16, 0);
        assert_eq!(mem.read_u64(sp).unwrap(), 2);
        let a1 = mem.read_u64(sp + 16).unwrap();
        assert_eq!(mem.read_cstr(a1, 100).unwrap(), b"a b");
        assert_eq!(mem.read_u64(sp + 24).unwrap(), 0);
        let e0 = mem.read_u64(sp + 32).unwrap();
        assert_eq!(mem.read_cstr(e0, 100).unwrap(), b"X=1");
        // auxv starts after envp's NULL
        let mut a = sp + 48;
        let mut found = std::collections::HashMap::new();
        loop {
            let k = mem.read_u64(a).unwrap();
            let v = mem.read_u64(a + 8).unwrap();
            if k == AT_NULL {
                break;
            }
            found.insert(k, v);
            a += 16;
        }
        assert_eq!(found[&AT_ENTRY], 0x401000);
        assert_eq!(found[&AT_BASE], 0x7f_0000);
        assert_eq!(found[&AT_PHDR], 0x400040);
        assert_eq!(found[&AT_PHNUM], 9);
        assert_eq!(found[&AT_PAGESZ], 4096);
        let r = found[&AT_RANDOM];
        assert_eq!(mem.read_vec(r, 16).unwrap(), vec![7; 16]);
        assert_eq!(mem.read_cstr(found[&AT_EXECFN], 100).unwrap(), b"/prog");
    }
}
