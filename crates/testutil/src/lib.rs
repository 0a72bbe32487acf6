//! `dualstack-testutil`: what every dualstack test suite shares (a dev-dependency only).
//!
//! A test that needs something this machine may lack (root, `/dev/kvm`, huge pages, QEMU, a
//! tool, the static mini-apps) must never pass without testing. It asks:
//!
//! ```no_run
//! # fn t() {
//! use dualstack_testutil::{have_tool, is_root, missing};
//! if !is_root() {
//!     return missing("needs root");
//! }
//! if !have_tool("qemu-system-x86_64", "--version") {
//!     return missing("qemu-system-x86_64 is not installed (run scripts/install-deps)");
//! }
//! # }
//! ```
//!
//! [`missing`] fails the test when `DUALSTACK_REQUIRE_ALL=1` ([`REQUIRE_ALL_ENV`]; CI and
//! `scripts/test` set it), and otherwise prints one loud line on stderr,
//! `SKIP: <test>: <what is missing>`, so a skipped test is visible in the output (run with
//! `--nocapture` or look at a failing run's output) and never silently counted as tested.
//!
//! [`guest`] builds the small C (C++, Rust, Fortran) programs the tests run, cached.

use std::path::Path;

pub mod guest;

/// Set to `1` to turn every skip into a failure.
pub const REQUIRE_ALL_ENV: &str = "DUALSTACK_REQUIRE_ALL";

/// Whether [`REQUIRE_ALL_ENV`] asks that nothing be skipped.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v == "1")
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// The text [`missing`] prints or panics with.
pub fn skip_message(test: &str, what: &str) -> String {
    format!("SKIP: {test}: {what}")
}

/// The current test cannot run here (`what` says what is missing, e.g. "needs root"): panic
/// when `DUALSTACK_REQUIRE_ALL=1`, otherwise print `SKIP: <test>: <what>` and return,
/// so the caller can `return missing(...)`.
#[track_caller]
pub fn missing(what: &str) {
    let msg = skip_message(&test_name(), what);
    if require_all() {
        panic!("{msg} ({REQUIRE_ALL_ENV}=1: every test must run)");
    }
    eprintln!("{msg}");
}

/// Like [`missing`], for helpers that return `Option` (the test then skips on `None`).
#[track_caller]
pub fn missing_none<T>(what: &str) -> Option<T> {
    missing(what);
    None
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `/dev/kvm` can be opened for reading and writing.
pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Whether `program arg` runs (e.g. `have_tool("stress-ng", "--version")`).
pub fn have_tool(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Whether a cgroup v1 cpuset hierarchy is mounted at the usual place.
pub fn have_cpuset_v1() -> bool {
    Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists()
}

/// Where tests and helpers that change host-wide state (huge pages, cpusets, zones, the Slurm
/// test cluster) serialise: `flock -o /tmp/dualstack-host.lock COMMAND`, or [`HostLock`].
pub const HOST_LOCK: &str = "/tmp/dualstack-host.lock";

/// The host lock, held for the guard's lifetime. When a process this one descends from already
/// holds it (the test was started as `flock -o HOST_LOCK cargo test ...`), the guard takes
/// nothing and goes on: waiting would deadlock on our own ancestor.
pub struct HostLock {
    file: Option<std::fs::File>,
    /// Tests of one process serialise here first: with an ancestor's lock taken for the whole
    /// process, the file lock alone would let them run at once.
    _local: std::sync::MutexGuard<'static, ()>,
}

static LOCAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl HostLock {
    /// Block until the host lock is ours (or an ancestor's).
    pub fn take() -> Self {
        Self::take_at(Path::new(HOST_LOCK))
    }

    /// The same with another lock file.
    pub fn take_at(path: &Path) -> Self {
        use std::os::fd::AsRawFd;
        let local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening the lock {}: {e}", path.display()));
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return HostLock {
                    file: Some(f),
                    _local: local,
                };
            }
            if held_by_an_ancestor(&f) {
                return HostLock {
                    file: None,
                    _local: local,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            use std::os::fd::AsRawFd;
            // SAFETY: unlocking our own descriptor (closing it would too).
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Whether a process this one descends from holds a flock on `f`'s file (/proc/locks).
fn held_by_an_ancestor(f: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = f.metadata() else { return false };
    let ino = meta.ino().to_string();
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let holders: Vec<u32> = locks
        .lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE <pid> <maj:min:ino> 0 EOF"
            (w.get(1) == Some(&"FLOCK") && w.get(5)?.rsplit(':').next() == Some(ino.as_str()))
                .then(|| w.get(4)?.parse().ok())
                .flatten()
        })
        .collect();
    let mut pid = std::process::id();
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The ppid is the second field after the command's closing parenthesis.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        if holders.contains(&ppid) {
            return true;
        }
        pid = ppid;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_test_and_what_is_missing() {
        assert_eq!(
            test_name(),
            "tests::names_the_test_and_what_is_missing",
            "libtest names each test's thread after the test"
        );
        assert_eq!(
            skip_message("a::b", "/dev/kvm is missing"),
            "SKIP: a::b: /dev/kvm is missing"
        );
    }

    /// Taken twice from one process tree: the second guard sees its ancestor's lock instead of
    /// deadlocking (as under `flock -o HOST_LOCK cargo test`).
    #[test]
    fn host_lock_under_an_ancestors_flock_does_not_deadlock() {
        if let Some(lock) = std::env::var_os("DUALSTACK_TESTUTIL_LOCK_CHILD") {
            let _g = HostLock::take_at(Path::new(&lock));
            println!("got it");
            return;
        }
        // A private lock file: the real host lock may be busy with other tests.
        let lock =
            std::env::temp_dir().join(format!("dualstack-testutil-{}.lock", std::process::id()));
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("timeout")
            .arg("60")
            .arg("flock")
            .arg(&lock)
            .arg(&exe)
            .args([
                "--exact",
                "tests::host_lock_under_an_ancestors_flock_does_not_deadlock",
                "--nocapture",
            ])
            .env("DUALSTACK_TESTUTIL_LOCK_CHILD", &lock)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&lock);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("got it"), "{text}");
    }

    #[test]
    fn tools_are_found_or_not() {
        assert!(have_tool("true", "--version"));
        assert!(!have_tool(
            "/nonexistent/dualstack-no-such-tool",
            "--version"
        ));
    }

    /// Both modes of [`missing`], in a child process per mode so the variable set for one
    /// never leaks into another test.
    #[test]
    fn missing_skips_loudly_or_fails_under_require_all() {
        if std::env::var_os("DUALSTACK_TESTUTIL_CHILD").is_some() {
            missing("a thing is missing");
            println!("returned");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let run = |require: &str| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tests::missing_skips_loudly_or_fails_under_require_all",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("DUALSTACK_TESTUTIL_CHILD", "1")
                .env(REQUIRE_ALL_ENV, require)
                .output()
                .unwrap()
        };
        let skipped = run("0");
        let err = String::from_utf8_lossy(&skipped.stderr);
        assert!(skipped.status.success(), "{err}");
        assert!(
            err.contains(
                "SKIP: tests::missing_skips_loudly_or_fails_under_require_all: a thing is missing"
            ),
            "{err}"
        );
        assert!(String::from_utf8_lossy(&skipped.stdout).contains("returned"));
        let failed = run("1");
        assert!(!failed.status.success(), "must fail under REQUIRE_ALL=1");
        let out = String::from_utf8_lossy(&failed.stdout).into_owned()
            + &String::from_utf8_lossy(&failed.stderr);
        assert!(out.contains("a thing is missing"), "{out}");
        assert!(!out.contains("returned"), "{out}");
    }

    /// No test anywhere in the workspace skips by printing and returning: every skip goes
    /// through [`missing`], so `DUALSTACK_REQUIRE_ALL=1` turns it into a failure.
    #[test]
    fn no_test_in_the_workspace_skips_silently() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut offenders = vec![];
        let mut stack = vec![crates];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if name != "target" && name != "testutil" {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let l = line.to_ascii_lowercase();
                    if l.contains("eprintln!") && (l.contains("skipping") || l.contains("skipped"))
                    {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "tests that skip without dualstack_testutil::missing:\n{}",
            offenders.join("\n")
        );
    }
}
