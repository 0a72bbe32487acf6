//! Real-host tests on this machine's cpuset hierarchy and huge page pools: a 1-core zone with
//! 256 MiB of huge pages, a program run in it, release, and everything exactly as before.
//! IRQ affinities and the workqueue mask are NOT the real ones (fake files), and only processes
//! the test started are moved. Without root or a cpuset controller they fail under DUALSTACK_REQUIRE_ALL=1 and skip loudly otherwise.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;

use dualstack_topology::{from_synthetic, CpuList, CpuRequest, ZoneRequest};
use dualstack_zones::{
    cgroup, create, load_node, recover, release, steer, HostPaths, HostTasks, ZoneError,
    ZoneOptions,
};

static SERIAL: Mutex<()> = Mutex::new(());

struct RealHost {
    paths: HostPaths,
    _tmp: tempfile::TempDir,
}

impl RealHost {
    fn new(tag: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return dualstack_testutil::missing_none("needs root");
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut paths = match HostPaths::host(&tmp.path().join("state")) {
            Ok(p) => p,
            Err(e) => {
                return dualstack_testutil::missing_none(&format!("no usable host cgroups: {e}"));
            }
        };
        paths.instance = format!("dualstack-test-{}-{tag}", std::process::id());
        // Never the machine's real IRQs or workqueue mask: fake files with the same shape.
        paths.irq_dir = tmp.path().join("irq");
        for (irq, aff) in [("1", "0-1"), ("2", "1")] {
            std::fs::create_dir_all(paths.irq_dir.join(irq)).unwrap();
            std::fs::write(paths.irq_dir.join(irq).join("smp_affinity_list"), aff).unwrap();
        }
        paths.workqueue_cpumask = tmp.path().join("wq_cpumask");
        std::fs::write(&paths.workqueue_cpumask, "00000003\n").unwrap();
        Some(Self { paths, _tmp: tmp })
    }

    fn pool(&self) -> u64 {
        cgroup::read(&self.paths.nr_hugepages(0, 2048))
            .unwrap()
            .parse()
            .unwrap()
    }

    fn fake_files(&self) -> Vec<String> {
        vec![
            cgroup::read(&self.paths.irq_dir.join("1/smp_affinity_list")).unwrap(),
            cgroup::read(&self.paths.irq_dir.join("2/smp_affinity_list")).unwrap(),
            cgroup::read(&self.paths.workqueue_cpumask).unwrap(),
        ]
    }
}

/// Whatever happens in the test, give everything back (recovery undoes half-made zones; active
/// ones are released) and leave no cgroup behind.
impl Drop for RealHost {
    fn drop(&mut self) {
        if let Ok(zones) = dualstack_zones::list(&self.paths) {
            for z in zones {
                let _ = release(&self.paths, &z.name);
            }
        }
        let _ = recover(&self.paths);
        let _ = std::fs::remove_dir(self.paths.commodity_dir());
        let _ = std::fs::remove_dir(self.paths.instance_dir());
    }
}

struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn affinity(pid: u32) -> String {
    steer::affinity(&PathBuf::from("/proc"), pid, pid)
        .unwrap()
        .to_list()
}

#[test]
fn one_core_zone_with_huge_pages_round_trip() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(host) = RealHost::new("rt") else {
        return;
    };
    let p = &host.paths;
    let node = load_node(p).unwrap();
    let root_cpus = cgroup::root_cpus(p).unwrap();
    if root_cpus.len() < 2 {
        return dualstack_testutil::missing("needs 2 CPUs");
    }
    // A process of ours that may be moved (project-only policy), on all CPUs.
    let kid = Kid(Command::new("sleep")
        .arg("60")
        .env(steer::MOVABLE_ENV, &p.instance)
        .spawn()
        .unwrap());
    let pid = kid.0.id();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let kid_before = affinity(pid);
    let pool_before = host.pool();
    let fake_before = host.fake_files();
    assert!(!p.instance_dir().exists());

    let req = ZoneRequest {
        cpus: CpuRequest::Cores(1),
        memory_bytes: 256 << 20,
        numa_node: None,
        hugepage_kib: 2048,
    };
    let opts = ZoneOptions {
        host_tasks: HostTasks::ProjectOnly,
        ..ZoneOptions::default()
    };
    let z = create(p, &node, "rt", &req, &opts).unwrap().zone;
    let last = root_cpus.iter().last().unwrap();
    assert_eq!(z.cpus, CpuList::from_iter([last]));
    assert_eq!(z.hugepage_count(), 128);
    // Cpuset files as the kernel reports them.
    let zd = z.cgroup_dir().to_path_buf();
    assert_eq!(
        cgroup::read(&zd.join("cpuset.cpus")).unwrap(),
        last.to_string()
    );
    assert_eq!(
        cgroup::read(&zd.join("cpuset.mems")).unwrap(),
        z.numa_node().to_string()
    );
    let rest = root_cpus.difference(&z.cpus);
    assert_eq!(
        cgroup::read_list(&p.commodity_dir().join("cpuset.cpus")).unwrap(),
        rest
    );
    if !p.cgroup.is_v2() {
        assert_eq!(
            cgroup::read(&zd.join("cpuset.sched_load_balance")).unwrap(),
            "0"
        );
        assert_eq!(
            cgroup::read_list(&zd.join("cpuset.effective_cpus")).unwrap(),
            z.cpus
        );
    }
    // Huge pages: exactly 128 more on the node.
    assert_eq!(host.pool(), pool_before + 128);
    // Our movable process left the zone's core; IRQs and workqueue (fake) too.
    assert_eq!(affinity(pid), rest.to_list());
    assert_eq!(host.fake_files()[0], rest.to_list());
    assert_eq!(host.fake_files()[1], rest.to_list());

    // Run a program in the zone: it can only run on the zone's CPU.
    let prog = Kid(Command::new("sleep").arg("60").spawn().unwrap());
    cgroup::attach(&zd, prog.0.id()).unwrap();
    assert_eq!(affinity(prog.0.id()), z.cpus.to_list());
    // Release refuses while it runs there.
    assert!(matches!(release(p, "rt"), Err(ZoneError::Busy { .. })));
    drop(prog);
    std::thread::sleep(std::time::Duration::from_millis(50));

    release(p, "rt").unwrap();
    assert_eq!(host.pool(), pool_before);
    assert_eq!(host.fake_files(), fake_before);
    assert_eq!(affinity(pid), kid_before);
    assert!(!p.instance_dir().exists(), "instance cgroup left behind");
    assert!(recover(p).unwrap().is_clean());
}

#[test]
fn kernel_refusal_halfway_rolls_back_on_the_real_host() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(host) = RealHost::new("refuse") else {
        return;
    };
    let p = &host.paths;
    // The real kernel refuses a cpuset write halfway: a synthetic 2-node topology puts CPU 1
    // on NUMA node 1, which this host lacks. Huge page pools for both nodes are fake files
    // here; the cgroups are real: the commodity cpuset shrinks, the zone directory and its
    // cpus are made, then the kernel refuses `cpuset.mems = 1` and everything is rolled back.
    let mut p = p.clone();
    p.node_dir = host._tmp.path().join("node");
    // Fake pools hold no real pages: no warm memory for this zone (reserve only).
    p.zone_memory_dir = None;
    for n in 0..2 {
        let d = p
            .node_dir
            .join(format!("node{n}/hugepages/hugepages-2048kB"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("nr_hugepages"), "0\n").unwrap();
    }
    let mut two = from_synthetic("package:2 numa:1(memory=4GiB) core:1 pu:1").unwrap();
    two.read_hugepages(&p.node_dir);
    let fake_before = host.fake_files();
    let req = ZoneRequest {
        cpus: CpuRequest::List(CpuList::parse_list("1").unwrap()),
        memory_bytes: 2 << 20,
        numa_node: None,
        hugepage_kib: 2048,
    };
    let e = create(&p, &two, "bad", &req, &ZoneOptions::default()).unwrap_err();
    match &e {
        ZoneError::StepFailed { step, source, .. } => {
            assert!(step.contains("cpuset.mems"), "{step}");
            assert!(source.to_string().contains("refused"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!p.instance_dir().exists(), "instance cgroup left behind");
    assert_eq!(host.fake_files(), fake_before);
    let pool = p.nr_hugepages(1, 2048);
    assert_eq!(cgroup::read(&pool).unwrap(), "0");
    assert!(dualstack_zones::list(&p).unwrap().is_empty());
}
