//! `dualstack bench ...`: benchmarks that print ratios measured side by side in one run.

use std::path::PathBuf;

use anyhow::Context;

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// The HPC VMM's own figures: VM vs native, page faults, launch, exits per syscall,
    /// futex and barrier latency.
    Vmm(VmmArgs),
    /// The paper's isolation experiment.
    Isolation,
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
}

pub fn run(cmd: BenchCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        BenchCmd::Vmm(a) => vmm(a),
        BenchCmd::Isolation => anyhow::bail!("`dualstack bench isolation` is not implemented yet"),
    }
}

fn vmm(a: VmmArgs) -> anyhow::Result<i32> {
    let cpus = match &a.cpuset_cpus {
        Some(l) => crate::common::parse_cpu_list(l)?,
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
    let report = dualstack_eval::vmm_bench::run(&opts, &mut |line| eprintln!("bench: {line}"))?;
    let _ = std::fs::remove_dir_all(&opts.scratch);
    print!("{}", dualstack_eval::vmm_bench::render(&report));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}
