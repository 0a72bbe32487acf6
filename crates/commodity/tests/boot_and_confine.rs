//! Boots the built-in guest under real QEMU (TCG here), checks its build workload reports
//! progress on the console, that every QEMU thread stays inside the commodity cpuset, that the
//! VM survives a "restart" (a new manager), and that stop + delete leave nothing behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use dualstack_commodity::process::thread_affinities;
use dualstack_commodity::workload::read_progress;
use dualstack_commodity::{CreateOptions, VmManager, VmSpec, VmState, Workload};

fn commodity_cpus(host: &common::TestHost) -> Vec<u32> {
    let text = std::fs::read_to_string(host.paths().commodity_dir().join("cpuset.cpus")).unwrap();
    dualstack_topology::CpuList::parse_list(&text)
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn builtin_guest_runs_build_workload_confined_and_cleans_up() {
    let Some(host) = common::TestHost::new("boot") else {
        return;
    };
    let spec = VmSpec::builtin("build1", 2, 256, Workload::Build);
    let info = host.mgr.create(&spec, &CreateOptions::default()).unwrap();
    assert_eq!(info.state, VmState::Running);
    let pid = info.pid.unwrap();
    assert_eq!(info.cgroup, host.paths().commodity_dir());

    // The workload reports rounds on the serial console.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let p = read_progress(&info.serial_log);
        if p.rounds >= 2 || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(progress.ready, "no ready marker");
    assert!(progress.rounds >= 2, "no build progress: {progress:?}");

    // Every QEMU thread is confined to the commodity cpuset, which is where QEMU's cgroup is.
    let cpus = commodity_cpus(&host);
    let threads = thread_affinities(Path::new("/proc"), pid).unwrap();
    assert!(
        threads.len() >= 3,
        "expected main + vCPU threads: {threads:?}"
    );
    for t in &threads {
        assert!(
            t.cpus_allowed.iter().all(|c| cpus.contains(c)),
            "thread {t:?} outside {cpus:?}"
        );
    }
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = format!("/{}/commodity", host.paths().instance);
    assert!(
        cg.lines()
            .any(|l| l.contains(":cpuset:") && l.ends_with(&rel))
            || cg.contains(&rel),
        "{cg}"
    );

    // An HPC zone taking one core shrinks the commodity cpuset: QEMU's threads move off the
    // zone's core at once, without a restart, and the guest keeps working.
    let zone = host.create_core_zone("hpc1");
    let zone_cpus: Vec<u32> = zone.cpus.iter().collect();
    let shrunk = commodity_cpus(&host);
    assert!(
        !shrunk.is_empty() && shrunk.iter().all(|c| !zone_cpus.contains(c)),
        "{shrunk:?} vs zone {zone_cpus:?}"
    );
    for t in thread_affinities(Path::new("/proc"), pid).unwrap() {
        assert!(
            t.cpus_allowed
                .iter()
                .all(|c| shrunk.contains(c) && !zone_cpus.contains(c)),
            "thread {t:?} not moved off zone CPUs {zone_cpus:?}"
        );
    }
    let before = read_progress(&info.serial_log).jobs;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_progress(&info.serial_log).jobs <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        read_progress(&info.serial_log).jobs > before,
        "the guest stopped working after the zone was created"
    );
    assert_eq!(host.mgr.list().unwrap()[0].state, VmState::Running);

    // Releasing the zone gives the core back to the commodity VMs.
    dualstack_zones::release(host.paths(), "hpc1").unwrap();
    let grown = commodity_cpus(&host);
    assert_eq!(grown, cpus, "commodity cpuset did not grow back");
    for t in thread_affinities(Path::new("/proc"), pid).unwrap() {
        assert!(
            t.cpus_allowed.iter().all(|c| grown.contains(c)),
            "thread {t:?} outside {grown:?}"
        );
    }

    // A new manager (as after a dualstack restart) sees the running VM.
    let again = VmManager::new(host.paths().clone());
    let listed = again.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, VmState::Running);
    assert_eq!(listed[0].pid, Some(pid));
    let details = again.show("build1").unwrap();
    assert_eq!(
        details.threads.len(),
        thread_affinities(Path::new("/proc"), pid).unwrap().len()
    );

    // Stop from the new manager: QEMU is gone, the record stays.
    let stopped = again.stop("build1", Duration::ZERO).unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    let ident = host.mgr.record("build1").unwrap();
    assert!(ident.process.is_none());
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            let c = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !c.contains("qemu")
        }
    );

    // Delete: no record, no files, no process, no cgroup.
    host.mgr.delete("build1").unwrap();
    assert!(!info.serial_log.exists());
    host.assert_nothing_left();
    assert!(!host.instance_dir().exists(), "instance cgroup left behind");
}
