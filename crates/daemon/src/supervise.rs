//! The job supervisor: a tiny re-exec of `dualstack` (`dualstack daemon supervise`) that sits
//! between the daemon and `dualstack run`. The daemon starts it in a session of its own; it starts
//! `dualstack run` in a process group of its own, records that pid with its start time, waits for
//! it, and writes the exit status to `status.json` (atomically) before it exits. The result is
//! therefore never lost when the daemon dies or restarts: whoever the supervisor's parent is by
//! then, the status file holds the answer. Cancelling signals the run's process group; the
//! supervisor ignores those signals so it lives to write the status.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// File in the job directory: `<pid> <start time>` of the `dualstack run` process.
pub const RUN_PID_FILE: &str = "run.pid";
/// File in the job directory written when the run ended.
pub const STATUS_FILE: &str = "status.json";

/// How a run ended, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStatus {
    /// Exit code, when the run exited.
    pub exit_code: Option<i32>,
    /// Signal that killed the run, when one did.
    pub signal: Option<i32>,
    /// Shell convention: the exit code, or 128 + signal.
    pub exit_status: i32,
    /// Set when the run could not even be started.
    pub spawn_error: Option<String>,
    pub ended_unix: f64,
}

/// Write `text` to `dir/name` through a temporary file and a rename (atomic for readers);
/// `durable` also syncs it to disk first (the status must survive a crash of the host; pid
/// files need not, as pids mean nothing after a reboot, and the sync would delay the run's
/// start by a disk flush).
pub fn write_atomic(dir: &Path, name: &str, text: &str, durable: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Run `argv` under supervision; returns the supervisor's own exit code (0 once the status is
/// written).
pub fn supervise(state_dir: &Path, job_dir: &Path, argv: &[OsString]) -> i32 {
    dualstack_jobs::trace::mark("supervisor.start");
    // Orphans of the run (its VMM child, when the run was killed) become ours, so they are
    // reaped here and the run's zone is empty before its leases are given back.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
    let me = std::process::id();
    let start = crate::proc::start_time(me).unwrap_or(0);
    if let Err(e) = write_atomic(
        job_dir,
        crate::jobs::SUPERVISOR_PID_FILE,
        &format!("{me} {start}\n"),
        false,
    ) {
        eprintln!(
            "dualstack supervise: cannot write to {}: {e}",
            job_dir.display()
        );
        return 1;
    }
    let status = match argv.split_first() {
        None => failed("no program to run".into()),
        Some((prog, args)) => {
            let mut cmd = Command::new(prog);
            // No pre_exec: the run starts with posix_spawn (no copy of this process), in a
            // process group of its own (cancel signals that group, not this one).
            cmd.args(args).process_group(0);
            dualstack_jobs::trace::mark("supervisor.spawn_run");
            let spawned = cmd.spawn();
            // Only now, so the run keeps the default actions: this process (a session of
            // its own) lives to write the status whatever signals its group gets.
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                // SAFETY: setting a signal to SIG_IGN; no handler code runs.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
            }
            match spawned {
                Err(e) => failed(format!("cannot start {}: {e}", prog.to_string_lossy())),
                Ok(mut child) => {
                    let pid = child.id();
                    let start = crate::proc::start_time(pid).unwrap_or(0);
                    let _ = write_atomic(job_dir, RUN_PID_FILE, &format!("{pid} {start}\n"), false);
                    match child.wait() {
                        Ok(st) => RunStatus {
                            exit_code: st.code(),
                            signal: st.signal(),
                            exit_status: st
                                .code()
                                .unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
                            spawn_error: None,
                            ended_unix: now_unix(),
                        },
                        Err(e) => failed(format!("waiting for the run: {e}")),
                    }
                }
            }
        }
    };
    reap_descendants(std::time::Duration::from_secs(30));
    // A run killed while it held huge pages or a transient zone (SIGKILL after a cancel's
    // grace period) could not give them back: do it now, before the result is final.
    if let Ok(paths) = dualstack_zones::HostPaths::from_env(state_dir) {
        match dualstack_jobs::lease::recover(&paths) {
            Ok(r) => {
                for g in r.given_back {
                    eprintln!("dualstack supervise: gave back {g}");
                }
            }
            Err(e) => eprintln!("dualstack supervise: checking run leases: {e}"),
        }
    }
    let text = serde_json::to_string(&status).expect("status serializes");
    match write_atomic(job_dir, STATUS_FILE, &text, true) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dualstack supervise: cannot write {STATUS_FILE}: {e}");
            1
        }
    }
}

/// Wait for every remaining descendant (we are their subreaper) to exit, up to `limit`.
fn reap_descendants(limit: std::time::Duration) {
    let t = std::time::Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on any child; status is a valid out-parameter.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: none left
        }
        if pid == 0 {
            if t.elapsed() > limit {
                eprintln!(
                    "dualstack supervise: a process of the run is still alive after {limit:?}"
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn failed(reason: String) -> RunStatus {
    eprintln!("dualstack supervise: {reason}");
    RunStatus {
        exit_code: None,
        signal: None,
        exit_status: 127,
        spawn_error: Some(reason),
        ended_unix: now_unix(),
    }
}
