//! Crash safety of zones: the real `dualstack` binary is killed (SIGKILL) right after each
//! journal step of `zone create` and `zone release` (DUALSTACK_CRASH_AT), then `dualstack
//! recover` must leave the host exactly as before. Runs on this host's real cpusets and huge
//! pages (fake IRQ and workqueue files) and on a fake cgroup v2 tree.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");

/// What a test compares before and after: path (or fact) -> content.
type Watch = Box<dyn Fn(&Path) -> BTreeMap<String, String>>;

struct Env {
    tmp: tempfile::TempDir,
    vars: Vec<(String, String)>,
    /// Files and directories to compare (real host: the instance dir, pool, fake files).
    watch: Watch,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "<absent>".into())
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if rel.starts_with("state") || rel.ends_with(".lock") {
            continue;
        }
        if p.is_dir() {
            out.insert(rel, "<dir>".into());
            walk(root, &p, out);
        } else {
            out.insert(rel, read(&p));
        }
    }
}

impl Env {
    fn run(&self, args: &[&str], crash: Option<&str>) -> std::process::ExitStatus {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_remove("DUALSTACK_CRASH_AT");
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        if let Some(c) = crash {
            cmd.env("DUALSTACK_CRASH_AT", c);
        }
        cmd.stdout(std::process::Stdio::null());
        cmd.status().unwrap()
    }

    fn state(&self) -> BTreeMap<String, String> {
        (self.watch)(self.tmp.path())
    }

    /// Kill create at every step and phase, recover, compare; then the same for release.
    fn crash_everywhere(&self, create: &[&str]) -> (usize, usize) {
        let before = self.state();
        let mut create_crashes = 0;
        'outer: for seq in 1.. {
            for phase in ["journaled", "applied", "marked"] {
                let status = self.run(create, Some(&format!("create:{seq}:{phase}")));
                if status.success() {
                    // Past the last step: the zone was made; release it normally.
                    assert!(self.run(&["zone", "release", "c"], None).success());
                    assert_eq!(before, self.state(), "after a clean round trip");
                    break 'outer;
                }
                assert_eq!(status.signal(), Some(9), "create:{seq}:{phase}: {status:?}");
                create_crashes += 1;
                assert!(self.run(&["recover"], None).success());
                assert_eq!(
                    before,
                    self.state(),
                    "create killed at {seq}:{phase}, then recover"
                );
            }
        }
        let mut release_crashes = 0;
        for seq in (1..=40).rev() {
            assert!(self.run(create, None).success());
            let status = self.run(
                &["zone", "release", "c"],
                Some(&format!("release:{seq}:undone")),
            );
            if status.success() {
                assert_eq!(before, self.state());
                continue;
            }
            assert_eq!(status.signal(), Some(9));
            release_crashes += 1;
            assert!(self.run(&["recover"], None).success());
            assert_eq!(
                before,
                self.state(),
                "release killed after undoing step {seq}"
            );
        }
        (create_crashes, release_crashes)
    }
}

#[test]
fn killed_at_every_step_on_the_real_host_then_recovered() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists() {
        return dualstack_testutil::missing("needs root and a cgroup v1 cpuset hierarchy");
    }
    let tmp = tempfile::tempdir().unwrap();
    let instance = format!("dualstack-test-{}-crash", std::process::id());
    let irq = tmp.path().join("irq/9");
    std::fs::create_dir_all(&irq).unwrap();
    std::fs::write(irq.join("smp_affinity_list"), "0-1\n").unwrap();
    std::fs::write(tmp.path().join("wq"), "00000003\n").unwrap();
    let vars = vec![
        (
            "DUALSTACK_STATE_DIR".into(),
            tmp.path().join("state").display().to_string(),
        ),
        ("DUALSTACK_INSTANCE".into(), instance.clone()),
        (
            "DUALSTACK_IRQ_DIR".into(),
            tmp.path().join("irq").display().to_string(),
        ),
        (
            "DUALSTACK_WORKQUEUE_CPUMASK".into(),
            tmp.path().join("wq").display().to_string(),
        ),
    ];
    let inst = PathBuf::from("/sys/fs/cgroup/cpuset").join(&instance);
    let env = Env {
        tmp,
        vars,
        watch: Box::new(move |root| {
            let mut m = BTreeMap::new();
            walk(root, root, &mut m);
            m.insert("instance exists".into(), inst.exists().to_string());
            m.insert(
                "pool".into(),
                read(Path::new(
                    "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
                )),
            );
            m
        }),
    };
    let guard = Cleanup(&env);
    let (c, r) = env.crash_everywhere(&["zone", "create", "c", "--cpus", "1", "--memory", "64M"]);
    eprintln!("real host: {c} create crash points, {r} release crash points recovered");
    assert!(c >= 15 && r >= 5, "{c} {r}");
    drop(guard);
}

#[test]
fn killed_at_every_step_on_a_fake_v2_tree_then_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    };
    put("cgroup/cgroup.controllers", "cpuset cpu");
    put("cgroup/cgroup.subtree_control", "cpu");
    put("cgroup/cpuset.cpus.effective", "0-11");
    put("cgroup/cpuset.mems.effective", "0-1");
    for n in 0..2 {
        put(
            &format!("sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages"),
            "0",
        );
    }
    put("proc/irq/3/smp_affinity_list", "0-11");
    put("proc/irq/4/smp_affinity_list", "11");
    put("proc/sys/kernel/random/boot_id", "fake");
    put("sys/devices/virtual/workqueue/cpumask", "00000fff");
    let vars = vec![
        (
            "DUALSTACK_STATE_DIR".into(),
            root.join("state").display().to_string(),
        ),
        ("DUALSTACK_FAKE_ROOT".into(), root.display().to_string()),
        ("DUALSTACK_FAKE_CGROUP".into(), "v2".into()),
        (
            "DUALSTACK_TOPOLOGY".into(),
            "synthetic:package:2 numa:1(memory=8GiB) core:6 pu:1".into(),
        ),
    ];
    let env = Env {
        tmp,
        vars,
        watch: Box::new(|root| {
            let mut m = BTreeMap::new();
            walk(root, root, &mut m);
            m
        }),
    };
    let (c, r) = env.crash_everywhere(&["zone", "create", "c", "--cpus", "2", "--memory", "64M"]);
    eprintln!("fake v2: {c} create crash points, {r} release crash points recovered");
    assert!(c >= 27 && r >= 9, "{c} {r}");
}

struct Cleanup<'a>(&'a Env);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["zone", "release", "c"], None);
        let _ = self.0.run(&["recover"], None);
    }
}
