//! The guest's own `/proc` and the run's `/sys` files, served by the VMM: a path that resolves
//! into procfs is never passed through when it would describe the VMM.
//!
//! `/proc/self`, `/proc/thread-self`, `/proc/<guest pid or tid>` and `/proc/<the VMM's host pid
//! or one of its host tids>` are the guest: their files are rendered from the kernel objects
//! ([`crate::jail::procfs`]) as virtual files (a memfd snapshot taken at open, the
//! [`crate::kernel::files::FileKind::Virtual`] kind); `exe` opens the program, `fd/N` re-opens
//! the guest's own descriptor N (never a VMM descriptor), and `mem`, `pagemap`, `syscall`,
//! `root`, `cwd` and the like are refused. `/proc/cpuinfo`, `/proc/meminfo`,
//! `/sys/devices/system/cpu/{online,possible,present}` and the cgroup's `cpuset.cpus*` report
//! the run's cores and guest memory. Everything else in procfs (other processes,
//! `/proc/version`) is the host's, opened with the guest user's rights.
//!
//! Paths are checked twice: lexically on the guest's path before any host call ([`answer`]),
//! and on the host fd after an open ([`check_host_fd`]), which catches a path that reached
//! procfs some other way (a symlink) and refuses device nodes outside the harmless list.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{Ctx, Errno};
use crate::jail::procfs::{self as view, GuestFile, GuestView, Mapping, ProcPath};
use crate::kernel::mm::VmaBacking;
use crate::kernel::run::refusal;
use crate::kernel::GUEST_PID;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// How the VMM answers a guest path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not the guest's own: the host's file, opened inside the root with the user's rights.
    Host,
    /// A virtual read-only regular file with this content.
    File(Vec<u8>),
    /// `/proc/self/exe`: the program.
    Exe,
    /// `/proc/self/fd/N`: the guest's own descriptor N.
    Fd(i32),
    /// A generated directory with these entries (name, `DT_*` type).
    Dir(Vec<(String, u8)>),
    /// Refused with this errno (already counted in the run's refusals).
    Refused(Errno),
}

/// What the guest's /proc/<pid>/ (or task/<tid>/) lists.
const PID_DIR: &[(&str, u8)] = &[
    ("auxv", libc::DT_REG),
    ("cgroup", libc::DT_REG),
    ("cmdline", libc::DT_REG),
    ("comm", libc::DT_REG),
    ("cwd", libc::DT_LNK),
    ("environ", libc::DT_REG),
    ("exe", libc::DT_LNK),
    ("fd", libc::DT_DIR),
    ("maps", libc::DT_REG),
    ("root", libc::DT_LNK),
    ("stat", libc::DT_REG),
    ("statm", libc::DT_REG),
    ("status", libc::DT_REG),
    ("task", libc::DT_DIR),
];

/// The entries of a guest directory below /proc/<pid>/, if `rest` names one.
fn guest_dir(ctx: &Ctx<'_>, tid: Option<i32>, rest: &str) -> Option<Vec<(String, u8)>> {
    let mut v = vec![
        (".".to_string(), libc::DT_DIR),
        ("..".to_string(), libc::DT_DIR),
    ];
    match rest {
        "" => v.extend(
            PID_DIR
                .iter()
                .filter(|(n, _)| tid.is_none() || *n != "task")
                .map(|(n, t)| (n.to_string(), *t)),
        ),
        "fd" => v.extend(
            ctx.tg
                .files
                .lock()
                .unwrap()
                .numbers()
                .into_iter()
                .map(|n| (n.to_string(), libc::DT_LNK)),
        ),
        "task" if tid.is_none() => v.extend(
            guest_tids(ctx)
                .into_iter()
                .map(|t| (t.to_string(), libc::DT_DIR)),
        ),
        _ => return None,
    }
    Some(v)
}

/// An empty directory fd that nothing can be created in: made in /dev/shm (or /tmp) and
/// removed at once (the host fd behind a [`Answer::Dir`]).
pub fn empty_dir() -> Result<OwnedFd, Errno> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut last = Errno(libc::ENOENT);
    for base in ["/dev/shm", "/tmp"] {
        let name = format!(
            "{base}/.dualstack-vdir-{}-{}",
            host_pid(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: mkdirat/openat/unlinkat on a NUL-terminated path of our own.
        unsafe {
            if libc::mkdirat(libc::AT_FDCWD, c.as_ptr(), 0o500) < 0 {
                last = std::io::Error::last_os_error().into();
                continue;
            }
            let fd = libc::openat(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            let e = std::io::Error::last_os_error();
            libc::unlinkat(libc::AT_FDCWD, c.as_ptr(), libc::AT_REMOVEDIR);
            if fd < 0 {
                last = e.into();
                continue;
            }
            return Ok(<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd));
        }
    }
    Err(last)
}

/// `path` without `.`, `..` and repeated slashes (lexically, as the guest wrote it).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `/dev/fd/N` and `/dev/std{in,out,err}` are the guest's descriptors (on Linux: symlinks
/// into /proc/self/fd, which the host would resolve to the VMM's).
fn alias(path: String) -> String {
    if let Some(rest) = path.strip_prefix("/dev/fd") {
        if rest.is_empty() || rest.starts_with('/') {
            return format!("/proc/self/fd{rest}");
        }
    }
    match path.as_str() {
        "/dev/stdin" => "/proc/self/fd/0".into(),
        "/dev/stdout" => "/proc/self/fd/1".into(),
        "/dev/stderr" => "/proc/self/fd/2".into(),
        _ => path,
    }
}

/// This VMM's host pid.
fn host_pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Whether host id `n` is this VMM process or one of its threads.
fn is_vmm_task(n: i32) -> bool {
    n > 0 && (n == host_pid() || std::path::Path::new(&format!("/proc/self/task/{n}")).exists())
}

fn guest_tids(ctx: &Ctx<'_>) -> Vec<i32> {
    let next = ctx.tg.threads.lock().unwrap().next_tid();
    (GUEST_PID..next).collect()
}

/// `/proc/thread-self[/...]` as `/proc/self/task/<caller's tid>[/...]`, and a host pid or tid
/// of the VMM as `self`.
fn rewrite(ctx: &Ctx<'_>, p: &str, tids: &[i32]) -> String {
    let rest = p.strip_prefix("/proc/").unwrap_or("");
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let sep = if tail.is_empty() { "" } else { "/" };
    if first == "thread-self" {
        return format!("/proc/self/task/{}{sep}{tail}", ctx.task.tid);
    }
    if let Ok(n) = first.parse::<i32>() {
        if !tids.contains(&n) && is_vmm_task(n) {
            return format!("/proc/self{sep}{tail}");
        }
    }
    p.to_string()
}

/// The run's /sys files (cores and memory), if `p` is one.
fn sys_file(ctx: &Ctx<'_>, p: &str) -> Option<Vec<u8>> {
    let cpus = view::cpu_list(ctx.run.ncpus()).into_bytes();
    match p {
        "/sys/devices/system/cpu/online"
        | "/sys/devices/system/cpu/possible"
        | "/sys/devices/system/cpu/present"
        | "/sys/fs/cgroup/cpuset.cpus"
        | "/sys/fs/cgroup/cpuset.cpus.effective" => Some(cpus),
        "/sys/fs/cgroup/cpuset.mems" | "/sys/fs/cgroup/cpuset.mems.effective" => {
            Some(b"0\n".to_vec())
        }
        "/sys/fs/cgroup/cpu.max" => Some(b"max 100000\n".to_vec()),
        "/sys/fs/cgroup/memory.max" => Some(format!("{}\n", ctx.tg.proc.mem_total).into_bytes()),
        _ => None,
    }
}

/// What the guest's virtual /proc files show, from the kernel objects now.
pub fn guest_view(ctx: &Ctx<'_>) -> GuestView {
    let tg = ctx.tg;
    let (mappings, mapped, peak) = {
        let mm = tg.mm.lock().unwrap();
        let maps = mm
            .vmas()
            .iter()
            .map(|v| Mapping {
                start: v.start,
                end: v.end,
                read: v.attrs.prot & libc::PROT_READ != 0,
                write: v.attrs.prot & libc::PROT_WRITE != 0,
                exec: v.attrs.prot & libc::PROT_EXEC != 0,
                name: match (&v.attrs.label, &v.attrs.backing) {
                    (Some(l), _) => l.to_string(),
                    (None, VmaBacking::FileCopy { path: Some(p), .. })
                    | (None, VmaBacking::SharedFile { path: Some(p), .. }) => p.clone(),
                    (None, VmaBacking::FileCopy { path: None, .. }) => tg.exe_path.clone(),
                    _ => String::new(),
                },
            })
            .collect();
        (maps, mm.mapped_bytes(), mm.peak_bytes())
    };
    let comm: String = tg
        .exe_path
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(15)
        .collect();
    GuestView {
        pid: GUEST_PID,
        tids: guest_tids(ctx),
        comm,
        argv: tg.proc.argv.clone(),
        env: tg.proc.env.clone(),
        auxv: tg.proc.auxv.clone(),
        uid: tg.creds.uid,
        gid: tg.creds.gid,
        groups: tg.proc.groups.clone(),
        umask: tg.umask(),
        mappings,
        mem_total: tg.proc.mem_total,
        mem_mapped: mapped,
        peak_mapped: peak.max(mapped),
        cpus: ctx.run.ncpus(),
        fds: tg.files.lock().unwrap().numbers(),
    }
}

/// Where a guest path leads in the guest's procfs view: the guest (and what part of it), a
/// run-wide file, or the host. `None` when the path is not below /proc.
fn classify(ctx: &Ctx<'_>, p: &str) -> Option<(ProcPath, Vec<i32>)> {
    if p != "/proc" && !p.starts_with("/proc/") {
        return None;
    }
    let tids = guest_tids(ctx);
    let p = rewrite(ctx, p, &tids);
    Some((view::classify(&p, &[GUEST_PID], &tids), tids))
}

/// How the VMM answers the guest path `full` (absolute). Refusals are counted.
pub fn answer(ctx: &Ctx<'_>, full: &str) -> Answer {
    let p = alias(normalize(full));
    if p.starts_with("/sys/") {
        return sys_file(ctx, &p).map_or(Answer::Host, Answer::File);
    }
    let Some((class, _)) = classify(ctx, &p) else {
        return Answer::Host;
    };
    match class {
        ProcPath::Host => Answer::Host,
        // The network namespace's files (/proc/net is a symlink to self/net).
        ProcPath::Guest { tid, rest } if tid != Some(-1) && view::is_netns(&rest) => Answer::Host,
        ProcPath::Global(g) => {
            Answer::File(view::global(g, &guest_view(ctx), &ctx.tg.proc.host_cpus))
        }
        ProcPath::Guest { tid, rest }
            if tid != Some(-1) && guest_dir(ctx, tid, &rest).is_some() =>
        {
            Answer::Dir(guest_dir(ctx, tid, &rest).unwrap_or_default())
        }
        ProcPath::Guest { tid, rest } => match view::render(&guest_view(ctx), tid, &rest) {
            GuestFile::Bytes(b) => Answer::File(b),
            GuestFile::Exe => Answer::Exe,
            GuestFile::Fd(n) => Answer::Fd(n),
            GuestFile::Errno(e) => {
                let kind = if rest.starts_with("fd/") {
                    refusal::FD
                } else {
                    refusal::VMM_PROC
                };
                ctx.run.refuse(kind);
                Answer::Refused(Errno(e))
            }
        },
    }
}

/// `/proc/<pid>/fd/<n>` of another process, as (pid, n): not the guest, not this VMM.
pub fn peer_fd_path(ctx: &Ctx<'_>, full: &str) -> Option<(i32, i32)> {
    let p = normalize(full);
    let rest = p.strip_prefix("/proc/")?;
    let (pid, n) = rest.split_once("/fd/")?;
    let (pid, n) = (pid.parse::<i32>().ok()?, n.parse::<i32>().ok()?);
    let guest = pid == ctx.tg.pid() || guest_tids(ctx).contains(&pid) || is_vmm_task(pid);
    (pid > 0 && n >= 0 && !guest).then_some((pid, n))
}

/// Open `/proc/<pid>/fd/<n>` of another dualstack VM of the guest's user through that VMM's
/// descriptor broker ([`crate::kernel::fdshare`]): its guest's descriptor `n`, re-opened.
/// `None`: the path is not one, or no VMM answers at that pid (the host path is opened).
pub fn open_peer_fd(ctx: &Ctx<'_>, full: &str, flags: i32) -> Option<Result<OwnedFd, Errno>> {
    let (pid, n) = peer_fd_path(ctx, full)?;
    match crate::kernel::fdshare::fetch(pid, n, flags, ctx.tg.creds.uid) {
        Ok(None) => None,
        Ok(Some(fd)) => Some(match check_host_fd(ctx, &fd) {
            Ok(None) => Ok(fd),
            Ok(Some(_)) => Err(Errno(libc::EACCES)),
            Err(e) => Err(e),
        }),
        Err(e) => {
            if e.0 == libc::EACCES {
                ctx.run.refuse(refusal::FD);
            }
            Some(Err(e))
        }
    }
}

/// The content of a virtual regular file at `full`, if the path is one.
pub fn file(ctx: &Ctx<'_>, full: &str) -> Option<Vec<u8>> {
    match answer(ctx, full) {
        Answer::File(c) => Some(c),
        _ => None,
    }
}

/// What `readlink` of a guest path below /proc gives: `None` for a host path (the host
/// answers), else the target or the errno (EINVAL: not a link).
pub fn readlink(ctx: &Ctx<'_>, full: &str) -> Option<Result<Vec<u8>, Errno>> {
    let p = normalize(full);
    match p.as_str() {
        "/proc/self" => return Some(Ok(GUEST_PID.to_string().into_bytes())),
        "/proc/thread-self" => {
            return Some(Ok(format!("{GUEST_PID}/task/{}", ctx.task.tid).into_bytes()))
        }
        _ => {}
    }
    let (class, _) = classify(ctx, &p)?;
    let rest = match class {
        ProcPath::Host => return None,
        ProcPath::Global(_) => return Some(Err(Errno(libc::EINVAL))),
        ProcPath::Guest { tid: Some(-1), .. } => return Some(Err(Errno(libc::ENOENT))),
        ProcPath::Guest { rest, .. } => rest,
    };
    Some(match rest.as_str() {
        "exe" => Ok(ctx.tg.exe_path.clone().into_bytes()),
        "cwd" => Ok(ctx.tg.fs.cwd().into_bytes()),
        "root" => Ok(b"/".to_vec()),
        r => match r.strip_prefix("fd/").map(str::parse::<i32>) {
            Some(Ok(n)) => fd_name(ctx, n),
            Some(Err(_)) => Err(Errno(libc::ENOENT)),
            None if view::REFUSED.contains(&r.split('/').next().unwrap_or("")) => {
                ctx.run.refuse(refusal::VMM_PROC);
                Err(Errno(libc::EACCES))
            }
            None => Err(Errno(libc::EINVAL)),
        },
    })
}

/// What `/proc/self/fd/N` names: the guest path the descriptor was opened with, else what the
/// host calls it (`pipe:[...]`, the terminal).
fn fd_name(ctx: &Ctx<'_>, n: i32) -> Result<Vec<u8>, Errno> {
    let f = ctx.file(n).map_err(|_| {
        ctx.run.refuse(refusal::FD);
        Errno(libc::ENOENT)
    })?;
    if let Some(p) = f.path() {
        return Ok(p.as_bytes().to_vec());
    }
    let host = std::fs::read_link(format!("/proc/self/fd/{}", f.raw()))?;
    Ok(host.into_os_string().into_encoded_bytes())
}

/// Re-open the guest's descriptor `n` (`open("/proc/self/fd/N")`): a new open file description
/// of the same file, from the guest's table only.
pub fn reopen_fd(ctx: &Ctx<'_>, n: i32, flags: i32) -> Result<(OwnedFd, Option<String>), Errno> {
    let f = ctx.file(n).map_err(|_| {
        ctx.run.refuse(refusal::FD);
        Errno(libc::ENOENT)
    })?;
    let c = std::ffi::CString::new(format!("/proc/self/fd/{}", f.raw())).unwrap();
    let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TMPFILE) | libc::O_CLOEXEC;
    // SAFETY: opens a NUL-terminated path; returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd owned by us.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Guest descriptors never refer to the VMM's procfs files, but check as for any open.
    if check_host_fd(ctx, &fd)?.is_some() {
        return Err(Errno(libc::EACCES));
    }
    Ok((fd, f.path().map(str::to_string)))
}

/// Open the program (`/proc/self/exe`), read-only.
pub fn open_exe(ctx: &Ctx<'_>, flags: i32) -> Result<OwnedFd, Errno> {
    if flags & libc::O_ACCMODE != libc::O_RDONLY {
        return Err(Errno(libc::ETXTBSY));
    }
    let f = std::fs::File::open(&ctx.tg.proc.exe_host).map_err(|_| Errno(libc::ENOENT))?;
    Ok(f.into())
}

/// Refuse a device node outside the harmless list (null, zero, random, tty...).
fn check_device(ctx: &Ctx<'_>, fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat for our fd.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let kind = st.st_mode & libc::S_IFMT;
    let is_block = kind == libc::S_IFBLK;
    if (is_block || kind == libc::S_IFCHR) && !view::device_allowed(is_block, st.st_rdev) {
        ctx.run.refuse(refusal::DEVICE);
        return Err(Errno(libc::EACCES));
    }
    Ok(())
}

/// Check a host fd the guest's open produced: device nodes outside the harmless list are
/// refused, and a file in procfs that belongs to this VMM (reached through a symlink, say) is
/// answered by the guest's view instead. `Ok(None)`: keep the host fd.
pub fn check_host_fd(ctx: &Ctx<'_>, fd: &OwnedFd) -> Result<Option<Answer>, Errno> {
    check_device(ctx, fd)?;
    // SAFETY: statfs is plain data.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs for our fd.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } < 0 || sfs.f_type != PROC_SUPER_MAGIC {
        return Ok(None);
    }
    let Ok(host) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return Ok(None);
    };
    let host = host.to_string_lossy().into_owned();
    // Wherever procfs is mounted: the component naming one of this VMM's host ids, or
    // self/thread-self, starts the part that describes the VMM.
    let comps: Vec<&str> = host.split('/').filter(|c| !c.is_empty()).collect();
    let tids = guest_tids(ctx);
    let at = comps.iter().position(|c| {
        matches!(*c, "self" | "thread-self")
            || c.parse::<i32>()
                .is_ok_and(|n| !tids.contains(&n) && is_vmm_task(n))
    });
    let Some(i) = at else { return Ok(None) };
    let guest = format!("/proc/self/{}", comps[i + 1..].join("/"));
    match answer(ctx, &guest) {
        Answer::Host => Ok(None),
        a => Ok(Some(a)),
    }
}
