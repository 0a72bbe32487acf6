//! Basic programs (C, C++ with exceptions, Rust std) run natively and in the HPC VM with the
//! same output and exit status; argv/env/auxv; time and sleep; -ENOSYS; ELF refusal.

mod common;

use common::*;
use dualstack_hpcvmm::{ExitReport, RunConfig, VmmError};

#[test]
fn c_hello_world_matches_native() {
    let (v, stats) = same_as_native("hello", &Spec::default().args(&["3", "two words", ""]));
    assert!(v.stdout.contains("arg 2: two words"));
    assert_exited(&stats, 3);
    assert_eq!(stats.exit_status, 3);
    // One VM exit per system call, plus the launch report.
    assert_eq!(
        stats.exits.get("syscall").copied().unwrap_or(0),
        stats.syscalls_total
    );
}

#[test]
fn argv_env_auxv_match_native() {
    let spec = Spec::default()
        .args(&["alpha", "with space", "ünïcode", "--flag=1"])
        .env("DS_ONE", "1")
        .env("DS_TWO", "a=b=c")
        .env("PATH", "/bin");
    let (v, _) = same_as_native("args", &spec);
    for want in [
        "argc=5",
        "argv[2]=<with space>",
        "argv[3]=<ünïcode>",
        "env DS_TWO=a=b=c",
        "environ count=3",
        "AT_PAGESZ=4096",
        "AT_RANDOM non-null=1",
        "AT_RANDOM has entropy=1",
        "AT_EXECFN basename=args-static-",
        "AT_SECURE=0",
    ] {
        assert!(
            v.stdout.contains(want),
            "missing {want:?} in:\n{}",
            v.stdout
        );
    }
}

#[test]
fn cxx_exceptions_and_stdlib_match_native() {
    let dir = tempdir();
    let (v, _) = same_as_native("cxx_exc", &Spec::default().dir(dir.path()));
    assert!(v.stdout.contains("caught boom 42 code 42"), "{}", v.stdout);
    assert!(v.stdout.contains("file lines 2"));
    assert_eq!(v.stderr, "to stderr\n");
    assert_eq!(v.status, 3);
    // An uncaught exception ends in std::terminate -> abort() -> SIGABRT, as natively.
    let (v, stats) = same_as_native("cxx_exc", &Spec::default().dir(dir.path()).args(&["throw"]));
    assert_eq!(v.status, 134, "{:?}", stats.exit);
}

#[test]
fn rust_std_matches_native() {
    let dir = tempdir();
    let spec = Spec::default().dir(dir.path()).env("DS_X", "forty-two");
    let (v, stats) = same_as_native("rust_std", &spec);
    assert!(
        v.stdout.contains("env DS_X=Some(\"forty-two\")"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("caught panic=true"));
    assert_exited(&stats, 0);
    let (_, stats) = same_as_native("rust_std", &spec.clone().args(&["x"]));
    assert_exited(&stats, 5);
}

#[test]
fn time_and_sleep_match_native() {
    let (v, stats) = same_as_native("timing", &Spec::default());
    assert!(
        v.stdout.contains("nanosleep rc=0 slept>=50ms=1 slept<2s=1"),
        "{}",
        v.stdout
    );
    assert!(
        stats.guest_wall_s >= 0.07,
        "the guest slept 70 ms in all: {}",
        stats.guest_wall_s
    );
}

#[test]
fn unknown_syscalls_answer_enosys_and_are_counted() {
    let (v, stats) = same_as_native("enosys", &Spec::default());
    assert!(
        v.stdout.contains("syscall 1000 -> -1 ENOSYS"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("still alive"));
    assert_eq!(
        stats.enosys.get("syscall_1000").copied(),
        Some(2),
        "{:?}",
        stats.enosys
    );
    assert_eq!(stats.enosys.get("syscall_1001").copied(), Some(1));
    assert_exited(&stats, 0);
}

fn refused(program: &std::path::Path) -> VmmError {
    let cfg = RunConfig::new(program, vec!["p".into()]);
    match dualstack_hpcvmm::run(&cfg) {
        Err(e) => e,
        Ok(s) => panic!(
            "{} was run instead of refused: {:?}",
            program.display(),
            s.exit
        ),
    }
}

#[test]
fn dynamic_elf_whose_interpreter_is_not_in_the_root_is_refused_with_advice() {
    let bin = dynamic_guest("hello");
    // It is a real, working program natively.
    assert_eq!(native(&bin, &Spec::default()).status, 0);
    // The default root (the current directory) has no /lib64/ld-linux-x86-64.so.2.
    let dir = tempdir();
    let mut cfg = RunConfig::new(&bin, vec!["p".into()]);
    cfg.root = dir.path().to_path_buf();
    let msg = match dualstack_hpcvmm::run(&cfg) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("ran without its interpreter: {:?}", s.exit),
    };
    assert!(msg.contains("ld-linux-x86-64.so.2"), "{msg}");
    assert!(
        msg.contains("--root /"),
        "message must say how to give the guest the host's files: {msg}"
    );
}

#[test]
fn bad_elves_and_missing_files_are_refused() {
    let dir = tempdir();
    let good = std::fs::read(guest("hello")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (write("truncated-header", &good[..30]), ""),
        (write("truncated-body", &good[..good.len() / 3]), ""),
        (write("garbage", &[0x5a; 4096]), "not an ELF"),
        (write("empty", b""), ""),
        (write("script", b"#!/bin/sh\necho hi\n"), "not an ELF"),
        (
            {
                let mut b = good.clone();
                b[4] = 1; // ELFCLASS32
                write("class32", &b)
            },
            "32-bit",
        ),
        (
            {
                let mut b = good.clone();
                b[18] = 0x28; // EM_ARM
                b[19] = 0;
                write("arm", &b)
            },
            "machine",
        ),
        (
            {
                let mut b = good.clone();
                b[16] = 1; // ET_REL
                write("relocatable", &b)
            },
            "not an executable",
        ),
        (
            {
                // Program headers pointing far past the end of the file.
                let mut b = good.clone();
                b[32..40].copy_from_slice(&(1u64 << 40).to_le_bytes());
                write("bad-phoff", &b)
            },
            "",
        ),
        (dir.path().join("does-not-exist"), "cannot read"),
        (dir.path().to_path_buf(), ""),
    ];
    for (path, want) in cases {
        let msg = refused(&path).to_string();
        assert!(
            msg.contains(want),
            "{}: message {msg:?} should mention {want:?}",
            path.display()
        );
        assert!(
            msg.contains(&path.display().to_string())
                || msg.contains(path.file_name().unwrap().to_str().unwrap()),
            "message should name the file: {msg}"
        );
    }
}

#[test]
fn stdout_and_stderr_are_kept_apart_and_exit_status_passes_through() {
    let bin = guest("hello");
    for status in [0, 1, 42, 255] {
        let (v, stats) = in_vm(&bin, &Spec::default().args(&[&status.to_string()]));
        assert_eq!(stats.exit, ExitReport::Exited { status });
        assert_eq!(v.status, status);
        assert!(v.stderr.is_empty());
    }
}
