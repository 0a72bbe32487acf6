//! Multi-threaded guests (pthreads, OpenMP, C++ and Rust threads): same output as natively,
//! one vCPU per thread, oversubscription reported, exit_group and faults from any thread.

mod common;

use std::time::Duration;

use common::*;
use dualstack_hpcvmm::ExitReport;

fn threaded(name: &str, args: &[&str]) -> (Outcome, dualstack_hpcvmm::RunStats) {
    let dir = tempdir();
    let spec = Spec::default()
        .dir(dir.path())
        .args(args)
        .timeout(Duration::from_secs(60));
    let (v, stats) = same_as_native(name, &spec);
    assert_exited(&stats, 0);
    (v, stats)
}

#[test]
fn mutex_condvar_ping_pong() {
    let (v, stats) = threaded("pingpong", &["200"]);
    assert_eq!(v.stdout, "rounds=200 total=600 joined=0,100\n");
    assert_eq!(stats.threads_created, 3, "main + 2 players");
    assert_eq!(stats.vcpus.len(), 3, "one vCPU per thread");
    let waits: u64 = stats.vcpus.iter().map(|v| v.futex_waits).sum();
    assert!(waits > 0, "the players block in futex waits");
}

#[test]
fn barriers() {
    let (v, _) = threaded("barrier", &[]);
    assert_eq!(v.stdout, "barrier phases=20 threads=3 consistent=1\n");
}

#[test]
fn detached_threads_and_vcpu_reuse() {
    let (v, stats) = threaded("detached", &[]);
    assert!(v.stdout.contains("wave 2 done=12 sum="), "{}", v.stdout);
    assert_eq!(stats.threads_created, 13);
}

#[test]
fn thread_local_storage() {
    let (v, _) = threaded("tls", &[]);
    assert!(
        v.stdout.contains("main counter=1000 buf0=0 zeroed=0"),
        "{}",
        v.stdout
    );
}

#[test]
fn openmp_reduction_and_parallel_for() {
    let (v, stats) = threaded("omp", &[]);
    assert!(v.stdout.contains("basel sum=1.644933"), "{}", v.stdout);
    assert!(v.stdout.contains("threads seen=1"), "{}", v.stdout);
    // libgomp sizes its team from sched_getaffinity: one thread per core of the run.
    let ncpu = dualstack_hpcvmm::host_affinity().unwrap().len() as u64;
    assert_eq!(stats.max_live_threads, ncpu, "{:?}", stats.vcpus.len());
}

#[test]
fn cxx_threads_with_exceptions() {
    let (v, _) = threaded("cxx_thread", &[]);
    assert!(
        v.stdout.contains("future 3 threw: worker 3 failed"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("hits=306"), "{}", v.stdout);
}

#[test]
fn rust_threads_with_arc_mutex() {
    let (v, _) = threaded("rust_thread", &[]);
    assert!(
        v.stdout.contains("counter=6000 rets=[0, 2, 4, 6]"),
        "{}",
        v.stdout
    );
    assert!(v
        .stdout
        .contains("panicking thread joined with error: true"));
}

#[test]
fn more_threads_than_cores() {
    let (v, stats) = threaded("many_threads", &["9"]);
    assert!(v.stdout.starts_with("threads=9 total="), "{}", v.stdout);
    assert_eq!(stats.max_live_threads, 10);
    assert!(
        stats.oversubscribed,
        "10 live threads on {:?} must be reported",
        stats.cpus
    );
    assert_eq!(stats.vcpus.len(), 10);
}

#[test]
fn exit_group_from_a_non_main_thread_ends_the_run() {
    let (v, stats) = same_as_native(
        "thread_exit",
        &Spec::default()
            .args(&["exit"])
            .timeout(Duration::from_secs(20)),
    );
    assert_eq!(v.stdout, "worker tid=other\n");
    assert_exited(&stats, 7);
}

#[test]
fn a_fault_in_a_non_main_thread_names_the_thread() {
    let (v, stats) = same_as_native(
        "thread_exit",
        &Spec::default()
            .args(&["fault"])
            .timeout(Duration::from_secs(20)),
    );
    assert_eq!(v.status, 139);
    let ExitReport::Faulted(f) = &stats.exit else {
        panic!("expected a fault: {:?}", stats.exit)
    };
    assert_eq!(f.addr, Some(16));
    assert_ne!(
        f.tid, 1000,
        "the worker faulted, not the main thread: {f:?}"
    );
    assert_ne!(f.vcpu, 0, "{f:?}");
}

#[test]

fn affinity_reports_the_run_cores_and_pinning_narrows_it() {
    let (v, _) = threaded("affinity", &[]);
    assert!(
        v.stdout.contains("after pin: count=1 on first=1"),
        "{}",
        v.stdout
    );
}

#[test]
fn fortran_openmp_file_io_and_arguments() {
    // gfortran -static -fopenmp: libgfortran's unit I/O, allocatables, an OpenMP reduction,
    // command-line arguments and system_clock, compared with the native run.
    let (v, stats) = threaded("fortran_omp", &["hi"]);
    // The thread count follows the host's cores (native and VM agree, checked above).
    assert!(
        v.stdout.starts_with("sum=   15.0858736534 threads="),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains(" arg=hi clock_ok=T"), "{}", v.stdout);
    assert_eq!(stats.enosys.len(), 0, "{:?}", stats.enosys);
}
