//! Journal steps: every change a zone makes to the host, recorded (with the old and the new
//! value) in `zone_journal` before it is applied, so that a rollback, a release or a recovery
//! after `kill -9` can undo it. Every undo is idempotent and correct whether or not the step was
//! actually applied before a crash.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use dualstack_topology::CpuList;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupError};
use crate::hugepages::{self, HugePageError};
use crate::paths::HostPaths;
use crate::steer::{self, TaskAffinity};

/// Errors applying or undoing a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    File(#[from] CgroupError),
    #[error(transparent)]
    HugePages(#[from] HugePageError),
    #[error("the kernel accepted {value:?} for {path} but reports {got:?}: {hint}")]
    NotTaken {
        path: PathBuf,
        value: String,
        got: String,
        hint: String,
    },
    #[error(transparent)]
    Memory(#[from] crate::memory::MemError),
    #[error("journal database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("journal row {id} holds an unreadable step: {source}")]
    BadRow {
        id: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// How a CPU set is written in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuFormat {
    /// `0-3,8`
    List,
    /// hex mask with this many 32-bit groups
    Mask(usize),
}

impl CpuFormat {
    fn format(self, set: &CpuList) -> String {
        match self {
            CpuFormat::List => set.to_list(),
            CpuFormat::Mask(groups) => set.to_mask(groups),
        }
    }
    fn read(self, path: &Path) -> Result<CpuList, CgroupError> {
        match self {
            CpuFormat::List => cgroup::read_list(path),
            CpuFormat::Mask(_) => cgroup::read_mask(path),
        }
    }
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Create a cgroup directory (undo: remove it).
    Mkdir { path: PathBuf },
    /// Write a file; undo writes `old` back when `old` is set and the file still exists
    /// (`old: None` for files of a directory this zone created, which go with it).
    Write {
        path: PathBuf,
        old: Option<String>,
        new: String,
        /// Read back and require this prefix (e.g. `isolated` for a v2 partition).
        expect: Option<String>,
    },
    /// Change a CPU set shared with other zones (commodity CPUs, an IRQ affinity, the workqueue
    /// mask, the v2 instance's exclusive CPUs). Undo reverts only this zone's delta on the
    /// current value: `(current - (new - old)) + (old - new)`, which is exact when nothing else
    /// changed and keeps other zones' changes when they did.
    CpuDelta {
        path: PathBuf,
        format: CpuFormat,
        old: CpuList,
        new: CpuList,
        /// A refusal is reported and skipped instead of failing the zone (IRQs, workqueue).
        optional: bool,
        /// For masks that zones shrink (IRQs, workqueue): the value before any zone touched
        /// it. Undo then recomputes the value the remaining zones want from it, which stays
        /// exact even when an earlier zone had to widen the mask to housekeeping CPUs.
        #[serde(default)]
        original: Option<CpuList>,
    },
    /// Add huge pages to a NUMA node's pool (by delta, under the huge page lock).
    HugePages {
        path: PathBuf,
        numa: u32,
        page_kib: u64,
        count: u64,
        /// Pool size read when the step was journaled (crash-window recovery uses it).
        seen: u64,
        /// Pool size just before our write, under the lock; set once applied.
        before: Option<u64>,
        /// Keep what the kernel gives when it gives fewer (1 GiB pages for the bulk of a zone's
        /// memory); `count` is then set to what was given.
        #[serde(default)]
        best_effort: bool,
    },
    /// Mount a hugetlbfs of one page size for a zone's memory files. Undo: unmount it and
    /// remove the directory.
    HugeMount { dir: PathBuf, page_kib: u64 },
    /// A zone memory file: created, bound to the zone's node and populated. Undo: delete it,
    /// which gives its pages back to the pool at once (nothing is zeroed).
    MemFile {
        path: PathBuf,
        size: u64,
        page_kib: u64,
        numa: u32,
    },
    /// Offline a memory block (optional: the kernel may refuse).
    MemoryOffline { block: PathBuf },
    /// Narrow thread affinities (host tasks moved to housekeeping CPUs).
    Tasks { tasks: Vec<TaskAffinity> },
}

/// What applying a step did, beyond success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Optional step the kernel refused: the reason, reported to the user.
    Refused(String),
}

impl Step {
    /// Short label for timings and reports.
    pub fn label(&self) -> String {
        match self {
            Step::Mkdir { path } => format!("mkdir {}", short(path)),
            Step::Write { path, .. } => format!("write {}", short(path)),
            Step::CpuDelta { path, .. } => format!("cpus {}", short(path)),
            Step::HugePages {
                count,
                page_kib,
                numa,
                ..
            } => {
                format!("hugepages +{count}x{page_kib}KiB node{numa}")
            }
            Step::MemoryOffline { block } => format!("offline {}", short(block)),
            Step::Tasks { tasks } => format!("move {} host threads", tasks.len()),
            Step::HugeMount { page_kib, .. } => format!("mount hugetlbfs {page_kib}KiB"),
            Step::MemFile { size, page_kib, .. } => {
                format!("populate {} MiB of {page_kib}KiB pages", size >> 20)
            }
        }
    }

    /// Apply the step. `self` may be updated with what happened (huge page pool size before).
    pub fn apply(&mut self, paths: &HostPaths) -> Result<Outcome, StepError> {
        match self {
            Step::Mkdir { path } => {
                cgroup::mkdir(path)?;
            }
            Step::Write {
                path, new, expect, ..
            } => {
                cgroup::write(path, new)?;
                if let Some(prefix) = expect {
                    let got = cgroup::read(path)?;
                    if !got.starts_with(prefix.as_str()) || got.contains("invalid") {
                        return Err(StepError::NotTaken {
                            path: path.clone(),
                            value: new.clone(),
                            got,
                            hint: "the kernel could not make this cpuset a partition (are the CPUs exclusive of every sibling? is the kernel >= 6.7?)".into(),
                        });
                    }
                }
            }
            Step::CpuDelta {
                path,
                format,
                new,
                optional,
                ..
            } => match cgroup::write(path, &format.format(new)) {
                Ok(()) => {}
                Err(e) if *optional => return Ok(Outcome::Refused(e.to_string())),
                Err(e) => return Err(e.into()),
            },
            Step::HugePages {
                path,
                numa,
                page_kib,
                count,
                before,
                best_effort,
                ..
            } => {
                if *best_effort {
                    let (b, got) = hugepages::reserve_up_to(
                        &paths.hugepage_lock,
                        path,
                        *numa,
                        *page_kib,
                        *count,
                    )?;
                    *before = Some(b);
                    *count = got - b;
                } else {
                    let (b, _) =
                        hugepages::reserve(&paths.hugepage_lock, path, *numa, *page_kib, *count)?;
                    *before = Some(b);
                }
            }
            Step::HugeMount { dir, page_kib } => crate::memory::mount(dir, *page_kib)?,
            Step::MemFile {
                path,
                size,
                page_kib,
                numa,
            } => crate::memory::make_file(paths, path, *size, *page_kib, *numa)?,
            Step::MemoryOffline { block } => {
                if let Err(e) = cgroup::write(&block.join("state"), "offline") {
                    return Ok(Outcome::Refused(e.to_string()));
                }
            }
            Step::Tasks { tasks } => {
                let mut refused = Vec::new();
                for t in tasks.iter() {
                    if let Err(e) = steer::set_affinity(t.tid, &t.new) {
                        refused.push(format!("{}/{} ({}): {e}", t.pid, t.tid, t.comm));
                    }
                }
                if !refused.is_empty() {
                    return Ok(Outcome::Refused(format!(
                        "could not move threads {}",
                        refused.join(", ")
                    )));
                }
            }
        }
        Ok(Outcome::Applied)
    }

    /// Undo the step, whether or not it was applied (`applied` says what the journal knows).
    /// `ctx` tells which CPUs the other zones still hold. Returns a warning when something
    /// could not be restored exactly.
    pub fn undo(
        &self,
        paths: &HostPaths,
        applied: bool,
        ctx: &UndoContext,
    ) -> Result<Option<String>, StepError> {
        match self {
            Step::Mkdir { path } => {
                cgroup::rmdir(path)?;
            }
            Step::Write { path, old, .. } => {
                if let Some(old) = old {
                    if path.exists() && cgroup::read(path)? != *old {
                        cgroup::write(path, old)?;
                    }
                }
            }
            Step::CpuDelta {
                path,
                format,
                old,
                new,
                optional,
                original,
            } => {
                if !path.exists() {
                    return Ok(None);
                }
                let current = format.read(path)?;
                let with_us = original
                    .as_ref()
                    .map(|o| shrunk(o, &ctx.others.union(&ctx.this), &ctx.all));
                let mut target = match (original, with_us) {
                    // Nobody else changed it: what the remaining zones want.
                    (Some(o), Some(w)) if w == current => shrunk(o, &ctx.others, &ctx.all),
                    // Changed behind our back (or no original): revert only our delta.
                    _ => current
                        .difference(&new.difference(old))
                        .union(&old.difference(new)),
                };
                if target.is_empty() {
                    target = old.clone();
                }
                if target != current {
                    if let Err(e) = cgroup::write(path, &format.format(&target)) {
                        if *optional {
                            return Ok(Some(e.to_string()));
                        }
                        return Err(e.into());
                    }
                }
            }
            Step::HugePages {
                path,
                count,
                seen,
                before,
                ..
            } => {
                if applied && before.is_some() {
                    hugepages::give_back(&paths.hugepage_lock, path, *count)?;
                } else {
                    // Crash between the write and the journal update: decide from the pool.
                    let b = before.unwrap_or(*seen);
                    return Ok(hugepages::undo_unknown(
                        &paths.hugepage_lock,
                        path,
                        b,
                        b + count,
                    )?);
                }
            }
            Step::HugeMount { dir, .. } => crate::memory::unmount(dir)?,
            Step::MemFile { path, .. } => match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Ok(Some(format!("cannot delete {}: {e}", path.display()))),
            },
            Step::MemoryOffline { block } => {
                let state = block.join("state");
                if cgroup::read(&state)? == "offline" {
                    cgroup::write(&state, "online")?;
                }
            }
            Step::Tasks { tasks } => {
                let mut missed = Vec::new();
                for t in tasks {
                    // Only threads that are still the same thread and still where we put them:
                    // a thread that re-pinned itself meanwhile keeps its own choice.
                    if steer::start_time(&paths.procfs, t.pid, t.tid) != Some(t.start) {
                        continue;
                    }
                    if steer::affinity(&paths.procfs, t.pid, t.tid).as_ref() != Some(&t.new) {
                        continue;
                    }
                    if let Err(e) = steer::set_affinity(t.tid, &t.old) {
                        missed.push(format!("{}/{}: {e}", t.pid, t.tid));
                    }
                }
                if !missed.is_empty() {
                    return Ok(Some(format!(
                        "could not restore threads {}",
                        missed.join(", ")
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// What an undo needs to know about the other zones.
#[derive(Debug, Clone, Default)]
pub struct UndoContext {
    /// CPUs of the zone being undone.
    pub this: CpuList,
    /// CPUs the other zones (still) hold.
    pub others: CpuList,
    /// Every CPU of the cpuset root (housekeeping = all minus zones).
    pub all: CpuList,
}

/// A mask shrunk off `zones`: `original - zones`, or the housekeeping CPUs (`all - zones`) when
/// nothing would be left.
pub fn shrunk(original: &CpuList, zones: &CpuList, all: &CpuList) -> CpuList {
    let left = original.difference(zones);
    if left.is_empty() {
        all.difference(zones)
    } else {
        left
    }
}

fn short(path: &Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

// ---- journal rows ----

/// Status of a journal row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// Recorded, maybe applied (crash window).
    Intent,
    Applied,
    /// Optional step the kernel refused; nothing to undo.
    Refused,
    Undone,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Intent => "intent",
            RowStatus::Applied => "applied",
            RowStatus::Refused => "refused",
            RowStatus::Undone => "undone",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "applied" => RowStatus::Applied,
            "refused" => RowStatus::Refused,
            "undone" => RowStatus::Undone,
            _ => RowStatus::Intent,
        }
    }
}

/// A journal row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub seq: i64,
    pub step: Step,
    pub status: RowStatus,
    pub detail: Option<String>,
}

pub fn insert(conn: &Connection, zone: &str, seq: i64, step: &Step) -> Result<i64, StepError> {
    let json = serde_json::to_string(step).expect("steps serialize");
    conn.execute(
        "INSERT INTO zone_journal (zone, seq, step, status) VALUES (?1, ?2, ?3, 'intent')",
        params![zone, seq, json],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn mark(
    conn: &Connection,
    id: i64,
    step: &Step,
    status: RowStatus,
    detail: Option<&str>,
) -> Result<(), StepError> {
    let json = serde_json::to_string(step).expect("steps serialize");
    conn.execute(
        "UPDATE zone_journal SET step = ?2, status = ?3, detail = ?4 WHERE id = ?1",
        params![id, json, status.as_str(), detail],
    )?;
    Ok(())
}

pub fn rows(conn: &Connection, zone: &str) -> Result<Vec<Row>, StepError> {
    let mut stmt = conn.prepare(
        "SELECT id, seq, step, status, detail FROM zone_journal WHERE zone = ?1 ORDER BY seq",
    )?;
    let raw = stmt
        .query_map([zone], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raw.into_iter()
        .map(|(id, seq, step, status, detail)| {
            Ok(Row {
                id,
                seq,
                step: serde_json::from_str(&step)
                    .map_err(|source| StepError::BadRow { id, source })?,
                status: RowStatus::parse(&status),
                detail,
            })
        })
        .collect()
}

pub fn delete(conn: &Connection, zone: &str) -> Result<(), StepError> {
    conn.execute("DELETE FROM zone_journal WHERE zone = ?1", [zone])?;
    Ok(())
}

// ---- crash injection (tests) ----

/// `DUALSTACK_CRASH_AT=<op>:<seq>:<phase>` kills this process with SIGKILL at that point:
/// op `create`/`release`, phase `journaled` (row written, step not applied), `applied` (applied,
/// not yet marked) or `marked`. Used by the crash tests; unset in normal use.
pub fn crash_point(op: &str, seq: i64, phase: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("DUALSTACK_CRASH_AT").ok());
    if let Some(at) = at {
        if *at == format!("{op}:{seq}:{phase}") {
            // SAFETY: sending SIGKILL to ourselves; nothing runs after it.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

/// Time spent per step, for the benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings(pub Vec<(String, f64)>);

impl Timings {
    pub fn push(&mut self, label: String, since: Instant) {
        self.0.push((label, since.elapsed().as_secs_f64() * 1e3));
    }
}
