//! The Slurm integration on a real 2-node Slurm cluster on this host (contrib/slurm/test-cluster:
//! munged, slurmctld, two slurmd with one CPU each, the dualstack Prolog/Epilog/TaskProlog):
//! zone jobs on both nodes, 2-rank MPI jobs across them (MPICH under `srun --mpi=pmi2`, Open
//! MPI's `mpirun`), jobs without the option, scancel, an impossible request draining a
//! node, and dualstack killed -9 inside the prolog followed by recovery. After each, the host is
//! exactly as before (huge pages, cpusets).
//!
//! Needs root and the `dualstack` binary (`cargo build --release -p dualstack`; `cargo test
//! --workspace` builds it; or DUALSTACK_BIN). Each test holds the host lock
//! (/tmp/dualstack-host.lock) while it runs: do not wrap it in `flock` yourself. The cluster is
//! stopped (by the pids it recorded) in a Drop guard, also when a test fails. Under CI or
//! DUALSTACK_REQUIRE_ALL=1 a missing prerequisite fails the test instead of skipping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dualstack_slurm::SiteConfig;

/// Whether this test can run here; `false` (a loud skip) only without DUALSTACK_REQUIRE_ALL=1.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        dualstack_testutil::missing("the Slurm cluster tests need root");
        return false;
    }
    true
}

use dualstack_testutil::HostLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dualstack_bin() -> PathBuf {
    let bin = std::env::var_os("DUALSTACK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/dualstack"));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p dualstack` (or set DUALSTACK_BIN)",
        bin.display()
    );
    bin.canonicalize().unwrap()
}

/// A static C hello: prints the node it runs on, optionally sleeps N seconds (a SIGTERM
/// handler says so), exits with the given status.
fn build_hello(dir: &Path) -> PathBuf {
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  const char *n = getenv("SLURMD_NODENAME");
  printf("hello from %s as uid %d\n", n ? n : "?", (int)getuid());
  fflush(stdout);
  if (argc > 1) sleep(atoi(argv[1]));
  return argc > 2 ? atoi(argv[2]) : 0;
}
"#,
    )
    .unwrap();
    let out = dir.join("hello");
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running gcc");
    assert!(st.success(), "gcc -static hello.c failed");
    out
}

/// A running test cluster; Drop takes it down (jobs cancelled, epilogs run, leftovers
/// recovered, daemons stopped by pid, directory removed).
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    bin: PathBuf,
    work: tempfile::TempDir,
    hello: PathBuf,
}

impl Cluster {
    fn up(nodes: u32) -> Self {
        let bin = dualstack_bin();
        let out = Command::new(repo().join("contrib/slurm/test-cluster"))
            .args(["up", "--nodes", &nodes.to_string(), "--dualstack"])
            .arg(&bin)
            .env_remove("SLURM_CONF")
            .output()
            .expect("running contrib/slurm/test-cluster");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "test-cluster up failed (Slurm could not be installed or started): {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        let conf = PathBuf::from(
            last.strip_prefix("export SLURM_CONF=")
                .unwrap_or_else(|| panic!("last line is not `export SLURM_CONF=...`: {last:?}")),
        );
        let dir = conf.parent().unwrap().to_path_buf();
        let work = tempfile::Builder::new()
            .prefix("dualstack-slurm-work")
            .tempdir()
            .unwrap();
        // Jobs run as root here, but keep the directory readable for slurmstepd.
        std::fs::set_permissions(
            work.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let hello = build_hello(work.path());
        Self {
            dir,
            conf,
            bin,
            work,
            hello,
        }
    }

    fn site(&self) -> SiteConfig {
        SiteConfig::load_from(&self.dir.join("dualstack-slurm.toml")).unwrap()
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SLURM_CONF", &self.conf)
            .env(
                "DUALSTACK_SLURM_CONFIG",
                self.dir.join("dualstack-slurm.toml"),
            )
            .env_remove("DUALSTACK_SLURM_NO_ZONE")
            .current_dir(self.work.path());
        c
    }

    fn run(&self, prog: &str, args: &[&str]) -> Output {
        let out = self.cmd(prog).args(args).output().unwrap();
        out
    }

    fn ok(&self, prog: &str, args: &[&str]) -> String {
        let out = self.run(prog, args);
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// sbatch --parsable; returns the job id.
    fn sbatch(&self, args: &[&str], script: &str) -> u64 {
        self.sbatch_in(self.work.path(), args, script)
    }

    /// sbatch with the job's directory (and output file `job-<id>.out`) in `dir`.
    fn sbatch_in(&self, dir: &Path, args: &[&str], script: &str) -> u64 {
        let mut all: Vec<String> = vec![
            "--parsable".into(),
            format!("--output={}/job-%j.out", dir.display()),
            format!("--chdir={}", dir.display()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all.push(format!("--wrap={script}"));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = self.ok("sbatch", &refs);
        out.trim()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("sbatch printed {out:?}"))
    }

    fn job_field(&self, job: u64, field: &str) -> Option<String> {
        let out = self.run("scontrol", &["show", "job", "-o", &job.to_string()]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{field}=")).map(str::to_string))
    }

    fn job_state(&self, job: u64) -> String {
        self.job_field(job, "JobState")
            .unwrap_or_else(|| "GONE".into())
    }

    fn job_output(&self, job: u64) -> String {
        std::fs::read_to_string(self.work.path().join(format!("job-{job}.out"))).unwrap_or_default()
    }

    /// node -> state, e.g. "idle", "drained", "completing".
    fn nodes(&self) -> BTreeMap<String, String> {
        self.ok("sinfo", &["-h", "-N", "-o", "%N %T"])
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_string(), s.trim().to_string()))
            .collect()
    }

    fn node_reason(&self, node: &str) -> String {
        let out = self.ok("scontrol", &["show", "node", "-o", node]);
        out.split(" Reason=").nth(1).unwrap_or_default().to_string()
    }

    /// Wait until the job has ended and every node finished its epilog.
    fn wait_done(&self, job: u64) -> String {
        self.wait_done_within(job, Duration::from_secs(60))
    }

    fn wait_done_within(&self, job: u64, timeout: Duration) -> String {
        let mut state = String::new();
        wait_for(timeout, &format!("job {job} to end"), || {
            state = self.job_state(job);
            let ended = !matches!(
                state.as_str(),
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED"
            );
            ended
                && !self
                    .nodes()
                    .values()
                    .any(|s| s.contains("comp") || s.contains("alloc") || s.contains("mix"))
        });
        state
    }

    /// Zones of every node: node -> zones.
    fn zones(&self) -> BTreeMap<String, Vec<dualstack_zones::Zone>> {
        let site = self.site();
        site.node
            .keys()
            .map(|n| {
                let s = site.node(n).unwrap();
                let zones = if s.state_dir.join(dualstack_zones::state::DB_FILE).exists() {
                    dualstack_zones::list(&s.host_paths().unwrap()).unwrap()
                } else {
                    Vec::new()
                };
                (n.clone(), zones)
            })
            .collect()
    }

    fn env_file(&self) -> PathBuf {
        self.dir.join("dualstack-slurm.env")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new(repo().join("contrib/slurm/test-cluster"))
            .arg("down")
            .arg(&self.dir)
            .output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            eprintln!("test-cluster down failed: {out:?}");
            // Last resort: the daemons test-cluster recorded, by pid.
            if let Ok(pids) = std::fs::read_to_string(self.dir.join("pids")) {
                for line in pids.lines() {
                    if let Some((name, pid)) = line.split_once(' ') {
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .unwrap_or_default();
                        if comm.trim() == name {
                            if let Ok(pid) = pid.trim().parse::<i32>() {
                                // SAFETY: signalling a daemon this test's cluster started.
                                unsafe { libc::kill(pid, libc::SIGKILL) };
                            }
                        }
                    }
                }
            }
        }
        let _ = &self.bin;
    }
}

/// One test's hold on the host: the host lock, the host's state before the test, and a running
/// cluster. Dropped (also on a failed assertion) it takes the cluster down before it lets the
/// lock go; [`Session::finish`] does so and then checks the host is exactly as before.
struct Session {
    c: Cluster,
    before: BTreeMap<String, String>,
    _lock: HostLock,
}

impl Session {
    /// `None`: this host cannot run the cluster tests (a loud skip, or a failure under
    /// DUALSTACK_REQUIRE_ALL=1).
    fn start(nodes: u32) -> Option<Self> {
        if !can_run() {
            return None;
        }
        let lock = HostLock::take();
        let before = host_state();
        Some(Self {
            c: Cluster::up(nodes),
            before,
            _lock: lock,
        })
    }

    fn finish(self, what: &str) {
        let Session { c, before, _lock } = self;
        drop(c);
        assert_eq!(before, host_state(), "{what}");
    }
}

impl std::ops::Deref for Session {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.c
    }
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "<absent>".into())
}

/// What a job may change and must give back: huge page pools and the dualstack cpusets.
fn host_state() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for p in [
        "/proc/sys/vm/nr_hugepages",
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages",
        "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages",
        "/sys/fs/cgroup/cpuset/cpuset.cpus",
    ] {
        m.insert(p.to_string(), read(p));
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup/cpuset") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains("dualstack") {
                m.insert(
                    format!("cpuset dir {name}"),
                    read(&format!("/sys/fs/cgroup/cpuset/{name}/cpuset.cpus")),
                );
            }
        }
    }
    m
}

fn cpus_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cpuset.cpus"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn zone_job_on_two_nodes_then_everything_back() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    let job = c.sbatch(
        &["-N2", "--comment=dualstack:memory=64M"],
        &format!("srun -l {bin} run --memory 32M --summary -- {hello} 3"),
    );
    // While it runs: both zones exist, on their node's CPU, with their huge pages, and each
    // node's commodity cpuset excludes its zone.
    // (The prolog records the job's owner right after it made the zone.)
    let site = c.site();
    wait_for(
        Duration::from_secs(30),
        "both zones and their owner records",
        || {
            let zones = c.zones();
            zones.values().all(|z| z.len() == 1)
                && zones.keys().all(|n| {
                    site.node(n)
                        .is_ok_and(|s| dualstack_slurm::job_record(&s, job).is_some())
                })
        },
    );
    assert_eq!(c.job_state(job), "RUNNING");
    for (node, zones) in c.zones() {
        let z = &zones[0];
        let settings = site.node(&node).unwrap();
        assert_eq!(z.name, format!("slurm-{job}"));
        assert_eq!(&z.cpus, settings.cpus.as_ref().unwrap(), "node {node}");
        assert_eq!(z.memory_bytes, 64 << 20);
        assert_eq!(cpus_file(&z.cgroup_dir), z.cpus.to_list());
        let paths = settings.host_paths().unwrap();
        let commodity = cpus_file(&paths.commodity_dir());
        let commodity = dualstack_zones::CpuList::parse_list(&commodity).unwrap_or_default();
        assert!(
            commodity.is_disjoint(&z.cpus),
            "node {node}: commodity {commodity:?} overlaps zone {:?}",
            z.cpus
        );
        let rec = dualstack_slurm::job_record(&settings, job).expect("owner record");
        assert_eq!(rec.user.as_deref(), Some("root"));
    }
    assert_eq!(
        read("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")
            .parse::<u64>()
            .unwrap(),
        s.before["/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"]
            .parse::<u64>()
            .unwrap()
            + 64,
        "two zones of 32 x 2 MiB pages"
    );
    let state = c.wait_done(job);
    let out = c.job_output(job);
    assert_eq!(state, "COMPLETED", "{out}");
    assert_eq!(c.job_field(job, "ExitCode").as_deref(), Some("0:0"));
    for (task, node, cpu) in [(0, "n1", 0), (1, "n2", 1)] {
        assert!(out.contains(&format!("{task}: hello from {node}")), "{out}");
        let summary = out
            .lines()
            .find(|l| l.starts_with(&format!("{task}: dualstack: ")))
            .unwrap_or_else(|| panic!("no summary of task {task}: {out}"));
        assert!(
            summary.contains(&format!("on cpus [{cpu}]")) && summary.contains("hugetlb 2M"),
            "{summary}"
        );
    }
    assert!(c.zones().values().all(Vec::is_empty));
    // Also with the default memory and a step exit status passed through.
    let job = c.sbatch(
        &["-N1", "--comment=dualstack"],
        &format!("srun {bin} run --memory 32M -- {hello} 0 7"),
    );
    assert_eq!(c.wait_done(job), "FAILED");
    assert_eq!(c.job_field(job, "ExitCode").as_deref(), Some("7:0"));
    s.finish("host after the jobs");
}

#[test]
fn job_without_the_option_gets_no_zone() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    let job = c.sbatch(
        &["-N2", "--comment=just a comment"],
        &format!(
            "srun -l {bin} run --memory 32M -- {hello}; echo step1=$?; \
             DUALSTACK_SLURM_NO_ZONE=1 srun -l {bin} run --memory 32M --memory-backing lazy -- {hello}; echo step2=$?"
        ),
    );
    c.wait_done(job);
    let out = c.job_output(job);
    assert!(out.contains("has no dualstack zone on node n1"), "{out}");
    assert!(out.contains("step1=1"), "{out}");
    assert!(
        out.contains("0: hello from n1") && out.contains("1: hello from n2"),
        "{out}"
    );
    assert!(out.contains("step2=0"), "{out}");
    assert!(c.zones().values().all(Vec::is_empty));
    assert_eq!(
        s.before,
        host_state(),
        "a job without the option changed the host"
    );
    s.finish("host after the test");
}

#[test]
fn scancel_releases_the_zones() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    let job = c.sbatch(
        &["-N2", "--comment=dualstack:memory=32M"],
        &format!("srun -l {bin} run --memory 32M -- {hello} 120"),
    );
    wait_for(Duration::from_secs(30), "both zones and the guests", || {
        c.zones().values().all(|z| z.len() == 1)
            && c.job_output(job).matches("hello from").count() == 2
    });
    c.ok("scancel", &[&job.to_string()]);
    let state = c.wait_done(job);
    assert_eq!(state, "CANCELLED", "{}", c.job_output(job));
    assert!(c.zones().values().all(Vec::is_empty));
    assert!(c.nodes().values().all(|s| s == "idle"), "{:?}", c.nodes());
    s.finish("host after the test");
}

#[test]
fn impossible_request_drains_the_node_with_a_reason() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let job = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:memory=100G"],
        "true",
    );
    wait_for(Duration::from_secs(30), "n1 to drain", || {
        c.nodes()["n1"].starts_with("drain")
    });
    let reason = c.node_reason("n1");
    assert!(
        reason.contains("dualstack") && reason.contains("impossible request"),
        "drain reason: {reason}"
    );
    assert_eq!(s.before, host_state(), "a refused prolog changed the host");
    c.ok("scancel", &[&job.to_string()]);
    c.ok("scontrol", &["update", "nodename=n1", "state=resume"]);
    wait_for(Duration::from_secs(60), "n1 idle again", || {
        c.nodes()["n1"] == "idle"
    });
    // An unknown key is refused the same way; then a good request works on the resumed node.
    let job = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:colour=red"],
        "true",
    );
    wait_for(Duration::from_secs(30), "n1 to drain", || {
        c.nodes()["n1"].starts_with("drain")
    });
    assert!(
        c.node_reason("n1").contains("unknown key"),
        "{}",
        c.node_reason("n1")
    );
    c.ok("scancel", &[&job.to_string()]);
    c.ok("scontrol", &["update", "nodename=n1", "state=resume"]);
    wait_for(Duration::from_secs(60), "n1 idle again", || {
        c.nodes()["n1"] == "idle"
    });
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    let job = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:memory=32M"],
        &format!("srun {bin} run -- {hello}"),
    );
    assert_eq!(c.wait_done(job), "COMPLETED", "{}", c.job_output(job));
    s.finish("host after the test");
}

#[test]
fn dualstack_killed_in_the_prolog_then_recovered() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let env = std::fs::read_to_string(c.env_file()).unwrap();
    // SIGKILL right after the zone's CPUs were written (step 3 of create).
    std::fs::write(
        c.env_file(),
        format!("{env}DUALSTACK_CRASH_AT=create:3:applied\n"),
    )
    .unwrap();
    let job = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:memory=32M"],
        "true",
    );
    wait_for(Duration::from_secs(30), "n1 to drain", || {
        c.nodes()["n1"].starts_with("drain")
    });
    std::fs::write(c.env_file(), &env).unwrap();
    c.ok("scancel", &[&job.to_string()]);
    // The next prolog, epilog or `dualstack slurm recover` on that node makes it consistent.
    let out = c.ok(
        c.bin.to_str().unwrap(),
        &["slurm", "recover", "--node", "n1"],
    );
    eprintln!("recover: {out}");
    assert!(c.zones()["n1"].is_empty());
    // The kill did leave a half-made zone, and a hook or the recovery rolled it back.
    let n1 = c.site().node("n1").unwrap();
    let log = std::fs::read_to_string(dualstack_slurm::hook_log_path(&n1)).unwrap_or_default();
    assert!(
        log.contains(&format!("rolled back [\"slurm-{job}\"]")) || out.contains("rolled back"),
        "no rollback of slurm-{job} seen; hook log:\n{log}\nrecover: {out}"
    );
    assert_eq!(
        s.before,
        host_state(),
        "after the killed prolog and recovery"
    );
    c.ok("scontrol", &["update", "nodename=n1", "state=resume"]);
    wait_for(Duration::from_secs(60), "n1 idle again", || {
        c.nodes()["n1"] == "idle"
    });
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    let job = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:memory=32M"],
        &format!("srun {bin} run -- {hello}"),
    );
    assert_eq!(c.wait_done(job), "COMPLETED", "{}", c.job_output(job));
    s.finish("host after the test");
}

/// The SPANK plugin built beside the dualstack binary (`cargo build --release -p dualstack-spank`).
fn spank_plugin() -> PathBuf {
    dualstack_bin().with_file_name("libdualstack_spank.so")
}

#[test]
fn spank_option_asks_for_zones_and_a_typo_fails_at_submission() {
    if !spank_plugin().exists() {
        return dualstack_testutil::missing(&format!(
            "the SPANK plugin {} is not built (cargo build --release -p dualstack-spank)",
            spank_plugin().display()
        ));
    }
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let plugstack = read(&c.dir.join("plugstack.conf").display().to_string());
    assert!(plugstack.contains("dualstack-spank.so"), "{plugstack}");
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    // The option is listed in sbatch's help like any other.
    let help = c.ok("sbatch", &["--help"]);
    assert!(help.contains("--dualstack"), "{help}");
    // A typo is refused by sbatch itself, before any node is touched.
    let bad = c.run("sbatch", &["-N1", "--dualstack=memory=lots", "--wrap=true"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "a bad --dualstack value was accepted"
    );
    assert!(err.contains("memory=lots"), "{err}");
    assert_eq!(
        s.before,
        host_state(),
        "a refused submission changed the host"
    );
    // A good one: every node gets the zone it asked for (no --comment at all).
    let job = c.sbatch(
        &["-N2", "--dualstack=memory=32M"],
        &format!("srun -l {bin} run --memory 32M -- {hello} 3"),
    );
    wait_for(Duration::from_secs(30), "both zones", || {
        c.zones().values().all(|z| z.len() == 1)
    });
    for zones in c.zones().values() {
        assert_eq!(zones[0].name, format!("slurm-{job}"));
        assert_eq!(zones[0].memory_bytes, 32 << 20);
    }
    let state = c.wait_done(job);
    let out = c.job_output(job);
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(
        out.contains("0: hello from n1") && out.contains("1: hello from n2"),
        "{out}"
    );
    assert!(c.zones().values().all(Vec::is_empty));
    // `on`: the node's default size.
    let job = c.sbatch(
        &["-N1", "--dualstack=on"],
        &format!("srun {bin} run --memory 32M -- {hello}"),
    );
    assert_eq!(c.wait_done(job), "COMPLETED", "{}", c.job_output(job));
    s.finish("host after the jobs");
}

#[test]
fn a_job_over_its_time_limit_is_ended_and_its_zones_released() {
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    // One minute is Slurm's smallest limit; the guest would run for ten.
    let job = c.sbatch(
        &["-N2", "--time=1", "--comment=dualstack:memory=32M"],
        &format!("srun -l {bin} run --memory 32M -- {hello} 600"),
    );
    wait_for(Duration::from_secs(30), "both zones and the guests", || {
        c.zones().values().all(|z| z.len() == 1)
            && c.job_output(job).matches("hello from").count() == 2
    });
    // slurmctld checks limits every 30 s or so, then KillWait (5 s) passes between SIGTERM
    // and SIGKILL.
    let state = c.wait_done_within(job, Duration::from_secs(180));
    assert_eq!(state, "TIMEOUT", "{}", c.job_output(job));
    assert!(c.zones().values().all(Vec::is_empty));
    assert!(c.nodes().values().all(|s| s == "idle"), "{:?}", c.nodes());
    s.finish("host after the test");
}

/// The MPI tests' program (crates/cli/tests/mpi_guests/mpi_suite.c): statically linked against
/// Debian's MPICH (as `dualstack run` needs it, see crates/cli/tests/mpi.rs), or dynamically
/// with Open MPI's `mpicc.openmpi`. `None`: that MPI is not installed.
fn build_mpi_suite(dir: &Path, mpi: Mpi) -> Option<PathBuf> {
    let guests = repo().join("crates/cli/tests/mpi_guests");
    let (out, mut cmd) = match mpi {
        Mpi::Mpich => {
            if !Path::new("/usr/lib/x86_64-linux-gnu/libmpich.a").exists() {
                return None;
            }
            let mut c = Command::new("gcc");
            c.args(["-static", "-O2", "-I/usr/include/x86_64-linux-gnu/mpich"])
                .arg(guests.join("mpi_suite.c"))
                .arg(guests.join("noudev.c"))
                // UCX's libucs/libucm first and whole (their constructors run first).
                .args([
                    "-Wl,--whole-archive",
                    "-lucs",
                    "-lucm",
                    "-Wl,--no-whole-archive",
                ])
                .args([
                    "-lmpich", "-lucp", "-luct", "-lucs", "-lucm", "-lhwloc", "-lnuma",
                ])
                .args(["-lz", "-lm", "-lpthread", "-ldl"]);
            (dir.join("mpi_suite-mpich"), c)
        }
        Mpi::OpenMpi => {
            if !dualstack_testutil::have_tool("mpicc.openmpi", "--version")
                || !dualstack_testutil::have_tool("mpirun.openmpi", "--version")
            {
                return None;
            }
            let mut c = Command::new("mpicc.openmpi");
            c.arg("-O2").arg(guests.join("mpi_suite.c"));
            (dir.join("mpi_suite-openmpi"), c)
        }
    };
    let o = cmd
        .arg("-o")
        .arg(&out)
        .output()
        .expect("running the compiler");
    assert!(
        o.status.success(),
        "building {}: {}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(out)
}

#[derive(Clone, Copy)]
enum Mpi {
    Mpich,
    OpenMpi,
}

/// UCX on ranks of one host (both test nodes are on this host): shared memory only, and no
/// peer segments opened through /proc/<pid>/fd (that names the other VMM's descriptors).
const UCX_ENV: &str = "export UCX_TLS=self,sm UCX_POSIX_USE_PROC_LINK=n";

/// The suite's modes and what each prints on 2 ranks (the same as crates/cli/tests/mpi.rs).
fn mpi_modes() -> Vec<(&'static str, String)> {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most 256 bytes into `host`.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let host =
        String::from_utf8_lossy(&host[..host.iter().position(|&b| b == 0).unwrap()]).into_owned();
    vec![
        (
            "hello",
            format!("hello from rank 0 of 2 on {host}\nhello from rank 1 of 2 on {host}\n"),
        ),
        ("ring", "ring: 100 laps, token 200\n".into()),
        ("allreduce", "allreduce: sum 6144.000 max 11 min 1\n".into()),
    ]
}

/// Run each mode of the suite natively and (with `in_vm`) with one VM per rank under the same
/// `launcher` (a shell prefix taking the program and its arguments) inside one 2-node zone
/// job; then check: same output and status as native, each rank in its own VM on its node's
/// zone core with the zone's huge pages, both zones there while the job ran, and released
/// after it.
fn mpi_job_across_the_nodes(
    s: &Session,
    prog: &Path,
    launcher: &str,
    extra_env: &str,
    in_vm: bool,
) {
    let c = &**s;
    let bin = c.bin.display().to_string();
    let prog = prog.display().to_string();
    let modes = mpi_modes();
    let mut script =
        format!("{UCX_ENV}; {extra_env}\nsrun -N2 -n2 -l {bin} slurm show > zones.out\n");
    for (m, _) in &modes {
        script.push_str(&format!(
            "{launcher} {prog} {m} > native-{m}.out 2> native-{m}.err; echo native-{m}=$?\n"
        ));
        if in_vm {
            script.push_str(&format!(
                "{launcher} {bin} run --memory 320M --summary -- {prog} {m} > vm-{m}.out 2> vm-{m}.err; echo vm-{m}=$?\n"
            ));
        }
    }
    let job = c.sbatch(&["-N2", "--comment=dualstack:memory=384M"], &script);
    let state = c.wait_done_within(job, Duration::from_secs(240));
    let out = c.job_output(job);
    let file = |name: &str| std::fs::read_to_string(c.work.path().join(name)).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    // Both nodes had their zone while the job ran.
    let zones = file("zones.out");
    for (task, cpu) in [(0, 0), (1, 1)] {
        assert!(
            zones.contains(&format!(
                "{task}:   job {job}: zone slurm-{job} on CPUs {cpu},"
            )),
            "{zones}"
        );
    }
    for (m, expect) in &modes {
        let (native, vm) = (
            file(&format!("native-{m}.out")),
            file(&format!("vm-{m}.out")),
        );
        let vm_err = file(&format!("vm-{m}.err"));
        assert!(
            out.contains(&format!("native-{m}=0\n")),
            "{m}: {out}\n{}",
            file(&format!("native-{m}.err"))
        );
        assert_eq!(&native, expect, "{m} natively");
        if !in_vm {
            continue;
        }
        assert!(out.contains(&format!("vm-{m}=0\n")), "{m}: {out}\n{vm_err}");
        assert_eq!(vm, native, "{m} in VMs; stderr: {vm_err}");
        // One VM per rank, on its node's zone core (n1: CPU 0, n2: CPU 1), zone huge pages.
        for cpu in [0, 1] {
            let summaries: Vec<&str> = vm_err
                .lines()
                .filter(|l| l.contains("dualstack: ") && l.contains(&format!("on cpus [{cpu}]")))
                .collect();
            assert_eq!(summaries.len(), 1, "{m}: rank on CPU {cpu}: {vm_err}");
            assert!(
                summaries[0].contains("exited 0") && summaries[0].contains("hugetlb 2M"),
                "{}",
                summaries[0]
            );
        }
    }
    assert!(c.zones().values().all(Vec::is_empty), "{:?}", c.zones());
}

#[test]
fn mpich_srun_pmi2_job_across_the_two_nodes() {
    let probe = tempfile::tempdir().unwrap();
    if build_mpi_suite(probe.path(), Mpi::Mpich).is_none() {
        return dualstack_testutil::missing("MPICH's libmpich.a (scripts/install-deps)");
    }
    let Some(s) = Session::start(2) else {
        return;
    };
    let prog = build_mpi_suite(s.work.path(), Mpi::Mpich).unwrap();
    // Slurm's pmi2 plugin serves the ranks' PMI (MPICH's PMI-1 client over PMI_FD, which the
    // VMM inherits at the same number); one rank per node.
    mpi_job_across_the_nodes(&s, &prog, "srun --mpi=pmi2 -N2 -n2", "", true);
    s.finish("host after the MPICH job");
}

#[test]
fn open_mpi_mpirun_inside_the_allocation() {
    let probe = tempfile::tempdir().unwrap();
    if build_mpi_suite(probe.path(), Mpi::OpenMpi).is_none() {
        return dualstack_testutil::missing("Open MPI (mpicc.openmpi, mpirun.openmpi)");
    }
    let Some(s) = Session::start(2) else {
        return;
    };
    let prog = build_mpi_suite(s.work.path(), Mpi::OpenMpi).unwrap();
    // mpirun starts rank 0 itself (the batch step on n1) and an orted on n2 through srun,
    // which starts rank 1 there; jobs run as root here. Open MPI sees two hosts (n1, n2):
    // its ranks talk over its TCP BTL, which the VMs serve with the host's interfaces.
    mpi_job_across_the_nodes(
        &s,
        &prog,
        "mpirun.openmpi -np 2 --map-by node",
        "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
        true,
    );
    s.finish("host after the Open MPI job");
}

/// uid and gid of `nobody` here.
const NOBODY: (u32, u32) = (65534, 65534);

#[test]
fn a_job_of_nobody_runs_its_guest_in_its_zone_as_nobody_and_cannot_touch_another() {
    if !spank_plugin().exists() {
        return dualstack_testutil::missing(&format!(
            "the SPANK plugin {} (it hands a user's tasks /dev/kvm): cargo build --release -p dualstack-spank",
            spank_plugin().display()
        ));
    }
    let Some(s) = Session::start(2) else {
        return;
    };
    let c = &*s;
    let hello = c.hello.display().to_string();
    let bin = c.bin.display().to_string();
    // root's job on n1, running while nobody's job tries its zone.
    let other = c.sbatch(
        &["-N1", "-w", "n1", "--comment=dualstack:memory=32M"],
        &format!("srun {bin} run --memory 32M -- {hello} 120"),
    );
    wait_for(
        Duration::from_secs(30),
        "root's zone and guest on n1",
        || c.zones()["n1"].len() == 1 && c.job_output(other).contains("hello from n1"),
    );
    let n1 = c.site().node("n1").unwrap();
    let other_zone = dualstack_slurm::job_record(&n1, other)
        .and_then(|r| r.zone_info)
        .expect("root's job record describes its zone");
    let other_dir = other_zone.cgroup_dir.display().to_string();
    // nobody's job on n2: a directory it may write its output to.
    let dir = c.work.path().join("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let script = format!(
        "id -u\n\
         srun {bin} run --memory 32M --summary -- {hello}; echo own=$?\n\
         srun sh -c 'echo $$ > {other_dir}/cgroup.procs' && echo joined-other || echo refused-join-other\n\
         srun sh -c 'echo 0 > {other_dir}/cpuset.cpus' && echo changed-other || echo refused-change-other\n\
         srun sh -c 'd=$(dirname {other_dir})/slurm-$SLURM_JOB_ID; echo 0-1 > $d/cpuset.cpus' && echo changed-own-cpus || echo refused-own-cpus\n\
         SLURM_JOB_ID={other} SLURMD_NODENAME=n1 {bin} run --memory 32M -- {hello}; echo other-run=$?\n"
    );
    let (uid, gid) = NOBODY;
    let job = c.sbatch_in(
        &dir,
        &[
            &format!("--uid={uid}"),
            &format!("--gid={gid}"),
            "-N1",
            "-w",
            "n2",
            "--comment=dualstack:memory=32M",
        ],
        &script,
    );
    // (n1 stays allocated to root's job: wait for this job and its node only.)
    let mut state = String::new();
    wait_for(Duration::from_secs(90), "nobody's job to end", || {
        state = c.job_state(job);
        !matches!(
            state.as_str(),
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"
        ) && c.nodes()["n2"] == "idle"
    });
    let out = std::fs::read_to_string(dir.join(format!("job-{job}.out"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(out.starts_with(&format!("{uid}\n")), "{out}");
    // Its guest ran in its zone (n2's CPU 1, the zone's huge pages) as nobody, jailed.
    assert!(
        out.contains(&format!("hello from n2 as uid {uid}\n")),
        "{out}"
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("dualstack: ") && l.contains("exited 0"))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert!(
        summary.contains("on cpus [1]")
            && summary.contains("hugetlb 2M")
            && summary.contains(&format!("jail: nobody (uid {uid} gid {gid}")),
        "{summary}"
    );
    assert!(out.contains("own=0\n"), "{out}");
    // Another job's zone is not its to join or change, nor its own zone's CPUs.
    for word in [
        "refused-join-other",
        "refused-change-other",
        "refused-own-cpus",
    ] {
        assert!(out.contains(word), "{word}: {out}");
    }
    // Pretending to be the other job's step is refused by name.
    assert!(
        out.contains(&format!(
            "zone slurm-{other} belongs to uid 0, this step runs as uid {uid}"
        )),
        "{out}"
    );
    assert!(out.contains("other-run=1\n"), "{out}");
    // Root's job was untouched: its guest still runs in its zone.
    assert_eq!(c.job_state(other), "RUNNING");
    assert_eq!(cpus_file(&other_zone.cgroup_dir), other_zone.cpus.to_list());
    c.ok("scancel", &[&other.to_string()]);
    assert_eq!(c.wait_done(other), "CANCELLED");
    assert!(c.zones().values().all(Vec::is_empty), "{:?}", c.zones());
    s.finish("host after nobody's job");
}
