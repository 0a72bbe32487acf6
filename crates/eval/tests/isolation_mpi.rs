//! The isolation experiment with the built-in MPI app (`--apps hpccg-mpi`, issue 12) on the
//! real host, tiny: the MPI HPCCG at `--size small` on 2 ranks under MPICH's Hydra, natively and
//! in dual stack (one VM per rank in the zone), idle, one repetition. Its rows must land in the
//! same runs, tables and JSON as a built-in app's, verified, and nothing may be left behind.
//!
//! Needs root, /dev/kvm, MPICH (mpiexec.hydra, libmpich.a) and the `dualstack` binary
//! (`cargo build --release -p dualstack`). Takes the host lock itself (zone, huge pages).

use std::path::PathBuf;
use std::time::Duration;

use dualstack_eval::isolation::{self, mpi_app, AppSize, Config, LoadKind, Plan};
use dualstack_zones::HostPaths;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/dualstack")
}

#[test]
fn hpccg_mpi_runs_natively_and_one_vm_per_rank_in_the_same_tables() {
    if !dualstack_testutil::is_root() || !dualstack_testutil::have_kvm() {
        return dualstack_testutil::missing("needs root and /dev/kvm");
    }
    if let Some(why) = mpi_app::missing_mpich() {
        return dualstack_testutil::missing(&format!("MPICH ({why}): scripts/install-deps"));
    }
    assert!(
        exe().is_file(),
        "build the CLI first: cargo build --release -p dualstack"
    );
    let _host = dualstack_testutil::HostLock::take();
    let tmp = tempfile::Builder::new()
        .prefix("dsm-")
        .tempdir_in("/tmp")
        .unwrap();
    let instance = format!("dualstack-test-mpiapp-{}", std::process::id());
    let paths = HostPaths::host(&tmp.path().join("state"))
        .unwrap()
        .with_instance(&instance)
        .unwrap();
    let plan = Plan {
        apps: vec!["hpccg-mpi".into()],
        size: AppSize::Small,
        app_args: vec![],
        configs: vec![Config::DualStack, Config::Native],
        load: LoadKind::Stress,
        levels: vec![0],
        reps: 1,
        zone_cores: 1,
        memory_bytes: 512 << 20,
        load_vm_memory_mib: 256,
        warmup: false,
        steer: false,
        host_tasks: "leave".into(),
        programs: vec![],
        left_out: vec![],
        kvm_tcg: false,
    };
    plan.validate(None).unwrap();
    let out = tmp.path().join("results");
    let opts = isolation::Options {
        plan: plan.clone(),
        out_dir: out.clone(),
        resume: false,
        // No static apps needed: the MPI app is built from the project's source.
        apps_dir: tmp.path().join("no-apps"),
        paths: paths.clone(),
        guest_cache: None,
        dualstack_exe: Some(exe()),
        thp_enabled: PathBuf::from(isolation::thp::THP_ENABLED),
        run_timeout: Duration::from_secs(120),
        command: "isolation_mpi test".into(),
    };
    let o = isolation::run(&opts, &mut isolation::Quiet).unwrap();
    assert_eq!(o.runs_recorded, 2, "{:?}", isolation::record::load(&out));

    let runs = isolation::record::load(&out).unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert!(r.ok && r.verified, "{r:?}");
        let f = r.figure.unwrap();
        assert!(
            f > 0.0 && f < r.wall_s,
            "the solve time, not the wall time: {r:?}"
        );
        assert_eq!(r.time_s, Some(f));
    }
    let native = runs.iter().find(|r| r.config == Config::Native).unwrap();
    assert_eq!(
        native.cpus.len(),
        1,
        "natively on the zone's core: {native:?}"
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| hpccg-mpi |"), "{md}");
    assert!(md.contains("MPI apps (hpccg-mpi)"), "{md}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(results["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["app"] == "hpccg-mpi"));
    assert!(out.join("figure4.svg").is_file());

    // Nothing left: no zone, no instance state, no rank or VMM of the job.
    assert!(dualstack_zones::list(&paths).unwrap().is_empty());
    assert!(
        !paths.instance_dir().exists(),
        "{} left",
        paths.instance_dir().display()
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", "hpccg_mpi 16 16 16"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "ranks left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
