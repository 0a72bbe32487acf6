//! `dualstack run`: one program (static or dynamically linked) in the HPC VMM. (Issues 2, 11.) Argument parsing and
//! printing only: the job is resolved, checked and run by `dualstack-jobs`.

use std::path::PathBuf;

use dualstack_hpcvmm::{GuestPageSize, HugePageSize};
use dualstack_jobs::{Host, JobSpec, MemoryBacking, ZoneSel};
use dualstack_topology::CpuList;

use crate::common::GlobalOpts;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingArg {
    /// Preallocated, locked hugetlbfs pages (the HPC VMM's way).
    Hugetlb,
    /// Anonymous 4 KiB pages faulted on demand (a commodity VMM's way).
    Lazy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetArg {
    Host,
    Loopback,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePagesArg {
    #[value(name = "2M")]
    M2,
    #[value(name = "1G")]
    G1,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSizeArg {
    #[value(name = "4K")]
    K4,
    #[value(name = "2M")]
    M2,
    #[value(name = "1G")]
    G1,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Number of host cores for the run (the first N the caller may use, or of the zone's).
    #[arg(long, conflicts_with = "cpuset_cpus")]
    pub cpus: Option<usize>,
    /// Exact host cores for the run, e.g. "2-5,8".
    #[arg(long, value_name = "LIST", value_parser = CpuList::parse_list)]
    pub cpuset_cpus: Option<CpuList>,
    /// Run inside this HPC zone: its cores and its huge pages.
    #[arg(long)]
    pub zone: Option<String>,
    /// Guest memory, e.g. 512M, 4G [default: 512M, or all of the zone's memory with --zone].
    #[arg(long, value_parser = dualstack_topology::parse_size)]
    pub memory: Option<u64>,
    /// Huge page size of the hugetlb backing [default: 2M, or the zone's with --zone].
    #[arg(long, value_enum)]
    pub hugepages: Option<HugePagesArg>,
    /// How guest memory is backed.
    #[arg(long, value_enum, default_value = "hugetlb")]
    pub memory_backing: BackingArg,
    /// Page size of the guest's page tables (default: 2M/1G with hugetlb, 4K with lazy).
    #[arg(long, value_enum)]
    pub guest_pages: Option<PageSizeArg>,
    /// NUMA node to take the huge pages from.
    #[arg(long)]
    pub numa_node: Option<u32>,
    /// Host directory the guest sees as its filesystem root. The default, `/`, shows the
    /// guest the host's files exactly as its user would see them; a directory confines it.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Run the guest as USER[:GROUP] (names or numeric ids) [default: the invoking user,
    /// SUDO_UID/SUDO_GID under sudo]. Only root may name another identity.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Developer switch, root only: serve the guest from this process without the jail (no
    /// privilege drop, Landlock or seccomp; the guest's own /proc and device checks stay).
    #[arg(long)]
    pub no_jail: bool,
    /// Extra environment variable for the guest (KEY=VALUE); repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Start the guest with an empty environment (plus --env).
    #[arg(long)]
    pub clear_env: bool,
    /// Serve every clock read as a system call (no vDSO).
    #[arg(long)]
    pub no_vdso: bool,
    /// Write the run's statistics as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Publish live counters of the running guest to this file (the daemon's job supervisor
    /// sets it; see dualstack_hpcvmm::live).
    #[arg(long, value_name = "FILE", hide = true)]
    pub live_stats: Option<PathBuf>,
    /// Print a one-line summary of the run on stderr.
    #[arg(long)]
    pub summary: bool,
    /// Let the vCPU threads float over the run's CPUs instead of pinning one to each (a
    /// commodity VMM's way).
    #[arg(long)]
    pub no_pin: bool,
    /// What the guest may do on the network: host (what your own processes may), loopback
    /// (bind, connect and send to loopback addresses only) or none (no Internet sockets; Unix
    /// sockets stay, as an MPI launcher's). Refused calls answer EACCES and are counted in the
    /// run's statistics.
    #[arg(long, value_enum, default_value = "host")]
    pub net: NetArg,
    /// End the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// The program and its arguments.
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub program: Vec<String>,
}

/// The job these options ask for. The guest inherits this process's environment unless
/// `--clear-env`; `--env` entries come last, so they win.
pub fn job_spec(args: &RunArgs) -> JobSpec {
    let mut spec = JobSpec::new(args.program[0].clone(), args.program[1..].to_vec());
    if !args.clear_env {
        spec.env = std::env::vars_os()
            .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v.to_str()?)))
            .collect();
    }
    spec.env.extend(args.env.iter().cloned());
    spec.root = args.root.clone();
    spec.cwd = guest_cwd(&args.root);
    spec.user = args.user.clone();
    spec.jail = !args.no_jail;
    spec.zone = ZoneSel::from_option(args.zone.as_deref());
    spec.cpus = args.cpus;
    spec.cpuset_cpus = args.cpuset_cpus.clone();
    spec.memory = args.memory;
    spec.hugepages = args.hugepages.map(|h| match h {
        HugePagesArg::M2 => HugePageSize::Size2M,
        HugePagesArg::G1 => HugePageSize::Size1G,
    });
    spec.memory_backing = match args.memory_backing {
        BackingArg::Hugetlb => MemoryBacking::Hugetlb,
        BackingArg::Lazy => MemoryBacking::Lazy,
    };
    spec.guest_pages = args.guest_pages.map(|p| match p {
        PageSizeArg::K4 => GuestPageSize::Size4K,
        PageSizeArg::M2 => GuestPageSize::Size2M,
        PageSizeArg::G1 => GuestPageSize::Size1G,
    });
    spec.numa_node = args.numa_node;
    spec.timeout_s = args.timeout;
    spec.pin = !args.no_pin;
    spec.vdso = !args.no_vdso;
    spec.stats = args.stats.clone();
    spec.live_stats = args.live_stats.clone();
    spec.net = match args.net {
        NetArg::Host => dualstack_hpcvmm::NetPolicy::Host,
        NetArg::Loopback => dualstack_hpcvmm::NetPolicy::Loopback,
        NetArg::None => dualstack_hpcvmm::NetPolicy::None,
    };
    spec
}

/// The guest's working directory: this process's, as seen inside the guest's root (so
/// `--root / -- ld.so ./prog` finds `./prog` as a shell would, and as `runsc do` does), or `/`
/// when it lies outside.
fn guest_cwd(root: &std::path::Path) -> String {
    let (Ok(cwd), Ok(root)) = (std::env::current_dir(), std::fs::canonicalize(root)) else {
        return "/".into();
    };
    let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    match cwd.strip_prefix(&root) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".into(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => "/".into(),
    }
}

pub fn run(args: RunArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if let Some(socket) = &global.api {
        return crate::cmd_api::run(&args, socket);
    }
    let mut spec = job_spec(&args);
    // An open /dev/kvm a privileged helper handed this process (the Slurm SPANK plugin, for
    // a step running as its user): the VMM's, never the guest's.
    spec.kvm_fd = handed_kvm_fd();
    spec.env
        .retain(|e| !e.starts_with(&format!("{}=", dualstack_slurm::KVM_FD_VAR)));
    // What a native exec would pass on (an MPI launcher's PMI_FD and the like): the guest
    // gets them at the same numbers. Everything this process opened itself is O_CLOEXEC.
    spec.inherit_fds = dualstack_hpcvmm::kernel::files::inheritable_host_fds()
        .into_iter()
        .filter(|&fd| Some(fd) != spec.kvm_fd)
        .collect();
    // Started by an MPI launcher (mpiexec, mpirun, srun): one rank's share of the node.
    spec.local_rank = dualstack_jobs::launcher::LocalRank::from_env();
    let mut host = Host::from_env(&global.state_dir);
    // Inside a Slurm job step without --zone: this node's zone of the job (issue 14).
    if args.zone.is_none() {
        if let Some(sz) = crate::cmd_slurm::step_zone()? {
            crate::cmd_slurm::check_step_zone(&sz)?;
            if sz.as_user {
                // Running as the job's user: the zone as the prolog handed it.
                crate::cmd_slurm::check_kvm_for_user_step(&sz, spec.kvm_fd)?;
                spec.zone = ZoneSel::Delegated(Box::new(sz.zone.clone()));
            } else {
                spec.zone = ZoneSel::Named(sz.zone.name.clone());
            }
            host = Host::new(sz.paths.clone());
        }
    }
    let host = host.with_apps_dir(crate::common::apps_dir());
    dualstack_jobs::trace::mark("run.job");
    let result = match dualstack_jobs::run(&spec, &host) {
        Ok(r) => r,
        // The jail caught a VMM bug (seccomp) or the VMM child died: its own exit status.
        Err(e) if e.exit_code() != 1 => {
            let code = e.exit_code();
            crate::common::print_error(&anyhow::Error::from(e));
            return Ok(code);
        }
        Err(e) => return Err(e.into()),
    };
    report(&result.stats, args.summary);
    if spec.local_rank.is_some() {
        if let dualstack_hpcvmm::ExitReport::Faulted(f) = &result.stats.exit {
            // A rank's launcher tells a crash from an exit by how the process ended: end the
            // way the program did natively, killed by its signal (Hydra and mpirun then abort
            // the job and name the signal).
            die_by_signal(f.signal);
        }
    }
    Ok(result.exit_status)
}

/// The descriptor `DUALSTACK_KVM_FD` names, when it is one of this process's open
/// descriptors (the VMM checks it is /dev/kvm before using it).
fn handed_kvm_fd() -> Option<i32> {
    let fd: i32 = std::env::var(dualstack_slurm::KVM_FD_VAR)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    (fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).then_some(fd)
}

/// End this process with signal `sig` (no core dump of the VMM itself); returns only if the
/// signal did not end it.
fn die_by_signal(sig: i32) {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on this process: no core file, default action, unblocked.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// Print the fault/timeout report and the summary.
pub fn report(stats: &dualstack_hpcvmm::RunStats, summary: bool) {
    use dualstack_hpcvmm::ExitReport;
    match &stats.exit {
        ExitReport::Faulted(f) => {
            eprint!(
                "dualstack: guest killed by {} ({}): {} at rip {:#x}",
                f.signal_name, f.signal, f.what, f.rip
            );
            if let Some(a) = f.addr {
                eprint!(", address {a:#x}");
            }
            if let Some(e) = f.error_code {
                eprint!(", error code {e:#x}");
            }
            eprintln!(" (thread {}, vCPU {})", f.tid, f.vcpu);
        }
        ExitReport::TimedOut { after_s } => {
            eprintln!(
                "dualstack: guest did not finish within --timeout; stopped after {after_s:.2} s"
            );
        }
        ExitReport::VmmError { message } => {
            eprintln!("dualstack: VMM error while the guest ran: {message}")
        }
        ExitReport::Exited { .. } => {}
    }
    if summary {
        eprintln!("{}", stats.summary());
    }
}
