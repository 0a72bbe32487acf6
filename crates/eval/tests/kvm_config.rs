//! The `kvm` configuration of the isolation experiment from the CLI: a tiny user program (a C
//! OpenMP stencil, dynamically linked, so its loader and libgomp must reach the guest) with a
//! regex figure and a check boots the built-in commodity guest under QEMU and is measured
//! inside it. On this machine (kvm_pvm: a stock guest cannot boot under KVM) it is forced onto
//! QEMU TCG with `--kvm-tcg` and every output marks it correctness-only; on a host where KVM
//! boots a stock guest the same test runs it under KVM. One guest boot.
//!
//! Needs root, /dev/kvm, qemu-system-x86_64, gcc with OpenMP, the built-in guest (built on first
//! use from Debian packages) and the `dualstack` binary (`cargo build --release -p dualstack`).
//! Changes host state (zone, huge pages): run under `flock -o /tmp/dualstack-host.lock`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/dualstack")
}

fn nr_hugepages() -> String {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default()
}

/// Processes named `comm` whose command line mentions `marker`.
fn ours(comm: &str, marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let c = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
            (c.trim().starts_with(comm) && cmd.contains(marker)).then(|| {
                format!(
                    "{} {}",
                    e.file_name().to_string_lossy(),
                    cmd.replace('\0', " ")
                )
            })
        })
        .collect()
}

#[test]
fn a_user_program_runs_in_the_commodity_guest_and_is_measured_inside_it() {
    if !dualstack_testutil::is_root() || !dualstack_testutil::have_kvm() {
        return dualstack_testutil::missing("needs root and /dev/kvm");
    }
    if !dualstack_eval::isolation::qemu_available() {
        return dualstack_testutil::missing("needs qemu-system-x86_64 (scripts/install-deps)");
    }
    assert!(
        exe().is_file(),
        "build the CLI first: cargo build --release -p dualstack"
    );
    let tmp = tempfile::Builder::new()
        .prefix("dsk-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path();
    let s = Command::new("gcc")
        .args(["-O2", "-fopenmp", "-o"])
        .arg(d.join("stencil"))
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/programs/stencil.c"))
        .status()
        .unwrap();
    assert!(s.success(), "gcc stencil.c");
    let programs = d.join("programs.toml");
    std::fs::write(
        &programs,
        "[[program]]\nname = \"stencil\"\ncommand = \"./stencil 64 10\"\nfiles = [\"stencil\"]\nfigure = 'time: ([0-9.]+) s'\ncheck = 'result ok'\n",
    )
    .unwrap();
    let hugepages_before = nr_hugepages();
    let out = d.join("results");
    let o = Command::new(exe())
        .current_dir(d)
        .env("DUALSTACK_STATE_DIR", d.join("state"))
        .env(
            "DUALSTACK_INSTANCE",
            format!("dualstack-test-kvm-{}", std::process::id()),
        )
        .args(["bench", "isolation", "--programs"])
        .arg(&programs)
        .args([
            "--configs",
            "kvm",
            "--kvm-tcg",
            "--load",
            "stress",
            "--levels",
            "0",
            "--reps",
            "1",
            "--zone-cores",
            "1",
            "--memory",
            "64M",
            "--no-steering",
            "--no-warmup",
            "--run-timeout",
            "120",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let d_str = d.display().to_string();
    assert!(
        ours("qemu-system", &d_str).is_empty() && ours("qemu-system", "kvm-stencil").is_empty(),
        "no QEMU left"
    );
    assert_eq!(
        nr_hugepages(),
        hugepages_before,
        "the guest's huge pages were given back"
    );
    assert!(o.status.success(), "{stderr}\n{stdout}");

    let tcg = dualstack_commodity::accel::detect(Path::new("/sys"), Path::new("/dev/kvm")).accel
        != dualstack_commodity::spec::Accel::Kvm;
    let runs = dualstack_eval::isolation::record::load(&out).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert!(r.ok, "{r:?}");
    assert!(
        r.verified,
        "the check regex matched the guest's output: {r:?}"
    );
    let k = r.kvm.as_ref().expect("kvm figures");
    let f = r.figure.unwrap();
    // The figure is the program's own line from inside the guest, not a host-side time.
    assert!(f > 0.0 && f <= k.guest_wall_s, "{r:?}");
    assert!(k.guest_wall_s < k.host_wall_s, "{r:?}");
    assert!(k.boot_s > 0.0, "the guest kernel booted: {r:?}");
    assert_eq!(r.time_s, Some(f));
    assert_eq!(
        k.vcpu_cpus.len(),
        1,
        "one vCPU per zone core, pinned: {r:?}"
    );
    assert_eq!(r.cpus, k.vcpu_cpus);
    assert!(k.memory_mib >= 64, "{r:?}");
    assert_eq!(k.accel, if tcg { "tcg" } else { "kvm" });
    assert_eq!(k.correctness_only, tcg);

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cell = &results["analysis"]["cells"][0];
    assert_eq!(cell["config"], "kvm");
    if tcg {
        assert!(stderr.contains("runs under QEMU TCG"), "{stderr}");
        assert!(
            report.contains("kvm (TCG, correctness only) mean"),
            "{report}"
        );
        assert!(report.contains("check correctness only"), "{report}");
        assert_eq!(cell["correctness_only"], true);
        assert_eq!(results["runs"][0]["kvm"]["correctness_only"], true);
        let svg = std::fs::read_to_string(out.join("figure4.svg")).unwrap();
        assert!(svg.contains("correctness only"), "chart legend");
    } else {
        assert_eq!(cell["correctness_only"], false);
    }
}
