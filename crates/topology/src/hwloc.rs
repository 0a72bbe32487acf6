//! Building the [`Node`] model with hwloc (the `hwlocality` crate over Debian's libhwloc 2.9):
//! from the running host, from a synthetic description, or from an XML export.

use std::collections::BTreeSet;

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology;

use crate::cpulist::CpuList;
use crate::model::{Core, Node, NumaNode, Package};

/// Errors loading a topology.
#[derive(Debug, thiserror::Error)]
pub enum HwlocError {
    #[error("hwloc could not read this host's topology: {0}")]
    Host(String),
    #[error("hwloc refused the synthetic description {desc:?} (example: \"package:2 numa:1(memory=8GiB) core:6 pu:1\"): {reason}")]
    Synthetic { desc: String, reason: String },
    #[error("hwloc could not load the XML topology: {0}")]
    Xml(String),
    #[error("the topology has no cores; hwloc reported nothing usable")]
    NoCores,
}

/// Load this host's topology.
pub fn from_host() -> Result<Node, HwlocError> {
    let topo = Topology::new().map_err(|e| HwlocError::Host(e.to_string()))?;
    from_topology(&topo, "host".into())
}

/// Load a synthetic topology, e.g. the paper's node: `package:2 numa:1(memory=8GiB) core:6 pu:1`.
pub fn from_synthetic(desc: &str) -> Result<Node, HwlocError> {
    let err = |reason: String| HwlocError::Synthetic {
        desc: desc.to_string(),
        reason,
    };
    let topo = Topology::builder()
        .from_synthetic(desc)
        .map_err(|e| err(e.to_string()))?
        .build()
        .map_err(|e| err(e.to_string()))?;
    from_topology(&topo, format!("synthetic:{desc}"))
}

/// Load a topology from hwloc XML text (as written by `lstopo --of xml`).
pub fn from_xml(xml: &str) -> Result<Node, HwlocError> {
    let topo = Topology::builder()
        .from_xml(xml)
        .map_err(|e| HwlocError::Xml(e.to_string()))?
        .build()
        .map_err(|e| HwlocError::Xml(e.to_string()))?;
    from_topology(&topo, "xml".into())
}

fn cpus_of(obj: &TopologyObject) -> CpuList {
    obj.cpuset()
        .map(|set| {
            set.iter_set()
                .filter_map(|i| u32::try_from(usize::from(i)).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn index_of(obj: &TopologyObject) -> u32 {
    let idx = obj.os_index().unwrap_or_else(|| obj.logical_index());
    u32::try_from(idx).unwrap_or(u32::MAX)
}

fn from_topology(topo: &Topology, source: String) -> Result<Node, HwlocError> {
    let mut numa_nodes: Vec<NumaNode> = topo
        .objects_with_type(ObjectType::NUMANode)
        .map(|obj| {
            let memory_bytes = match obj.attributes() {
                Some(ObjectAttributes::NUMANode(attr)) => {
                    attr.local_memory().map_or(0, |m| m.get())
                }
                _ => 0,
            };
            NumaNode {
                os_index: index_of(obj),
                memory_bytes,
                free_bytes: None,
                cpus: cpus_of(obj),
                hugepages: Vec::new(),
            }
        })
        .collect();
    numa_nodes.sort_by_key(|n| n.os_index);

    let mut cores = Vec::new();
    for (i, obj) in topo.objects_with_type(ObjectType::Core).enumerate() {
        let pus = cpus_of(obj);
        let Some(first) = pus.first() else { continue };
        let package = obj
            .first_ancestor_with_type(ObjectType::Package)
            .map_or(0, index_of);
        let numa_node = numa_nodes
            .iter()
            .find(|n| n.cpus.contains(first))
            .map_or(0, |n| n.os_index);
        cores.push(Core {
            id: u32::try_from(i).unwrap_or(u32::MAX),
            package,
            numa_node,
            pus,
        });
    }
    if cores.is_empty() {
        return Err(HwlocError::NoCores);
    }

    let mut package_ids: BTreeSet<u32> = cores.iter().map(|c| c.package).collect();
    if package_ids.is_empty() {
        package_ids.insert(0);
    }
    let packages = package_ids
        .into_iter()
        .map(|index| {
            let members: Vec<&Core> = cores.iter().filter(|c| c.package == index).collect();
            let numa: BTreeSet<u32> = members.iter().map(|c| c.numa_node).collect();
            Package {
                index,
                cores: members.iter().map(|c| c.id).collect(),
                numa_nodes: numa.into_iter().collect(),
                cpus: members
                    .iter()
                    .fold(CpuList::new(), |acc, c| acc.union(&c.pus)),
            }
        })
        .collect();
    Ok(Node {
        source,
        packages,
        numa_nodes,
        cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_node_from_synthetic() {
        let node = from_synthetic(crate::PAPER_NODE).unwrap();
        assert_eq!(node.packages.len(), 2);
        assert_eq!(node.numa_nodes.len(), 2);
        assert_eq!(node.cores.len(), 12);
        assert_eq!(node.numa_nodes[0].memory_bytes, 8 << 30);
        assert_eq!(node.numa_nodes[1].cpus.to_list(), "6-11");
        assert_eq!(node.packages[1].cores, (6..12).collect::<Vec<_>>());
        assert!(node.cores.iter().all(|c| c.pus.len() == 1));
        assert_eq!(node.cores[7].numa_node, 1);
    }

    #[test]
    fn smt_siblings_stay_together() {
        let node = from_synthetic("package:1 numa:1(memory=4GiB) core:4 pu:2").unwrap();
        assert_eq!(node.cores.len(), 4);
        assert!(node.cores.iter().all(|c| c.pus.len() == 2));
        assert_eq!(node.cpus().len(), 8);
    }

    #[test]
    fn xml_round_trip_through_lstopo_format() {
        let topo = Topology::builder()
            .from_synthetic("package:2 numa:1(memory=1GiB) core:2 pu:1")
            .unwrap()
            .build()
            .unwrap();
        let xml = topo
            .export_xml(hwlocality::topology::export::xml::XMLExportFlags::empty())
            .unwrap();
        let node = from_xml(xml.as_str()).unwrap();
        assert_eq!(node.cores.len(), 4);
        assert_eq!(node.numa_nodes.len(), 2);
    }

    #[test]
    fn bad_synthetic_is_explained() {
        let err = from_synthetic("package:banana").unwrap_err();
        assert!(err.to_string().contains("package:banana"));
    }

    #[test]
    fn host_loads() {
        let node = from_host().unwrap();
        assert!(!node.cores.is_empty());
        assert!(!node.numa_nodes.is_empty());
    }
}
