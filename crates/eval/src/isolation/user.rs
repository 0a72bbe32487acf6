//! One run of a user program ([`super::program::UserProgram`]) in one configuration.
//!
//! Every run gets a fresh copy of the program's files in its own run directory and starts
//! there. Natively the command (behind its MPI launcher, if any) runs pinned to the zone's cores
//! inside the zone's cpuset; in a VM configuration each process of the program is
//! `dualstack run --root / ... -- COMMAND` (so `LAUNCHER dualstack run ... -- PROGRAM` gives one
//! VM per rank). The whole run is its own process group: `--run-timeout` and Ctrl-C end the
//! group (every rank, every VM) and the run is only over once no member is left.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::interrupt;
use super::plan::{Config, Plan, RunKey};
use super::program::UserProgram;
use super::record::RunRecord;
use super::runner::{new_record, RunContext};

/// Error prefix of a run whose answer was right but whose figure regex did not match: the
/// harness refuses the program at its first run instead of repeating it.
pub const FIGURE_NO_MATCH: &str = "figure not found: ";

/// Whether `rec` failed only because its figure regex did not match.
pub fn figure_never_matched(rec: &RunRecord) -> bool {
    rec.error
        .as_deref()
        .is_some_and(|e| e.starts_with(FIGURE_NO_MATCH))
}

struct Finished {
    status: i32,
    wall_s: f64,
    stdout: String,
    stderr: String,
    timed_out: bool,
    interrupted: bool,
}

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// The argv (program first) of one run of `p` in `config`.
fn command(
    ctx: &RunContext,
    plan: &Plan,
    p: &UserProgram,
    config: Config,
    stats: &Path,
) -> Result<Vec<String>, String> {
    let cores = plan.zone_cores;
    let mut argv = p.launcher_argv(cores).map_err(|e| e.to_string())?;
    let prog = p.argv(cores).map_err(|e| e.to_string())?;
    let timeout = format!("{}", ctx.timeout.as_secs_f64());
    let memory = (plan.memory_bytes / u64::from(p.ranks())) >> 20 << 20;
    let vm = |extra: Vec<String>| -> Result<Vec<String>, String> {
        let exe = ctx.dualstack_exe.as_ref().ok_or(
            "no dualstack executable to run the program's VMs with (Options::dualstack_exe)",
        )?;
        let mut v = vec![
            exe.display().to_string(),
            "run".into(),
            "--root".into(),
            "/".into(),
            "--timeout".into(),
            timeout.clone(),
            "--memory".into(),
            memory.to_string(),
        ];
        if p.launcher.is_none() {
            v.extend(["--stats".into(), stats.display().to_string()]);
        }
        v.extend(extra);
        v.push("--".into());
        Ok(v)
    };
    match config {
        Config::Native | Config::NativeThp => {}
        Config::DualStack => argv.extend(vm(vec!["--zone".into(), ctx.zone.name.clone()])?),
        Config::SingleStack => {
            let allowed = dualstack_hpcvmm::host_affinity().unwrap_or_default();
            let cpus: Vec<String> = ctx
                .all_cpus
                .iter()
                .filter(|c| allowed.is_empty() || allowed.contains(c))
                .map(|c| c.to_string())
                .collect();
            argv.extend(vm(vec![
                "--cpuset-cpus".into(),
                cpus.join(","),
                "--memory-backing".into(),
                "lazy".into(),
                "--guest-pages".into(),
                "4K".into(),
                "--no-pin".into(),
            ])?);
        }
        Config::Kvm => return Err(super::runner::KVM_NOT_BUILT.into()),
    }
    argv.extend(prog);
    Ok(argv)
}

/// Sends `sig` to process group `pgid`; false once the group is gone.
fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill has no memory preconditions; a negative pid names the process group we
    // created for this run (setpgid in the child), so only its members are signalled.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Ends every process of the run's group: SIGTERM, then SIGKILL after a grace period. Reaps
/// the leader (our child) meanwhile, since a zombie still counts as a member; returns its exit
/// status once no member is left (or an error after 10 s, saying so).
fn end_group(
    child: &mut std::process::Child,
    pgid: i32,
) -> Result<std::process::ExitStatus, String> {
    signal_group(pgid, libc::SIGTERM);
    let t = Instant::now();
    let mut status = None;
    loop {
        if status.is_none() {
            status = child
                .try_wait()
                .map_err(|e| format!("waiting for process {pgid}: {e}"))?;
        }
        match status {
            Some(s) if !signal_group(pgid, 0) => return Ok(s),
            _ => {}
        }
        if t.elapsed() > Duration::from_secs(3) {
            signal_group(pgid, libc::SIGKILL);
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "process group {pgid} still has members after SIGKILL"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_and_wait(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    cpus: Option<Vec<usize>>,
    timeout: Duration,
) -> Result<Finished, String> {
    let out = cwd.join(".dualstack-stdout");
    let err = cwd.join(".dualstack-stderr");
    let file =
        |p: &Path| std::fs::File::create(p).map_err(|e| format!("creating {}: {e}", p.display()));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file(&out)?)
        .stderr(file(&err)?)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(cpus) = cpus {
        // SAFETY: runs in the forked child before exec and only calls sched_setaffinity on
        // itself (no allocation).
        unsafe {
            cmd.pre_exec(move || dualstack_hpcvmm::set_thread_affinity(&cpus));
        }
    }
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", argv[0]))?;
    let pgid = child.id() as i32;
    let (mut timed_out, mut stopped) = (false, false);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {}: {e}", argv[0])),
        }
        if t.elapsed() >= timeout || interrupt::requested() {
            timed_out = t.elapsed() >= timeout;
            stopped = !timed_out;
            break end_group(&mut child, pgid)?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall_s = t.elapsed().as_secs_f64();
    // Whatever the leader left running (a launcher's daemons, a rank) goes with the run.
    if signal_group(pgid, 0) {
        end_group(&mut child, pgid)?;
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(Finished {
        status: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        wall_s,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        timed_out,
        interrupted: stopped,
    })
}

/// Runs `key` of user program `p`. Never fails: a failure is a record with `ok: false`, the
/// end of its output kept.
pub fn run_one(
    ctx: &RunContext,
    plan: &Plan,
    p: &UserProgram,
    key: &RunKey,
    started_unix: f64,
    jobs: &dyn Fn() -> Option<u64>,
) -> RunRecord {
    let mut rec = new_record(ctx, key, started_unix);
    let dir = ctx.scratch.join(format!(
        "run-{}-{}-{}-{}",
        p.name, key.config, key.level, key.rep
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let before = jobs();
    let r = execute(ctx, plan, p, key.config, &dir, &mut rec);
    let after = jobs();
    let _ = std::fs::remove_dir_all(&dir);
    let f = match r {
        Ok(f) => f,
        Err(e) => {
            rec.error = Some(e);
            return rec;
        }
    };
    rec.wall_s = f.wall_s;
    if let (Some(a), Some(b)) = (before, after) {
        if f.wall_s > 0.0 {
            rec.load_jobs_per_s = Some(b.saturating_sub(a) as f64 / f.wall_s);
        }
    }
    let keep = |rec: &mut RunRecord| {
        rec.output = Some(format!(
            "stdout: {}\nstderr: {}",
            tail(&f.stdout, 2000),
            tail(&f.stderr, 2000)
        ));
    };
    // The VMM's own --timeout ends a guest with status 124.
    let vmm_timeout =
        key.config.is_vm() && f.status == 124 && f.wall_s >= ctx.timeout.as_secs_f64() * 0.99;
    if f.timed_out || vmm_timeout {
        rec.error = Some(format!(
            "did not finish within --run-timeout {} s: ended it and every process (and VM) of the run",
            ctx.timeout.as_secs_f64()
        ));
        keep(&mut rec);
        return rec;
    }
    if f.interrupted {
        rec.error = Some("stopped by Ctrl-C".into());
        keep(&mut rec);
        return rec;
    }
    if let Err(e) = p.check(&f.stdout, f.status) {
        rec.error = Some(format!("check failed: {e}"));
        keep(&mut rec);
        return rec;
    }
    rec.verified = true;
    match p.read_figure(&f.stdout, f.wall_s) {
        Ok(v) => {
            rec.figure = Some(v);
            rec.time_s = Some(p.cost(v));
            rec.ok = true;
        }
        Err(e) => {
            rec.error = Some(format!("{FIGURE_NO_MATCH}{e}"));
            keep(&mut rec);
        }
    }
    rec
}

fn execute(
    ctx: &RunContext,
    plan: &Plan,
    p: &UserProgram,
    config: Config,
    dir: &Path,
    rec: &mut RunRecord,
) -> Result<Finished, String> {
    super::program::stage(&p.files, dir)
        .map_err(|e| format!("copying {}'s files to {}: {e}", p.name, dir.display()))?;
    let stats = dir.join(".dualstack-stats.json");
    let argv = command(ctx, plan, p, config, &stats)?;
    let threads = p.threads(plan.zone_cores).to_string();
    let env = vec![
        ("OMP_NUM_THREADS".to_string(), threads),
        (
            "DUALSTACK_STATE_DIR".to_string(),
            ctx.paths.state_dir.display().to_string(),
        ),
        ("DUALSTACK_INSTANCE".to_string(), ctx.paths.instance.clone()),
    ];
    let f = if config.is_native() {
        let _thp = (config == Config::NativeThp)
            .then(|| super::thp::ThpGuard::set(&ctx.thp_enabled, "always"))
            .transpose()?;
        let cpus = ctx.zone_cpus();
        rec.cpus = cpus.clone();
        let entry = dualstack_zones::enter(&ctx.paths, &ctx.zone)
            .map_err(|e| format!("entering zone {}: {e}", ctx.zone.name))?;
        let f = spawn_and_wait(&argv, &env, dir, Some(cpus), ctx.timeout);
        entry
            .leave()
            .map_err(|e| format!("leaving zone {}: {e}", ctx.zone.name))?;
        f?
    } else {
        // The VMM adds its own margin (`dualstack run --timeout`); the group timeout is the
        // backstop for a launcher or a VMM that does not stop.
        let f = spawn_and_wait(&argv, &env, dir, None, ctx.timeout + Duration::from_secs(5))?;
        if let Ok(text) = std::fs::read_to_string(&stats) {
            if let Ok(s) = serde_json::from_str::<dualstack_hpcvmm::RunStats>(&text) {
                rec.cpus = s.vcpus.iter().flat_map(|v| v.host_cpus.clone()).collect();
                rec.cpus.sort_unstable();
                rec.cpus.dedup();
                rec.vm = Some(super::runner::figures(&s));
            }
        }
        f
    };
    Ok(f)
}
