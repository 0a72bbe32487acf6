//! One measured run in one configuration, turned into a [`RunRecord`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dualstack_hpcvmm::{GuestPageSize, RunStats};
use dualstack_jobs::{Host, JobSpec, MemoryBacking, ZoneSel};
use dualstack_topology::CpuList;
use dualstack_zones::{HostPaths, Zone};

use super::fwq;
use super::plan::{Config, LoadKind, Plan, RunKey};
use super::record::{RunRecord, VmFigures};
use crate::native::{run_native, Outcome};

/// Where a run's program, scratch files and CPUs come from.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub paths: HostPaths,
    pub zone: Zone,
    /// Every CPU the harness could use before the zone existed (single-stack floats over them).
    pub all_cpus: Vec<usize>,
    /// Directory with the static mini-app binaries.
    pub apps_dir: PathBuf,
    /// Scratch directory; VM guests see it as `/`.
    pub scratch: PathBuf,
    pub load: LoadKind,
    /// Longest a single run may take.
    pub timeout: Duration,
    /// The `dualstack` executable user programs run under in VM configurations.
    pub dualstack_exe: Option<PathBuf>,
    /// The THP mode file `native-thp` sets (normally [`super::thp::THP_ENABLED`]).
    pub thp_enabled: PathBuf,
}

impl RunContext {
    pub fn zone_cpus(&self) -> Vec<usize> {
        self.zone.cpus().iter().map(|c| c as usize).collect()
    }

    pub fn app_path(&self, app: &str) -> PathBuf {
        self.apps_dir.join(app)
    }
}

/// The HPC VMM job of `config` (None for native): dual stack in the zone (its cores, all its
/// huge pages, pinned vCPUs), single stack on every CPU the harness had before the zone existed
/// (as far as it may still use them), lazy 4 KiB memory, floating vCPUs.
pub fn vm_job(
    ctx: &RunContext,
    plan: &Plan,
    program: &Path,
    args: &[String],
    config: Config,
) -> Option<JobSpec> {
    let mut spec = JobSpec::new(program.display().to_string(), args.to_vec());
    spec.root = ctx.scratch.clone();
    spec.timeout_s = Some(ctx.timeout.as_secs_f64());
    // The jail as this process's own user (root for the experiment), not sudo's invoking
    // user: the mini-apps write their samples into the harness's scratch directory.
    // SAFETY: geteuid has no preconditions.
    spec.user = Some(unsafe { libc::geteuid() }.to_string());
    match config {
        Config::DualStack => {
            spec.zone = ZoneSel::Named(ctx.zone.name.clone());
            spec.pin = true;
        }
        Config::SingleStack => {
            let allowed = dualstack_hpcvmm::host_affinity().unwrap_or_default();
            let cpus: CpuList = ctx
                .all_cpus
                .iter()
                .filter(|c| allowed.is_empty() || allowed.contains(c))
                .map(|&c| c as u32)
                .collect();
            spec.cpuset_cpus = Some(cpus);
            spec.memory = Some(plan.memory_bytes);
            spec.memory_backing = MemoryBacking::Lazy;
            spec.guest_pages = Some(GuestPageSize::Size4K);
            spec.pin = false;
        }
        Config::Native | Config::NativeThp | Config::Kvm => return None,
    }
    Some(spec)
}

/// Runs a VM job through `dualstack-jobs` (which enters the zone's cgroup for a zone job),
/// capturing the guest's stdout in a scratch file.
fn run_job(ctx: &RunContext, mut spec: JobSpec, rec: &mut RunRecord) -> Result<Outcome, String> {
    let out = ctx
        .scratch
        .join(format!("vm-stdout-{}", std::process::id()));
    spec.stdout = Some(out.clone());
    let host = Host::new(ctx.paths.clone());
    let job = dualstack_jobs::prepare(&spec, &host).map_err(|e| chain(&e))?;
    rec.cpus = job.config().cpus.clone();
    let result = job.run().map_err(|e| chain(&e));
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let result = result?;
    Ok(Outcome {
        stdout,
        status: result.exit_status,
        wall_s: result.wall_s,
        stats: Some(result.stats),
    })
}

/// FWQ writes its samples here (host path, and the path the guest sees under its root).
fn fwq_dump(ctx: &RunContext, config: Config) -> (PathBuf, String) {
    let name = "fwq-dump.csv";
    let host = ctx.scratch.join(name);
    let arg = if config.is_vm() {
        format!("/{name}")
    } else {
        host.display().to_string()
    };
    (host, arg)
}

/// The record of run `key` before it runs: not ok, nothing measured yet.
pub(super) fn new_record(ctx: &RunContext, key: &RunKey, started_unix: f64) -> RunRecord {
    RunRecord {
        app: key.app.clone(),
        config: key.config,
        level: key.level,
        rep: key.rep,
        load: ctx.load,
        ok: false,
        error: None,
        time_s: None,
        wall_s: 0.0,
        verified: false,
        started_unix,
        cpus: vec![],
        load_jobs_per_s: None,
        vm: None,
        fwq: None,
        result: None,
        figure: None,
        output: None,
    }
}

/// Runs `key` once. `jobs` reads the commodity load's progress (before and after, for its
/// throughput during the run). Never fails: a failure is a record with `ok: false`.
pub fn run_one(
    ctx: &RunContext,
    plan: &Plan,
    key: &RunKey,
    jobs: &dyn Fn() -> Option<u64>,
) -> RunRecord {
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Some(p) = plan.program(&key.app) {
        return super::user::run_one(ctx, plan, p, key, started_unix, jobs);
    }
    if super::mpi_app::is_mpi_app(&key.app) {
        return match super::mpi_app::program(ctx, plan, &key.app) {
            Ok(p) => super::user::run_one(ctx, plan, &p, key, started_unix, jobs),
            Err(e) => super::mpi_app::failed(key, ctx.load, started_unix, e),
        };
    }
    let program = ctx.app_path(&key.app);
    let mut args = plan.app_argv();
    let dump = (key.app == "fwq").then(|| fwq_dump(ctx, key.config));
    if let Some((host, arg)) = &dump {
        let _ = std::fs::remove_file(host);
        args.extend(["--dump".to_string(), arg.clone()]);
    }
    let mut rec = new_record(ctx, key, started_unix);
    let jobs_before = jobs();
    let outcome = execute(ctx, plan, &program, &args, key.config, &mut rec);
    let jobs_after = jobs();
    match outcome {
        Ok(o) => {
            rec.wall_s = o.wall_s;
            if let Some(s) = &o.stats {
                rec.vm = Some(figures(s));
            }
            fill_result(&mut rec, &o);
        }
        Err(e) => rec.error = Some(e),
    }
    if let (Some(a), Some(b)) = (jobs_before, jobs_after) {
        if rec.wall_s > 0.0 {
            rec.load_jobs_per_s = Some(b.saturating_sub(a) as f64 / rec.wall_s);
        }
    }
    if let Some((host, _)) = dump {
        if rec.ok {
            match std::fs::read_to_string(&host)
                .map_err(|e| e.to_string())
                .and_then(|t| fwq::analyze(&t).map_err(|e| e.to_string()))
            {
                Ok(n) => rec.fwq = Some(n),
                Err(e) => {
                    rec.ok = false;
                    rec.error = Some(format!("reading the FWQ dump {}: {e}", host.display()));
                }
            }
        }
        let _ = std::fs::remove_file(host);
    }
    rec
}

fn execute(
    ctx: &RunContext,
    plan: &Plan,
    program: &Path,
    args: &[String],
    config: Config,
    rec: &mut RunRecord,
) -> Result<Outcome, String> {
    match config {
        Config::DualStack | Config::SingleStack => {
            let spec = vm_job(ctx, plan, program, args, config).expect("a VM job");
            run_job(ctx, spec, rec)
        }
        Config::Kvm => Err(KVM_NOT_BUILT.into()),
        Config::Native | Config::NativeThp => {
            let _thp = (config == Config::NativeThp)
                .then(|| super::thp::ThpGuard::set(&ctx.thp_enabled, "always"))
                .transpose()?;
            let cpus = ctx.zone_cpus();
            rec.cpus = cpus.clone();
            // In the zone's cpuset too: on cgroup v2 an isolated partition's CPUs are usable
            // only from inside it.
            let entry = dualstack_zones::enter(&ctx.paths, &ctx.zone)
                .map_err(|e| format!("entering zone {}: {e}", ctx.zone.name))?;
            let out = run_native(program, args, &cpus, &[]);
            entry
                .leave()
                .map_err(|e| format!("leaving zone {}: {e}", ctx.zone.name))?;
            out.map_err(|e| format!("running {}: {e}", program.display()))
        }
    }
}

/// Why a `kvm` run does not run in this build.
pub const KVM_NOT_BUILT: &str = "the kvm configuration (stock Linux guest under QEMU with the program on an initramfs) is planned but not built yet; no run was made";

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

pub(crate) fn figures(s: &RunStats) -> VmFigures {
    VmFigures {
        exits: s.exits.clone(),
        exits_total: s.exits_total,
        syscalls_total: s.syscalls_total,
        kvm: s
            .kvm_vcpu_delta
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        guest_wall_s: s.guest_wall_s,
        launch_s: s.launch_s,
        memory_setup_s: s.memory.setup_s,
        memory_source: serde_json::to_value(s.memory.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        memory_zero_wait_s: s.memory.zero_wait_s,
        vcpu_cpus: s.vcpus.iter().map(|v| v.host_cpus.clone()).collect(),
    }
}

fn fill_result(rec: &mut RunRecord, o: &Outcome) {
    let line = o
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(dualstack_apps::report::RESULT_PREFIX));
    let parsed = line.and_then(dualstack_apps::parse_result_line);
    let tail = || {
        let lines: Vec<&str> = o.stdout.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    let Some(r) = parsed else {
        rec.error = Some(format!(
            "exit status {}{}; no RESULT line in the output: {}",
            o.status,
            exit_detail(o),
            tail()
        ));
        return;
    };
    rec.time_s = Some(r.time_s);
    rec.verified = r.verified;
    rec.result = line
        .and_then(|l| l.strip_prefix(dualstack_apps::report::RESULT_PREFIX))
        .and_then(|j| serde_json::from_str(j).ok());
    if o.status != 0 || !r.verified {
        rec.error = Some(format!(
            "exit status {}{}, verified {}",
            o.status,
            exit_detail(o),
            r.verified
        ));
        return;
    }
    rec.ok = true;
}

fn exit_detail(o: &Outcome) -> String {
    match &o.stats {
        Some(s) if s.exit_status != 0 => format!(" ({:?})", s.exit),
        _ => String::new(),
    }
}
