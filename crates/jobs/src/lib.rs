//! `dualstack-jobs`: run a program in the HPC VMM, in an HPC zone or not. The one place that
//! turns a request into a VMM run: `dualstack run`, the isolation experiment and (later) the
//! daemon and the Slurm glue all go through it.
//!
//! Two steps, so a caller can check a job (and report what it will do) before it runs:
//!
//! 1. [`prepare`]`(&JobSpec, &Host) -> Result<PreparedJob, JobError>` resolves everything and
//!    checks it without touching the host: the program (a path, or a bundled mini-app in
//!    [`Host::apps_dir`]), the environment, the CPUs (a subset of the caller's, or of the
//!    zone's), and for a zone: that it exists, is active, holds the cores and the memory asked
//!    for, and has huge pages of a size the VMM maps. It derives the
//!    [`dualstack_hpcvmm::RunConfig`] ([`PreparedJob::config`]).
//!    It also resolves who the guest runs as ([`JobSpec::user`], default the invoking user) and
//!    refuses an unknown user, a non-root caller asking for another identity, or `--no-jail`
//!    from a non-root caller, before any VM exists.
//! 2. [`PreparedJob::run`]`(self) -> Result<JobResult, JobError>` re-reads the zone (it must be
//!    the same, still active), claims a disjoint extent of the zone's warm memory when it has
//!    one (waiting for pages still being zeroed after an earlier job; the VMM then only maps
//!    it, and the extent goes to a background zeroer when the job ends, see
//!    [`dualstack_zones::memory`]), moves the calling process into the zone's cgroup, runs the VMM
//!    (by default in a forked child that drops to the job's user, with no capability, Landlock
//!    and seccomp, while this process stays privileged and only waits: see
//!    [`dualstack_hpcvmm::jail`]),
//!    moves the process back (also on error), writes the statistics file if asked, and returns
//!    the exit status `dualstack run` exits with (the guest's status, 128 + signal for a
//!    fault, 124 for a timeout) with the run's statistics.
//!
//! [`run`] does both. The calling *process* (all its threads) joins the zone's cgroup for the
//! run, so run one zone job at a time per process.
//!
//! ```no_run
//! use dualstack_jobs::{prepare, Host, JobSpec, ZoneSel};
//! let host = Host::from_env("/var/lib/dualstack".as_ref());
//! let mut spec = JobSpec::new("hpccg", vec!["--threads".into(), "1".into()]);
//! spec.zone = ZoneSel::Named("hpc0".into());
//! let job = prepare(&spec, &host).unwrap();
//! println!("on cpus {:?}", job.config().cpus);
//! let result = job.run().unwrap();
//! std::process::exit(result.exit_status);
//! ```
//!
//! Errors ([`JobError`]) say what was asked, what was found and what to do; nothing on the host
//! has changed when [`prepare`] fails, and [`PreparedJob::run`] leaves the process in its
//! original cgroup whatever happens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dualstack_hpcvmm::jail::run::run_jailed;
use dualstack_hpcvmm::jail::{Caller, Jail, SuperviseOptions, UserSpec};
use dualstack_hpcvmm::{
    Backing, HugePageSize, RunConfig, RunStats, VmmError, WarmMemory, WarmPart,
};
use dualstack_topology::{CpuList, CpuRequest, ZoneRequest, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB};
use dualstack_zones::{HostPaths, Zone, ZoneError, ZoneOptions, ZoneState};
use serde::{Deserialize, Serialize};

pub mod launcher;
pub mod lease;
pub mod setting;
pub mod spec;
pub mod trace;

pub use dualstack_hpcvmm::jail::{Caller as JobCaller, Identity, JailReport};
pub use lease::{Lease, LeaseError, LeaseReport};
pub use spec::{JobSpec, MemoryBacking, ZoneSel};

/// Guest memory when neither the job nor a zone says otherwise.
pub const DEFAULT_MEMORY: u64 = 512 << 20;

/// Where jobs run: the host's zone state and cgroups, and where bundled mini-apps live.
#[derive(Clone, Debug)]
pub struct Host {
    zones: Result<HostPaths, String>,
    apps_dir: Option<PathBuf>,
}

impl Host {
    /// A host whose zones are described by `paths` (a real host or a fake tree).
    pub fn new(paths: HostPaths) -> Self {
        Host {
            zones: Ok(paths),
            apps_dir: None,
        }
    }

    /// This machine, with the environment overrides of [`HostPaths::from_env`] (zone state in
    /// `state_dir`). Never fails: on a host without a cpuset controller, jobs without a zone
    /// still run and a zone job is refused with the reason.
    pub fn from_env(state_dir: &Path) -> Self {
        Host {
            zones: HostPaths::from_env(state_dir).map_err(|e| e.to_string()),
            apps_dir: None,
        }
    }

    /// Look up programs given by bare name in `dir` too.
    pub fn with_apps_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.apps_dir = dir;
        self
    }

    /// The zones' paths, if this host has zones.
    pub fn paths(&self) -> Option<&HostPaths> {
        self.zones.as_ref().ok()
    }

    /// Where bare program names are looked up.
    pub fn apps_dir(&self) -> Option<&Path> {
        self.apps_dir.as_deref()
    }
}

/// Everything that can stop a job, each naming what was asked, what was found and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("--zone {zone}: this host has no usable HPC zones ({reason})")]
    NoZones { zone: String, reason: String },
    #[error("the job names no program")]
    NoProgram,
    #[error(transparent)]
    Identity(#[from] dualstack_hpcvmm::jail::IdentityError),
    #[error("--no-jail is a developer switch for root only (you are uid {uid}): the guest must run in the jail, with exactly your rights")]
    NoJailNotRoot { uid: u32 },
    #[error("--user {user} needs the jail: drop --no-jail (without the jail the VMM keeps its own identity)")]
    UserWithoutJail { user: String },
    #[error("the jail supervisor failed")]
    Jail(#[from] dualstack_hpcvmm::jail::JailError),
    #[error("{message}")]
    JailedVmm { message: String },
    #[error("{message}")]
    SeccompKilled { message: String },
    #[error("the jailed VMM ended before reporting ({end})")]
    VmmDied { end: String, exit_code: i32 },
    #[error("--env {entry}: expected KEY=VALUE")]
    BadEnv { entry: String },
    #[error("--timeout {value}: expected a positive number of seconds")]
    BadTimeout { value: f64 },
    #[error("--cpus and --cpuset-cpus both given ({count} and {list}); give one")]
    CpusTwice { count: usize, list: CpuList },
    #[error("--cpuset-cpus {list:?} is empty; name the CPUs, e.g. 0-3")]
    NoCpus { list: String },
    #[error("reading this process's CPU affinity")]
    Affinity(#[source] std::io::Error),
    #[error(
        "--cpuset-cpus {list}: CPU {cpu} is not available to this process (allowed: {allowed:?})"
    )]
    CpuNotAllowed {
        list: CpuList,
        cpu: u32,
        allowed: Vec<usize>,
    },
    #[error("--cpus {asked}: this process may use {} CPUs ({allowed:?})", allowed.len())]
    TooManyCpus { asked: usize, allowed: Vec<usize> },
    #[error("--memory-backing lazy and --hugepages/--numa-node both given: huge page options apply to the hugetlb backing; drop one")]
    LazyWithHugePages,
    #[error(transparent)]
    Zone(#[from] Box<ZoneError>),
    #[error("--zone auto: this host has no usable HPC zones ({reason})")]
    AutoZoneNode { reason: String },
    #[error("--zone auto: carving transient zone {name} for the run")]
    AutoZoneCreate {
        name: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error(
        "--zone auto: releasing transient zone {name} after the run (`dualstack recover` retries)"
    )]
    AutoZoneRelease {
        name: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error("--zone auto and --memory-backing lazy: a zone's memory is its huge pages")]
    AutoZoneLazy,
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("supervising the run")]
    Supervise(#[source] dualstack_hpcvmm::jail::JailError),
    #[error("{0}")]
    InChild(String),
    /// The run ended before reporting (killed by a signal): `status` is 128 + signal.
    #[error("the run was ended by signal {signal} before it finished; gave back {released}")]
    Killed {
        status: i32,
        signal: i32,
        released: String,
    },
    #[error("zone {zone} is {state}, not active: run `dualstack recover` first")]
    ZoneNotActive { zone: String, state: ZoneState },
    #[error("--cpus {asked} is more than zone {zone} holds ({holds} CPUs: {cpus}); create the zone with more --cpus or ask for fewer")]
    ZoneTooFewCpus {
        zone: String,
        asked: usize,
        holds: usize,
        cpus: CpuList,
    },
    #[error("--cpuset-cpus {asked}: CPUs {outside} are not in zone {zone} (it holds {cpus})")]
    ZoneCpusOutside {
        zone: String,
        asked: CpuList,
        outside: CpuList,
        cpus: CpuList,
    },
    #[error("--memory {} MiB is more than zone {zone} holds ({} MiB); create the zone with more --memory or ask for less", asked >> 20, holds >> 20)]
    ZoneTooLittleMemory {
        zone: String,
        asked: u64,
        holds: u64,
    },
    #[error("zone {zone}'s memory is its huge pages: run in it with the hugetlb backing (the default), or without --zone for --memory-backing lazy")]
    ZoneLazy { zone: String },
    #[error("--hugepages {asked}: zone {zone} holds {holds} KiB huge pages; leave --hugepages out in a zone")]
    ZoneHugePages {
        zone: String,
        asked: &'static str,
        holds: u64,
    },
    #[error("zone {zone} holds {kib} KiB huge pages, which the HPC VMM does not map (it takes 2 MiB or 1 GiB); create the zone with --hugepage-size 2M or 1G")]
    ZonePageSize { zone: String, kib: u64 },
    #[error("--numa-node {asked}: zone {zone}'s memory is on NUMA node {holds}; leave --numa-node out in a zone")]
    ZoneNuma {
        zone: String,
        asked: u32,
        holds: u32,
    },
    #[error("zone {zone} changed between preparing and running the job (now {state}, CPUs {cpus}); prepare it again")]
    ZoneChanged {
        zone: String,
        state: ZoneState,
        cpus: CpuList,
    },
    #[error("zone {zone} has warm memory (populated hugetlbfs files in the state dir), which a job running as its user cannot claim yet: make the zone without warm memory")]
    DelegatedWarmMemory { zone: String },
    #[error("entering zone {zone}'s cgroup")]
    Enter {
        zone: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error("leaving zone {zone}'s cgroup after the run (the process may still be in {})", cgroup.display())]
    Leave {
        zone: String,
        cgroup: PathBuf,
        #[source]
        source: Box<ZoneError>,
    },
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error("writing statistics to {}", path.display())]
    Stats {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A checked job, ready to run: the VMM configuration and, for a zone job, the zone.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    config: RunConfig,
    /// The zone as `prepare` read it, and where its state lives.
    zone: Option<(Zone, HostPaths)>,
    stats: Option<PathBuf>,
    /// The jail the VMM runs in (`None`: `--no-jail`).
    jail: Option<Jail>,
    /// A run without a zone on the hugetlb backing: where to reserve its shortfall.
    reserve: Option<HostPaths>,
    /// `--zone auto`: the transient zone to carve at run time, and the spec to place in it.
    auto: Option<(HostPaths, ZoneRequest, Box<JobSpec>)>,
    /// [`ZoneSel::Delegated`]: the zone handed to the caller.
    delegated: Option<Zone>,
}

/// What a job did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobResult {
    /// What `dualstack run` exits with: the guest's exit status, 128 + signal when it was
    /// killed by a fault or signal, 124 when it timed out.
    pub exit_status: i32,
    /// The zone it ran in.
    pub zone: Option<String>,
    /// Seconds the VMM run took (entering and leaving the zone not included).
    pub wall_s: f64,
    /// The run's statistics (also written to [`JobSpec::stats`] when given).
    pub stats: RunStats,
}

/// Resolve and check `spec` on `host` without changing anything (see the crate docs).
pub fn prepare(spec: &JobSpec, host: &Host) -> Result<PreparedJob, JobError> {
    prepare_as(spec, host, &Caller::current()?)
}

/// [`prepare`] for a given caller (who asks decides which identities the job may take).
pub fn prepare_as(spec: &JobSpec, host: &Host, caller: &Caller) -> Result<PreparedJob, JobError> {
    let identity = if spec.jail {
        let user = spec
            .user
            .as_deref()
            .map(str::parse::<UserSpec>)
            .transpose()?;
        Some(dualstack_hpcvmm::jail::identity::resolve(
            user.as_ref(),
            caller,
        )?)
    } else {
        if !caller.is_root() {
            return Err(JobError::NoJailNotRoot { uid: caller.uid });
        }
        if let Some(user) = &spec.user {
            return Err(JobError::UserWithoutJail { user: user.clone() });
        }
        None
    };
    if spec.program.is_empty() {
        return Err(JobError::NoProgram);
    }
    let program = resolve_program(&spec.program, host.apps_dir());
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(spec.program.clone());
    argv.extend(spec.args.iter().cloned());
    let mut cfg = RunConfig::new(program, argv);
    cfg.env = environment(&spec.env)?;
    cfg.root = spec.root.clone();
    cfg.cwd = spec.cwd.clone();
    cfg.pin_vcpus = spec.pin;
    cfg.vdso = spec.vdso;
    cfg.guest_page_size = spec.guest_pages;
    cfg.stdin = spec.stdin.clone();
    cfg.stdout = spec.stdout.clone();
    cfg.stderr = spec.stderr.clone();
    cfg.inherit_fds = spec.inherit_fds.clone();
    cfg.kvm_fd = spec.kvm_fd;
    cfg.host_pid = spec.local_rank.is_some();
    cfg.net = spec.net;
    cfg.live_stats = spec.live_stats.clone();
    cfg.timeout = match spec.timeout_s {
        Some(t) if !(t.is_finite() && t > 0.0) => return Err(JobError::BadTimeout { value: t }),
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    if let (Some(count), Some(list)) = (spec.cpus, &spec.cpuset_cpus) {
        return Err(JobError::CpusTwice {
            count,
            list: list.clone(),
        });
    }
    if let Some(list) = &spec.cpuset_cpus {
        if list.is_empty() {
            return Err(JobError::NoCpus {
                list: list.to_list(),
            });
        }
    }
    let mut reserve = None;
    let mut auto = None;
    let mut delegated = None;
    let zone = match &spec.zone {
        ZoneSel::None => {
            place_on_host(spec, &mut cfg)?;
            if matches!(cfg.backing, Backing::Hugetlb { .. }) {
                reserve = host.paths().cloned();
            }
            None
        }
        ZoneSel::Named(name) => {
            let paths = host.zones.as_ref().map_err(|reason| JobError::NoZones {
                zone: name.clone(),
                reason: reason.clone(),
            })?;
            let zone = dualstack_zones::get(paths, name)?;
            place_in_zone(spec, &zone, &mut cfg)?;
            Some((zone, paths.clone()))
        }
        ZoneSel::Auto => {
            let paths = host
                .zones
                .as_ref()
                .map_err(|reason| JobError::AutoZoneNode {
                    reason: reason.clone(),
                })?;
            auto = Some((paths.clone(), auto_request(spec)?, Box::new(spec.clone())));
            None
        }
        ZoneSel::Delegated(zone) => {
            if zone.memory.is_some() {
                return Err(JobError::DelegatedWarmMemory {
                    zone: zone.name.clone(),
                });
            }
            place_in_zone(spec, zone, &mut cfg)?;
            delegated = Some((**zone).clone());
            None
        }
    };
    let jail = identity.map(|id| {
        let mut j = Jail::new(id.clone(), &cfg.root);
        // The program, when it lies outside the root (/proc/self/exe opens it).
        if let Ok(p) = std::fs::canonicalize(&cfg.program) {
            j.extra_read.push(p);
        }
        cfg.identity = Some(id);
        j
    });
    Ok(PreparedJob {
        config: cfg,
        zone,
        stats: spec.stats.clone(),
        jail,
        reserve,
        auto,
        delegated,
    })
}

/// The transient zone `--zone auto` carves: `--cpus` whole cores (default 1) or exactly
/// `--cpuset-cpus`, `--memory` (default [`DEFAULT_MEMORY`]) of `--hugepages` pages (default
/// 2M) on `--numa-node`.
fn auto_request(spec: &JobSpec) -> Result<ZoneRequest, JobError> {
    if spec.memory_backing == MemoryBacking::Lazy {
        return Err(JobError::AutoZoneLazy);
    }
    let page = spec.hugepages.unwrap_or(HugePageSize::Size2M);
    let cpus = match (&spec.cpuset_cpus, spec.cpus) {
        (Some(list), _) => CpuRequest::List(list.clone()),
        (None, n) => CpuRequest::Cores(n.unwrap_or(1) as u32),
    };
    Ok(ZoneRequest {
        cpus,
        memory_bytes: spec.memory.unwrap_or(DEFAULT_MEMORY).div_ceil(page.bytes()) * page.bytes(),
        numa_node: spec.numa_node,
        hugepage_kib: page.bytes() >> 10,
    })
}

/// [`prepare`] and [`PreparedJob::run`] in one call.
pub fn run(spec: &JobSpec, host: &Host) -> Result<JobResult, JobError> {
    prepare(spec, host)?.run()
}

/// A path as given when it names a file (or has a `/`), else a bundled mini-app of that name
/// when `apps_dir` has one, else the name as given (the VMM then says it cannot read it).
fn resolve_program(name: &str, apps_dir: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(name);
    if name.contains('/') || p.exists() {
        return p;
    }
    apps_dir
        .map(|d| d.join(name))
        .filter(|c| c.exists())
        .unwrap_or(p)
}

/// The environment in order, each key once (its last value, at the place of its last entry).
fn environment(entries: &[String]) -> Result<Vec<String>, JobError> {
    let mut env: Vec<String> = Vec::with_capacity(entries.len());
    for e in entries {
        let Some((key, _)) = e.split_once('=') else {
            return Err(JobError::BadEnv { entry: e.clone() });
        };
        if key.is_empty() {
            return Err(JobError::BadEnv { entry: e.clone() });
        }
        env.retain(|x| x.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(e.clone());
    }
    Ok(env)
}

/// No zone: the caller's CPUs, memory from the host's pools.
fn place_on_host(spec: &JobSpec, cfg: &mut RunConfig) -> Result<(), JobError> {
    let allowed = dualstack_hpcvmm::host_affinity().map_err(JobError::Affinity)?;
    cfg.cpus = match (&spec.cpuset_cpus, spec.cpus) {
        (Some(list), _) => {
            if let Some(cpu) = list.iter().find(|&c| !allowed.contains(&(c as usize))) {
                return Err(JobError::CpuNotAllowed {
                    list: list.clone(),
                    cpu,
                    allowed,
                });
            }
            list.iter().map(|c| c as usize).collect()
        }
        (None, Some(n)) => {
            if n == 0 || n > allowed.len() {
                return Err(JobError::TooManyCpus { asked: n, allowed });
            }
            allowed[..n].to_vec()
        }
        // One rank of an MPI job: its share of the cores, disjoint from the other ranks'.
        (None, None) => match spec.local_rank {
            Some(r) => r.share(&allowed),
            None => allowed,
        },
    };
    cfg.memory = spec.memory.unwrap_or(DEFAULT_MEMORY);
    cfg.backing = match spec.memory_backing {
        MemoryBacking::Hugetlb => Backing::Hugetlb {
            page_size: spec.hugepages.unwrap_or(HugePageSize::Size2M),
            numa_node: spec.numa_node,
        },
        MemoryBacking::Lazy if spec.hugepages.is_some() || spec.numa_node.is_some() => {
            return Err(JobError::LazyWithHugePages)
        }
        MemoryBacking::Lazy => Backing::Lazy,
    };
    Ok(())
}

/// The VMM's page size for a zone's huge pages (the one place that decides it).
pub fn zone_page_size(zone: &Zone) -> Result<HugePageSize, JobError> {
    match zone.hugepage_kib {
        HUGEPAGE_2M_KIB => Ok(HugePageSize::Size2M),
        HUGEPAGE_1G_KIB => Ok(HugePageSize::Size1G),
        kib => Err(JobError::ZonePageSize {
            zone: zone.name.clone(),
            kib,
        }),
    }
}

/// In a zone: its CPUs (or the asked subset), its memory, its huge pages on its node.
fn place_in_zone(spec: &JobSpec, zone: &Zone, cfg: &mut RunConfig) -> Result<(), JobError> {
    let name = || zone.name.clone();
    if zone.state != ZoneState::Active {
        return Err(JobError::ZoneNotActive {
            zone: name(),
            state: zone.state,
        });
    }
    let zcpus = zone.cpus();
    cfg.cpus = match (&spec.cpuset_cpus, spec.cpus) {
        (Some(list), _) => {
            let outside = list.difference(zcpus);
            if !outside.is_empty() {
                return Err(JobError::ZoneCpusOutside {
                    zone: name(),
                    asked: list.clone(),
                    outside,
                    cpus: zcpus.clone(),
                });
            }
            list.iter().map(|c| c as usize).collect()
        }
        (None, Some(n)) => {
            if n == 0 || n > zcpus.len() {
                return Err(JobError::ZoneTooFewCpus {
                    zone: name(),
                    asked: n,
                    holds: zcpus.len(),
                    cpus: zcpus.clone(),
                });
            }
            zcpus.iter().take(n).map(|c| c as usize).collect()
        }
        (None, None) => {
            let all: Vec<usize> = zcpus.iter().map(|c| c as usize).collect();
            match spec.local_rank {
                Some(r) => r.share(&all),
                None => all,
            }
        }
    };
    cfg.memory = match spec.memory {
        Some(m) if m > zone.memory_bytes() => {
            return Err(JobError::ZoneTooLittleMemory {
                zone: name(),
                asked: m,
                holds: zone.memory_bytes(),
            })
        }
        Some(m) => m,
        // One rank of several on the node: an equal share of the zone's huge pages.
        None => match spec.local_rank {
            Some(r) => {
                let page = zone.hugepage_kib << 10;
                (zone.memory_bytes() / r.size as u64) / page.max(1) * page.max(1)
            }
            None => zone.memory_bytes(),
        },
    };
    if spec.memory_backing == MemoryBacking::Lazy {
        return Err(JobError::ZoneLazy { zone: name() });
    }
    let page_size = zone_page_size(zone)?;
    if let Some(asked) = spec.hugepages {
        if asked != page_size {
            return Err(JobError::ZoneHugePages {
                zone: name(),
                asked: match asked {
                    HugePageSize::Size2M => "2M",
                    HugePageSize::Size1G => "1G",
                },
                holds: zone.hugepage_kib,
            });
        }
    }
    if let Some(asked) = spec.numa_node {
        if asked != zone.numa_node() {
            return Err(JobError::ZoneNuma {
                zone: name(),
                asked,
                holds: zone.numa_node(),
            });
        }
    }
    cfg.backing = Backing::Hugetlb {
        page_size,
        numa_node: Some(zone.numa_node()),
    };
    Ok(())
}

impl PreparedJob {
    /// The VMM configuration the job will run with.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The jail the VMM will run in (`None`: not jailed).
    pub fn jail(&self) -> Option<&Jail> {
        self.jail.as_ref()
    }

    /// The zone it will run in (as read by [`prepare`], or handed over).
    pub fn zone(&self) -> Option<&Zone> {
        self.zone
            .as_ref()
            .map(|(z, _)| z)
            .or(self.delegated.as_ref())
    }

    /// Run it (see the crate docs): take what the run needs for its lifetime only (the huge
    /// page shortfall, a transient zone: see [`lease`]), enter the zone's cgroup, run the VMM,
    /// leave, write the statistics file, give back what was taken.
    ///
    /// With a lease the VMM runs in a supervised child process (signals to this process are
    /// forwarded to it) so that this process gives the lease back however the run ends; a
    /// run ended by a signal is [`JobError::Killed`].
    pub fn run(mut self) -> Result<JobResult, JobError> {
        let mut leases = Vec::new();
        if let Some((paths, request, spec)) = self.auto.take() {
            let (lease, zone) = lease::zone(&paths, &request, &ZoneOptions::default())?;
            leases.push(lease);
            place_in_zone(&spec, &zone, &mut self.config)?;
            self.zone = Some((zone, paths));
        } else if let Some(paths) = self.reserve.take() {
            leases.extend(self.reserve_shortfall(&paths)?);
        }
        if self.jail.is_some() || !leases.iter().any(Lease::holds_host_resources) {
            // The jailed VMM already runs in a supervised child that gets this process's
            // signals, and a claim of free pages alone needs nothing given back if this
            // process dies (recovery drops it): this process runs the job, then gives the
            // leases back however it ended.
            let ran = self.run_here();
            let mut give_back = Ok(());
            for l in leases.into_iter().rev() {
                if let Err(e) = l.give_back() {
                    give_back = Err(e);
                }
            }
            let result = ran?;
            give_back?;
            return Ok(result);
        }
        let parent = std::process::id();
        let opts = dualstack_hpcvmm::jail::SuperviseOptions {
            forward_signals: true,
            keep_fds: Vec::new(),
            ..Default::default()
        };
        let ran = dualstack_hpcvmm::jail::run_in_child(&opts, |_side| {
            // Die with this process: a kill -9 of it must not leave the guest running.
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers; getppid has no
            // preconditions.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if libc::getppid() as u32 != parent {
                    libc::_exit(137);
                }
            }
            self.run_here().map_err(|e| error_chain(&e))
        });
        let released: Vec<String> = leases
            .iter()
            .filter(|l| l.holds_host_resources())
            .map(Lease::describe)
            .collect();
        let mut give_back = Ok(());
        for l in leases.into_iter().rev() {
            if let Err(e) = l.give_back() {
                give_back = Err(e);
            }
        }
        let ran = ran.map_err(JobError::Supervise)?;
        give_back?;
        match ran.result {
            Some(Ok(result)) => Ok(result),
            Some(Err(message)) => Err(JobError::InChild(message)),
            None => {
                let status = ran.supervised.exit_code();
                Err(JobError::Killed {
                    status,
                    signal: match ran.supervised.end {
                        dualstack_hpcvmm::jail::ChildEnd::Signaled(s) => s,
                        dualstack_hpcvmm::jail::ChildEnd::Exited(_) => 0,
                    },
                    released: released.join(", "),
                })
            }
        }
    }

    /// The huge pages of a run without a zone, claimed for its lifetime (the pool's shortfall
    /// reserved) when this process may grow the pool (see [`lease::hugepages`]); nothing when
    /// it may not (the VMM then says what is missing).
    fn reserve_shortfall(&self, paths: &HostPaths) -> Result<Option<Lease>, JobError> {
        let Backing::Hugetlb {
            page_size,
            numa_node,
        } = self.config.backing
        else {
            return Ok(None);
        };
        let page_kib = page_size.bytes() >> 10;
        let dir = lease::pool_dir(paths, page_kib, numa_node);
        let pages = self.config.memory.div_ceil(page_size.bytes());
        if !dir.join("free_hugepages").exists() || !lease::may_reserve(&dir.join("nr_hugepages")) {
            return Ok(None);
        }
        Ok(Some(lease::hugepages(
            paths,
            &dir,
            numa_node.unwrap_or(0),
            page_kib,
            pages,
        )?))
    }

    /// Run in this process (no lease to give back).
    fn run_here(&self) -> Result<JobResult, JobError> {
        let (wall_s, stats) = match &self.zone {
            None if self.delegated.is_some() => {
                let zone = self.delegated.as_ref().expect("checked");
                // The delegated cgroup: joining it is the caller's right; it stays there
                // (its previous cgroup is not the caller's to write to).
                dualstack_zones::cgroup::attach(&zone.cgroup_dir, std::process::id()).map_err(
                    |e| JobError::Enter {
                        zone: zone.name.clone(),
                        source: Box::new(ZoneError::from(e)),
                    },
                )?;
                timed(&self.config, self.jail.as_ref())?
            }
            None => timed(&self.config, self.jail.as_ref())?,
            Some((zone, paths)) => {
                let now = dualstack_zones::get(paths, &zone.name)?;
                if now.state != ZoneState::Active
                    || now.cpus != zone.cpus
                    || now.cgroup_dir != zone.cgroup_dir
                {
                    return Err(JobError::ZoneChanged {
                        zone: zone.name.clone(),
                        state: now.state,
                        cpus: now.cpus,
                    });
                }
                // Warm zone memory: claim a disjoint, zeroed extent before entering the zone
                // (a wait for pages still being zeroed happens here, not on the zone's cores).
                let mut cfg = self.config.clone();
                let claim = match &now.memory {
                    Some(mem) => {
                        let c = dualstack_zones::memory::claim(paths, &now.name, mem, cfg.memory)
                            .map_err(|e| JobError::from(ZoneError::from(e)))?;
                        warm_config(&mut cfg, &c, now.numa_node());
                        Some((c, mem))
                    }
                    None => None,
                };
                let entry = match dualstack_zones::enter(paths, &now) {
                    Ok(e) => e,
                    Err(source) => {
                        if let Some((c, mem)) = &claim {
                            give_back(paths, c, mem);
                        }
                        return Err(JobError::Enter {
                            zone: zone.name.clone(),
                            source: Box::new(source),
                        });
                    }
                };
                let previous = entry.previous().to_path_buf();
                let out = timed(&cfg, self.jail.as_ref());
                let left = entry.leave();
                // Outside the zone again: hand the extent back; a zeroer starts on a
                // housekeeping core.
                if let Some((c, mem)) = &claim {
                    give_back(paths, c, mem);
                }
                left.map_err(|source| JobError::Leave {
                    zone: zone.name.clone(),
                    cgroup: now.cgroup_dir.clone(),
                    source: Box::new(source),
                })?;
                tracing::debug!(
                    "job left zone {}, back in {}",
                    zone.name,
                    previous.display()
                );
                let (wall, mut stats) = out?;
                if let Some((c, _)) = &claim {
                    stats.memory.zero_wait_s = c.zero_wait_s;
                    stats.memory.zero_wait_bytes = c.zero_wait_bytes;
                }
                (wall, stats)
            }
        };
        if let Some(path) = &self.stats {
            let text = serde_json::to_string_pretty(&stats).expect("run statistics serialize");
            std::fs::write(path, text).map_err(|source| JobError::Stats {
                path: path.clone(),
                source,
            })?;
        }
        Ok(JobResult {
            exit_status: stats.exit_status,
            zone: self.zone().map(|z| z.name.clone()),
            wall_s,
            stats,
        })
    }
}

/// Point `cfg` at the claimed extent of the zone's warm memory.
fn warm_config(cfg: &mut RunConfig, claim: &dualstack_zones::Claim, numa: u32) {
    let parts: Vec<WarmPart> = claim
        .parts
        .iter()
        .map(|p| WarmPart {
            path: p.path.clone(),
            offset: p.file_offset,
            len: p.len,
            page_size: if p.page_kib == HUGEPAGE_1G_KIB {
                HugePageSize::Size1G
            } else {
                HugePageSize::Size2M
            },
        })
        .collect();
    let warm = WarmMemory { parts };
    cfg.memory = claim.len;
    cfg.backing = Backing::Hugetlb {
        page_size: warm.page_size(),
        numa_node: Some(numa),
    };
    cfg.warm_memory = Some(warm);
}

/// Hand a claimed extent back (dirty; zeroed in the background). A failure only delays the
/// zeroing: the extent of a process that is gone is reclaimed by the next job or `recover`.
fn give_back(paths: &HostPaths, claim: &dualstack_zones::Claim, mem: &dualstack_zones::ZoneMemory) {
    if let Err(e) = dualstack_zones::memory::release_claim(paths, claim, mem) {
        tracing::warn!("zone {}: handing memory back: {e}", claim.zone);
    }
}

/// Run the VMM: in a supervised, jailed child (the calling process stays privileged and only
/// waits), or in this process without a jail.
fn timed(cfg: &RunConfig, jail: Option<&Jail>) -> Result<(f64, RunStats), JobError> {
    let t = Instant::now();
    trace::mark("vmm.start");
    let Some(jail) = jail else {
        let stats = dualstack_hpcvmm::run(cfg)?;
        return Ok((t.elapsed().as_secs_f64(), stats));
    };
    let opts = SuperviseOptions {
        forward_signals: true,
        // What a launcher passed (an MPI rank's PMI_FD...): the jailed VMM serves them to the
        // guest at the same numbers.
        // A handed-over /dev/kvm too (the VMM's, not the guest's).
        keep_fds: cfg.inherit_fds.iter().copied().chain(cfg.kvm_fd).collect(),
        // A rank of an MPI job (the guest answers the host pid only then): its launcher's
        // pipes close when this process ends, as a native rank's (see relay_stdio).
        relay_stdio: cfg.host_pid,
    };
    let r = run_jailed(cfg, jail, &opts)?;
    let wall = t.elapsed().as_secs_f64();
    match r.result {
        Some(Ok((mut stats, report))) => {
            stats.jail = Some(report);
            Ok((wall, stats))
        }
        Some(Err(message)) => Err(JobError::JailedVmm { message }),
        None => match r.supervised.seccomp_message() {
            Some(message) => Err(JobError::SeccompKilled { message }),
            None => Err(JobError::VmmDied {
                end: format!("{:?}", r.supervised.end),
                exit_code: r.supervised.exit_code(),
            }),
        },
    }
}

impl JobError {
    /// What `dualstack run` exits with for this error: 159 for a seccomp kill (a VMM bug the
    /// jail caught), the VMM child's status when it died otherwise, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::SeccompKilled { .. } => dualstack_hpcvmm::jail::EXIT_SECCOMP,
            JobError::VmmDied { exit_code, .. } => *exit_code,
            JobError::Killed { status, .. } => *status,
            _ => 1,
        }
    }
}

/// An error and its causes on one line (what a supervised child sends back).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl From<ZoneError> for JobError {
    fn from(e: ZoneError) -> Self {
        JobError::Zone(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keeps_the_last_value_of_each_key() {
        let env = environment(&["A=1".into(), "B=2".into(), "A=3".into(), "C=".into()]).unwrap();
        assert_eq!(env, ["B=2", "A=3", "C="]);
        assert!(matches!(
            environment(&["FOO".into()]),
            Err(JobError::BadEnv { .. })
        ));
        assert!(matches!(
            environment(&["=x".into()]),
            Err(JobError::BadEnv { .. })
        ));
    }

    #[test]
    fn bare_names_find_bundled_apps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mini-app-x"), b"").unwrap();
        assert_eq!(
            resolve_program("mini-app-x", Some(dir.path())),
            dir.path().join("mini-app-x")
        );
        assert_eq!(
            resolve_program("no-such-app", Some(dir.path())),
            PathBuf::from("no-such-app")
        );
        assert_eq!(
            resolve_program("./mini-app-x", Some(dir.path())),
            PathBuf::from("./mini-app-x")
        );
    }
}
