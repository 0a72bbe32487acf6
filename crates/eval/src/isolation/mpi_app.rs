//! Built-in MPI apps of the isolation experiment (`--apps hpccg-mpi`): the project's own MPI
//! programs, built statically against Debian's libmpich.a in the experiment's scratch
//! directory, and run like an MPI user program ([`super::user`]) under MPICH's Hydra: natively
//! `mpiexec.hydra ... PROGRAM`, in a VM configuration `mpiexec.hydra ... dualstack run ... --
//! PROGRAM`, one VM per rank (in dual stack `--zone`, which places each rank on its own zone
//! cores by its local rank).
//!
//! One rank per zone core (at least 2), each bound by Hydra to one zone core in turn
//! (`-bind-to user:...`; `-bind-to core` would ignore the zone's cpuset); with fewer zone cores
//! than ranks the ranks share them, as they would natively. UCX runs on shared memory only
//! (`UCX_TLS=self,sm`, `UCX_POSIX_USE_PROC_LINK=n`, as `dualstack bench mpi` does), set on the
//! launcher's command line (`-genv`) so both configurations get the same.

use std::path::{Path, PathBuf};

use super::plan::{AppSize, LoadKind, Plan, RunKey};
use super::program::{Better, UserProgram};
use super::record::RunRecord;
use super::runner::RunContext;
use crate::mpi_bench;

/// The built-in MPI apps, in report order.
pub const MPI_APPS: [&str; 1] = ["hpccg-mpi"];

/// The launcher every built-in MPI app runs under.
pub const MPIEXEC: &str = "mpiexec.hydra";

/// Whether `name` is a built-in MPI app.
pub fn is_mpi_app(name: &str) -> bool {
    MPI_APPS.contains(&name)
}

/// Why the built-in MPI apps cannot run here (None: MPICH is installed).
pub fn missing_mpich() -> Option<String> {
    if !Path::new(mpi_bench::LIBMPICH).exists() {
        return Some(format!("{} is missing", mpi_bench::LIBMPICH));
    }
    if std::process::Command::new(MPIEXEC)
        .arg("--version")
        .output()
        .is_err()
    {
        return Some(format!("{MPIEXEC} is not installed"));
    }
    None
}

/// Ranks of a built-in MPI app in a zone of `cores` cores: one per core, at least 2.
pub fn ranks(cores: u32) -> u32 {
    cores.max(2)
}

/// HPCCG's problem per rank for `size`: (points along each axis, CG iterations).
fn hpccg_problem(size: AppSize) -> (u32, u32) {
    match size {
        AppSize::Small => (16, 60),
        AppSize::Default => (64, 150),
        AppSize::Large => (96, 150),
    }
}

/// Where the app's executable is built (once per experiment).
fn binary(ctx: &RunContext, name: &str) -> PathBuf {
    ctx.scratch.join("mpi-apps").join(name.replace('-', "_"))
}

/// The built-in MPI app `name` as the user program the run executes, its executable built on
/// first use. `Err` says why it cannot run.
pub fn program(ctx: &RunContext, plan: &Plan, name: &str) -> Result<UserProgram, String> {
    let exe = binary(ctx, name);
    if !exe.is_file() {
        if let Some(why) = missing_mpich() {
            return Err(format!(
                "{name} needs MPICH ({why}): run scripts/install-deps"
            ));
        }
        let dir = exe.parent().expect("in a directory");
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = exe
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        let built = match name {
            "hpccg-mpi" => mpi_bench::build(dir, &file, mpi_bench::HPCCG_SOURCE),
            _ => return Err(format!("{name} is not a built-in MPI app")),
        };
        built.map_err(|e| format!("building {name}: {e}"))?;
    }
    let ranks = ranks(plan.zone_cores);
    let cpus = ctx.zone_cpus();
    let bind: Vec<String> = (0..ranks as usize)
        .map(|r| {
            cpus.get(r % cpus.len().max(1))
                .copied()
                .unwrap_or(0)
                .to_string()
        })
        .collect();
    let mut launcher = format!("{MPIEXEC} -bind-to user:{}", bind.join(","));
    for (k, v) in mpi_bench::UCX_ENV {
        launcher += &format!(" -genv {k} {v}");
    }
    launcher += " -n {ranks}";
    let (n, iterations) = hpccg_problem(plan.size);
    let file = exe
        .file_name()
        .expect("named")
        .to_string_lossy()
        .into_owned();
    Ok(UserProgram {
        name: name.to_string(),
        command: format!("./{file} {n} {n} {n} {iterations}"),
        files: vec![exe],
        // The solve time of the slowest rank (setup and MPI start-up excluded, as for hpccg).
        figure: Some(r"(?m)^hpccg-mpi ([0-9.]+) ".into()),
        better: Better::Lower,
        check: Some(r"(?m)^PASS$".into()),
        exit_status: 0,
        launcher: Some(launcher),
        ranks: Some(ranks),
    })
}

/// The record of a run that could not start (`error` says why).
pub fn failed(key: &RunKey, load: LoadKind, started_unix: f64, error: String) -> RunRecord {
    RunRecord {
        app: key.app.clone(),
        config: key.config,
        level: key.level,
        rep: key.rep,
        load,
        ok: false,
        error: Some(error),
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

/// The report's paragraph on the built-in MPI apps of `plan` (empty without any).
pub fn markdown(plan: &Plan) -> String {
    let apps: Vec<&String> = plan.apps.iter().filter(|a| is_mpi_app(a)).collect();
    if apps.is_empty() {
        return String::new();
    }
    let (n, iterations) = hpccg_problem(plan.size);
    format!(
        "\nMPI apps ({}): the MPI HPCCG ({n}x{n}x{n} points per rank, {iterations} CG iterations, \
         halo exchange of one plane per z neighbour, verified against its exact solution) on {} \
         ranks under `{MPIEXEC}` (MPICH, static), one rank per zone core in turn; in a VM \
         configuration one VM per rank. Its figure is the slowest rank's solve time, s.\n",
        apps.iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        ranks(plan.zone_cores)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_and_check_read_the_programs_output() {
        let p = UserProgram {
            name: "hpccg-mpi".into(),
            command: "./hpccg_mpi 16 16 16 60".into(),
            files: vec![],
            figure: Some(r"(?m)^hpccg-mpi ([0-9.]+) ".into()),
            better: Better::Lower,
            check: Some(r"(?m)^PASS$".into()),
            exit_status: 0,
            launcher: Some("mpiexec.hydra -n {ranks}".into()),
            ranks: Some(2),
        };
        let out =
            "hpccg-mpi: solve 0.5 s, 20 MFLOPS\nhpccg-mpi 0.512 20.1 60 5.7e-19 1.7e-15\nPASS\n";
        assert_eq!(p.read_figure(out, 9.0).unwrap(), 0.512);
        assert!(p.check(out, 0).is_ok());
        assert!(p.check(&out.replace("PASS", "FAIL"), 1).is_err());
        assert_eq!(ranks(1), 2);
        assert_eq!(ranks(4), 4);
        assert!(is_mpi_app("hpccg-mpi") && !is_mpi_app("hpccg"));
    }
}
