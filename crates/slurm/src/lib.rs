//! `dualstack-slurm`: every node of a Slurm job that asks for it gets an HPC zone
//! (`slurm-<jobid>`) for the job's lifetime.
//!
//! - [`prolog`] (run by slurmd on each node at allocation, `PrologFlags=Alloc`): recovers the
//!   node's journal, reads the job's request (`--comment=dualstack[:k=v,...]`, or the SPANK
//!   option's `SPANK_DUALSTACK` variable), and creates the zone from the job's CPUs on that node
//!   and the requested (or configured default) memory; records the job's user as its owner.
//! - [`epilog`]: recovers, releases the zone; nothing to do is success.
//! - [`step_zone`]: for `dualstack run` inside a job step: this node's zone of the job.
//!
//! The node's state dir, cpuset instance, CPUs and memory come from [`config::SiteConfig`],
//! selected by `SLURMD_NODENAME`, so several slurmd on one host stay apart.

pub mod config;
pub mod request;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dualstack_topology::{CpuList, CpuRequest, ZoneRequest};
use dualstack_zones::{HostPaths, HostTasks, Zone, ZoneError, ZoneOptions};
use serde::{Deserialize, Serialize};

pub use config::{NodeSettings, SiteConfig};
pub use request::{JobInfo, ZoneAsk};

/// Errors of the Slurm integration. Each is one line when printed with its causes.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("{0} is not set: this runs as a Slurm Prolog/Epilog (slurmd sets it)")]
    MissingVar(&'static str),
    #[error("{var}={value:?} is not a job id")]
    BadJobId { var: &'static str, value: String },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Request(#[from] request::RequestError),
    #[error("host paths for node {node}: {source}")]
    Paths {
        node: String,
        #[source]
        source: dualstack_zones::PathsError,
    },
    #[error("node {node}: the zone journal needs recovery and recovery failed")]
    Recover {
        node: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error("cannot ask Slurm about job {job}: {why}")]
    Scontrol { job: u64, why: String },
    #[error("job {job} on node {node}: impossible request: {why}")]
    Impossible { job: u64, node: String, why: String },
    #[error("job {job} on node {node}: creating zone {zone} failed")]
    Create {
        job: u64,
        node: String,
        zone: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error(
        "job {job} on node {node}: zone {zone} could not be released, the host is not restored"
    )]
    Release {
        job: u64,
        node: String,
        zone: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error("node {node}: reading the zones")]
    Zones {
        node: String,
        #[source]
        source: Box<ZoneError>,
    },
    #[error("job {job} has no dualstack zone on node {node}: submit it with --comment=dualstack[:memory=...] (or --dualstack with the SPANK plugin), or set DUALSTACK_SLURM_NO_ZONE=1 to run without a zone")]
    NoZone { job: u64, node: String },
    #[error("handing zone {zone} to uid {uid}: chown {path}: {source}")]
    Delegate {
        zone: String,
        uid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "job {job} on node {node}: zone {zone} belongs to uid {owner}, this step runs as uid {uid}"
    )]
    NotYours {
        job: u64,
        node: String,
        zone: String,
        owner: String,
        uid: u32,
    },
    #[error("job {job} on node {node}: the prolog's record of zone {zone} ({path}) does not describe it (made by an older dualstack?): a step running as its user cannot use the zone; resubmit the job")]
    NoZoneInfo {
        job: u64,
        node: String,
        zone: String,
        path: PathBuf,
    },
    #[error("writing the job record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the SPANK plugin tells a task of a zone job that runs as its user which of its
/// descriptors is an open `/dev/kvm` (opened by the plugin as root in slurmstepd, in
/// `slurm_spank_task_init_privileged`): `dualstack run` creates its VM through it.
pub const KVM_FD_VAR: &str = "DUALSTACK_KVM_FD";

/// The zone of job `job_id` on every node: `slurm-<jobid>`.
pub fn zone_name(job_id: u64) -> String {
    format!("slurm-{job_id}")
}

/// What slurmd tells a Prolog/Epilog in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnv {
    pub job_id: u64,
    pub node: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The SPANK plugin's request (`SPANK_DUALSTACK`), when the plugin is installed.
    pub spank_request: Option<String>,
}

impl JobEnv {
    /// From the process environment.
    pub fn from_env() -> Result<Self, SlurmError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, SlurmError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let id = get("SLURM_JOB_ID").ok_or(SlurmError::MissingVar("SLURM_JOB_ID"))?;
        let job_id = id.parse().map_err(|_| SlurmError::BadJobId {
            var: "SLURM_JOB_ID",
            value: id.clone(),
        })?;
        Ok(Self {
            job_id,
            node: get("SLURMD_NODENAME").ok_or(SlurmError::MissingVar("SLURMD_NODENAME"))?,
            user: get("SLURM_JOB_USER"),
            uid: get("SLURM_JOB_UID").and_then(|u| u.parse().ok()),
            gid: get("SLURM_JOB_GID").and_then(|g| g.parse().ok()),
            spank_request: get("SPANK_DUALSTACK"),
        })
    }
}

/// Where a job's description comes from (Slurm's `scontrol`, or a fixed answer in tests).
pub trait JobSource {
    fn job_info(&self, job_id: u64) -> Result<JobInfo, SlurmError>;
}

/// `scontrol show job -d -o JOBID` (uses `SLURM_CONF` like every Slurm command).
#[derive(Debug, Clone, Default)]
pub struct Scontrol;

impl JobSource for Scontrol {
    fn job_info(&self, job_id: u64) -> Result<JobInfo, SlurmError> {
        let err = |why: String| SlurmError::Scontrol { job: job_id, why };
        let out = std::process::Command::new("scontrol")
            .args(["show", "job", "-d", "-o", &job_id.to_string()])
            .output()
            .map_err(|e| err(format!("running scontrol: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "scontrol exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&format!("JobId={job_id} ")))
            .ok_or_else(|| err("scontrol printed no such job".into()))?;
        Ok(request::parse_job_info(line)?)
    }
}

/// Who a zone is for (the zones crate has no owner field: kept beside its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub job_id: u64,
    pub node: String,
    pub zone: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub created_unix: u64,
    /// The zone as the prolog made it: what a job step running as the job's user reads
    /// instead of the zone database, which only root may open.
    #[serde(default)]
    pub zone_info: Option<Zone>,
}

fn record_path(state_dir: &Path, job_id: u64) -> PathBuf {
    state_dir.join("slurm").join(format!("job-{job_id}.json"))
}

/// The owner record of job `job_id`'s zone on this node, if any.
pub fn job_record(settings: &NodeSettings, job_id: u64) -> Option<JobRecord> {
    let text = std::fs::read_to_string(record_path(&settings.state_dir, job_id)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(settings: &NodeSettings, rec: &JobRecord) -> Result<(), SlurmError> {
    let path = record_path(&settings.state_dir, rec.job_id);
    let io = |source| SlurmError::Record {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("record has a parent");
    std::fs::create_dir_all(dir).map_err(io)?;
    // Root's files, readable by the job steps (which run as the job's users) whatever the
    // umask: the records tell a step its zone; nobody but root may write them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(rec).expect("records serialize"),
    )
    .map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// The files of a zone's cgroup that move a process into it: the ones handed to the job's
/// user. Nothing else (its CPUs, memory nodes, partition) becomes theirs.
fn join_files(zone: &Zone) -> Vec<PathBuf> {
    let dir = &zone.cgroup_dir;
    match zone.cgroup {
        // v1: writing a pid needs write access to the file (and, for another process, the
        // writer's euid to match its uid: a user can move only its own processes).
        dualstack_zones::CgroupMount::V1 { .. } => {
            vec![dir.join("cgroup.procs"), dir.join("tasks")]
        }
        // v2 also checks the common ancestor of the source and destination cgroups (see
        // check_step_zone); delegation proper is the directory and these files.
        dualstack_zones::CgroupMount::V2 { .. } => vec![
            dir.clone(),
            dir.join("cgroup.procs"),
            dir.join("cgroup.threads"),
        ],
    }
}

/// Hand zone `zone` to the job's user: its [`join_files`] become `uid:gid`'s, so that user's
/// job steps can join the zone and no other user's can (other zones' files stay root's).
/// Root's jobs need nothing.
fn delegate(zone: &Zone, uid: Option<u32>, gid: Option<u32>) -> Result<(), SlurmError> {
    let Some(uid) = uid.filter(|&u| u != 0) else {
        return Ok(());
    };
    for f in join_files(zone) {
        std::os::unix::fs::chown(&f, Some(uid), gid).map_err(|source| SlurmError::Delegate {
            zone: zone.name.clone(),
            uid,
            path: f.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The node's hook log: one line per Prolog/Epilog outcome (slurmd logs a hook's output only
/// when it fails).
pub fn hook_log_path(settings: &NodeSettings) -> PathBuf {
    settings.state_dir.join("slurm").join("hooks.log")
}

/// Append `line` (with a Unix timestamp) to the node's hook log; best effort.
pub fn append_hook_log(settings: &NodeSettings, line: &str) {
    use std::io::Write;
    let path = hook_log_path(settings);
    let _ = std::fs::create_dir_all(path.parent().expect("log has a parent"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(f, "{now:.3} {line}");
    }
}

fn paths_of(settings: &NodeSettings) -> Result<HostPaths, SlurmError> {
    settings.host_paths().map_err(|source| SlurmError::Paths {
        node: settings.node.clone(),
        source,
    })
}

fn recover(settings: &NodeSettings, paths: &HostPaths) -> Result<Vec<String>, SlurmError> {
    let r = dualstack_zones::recover(paths).map_err(|source| SlurmError::Recover {
        node: settings.node.clone(),
        source: Box::new(source),
    })?;
    let mut notes: Vec<String> = Vec::new();
    if !r.is_clean() {
        notes.push(format!(
            "recovered node {}: rolled back {:?}, finished releasing {:?}, dropped stale {:?}, removed {:?}",
            settings.node, r.rolled_back, r.finished_release, r.dropped_stale, r.removed_orphans
        ));
    }
    notes.extend(r.warnings);
    Ok(notes)
}

/// What a prolog did.
#[derive(Debug, Clone, Serialize)]
pub struct PrologReport {
    pub job_id: u64,
    pub node: String,
    /// The zone made (or found, when the prolog ran again for the same job); `None`: the job
    /// did not ask for one.
    pub zone: Option<Zone>,
    pub notes: Vec<String>,
    pub elapsed_ms: f64,
    /// Time per step (ms), in order: configuration, recovery, Slurm's job description, the
    /// topology, each step of the zone's create, the hand-off to the job's user.
    pub steps: Vec<(String, f64)>,
}

/// Time per step of a hook.
#[derive(Default)]
struct StepClock(Vec<(String, f64)>, Option<Instant>);

impl StepClock {
    /// Close the step running since the last mark as `label`.
    fn mark(&mut self, label: &str) {
        let now = Instant::now();
        if let Some(t) = self.1 {
            self.0
                .push((label.to_string(), (now - t).as_secs_f64() * 1e3));
        }
        self.1 = Some(now);
    }
}

/// The CPUs of the node the job holds: Slurm's CPU ids on this node are indexes into the
/// node's CPUs (in order); unknown or out of range ids mean the whole node.
pub fn job_cpus(node_cpus: &CpuList, ids: Option<&[u32]>) -> (CpuList, Option<String>) {
    let all: Vec<u32> = node_cpus.iter().collect();
    match ids {
        Some(ids) if !ids.is_empty() => {
            let mut out = CpuList::new();
            for &i in ids {
                match all.get(i as usize) {
                    Some(&c) => {
                        out.insert(c);
                    }
                    None => {
                        return (
                            node_cpus.clone(),
                            Some(format!(
                                "Slurm CPU id {i} is outside the node's CPUs {}: using all of them",
                                node_cpus.to_list()
                            )),
                        )
                    }
                }
            }
            (out, None)
        }
        _ => (
            node_cpus.clone(),
            Some(format!(
                "the job's CPUs on this node are unknown: using the node's CPUs {}",
                node_cpus.to_list()
            )),
        ),
    }
}

/// Whole cores within `cpus` (a core counts only with all its SMT siblings), highest first
/// capped at `want`; returns their CPUs.
fn whole_cores(
    node: &dualstack_topology::Node,
    cpus: &CpuList,
    want: Option<u32>,
) -> (CpuList, usize) {
    let mut cores: Vec<&dualstack_topology::Core> = node
        .cores
        .iter()
        .filter(|c| c.pus.is_subset(cpus))
        .collect();
    let whole = cores.len();
    if let Some(n) = want {
        let skip = cores.len().saturating_sub(n as usize);
        cores.drain(..skip);
    }
    let list = cores
        .iter()
        .fold(CpuList::new(), |acc, c| acc.union(&c.pus));
    (list, whole)
}

/// The Prolog: give job `env.job_id` its zone on node `env.node` if it asked for one.
pub fn prolog(
    env: &JobEnv,
    site: &SiteConfig,
    jobs: &dyn JobSource,
) -> Result<PrologReport, SlurmError> {
    let t0 = Instant::now();
    let mut clock = StepClock::default();
    clock.mark("");
    let settings = site.node(&env.node)?;
    let paths = paths_of(&settings)?;
    clock.mark("configuration");
    let mut notes = recover(&settings, &paths)?;
    clock.mark("journal recovery check");
    let name = zone_name(env.job_id);
    let impossible = |why: String| SlurmError::Impossible {
        job: env.job_id,
        node: env.node.clone(),
        why,
    };
    let done = |zone, notes, t0: Instant, steps| PrologReport {
        job_id: env.job_id,
        node: env.node.clone(),
        zone,
        notes,
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        steps,
    };

    // The request: the SPANK option when the plugin passed one, else the job's comment.
    let info = jobs.job_info(env.job_id)?;
    clock.mark("job description (scontrol)");
    let ask = match &env.spank_request {
        Some(text) => Some(request::parse_option(text)?),
        None => request::parse_ask(info.comment.as_deref().unwrap_or_default())?,
    };
    let Some(ask) = ask else {
        return Ok(done(None, notes, t0, clock.0));
    };
    // A prolog run again for the same job (requeue, slurmd restart) keeps the zone it made.
    if let Ok(z) = dualstack_zones::get(&paths, &name) {
        notes.push(format!("zone {name} already exists: kept"));
        delegate(&z, env.uid, env.gid)?;
        return Ok(done(Some(z), notes, t0, clock.0));
    }

    let node = dualstack_zones::load_node(&paths)
        .map_err(|e| impossible(format!("cannot read the node's topology: {e}")))?;
    clock.mark("topology");
    let node_cpus = match &settings.cpus {
        Some(c) => c.clone(),
        None => dualstack_zones::cgroup::root_cpus(&paths)
            .map_err(|e| impossible(format!("cannot read the cpuset root's CPUs: {e}")))?,
    };
    let (cpus, note) = job_cpus(&node_cpus, info.cpu_ids.get(&env.node).map(Vec::as_slice));
    notes.extend(note);
    let (cpus, whole) = whole_cores(&node, &cpus, ask.cores);
    if cpus.is_empty() {
        return Err(impossible(format!(
            "the job's CPUs on this node hold no whole core (zones take whole cores with their SMT siblings; node CPUs {})",
            node_cpus.to_list()
        )));
    }
    if let Some(n) = ask.cores {
        if n as usize > whole {
            return Err(impossible(format!(
                "asked for {n} cores, the job holds {whole} whole core(s) on this node"
            )));
        }
    }
    let memory = ask.memory.unwrap_or(settings.default_memory);
    if let Some(cap) = settings.memory_cap {
        let zones = dualstack_zones::list(&paths).map_err(|source| SlurmError::Zones {
            node: env.node.clone(),
            source: Box::new(source),
        })?;
        let held: u64 = zones.iter().map(|z| z.memory_bytes).sum();
        if held + memory > cap {
            return Err(impossible(format!(
                "asked for {} MiB of zone memory, the node's zones may hold {} MiB and hold {} MiB already",
                memory >> 20,
                cap >> 20,
                held >> 20
            )));
        }
    }
    clock.mark("checks (CPUs, memory cap)");
    let req = ZoneRequest {
        cpus: CpuRequest::List(cpus),
        memory_bytes: memory,
        numa_node: None,
        hugepage_kib: ask.hugepage_kib.unwrap_or(settings.hugepage_kib),
    };
    let opts = ZoneOptions {
        host_tasks: HostTasks::Leave,
        steer_irqs: settings.steer_irqs,
        narrow_workqueue: settings.narrow_workqueue,
        offline_memory: false,
    };
    // A job of another user than root gets its zone memory as reserved huge pages in the
    // node's pool, which its steps map themselves: warm zone memory is claimed through the
    // zone database, which only root may open.
    let mut create_paths = paths.clone();
    if env.uid.is_some_and(|u| u != 0) && create_paths.zone_memory_dir.is_some() {
        create_paths.zone_memory_dir = None;
        notes.push(format!(
            "zone {name} for uid {}: memory as reserved huge pages (warm zone memory is for root's jobs)",
            env.uid.unwrap_or_default()
        ));
    }
    let report = dualstack_zones::create_with(
        &create_paths,
        &node,
        &name,
        &req,
        &opts,
        settings.housekeeping,
    )
    .map_err(|source| SlurmError::Create {
        job: env.job_id,
        node: env.node.clone(),
        zone: name.clone(),
        source: Box::new(source),
    })?;
    clock.mark("zone create (total of the create: steps below)");
    clock.0.extend(
        report
            .timings
            .0
            .iter()
            .map(|(l, ms)| (format!("create: {l}"), *ms)),
    );
    delegate(&report.zone, env.uid, env.gid)?;
    write_record(
        &settings,
        &JobRecord {
            job_id: env.job_id,
            node: env.node.clone(),
            zone: name,
            user: env.user.clone().or(info.user),
            uid: env.uid,
            created_unix: report.zone.created_unix,
            zone_info: Some(report.zone.clone()),
        },
    )?;
    clock.mark("hand-off and job record");
    Ok(done(Some(report.zone), notes, t0, clock.0))
}

/// What an epilog did.
#[derive(Debug, Clone, Serialize)]
pub struct EpilogReport {
    pub job_id: u64,
    pub node: String,
    /// Whether a zone was released (false: there was none, which is fine).
    pub released: bool,
    pub notes: Vec<String>,
    pub elapsed_ms: f64,
}

/// How long the epilog waits for the job's processes to leave the zone's cgroup.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// The Epilog: release job `env.job_id`'s zone on this node. Idempotent; fails only when the
/// host could not be restored.
pub fn epilog(env: &JobEnv, site: &SiteConfig) -> Result<EpilogReport, SlurmError> {
    let t0 = Instant::now();
    let settings = site.node(&env.node)?;
    let paths = paths_of(&settings)?;
    let mut notes = recover(&settings, &paths)?;
    let name = zone_name(env.job_id);
    let exists = dualstack_zones::list(&paths)
        .map_err(|source| SlurmError::Zones {
            node: env.node.clone(),
            source: Box::new(source),
        })?
        .iter()
        .any(|z| z.name == name);
    let mut released = false;
    if exists {
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            match dualstack_zones::release(&paths, &name) {
                Ok(r) => {
                    notes.extend(r.warnings);
                    released = true;
                    break;
                }
                // The job's last processes may still be exiting.
                Err(ZoneError::Busy { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(ZoneError::Unknown { .. }) => break,
                Err(source) => {
                    return Err(SlurmError::Release {
                        job: env.job_id,
                        node: env.node.clone(),
                        zone: name,
                        source: Box::new(source),
                    })
                }
            }
        }
    }
    let _ = std::fs::remove_file(record_path(&settings.state_dir, env.job_id));
    Ok(EpilogReport {
        job_id: env.job_id,
        node: env.node.clone(),
        released,
        notes,
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

/// What [`recover_node`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeRecovery {
    pub node: String,
    pub notes: Vec<String>,
    /// Zones of jobs released because `release_jobs` was asked (jobs known to be gone).
    pub released: Vec<String>,
}

/// `dualstack recover` for one Slurm node's state; with `release_jobs`, also release every
/// `slurm-*` zone of that node (for a node whose jobs are known to be gone, e.g. after slurmd
/// was killed and restarted without running the epilogs, or before a test cluster goes down).
pub fn recover_node(
    settings: &NodeSettings,
    release_jobs: bool,
) -> Result<NodeRecovery, SlurmError> {
    let paths = paths_of(settings)?;
    let mut out = NodeRecovery {
        node: settings.node.clone(),
        notes: recover(settings, &paths)?,
        released: Vec::new(),
    };
    if !release_jobs {
        return Ok(out);
    }
    let zones = dualstack_zones::list(&paths).map_err(|source| SlurmError::Zones {
        node: settings.node.clone(),
        source: Box::new(source),
    })?;
    for z in zones.into_iter().filter(|z| z.name.starts_with("slurm-")) {
        let r =
            dualstack_zones::release(&paths, &z.name).map_err(|source| SlurmError::Release {
                job: z.name["slurm-".len()..].parse().unwrap_or(0),
                node: settings.node.clone(),
                zone: z.name.clone(),
                source: Box::new(source),
            })?;
        out.notes.extend(r.warnings);
        if let Ok(job) = z.name["slurm-".len()..].parse::<u64>() {
            let _ = std::fs::remove_file(record_path(&settings.state_dir, job));
        }
        out.released.push(z.name);
    }
    Ok(out)
}

/// A job step's zone: where its state lives and what it is.
#[derive(Debug, Clone)]
pub struct StepZone {
    pub job_id: u64,
    pub node: String,
    pub state_dir: PathBuf,
    /// The cpuset instance (`None`: the default one).
    pub instance: Option<String>,
    pub paths: HostPaths,
    pub zone: Zone,
    /// The step runs as the job's user, not root: it uses the zone as the prolog handed it
    /// (its record's description, its delegated cgroup) and never opens the zone database.
    pub as_user: bool,
}

/// What a job step tells `dualstack run` in its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepEnv {
    pub job_id: Option<u64>,
    pub node: Option<String>,
    /// `DUALSTACK_SLURM_NO_ZONE=1`: the user asked to run without a zone.
    pub allow_no_zone: bool,
}

impl StepEnv {
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            job_id: get("SLURM_JOB_ID").and_then(|v| v.parse().ok()),
            node: get("SLURMD_NODENAME"),
            allow_no_zone: get("DUALSTACK_SLURM_NO_ZONE").is_some_and(|v| v != "0"),
        }
    }
}

/// This node's zone of the job a step belongs to. `Ok(None)`: not a Slurm job step, or the
/// user asked to run without a zone; a job step without a zone is [`SlurmError::NoZone`].
pub fn step_zone(env: &StepEnv, site: &SiteConfig) -> Result<Option<StepZone>, SlurmError> {
    let (Some(job_id), Some(node)) = (env.job_id, env.node.clone()) else {
        return Ok(None);
    };
    let settings = site.node(&node)?;
    let paths = paths_of(&settings)?;
    let name = zone_name(job_id);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return step_zone_as_user(env, &settings, paths, job_id, node, euid);
    }
    let found = if settings
        .state_dir
        .join(dualstack_zones::state::DB_FILE)
        .exists()
    {
        match dualstack_zones::get(&paths, &name) {
            Ok(z) => Some(z),
            Err(ZoneError::Unknown { .. }) => None,
            Err(source) => {
                return Err(SlurmError::Zones {
                    node,
                    source: Box::new(source),
                })
            }
        }
    } else {
        None
    };
    match found {
        Some(zone) => Ok(Some(StepZone {
            job_id,
            state_dir: settings.state_dir.clone(),
            instance: settings.instance.clone(),
            paths,
            zone,
            node,
            as_user: false,
        })),
        None if env.allow_no_zone => Ok(None),
        None => Err(SlurmError::NoZone { job: job_id, node }),
    }
}

/// [`step_zone`] for a step running as uid `euid` (not root): the prolog's record is the
/// hand-off (root's file, readable by all); the zone must be this user's.
fn step_zone_as_user(
    env: &StepEnv,
    settings: &NodeSettings,
    paths: HostPaths,
    job_id: u64,
    node: String,
    euid: u32,
) -> Result<Option<StepZone>, SlurmError> {
    let name = zone_name(job_id);
    let Some(rec) = job_record(settings, job_id) else {
        if env.allow_no_zone {
            return Ok(None);
        }
        return Err(SlurmError::NoZone { job: job_id, node });
    };
    if rec.uid != Some(euid) {
        return Err(SlurmError::NotYours {
            job: job_id,
            node,
            zone: name,
            owner: rec
                .uid
                .map_or("root (no job uid recorded)".into(), |u| u.to_string()),
            uid: euid,
        });
    }
    let Some(zone) = rec.zone_info else {
        return Err(SlurmError::NoZoneInfo {
            job: job_id,
            node,
            zone: name,
            path: record_path(&settings.state_dir, job_id),
        });
    };
    Ok(Some(StepZone {
        job_id,
        node,
        state_dir: settings.state_dir.clone(),
        instance: settings.instance.clone(),
        paths,
        zone,
        as_user: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_env() {
        let vars = |k: &str| match k {
            "SLURM_JOB_ID" => Some("42".to_string()),
            "SLURMD_NODENAME" => Some("n2".to_string()),
            "SLURM_JOB_UID" => Some("1000".to_string()),
            _ => None,
        };
        let e = JobEnv::from_vars(vars).unwrap();
        assert_eq!((e.job_id, e.node.as_str(), e.uid), (42, "n2", Some(1000)));
        let e = JobEnv::from_vars(|_| None).unwrap_err();
        assert!(e.to_string().contains("SLURM_JOB_ID"), "{e}");
        let e = JobEnv::from_vars(|k| (k == "SLURM_JOB_ID").then(|| "x".into())).unwrap_err();
        assert!(e.to_string().contains("not a job id"), "{e}");
        assert_eq!(zone_name(42), "slurm-42");
    }

    #[test]
    fn cpu_ids_map_into_the_nodes_cpus() {
        let node = CpuList::parse_list("4-7").unwrap();
        let (c, note) = job_cpus(&node, Some(&[0, 2]));
        assert_eq!((c.to_list().as_str(), note), ("4,6", None));
        let (c, note) = job_cpus(&node, Some(&[9]));
        assert_eq!(c.to_list(), "4-7");
        assert!(note.unwrap().contains("outside"));
        let (c, note) = job_cpus(&node, None);
        assert_eq!(c.to_list(), "4-7");
        assert!(note.is_some());
    }

    #[test]
    fn whole_cores_only() {
        let node = dualstack_topology::from_synthetic("package:1 numa:1 core:4 pu:2").unwrap();
        let all = node.cpus();
        let (c, whole) = whole_cores(&node, &all, None);
        assert_eq!((c, whole), (all.clone(), 4));
        // One PU of a core is not a core.
        let first = node.cores[0].pus.clone();
        let one_pu = CpuList::from_iter(first.iter().take(1));
        assert_eq!(whole_cores(&node, &one_pu, None).1, 0);
        let (c, _) = whole_cores(&node, &all, Some(1));
        assert_eq!(c, node.cores[3].pus);
    }

    #[test]
    fn a_user_step_gets_only_its_own_jobs_zone() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[node.n1]\nstate_dir = \"{}\"\n", dir.path().display());
        let site = SiteConfig::parse(&text, Path::new("t")).unwrap();
        let settings = site.node("n1").unwrap();
        let paths = settings.host_paths().unwrap();
        let env = StepEnv {
            job_id: Some(7),
            node: Some("n1".into()),
            allow_no_zone: false,
        };
        let ask = |uid| step_zone_as_user(&env, &settings, paths.clone(), 7, "n1".into(), uid);
        // No record: no zone for this job here.
        assert!(matches!(ask(1000), Err(SlurmError::NoZone { .. })));
        // A record of an older prolog (no zone description), for uid 1000.
        let rec = JobRecord {
            job_id: 7,
            node: "n1".into(),
            zone: zone_name(7),
            user: Some("alice".into()),
            uid: Some(1000),
            created_unix: 1,
            zone_info: None,
        };
        write_record(&settings, &rec).unwrap();
        let e = ask(1001).unwrap_err().to_string();
        assert!(
            e.contains("belongs to uid 1000, this step runs as uid 1001"),
            "{e}"
        );
        assert!(matches!(ask(1000), Err(SlurmError::NoZoneInfo { .. })));
        // The record is root's and readable by every user.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(record_path(&settings.state_dir, 7))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Old records (without zone_info) still parse.
        let old =
            r#"{"job_id":7,"node":"n1","zone":"slurm-7","user":null,"uid":0,"created_unix":1}"#;
        assert!(serde_json::from_str::<JobRecord>(old).is_ok());
    }

    #[test]
    fn step_outside_slurm_has_no_zone() {
        let site = SiteConfig::default();
        assert!(step_zone(&StepEnv::default(), &site).unwrap().is_none());
    }
}
