//! The node as dualstack sees it: topology, zones, commodity cpuset and what is free. Also
//! where the topology comes from (`DUALSTACK_TOPOLOGY` overrides the host's, for tests).

use dualstack_topology::{from_host, from_synthetic, from_xml, CpuList, HwlocError, Node};
use serde::{Deserialize, Serialize};

use crate::cgroup;
use crate::commodity::{self, Commodity};
use crate::paths::{CgroupMount, HostPaths};
use crate::zone::{self, Zone, ZoneError};

/// Errors building the node status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Topology(#[from] HwlocError),
    #[error("cannot read DUALSTACK_TOPOLOGY file {path}: {source}")]
    TopologyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Zone(#[from] ZoneError),
}

/// Load the node model: `DUALSTACK_TOPOLOGY=synthetic:<description>` or `xml:<file>` when set,
/// else the host's (hwloc); huge page pools and free memory are read from `paths.node_dir`.
pub fn load_node(paths: &HostPaths) -> Result<Node, StatusError> {
    let mut node = match std::env::var("DUALSTACK_TOPOLOGY") {
        Ok(spec) if spec.starts_with("synthetic:") => from_synthetic(&spec["synthetic:".len()..])?,
        Ok(spec) if spec.starts_with("xml:") => {
            let path = &spec["xml:".len()..];
            let xml =
                std::fs::read_to_string(path).map_err(|source| StatusError::TopologyFile {
                    path: path.to_string(),
                    source,
                })?;
            from_xml(&xml)?
        }
        _ => from_host()?,
    };
    node.read_hugepages(&paths.node_dir);
    Ok(node)
}

/// Free resources of one NUMA node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaFree {
    pub numa_node: u32,
    pub free_cpus: CpuList,
    pub memory_bytes: u64,
    pub zone_memory_bytes: u64,
}

/// Everything `dualstack node` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    pub topology: Node,
    pub cgroup: CgroupMount,
    pub instance: String,
    pub cpuset_root_cpus: CpuList,
    pub zones: Vec<Zone>,
    pub commodity: Option<Commodity>,
    /// CPUs no zone holds (the commodity cpuset's CPUs; housekeeping runs there too).
    pub free_cpus: CpuList,
    pub numa_free: Vec<NumaFree>,
}

pub fn node_status(paths: &HostPaths, node: Node) -> Result<NodeStatus, StatusError> {
    let zones = zone::list(paths)?;
    let held = zones
        .iter()
        .fold(CpuList::new(), |acc, z| acc.union(&z.cpus));
    let root = cgroup::root_cpus(paths).map_err(ZoneError::from)?;
    let free_cpus = node.cpus().intersection(&root).difference(&held);
    let numa_free = node
        .numa_nodes
        .iter()
        .map(|n| NumaFree {
            numa_node: n.os_index,
            free_cpus: n.cpus.intersection(&free_cpus),
            memory_bytes: n.memory_bytes,
            zone_memory_bytes: zones
                .iter()
                .filter(|z| z.numa_node == n.os_index)
                .map(|z| z.memory_bytes)
                .sum(),
        })
        .collect();
    let commodity = commodity::current(paths).map_err(ZoneError::from)?;
    Ok(NodeStatus {
        topology: node,
        cgroup: paths.cgroup.clone(),
        instance: paths.instance.clone(),
        cpuset_root_cpus: root,
        zones,
        commodity,
        free_cpus,
        numa_free,
    })
}
