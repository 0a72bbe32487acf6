//! Shared test fixture: a temporary state directory and a unique cgroup instance on the real
//! host, torn down on drop (VMs deleted, stray QEMUs of this fixture killed, cgroups removed)
//! even when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dualstack_commodity::process::{cmdline, ProcessIdentity};
use dualstack_commodity::{HostPaths, VmManager};

pub struct TestHost {
    pub mgr: VmManager,
    pub tmp: tempfile::TempDir,
}

impl TestHost {
    /// `None` (test skipped) when QEMU is not installed.
    pub fn new(tag: &str) -> Option<Self> {
        if std::process::Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            return dualstack_testutil::missing_none(
                "qemu-system-x86_64 is not installed (run scripts/install-deps)",
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("dsc-")
            .tempdir_in("/tmp")
            .unwrap();
        let instance = format!("dualstack-test-commodity-{tag}-{}", std::process::id());
        let paths = HostPaths::host(&tmp.path().join("state"))
            .unwrap()
            .with_instance(&instance)
            .unwrap();
        let mgr = VmManager::new(paths);
        Some(Self { mgr, tmp })
    }

    pub fn paths(&self) -> &HostPaths {
        self.mgr.paths()
    }

    /// Processes whose command line mentions this fixture's directory (only ours can).
    pub fn our_processes(&self) -> Vec<i32> {
        let marker = self.tmp.path().display().to_string();
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|&pid| cmdline(Path::new("/proc"), pid).is_some_and(|c| c.contains(&marker)))
            .collect()
    }

    pub fn instance_dir(&self) -> PathBuf {
        self.paths().instance_dir()
    }

    /// Carve a 1-core HPC zone (2 MiB of huge pages; IRQs and the workqueue mask left alone,
    /// this being a shared test host).
    pub fn create_core_zone(&self, name: &str) -> dualstack_zones::Zone {
        let node = dualstack_topology::from_host().unwrap();
        let request = dualstack_topology::ZoneRequest {
            cpus: dualstack_topology::CpuRequest::Cores(1),
            memory_bytes: 2 << 20,
            numa_node: None,
            hugepage_kib: 2048,
        };
        let opts = dualstack_zones::ZoneOptions {
            host_tasks: dualstack_zones::steer::HostTasks::Leave,
            steer_irqs: false,
            narrow_workqueue: false,
            offline_memory: false,
        };
        dualstack_zones::create(self.paths(), &node, name, &request, &opts)
            .unwrap()
            .zone
    }

    /// Nothing of this fixture's is left: no VM record, no process, no commodity cpuset.
    pub fn assert_nothing_left(&self) {
        assert!(self.mgr.list().unwrap().is_empty(), "stale records");
        assert!(
            self.our_processes().is_empty(),
            "stray processes: {:?}",
            self.our_processes()
        );
        assert!(
            !self.paths().commodity_dir().exists(),
            "commodity cpuset left behind"
        );
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Zones a test created (and failed to release) first: they hold huge pages and CPUs.
        if let Ok(zones) = dualstack_zones::list(self.paths()) {
            for z in zones {
                let _ = dualstack_zones::release(self.paths(), &z.name);
            }
        }
        if let Ok(vms) = self.mgr.list() {
            for vm in vms {
                let _ = self.mgr.delete(&vm.name);
            }
        }
        // Anything still running from this fixture's directory was started by this test.
        let marker = self.tmp.path().display().to_string();
        for pid in self.our_processes() {
            if let Some(ident) = ProcessIdentity::capture(Path::new("/proc"), pid, &marker) {
                let _ = ident.kill_and_wait(Path::new("/proc"));
            }
        }
        let _ = dualstack_zones::commodity::release_if_unused(self.paths());
        let inst = self.instance_dir();
        if let Ok(entries) = std::fs::read_dir(&inst) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&inst);
    }
}
