//! Planner over synthetic topologies, including the paper's 2-socket, 12-core node.

use dualstack_topology::{
    from_synthetic, plan, plan_with, CpuList, CpuRequest, Held, Housekeeping, Node, PlanError,
    ZoneRequest, PAPER_NODE,
};

const GIB: u64 = 1 << 30;

fn cores(n: u32, mem: u64) -> ZoneRequest {
    ZoneRequest {
        cpus: CpuRequest::Cores(n),
        memory_bytes: mem,
        numa_node: None,
        hugepage_kib: 2048,
    }
}

fn list(l: &str, mem: u64) -> ZoneRequest {
    ZoneRequest {
        cpus: CpuRequest::List(CpuList::parse_list(l).unwrap()),
        memory_bytes: mem,
        numa_node: None,
        hugepage_kib: 2048,
    }
}

fn hold(name: &str, p: &dualstack_topology::Plan) -> Held {
    Held {
        zone: name.into(),
        cpus: p.cpus.clone(),
        numa_node: p.numa_node,
        memory_bytes: p.memory_bytes,
    }
}

fn paper() -> Node {
    from_synthetic(PAPER_NODE).unwrap()
}

#[test]
fn whole_socket_away_from_cpu0() {
    let node = paper();
    let p = plan(&node, &[], &cores(6, 4 * GIB)).unwrap();
    assert_eq!(p.cpus.to_list(), "6-11");
    assert_eq!(p.whole_package, Some(1));
    assert_eq!(p.numa_node, 1);
    assert_eq!(p.numa_nodes, vec![1]);
    assert_eq!(p.hugepages, 2048);
}

#[test]
fn small_zones_pack_onto_one_socket() {
    let node = paper();
    let a = plan(&node, &[], &cores(3, GIB)).unwrap();
    assert_eq!(a.cpus.to_list(), "9-11");
    assert_eq!(a.numa_node, 1);
    let b = plan(&node, &[hold("a", &a)], &cores(3, GIB)).unwrap();
    // Best fit: the rest of socket 1, keeping socket 0 whole.
    assert_eq!(b.cpus.to_list(), "6-8");
    let c = plan(&node, &[hold("a", &a), hold("b", &b)], &cores(5, GIB)).unwrap();
    assert_eq!(c.cpus.to_list(), "1-5");
    assert_eq!(c.numa_node, 0);
}

#[test]
fn housekeeping_core_always_stays() {
    let node = paper();
    let a = plan(&node, &[], &cores(6, GIB)).unwrap();
    let err = plan(&node, &[hold("a", &a)], &cores(6, GIB)).unwrap_err();
    match &err {
        PlanError::TooManyCores {
            asked, free, fits, ..
        } => {
            assert_eq!((*asked, *free, *fits), (6, 6, 5));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("asked for 6 cores"), "{msg}");
    assert!(msg.contains("at most 5"), "{msg}");
    assert!(msg.contains("node 0: 6 free"), "{msg}");
    let err = plan(&node, &[], &cores(12, GIB)).unwrap_err();
    assert!(err.to_string().contains("at most 11"), "{err}");
    // An explicit list taking every free core is refused too.
    let err = plan(&node, &[hold("a", &a)], &list("0-5", GIB)).unwrap_err();
    assert!(matches!(err, PlanError::NoHousekeeping { .. }), "{err:?}");
}

#[test]
fn housekeeping_outside_lets_a_zone_take_every_free_core() {
    let node = paper();
    let a = plan(&node, &[], &cores(6, GIB)).unwrap();
    let held = [hold("a", &a)];
    let b = plan_with(&node, &held, &list("0-5", GIB), Housekeeping::Outside).unwrap();
    assert_eq!(b.cpus.to_list(), "0-5");
    let c = plan_with(&node, &[], &cores(12, GIB), Housekeeping::Outside).unwrap();
    assert_eq!(c.cpus.to_list(), "0-11");
    // Still no more than there is, and KeepOne is what plan() does.
    assert!(plan_with(&node, &held, &cores(7, GIB), Housekeeping::Outside).is_err());
    assert_eq!(
        plan_with(&node, &held, &list("0-5", GIB), Housekeeping::KeepOne),
        plan(&node, &held, &list("0-5", GIB))
    );
}

#[test]
fn spans_numa_nodes_only_when_needed() {
    let node = paper();
    let p = plan(&node, &[], &cores(8, GIB)).unwrap();
    assert_eq!(p.cpus.len(), 8);
    assert_eq!(p.numa_nodes, vec![0, 1]);
    assert!(p.notes.iter().any(|n| n.contains("spans")));
    assert!(
        !p.cpus.contains(0),
        "CPU 0 stays for housekeeping: {}",
        p.cpus
    );
}

#[test]
fn numa_node_request_is_honoured_or_explained() {
    let node = paper();
    let mut req = cores(2, GIB);
    req.numa_node = Some(0);
    let p = plan(&node, &[], &req).unwrap();
    assert_eq!(p.cpus.to_list(), "4-5");
    assert_eq!(p.numa_node, 0);
    req.numa_node = Some(7);
    let err = plan(&node, &[], &req).unwrap_err();
    assert_eq!(
        err,
        PlanError::NoSuchNumaNode {
            asked: 7,
            existing: "0,1".into()
        }
    );
    req.numa_node = Some(1);
    req.cpus = CpuRequest::Cores(6);
    let a = plan(&node, &[], &cores(2, GIB)).unwrap();
    let err = plan(&node, &[hold("a", &a)], &req).unwrap_err();
    assert!(err.to_string().contains("on NUMA node 1"), "{err}");
}

#[test]
fn memory_must_fit_on_the_node() {
    let node = paper();
    let err = plan(&node, &[], &cores(2, 9 * GIB)).unwrap_err();
    assert!(matches!(err, PlanError::MemoryDoesNotFit { .. }), "{err:?}");
    assert!(err.to_string().contains("9216 MiB"), "{err}");
    assert!(err.to_string().contains("no NUMA node"), "{err}");
    // Node 1's memory is mostly held: the planner goes to node 0 for a big request.
    let a = plan(&node, &[], &cores(1, 6 * GIB)).unwrap();
    assert_eq!(a.numa_node, 1);
    let b = plan(&node, &[hold("a", &a)], &cores(1, 4 * GIB)).unwrap();
    assert_eq!(b.numa_node, 0);
    // Rounding to whole huge pages.
    let c = plan(&node, &[], &cores(1, 3 << 20)).unwrap();
    assert_eq!((c.hugepages, c.memory_bytes), (2, 4 << 20));
    let mut big = cores(1, 3 * GIB);
    big.hugepage_kib = 1 << 20;
    assert_eq!(plan(&node, &[], &big).unwrap().hugepages, 3);
    big.hugepage_kib = 4;
    assert_eq!(
        plan(&node, &[], &big).unwrap_err(),
        PlanError::BadPageSize(4)
    );
    assert_eq!(
        plan(&node, &[], &cores(1, 0)).unwrap_err(),
        PlanError::NoMemory
    );
}

#[test]
fn explicit_lists_are_checked() {
    let node = paper();
    let p = plan(&node, &[], &list("2-3", GIB)).unwrap();
    assert_eq!(p.cores, vec![2, 3]);
    assert_eq!(p.numa_node, 0);
    let err = plan(&node, &[], &list("11-13", GIB)).unwrap_err();
    assert!(matches!(err, PlanError::NoSuchCpu { ref cpus, .. } if cpus == "12-13"));
    let held = [hold("a", &p)];
    let err = plan(&node, &held, &list("3-4", GIB)).unwrap_err();
    match err {
        PlanError::CpuBusy { cpus, zone, free } => {
            assert_eq!((cpus.as_str(), zone.as_str()), ("3", "a"));
            assert_eq!(free, "0-1,4-11");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan(&node, &[], &cores(0, GIB)).unwrap_err(),
        PlanError::NoCores
    );
}

#[test]
fn smt_siblings_are_never_split() {
    let node = from_synthetic("package:2 numa:1(memory=4GiB) core:4 pu:2").unwrap();
    let p = plan(&node, &[], &cores(2, GIB)).unwrap();
    assert_eq!(p.cpus.len(), 4);
    for c in &p.cores {
        assert!(node.cores[*c as usize].pus.is_subset(&p.cpus));
    }
    let half = node.cores[1].pus.first().unwrap().to_string();
    let err = plan(&node, &[], &list(&half, GIB)).unwrap_err();
    assert!(
        matches!(err, PlanError::SplitsCore { core: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ask for"), "{err}");
}

#[test]
fn this_machines_shape_leaves_one_core() {
    let node = from_synthetic("package:1 numa:1(memory=4GiB) core:2 pu:1").unwrap();
    let p = plan(&node, &[], &cores(1, 256 << 20)).unwrap();
    assert_eq!(p.cpus.to_list(), "1");
    assert_eq!(p.hugepages, 128);
    assert!(plan(&node, &[], &cores(2, 256 << 20)).is_err());
    assert!(plan(&node, &[hold("a", &p)], &cores(1, 256 << 20)).is_err());
}

#[test]
fn plans_serialize_to_json() {
    let p = plan(&paper(), &[], &cores(6, GIB)).unwrap();
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["cpus"], "6-11");
    assert_eq!(json["whole_package"], 1);
}
