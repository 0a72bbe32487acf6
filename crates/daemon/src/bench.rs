//! `dualstack bench api`: what the control plane costs, measured side by side in one run.
//!
//! - Job submission to the guest's first instruction, through the API (`POST /v1/jobs` ->
//!   supervisor -> `dualstack run`) and with `dualstack run` directly, both in the same zone.
//!   The guest reads `CLOCK_REALTIME` first thing in `main` (through the vDSO: no VM exit) and
//!   prints it; the latency is that minus the wall clock just before the request (or the
//!   spawn).
//! - A zone `PUT` + `DELETE` round trip through the API (1 core, 32 MiB of huge pages).
//! - `GET /v1/node` requests per second with N concurrent clients (a new connection per
//!   request, like curl).
//!
//! The bench starts its own daemon on a temporary socket over the given state directory and
//! stops it (by pid) at the end; it needs root (zones) and gcc (the guest is compiled here).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How to run the bench.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `dualstack` binary (the daemon and the direct runs).
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    /// Repetitions of each latency.
    pub reps: usize,
    /// Concurrent clients of the `GET /v1/node` load.
    pub clients: usize,
    /// Seconds of that load.
    pub seconds: f64,
    /// Scratch directory (guest, socket, logs); removed by the caller.
    pub scratch: PathBuf,
}

/// What was measured (milliseconds unless named otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub reps: usize,
    pub submit_api_ms: Vec<f64>,
    pub submit_cli_ms: Vec<f64>,
    pub zone_round_trip_ms: Vec<f64>,
    /// Where the time of a submission goes: each launch phase (see
    /// [`dualstack_jobs::trace`]) as the median ms after the submission, in order; a phase
    /// met twice (two `dualstack` starts) is named `phase#2`.
    pub phases_api: Vec<(String, f64)>,
    pub phases_cli: Vec<(String, f64)>,
    pub node_clients: usize,
    pub node_seconds: f64,
    pub node_requests: u64,
    pub node_errors: u64,
    pub node_requests_per_s: f64,
}

/// Errors of the bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Http {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

pub use crate::client::request;

fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    want: &[u16],
) -> Result<serde_json::Value, BenchError> {
    let (status, bytes) =
        request(socket, method, path, body).map_err(io(format!("{method} {path}")))?;
    if !want.contains(&status) {
        return Err(BenchError::Http {
            method: method.into(),
            path: path.into(),
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const GUEST: &str = r#"#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%lld.%09ld\n", (long long)t.tv_sec, t.tv_nsec);
    return 0;
}
"#;

/// The daemon this bench started, stopped (SIGTERM, then SIGKILL) by its pid on drop, and
/// the zones it made, released.
struct Started {
    child: Child,
    socket: PathBuf,
    zones: Vec<String>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for z in std::mem::take(&mut self.zones) {
            let _ = request(&self.socket, "DELETE", &format!("/v1/zones/{z}"), None);
        }
        // SAFETY: signalling the daemon this bench started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(o: &Options) -> Result<Started, BenchError> {
    let socket = o.scratch.join("api.sock");
    let log = o.scratch.join("daemon.log");
    let child = Command::new(&o.exe)
        .arg("--state-dir")
        .arg(&o.state_dir)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .env(dualstack_jobs::trace::ENV, o.scratch.join("api.trace"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(io("creating the daemon log"))?)
        .spawn()
        .map_err(io(format!("starting {} daemon", o.exe.display())))?;
    let mut d = Started {
        child,
        socket,
        zones: Vec::new(),
    };
    let t = Instant::now();
    while UnixStream::connect(&d.socket).is_err() {
        if let Ok(Some(st)) = d.child.try_wait() {
            return Err(BenchError::Setup(format!(
                "the daemon exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(BenchError::Setup(
                "the daemon did not come up in 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(d)
}

fn guest_time(out: &[u8]) -> Result<f64, BenchError> {
    let text = String::from_utf8_lossy(out);
    text.trim()
        .parse()
        .map_err(|_| BenchError::Setup(format!("the guest printed {text:?}, not its start time")))
}

/// Run the bench; `progress` gets a line per phase.
pub fn run(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    std::fs::create_dir_all(&o.scratch).map_err(io("creating the scratch directory"))?;
    let src = o.scratch.join("first.c");
    std::fs::write(&src, GUEST).map_err(io("writing the guest"))?;
    let prog = o.scratch.join("first");
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .map_err(io("running gcc (needed to build the guest)"))?;
    if !st.success() {
        return Err(BenchError::Setup(format!("gcc -static failed: {st}")));
    }
    let mut d = start_daemon(o)?;
    let sock = d.socket.clone();
    let reps = o.reps.max(1);
    let zone = r#"{"cpus": 1, "memory": "32M"}"#;

    progress("zone PUT + DELETE round trips");
    let mut zone_rt = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        d.zones.push("bench-rt".into());
        call(&sock, "PUT", "/v1/zones/bench-rt", Some(zone), &[201])?;
        call(&sock, "DELETE", "/v1/zones/bench-rt", None, &[200])?;
        d.zones.pop();
        zone_rt.push(t.elapsed().as_secs_f64() * 1e3);
    }

    progress("job submission -> first guest instruction (API and dualstack run, alternating)");
    d.zones.push("bench-api".into());
    call(&sock, "PUT", "/v1/zones/bench-api", Some(zone), &[201, 200])?;
    let spec = serde_json::json!({
        "program": prog.display().to_string(),
        "zone": "bench-api",
    })
    .to_string();
    let (mut api, mut cli) = (Vec::new(), Vec::new());
    let (api_trace, cli_trace) = (o.scratch.join("api.trace"), o.scratch.join("cli.trace"));
    let (mut phases_api, mut phases_cli) = (Phases::default(), Phases::default());
    let paths = dualstack_zones::HostPaths::from_env(&o.state_dir).ok();
    // Each start begins with the zone's warm memory idle: the run before hands its extent to
    // a background zeroer, and a start that waited for it would measure the zeroing, not the
    // launch (and favour whichever path came later after the previous run).
    let settle = || {
        let t = Instant::now();
        while let Some(p) = &paths {
            match dualstack_zones::memory::extents(p, "bench-api") {
                Ok(e) if !e.is_empty() && t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
    };
    for _ in 0..reps {
        settle();
        let _ = std::fs::remove_file(&api_trace);
        let _ = std::fs::remove_file(&cli_trace);
        let t0 = now_unix();
        let j = call(&sock, "POST", "/v1/jobs", Some(&spec), &[202])?;
        let id = j["id"].as_i64().unwrap_or(0);
        let job = loop {
            let j = call(&sock, "GET", &format!("/v1/jobs/{id}"), None, &[200])?;
            let state = j["state"].as_str().unwrap_or("");
            if ["succeeded", "failed", "cancelled", "lost"].contains(&state) {
                break j;
            }
            // Not faster: 200 polls a second would compete with the launch for the node's
            // cores and be measured as API overhead (the latency is the guest's own clock).
            std::thread::sleep(Duration::from_millis(50));
        };
        if job["state"] != "succeeded" {
            return Err(BenchError::Setup(format!(
                "the API job did not succeed: {job}"
            )));
        }
        let (_, out) = request(&sock, "GET", &format!("/v1/jobs/{id}/output"), None)
            .map_err(io("reading the job's output"))?;
        let guest = guest_time(&out)?;
        api.push((guest - t0) * 1e3);
        phases_api.add(&api_trace, t0, guest);

        settle();
        let t0 = now_unix();
        let out = Command::new(&o.exe)
            .arg("--state-dir")
            .arg(&o.state_dir)
            .args(["run", "--clear-env", "--zone", "bench-api", "--root"])
            .env(dualstack_jobs::trace::ENV, &cli_trace)
            .arg(&o.scratch)
            .arg("--")
            .arg(&prog)
            .stdin(Stdio::null())
            .output()
            .map_err(io("running dualstack run"))?;
        if !out.status.success() {
            return Err(BenchError::Setup(format!(
                "dualstack run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let guest = guest_time(&out.stdout)?;
        cli.push((guest - t0) * 1e3);
        phases_cli.add(&cli_trace, t0, guest);
    }
    call(&sock, "DELETE", "/v1/zones/bench-api", None, &[200])?;
    d.zones.pop();

    progress(&format!(
        "GET /v1/node with {} concurrent clients for {:.0} s",
        o.clients, o.seconds
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let threads: Vec<_> = (0..o.clients.max(1))
        .map(|_| {
            let (stop, done, errors, sock) =
                (stop.clone(), done.clone(), errors.clone(), sock.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match request(&sock, "GET", "/v1/node", None) {
                        Ok((200, _)) => done.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(o.seconds.max(0.1)));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    let secs = t.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    drop(d);
    Ok(Report {
        reps,
        submit_api_ms: api,
        submit_cli_ms: cli,
        zone_round_trip_ms: zone_rt,
        phases_api: phases_api.medians(),
        phases_cli: phases_cli.medians(),
        node_clients: o.clients.max(1),
        node_seconds: secs,
        node_requests: n,
        node_errors: errors.load(Ordering::Relaxed),
        node_requests_per_s: n as f64 / secs,
    })
}

/// Launch phases of each repetition, ms after the submission.
#[derive(Default)]
struct Phases {
    order: Vec<String>,
    ms: std::collections::BTreeMap<String, Vec<f64>>,
}

impl Phases {
    fn add(&mut self, trace: &Path, t0: f64, guest: f64) {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let marks = dualstack_jobs::trace::read(trace);
        for (phase, t) in marks.into_iter().chain([("guest".to_string(), guest)]) {
            let n = seen.entry(phase.clone()).or_default();
            *n += 1;
            let name = if *n == 1 {
                phase
            } else {
                format!("{phase}#{n}")
            };
            if !self.order.contains(&name) {
                self.order.push(name.clone());
            }
            self.ms.entry(name).or_default().push((t - t0) * 1e3);
        }
    }

    fn medians(&self) -> Vec<(String, f64)> {
        self.order
            .iter()
            .map(|p| (p.clone(), median(&self.ms[p])))
            .collect()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let (a, c) = (median(&r.submit_api_ms), median(&r.submit_cli_ms));
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.1}..{hi:.1}")
    };
    format!(
        "dualstack bench api ({} repetitions each, medians; side by side in one run)\n\
         job submission -> first guest instruction, in a 1-core zone:\n\
         \x20 through the API (POST /v1/jobs)  {a:8.1} ms  (range {})\n\
         \x20 dualstack run directly           {c:8.1} ms  (range {})\n\
         \x20 API overhead                     {:+8.1} ms  ({:.2}x)\n\
         zone PUT + DELETE round trip (1 core, 32 MiB huge pages): {:.1} ms  (range {})\n\
         GET /v1/node with {} concurrent clients: {:.0} requests/s ({} in {:.1} s, {} errors)\n",
        r.reps,
        range(&r.submit_api_ms),
        range(&r.submit_cli_ms),
        a - c,
        a / c,
        median(&r.zone_round_trip_ms),
        range(&r.zone_round_trip_ms),
        r.node_clients,
        r.node_requests_per_s,
        r.node_requests,
        r.node_seconds,
        r.node_errors,
    ) + &phases(r)
}

/// The launch phases side by side: ms after the submission, and the step from the phase before.
fn phases(r: &Report) -> String {
    let mut out = String::from("where the time goes (median ms after submission; +step):\n");
    for (title, list) in [("API", &r.phases_api), ("dualstack run", &r.phases_cli)] {
        out.push_str(&format!("  {title}:\n"));
        let mut prev = 0.0;
        for (p, ms) in list.iter() {
            out.push_str(&format!("    {p:24} {ms:7.1}  (+{:.1})\n", ms - prev));
            prev = *ms;
        }
    }
    out
}
