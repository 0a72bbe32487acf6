//! `dualstack demo`: the README's main job, a short isolation experiment with a printed
//! summary (the plan is `dualstack_eval::isolation::demo`).

use std::path::PathBuf;

use crate::cmd_bench::LoadArg;
use crate::common::GlobalOpts;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Competing load (default: commodity VMs when QEMU is installed, else stress-ng).
    #[arg(long, value_enum)]
    pub load: Option<LoadArg>,
    /// Repetitions.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Results folder (default: a new folder under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(a: DemoArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    use dualstack_eval::isolation::{demo, qemu_available, timestamp, LoadKind};
    let load = match a.load {
        Some(LoadArg::Vm) => LoadKind::Vm,
        Some(LoadArg::Stress) => LoadKind::Stress,
        None if qemu_available() => LoadKind::Vm,
        None => {
            eprintln!(
                "demo: qemu-system-x86_64 is not installed; using stress-ng as the competing load"
            );
            LoadKind::Stress
        }
    };
    let cpus = dualstack_hpcvmm::host_affinity()?.len();
    let mut plan = demo::plan(cpus, load);
    plan.reps = a.reps.max(1);
    let out = a
        .out
        .unwrap_or_else(|| std::env::temp_dir().join(format!("dualstack-demo-{}", timestamp())));
    println!(
        "dualstack demo: HPCCG in a {}-core HPC zone, dual-stack vs single-stack vs native, competing load {} at {:?} cores, {} repetitions ({} runs)",
        plan.zone_cores,
        plan.load.as_str(),
        plan.levels,
        plan.reps,
        plan.total_runs()
    );
    let o = crate::cmd_bench::run_isolation(plan.clone(), out, false, 300, global)?;
    println!(
        "{}",
        dualstack_eval::isolation::report::figure5_markdown(&plan, &o.analysis.cells)
    );
    println!("Page faults and exits per run:\n");
    println!(
        "{}",
        dualstack_eval::isolation::report::figure2_markdown(&o.analysis.figure2)
    );
    println!(
        "Targets:\n{}",
        dualstack_eval::isolation::report::targets_text(&o.analysis)
    );
    println!(
        "{} of {} runs recorded; tables, chart (figure4.png) and raw JSON in {}",
        o.runs_recorded,
        o.runs_total,
        o.out_dir.display()
    );
    Ok(if o.interrupted { 130 } else { 0 })
}
