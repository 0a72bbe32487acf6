//! Whole runs under the jail on real /dev/kvm: a guest served by a VMM that is `nobody`
//! without capabilities, Landlock-confined and seccomp-filtered, still runs to the end.

mod common;

use dualstack_hpcvmm::jail::{identity, run::run_jailed, Caller, Jail, SuperviseOptions};
use dualstack_hpcvmm::{Backing, ExitReport, RunConfig};

#[test]
fn hello_runs_to_the_end_in_a_jailed_vmm() {
    let bin = common::guest("hello");
    let dir = bin.parent().unwrap().to_path_buf();
    let mut cfg = RunConfig::new(&bin, vec!["hello".into()]);
    cfg.backing = Backing::Lazy;
    cfg.memory = 64 << 20;
    cfg.root = dir.clone();
    let root = Caller {
        uid: 0,
        gid: 0,
        sudo: None,
    };
    let nobody = identity::resolve(Some(&"nobody".parse().unwrap()), &root).unwrap();
    let jail = Jail::new(nobody, &dir);
    let r = run_jailed(&cfg, &jail, &SuperviseOptions::default()).unwrap();
    let (stats, report) = r
        .result
        .unwrap_or_else(|| panic!("no result: {:?}", r.supervised))
        .unwrap();
    assert!(
        matches!(stats.exit, ExitReport::Exited { status: 0 }),
        "{:?} {:?}",
        stats.exit,
        r.supervised.violation
    );
    assert_eq!((report.uid, report.capabilities), (65534, 0));
    assert!(report.seccomp);
    assert_eq!(r.supervised.exit_code(), 0);
}
