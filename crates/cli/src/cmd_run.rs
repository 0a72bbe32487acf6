//! `dualstack run`: one static program in the HPC VMM. (Issue 2.)

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use dualstack_hpcvmm::{Backing, GuestPageSize, HugePageSize, RunConfig};

use crate::common::{parse_cpu_list, parse_size, GlobalOpts};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBacking {
    /// Preallocated, locked hugetlbfs pages (the HPC VMM's way).
    Hugetlb,
    /// Anonymous 4 KiB pages faulted on demand (a commodity VMM's way).
    Lazy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSizeArg {
    #[value(name = "4K")]
    K4,
    #[value(name = "2M")]
    M2,
    #[value(name = "1G")]
    G1,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Number of host cores for the run (the first N the caller may use).
    #[arg(long, conflicts_with = "cpuset_cpus")]
    pub cpus: Option<usize>,
    /// Exact host cores for the run, e.g. "2-5,8".
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Run inside this HPC zone: its cores and its huge pages.
    #[arg(long)]
    pub zone: Option<String>,
    /// Guest memory, e.g. 512M, 4G [default: 512M, or all of the zone's memory with --zone].
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Huge page size of the hugetlb backing.
    #[arg(long, value_enum, default_value = "2M")]
    pub hugepages: PageSizeArg,
    /// How guest memory is backed.
    #[arg(long, value_enum, default_value = "hugetlb")]
    pub memory_backing: MemoryBacking,
    /// Page size of the guest's page tables (default: 2M/1G with hugetlb, 4K with lazy).
    #[arg(long, value_enum)]
    pub guest_pages: Option<PageSizeArg>,
    /// NUMA node to take the huge pages from.
    #[arg(long)]
    pub numa_node: Option<u32>,
    /// Host directory the guest sees as its filesystem root.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Extra environment variable for the guest (KEY=VALUE); repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Start the guest with an empty environment (plus --env).
    #[arg(long)]
    pub clear_env: bool,
    /// Serve every clock read as a system call (no vDSO).
    #[arg(long)]
    pub no_vdso: bool,
    /// Write the run's statistics as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Print a one-line summary of the run on stderr.
    #[arg(long)]
    pub summary: bool,
    /// End the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// The program and its arguments.
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub program: Vec<String>,
}

/// Guest memory when neither --memory nor a zone says otherwise.
const DEFAULT_MEMORY: u64 = 512 << 20;

/// Resolve a program name: a path, or the name of a bundled mini-app.
pub fn resolve_program(name: &str) -> PathBuf {
    let p = PathBuf::from(name);
    if name.contains('/') || p.exists() {
        return p;
    }
    crate::common::apps_dir()
        .map(|d| d.join(name))
        .filter(|c| c.exists())
        .unwrap_or(p)
}

pub fn build_config(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let program = resolve_program(&args.program[0]);
    let mut cfg = RunConfig::new(program, args.program.clone());
    cfg.memory = args.memory.unwrap_or(DEFAULT_MEMORY);
    let page_size = match args.hugepages {
        PageSizeArg::G1 => HugePageSize::Size1G,
        PageSizeArg::M2 => HugePageSize::Size2M,
        PageSizeArg::K4 => anyhow::bail!("--hugepages takes 2M or 1G"),
    };
    cfg.backing = match args.memory_backing {
        MemoryBacking::Hugetlb => Backing::Hugetlb {
            page_size,
            numa_node: args.numa_node,
        },
        MemoryBacking::Lazy => Backing::Lazy,
    };
    cfg.guest_page_size = args.guest_pages.map(|p| match p {
        PageSizeArg::K4 => GuestPageSize::Size4K,
        PageSizeArg::M2 => GuestPageSize::Size2M,
        PageSizeArg::G1 => GuestPageSize::Size1G,
    });
    let allowed =
        dualstack_hpcvmm::host_affinity().context("reading this process's CPU affinity")?;
    cfg.cpus = match (&args.cpuset_cpus, args.cpus) {
        (Some(list), _) => {
            let cpus = parse_cpu_list(list)?;
            if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
                anyhow::bail!("--cpuset-cpus {list}: CPU {bad} is not available to this process (allowed: {allowed:?})");
            }
            cpus
        }
        (None, Some(n)) => {
            if n == 0 || n > allowed.len() {
                anyhow::bail!(
                    "--cpus {n}: this process may use {} CPUs ({allowed:?})",
                    allowed.len()
                );
            }
            allowed[..n].to_vec()
        }
        (None, None) => allowed,
    };
    cfg.root = args.root.clone();
    if !args.clear_env {
        cfg.env = std::env::vars_os()
            .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v.to_str()?)))
            .collect();
    }
    for e in &args.env {
        if !e.contains('=') {
            anyhow::bail!("--env {e}: expected KEY=VALUE");
        }
        let key = e.split('=').next().unwrap_or_default();
        cfg.env.retain(|x| x.split('=').next() != Some(key));
        cfg.env.push(e.clone());
    }
    cfg.timeout = args.timeout.map(Duration::from_secs_f64);
    cfg.vdso = !args.no_vdso;
    Ok(cfg)
}

pub fn run(args: RunArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let cfg = build_config(&args)?;
    let stats = match &args.zone {
        Some(zone) => crate::cmd_zone::run_in_zone(zone, cfg, args.memory, global)?,
        // Inside a Slurm job step: this node's zone of the job (issue 14).
        None => match crate::cmd_slurm::step_zone()? {
            Some(sz) => crate::cmd_slurm::run_in_step_zone(&sz, cfg, args.memory)?,
            None => dualstack_hpcvmm::run(&cfg)?,
        },
    };
    report(&stats, args.stats.as_deref(), args.summary)?;
    Ok(stats.exit_status)
}

/// Print the fault/timeout report, the summary, and write the JSON statistics.
pub fn report(
    stats: &dualstack_hpcvmm::RunStats,
    json: Option<&std::path::Path>,
    summary: bool,
) -> anyhow::Result<()> {
    use dualstack_hpcvmm::ExitReport;
    match &stats.exit {
        ExitReport::Faulted(f) => {
            eprint!(
                "dualstack: guest killed by {} ({}): {} at rip {:#x}",
                f.signal_name, f.signal, f.what, f.rip
            );
            if let Some(a) = f.addr {
                eprint!(", address {a:#x}");
            }
            if let Some(e) = f.error_code {
                eprint!(", error code {e:#x}");
            }
            eprintln!(" (thread {}, vCPU {})", f.tid, f.vcpu);
        }
        ExitReport::TimedOut { after_s } => {
            eprintln!(
                "dualstack: guest did not finish within --timeout; stopped after {after_s:.2} s"
            );
        }
        ExitReport::VmmError { message } => {
            eprintln!("dualstack: VMM error while the guest ran: {message}")
        }
        ExitReport::Exited { .. } => {}
    }
    if summary {
        eprintln!("{}", stats.summary());
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(stats)?;
        std::fs::write(path, text)
            .with_context(|| format!("writing statistics to {}", path.display()))?;
    }
    Ok(())
}
