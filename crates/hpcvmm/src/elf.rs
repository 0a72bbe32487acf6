//! x86-64 ELF loading: validation before any VM exists, then copying the PT_LOAD segments into
//! guest memory where the program expects them (ET_EXEC) or at a load base (ET_DYN: PIE
//! programs, static-pie, and dynamic loaders such as `ld-linux-x86-64.so.2`).
//!
//! A program with `PT_INTERP` is started as Linux starts it: the caller loads the interpreter
//! too (see [`Program::check_interpreter`]) and execution begins in the interpreter.

use std::path::Path;

use goblin::elf::{header, program_header, Elf};

use crate::layout::USER_START;
use crate::memory::GuestMemory;

/// Why a program cannot run in the HPC VMM.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read program {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not an ELF file")]
    NotElf(String),
    #[error("{0} is a 32-bit ELF; the HPC VMM runs 64-bit x86-64 programs only")]
    Not64(String),
    #[error("{path} is built for machine {machine}, not x86-64")]
    WrongMachine { path: String, machine: String },
    #[error("{path} needs the interpreter {interp}, which does not exist inside the guest's root {root} (run with --root / to give the guest the host's files)")]
    InterpreterMissing {
        path: String,
        interp: String,
        root: String,
    },
    #[error("{path} names the interpreter {interp}, which is not usable: {why}")]
    BadInterpreter {
        path: String,
        interp: String,
        why: String,
    },
    #[error("{path} is an ELF of type {kind}, not an executable (ET_EXEC or static-pie)")]
    NotExecutable { path: String, kind: String },
    #[error("{path} is malformed: {what}")]
    Malformed { path: String, what: String },
    #[error("{path}: segment at {vaddr:#x}+{memsz:#x} does not fit guest memory [{low:#x}, {high:#x}); use more --memory")]
    DoesNotFit {
        path: String,
        vaddr: u64,
        memsz: u64,
        low: u64,
        high: u64,
    },
}

#[derive(Clone, Debug)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
}

/// A validated static program, ready to load.
#[derive(Clone, Debug)]
pub struct Program {
    path: String,
    bytes: Vec<u8>,
    segments: Vec<Segment>,
    entry: u64,
    phoff_vaddr: u64,
    phnum: u64,
    phent: u64,
    pie: bool,
    max_align: u64,
    interp: Option<String>,
}

/// Where a program landed in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedImage {
    pub entry: u64,
    pub phdr: u64,
    pub phnum: u64,
    pub phent: u64,
    /// Load bias (0 for ET_EXEC).
    pub bias: u64,
    /// Lowest page-aligned address the image occupies.
    pub start: u64,
    /// First page-aligned address past the image (where the heap starts).
    pub end: u64,
}

fn malformed(path: &str, what: impl Into<String>) -> ElfError {
    ElfError::Malformed {
        path: path.to_string(),
        what: what.into(),
    }
}

impl Program {
    /// Read and validate a program file.
    pub fn from_file(path: &Path) -> Result<Program, ElfError> {
        let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Program::from_bytes(&path.display().to_string(), bytes)
    }

    /// Validate a program image.
    pub fn from_bytes(path: &str, bytes: Vec<u8>) -> Result<Program, ElfError> {
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf(path.into()));
        }
        if bytes.len() > 4 && bytes[4] == header::ELFCLASS32 {
            return Err(ElfError::Not64(path.into()));
        }
        let elf = Elf::parse(&bytes).map_err(|e| malformed(path, e.to_string()))?;
        if !elf.is_64 {
            return Err(ElfError::Not64(path.into()));
        }
        if elf.header.e_machine != header::EM_X86_64 {
            return Err(ElfError::WrongMachine {
                path: path.into(),
                machine: header::machine_to_str(elf.header.e_machine).to_string(),
            });
        }
        if !elf.little_endian {
            return Err(malformed(path, "big-endian"));
        }
        let interp = elf.interpreter.map(str::to_string);
        if interp.as_deref() == Some("") {
            return Err(malformed(path, "empty PT_INTERP"));
        }
        let pie = match elf.header.e_type {
            header::ET_EXEC => false,
            header::ET_DYN => true,
            t => {
                return Err(ElfError::NotExecutable {
                    path: path.into(),
                    kind: header::et_to_str(t).to_string(),
                })
            }
        };
        if elf.header.e_phentsize as usize != 56 {
            return Err(malformed(path, "unexpected program header size"));
        }
        let mut segments = Vec::new();
        let mut max_align = 4096u64;
        for ph in &elf.program_headers {
            if ph.p_type != program_header::PT_LOAD {
                continue;
            }
            if ph.p_filesz > ph.p_memsz {
                return Err(malformed(path, "segment file size exceeds its memory size"));
            }
            let file_end = ph.p_offset.checked_add(ph.p_filesz);
            if file_end.is_none_or(|e| e > bytes.len() as u64) {
                return Err(malformed(
                    path,
                    format!(
                        "truncated: segment at file offset {:#x}+{:#x} but the file has {:#x} bytes",
                        ph.p_offset,
                        ph.p_filesz,
                        bytes.len()
                    ),
                ));
            }
            if ph
                .p_vaddr
                .checked_add(ph.p_memsz)
                .is_none_or(|e| e > 1 << 47)
            {
                return Err(malformed(path, "segment address out of range"));
            }
            if ph.p_align > 1 {
                if !ph.p_align.is_power_of_two() {
                    return Err(malformed(path, "segment alignment is not a power of two"));
                }
                max_align = max_align.max(ph.p_align);
            }
            segments.push(Segment {
                vaddr: ph.p_vaddr,
                offset: ph.p_offset,
                filesz: ph.p_filesz,
                memsz: ph.p_memsz,
            });
        }
        if segments.is_empty() {
            return Err(malformed(path, "no loadable segment"));
        }
        segments.sort_by_key(|s| s.vaddr);
        for w in segments.windows(2) {
            if w[0].vaddr + w[0].memsz > w[1].vaddr {
                return Err(malformed(path, "loadable segments overlap"));
            }
        }
        // The program headers' address in memory (AT_PHDR).
        let phoff = elf.header.e_phoff;
        let phdr_ph = elf
            .program_headers
            .iter()
            .find(|p| p.p_type == program_header::PT_PHDR)
            .map(|p| p.p_vaddr);
        let phoff_vaddr = match phdr_ph {
            Some(v) => v,
            None => segments
                .iter()
                .find(|s| phoff >= s.offset && phoff < s.offset + s.filesz)
                .map(|s| s.vaddr + (phoff - s.offset))
                .unwrap_or(0),
        };
        Ok(Program {
            path: path.into(),
            segments,
            entry: elf.header.e_entry,
            phoff_vaddr,
            phnum: elf.header.e_phnum as u64,
            phent: elf.header.e_phentsize as u64,
            pie,
            max_align,
            interp,
            bytes,
        })
    }

    /// ET_DYN (position independent: loaded at a base).
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// The PT_INTERP path, for a dynamically linked program.
    pub fn interp(&self) -> Option<&str> {
        self.interp.as_deref()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes from the first segment's page to the end of the last segment, page-rounded.
    pub fn span(&self) -> u64 {
        let first = self.segments[0].vaddr & !0xfff;
        let end = self
            .segments
            .iter()
            .map(|s| s.vaddr + s.memsz)
            .max()
            .unwrap_or(first);
        (end - first).next_multiple_of(4096)
    }

    /// The largest segment alignment (at least a page, at most 1 GiB).
    pub fn max_align(&self) -> u64 {
        self.max_align.min(1 << 30)
    }

    /// Check that this program (read from `interp` named by `program`'s PT_INTERP) can serve as
    /// an interpreter the way Linux's binfmt_elf accepts one: a position-independent ELF with no
    /// interpreter of its own.
    pub fn check_interpreter(&self, program: &str, interp: &str) -> Result<(), ElfError> {
        let bad = |why: &str| ElfError::BadInterpreter {
            path: program.into(),
            interp: interp.into(),
            why: why.into(),
        };
        if let Some(i) = &self.interp {
            return Err(bad(&format!(
                "it is itself dynamically linked (interpreter {i})"
            )));
        }
        if !self.pie {
            return Err(bad("it is not position independent (ET_EXEC)"));
        }
        Ok(())
    }

    /// Where [`Program::load_at`] puts the first segment page for a load `base`: the bias.
    pub fn bias_for(&self, base: u64) -> u64 {
        if self.pie {
            base.wrapping_sub(self.segments[0].vaddr & !0xfff)
        } else {
            0
        }
    }

    /// The load base Linux's binfmt_elf would choose for a PIE main program, scaled to the
    /// guest: Linux puts ET_DYN programs with an interpreter at ELF_ET_DYN_BASE, far above
    /// ET_EXEC programs' 0x400000; guest addresses are physical here, so the base is the
    /// lowest one that leaves room for a non-PIE program loaded later by a directly run
    /// loader (4 MiB, aligned to the largest segment alignment).
    pub fn default_base(&self) -> u64 {
        (4u64 << 20).next_multiple_of(self.max_align())
    }

    /// Copy the program into guest memory at its default place. `limit` is the end of memory
    /// the image may use.
    pub fn load(&self, mem: &GuestMemory, limit: u64) -> Result<LoadedImage, ElfError> {
        self.load_at(mem, self.default_base(), limit)
    }

    /// Copy the program into guest memory; an ET_DYN image starts at `base` (page aligned),
    /// an ET_EXEC one where it was linked.
    pub fn load_at(
        &self,
        mem: &GuestMemory,
        base: u64,
        limit: u64,
    ) -> Result<LoadedImage, ElfError> {
        let first = self.segments[0].vaddr & !0xfff;
        let bias = self.bias_for(base);
        let mut prev_end = 0u64;
        let mut end = 0u64;
        for s in &self.segments {
            let va = s.vaddr.wrapping_add(bias);
            if va < USER_START || va.checked_add(s.memsz).is_none_or(|e| e > limit) {
                return Err(ElfError::DoesNotFit {
                    path: self.path.clone(),
                    vaddr: va,
                    memsz: s.memsz,
                    low: USER_START,
                    high: limit,
                });
            }
            // Like the kernel's file mapping, the page holding the segment start also gets the
            // file bytes before it (e.g. the ELF header for the first segment), unless an
            // earlier segment owns them.
            let page = (va & !0xfff).max(prev_end).min(va);
            let lead = va - page;
            let file_start = s.offset.saturating_sub(lead);
            let lead = s.offset - file_start;
            let src = &self.bytes[file_start as usize..(s.offset + s.filesz) as usize];
            mem.write(va - lead, src)
                .map_err(|e| malformed(&self.path, e.to_string()))?;
            mem.zero(va + s.filesz, s.memsz - s.filesz)
                .map_err(|e| malformed(&self.path, e.to_string()))?;
            prev_end = va + s.memsz;
            end = end.max(prev_end);
        }
        Ok(LoadedImage {
            entry: self.entry.wrapping_add(bias),
            phdr: self.phoff_vaddr.wrapping_add(bias),
            phnum: self.phnum,
            phent: self.phent,
            bias,
            start: first.wrapping_add(bias),
            end: end.next_multiple_of(4096),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_elf(e_type: u16, machine: u16, with_interp: bool) -> Vec<u8> {
        // One PT_LOAD (+ optional PT_INTERP) covering the headers and a tiny body.
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little endian
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&0x400100u64.to_le_bytes()); // entry
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        let phnum: u16 = if with_interp { 2 } else { 1 };
        b[56..58].copy_from_slice(&phnum.to_le_bytes());
        let mut ph = |i: usize, ty: u32, off: u64, va: u64, sz: u64| {
            let o = 64 + i * 56;
            b[o..o + 4].copy_from_slice(&ty.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&5u32.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&va.to_le_bytes());
            b[o + 24..o + 32].copy_from_slice(&va.to_le_bytes());
            b[o + 32..o + 40].copy_from_slice(&sz.to_le_bytes());
            b[o + 40..o + 48].copy_from_slice(&(sz + 0x1000).to_le_bytes());
            b[o + 48..o + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        };
        ph(0, 1, 0, 0x400000, 0x200);
        if with_interp {
            ph(1, 3, 0x1f0, 0x4001f0, 0x10);
        }
        b[0x1f0..0x1ff].copy_from_slice(b"/lib/ld-linux.s");
        b
    }

    #[test]
    fn accepts_a_static_executable_and_loads_it() {
        let p = Program::from_bytes("t", minimal_elf(2, 62, false)).unwrap();
        assert!(!p.is_pie());
        let mem = GuestMemory::new(16 << 20, crate::memory::Backing::Lazy).unwrap();
        let img = p.load(&mem, 16 << 20).unwrap();
        assert_eq!(img.entry, 0x400100);
        assert_eq!(img.phdr, 0x400040);
        assert_eq!(img.end, 0x402000);
        assert_eq!(
            mem.read_u32(0x400000).unwrap(),
            u32::from_le_bytes(*b"\x7fELF")
        );
    }

    #[test]
    fn refuses_bad_programs_with_clear_messages() {
        let err = |b: Vec<u8>| Program::from_bytes("prog", b).unwrap_err().to_string();
        assert!(err(minimal_elf(2, 3, false)).contains("not x86-64"));
        assert!(err(minimal_elf(1, 62, false)).contains("not an executable"));
        assert!(err(b"#!/bin/sh\n".to_vec()).contains("not an ELF"));
        let mut b32 = minimal_elf(2, 62, false);
        b32[4] = 1;
        assert!(err(b32).contains("32-bit"));
        let mut trunc = minimal_elf(2, 62, false);
        trunc.truncate(0x100);
        assert!(err(trunc).contains("prog is malformed"));
    }

    #[test]
    fn dynamic_programs_name_their_interpreter_and_interpreters_are_checked() {
        let p = Program::from_bytes("prog", minimal_elf(2, 62, true)).unwrap();
        assert_eq!(p.interp(), Some("/lib/ld-linux.s"));
        // An interpreter must be ET_DYN without an interpreter of its own.
        let e = p
            .check_interpreter("main", "/lib/ld")
            .unwrap_err()
            .to_string();
        assert!(e.contains("itself dynamically linked"), "{e}");
        let exec = Program::from_bytes("i", minimal_elf(2, 62, false)).unwrap();
        let e = exec
            .check_interpreter("main", "/i")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not position independent"), "{e}");
        let dynl = Program::from_bytes("i", minimal_elf(3, 62, false)).unwrap();
        dynl.check_interpreter("main", "/i").unwrap();
        // ET_DYN images go where they are put; the ELF header lands at the base.
        let mem = GuestMemory::new(32 << 20, crate::memory::Backing::Lazy).unwrap();
        let img = dynl.load_at(&mem, 0x100_0000, 32 << 20).unwrap();
        assert_eq!(img.start, 0x100_0000);
        assert_eq!(img.entry, 0x100_0100);
        assert_eq!(img.bias, 0x100_0000 - 0x40_0000);
        assert_eq!(dynl.span(), 0x2000);
        assert!(
            dynl.load_at(&mem, 0x1000, 32 << 20).is_err(),
            "below user memory"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: mutate a valid header at every byte.
        let base = minimal_elf(2, 62, false);
        for i in 0..base.len().min(0x100) {
            for v in [0u8, 0xff, 0x7f, 1] {
                let mut b = base.clone();
                b[i] = v;
                if let Ok(p) = Program::from_bytes("f", b) {
                    let mem = GuestMemory::new(8 << 20, crate::memory::Backing::Lazy).unwrap();
                    let _ = p.load(&mem, 8 << 20);
                }
            }
        }
    }
}
