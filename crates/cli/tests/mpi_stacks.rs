//! The stock MPI stacks, unchanged, with one HPC VM per rank (issue 12): the test program
//! (tests/mpi_guests/mpi_suite.c) built DYNAMICALLY with Debian's `mpicc.mpich` (MPICH 4,
//! ch4:ucx) and `mpicc.openmpi` (Open MPI 4.1), run with 2 ranks under `mpiexec.hydra` and
//! `mpirun.openmpi` natively and as `<launcher> -n 2 dualstack run -- ./app`, with the stacks'
//! default environment: no UCX_*, OMPI_MCA_* or MPIR_CVAR_* setting (any the test process
//! inherited is removed), so UCX's default transports (tcp, sysv, posix with its proc link,
//! cma) and Open MPI's defaults (ob1 with vader and its CMA single copy) are what runs. What
//! the job prints on stdout and how it ends must equal the native run under the same launcher.
//! One job at a time: two cores are shared by every test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{default_mpi_env, run_job, Job};

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");

#[derive(Clone, Copy, Debug)]
enum Stack {
    Mpich,
    OpenMpi,
}

impl Stack {
    fn compiler(self) -> &'static str {
        match self {
            Stack::Mpich => "mpicc.mpich",
            Stack::OpenMpi => "mpicc.openmpi",
        }
    }

    fn launcher(self) -> &'static str {
        match self {
            Stack::Mpich => "mpiexec.hydra",
            Stack::OpenMpi => "mpirun.openmpi",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stack::Mpich => "mpich",
            Stack::OpenMpi => "openmpi",
        }
    }

    /// The dynamically linked test program, built once per stack (None: the stack is absent).
    fn program(self) -> Option<&'static Path> {
        static MPICH: OnceLock<Option<PathBuf>> = OnceLock::new();
        static OPENMPI: OnceLock<Option<PathBuf>> = OnceLock::new();
        let cell = match self {
            Stack::Mpich => &MPICH,
            Stack::OpenMpi => &OPENMPI,
        };
        cell.get_or_init(|| {
            if !dualstack_testutil::have_tool(self.compiler(), "--version")
                || !dualstack_testutil::have_tool(self.launcher(), "--version")
            {
                return None;
            }
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mpi_guests");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("mpi_suite-{}-dyn", self.name()));
            let st = Command::new(self.compiler())
                .arg("-O2")
                .arg(src.join("mpi_suite.c"))
                .arg("-o")
                .arg(&out)
                .output()
                .expect("run mpicc");
            assert!(
                st.status.success(),
                "{} failed:\n{}",
                self.compiler(),
                String::from_utf8_lossy(&st.stderr)
            );
            Some(out)
        })
        .as_deref()
    }

    fn ready(self) -> bool {
        if !dualstack_testutil::have_kvm() {
            dualstack_testutil::missing("/dev/kvm");
            return false;
        }
        if self.program().is_none() {
            dualstack_testutil::missing(&format!(
                "{} and {} (scripts/install-deps)",
                self.compiler(),
                self.launcher()
            ));
            return false;
        }
        true
    }

    /// Run `mode` with 2 ranks, natively or one VM per rank.
    fn job(self, in_vm: bool, mode: &str) -> Job {
        let prog = self.program().expect("checked by ready()");
        let mut c = Command::new("timeout");
        c.args(["120", self.launcher()]);
        // SAFETY: geteuid has no preconditions.
        if matches!(self, Stack::OpenMpi) && unsafe { libc::geteuid() } == 0 {
            c.arg("--allow-run-as-root");
        }
        c.args(["-n", "2"]);
        if in_vm {
            c.args([
                BIN,
                "run",
                "--memory-backing",
                "lazy",
                "--memory",
                "1G",
                "--",
            ]);
        }
        c.arg(prog).arg(mode).current_dir(prog.parent().unwrap());
        default_mpi_env(&mut c);
        run_job(c)
    }

    /// Natively, then one VM per rank: the launcher's exit status must match.
    fn same_as_native(self, mode: &str) -> (Job, Job) {
        let native = self.job(false, mode);
        let vm = self.job(true, mode);
        assert_eq!(
            native.status,
            vm.status,
            "{} {mode}: the launcher's exit status differs\nnative: {}\nVM: {}",
            self.name(),
            native.all(),
            vm.all()
        );
        (native, vm)
    }

    fn check(self, mode: &str, expect: &str) {
        if !self.ready() {
            return;
        }
        let (native, vm) = self.same_as_native(mode);
        assert_eq!(native.status, 0, "{}", native.all());
        assert_eq!(native.stdout, expect, "native run of {mode}");
        assert_eq!(
            vm.stdout,
            native.stdout,
            "{} {mode} in VMs: {}",
            self.name(),
            vm.stderr
        );
    }

    fn hello(self) {
        let host = common::hostname();
        self.check(
            "hello",
            &format!("hello from rank 0 of 2 on {host}\nhello from rank 1 of 2 on {host}\n"),
        );
    }

    fn abort(self) {
        if !self.ready() {
            return;
        }
        let (native, _vm) = self.same_as_native("abort");
        assert_eq!(native.status, 3, "{}", native.all());
    }

    fn segv(self) {
        if !self.ready() {
            return;
        }
        let (native, vm) = self.same_as_native("segv");
        assert_ne!(native.status, 0, "{}", native.all());
        // The launcher names the fault as natively.
        let fault = |j: &Job| {
            j.all()
                .lines()
                .any(|l| l.contains("Segmentation fault") && !l.contains("***"))
        };
        assert!(fault(&native), "{}", native.all());
        assert!(fault(&vm), "{}", vm.all());
        assert!(
            vm.stderr.contains("guest killed by SIGSEGV"),
            "{}",
            vm.stderr
        );
        // Nothing left behind: no rank of the job still running.
        let prog = self.program().unwrap().to_string_lossy().into_owned();
        let left = Command::new("pgrep")
            .args(["-f", &format!("{prog} segv")])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "ranks left running: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
}

const RING: &str = "ring: 100 laps, token 200\n";
const ALLREDUCE: &str = "allreduce: sum 6144.000 max 11 min 1\n";
const BARRIER: &str = "barrier: 1000 barriers on 2 ranks, 2000 passed\n";
const NONBLOCKING: &str = "nonblocking: 16 messages each way, 0 wrong words\n";
const BIG: &str = "big: 64 MiB sent, receiver's checksum 14846040699354218496\n";

#[test]
fn mpich_hello_with_processor_names() {
    Stack::Mpich.hello();
}

#[test]
fn mpich_ring() {
    Stack::Mpich.check("ring", RING);
}

#[test]
fn mpich_allreduce() {
    Stack::Mpich.check("allreduce", ALLREDUCE);
}

#[test]
fn mpich_barrier_loop() {
    Stack::Mpich.check("barrier", BARRIER);
}

#[test]
fn mpich_isend_irecv_waitall() {
    Stack::Mpich.check("nonblocking", NONBLOCKING);
}

#[test]
fn mpich_message_of_64_mib() {
    Stack::Mpich.check("big", BIG);
}

#[test]
fn mpich_abort_ends_the_job_with_its_code() {
    Stack::Mpich.abort();
}

#[test]
fn mpich_segfaulting_rank_ends_the_job_as_natively() {
    Stack::Mpich.segv();
}

#[test]
fn openmpi_hello_with_processor_names() {
    Stack::OpenMpi.hello();
}

#[test]
fn openmpi_ring() {
    Stack::OpenMpi.check("ring", RING);
}

#[test]
fn openmpi_allreduce() {
    Stack::OpenMpi.check("allreduce", ALLREDUCE);
}

#[test]
fn openmpi_barrier_loop() {
    Stack::OpenMpi.check("barrier", BARRIER);
}

#[test]
fn openmpi_isend_irecv_waitall() {
    Stack::OpenMpi.check("nonblocking", NONBLOCKING);
}

#[test]
fn openmpi_message_of_64_mib() {
    Stack::OpenMpi.check("big", BIG);
}

#[test]
fn openmpi_abort_ends_the_job_with_its_code() {
    Stack::OpenMpi.abort();
}

#[test]
fn openmpi_segfaulting_rank_ends_the_job_as_natively() {
    Stack::OpenMpi.segv();
}
