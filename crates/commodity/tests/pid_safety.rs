//! Recorded pids are re-verified before any signal: a VM whose recorded QEMU is gone, or whose
//! pid now belongs to another process, shows as exited, and stop/delete never signal that other
//! process. Runs on a fake cgroup tree with the real /proc; no QEMU needed.

use std::path::{Path, PathBuf};

use dualstack_commodity::process::ProcessIdentity;
use dualstack_commodity::spec::{Accel, VmSpec, VmState, Workload};
use dualstack_commodity::state::{VmRecord, VmStore};
use dualstack_commodity::{HostPaths, VmManager};

fn record(name: &str, dir: &Path, process: ProcessIdentity) -> VmRecord {
    VmRecord {
        spec: VmSpec::builtin(name, 1, 256, Workload::Idle),
        state: VmState::Running,
        accel: Accel::Tcg,
        accel_reason: "test".into(),
        process: Some(process),
        dir: dir.join(name),
        cgroup: PathBuf::from("/nonexistent"),
        kernel: None,
        initrd: None,
        cmdline: None,
        created_unix: 0,
        note: None,
    }
}

#[test]
fn reused_pid_is_never_signalled_and_shows_as_exited() {
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = HostPaths::fake(tmp.path(), false);
    paths.procfs = PathBuf::from("/proc");
    std::fs::create_dir_all(paths.cgroup.root()).unwrap();
    let mgr = VmManager::new(paths.clone());

    // An unrelated process (we started it, but it is not "our QEMU"): a sleep.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = bystander.id() as i32;
    // Right after exec the command line may read empty for a moment.
    for _ in 0..200 {
        if dualstack_commodity::process::cmdline(Path::new("/proc"), pid)
            .is_some_and(|c| !c.is_empty())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let real = ProcessIdentity::capture(Path::new("/proc"), pid, "sleep").unwrap();
    {
        let conn = dualstack_zones::open_db(&paths.state_dir).unwrap();
        let store = VmStore::new(&conn).unwrap();
        // Same pid, other start time: the pid was reused after our QEMU died.
        let reused = ProcessIdentity {
            start_ticks: real.start_ticks + 7,
            cmdline_marker: "qmp.sock".into(),
            ..real
        };
        store.insert(&record("reused", tmp.path(), reused)).unwrap();
        // Same pid and start time but a command line without our marker.
        let other = ProcessIdentity {
            cmdline_marker: "/state/vms/other/qmp.sock".into(),
            ..real.clone()
        };
        store.insert(&record("other", tmp.path(), other)).unwrap();
        // A pid that no longer exists at all.
        let gone = ProcessIdentity {
            pid: i32::MAX - 1,
            start_ticks: 1,
            cmdline_marker: "x".into(),
        };
        store.insert(&record("gone", tmp.path(), gone)).unwrap();
    }

    let vms = mgr.list().unwrap();
    assert_eq!(vms.len(), 3);
    for vm in &vms {
        assert_eq!(vm.state, VmState::Exited, "{vm:?}");
        assert_eq!(vm.pid, None);
    }
    let reused = vms.iter().find(|v| v.name == "reused").unwrap();
    assert!(
        reused.note.as_deref().unwrap().contains("another process"),
        "{:?}",
        reused.note
    );

    // Stop and delete act on the records only.
    assert_eq!(
        mgr.stop("reused", std::time::Duration::ZERO).unwrap().state,
        VmState::Exited
    );
    for name in ["reused", "other", "gone"] {
        mgr.delete(name).unwrap();
    }
    assert!(mgr.list().unwrap().is_empty());
    assert_eq!(
        real.liveness(Path::new("/proc")),
        dualstack_commodity::process::Liveness::Alive,
        "bystander was signalled"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
