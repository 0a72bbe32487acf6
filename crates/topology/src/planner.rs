//! The zone planner: picks whole cores (never splitting SMT siblings), on one NUMA node when
//! possible, preferring a whole socket, with memory from the same node, always leaving at least
//! one housekeeping core. A refusal says what was asked, what is free and what would fit.

use serde::{Deserialize, Serialize};

use crate::cpulist::CpuList;
use crate::model::{Node, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB};

/// How the CPUs of a zone are asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CpuRequest {
    /// This many whole cores (each with all its SMT siblings), placed by the planner.
    Cores(u32),
    /// Exactly these CPUs; they must form whole cores.
    List(CpuList),
}

/// A zone request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRequest {
    pub cpus: CpuRequest,
    pub memory_bytes: u64,
    pub numa_node: Option<u32>,
    /// Huge page size backing the zone's memory (2048 or 1048576 KiB).
    pub hugepage_kib: u64,
}

/// Resources an existing zone holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    pub zone: String,
    pub cpus: CpuList,
    pub numa_node: u32,
    pub memory_bytes: u64,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub cpus: CpuList,
    /// Core ids of the zone.
    pub cores: Vec<u32>,
    /// NUMA node the memory comes from (and that holds most of the cores).
    pub numa_node: u32,
    /// Every NUMA node the cores sit on (one unless no single node could hold them).
    pub numa_nodes: Vec<u32>,
    /// Memory rounded up to whole huge pages.
    pub memory_bytes: u64,
    pub hugepage_kib: u64,
    pub hugepages: u64,
    /// Set when the zone is exactly one whole package (socket).
    pub whole_package: Option<u32>,
    /// Why this placement (or what compromise was made).
    pub notes: Vec<String>,
}

/// Why a request was refused. Each message says what was asked, what is free and what fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("asked for 0 cores: a zone needs at least one whole core")]
    NoCores,
    #[error("asked for 0 bytes of memory: a zone needs memory (example: --memory 256M)")]
    NoMemory,
    #[error("huge page size {0} KiB is not supported: use 2048 (2M) or 1048576 (1G)")]
    BadPageSize(u64),
    #[error("NUMA node {asked} does not exist; this node has NUMA nodes {existing}")]
    NoSuchNumaNode { asked: u32, existing: String },
    #[error("CPUs {cpus} do not exist; this node has CPUs {existing}")]
    NoSuchCpu { cpus: String, existing: String },
    #[error("CPUs {asked} split core {core} (SMT siblings {pus}): zones take whole cores; ask for {suggest}")]
    SplitsCore {
        asked: String,
        core: u32,
        pus: String,
        suggest: String,
    },
    #[error("CPUs {cpus} are already held by zone {zone:?}; free CPUs: {free}")]
    CpuBusy {
        cpus: String,
        zone: String,
        free: String,
    },
    #[error("asked for {asked} cores{on}, but {free} cores are free ({free_cpus}) and one must stay for housekeeping: at most {fits} would fit{where_}")]
    TooManyCores {
        asked: u32,
        on: String,
        free: u32,
        free_cpus: String,
        fits: u32,
        where_: String,
    },
    #[error("CPUs {asked} would leave no housekeeping core (free CPUs: {free}); leave at least one core out")]
    NoHousekeeping { asked: String, free: String },
    #[error("asked for {asked} MiB of memory on NUMA node {node}, but only {available} MiB are available there (node has {total} MiB, zones hold {held} MiB){hint}")]
    MemoryDoesNotFit {
        asked: u64,
        node: u32,
        available: u64,
        total: u64,
        held: u64,
        hint: String,
    },
}

const MIB: u64 = 1 << 20;

/// Memory a NUMA node can still give: its size minus what zones hold, capped by free memory
/// plus free huge pages when the host reported them.
fn available_memory(node: &Node, numa: u32, held: &[Held]) -> (u64, u64, u64) {
    let Some(n) = node.numa_node(numa) else {
        return (0, 0, 0);
    };
    let held_here: u64 = held
        .iter()
        .filter(|h| h.numa_node == numa)
        .map(|h| h.memory_bytes)
        .sum();
    let mut avail = n.memory_bytes.saturating_sub(held_here);
    if let Some(free) = n.free_bytes {
        let free_huge: u64 = n.hugepages.iter().map(|p| p.free * p.page_kib * 1024).sum();
        avail = avail.min(free + free_huge);
    }
    (avail, n.memory_bytes, held_here)
}

/// Where the node's housekeeping (the OS, daemons, interrupts) runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Housekeeping {
    /// On one of the node's own free cores: a zone always leaves one (the default).
    #[default]
    KeepOne,
    /// Outside the CPUs this plan may take (e.g. a Slurm node that owns only some of a host's
    /// cores, or a site that reserves housekeeping cores elsewhere): a zone may take every free
    /// core.
    Outside,
}

/// Plan a zone for `req` on `node`, given the zones that already exist.
pub fn plan(node: &Node, held: &[Held], req: &ZoneRequest) -> Result<Plan, PlanError> {
    plan_with(node, held, req, Housekeeping::KeepOne)
}

/// [`plan`], saying where housekeeping runs.
pub fn plan_with(
    node: &Node,
    held: &[Held],
    req: &ZoneRequest,
    housekeeping: Housekeeping,
) -> Result<Plan, PlanError> {
    let reserve = usize::from(housekeeping == Housekeeping::KeepOne);
    if req.memory_bytes == 0 {
        return Err(PlanError::NoMemory);
    }
    if req.hugepage_kib != HUGEPAGE_2M_KIB && req.hugepage_kib != HUGEPAGE_1G_KIB {
        return Err(PlanError::BadPageSize(req.hugepage_kib));
    }
    let existing_nodes = || {
        node.numa_nodes
            .iter()
            .map(|n| n.os_index.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(asked) = req.numa_node {
        if node.numa_node(asked).is_none() {
            return Err(PlanError::NoSuchNumaNode {
                asked,
                existing: existing_nodes(),
            });
        }
    }
    let held_cpus = held
        .iter()
        .fold(CpuList::new(), |acc, h| acc.union(&h.cpus));
    let free_cores: Vec<u32> = node
        .cores
        .iter()
        .filter(|c| c.pus.is_disjoint(&held_cpus))
        .map(|c| c.id)
        .collect();
    let cpus_of = |ids: &[u32]| {
        ids.iter().fold(CpuList::new(), |acc, &id| {
            acc.union(&node.cores[id as usize].pus)
        })
    };
    let free_cpus = cpus_of(&free_cores);

    let (cores, mut notes) = match &req.cpus {
        CpuRequest::Cores(0) => return Err(PlanError::NoCores),
        CpuRequest::Cores(n) => pick_cores(node, &free_cores, *n, req, held, reserve)?,
        CpuRequest::List(list) => {
            let cores = check_list(node, held, &held_cpus, &free_cpus, list)?;
            if cores.len() + reserve > free_cores.len() {
                return Err(PlanError::NoHousekeeping {
                    asked: list.to_list(),
                    free: free_cpus.to_list(),
                });
            }
            (cores, Vec::new())
        }
    };

    // NUMA nodes of the cores; memory comes from the asked node or the one with most cores.
    let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
    for &c in &cores {
        *counts.entry(node.cores[c as usize].numa_node).or_default() += 1;
    }
    let numa_nodes: Vec<u32> = counts.keys().copied().collect();
    let numa_node = req.numa_node.unwrap_or_else(|| {
        counts
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map_or(0, |(id, _)| *id)
    });
    if numa_nodes.len() > 1 {
        notes.push(format!(
            "no single NUMA node has enough free cores: the zone spans nodes {numa_nodes:?}, memory comes from node {numa_node}"
        ));
    } else if !numa_nodes.contains(&numa_node) {
        notes.push(format!(
            "memory comes from NUMA node {numa_node}, the cores sit on node {numa_nodes:?} (remote memory)"
        ));
    }

    let page = req.hugepage_kib * 1024;
    let hugepages = req.memory_bytes.div_ceil(page);
    let memory_bytes = hugepages * page;
    let (avail, total, held_here) = available_memory(node, numa_node, held);
    if memory_bytes > avail {
        let fits: Vec<String> = node
            .numa_nodes
            .iter()
            .filter(|n| available_memory(node, n.os_index, held).0 >= memory_bytes)
            .map(|n| n.os_index.to_string())
            .collect();
        return Err(PlanError::MemoryDoesNotFit {
            asked: memory_bytes / MIB,
            node: numa_node,
            available: avail / MIB,
            total: total / MIB,
            held: held_here / MIB,
            hint: if fits.is_empty() {
                "; no NUMA node has that much: ask for less".into()
            } else {
                format!("; NUMA nodes with room: {}", fits.join(","))
            },
        });
    }

    let cpus = cpus_of(&cores);
    let whole_package = node
        .packages
        .iter()
        .find(|p| p.cpus == cpus)
        .map(|p| p.index);
    if let Some(p) = whole_package {
        notes.push(format!("the zone is all of package {p}"));
    }
    Ok(Plan {
        cpus,
        cores,
        numa_node,
        numa_nodes,
        memory_bytes,
        hugepage_kib: req.hugepage_kib,
        hugepages,
        whole_package,
        notes,
    })
}

/// Validate an explicit CPU list: existing CPUs, whole cores, not held by another zone.
fn check_list(
    node: &Node,
    held: &[Held],
    held_cpus: &CpuList,
    free_cpus: &CpuList,
    list: &CpuList,
) -> Result<Vec<u32>, PlanError> {
    if list.is_empty() {
        return Err(PlanError::NoCores);
    }
    let all = node.cpus();
    let missing = list.difference(&all);
    if !missing.is_empty() {
        return Err(PlanError::NoSuchCpu {
            cpus: missing.to_list(),
            existing: all.to_list(),
        });
    }
    let mut cores = Vec::new();
    for cpu in list.iter() {
        let core = node.core_of_cpu(cpu).expect("cpu checked to exist");
        if !core.pus.is_subset(list) {
            return Err(PlanError::SplitsCore {
                asked: list.to_list(),
                core: core.id,
                pus: core.pus.to_list(),
                suggest: list.union(&core.pus).to_list(),
            });
        }
        if !cores.contains(&core.id) {
            cores.push(core.id);
        }
    }
    let busy = list.intersection(held_cpus);
    if let Some(first) = busy.first() {
        let zone = held
            .iter()
            .find(|h| h.cpus.contains(first))
            .map(|h| h.zone.clone())
            .unwrap_or_default();
        return Err(PlanError::CpuBusy {
            cpus: busy.to_list(),
            zone,
            free: free_cpus.to_list(),
        });
    }
    Ok(cores)
}

/// Place `n` whole cores. Preference, best first: exactly one whole free package; one NUMA node
/// that fits with the fewest cores left over (keeps other sockets whole), avoiding the node of
/// CPU 0 (where housekeeping usually runs) on ties; spanning NUMA nodes only when no single one
/// can hold the request. At least one free core always stays for housekeeping.
fn pick_cores(
    node: &Node,
    free_cores: &[u32],
    n: u32,
    req: &ZoneRequest,
    held: &[Held],
    reserve: usize,
) -> Result<(Vec<u32>, Vec<String>), PlanError> {
    let n_us = n as usize;
    let free_cpus_of = |ids: &[u32]| {
        ids.iter().fold(CpuList::new(), |acc, &id| {
            acc.union(&node.cores[id as usize].pus)
        })
    };
    let free_on = |numa: u32| -> Vec<u32> {
        free_cores
            .iter()
            .copied()
            .filter(|&c| node.cores[c as usize].numa_node == numa)
            .collect()
    };
    let max_total = free_cores.len().saturating_sub(reserve);
    let per_node: Vec<(u32, usize)> = node
        .numa_nodes
        .iter()
        .map(|x| (x.os_index, free_on(x.os_index).len()))
        .collect();
    let too_many = |on: String, free: usize, fits: usize| {
        let where_ = per_node
            .iter()
            .map(|(id, f)| format!("node {id}: {f} free"))
            .collect::<Vec<_>>()
            .join(", ");
        PlanError::TooManyCores {
            asked: n,
            on,
            free: free as u32,
            free_cpus: free_cpus_of(free_cores).to_list(),
            fits: fits as u32,
            where_: format!(" ({where_})"),
        }
    };
    if n_us > max_total {
        return Err(too_many(String::new(), free_cores.len(), max_total));
    }
    let mem_fits = |numa: u32| {
        let page = req.hugepage_kib * 1024;
        let need = req.memory_bytes.div_ceil(page) * page;
        available_memory(node, numa, held).0 >= need
    };
    let node_of_cpu0 = node.core_of_cpu(0).map(|c| c.numa_node);

    // Candidate single nodes.
    let candidates: Vec<u32> = match req.numa_node {
        Some(asked) => vec![asked],
        None => node.numa_nodes.iter().map(|x| x.os_index).collect(),
    };
    // (score, chosen cores, whole package): lower scores are better.
    type Candidate = ((u8, usize, u8, u32), Vec<u32>, Option<u32>);
    let mut best: Option<Candidate> = None;
    for numa in candidates {
        let free = free_on(numa);
        if free.len() < n_us || (req.numa_node.is_none() && !mem_fits(numa)) {
            continue;
        }
        // A whole free package inside this node of exactly n cores?
        let whole = node.packages.iter().find(|p| {
            p.cores.len() == n_us
                && p.cores.iter().all(|c| free.contains(c))
                && p.numa_nodes == [numa]
        });
        let chosen: Vec<u32> = match whole {
            Some(p) => p.cores.clone(),
            // Take cores from the top of the node, keeping low cores (CPU 0) for housekeeping.
            None => free[free.len() - n_us..].to_vec(),
        };
        let score = (
            u8::from(whole.is_none()),
            free.len() - n_us,
            u8::from(node_of_cpu0 == Some(numa)),
            numa,
        );
        if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
            best = Some((score, chosen, whole.map(|p| p.index)));
        }
    }
    if let Some((_, chosen, whole)) = best {
        let mut notes = Vec::new();
        if let Some(p) = whole {
            notes.push(format!("took the whole free package {p}"));
        }
        return Ok((chosen, notes));
    }
    if let Some(asked) = req.numa_node {
        let free = free_on(asked).len();
        let fits = free.min(max_total);
        return Err(too_many(format!(" on NUMA node {asked}"), free, fits));
    }
    // Span NUMA nodes: most free cores first, cores from the top of each node.
    let mut order: Vec<(u32, usize)> = per_node.clone();
    order.sort_by_key(|(id, f)| (std::cmp::Reverse(*f), node_of_cpu0 == Some(*id), *id));
    let mut chosen = Vec::new();
    for (numa, _) in order {
        let free = free_on(numa);
        let take = (n_us - chosen.len()).min(free.len());
        chosen.extend_from_slice(&free[free.len() - take..]);
        if chosen.len() == n_us {
            break;
        }
    }
    chosen.sort_unstable();
    Ok((chosen, Vec::new()))
}
