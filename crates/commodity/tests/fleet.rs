//! The harness API: N build VMs on the commodity cores, their throughput, stop them all.
//! Prints throughput with the whole node and with a 1-core HPC zone carved out (a ratio, not a
//! timed assertion).

mod common;

use std::time::Duration;

use dualstack_commodity::BuildFleet;
use dualstack_topology::{CpuRequest, ZoneRequest};
use dualstack_zones::{steer::HostTasks, ZoneOptions};

#[test]
fn fleet_reports_throughput_and_stops_everything() {
    let Some(host) = common::TestHost::new("fleet") else {
        return;
    };
    let fleet = BuildFleet::start(host.mgr.clone(), "bench", 2, 1, 256).unwrap();
    assert_eq!(fleet.names(), ["bench-0", "bench-1"]);
    fleet.wait_for_work(Duration::from_secs(90)).unwrap();
    let whole = fleet.measure(Duration::from_secs(5)).unwrap();
    assert_eq!(whole.vms.len(), 2);
    assert!(whole.vms.iter().all(|v| v.jobs > 0), "{whole:?}");

    let node = dualstack_topology::from_host().unwrap();
    let request = ZoneRequest {
        cpus: CpuRequest::Cores(1),
        memory_bytes: 2 << 20,
        numa_node: None,
        hugepage_kib: 2048,
    };
    let opts = ZoneOptions {
        host_tasks: HostTasks::Leave,
        steer_irqs: false,
        narrow_workqueue: false,
        offline_memory: false,
    };
    dualstack_zones::create(host.paths(), &node, "hpc", &request, &opts).unwrap();
    let squeezed = fleet.measure(Duration::from_secs(5)).unwrap();
    dualstack_zones::release(host.paths(), "hpc").unwrap();
    println!(
        "build fleet (2 VMs x 1 vCPU): {:.1} jobs/s on all commodity cores, {:.1} jobs/s with a 1-core zone (ratio {:.2})",
        whole.total_jobs_per_s,
        squeezed.total_jobs_per_s,
        squeezed.total_jobs_per_s / whole.total_jobs_per_s
    );

    fleet.stop_all().unwrap();
    assert!(host.mgr.list().unwrap().is_empty());
    assert!(
        host.our_processes().is_empty(),
        "{:?}",
        host.our_processes()
    );
    assert!(!host.paths().commodity_dir().exists());
}
