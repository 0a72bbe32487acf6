//! `dualstack bench isolation`: the paper's isolation experiment (Figures 2, 4 and 5).
//!
//! For each app, configuration ([`Config`]: dual-stack, single-stack, native) and level of
//! competing load (0 .. all commodity cores), R repetitions, all in one run on one machine:
//!
//! 1. an HPC zone is created for the whole experiment (its cores are the dual-stack VM's and the
//!    native runs' cores, its huge pages the dual-stack VM's memory); the commodity cpuset holds
//!    the remaining cores, and all competing load lives there;
//! 2. the schedule of [`Plan::schedule`] runs: configurations interleaved within a repetition,
//!    load levels up and down (ABBA), one unit of load per competing core;
//! 3. each run is appended to `runs.jsonl` at once; `--resume DIR` skips runs recorded there;
//! 4. the tables, chart and targets are written to the results folder.
//!
//! Guards stop the load, release the zone (and its huge pages) and remove scratch files on
//! every exit path; Ctrl-C asks for a graceful stop ([`interrupt`]).

pub mod chart;
pub mod demo;
pub mod fwq;
pub mod interrupt;
pub mod load;
pub mod mpi_app;
pub mod plan;
pub mod program;
pub mod progress;
pub mod record;
pub mod report;
pub mod runner;
pub mod thp;
pub mod user;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dualstack_commodity::VmManager;
use dualstack_zones::{CpuRequest, HostPaths, HostTasks, ZoneOptions, ZoneRequest};
use serde::Serialize;

pub use plan::{AppSize, Config, LoadKind, Plan, RunKey, ALL_APPS, QUICK_APPS};
pub use progress::{Bars, Observer, Quiet};
pub use record::RunRecord;
pub use report::Analysis;

use load::LoadSet;
use runner::RunContext;

/// Everything `run` needs beyond the plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub plan: Plan,
    /// Results folder (created; must not hold another experiment unless `resume`).
    pub out_dir: PathBuf,
    pub resume: bool,
    /// Directory with the static mini-apps (scripts/build-apps).
    pub apps_dir: PathBuf,
    pub paths: HostPaths,
    /// Commodity guest cache (None: the commodity crate's default).
    pub guest_cache: Option<PathBuf>,
    /// Longest one run may take.
    pub run_timeout: Duration,
    /// The `dualstack` executable user programs' VMs run under (`dualstack run`).
    pub dualstack_exe: Option<PathBuf>,
    /// The THP mode file the `native-thp` configuration sets.
    pub thp_enabled: PathBuf,
    /// The command line that started this invocation (kept in `commands.txt`, quoted in the
    /// folder's README).
    pub command: String,
}

/// Failure of the experiment (runs that fail are recorded, not errors).
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Store(#[from] record::StoreError),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a plan of this harness ({source}); point --resume at a results folder of `dualstack bench isolation`")]
    BadPlan {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} already holds an experiment (plan.json); resume it with --resume {0}, or choose another --out")]
    Exists(PathBuf),
    #[error("mini-app {app} not found at {path}; build the apps with scripts/build-apps (or set DUALSTACK_APPS_DIR)")]
    NoApp { app: String, path: PathBuf },
    #[error("the MPI app {app} needs MPICH ({why}); install it with scripts/install-deps")]
    NoMpich { app: String, why: String },
    #[error("the competing load `vm` needs qemu-system-x86_64, which is not installed; install it (scripts/install-deps) or use --load stress")]
    NoQemu,
    #[error("building the commodity guest image for the VM load")]
    Guest(#[source] Box<dualstack_commodity::guest::GuestError>),
    #[error("reading the node's topology")]
    Node(#[source] Box<dualstack_zones::StatusError>),
    #[error("creating the HPC zone for the experiment")]
    Zone(#[source] Box<dualstack_zones::ZoneError>),
    #[error("starting the competing load")]
    Load(#[source] Box<load::LoadError>),
    #[error("cannot read this process's CPU affinity")]
    Affinity(#[source] std::io::Error),
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    #[error("program {program}: refused at its first run ({key}): {why}; the output was:\n{output}\nfix the figure regex (it must match the program's stdout and capture the number)")]
    FigureNeverMatches {
        program: String,
        key: String,
        why: String,
        output: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsolationError {
    let path = path.to_path_buf();
    move |source| IsolationError::Io { what, path, source }
}

/// What a finished (or stopped) experiment left.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub analysis: Analysis,
    pub interrupted: bool,
    pub runs_recorded: usize,
    pub runs_total: usize,
    pub out_dir: PathBuf,
    /// The tables and targets as markdown (also in `report.md`).
    pub report_md: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

pub const PLAN_FILE: &str = "plan.json";
pub const COMMANDS_FILE: &str = "commands.txt";

/// The plan stored in a results folder.
pub fn load_plan(dir: &Path) -> Result<Plan, IsolationError> {
    let path = dir.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    serde_json::from_str(&text).map_err(|source| IsolationError::BadPlan { path, source })
}

/// The zone, released when dropped (also on error or panic).
struct ZoneGuard {
    paths: HostPaths,
    name: String,
    zone: dualstack_zones::Zone,
}

impl Drop for ZoneGuard {
    fn drop(&mut self) {
        if let Err(e) = dualstack_zones::release(&self.paths, &self.name) {
            tracing::error!(
                "could not release zone {}: {e}; run `dualstack recover`",
                self.name
            );
            eprintln!(
                "dualstack: could not release zone {} ({e}); run `dualstack recover`",
                self.name
            );
        }
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn host_tasks(name: &str) -> HostTasks {
    match name {
        "move" => HostTasks::Move,
        "project-only" => HostTasks::ProjectOnly,
        _ => HostTasks::Leave,
    }
}

/// Whether `qemu-system-x86_64` runs on this host.
pub fn qemu_available() -> bool {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the experiment (or what is left of it) and writes the results folder.
pub fn run(opts: &Options, obs: &mut dyn Observer) -> Result<Outcome, IsolationError> {
    let plan = &opts.plan;
    plan.validate(None)?;
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    let plan_path = out.join(PLAN_FILE);
    if plan_path.exists() && !opts.resume {
        return Err(IsolationError::Exists(out.clone()));
    }
    if !plan_path.exists() {
        let text = serde_json::to_string_pretty(plan).expect("plans serialize");
        std::fs::write(&plan_path, text).map_err(io("write", &plan_path))?;
    }
    for app in &plan.apps {
        if mpi_app::is_mpi_app(app) {
            if let Some(why) = mpi_app::missing_mpich() {
                return Err(IsolationError::NoMpich {
                    app: app.clone(),
                    why,
                });
            }
            continue;
        }
        let path = opts.apps_dir.join(app);
        if !path.is_file() {
            return Err(IsolationError::NoApp {
                app: app.clone(),
                path,
            });
        }
    }
    let commands = out.join(COMMANDS_FILE);
    let line = format!("{}  {}\n", timestamp(), opts.command);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&commands)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
        .map_err(io("append to", &commands))?;
    let mut records = record::load(out)?;
    let done = record::done_keys(&records);
    let schedule = plan.schedule();
    let total = schedule.len();
    let pending: Vec<&RunKey> = schedule.iter().filter(|k| !done.contains(k)).collect();
    let mut interrupted = false;
    if !pending.is_empty() {
        if opts.resume && !done.is_empty() {
            obs.phase(&format!(
                "resuming: {} of {} runs already recorded in {}",
                total - pending.len(),
                total,
                out.display()
            ));
        }
        interrupted = measure(opts, &pending, &mut records, obs)?;
    }
    obs.phase("writing tables and charts");
    let (analysis, report_md, files) = write_outputs(out, plan, &records)?;
    let recorded = record::done_keys(&records).len();
    Ok(Outcome {
        analysis,
        interrupted,
        runs_recorded: recorded.min(total),
        runs_total: total,
        out_dir: out.clone(),
        report_md,
        files,
    })
}

/// Sets up zone and load, runs `pending` in order; returns whether a stop was requested.
fn measure(
    opts: &Options,
    pending: &[&RunKey],
    records: &mut Vec<RunRecord>,
    obs: &mut dyn Observer,
) -> Result<bool, IsolationError> {
    let plan = &opts.plan;
    let _signals =
        interrupt::Guard::install().map_err(io("install a handler for", Path::new("SIGINT")))?;
    let all_cpus = dualstack_hpcvmm::host_affinity().map_err(IsolationError::Affinity)?;
    let manager = match plan.load {
        LoadKind::Vm => {
            if !qemu_available() {
                return Err(IsolationError::NoQemu);
            }
            let mut m = VmManager::new(opts.paths.clone());
            if let Some(c) = &opts.guest_cache {
                m = m.with_cache_dir(c);
            }
            let builder = m.guest_builder();
            if builder.find().is_err() {
                obs.phase(&format!(
                    "building the commodity guest image in {} (first run only: downloading the Debian cloud kernel package, assembling a busybox initramfs)",
                    builder.dir().display()
                ));
                builder
                    .ensure(false)
                    .map_err(|e| IsolationError::Guest(Box::new(e)))?;
            }
            Some(m)
        }
        LoadKind::Stress => None,
    };

    let pid = std::process::id();
    let zone_name = format!("iso{pid}");
    obs.phase(&format!(
        "creating HPC zone {zone_name}: {} core(s), {} MiB of huge pages",
        plan.zone_cores,
        plan.memory_bytes >> 20
    ));
    let node =
        dualstack_zones::load_node(&opts.paths).map_err(|e| IsolationError::Node(Box::new(e)))?;
    let request = ZoneRequest {
        cpus: CpuRequest::Cores(plan.zone_cores),
        memory_bytes: plan.memory_bytes,
        numa_node: None,
        hugepage_kib: 2048,
    };
    let zopts = ZoneOptions {
        host_tasks: host_tasks(&plan.host_tasks),
        steer_irqs: plan.steer,
        narrow_workqueue: plan.steer,
        offline_memory: false,
    };
    let report = dualstack_zones::create(&opts.paths, &node, &zone_name, &request, &zopts)
        .map_err(|e| IsolationError::Zone(Box::new(e)))?;
    let zone = ZoneGuard {
        paths: opts.paths.clone(),
        name: zone_name.clone(),
        zone: report.zone,
    };
    let zone_cpus: Vec<usize> = zone.zone.cpus().iter().map(|c| c as usize).collect();
    let commodity: Vec<usize> = all_cpus
        .iter()
        .copied()
        .filter(|c| !zone_cpus.contains(c))
        .collect();
    plan.validate(Some(commodity.len() as u32))?;
    obs.phase(&format!(
        "zone {zone_name} holds cpus {zone_cpus:?}; commodity cores {commodity:?}"
    ));

    let scratch = Scratch(std::env::temp_dir().join(format!("dualstack-isolation-{pid}")));
    std::fs::create_dir_all(&scratch.0).map_err(io("create", &scratch.0))?;
    let ctx = RunContext {
        paths: opts.paths.clone(),
        zone: zone.zone.clone(),
        all_cpus,
        apps_dir: opts.apps_dir.clone(),
        scratch: scratch.0.clone(),
        load: plan.load,
        timeout: opts.run_timeout,
        dualstack_exe: opts.dualstack_exe.clone(),
        thp_enabled: opts.thp_enabled.clone(),
    };
    // Declared after the zone: dropped (load stopped) before the zone is released.
    let mut load = LoadSet::new(
        plan.load,
        manager,
        commodity,
        &format!("iso{pid}"),
        plan.load_vm_memory_mib,
    );
    let mut store = record::RunStore::open(&opts.out_dir)?;

    if plan.warmup {
        for app in &plan.apps {
            if interrupt::requested() {
                break;
            }
            obs.phase(&format!("warm-up: {app} natively (not recorded)"));
            let key = RunKey {
                app: app.clone(),
                config: Config::Native,
                level: 0,
                rep: 0,
            };
            let r = runner::run_one(&ctx, plan, &key, &|| None);
            if !r.ok {
                obs.warn(&format!(
                    "warm-up run of {app} failed: {}",
                    r.error.as_deref().unwrap_or("?")
                ));
            }
        }
    }

    let total = plan.total_runs();
    let mut done = record::done_keys(records).len();
    for key in pending {
        if interrupt::requested() {
            break;
        }
        if load.level() != key.level {
            load.set_level(key.level, &mut |m| obs.phase(m))
                .map_err(|e| IsolationError::Load(Box::new(e)))?;
        }
        if interrupt::requested() {
            break;
        }
        obs.run_start(key, done, total);
        let rec = runner::run_one(&ctx, plan, key, &|| load.jobs());
        if !rec.ok && interrupt::requested() {
            // Most likely killed by the same Ctrl-C: not a result; a resume runs it again.
            break;
        }
        if !rec.ok {
            obs.warn(&format!(
                "{key} failed: {}",
                rec.error.as_deref().unwrap_or("?")
            ));
        } else {
            done += 1;
        }
        store.append(&rec)?;
        obs.run_done(&rec, done, total);
        if user::figure_never_matched(&rec) && !records.iter().any(|r| r.app == rec.app && r.ok) {
            return Err(IsolationError::FigureNeverMatches {
                program: rec.app.clone(),
                key: key.to_string(),
                why: rec.error.clone().unwrap_or_default(),
                output: rec.output.clone().unwrap_or_default(),
            });
        }
        if let Some(old) = records.iter_mut().find(|r| r.key() == rec.key()) {
            *old = rec;
        } else {
            records.push(rec);
        }
    }
    let interrupted = interrupt::requested();
    if interrupted {
        obs.warn("stop requested: stopping the load and releasing the zone");
    }
    obs.phase("stopping the competing load");
    drop(load);
    obs.phase(&format!("releasing zone {zone_name}"));
    drop(zone);
    Ok(interrupted)
}

/// Everything stored in `results.json`.
#[derive(Serialize)]
struct Results<'a> {
    plan: &'a Plan,
    analysis: &'a Analysis,
    runs: &'a [RunRecord],
}

/// The results folder's tables, chart and JSON, from the runs recorded so far.
pub fn write_outputs(
    dir: &Path,
    plan: &Plan,
    records: &[RunRecord],
) -> Result<(Analysis, String, Vec<PathBuf>), IsolationError> {
    let analysis = report::analyze(plan, records);
    let md = report_markdown(plan, &analysis);
    let mut files = vec![];
    let mut write = |name: &str, text: &str| -> Result<(), IsolationError> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io("write", &p))?;
        files.push(p);
        Ok(())
    };
    let md = md + &failed_markdown(records);
    write("report.md", &md)?;
    write("README.md", &folder_readme(dir, plan, &analysis))?;
    let results = Results {
        plan,
        analysis: &analysis,
        runs: records,
    };
    write(
        "results.json",
        &serde_json::to_string_pretty(&results).expect("results serialize"),
    )?;
    for name in ["figure4.svg", "figure4.png"] {
        let p = dir.join(name);
        match chart::figure4(plan, &analysis.cells, &p) {
            Ok(()) => files.push(p),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    files.push(dir.join(record::RUNS_FILE));
    Ok((analysis, md, files))
}

fn host_facts() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let kvm = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("CPU".into(), format!("{model} ({cpus} CPUs)")),
        ("memory".into(), mem),
        (
            "KVM modules".into(),
            if kvm.is_empty() { "none".into() } else { kvm },
        ),
    ]
}

/// `README.md` of a results folder: what produced it, where, and what is in it.
pub fn folder_readme(dir: &Path, plan: &Plan, a: &Analysis) -> String {
    let commands = std::fs::read_to_string(dir.join(COMMANDS_FILE)).unwrap_or_default();
    let mut s = String::from("# Isolation experiment results\n\nProduced by (UTC time, command; later lines resumed the same experiment):\n\n```\n");
    s += &commands;
    s += "```\n\nHost:\n\n";
    for (k, v) in host_facts() {
        s += &format!("- {k}: {v}\n");
    }
    s += &format!(
        "\nPlan: apps {}, `--size {}`, configurations {}, {} load at {:?} competing cores, {} repetitions, a {}-core HPC zone with {} MiB of huge pages (full plan in `plan.json`).\n",
        plan.all_apps().join(", "),
        plan.size.as_str(),
        plan.configs.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
        plan.load.as_str(),
        plan.levels,
        plan.reps,
        plan.zone_cores,
        plan.memory_bytes >> 20
    );
    s += &programs_markdown(plan);
    s += "\nFiles: `report.md` (targets, Figure 5 and Figure 2 tables, FWQ noise), `figure4.png` / `figure4.svg` (runtime by competing cores), `runs.jsonl` (every run, raw), `results.json` (plan, analysis and runs together).\n\n## Targets\n\n```\n";
    s += &report::targets_text(a);
    s += "```\n";
    s
}

/// `report.md`: every table and the targets.
pub fn report_markdown(plan: &Plan, a: &Analysis) -> String {
    let mut s = format!(
        "# Isolation experiment\n\n{} app(s) x {} configuration(s) x load levels {:?} ({} load) x {} repetition(s); apps at `--size {}`{} with `--threads {}`; HPC zone of {} core(s) and {} MiB of huge pages.\n",
        plan.all_apps().len(),
        plan.configs.len(),
        plan.levels,
        plan.load.as_str(),
        plan.reps,
        plan.size.as_str(),
        if plan.app_args.is_empty() { String::new() } else { format!(" {}", plan.app_args.join(" ")) },
        plan.zone_cores,
        plan.zone_cores,
        plan.memory_bytes >> 20,
    );
    s += &programs_markdown(plan);
    s += &mpi_app::markdown(plan);
    s += "\n## Targets\n\n```\n";
    s += &report::targets_text(a);
    s += "```\n\n## Runtime (Figure 5)\n";
    s += &report::figure5_markdown(plan, &a.cells);
    s += "\n![runtime vs competing cores](figure4.png)\n\n## Page faults and exits (Figure 2)\n\nMeans per run over all load levels. `pf_taken` counts the shadow (nested here) page faults KVM took; KVM exits count every exit, handled in the kernel or by the VMM.\n\n";
    s += &report::figure2_markdown(&a.figure2);
    if !a.fwq.is_empty() {
        s += "\n## FWQ noise\n\n";
        s += &report::fwq_markdown(&a.fwq);
    }
    if !a.commodity_jobs_per_s.is_empty() {
        s += "\n## Commodity build throughput during the runs\n\n| configuration | competing cores | build jobs/s |\n| --- | ---: | ---: |\n";
        for (c, l, j) in &a.commodity_jobs_per_s {
            s += &format!("| {c} | {l} | {j:.2} |\n");
        }
    }
    s
}

/// The user's programs: how each ran and how its figure was read.
pub fn programs_markdown(plan: &Plan) -> String {
    if plan.programs.is_empty() && plan.left_out.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    if !plan.programs.is_empty() {
        s += "\nUser programs (their rows in the tables show the figure of merit: seconds of wall time, or the figure regex's number; a higher-is-better figure is shown as its reciprocal so every ratio reads as a slowdown):\n\n| program | command | launcher | figure | check |\n| --- | --- | --- | --- | --- |\n";
        for p in &plan.programs {
            let fig = match &p.figure {
                Some(f) => format!(
                    "`{f}` ({}-is-better)",
                    match p.better {
                        program::Better::Lower => "lower",
                        program::Better::Higher => "higher",
                    }
                ),
                None => "wall time, s".into(),
            };
            let check = match &p.check {
                Some(c) => format!("exit {} and `{c}`", p.exit_status),
                None => format!("exit {}", p.exit_status),
            };
            s += &format!(
                "| {} | `{}` | {} | {fig} | {check} |\n",
                p.name,
                p.command,
                p.launcher
                    .as_deref()
                    .map_or("-".into(), |l| format!("`{l}` ({} ranks)", p.ranks()))
            );
        }
    }
    for (c, why) in &plan.left_out {
        s += &format!("\nConfiguration `{c}` left out: {why}\n");
    }
    s
}

/// The failed runs (user programs' checks, timeouts, refusals), with the end of their output.
pub fn failed_markdown(records: &[RunRecord]) -> String {
    let failed: Vec<&RunRecord> = records.iter().filter(|r| !r.ok).collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n## Failed runs\n\n{} run(s) failed; they are left out of every table above (`runs.jsonl` keeps them, with their output).\n\n",
        failed.len()
    );
    for r in failed {
        s += &format!(
            "- **{}**: {}\n",
            r.key(),
            r.error.as_deref().unwrap_or("?").replace('\n', " ")
        );
        if let Some(o) = &r.output {
            s += "\n  ```\n";
            for l in o.lines().take(12) {
                s += &format!("  {l}\n");
            }
            s += "  ```\n";
        }
    }
    s
}

/// `YYYYMMDD-HHMMSS` (UTC) for default results folder names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"));
        assert_eq!(&t[8..9], "-");
    }

    #[test]
    fn outputs_from_synthetic_runs_and_resume_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan::test_plan();
        let mut recs = vec![];
        for rep in 0..p.reps {
            for app in &p.apps {
                for &c in &p.configs {
                    for level in [0, 1] {
                        recs.push(record::synthetic(
                            app,
                            c,
                            level,
                            rep,
                            1.0 + rep as f64 * 0.001,
                        ));
                    }
                }
            }
        }
        let (a, md, files) = write_outputs(dir.path(), &p, &recs).unwrap();
        assert_eq!(a.cells.len(), 12);
        assert!(md.contains("## Runtime (Figure 5)"));
        assert!(md.contains("## Page faults and exits (Figure 2)"));
        assert!(files.iter().any(|f| f.ends_with("report.md")));
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(v["runs"].as_array().unwrap().len(), recs.len());

        // A folder with a plan is only reused with resume.
        std::fs::write(
            dir.path().join(PLAN_FILE),
            serde_json::to_string(&p).unwrap(),
        )
        .unwrap();
        assert_eq!(load_plan(dir.path()).unwrap(), p);
        let opts = Options {
            plan: p.clone(),
            out_dir: dir.path().to_path_buf(),
            resume: false,
            apps_dir: dir.path().to_path_buf(),
            paths: HostPaths::fake(dir.path(), false),
            guest_cache: None,
            dualstack_exe: None,
            thp_enabled: PathBuf::from(thp::THP_ENABLED),
            run_timeout: Duration::from_secs(1),
            command: "test".into(),
        };
        assert!(matches!(
            run(&opts, &mut Quiet),
            Err(IsolationError::Exists(_))
        ));
        // Resuming a complete experiment only rewrites the outputs: no zone, no load.
        let mut store = record::RunStore::open(dir.path()).unwrap();
        for r in &recs {
            store.append(r).unwrap();
        }
        for app in &p.apps {
            std::fs::write(dir.path().join(app), b"").unwrap();
        }
        let o = run(
            &Options {
                resume: true,
                ..opts
            },
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(o.runs_recorded, o.runs_total);
        assert!(!o.interrupted);
    }
}
