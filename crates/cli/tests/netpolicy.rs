//! `dualstack run --net` from the CLI (issue 12): the HPC VMM's network policy guest
//! (crates/hpcvmm/tests/guests/netpolicy.c) under `--net loopback` reaches loopback addresses
//! only, the refusals are counted in the summary and the `--stats` file by policy and call,
//! and an unknown policy is refused before any VM exists.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");

fn guest(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hpcvmm/tests/guests/netpolicy.c");
    let out = dir.join("netpolicy");
    let o = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn net_loopback_refuses_other_addresses_and_counts_them() {
    if !dualstack_testutil::have_kvm() {
        return dualstack_testutil::missing("/dev/kvm");
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = guest(dir.path());
    let stats = dir.path().join("stats.json");
    let o = Command::new(BIN)
        .env("DUALSTACK_STATE_DIR", dir.path().join("state"))
        .args([
            "run",
            "--net",
            "loopback",
            "--memory-backing",
            "lazy",
            "--memory",
            "64M",
            "--summary",
            "--stats",
        ])
        .arg(&stats)
        .arg("--")
        .arg(&prog)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("bind loopback: ok\n"), "{out}");
    assert!(out.contains("connect far: EACCES\n"), "{out}");
    assert!(out.contains("socketpair unix: ok\n"), "{out}");
    assert!(err.contains("--net loopback: connect 1"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(v["refusals"]["--net loopback: sendmsg"], 1, "{v}");

    let bad = Command::new(BIN)
        .args(["run", "--net", "internet", "--"])
        .arg(&prog)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        e.contains("internet") && e.contains("loopback"),
        "names the bad value and the choices: {e}"
    );
}
