//! The commodity cpuset: `<cpuset root>/<instance>/commodity`, holding every CPU no zone holds.
//! Commodity VMs (and their QEMU threads) live here; when a zone is created the commodity
//! cpuset shrinks, which re-confines its tasks at once, and it grows back when the zone goes.
//!
//! API for the commodity VM driver:
//! - [`ensure`] / [`ensure_locked`]: create the cpuset if needed and return its directory, CPUs
//!   and memory nodes;
//! - [`attach`]: move a process we started (all its threads) into it;
//! - [`tasks`]: processes in it;
//! - [`release_if_unused`] / [`release_if_unused_locked`]: remove it (and the instance parent)
//!   when no zone exists and no process is left in it.
//!
//! The `_locked` variants take the caller's [`StateLock`] (flock locks belong to an open file:
//! taking the lock twice in one process would block); the others take it themselves.

use std::path::PathBuf;

use dualstack_topology::CpuList;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupError};
use crate::paths::{CgroupMount, HostPaths};
use crate::state::{open_db, StateError, StateLock};

/// Errors of the commodity cpuset.
#[derive(Debug, thiserror::Error)]
pub enum CommodityError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("all CPUs of the cpuset root ({root}) are held by zones ({zones}); release a zone to give commodity work a CPU")]
    NoCpus { root: String, zones: String },
}

/// The commodity cpuset as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commodity {
    /// The cgroup directory (write a pid to `cgroup.procs` there, or use [`attach`]).
    pub cgroup_dir: PathBuf,
    /// CPUs commodity work may use: all CPUs no zone holds.
    pub cpus: CpuList,
    /// Memory nodes commodity work may use.
    pub mems: CpuList,
}

/// Create the commodity cpuset if needed; return it. Takes the state lock.
pub fn ensure(paths: &HostPaths) -> Result<Commodity, CommodityError> {
    let lock = StateLock::acquire(&paths.state_dir)?;
    ensure_locked(paths, &lock)
}

/// [`ensure`] for a caller that already holds the state lock.
pub fn ensure_locked(paths: &HostPaths, _lock: &StateLock) -> Result<Commodity, CommodityError> {
    let conn = open_db(&paths.state_dir)?;
    ensure_layout(paths, &conn)
}

/// The commodity cpuset if it exists.
pub fn current(paths: &HostPaths) -> Result<Option<Commodity>, CommodityError> {
    let dir = paths.commodity_dir();
    if !dir.exists() {
        return Ok(None);
    }
    let (cpus_file, mems_file) = match paths.cgroup {
        CgroupMount::V1 { .. } => ("cpuset.cpus", "cpuset.mems"),
        CgroupMount::V2 { .. } => ("cpuset.cpus", "cpuset.mems"),
    };
    Ok(Some(Commodity {
        cpus: cgroup::read_list(&dir.join(cpus_file))?,
        mems: cgroup::read_list(&dir.join(mems_file))?,
        cgroup_dir: dir,
    }))
}

/// Move process `pid` (one the project started; all its threads) into the commodity cpuset.
/// The cpuset must exist ([`ensure`]).
pub fn attach(paths: &HostPaths, pid: u32) -> Result<(), CommodityError> {
    Ok(cgroup::attach(&paths.commodity_dir(), pid)?)
}

/// Processes in the commodity cpuset (empty when it does not exist).
pub fn tasks(paths: &HostPaths) -> Result<Vec<u32>, CommodityError> {
    Ok(cgroup::procs(&paths.commodity_dir())?)
}

/// Remove the commodity cpuset and the instance directory when no zone exists and no process
/// is in the commodity cpuset. Returns true when they are gone (or were never there).
pub fn release_if_unused(paths: &HostPaths) -> Result<bool, CommodityError> {
    let lock = StateLock::acquire(&paths.state_dir)?;
    release_if_unused_locked(paths, &lock)
}

/// [`release_if_unused`] for a caller that already holds the state lock.
pub fn release_if_unused_locked(
    paths: &HostPaths,
    _lock: &StateLock,
) -> Result<bool, CommodityError> {
    let conn = open_db(&paths.state_dir)?;
    cleanup_layout(paths, &conn)
}

// ---- the shared layout, used by zones too ----

const INFRA_V2_ROOT_CPUSET: &str = "v2_root_subtree_cpuset";

/// CPUs that active (or releasing) zones hold: what the commodity cpuset must not have. A zone
/// being created is left out: its own journaled step takes its CPUs from the commodity cpuset.
pub(crate) fn zones_cpus(conn: &Connection) -> Result<CpuList, rusqlite::Error> {
    let mut stmt =
        conn.prepare("SELECT record FROM zones WHERE state IN ('active', 'releasing')")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut cpus = CpuList::new();
    for record in rows {
        if let Ok(z) = serde_json::from_str::<crate::zone::Zone>(&record?) {
            cpus = cpus.union(&z.cpus);
        }
    }
    Ok(cpus)
}

pub(crate) fn zone_count(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT count(*) FROM zones", [], |r| r.get(0))
}

/// Ensure `<root>/<instance>` and `<instance>/commodity` exist and are set up (idempotent).
/// Commodity CPUs are set to "root minus zones" only when it is created; afterwards zone steps
/// shrink and grow it.
pub(crate) fn ensure_layout(
    paths: &HostPaths,
    conn: &Connection,
) -> Result<Commodity, CommodityError> {
    let root_cpus = cgroup::root_cpus(paths)?;
    let root_mems = cgroup::root_mems(paths)?;
    let inst = paths.instance_dir();
    match &paths.cgroup {
        CgroupMount::V1 { .. } => {
            if cgroup::mkdir(&inst)? || cgroup::read(&inst.join("cpuset.cpus"))?.is_empty() {
                cgroup::write(&inst.join("cpuset.cpus"), &root_cpus.to_list())?;
                cgroup::write(&inst.join("cpuset.mems"), &root_mems.to_list())?;
                // The instance is deliberately NOT cpu_exclusive: with all CPUs it would forbid
                // every other cpuset beside it (docker, systemd, other instances) any CPU.
                // Zones are exclusive by construction instead (see `zone`).
            }
        }
        CgroupMount::V2 { root } => {
            let subtree = root.join("cgroup.subtree_control");
            let enabled = cgroup::read(&subtree)?;
            if !enabled.split_whitespace().any(|c| c == "cpuset") {
                conn.execute(
                    "INSERT OR REPLACE INTO zone_infra VALUES (?1, '1')",
                    [INFRA_V2_ROOT_CPUSET],
                )?;
                write_v2_subtree(&subtree, &enabled, "+cpuset")?;
            }
            cgroup::mkdir(&inst)?;
            let inst_subtree = inst.join("cgroup.subtree_control");
            let enabled = cgroup::read(&inst_subtree)?;
            if !enabled.split_whitespace().any(|c| c == "cpuset") {
                write_v2_subtree(&inst_subtree, &enabled, "+cpuset")?;
            }
        }
    }
    let dir = paths.commodity_dir();
    if cgroup::mkdir(&dir)? || cgroup::read(&dir.join("cpuset.cpus"))?.is_empty() {
        let zones = zones_cpus(conn)?;
        let cpus = root_cpus.difference(&zones);
        if cpus.is_empty() {
            return Err(CommodityError::NoCpus {
                root: root_cpus.to_list(),
                zones: zones.to_list(),
            });
        }
        cgroup::write(&dir.join("cpuset.cpus"), &cpus.to_list())?;
        cgroup::write(&dir.join("cpuset.mems"), &root_mems.to_list())?;
    }
    Ok(current(paths)?.expect("commodity cpuset was just created"))
}

/// Write a `cgroup.subtree_control` change (`+cpuset` / `-cpuset`). On a fake tree the file is
/// plain, so keep it meaningful by writing the resulting controller list.
fn write_v2_subtree(path: &std::path::Path, before: &str, change: &str) -> Result<(), CgroupError> {
    if cgroup::is_cgroupfs(path.parent().unwrap_or(path)) {
        return cgroup::write(path, change);
    }
    let name = &change[1..];
    let mut ctrls: Vec<&str> = before.split_whitespace().filter(|c| *c != name).collect();
    if change.starts_with('+') {
        ctrls.push(name);
    }
    cgroup::write(path, &ctrls.join(" "))
}

/// Remove commodity + instance when no zone is recorded and commodity holds no process; undo
/// the v2 root controller change we made. Returns true when nothing is left.
pub(crate) fn cleanup_layout(paths: &HostPaths, conn: &Connection) -> Result<bool, CommodityError> {
    if zone_count(conn)? > 0 || !cgroup::procs(&paths.commodity_dir())?.is_empty() {
        return Ok(false);
    }
    cgroup::rmdir(&paths.commodity_dir())?;
    // Leftover zone directories from a crash are removed by recovery before this runs; if any
    // remain the instance stays, and rmdir says why.
    cgroup::rmdir(&paths.instance_dir())?;
    if let CgroupMount::V2 { root } = &paths.cgroup {
        let ours: Option<String> = conn
            .query_row(
                "SELECT value FROM zone_infra WHERE key = ?1",
                [INFRA_V2_ROOT_CPUSET],
                |r| r.get(0),
            )
            .optional()?;
        if ours.is_some() {
            let subtree = root.join("cgroup.subtree_control");
            let enabled = cgroup::read(&subtree)?;
            // Another user may have put cpusets under the root meanwhile: then the kernel
            // refuses (EBUSY) and the controller stays on, which is harmless.
            if let Err(e) = write_v2_subtree(&subtree, &enabled, "-cpuset") {
                tracing::warn!("{e}: leaving the cpuset controller enabled at the root");
            }
            conn.execute(
                "DELETE FROM zone_infra WHERE key = ?1",
                [INFRA_V2_ROOT_CPUSET],
            )?;
        }
    }
    Ok(true)
}
