//! Signals delivered to guest handlers (the same output and exit status natively and in the
//! VM): SA_SIGINFO, masks and pending signals, SA_RESTART against EINTR, the altstack on a
//! stack overflow, faults recovered with siglongjmp, timers, a tgkill storm, and signals sent
//! to the VMM process from outside.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn case(mode: &str, extra: &[&str]) -> (Outcome, dualstack_hpcvmm::RunStats) {
    let dir = tempdir();
    let mut args = vec![mode];
    args.extend_from_slice(extra);
    let spec = Spec::default()
        .dir(dir.path())
        .args(&args)
        .timeout(Duration::from_secs(120));
    let (v, stats) = same_as_native("signals", &spec);
    assert_exited(&stats, 0);
    (v, stats)
}

#[test]
fn sa_siginfo_masks_pending_and_sigtimedwait() {
    let (v, stats) = case("siginfo", &[]);
    assert!(
        v.stdout
            .starts_with("siginfo: hits=1 pid_ok=1 code_user=1\n"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("sigtimedwait: got=10 hits=4 timeout=1"));
    assert!(
        v.stdout
            .contains("signalfd: empty=1 poll=1 revents_in=1 read=128 signo=12 pid_ok=1"),
        "{}",
        v.stdout
    );
    assert!(stats.enosys.is_empty(), "{:?}", stats.enosys);
}

#[test]
fn sa_restart_restarts_a_blocking_pipe_read_and_without_it_read_fails_with_eintr() {
    let (v, _) = case("restart", &[]);
    assert_eq!(
        v.stdout,
        "SA_RESTART: read=5 eintr=0 hits=1\nno SA_RESTART: read=-1 eintr=1 hits=1\n"
    );
}

#[test]
fn a_stack_overflow_is_handled_on_the_altstack() {
    let (v, _) = case("altstack", &[]);
    assert!(v
        .stdout
        .ends_with("stack overflow caught on the altstack: 1\n"));
}

#[test]
fn a_sigsegv_handler_recovers_with_siglongjmp() {
    let (v, _) = case("segv", &[]);
    assert!(
        v.stdout.contains("recovered 2: addr=0x20 maperr=1"),
        "{}",
        v.stdout
    );
}

#[test]
fn division_by_zero_is_caught_as_sigfpe() {
    let (v, _) = case("fpe", &[]);
    assert_eq!(v.stdout, "SIGFPE caught: intdiv=1\n");
}

#[test]
fn alarm_setitimer_timer_create_and_absolute_sleeps_fire() {
    let (v, _) = case("alarm", &[]);
    assert_eq!(
        v.stdout,
        "alarm left=1\nalarm fired: 1\nsetitimer fired: 5 interval_us=20000\n\
         timer_create fired: 1 code_timer=1\ntimerfd: expiries>=3 1 interval_ns=10000000\n\
         clock_nanosleep abstime: r=0 reached=1\n"
    );
}

#[test]
fn a_storm_of_100k_tgkills_between_two_threads_ends_correctly() {
    let (v, stats) = case("storm", &["100000"]);
    assert_eq!(
        v.stdout,
        "storm: sent=100000 fails=0 received_in_range=1 done=1\n"
    );
    assert_eq!(stats.vcpus.len(), 2);
}

#[test]
fn a_handler_edits_its_ucontext_and_the_interrupted_fpu_state_survives() {
    let (v, _) = case("ucontext", &[]);
    assert_eq!(
        v.stdout,
        "ucontext: hits=1 rax=1234 xmm7=1.25 xstate=1\n\
         hostile: act=-1/1 old=-1/1 kill_query=0 size=-1/1\n"
    );
}

/// Modes that end with a signal: the same status (128+signal) and output both ways.
fn dies(mode: &str, status: i32) -> dualstack_hpcvmm::RunStats {
    let dir = tempdir();
    let spec = Spec::default().dir(dir.path()).args(&[mode]);
    let (v, stats) = same_as_native("signals", &spec);
    assert_eq!(v.status, status, "{mode}: {:?}", stats.exit);
    stats
}

#[test]
fn a_handler_that_faults_while_handling_dies_of_sigsegv() {
    dies("nested", 139);
}

#[test]
fn a_corrupt_frame_at_rt_sigreturn_is_sigsegv() {
    let stats = dies("badframe", 139);
    match stats.exit {
        dualstack_hpcvmm::ExitReport::Faulted(f) => {
            assert!(f.what.contains("bad signal frame"), "{}", f.what)
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn sigkill_keeps_its_meaning() {
    dies("sigkill", 137);
}

/// Wait until `dir/ready` exists (the guest installed its handler).
fn wait_ready(dir: &Path, pid: i32) {
    let t0 = Instant::now();
    while !dir.join("ready").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "process {pid} never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The handler is installed before `ready` is created; give the guest a moment to reach
    // its loop (either way the signal must be taken).
    std::thread::sleep(Duration::from_millis(50));
}

/// Run `mode` natively, signal it with `sig` once ready; (status, stdout).
fn native_signalled(mode: &str, sig: i32, dir: &Path) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let bin = guest("signals");
    let child = std::process::Command::new(&bin)
        .arg(mode)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_ready(dir, pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, sig) };
    let o = child.wait_with_output().unwrap();
    let status = o
        .status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
    (status, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Run `mode` in the VM in a forked child (a process of its own, like `dualstack run`), send
/// the child `sig` from outside once the guest is ready; (status, stdout).
fn vm_signalled(mode: &str, sig: i32, dir: &Path) -> (i32, String) {
    use dualstack_hpcvmm::jail::supervisor::{spawn, ChildEnd, SuperviseOptions};
    let io = tempdir();
    let spec = Spec::default()
        .dir(dir)
        .args(&[mode])
        .timeout(Duration::from_secs(60));
    let cfg = config(&guest("signals"), &spec, io.path());
    let child = spawn(
        &SuperviseOptions::default(),
        move |_| match dualstack_hpcvmm::run(&cfg) {
            Ok(s) => s.exit_status,
            Err(e) => {
                eprintln!("VMM error: {e}");
                125
            }
        },
    )
    .unwrap();
    let pid = child.pid();
    wait_ready(dir, pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, sig) };
    let end = child.wait().unwrap().end;
    let status = match end {
        ChildEnd::Exited(c) => c,
        ChildEnd::Signaled(s) => 128 + s,
    };
    let out = std::fs::read_to_string(io.path().join("stdout")).unwrap_or_default();
    (status, out)
}

#[test]
fn sigterm_from_outside_reaches_the_guest_handler_which_checkpoints_and_exits_3() {
    let (nd, vd) = (tempdir(), tempdir());
    let native = native_signalled("term", libc::SIGTERM, nd.path());
    let vm = vm_signalled("term", libc::SIGTERM, vd.path());
    assert_eq!(native, (3, "waiting for SIGTERM\n".to_string()));
    assert_eq!(vm, native, "the VM must behave as natively");
    for d in [nd.path(), vd.path()] {
        assert_eq!(
            std::fs::read_to_string(d.join("checkpoint")).unwrap(),
            "saved\n"
        );
    }
}

#[test]
fn sigusr1_from_outside_interrupts_pause_with_siginfo() {
    let (nd, vd) = (tempdir(), tempdir());
    let native = native_signalled("usr1", libc::SIGUSR1, nd.path());
    let vm = vm_signalled("usr1", libc::SIGUSR1, vd.path());
    assert_eq!(native.0, 0);
    assert_eq!(vm, native);
}

/// The jailed VMM (seccomp allow-list, no privileges) delivers signals too: the frames' FPU
/// state goes through KVM_GET/SET_XSAVE, faults through the exception path.
#[test]
fn handlers_run_in_a_jailed_vmm() {
    let bin = guest("signals");
    let dir = bin.parent().unwrap().to_path_buf();
    for mode in ["siginfo", "segv"] {
        let io = tempdir();
        let spec = Spec::default()
            .dir(&dir)
            .args(&[mode])
            .timeout(Duration::from_secs(60));
        let cfg = config(&bin, &spec, io.path());
        let (stats, _, _) = run_as_nobody(&cfg, &dir);
        assert_exited(&stats, 0);
        let n = native(&bin, &Spec::default().dir(io.path()).args(&[mode]));
        let out = std::fs::read_to_string(io.path().join("stdout")).unwrap();
        assert_eq!(out, n.stdout, "{mode}");
    }
}

#[test]
fn timing_calls_are_answered_inside_the_guest_with_linux_answers() {
    let (v, stats) = case("clocks", &[]);
    assert_eq!(
        v.stdout,
        "clocks: tid=pid 1 getcpu=0 node=0 efault=1 res=1 mono=1 busy_cpu_ok=1 times_ok=1 \
         ru_efault=1 yield=0\n"
    );
    assert!(
        stats.calls_answered_in_guest > 100_000,
        "{}",
        stats.calls_answered_in_guest
    );
    for name in [
        "clock_gettime",
        "getrusage",
        "gettid",
        "getcpu",
        "times",
        "sched_yield",
    ] {
        let exits = stats.syscalls.get(name).map_or(0, |s| s.count);
        assert!(exits <= 2, "{name}: {exits} exits");
    }
}

/// The brief's check: an OpenMP CG that times every kernel with getrusage (as HPCCG does)
/// makes no VM exit for its timers.
#[test]
fn an_openmp_cg_timing_every_kernel_with_getrusage_takes_no_timer_exits() {
    let dir = tempdir();
    let spec = Spec::default()
        .dir(dir.path())
        .args(&["24", "20"])
        .timeout(Duration::from_secs(120));
    // The benchmark's own program (crates/eval), built without its wall-clock print.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/guests/cg_timed.c");
    let (v, stats) = same_as_native_bin(&guest_from(&src, &["-fopenmp"]), &spec);
    assert_exited(&stats, 0);
    assert!(v.stdout.contains("timer_calls=220"), "{}", v.stdout);
    assert!(v.stdout.contains("timers sane: 1"));
    for name in ["clock_gettime", "getrusage", "times"] {
        assert!(
            !stats.syscalls.contains_key(name),
            "{name} exited: {:?}",
            stats.syscalls.get(name)
        );
    }
    assert!(stats.calls_answered_in_guest >= 220);
}
