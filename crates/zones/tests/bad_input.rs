//! Bad input and faults on a fake host: each is a clear error and leaves nothing changed.

mod common;

use common::{diff, req, req_list, FakeHost};
use dualstack_topology::PlanError;
use dualstack_zones::{create, list, recover, release, zone_count, ZoneError, ZoneOptions};

fn opts() -> ZoneOptions {
    ZoneOptions::default()
}

#[test]
fn refusals_change_nothing() {
    let host = FakeHost::new(false);
    let p = &host.paths;
    let before = host.snapshot();
    let plan_err = |r| match r {
        Err(ZoneError::Plan { source, .. }) => source,
        other => panic!("expected a planner refusal, got {other:?}"),
    };
    // Too many cores.
    let e = plan_err(create(p, &host.node, "a", &req(12, 64), &opts()));
    assert!(matches!(e, PlanError::TooManyCores { fits: 11, .. }), "{e}");
    // Missing NUMA node.
    let mut r = req(1, 64);
    r.numa_node = Some(5);
    let e = plan_err(create(p, &host.node, "a", &r, &opts()));
    assert!(matches!(e, PlanError::NoSuchNumaNode { asked: 5, .. }));
    // Memory that does not fit.
    let e = plan_err(create(p, &host.node, "a", &req(1, 64 << 10), &opts()));
    assert!(matches!(e, PlanError::MemoryDoesNotFit { .. }));
    // Unknown zone.
    let e = release(p, "ghost").unwrap_err();
    assert!(matches!(e, ZoneError::Unknown { .. }));
    assert!(e.to_string().contains("existing zones: none"), "{e}");
    // Bad name.
    assert!(matches!(
        create(p, &host.node, "../x", &req(1, 64), &opts()),
        Err(ZoneError::BadName(_))
    ));
    // A reserved name (`auto` means "make me a zone" where a job names its zone).
    let e = create(p, &host.node, "auto", &req(1, 64), &opts()).unwrap_err();
    assert!(matches!(e, ZoneError::ReservedName(_)), "{e}");
    let after = host.snapshot();
    assert_eq!(before, after, "{}", diff(&before, &after));
}

#[test]
fn busy_core_and_duplicate_name() {
    let host = FakeHost::new(true);
    let p = &host.paths;
    let before = host.snapshot();
    create(p, &host.node, "a", &req_list("4-5", 64), &opts()).unwrap();
    let mid = host.snapshot();
    match create(p, &host.node, "b", &req_list("5-6", 64), &opts()) {
        Err(ZoneError::Plan {
            source: PlanError::CpuBusy { cpus, zone, .. },
            ..
        }) => assert_eq!((cpus.as_str(), zone.as_str()), ("5", "a")),
        other => panic!("{other:?}"),
    }
    let e = create(p, &host.node, "a", &req(1, 64), &opts()).unwrap_err();
    assert!(matches!(e, ZoneError::Duplicate { .. }));
    assert!(e.to_string().contains("already exists (CPUs 4-5"), "{e}");
    assert_eq!(mid, host.snapshot(), "{}", diff(&mid, &host.snapshot()));
    release(p, "a").unwrap();
    assert_eq!(before, host.snapshot());
}

#[test]
fn write_refused_halfway_rolls_everything_back() {
    for v2 in [false, true] {
        let host = FakeHost::new(v2);
        let p = &host.paths;
        let before = host.snapshot();
        // The huge page pool of node 1 refuses writes, after the cpusets, commodity and
        // instance were already changed: a read-only kernel file (EACCES even for root) stands
        // in for the kernel's refusal.
        let pool = p.nr_hugepages(1, 2048);
        std::fs::remove_file(&pool).unwrap();
        std::os::unix::fs::symlink("/proc/sys/kernel/ngroups_max", &pool).unwrap();
        let refusing = host.snapshot();
        let e = create(p, &host.node, "z", &req(2, 64), &opts()).unwrap_err();
        match &e {
            ZoneError::StepFailed { step, .. } => assert!(step.contains("hugepages"), "{step}"),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("rolled back"), "{e}");
        let after = host.snapshot();
        assert_eq!(refusing, after, "v2={v2}\n{}", diff(&refusing, &after));
        assert!(list(p).unwrap().is_empty());
        assert!(recover(p).unwrap().is_clean());
        std::fs::remove_file(&pool).unwrap();
        std::fs::write(&pool, "3\n").unwrap();
        assert_eq!(before, host.snapshot());
    }
}

#[test]
fn release_refuses_while_processes_run_in_the_zone() {
    let host = FakeHost::new(false);
    let p = &host.paths;
    let z = create(p, &host.node, "z", &req(1, 2), &opts())
        .unwrap()
        .zone;
    std::fs::write(z.cgroup_dir.join("cgroup.procs"), "4242\n").unwrap();
    let e = release(p, "z").unwrap_err();
    assert!(
        matches!(e, ZoneError::Busy { ref pids, .. } if pids == &[4242]),
        "{e}"
    );
    std::fs::write(z.cgroup_dir.join("cgroup.procs"), "").unwrap();
    release(p, "z").unwrap();
}

#[test]
fn zone_count_follows_create_and_release_and_reports_a_broken_database() {
    let host = FakeHost::new(false);
    let p = &host.paths;
    assert_eq!(zone_count(p).unwrap(), 0);
    create(p, &host.node, "a", &req(1, 64), &opts()).unwrap();
    create(p, &host.node, "b", &req(1, 64), &opts()).unwrap();
    assert_eq!(zone_count(p).unwrap(), 2);
    release(p, "a").unwrap();
    assert_eq!(zone_count(p).unwrap(), 1);
    release(p, "b").unwrap();
    assert_eq!(zone_count(p).unwrap(), 0);
    // A state "directory" that is a file: an error, not a guess.
    let mut broken = p.clone();
    broken.state_dir = host.dir.path().join("not-a-dir");
    std::fs::write(&broken.state_dir, "x").unwrap();
    assert!(zone_count(&broken).is_err());
}
