//! `dualstack slurm prolog|epilog|show` and the job-step hook of `dualstack run` (issue 14).
//! Argument parsing and printing only; the logic is in `dualstack-slurm`.

use anyhow::Context;
use dualstack_slurm::{JobEnv, Scontrol, SiteConfig, StepEnv, StepZone};

#[derive(clap::Subcommand, Debug)]
pub enum SlurmCmd {
    /// Slurm Prolog (run by slurmd as root on each node of a job): create zone slurm-<jobid>
    /// when the job asked for one (--comment=dualstack[:memory=8G,hugepages=2M,cpus=N]).
    Prolog(HookArgs),
    /// Slurm Epilog: release zone slurm-<jobid>; exit 0 when it is already gone.
    Epilog(HookArgs),
    /// Recover one node's zone journal (`dualstack recover` with the node's state dir and
    /// instance); --release-jobs also releases its slurm-* zones (only when those jobs are gone).
    Recover {
        /// Node name [default: $SLURMD_NODENAME].
        #[arg(long)]
        node: Option<String>,
        /// Also release every slurm-<jobid> zone of the node.
        #[arg(long)]
        release_jobs: bool,
    },
    /// Show this node's settings and the zone of a job (SLURMD_NODENAME / SLURM_JOB_ID).
    Show {
        /// Node name [default: $SLURMD_NODENAME].
        #[arg(long)]
        node: Option<String>,
        /// Job id [default: $SLURM_JOB_ID].
        #[arg(long)]
        job: Option<u64>,
    },
}

#[derive(clap::Args, Debug)]
pub struct HookArgs {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// On failure, do not set the node's drain reason (Slurm then says only "Prolog error").
    #[arg(long)]
    pub no_drain_reason: bool,
}

/// One line: the error and its causes, as slurmd logs a hook's output.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// Make the drain reason say why (slurmd itself only says "Prolog error"/"Epilog error").
fn set_drain_reason(node: &str, reason: &str) {
    let mut reason: String = format!("dualstack: {reason}");
    reason.truncate(
        reason
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|&i| i <= 240)
            .last()
            .unwrap_or(0),
    );
    let status = std::process::Command::new("scontrol")
        .args([
            "update",
            &format!("nodename={node}"),
            "state=drain",
            &format!("reason={reason}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("dualstack: could not set the drain reason of node {node} with scontrol");
    }
}

pub fn run(cmd: SlurmCmd) -> anyhow::Result<i32> {
    match cmd {
        SlurmCmd::Prolog(a) => hook(true, &a),
        SlurmCmd::Epilog(a) => hook(false, &a),
        SlurmCmd::Show { node, job } => show(node, job),
        SlurmCmd::Recover { node, release_jobs } => {
            let node = node
                .or_else(|| std::env::var("SLURMD_NODENAME").ok())
                .context("give --node or set SLURMD_NODENAME")?;
            let settings = SiteConfig::load()?.node(&node)?;
            let r = dualstack_slurm::recover_node(&settings, release_jobs)?;
            for n in &r.notes {
                println!("{n}");
            }
            for z in &r.released {
                println!("released zone {z} of node {node}");
            }
            if r.notes.is_empty() && r.released.is_empty() {
                println!("node {node}: nothing to recover");
            }
            Ok(0)
        }
    }
}

fn hook(prolog: bool, a: &HookArgs) -> anyhow::Result<i32> {
    let what = if prolog { "prolog" } else { "epilog" };
    let env = JobEnv::from_env();
    let result: anyhow::Result<serde_json::Value> = (|| {
        let env = env.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let site = SiteConfig::load()?;
        Ok(if prolog {
            let r = dualstack_slurm::prolog(env, &site, &Scontrol)?;
            for n in &r.notes {
                eprintln!("dualstack slurm prolog: {n}");
            }
            if let Some(z) = &r.zone {
                eprintln!(
                    "dualstack slurm prolog: job {} node {}: zone {} on CPUs {}, {} MiB in {} KiB pages ({:.1} ms)",
                    r.job_id,
                    r.node,
                    z.name,
                    z.cpus.to_list(),
                    z.memory_bytes >> 20,
                    z.hugepage_kib,
                    r.elapsed_ms
                );
            }
            serde_json::to_value(&r)?
        } else {
            let r = dualstack_slurm::epilog(env, &site)?;
            for n in &r.notes {
                eprintln!("dualstack slurm epilog: {n}");
            }
            if r.released {
                eprintln!(
                    "dualstack slurm epilog: job {} node {}: zone {} released ({:.1} ms)",
                    r.job_id,
                    r.node,
                    dualstack_slurm::zone_name(r.job_id),
                    r.elapsed_ms
                );
            }
            serde_json::to_value(&r)?
        })
    })();
    // slurmd logs a hook's output only when it fails: keep every outcome in the node's own
    // log too (<state dir>/slurm/hooks.log), so recoveries and timings can be read afterwards.
    let log = |line: &str| {
        if let Ok(env) = &env {
            if let Ok(s) = SiteConfig::load().and_then(|c| c.node(&env.node)) {
                dualstack_slurm::append_hook_log(&s, &format!("{what} job {}: {line}", env.job_id));
            }
        }
    };
    match result {
        Ok(v) => {
            let notes = v["notes"].as_array().cloned().unwrap_or_default();
            for n in notes.iter().filter_map(|n| n.as_str()) {
                log(n);
            }
            log(&format!(
                "ok in {:.1} ms{}{}",
                v["elapsed_ms"].as_f64().unwrap_or_default(),
                match (&v["zone"], &v["released"]) {
                    (serde_json::Value::Object(z), _) => format!(
                        ", zone {} on CPUs {}",
                        z["name"].as_str().unwrap_or_default(),
                        z["cpus"].as_str().unwrap_or_default()
                    ),
                    (_, serde_json::Value::Bool(true)) => ", zone released".to_string(),
                    _ => ", no zone".to_string(),
                },
                steps_text(&v["steps"])
            ));
            if a.json {
                println!("{v}");
            }
            Ok(0)
        }
        Err(e) => {
            let line = one_line(&e);
            log(&format!("FAILED: {line}"));
            eprintln!("dualstack slurm {what}: {line}");
            if let (Ok(env), false) = (&env, a.no_drain_reason) {
                set_drain_reason(&env.node, &line);
            }
            Ok(1)
        }
    }
}

/// ` | steps: label=ms; ...` for the hook log (empty without steps).
fn steps_text(steps: &serde_json::Value) -> String {
    let parts: Vec<String> = steps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some(format!("{}={:.2}", s[0].as_str()?, s[1].as_f64()?)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" | steps: {}", parts.join("; "))
    }
}

fn show(node: Option<String>, job: Option<u64>) -> anyhow::Result<i32> {
    let mut env = StepEnv::from_env();
    if node.is_some() {
        env.node = node;
    }
    if job.is_some() {
        env.job_id = job;
    }
    let site = SiteConfig::load()?;
    let name = env
        .node
        .clone()
        .context("give --node or set SLURMD_NODENAME")?;
    let s = site.node(&name)?;
    println!("node {name}");
    println!(
        "  cpus          {}",
        s.cpus
            .as_ref()
            .map_or("(the cpuset root's)".into(), |c| c.to_list())
    );
    println!("  state dir     {}", s.state_dir.display());
    println!(
        "  instance      {}",
        s.instance.as_deref().unwrap_or("(default)")
    );
    println!("  housekeeping  {:?}", s.housekeeping);
    if let Some(job) = env.job_id {
        env.allow_no_zone = true;
        match dualstack_slurm::step_zone(&env, &site)? {
            Some(sz) => println!(
                "  job {job}: zone {} on CPUs {}, {} MiB, owner {:?}",
                sz.zone.name,
                sz.zone.cpus.to_list(),
                sz.zone.memory_bytes >> 20,
                dualstack_slurm::job_record(&s, job).and_then(|r| r.user)
            ),
            None => println!("  job {job}: no zone"),
        }
    }
    Ok(0)
}

/// For `dualstack run` without `--zone`: inside a Slurm job step, this node's zone of the job
/// (an error when the job has none, unless DUALSTACK_SLURM_NO_ZONE=1); outside Slurm, `None`.
pub fn step_zone() -> anyhow::Result<Option<StepZone>> {
    let env = StepEnv::from_env();
    if env.job_id.is_none() || env.node.is_none() {
        return Ok(None);
    }
    Ok(dualstack_slurm::step_zone(&env, &SiteConfig::load()?)?)
}

/// Check that a job step may run in its zone (the run itself goes through `dualstack_jobs`, as
/// every `dualstack run` does).
///
/// Slurm must keep tracking, signalling and accounting the process. On cgroup v1 only the
/// cpuset hierarchy changes (the process enters the zone's cpuset for the run and goes back);
/// Slurm's proctrack (freezer or process tree), memory and accounting hierarchies are separate
/// and keep it. On cgroup v2 one cgroup holds every controller: entering the zone would take the
/// step out of Slurm's cgroup, and the zone's isolated partition takes its CPUs away from
/// Slurm's cgroups, so a step is refused there with that reason (not solved yet).
pub fn check_step_zone(sz: &StepZone) -> anyhow::Result<()> {
    let z = &sz.zone;
    if sz.paths.cgroup.is_v2() {
        anyhow::bail!(
            "job {} on node {}: running a Slurm job step in zone {} needs cgroup v1 for now: on cgroup v2 entering the zone would take the step out of Slurm's cgroup (tracking, signals, accounting), and the zone's isolated partition takes its CPUs from Slurm's cgroups",
            sz.job_id,
            sz.node,
            z.name
        );
    }
    Ok(())
}

/// A step running as its user needs KVM: a /dev/kvm the SPANK plugin handed it, or one it may
/// open itself (a host that lets users open /dev/kvm).
pub fn check_kvm_for_user_step(sz: &StepZone, kvm_fd: Option<i32>) -> anyhow::Result<()> {
    if kvm_fd.is_some() {
        return Ok(());
    }
    let dev = std::ffi::CString::new("/dev/kvm").expect("no NUL");
    // SAFETY: access reads a NUL-terminated path.
    if unsafe { libc::access(dev.as_ptr(), libc::R_OK | libc::W_OK) } == 0 {
        return Ok(());
    }
    anyhow::bail!(
        "job {} on node {}: this step runs as uid {} and may not open /dev/kvm; the dualstack SPANK plugin (plugstack.conf: required .../libdualstack_spank.so config=<dualstack-slurm.toml>) hands the tasks of a zone job an open /dev/kvm (as {}); is it installed on this node?",
        sz.job_id,
        sz.node,
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        dualstack_slurm::KVM_FD_VAR
    )
}
