//! Identifying, signalling and inspecting the QEMU processes we started.
//!
//! A recorded pid alone is not enough to act on: pids are reused. A [`ProcessIdentity`] is the
//! pid plus the process start time (field 22 of `/proc/PID/stat`) plus a marker string its
//! command line must contain (the VM's unique QMP socket path). Signals go through a pidfd opened
//! *before* the identity is re-checked, so the process checked is the process signalled.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Errors while inspecting or signalling a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process is gone or is no longer the one we started; nothing was signalled.
    #[error("pid {pid} is no longer the process dualstack started ({why}); not signalling it")]
    NotOurs { pid: i32, why: String },
    /// A system call failed.
    #[error("{call} for pid {pid} failed")]
    Sys {
        call: &'static str,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    /// SIGKILL was sent but the process did not go away in time.
    #[error("pid {pid} still runs {secs} s after SIGKILL")]
    Survived { pid: i32, secs: u64 },
}

/// Who a recorded process is: enough to tell it from a later process with the same pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// A string the process's command line contains (NUL separators read as spaces).
    pub cmdline_marker: String,
}

/// What a recorded process looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// Running (or sleeping), and it is our process.
    Alive,
    /// Exited (possibly an unreaped zombie).
    Exited,
    /// The pid now belongs to another process.
    Replaced,
}

/// `(state, start_ticks)` from `/proc/PID/stat`, or `None` if there is no such process.
pub fn stat_state_and_start(proc_root: &Path, pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&stat)
}

/// Parses state and start time out of a `/proc/PID/stat` line (the comm may hold spaces and ')').
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The command line of a process with NULs turned into spaces.
pub fn cmdline(proc_root: &Path, pid: i32) -> Option<String> {
    let raw = fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim_end()
            .to_string(),
    )
}

impl ProcessIdentity {
    /// Records the identity of a running process.
    pub fn capture(proc_root: &Path, pid: i32, cmdline_marker: &str) -> Option<Self> {
        let (_, start_ticks) = stat_state_and_start(proc_root, pid)?;
        Some(Self {
            pid,
            start_ticks,
            cmdline_marker: cmdline_marker.to_string(),
        })
    }

    /// Whether the recorded process still runs.
    pub fn liveness(&self, proc_root: &Path) -> Liveness {
        match stat_state_and_start(proc_root, self.pid) {
            None => Liveness::Exited,
            Some((_, start)) if start != self.start_ticks => Liveness::Replaced,
            // A zombie leader whose other threads still exit is still running (and still
            // holds its cgroup); only a fully exited process counts as exited.
            Some(('Z' | 'X', _)) if thread_count(proc_root, self.pid) > 1 => Liveness::Alive,
            Some(('Z' | 'X', _)) => {
                reap(self.pid);
                Liveness::Exited
            }
            Some(_) => match cmdline(proc_root, self.pid) {
                Some(c) if c.contains(&self.cmdline_marker) => Liveness::Alive,
                // Right after exec the command line reads empty for a moment: same pid and
                // start time, so it is still our process.
                Some(c) if c.is_empty() => Liveness::Alive,
                Some(_) => Liveness::Replaced,
                // Its stat was readable a moment ago: it is exiting, not gone. Say alive so a
                // waiter polls again (stat then tells), rather than calling it exited while
                // its threads still hold the cgroup.
                None => Liveness::Alive,
            },
        }
    }

    /// Sends `signal` if, and only if, the pid still is the recorded process.
    pub fn signal(&self, proc_root: &Path, signal: i32) -> Result<(), ProcessError> {
        let pidfd = pidfd_open(self.pid)?;
        match self.liveness(proc_root) {
            Liveness::Alive => {}
            other => {
                return Err(ProcessError::NotOurs {
                    pid: self.pid,
                    why: format!("{other:?}").to_lowercase(),
                });
            }
        }
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if rc != 0 {
            return Err(ProcessError::Sys {
                call: "pidfd_send_signal",
                pid: self.pid,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Polls until the process is no longer alive, up to `timeout`. True if it is gone.
    pub fn wait_gone(&self, proc_root: &Path, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.liveness(proc_root) != Liveness::Alive {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILLs the process if it is still ours and waits (up to 30 s: a loaded host can
    /// take a while to tear down QEMU's threads) for it to disappear.
    pub fn kill_and_wait(&self, proc_root: &Path) -> Result<(), ProcessError> {
        const WAIT: Duration = Duration::from_secs(30);
        match self.signal(proc_root, libc::SIGKILL) {
            Ok(()) => {}
            Err(ProcessError::NotOurs { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        if self.wait_gone(proc_root, WAIT) {
            Ok(())
        } else {
            Err(ProcessError::Survived {
                pid: self.pid,
                secs: WAIT.as_secs(),
            })
        }
    }
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, ProcessError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(ProcessError::NotOurs {
                pid,
                why: "exited".into(),
            });
        }
        return Err(ProcessError::Sys {
            call: "pidfd_open",
            pid,
            source: err,
        });
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Number of threads of `pid` still listed in `/proc/PID/task` (0 if it is gone).
pub fn thread_count(proc_root: &Path, pid: i32) -> usize {
    fs::read_dir(proc_root.join(pid.to_string()).join("task")).map_or(0, |d| d.count())
}

/// Reaps `pid` if it is an exited child of this process; harmless otherwise (ECHILD).
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG writes only into our local `status`.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// One thread of a process and the CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadAffinity {
    /// Thread id.
    pub tid: i32,
    /// Thread name (`comm`), e.g. `CPU 0/TCG`.
    pub name: String,
    /// `Cpus_allowed_list` as CPU numbers.
    pub cpus_allowed: Vec<u32>,
}

/// Every thread of `pid` with its `Cpus_allowed_list`.
pub fn thread_affinities(proc_root: &Path, pid: i32) -> std::io::Result<Vec<ThreadAffinity>> {
    let task_dir: PathBuf = proc_root.join(pid.to_string()).join("task");
    let mut out = Vec::new();
    for entry in fs::read_dir(&task_dir)? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut name = String::new();
        let mut cpus = None;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Cpus_allowed_list:") {
                cpus = dualstack_topology::CpuList::parse_list(v)
                    .ok()
                    .map(|l| l.iter().collect());
            }
        }
        if let Some(cpus_allowed) = cpus {
            out.push(ThreadAffinity {
                tid,
                name,
                cpus_allowed,
            });
        }
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line = "1234 (qemu ) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 7 0 98765 100000 200";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn identity_of_a_child_and_a_reused_pid() {
        let proc_root = Path::new("/proc");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Right after exec the command line may read empty for a moment.
        for _ in 0..200 {
            if cmdline(proc_root, pid).is_some_and(|c| !c.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ident = ProcessIdentity::capture(proc_root, pid, "sleep 30").unwrap();
        assert_eq!(ident.liveness(proc_root), Liveness::Alive);
        // Same pid, different start time: treated as somebody else's process, never signalled.
        let impostor = ProcessIdentity {
            start_ticks: ident.start_ticks + 1,
            ..ident.clone()
        };
        assert_eq!(impostor.liveness(proc_root), Liveness::Replaced);
        assert!(matches!(
            impostor.signal(proc_root, libc::SIGKILL),
            Err(ProcessError::NotOurs { .. })
        ));
        // Wrong marker: also not ours.
        let other = ProcessIdentity {
            cmdline_marker: "qemu".into(),
            ..ident.clone()
        };
        assert_eq!(other.liveness(proc_root), Liveness::Replaced);
        assert_eq!(ident.liveness(proc_root), Liveness::Alive);
        ident.kill_and_wait(proc_root).unwrap();
        assert_eq!(ident.liveness(proc_root), Liveness::Exited);
        let _ = child.wait();
        assert!(matches!(
            ident.signal(proc_root, libc::SIGTERM),
            Err(ProcessError::NotOurs { .. })
        ));
    }

    #[test]
    fn thread_affinities_of_self() {
        let threads = thread_affinities(Path::new("/proc"), std::process::id() as i32).unwrap();
        assert!(!threads.is_empty());
        assert!(threads.iter().all(|t| !t.cpus_allowed.is_empty()));
    }
}
