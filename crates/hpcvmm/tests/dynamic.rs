//! Dynamically linked programs, built the default way (no -static), run natively and in the
//! HPC VM with the guest seeing the host's files (`--root /`): same stdout and exit status.
//! The interpreter loaded as Linux loads it, PIE and non-PIE, the interpreter run directly,
//! dlopen, $ORIGIN and LD_LIBRARY_PATH, a missing library (exit 127), refused interpreters,
//! and Debian's python3 unchanged.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use dualstack_hpcvmm::{RunConfig, RunStats};

const LDSO: &str = "/lib64/ld-linux-x86-64.so.2";

fn src(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests/dyn")
        .join(name)
}

/// `gcc <flags> <sources> -o <out>`, cached by the sources' text and the flags (`out_name` is
/// the file name inside a fresh per-build directory, so $ORIGIN layouts can be built around
/// it).
fn gcc(out_name: &str, sources: &[&str], flags: &[&str]) -> PathBuf {
    let mut h = DefaultHasher::new();
    for s in sources {
        std::fs::read_to_string(src(s))
            .expect("read guest source")
            .hash(&mut h);
    }
    flags.hash(&mut h);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("hpcvmm-dyn")
        .join(format!("{out_name}-{:016x}", h.finish()));
    let out = dir.join(out_name);
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    // Tests run in parallel and may build the same guest: each build has its own temporary.
    static BUILD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{out_name}.tmp{}-{n}", std::process::id()));
    let o = Command::new("gcc")
        .args(["-O2", "-Wall"])
        .args(sources.iter().map(|s| src(s)))
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc {out_name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The e_type of an ELF file (2 = ET_EXEC, 3 = ET_DYN).
fn elf_type(p: &Path) -> u16 {
    let b = std::fs::read(p).unwrap();
    u16::from_le_bytes([b[16], b[17]])
}

/// The VM's configuration for `bin` with the host's files as the guest's root and `spec.dir`
/// as the working directory in both worlds.
fn vm_config(bin: &Path, spec: &Spec, io: &Path) -> RunConfig {
    let mut cfg = config(bin, spec, io);
    cfg.root = PathBuf::from("/");
    cfg.cwd = spec
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .display()
        .to_string();
    cfg
}

fn run_vm(cfg: &RunConfig, io: &Path) -> (Outcome, RunStats) {
    let stats = dualstack_hpcvmm::run(cfg)
        .unwrap_or_else(|e| panic!("the VMM refused {}: {e:#}", cfg.program.display()));
    let read = |n: &str| std::fs::read_to_string(io.join(n)).unwrap_or_default();
    (
        Outcome {
            stdout: read("stdout"),
            stderr: read("stderr"),
            status: stats.exit_status,
        },
        stats,
    )
}

fn assert_same(what: &str, n: &Outcome, v: &Outcome, stats: &RunStats) {
    assert_eq!(
        n.stdout, v.stdout,
        "{what}: stdout differs between native and VM\nnative stderr: {}\nVM stderr: {}\nVM exit: {:?}\nENOSYS: {:?}",
        n.stderr, v.stderr, stats.exit, stats.enosys
    );
    assert_eq!(
        n.status, v.status,
        "{what}: exit status differs (native {}, VM {}); VM stderr: {}; VM exit: {:?}",
        n.status, v.status, v.stderr, stats.exit
    );
}

/// Run `bin` natively and in the VM (root `/`); stdout and exit status must match.
fn same(bin: &Path, spec: &Spec) -> (Outcome, RunStats) {
    let spec = spec.clone();
    let n = native(bin, &spec);
    let io = tempfile::tempdir().unwrap();
    let (v, stats) = run_vm(&vm_config(bin, &spec, io.path()), io.path());
    assert_same(&bin.display().to_string(), &n, &v, &stats);
    (v, stats)
}

fn spec_in(dir: &Path) -> Spec {
    Spec::default()
        .dir(dir)
        .memory(512 << 20)
        .timeout(Duration::from_secs(120))
}

fn have_ldso() -> bool {
    require("glibc's dynamic loader at /lib64", Path::new(LDSO).exists())
}

#[test]
fn c_pie_and_non_pie_match_native() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    for (name, flags, ty) in [
        ("hello-pie", &["-pie"][..], 3),
        ("hello-nopie", &["-no-pie"][..], 2),
    ] {
        let bin = gcc(name, &["../hello.c"], flags);
        assert_eq!(
            elf_type(&bin),
            ty,
            "{name} is not the kind of ELF the test wants"
        );
        let (v, stats) = same(&bin, &spec_in(dir.path()).args(&["3", "two words"]));
        assert!(v.stdout.contains("arg 2: two words"), "{}", v.stdout);
        assert_exited(&stats, 3);
        assert!(stats.enosys.is_empty(), "{name}: {:?}", stats.enosys);
    }
}

#[test]
fn auxv_and_load_addresses_are_linux_like() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    for (name, flags) in [
        ("auxv-pie", &["-pie"][..]),
        ("auxv-nopie", &["-no-pie"][..]),
    ] {
        let bin = gcc(name, &["auxv.c"], flags);
        let (v, _) = same(&bin, &spec_in(dir.path()).args(&["x"]));
        for want in [
            "AT_ENTRY is _start=1",
            "AT_BASE set=1 is ld.so=1",
            "AT_PHDR is main phdr=1",
            "AT_PHNUM matches=1",
            "objects>=3=1",
            "AT_EXECFN is /proc/self/exe=1",
        ] {
            assert!(
                v.stdout.contains(want),
                "{name}: no {want:?} in\n{}",
                v.stdout
            );
        }
    }
}

#[test]
fn a_program_started_through_a_symlink_sees_linux_s_execfn_and_exe() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let bin = gcc("auxv-pie", &["auxv.c"], &["-pie"]);
    let link = dir.path().join("auxv-link");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    // Natively AT_EXECFN is the symlink's path, /proc/self/exe the target's.
    let (v, _) = same(&link, &spec_in(dir.path()));
    assert!(
        v.stdout.contains("AT_EXECFN is /proc/self/exe=0"),
        "{}",
        v.stdout
    );
}

#[test]
fn the_interpreter_run_directly_loads_the_program() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    for (name, flags) in [
        ("hello-pie", &["-pie"][..]),
        ("hello-nopie", &["-no-pie"][..]),
    ] {
        let prog = gcc(name, &["../hello.c"], flags);
        let args = [prog.display().to_string(), "7".into(), "via ld.so".into()];
        let n = {
            let o = Command::new(LDSO)
                .args(&args)
                .env_clear()
                .current_dir(dir.path())
                .output()
                .unwrap();
            Outcome {
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                status: o.status.code().unwrap_or(-1),
            }
        };
        let io = tempfile::tempdir().unwrap();
        let mut cfg = vm_config(Path::new(LDSO), &spec_in(dir.path()), io.path());
        cfg.argv = std::iter::once(LDSO.to_string())
            .chain(args.iter().cloned())
            .collect();
        let (v, stats) = run_vm(&cfg, io.path());
        assert_same(name, &n, &v, &stats);
        assert!(v.stdout.contains("arg 2: via ld.so"), "{}", v.stdout);
        assert_eq!(v.status, 7);
    }
}

#[test]
fn cxx_exceptions_dynamic_match_native() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let bin = dynamic_guest("cxx_exc");
    let (v, _) = same(&bin, &spec_in(dir.path()));
    assert!(v.stdout.contains("caught boom 42 code 42"), "{}", v.stdout);
    assert_eq!(v.status, 3);
    let (v, _) = same(&bin, &spec_in(dir.path()).args(&["throw"]));
    assert_eq!(v.status, 134);
}

#[test]
fn gfortran_openmp_dynamic_matches_native() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let (v, stats) = same(
        &dynamic_guest("fortran_omp"),
        &spec_in(dir.path()).args(&["hi"]),
    );
    assert!(v.stdout.contains(" arg=hi clock_ok=T"), "{}", v.stdout);
    assert_exited(&stats, 0);
    assert!(stats.threads_created >= 1);
}

#[test]
fn rust_std_threads_dynamic_match_native() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let (_, stats) = same(&dynamic_guest("rust_thread"), &spec_in(dir.path()));
    assert_exited(&stats, 0);
    assert!(stats.threads_created > 1, "{stats:?}");
}

#[test]
fn dlopen_of_a_library_built_by_the_test() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let lib = gcc("libdsplug.so", &["plug.c"], &["-shared", "-fPIC", "-lm"]);
    let prog = gcc("dl_main", &["dl_main.c"], &["-ldl"]);
    // By path.
    let (v, _) = same(
        &prog,
        &spec_in(dir.path()).args(&[&lib.display().to_string()]),
    );
    // The constructor ran, calls reached the library's code and its data.
    assert!(
        v.stdout
            .starts_with("plug(loaded) square(12)=154 sum=430 counter=111"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("reopened=1"), "{}", v.stdout);
    // By name, through LD_LIBRARY_PATH.
    let libdir = lib.parent().unwrap().display().to_string();
    let (v2, _) = same(&prog, &spec_in(dir.path()).env("LD_LIBRARY_PATH", &libdir));
    assert_eq!(v.stdout, v2.stdout);
    // Not found: dlopen fails the same way.
    let (v, _) = same(&prog, &spec_in(dir.path()).args(&["libds-nonexistent.so"]));
    assert_eq!(v.status, 2);
}

/// An application directory `app/` with `app/prog` and `app/lib/liborigin.so` (rpath
/// `$ORIGIN/lib`), and a second program without rpath for LD_LIBRARY_PATH.
fn origin_layout(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let lib = gcc("liborigin.so", &["origin_lib.c"], &["-shared", "-fPIC"]);
    let app = root.join("app");
    std::fs::create_dir_all(app.join("lib")).unwrap();
    std::fs::copy(&lib, app.join("lib/liborigin.so")).unwrap();
    let libdir = lib.parent().unwrap().to_path_buf();
    let l = format!("-L{}", libdir.display());
    let with_rpath = gcc(
        "origin_main",
        &["origin_main.c"],
        &[&l, "-lorigin", "-Wl,-rpath,$ORIGIN/lib"],
    );
    std::fs::copy(&with_rpath, app.join("prog")).unwrap();
    let plain = gcc("origin_plain", &["origin_main.c"], &[&l, "-lorigin"]);
    (app.join("prog"), plain, app.join("lib"))
}

#[test]
fn origin_rpath_and_ld_library_path_and_a_missing_library() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let (prog, plain, applib) = origin_layout(dir.path());
    let (v, _) = same(&prog, &spec_in(dir.path()));
    assert!(v.stdout.contains("value=28 exe_is_abs=1"), "{}", v.stdout);
    let (v, _) = same(
        &plain,
        &spec_in(dir.path()).env("LD_LIBRARY_PATH", &applib.display().to_string()),
    );
    assert!(v.stdout.contains("exe_is_abs=1"), "{}", v.stdout);
    // The library gone: the loader's own message, exit 127, natively and in the VM.
    std::fs::remove_file(applib.join("liborigin.so")).unwrap();
    let io = tempfile::tempdir().unwrap();
    let n = native(&prog, &spec_in(dir.path()));
    let (v, stats) = run_vm(
        &vm_config(&prog, &spec_in(dir.path()), io.path()),
        io.path(),
    );
    assert_same("missing library", &n, &v, &stats);
    assert_eq!(v.status, 127);
    assert!(
        v.stderr
            .contains("liborigin.so: cannot open shared object file"),
        "{}",
        v.stderr
    );
    assert_eq!(n.stderr, v.stderr, "the loader's message is the same");
}

#[test]
fn unusable_interpreters_are_refused_up_front() {
    let dir = tempdir();
    let text = dir.path().join("not-elf");
    std::fs::write(&text, "#!/bin/sh\n").unwrap();
    let cases = [
        (
            "interp-missing",
            "/nonexistent/ld.so".to_string(),
            "does not exist inside the guest's root",
        ),
        (
            "interp-dynamic",
            "/usr/bin/true".to_string(),
            "itself dynamically linked",
        ),
        ("interp-text", text.display().to_string(), "not an ELF"),
    ];
    for (name, interp, want) in cases {
        let bin = dir.path().join(name);
        let o = Command::new("gcc")
            .arg(src("../hello.c"))
            .arg(format!("-Wl,--dynamic-linker={interp}"))
            .arg("-o")
            .arg(&bin)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let io = tempfile::tempdir().unwrap();
        let cfg = vm_config(&bin, &spec_in(dir.path()), io.path());
        let msg = match dualstack_hpcvmm::run(&cfg) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("{name} ran instead of being refused: {:?}", s.exit),
        };
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(
            msg.contains(&interp),
            "{name}: the message names the interpreter: {msg}"
        );
    }
}

#[test]
fn debian_python3_runs_unchanged() {
    let py = Path::new("/usr/bin/python3");
    if !have_ldso() || !require("Debian's /usr/bin/python3", py.exists()) {
        return;
    }
    let dir = tempdir();
    let code = "import json, math, hashlib, sys\n\
                primes = [n for n in range(2, 2000) if all(n % d for d in range(2, int(math.isqrt(n)) + 1))]\n\
                doc = {'count': len(primes), 'last': primes[-1], 'pi': round(math.pi, 10),\n\
                       'gamma': math.lgamma(10.5), 'sha': hashlib.sha256(repr(primes).encode()).hexdigest()}\n\
                print(json.dumps(doc, sort_keys=True))\n\
                print(sum(math.sin(i) * math.exp(-i / 100) for i in range(10000)))\n\
                sys.exit(len(primes) % 7)\n";
    let (v, stats) = same(py, &spec_in(dir.path()).args(&["-c", code]));
    assert!(v.stdout.contains("\"count\": 303"), "{}", v.stdout);
    assert_eq!(v.status, 303 % 7);
    eprintln!(
        "python3 in the VM: {} syscalls, ENOSYS {:?}",
        stats.syscalls_total, stats.enosys
    );
}

#[test]
fn the_rest_of_the_abi_real_programs_call_matches_native() {
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    let bin = gcc("abi", &["abi.c"], &[]);
    let (v, stats) = same(&bin, &spec_in(dir.path()));
    for want in [
        "epoll ctl=0 n=1 data=42 value=5 after=0",
        "select ready=1 isset=1",
        "name=dyn-worker-with pdeathsig=0 15",
        "sendfile=5 off=7",
        "memfd=23456",
        "mode=604 fchown=0",
        "nlink=2 readlink=5 g.txt",
        "utimensat=0 mtime=200",
        "mincore=0 resident=1",
    ] {
        assert!(v.stdout.contains(want), "no {want:?} in\n{}", v.stdout);
    }
    assert_exited(&stats, 0);
    assert!(stats.enosys.is_empty(), "{:?}", stats.enosys);
}

/// The same programs served by a jailed VMM (`nobody`, no capabilities, Landlock, the seccomp
/// allow-list): every host call the loader and the new system calls need is allowed.
#[test]
fn dynamic_programs_run_in_a_jailed_vmm() {
    use dualstack_hpcvmm::jail::{identity, run::run_jailed, Caller, Jail, SuperviseOptions};
    use std::os::unix::fs::PermissionsExt;
    if !have_ldso() {
        return;
    }
    let dir = tempdir();
    // nobody works in this directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let abi = gcc("abi", &["abi.c"], &[]);
    let py = Path::new("/usr/bin/python3");
    let mut cases = vec![(abi, Vec::<String>::new())];
    if py.exists() {
        let code = "import json, hashlib; print(json.dumps(hashlib.sha256(b'x').hexdigest()))";
        cases.push((py.to_path_buf(), vec!["-c".into(), code.into()]));
    }
    for (bin, args) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let spec = spec_in(dir.path()).args(&a);
        let n = native(&bin, &spec);
        let io = dir
            .path()
            .join(format!("io-{}", bin.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir_all(&io).unwrap();
        std::fs::set_permissions(&io, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cfg = vm_config(&bin, &spec, &io);
        let caller = Caller {
            uid: 0,
            gid: 0,
            sudo: None,
        };
        let nobody = identity::resolve(Some(&"nobody".parse().unwrap()), &caller).unwrap();
        let jail = Jail::new(nobody, "/");
        let r = run_jailed(&cfg, &jail, &SuperviseOptions::default()).unwrap();
        let (stats, _) = r
            .result
            .unwrap_or_else(|| panic!("no result: {:?}", r.supervised))
            .unwrap();
        let v = Outcome {
            stdout: std::fs::read_to_string(io.join("stdout")).unwrap_or_default(),
            stderr: std::fs::read_to_string(io.join("stderr")).unwrap_or_default(),
            status: stats.exit_status,
        };
        assert_same(&format!("jailed {}", bin.display()), &n, &v, &stats);
        assert_eq!(r.supervised.exit_code(), 0, "{:?}", r.supervised);
    }
}
