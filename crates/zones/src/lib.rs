//! `dualstack-zones`: carve HPC zones out of a running node and give everything back.
//!
//! A zone is an exclusive cpuset (cgroup v1 or v2, detected), huge pages on its NUMA node,
//! IRQs and unbound workqueues steered off its CPUs and (by policy) host tasks moved away; the
//! commodity cpuset shrinks to the CPUs no zone holds. Every change is recorded in a SQLite
//! journal before it is applied, so release and crash recovery restore the exact old values.
//!
//! Everything takes a [`HostPaths`], so tests run the same logic on fake trees.

pub mod cgroup;
pub mod commodity;
pub mod hugepages;
pub mod journal;
pub mod lifecycle;
pub mod memory;
pub mod paths;
pub mod state;
pub mod status;
pub mod steer;
pub mod zone;

pub use dualstack_topology::{CpuList, CpuRequest, Housekeeping, Node, ZoneRequest};
pub use lifecycle::ZoneState;
pub use memory::{Claim, MemError, ZoneMemory};
pub use paths::{CgroupMount, HostPaths, PathsError};
pub use state::{open_db, StateError, StateLock};
pub use status::{load_node, node_status, NodeStatus, StatusError};
pub use steer::HostTasks;
pub use zone::{
    create, create_with, enter, finish_zeroing, get, list, recover, recover_locked, release,
    zone_count, CreateReport, RecoverReport, ReleaseReport, Zone, ZoneEntry, ZoneError,
    ZoneOptions,
};
