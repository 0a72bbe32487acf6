//! HPC jobs: each is its own process tree (`dualstack daemon supervise` -> `dualstack run`) in a
//! session of its own, recorded in the state database with pid and start time, so jobs outlive
//! the daemon and a restarted daemon re-attaches to them and collects their results.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::events::Events;
use crate::proc;
use crate::supervise::{now_unix, RunStatus, RUN_PID_FILE, STATUS_FILE};

/// File in the job directory: the running guest's live counters ([`dualstack_hpcvmm::live`]),
/// rewritten by its VMM every 250 ms.
pub const LIVE_FILE: &str = "live.json";

/// File in the job directory: `<pid> <start time>` of the supervisor, written first thing.
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";

/// Errors of the job store.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("job directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no job {0}")]
    Unknown(i64),
}

/// An HPC job as submitted: the fields mirror `dualstack run`'s flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Static x86-64 Linux program: an absolute path (inside `root` when `root` is given) or
    /// the name of a bundled mini-app (`hpccg`).
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Guest environment, `KEY=VALUE` each (`--env`); nothing else is passed.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directory the guest sees as `/` (`--root`); default: the program's directory.
    pub root: Option<String>,
    /// Run in this zone (`--zone`): its cores and huge pages; `auto` carves a transient zone
    /// of `cpus` cores (default 1) and `memory` for the job and releases it when it ends.
    pub zone: Option<String>,
    /// Number of cores (`--cpus`), without a zone.
    pub cpus: Option<u32>,
    /// Guest memory (`--memory`, e.g. `64M`).
    pub memory: Option<String>,
    /// Run as this user (`--user`, the jail); a non-admin's jobs always run as themselves.
    pub user: Option<String>,
    /// End the guest after this many seconds (`--timeout`).
    pub timeout: Option<f64>,
}

/// Where a job is in its life: queued -> starting -> running -> succeeded | failed | cancelled,
/// or lost when its process vanished without a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Lost,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Lost
        )
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: i64,
    pub owner: String,
    pub owner_uid: u32,
    pub state: JobState,
    pub spec: JobSpec,
    pub submitted_unix: f64,
    pub started_unix: Option<f64>,
    pub ended_unix: Option<f64>,
    /// Seconds since start (running) or start to end (ended).
    pub runtime_s: Option<f64>,
    /// The supervisor's pid (its process group leader) while the job runs.
    pub pid: Option<u32>,
    /// The `dualstack run` process (its own process group; cancel signals it).
    pub run_pid: Option<u32>,
    /// `dualstack run`'s exit status once ended (the guest's, or 128 + signal).
    pub exit_status: Option<i32>,
    pub signal: Option<i32>,
    /// Why it failed to start, was cancelled or is lost.
    pub reason: Option<String>,
    /// The run's statistics (`dualstack run --stats`), once ended (`GET /v1/jobs/{id}` only).
    #[schema(value_type = Option<Object>)]
    pub stats: Option<serde_json::Value>,
    /// Counters of the guest while the job runs (its VMM publishes them every 250 ms).
    #[serde(default)]
    pub live: Option<LiveStats>,
}

/// A running job's counters, as its VMM last published them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveStats {
    /// VM exits the VMM served since the program started.
    pub exits: u64,
    /// System calls the VMM served.
    pub syscalls: u64,
    /// KVM's page faults (`pf_taken`) of the guest's vCPUs.
    pub page_faults: u64,
    /// KVM's own exit count (exits KVM handled in the kernel included).
    pub kvm_exits: u64,
    /// VM exits per second between the last two samples.
    pub exits_per_s: f64,
    /// System calls per second between the last two samples.
    pub syscalls_per_s: f64,
    /// Seconds since the guest's first instruction.
    pub runtime_s: f64,
    /// The guest's first instruction has run.
    pub started: bool,
    /// When the sample was taken (seconds since the epoch).
    pub sampled_unix: f64,
}

impl LiveStats {
    /// The counters in a job directory's [`LIVE_FILE`], when there is a valid one.
    pub fn read(job_dir: &Path) -> Option<Self> {
        let r = dualstack_hpcvmm::live::read(&job_dir.join(LIVE_FILE))?;
        Some(LiveStats {
            exits: r.exits,
            syscalls: r.syscalls,
            page_faults: r.page_faults,
            kvm_exits: r.kvm_exits,
            exits_per_s: r.exits_per_s(),
            syscalls_per_s: r.syscalls_per_s(),
            runtime_s: r.runtime_s,
            started: r.started,
            sampled_unix: r.unix,
        })
    }
}

/// How jobs are started.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `dualstack` binary (normally this one).
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    /// Whether that binary's `run` has `--user` (the jail); without it, `user` is refused.
    pub run_has_user: bool,
    pub max_running: usize,
    /// Between SIGTERM and SIGKILL on cancel.
    pub grace: Duration,
    /// The single-threaded launcher that forks supervisors (see [`crate::zygote`]); without
    /// it (or when it is gone) a supervisor is `dualstack daemon supervise`, exec'd.
    pub zygote: Option<std::sync::Arc<crate::zygote::Zygote>>,
}

/// The job store and scheduler.
pub struct Jobs {
    conn: Mutex<Connection>,
    pub launcher: Launcher,
    /// Jobs whose run got SIGTERM from this daemon instance.
    termed: Mutex<HashSet<i64>>,
    /// One tick at a time: a concurrent tick could see a job another tick is starting.
    tick_lock: Mutex<()>,
}

type Row = (Job, Option<u32>, Option<u64>, Option<u64>, Option<f64>);

const COLUMNS: &str = "id, owner_uid, owner, spec, state, submitted_unix, started_unix, ended_unix, pid, pid_start, run_pid, run_pid_start, exit_status, signal, reason, cancel_unix";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let spec: String = r.get(3)?;
    let state: String = r.get(4)?;
    let started: Option<f64> = r.get(6)?;
    let ended: Option<f64> = r.get(7)?;
    let pid: Option<u32> = r.get(8)?;
    let state = JobState::parse(&state).unwrap_or(JobState::Lost);
    let runtime = started.map(|s| ended.unwrap_or_else(now_unix) - s);
    let job = Job {
        id: r.get(0)?,
        owner_uid: r.get(1)?,
        owner: r.get(2)?,
        spec: serde_json::from_str(&spec).unwrap_or(JobSpec {
            program: "(unreadable record)".into(),
            args: vec![],
            env: vec![],
            root: None,
            zone: None,
            cpus: None,
            memory: None,
            user: None,
            timeout: None,
        }),
        state,
        submitted_unix: r.get(5)?,
        started_unix: started,
        ended_unix: ended,
        runtime_s: runtime,
        pid: if state.is_terminal() { None } else { pid },
        run_pid: r.get(10)?,
        exit_status: r.get(12)?,
        signal: r.get(13)?,
        reason: r.get(14)?,
        stats: None,
        live: None,
    };
    let pid_start: Option<i64> = r.get(9)?;
    let run_start: Option<i64> = r.get(11)?;
    Ok((
        job,
        pid,
        pid_start.map(|v| v as u64),
        run_start.map(|v| v as u64),
        r.get(15)?,
    ))
}

fn read_pid_file(path: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Jobs {
    pub fn open(launcher: Launcher) -> Result<Self, crate::DaemonError> {
        let conn = dualstack_zones::open_db(&launcher.state_dir)?;
        crate::db::migrate(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            launcher,
            termed: Mutex::new(HashSet::new()),
            tick_lock: Mutex::new(()),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn job_dir(&self, id: i64) -> PathBuf {
        self.launcher.state_dir.join("jobs").join(id.to_string())
    }

    /// Record a new job (queued); the scheduler starts it.
    pub fn submit(&self, owner_uid: u32, owner: &str, spec: &JobSpec) -> Result<Job, JobError> {
        let id = {
            let db = self.db();
            db.execute(
                "INSERT INTO daemon_jobs (owner_uid, owner, spec, state, submitted_unix) VALUES (?1, ?2, ?3, 'queued', ?4)",
                params![owner_uid, owner, serde_json::to_string(spec).expect("spec serializes"), now_unix()],
            )?;
            db.last_insert_rowid()
        };
        self.get(id)
    }

    pub fn get(&self, id: i64) -> Result<Job, JobError> {
        let db = self.db();
        let r = db
            .query_row(
                &format!("SELECT {COLUMNS} FROM daemon_jobs WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?;
        r.map(|r| r.0).ok_or(JobError::Unknown(id))
    }

    /// One job with its statistics when it has them.
    pub fn show(&self, id: i64) -> Result<Job, JobError> {
        let mut job = self.get(id)?;
        let path = self.job_dir(id).join("stats.json");
        job.stats = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        self.add_live(&mut job);
        Ok(job)
    }

    /// A running job's live counters.
    fn add_live(&self, job: &mut Job) {
        if job.state == JobState::Running {
            job.live = LiveStats::read(&self.job_dir(job.id));
        }
    }

    /// Every job (of `owner_uid` only, when given), newest first.
    pub fn list(&self, owner_uid: Option<u32>) -> Result<Vec<Job>, JobError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {COLUMNS} FROM daemon_jobs WHERE ?1 IS NULL OR owner_uid = ?1 ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map([owner_uid], row)?;
        let mut jobs: Vec<Job> = rows.map(|r| r.map(|r| r.0)).collect::<Result<_, _>>()?;
        for j in &mut jobs {
            self.add_live(j);
        }
        Ok(jobs)
    }

    fn rows_in(&self, states: &[JobState]) -> Result<Vec<Row>, JobError> {
        let db = self.db();
        let list = states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = db.prepare(&format!(
            "SELECT {COLUMNS} FROM daemon_jobs WHERE state IN ({list}) ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_state(
        &self,
        id: i64,
        state: JobState,
        reason: Option<&str>,
        events: &Events,
        owner: u32,
    ) -> Result<(), JobError> {
        self.db().execute(
            "UPDATE daemon_jobs SET state = ?2, reason = COALESCE(?3, reason),
                 ended_unix = CASE WHEN ?4 THEN COALESCE(ended_unix, ?5) ELSE ended_unix END
             WHERE id = ?1",
            params![id, state.as_str(), reason, state.is_terminal(), now_unix()],
        )?;
        events.emit("job", &id.to_string(), state.as_str(), Some(owner));
        Ok(())
    }

    /// Cancel: a queued job ends at once; a running one gets SIGTERM on its run's process
    /// group, and SIGKILL after the grace period (from [`Jobs::tick`]).
    pub fn cancel(&self, id: i64, events: &Events) -> Result<Job, JobError> {
        let job = self.get(id)?;
        if job.state.is_terminal() {
            return Ok(job);
        }
        self.db().execute(
            "UPDATE daemon_jobs SET cancel_unix = COALESCE(cancel_unix, ?2) WHERE id = ?1",
            params![id, now_unix()],
        )?;
        if job.state == JobState::Queued {
            // Atomic against the scheduler: only a still-queued row is cancelled here.
            let n = self.db().execute(
                "UPDATE daemon_jobs SET state = 'cancelled', reason = 'cancelled before it started', ended_unix = ?2 WHERE id = ?1 AND state = 'queued'",
                params![id, now_unix()],
            )?;
            if n == 1 {
                events.emit("job", &id.to_string(), "cancelled", Some(job.owner_uid));
            }
        }
        self.tick(events)?;
        self.get(id)
    }

    /// Supervise: collect results, detect lost jobs, escalate cancels, start queued jobs.
    /// Also the reconciliation at start (a restarted daemon re-attaches by pid + start time).
    pub fn tick(&self, events: &Events) -> Result<(), JobError> {
        let _one = self.tick_lock.lock().unwrap_or_else(|e| e.into_inner());
        let grace = self.launcher.grace.as_secs_f64();
        for (job, pid, pid_start, _run_start, cancel) in
            self.rows_in(&[JobState::Starting, JobState::Running])?
        {
            let dir = self.job_dir(job.id);
            if let Some(status) = read_status(&dir) {
                self.finish(&job, &status, cancel.is_some(), events)?;
                continue;
            }
            // Adopt the supervisor (a daemon killed between spawn and record) and the run.
            let (pid, pid_start) = match (pid, pid_start) {
                (Some(p), Some(s)) => (p, s),
                _ => match read_pid_file(&dir.join(SUPERVISOR_PID_FILE)) {
                    Some((p, s)) => {
                        self.db().execute(
                            "UPDATE daemon_jobs SET pid = ?2, pid_start = ?3, state = 'running', started_unix = COALESCE(started_unix, ?4) WHERE id = ?1",
                            params![job.id, p, s as i64, now_unix()],
                        )?;
                        (p, s)
                    }
                    None => {
                        self.set_state(
                            job.id,
                            JobState::Lost,
                            Some("the daemon stopped while starting the job, before its supervisor ran"),
                            events,
                            job.owner_uid,
                        )?;
                        continue;
                    }
                },
            };
            let run = read_pid_file(&dir.join(RUN_PID_FILE));
            if job.run_pid.is_none() {
                if let Some((rp, rs)) = run {
                    self.db().execute(
                        "UPDATE daemon_jobs SET run_pid = ?2, run_pid_start = ?3 WHERE id = ?1",
                        params![job.id, rp, rs as i64],
                    )?;
                }
            }
            if !proc::alive(pid, pid_start) {
                // The status may have landed between the two looks.
                if let Some(status) = read_status(&dir) {
                    self.finish(&job, &status, cancel.is_some(), events)?;
                } else {
                    self.set_state(
                        job.id,
                        JobState::Lost,
                        Some(&format!("its supervisor (pid {pid}) is gone without writing {STATUS_FILE}: it was killed, or the host rebooted")),
                        events,
                        job.owner_uid,
                    )?;
                }
                continue;
            }
            if let (Some(since), Some((rp, rs))) = (cancel, run) {
                let first = self
                    .termed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(job.id);
                if first {
                    proc::signal_group(rp, rs, libc::SIGTERM);
                } else if now_unix() - since > grace {
                    proc::signal_group(rp, rs, libc::SIGKILL);
                }
            }
        }
        // Start queued jobs, oldest first, up to the limit.
        let running = self
            .rows_in(&[JobState::Starting, JobState::Running])?
            .len();
        let free = self.launcher.max_running.saturating_sub(running);
        for (job, ..) in self.rows_in(&[JobState::Queued])?.into_iter().take(free) {
            let n = self.db().execute(
                "UPDATE daemon_jobs SET state = 'starting' WHERE id = ?1 AND state = 'queued'",
                [job.id],
            )?;
            if n == 0 {
                continue;
            }
            dualstack_jobs::trace::mark("daemon.spawn");
            let spawned = self.spawn(&job);
            dualstack_jobs::trace::mark("daemon.spawned");
            match spawned {
                Ok((pid, start)) => {
                    self.db().execute(
                        "UPDATE daemon_jobs SET state = 'running', pid = ?2, pid_start = ?3, started_unix = ?4 WHERE id = ?1",
                        params![job.id, pid, start as i64, now_unix()],
                    )?;
                    events.emit("job", &job.id.to_string(), "running", Some(job.owner_uid));
                }
                Err(e) => self.set_state(
                    job.id,
                    JobState::Failed,
                    Some(&format!("cannot start: {}", crate::error::chain(&e))),
                    events,
                    job.owner_uid,
                )?,
            }
        }
        Ok(())
    }

    fn finish(
        &self,
        job: &Job,
        status: &RunStatus,
        cancelled: bool,
        events: &Events,
    ) -> Result<(), JobError> {
        let state = if cancelled {
            JobState::Cancelled
        } else if status.exit_status == 0 {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        let reason = status.spawn_error.clone().or_else(|| {
            cancelled.then(|| {
                format!(
                    "cancelled; the run ended with status {}",
                    status.exit_status
                )
            })
        });
        self.db().execute(
            "UPDATE daemon_jobs SET state = ?2, exit_status = ?3, signal = ?4, ended_unix = ?5, reason = COALESCE(?6, reason) WHERE id = ?1",
            params![job.id, state.as_str(), status.exit_status, status.signal, status.ended_unix, reason],
        )?;
        self.termed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        events.emit(
            "job",
            &job.id.to_string(),
            state.as_str(),
            Some(job.owner_uid),
        );
        Ok(())
    }

    /// `dualstack run`'s command line for a job (after the program path checks).
    pub fn run_args(&self, job: &Job) -> Vec<String> {
        let dir = self.job_dir(job.id);
        let s = &job.spec;
        let mut a = vec![
            "--state-dir".to_string(),
            self.launcher.state_dir.display().to_string(),
            // The daemon recovered the host before serving; the supervisor gives back what
            // a killed run leased.
            "--no-recover".into(),
            "run".into(),
            "--stats".into(),
            dir.join("stats.json").display().to_string(),
            "--live-stats".into(),
            dir.join(LIVE_FILE).display().to_string(),
            "--clear-env".into(),
        ];
        if let Some(z) = &s.zone {
            a.extend(["--zone".into(), z.clone()]);
        }
        if let Some(c) = s.cpus {
            a.extend(["--cpus".into(), c.to_string()]);
        }
        if let Some(m) = &s.memory {
            a.extend(["--memory".into(), m.clone()]);
        }
        a.extend(["--root".into(), job_root(s).display().to_string()]);
        for e in &s.env {
            a.extend(["--env".into(), e.clone()]);
        }
        if let Some(t) = s.timeout {
            a.extend(["--timeout".into(), t.to_string()]);
        }
        if let Some(u) = &s.user {
            a.extend(["--user".into(), u.clone()]);
        }
        a.push("--".into());
        a.push(s.program.clone());
        a.extend(s.args.iter().cloned());
        a
    }

    /// Start the job's supervisor in a new session; returns its pid and start time.
    fn spawn(&self, job: &Job) -> Result<(u32, u64), JobError> {
        let dir = self.job_dir(job.id);
        let io = |source| JobError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let out = File::create(dir.join("stdout")).map_err(io)?;
        let err = File::create(dir.join("stderr")).map_err(io)?;
        let exe = &self.launcher.exe;
        if let Some(z) = &self.launcher.zygote {
            let mut argv = vec![exe.display().to_string()];
            argv.extend(self.run_args(job));
            let req = crate::zygote::Request {
                state_dir: self.launcher.state_dir.clone(),
                job_dir: dir.clone(),
                cwd: job_root(&job.spec),
                stdout: dir.join("stdout"),
                stderr: dir.join("stderr"),
                argv,
            };
            match z.spawn(&req) {
                Ok(started) => return Ok(started),
                Err(e) => tracing::warn!(
                    "job {}: the job launcher (pid {}) failed ({e}); starting the supervisor with exec",
                    job.id,
                    z.pid()
                ),
            }
        }
        let mut cmd = Command::new(exe);
        cmd.arg("--state-dir")
            .arg(&self.launcher.state_dir)
            .arg("daemon")
            .arg("supervise")
            .arg("--job-dir")
            .arg(&dir)
            .arg("--")
            .arg(exe)
            .args(self.run_args(job))
            .current_dir(job_root(&job.spec))
            // The job acts locally: never back through the API.
            .env_remove("DUALSTACK_API")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: pre_exec runs in the forked child; setsid is async-signal-safe. The new
        // session keeps the job out of the daemon's process group and terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(io)?;
        let pid = child.id();
        let start = proc::start_time(pid).unwrap_or(0);
        // Reap it while this daemon is its parent (after a restart, init does).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok((pid, start))
    }

    /// Counts by state, for metrics.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, JobError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT state, count(*) FROM daemon_jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let (s, n) = r?;
            if let Some(st) = JobState::parse(&s) {
                if let Some(slot) = out.iter_mut().find(|(x, _)| *x == st) {
                    slot.1 = n as u64;
                }
            }
        }
        Ok(out)
    }
}

fn read_status(dir: &Path) -> Option<RunStatus> {
    let bytes = std::fs::read(dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The job's root: as given, else the program's directory, else `/`.
pub fn job_root(spec: &JobSpec) -> PathBuf {
    match &spec.root {
        Some(r) => PathBuf::from(r),
        None => Path::new(&spec.program)
            .parent()
            .filter(|p| p.is_absolute())
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    }
}
