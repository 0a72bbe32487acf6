//! `native-thp` sets the host's transparent huge page mode to `always` for its runs. A SIGKILL of
//! `dualstack bench isolation` in the middle of such a run cannot restore it, but the old mode
//! was journaled first: `dualstack recover` puts it back.
//!
//! Needs root and the `dualstack` binary (`cargo build --release -p dualstack`). Changes host
//! state (THP mode, a zone with huge pages): run under `flock -o /tmp/dualstack-host.lock`.
//! The host's THP mode is restored by the test itself even when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/dualstack")
}

fn mode() -> String {
    let t = std::fs::read_to_string(THP).unwrap();
    dualstack_eval::isolation::thp::selected(&t)
        .unwrap()
        .to_string()
}

/// Puts the host's THP mode back however the test ends.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(THP, &self.0);
    }
}

/// Pids of processes whose executable name is `comm`.
fn pids(comm: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // A killed process waiting to be reaped by init is gone for our purposes.
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            (c.trim() == comm && !zombie).then_some(pid)
        })
        .collect()
}

fn cli(dir: &Path, instance: &str, args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .current_dir(dir)
        .env("DUALSTACK_STATE_DIR", dir.join("state"))
        .env("DUALSTACK_INSTANCE", instance)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_sigkilled_harness_leaves_the_thp_mode_to_recover() {
    if !dualstack_testutil::is_root() || !Path::new(THP).exists() {
        return dualstack_testutil::missing("needs root and a THP mode file");
    }
    assert!(
        exe().is_file(),
        "build the CLI first: cargo build --release -p dualstack"
    );
    let _restore = Restore(mode());
    // Start from a mode that is not `always`, so the change is visible.
    if mode() == "always" {
        std::fs::write(THP, "madvise").unwrap();
    }
    let original = mode();
    let tmp = tempfile::Builder::new()
        .prefix("dst-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path();
    // A program of our own with a name no other process has: the test ends it after the kill.
    let comm = format!("thpslp{}", std::process::id() % 100_000);
    std::fs::copy("/bin/sleep", d.join(&comm)).unwrap();
    std::fs::write(
        d.join("programs.toml"),
        format!("[[program]]\nname = \"slow\"\ncommand = \"./{comm} 120\"\nfiles = [\"{comm}\"]\n"),
    )
    .unwrap();
    let instance = format!("dualstack-test-thp-{}", std::process::id());
    let mut harness = Command::new(exe())
        .current_dir(d)
        .env("DUALSTACK_STATE_DIR", d.join("state"))
        .env("DUALSTACK_INSTANCE", &instance)
        .args([
            "bench",
            "isolation",
            "--programs",
            "programs.toml",
            "--configs",
            "native-thp",
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
            "300",
            "--out",
            "results",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let harness_pid = harness.id();
    let t = Instant::now();
    while (mode() != "always" || pids(&comm).is_empty()) && t.elapsed() < Duration::from_secs(90) {
        assert!(
            harness.try_wait().unwrap().is_none(),
            "the harness ended before its native-thp run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = mode();
    harness.kill().unwrap();
    harness.wait().unwrap();
    // The program (its own process group) outlives the harness: end it.
    for pid in pids(&comm) {
        // SAFETY: kill(2) on a process running our own copy of sleep, started by this test's
        // harness.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(
        during, "always",
        "native-thp set THP to always during its run"
    );
    assert_eq!(mode(), "always", "a SIGKILL cannot restore it");

    let o = cli(d, &instance, &["recover"]);
    let recovered = mode();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    // The killed experiment's zone stays (zones outlive their creators): release it.
    let zone = format!("iso{harness_pid}");
    let r = cli(d, &instance, &["zone", "release", &zone]);
    let again = cli(d, &instance, &["recover"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        r.status.success(),
        "release {zone}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(recovered, original, "recover put the THP mode back: {text}");
    assert!(
        text.contains(&format!("gave back the setting {THP} to {original}")),
        "{text}"
    );
    assert!(again.status.success());
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("setting"),
        "restored once"
    );
    let t = Instant::now();
    while !pids(&comm).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids(&comm).is_empty(), "the program was ended");
}
