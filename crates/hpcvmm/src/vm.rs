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
use std::os::fd::FromRawFd;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::elf::{ElfError, LoadedImage, Program};
use crate::kernel::files::FdTable;
use crate::kernel::fsroot::FsRoot;
use crate::kernel::group::{Credentials, GroupParts, Limits, ProcInfo, ThreadGroup, Uts};
use crate::kernel::mm::{AddressSpace, VmaAttrs, VmaBacking};
use crate::kernel::run::{FpuLayout, Run};
use crate::kernel::task::Task;
use crate::kernel::Kernel;
use crate::layout::{self, GuestPageSize, Paging, USER_START};
use crate::memory::{Backing, GuestMemory, HugePageSize, MemoryError, WarmMemory};
use crate::stack::{self, StackSpec};
use crate::stats::{ExitReport, KvmStatsFile, MemoryStats, RunStats};
use crate::vcpu::{self, CpuFeatures, Finished, Machine, MachineParts, VcpuError};

pub use crate::vcpu::ThreadStartHook;

/// Stack reserved for the main thread (RLIMIT_STACK).
pub const MAIN_STACK: u64 = 8 << 20;

/// Unmapped guest memory just below the main stack: a stack overflow faults there.
pub const STACK_GUARD: u64 = 2 << 20;

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
    /// Host descriptors the guest inherits at the same numbers (what a launcher such as
    /// MPICH's Hydra passed: `PMI_FD`, pipes, sockets). The run takes ownership of them.
    /// `dualstack run` fills in every descriptor it was started with that a native exec would
    /// pass on ([`crate::kernel::files::inheritable_host_fds`]).
    #[serde(default)]
    pub inherit_fds: Vec<i32>,
    /// The guest's pid is the VMM's host pid instead of the fixed guest pid: an MPI rank
    /// names itself to its peers by pid (UCX reads /proc/<pid>/stat of its peers), and the
    /// ranks of one job must not all be pid 1000.
    #[serde(default)]
    pub host_pid: bool,
    /// Map this zone memory instead of allocating any (`memory` must equal its size; `backing`
    /// gives the NUMA node and the guest's default page size).
    #[serde(default)]
    pub warm_memory: Option<WarmMemory>,
    /// Who the guest is (its uid, gid and groups, as getuid and /proc/self/status tell it):
    /// the jail's identity. `None`: the VMM process's own ids.
    #[serde(default)]
    pub identity: Option<crate::jail::Identity>,
    /// What the guest may do on the network (`dualstack run --net`).
    #[serde(default)]
    pub net: crate::syscall::sockets::NetPolicy,
    /// Publish live counters (exits, system calls, page faults) to this file every
    /// [`crate::live::PERIOD`] while the guest runs ([`crate::live`]). The VMM creates it
    /// before the jail and keeps only the descriptor.
    #[serde(default)]
    pub live_stats: Option<PathBuf>,
    /// An open `/dev/kvm` a privileged helper handed this process (the Slurm SPANK plugin
    /// gives one to the tasks of a zone job that run as their user, where /dev/kvm is 0600
    /// root): the run creates its VM through it instead of opening /dev/kvm. It is never one
    /// of the guest's descriptors.
    #[serde(default)]
    pub kvm_fd: Option<i32>,
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
            inherit_fds: Vec::new(),
            host_pid: false,
            warm_memory: None,
            identity: None,
            net: Default::default(),
            live_stats: None,
            kvm_fd: None,
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

/// AT_EXECFN: the path the program was started by, as Linux passes the execve filename, when
/// the guest would find the same file by it (a path through a symlink stays the symlink's,
/// a relative one stays relative to the guest's working directory); otherwise the program's
/// guest path (`/proc/self/exe`).
fn execfn_of(cfg: &RunConfig, exe_path: &str) -> String {
    let given = cfg.program.to_string_lossy();
    let in_guest = if cfg.program.is_absolute() {
        cfg.root.join(given.trim_start_matches('/'))
    } else {
        cfg.root
            .join(cfg.cwd.trim_start_matches('/'))
            .join(&cfg.program)
    };
    let same = match (
        std::fs::canonicalize(&in_guest),
        std::fs::canonicalize(&cfg.program),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        given.into_owned()
    } else {
        exe_path.to_string()
    }
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
    let kvm = create_vm(cfg.kvm_fd)?;
    // vCPU 0 exists early: the vDSO's time base needs its TSC.
    let vcpu0 = kvm.vm.create_vcpu(0).map_err(kvm_err("create vCPU 0"))?;
    let timebase = if cfg.vdso { tsc_timebase(&vcpu0) } else { None };
    let mem = build_memory(cfg, v.memory, &kvm.vm)?;
    let loaded = load_program(cfg, &v, &mem, &kvm.features, timebase.as_ref())?;
    let stats_vm = KvmStatsFile::open(&kvm.vm);
    let vm_before = stats_vm.as_ref().map(|f| f.read()).unwrap_or_default();
    let paging = mem.paging;
    // A guard below the main stack, as Linux's stack gap: overflowing the stack faults.
    if let Err(e) = layout::unmap_guard(
        &mem.mem,
        paging.pml4,
        paging.usable_end - MAIN_STACK - STACK_GUARD,
        STACK_GUARD,
    ) {
        tracing::debug!("no stack guard: {e}");
    }
    // Signal frames carry the XSAVE image whenever KVM describes one (CPUID leaf 0xD): the
    // guest may use AVX state even where leaf 1 hides XSAVE from the VMM (this nested host).
    let has_xsave_leaf = kvm
        .cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 0xd && e.index == 0 && e.ebx >= 576);
    let fpu = FpuLayout {
        xstate_size: if kvm.features.xsave || has_xsave_leaf {
            vcpu::xstate_size(&kvm.cpuid, kvm.xcr0)
        } else {
            0
        },
        xcr0: kvm.xcr0,
        mxcsr_mask: 0xffff,
    };
    let kvm_cpuid_rdpid = kvm
        .cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 7 && e.index == 0 && e.ecx & (1 << 22) != 0);
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
    machine.kernel.run.set_fpu(FpuLayout {
        mxcsr_mask: vcpu0
            .get_xsave()
            .ok()
            .map(|x| x.region[7])
            .filter(|&m| m != 0)
            .unwrap_or(0xffbf),
        ..fpu
    });
    tracing::debug!("guest FPU layout {:?}", machine.kernel.run.fpu());
    init_clocks(
        &machine,
        timebase.as_ref(),
        &kvm_cpuid_rdpid,
        paging.usable_end,
    );
    // Signals from outside go to the guest: blocked in every VMM thread from here on and
    // read by the pump (before the jail: signalfd4 is not on its allow-list).
    let outside = match crate::pump::OutsideSignals::capture() {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!("signals sent to the VMM will not reach the guest: {e}");
            None
        }
    };

    // Live counters: the file is created while the VMM may still create it (before the jail).
    let publisher = match &cfg.live_stats {
        Some(p) => Some(
            crate::live::Publisher::create(p, machine.live.clone()).map_err(|e| {
                VmmError::Setup(format!(
                    "cannot create the live statistics file {}: {e}",
                    p.display()
                ))
            })?,
        ),
        None => None,
    };

    // The kick handler is process-wide: install it now, before the hook (a jail's seccomp
    // filter forbids rt_sigaction afterwards).
    vcpu::install_kick_handler();
    // Privileged set-up is done; no guest instruction has run yet.
    if let Some(hook) = hooks.before_guest {
        hook().map_err(VmmError::Hook)?;
    }

    // An MPI rank's peers open its descriptors as /proc/<host pid>/fd/<n> (after the jail:
    // the broker's socket is the guest user's).
    let broker = if cfg.host_pid {
        start_fd_broker(&machine)
    } else {
        None
    };
    let pump = {
        let m = machine.clone();
        let fd = outside.as_ref().map(|o| o.raw_fd());
        std::thread::Builder::new()
            .name("sigpump".into())
            .spawn(move || crate::pump::run(m, fd))
            .map_err(|e| VmmError::Setup(format!("cannot start the signal pump thread: {e}")))?
    };
    let live = match publisher {
        Some(p) => Some(start_live_publisher(&machine, p)?),
        None => None,
    };
    let t_spawn = Instant::now();
    if let Err(e) = spawn(&machine, vcpu0, cfg.cpus.len()) {
        machine.finish_all(ExitReport::VmmError {
            message: "the main vCPU thread did not start".into(),
        });
        let _ = pump.join();
        if let Some((stop, h)) = live {
            drop(stop);
            let _ = h.join();
        }
        return Err(e);
    }
    wait(&machine, cfg.timeout, t_spawn);
    let t_end = Instant::now();
    let vcpus = teardown(&machine, &done);
    if let Some((stop, h)) = live {
        // Its last sample (marked ended) counts every exit: the vCPU threads are joined.
        drop(stop);
        let _ = h.join();
    }
    drop(broker);
    machine.wake_pump();
    let _ = pump.join();
    drop(outside);
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

/// What other VMs of the guest's user may reach of this one ([`crate::kernel::fdshare`]):
/// the guest's regular-file descriptors (re-opened) and its user memory (CMA).
struct GuestShare(Arc<Machine>);

impl crate::kernel::fdshare::SharedGuest for GuestShare {
    fn reopen(&self, n: i32, flags: i32) -> Result<std::os::fd::OwnedFd, crate::kernel::Errno> {
        use crate::kernel::files::FileKind;
        let f = self.0.kernel.group.files.lock().unwrap().get(n)?;
        match f.kind() {
            FileKind::Host(_) => crate::kernel::fdshare::reopen_regular(f.raw(), flags),
            _ => Err(crate::kernel::Errno(libc::EACCES)),
        }
    }

    fn read(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        let mem = &self.0.kernel.group.mem;
        mem.check(addr, len).ok()?;
        mem.read_vec(addr, len).ok()
    }

    fn write(&self, addr: u64, data: &[u8]) -> bool {
        let mem = &self.0.kernel.group.mem;
        mem.check(addr, data.len() as u64).is_ok() && mem.write(addr, data).is_ok()
    }
}

/// Serve the guest's descriptors and memory to the other VMs of its user
/// ([`crate::kernel::fdshare`]); a run without it only loses UCX's proc-link sharing and CMA.
/// The live-statistics publisher thread: a sample every [`crate::live::PERIOD`] until `stop`
/// is dropped, then a last one marked ended.
type LivePublisher = (mpsc::Sender<()>, std::thread::JoinHandle<()>);

fn start_live_publisher(
    machine: &Arc<Machine>,
    mut p: crate::live::Publisher,
) -> Result<LivePublisher, VmmError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let m = machine.clone();
    let h = std::thread::Builder::new()
        .name("livestats".into())
        .spawn(move || loop {
            let end = !matches!(
                stopped.recv_timeout(crate::live::PERIOD),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if let Err(e) = p.sample(m.kernel.run.started(), end) {
                tracing::warn!("live statistics no longer published: {e}");
                return;
            }
            if end {
                return;
            }
        })
        .map_err(|e| VmmError::Setup(format!("cannot start the live statistics thread: {e}")))?;
    Ok((stop, h))
}

fn start_fd_broker(machine: &Arc<Machine>) -> Option<crate::kernel::fdshare::Broker> {
    let uid = machine.kernel.group.creds.uid;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let share = Box::new(GuestShare(machine.clone()));
    match crate::kernel::fdshare::Broker::start(pid, uid, share) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!("other ranks cannot open this guest's descriptors: {e}");
            None
        }
    }
}

/// What [`validate`] checked and opened.
struct Validated {
    program: Program,
    /// The program's interpreter (PT_INTERP), read from inside the guest's root: its guest
    /// path and image.
    interp: Option<(String, Program)>,
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
    let interp = match program.interp() {
        None => None,
        Some(i) => Some((
            i.to_string(),
            read_interpreter(&program, i, &fsroot, &cfg.root)?,
        )),
    };
    let mut files = FdTable::with_stdio_files(
        cfg.stdin.as_deref(),
        cfg.stdout.as_deref(),
        cfg.stderr.as_deref(),
    )
    .map_err(|(what, path, source)| VmmError::Stdio { what, path, source })?;
    files
        .import_inherited(&cfg.inherit_fds)
        .map_err(|e| VmmError::Config(e.to_string()))?;
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
    // The stack, its guard below it, and room under that for a small program (a non-PIE
    // static ELF is linked at 4 MiB).
    if memory < (8 << 20) + MAIN_STACK + STACK_GUARD {
        return Err(VmmError::Config(format!(
            "--memory {} MiB is too small: the HPC VMM needs at least {} MiB",
            cfg.memory >> 20,
            ((8 << 20) + MAIN_STACK + STACK_GUARD) >> 20
        )));
    }
    Ok(Validated {
        program,
        interp,
        fsroot,
        files,
        memory,
    })
}

/// The interpreter `interp` of `program`, looked up inside the guest's root as the guest's
/// execve would, and checked the way Linux's binfmt_elf checks one (refused up front when it
/// is missing, not an ELF, or itself dynamically linked).
fn read_interpreter(
    program: &Program,
    interp: &str,
    fsroot: &FsRoot,
    root: &Path,
) -> Result<Program, VmmError> {
    use std::io::Read;
    let bad = |why: String| ElfError::BadInterpreter {
        path: program.path().to_string(),
        interp: interp.to_string(),
        why,
    };
    let fd = match fsroot.open_in_root(interp.as_bytes(), libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.0 == libc::ENOENT || e.0 == libc::ENOTDIR => {
            return Err(ElfError::InterpreterMissing {
                path: program.path().to_string(),
                interp: interp.to_string(),
                root: std::fs::canonicalize(root)
                    .unwrap_or_else(|_| root.to_path_buf())
                    .display()
                    .to_string(),
            }
            .into())
        }
        Err(e) => {
            return Err(bad(std::io::Error::from_raw_os_error(e.0).to_string()).into());
        }
    };
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    let ip = Program::from_bytes(interp, bytes).map_err(|e| bad(e.to_string()))?;
    ip.check_interpreter(program.path(), interp)?;
    Ok(ip)
}

/// `/dev/kvm`'s device number (misc major 10, minor 232).
const KVM_RDEV: (u32, u32) = (10, 232);

/// A `Kvm` on a duplicate of descriptor `fd`, which must be an open `/dev/kvm` (a character
/// device 10:232): anything else is refused rather than handed to KVM ioctls.
fn handed_kvm(fd: i32) -> Result<Kvm, VmmError> {
    let what = "use the handed-over /dev/kvm descriptor";
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the stat buffer we own.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(kvm_err(what)(kvm_ioctls::Error::last()));
    }
    let is_kvm = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == KVM_RDEV;
    if !is_kvm {
        return Err(kvm_err(what)(kvm_ioctls::Error::new(libc::ENODEV)));
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor; the Kvm owns it (the original stays
    // open for a later run of this process).
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(kvm_err(what)(kvm_ioctls::Error::last()));
    }
    // SAFETY: `dup` is an open /dev/kvm descriptor nobody else owns.
    Ok(unsafe { Kvm::from_raw_fd(dup) })
}

/// KVM handles of a run.
struct KvmVm {
    kvm: Kvm,
    vm: VmFd,
    cpuid: CpuId,
    xcr0: u64,
    features: CpuFeatures,
}

/// Phase 2: open KVM (or use the `/dev/kvm` handed over in `kvm_fd`), create the VM, read the
/// CPU features the guest gets.
fn create_vm(kvm_fd: Option<i32>) -> Result<KvmVm, VmmError> {
    let kvm = match kvm_fd {
        None => Kvm::new().map_err(kvm_err("open /dev/kvm"))?,
        Some(fd) => handed_kvm(fd)?,
    };
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
    let mut mem = match &cfg.warm_memory {
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
    // The window for memory shared with other VMs (MAP_SHARED files, SysV segments).
    let window = crate::shmem::window_for(size);
    if let Some(w) = window {
        let w = crate::shmem::SharedWindow::reserve(w).map_err(|e| {
            VmmError::Setup(format!("cannot reserve the shared-memory window: {e}"))
        })?;
        mem.attach_shared_window(w);
    }
    let paging = layout::build_with_window(&mem, page_size, window)
        .map_err(|e| VmmError::Setup(e.to_string()))?;
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
    /// The interpreter's image and guest path, for a dynamically linked program.
    interp: Option<(LoadedImage, String)>,
    /// Where the program break starts.
    brk_start: u64,
    /// Initial stack pointer (argc, argv, envp, auxv above it).
    sp: u64,
    exe_path: String,
    creds: Credentials,
}

/// Where an ET_DYN image goes when it is placed like an mmap (top-down below `top`, aligned to
/// its largest segment alignment), as Linux places an interpreter, or a loader run directly.
fn top_down_base(p: &Program, top: u64) -> u64 {
    top.saturating_sub(p.span()) & !(p.max_align() - 1)
}

/// Where the program break of a directly run loader (or static-pie) starts: Linux moves it
/// out of the mmap area to ELF_ET_DYN_BASE; here, above where non-PIE programs the loader
/// maps at 0x400000 are likely to end (32 MiB, or lower in small guests).
fn loader_brk_base(image_start: u64) -> u64 {
    let want = 32u64 << 20;
    let cap = (image_start / 4) & !((2 << 20) - 1);
    want.min(cap).max(USER_START)
}

/// The program's image, its interpreter's (with its guest path), and where brk starts.
type Placed = (LoadedImage, Option<(LoadedImage, String)>, u64);

/// Lay out the program (and its interpreter) the way Linux's binfmt_elf does, scaled to the
/// guest's memory: ET_EXEC where linked; a PIE with an interpreter at its low default base;
/// the interpreter, or an ET_DYN program without one (a loader run directly, static-pie),
/// top-down just below the stack like an mmap.
fn place_images(
    program: &Program,
    interp: Option<&(String, Program)>,
    mem: &GuestMemory,
    mmap_top: u64,
) -> Result<Placed, VmmError> {
    match interp {
        Some((ipath, ip)) => {
            let image = program.load(mem, mmap_top)?;
            let base = top_down_base(ip, mmap_top);
            if base < image.end {
                return Err(ElfError::DoesNotFit {
                    path: ipath.clone(),
                    vaddr: base,
                    memsz: ip.span(),
                    low: image.end,
                    high: mmap_top,
                }
                .into());
            }
            let ii = ip.load_at(mem, base, mmap_top)?;
            Ok((image, Some((ii, ipath.clone())), image.end))
        }
        None if program.is_pie() => {
            let image = program.load_at(mem, top_down_base(program, mmap_top), mmap_top)?;
            Ok((image, None, loader_brk_base(image.start)))
        }
        None => {
            let image = program.load(mem, mmap_top)?;
            Ok((image, None, image.end))
        }
    }
}

/// Phase 4: load the ELF (and its interpreter), build the initial stack, point the launch
/// stub at the entry (the interpreter's, for a dynamic program).
fn load_program(
    cfg: &RunConfig,
    v: &Validated,
    mem: &BuiltMemory,
    feat: &CpuFeatures,
    timebase: Option<&crate::vdso::TimeBase>,
) -> Result<Loaded, VmmError> {
    let stack_top = mem.paging.usable_end;
    let (image, interp, brk_start) = place_images(
        &v.program,
        v.interp.as_ref(),
        &mem.mem,
        // Below the stack and its guard (which is unmapped in the guest's page tables).
        stack_top - MAIN_STACK - STACK_GUARD,
    )?;
    let exe_path = guest_path_of_program(&cfg.root, &cfg.program);
    let execfn = execfn_of(cfg, &exe_path);
    let mut random = [0u8; 16];
    getrandom_host(&mut random)?;
    let creds = match &cfg.identity {
        Some(id) => Credentials {
            uid: id.uid,
            euid: id.uid,
            gid: id.gid,
            egid: id.gid,
        },
        None => Credentials::of_host(),
    };
    let argv: Vec<Vec<u8>> = cfg.argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    let envp: Vec<Vec<u8>> = cfg.env.iter().map(|s| s.as_bytes().to_vec()).collect();
    let spec = StackSpec {
        argv: &argv,
        envp: &envp,
        execfn: execfn.as_bytes(),
        image: &image,
        interp_base: interp.as_ref().map_or(0, |(i, _)| i.start),
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
    let entry = interp.as_ref().map_or(image.entry, |(i, _)| i.entry);
    mem.mem
        .write_u64(layout::LAUNCH_ENTRY_SLOT, entry)
        .map_err(|e| VmmError::Setup(e.to_string()))?;
    if let Some(tb) = timebase {
        crate::vdso::install(&mem.mem, tb).map_err(|e| VmmError::Setup(e.to_string()))?;
    }
    Ok(Loaded {
        image,
        interp,
        brk_start,
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
    let auxv = read_auxv(&mem, loaded.sp);
    let image_vma = |path: &str| VmaAttrs {
        prot: libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        backing: VmaBacking::FileCopy {
            path: Some(path.to_string()),
            offset: 0,
        },
        label: None,
    };
    let mut images = vec![(
        loaded.image.start,
        loaded.image.end,
        image_vma(&loaded.exe_path),
    )];
    if let Some((i, path)) = &loaded.interp {
        images.push((i.start, i.end, image_vma(path)));
    }
    let mut mm = AddressSpace::with_images(USER_START, stack_top, &images, loaded.brk_start);
    let stack = VmaAttrs {
        label: Some("[stack]"),
        ..VmaAttrs::anonymous()
    };
    mm.map_with(stack_top - MAIN_STACK, MAIN_STACK, true, false, stack)
        .map_err(|_| VmmError::Setup("no room for the stack".into()))?;
    // The guard is never handed out by mmap (it is not mapped in the guest page tables).
    let guard = VmaAttrs {
        prot: libc::PROT_NONE,
        label: Some("[stack guard]"),
        ..VmaAttrs::anonymous()
    };
    mm.map_with(
        stack_top - MAIN_STACK - STACK_GUARD,
        STACK_GUARD,
        true,
        false,
        guard,
    )
    .map_err(|_| VmmError::Setup("no room for the stack guard".into()))?;
    if let Some(w) = mem.shared_window() {
        let (lo, hi) = w.bounds();
        mm.shared = crate::kernel::mm::SharedArea::new(lo, hi);
    }
    mem.restrict_to(USER_START, stack_top);
    let mem = Arc::new(mem);
    let mut group = ThreadGroup::new(GroupParts {
        mem: mem.clone(),
        mm,
        files: v.files,
        fs: v.fsroot,
        creds: loaded.creds,
        limits: Limits::new(MAIN_STACK, layout::MAX_VCPUS as u64),
        exe_path: loaded.exe_path.clone(),
        uts: read_release()?,
    });
    if cfg.host_pid {
        // SAFETY: getpid has no preconditions.
        group.set_pid(unsafe { libc::getpid() });
    }
    group.proc = ProcInfo {
        argv: cfg.argv.clone(),
        env: cfg.env.clone(),
        auxv,
        exe_host: std::fs::canonicalize(&cfg.program).unwrap_or_else(|_| cfg.program.clone()),
        host_cpus: cfg.cpus.clone(),
        mem_total: v_memory(cfg),
        groups: match &cfg.identity {
            Some(id) => id.groups.clone(),
            None => crate::jail::identity::current_groups(),
        },
    };
    let run = Run::new(cfg.cpus.len());
    run.set_net(cfg.net);
    Ok(KernelBuilt {
        kernel: Kernel { run, group },
        mem,
        setup,
    })
}

/// The auxiliary vector on the initial stack at `sp` (argc, argv..., NULL, envp..., NULL,
/// then (type, value) pairs up to AT_NULL), for /proc/self/auxv.
fn read_auxv(mem: &GuestMemory, sp: u64) -> Vec<u8> {
    let word = |a: u64| mem.read_u64(a).ok();
    let mut out = Vec::new();
    let Some(argc) = word(sp) else { return out };
    let mut p = sp + 8 * (argc + 2);
    while let Some(w) = word(p) {
        p += 8;
        if w == 0 {
            break;
        }
    }
    for _ in 0..64 {
        let (Some(t), Some(v)) = (word(p), word(p + 8)) else {
            break;
        };
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
        p += 16;
        if t == 0 {
            break;
        }
    }
    out
}

/// The clock slots and group fields of the fast system call entry. It is on with the vDSO's
/// TSC clock and RDPID (KVM's CPUID, or the host CPU's where the guest's user code sees the
/// host's CPUID; a #UD on its RDPID switches it off, see vcpu.rs).
fn init_clocks(m: &Machine, tb: Option<&crate::vdso::TimeBase>, kvm_rdpid: &bool, usable_end: u64) {
    use crate::kernel::clocks;
    let host_rdpid = std::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << 22) != 0;
    let mut flags = 0;
    if let Some(tb) = tb {
        m.kernel.run.set_clock(clocks::ClockBase {
            tsc_base: tb.tsc_base,
            mult: tb.mult,
            mono_ns: tb.mono_ns,
            offset: tb.host_offset,
        });
        if *kvm_rdpid || host_rdpid {
            flags |= clocks::FLAG_FAST;
        }
    }
    let guard = usable_end - MAIN_STACK - STACK_GUARD;
    clocks::init(
        &*m.mem,
        &clocks::Vars {
            flags,
            pid: m.kernel.group.pid(),
            lo: USER_START,
            hi: usable_end,
            bad: (guard, guard + STACK_GUARD),
        },
    );
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
        // Up to the stack guard; the stack above it is the second pass (see vcpu.rs).
        rsi: usable_end - MAIN_STACK - STACK_GUARD,
        r8: 2 << 20,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu::set_entry(vcpu0, &regs, 0, 0)?;
    if prefault {
        m.set_second_prefault(usable_end - MAIN_STACK, usable_end);
    }
    Ok(())
}

/// Phase 7: start the main thread on vCPU 0.
fn spawn(m: &Arc<Machine>, vcpu0: VcpuFd, ncpus: usize) -> Result<(), VmmError> {
    let mut main = Task::main(m.kernel.group.pid(), ncpus);
    // Linux names a process after the file it executed.
    let exe = &m.kernel.group.exe_path;
    main.comm = crate::kernel::task::comm_of(exe.rsplit('/').next().unwrap_or(exe).as_bytes());
    m.spawn(0, vcpu0, main)
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
        calls_answered_in_guest: u64::from(
            m.mem
                .system_read_u32(layout::FAST_COUNTERS + 4)
                .unwrap_or(0),
        ),
        syscalls: BTreeMap::new(),
        enosys: BTreeMap::new(),
        kvm_vm_before: BTreeMap::new(),
        kvm_vm_delta: BTreeMap::new(),
        kvm_vcpu_delta: BTreeMap::new(),
        kvm_vcpu_at_launch: m.launch_kvm(),
        vcpus,
        refusals: m.kernel.run.refusals(),
        jail: None,
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
    let mut tb =
        crate::vdso::TimeBase::new(khz, (h1 / 2 + h2 / 2).wrapping_add(offset), mono, real);
    tb.host_offset = offset;
    Some(tb)
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
