//! The harness API: N build VMs on the commodity cores, their throughput, stop them all.
//! Prints throughput with the whole node and with a 1-core HPC zone carved out (a ratio, not a
//! timed assertion).

mod common;

use std::time::Duration;

use dualstack_commodity::BuildFleet;

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

    host.create_core_zone("hpc");
    let squeezed = fleet.measure(Duration::from_secs(5)).unwrap();
    dualstack_zones::release(host.paths(), "hpc").unwrap();
    println!(
        "build fleet (2 VMs x 1 vCPU): {:.1} jobs/s on all commodity cores, {:.1} jobs/s with a 1-core zone (ratio {:.2})",
        whole.total_jobs_per_s,
        squeezed.total_jobs_per_s,
        squeezed.total_jobs_per_s / whole.total_jobs_per_s
    );

    fleet.stop_all().unwrap();
    host.assert_nothing_left();
}
