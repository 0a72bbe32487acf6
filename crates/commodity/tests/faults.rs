//! Bad input and faults: missing / corrupt kernel, initrd and disk image, QEMU dying, vCPU
//! overcommit. Each must give a clear error (QEMU's or the guest's own words where there are
//! some) and leave no process, record or cgroup behind.

mod common;

use std::path::Path;
use std::time::Duration;

use dualstack_commodity::manager::ManagerError;
use dualstack_commodity::process::ProcessIdentity;
use dualstack_commodity::{BootSource, CreateOptions, VmSpec, VmState, Workload};

fn spec(name: &str, boot: BootSource) -> VmSpec {
    VmSpec {
        boot,
        ..VmSpec::builtin(name, 1, 256, Workload::Idle)
    }
}

fn assert_clean(host: &common::TestHost) {
    host.assert_nothing_left();
    assert!(
        !host.paths().state_dir.join("vms/bad").exists(),
        "VM directory left behind"
    );
}

#[test]
fn bad_kernel_initrd_and_disk_are_reported_and_leave_nothing() {
    let Some(host) = common::TestHost::new("faults") else {
        return;
    };
    let guest = host.mgr.guest_builder().ensure(false).unwrap();
    let dir = host.tmp.path();
    let opts = CreateOptions {
        timeout: Duration::from_secs(60),
        settle: Duration::from_secs(8),
    };

    // Missing kernel: caught before QEMU.
    let err = host
        .mgr
        .create(
            &spec(
                "bad",
                BootSource::Kernel {
                    kernel: dir.join("nope"),
                    initrd: None,
                },
            ),
            &opts,
        )
        .unwrap_err();
    assert!(matches!(err, ManagerError::Input { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_clean(&host);

    // Corrupt kernel (QEMU would run junk without a boot header silently): our check says so.
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
    let err = host
        .mgr
        .create(
            &spec(
                "bad",
                BootSource::Kernel {
                    kernel: junk.clone(),
                    initrd: None,
                },
            ),
            &opts,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ManagerError::Input { .. }) && msg.contains("HdrS"),
        "{msg}"
    );
    assert_clean(&host);

    // Truncated kernel: the header gives its size away.
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &std::fs::read(&guest.kernel).unwrap()[..1 << 20]).unwrap();
    let err = host
        .mgr
        .create(
            &spec(
                "bad",
                BootSource::Kernel {
                    kernel: cut,
                    initrd: None,
                },
            ),
            &opts,
        )
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_clean(&host);

    // Corrupt initrd: the guest kernel's own panic message from the console.
    let err = host
        .mgr
        .create(
            &spec(
                "bad",
                BootSource::Kernel {
                    kernel: guest.kernel.clone(),
                    initrd: Some(junk.clone()),
                },
            ),
            &opts,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Kernel panic") || msg.contains("QEMU exited"),
        "{msg}"
    );
    assert_clean(&host);

    // Unbootable disk image: the firmware's message.
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let err = host
        .mgr
        .create(&spec("bad", BootSource::Disk { image: disk }), &opts)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("No bootable device") || msg.contains("Boot failed"),
        "{msg}"
    );
    assert_clean(&host);

    // QEMU failing to start (unknown binary): clear error, nothing left.
    let broken = host
        .mgr
        .clone()
        .with_qemu(Path::new("/nonexistent/qemu-system-x86_64"));
    let err = broken
        .create(&VmSpec::builtin("bad", 1, 256, Workload::Idle), &opts)
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/qemu-system-x86_64"),
        "{err}"
    );
    assert_clean(&host);
}

#[test]
fn overcommit_is_allowed_and_a_dead_qemu_shows_as_exited() {
    let Some(host) = common::TestHost::new("died") else {
        return;
    };
    let ncpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    // An overcommitted guest boots (under TCG here) with more vCPUs than cores: on a loaded
    // host that has taken longer than the default 90 s, so it gets more time.
    let slow = CreateOptions {
        timeout: Duration::from_secs(240),
        ..CreateOptions::default()
    };
    let info = host
        .mgr
        .create(
            &VmSpec::builtin("over", ncpus + 1, 256, Workload::Idle),
            &slow,
        )
        .unwrap();
    assert!(info.overcommitted, "{info:?}");
    assert_eq!(info.state, VmState::Running);

    // QEMU dies (we kill the process this test started): list reports it, delete cleans up.
    let rec = host.mgr.record("over").unwrap();
    let ident: ProcessIdentity = rec.process.unwrap();
    ident.kill_and_wait(Path::new("/proc")).unwrap();
    let listed = host.mgr.list().unwrap();
    assert_eq!(listed[0].state, VmState::Exited);
    assert!(
        listed[0].note.as_deref().unwrap_or("").contains("exited"),
        "{:?}",
        listed[0].note
    );
    assert_eq!(listed[0].pid, None);
    // Starting it again works, with the recorded configuration.
    let restarted = host.mgr.start("over", &slow).unwrap();
    assert_eq!(restarted.state, VmState::Running);
    assert_ne!(restarted.pid, Some(ident.pid));
    host.mgr.delete("over").unwrap();
    assert!(host.mgr.list().unwrap().is_empty());
    assert!(host.our_processes().is_empty());
    let procs = std::fs::read_to_string(host.paths().commodity_dir().join("cgroup.procs"))
        .unwrap_or_default();
    assert!(
        !host.paths().commodity_dir().exists(),
        "commodity cpuset left, holding {procs:?}"
    );
}
