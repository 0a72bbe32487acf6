//! Helpers the MPI launcher tests share (mpi.rs, mpi_stacks.rs): one MPI job at a time, a
//! finished job's output and status, and the shared-memory files a job leaves in /dev/shm.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
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

/// Prefixes of the /dev/shm files MPI stacks make: UCX's posix segments (MPICH ch4:ucx and
/// Open MPI's pml ucx) and Open MPI's vader BTL segments.
const SHM_PREFIXES: [&str; 2] = ["ucx_shm_posix_", "vader_segment."];

/// The MPI shared-memory files in /dev/shm before a job: [`ShmFiles::remove_new`] removes the
/// ones of this user that appeared since (a rank that aborts or faults leaves them, natively
/// too).
pub struct ShmFiles(std::collections::BTreeSet<std::path::PathBuf>);

impl ShmFiles {
    fn list() -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                SHM_PREFIXES.iter().any(|p| n.starts_with(p))
            })
            .map(|e| e.path())
            .collect()
    }

    pub fn snapshot() -> Self {
        ShmFiles(Self::list())
    }

    pub fn remove_new(&self) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        for p in Self::list().difference(&self.0) {
            if std::fs::metadata(p).is_ok_and(|m| m.uid() == me) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Run `c` (a launcher command) as one job: its output and exit status, with the MPI
/// shared-memory files it left removed.
pub fn run_job(mut c: Command) -> Job {
    let _one = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let shm = ShmFiles::snapshot();
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
