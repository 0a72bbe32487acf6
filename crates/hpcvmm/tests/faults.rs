//! Guest faults end the run with a report (signal, address, rip) and Linux's 128+signal
//! status; hostile system call arguments answer Linux's errors and never hurt the VMM; a
//! syscall fuzzer runs to completion.

mod common;

use std::time::Duration;

use common::*;
use dualstack_hpcvmm::ExitReport;
use dualstack_hpcvmm::FaultReport;

fn fault_of(stats: &dualstack_hpcvmm::RunStats) -> FaultReport {
    match &stats.exit {
        ExitReport::Faulted(f) => f.clone(),
        other => panic!("expected a fault, the run ended with {other:?}"),
    }
}

fn faulting(mode: &str, status: i32) -> FaultReport {
    let (v, stats) = same_as_native("fault", &Spec::default().args(&[mode]));
    assert_eq!(v.status, status, "{mode}");
    assert_eq!(v.stdout, format!("about to {mode}\n"));
    let f = fault_of(&stats);
    assert_eq!(f.signal, status - 128, "{f:?}");
    assert!(
        f.rip >= dualstack_hpcvmm::layout::USER_START,
        "rip {:#x} is in the program",
        f.rip
    );
    assert_eq!(f.tid, 1000, "the main thread faulted");
    f
}

#[test]
fn null_dereference_is_sigsegv_with_the_address() {
    let f = faulting("null", 139);
    assert_eq!(f.addr, Some(0), "{f:?}");
    assert_eq!(f.signal_name, "SIGSEGV");
    assert!(
        f.what.contains("#PF") && f.what.contains("writing"),
        "{}",
        f.what
    );
}

#[test]
fn wild_write_outside_guest_memory_is_sigsegv() {
    let f = faulting("wild", 139);
    assert_eq!(f.addr, Some(0x7f00_0000_0000), "{f:?}");
}

#[test]
fn ud2_is_sigill() {
    let f = faulting("ud2", 132);
    assert!(f.what.contains("#UD"), "{}", f.what);
}

#[test]
fn divide_by_zero_is_sigfpe() {
    let f = faulting("div0", 136);
    assert!(f.what.contains("#DE"), "{}", f.what);
}

#[test]
fn abort_is_sigabrt() {
    let f = faulting("abort", 134);
    assert_eq!(f.signal_name, "SIGABRT");
}

#[test]
fn int3_is_sigtrap() {
    faulting("int3", 133);
}

/// Hostile-call lines whose checks live in the syscall stub's FUTEX_WAKE fast path (the stub
/// must send invalid calls to the VMM); checked by their own test.
const FAST_PATH_LINES: [&str; 2] = ["P futex wake unaligned", "P futex wake_bitset 0"];

/// Run the hostile guest natively and in the VM; returns the portable lines (native, VM) that
/// `keep` selects, after checking the VM survived and its layout-dependent lines.
fn hostile_lines(keep: impl Fn(&str) -> bool) -> (Vec<String>, Vec<String>) {
    let dir = tempdir();
    let spec = Spec::default()
        .dir(dir.path())
        .timeout(Duration::from_secs(20));
    let bin = guest("hostile");
    let n = native(&bin, &spec);
    let (v, stats) = in_vm(&bin, &spec);
    assert_exited(&stats, 0);
    assert!(
        v.stdout.ends_with("survived\n"),
        "VM output:\n{}\nstderr: {}",
        v.stdout,
        v.stderr
    );
    // Layout-dependent calls: whatever Linux does with a partial buffer, the VM says EFAULT.
    for l in v.stdout.lines().filter(|l| l.starts_with("V ")) {
        assert!(l.ends_with("-1 EFAULT"), "VM answered {l:?}");
    }
    let portable = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("P ") && keep(l))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (portable(&n.stdout), portable(&v.stdout))
}

fn assert_same_lines(native: &[String], vm: &[String]) {
    assert_eq!(native.len(), vm.len(), "native:\n{native:#?}\nVM:\n{vm:#?}");
    let diffs: Vec<String> = native
        .iter()
        .zip(vm)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("native: {a}\n    VM: {b}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "hostile calls answered differently:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn hostile_pointers_answer_efault_like_linux() {
    let (n, v) = hostile_lines(|l| !FAST_PATH_LINES.iter().any(|p| l.starts_with(p)));
    assert!(
        n.len() > 60,
        "the guest makes ~70 portable hostile calls: {}",
        n.len()
    );
    assert_same_lines(&n, &v);
}

#[test]
fn hostile_futex_wake_arguments_answer_einval() {
    let (n, v) = hostile_lines(|l| FAST_PATH_LINES.iter().any(|p| l.starts_with(p)));
    assert_eq!(n.len(), FAST_PATH_LINES.len());
    assert_same_lines(&n, &v);
}

#[test]
fn syscall_fuzzing_neither_crashes_nor_corrupts_the_vmm() {
    let bin = guest("fuzz");
    for seed in ["1", "2", "3"] {
        let dir = tempdir();
        let spec = Spec::default()
            .dir(dir.path())
            .args(&[seed, "2500"])
            .timeout(Duration::from_secs(30));
        let (v, stats) = in_vm(&bin, &spec);
        assert_eq!(
            stats.exit,
            ExitReport::Exited { status: 0 },
            "seed {seed}: the fuzzed guest must end normally; stdout {:?}",
            v.stdout
        );
        assert!(
            v.stdout.contains("fuzz: 2500 calls"),
            "seed {seed}: {}",
            v.stdout
        );
        assert!(v.stdout.ends_with("fuzz done\n"));
        // Some calls (gettid, getrusage...) are answered inside the guest, without an exit.
        assert!(stats.syscalls_total + stats.calls_answered_in_guest >= 2500);
        assert!(
            stats.enosys.values().sum::<u64>() > 0,
            "the fuzzer also calls unknown numbers"
        );
    }
}
