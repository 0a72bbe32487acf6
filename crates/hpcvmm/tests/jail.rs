//! Whole runs under the jail on real /dev/kvm: a guest served by a VMM that is `nobody`
//! without capabilities, Landlock-confined and seccomp-filtered, still runs to the end.

mod common;

use dualstack_hpcvmm::{Backing, ExitReport, RunConfig};

#[test]
fn hello_runs_to_the_end_in_a_jailed_vmm() {
    let bin = common::guest("hello");
    let dir = bin.parent().unwrap().to_path_buf();
    let mut cfg = RunConfig::new(&bin, vec!["hello".into()]);
    cfg.backing = Backing::Lazy;
    cfg.memory = 64 << 20;
    cfg.root = dir.clone();
    let (stats, report, supervised) = common::run_as_nobody(&cfg, &dir);
    assert!(
        matches!(stats.exit, ExitReport::Exited { status: 0 }),
        "{:?} {:?}",
        stats.exit,
        supervised.violation
    );
    assert_eq!((report.uid, report.capabilities), (65534, 0));
    assert!(report.seccomp);
    assert_eq!(supervised.exit_code(), 0);
}

#[test]
fn the_guest_s_proc_describes_the_guest() {
    let bin = common::guest("procself");
    let dir = common::tempdir();
    let prog = bin.display().to_string();
    let spec = common::Spec::default()
        .args(&[prog.as_str()])
        .env("DS_MARK", "x1")
        .dir(dir.path())
        .memory(64 << 20);
    let mut spec = spec;
    spec.cpus = Some(vec![dualstack_hpcvmm::host_affinity().unwrap()[0]]);
    let (v, stats) = common::in_vm(&bin, &spec);
    common::assert_exited(&stats, 0);
    let r: std::collections::BTreeMap<&str, &str> = v
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .collect();
    let name = bin.file_name().unwrap().to_str().unwrap();
    let ctx = format!("{}\n{}", v.stdout, v.stderr);
    assert_eq!(r["cmdline"], format!("{name} {prog}"), "{ctx}");
    assert_eq!(r["environ"], "DS_MARK=x1", "{ctx}");
    assert_eq!(r["auxv-pagesz"], "4096 (getauxval 4096)", "{ctx}");
    assert_eq!(r["Pid:"], "1000", "{ctx}");
    assert_eq!(r["Threads:"], "1", "{ctx}");
    assert_eq!(r["NoNewPrivs:"], "1", "{ctx}");
    assert_eq!(r["maps-stack"], "yes", "{ctx}");
    assert_eq!(r["stat"].split(' ').next(), Some("1000"), "{ctx}");
    assert_eq!(r["cgroup"], "0::/", "{ctx}");
    assert_eq!(r["self-link"], "1000", "{ctx}");
    assert_eq!(r["fd-link"], "/proc/self/cmdline", "{ctx}");
    assert_eq!(r["fd-write"], "refused", "{ctx}");
    assert_eq!(r["MemTotal:"], "65536 kB", "{ctx}");
    assert_eq!(r["cpu-possible"], "0", "{ctx}");
    assert_eq!(r["nprocs"], "1", "{ctx}");
    // 0-2 and the cmdline fd left open (the listing is taken at opendir, before the
    // directory's own fd exists; Linux would list that one too).
    assert_eq!(r["fd-dir"], "4 entries, 2 dots, opened", "{ctx}");
    assert_eq!(r["fd-dir-rewound"], "6", "{ctx}");
    assert_eq!(r["self-dir"], "status 1 mem 0", "{ctx}");
    assert_eq!(r["task-dir"], "1", "{ctx}");
    assert!(stats.jail.is_some(), "the test guest ran jailed");
    assert!(stats.refusals.get("vmm_proc").copied().unwrap_or(0) >= 1);
}
