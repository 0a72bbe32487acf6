//! The one-command lifecycle of `dualstack run` on the real host: without `--zone` it reserves
//! exactly the huge page shortfall for the run's lifetime and gives it back however the run
//! ends (normal exit, SIGTERM, kill -9 followed by `dualstack recover`); `--zone auto` carves a
//! transient zone sized to the run and releases it at exit (or, after kill -9, at the next
//! `dualstack` start). After each case the pool and the cgroups are exactly as before.
//!
//! Needs root, /dev/kvm, gcc and a 2 MiB huge page pool. Holds the host lock
//! (/tmp/dualstack-host.lock, `dualstack_testutil::HostLock`) while it runs. IRQ
//! affinities and the workqueue mask are fake files.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");
const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

fn pool() -> u64 {
    std::fs::read_to_string(POOL)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

struct Host {
    tmp: tempfile::TempDir,
    vars: Vec<(String, String)>,
    instance: PathBuf,
    pool_before: u64,
    _lock: dualstack_testutil::HostLock,
}

impl Host {
    fn new() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !root || !kvm || !Path::new(POOL).exists() {
            let what = "needs root, /dev/kvm and a 2 MiB huge page pool";
            return dualstack_testutil::missing_none(what);
        }
        let lock = dualstack_testutil::HostLock::take();
        let tmp = tempfile::tempdir().unwrap();
        let irq = tmp.path().join("irq");
        for (n, aff) in [("1", "0-1"), ("2", "1")] {
            std::fs::create_dir_all(irq.join(n)).unwrap();
            std::fs::write(irq.join(n).join("smp_affinity_list"), aff).unwrap();
        }
        let wq = tmp.path().join("wq_cpumask");
        std::fs::write(&wq, "00000003\n").unwrap();
        let instance = format!("dualstack-test-{}-run", std::process::id());
        let cpuset = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/cpuset")
        };
        let vars = vec![
            (
                "DUALSTACK_STATE_DIR".to_string(),
                tmp.path().join("state").display().to_string(),
            ),
            ("DUALSTACK_INSTANCE".into(), instance.clone()),
            ("DUALSTACK_IRQ_DIR".into(), irq.display().to_string()),
            (
                "DUALSTACK_WORKQUEUE_CPUMASK".into(),
                wq.display().to_string(),
            ),
        ];
        Some(Host {
            instance: cpuset.join(instance),
            pool_before: pool(),
            tmp,
            vars,
            _lock: lock,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn out(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    /// `dualstack run ARGS` in the background, in a process group of its own, stdout to a file.
    fn spawn(&self, args: &[&str], out: &Path) -> Child {
        let mut c = self.cmd(args);
        c.stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::inherit())
            .process_group(0);
        c.spawn().unwrap()
    }

    fn zones(&self) -> Vec<String> {
        let o = self.out(&["zone", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|z| z["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The host as it was: pool, no zone, no cgroup of ours.
    fn assert_clean(&self, what: &str) {
        assert_eq!(pool(), self.pool_before, "{what}: huge page pool");
        assert!(self.zones().is_empty(), "{what}: zones left");
        assert!(!self.instance.exists(), "{what}: instance cgroup left");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for z in self.zones() {
            let _ = self.out(&["zone", "release", &z]);
        }
        let _ = self.out(&["recover"]);
        let _ = std::fs::remove_dir(self.instance.join("commodity"));
        let _ = std::fs::remove_dir(&self.instance);
        if pool() != self.pool_before {
            let _ = std::fs::write(POOL, self.pool_before.to_string());
        }
    }
}

/// The shared spin guest (SIGTERM keeps its default action: the run ends with 143).
fn spin_guest(dir: &Path) -> PathBuf {
    let src = dualstack_testutil::guest::source("spin.c");
    dualstack_testutil::guest::build_c(&src, &dir.join("spin"), &[])
}

fn wait_started(out: &Path, child: &mut Child) {
    let t = Instant::now();
    while !std::fs::read_to_string(out)
        .unwrap_or_default()
        .contains("spinning")
    {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended early: {st}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_without_a_zone_reserves_the_shortfall_and_gives_it_back_however_it_ends() {
    let Some(h) = Host::new() else { return };
    let spin = spin_guest(h.tmp.path());
    let spin = spin.to_str().unwrap();
    let root = h.tmp.path().to_str().unwrap();
    let free: u64 = std::fs::read_to_string(POOL.replace("nr_hugepages", "free_hugepages"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let short = 32u64.saturating_sub(free);
    assert!(short > 0, "the test needs a pool without 32 free pages");

    // A normal run: 64 MiB with no huge pages reserved just works, and the pool is as before.
    let o = h.out(&["run", "--root", root, "--memory", "64M", "--", spin, "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "spinning 0.0 s\ndone\n");
    h.assert_clean("after a normal run");

    // While it runs it holds exactly the shortfall; SIGTERM ends it and gives the pages back.
    let out = h.tmp.path().join("out1");
    let mut c = h.spawn(
        &["run", "--root", root, "--memory", "64M", "--", spin, "60"],
        &out,
    );
    wait_started(&out, &mut c);
    assert_eq!(pool(), h.pool_before + short, "exactly the shortfall");
    // SAFETY: the run this test started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = c.wait().unwrap();
    assert_eq!(st.code(), Some(143), "{st:?}");
    h.assert_clean("after SIGTERM");

    // kill -9 of the whole run: the pages stay taken until `dualstack recover`.
    let out = h.tmp.path().join("out2");
    let mut c = h.spawn(
        &["run", "--root", root, "--memory", "64M", "--", spin, "60"],
        &out,
    );
    wait_started(&out, &mut c);
    // SAFETY: the run's own process group, started by this test.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    assert_eq!(c.wait().unwrap().signal(), Some(9));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool(), h.pool_before + short, "orphaned until recovery");
    let o = h.out(&["recover"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("gave back {short} huge pages")),
        "{text}"
    );
    h.assert_clean("after kill -9 and recover");
}

#[test]
fn zone_auto_carves_a_transient_zone_and_releases_it_however_the_run_ends() {
    let Some(h) = Host::new() else { return };
    let spin = spin_guest(h.tmp.path());
    let spin = spin.to_str().unwrap();
    let root = h.tmp.path().to_str().unwrap();
    let stats = h.tmp.path().join("stats.json");
    let o = h.out(&[
        "run",
        "--zone",
        "auto",
        "--cpus",
        "1",
        "--memory",
        "32M",
        "--root",
        root,
        "--stats",
        stats.to_str().unwrap(),
        "--",
        spin,
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "spinning 0.0 s\ndone\n");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    // The zone took one whole core: the last one (the first stays for housekeeping).
    let cpus = s["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 1, "{s}");
    assert_ne!(cpus[0], 0, "{s}");
    assert_eq!(s["memory"]["size_bytes"], 32 << 20, "{s}");
    h.assert_clean("after an auto-zone run");

    // While it runs the zone exists (and holds the run); kill -9, then any dualstack command
    // gives it back.
    let out = h.tmp.path().join("out");
    let mut c = h.spawn(
        &[
            "run", "--zone", "auto", "--memory", "32M", "--root", root, "--", spin, "60",
        ],
        &out,
    );
    wait_started(&out, &mut c);
    let zones = h.zones();
    assert_eq!(zones, [format!("auto-{}", c.id())]);
    assert_eq!(pool(), h.pool_before + 16);
    // SAFETY: the run's own process group, started by this test.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    assert_eq!(c.wait().unwrap().signal(), Some(9));
    std::thread::sleep(Duration::from_millis(200));
    let o = h.out(&["node"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("gave back transient zone"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    h.assert_clean("after kill -9 and the next start");
}

/// Runs started at the same moment without a zone (as `mpiexec` starts ranks) each get their
/// pages: a run counts the pages other live runs have claimed but not mapped yet, so their
/// shortfalls add up instead of all seeing the same free pages.
#[test]
fn concurrent_runs_without_a_zone_each_get_their_huge_pages() {
    let Some(h) = Host::new() else { return };
    let spin = spin_guest(h.tmp.path());
    let spin = spin.to_str().unwrap();
    let root = h.tmp.path().to_str().unwrap();
    let free: u64 = std::fs::read_to_string(POOL.replace("nr_hugepages", "free_hugepages"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    const RUNS: usize = 4;
    // 256 MiB each: 128 pages, which take a while to map; one run's start falls into another's
    // window between reserving and mapping.
    assert!(
        free < 128 * RUNS as u64,
        "the test needs a pool without {} free pages",
        128 * RUNS
    );
    for round in 0..2 {
        let mut runs: Vec<(Child, PathBuf)> = (0..RUNS)
            .map(|i| {
                let out = h.tmp.path().join(format!("c{round}-{i}"));
                let c = h.spawn(
                    &["run", "--root", root, "--memory", "256M", "--", spin, "1"],
                    &out,
                );
                // Staggered by a few ms (as a launcher's ranks come up); before claims
                // counted each other, the later ones found only part of their pages.
                std::thread::sleep(Duration::from_millis(15));
                (c, out)
            })
            .collect();
        for (c, out) in &mut runs {
            let st = c.wait().unwrap();
            let text = std::fs::read_to_string(&*out).unwrap();
            assert!(st.success(), "round {round}: a run failed ({st}): {text}");
            assert_eq!(text, "spinning 1.0 s\ndone\n");
        }
        h.assert_clean(&format!("after {RUNS} concurrent runs (round {round})"));
    }
}
