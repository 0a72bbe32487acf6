//! The jail's primitives for real (root): a forked child applies the jail and the parent checks
//! it from outside through /proc, the way an operator would; refused opens, a forbidden system
//! call ending the child with exit 159 and a report naming the call, and Landlock refusing a
//! path outside the root that plain permissions would allow.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use dualstack_hpcvmm::jail::{
    identity, supervisor, Caller, ChildEnd, Jail, JailReport, SuperviseOptions, UserSpec,
};

fn nobody() -> identity::Identity {
    identity::resolve(Some(&"nobody".parse::<UserSpec>().unwrap()), &root_caller()).unwrap()
}

fn root_caller() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        sudo: None,
    }
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and ours.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// errno of open(path, flags), or 0 when it opened.
fn open_errno(path: &str, flags: i32) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: NUL-terminated path; mode for O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error().unwrap();
    }
    // SAFETY: closing what we opened.
    unsafe { libc::close(fd) };
    0
}

fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn dir_0755(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn jailed_child_is_nobody_without_capabilities_seen_from_outside() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    std::fs::create_dir(&root).unwrap();
    dir_0755(top.path());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(root.join("inside.txt"), "in\n").unwrap();
    let outside = top.path().join("outside.txt");
    std::fs::write(&outside, "out\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut jail = Jail::new(nobody(), &root);
    let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let opts = SuperviseOptions {
        keep_fds: vec![rw, gr],
        ..Default::default()
    };
    let root_s = root.display().to_string();
    let outside_s = outside.display().to_string();
    let child = supervisor::spawn(&opts, move |side| {
        jail.report_fd = Some(side.report_fd());
        let report = match jail.apply() {
            Ok(r) => r,
            Err(e) => {
                let _ = side.send(format!("apply failed: {e:?}").as_bytes());
                return 1;
            }
        };
        // SAFETY: descriptors kept for us by keep_fds.
        let (mut ready, mut go) = unsafe { (File::from_raw_fd(rw), File::from_raw_fd(gr)) };
        ready.write_all(b"R").unwrap();
        let mut b = [0u8; 1];
        let _ = go.read(&mut b);
        let mut out = serde_json::to_string(&report).unwrap();
        out.push('\n');
        let checks = [
            ("shadow", open_errno("/etc/shadow", libc::O_RDONLY)),
            ("kvm", open_errno("/dev/kvm", libc::O_RDWR)),
            ("mem", open_errno("/dev/mem", libc::O_RDONLY)),
            ("null", open_errno("/dev/null", libc::O_RDWR)),
            (
                "inside",
                open_errno(&format!("{root_s}/inside.txt"), libc::O_RDONLY),
            ),
            (
                "create",
                open_errno(&format!("{root_s}/new.txt"), libc::O_WRONLY | libc::O_CREAT),
            ),
            ("outside", open_errno(&outside_s, libc::O_RDONLY)),
        ];
        for (k, v) in checks {
            out.push_str(&format!("{k}={v}\n"));
        }
        // Threads still start under the filter (clone3 -> ENOSYS -> clone with CLONE_THREAD).
        let t = std::thread::spawn(|| 21 * 2).join().unwrap();
        out.push_str(&format!("thread={t}\n"));
        side.send(out.as_bytes()).unwrap();
        0
    })
    .unwrap();
    drop(ready_w);
    drop(go_r);
    let pid = child.pid();
    let mut b = [0u8; 1];
    let mut ready_r = ready_r;
    let n = ready_r.read(&mut b).unwrap();
    let outside_view = if n == 1 {
        Some((
            status_field(pid, "CapEff"),
            status_field(pid, "CapPrm"),
            status_field(pid, "CapInh"),
            status_field(pid, "CapBnd"),
            status_field(pid, "CapAmb"),
            status_field(pid, "NoNewPrivs"),
            status_field(pid, "Seccomp"),
            status_field(pid, "Uid"),
            status_field(pid, "Gid"),
            status_field(pid, "Groups"),
            std::fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid(),
        ))
    } else {
        None
    };
    drop(go_w);
    let done = child.wait().unwrap();
    let text = String::from_utf8_lossy(&done.payload).into_owned();
    assert_eq!(
        done.end,
        ChildEnd::Exited(0),
        "child: {text} {:?}",
        done.violation
    );
    let (eff, prm, inh, bnd, amb, nnp, sec, uid, gid, groups, mem_owner) =
        outside_view.expect("the child never got ready");
    assert_eq!(eff, "0000000000000000");
    assert_eq!(prm, "0000000000000000");
    assert_eq!(inh, "0000000000000000");
    assert_eq!(bnd, "0000000000000000");
    assert_eq!(amb, "0000000000000000");
    assert_eq!(nnp, "1");
    assert_eq!(sec, "2");
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
    let ng = nobody().gid.to_string();
    assert_eq!(gid.split_whitespace().collect::<Vec<_>>(), [ng.as_str(); 4]);
    assert_eq!(groups, ng);
    assert_eq!(mem_owner, 0, "not dumpable: /proc/PID/mem stays root's");

    let mut lines = text.lines();
    let report: JailReport = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!((report.uid, report.capabilities), (65534, 0));
    assert!(report.seccomp && report.no_new_privs);
    assert!(report.landlock.abi >= 1, "this host has Landlock");
    let kv: std::collections::BTreeMap<&str, &str> =
        lines.filter_map(|l| l.split_once('=')).collect();
    let eacces = libc::EACCES.to_string();
    assert_eq!(kv["shadow"], eacces, "{text}");
    assert_eq!(kv["kvm"], eacces, "{text}");
    // /dev/mem is absent on some hosts (this one): refused either way.
    assert!([eacces.as_str(), "2"].contains(&kv["mem"]), "{text}");
    assert_eq!(kv["null"], "0", "{text}");
    assert_eq!(kv["inside"], "0", "{text}");
    assert_eq!(kv["create"], "0", "{text}");
    assert_eq!(kv["outside"], eacces, "Landlock: {text}");
    assert_eq!(kv["thread"], "42");
    let created = std::fs::metadata(root.join("new.txt")).unwrap();
    assert_eq!(
        created.uid(),
        65534,
        "a file the jailed child creates is nobody's"
    );
}

#[test]
fn another_process_of_the_guest_user_cannot_open_the_vmm_memory() {
    let top = tempfile::tempdir().unwrap();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut jail = Jail::new(nobody(), top.path());
    jail.seccomp = false; // this test is about dumpability
    let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let opts = SuperviseOptions {
        keep_fds: vec![rw, gr],
        ..Default::default()
    };
    let vmm = supervisor::spawn(&opts, move |_| {
        if jail.apply().is_err() {
            return 1;
        }
        // SAFETY: descriptors kept for us.
        let (mut ready, mut go) = unsafe { (File::from_raw_fd(rw), File::from_raw_fd(gr)) };
        ready.write_all(b"R").unwrap();
        let _ = go.read(&mut [0u8; 1]);
        0
    })
    .unwrap();
    drop(ready_w);
    drop(go_r);
    let mut ready_r = ready_r;
    assert_eq!(ready_r.read(&mut [0u8; 1]).unwrap(), 1);
    let pid = vmm.pid();
    // A plain process of the same user (no jail: just setresuid) tries the VMM's memory.
    let peer = supervisor::supervise(&SuperviseOptions::default(), move |side| {
        // SAFETY: plain integer arguments; this forked child has one thread.
        unsafe {
            libc::setgroups(0, std::ptr::null());
            libc::setresgid(65534, 65534, 65534);
            libc::setresuid(65534, 65534, 65534);
        }
        let e = open_errno(&format!("/proc/{pid}/mem"), libc::O_RDWR);
        // SAFETY: PTRACE_ATTACH on a pid; refused or not, no memory is touched.
        let p = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
        let pe = if p < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        } else {
            0
        };
        side.send(format!("{e} {pe}").as_bytes()).unwrap();
        0
    })
    .unwrap();
    drop(go_w);
    let v = vmm.wait().unwrap();
    assert_eq!(v.end, ChildEnd::Exited(0));
    let text = String::from_utf8(peer.payload).unwrap();
    assert_eq!(text, format!("{} {}", libc::EACCES, libc::EPERM));
}

#[test]
fn a_forbidden_call_ends_the_child_with_159_and_names_it() {
    let top = tempfile::tempdir().unwrap();
    let mut jail = Jail::new(nobody(), top.path());
    let s = supervisor::supervise(&SuperviseOptions::default(), move |side| {
        jail.report_fd = Some(side.report_fd());
        if jail.apply().is_err() {
            return 1;
        }
        // Allowed: a tgkill to our own thread with signal 0.
        // SAFETY: probing our own thread with signal 0.
        let own = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), 0) };
        side.send(format!("own-tgkill={own}\n").as_bytes()).unwrap();
        // Forbidden: ptrace.
        // SAFETY: PTRACE_TRACEME has no memory effects; the filter stops it anyway.
        unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        side.send(b"survived\n").unwrap();
        0
    })
    .unwrap();
    let text = String::from_utf8_lossy(&s.payload).into_owned();
    assert_eq!(text, "own-tgkill=0\n", "the call must not return");
    assert_eq!(s.end, ChildEnd::Exited(159));
    assert_eq!(s.exit_code(), 159);
    let v = s.violation.clone().expect("a report");
    assert_eq!((v.nr, v.name.as_str()), (libc::SYS_ptrace, "ptrace"));
    assert!(s.seccomp_message().unwrap().contains("ptrace"));

    // tgkill to another process is outside the list too (the argument filter).
    let mut jail = Jail::new(nobody(), top.path());
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let s = supervisor::supervise(&SuperviseOptions::default(), move |side| {
        jail.report_fd = Some(side.report_fd());
        if jail.apply().is_err() {
            return 1;
        }
        // SAFETY: signal 0 to the parent: the filter stops it before the kernel sees it.
        unsafe { libc::syscall(libc::SYS_tgkill, parent, parent, 0) };
        0
    })
    .unwrap();
    assert_eq!(s.violation.map(|v| v.name), Some("tgkill".to_string()));
    // A forbidden fork-like clone (no CLONE_THREAD) too.
    let mut jail = Jail::new(nobody(), top.path());
    let s = supervisor::supervise(&SuperviseOptions::default(), move |side| {
        jail.report_fd = Some(side.report_fd());
        if jail.apply().is_err() {
            return 1;
        }
        // SAFETY: fork: the filter stops it before the kernel sees it.
        unsafe { libc::fork() };
        0
    })
    .unwrap();
    assert_eq!(s.violation.map(|v| v.name), Some("clone".to_string()));
}

#[test]
fn landlock_refuses_outside_the_root_what_permissions_allow() {
    // As root without capabilities, the owner bits let the child read a 0600 root file: only
    // Landlock stands in the way outside the root.
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("in.txt"), "in").unwrap();
    let out = top.path().join("out.txt");
    std::fs::write(&out, "out").unwrap();
    let me = identity::resolve(None, &root_caller()).unwrap();
    assert_eq!(me.uid, 0);
    let mut jail = Jail::new(me, &root);
    jail.extra_read.clear();
    let (in_s, out_s) = (
        root.join("in.txt").display().to_string(),
        out.display().to_string(),
    );
    let s = supervisor::supervise(&SuperviseOptions::default(), move |side| {
        jail.report_fd = Some(side.report_fd());
        if let Err(e) = jail.apply() {
            side.send(format!("{e:?}").as_bytes()).unwrap();
            return 1;
        }
        let r = format!(
            "{} {} {}",
            open_errno(&in_s, libc::O_RDONLY),
            open_errno(&out_s, libc::O_RDONLY),
            open_errno("/proc/self/status", libc::O_RDONLY),
        );
        side.send(r.as_bytes()).unwrap();
        0
    })
    .unwrap();
    let text = String::from_utf8_lossy(&s.payload).into_owned();
    assert_eq!(s.end, ChildEnd::Exited(0), "{text} {:?}", s.violation);
    assert_eq!(text, format!("0 {} {}", libc::EACCES, libc::EACCES));
}

#[test]
fn a_user_that_does_not_exist_is_refused_before_anything_runs() {
    let e = identity::resolve(
        Some(&"no-such-user-x".parse::<UserSpec>().unwrap()),
        &root_caller(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no such user \"no-such-user-x\""),
        "{e}"
    );
}
