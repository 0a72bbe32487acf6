//! Building a VM for one program and running it to the end, in named phases:
//!
//! 1. [`validate`]: check the configuration, open the program, root and std streams;
//! 2. [`create_vm`]: open KVM, create the VM and read the CPU features;
//! 3. [`build_memory`]: map guest memory, build page tables and stubs, register the regions;
//! 4. [`load_program`]: load the ELF, build the stack and the launch stub's entry;
//! 5. [`build_kernel`] and [`build_vcpu0`]: the kernel objects and the first vCPU;
//! 6. the caller's [`RunHooks::before_guest`] hook: privileged set-up is done, no guest
//!    instruction has run yet (the jail is applied here);
//! 7. [`spawn`], [`wait`] for the end or the timeout, [`teardown`] (kick and join every
//!    vCPU thread), [`collect_stats`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::elf::{ElfError, LoadedImage, Program};
use crate::kernel::files::FdTable;
use crate::kernel::fsroot::FsRoot;
use crate::kernel::group::{Credentials, GroupParts, Limits, ThreadGroup, Uts};
use crate::kernel::mm::{AddressSpace, VmaAttrs};
use crate::kernel::run::Run;
use crate::kernel::task::Task;
use crate::kernel::{Kernel, GUEST_PID};
use crate::layout::{self, GuestPageSize, Paging, USER_START};
use crate::memory::{Backing, GuestMemory, HugePageSize, MemoryError, WarmMemory};
use crate::stack::{self, StackSpec};
use crate::stats::{ExitReport, KvmStatsFile, MemoryStats, RunStats};
use crate::vcpu::{self, CpuFeatures, Finished, Machine, MachineParts, VcpuError};

pub use crate::vcpu::ThreadStartHook;

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
    /// Map this zone memory instead of allocating any (`memory` must equal its size; `backing`
    /// gives the NUMA node and the guest's default page size).
    #[serde(default)]
    pub warm_memory: Option<WarmMemory>,
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
            warm_memory: None,
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
    #[error("cannot get {what} from the host")]
    Host {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the privileged set-up hook refused to start the guest: {0}")]
    Hook(String),
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

fn read_release() -> Result<Uts, VmmError> {
    let mut u: libc::utsname = unsafe_zeroed_utsname();
    // SAFETY: `u` is a writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(VmmError::Host {
            what: "the kernel release (uname)",
            source: std::io::Error::last_os_error(),
        });
    }
    let s = |f: &[libc::c_char]| {
        let b: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    Ok(Uts {
        release: s(&u.release),
        nodename: s(&u.nodename),
    })
}

fn unsafe_zeroed_utsname() -> libc::utsname {
    // SAFETY: utsname is plain data (char arrays); all zeroes is valid.
    unsafe { std::mem::zeroed() }
}

/// Code the caller runs at fixed points of a run (see the module docs).
#[derive(Default)]
pub struct RunHooks {
    /// Runs once, on the calling thread, after all privileged set-up (KVM, memory, the
    /// program loaded) and before the first guest instruction. An error aborts the run.
    pub before_guest: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
    /// Runs first on every vCPU thread (with its vCPU index), before the thread enters the
    /// guest. An error ends the run.
    pub vcpu_thread_start: Option<ThreadStartHook>,
}

/// Run a program to completion in a fresh HPC VM. Returns the run's statistics, whose
/// `exit_status` is what `dualstack run` exits with.
pub fn run(cfg: &RunConfig) -> Result<RunStats, VmmError> {
    run_with(cfg, RunHooks::default())
}

/// [`run`] with hooks.
pub fn run_with(cfg: &RunConfig, hooks: RunHooks) -> Result<RunStats, VmmError> {
    let t_start = Instant::now();
    let v = validate(cfg)?;
    let kvm = create_vm()?;
    // vCPU 0 exists early: the vDSO's time base needs its TSC.
    let vcpu0 = kvm.vm.create_vcpu(0).map_err(kvm_err("create vCPU 0"))?;
    let timebase = if cfg.vdso { tsc_timebase(&vcpu0) } else { None };
    let mem = build_memory(cfg, v.memory, &kvm.vm)?;
    let loaded = load_program(cfg, &v.program, &mem, &kvm.features, timebase.as_ref())?;
    let stats_vm = KvmStatsFile::open(&kvm.vm);
    let vm_before = stats_vm.as_ref().map(|f| f.read()).unwrap_or_default();
    let paging = mem.paging;
    let memory = build_kernel(cfg, v, mem, &loaded)?;
    let (machine, done) = Machine::new(MachineParts {
        kernel: memory.kernel,
        kvm: kvm.kvm,
        vm: kvm.vm,
        cpuid: kvm.cpuid,
        xcr0: kvm.xcr0,
        pml4: paging.pml4,
        mem: memory.mem,
        cpus: cfg.cpus.clone(),
        pin_vcpus: cfg.pin_vcpus,
        thread_start: hooks.vcpu_thread_start,
    });
    build_vcpu0(&machine, &vcpu0, cfg.backing, loaded.sp, paging.usable_end)?;

    // The kick handler is process-wide: install it now, before the hook (a jail's seccomp
    // filter forbids rt_sigaction afterwards).
    vcpu::install_kick_handler();
    // Privileged set-up is done; no guest instruction has run yet.
    if let Some(hook) = hooks.before_guest {
        hook().map_err(VmmError::Hook)?;
    }

    let t_spawn = Instant::now();
    spawn(&machine, vcpu0, cfg.cpus.len())?;
    wait(&machine, cfg.timeout, t_spawn);
    let t_end = Instant::now();
    let vcpus = teardown(&machine, &done);
    let t_guest = machine.kernel.run.started().unwrap_or(t_spawn);
    let timing = Timing {
        launch: t_guest - t_start,
        guest_wall: t_end.saturating_duration_since(t_guest),
        mem_setup: memory.setup,
    };
    let vm_delta = stats_vm
        .as_ref()
        .map(|f| crate::stats::delta(&vm_before, &f.read()))
        .unwrap_or_default();
    let mut stats = collect_stats(cfg, &machine, vcpus, timing, v_memory(cfg));
    stats.kvm_vm_before = vm_before;
    stats.kvm_vm_delta = vm_delta;
    drop(machine);
    stats.wall_s = t_start.elapsed().as_secs_f64();
    Ok(stats)
}

/// What [`validate`] checked and opened.
struct Validated {
    program: Program,
    fsroot: FsRoot,
    files: FdTable,
    /// Guest memory size, rounded up to the backing's granule.
    memory: u64,
}

fn v_memory(cfg: &RunConfig) -> u64 {
    let granule = cfg.backing.granule();
    cfg.memory.div_ceil(granule) * granule
}

/// Phase 1: validate everything the user gave us before any VM exists.
fn validate(cfg: &RunConfig) -> Result<Validated, VmmError> {
    if cfg.cpus.is_empty() {
        return Err(VmmError::Config("the run has no CPUs".into()));
    }
    if cfg.argv.is_empty() {
        return Err(VmmError::Config(
            "argv must contain at least argv[0]".into(),
        ));
    }
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
    let memory = v_memory(cfg);
    if let Some(w) = &cfg.warm_memory {
        if w.size() != memory {
            return Err(VmmError::Config(format!(
                "zone memory of {} MiB given for a guest of {} MiB",
                w.size() >> 20,
                memory >> 20
            )));
        }
    }
    if memory < (8 << 20) + MAIN_STACK {
        return Err(VmmError::Config(format!(
            "--memory {} MiB is too small: the HPC VMM needs at least {} MiB",
            cfg.memory >> 20,
            ((8 << 20) + MAIN_STACK) >> 20
        )));
    }
    Ok(Validated {
        program,
        fsroot,
        files,
        memory,
    })
}

/// KVM handles of a run.
struct KvmVm {
    kvm: Kvm,
    vm: VmFd,
    cpuid: CpuId,
    xcr0: u64,
    features: CpuFeatures,
}

/// Phase 2: open KVM, create the VM, read the CPU features the guest gets.
fn create_vm() -> Result<KvmVm, VmmError> {
    let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read supported CPUID"))?;
    let features = vcpu::cpu_features(&cpuid);
    let xcr0 = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map(|e| (u64::from(e.edx) << 32 | u64::from(e.eax)) & 0xe7)
        .unwrap_or(3)
        | 3;
    Ok(KvmVm {
        kvm,
        vm,
        cpuid,
        xcr0,
        features,
    })
}

/// Guest memory, built and registered with KVM.
struct BuiltMemory {
    mem: GuestMemory,
    paging: Paging,
    setup: Duration,
}

/// Phase 3: map guest memory, write page tables and stubs, register every region as a KVM
/// memory slot.
fn build_memory(cfg: &RunConfig, size: u64, vm: &VmFd) -> Result<BuiltMemory, VmmError> {
    let t_mem = Instant::now();
    let mem = match &cfg.warm_memory {
        Some(w) => GuestMemory::from_warm(
            w,
            match cfg.backing {
                Backing::Hugetlb { numa_node, .. } => numa_node,
                Backing::Lazy => None,
            },
        )?,
        None => GuestMemory::new(size, cfg.backing)?,
    };
    let setup = t_mem.elapsed();
    let page_size = cfg
        .guest_page_size
        .unwrap_or_else(|| default_page_size(cfg.backing));
    let paging = layout::build(&mem, page_size).map_err(|e| VmmError::Setup(e.to_string()))?;
    for r in mem.regions().iter() {
        let region = kvm_userspace_memory_region {
            slot: r.slot,
            flags: 0,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.size,
            userspace_addr: r.host_addr,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the Machine keeps alive
        // for as long as the VM exists (the Machine drops the VM fd before the memory).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(BuiltMemory { mem, paging, setup })
}

/// The program in guest memory.
struct Loaded {
    image: LoadedImage,
    /// Initial stack pointer (argc, argv, envp, auxv above it).
    sp: u64,
    exe_path: String,
    creds: Credentials,
}

/// Phase 4: load the ELF, build the initial stack, point the launch stub at the entry.
fn load_program(
    cfg: &RunConfig,
    program: &Program,
    mem: &BuiltMemory,
    feat: &CpuFeatures,
    timebase: Option<&crate::vdso::TimeBase>,
) -> Result<Loaded, VmmError> {
    let stack_top = mem.paging.usable_end;
    let image = program.load(&mem.mem, stack_top - MAIN_STACK)?;
    let exe_path = guest_path_of_program(&cfg.root, &cfg.program);
    let mut random = [0u8; 16];
    getrandom_host(&mut random)?;
    let creds = Credentials::of_host();
    let argv: Vec<Vec<u8>> = cfg.argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    let envp: Vec<Vec<u8>> = cfg.env.iter().map(|s| s.as_bytes().to_vec()).collect();
    let spec = StackSpec {
        argv: &argv,
        envp: &envp,
        execfn: exe_path.as_bytes(),
        image: &image,
        hwcap: feat.hwcap,
        hwcap2: if feat.fsgsbase { 2 } else { 0 },
        ids: [creds.uid, creds.euid, creds.gid, creds.egid].map(u64::from),
        random,
        vdso: timebase.map(|_| crate::vdso::VDSO_ADDR),
    };
    let sp = stack::build(&mem.mem, stack_top, &spec).map_err(|e| {
        VmmError::Config(format!(
            "arguments and environment do not fit the stack: {e}"
        ))
    })?;
    mem.mem
        .write_u64(layout::LAUNCH_ENTRY_SLOT, image.entry)
        .map_err(|e| VmmError::Setup(e.to_string()))?;
    if let Some(tb) = timebase {
        crate::vdso::install(&mem.mem, tb).map_err(|e| VmmError::Setup(e.to_string()))?;
    }
    Ok(Loaded {
        image,
        sp,
        exe_path,
        creds,
    })
}

/// The kernel and the memory, ready for the vCPUs.
struct KernelBuilt {
    kernel: Kernel,
    mem: Arc<GuestMemory>,
    setup: Duration,
}

/// Phase 5a: the kernel objects. From here on guest-originated accesses are confined to user
/// memory.
fn build_kernel(
    cfg: &RunConfig,
    v: Validated,
    built: BuiltMemory,
    loaded: &Loaded,
) -> Result<KernelBuilt, VmmError> {
    let BuiltMemory {
        mut mem,
        paging,
        setup,
    } = built;
    let stack_top = paging.usable_end;
    let mut mm = AddressSpace::new(
        USER_START,
        stack_top,
        (loaded.image.start, loaded.image.end),
    );
    let stack = VmaAttrs {
        label: Some("[stack]"),
        ..VmaAttrs::anonymous()
    };
    mm.map_with(stack_top - MAIN_STACK, MAIN_STACK, true, false, stack)
        .map_err(|_| VmmError::Setup("no room for the stack".into()))?;
    mem.restrict_to(USER_START, stack_top);
    let mem = Arc::new(mem);
    let group = ThreadGroup::new(GroupParts {
        mem: mem.clone(),
        mm,
        files: v.files,
        fs: v.fsroot,
        creds: loaded.creds,
        limits: Limits::new(MAIN_STACK, layout::MAX_VCPUS as u64),
        exe_path: loaded.exe_path.clone(),
        uts: read_release()?,
    });
    Ok(KernelBuilt {
        kernel: Kernel {
            run: Run::new(cfg.cpus.len()),
            group,
        },
        mem,
        setup,
    })
}

/// Phase 5b: vCPU 0 starts in the launch stub: it prefaults all usable memory (hugetlb backing
/// only: a lazy, commodity-style guest faults on demand), reports, then jumps to the entry.
fn build_vcpu0(
    m: &Machine,
    vcpu0: &VcpuFd,
    backing: Backing,
    sp: u64,
    usable_end: u64,
) -> Result<(), VmmError> {
    vcpu::configure(m, vcpu0, 0, true)?;
    let prefault = matches!(backing, Backing::Hugetlb { .. });
    let regs = kvm_regs {
        rip: if prefault {
            layout::LAUNCH_STUB
        } else {
            layout::LAUNCH_STUB_NO_PREFAULT
        },
        rsp: sp,
        rdi: layout::PREFAULT_START,
        rsi: usable_end,
        r8: 2 << 20,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu::set_entry(vcpu0, &regs, 0, 0)?;
    Ok(())
}

/// Phase 7: start the main thread on vCPU 0.
fn spawn(m: &Arc<Machine>, vcpu0: VcpuFd, ncpus: usize) -> Result<(), VmmError> {
    m.spawn(0, vcpu0, Task::main(GUEST_PID, ncpus))
        .map_err(|e| VmmError::Setup(format!("cannot start the vCPU thread: {e}")))
}

/// Phase 8: wait for the end, or the timeout (counted from the start of the vCPU).
fn wait(m: &Machine, timeout: Option<Duration>, t_spawn: Instant) {
    let run = &m.kernel.run;
    match timeout {
        None => {
            run.sleep(Duration::MAX);
        }
        Some(t) => {
            if !run.sleep(t) {
                m.finish(ExitReport::TimedOut {
                    after_s: t_spawn.elapsed().as_secs_f64(),
                });
            }
        }
    }
}

/// How often teardown re-sends the kick while vCPU threads are still running: a kick that
/// lands just before a thread enters a blocking call is lost, so it is repeated.
const KICK_AGAIN: Duration = Duration::from_millis(5);

/// Phase 9: kick every vCPU thread and collect each one's report as it ends, then join them.
/// No clone can start a thread once the run is ending, so the count of started threads is
/// final here.
fn teardown(m: &Machine, done: &mpsc::Receiver<Finished>) -> Vec<crate::stats::VcpuStats> {
    let mut vcpus = Vec::new();
    loop {
        m.kick_all();
        if vcpus.len() >= m.started_threads() {
            break;
        }
        match done.recv_timeout(KICK_AGAIN) {
            Ok(f) => vcpus.push(f.stats),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for h in m.take_handles() {
        let _ = h.join();
    }
    vcpus
}

struct Timing {
    launch: Duration,
    guest_wall: Duration,
    mem_setup: Duration,
}

/// Phase 10: fold everything into the run's statistics.
fn collect_stats(
    cfg: &RunConfig,
    m: &Machine,
    mut vcpus: Vec<crate::stats::VcpuStats>,
    timing: Timing,
    memory: u64,
) -> RunStats {
    let exit = m.outcome().unwrap_or(ExitReport::Exited { status: 0 });
    let exit_status = match &exit {
        ExitReport::Exited { status } => *status & 0xff,
        ExitReport::Faulted(f) => 128 + f.signal,
        ExitReport::TimedOut { .. } => 124,
        ExitReport::VmmError { .. } => 125,
    };
    let tg = &m.kernel.group;
    let (created, max_live, oversubscribed) = tg.threads.lock().unwrap().totals();
    vcpus.sort_by_key(|v| v.index);
    let mut stats = RunStats {
        program: cfg.program.display().to_string(),
        argv: cfg.argv.clone(),
        exit,
        exit_status,
        launch_s: timing.launch.as_secs_f64(),
        guest_wall_s: timing.guest_wall.as_secs_f64(),
        wall_s: 0.0,
        memory: MemoryStats {
            size_bytes: memory,
            backing: cfg.backing,
            guest_page_size: cfg
                .guest_page_size
                .unwrap_or_else(|| default_page_size(cfg.backing)),
            setup_s: timing.mem_setup.as_secs_f64(),
            source: m.mem.source(),
            zero_wait_s: 0.0,
            zero_wait_bytes: 0,
            peak_mapped_bytes: tg.mm.lock().unwrap().peak_bytes(),
        },
        cpus: cfg.cpus.clone(),
        threads_created: created,
        max_live_threads: max_live,
        oversubscribed,
        exits: BTreeMap::new(),
        exits_total: 0,
        syscalls_total: 0,
        futex_wakes_without_exit: u64::from(
            m.mem.system_read_u32(layout::FAST_COUNTERS).unwrap_or(0),
        ),
        syscalls: BTreeMap::new(),
        enosys: BTreeMap::new(),
        kvm_vm_before: BTreeMap::new(),
        kvm_vm_delta: BTreeMap::new(),
        kvm_vcpu_delta: BTreeMap::new(),
        kvm_vcpu_at_launch: m.launch_kvm(),
        vcpus,
    };
    stats.aggregate(&m.enosys());
    stats
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
    // SAFETY: writes one timespec; the clocks used here always exist.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime({clock}) failed");
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

/// Fill `buf` from the host's random source (the guest's AT_RANDOM, its stack canary seed).
fn getrandom_host(buf: &mut [u8]) -> Result<(), VmmError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most rest.len() bytes into rest.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(VmmError::Host {
                what: "random bytes for AT_RANDOM (getrandom)",
                source: e,
            });
        }
        done += n as usize;
    }
    Ok(())
}
