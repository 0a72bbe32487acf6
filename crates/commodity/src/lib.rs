//! dualstack's commodity stack: ordinary VMs on a stock, unmodified QEMU (`qemu-system-x86_64`),
//! confined to the commodity cpuset (every CPU no HPC zone holds) and following it live as zones
//! come and go, plus a built-in guest built on the machine from Debian packages.
//!
//! * [`VmManager`]: create / start / list / show / stop / delete VMs; records live in the shared
//!   state database (table `vms`), so VMs outlive the process that created them.
//! * [`GuestBuilder`]: the built-in guest (Debian cloud kernel + busybox initramfs with the
//!   `build` and `idle` workloads).
//! * [`BuildFleet`]: N VMs running the build workload, with throughput measurement, for the
//!   evaluation harness.
//!
//! Confinement: QEMU joins the commodity cpuset in the forked child before `exec`, so none of
//! its threads ever runs elsewhere; when a zone shrinks the cpuset the kernel re-confines every
//! thread at once. Memory is plain anonymous memory (no huge page reservation, overcommittable).

pub mod accel;
pub mod cpio;
pub mod guest;
pub mod manager;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod spec;
pub mod state;
pub mod util;
pub mod workload;

pub use dualstack_zones::paths::HostPaths;
pub use guest::{GuestBuilder, GuestImage};
pub use manager::{CreateOptions, ManagerError, VmDetails, VmInfo, VmManager};
pub use spec::{Accel, AccelChoice, BootSource, VmSpec, VmState, Workload};
pub use workload::{BuildFleet, BuildProgress, FleetThroughput};
