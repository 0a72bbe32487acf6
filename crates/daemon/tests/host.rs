//! The daemon on the real host (its cpusets and huge page pools, /dev/kvm): a real daemon on a
//! temporary socket and state dir creates a real 1-core zone, runs real HPC guest jobs (static C
//! programs compiled here) through `POST /v1/jobs`, reads their output and statistics, cancels
//! one (SIGTERM; SIGKILL after the grace period when the run ignores SIGTERM), checks what
//! `nobody` may do (peer credentials), survives `kill -9` of itself while a job runs, and
//! releases the zone. Afterwards the host is exactly as before: huge page pool, no cgroup of
//! ours, no process of ours.
//!
//! Needs root, /dev/kvm, gcc, setpriv, curl and the `dualstack` binary (`cargo build --release
//! -p dualstack`). Each test holds the host lock (/tmp/dualstack-host.lock) while it runs: do
//! not wrap it in `flock` yourself. IRQ affinities and the workqueue mask are fake files (never
//! the machine's own).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dualstack_testutil::{have_kvm, have_tool, is_root, missing};
use serde_json::{json, Value};

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

fn pool() -> u64 {
    std::fs::read_to_string(POOL)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The daemon on the real host, under a cgroup instance of its own, with fake IRQ and
/// workqueue files.
fn host_env(root: &Path) -> Vec<(String, String)> {
    let irq = root.join("irq");
    for (n, aff) in [("1", "0-1"), ("2", "1")] {
        std::fs::create_dir_all(irq.join(n)).unwrap();
        std::fs::write(irq.join(n).join("smp_affinity_list"), aff).unwrap();
    }
    let wq = root.join("wq_cpumask");
    std::fs::write(&wq, "00000003\n").unwrap();
    vec![
        (
            "DUALSTACK_INSTANCE".into(),
            format!("dualstack-test-{}-api", std::process::id()),
        ),
        ("DUALSTACK_IRQ_DIR".into(), irq.display().to_string()),
        (
            "DUALSTACK_WORKQUEUE_CPUMASK".into(),
            wq.display().to_string(),
        ),
    ]
}

/// Everything a test changed on the host, put back whatever happens: job processes (by the
/// pids their supervisors recorded), the daemon (by its pid), zones (released through the CLI,
/// which also recovers), the instance cgroup, the huge page pool.
struct Restore {
    daemon: Daemon,
    pool_before: u64,
    instance: PathBuf,
    _lock: HostLock,
}

impl Restore {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--state-dir").arg(&self.daemon.state).args(args);
        for (k, v) in &self.daemon.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Signal every job process this daemon started (supervisors and runs, recorded with their
    /// start times) that still runs.
    fn kill_jobs(&self) {
        let Ok(dirs) = std::fs::read_dir(self.daemon.state.join("jobs")) else {
            return;
        };
        for d in dirs.filter_map(Result::ok) {
            for f in ["run.pid", "supervisor.pid"] {
                let Ok(text) = std::fs::read_to_string(d.path().join(f)) else {
                    continue;
                };
                let mut it = text.split_whitespace();
                let (Some(pid), Some(start)) = (it.next(), it.next()) else {
                    continue;
                };
                let (pid, start): (u32, u64) = (pid.parse().unwrap(), start.parse().unwrap());
                if dualstack_daemon::proc::alive(pid, start) {
                    // SAFETY: a process group this test's daemon started (pid + start time).
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                    // SAFETY: as above, the process itself.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.daemon.kill9();
        self.kill_jobs();
        std::thread::sleep(Duration::from_millis(200));
        let out = self.cli(&["zone", "list", "--json"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            for z in v.as_array().into_iter().flatten() {
                if let Some(n) = z["name"].as_str() {
                    let _ = self.cli(&["zone", "release", n]);
                }
            }
        }
        let _ = self.cli(&["recover"]);
        let _ = std::fs::remove_dir(self.instance.join("commodity"));
        let _ = std::fs::remove_dir(&self.instance);
        if pool() != self.pool_before {
            eprintln!(
                "restoring {POOL} to {} (it is {})",
                self.pool_before,
                pool()
            );
            let _ = std::fs::write(POOL, self.pool_before.to_string());
        }
    }
}

fn cgroup_root() -> PathBuf {
    // The instance lives under the cpuset root: v2 is /sys/fs/cgroup, v1 the cpuset mount.
    for p in ["/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/cpuset"] {
        let p = Path::new(p);
        if p.exists() {
            return if p.is_dir() {
                p.to_path_buf()
            } else {
                p.parent().unwrap().to_path_buf()
            };
        }
    }
    PathBuf::from("/sys/fs/cgroup")
}

/// Everything the host tests need, or why not.
fn prerequisites() -> Result<(), &'static str> {
    if !is_root() {
        return Err("needs root");
    }
    if !have_kvm() {
        return Err("needs /dev/kvm");
    }
    if !Path::new(POOL).exists() {
        return Err("needs a 2 MiB huge page pool");
    }
    for (t, a) in [
        ("gcc", "--version"),
        ("setpriv", "--version"),
        ("curl", "--version"),
    ] {
        if !have_tool(t, a) {
            return Err("needs gcc, setpriv and curl");
        }
    }
    Ok(())
}

fn start(extra: &[&str]) -> Option<Restore> {
    if let Err(what) = prerequisites() {
        missing(what);
        return None;
    }
    let lock = host_lock();
    let mut d = Daemon::new(host_env);
    d.extra = extra.iter().map(|s| s.to_string()).collect();
    let instance = cgroup_root().join(&d.env[0].1);
    let r = Restore {
        pool_before: pool(),
        daemon: d,
        instance,
        _lock: lock,
    };
    let mut r = r;
    r.daemon.start();
    Some(r)
}

/// Static test guests, compiled into `dir` (world-readable, for `nobody`).
fn guests(dir: &Path) -> (PathBuf, PathBuf) {
    let hello = dualstack_testutil::guest::build_c_text(
        r#"#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from the guest, %d args:", argc - 1);
    for (int i = 1; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    fprintf(stderr, "to stderr\n");
    return argc == 3 ? 7 : 0;
}"#,
        &dir.join("hello"),
        &[],
    );
    // Runs for the given seconds (reading the clock: few exits), saying when it started and
    // ended; a SIGTERM handler says it was asked to stop, or `spin SECS ignore-term` ignores it
    // (cancel must escalate to SIGKILL).
    let spin = dualstack_testutil::guest::build_c(
        &dualstack_testutil::guest::source("spin.c"),
        &dir.join("spin"),
        &["-DCATCH_SIGTERM"],
    );
    (hello, spin)
}

fn job(d: &Daemon, spec: Value) -> i64 {
    let (s, j) = d.json("POST", "/v1/jobs", Some(&spec.to_string()));
    assert_eq!(s, 202, "{j}");
    j["id"].as_i64().unwrap()
}

fn ended(d: &Daemon, id: i64, secs: u64) -> Value {
    wait_for(secs, || {
        let (_, j) = d.json("GET", &format!("/v1/jobs/{id}"), None);
        j["state"]
            .as_str()
            .is_some_and(|s| ["succeeded", "failed", "cancelled", "lost"].contains(&s))
            .then_some(j)
    })
}

fn running(d: &Daemon, id: i64) -> Value {
    wait_for(60, || {
        let (_, j) = d.json("GET", &format!("/v1/jobs/{id}"), None);
        let out = d.req("GET", &format!("/v1/jobs/{id}/output"), None).text();
        (j["state"] == "running" && out.contains("spinning")).then_some(j)
    })
}

/// `curl` over the socket as user `nobody` (setpriv drops every privilege first).
fn as_nobody(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
        "curl",
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
    ])
    .arg(socket)
    .args(["-X", method]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    cmd.arg(format!("http://localhost{path}"));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Whether this `dualstack run` can run a job as another user (the jail's `--user`).
fn run_has_user() -> bool {
    let out = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("--user")
}

#[test]
fn zone_jobs_output_stats_cancel_and_nobody_on_the_real_host() {
    let Some(r) = start(&[]) else { return };
    let d = &r.daemon;
    let dir = d.tmp.path().join("guests");
    std::fs::create_dir_all(&dir).unwrap();
    let (hello, spin) = guests(&dir);
    let pool0 = pool();

    // A real zone: one whole core, 64 MiB of huge pages.
    let (s, z) = d.json(
        "PUT",
        "/v1/zones/hpc0",
        Some(r#"{"cpus": 1, "memory": "64M"}"#),
    );
    assert_eq!(s, 201, "{z}\n{}", d.log());
    assert_eq!(z["state"], "active");
    assert_eq!(pool(), pool0 + 32, "the zone's 32 huge pages");
    let zone_dir = r.instance.join("zone-hpc0");
    assert!(zone_dir.is_dir());
    let (_, node) = d.json("GET", "/v1/node", None);
    assert_eq!(node["zones"][0]["name"], "hpc0", "{node}");

    // A job in it: output, exit status, statistics.
    let t = Instant::now();
    let id = job(
        d,
        json!({"program": hello, "args": ["a", "b"], "zone": "hpc0"}),
    );
    let j = ended(d, id, 60);
    eprintln!(
        "hello job: {:.0} ms submit -> ended",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(j["state"], "failed", "exit 7 is a failure: {j}");
    assert_eq!(j["exit_status"], 7, "{j}");
    let out = d.req("GET", &format!("/v1/jobs/{id}/output"), None).text();
    assert_eq!(out, "hello from the guest, 2 args: a b\n");
    let err = d
        .req("GET", &format!("/v1/jobs/{id}/output?stream=stderr"), None)
        .text();
    assert!(err.contains("to stderr"), "{err}");
    let stats = &j["stats"];
    assert_eq!(stats["exit_status"], 7, "{j}");
    assert!(stats["exits_total"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["syscalls_total"].as_u64().unwrap() > 0, "{stats}");
    let id0 = job(d, json!({"program": hello, "zone": "hpc0"}));
    assert_eq!(ended(d, id0, 60)["state"], "succeeded");

    // Followed output streams until the job ends.
    let id1 = job(d, json!({"program": spin, "args": ["1"], "zone": "hpc0"}));
    let followed = d
        .req("GET", &format!("/v1/jobs/{id1}/output?follow=1"), None)
        .text();
    assert_eq!(followed, "spinning 1.0 s\ndone\n");
    assert_eq!(ended(d, id1, 30)["state"], "succeeded");

    // Cancel: SIGTERM to the run; the guest's handler runs once the VMM delivers signals,
    // otherwise the run ends by the signal. Either way the job is cancelled and the zone's
    // cgroup is empty again.
    let id2 = job(d, json!({"program": spin, "args": ["60"], "zone": "hpc0"}));
    let j = running(d, id2);
    let run_pid = wait_for(10, || {
        let (_, j) = d.json("GET", &format!("/v1/jobs/{id2}"), None);
        j["run_pid"].as_u64()
    });
    let procs = std::fs::read_to_string(zone_dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.split_whitespace().any(|p| p == run_pid.to_string()),
        "the run is in the zone's cgroup: {procs} {j}"
    );
    let t = Instant::now();
    let (s, c) = d.json("DELETE", &format!("/v1/jobs/{id2}"), None);
    assert_eq!(s, 202, "{c}");
    let j = ended(d, id2, 30);
    let took = t.elapsed();
    assert_eq!(j["state"], "cancelled", "{j}");
    let status = j["exit_status"].as_i64().unwrap();
    let out = d.req("GET", &format!("/v1/jobs/{id2}/output"), None).text();
    assert!(
        status == 143 || (status == 42 && out.contains("guest got SIGTERM")),
        "ended by SIGTERM (143) or the guest's handler (42): {j} {out}"
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM ends it at once: {took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(zone_dir.join("cgroup.procs"))
            .unwrap()
            .trim(),
        ""
    );

    // nobody: reads the node, may not touch zones or root's jobs, sees only their own jobs.
    let sock = &d.socket;
    assert_eq!(as_nobody(sock, "GET", "/v1/node", None).0, 200);
    let (s, e) = as_nobody(
        sock,
        "PUT",
        "/v1/zones/mine",
        Some(r#"{"cpus": 1, "memory": "64M"}"#),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(as_nobody(sock, "DELETE", "/v1/zones/hpc0", None).0, 403);
    assert_eq!(
        as_nobody(sock, "GET", &format!("/v1/jobs/{id}"), None).0,
        403
    );
    assert_eq!(
        as_nobody(sock, "GET", &format!("/v1/jobs/{id}/output"), None).0,
        403
    );
    let (s, e) = as_nobody(sock, "DELETE", &format!("/v1/jobs/{id2}"), None);
    assert_eq!((s, &e["field"]), (403, &json!("id")), "{e}");
    assert_eq!(as_nobody(sock, "GET", "/v1/jobs", None), (200, json!([])));
    let (s, e) = as_nobody(
        sock,
        "POST",
        "/v1/jobs",
        Some(
            &json!({"program": spin, "args": ["30"], "memory": "32M", "user": "root"}).to_string(),
        ),
    );
    assert_eq!((s, &e["field"]), (403, &json!("user")), "not as root: {e}");
    let spec = json!({"program": spin, "args": ["30"], "zone": "hpc0"}).to_string();
    let (s, j) = as_nobody(sock, "POST", "/v1/jobs", Some(&spec));
    if run_has_user() {
        // The jail runs it as nobody; nobody watches and cancels it.
        assert_eq!(s, 202, "{j}");
        let nid = j["id"].as_i64().unwrap();
        assert_eq!(j["owner"], "nobody");
        running(d, nid);
        let (_, mine) = as_nobody(sock, "GET", "/v1/jobs", None);
        assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
        let (s, c) = as_nobody(sock, "DELETE", &format!("/v1/jobs/{nid}"), None);
        assert_eq!(s, 202, "{c}");
        assert_eq!(ended(d, nid, 30)["state"], "cancelled");
    } else {
        // Without the jail a non-root job would run as root: refused, naming the field.
        assert_eq!((s, &j["field"]), (403, &json!("user")), "{j}");
        assert!(j["error"].as_str().unwrap().contains("--user"), "{j}");
    }
    // `dualstack --api SOCKET run` is the same run through the daemon: same output, same exit.
    let root = dir.display().to_string();
    let hello_s = hello.display().to_string();
    let run_args = [
        "run", "--zone", "hpc0", "--root", &root, "--", &hello_s, "a", "b",
    ];
    let local = r.cli(&run_args);
    let mut api_args = vec!["--api", sock.to_str().unwrap()];
    api_args.extend(run_args);
    let via = r.cli(&api_args);
    assert_eq!(local.status.code(), Some(7), "{local:?}");
    assert_eq!(via.status.code(), Some(7), "{via:?}");
    assert_eq!(
        String::from_utf8_lossy(&via.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&via.stderr),
        String::from_utf8_lossy(&local.stderr)
    );
    for args in [
        &["zone", "list"][..],
        &["zone", "show", "hpc0"],
        &["zone", "list", "--json"],
    ] {
        let local = r.cli(args);
        let mut a = vec!["--api", sock.to_str().unwrap()];
        a.extend(args);
        let via = r.cli(&a);
        assert!(
            local.status.success() && via.status.success(),
            "{args:?}: {via:?}"
        );
        assert_eq!(via.stdout, local.stdout, "{args:?}");
    }
    let e = r.cli(&["--api", sock.to_str().unwrap(), "zone", "release", "hpc0"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("only `zone list` and `zone show`"));

    // Root sees every job; nothing changed for root's.
    let (_, all) = d.json("GET", "/v1/jobs", None);
    assert!(all.as_array().unwrap().len() >= 4, "{all}");

    // Release: the pages and the cgroups go.
    let (s, rel) = d.json("DELETE", "/v1/zones/hpc0", None);
    assert_eq!(s, 200, "{rel}");
    assert_eq!(pool(), pool0);
    assert!(!r.instance.exists(), "instance cgroup left behind");
    let m = d.req("GET", "/metrics", None).text();
    // The cancelled 60 s job, and nobody's own job when the jail runs it as nobody.
    let cancelled = if run_has_user() { 2 } else { 1 };
    assert!(
        m.contains(&format!(
            "dualstack_jobs{{state=\"cancelled\"}} {cancelled}"
        )),
        "{m}"
    );

    // Without a zone the run reserves its huge page shortfall and gives it back; with
    // `zone: auto` it carves a transient zone sized to the job and releases it.
    let id = job(d, json!({"program": hello, "memory": "32M"}));
    let j = ended(d, id, 60);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(pool(), pool0, "the shortfall was given back");
    let id = job(
        d,
        json!({"program": hello, "zone": "auto", "cpus": 1, "memory": "32M"}),
    );
    let j = ended(d, id, 60);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["stats"]["cpus"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["stats"]["memory"]["size_bytes"], 32 << 20, "{j}");
    assert_eq!(d.json("GET", "/v1/zones", None).1, json!([]));
    assert_eq!(pool(), pool0);
    assert!(!r.instance.exists(), "instance cgroup left behind");
}

#[test]
fn cancel_escalates_to_sigkill_and_a_killed_daemon_reattaches_on_the_real_host() {
    // A run that ignores SIGTERM (the guest ignores it, and the `dualstack` wrapper too, as a
    // VMM stuck in the kernel would): cancel must end it with SIGKILL after the grace
    // period (1 s here).
    let Some(mut r) = start(&[]) else { return };
    let wrapper = r.daemon.tmp.path().join("dualstack-ignoring-sigterm");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\ntrap '' TERM\nexec {} \"$@\"\n", bin().display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    r.daemon.stop();
    r.daemon.extra = vec!["--dualstack".into(), wrapper.display().to_string()];
    r.daemon.start();
    let d = &r.daemon;
    let dir = d.tmp.path().join("guests");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, spin) = guests(&dir);
    let pool0 = pool();
    let (s, z) = d.json(
        "PUT",
        "/v1/zones/hpc1",
        Some(r#"{"cpus": 1, "memory": "32M"}"#),
    );
    assert_eq!(s, 201, "{z}\n{}", d.log());

    let id = job(
        d,
        json!({"program": spin, "args": ["60", "ignore-term"], "zone": "hpc1"}),
    );
    running(d, id);
    let t = Instant::now();
    assert_eq!(d.json("DELETE", &format!("/v1/jobs/{id}"), None).0, 202);
    let j = ended(d, id, 30);
    let took = t.elapsed();
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(
        (j["exit_status"].clone(), j["signal"].clone()),
        (json!(137), json!(9)),
        "SIGKILL: {j}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "only after the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // kill -9 of the daemon while a job runs: the job keeps running, the restarted daemon
    // re-attaches and records its result; the zone is still there and intact.
    let id = job(d, json!({"program": spin, "args": ["4"], "zone": "hpc1"}));
    let before = running(d, id);
    let sup = before["pid"].as_u64().unwrap() as u32;
    r.daemon.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        Path::new(&format!("/proc/{sup}")).exists(),
        "the job's supervisor outlives the daemon"
    );
    r.daemon.start();
    let d = &r.daemon;
    let (_, j) = d.json("GET", &format!("/v1/jobs/{id}"), None);
    assert!(
        j["state"] == "running" || j["state"] == "succeeded",
        "re-attached, not lost: {j}"
    );
    let j = ended(d, id, 60);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        d.req("GET", &format!("/v1/jobs/{id}/output"), None).text(),
        "spinning 4.0 s\ndone\n"
    );
    assert_eq!(j["stats"]["exit_status"], 0, "{j}");

    // kill -9 of the daemon and of the job's supervisor and run: the restarted daemon records
    // the job as lost, with the reason, and the zone can be released (its cgroup is empty).
    let id = job(
        d,
        json!({"program": spin, "args": ["60", "ignore-term"], "zone": "hpc1"}),
    );
    let j = running(d, id);
    let (sup, run) = (
        j["pid"].as_u64().unwrap() as i32,
        wait_for(10, || {
            d.json("GET", &format!("/v1/jobs/{id}"), None).1["run_pid"].as_u64()
        }) as i32,
    );
    r.daemon.kill9();
    // SAFETY: the job's processes, started by this test's daemon a moment ago.
    unsafe {
        libc::kill(-run, libc::SIGKILL);
        libc::kill(sup, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(300));
    r.daemon.start();
    let d = &r.daemon;
    let j = ended(d, id, 10);
    assert_eq!(j["state"], "lost", "{j}");
    assert!(j["reason"].as_str().unwrap().contains("supervisor"), "{j}");
    let (s, z) = d.json("GET", "/v1/zones/hpc1", None);
    assert_eq!((s, &z["state"]), (200, &json!("active")), "{z}");
    // The killed run's jailed VMM child dies with it (parent-death signal) a moment later;
    // until then the zone refuses release because its memory is still claimed.
    wait_for(10, || {
        let (s, rel) = d.json("DELETE", "/v1/zones/hpc1", None);
        (s == 200).then_some(rel)
    });
    assert_eq!(pool(), pool0);
    assert!(!r.instance.exists(), "instance cgroup left behind");

    // A transient zone whose run had to be SIGKILLed (it could not release the zone itself):
    // the job's supervisor gives it back before the result is recorded.
    let id = job(
        d,
        json!({"program": spin, "args": ["60", "ignore-term"], "zone": "auto", "memory": "32M"}),
    );
    running(d, id);
    let (_, zones) = d.json("GET", "/v1/zones", None);
    assert_eq!(zones.as_array().unwrap().len(), 1, "{zones}");
    assert!(zones[0]["name"].as_str().unwrap().starts_with("auto-"));
    assert_eq!(d.json("DELETE", &format!("/v1/jobs/{id}"), None).0, 202);
    let j = ended(d, id, 30);
    assert_eq!(
        (j["state"].clone(), j["exit_status"].clone()),
        (json!("cancelled"), json!(137)),
        "{j}"
    );
    assert_eq!(d.json("GET", "/v1/zones", None).1, json!([]));
    assert_eq!(pool(), pool0);
    assert!(!r.instance.exists(), "instance cgroup left behind");
}
