//! Warm zone memory end to end through the real `dualstack` binary, on this host's real huge
//! pages, cpusets and KVM (run under the host lock: `flock -o /tmp/dualstack-host.lock`):
//! a job writes a pattern over all its memory and the next job in the zone finds every page it
//! can read zero; warm vs cold launch; kill -9 of the zeroer and of a running job, then
//! recovery; a zone whose memory cannot be populated fails up front and changes nothing.
//! Every test releases its zone, runs `recover` and puts the huge page pools back to 0, also
//! when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dualstack_testutil::{have_cpuset_v1, have_kvm, is_root, missing};

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");
static SERIAL: Mutex<()> = Mutex::new(());
const POOLS: [&str; 2] = [
    "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
    "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
];

struct Host {
    tmp: tempfile::TempDir,
    instance: String,
    guest: PathBuf,
    extra: Vec<(String, String)>,
}

fn host(tag: &str) -> Option<Host> {
    if !is_root() || !have_cpuset_v1() || !have_kvm() || !Path::new(POOLS[0]).exists() {
        missing("needs root, a cgroup v1 cpuset hierarchy, /dev/kvm and huge pages");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let guest = tmp.path().join("memscan");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/memscan.c");
    if let Err(e) = dualstack_testutil::guest::try_build_c(&src, &guest, &[]) {
        missing(&format!("gcc -static cannot build the test guest: {e}"));
        return None;
    }
    std::fs::create_dir_all(tmp.path().join("irq")).unwrap();
    std::fs::write(tmp.path().join("wq"), "00000003\n").unwrap();
    Some(Host {
        instance: format!("dualstack-test-{}-warm-{tag}", std::process::id()),
        tmp,
        guest,
        extra: Vec::new(),
    })
}

impl Host {
    fn cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("DUALSTACK_STATE_DIR", self.tmp.path().join("state"))
            .env("DUALSTACK_INSTANCE", &self.instance)
            .env("DUALSTACK_IRQ_DIR", self.tmp.path().join("irq"))
            .env("DUALSTACK_WORKQUEUE_CPUMASK", self.tmp.path().join("wq"))
            .env_remove("DUALSTACK_TEST_ZERO_DELAY_MS")
            .env_remove("DUALSTACK_TEST_STEAL_HUGEPAGES")
            .env_remove("DUALSTACK_WARM_MEMORY");
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.cmd(args, env).stdin(Stdio::null()).output().unwrap();
        eprintln!(
            "$ dualstack {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(out.status.success(), "dualstack {args:?}: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run the guest in zone `z`; returns (its stdout, the run's statistics).
    fn job(&self, z: &str, mode: &str, env: &[(&str, &str)]) -> (String, serde_json::Value) {
        let stats = self.tmp.path().join(format!("stats-{mode}.json"));
        let g = self.guest.display().to_string();
        let s = stats.display().to_string();
        let out = self.ok(&["run", "--zone", z, "--stats", &s, "--", &g, mode], env);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
        (out, v)
    }

    fn extents(&self, z: &str) -> Vec<serde_json::Value> {
        let out = self.ok(&["zone", "memory", z, "--json"], &[]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["extents"].as_array().cloned().unwrap_or_default()
    }

    fn cleanup(&self) {
        let _ = self.run(&["zone", "release", "z"], &[]);
        let _ = self.run(&["recover"], &[]);
    }
}

/// Releases the zone and restores the pools whatever happens.
struct Cleanup<'a>(&'a Host);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.cleanup();
        for p in POOLS {
            let _ = std::fs::write(p, "0\n");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let state = self.0.tmp.path().join("state");
        assert!(
            !mounts.contains(&*state.to_string_lossy()),
            "a zone hugetlbfs is still mounted under {}",
            state.display()
        );
    }
}

fn field(out: &str, key: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

fn pool(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default().trim().into()
}

#[test]
fn a_job_finds_zero_memory_after_a_job_that_wrote_all_of_its_own() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("pattern") else { return };
    let _c = Cleanup(&h);
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "1536M"],
        &[],
    );
    let (out, stats) = h.job("z", "write", &[]);
    assert_eq!(stats["memory"]["source"], "warm_zone", "{stats}");
    let mapped = field(&out, "mapped");
    assert!(mapped > 1400 << 20, "the guest mapped only {mapped} bytes");
    // Right away: the zeroer may still be at work; the job waits for what it needs.
    let (out, stats) = h.job("z", "check", &[]);
    assert_eq!(field(&out, "nonzero"), 0, "{out}");
    assert!(field(&out, "mapped") > 1400 << 20);
    assert!(stats["memory"]["zero_wait_s"].as_f64().unwrap() >= 0.0);
    // Several jobs in a row, and one smaller job: still zero.
    let (out, _) = h.job("z", "write", &[]);
    assert!(field(&out, "mapped") > 1400 << 20);
    let g = h.guest.display().to_string();
    let out = h.ok(
        &["run", "--zone", "z", "--memory", "256M", "--", &g, "check"],
        &[],
    );
    assert_eq!(field(&out, "nonzero"), 0, "{out}");
    let out = h.ok(&["zone", "memory", "z"], &[]);
    assert!(out.contains("zeroing pass"), "{out}");
    h.ok(&["zone", "release", "z"], &[]);
    assert_eq!(pool(POOLS[0]), "0");
    assert_eq!(pool(POOLS[1]), "0");
}

#[test]
fn warm_zone_maps_its_memory_and_a_cold_zone_populates_per_job() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("launch") else { return };
    let _c = Cleanup(&h);
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "256M"],
        &[],
    );
    let (_, warm) = h.job("z", "check", &[]);
    assert_eq!(warm["memory"]["source"], "warm_zone", "{warm}");
    h.ok(&["zone", "release", "z"], &[]);
    // The same zone without warm memory: it only reserves pages; the job allocates them.
    let cold_env = [("DUALSTACK_WARM_MEMORY", "0")];
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "256M"],
        &cold_env,
    );
    let (out, cold) = h.job("z", "check", &cold_env);
    assert_eq!(field(&out, "nonzero"), 0);
    assert_eq!(cold["memory"]["source"], "cold_hugetlb", "{cold}");
    h.ok(&["zone", "release", "z"], &cold_env);
}

#[test]
fn killed_zeroer_then_recover_or_next_job_never_sees_dirty_pages() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("killzero") else { return };
    let _c = Cleanup(&h);
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "512M"],
        &[],
    );
    let slow = [("DUALSTACK_TEST_ZERO_DELAY_MS", "300")];
    for round in ["recover", "next job"] {
        let (out, _) = h.job("z", "write", &slow);
        assert!(field(&out, "mapped") > 400 << 20);
        // The zeroer (64 MiB per 300 ms) is at work: kill it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            let e = h.extents("z");
            let live = e.iter().find(|x| {
                x["state"] == "dirty"
                    && x["owner_alive"] == true
                    && x["clean_to"].as_u64()
                        < Some(x["start"].as_u64().unwrap() + x["len"].as_u64().unwrap())
            });
            if let Some(pid) = live
                .and_then(|x| x["owner"].as_str())
                .and_then(|o| o.split(':').next()?.parse::<i32>().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "no live zeroer half-way: {e:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        // SAFETY: SIGKILL to the zeroer our own `dualstack run` started (pid just read from
        // the zone's extent table, owner alive, its extent not yet zeroed).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(50));
        if round == "recover" {
            let out = h.ok(&["recover"], &[]);
            assert!(out.contains("zeroed warm memory"), "{out}");
            assert!(h.extents("z").is_empty());
        }
        // The next start hands the dirty pages to a new (here: slow) zeroer; the job waits
        // for exactly the pages it needs.
        let (out, stats) = h.job("z", "check", &[("DUALSTACK_TEST_ZERO_DELAY_MS", "50")]);
        assert_eq!(field(&out, "nonzero"), 0, "{round}: {out}");
        assert!(field(&out, "mapped") > 400 << 20);
        if round == "next job" {
            assert!(
                stats["memory"]["zero_wait_bytes"].as_u64().unwrap() > 0,
                "the job had to wait for the dirty pages: {stats}"
            );
        }
    }
}

#[test]
fn killed_job_leaves_no_data_for_the_next_one() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("killjob") else { return };
    let _c = Cleanup(&h);
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "256M"],
        &[],
    );
    let g = h.guest.display().to_string();
    let log = h.tmp.path().join("spin.out");
    let mut child = h
        .cmd(&["run", "--zone", "z", "--", &g, "write", "spin"], &[])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("write mapped=")
    {
        assert!(Instant::now() < deadline, "the job never wrote its memory");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL of the dualstack process we started
    child.wait().unwrap();
    let (out, _) = h.job("z", "check", &[]);
    assert_eq!(field(&out, "nonzero"), 0, "{out}");
    assert!(field(&out, "mapped") > 200 << 20);
}

#[test]
fn memory_taken_meanwhile_fails_create_up_front_and_changes_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("short") else { return };
    let _c = Cleanup(&h);
    let before = (pool(POOLS[0]), pool(POOLS[1]));
    // "Another user" takes 16 of the zone's 128 pages between reservation and populate.
    let out = h.run(
        &["zone", "create", "z", "--cpus", "1", "--memory", "256M"],
        &[("DUALSTACK_TEST_STEAL_HUGEPAGES", "16")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs 128 free 2048 KiB huge pages") && err.contains("only"),
        "{err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!((pool(POOLS[0]), pool(POOLS[1])), before);
    let out = h.ok(&["zone", "list"], &[]);
    assert!(out.contains("no zones"), "{out}");
    assert!(!PathBuf::from("/sys/fs/cgroup/cpuset")
        .join(&h.instance)
        .exists());
}

#[test]
fn release_gives_pages_back_at_once_while_a_zeroer_runs() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = host("release") else { return };
    let _c = Cleanup(&h);
    h.ok(
        &["zone", "create", "z", "--cpus", "1", "--memory", "512M"],
        &[],
    );
    let (_, _) = h.job("z", "write", &[("DUALSTACK_TEST_ZERO_DELAY_MS", "300")]);
    let e = h.extents("z");
    assert!(
        e.iter()
            .any(|x| x["state"] == "dirty" && x["owner_alive"] == true),
        "a zeroer is at work: {e:?}"
    );
    // Release stops it and gives every page back, zeroing nothing.
    let out = h.ok(&["zone", "release", "z"], &[]);
    assert!(out.contains("undo populate"), "{out}");
    assert_eq!(pool(POOLS[0]), "0");
    assert!(h.extents_gone());
}

impl Host {
    fn extents_gone(&self) -> bool {
        let out = self.run(&["zone", "memory", "z", "--json"], &[]);
        !out.status.success()
    }
}
