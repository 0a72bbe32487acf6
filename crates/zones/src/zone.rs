//! Zones: create (plan, then journaled steps), release (undo in reverse), recover after a crash,
//! list, and entering a zone's cgroup for the HPC VMM.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dualstack_topology::{
    plan_with, CpuList, Held, Housekeeping, Node, Plan, PlanError, ZoneRequest, HUGEPAGE_1G_KIB,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupError};
use crate::commodity::{self, CommodityError};
use crate::journal::{
    self, crash_point, shrunk, CpuFormat, Outcome, RowStatus, Step, StepError, Timings, UndoContext,
};
use crate::lifecycle::ZoneState;
use crate::memory::{self as zmem, ZoneMemory};
use crate::paths::{CgroupMount, HostPaths};
use crate::state::{self, open_db, StateError, StateLock};
use crate::steer::{self, HostTasks};

/// Errors of zone operations.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot place zone {name:?}: {source}")]
    Plan {
        name: String,
        #[source]
        source: PlanError,
    },
    #[error(transparent)]
    Commodity(#[from] CommodityError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(
        "creating zone {name:?} failed at step {step:?}; every change was rolled back{warnings}"
    )]
    StepFailed {
        name: String,
        step: String,
        warnings: String,
        #[source]
        source: Box<StepError>,
    },
    #[error("journal: {0}")]
    Journal(#[from] StepError),
    #[error("bad zone name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    BadName(String),
    #[error("zone name {0:?} is reserved (a job's `zone: auto` asks for a zone made for it); pick another name")]
    ReservedName(String),
    #[error("zone {name:?} already exists (CPUs {cpus}, state {state}); release it first or pick another name")]
    Duplicate {
        name: String,
        cpus: String,
        state: ZoneState,
    },
    #[error("no zone named {name:?}; existing zones: {existing}")]
    Unknown { name: String, existing: String },
    #[error("zone {name:?} still runs processes {pids:?} in {dir}; stop them before releasing it")]
    Busy {
        name: String,
        dir: PathBuf,
        pids: Vec<u32>,
    },
    #[error("{path} already exists but no zone record names it; run `dualstack recover`")]
    Leftover { path: PathBuf },
    #[error("zone {name:?} is {state}, not active: run `dualstack recover` first")]
    NotActive { name: String, state: ZoneState },
    #[error(transparent)]
    Memory(#[from] zmem::MemError),
}

/// Options of a zone beyond its resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneOptions {
    pub host_tasks: HostTasks,
    /// Steer IRQ affinities off the zone's CPUs.
    pub steer_irqs: bool,
    /// Narrow the unbound workqueue cpumask.
    pub narrow_workqueue: bool,
    /// Try to offline memory blocks of the zone's node (the HPC VMM itself uses huge pages;
    /// this is for co-kernel setups; off by default).
    pub offline_memory: bool,
}

impl Default for ZoneOptions {
    fn default() -> Self {
        Self {
            host_tasks: HostTasks::Leave,
            steer_irqs: true,
            narrow_workqueue: true,
            offline_memory: false,
        }
    }
}

/// A zone: what the HPC VMM needs to run in it, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub state: ZoneState,
    pub cpus: CpuList,
    pub cores: Vec<u32>,
    pub numa_node: u32,
    pub numa_nodes: Vec<u32>,
    pub memory_bytes: u64,
    pub hugepage_kib: u64,
    pub hugepages: u64,
    pub cgroup_dir: PathBuf,
    pub cgroup: CgroupMount,
    pub options: ZoneOptions,
    /// Planner notes and what the kernel refused (reported, not fatal).
    pub notes: Vec<String>,
    pub created_unix: u64,
    /// The zone's warm memory (populated hugetlbfs files), when it has one.
    #[serde(default)]
    pub memory: Option<ZoneMemory>,
}

impl Zone {
    /// CPUs the HPC VMM pins its vCPUs to.
    pub fn cpus(&self) -> &CpuList {
        &self.cpus
    }
    /// NUMA node of the zone's memory.
    pub fn numa_node(&self) -> u32 {
        self.numa_node
    }
    /// Memory reserved as huge pages, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
    /// Huge page size in bytes (2 MiB or 1 GiB).
    pub fn hugepage_size(&self) -> u64 {
        self.hugepage_kib * 1024
    }
    /// Number of huge pages reserved on [`Zone::numa_node`].
    pub fn hugepage_count(&self) -> u64 {
        self.hugepages
    }
    /// The zone's cpuset cgroup directory.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup_dir
    }
}

/// What a create did, with time per step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateReport {
    pub zone: Zone,
    pub plan: Plan,
    pub timings: Timings,
}

/// What a release did, with time per step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseReport {
    pub name: String,
    pub warnings: Vec<String>,
    pub timings: Timings,
}

/// What a recovery did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoverReport {
    /// Half-made zones rolled back.
    pub rolled_back: Vec<String>,
    /// Half-released zones finished.
    pub finished_release: Vec<String>,
    /// Zones recorded under an earlier boot (the reboot already reset the host).
    pub dropped_stale: Vec<String>,
    /// Zone cgroup directories without a record, removed.
    pub removed_orphans: Vec<PathBuf>,
    /// Whether the commodity cpuset and instance dir were removed (nothing left using them).
    pub layout_removed: bool,
    /// Warm zone memory a killed job or zeroer left dirty, handed to a new zeroer (or zeroed by
    /// [`finish_zeroing`]).
    #[serde(default)]
    pub zeroed: Vec<String>,
    pub warnings: Vec<String>,
}

impl RecoverReport {
    pub fn is_clean(&self) -> bool {
        self.rolled_back.is_empty()
            && self.finished_release.is_empty()
            && self.dropped_stale.is_empty()
            && self.removed_orphans.is_empty()
            && self.zeroed.is_empty()
    }
}

/// Names a zone cannot have: they mean something else where a job names its zone.
pub const RESERVED_NAMES: &[&str] = &["auto"];

fn check_name(name: &str) -> Result<(), ZoneError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ZoneError::BadName(name.to_string()));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(ZoneError::ReservedName(name.to_string()));
    }
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- records ----

fn load_all(conn: &Connection) -> Result<Vec<(Zone, String)>, ZoneError> {
    let mut stmt = conn.prepare("SELECT record, boot_id FROM zones ORDER BY created_at, name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(rec, boot)| serde_json::from_str(&rec).ok().map(|z| (z, boot)))
        .collect())
}

fn load(conn: &Connection, name: &str) -> Result<Option<Zone>, ZoneError> {
    let rec: Option<String> = conn
        .query_row("SELECT record FROM zones WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(rec.and_then(|r| serde_json::from_str(&r).ok()))
}

fn save(conn: &Connection, zone: &Zone, boot: &str) -> Result<(), ZoneError> {
    conn.execute(
        "INSERT INTO zones (name, state, boot_id, record, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(name) DO UPDATE SET state = ?2, record = ?4",
        params![
            zone.name,
            zone.state.as_str(),
            boot,
            serde_json::to_string(zone).expect("zones serialize"),
            zone.created_unix as i64
        ],
    )?;
    Ok(())
}

fn transition(conn: &Connection, zone: &mut Zone, next: ZoneState) -> Result<(), ZoneError> {
    debug_assert!(zone.state.can_become(next), "{} -> {next}", zone.state);
    zone.state = next;
    conn.execute(
        "UPDATE zones SET state = ?2, record = ?3 WHERE name = ?1",
        params![
            zone.name,
            next.as_str(),
            serde_json::to_string(zone).expect("zones serialize")
        ],
    )?;
    Ok(())
}

fn forget(conn: &Connection, name: &str) -> Result<(), ZoneError> {
    journal::delete(conn, name)?;
    conn.execute("DELETE FROM zone_extents WHERE zone = ?1", [name])?;
    conn.execute("DELETE FROM zone_zeroing WHERE zone = ?1", [name])?;
    conn.execute("DELETE FROM zones WHERE name = ?1", [name])?;
    Ok(())
}

/// All zones (any state), oldest first.
pub fn list(paths: &HostPaths) -> Result<Vec<Zone>, ZoneError> {
    let conn = open_db(&paths.state_dir)?;
    Ok(load_all(&conn)?.into_iter().map(|(z, _)| z).collect())
}

/// How many zones are recorded, whatever their state: a zone being created, active or being
/// released (or left half-done by a crash, until recovery) still holds CPUs, so the commodity
/// cpuset is needed while this is non-zero. The query other crates use instead of reading the
/// `zones` table themselves.
pub fn zone_count(paths: &HostPaths) -> Result<usize, ZoneError> {
    let conn = open_db(&paths.state_dir)?;
    let n = commodity::zone_count(&conn)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One zone by name.
pub fn get(paths: &HostPaths, name: &str) -> Result<Zone, ZoneError> {
    let conn = open_db(&paths.state_dir)?;
    load(&conn, name)?.ok_or_else(|| unknown(&conn, name))
}

fn unknown(conn: &Connection, name: &str) -> ZoneError {
    let existing = load_all(conn)
        .map(|zs| {
            zs.iter()
                .map(|(z, _)| z.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    ZoneError::Unknown {
        name: name.to_string(),
        existing: if existing.is_empty() {
            "none".into()
        } else {
            existing
        },
    }
}

/// What the zones hold, plus CPUs outside the cpuset root (never available).
fn held(conn: &Connection, node: &Node, root_cpus: &CpuList) -> Result<Vec<Held>, ZoneError> {
    let mut out: Vec<Held> = load_all(conn)?
        .into_iter()
        .map(|(z, _)| Held {
            zone: z.name,
            cpus: z.cpus,
            numa_node: z.numa_node,
            memory_bytes: z.memory_bytes,
        })
        .collect();
    let outside = node.cpus().difference(root_cpus);
    if !outside.is_empty() {
        out.push(Held {
            zone: "(outside the cpuset root)".into(),
            cpus: outside,
            numa_node: 0,
            memory_bytes: 0,
        });
    }
    Ok(out)
}

// ---- create ----

/// Create zone `name` on `node` (the host's topology, or a synthetic one on fake trees).
pub fn create(
    paths: &HostPaths,
    node: &Node,
    name: &str,
    request: &ZoneRequest,
    options: &ZoneOptions,
) -> Result<CreateReport, ZoneError> {
    create_with(paths, node, name, request, options, Housekeeping::KeepOne)
}

/// [`create`], saying where the node's housekeeping runs: [`Housekeeping::Outside`] lets the
/// zone take every free core of the cpuset root (a Slurm node owning only some of a host's
/// cores, or one whose every core belongs to Slurm).
pub fn create_with(
    paths: &HostPaths,
    node: &Node,
    name: &str,
    request: &ZoneRequest,
    options: &ZoneOptions,
    housekeeping: Housekeeping,
) -> Result<CreateReport, ZoneError> {
    check_name(name)?;
    let t0 = Instant::now();
    let lock = StateLock::acquire(&paths.state_dir)?;
    recover_locked(paths, &lock)?;
    let conn = open_db(&paths.state_dir)?;
    if let Some(z) = load(&conn, name)? {
        return Err(ZoneError::Duplicate {
            name: name.into(),
            cpus: z.cpus.to_list(),
            state: z.state,
        });
    }
    let root_cpus = cgroup::root_cpus(paths)?;
    let held = held(&conn, node, &root_cpus)?;
    let plan = plan_with(node, &held, request, housekeeping).map_err(|source| ZoneError::Plan {
        name: name.into(),
        source,
    })?;
    let zone_dir = paths.zone_dir(name);
    if zone_dir.exists() {
        return Err(ZoneError::Leftover { path: zone_dir });
    }
    let mut zone = Zone {
        name: name.into(),
        state: ZoneState::Planned,
        cpus: plan.cpus.clone(),
        cores: plan.cores.clone(),
        numa_node: plan.numa_node,
        numa_nodes: plan.numa_nodes.clone(),
        memory_bytes: plan.memory_bytes,
        hugepage_kib: plan.hugepage_kib,
        hugepages: plan.hugepages,
        cgroup_dir: zone_dir,
        cgroup: paths.cgroup.clone(),
        options: options.clone(),
        notes: plan.notes.clone(),
        created_unix: now_unix(),
        memory: None,
    };
    let boot = state::boot_id(&paths.procfs);
    save(&conn, &zone, &boot)?;
    transition(&conn, &mut zone, ZoneState::Applying)?;

    let mut timings = Timings::default();
    timings.push("lock + recover check + plan + record".into(), t0);
    match apply_all(paths, &conn, &mut zone, &mut timings) {
        Ok(()) => {
            transition(&conn, &mut zone, ZoneState::Active)?;
            Ok(CreateReport {
                zone,
                plan,
                timings,
            })
        }
        Err((step, source)) => {
            transition(&conn, &mut zone, ZoneState::RollingBack)?;
            let mut warnings = undo_all(paths, &conn, name, "rollback", &mut Timings::default())?;
            forget(&conn, name)?;
            if let Err(e) = commodity::cleanup_layout(paths, &conn) {
                warnings.push(e.to_string());
            }
            Err(ZoneError::StepFailed {
                name: name.into(),
                step,
                warnings: if warnings.is_empty() {
                    String::new()
                } else {
                    format!(" (warnings: {})", warnings.join("; "))
                },
                source: Box::new(source),
            })
        }
    }
}

// Internal, and the error path is the rare one: not worth boxing.
#[allow(clippy::result_large_err)]
/// Build and run every step of a create. Steps are built one at a time from the host's current
/// values, so each records the exact old value it replaces.
fn apply_all(
    paths: &HostPaths,
    conn: &Connection,
    zone: &mut Zone,
    timings: &mut Timings,
) -> Result<(), (String, StepError)> {
    let mut seq = 0i64;
    let t = Instant::now();
    let layout = commodity::ensure_layout(paths, conn).map_err(|e| {
        (
            "commodity cpuset".to_string(),
            StepError::File(match e {
                CommodityError::Cgroup(c) => c,
                other => CgroupError::Read {
                    path: paths.commodity_dir(),
                    source: std::io::Error::other(other.to_string()),
                },
            }),
        )
    })?;
    timings.push("ensure instance + commodity cgroups".into(), t);
    if let Some(memdir) = &paths.zone_memory_dir {
        apply_memory(paths, conn, zone, memdir, &mut seq, timings)?;
    }
    let z = zone.cpus.clone();
    let io = |e: CgroupError| ("read host state".to_string(), StepError::File(e));

    // 1. Shrink the commodity cpuset (this also re-confines commodity VMs at once). Must come
    //    before the zone takes its CPUs: v1 refuses overlap with an exclusive sibling.
    let commodity_cpus = layout.cpus.clone();
    let housekeeping = commodity_cpus.difference(&z);
    let mut steps: Vec<Step> = vec![Step::CpuDelta {
        path: paths.commodity_dir().join("cpuset.cpus"),
        format: CpuFormat::List,
        old: commodity_cpus.clone(),
        new: housekeeping.clone(),
        optional: false,
        original: None,
    }];
    let mems = zone.numa_node.to_string();
    let dir = zone.cgroup_dir.clone();
    let w = |file: &str, value: &str, expect: Option<&str>| Step::Write {
        path: dir.join(file),
        old: None,
        new: value.to_string(),
        expect: expect.map(str::to_string),
    };
    match &paths.cgroup {
        CgroupMount::V1 { .. } => {
            steps.push(Step::Mkdir { path: dir.clone() });
            steps.push(w("cpuset.cpus", &z.to_list(), None));
            steps.push(w("cpuset.mems", &mems, None));
            if cgroup::read(&paths.instance_dir().join("cpuset.cpu_exclusive")).map_err(io)? == "1"
            {
                steps.push(w("cpuset.cpu_exclusive", "1", None));
            } else {
                zone.notes.push("cgroup v1: cpuset.cpu_exclusive needs an exclusive parent, which would deny every cpuset beside the instance any CPU; the zone's CPUs are kept to it by shrinking the commodity cpuset, sched_load_balance=0 and the host-tasks policy".into());
            }
            steps.push(w("cpuset.sched_load_balance", "0", None));
        }
        CgroupMount::V2 { .. } => {
            let excl = paths.instance_dir().join("cpuset.cpus.exclusive");
            let cur = cgroup::read_list(&excl).map_err(io)?;
            steps.push(Step::CpuDelta {
                path: excl,
                format: CpuFormat::List,
                new: cur.union(&z),
                old: cur,
                optional: false,
                original: None,
            });
            steps.push(Step::Mkdir { path: dir.clone() });
            steps.push(w("cpuset.cpus", &z.to_list(), None));
            steps.push(w("cpuset.mems", &mems, None));
            steps.push(w("cpuset.cpus.exclusive", &z.to_list(), None));
            steps.push(w("cpuset.cpus.partition", "isolated", Some("isolated")));
        }
    }
    // 2. Huge pages on the zone's node (warm memory: done above, before anything else).
    if paths.zone_memory_dir.is_none() {
        let hp = paths.nr_hugepages(zone.numa_node, zone.hugepage_kib);
        let seen = crate::hugepages::check_pool(&hp, zone.numa_node, zone.hugepage_kib)
            .map_err(|e| ("huge page pool".to_string(), e.into()))?;
        steps.push(Step::HugePages {
            path: hp,
            numa: zone.numa_node,
            page_kib: zone.hugepage_kib,
            count: zone.hugepages,
            seen,
            before: None,
            best_effort: false,
        });
    }
    // 3. Memory blocks (opt-in).
    if zone.options.offline_memory {
        let (blocks, size) =
            steer::memory_blocks(&paths.node_dir, &paths.memory_dir, zone.numa_node);
        let want = zone.memory_bytes.div_ceil(size.max(1)) as usize;
        if blocks.is_empty() {
            zone.notes.push(format!(
                "memory offlining: NUMA node {} has no online removable memory block",
                zone.numa_node
            ));
        }
        for block in blocks.into_iter().take(want) {
            steps.push(Step::MemoryOffline { block });
        }
    }
    // 4. IRQs off the zone; to the housekeeping CPUs when an IRQ had only zone CPUs.
    let originals = originals(conn).map_err(|e| ("read journal".to_string(), e))?;
    let others =
        commodity::zones_cpus(conn).map_err(|e| ("read zones".to_string(), StepError::Db(e)))?;
    let all = cgroup::root_cpus(paths).map_err(io)?;
    if zone.options.steer_irqs {
        for (_, path) in steer::irqs(&paths.irq_dir) {
            let Ok(old) = cgroup::read_list(&path) else {
                continue;
            };
            if old.is_disjoint(&z) {
                continue;
            }
            let original = originals.get(&path).cloned().unwrap_or_else(|| old.clone());
            let new = shrunk(&old, &z, &all.difference(&others));
            steps.push(Step::CpuDelta {
                path,
                format: CpuFormat::List,
                old,
                new,
                optional: true,
                original: Some(original),
            });
        }
    }
    // 5. The unbound workqueue mask.
    if zone.options.narrow_workqueue && paths.workqueue_cpumask.exists() {
        let text = cgroup::read(&paths.workqueue_cpumask).map_err(io)?;
        let old = cgroup::read_mask(&paths.workqueue_cpumask).map_err(io)?;
        let new = old.difference(&z);
        if !old.is_disjoint(&z) && !new.is_empty() {
            let original = originals
                .get(&paths.workqueue_cpumask)
                .cloned()
                .unwrap_or_else(|| old.clone());
            steps.push(Step::CpuDelta {
                path: paths.workqueue_cpumask.clone(),
                format: CpuFormat::Mask(dualstack_topology::CpuList::mask_groups(&text)),
                old,
                new,
                optional: true,
                original: Some(original),
            });
        }
    }
    // 6. Host tasks (per policy). Built last so tasks started meanwhile are seen.
    let tasks = steer::tasks_to_move(&paths.procfs, zone.options.host_tasks, &paths.instance, &z);
    if !tasks.is_empty() {
        steps.push(Step::Tasks { tasks });
    }

    run_steps(paths, conn, zone, &mut seq, steps, timings)?;
    Ok(())
}

#[allow(clippy::result_large_err)]
/// Journal, apply and mark each step in order; returns the steps as applied (a best-effort
/// huge page step records what it got).
fn run_steps(
    paths: &HostPaths,
    conn: &Connection,
    zone: &mut Zone,
    seq: &mut i64,
    steps: Vec<Step>,
    timings: &mut Timings,
) -> Result<Vec<Step>, (String, StepError)> {
    let err = |s: &Step, e: StepError| (s.label(), e);
    let mut done = Vec::with_capacity(steps.len());
    for mut step in steps {
        *seq += 1;
        let seq = *seq;
        let t = Instant::now();
        let id = journal::insert(conn, &zone.name, seq, &step).map_err(|e| err(&step, e))?;
        crash_point("create", seq, "journaled");
        let outcome = step.apply(paths).map_err(|e| err(&step, e))?;
        crash_point("create", seq, "applied");
        let (status, detail) = match &outcome {
            Outcome::Applied => (RowStatus::Applied, None),
            Outcome::Refused(why) => {
                zone.notes.push(format!(
                    "{}: refused by the kernel, carried on: {why}",
                    step.label()
                ));
                (RowStatus::Refused, Some(why.as_str()))
            }
        };
        journal::mark(conn, id, &step, status, detail).map_err(|e| err(&step, e))?;
        crash_point("create", seq, "marked");
        timings.push(step.label(), t);
        done.push(step);
    }
    Ok(done)
}

#[allow(clippy::result_large_err)]
/// The zone's warm memory (see [`crate::memory`]), journaled step by step: huge pages (1 GiB
/// for the bulk when the kernel gives them, 2 MiB for the rest), one hugetlbfs mount and one
/// populated file per page size. Runs first, so a shortage fails the create before the zone
/// changed anything else.
fn apply_memory(
    paths: &HostPaths,
    conn: &Connection,
    zone: &mut Zone,
    memdir: &Path,
    seq: &mut i64,
    timings: &mut Timings,
) -> Result<(), (String, StepError)> {
    let numa = zone.numa_node;
    let bytes = zone.memory_bytes;
    let pool = |kib: u64| -> Result<(PathBuf, u64), (String, StepError)> {
        let hp = paths.nr_hugepages(numa, kib);
        let seen = crate::hugepages::check_pool(&hp, numa, kib)
            .map_err(|e| ("huge page pool".to_string(), e.into()))?;
        Ok((hp, seen))
    };
    let hp_step = |kib: u64, count: u64, best_effort: bool| {
        pool(kib).map(|(path, seen)| Step::HugePages {
            path,
            numa,
            page_kib: kib,
            count,
            seen,
            before: None,
            best_effort,
        })
    };
    let mut gigantic = 0;
    if zone.hugepage_kib == HUGEPAGE_1G_KIB {
        gigantic = zone.hugepages;
    } else if paths.zone_1g_pages
        && bytes >= HUGEPAGE_1G_KIB * 1024
        && paths.nr_hugepages(numa, HUGEPAGE_1G_KIB).exists()
    {
        let (g, _) = crate::memory::split(bytes, u64::MAX);
        let done = run_steps(
            paths,
            conn,
            zone,
            seq,
            vec![hp_step(HUGEPAGE_1G_KIB, g, true)?],
            timings,
        )?;
        if let Some(Step::HugePages { count, .. }) = done.first() {
            gigantic = *count;
        }
        if gigantic < g {
            zone.notes.push(format!(
                "the kernel gave {gigantic} of {g} 1 GiB pages; 2 MiB pages fill the rest"
            ));
        }
    }
    let small = if zone.hugepage_kib == HUGEPAGE_1G_KIB {
        0
    } else {
        crate::memory::split(bytes, gigantic).1
    };
    let mut steps = Vec::new();
    if zone.hugepage_kib == HUGEPAGE_1G_KIB {
        steps.push(hp_step(HUGEPAGE_1G_KIB, gigantic, false)?);
    } else {
        zone.hugepages = small;
        if small > 0 {
            steps.push(hp_step(zone.hugepage_kib, small, false)?);
        }
    }
    let base = memdir.join(&zone.name);
    let mut segments = Vec::new();
    let mut start = 0;
    for (kib, count, tag) in [
        (HUGEPAGE_1G_KIB, gigantic, "1G"),
        (zone.hugepage_kib, small, "2M"),
    ] {
        if count == 0 {
            continue;
        }
        let dir = base.join(tag);
        let path = dir.join("memory");
        let size = count * kib * 1024;
        steps.push(Step::HugeMount { dir, page_kib: kib });
        steps.push(Step::MemFile {
            path: path.clone(),
            size,
            page_kib: kib,
            numa,
        });
        segments.push(crate::memory::Segment {
            start,
            size,
            page_kib: kib,
            path,
        });
        start += size;
    }
    run_steps(paths, conn, zone, seq, steps, timings)?;
    zone.memory = Some(ZoneMemory {
        segments,
        numa_node: numa,
    });
    Ok(())
}

/// Originals of the shrink-type masks other zones already changed (IRQs, workqueue): the value
/// before any zone touched them.
fn originals(conn: &Connection) -> Result<std::collections::HashMap<PathBuf, CpuList>, StepError> {
    let mut out = std::collections::HashMap::new();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM zones WHERE state IN ('active', 'releasing')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        for row in journal::rows(conn, &name)? {
            if let Step::CpuDelta {
                path,
                original: Some(o),
                ..
            } = row.step
            {
                out.entry(path).or_insert(o);
            }
        }
    }
    Ok(out)
}

/// Undo every not-yet-undone step of a zone, newest first, marking each as it goes.
fn undo_all(
    paths: &HostPaths,
    conn: &Connection,
    name: &str,
    op: &str,
    timings: &mut Timings,
) -> Result<Vec<String>, ZoneError> {
    let mut warnings = Vec::new();
    let this = load(conn, name)?.map(|z| z.cpus).unwrap_or_default();
    let others = commodity::zones_cpus(conn)?.difference(&this);
    let ctx = UndoContext {
        this,
        others,
        all: cgroup::root_cpus(paths)?,
    };
    for row in journal::rows(conn, name)?.into_iter().rev() {
        if matches!(row.status, RowStatus::Undone | RowStatus::Refused) {
            continue;
        }
        let t = Instant::now();
        if let Some(w) = row
            .step
            .undo(paths, row.status == RowStatus::Applied, &ctx)?
        {
            warnings.push(w);
        }
        journal::mark(
            conn,
            row.id,
            &row.step,
            RowStatus::Undone,
            row.detail.as_deref(),
        )?;
        crash_point(op, row.seq, "undone");
        timings.push(format!("undo {}", row.step.label()), t);
    }
    Ok(warnings)
}

// ---- release ----

/// Release zone `name`: undo its steps in reverse, restoring the previous values.
pub fn release(paths: &HostPaths, name: &str) -> Result<ReleaseReport, ZoneError> {
    let lock = StateLock::acquire(&paths.state_dir)?;
    let conn = open_db(&paths.state_dir)?;
    let Some(mut zone) = load(&conn, name)? else {
        return Err(unknown(&conn, name));
    };
    let pids = cgroup::procs(&zone.cgroup_dir)?;
    if !pids.is_empty() {
        return Err(ZoneError::Busy {
            name: name.into(),
            dir: zone.cgroup_dir,
            pids,
        });
    }
    // Jobs still holding memory refuse; zeroers stop; nothing is zeroed.
    zmem::stop_and_forget(paths, &conn, name, zone.state != ZoneState::Active)?;
    let mut timings = Timings::default();
    match zone.state {
        ZoneState::Active => transition(&conn, &mut zone, ZoneState::Releasing)?,
        ZoneState::Releasing => {}
        state => {
            drop(conn);
            // A half-made zone: recovery rolls it back.
            recover_locked(paths, &lock)?;
            return Err(ZoneError::NotActive {
                name: name.into(),
                state,
            });
        }
    }
    let mut warnings = undo_all(paths, &conn, name, "release", &mut timings)?;
    forget(&conn, name)?;
    let t = Instant::now();
    if let Err(e) = commodity::cleanup_layout(paths, &conn) {
        warnings.push(e.to_string());
    }
    timings.push("remove commodity + instance if unused".into(), t);
    Ok(ReleaseReport {
        name: name.into(),
        warnings,
        timings,
    })
}

// ---- recovery ----

/// Bring the host back to a consistent state from the journal: roll back half-made zones,
/// finish half-released ones, drop records of an earlier boot, remove orphan zone cgroups and
/// the commodity/instance cgroups when nothing uses them. Takes the state lock.
pub fn recover(paths: &HostPaths) -> Result<RecoverReport, ZoneError> {
    let lock = StateLock::acquire(&paths.state_dir)?;
    recover_locked(paths, &lock)
}

/// [`recover`] for a caller holding the state lock (cheap when there is nothing to do).
pub fn recover_locked(paths: &HostPaths, _lock: &StateLock) -> Result<RecoverReport, ZoneError> {
    let conn = open_db(&paths.state_dir)?;
    let boot = state::boot_id(&paths.procfs);
    let mut report = RecoverReport::default();
    for (mut zone, zone_boot) in load_all(&conn)? {
        if zone_boot != boot {
            forget(&conn, &zone.name)?;
            report.dropped_stale.push(zone.name);
            continue;
        }
        match zone.state {
            ZoneState::Active => {
                // Memory a killed job or zeroer left dirty: a new zeroer takes it over in the
                // background (`finish_zeroing` waits for it; `dualstack recover` does).
                if let Some(mem) = &zone.memory {
                    match zmem::recover_zone(paths, &zone.name, mem) {
                        Ok(0) => {}
                        Ok(bytes) => report.zeroed.push(format!(
                            "{}: {} MiB (zeroing in the background)",
                            zone.name,
                            bytes.div_ceil(1 << 20)
                        )),
                        Err(e) => report.warnings.push(e.to_string()),
                    }
                }
                continue;
            }
            ZoneState::Applying | ZoneState::Planned => {
                if zone.state == ZoneState::Applying {
                    transition(&conn, &mut zone, ZoneState::RollingBack)?;
                }
                report.rolled_back.push(zone.name.clone());
            }
            ZoneState::RollingBack => report.rolled_back.push(zone.name.clone()),
            ZoneState::Releasing | ZoneState::Released => {
                report.finished_release.push(zone.name.clone())
            }
        }
        if let Err(e) = zmem::stop_and_forget(paths, &conn, &zone.name, true) {
            report.warnings.push(e.to_string());
        }
        let op = if zone.state == ZoneState::Releasing {
            "release"
        } else {
            "rollback"
        };
        report.warnings.extend(undo_all(
            paths,
            &conn,
            &zone.name,
            op,
            &mut Timings::default(),
        )?);
        forget(&conn, &zone.name)?;
    }
    // Zone directories no record names (only ours: `zone-*` under our instance, and empty).
    let known: Vec<PathBuf> = load_all(&conn)?
        .into_iter()
        .map(|(z, _)| z.cgroup_dir)
        .collect();
    if let Ok(entries) = std::fs::read_dir(paths.instance_dir()) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let is_zone = e.file_name().to_string_lossy().starts_with("zone-") && p.is_dir();
            if is_zone && !known.contains(&p) {
                match cgroup::rmdir(&p) {
                    Ok(_) => report.removed_orphans.push(p),
                    Err(e) => report.warnings.push(e.to_string()),
                }
            }
        }
    }
    match commodity::cleanup_layout(paths, &conn) {
        Ok(gone) => report.layout_removed = gone,
        Err(e) => report.warnings.push(e.to_string()),
    }
    Ok(report)
}

/// Zero, in this process, all warm memory of active zones that is dirty and that no live
/// zeroer works on, then wait for the live zeroers to finish (`dualstack recover`). Adds what
/// it zeroed to `report.zeroed`.
pub fn finish_zeroing(paths: &HostPaths, report: &mut RecoverReport) -> Result<(), ZoneError> {
    for zone in list(paths)? {
        let (ZoneState::Active, Some(mem)) = (zone.state, &zone.memory) else {
            continue;
        };
        let r = zmem::finish(paths, &zone.name, mem)?;
        if r.bytes > 0 {
            report.zeroed.push(format!(
                "{}: {} MiB (zeroed here)",
                zone.name,
                r.bytes.div_ceil(1 << 20)
            ));
        }
    }
    Ok(())
}

// ---- entering a zone (HPC VMM) ----

/// The calling process, moved into a zone's cgroup; [`ZoneEntry::leave`] (or drop) moves it back.
#[derive(Debug)]
pub struct ZoneEntry {
    previous: PathBuf,
    left: bool,
}

/// Move the calling process (all its threads) into `zone`'s cpuset cgroup.
pub fn enter(paths: &HostPaths, zone: &Zone) -> Result<ZoneEntry, ZoneError> {
    if zone.state != ZoneState::Active {
        return Err(ZoneError::NotActive {
            name: zone.name.clone(),
            state: zone.state,
        });
    }
    let pid = std::process::id();
    let previous = cgroup::cgroup_of(paths, pid)?;
    cgroup::attach(&zone.cgroup_dir, pid)?;
    Ok(ZoneEntry {
        previous,
        left: false,
    })
}

impl ZoneEntry {
    /// The cgroup the process came from.
    pub fn previous(&self) -> &Path {
        &self.previous
    }
    /// Move the calling process back where it came from.
    pub fn leave(mut self) -> Result<(), ZoneError> {
        self.left = true;
        Ok(cgroup::attach(&self.previous, std::process::id())?)
    }
}

impl Drop for ZoneEntry {
    fn drop(&mut self) {
        if !self.left {
            let _ = cgroup::attach(&self.previous, std::process::id());
        }
    }
}
