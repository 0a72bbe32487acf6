//! The isolation experiment end to end on the real host, tiny: HPCCG at `--size small`, one
//! repetition, idle and with one stress-ng core of competing load, every configuration. It is
//! stopped after the first run (as Ctrl-C would), resumed to completion, and must leave no
//! zone, cgroup or load process behind.
//!
//! Needs root, /dev/kvm and the static apps (scripts/build-apps; scripts/test builds them).

use std::path::PathBuf;
use std::time::Duration;

use dualstack_eval::isolation::{self, interrupt, AppSize, Config, LoadKind, Observer, Plan};
use dualstack_zones::HostPaths;

fn apps_dir() -> PathBuf {
    std::env::var_os("DUALSTACK_APPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release")
        })
}

/// Asks for a stop once the first run is recorded.
struct StopAfterFirst {
    runs: usize,
}

impl Observer for StopAfterFirst {
    fn phase(&mut self, _: &str) {}
    fn run_start(&mut self, _: &isolation::RunKey, _: usize, _: usize) {}
    fn run_done(&mut self, rec: &isolation::RunRecord, _: usize, _: usize) {
        assert!(rec.ok, "{rec:?}");
        self.runs += 1;
        interrupt::request();
    }
    fn warn(&mut self, m: &str) {
        eprintln!("warning: {m}");
    }
}

#[test]
fn tiny_experiment_runs_stops_resumes_and_cleans_up() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/kvm").exists() {
        return dualstack_testutil::missing("needs root and /dev/kvm");
    }
    if std::process::Command::new("stress-ng")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("stress-ng is not installed: run scripts/install-deps");
    }
    let apps = apps_dir();
    assert!(
        apps.join("hpccg").is_file(),
        "no static apps in {}: run scripts/build-apps",
        apps.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("dse-")
        .tempdir_in("/tmp")
        .unwrap();
    let instance = format!("dualstack-test-eval-{}", std::process::id());
    let paths = HostPaths::host(&tmp.path().join("state"))
        .unwrap()
        .with_instance(&instance)
        .unwrap();
    let plan = Plan {
        apps: vec!["hpccg".into()],
        size: AppSize::Small,
        app_args: vec![],
        configs: Config::ALL.to_vec(),
        load: LoadKind::Stress,
        levels: vec![0, 1],
        reps: 1,
        zone_cores: 1,
        memory_bytes: 256 << 20,
        load_vm_memory_mib: 256,
        warmup: false,
        steer: false,
        host_tasks: "leave".into(),
        programs: vec![],
        left_out: vec![],
        kvm_tcg: false,
    };
    let out = tmp.path().join("results");
    let opts = isolation::Options {
        plan: plan.clone(),
        out_dir: out.clone(),
        resume: false,
        apps_dir: apps,
        paths: paths.clone(),
        guest_cache: None,
        dualstack_exe: None,
        thp_enabled: PathBuf::from(isolation::thp::THP_ENABLED),
        run_timeout: Duration::from_secs(120),
        command: "isolation_e2e test".into(),
    };
    let mut stopper = StopAfterFirst { runs: 0 };
    let first = isolation::run(&opts, &mut stopper).unwrap();
    assert!(first.interrupted);
    assert_eq!(stopper.runs, 1);
    assert_eq!(first.runs_recorded, 1);
    assert!(
        dualstack_zones::list(&paths).unwrap().is_empty(),
        "zone released after a stop"
    );

    let resumed = isolation::run(
        &isolation::Options {
            resume: true,
            plan: isolation::load_plan(&out).unwrap(),
            ..opts
        },
        &mut isolation::Quiet,
    )
    .unwrap();
    assert!(!resumed.interrupted);
    assert_eq!(resumed.runs_recorded, 6);
    assert_eq!(resumed.runs_total, 6);

    let runs = isolation::record::load(&out).unwrap();
    assert_eq!(runs.len(), 6);
    for r in &runs {
        assert!(r.ok, "{r:?}");
        assert!(r.time_s.unwrap() > 0.0);
        assert_eq!(r.config.is_vm(), r.vm.is_some());
    }
    let zone_cpus = &runs
        .iter()
        .find(|r| r.config == Config::DualStack)
        .unwrap()
        .cpus;
    assert_eq!(zone_cpus.len(), 1);
    let native = runs.iter().find(|r| r.config == Config::Native).unwrap();
    assert_eq!(&native.cpus, zone_cpus, "native runs on the zone's cores");
    // Huge pages in the zone: the dual-stack VM took (almost) no page faults; lazy memory did.
    let pf = |c: Config| {
        runs.iter()
            .filter(|r| r.config == c)
            .map(|r| r.vm.as_ref().unwrap().kvm("pf_taken"))
            .sum::<u64>()
    };
    assert!(
        pf(Config::DualStack) * 10 < pf(Config::SingleStack),
        "{} vs {}",
        pf(Config::DualStack),
        pf(Config::SingleStack)
    );

    for f in [
        "report.md",
        "results.json",
        "figure4.svg",
        "plan.json",
        "runs.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| hpccg |"), "{md}");

    // Nothing left: no zone, no cgroups of this instance, no stress-ng started by us.
    assert!(dualstack_zones::list(&paths).unwrap().is_empty());
    assert!(
        !paths.instance_dir().exists(),
        "{} left",
        paths.instance_dir().display()
    );
}
