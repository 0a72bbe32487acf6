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

use std::path::Path;

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
