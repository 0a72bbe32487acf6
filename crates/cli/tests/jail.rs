//! The jail end to end through the real `dualstack` binary on real /dev/kvm: `dualstack run
//! --root / --user nobody` with a guest that tries every way out (tests/guests/escape.c of the
//! HPC VMM). From outside, the test reads the jailed VMM's /proc/PID/status while the guest
//! waits; then the guest tries each escape and must get the error its user would get. Bad
//! identities are refused before any VM exists.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dualstack");

fn escape_guest(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hpcvmm/tests/guests/escape.c");
    dualstack_testutil::guest::build_c(&src, &dir.join("escape"), &[])
}

fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("jailtest")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn status_of(pid: i32) -> BTreeMap<String, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The child of `parent` (the supervisor's VMM process), once it exists.
fn child_of(parent: u32) -> Option<i32> {
    let t = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    t.split_whitespace().next()?.parse().ok()
}

fn state_dir(d: &Path) -> PathBuf {
    let s = d.join("state");
    std::fs::create_dir_all(&s).unwrap();
    s
}

#[test]
fn every_escape_is_refused_under_root_slash_as_nobody() {
    if !Path::new("/dev/kvm").exists() {
        panic!("this test needs /dev/kvm");
    }
    let d = scratch();
    let prog = escape_guest(d.path());
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let created = out_dir.join("created.txt");
    let stats = d.path().join("stats.json");
    let mut cmd = Command::new(BIN);
    // Only what the VMM opens itself may be behind guest numbers 3..: descriptors this test
    // process inherited (cargo's jobserver pipes) would be passed on as a native exec does.
    // SAFETY: close_range in the forked child before exec touches only its descriptors.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd
        .arg("--state-dir")
        .arg(state_dir(d.path()))
        .args([
            "run",
            "--root",
            "/",
            "--user",
            "nobody",
            "--memory-backing",
            "lazy",
            "--memory",
            "64M",
            "--clear-env",
            "--cpus",
            "1",
            "--timeout",
            "60",
            "--stats",
        ])
        .arg(&stats)
        .arg("--")
        .arg(&prog)
        .arg("-")
        .arg(&created)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sup = child.id();
    // The VMM child exists and is jailed once the guest blocks reading its stdin.
    let t = Instant::now();
    let vmm = loop {
        if let Some(p) = child_of(sup) {
            let st = status_of(p);
            if st.get("Seccomp").map(String::as_str) == Some("2") {
                break p;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no jailed VMM child");
        std::thread::sleep(Duration::from_millis(20));
    };
    let st = status_of(vmm);
    let sup_status = status_of(sup as i32);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{vmm}\n").as_bytes())
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let code = child.wait().unwrap();

    // From outside: the VMM has no capability, no_new_privs, a seccomp filter, nobody's ids.
    assert_eq!(st["CapEff"], "0000000000000000", "{st:?}");
    assert_eq!(st["CapPrm"], "0000000000000000");
    assert_eq!(st["CapBnd"], "0000000000000000");
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(
        st["Uid"].split_whitespace().collect::<Vec<_>>(),
        ["65534"; 4]
    );
    // The supervisor stays root (it gives back what the run took) but serves no guest call.
    assert_eq!(sup_status["Uid"].split_whitespace().next(), Some("0"));

    assert!(
        code.success(),
        "exit {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let r: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(": ")).collect();
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    for k in [
        "self-mem-rw",
        "self-mem-ro",
        "self-pagemap",
        "self-syscall",
        "vmm-mem",
        "vmm-root",
        "vmm-cwd",
        "dev-kvm",
        "etc-shadow",
    ] {
        assert_eq!(r.get(k), Some(&"EACCES"), "{k}: {ctx}");
    }
    // /dev/mem and /dev/port do not exist on every host (this one): refused either way.
    for k in ["dev-mem", "dev-port"] {
        assert!(
            matches!(r.get(k), Some(&"EACCES") | Some(&"ENOENT")),
            "{k}: {ctx}"
        );
    }
    for k in [
        "dev-null",
        "dev-zero",
        "dev-urandom",
        "dev-shm",
        "create",
        "self-fd-reopen",
    ] {
        assert_eq!(r.get(k), Some(&"OPEN"), "{k}: {ctx}");
    }
    assert_eq!(r.get("maps-read"), Some(&"yes"), "{ctx}");
    assert_eq!(r.get("maps-host-binary"), Some(&"no"), "{ctx}");
    assert_eq!(
        r.get("status-uid")
            .map(|u| u.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["65534"; 4]),
        "{ctx}"
    );
    assert_eq!(r.get("status-capeff"), Some(&"0000000000000000"), "{ctx}");
    assert_eq!(r.get("vmm-fd-reopen"), Some(&"0"), "{ctx}");
    assert_eq!(r.get("vmm-fd-direct"), Some(&"0"), "{ctx}");
    assert_eq!(r.get("dev-fd-5"), Some(&"ENOENT"), "{ctx}");
    for k in ["ptrace-attach", "process-vm-writev"] {
        assert!(
            matches!(r.get(k), Some(&"ENOSYS") | Some(&"EPERM")),
            "{k}: {ctx}"
        );
    }
    assert_eq!(
        r.get("exe-link").copied(),
        Some(prog.to_str().unwrap()),
        "{ctx}"
    );
    assert_eq!(r.get("cpuinfo-processors"), Some(&"1"), "{ctx}");
    assert_eq!(r.get("meminfo-total-kb"), Some(&"65536"), "{ctx}");
    assert_eq!(r.get("cpu-online"), Some(&"0"), "{ctx}");
    assert!(stdout.contains("escape done"), "{ctx}");
    // The created file is the guest user's.
    assert_eq!(std::fs::metadata(&created).unwrap().uid(), 65534);

    // The statistics count the refusals by kind and say what the jail enforced.
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let refusals = &s["refusals"];
    for kind in ["vmm_proc", "device", "permission", "fd", "host_process"] {
        assert!(
            refusals[kind].as_u64().unwrap_or(0) >= 1,
            "{kind} not counted: {refusals}"
        );
    }
    assert_eq!(s["jail"]["uid"], 65534);
    assert_eq!(s["jail"]["capabilities"], 0);
    assert_eq!(s["jail"]["seccomp"], true);
    assert_eq!(s["jail"]["landlock"]["enforced"], "fully", "{}", s["jail"]);
}

fn run_as(uid: Option<u32>, args: &[&str], d: &Path) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("--state-dir").arg(state_dir(d)).args(args);
    if let Some(u) = uid {
        // SAFETY: setgroups/setresgid/setresuid in the forked child before exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(u, u, u) != 0
                    || libc::setresuid(u, u, u) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c.output().unwrap()
}

#[test]
fn bad_identities_and_no_jail_for_users_are_refused_before_any_vm() {
    let d = scratch();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let prog = escape_guest(d.path());
    let p = prog.to_str().unwrap();
    let base = ["run", "--memory-backing", "lazy", "--memory", "64M"];
    let cases: [(Option<u32>, Vec<&str>, &str); 4] = [
        (
            None,
            [&base[..], &["--user", "no-such-user-dualstack", "--", p]].concat(),
            "no such user \"no-such-user-dualstack\"",
        ),
        (
            None,
            [&base[..], &["--user", "nobody:no-such-group-x", "--", p]].concat(),
            "no such group",
        ),
        (
            Some(65534),
            [&base[..], &["--user", "root", "--", p]].concat(),
            "only root may run a guest as another identity",
        ),
        (
            Some(65534),
            [&base[..], &["--no-jail", "--", p]].concat(),
            "--no-jail is a developer switch for root only",
        ),
    ];
    for (uid, args, want) in cases {
        let o = run_as(uid, &args, d.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        // Refused before any VM: the guest never printed anything.
        assert!(o.stdout.is_empty(), "{args:?} ran the guest");
    }
    // --no-jail as root still works (and the guest's /proc stays its own).
    let o = run_as(
        None,
        &[&base[..], &["--no-jail", "--", p, "1"]].concat(),
        d.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("self-mem-rw: EACCES"), "{out}");
    assert!(out.contains("dev-kvm: EACCES"), "{out}");
}
