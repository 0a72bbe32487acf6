//! Discovery for the steering steps: IRQs, the unbound workqueue mask, host tasks and memory
//! blocks. The changes themselves are journal steps (see `journal`).

use std::path::{Path, PathBuf};

use dualstack_topology::CpuList;
use serde::{Deserialize, Serialize};

use crate::cgroup;

/// Which host tasks a zone moves off its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostTasks {
    /// Every task whose affinity can change (real nodes).
    Move,
    /// None.
    #[default]
    Leave,
    /// Only tasks the project started: those whose environment has
    /// `DUALSTACK_MOVABLE=<instance>` (tests, shared machines).
    ProjectOnly,
}

/// Environment variable marking a process as movable by `--host-tasks project-only`.
pub const MOVABLE_ENV: &str = "DUALSTACK_MOVABLE";

/// IRQs with an affinity file: (irq number, path of `smp_affinity_list`).
pub fn irqs(irq_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(irq_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let path = e.path().join("smp_affinity_list");
            path.exists().then_some((n, path))
        })
        .collect();
    out.sort();
    out
}

/// One thread whose affinity a zone changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAffinity {
    pub pid: u32,
    pub tid: u32,
    /// Start time (clock ticks since boot) to recognise the same thread later.
    pub start: u64,
    pub comm: String,
    pub old: CpuList,
    pub new: CpuList,
}

const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

struct Stat {
    comm: String,
    flags: u64,
    start: u64,
}

fn stat(path: &Path) -> Option<Stat> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": field 3 is index 0; flags is field 9, starttime field 22.
    Some(Stat {
        comm,
        flags: fields.get(6)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Current affinity of a thread, from `/proc/<pid>/task/<tid>/status`.
pub fn affinity(procfs: &Path, pid: u32, tid: u32) -> Option<CpuList> {
    let text = std::fs::read_to_string(procfs.join(format!("{pid}/task/{tid}/status"))).ok()?;
    let line = text.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    CpuList::parse_list(line.split_once(':')?.1).ok()
}

/// Start time of a thread (to check it is still the same one).
pub fn start_time(procfs: &Path, pid: u32, tid: u32) -> Option<u64> {
    stat(&procfs.join(format!("{pid}/task/{tid}/stat"))).map(|s| s.start)
}

fn is_marked(procfs: &Path, pid: u32, instance: &str) -> bool {
    let Ok(env) = std::fs::read(procfs.join(format!("{pid}/environ"))) else {
        return false;
    };
    let want = format!("{MOVABLE_ENV}={instance}");
    env.split(|b| *b == 0).any(|v| v == want.as_bytes())
}

/// Threads to move off `zone` CPUs under `policy`, with their new affinity (old minus the zone).
/// Skipped: per-CPU kernel threads (PF_NO_SETAFFINITY), threads already off the zone, threads
/// pinned entirely inside the zone (they would have nowhere to go), and threads in cgroups under
/// `skip_cgroup` (our own zones and commodity).
pub fn tasks_to_move(
    procfs: &Path,
    policy: HostTasks,
    instance: &str,
    zone: &CpuList,
) -> Vec<TaskAffinity> {
    if policy == HostTasks::Leave {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(procfs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if policy == HostTasks::ProjectOnly && !is_marked(procfs, pid, instance) {
            continue;
        }
        let Ok(threads) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        for t in threads.filter_map(Result::ok) {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(st) = stat(&t.path().join("stat")) else {
                continue;
            };
            if st.flags & PF_NO_SETAFFINITY != 0 {
                continue;
            }
            let Some(old) = affinity(procfs, pid, tid) else {
                continue;
            };
            if old.is_disjoint(zone) || old.is_subset(zone) {
                continue;
            }
            out.push(TaskAffinity {
                pid,
                tid,
                start: st.start,
                comm: st.comm,
                new: old.difference(zone),
                old,
            });
        }
    }
    out.sort_by_key(|t| (t.pid, t.tid));
    out
}

/// `sched_setaffinity` for one thread.
pub fn set_affinity(tid: u32, cpus: &CpuList) -> std::io::Result<()> {
    let tid =
        libc::pid_t::try_from(tid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    dualstack_sys::set_thread_affinity(tid, cpus.iter().map(|c| c as usize))
}

/// Online, removable memory blocks of a NUMA node: `memory_dir/memoryN` paths, and the block size.
pub fn memory_blocks(node_dir: &Path, memory_dir: &Path, numa: u32) -> (Vec<PathBuf>, u64) {
    let block_size = cgroup::read(&memory_dir.join("block_size_bytes"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(128 << 20);
    let Ok(entries) = std::fs::read_dir(node_dir.join(format!("node{numa}"))) else {
        return (Vec::new(), block_size);
    };
    let mut blocks: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("memory")?.parse().ok()?;
            let block = memory_dir.join(&name);
            let online = cgroup::read(&block.join("state")).ok()? == "online";
            let removable = cgroup::read(&block.join("removable"))
                .map(|r| r != "0")
                .unwrap_or(true);
            (online && removable).then_some((n, block))
        })
        .collect();
    // Highest blocks first: the kernel's own early allocations sit low.
    blocks.sort_by_key(|b| std::cmp::Reverse(b.0));
    (blocks.into_iter().map(|(_, p)| p).collect(), block_size)
}
