//! `dualstack-topology`: the node model (from hwloc: packages, NUMA nodes, cores, SMT siblings,
//! memory and huge page pools per NUMA node) and the HPC zone planner, plus the workspace's one
//! CPU-list type ([`CpuList`]) and one size parser ([`parse_size`]).
//!
//! ```
//! use dualstack_topology::{from_synthetic, plan, CpuRequest, ZoneRequest, PAPER_NODE};
//! let node = from_synthetic(PAPER_NODE).unwrap();
//! let req = ZoneRequest { cpus: CpuRequest::Cores(6), memory_bytes: 4 << 30, numa_node: None, hugepage_kib: 2048 };
//! let plan = plan(&node, &[], &req).unwrap();
//! assert_eq!(plan.whole_package, Some(1));
//! ```

pub mod cpulist;
pub mod hwloc;
pub mod model;
pub mod planner;
pub mod units;

pub use cpulist::{CpuList, CpuListError, MAX_CPUS};
pub use hwloc::{from_host, from_synthetic, from_xml, HwlocError};
pub use model::{Core, HugePagePool, Node, NumaNode, Package, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB};
pub use planner::{plan, plan_with, CpuRequest, Held, Housekeeping, Plan, PlanError, ZoneRequest};
pub use units::{parse_size, parse_size_mib, SizeError};

/// The paper's node (Kocoloski et al., SoCC 2012): 2 sockets x 6-core Opteron 4174, 2 NUMA nodes
/// x 8 GiB, no SMT.
pub const PAPER_NODE: &str = "package:2 numa:1(memory=8GiB) core:6 pu:1";
