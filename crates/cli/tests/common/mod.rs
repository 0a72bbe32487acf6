//! Helpers the MPI launcher tests share (mpi.rs, mpi_stacks.rs): one MPI job at a time, a
//! finished job's output and status, and the shared-memory files a job leaves in /dev/shm.

#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// One MPI job at a time (each takes both cores).
pub static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A finished launcher run.
pub struct Job {
    pub stdout: String,
    pub stderr: String,
    /// Exit status of the launcher (128+signal if it was killed).
    pub status: i32,
}

impl Job {
    /// stdout and stderr (launchers and MPI_Abort report on either).
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `c` (a launcher command) as one job: its output and exit status, with the MPI
/// shared-memory files it left removed.
pub fn run_job(mut c: Command) -> Job {
    let _one = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let shm = dualstack_eval::mpi_bench::MpiShmSegments::snapshot();
    let o = c.output().expect("run the MPI launcher");
    shm.remove_new();
    Job {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        status: o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
    }
}

/// Remove from `c`'s environment every setting of the MPI stacks' transports and components
/// (UCX_*, OMPI_MCA_*, MPIR_CVAR_*, PMIX_MCA_*) the test process may have inherited: the
/// stacks then run with their defaults.
pub fn default_mpi_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if ["UCX_", "OMPI_MCA_", "MPIR_CVAR_", "PMIX_MCA_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
}

/// This host's name (what MPI_Get_processor_name gives natively).
pub fn hostname() -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most 256 bytes into `host`.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    String::from_utf8_lossy(&host[..host.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned()
}
