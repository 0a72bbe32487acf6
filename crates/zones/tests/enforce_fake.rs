//! Enforcement over fake cgroup v1 and v2 trees: every file written, and everything restored.

mod common;

use common::{diff, req, req_list, FakeHost};
use dualstack_zones::{create, list, release, ZoneOptions, ZoneState};

fn opts() -> ZoneOptions {
    ZoneOptions {
        offline_memory: true,
        ..ZoneOptions::default()
    }
}

#[test]
fn v1_zone_writes_every_file_and_release_restores_all() {
    let host = FakeHost::new(false);
    let before = host.snapshot();
    let report = create(&host.paths, &host.node, "hpc", &req(6, 512), &opts()).unwrap();
    let z = &report.zone;
    assert_eq!(z.state, ZoneState::Active);
    assert_eq!(z.cpus.to_list(), "6-11");
    assert_eq!(z.numa_node, 1);
    assert_eq!(z.hugepages, 256);
    let p = &host.paths;
    let inst = p.instance_dir();
    assert_eq!(host.read(inst.join("cpuset.cpus")), "0-11");
    assert_eq!(host.read(inst.join("cpuset.mems")), "0-1");
    assert_eq!(host.read(p.commodity_dir().join("cpuset.cpus")), "0-5");
    assert_eq!(host.read(p.commodity_dir().join("cpuset.mems")), "0-1");
    let zd = p.zone_dir("hpc");
    assert_eq!(z.cgroup_dir, zd);
    assert_eq!(host.read(zd.join("cpuset.cpus")), "6-11");
    assert_eq!(host.read(zd.join("cpuset.mems")), "1");
    assert_eq!(host.read(zd.join("cpuset.sched_load_balance")), "0");
    // The instance is not exclusive (it would starve sibling cpusets): the zone says so.
    assert!(!zd.join("cpuset.cpu_exclusive").exists());
    assert!(z.notes.iter().any(|n| n.contains("cpu_exclusive")));
    // Huge pages by delta on node 1 only.
    assert_eq!(host.read(p.nr_hugepages(1, 2048)), "259");
    assert_eq!(host.read(p.nr_hugepages(0, 2048)), "3");
    // Memory blocks: 512 MiB / 128 MiB = 4 blocks of node 1 offlined (the fake kernel allows it).
    for b in 100..104 {
        assert_eq!(
            host.read(p.memory_dir.join(format!("memory{b}/state"))),
            "offline"
        );
    }
    // IRQs: off the zone, to housekeeping when they had only zone CPUs; others untouched.
    let irq = |n: &str| host.read(p.irq_dir.join(n).join("smp_affinity_list"));
    assert_eq!(irq("0"), "0-5");
    assert_eq!(irq("24"), "0-5");
    assert_eq!(irq("25"), "0-5");
    assert_eq!(irq("26"), "0-3");
    assert_eq!(host.read(&p.workqueue_cpumask), "0000003f");
    assert!(report.timings.0.len() >= 8);

    release(&p.clone(), "hpc").unwrap();
    let after = host.snapshot();
    assert_eq!(before, after, "not restored:\n{}", diff(&before, &after));
    assert!(list(p).unwrap().is_empty());
}

#[test]
fn v2_zone_is_an_isolated_partition_and_release_restores_all() {
    let host = FakeHost::new(true);
    let before = host.snapshot();
    let p = &host.paths;
    let z = create(p, &host.node, "a", &req(3, 64), &ZoneOptions::default())
        .unwrap()
        .zone;
    assert_eq!(z.cpus.to_list(), "9-11");
    let root = p.cgroup.root();
    assert_eq!(
        host.read(root.join("cgroup.subtree_control")),
        "cpu memory cpuset"
    );
    let inst = p.instance_dir();
    assert_eq!(host.read(inst.join("cgroup.subtree_control")), "cpuset");
    assert_eq!(host.read(inst.join("cpuset.cpus.exclusive")), "9-11");
    let zd = p.zone_dir("a");
    assert_eq!(host.read(zd.join("cpuset.cpus")), "9-11");
    assert_eq!(host.read(zd.join("cpuset.mems")), "1");
    assert_eq!(host.read(zd.join("cpuset.cpus.exclusive")), "9-11");
    assert_eq!(host.read(zd.join("cpuset.cpus.partition")), "isolated");
    assert_eq!(host.read(p.commodity_dir().join("cpuset.cpus")), "0-8");
    // Memory offlining is opt-in: untouched.
    assert_eq!(host.read(p.memory_dir.join("memory100/state")), "online");

    // A second zone packs the rest of socket 1; shared files carry both.
    let b = create(p, &host.node, "b", &req(3, 64), &ZoneOptions::default())
        .unwrap()
        .zone;
    assert_eq!(b.cpus.to_list(), "6-8");
    assert_eq!(host.read(inst.join("cpuset.cpus.exclusive")), "6-11");
    assert_eq!(host.read(p.commodity_dir().join("cpuset.cpus")), "0-5");
    assert_eq!(host.read(p.irq_dir.join("0/smp_affinity_list")), "0-5");
    assert_eq!(host.read(p.nr_hugepages(1, 2048)), "67");

    // Release the first: only its share comes back.
    release(p, "a").unwrap();
    assert_eq!(host.read(inst.join("cpuset.cpus.exclusive")), "6-8");
    assert_eq!(host.read(p.commodity_dir().join("cpuset.cpus")), "0-5,9-11");
    assert_eq!(host.read(p.irq_dir.join("0/smp_affinity_list")), "0-5,9-11");
    assert_eq!(host.read(p.irq_dir.join("25/smp_affinity_list")), "11");
    assert_eq!(host.read(&p.workqueue_cpumask), "00000e3f");
    assert_eq!(host.read(p.nr_hugepages(1, 2048)), "35");
    release(p, "b").unwrap();
    let after = host.snapshot();
    assert_eq!(before, after, "not restored:\n{}", diff(&before, &after));
}

#[test]
fn zones_in_reverse_order_also_restore_exactly() {
    for v2 in [false, true] {
        let host = FakeHost::new(v2);
        let before = host.snapshot();
        let p = &host.paths;
        create(
            p,
            &host.node,
            "x",
            &req_list("2-3", 32),
            &ZoneOptions::default(),
        )
        .unwrap();
        create(p, &host.node, "y", &req(6, 32), &ZoneOptions::default()).unwrap();
        release(p, "x").unwrap();
        release(p, "y").unwrap();
        let after = host.snapshot();
        assert_eq!(before, after, "v2={v2}:\n{}", diff(&before, &after));
    }
}

#[test]
fn refused_optional_steps_are_reported_and_skipped() {
    let host = FakeHost::new(false);
    let p = &host.paths;
    // An IRQ whose affinity file cannot be written (a directory stands in for EIO).
    let bad = p.irq_dir.join("40");
    std::fs::create_dir_all(bad.join("smp_affinity_list")).unwrap();
    let before = host.snapshot();
    let z = create(p, &host.node, "z", &req(1, 2), &ZoneOptions::default())
        .unwrap()
        .zone;
    // It was listed but unreadable, so skipped before even trying; the rest applied.
    assert_eq!(host.read(p.irq_dir.join("0/smp_affinity_list")), "0-10");
    assert!(z.state == ZoneState::Active);
    release(p, "z").unwrap();
    assert_eq!(before, host.snapshot());
}

#[test]
fn concurrent_creates_are_serialised_by_the_lock() {
    let host = FakeHost::new(false);
    let before = host.snapshot();
    let zones: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p", "q", "r"]
            .into_iter()
            .map(|n| {
                let host = &host;
                s.spawn(move || {
                    create(
                        &host.paths,
                        &host.node,
                        n,
                        &req(3, 64),
                        &ZoneOptions::default(),
                    )
                    .unwrap()
                    .zone
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, a) in zones.iter().enumerate() {
        for b in &zones[i + 1..] {
            assert!(
                a.cpus.is_disjoint(&b.cpus),
                "{} and {} overlap",
                a.cpus,
                b.cpus
            );
        }
    }
    assert_eq!(
        host.read(host.paths.commodity_dir().join("cpuset.cpus")),
        "0-2"
    );
    for n in ["q", "p", "r"] {
        release(&host.paths, n).unwrap();
    }
    assert_eq!(before, host.snapshot());
}

#[test]
fn zones_of_an_earlier_boot_are_dropped_by_recovery() {
    let host = FakeHost::new(true);
    create(
        &host.paths,
        &host.node,
        "old",
        &req(1, 2),
        &ZoneOptions::default(),
    )
    .unwrap();
    // A reboot resets cgroups and huge pages: simulate it.
    std::fs::write(
        host.paths.procfs.join("sys/kernel/random/boot_id"),
        "fake-boot-2\n",
    )
    .unwrap();
    let r = dualstack_zones::recover(&host.paths).unwrap();
    assert_eq!(r.dropped_stale, vec!["old".to_string()]);
    assert!(list(&host.paths).unwrap().is_empty());
}
