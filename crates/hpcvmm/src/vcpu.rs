//! vCPU setup (64-bit user mode on the VMM's GDT/IDT/TSS and page tables) and the vCPU run
//! loop: one host thread per vCPU, pinned before the guest's first instruction.

use std::sync::{Arc, Once};
use std::time::Instant;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_xcrs, Msrs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};

use crate::layout::{self, *};
use crate::process::{FaultReport, Process, ThreadState};
use crate::stats::{ExitReport, KvmStatsFile};
use crate::syscall::{self, Ctx, Errno, Frame};

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
pub fn configure(
    proc: &Process,
    vcpu: &VcpuFd,
    index: usize,
    fresh: bool,
) -> Result<(), VcpuError> {
    if index >= MAX_VCPUS {
        return Err(VcpuError::TooMany);
    }
    let feat = cpu_features(&proc.cpuid);
    if fresh {
        let mut cpuid = proc.cpuid.clone();
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
            data: SYSCALL_STUB,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_CSTAR,
            data: SYSCALL_STUB,
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
    sregs.cr3 = proc.paging.pml4;
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
        xcrs.xcrs[0].value = proc.xcr0;
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
    th: &ThreadState,
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
        tid: th.tid,
        vcpu: th.vcpu,
        rip,
        addr: (vector == 14).then_some(cr2),
        error_code: err,
    }
}

enum Exit {
    Io(u16),
    Interrupted,
    Other(String, &'static str),
    Fatal(String),
}

/// Run one vCPU until its thread exits or the run ends. Consumes the vCPU.
pub fn run(proc: Arc<Process>, mut vcpu: VcpuFd, mut th: ThreadState) {
    install_kick_handler();
    let host_cpus = proc.host_cpus_for(th.core);
    if let Err(e) = crate::sys::set_current_thread_affinity(&host_cpus) {
        proc.control.finish(ExitReport::VmmError {
            message: format!(
                "cannot pin vCPU {} to host CPUs {host_cpus:?}: {e}",
                th.vcpu
            ),
        });
    }
    th.stats.host_cpus = host_cpus;
    proc.threads
        .lock()
        .unwrap()
        .host_tids
        .insert(th.vcpu, crate::sys::gettid());
    vcpu.set_sync_valid_reg(SyncReg::Register);
    vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
    let stats_file = KvmStatsFile::open(&vcpu);
    let mut before = stats_file.as_ref().map(|f| f.read()).unwrap_or_default();
    let mut parked = false;

    loop {
        if proc.control.exiting() {
            break;
        }
        let t0 = Instant::now();
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => Exit::Io(port),
            Ok(VcpuExit::IoIn(port, _)) => Exit::Io(port),
            Ok(VcpuExit::Hlt) => Exit::Other("hlt".into(), "hlt"),
            Ok(VcpuExit::Shutdown) => Exit::Other("triple fault (shutdown)".into(), "shutdown"),
            Ok(VcpuExit::InternalError) => Exit::Other(
                "KVM internal error (instruction emulation failed)".into(),
                "internal_error",
            ),
            Ok(VcpuExit::MmioRead(a, _)) | Ok(VcpuExit::MmioWrite(a, _)) => Exit::Other(
                format!("access to unbacked guest physical address {a:#x}"),
                "mmio",
            ),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Exit::Fatal(format!(
                "VM entry failed (hardware reason {reason:#x} on cpu {cpu})"
            )),
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(other) => Exit::Fatal(format!("unexpected VM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
            Err(e) => Exit::Fatal(format!("KVM_RUN failed: {e}")),
        };
        let t1 = Instant::now();
        th.stats.guest_time_s += (t1 - t0).as_secs_f64();
        match exit {
            Exit::Interrupted => {
                th.stats.exit("interrupted");
                continue;
            }
            Exit::Fatal(message) => {
                th.stats.exit("fatal");
                proc.control.finish(ExitReport::VmmError { message });
                proc.kick_all();
                break;
            }
            Exit::Other(what, reason) => {
                th.stats.exit(reason);
                let rip = vcpu.sync_regs_mut().regs.rip;
                let mut r = exception_report(13, None, 0, rip, &th);
                if reason == "mmio" {
                    r.signal = libc::SIGBUS;
                    r.signal_name = "SIGBUS".into();
                }
                r.what = what;
                proc.control.finish(ExitReport::Faulted(r));
                proc.kick_all();
                break;
            }
            Exit::Io(port) => {
                let rip = vcpu.sync_regs_mut().regs.rip;
                if port == LAUNCH_PORT && rip == LAUNCH_EXIT_RIP && th.vcpu == 0 {
                    // The program starts now: what KVM counted so far belongs to launch.
                    th.stats.exit("launch");
                    if let Some(f) = &stats_file {
                        let now = f.read();
                        *proc.launch_kvm.lock().unwrap() = crate::stats::delta(&before, &now);
                        before = now;
                    }
                    *proc.guest_start.lock().unwrap() = Some(Instant::now());
                    th.stats.guest_time_s = 0.0;
                } else if port == SYSCALL_PORT && rip == SYSCALL_EXIT_RIP {
                    th.stats.exit("syscall");
                    let done = serve_syscall(&proc, &mut vcpu, &mut th);
                    th.stats.vmm_time_s += t1.elapsed().as_secs_f64();
                    match done {
                        Served::Resume => {}
                        Served::RunEnding => break,
                        Served::ThreadExit => {
                            parked = true;
                            break;
                        }
                    }
                } else if let (EXCEPTION_PORT, Some(vector)) = (port, layout::exception_vector(rip))
                {
                    th.stats.exit("exception");
                    let s = vcpu.sync_regs();
                    let mem = &proc.mem;
                    let sp = s.regs.rsp;
                    let (err, frame) = if layout::has_error_code(vector) {
                        (mem.system_read_u64(sp).ok(), sp + 8)
                    } else {
                        (None, sp)
                    };
                    let fault_rip = mem.system_read_u64(frame).unwrap_or(0);
                    let report = exception_report(vector, err, s.sregs.cr2, fault_rip, &th);
                    proc.control.finish(ExitReport::Faulted(report));
                    proc.kick_all();
                    break;
                } else {
                    // User code executing port I/O: a #GP on real hardware (IOPL is 0).
                    th.stats.exit("io_other");
                    let mut r = exception_report(13, Some(0), 0, rip.wrapping_sub(2), &th);
                    r.what = format!("port I/O from user mode (port {port:#x})");
                    proc.control.finish(ExitReport::Faulted(r));
                    proc.kick_all();
                    break;
                }
            }
        }
    }

    if let Some(f) = &stats_file {
        th.stats.kvm = crate::stats::delta(&before, &f.read());
    }
    let mut t = proc.threads.lock().unwrap();
    t.host_tids.remove(&th.vcpu);
    t.finished.push(std::mem::take(&mut th.stats));
    if parked && !proc.control.exiting() {
        proc.parked.lock().unwrap().push((th.vcpu, vcpu));
    }
}

enum Served {
    Resume,
    ThreadExit,
    RunEnding,
}

/// Serve one system call and set up the return to the guest.
fn serve_syscall(proc: &Arc<Process>, vcpu: &mut VcpuFd, th: &mut ThreadState) -> Served {
    // Borrow the registers in kvm_run in place: sync_regs() would copy the whole 2 KiB block.
    let s = vcpu.sync_regs_mut();
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
    let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9];
    let t = Instant::now();
    let mut ctx = Ctx {
        proc,
        thread: th,
        frame: &frame,
        fx: Default::default(),
    };
    let ret = match syscall::dispatch(&mut ctx, nr, args) {
        Some(Ok(v)) => v,
        Some(Err(Errno(e))) => (-(e as i64)) as u64,
        None => {
            proc.note_enosys(nr);
            (-(libc::ENOSYS as i64)) as u64
        }
    };
    let fx = std::mem::take(&mut ctx.fx);
    th.stats.syscall(nr, t.elapsed().as_secs_f64());
    if proc.control.exiting() {
        return Served::RunEnding;
    }
    if fx.thread_exit {
        return Served::ThreadExit;
    }
    if let Some(core) = fx.repin {
        let host = proc.host_cpus_for(core);
        if crate::sys::set_current_thread_affinity(&host).is_ok() {
            th.stats.host_cpus = host;
        }
    }
    // Resume the guest after its `syscall` instruction: RAX = result, RIP = RCX, RFLAGS = R11.
    // On a VMX host `syscall` entered CPL0, so also return to the user segments; on hosts where
    // it stays at CPL3 (PVM) the segments are already right and stay untouched.
    let sync = vcpu.sync_regs_mut();
    sync.regs.rax = ret;
    sync.regs.rip = frame.rip;
    sync.regs.rflags = (frame.rflags & USER_RFLAGS) | 0x2;
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
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    if sregs_dirty {
        vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    }
    Served::Resume
}
