//! `prepare` on a fake host (the zones crate's fake cgroup/sysfs tree with the paper's 12-core,
//! 2-node topology): what a zone job resolves to, and every refusal, each leaving the host as
//! it was. No KVM needed: nothing here runs the VMM.

#[path = "../../zones/tests/common/mod.rs"]
mod common;

use common::{diff, req, FakeHost};
use dualstack_hpcvmm::{Backing, HugePageSize};
use dualstack_jobs::{prepare, Host, JobError, JobSpec, MemoryBacking, ZoneSel};
use dualstack_topology::CpuList;
use dualstack_zones::{create, release, ZoneOptions};

fn zone_job(zone: &str) -> JobSpec {
    let mut spec = JobSpec::new("/bin/true", vec!["x".into()]);
    spec.zone = ZoneSel::Named(zone.into());
    spec
}

/// A fake host with zone `z`: 2 cores and 64 MiB of 2 MiB pages.
fn host_with_zone() -> (FakeHost, Host) {
    let fake = FakeHost::new(false);
    create(
        &fake.paths,
        &fake.node,
        "z",
        &req(2, 64),
        &ZoneOptions::default(),
    )
    .unwrap();
    let host = Host::new(fake.paths.clone());
    (fake, host)
}

#[test]
fn a_zone_job_takes_the_zones_cores_memory_and_pages() {
    let (_fake, host) = host_with_zone();
    let job = prepare(&zone_job("z"), &host).unwrap();
    let zone = job.zone().unwrap().clone();
    let cfg = job.config();
    let zone_cpus: Vec<usize> = zone.cpus().iter().map(|c| c as usize).collect();
    assert_eq!(cfg.cpus, zone_cpus);
    assert_eq!(cfg.cpus.len(), 2);
    assert_eq!(cfg.memory, 64 << 20);
    assert_eq!(
        cfg.backing,
        Backing::Hugetlb {
            page_size: HugePageSize::Size2M,
            numa_node: Some(zone.numa_node()),
        }
    );
    assert_eq!(cfg.argv, ["/bin/true", "x"]);
    assert!(cfg.pin_vcpus && cfg.vdso);

    // Less memory, fewer cores, an exact subset, matching page size and node: all accepted.
    let mut spec = zone_job("z");
    spec.memory = Some(32 << 20);
    spec.cpus = Some(1);
    spec.hugepages = Some(HugePageSize::Size2M);
    spec.numa_node = Some(zone.numa_node());
    let cfg = prepare(&spec, &host).unwrap().config().clone();
    assert_eq!(
        (cfg.memory, cfg.cpus.clone()),
        (32 << 20, zone_cpus[..1].to_vec())
    );
    let mut spec = zone_job("z");
    spec.cpuset_cpus = Some(CpuList::from_iter([zone_cpus[1] as u32]));
    assert_eq!(prepare(&spec, &host).unwrap().config().cpus, [zone_cpus[1]]);
}

#[test]
fn zone_refusals_name_what_was_asked_and_found_and_change_nothing() {
    let (fake, host) = host_with_zone();
    let before = fake.snapshot();
    let zone = dualstack_zones::get(&fake.paths, "z").unwrap();
    let refuse = |f: &dyn Fn(&mut JobSpec)| {
        let mut spec = zone_job("z");
        f(&mut spec);
        prepare(&spec, &host).unwrap_err()
    };

    let e = prepare(&zone_job("nope"), &host).unwrap_err();
    assert!(matches!(e, JobError::Zone(_)), "{e}");
    assert_eq!(e.to_string(), "no zone named \"nope\"; existing zones: z");

    let e = refuse(&|s| s.memory = Some(128 << 20));
    assert_eq!(
        e.to_string(),
        "--memory 128 MiB is more than zone z holds (64 MiB); create the zone with more --memory or ask for less"
    );
    let e = refuse(&|s| s.cpus = Some(3));
    assert!(
        matches!(
            e,
            JobError::ZoneTooFewCpus {
                asked: 3,
                holds: 2,
                ..
            }
        ),
        "{e}"
    );
    let outside = zone.cpus().iter().max().unwrap() + 1;
    let e = refuse(&|s| s.cpuset_cpus = Some(CpuList::from_iter([outside])));
    assert!(matches!(e, JobError::ZoneCpusOutside { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("CPUs {outside} are not in zone z")),
        "{e}"
    );
    let e = refuse(&|s| s.memory_backing = MemoryBacking::Lazy);
    assert!(matches!(e, JobError::ZoneLazy { .. }), "{e}");
    let e = refuse(&|s| s.hugepages = Some(HugePageSize::Size1G));
    assert!(e.to_string().contains("holds 2048 KiB huge pages"), "{e}");
    let e = refuse(&|s| s.numa_node = Some(zone.numa_node() + 1));
    assert!(matches!(e, JobError::ZoneNuma { .. }), "{e}");
    // `auto` is carved at run time only: preparing it changes nothing; lazy memory is refused.
    let mut auto = zone_job("z");
    auto.zone = ZoneSel::Auto;
    assert!(prepare(&auto, &host).unwrap().zone().is_none());
    let e = refuse(&|s| {
        s.zone = ZoneSel::Auto;
        s.memory_backing = MemoryBacking::Lazy;
    });
    assert!(matches!(e, JobError::AutoZoneLazy), "{e}");
    let e = refuse(&|s| s.user = Some("no-such-user-dualstack".into()));
    assert!(matches!(e, JobError::Identity(_)), "{e}");
    assert!(e.to_string().contains("no such user"), "{e}");
    let e = refuse(&|s| s.env = vec!["NOVALUE".into()]);
    assert_eq!(e.to_string(), "--env NOVALUE: expected KEY=VALUE");
    let e = refuse(&|s| s.timeout_s = Some(-1.0));
    assert!(matches!(e, JobError::BadTimeout { .. }), "{e}");
    let e = refuse(&|s| s.cpuset_cpus = Some(CpuList::new()));
    assert!(matches!(e, JobError::NoCpus { .. }), "{e}");

    let after = fake.snapshot();
    assert_eq!(before, after, "{}", diff(&before, &after));
}

#[test]
fn a_zone_released_after_prepare_is_not_run_in() {
    let (fake, host) = host_with_zone();
    let job = prepare(&zone_job("z"), &host).unwrap();
    release(&fake.paths, "z").unwrap();
    let e = job.run().unwrap_err();
    assert!(matches!(e, JobError::Zone(_)), "{e}");
    // Recreated with other CPUs under the same name: refused too, nothing entered.
    let job = {
        create(
            &fake.paths,
            &fake.node,
            "z",
            &req(2, 64),
            &ZoneOptions::default(),
        )
        .unwrap();
        prepare(&zone_job("z"), &host).unwrap()
    };
    release(&fake.paths, "z").unwrap();
    create(
        &fake.paths,
        &fake.node,
        "keep",
        &req(2, 64),
        &ZoneOptions::default(),
    )
    .unwrap();
    create(
        &fake.paths,
        &fake.node,
        "z",
        &req(2, 64),
        &ZoneOptions::default(),
    )
    .unwrap();
    let e = job.run().unwrap_err();
    assert!(matches!(e, JobError::ZoneChanged { .. }), "{e}");
    let procs =
        std::fs::read_to_string(fake.paths.zone_dir("z").join("cgroup.procs")).unwrap_or_default();
    assert!(!procs.contains(&std::process::id().to_string()), "{procs}");
}

#[test]
fn host_jobs_check_the_callers_cpus_and_the_backing() {
    let fake = FakeHost::new(false);
    let host = Host::new(fake.paths.clone());
    let allowed = dualstack_hpcvmm::host_affinity().unwrap();
    let spec = JobSpec::new("/bin/true", vec![]);
    let job = prepare(&spec, &host).unwrap();
    assert!(job.zone().is_none());
    assert_eq!(job.config().cpus, allowed);
    assert_eq!(job.config().memory, dualstack_jobs::DEFAULT_MEMORY);

    let mut s = spec.clone();
    s.cpus = Some(allowed.len() + 1);
    let e = prepare(&s, &host).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "--cpus {}: this process may use",
            allowed.len() + 1
        )),
        "{e}"
    );
    let mut s = spec.clone();
    s.cpus = Some(0);
    assert!(matches!(
        prepare(&s, &host),
        Err(JobError::TooManyCpus { .. })
    ));
    let mut s = spec.clone();
    s.cpuset_cpus = Some(CpuList::from_iter([8000]));
    assert!(matches!(
        prepare(&s, &host),
        Err(JobError::CpuNotAllowed { cpu: 8000, .. })
    ));
    let mut s = spec.clone();
    s.cpus = Some(1);
    s.cpuset_cpus = Some(CpuList::from_iter([0]));
    assert!(matches!(
        prepare(&s, &host),
        Err(JobError::CpusTwice { .. })
    ));
    let mut s = spec.clone();
    s.memory_backing = MemoryBacking::Lazy;
    assert_eq!(prepare(&s, &host).unwrap().config().backing, Backing::Lazy);
    s.hugepages = Some(HugePageSize::Size1G);
    assert!(matches!(
        prepare(&s, &host),
        Err(JobError::LazyWithHugePages)
    ));
    let mut s = spec.clone();
    s.hugepages = Some(HugePageSize::Size1G);
    s.numa_node = Some(0);
    assert_eq!(
        prepare(&s, &host).unwrap().config().backing,
        Backing::Hugetlb {
            page_size: HugePageSize::Size1G,
            numa_node: Some(0)
        }
    );
}

#[test]
fn mpi_ranks_in_one_zone_get_disjoint_cores_and_equal_shares_of_its_pages() {
    use dualstack_jobs::launcher::LocalRank;
    let (fake, host) = host_with_zone();
    let mut seen = Vec::new();
    for rank in 0..2 {
        let mut spec = zone_job("z");
        spec.local_rank = Some(LocalRank { rank, size: 2 });
        let cfg = prepare(&spec, &host).unwrap().config().clone();
        assert_eq!(cfg.cpus.len(), 1, "rank {rank}: {:?}", cfg.cpus);
        assert_eq!(cfg.memory, 32 << 20, "half of the zone's 64 MiB");
        assert!(cfg.host_pid, "a rank's guest is its VMM's host pid");
        seen.extend(cfg.cpus);
    }
    let zone_cpus: Vec<usize> = dualstack_zones::get(&fake.paths, "z")
        .unwrap()
        .cpus()
        .iter()
        .map(|c| c as usize)
        .collect();
    assert_eq!(seen, zone_cpus, "the two ranks split the zone's cores");
}
