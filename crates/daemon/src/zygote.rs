//! The job launcher ("zygote"): a small single-threaded process the daemon forks before its
//! tokio runtime (or any other thread) exists. To start a job the daemon sends it one request
//! over a socket pair; it forks, and the child *is* the job's supervisor
//! ([`crate::supervise::supervise`]) at once: no exec of `dualstack daemon supervise`, which
//! cost a whole program start (loading, relocating and initialising the `dualstack` binary)
//! on every submission. Only a single-threaded process may fork and then run arbitrary code,
//! which is why the daemon (multi-threaded) asks the zygote instead of forking itself.
//!
//! The supervisor it forks starts a session of its own, like one the daemon exec'd, so jobs
//! outlive both: when the daemon stops, the zygote sees its socket close and exits, its
//! supervisors pass to init, and a restarted daemon re-attaches to them through their pid files
//! as before. The zygote ignores `SIGCHLD`, so the kernel reaps the supervisors that end while
//! it lives.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One supervisor to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub state_dir: PathBuf,
    pub job_dir: PathBuf,
    /// Working directory of the supervisor (and so of the run).
    pub cwd: PathBuf,
    /// Files (already created) that become its stdout and stderr; stdin is /dev/null.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The run's command line (`dualstack run ...`).
    pub argv: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Started { pid: u32, start: u64 },
    Failed { error: String },
}

/// The daemon's end of the zygote.
pub struct Zygote {
    pid: u32,
    conn: Mutex<(BufReader<UnixStream>, UnixStream)>,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("pid", &self.pid).finish()
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

impl Zygote {
    /// Fork the zygote. Refused (`Err`) unless this process is single-threaded.
    pub fn start() -> std::io::Result<Zygote> {
        if threads() != 1 {
            return Err(std::io::Error::other(
                "the daemon already runs several threads: a zygote must be forked before any",
            ));
        }
        let (ours, theirs) = UnixStream::pair()?;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: fork in a single-threaded process (checked above): the child may run any
        // code. It only serves requests and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(ours);
            serve(theirs);
        }
        drop(theirs);
        let reader = BufReader::new(ours.try_clone()?);
        Ok(Zygote {
            pid: pid as u32,
            conn: Mutex::new((reader, ours)),
        })
    }

    /// The zygote's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Start a supervisor; returns its pid and start time.
    pub fn spawn(&self, req: &Request) -> std::io::Result<(u32, u64)> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        conn.1.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if conn.0.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::other("the job launcher (zygote) is gone"));
        }
        match serde_json::from_str(&answer).map_err(std::io::Error::other)? {
            Reply::Started { pid, start } => Ok((pid, start)),
            Reply::Failed { error } => Err(std::io::Error::other(error)),
        }
    }
}

/// The zygote's loop: one request per line, one reply per line; ends when the daemon closes
/// its end (it exited or was killed).
fn serve(sock: UnixStream) -> ! {
    // Nothing of the daemon but the socket and the standard descriptors.
    close_others(sock.as_raw_fd());
    // SAFETY: setting SIGCHLD to SIG_IGN (ended children are reaped by the kernel) and
    // dying with the daemon; plain integers.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
    }
    let mut reader = match sock.try_clone() {
        Ok(s) => BufReader::new(s),
        // SAFETY: _exit ends the zygote without running the daemon's destructors.
        Err(_) => unsafe { libc::_exit(1) },
    };
    let mut out = sock;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            Ok(_) => {}
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => fork_supervisor(&req, out.as_raw_fd()),
            Err(e) => Reply::Failed {
                error: format!("bad request to the job launcher: {e}"),
            },
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
    }
}

fn close_others(keep: i32) {
    // SAFETY: close_range only closes descriptors; `keep` and 0-2 stay open.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

fn open(path: &Path, write: bool) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

fn fork_supervisor(req: &Request, sock: i32) -> Reply {
    // Opened here, so a missing file is an error the daemon sees.
    let fds = (|| {
        Ok::<_, std::io::Error>((
            open(Path::new("/dev/null"), false)?,
            open(&req.stdout, true)?,
            open(&req.stderr, true)?,
        ))
    })();
    let (null, out, err) = match fds {
        Ok(f) => f,
        Err(e) => {
            return Reply::Failed {
                error: format!("opening the job's files in {}: {e}", req.job_dir.display()),
            }
        }
    };
    // SAFETY: fork in the single-threaded zygote; the child runs the supervisor and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Reply::Failed {
            error: format!("fork: {}", std::io::Error::last_os_error()),
        };
    }
    if pid == 0 {
        // SAFETY: in the new child: default SIGCHLD again (the supervisor waits for its run),
        // no parent-death signal, a session of its own, the job's descriptors at 0-2, the
        // launcher socket closed. Plain integer calls on descriptors we own.
        let ok = unsafe {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong);
            libc::close(sock);
            libc::setsid() >= 0
                && libc::dup2(null.as_raw_fd(), 0) >= 0
                && libc::dup2(out.as_raw_fd(), 1) >= 0
                && libc::dup2(err.as_raw_fd(), 2) >= 0
        };
        drop((null, out, err));
        let code = if !ok {
            eprintln!(
                "dualstack supervise: setting up: {}",
                std::io::Error::last_os_error()
            );
            127
        } else if let Err(e) = std::env::set_current_dir(&req.cwd) {
            eprintln!("dualstack supervise: cd {}: {e}", req.cwd.display());
            127
        } else {
            // The job acts locally: never back through the API.
            std::env::remove_var("DUALSTACK_API");
            let argv: Vec<std::ffi::OsString> = req.argv.iter().map(Into::into).collect();
            crate::supervise::supervise(&req.state_dir, &req.job_dir, &argv)
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: _exit ends the supervisor without running the zygote's destructors.
        unsafe { libc::_exit(code) };
    }
    drop((null, out, err));
    let start = crate::proc::start_time(pid as u32).unwrap_or(0);
    Reply::Started {
        pid: pid as u32,
        start,
    }
}
