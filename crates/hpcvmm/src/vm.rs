//! Building a VM for one program and running it to the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use crate::addrspace::AddressSpace;
use crate::elf::{ElfError, Program};
use crate::layout::{self, GuestPageSize, USER_START};
use crate::memory::{Backing, GuestMemory, HugePageSize, MemoryError};
use crate::process::{Control, Process, ThreadState, Threads, GUEST_PID};
use crate::stack::{self, StackSpec};
use crate::stats::{ExitReport, KvmStatsFile, MemoryStats, RunStats, VcpuStats};
use crate::syscall::fs::{FdTable, FsRoot};
use crate::syscall::futex::FutexTable;
use crate::syscall::misc::Signals;
use crate::vcpu::{self, VcpuError};

/// Stack reserved for the main thread (RLIMIT_STACK).
pub const MAIN_STACK: u64 = 8 << 20;

/// Everything a run needs; one definition shared by the CLI, config files and the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Host path of the static program.
    pub program: PathBuf,
    /// argv, argv[0] included.
    pub argv: Vec<String>,
    /// The environment, as KEY=VALUE strings.
    pub env: Vec<String>,
    /// Guest memory in bytes.
    pub memory: u64,
    pub backing: Backing,
    /// Page size of the guest's own page tables; default follows the backing.
    pub guest_page_size: Option<GuestPageSize>,
    /// Host CPUs the run owns; guest thread i runs on cpus[i % len].
    pub cpus: Vec<usize>,
    /// Pin each vCPU to one core (the HPC VMM's way). When false every vCPU thread may run on
    /// any of `cpus` and the host scheduler places it (a commodity VMM's way).
    #[serde(default = "default_true")]
    pub pin_vcpus: bool,
    /// Host directory the guest sees as `/`.
    pub root: PathBuf,
    /// Guest working directory at start.
    pub cwd: String,
    /// End the guest after this long.
    pub timeout: Option<Duration>,
    /// Give the guest a vDSO so clock_gettime/gettimeofday/time need no VM exit (used only
    /// when the host has an invariant TSC).
    #[serde(default = "default_true")]
    pub vdso: bool,
    /// Guest stdin/stdout/stderr from/to these files instead of the VMM's own streams.
    #[serde(default)]
    pub stdin: Option<PathBuf>,
    #[serde(default)]
    pub stdout: Option<PathBuf>,
    #[serde(default)]
    pub stderr: Option<PathBuf>,
}

impl RunConfig {
    /// Defaults: 512 MiB of 2 MiB huge pages, the caller's CPUs, the current directory as root.
    pub fn new(program: impl Into<PathBuf>, argv: Vec<String>) -> Self {
        RunConfig {
            program: program.into(),
            argv,
            env: Vec::new(),
            memory: 512 << 20,
            backing: Backing::Hugetlb {
                page_size: HugePageSize::Size2M,
                numa_node: None,
            },
            guest_page_size: None,
            cpus: crate::host_affinity().unwrap_or_else(|_| vec![0]),
            pin_vcpus: true,
            root: PathBuf::from("."),
            cwd: "/".into(),
            timeout: None,
            vdso: true,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }
}

/// Why a run could not start (or broke down in the VMM itself).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot use KVM ({what}); is /dev/kvm present and accessible?")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest root directory {path} is unusable")]
    Root {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {what} file {path}")]
    Stdio {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid run configuration: {0}")]
    Config(String),
    #[error("setting up guest memory failed: {0}")]
    Setup(String),
}

fn default_true() -> bool {
    true
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

fn default_page_size(b: Backing) -> GuestPageSize {
    match b {
        Backing::Hugetlb {
            page_size: HugePageSize::Size1G,
            ..
        } => GuestPageSize::Size1G,
        Backing::Hugetlb { .. } => GuestPageSize::Size2M,
        Backing::Lazy => GuestPageSize::Size4K,
    }
}

fn guest_path_of_program(root: &Path, program: &Path) -> String {
    // Inside the root: the guest sees it at its path below the root; else under its name.
    let abs = std::fs::canonicalize(program).ok();
    let root = std::fs::canonicalize(root).ok();
    if let (Some(a), Some(r)) = (abs, root) {
        if let Ok(rel) = a.strip_prefix(&r) {
            return format!("/{}", rel.display());
        }
    }
    format!(
        "/{}",
        program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

fn read_release() -> (String, String) {
    let mut u: libc::utsname = unsafe_zeroed_utsname();
    // SAFETY: `u` is a writable utsname.
    unsafe { libc::uname(&mut u) };
    let s = |f: &[libc::c_char]| {
        let b: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    (s(&u.release), s(&u.nodename))
}

fn unsafe_zeroed_utsname() -> libc::utsname {
    // SAFETY: utsname is plain data (char arrays); all zeroes is valid.
    unsafe { std::mem::zeroed() }
}

/// Run a program to completion in a fresh HPC VM. Returns the run's statistics, whose
/// `exit_status` is what `dualstack run` exits with.
pub fn run(cfg: &RunConfig) -> Result<RunStats, VmmError> {
    run_with_hook(cfg, &mut || Ok(()))
}

/// [`run`], calling `after_setup` once the privileged set-up is done (KVM, guest memory, vCPU
/// 0) and before any vCPU thread exists or the guest runs its first instruction: where the
/// jail drops privileges.
pub fn run_with_hook(
    cfg: &RunConfig,
    after_setup: &mut dyn FnMut() -> Result<(), String>,
) -> Result<RunStats, VmmError> {
    let t_start = Instant::now();
    if cfg.cpus.is_empty() {
        return Err(VmmError::Config("the run has no CPUs".into()));
    }
    if cfg.argv.is_empty() {
        return Err(VmmError::Config(
            "argv must contain at least argv[0]".into(),
        ));
    }
    // Validate everything the user gave us before any VM exists.
    let program = Program::from_file(&cfg.program)?;
    let fsroot = FsRoot::open(&cfg.root, &cfg.cwd).map_err(|source| VmmError::Root {
        path: cfg.root.display().to_string(),
        source,
    })?;
    let files = FdTable::with_stdio_files(
        cfg.stdin.as_deref(),
        cfg.stdout.as_deref(),
        cfg.stderr.as_deref(),
    )
    .map_err(|(what, path, source)| VmmError::Stdio { what, path, source })?;
    let granule = cfg.backing.granule();
    let memory = cfg.memory.div_ceil(granule) * granule;
    if memory < (8 << 20) + MAIN_STACK {
        return Err(VmmError::Config(format!(
            "--memory {} MiB is too small: the HPC VMM needs at least {} MiB",
            cfg.memory >> 20,
            ((8 << 20) + MAIN_STACK) >> 20
        )));
    }

    let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read supported CPUID"))?;
    let feat = vcpu::cpu_features(&cpuid);
    let xcr0 = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map(|e| (u64::from(e.edx) << 32 | u64::from(e.eax)) & 0xe7)
        .unwrap_or(3)
        | 3;

    // vCPU 0 exists early: the vDSO's time base needs its TSC.
    let vcpu0 = vm.create_vcpu(0).map_err(kvm_err("create vCPU 0"))?;
    let timebase = if cfg.vdso { tsc_timebase(&vcpu0) } else { None };

    let t_mem = Instant::now();
    let mem = GuestMemory::new(memory, cfg.backing)?;
    let mem_setup = t_mem.elapsed();
    let page_size = cfg
        .guest_page_size
        .unwrap_or_else(|| default_page_size(cfg.backing));
    let paging = layout::build(&mem, page_size).map_err(|e| VmmError::Setup(e.to_string()))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.size(),
        userspace_addr: mem.host_base() as u64,
    };
    // SAFETY: the region is a live mapping owned by `mem`, which the Process keeps alive for
    // as long as the VM exists (both are dropped together, the VM fd first).
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;

    let stack_top = paging.usable_end;
    let image = program.load(&mem, stack_top - MAIN_STACK)?;
    let mut mm = AddressSpace::new(USER_START, stack_top, (image.start, image.end));
    mm.map(stack_top - MAIN_STACK, MAIN_STACK, true, false)
        .map_err(|_| VmmError::Setup("no room for the stack".into()))?;

    let exe_path = guest_path_of_program(&cfg.root, &cfg.program);
    let mut random = [0u8; 16];
    getrandom_host(&mut random);
    // SAFETY: these id getters have no preconditions.
    let ids = unsafe {
        [
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        ]
    };
    let argv: Vec<Vec<u8>> = cfg.argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    let envp: Vec<Vec<u8>> = cfg.env.iter().map(|s| s.as_bytes().to_vec()).collect();
    let spec = StackSpec {
        argv: &argv,
        envp: &envp,
        execfn: exe_path.as_bytes(),
        image: &image,
        hwcap: feat.hwcap,
        hwcap2: if feat.fsgsbase { 2 } else { 0 },
        ids: ids.map(u64::from),
        random,
        vdso: timebase.map(|_| crate::vdso::VDSO_ADDR),
    };
    let sp = stack::build(&mem, stack_top, &spec).map_err(|e| {
        VmmError::Config(format!(
            "arguments and environment do not fit the stack: {e}"
        ))
    })?;

    // Write the launch stub's entry slot, then confine guest-originated accesses to user memory.
    let mut mem = mem;
    mem.write_u64(layout::LAUNCH_ENTRY_SLOT, image.entry)
        .map_err(|e| VmmError::Setup(e.to_string()))?;
    if let Some(tb) = &timebase {
        crate::vdso::install(&mem, tb).map_err(|e| VmmError::Setup(e.to_string()))?;
    }
    mem.restrict_to(USER_START, stack_top);
    let (uname_release, hostname) = read_release();
    let stats_vm = KvmStatsFile::open(&vm);
    let vm_before = stats_vm.as_ref().map(|f| f.read()).unwrap_or_default();
    let proc = Arc::new(Process {
        kvm,
        vm,
        cpuid,
        xcr0,
        mem,
        paging,
        mm: Mutex::new(mm),
        files: Mutex::new(files),
        fsroot,
        futexes: FutexTable::default(),
        signals: Signals::default(),
        threads: Mutex::new(Threads {
            next_tid: GUEST_PID + 1,
            live: 1,
            created: 1,
            max_live: 1,
            next_vcpu: 1,
            ..Default::default()
        }),
        parked: Mutex::new(Vec::new()),
        control: Control::default(),
        cpus: cfg.cpus.clone(),
        pin_vcpus: cfg.pin_vcpus,
        limits: Mutex::new(crate::syscall::misc::default_limits()),
        exe_path,
        guest_start: Mutex::new(None),
        launch_kvm: Mutex::new(BTreeMap::new()),
        enosys: Mutex::new(BTreeMap::new()),
        oversubscribed: AtomicBool::new(false),
        umask: AtomicU64::new(0o022),
        uname_release,
        hostname,
    });

    vcpu::configure(&proc, &vcpu0, 0, true)?;
    // Start in the launch stub: it prefaults all usable memory (hugetlb backing only: a lazy,
    // commodity-style guest faults on demand), reports, then jumps to the program's entry.
    let prefault = matches!(cfg.backing, Backing::Hugetlb { .. });
    let regs = kvm_regs {
        rip: if prefault {
            layout::LAUNCH_STUB
        } else {
            layout::LAUNCH_STUB_NO_PREFAULT
        },
        rsp: sp,
        rdi: layout::PREFAULT_START,
        rsi: proc.paging.usable_end,
        r8: 2 << 20,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu::set_entry(&vcpu0, &regs, 0, 0)?;
    let th = ThreadState {
        tid: GUEST_PID,
        vcpu: 0,
        affinity: (0..cfg.cpus.len()).collect(),
        core: 0,
        clear_child_tid: 0,
        robust_list: 0,
        sigmask: 0,
        altstack: [0, 2, 0],
        stats: VcpuStats::new(0, GUEST_PID, vec![cfg.cpus[0]]),
    };

    vcpu::install_kick_handler();
    after_setup().map_err(VmmError::Setup)?;
    let t_spawn = Instant::now();
    {
        let p = proc.clone();
        let h = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || vcpu::run(p, vcpu0, th))
            .map_err(|e| VmmError::Setup(format!("cannot start the vCPU thread: {e}")))?;
        proc.threads.lock().unwrap().handles.push(h);
    }

    // Wait for the end, or the timeout (counted from the start of the vCPU).
    let deadline = cfg.timeout.map(|t| t_spawn + t);
    loop {
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        if proc.control.sleep(wait) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            proc.control.finish(ExitReport::TimedOut {
                after_s: t_spawn.elapsed().as_secs_f64(),
            });
            break;
        }
    }
    let t_end = Instant::now();
    let t_guest = proc.guest_start.lock().unwrap().unwrap_or(t_spawn);
    let launch = t_guest - t_start;
    let guest_wall = t_end.saturating_duration_since(t_guest);
    // Tear down: kick every vCPU until all threads are gone, then join them.
    loop {
        proc.kick_all();
        let handles: Vec<_> = std::mem::take(&mut proc.threads.lock().unwrap().handles);
        if handles.is_empty() && proc.threads.lock().unwrap().host_tids.is_empty() {
            break;
        }
        let mut pending = Vec::new();
        for h in handles {
            if h.is_finished() {
                let _ = h.join();
            } else {
                pending.push(h);
            }
        }
        if !pending.is_empty() {
            proc.threads.lock().unwrap().handles.extend(pending);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    let exit = proc
        .control
        .outcome()
        .unwrap_or(ExitReport::Exited { status: 0 });
    let exit_status = match &exit {
        ExitReport::Exited { status } => *status & 0xff,
        ExitReport::Faulted(f) => 128 + f.signal,
        ExitReport::TimedOut { .. } => 124,
        ExitReport::VmmError { .. } => 125,
    };
    let vm_delta = stats_vm
        .as_ref()
        .map(|f| crate::stats::delta(&vm_before, &f.read()))
        .unwrap_or_default();
    let (mut vcpus, created, max_live) = {
        let mut t = proc.threads.lock().unwrap();
        (std::mem::take(&mut t.finished), t.created, t.max_live)
    };
    vcpus.sort_by_key(|v| v.index);
    let enosys = proc.enosys.lock().unwrap().clone();
    let mut stats = RunStats {
        program: cfg.program.display().to_string(),
        argv: cfg.argv.clone(),
        exit,
        exit_status,
        launch_s: launch.as_secs_f64(),
        guest_wall_s: guest_wall.as_secs_f64(),
        wall_s: 0.0,
        memory: MemoryStats {
            size_bytes: memory,
            backing: cfg.backing,
            guest_page_size: page_size,
            setup_s: mem_setup.as_secs_f64(),
            peak_mapped_bytes: proc.mm.lock().unwrap().peak_bytes(),
        },
        cpus: cfg.cpus.clone(),
        threads_created: created,
        max_live_threads: max_live,
        oversubscribed: proc
            .oversubscribed
            .load(std::sync::atomic::Ordering::Relaxed),
        exits: BTreeMap::new(),
        exits_total: 0,
        syscalls_total: 0,
        futex_wakes_without_exit: u64::from(
            proc.mem.system_read_u32(layout::FAST_COUNTERS).unwrap_or(0),
        ),
        syscalls: BTreeMap::new(),
        enosys: BTreeMap::new(),
        kvm_vm_before: vm_before,
        kvm_vm_delta: vm_delta,
        kvm_vcpu_delta: BTreeMap::new(),
        kvm_vcpu_at_launch: proc.launch_kvm.lock().unwrap().clone(),
        vcpus,
    };
    stats.aggregate(&enosys);
    drop(proc);
    stats.wall_s = t_start.elapsed().as_secs_f64();
    Ok(stats)
}

fn host_tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe { std::arch::x86_64::_rdtsc() }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The vDSO's time base, when the host's TSC is invariant: the guest TSC (host TSC plus the
/// vCPU's offset, read through IA32_TSC) at a moment whose host clocks we also read.
fn tsc_timebase(vcpu: &kvm_ioctls::VcpuFd) -> Option<crate::vdso::TimeBase> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    if !(flags.contains(" constant_tsc") && flags.contains(" nonstop_tsc")) {
        return None;
    }
    let khz = u64::from(vcpu.get_tsc_khz().ok()?);
    // Offset between the guest's and the host's TSC: the tightest of a few bracketed reads.
    let mut best: Option<(u64, u64)> = None; // (bracket width, offset)
    for _ in 0..5 {
        let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index: 0x10, // IA32_TSC
            ..Default::default()
        }])
        .ok()?;
        let h1 = host_tsc();
        let n = vcpu.get_msrs(&mut msrs).ok()?;
        let h2 = host_tsc();
        if n != 1 {
            return None;
        }
        let guest = msrs.as_slice()[0].data;
        let width = h2.wrapping_sub(h1);
        let offset = guest.wrapping_sub(h1 / 2 + h2 / 2);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    let (_, offset) = best?;
    let h1 = host_tsc();
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let h2 = host_tsc();
    Some(crate::vdso::TimeBase::new(
        khz,
        (h1 / 2 + h2 / 2).wrapping_add(offset),
        mono,
        real,
    ))
}

fn getrandom_host(buf: &mut [u8]) {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
}
