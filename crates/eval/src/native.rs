//! Running a benchmark program as a plain host process pinned to given cores (the "native"
//! configuration), and as an HPC VM guest, capturing output the same way.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use dualstack_hpcvmm::{RunConfig, RunStats};

/// Output and wall time of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
    pub wall_s: f64,
    pub stats: Option<RunStats>,
}

/// Run `program args` natively, pinned to `cpus`, with `env` added.
pub fn run_native(
    program: &Path,
    args: &[String],
    cpus: &[usize],
    env: &[(String, String)],
) -> std::io::Result<Outcome> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let cpus = cpus.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // sched_setaffinity on itself (no allocation).
    unsafe {
        cmd.pre_exec(move || dualstack_hpcvmm::set_thread_affinity(&cpus));
    }
    let t = Instant::now();
    let o = cmd.output()?;
    Ok(Outcome {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        status: o.status.code().unwrap_or(-1),
        wall_s: t.elapsed().as_secs_f64(),
        stats: None,
    })
}

/// Run the same program in the HPC VMM; `cfg` supplies memory, backing and cpus.
pub fn run_vm(mut cfg: RunConfig, scratch: &Path) -> Result<Outcome, dualstack_hpcvmm::VmmError> {
    let out = scratch.join(format!("vm-stdout-{}", std::process::id()));
    cfg.stdout = Some(out.clone());
    let t = Instant::now();
    let stats = dualstack_hpcvmm::run(&cfg)?;
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    Ok(Outcome {
        stdout,
        status: stats.exit_status,
        wall_s,
        stats: Some(stats),
    })
}
