//! CPU-time accounting the guest can read without a VM exit (see `fastcall.s`): one clock
//! slot per vCPU and a few group fields, kept by the vCPU loop and read both by the guest's
//! fast system call entry and by the VMM's own getrusage/times/clock_gettime, so the two
//! always agree.
//!
//! A thread's user time is the time its vCPU spent in KVM_RUN (guest mode), its system time
//! the time the VMM spent serving its system calls, as Linux splits them on a dedicated core.
//! Times are nanoseconds of the vDSO's TSC clock. Writers use a sequence count per slot (odd
//! while updating) and one for the group (threads retiring into the exited totals).
//!
//! Slot (128 bytes): 0 seq, 8 tid (u32), 12 guest cpu (u32), 16 user ns before the current
//! guest entry, 24 entry time, 32 system ns, 40 in guest, 48 voluntary switches, 64.. the fast
//! entry's scratch. Group fields (at [`CLOCK_VARS`]): see the `F_*` offsets.

use super::mem::GuestRam;
use crate::layout::{CLOCK_SLOTS, CLOCK_SLOT_SIZE, CLOCK_VARS};

const F_FLAGS: u64 = 0;
const F_PID: u64 = 8;
const F_EXIT_USER: u64 = 16;
const F_EXIT_SYS: u64 = 24;
const F_SLOTS_END: u64 = 32;
const F_MAXRSS: u64 = 40;
const F_LO: u64 = 48;
const F_BAD_HI: u64 = 56;
const F_GSEQ: u64 = 64;
/// (highest start, start at or below which an access ends before the bad range) per size.
const F_BOUNDS: [(u64, u64); 4] = [(72, 4), (88, 16), (104, 32), (120, 144)];

/// Fast calls are on.
pub const FLAG_FAST: u64 = 1;
/// sched_yield may be answered in the guest (every thread has a core of its own).
pub const FLAG_YIELD: u64 = 2;

/// The TSC clock: the vDSO's parameters plus the host-to-guest TSC offset, so the VMM reads
/// the same clock as the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockBase {
    pub tsc_base: u64,
    pub mult: u64,
    pub mono_ns: u64,
    /// guest TSC - host TSC.
    pub offset: u64,
}

impl ClockBase {
    /// Now, in the guest's clock (nanoseconds).
    pub fn now(&self) -> u64 {
        // SAFETY: rdtsc has no preconditions on x86-64.
        let host = unsafe { std::arch::x86_64::_rdtsc() };
        self.at(host.wrapping_add(self.offset))
    }

    /// The time at guest TSC `tsc` (mirror of the NOW macro).
    pub fn at(&self, tsc: u64) -> u64 {
        let d = u128::from(tsc.wrapping_sub(self.tsc_base));
        (((d * u128::from(self.mult)) >> 32) as u64).wrapping_add(self.mono_ns)
    }
}

fn slot(i: usize) -> u64 {
    CLOCK_SLOTS + CLOCK_SLOT_SIZE * i as u64
}

fn rd(mem: &dyn GuestRam, addr: u64) -> u64 {
    match mem.system_ptr(addr, 8) {
        // SAFETY: 8 bytes inside guest memory (checked); the guest may write them too, so
        // the access is volatile and any value is acceptable.
        Ok(p) => unsafe { std::ptr::read_volatile(p.cast::<u64>()) },
        Err(_) => 0,
    }
}

fn wr(mem: &dyn GuestRam, addr: u64, v: u64) {
    if let Ok(p) = mem.system_ptr(addr, 8) {
        // SAFETY: as in `rd`.
        unsafe { std::ptr::write_volatile(p.cast::<u64>(), v) };
    }
}

fn bump(mem: &dyn GuestRam, addr: u64) {
    wr(mem, addr, rd(mem, addr).wrapping_add(1));
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// What the fast entry may accept.
pub struct Vars {
    pub flags: u64,
    pub pid: i32,
    /// User memory `[lo, hi)` and a hole in it `[bad_lo, bad_hi)` (the stack guard).
    pub lo: u64,
    pub hi: u64,
    pub bad: (u64, u64),
}

/// Write the group fields (before any vCPU runs).
pub fn init(mem: &dyn GuestRam, v: &Vars) {
    let g = CLOCK_VARS;
    wr(mem, g + F_FLAGS, v.flags);
    wr(mem, g + F_PID, v.pid as u64);
    wr(mem, g + F_EXIT_USER, 0);
    wr(mem, g + F_EXIT_SYS, 0);
    wr(mem, g + F_SLOTS_END, CLOCK_SLOTS);
    wr(mem, g + F_MAXRSS, 0);
    wr(mem, g + F_LO, v.lo);
    wr(mem, g + F_BAD_HI, v.bad.1);
    wr(mem, g + F_GSEQ, 0);
    for (off, size) in F_BOUNDS {
        wr(mem, g + off, v.hi.saturating_sub(size));
        wr(mem, g + off + 8, v.bad.0.saturating_sub(size));
    }
}

pub fn set_flag(mem: &dyn GuestRam, flag: u64, on: bool) {
    let f = rd(mem, CLOCK_VARS + F_FLAGS);
    wr(
        mem,
        CLOCK_VARS + F_FLAGS,
        if on { f | flag } else { f & !flag },
    );
}

pub fn flags(mem: &dyn GuestRam) -> u64 {
    rd(mem, CLOCK_VARS + F_FLAGS)
}

/// ru_maxrss in KiB.
pub fn set_maxrss(mem: &dyn GuestRam, kib: u64) {
    wr(mem, CLOCK_VARS + F_MAXRSS, kib);
}

pub fn maxrss(mem: &dyn GuestRam) -> u64 {
    rd(mem, CLOCK_VARS + F_MAXRSS)
}

/// vCPU `i` starts running thread `tid` on guest CPU `core`.
pub fn start(mem: &dyn GuestRam, i: usize, tid: i32, core: usize) {
    let s = slot(i);
    bump(mem, s);
    for off in [16, 24, 32, 40, 48] {
        wr(mem, s + off, 0);
    }
    wr(mem, s + 8, u64::from(tid as u32) | ((core as u64) << 32));
    bump(mem, s);
    let end = CLOCK_VARS + F_SLOTS_END;
    if rd(mem, end) < s + CLOCK_SLOT_SIZE {
        wr(mem, end, s + CLOCK_SLOT_SIZE);
    }
}

pub fn set_core(mem: &dyn GuestRam, i: usize, core: usize) {
    let s = slot(i);
    let tid = rd(mem, s + 8) & 0xffff_ffff;
    wr(mem, s + 8, tid | ((core as u64) << 32));
}

/// The thread on vCPU `i` is gone: its times join the exited totals.
pub fn retire(mem: &dyn GuestRam, i: usize) {
    let s = slot(i);
    let g = CLOCK_VARS;
    bump(mem, g + F_GSEQ);
    wr(
        mem,
        g + F_EXIT_USER,
        rd(mem, g + F_EXIT_USER) + rd(mem, s + 16),
    );
    wr(
        mem,
        g + F_EXIT_SYS,
        rd(mem, g + F_EXIT_SYS) + rd(mem, s + 32),
    );
    wr(mem, s + 8, 0);
    bump(mem, g + F_GSEQ);
}

/// vCPU `i` enters the guest at `now`.
pub fn enter(mem: &dyn GuestRam, i: usize, now: u64) {
    let s = slot(i);
    bump(mem, s);
    wr(mem, s + 24, now);
    wr(mem, s + 40, 1);
    bump(mem, s);
}

/// vCPU `i` left the guest at `now`; `sys_ns` of VMM work is charged as system time.
pub fn leave(mem: &dyn GuestRam, i: usize, now: u64) {
    let s = slot(i);
    bump(mem, s);
    let entry = rd(mem, s + 24);
    wr(mem, s + 16, rd(mem, s + 16) + now.saturating_sub(entry));
    wr(mem, s + 40, 0);
    bump(mem, s);
}

pub fn add_system(mem: &dyn GuestRam, i: usize, ns: u64, voluntary_switches: u64) {
    let s = slot(i);
    bump(mem, s);
    wr(mem, s + 32, rd(mem, s + 32) + ns);
    wr(mem, s + 48, voluntary_switches);
    bump(mem, s);
}

/// (user, system) ns of the thread on vCPU `i` at `now`.
pub fn thread(mem: &dyn GuestRam, i: usize, now: u64) -> (u64, u64) {
    let s = slot(i);
    let mut user = rd(mem, s + 16);
    if rd(mem, s + 40) != 0 {
        user += now.saturating_sub(rd(mem, s + 24));
    }
    (user, rd(mem, s + 32))
}

pub fn voluntary_switches(mem: &dyn GuestRam, i: usize) -> u64 {
    rd(mem, slot(i) + 48)
}

/// (user, system) ns of the whole group at `now`.
pub fn group(mem: &dyn GuestRam, now: u64) -> (u64, u64) {
    let g = CLOCK_VARS;
    let mut user = rd(mem, g + F_EXIT_USER);
    let mut sys = rd(mem, g + F_EXIT_SYS);
    let end = rd(mem, g + F_SLOTS_END);
    let mut s = CLOCK_SLOTS;
    while s < end {
        if rd(mem, s + 8) & 0xffff_ffff != 0 {
            let (u, y) = thread(mem, ((s - CLOCK_SLOTS) / CLOCK_SLOT_SIZE) as usize, now);
            user += u;
            sys += y;
        }
        s += CLOCK_SLOT_SIZE;
    }
    (user, sys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::mem::VecMemory;

    #[test]
    fn threads_accumulate_and_retire_into_the_group() {
        let mem = VecMemory::new(4 << 20, 2 << 20);
        init(
            &mem,
            &Vars {
                flags: FLAG_FAST,
                pid: 1000,
                lo: 2 << 20,
                hi: 4 << 20,
                bad: (0, 0),
            },
        );
        start(&mem, 0, 1000, 0);
        start(&mem, 1, 1001, 1);
        enter(&mem, 0, 100);
        leave(&mem, 0, 350);
        add_system(&mem, 0, 40, 2);
        enter(&mem, 0, 400);
        enter(&mem, 1, 0);
        assert_eq!(thread(&mem, 0, 500), (350, 40));
        assert_eq!(group(&mem, 500), (850, 40));
        leave(&mem, 1, 600);
        retire(&mem, 1);
        assert_eq!(group(&mem, 500), (350 + 600, 40));
        assert_eq!(voluntary_switches(&mem, 0), 2);
        // Odd sequence counts never remain.
        assert_eq!(rd(&mem, CLOCK_SLOTS) % 2, 0);
        assert_eq!(rd(&mem, CLOCK_VARS + F_GSEQ) % 2, 0);
    }
}
