//! The node model: packages (sockets), NUMA nodes with their memory and huge page pools, cores
//! with their SMT sibling PUs. Plain serde data, so it prints as JSON and tests build it directly.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cpulist::CpuList;

/// Huge page sizes the planner and the zones know about, in KiB.
pub const HUGEPAGE_2M_KIB: u64 = 2048;
pub const HUGEPAGE_1G_KIB: u64 = 1024 * 1024;

/// The whole node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Where the model came from: `host`, `synthetic:<description>` or `xml`.
    pub source: String,
    pub packages: Vec<Package>,
    pub numa_nodes: Vec<NumaNode>,
    pub cores: Vec<Core>,
}

/// A processor package (socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub index: u32,
    /// Core ids (indices into [`Node::cores`]) in this package.
    pub cores: Vec<u32>,
    /// NUMA nodes (OS indices) whose CPUs are in this package.
    pub numa_nodes: Vec<u32>,
    pub cpus: CpuList,
}

/// A NUMA node: local memory and huge page pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    /// OS index (`nodeN` in sysfs).
    pub os_index: u32,
    pub memory_bytes: u64,
    /// Free memory reported by the kernel (`nodeN/meminfo` MemFree), when read from a host.
    pub free_bytes: Option<u64>,
    pub cpus: CpuList,
    pub hugepages: Vec<HugePagePool>,
}

/// One huge page pool of one NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugePagePool {
    pub page_kib: u64,
    pub total: u64,
    pub free: u64,
}

/// A core: the unit the planner hands out. Its PUs (SMT siblings) always go together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Core {
    /// Index in [`Node::cores`] (hwloc logical index).
    pub id: u32,
    pub package: u32,
    pub numa_node: u32,
    /// OS CPU numbers of the core's PUs (SMT siblings).
    pub pus: CpuList,
}

impl Node {
    /// Every CPU (PU) of the node.
    pub fn cpus(&self) -> CpuList {
        self.cores
            .iter()
            .fold(CpuList::new(), |acc, c| acc.union(&c.pus))
    }

    pub fn numa_node(&self, os_index: u32) -> Option<&NumaNode> {
        self.numa_nodes.iter().find(|n| n.os_index == os_index)
    }

    /// The core holding a CPU.
    pub fn core_of_cpu(&self, cpu: u32) -> Option<&Core> {
        self.cores.iter().find(|c| c.pus.contains(cpu))
    }

    /// Fill each NUMA node's huge page pools and free memory from a sysfs node directory
    /// (normally `/sys/devices/system/node`). Nodes without a sysfs directory keep empty pools.
    pub fn read_hugepages(&mut self, node_dir: &Path) {
        for numa in &mut self.numa_nodes {
            let dir = node_dir.join(format!("node{}", numa.os_index));
            numa.hugepages = read_pools(&dir.join("hugepages"));
            numa.free_bytes = read_memfree(&dir.join("meminfo"));
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pools(dir: &Path) -> Vec<HugePagePool> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pools: Vec<HugePagePool> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(HugePagePool {
                page_kib: kib,
                total: read_u64(&e.path().join("nr_hugepages")).unwrap_or(0),
                free: read_u64(&e.path().join("free_hugepages")).unwrap_or(0),
            })
        })
        .collect();
    pools.sort_by_key(|p| p.page_kib);
    pools
}

fn read_memfree(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.split_once("MemFree:")?.1;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}
