//! vCPU setup (64-bit user mode on the VMM's GDT/IDT/TSS and page tables) and the vCPU run
//! loop: one host thread per vCPU, pinned before the guest's first instruction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::Instant;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_xcrs, CpuId, Msrs};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};

use crate::kernel::clocks;
use crate::kernel::signals::{self as ksig, frame, Dequeued, SigInfo, SignalHost};
use crate::kernel::task::Task;
use crate::kernel::Kernel;
use crate::layout::{self, *};
use crate::memory::GuestMemory;
use crate::stats::{ExitReport, FaultReport, KvmStatsFile, VcpuStats};
use crate::syscall::threads::NewThread;
use crate::syscall::{self, Args, Ctx, Frame, SysOutcome};

/// Failure to set up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM refused to {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("too many vCPUs: the HPC VMM supports at most {MAX_VCPUS}")]
    TooMany,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { what, source }
}

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_TSC_AUX: u32 = 0xc000_0103;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// RFLAGS bits user code may keep across a system call (no IOPL, VM, RF, IF changes).
const USER_RFLAGS: u64 = 0x24_0dd5; // CF PF AF ZF SF TF DF OF AC ID

/// The RFLAGS a user thread runs with, from the value the guest had (R11 at `syscall`):
/// used both when resuming after a system call and when starting a cloned thread.
pub fn user_rflags(guest: u64) -> u64 {
    (guest & USER_RFLAGS) | 0x2
}

/// The signal used to kick vCPU threads out of KVM_RUN and blocking host calls.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the (empty, non-restarting) kick handler once per host process.
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .expect("cannot install the vCPU kick signal handler");
    });
}

fn seg(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

pub fn user_cs() -> kvm_segment {
    seg(USER_CS, true, 3)
}

pub fn user_ds() -> kvm_segment {
    seg(USER_DS, false, 3)
}

/// Host features the guest was set up with.
#[derive(Clone, Copy, Debug)]
pub struct CpuFeatures {
    pub xsave: bool,
    pub fsgsbase: bool,
    pub hwcap: u64,
}

pub fn cpu_features(cpuid: &kvm_bindings::CpuId) -> CpuFeatures {
    let leaf = |f: u32, i: u32| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == f && (e.index == i || e.flags & 1 == 0))
            .copied()
    };
    let l1 = leaf(1, 0);
    let l7 = leaf(7, 0);
    CpuFeatures {
        xsave: l1.is_some_and(|e| e.ecx & (1 << 26) != 0),
        fsgsbase: l7.is_some_and(|e| e.ebx & 1 != 0),
        hwcap: l1.map(|e| u64::from(e.edx)).unwrap_or(0),
    }
}

/// Put a vCPU into 64-bit user mode, with its own TSS and CPUID identity. `fresh` is false
/// for a parked vCPU being reused: it keeps its CPUID (KVM refuses to change CPUID once a
/// vCPU has run).
pub fn configure(m: &Machine, vcpu: &VcpuFd, index: usize, fresh: bool) -> Result<(), VcpuError> {
    if index >= MAX_VCPUS {
        return Err(VcpuError::TooMany);
    }
    let feat = cpu_features(&m.cpuid);
    if fresh {
        let mut cpuid = m.cpuid.clone();
        for e in cpuid.as_mut_slice() {
            match e.function {
                1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((index as u32) << 24),
                0xb | 0x1f => e.edx = index as u32,
                _ => {}
            }
        }
        vcpu.set_cpuid2(&cpuid)
            .map_err(kvm_err("set the vCPU's CPUID"))?;
    }

    let msrs = Msrs::from_entries(&[
        kvm_msr_entry {
            index: MSR_STAR,
            data: (u64::from(KERNEL_DS) << 48) | (u64::from(KERNEL_CS) << 32),
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_LSTAR,
            data: crate::fastcall::ENTRY,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_CSTAR,
            data: crate::fastcall::ENTRY,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_SYSCALL_MASK,
            data: 0x4_7700, // TF DF IF IOPL AC NT, like Linux
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_KERNEL_GS_BASE,
            data: 0,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_TSC_AUX,
            data: index as u64,
            ..Default::default()
        },
    ])
    .expect("static MSR list fits");
    vcpu.set_msrs(&msrs)
        .map_err(kvm_err("set the syscall MSRs"))?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(kvm_err("read the initial sregs"))?;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = m.pml4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    if feat.xsave {
        sregs.cr4 |= CR4_OSXSAVE;
    }
    if feat.fsgsbase {
        sregs.cr4 |= CR4_FSGSBASE;
    }
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = layout::gdt_limit();
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cs = user_cs();
    sregs.ss = user_ds();
    sregs.ds = user_ds();
    sregs.es = user_ds();
    sregs.fs = user_ds();
    sregs.gs = user_ds();
    sregs.fs.selector = 0;
    sregs.gs.selector = 0;
    sregs.tr = kvm_segment {
        base: tss_addr(index),
        limit: TSS_LIMIT as u32,
        selector: tss_selector(index),
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        type_: 2,
        ..Default::default()
    };
    vcpu.set_sregs(&sregs)
        .map_err(kvm_err("enter 64-bit mode (set sregs)"))?;

    if feat.xsave {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = m.xcr0;
        vcpu.set_xcrs(&xcrs).map_err(kvm_err("set XCR0"))?;
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("initialise the FPU"))?;
    Ok(())
}

/// Set the first registers of a vCPU and the FS/GS bases.
pub fn set_entry(
    vcpu: &VcpuFd,
    regs: &kvm_regs,
    fs_base: u64,
    gs_base: u64,
) -> Result<(), VcpuError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("read sregs"))?;
    sregs.fs.base = fs_base;
    sregs.gs.base = gs_base;
    vcpu.set_sregs(&sregs).map_err(kvm_err("set FS/GS base"))?;
    vcpu.set_regs(regs)
        .map_err(kvm_err("set the entry registers"))?;
    Ok(())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGALRM => "SIGALRM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// A fault report for a fatal signal the guest raised itself (abort(), raise()).
pub fn signal_report(sig: i32, tid: i32, vcpu: usize, rip: u64) -> FaultReport {
    FaultReport {
        signal: sig,
        signal_name: signal_name(sig).to_string(),
        what: format!("the program raised {}", signal_name(sig)),
        tid,
        vcpu,
        rip,
        addr: None,
        error_code: None,
    }
}

fn exception_report(
    vector: u8,
    err: Option<u64>,
    cr2: u64,
    rip: u64,
    tid: i32,
    vcpu: usize,
) -> FaultReport {
    let (sig, what) = match vector {
        0 => (libc::SIGFPE, "divide error (#DE)".to_string()),
        1 => (libc::SIGTRAP, "debug exception (#DB)".to_string()),
        3 => (libc::SIGTRAP, "breakpoint (#BP, int3)".to_string()),
        4 => (libc::SIGSEGV, "overflow (#OF)".to_string()),
        5 => (libc::SIGSEGV, "bound range exceeded (#BR)".to_string()),
        6 => (libc::SIGILL, "invalid opcode (#UD)".to_string()),
        7 => (libc::SIGFPE, "device not available (#NM)".to_string()),
        8 => (libc::SIGSEGV, "double fault (#DF)".to_string()),
        12 => (libc::SIGBUS, "stack-segment fault (#SS)".to_string()),
        13 => (libc::SIGSEGV, "general protection fault (#GP)".to_string()),
        14 => {
            let e = err.unwrap_or(0);
            let access = if e & 16 != 0 {
                "executing"
            } else if e & 2 != 0 {
                "writing"
            } else {
                "reading"
            };
            let kind = if e & 1 != 0 {
                "a protected page"
            } else {
                "an unmapped address"
            };
            (libc::SIGSEGV, format!("page fault (#PF) {access} {kind}"))
        }
        16 => (
            libc::SIGFPE,
            "x87 floating-point exception (#MF)".to_string(),
        ),
        17 => (libc::SIGBUS, "alignment check (#AC)".to_string()),
        18 => (libc::SIGBUS, "machine check (#MC)".to_string()),
        19 => (
            libc::SIGFPE,
            "SIMD floating-point exception (#XM)".to_string(),
        ),
        v => (libc::SIGSEGV, format!("exception vector {v}")),
    };
    FaultReport {
        signal: sig,
        signal_name: signal_name(sig).to_string(),
        what,
        tid,
        vcpu,
        rip,
        addr: (vector == 14).then_some(cr2),
        error_code: err,
    }
}

/// A per-vCPU-thread hook, run first on every vCPU thread before its guest code runs (where a
/// seccomp filter is installed). Gets the vCPU index; an error ends the run.
pub type ThreadStartHook = Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync>;

/// What a finished vCPU thread reports.
pub struct Finished {
    pub stats: VcpuStats,
}

/// The vCPU layer's view of a run: KVM handles, the host side of each vCPU thread and the run
/// statistics, around the [`Kernel`] the guest's system calls act on.
pub struct Machine {
    pub kernel: Kernel,
    /// Keeps /dev/kvm open as long as the VM.
    _kvm: Kvm,
    vm: VmFd,
    cpuid: CpuId,
    xcr0: u64,
    pml4: u64,
    /// The guest memory KVM maps (the kernel's `mem` is the same memory, seen as `GuestRam`).
    pub mem: Arc<GuestMemory>,
    /// Host CPUs the run owns; vCPU i runs on cpus[i % len].
    cpus: Vec<usize>,
    /// Whether vCPUs are pinned one per core (else they float over `cpus`).
    pin_vcpus: bool,
    pool: Mutex<VcpuPool>,
    outcome: Mutex<Option<ExitReport>>,
    /// KVM's vCPU statistics accumulated before the program's first instruction.
    launch_kvm: Mutex<BTreeMap<String, u64>>,
    /// ENOSYS answers by system call number.
    enosys: Mutex<BTreeMap<u64, u64>>,
    done_tx: Mutex<mpsc::Sender<Finished>>,
    thread_start: Option<ThreadStartHook>,
    hook_failed: AtomicBool,
    /// Wakes the signal pump (an eventfd; see `pump.rs`).
    pub(crate) pump_wake: std::os::fd::OwnedFd,
    /// A second range the launch stub prefaults (the stack, above the unmapped guard).
    second_prefault: Mutex<Option<(u64, u64)>>,
    /// Per-vCPU live counters ([`crate::live`]), read by the publisher while the guest runs.
    pub live: Arc<crate::live::LiveBoard>,
}

/// Host-side bookkeeping of the vCPU threads.
#[derive(Default)]
struct VcpuPool {
    next_vcpu: usize,
    /// Host thread ids of running vCPU threads (to kick them out of KVM_RUN).
    host_tids: BTreeMap<usize, i32>,
    /// Guest tid -> (host tid, vCPU index) of running vCPU threads (signal kicks).
    by_guest_tid: BTreeMap<i32, (i32, usize)>,
    /// vCPU threads started (each reports once through the done channel).
    started: usize,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// vCPUs of exited threads, kept for reuse by later clones (KVM never frees a vCPU id).
    parked: Vec<(usize, VcpuFd)>,
}

/// What [`Machine::new`] is built from.
pub struct MachineParts {
    pub kernel: Kernel,
    pub kvm: Kvm,
    pub vm: VmFd,
    pub cpuid: CpuId,
    pub xcr0: u64,
    pub pml4: u64,
    pub mem: Arc<GuestMemory>,
    pub cpus: Vec<usize>,
    pub pin_vcpus: bool,
    pub thread_start: Option<ThreadStartHook>,
}

impl Machine {
    /// The machine and the receiving end of its "vCPU thread finished" channel.
    pub fn new(p: MachineParts) -> (Arc<Self>, mpsc::Receiver<Finished>) {
        let (tx, rx) = mpsc::channel();
        // SAFETY: eventfd has no pointer arguments; returns a new fd or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(efd >= 0, "cannot create the signal pump's eventfd");
        // SAFETY: a fresh fd we own.
        let pump_wake =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
        let m = Machine {
            kernel: p.kernel,
            _kvm: p.kvm,
            vm: p.vm,
            cpuid: p.cpuid,
            xcr0: p.xcr0,
            pml4: p.pml4,
            mem: p.mem,
            cpus: p.cpus,
            pin_vcpus: p.pin_vcpus,
            pool: Mutex::new(VcpuPool {
                next_vcpu: 1,
                ..Default::default()
            }),
            outcome: Mutex::new(None),
            launch_kvm: Mutex::new(BTreeMap::new()),
            enosys: Mutex::new(BTreeMap::new()),
            done_tx: Mutex::new(tx),
            thread_start: p.thread_start,
            hook_failed: AtomicBool::new(false),
            pump_wake,
            second_prefault: Mutex::new(None),
            live: Arc::new(crate::live::LiveBoard::default()),
        };
        let m = Arc::new(m);
        let host: std::sync::Weak<dyn SignalHost> = Arc::downgrade(&m) as std::sync::Weak<Machine>;
        m.kernel.group.signals.set_host(host);
        (m, rx)
    }

    /// Have the launch stub prefault `[lo, hi)` too, after its first range.
    pub fn set_second_prefault(&self, lo: u64, hi: u64) {
        *self.second_prefault.lock().unwrap() = Some((lo, hi));
    }

    /// Wake the signal pump (a signal is pending somewhere, the timers changed, the run ends).
    pub(crate) fn wake_pump(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&self.pump_wake),
                one.as_ptr().cast(),
                8,
            )
        };
    }

    /// Kick the host thread of guest thread `tid` out of KVM_RUN / a blocking host call.
    pub(crate) fn kick_guest_thread(&self, tid: i32) {
        let host = self
            .pool
            .lock()
            .unwrap()
            .by_guest_tid
            .get(&tid)
            .map(|t| t.0);
        if let Some(h) = host {
            let _ = crate::sys::tgkill_self(h, kick_signal());
        }
    }

    /// sched_yield is answered in the guest while every guest thread has a core of its own.
    pub(crate) fn update_yield_flag(&self) {
        let live = self.kernel.group.threads.lock().unwrap().live() as usize;
        let alone = self.pin_vcpus && live <= self.cpus.len();
        clocks::set_flag(&*self.mem, clocks::FLAG_YIELD, alone);
    }

    fn vcpu_of(&self, tid: i32) -> usize {
        self.pool
            .lock()
            .unwrap()
            .by_guest_tid
            .get(&tid)
            .map(|t| t.1)
            .unwrap_or(0)
    }

    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// Record how the run ends (the first report wins) and start tearing down.
    pub fn finish(&self, report: ExitReport) {
        {
            let mut o = self.outcome.lock().unwrap();
            if o.is_none() {
                *o = Some(report);
            }
        }
        self.kernel.run.end();
        self.wake_pump();
    }

    /// End the run and make every vCPU thread notice.
    pub fn finish_all(&self, report: ExitReport) {
        self.finish(report);
        self.kick_all();
    }

    pub fn outcome(&self) -> Option<ExitReport> {
        self.outcome.lock().unwrap().clone()
    }

    pub fn launch_kvm(&self) -> BTreeMap<String, u64> {
        self.launch_kvm.lock().unwrap().clone()
    }

    pub fn enosys(&self) -> BTreeMap<u64, u64> {
        self.enosys.lock().unwrap().clone()
    }

    /// vCPU threads started so far.
    pub fn started_threads(&self) -> usize {
        self.pool.lock().unwrap().started
    }

    /// Join handles of the vCPU threads (taken; joined by the caller at teardown).
    pub fn take_handles(&self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut self.pool.lock().unwrap().handles)
    }

    /// Host CPUs a thread pinned to guest CPU `core` runs on (all of the run's CPUs when
    /// vCPUs are not pinned).
    pub fn host_cpus_for(&self, core: usize) -> Vec<usize> {
        if !self.pin_vcpus {
            return self.cpus.clone();
        }
        vec![self.cpus[core % self.cpus.len()]]
    }

    /// The guest CPU a new thread on vCPU `index` is pinned to: the next core of its
    /// inherited affinity mask.
    fn core_for(&self, index: usize, mask: &[usize]) -> usize {
        if mask.is_empty() {
            return index % self.cpus.len();
        }
        mask[index % mask.len()]
    }

    /// Ask every running vCPU thread to leave KVM_RUN (and any blocking host call) now.
    pub fn kick_all(&self) {
        let tids: Vec<i32> = self
            .pool
            .lock()
            .unwrap()
            .host_tids
            .values()
            .copied()
            .collect();
        for t in tids {
            let _ = crate::sys::tgkill_self(t, kick_signal());
        }
        self.kernel.group.futexes.wake_everyone();
    }

    /// Start a vCPU thread running `task` on `vcpu` (index `index`, already configured and
    /// with its entry registers set).
    pub fn spawn(self: &Arc<Self>, index: usize, vcpu: VcpuFd, task: Task) -> std::io::Result<()> {
        let m = self.clone();
        let mut stats = VcpuStats::new(index, task.tid, self.host_cpus_for(task.core));
        stats.live = self.live.slot(index);
        self.kernel.group.signals.add_task(task.sig.clone());
        let mut pool = self.pool.lock().unwrap();
        let h = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let t = VcpuThread {
                    index,
                    fd: vcpu,
                    task,
                    stats,
                    restart: None,
                };
                t.run(&m);
            })?;
        pool.started += 1;
        pool.handles.push(h);
        Ok(())
    }

    /// Create (or reuse) a vCPU for a thread the guest cloned and start it. Returns its tid,
    /// or the errno clone fails with.
    fn start_clone(self: &Arc<Self>, mut new: NewThread) -> Result<u64, i32> {
        let tg = &self.kernel.group;
        let fail = |e: i32, new: &NewThread| {
            new.cancel(tg);
            Err(e)
        };
        let (index, parked) = {
            let mut pool = self.pool.lock().unwrap();
            match pool.parked.pop() {
                Some((i, fd)) => (i, Some(fd)),
                None => {
                    if pool.next_vcpu >= MAX_VCPUS {
                        drop(pool);
                        return fail(libc::EAGAIN, &new);
                    }
                    pool.next_vcpu += 1;
                    (pool.next_vcpu - 1, None)
                }
            }
        };
        let fresh = parked.is_none();
        let vcpu = match parked {
            Some(v) => v,
            None => match self.vm.create_vcpu(index as u64) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("clone: cannot create vCPU {index}: {e}");
                    return fail(libc::EAGAIN, &new);
                }
            },
        };
        let set_up = configure(self, &vcpu, index, fresh).and_then(|()| {
            let mut regs = new.regs;
            regs.rflags = user_rflags(regs.rflags);
            set_entry(&vcpu, &regs, new.fs_base, new.gs_base)
        });
        if let Err(e) = set_up {
            tracing::warn!("clone: cannot set up vCPU {index}: {e}");
            return fail(libc::EAGAIN, &new);
        }
        if new.publish_tid(&*tg.mem).is_err() {
            return fail(libc::EFAULT, &new);
        }
        new.task.core = self.core_for(index, &new.task.affinity);
        new.task.vcpu = index;
        let tid = new.task.tid;
        match self.spawn(index, vcpu, new.task.clone()) {
            Ok(()) => Ok(tid as u64),
            Err(_) => fail(libc::EAGAIN, &new),
        }
    }
}

impl SignalHost for Machine {
    fn kick(&self, tid: i32) {
        self.kick_guest_thread(tid);
        self.kernel.run.nudge();
        self.kernel.group.futexes.wake_everyone();
        self.wake_pump();
    }

    fn terminate(&self, sig: i32, tid: i32) {
        let mut r = signal_report(sig, tid, self.vcpu_of(tid), 0);
        r.what = format!("killed by {}", signal_name(sig));
        self.finish_all(ExitReport::Faulted(r));
    }

    fn timers_changed(&self) {
        self.wake_pump();
    }

    fn wake_sleepers(&self) {
        self.kernel.run.nudge();
    }
}

/// Size of the guest's XSAVE image (standard format) for `xcr0`, from CPUID leaf 0xD.
pub fn xstate_size(cpuid: &CpuId, xcr0: u64) -> usize {
    let mut size = 576;
    for e in cpuid.as_slice() {
        if e.function == 0xd && (2..63).contains(&e.index) && xcr0 & (1 << e.index) != 0 {
            size = size.max((e.ebx + e.eax) as usize);
        }
    }
    size.min(4096)
}

fn xsave_bytes(x: &kvm_bindings::kvm_xsave) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn xsave_from(img: &[u8]) -> kvm_bindings::kvm_xsave {
    let mut x = kvm_bindings::kvm_xsave::default();
    for (i, c) in img.chunks(4).take(1024).enumerate() {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        x.region[i] = u32::from_le_bytes(w);
    }
    x
}

/// The FPU a handler starts with (Linux's init state): FCW 0x37f, MXCSR 0x1f80, x87 and SSE
/// registers zero, every extended state in its init configuration.
fn init_fpu_image(xsave: bool) -> Vec<u8> {
    let mut img = vec![0u8; 4096];
    img[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    if xsave {
        img[512..520].copy_from_slice(&3u64.to_le_bytes());
    }
    img
}

/// The signal and si_code a guest exception raises (Linux's trap handlers), with si_addr.
fn fault_siginfo(vector: u8, err: Option<u64>, cr2: u64, rip: u64) -> Option<SigInfo> {
    let (sig, code, addr) = match vector {
        0 => (libc::SIGFPE, 1, rip),    // FPE_INTDIV
        1 | 3 => (libc::SIGTRAP, 1, 0), // TRAP_BRKPT
        4 | 5 | 13 => (libc::SIGSEGV, ksig::SI_KERNEL, 0),
        6 => (libc::SIGILL, 2, rip), // ILL_ILLOPN
        12 => (libc::SIGBUS, ksig::SI_KERNEL, 0),
        14 => {
            let code = if err.unwrap_or(0) & 1 != 0 { 2 } else { 1 }; // SEGV_ACCERR / MAPERR
            (libc::SIGSEGV, code, cr2)
        }
        16 | 19 => (libc::SIGFPE, 7, rip), // FPE_FLTINV
        17 => (libc::SIGBUS, 1, cr2),      // BUS_ADRALN
        _ => return None,
    };
    Some(SigInfo::fault(sig, code, addr))
}

/// A system call whose result may mean "restart": what the delivery point needs to redo it.
#[derive(Clone, Copy, Debug)]
struct Restart {
    nr: u64,
    ret: i64,
    /// Address of the `syscall` instruction.
    call_rip: u64,
}

/// Exception state a fault frame carries.
#[derive(Clone, Copy, Debug, Default)]
struct Trap {
    trapno: u64,
    err: u64,
    cr2: u64,
}

/// Why KVM_RUN returned, decoded once.
#[derive(Debug)]
enum VmExit {
    /// The launch stub finished prefaulting: the program starts now.
    Launch,
    /// The syscall stub's `out`: serve a system call.
    Syscall,
    /// An exception stub's `out`: the guest faulted with this vector.
    Exception(u8),
    /// Port I/O anywhere else (user code executing `in`/`out`).
    StrayPortIo(u16),
    Halt,
    Shutdown,
    InternalError,
    /// Access to guest physical memory with no backing.
    Mmio(u64),
    FailEntry {
        reason: u64,
        cpu: u32,
    },
    /// A signal (the kick) interrupted KVM_RUN.
    Interrupted,
    Unexpected(String),
    RunFailed(kvm_ioctls::Error),
}

impl VmExit {
    /// The key this exit is counted under in the statistics.
    fn stat_name(&self) -> &'static str {
        match self {
            VmExit::Launch => "launch",
            VmExit::Syscall => "syscall",
            VmExit::Exception(_) => "exception",
            VmExit::StrayPortIo(_) => "io_other",
            VmExit::Halt => "hlt",
            VmExit::Shutdown => "shutdown",
            VmExit::InternalError => "internal_error",
            VmExit::Mmio(_) => "mmio",
            VmExit::Interrupted => "interrupted",
            VmExit::FailEntry { .. } | VmExit::Unexpected(_) | VmExit::RunFailed(_) => "fatal",
        }
    }
}

/// What the loop does after an exit.
enum Next {
    Resume,
    /// The thread is done; park its vCPU for reuse by a later clone.
    Park,
    /// The run is ending.
    Stop,
}

/// One guest thread on its vCPU and host thread.
struct VcpuThread {
    index: usize,
    fd: VcpuFd,
    task: Task,
    stats: VcpuStats,
    /// The last system call, if its result asks for a restart (ERESTART*).
    restart: Option<Restart>,
}

impl VcpuThread {
    /// Run until the thread exits or the run ends, then report.
    fn run(mut self, m: &Arc<Machine>) {
        let parked = self.start(m) && self.run_loop(m);
        self.report(m, parked);
    }

    /// The per-thread start: kick handler, hook, pinning, registration. False if the thread
    /// must not run.
    fn start(&mut self, m: &Arc<Machine>) -> bool {
        install_kick_handler();
        {
            let mut pool = m.pool.lock().unwrap();
            let host = crate::sys::gettid();
            pool.host_tids.insert(self.index, host);
            pool.by_guest_tid.insert(self.task.tid, (host, self.index));
        }
        clocks::start(&*m.mem, self.index, self.task.tid, self.task.core);
        m.update_yield_flag();
        if let Some(hook) = &m.thread_start {
            if let Err(e) = hook(self.index) {
                if !m.hook_failed.swap(true, Ordering::AcqRel) {
                    m.finish_all(ExitReport::VmmError {
                        message: format!("vCPU {} thread start hook failed: {e}", self.index),
                    });
                }
                return false;
            }
        }
        let host_cpus = m.host_cpus_for(self.task.core);
        if let Err(e) = crate::sys::set_current_thread_affinity(&host_cpus) {
            m.finish(ExitReport::VmmError {
                message: format!(
                    "cannot pin vCPU {} to host CPUs {host_cpus:?}: {e}",
                    self.index
                ),
            });
        }
        self.stats.host_cpus = host_cpus;
        self.fd.set_sync_valid_reg(SyncReg::Register);
        self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
        true
    }

    /// KVM_RUN until the thread is done. True if the vCPU should be parked for reuse.
    fn run_loop(&mut self, m: &Arc<Machine>) -> bool {
        let stats_file = KvmStatsFile::open(&self.fd);
        if let Some(l) = &self.stats.live {
            l.attach_kvm(|| KvmStatsFile::open(&self.fd));
        }
        let mut before = stats_file.as_ref().map(|f| f.read()).unwrap_or_default();
        let mut parked = false;
        while !m.kernel.run.ending() {
            // Signals, where Linux takes them: on the way back to user mode. Nothing pending
            // costs two atomic loads.
            if self.restart.is_some()
                || self.task.saved_sigmask.is_some()
                || m.kernel.group.signals.deliverable(&self.task.sig)
            {
                match self.signal_work(m, None) {
                    Next::Resume => {}
                    _ => break,
                }
            }
            let clock = m.kernel.run.clock();
            if let Some(c) = &clock {
                clocks::enter(&*m.mem, self.index, c.now());
            }
            let t0 = Instant::now();
            let exit = self.enter();
            let t1 = Instant::now();
            if let Some(c) = &clock {
                clocks::leave(&*m.mem, self.index, c.now());
            }
            self.stats.guest_time_s += (t1 - t0).as_secs_f64();
            self.stats.exit(exit.stat_name());
            if let VmExit::Launch = exit {
                if let Some((lo, hi)) = m.second_prefault.lock().unwrap().take() {
                    // Back into the prefault loop for the range above the stack guard.
                    let s = self.fd.sync_regs_mut();
                    s.regs.rip = LAUNCH_PREFAULT_LOOP;
                    s.regs.rdi = lo;
                    s.regs.rsi = hi;
                    self.fd.set_sync_dirty_reg(SyncReg::Register);
                    continue;
                }
                // The program starts now: what KVM counted so far belongs to launch.
                if let Some(f) = &stats_file {
                    let now = f.read();
                    *m.launch_kvm.lock().unwrap() = crate::stats::delta(&before, &now);
                    before = now;
                }
                if let Some(l) = &self.stats.live {
                    l.mark_launch();
                }
                m.kernel.run.mark_started();
                self.stats.guest_time_s = 0.0;
                continue;
            }
            let is_syscall = matches!(exit, VmExit::Syscall);
            let next = self.handle(m, exit);
            if is_syscall {
                let served = t1.elapsed();
                self.stats.vmm_time_s += served.as_secs_f64();
                clocks::add_system(
                    &*m.mem,
                    self.index,
                    served.as_nanos() as u64,
                    self.task.counters.futex_waits,
                );
            }
            match next {
                Next::Resume => {}
                Next::Stop => break,
                Next::Park => {
                    parked = true;
                    break;
                }
            }
        }
        if let Some(f) = &stats_file {
            self.stats.kvm = crate::stats::delta(&before, &f.read());
        }
        parked
    }

    /// One KVM_RUN, decoded.
    fn enter(&mut self) -> VmExit {
        let index = self.index;
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoOut(port, _)) | Ok(VcpuExit::IoIn(port, _)) => Err(port),
            Ok(VcpuExit::Hlt) => Ok(VmExit::Halt),
            Ok(VcpuExit::Shutdown) => Ok(VmExit::Shutdown),
            Ok(VcpuExit::InternalError) => Ok(VmExit::InternalError),
            Ok(VcpuExit::MmioRead(a, _)) | Ok(VcpuExit::MmioWrite(a, _)) => Ok(VmExit::Mmio(a)),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Ok(VmExit::FailEntry { reason, cpu }),
            Ok(VcpuExit::Intr) => Ok(VmExit::Interrupted),
            Ok(other) => Ok(VmExit::Unexpected(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VmExit::Interrupted)
            }
            Err(e) => Ok(VmExit::RunFailed(e)),
        };
        match exit {
            Ok(e) => e,
            Err(port) => {
                let rip = self.fd.sync_regs_mut().regs.rip;
                if port == LAUNCH_PORT && rip == LAUNCH_EXIT_RIP && index == 0 {
                    VmExit::Launch
                } else if port == SYSCALL_PORT && rip == SYSCALL_EXIT_RIP {
                    VmExit::Syscall
                } else if let (EXCEPTION_PORT, Some(v)) = (port, layout::exception_vector(rip)) {
                    VmExit::Exception(v)
                } else {
                    VmExit::StrayPortIo(port)
                }
            }
        }
    }

    /// Handle one exit.
    fn handle(&mut self, m: &Arc<Machine>, exit: VmExit) -> Next {
        let (tid, index) = (self.task.tid, self.index);
        let fault = |rip: u64, signal: i32, what: String| {
            let mut r = exception_report(13, None, 0, rip, tid, index);
            if signal == libc::SIGBUS {
                r.signal = libc::SIGBUS;
                r.signal_name = "SIGBUS".into();
            }
            r.what = what;
            ExitReport::Faulted(r)
        };
        let report = match exit {
            VmExit::Launch | VmExit::Interrupted => return Next::Resume,
            VmExit::Syscall => return self.serve_syscall(m),
            VmExit::Exception(vector) => {
                let s = self.fd.sync_regs();
                let mem = &m.mem;
                let sp = s.regs.rsp;
                let (err, frame) = if layout::has_error_code(vector) {
                    (mem.system_read_u64(sp).ok(), sp + 8)
                } else {
                    (None, sp)
                };
                let fault_rip = mem.system_read_u64(frame).unwrap_or(0);
                let fast = crate::fastcall::ENTRY
                    ..crate::fastcall::ENTRY + crate::fastcall::CODE.len() as u64;
                if vector == 6 && fast.contains(&fault_rip) {
                    return self.fast_entry_unusable(m, frame);
                }
                if let Some(next) = self.fault_to_handler(m, vector, err, s.sregs.cr2, frame) {
                    return next;
                }
                ExitReport::Faulted(exception_report(
                    vector,
                    err,
                    s.sregs.cr2,
                    fault_rip,
                    tid,
                    index,
                ))
            }
            VmExit::StrayPortIo(port) => {
                // User code executing port I/O: a #GP on real hardware (IOPL is 0).
                let rip = self.fd.sync_regs_mut().regs.rip;
                let mut r = exception_report(13, Some(0), 0, rip.wrapping_sub(2), tid, index);
                r.what = format!("port I/O from user mode (port {port:#x})");
                ExitReport::Faulted(r)
            }
            VmExit::Halt => fault(self.rip(), libc::SIGSEGV, "hlt".into()),
            VmExit::Shutdown => fault(self.rip(), libc::SIGSEGV, "triple fault (shutdown)".into()),
            VmExit::InternalError => fault(
                self.rip(),
                libc::SIGSEGV,
                "KVM internal error (instruction emulation failed)".into(),
            ),
            VmExit::Mmio(a) => fault(
                self.rip(),
                libc::SIGBUS,
                format!("access to unbacked guest physical address {a:#x}"),
            ),
            VmExit::FailEntry { reason, cpu } => ExitReport::VmmError {
                message: format!("VM entry failed (hardware reason {reason:#x} on cpu {cpu})"),
            },
            VmExit::Unexpected(what) => ExitReport::VmmError {
                message: format!("unexpected VM exit {what}"),
            },
            VmExit::RunFailed(e) => ExitReport::VmmError {
                message: format!("KVM_RUN failed: {e}"),
            },
        };
        m.finish_all(report);
        Next::Stop
    }

    fn rip(&mut self) -> u64 {
        self.fd.sync_regs_mut().regs.rip
    }

    /// Serve one system call and set up the return to the guest.
    fn serve_syscall(&mut self, m: &Arc<Machine>) -> Next {
        // Borrow the registers in kvm_run in place: sync_regs() would copy the whole 2 KiB block.
        let s = self.fd.sync_regs_mut();
        let r = s.regs;
        let frame = Frame {
            rip: r.rcx,
            rflags: r.r11,
            rsp: r.rsp,
            fs_base: s.sregs.fs.base,
            gs_base: s.sregs.gs.base,
            regs: r,
        };
        let kernel_mode = s.sregs.cs.dpl != 3;
        let nr = r.rax;
        let args = Args::new([r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]);
        let t = Instant::now();
        let k = &m.kernel;
        let mut ctx = Ctx::new(&k.run, &k.group, &mut self.task, &frame);
        let outcome = syscall::dispatch(&mut ctx, nr, &args);
        let fx = std::mem::take(&mut ctx.fx);
        if ctx.unsupported {
            *m.enosys.lock().unwrap().entry(nr).or_default() += 1;
        }
        let mut sigreturn = None;
        let ret = match outcome {
            SysOutcome::Return(v) => Some(v),
            SysOutcome::Sigreturn(r) => {
                sigreturn = Some(r);
                Some(0)
            }
            SysOutcome::ForceSigsegv => {
                self.stats.syscall(nr, t.elapsed().as_secs_f64());
                return self.force_sigsegv(m, frame.rip);
            }
            SysOutcome::Clone(new) => Some(match m.start_clone(*new) {
                Ok(tid) => tid,
                Err(e) => (-(e as i64)) as u64,
            }),
            SysOutcome::ExitThread => None,
            SysOutcome::ExitGroup(status) => {
                m.finish_all(ExitReport::Exited { status });
                None
            }
            SysOutcome::Deliver(sig) => {
                let r = signal_report(sig, self.task.tid, self.index, frame.rip);
                m.finish_all(ExitReport::Faulted(r));
                None
            }
        };
        self.stats.syscall(nr, t.elapsed().as_secs_f64());
        if k.run.ending() {
            return Next::Stop;
        }
        let Some(ret) = ret else {
            return Next::Park;
        };
        if let Some(core) = fx.repin {
            let host = m.host_cpus_for(core);
            if crate::sys::set_current_thread_affinity(&host).is_ok() {
                self.stats.host_cpus = host;
            }
            clocks::set_core(&*m.mem, self.index, self.task.core);
        }
        if matches!(nr, 9 | 11 | 12 | 25) {
            // mmap, munmap, brk, mremap: ru_maxrss follows the peak of mapped memory.
            let peak = k.group.mm.lock().unwrap().peak_bytes();
            clocks::set_maxrss(&*m.mem, peak / 1024);
        }
        if let Some(r) = sigreturn {
            return self.apply_sigreturn(m, &r, kernel_mode, frame.rip);
        }
        let sret = ret as i64;
        if [
            ksig::ERESTARTSYS,
            ksig::ERESTARTNOINTR,
            ksig::ERESTARTNOHAND,
        ]
        .iter()
        .any(|&e| sret == -(e as i64))
        {
            self.restart = Some(Restart {
                nr,
                ret: sret,
                call_rip: frame.rip.wrapping_sub(2),
            });
        }
        // Resume the guest after its `syscall` instruction: RAX = result, RIP = RCX, RFLAGS = R11.
        // On a VMX host `syscall` entered CPL0, so also return to the user segments; on hosts where
        // it stays at CPL3 (PVM) the segments are already right and stay untouched.
        let sync = self.fd.sync_regs_mut();
        sync.regs.rax = ret;
        sync.regs.rip = frame.rip;
        sync.regs.rflags = user_rflags(frame.rflags);
        let mut sregs_dirty = false;
        if kernel_mode {
            sync.sregs.cs = user_cs();
            sync.sregs.ss = user_ds();
            sregs_dirty = true;
        }
        if let Some(b) = fx.fs_base {
            sync.sregs.fs.base = b;
            sregs_dirty = true;
        }
        if let Some(b) = fx.gs_base {
            sync.sregs.gs.base = b;
            sregs_dirty = true;
        }
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        if sregs_dirty {
            self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
        Next::Resume
    }

    /// Deliver what is pending (and settle a restartable system call) before the guest
    /// resumes; `trap`: the state of a fault being delivered. Stop if the group dies.
    fn signal_work(&mut self, m: &Arc<Machine>, trap: Option<Trap>) -> Next {
        let sigs = &m.kernel.group.signals;
        {
            // Not inside the VMM's stubs (a kick can land there): the guest leaves them soon,
            // and the pump kicks again.
            let s = self.fd.sync_regs_mut();
            let rip = s.regs.rip;
            let in_stub =
                (SYSCALL_STUB..EXCEPTION_STUBS + 256 * EXCEPTION_STUB_SIZE).contains(&rip);
            if s.sregs.cs.dpl != 3 || in_stub {
                return Next::Resume;
            }
        }
        let mut restart = self.restart.take();
        let mut handled = false;
        for _ in 0..64 {
            let Some(d) = sigs.dequeue(&self.task.sig, self.task.sigmask) else {
                break;
            };
            match d {
                Dequeued::Fatal(sig) => {
                    let rip = self.rip();
                    let r = signal_report(sig, self.task.tid, self.index, rip);
                    m.finish_all(ExitReport::Faulted(r));
                    return Next::Stop;
                }
                // Stopping the whole guest is the host's job control (SIGSTOP to the VMM
                // process stops it); a stop the guest raises by default is ignored here.
                Dequeued::Stop(_) => continue,
                Dequeued::Handler(info, act) => {
                    if let Some(r) = restart.take() {
                        self.settle_restart(&r, Some(&act));
                    }
                    let t = if handled { None } else { trap };
                    if let Err(e) = self.setup_frame(m, &info, &act, t) {
                        tracing::debug!(
                            "signal {} frame for tid {}: {e:?}",
                            info.signo,
                            self.task.tid
                        );
                        let rip = self.rip();
                        return self.force_sigsegv(m, rip);
                    }
                    handled = true;
                }
            }
        }
        if let Some(r) = restart {
            self.settle_restart(&r, None);
        }
        if !handled {
            if let Some(old) = self.task.saved_sigmask.take() {
                self.task.set_sigmask(old);
            }
        }
        Next::Resume
    }

    /// Linux's handle_signal/restart logic for an interrupted call: restart it (RIP back on
    /// the `syscall`, RAX = its number) or make it fail with EINTR.
    fn settle_restart(&mut self, r: &Restart, act: Option<&ksig::SigAction>) {
        let e = (-r.ret) as i32;
        let restart = match act {
            None => true,
            Some(a) => match e {
                ksig::ERESTARTNOHAND => false,
                ksig::ERESTARTSYS => a[1] & ksig::SA_RESTART != 0,
                _ => true,
            },
        };
        let s = self.fd.sync_regs_mut();
        if restart {
            s.regs.rip = r.call_rip;
            s.regs.rax = r.nr;
        } else {
            s.regs.rax = (-(libc::EINTR as i64)) as u64;
        }
        self.fd.set_sync_dirty_reg(SyncReg::Register);
    }

    /// Build the signal frame on the guest stack and point the vCPU at the handler.
    fn setup_frame(
        &mut self,
        m: &Arc<Machine>,
        info: &SigInfo,
        act: &ksig::SigAction,
        trap: Option<Trap>,
    ) -> Result<(), frame::FrameError> {
        let fpu = m.kernel.run.fpu();
        let xs = self.fd.get_xsave().map_err(|_| frame::FrameError::Fault)?;
        let img = xsave_bytes(&xs);
        let regs = self.fd.sync_regs_mut().regs;
        let oldmask = self.task.saved_sigmask.take().unwrap_or(self.task.sigmask);
        let t = trap.unwrap_or_default();
        let fin = frame::FrameIn {
            regs: frame::Gprs::from_kvm(&regs),
            segs: [USER_CS, 0, 0, USER_DS],
            err: t.err,
            trapno: t.trapno,
            cr2: t.cr2,
            oldmask,
            info: *info,
            action: *act,
            altstack: self.task.altstack,
            xsave: &img,
            xstate_size: fpu.xstate_size,
            xfeatures: fpu.xcr0,
        };
        let out = match frame::write(&*m.kernel.group.mem, &fin) {
            Ok(o) => o,
            Err(e) => {
                self.task.saved_sigmask = (oldmask != self.task.sigmask).then_some(oldmask);
                return Err(e);
            }
        };
        let s = self.fd.sync_regs_mut();
        s.regs.rsp = out.rsp;
        s.regs.rip = out.rip;
        s.regs.rdi = out.rdi;
        s.regs.rsi = out.rsi;
        s.regs.rdx = out.rdx;
        s.regs.rax = 0;
        s.regs.rflags = user_rflags(regs.rflags) & !(0x400 | 0x100); // DF, TF
        s.sregs.cs = user_cs();
        s.sregs.ss = user_ds();
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        let init = xsave_from(&init_fpu_image(fpu.xstate_size > 0));
        // SAFETY: a 4 KiB kvm_xsave; the guest's XCR0 (x87, SSE, AVX, AVX-512 at most, no
        // AMX) fits in it, so KVM reads nothing past the struct.
        unsafe { self.fd.set_xsave(&init) }.map_err(|_| frame::FrameError::Fault)?;
        let sig = info.signo;
        let mut mask = self.task.sigmask | act[3];
        if act[1] & ksig::SA_NODEFER == 0 {
            mask |= ksig::bit(sig);
        }
        self.task.set_sigmask(mask);
        if act[1] & ksig::SA_RESETHAND != 0 {
            m.kernel.group.signals.reset(sig);
        }
        self.stats.exit("signal_delivered");
        Ok(())
    }

    /// rt_sigreturn: resume with the frame's registers and FPU state.
    fn apply_sigreturn(
        &mut self,
        m: &Arc<Machine>,
        r: &frame::Restored,
        kernel_mode: bool,
        rip: u64,
    ) -> Next {
        let fpu = m.kernel.run.fpu();
        let img = match &r.fpstate {
            None => init_fpu_image(fpu.xstate_size > 0),
            Some(i) => {
                let mut img = i.clone();
                img.resize(4096, 0);
                if !r.xstate {
                    // Legacy area only: x87 and SSE from it, the rest in its init state
                    // (KVM_SET_XSAVE reads the header even for a guest without XSAVE).
                    img[512..520].copy_from_slice(&3u64.to_le_bytes());
                    img[520..576].fill(0);
                }
                img
            }
        };
        let x = xsave_from(&img);
        // SAFETY: as in setup_frame: a 4 KiB kvm_xsave for an XCR0 that fits in it.
        if unsafe { self.fd.set_xsave(&x) }.is_err() {
            return self.force_sigsegv(m, rip);
        }
        let s = self.fd.sync_regs_mut();
        let mut regs = r.regs.to_kvm();
        regs.rflags = user_rflags(regs.rflags);
        s.regs = regs;
        if kernel_mode || s.sregs.cs.dpl != 3 {
            s.sregs.cs = user_cs();
            s.sregs.ss = user_ds();
            self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        Next::Resume
    }

    /// Linux's force_sigsegv: a frame could not be built or read back. SIGSEGV with the
    /// default action ends the group.
    fn force_sigsegv(&mut self, m: &Arc<Machine>, rip: u64) -> Next {
        m.kernel.group.signals.reset(libc::SIGSEGV);
        let mut r = exception_report(13, None, 0, rip, self.task.tid, self.index);
        r.what = "bad signal frame (the handler's stack or the frame at rt_sigreturn is unusable)"
            .into();
        m.finish_all(ExitReport::Faulted(r));
        Next::Stop
    }

    /// The fast entry's RDPID faulted (#UD: the CPU does not give it to the guest): switch the
    /// fast entry off and redo the call through the ordinary stub, from the state at the fault
    /// (RAX still holds the call number: RDPID is the first thing each fast path changes).
    fn fast_entry_unusable(&mut self, m: &Arc<Machine>, frame_at: u64) -> Next {
        tracing::info!("RDPID is not available to the guest: system calls all exit");
        clocks::set_flag(&*m.mem, clocks::FLAG_FAST, false);
        let mem = &m.mem;
        let rd = |o: u64| mem.system_read_u64(frame_at + o).unwrap_or(0);
        let (cs, rflags, rsp) = (rd(8), rd(16), rd(24));
        let s = self.fd.sync_regs_mut();
        s.regs.rip = SYSCALL_STUB;
        s.regs.rsp = rsp;
        s.regs.rflags = rflags;
        if cs & 3 == 3 {
            s.sregs.cs = user_cs();
            s.sregs.ss = user_ds();
        } else {
            s.sregs.cs = seg(KERNEL_CS, true, 0);
            s.sregs.ss = seg(KERNEL_DS, false, 0);
        }
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        Next::Resume
    }

    /// A guest exception at CPL3 with a handler for its signal: restore the user registers
    /// from the exception frame and deliver. None: no handler (or not a user fault), the
    /// caller reports the fault as before.
    fn fault_to_handler(
        &mut self,
        m: &Arc<Machine>,
        vector: u8,
        err: Option<u64>,
        cr2: u64,
        frame_at: u64,
    ) -> Option<Next> {
        let mem = &m.mem;
        let rd = |o: u64| mem.system_read_u64(frame_at + o).ok();
        let (rip, cs, rflags, rsp) = (rd(0)?, rd(8)?, rd(16)?, rd(24)?);
        if cs & 3 != 3 {
            return None;
        }
        let info = fault_siginfo(vector, err, cr2, rip)?;
        let sigs = &m.kernel.group.signals;
        let act = sigs.action(info.signo);
        let blocked = self.task.sigmask & ksig::bit(info.signo) != 0;
        if act[0] == ksig::SIG_DFL || act[0] == ksig::SIG_IGN || blocked {
            // Forced to the default action: the fault report says it all.
            return None;
        }
        let mask = sigs.force(&self.task.sig, self.task.sigmask, info);
        self.task.set_sigmask(mask);
        let s = self.fd.sync_regs_mut();
        s.regs.rip = rip;
        s.regs.rsp = rsp;
        s.regs.rflags = user_rflags(rflags);
        s.sregs.cs = user_cs();
        s.sregs.ss = user_ds();
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        let trap = Trap {
            trapno: u64::from(vector),
            err: err.unwrap_or(0),
            cr2: if vector == 14 { cr2 } else { 0 },
        };
        Some(self.signal_work(m, Some(trap)))
    }

    /// Leave: unregister, park the vCPU if the thread merely exited, report the statistics.
    fn report(mut self, m: &Arc<Machine>, parked: bool) {
        self.stats.futex_waits = self.task.counters.futex_waits;
        self.stats.futex_wait_s = self.task.counters.futex_wait_s;
        let tx = m.done_tx.lock().unwrap().clone();
        {
            let mut pool = m.pool.lock().unwrap();
            pool.host_tids.remove(&self.index);
            pool.by_guest_tid.remove(&self.task.tid);
            m.kernel.group.signals.remove_task(self.task.tid);
            clocks::retire(&*m.mem, self.index);
            if parked && !m.kernel.run.ending() {
                pool.parked.push((self.index, self.fd));
            }
        }
        m.update_yield_flag();
        let _ = tx.send(Finished { stats: self.stats });
    }
}
