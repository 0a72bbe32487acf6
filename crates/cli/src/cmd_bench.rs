//! `dualstack bench ...`: benchmarks that print ratios measured side by side in one run.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// The HPC VMM's own figures: VM vs native, page faults, launch, exits per syscall,
    /// futex and barrier latency.
    Vmm(VmmArgs),
    /// MPI ping-pong latency/bandwidth (1 B..4 MiB), allreduce on every rank and a verified MPI
    /// HPCCG on two ranks, native vs one HPC VM per rank under MPICH's mpiexec, side by side in
    /// one run.
    Mpi(MpiArgs),
    /// The paper's isolation experiment: HPC mini-apps in dual-stack, single-stack and native
    /// configurations beside 0..all commodity cores of competing load (Figures 2, 4 and 5).
    Isolation(IsolationArgs),
    /// What a dualstack zone costs a Slurm job: submission -> first guest instruction with and
    /// without a zone, Prolog and Epilog durations, on contrib/slurm/test-cluster (run as root).
    Slurm(SlurmArgs),
    /// The control plane: job submission to first guest instruction through the API vs
    /// `dualstack run`, zone PUT/DELETE round trip, GET /v1/node requests/s under load.
    Api(ApiArgs),
}

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// Repetitions (one job with a zone and one without each, after one warm-up pair).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Nodes of the test cluster and of each job.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Memory of each node's zone.
    #[arg(long, default_value = "32M")]
    pub zone_memory: String,
    /// Use this running cluster (its slurm.conf) instead of bringing up the test cluster;
    /// needs --site-config too.
    #[arg(long, value_name = "FILE", requires = "site_config")]
    pub slurm_conf: Option<PathBuf>,
    /// The cluster's dualstack site configuration (dualstack-slurm.toml).
    #[arg(long, value_name = "FILE")]
    pub site_config: Option<PathBuf>,
    /// contrib/slurm/test-cluster (default: found beside the source tree of this binary or in
    /// the current directory).
    #[arg(long, value_name = "FILE")]
    pub test_cluster: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Repetitions of each latency.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Concurrent clients of the GET /v1/node load.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of that load.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn api(a: ApiArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let opts = dualstack_daemon::bench::Options {
        exe: std::env::current_exe().context("locating the dualstack executable")?,
        state_dir: global.state_dir.clone(),
        reps: a.reps,
        clients: a.clients,
        seconds: a.seconds,
        scratch: std::env::temp_dir().join(format!("dualstack-bench-api-{}", std::process::id())),
    };
    let report = dualstack_daemon::bench::run(&opts, &mut |l| eprintln!("bench: {l}"));
    let _ = std::fs::remove_dir_all(&opts.scratch);
    let report = report?;
    print!("{}", dualstack_daemon::bench::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct VmmArgs {
    /// Repetitions of each comparison.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Fewer repetitions and a smaller problem.
    #[arg(long)]
    pub quick: bool,
    /// Host CPUs to use (default: those this process may run on).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Instead: launch time vs memory size (64 MiB doubling up to --max-memory) for a warm
    /// zone, cold hugetlb and lazy memory, and zeroing throughput vs memset (needs root: it
    /// creates and releases a one-core zone).
    #[arg(long)]
    pub launch_curve: bool,
    /// Largest size of the launch curve.
    #[arg(long, default_value = "4G", value_parser = dualstack_topology::parse_size)]
    pub max_memory: u64,
    /// Only the jail's cost: launch and system call cost with the jail vs --no-jail.
    #[arg(long)]
    pub jail_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct MpiArgs {
    /// Runs of each configuration (alternating); the best per message size is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// One run of each, a fifth of the iterations.
    #[arg(long)]
    pub quick: bool,
    /// Guest memory of each rank's VM.
    #[arg(long, default_value = "1G")]
    pub memory: String,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn mpi(a: MpiArgs) -> anyhow::Result<i32> {
    let opts = dualstack_eval::mpi_bench::Options {
        dualstack_exe: std::env::current_exe().context("locating the dualstack executable")?,
        scratch: std::env::temp_dir().join(format!("dualstack-bench-mpi-{}", std::process::id())),
        reps: if a.quick { 1 } else { a.reps.max(1) },
        scale: if a.quick { 0.2 } else { 1.0 },
        memory: a.memory,
        hpccg: dualstack_eval::mpi_bench::HpccgSize::bench(a.quick),
    };
    let report = dualstack_eval::mpi_bench::run(&opts, &mut |line| eprintln!("bench: {line}"));
    let _ = std::fs::remove_dir_all(&opts.scratch);
    let report = report?;
    print!("{}", dualstack_eval::mpi_bench::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

pub fn run(cmd: BenchCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        BenchCmd::Vmm(a) if a.launch_curve => launch_curve(a, _global),
        BenchCmd::Vmm(a) => vmm(a),
        BenchCmd::Mpi(a) => mpi(a),
        BenchCmd::Isolation(a) => isolation(a, _global),
        BenchCmd::Slurm(a) => slurm(a),
        BenchCmd::Api(a) => api(a, _global),
    }
}

fn slurm(a: SlurmArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("locating the dualstack executable")?;
    let test_cluster = match a.test_cluster {
        Some(p) => p,
        None => {
            // target/release/dualstack -> the source tree; else the current directory.
            let rel = Path::new("contrib/slurm/test-cluster");
            exe.ancestors()
                .skip(1)
                .map(|d| d.join(rel))
                .chain(std::iter::once(rel.to_path_buf()))
                .find(|p| p.exists())
                .with_context(|| {
                    "contrib/slurm/test-cluster not found: run from the source tree or pass --test-cluster"
                })?
        }
    };
    anyhow::ensure!(
        a.nodes >= 1 && a.reps >= 1,
        "--nodes and --reps must be at least 1"
    );
    let opts = dualstack_eval::slurm_bench::Options {
        reps: a.reps,
        nodes: a.nodes,
        zone_memory: a.zone_memory,
        dualstack_exe: exe,
        existing: a.slurm_conf.zip(a.site_config),
        test_cluster,
        scratch: std::env::temp_dir().join(format!("dualstack-bench-slurm-{}", std::process::id())),
    };
    let result = dualstack_eval::slurm_bench::run(&opts, &mut |line| eprintln!("bench: {line}"));
    let _ = std::fs::remove_dir_all(&opts.scratch);
    let report = result?;
    print!("{}", dualstack_eval::slurm_bench::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

fn vmm(a: VmmArgs) -> anyhow::Result<i32> {
    let cpus = match &a.cpuset_cpus {
        Some(l) => crate::common::cpus_arg("--cpuset-cpus", l)?,
        None => dualstack_hpcvmm::host_affinity()?,
    };
    let opts = dualstack_eval::vmm_bench::Options {
        reps: if a.quick { 3 } else { a.reps.max(1) },
        cpus,
        dualstack_exe: std::env::current_exe().context("locating the dualstack executable")?,
        cg_n: if a.quick { 48 } else { 64 },
        cg_iters: 100,
        scratch: std::env::temp_dir().join(format!("dualstack-bench-{}", std::process::id())),
    };
    if a.jail_only {
        let j =
            dualstack_eval::vmm_bench::jail_cost(&opts, &mut |line| eprintln!("bench: {line}"))?;
        print!("{}", dualstack_eval::vmm_bench::render_jail(&j));
        if let Some(p) = a.json {
            std::fs::write(&p, serde_json::to_string_pretty(&j)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        return Ok(0);
    }
    let report = dualstack_eval::vmm_bench::run(&opts, &mut |line| eprintln!("bench: {line}"))?;
    let _ = std::fs::remove_dir_all(&opts.scratch);
    print!("{}", dualstack_eval::vmm_bench::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

fn launch_curve(a: VmmArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let mut sizes = vec![];
    let mut s: u64 = 64 << 20;
    while s <= a.max_memory {
        sizes.push(s);
        s *= 2;
    }
    if sizes.is_empty() {
        anyhow::bail!("--max-memory must be at least 64M");
    }
    let opts = dualstack_eval::launch_curve::CurveOptions {
        paths: crate::cmd_zone::paths(global)?,
        sizes,
        reps: if a.quick { 3 } else { a.reps.max(1) },
    };
    let report = dualstack_eval::launch_curve::run(&opts, &mut |line| eprintln!("bench: {line}"))?;
    print!("{}", dualstack_eval::launch_curve::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

// ---- bench isolation ----

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LoadArg {
    /// Commodity QEMU VMs running the build workload (1 vCPU per competing core).
    Vm,
    /// Native stress-ng processes on the commodity cores (hosts without QEMU).
    Stress,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SizeArg {
    Small,
    Default,
    Large,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TasksArg {
    Leave,
    ProjectOnly,
    Move,
}

#[derive(clap::Args, Debug)]
pub struct IsolationArgs {
    /// Repetitions of every (app, configuration, load level).
    #[arg(long, default_value_t = 10)]
    pub reps: u32,
    /// 3 repetitions of a subset of the apps (hpccg, minimd, amg, stream, fwq).
    #[arg(long)]
    pub quick: bool,
    /// Apps to run (comma-separated; default all: hpccg,minife,minimd,amg,phdmesh,stream,fwq;
    /// also hpccg-mpi, the MPI HPCCG on one rank per zone core (at least 2), one VM per rank,
    /// under MPICH; `none` for only the --program/--programs ones; default none when programs
    /// are given).
    #[arg(long, value_delimiter = ',')]
    pub apps: Option<Vec<String>>,
    /// A program of your own, NAME=COMMAND (repeatable): `{threads}` / `{ranks}` in COMMAND are
    /// filled in; its figure is its wall time and its check exit status 0 (a --programs file
    /// sets files, a figure regex, a check regex, an MPI launcher).
    #[arg(long = "program", value_name = "NAME=COMMAND")]
    pub program: Vec<String>,
    /// A TOML or JSON file of programs of your own (see the README).
    #[arg(long, value_name = "FILE")]
    pub programs: Option<PathBuf>,
    /// Run the `kvm` configuration under QEMU TCG where a stock guest cannot boot under KVM:
    /// correctness only, never a performance figure.
    #[arg(long)]
    pub kvm_tcg: bool,
    /// The apps' problem size preset.
    #[arg(long, value_enum, default_value = "default")]
    pub size: SizeArg,
    /// Configurations (comma-separated): dual-stack, hpcvmm-commodity (the single-stack
    /// stand-in: our VMM configured like a commodity one; `single-stack` is accepted), native,
    /// native-thp (native with transparent huge pages `always`), kvm (the commodity guest under
    /// QEMU/KVM).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dual-stack,hpcvmm-commodity,native"
    )]
    pub configs: Vec<String>,
    /// The competing load.
    #[arg(long, value_enum, default_value = "vm")]
    pub load: LoadArg,
    /// Competing cores at each level (comma-separated; default 0..all commodity cores).
    #[arg(long, value_delimiter = ',')]
    pub levels: Option<Vec<u32>>,
    /// Cores of the HPC zone (also every configuration's thread count); default half the
    /// node's cores, at least 1, leaving at least one commodity core.
    #[arg(long)]
    pub zone_cores: Option<u32>,
    /// Memory of the zone (huge pages) and of every VM run.
    #[arg(long, default_value = "1G")]
    pub memory: String,
    /// Memory of each commodity VM of the load, MiB.
    #[arg(long, default_value_t = 256)]
    pub vm_memory_mib: u64,
    /// Leave IRQ affinities and the unbound workqueue mask alone (shared test machines).
    #[arg(long)]
    pub no_steering: bool,
    /// What the zone does with host tasks on its cores.
    #[arg(long, value_enum, default_value = "leave")]
    pub host_tasks: TasksArg,
    /// Skip the unrecorded native warm-up run of each app.
    #[arg(long)]
    pub no_warmup: bool,
    /// Results folder (default results/<timestamp>).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted experiment in DIR (its plan.json decides what runs).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Longest one run may take, seconds.
    #[arg(long, default_value_t = 600)]
    pub run_timeout: u64,
}

fn isolation_plan(a: &IsolationArgs) -> anyhow::Result<dualstack_eval::isolation::Plan> {
    use dualstack_eval::isolation::{AppSize, Config, LoadKind, Plan, ALL_APPS, QUICK_APPS};
    let cpus = dualstack_hpcvmm::host_affinity()?.len() as u32;
    if cpus < 2 {
        anyhow::bail!("the isolation experiment needs at least 2 CPUs (an HPC zone and a commodity core); this process may use {cpus}");
    }
    let zone_cores = a.zone_cores.unwrap_or((cpus / 2).max(1));
    if zone_cores == 0 || zone_cores >= cpus {
        anyhow::bail!(
            "--zone-cores {zone_cores}: give between 1 and {} (one core must stay commodity)",
            cpus - 1
        );
    }
    let commodity = cpus - zone_cores;
    let configs = a
        .configs
        .iter()
        .map(|c| {
            Config::parse(c).with_context(|| {
                format!("unknown configuration {c:?}; use dual-stack, hpcvmm-commodity, native, native-thp, kvm")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut programs = a
        .program
        .iter()
        .map(|p| dualstack_eval::isolation::program::UserProgram::from_arg(p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(f) = &a.programs {
        programs.extend(dualstack_eval::isolation::program::load_file(f)?);
    }
    let apps = match (&a.apps, a.quick) {
        (Some(v), _) if v.iter().any(|x| x == "none") => vec![],
        (Some(v), _) => v.clone(),
        (None, _) if !programs.is_empty() => vec![],
        (None, true) => QUICK_APPS.map(String::from).to_vec(),
        (None, false) => ALL_APPS.map(String::from).to_vec(),
    };
    let mut configs = configs;
    let mut left_out = vec![];
    if configs.contains(&Config::Kvm) {
        let d = dualstack_commodity::accel::detect(
            std::path::Path::new("/sys"),
            std::path::Path::new("/dev/kvm"),
        );
        if d.accel != dualstack_commodity::spec::Accel::Kvm && !a.kvm_tcg {
            configs.retain(|c| *c != Config::Kvm);
            left_out.push((
                Config::Kvm,
                format!(
                    "a stock Linux guest cannot boot under KVM on this host ({}); --kvm-tcg runs it under QEMU TCG for correctness only",
                    d.reason
                ),
            ));
            if configs.is_empty() {
                anyhow::bail!("--configs kvm: {}", left_out[0].1);
            }
        }
    }
    Ok(Plan {
        apps,
        size: match a.size {
            SizeArg::Small => AppSize::Small,
            SizeArg::Default => AppSize::Default,
            SizeArg::Large => AppSize::Large,
        },
        app_args: vec![],
        configs,
        load: match a.load {
            LoadArg::Vm => LoadKind::Vm,
            LoadArg::Stress => LoadKind::Stress,
        },
        levels: a
            .levels
            .clone()
            .unwrap_or_else(|| (0..=commodity).collect()),
        reps: if a.quick { 3 } else { a.reps.max(1) },
        zone_cores,
        memory_bytes: dualstack_topology::parse_size(&a.memory)
            .with_context(|| format!("--memory {}", a.memory))?,
        load_vm_memory_mib: a.vm_memory_mib,
        warmup: !a.no_warmup,
        steer: !a.no_steering,
        host_tasks: match a.host_tasks {
            TasksArg::Leave => "leave",
            TasksArg::ProjectOnly => "project-only",
            TasksArg::Move => "move",
        }
        .into(),
        programs,
        left_out,
        kvm_tcg: a.kvm_tcg,
    })
}

/// This invocation as a shell line, with the DUALSTACK_* variables that steer it in front.
fn command_line() -> String {
    let mut parts: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("DUALSTACK_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.sort();
    parts.extend(std::env::args());
    parts.join(" ")
}

/// Runs an isolation plan with progress bars and prints the report; shared with `demo`.
pub(crate) fn run_isolation(
    plan: dualstack_eval::isolation::Plan,
    out_dir: PathBuf,
    resume: bool,
    run_timeout: u64,
    global: &GlobalOpts,
) -> anyhow::Result<dualstack_eval::isolation::Outcome> {
    let apps_dir = crate::common::apps_dir().context(
        "the static mini-apps were not found next to this binary; build them with scripts/build-apps or set DUALSTACK_APPS_DIR",
    )?;
    let opts = dualstack_eval::isolation::Options {
        plan,
        out_dir,
        resume,
        apps_dir,
        paths: crate::cmd_zone::paths(global)?,
        guest_cache: None,
        dualstack_exe: Some(std::env::current_exe().context("locating the dualstack executable")?),
        thp_enabled: PathBuf::from(dualstack_eval::isolation::thp::THP_ENABLED),
        run_timeout: std::time::Duration::from_secs(run_timeout),
        command: command_line(),
    };
    let mut bars = dualstack_eval::isolation::Bars::new();
    let result = dualstack_eval::isolation::run(&opts, &mut bars);
    bars.finish();
    Ok(result?)
}

fn isolation(a: IsolationArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let (plan, out, resume) = match &a.resume {
        Some(dir) => (
            dualstack_eval::isolation::load_plan(dir)?,
            dir.clone(),
            true,
        ),
        None => (
            isolation_plan(&a)?,
            a.out.clone().unwrap_or_else(|| {
                PathBuf::from("results").join(dualstack_eval::isolation::timestamp())
            }),
            false,
        ),
    };
    for (c, why) in &plan.left_out {
        eprintln!("isolation: configuration {c} left out: {why}");
    }
    if !plan.programs.is_empty() {
        eprintln!(
            "isolation: user programs {}",
            plan.programs
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "isolation: {} runs ({} apps x {} configurations x levels {:?} x {} reps, {} load) -> {}",
        plan.total_runs(),
        plan.all_apps().len(),
        plan.configs.len(),
        plan.levels,
        plan.reps,
        plan.load.as_str(),
        out.display()
    );
    let o = run_isolation(plan, out, resume, a.run_timeout, global)?;
    print!("{}", o.report_md);
    println!(
        "\n{} of {} runs recorded; results in {}",
        o.runs_recorded,
        o.runs_total,
        o.out_dir.display()
    );
    if o.interrupted {
        println!(
            "interrupted: continue with `dualstack bench isolation --resume {}`",
            o.out_dir.display()
        );
        return Ok(130);
    }
    Ok(0)
}
