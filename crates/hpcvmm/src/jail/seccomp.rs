//! The seccomp-BPF allow-list of every VMM thread after set-up, built with rust-vmm's
//! `seccompiler` (as Firecracker and Cloud Hypervisor do).
//!
//! The list is what the vCPU loop, the syscall layer's host calls and the stats need once the VM
//! exists (measured with `strace -f` over the test guests and mini-apps; see
//! `notes/seccomp-allowlist.md` in the commit that introduced it). Guest system calls are served
//! by the syscall layer; those it passes on become host calls from this list, and anything the
//! guest asks for that is not here must be answered by the syscall layer itself.
//!
//! ## What happens on a call outside the list
//! The default action is `SECCOMP_RET_TRAP`: the kernel does not execute the call and raises
//! SIGSYS on the calling thread, whose handler (installed here, async-signal-safe) writes
//! `seccomp-violation NR` to the report descriptor (the supervisor's pipe, or stderr when there
//! is none) and ends the whole process with `exit_group(159)` (128 + SIGSYS), the way Firecracker
//! reports a bad system call. `SECCOMP_RET_KILL_PROCESS` would end the process as surely but
//! leave no record of *which* call it was except in the kernel log; a handler cannot make the
//! forbidden call happen, it only chooses the words of the report. If SIGSYS were blocked or
//! its handler replaced, the kernel kills the process with SIGSYS instead, which the supervisor
//! reports too (without the name).
//!
//! `clone3` answers ENOSYS (a second filter) so glibc falls back to `clone`, whose flags a BPF
//! filter can check: only threads (CLONE_THREAD) may be created, never a process.
//!
//! ## Adding a host call (for everyone changing the syscall layer, the vCPU loop or the stats)
//! Any host system call the VMM makes *after* the jail is applied (that is, anything reachable
//! from a guest system call handler, the vCPU thread loop, thread creation, teardown or
//! statistics collection) must be in this list, or the run ends with exit 159 and
//! `seccomp-violation NR NAME` naming it (the integration tests run every guest jailed, so a
//! missing entry shows up there as a 159, not silently). To add one:
//! 1. check the call cannot hand the guest more than its user's rights: nothing that acts on
//!    another process (`ptrace`, `process_vm_*`, `kill` outside this process, `pidfd_*`),
//!    changes credentials or namespaces, loads code (`execve`, `bpf`, `init_module`) or
//!    re-opens by handle (`open_by_handle_at`); those stay out, and
//!    `the_allow_list_has_no_process_or_privilege_calls` below lists them;
//! 2. add `("name", libc::SYS_name)` to [`ALLOWED`] under the right heading, or, when only
//!    some arguments are safe (as for `ioctl`, `clone`, `prctl`, `tgkill`), a rule with
//!    argument conditions in [`rules`];
//! 3. say in the commit which handler needs it. Calls made only *before* the jail (opening
//!    /dev/kvm, creating the VM, mapping and locking guest memory, installing signal
//!    handlers) need no entry: that work happens in the privileged set-up phase of
//!    `vm::run_with`, before the `before_guest` hook.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// glibc's internal signal for set*id broadcasts (SIGRTMIN - 1 on x86-64 Linux).
const GLIBC_SIGSETXID: u64 = 33;

/// Exit status of a VMM that made a forbidden system call (128 + SIGSYS).
pub const EXIT_SECCOMP: i32 = 159;

/// Prefix of the line the SIGSYS handler writes to the report descriptor.
pub const REPORT_PREFIX: &str = "seccomp-violation ";

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter failed")]
    Build(#[source] seccompiler::BackendError),
    #[error("compiling the seccomp filter to BPF failed")]
    Compile(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter failed")]
    Install(#[source] seccompiler::Error),
    #[error("installing the SIGSYS reporter failed")]
    Handler(#[source] std::io::Error),
}

const KVMIO: u64 = 0xAE;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

use kvm_bindings::{kvm_cpuid2, kvm_fpu, kvm_msrs, kvm_regs, kvm_sregs, kvm_xsave};
use std::mem::size_of;

/// The KVM ioctls the VMM issues after set-up: running vCPUs, creating and configuring the
/// vCPU of each new guest thread, and reading KVM's binary statistics.
pub const KVM_IOCTLS: [(&str, u64); 14] = [
    ("KVM_RUN", io(0x80)),
    ("KVM_CREATE_VCPU", io(0x41)),
    ("KVM_GET_STATS_FD", io(0xce)),
    ("KVM_GET_REGS", ior(0x81, size_of::<kvm_regs>())),
    ("KVM_SET_REGS", iow(0x82, size_of::<kvm_regs>())),
    ("KVM_GET_SREGS", ior(0x83, size_of::<kvm_sregs>())),
    ("KVM_SET_SREGS", iow(0x84, size_of::<kvm_sregs>())),
    ("KVM_GET_MSRS", iowr(0x88, size_of::<kvm_msrs>())),
    ("KVM_SET_MSRS", iow(0x89, size_of::<kvm_msrs>())),
    ("KVM_GET_FPU", ior(0x8c, size_of::<kvm_fpu>())),
    ("KVM_SET_FPU", iow(0x8d, size_of::<kvm_fpu>())),
    ("KVM_SET_CPUID2", iow(0x90, size_of::<kvm_cpuid2>())),
    // signal frames carry the FPU/XSAVE state
    ("KVM_GET_XSAVE", ior(0xa4, size_of::<kvm_xsave>())),
    ("KVM_SET_XSAVE", iow(0xa5, size_of::<kvm_xsave>())),
];

/// System calls allowed with any arguments.
pub const ALLOWED: &[(&str, i64)] = &[
    // descriptors the syscall layer holds for the guest, and the stats/report pipes
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("lseek", libc::SYS_lseek),
    ("close", libc::SYS_close),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("pipe2", libc::SYS_pipe2),
    ("memfd_create", libc::SYS_memfd_create),
    ("ftruncate", libc::SYS_ftruncate),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("fcntl", libc::SYS_fcntl),
    // paths: resolved by the kernel inside the guest root (openat2 RESOLVE_IN_ROOT); Landlock
    // limits where they may lead
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("newfstatat", libc::SYS_newfstatat),
    ("fstat", libc::SYS_fstat),
    ("statx", libc::SYS_statx),
    ("faccessat2", libc::SYS_faccessat2),
    ("getdents64", libc::SYS_getdents64),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("mkdirat", libc::SYS_mkdirat),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat2", libc::SYS_renameat2),
    ("symlinkat", libc::SYS_symlinkat),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("utimensat", libc::SYS_utimensat),
    ("getcwd", libc::SYS_getcwd),
    // memory: guest memory advice, vCPU run areas, thread stacks, the allocator
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    ("mremap", libc::SYS_mremap),
    ("brk", libc::SYS_brk),
    // threads: one host thread per vCPU
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_yield", libc::SYS_sched_yield),
    ("gettid", libc::SYS_gettid),
    ("getpid", libc::SYS_getpid),
    ("futex", libc::SYS_futex),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    // time, ids, randomness, accounting
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("times", libc::SYS_times),
    // guest timerfds are host timerfds
    ("timerfd_create", libc::SYS_timerfd_create),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    // a guest signalfd's host stand-in
    ("eventfd2", libc::SYS_eventfd2),
    ("getrusage", libc::SYS_getrusage),
    ("getrandom", libc::SYS_getrandom),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
    ("uname", libc::SYS_uname),
    // guest sockets, passed through by syscall/sockets.rs (issue 12, MPI); socket and
    // socketpair themselves are allowed per family in `rules`
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept4", libc::SYS_accept4),
    ("connect", libc::SYS_connect),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    // SysV shared memory between ranks (syscall/shm.rs, issue 12): shmat attaches into the
    // shared window's reservation; MAP_SHARED file mappings need only mmap
    ("shmget", libc::SYS_shmget),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    // issue 11 (dyn): the host objects behind the guest's statfs, sendfile, copy_file_range,
    // fadvise64, fallocate, flock, fchown(at), link(at), getgroups, eventfd2 and epoll_* calls
    // (fstatfs also tells the guest's /proc whether an opened file is in procfs)
    ("fstatfs", libc::SYS_fstatfs),
    ("sendfile", libc::SYS_sendfile),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("flock", libc::SYS_flock),
    ("fchown", libc::SYS_fchown),
    ("fchownat", libc::SYS_fchownat),
    ("linkat", libc::SYS_linkat),
    ("getgroups", libc::SYS_getgroups),
    ("eventfd2", libc::SYS_eventfd2),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
];

/// The non-KVM ioctls the syscall layer passes on for guest sockets (syscall/sockets.rs):
/// pointer-free interface queries, the interface list (SIOCGIFCONF, into a VMM buffer) and
/// int-valued queue/blocking requests.
pub const SOCKET_IOCTLS: [(&str, u64); 14] = [
    ("SIOCGIFNAME", libc::SIOCGIFNAME),
    ("SIOCGIFCONF", libc::SIOCGIFCONF),
    ("SIOCGIFINDEX", libc::SIOCGIFINDEX),
    ("SIOCGIFFLAGS", libc::SIOCGIFFLAGS),
    ("SIOCGIFADDR", libc::SIOCGIFADDR),
    ("SIOCGIFDSTADDR", libc::SIOCGIFDSTADDR),
    ("SIOCGIFBRDADDR", libc::SIOCGIFBRDADDR),
    ("SIOCGIFNETMASK", libc::SIOCGIFNETMASK),
    ("SIOCGIFMTU", libc::SIOCGIFMTU),
    ("SIOCGIFHWADDR", libc::SIOCGIFHWADDR),
    ("SIOCGIFTXQLEN", libc::SIOCGIFTXQLEN),
    ("FIONREAD", libc::FIONREAD),
    ("TIOCOUTQ", libc::TIOCOUTQ),
    ("FIONBIO", libc::FIONBIO),
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SeccompError::Build)
}

fn dword(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(SeccompError::Build)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(SeccompError::Build)
}

/// The rules of the VMM's allow-list, keyed by system call number. `pid` is the VMM's host pid:
/// `tgkill` may only signal its own threads.
pub fn rules(pid: i32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, nr) in ALLOWED {
        m.insert(nr, Vec::new());
    }
    // ioctl: only the KVM requests above (on any descriptor: only KVM fds take them).
    let mut ioctls = Vec::new();
    for &(_, req) in KVM_IOCTLS.iter().chain(&SOCKET_IOCTLS) {
        ioctls.push(rule(vec![dword(1, SeccompCmpOp::Eq, req)?])?);
    }
    m.insert(libc::SYS_ioctl, ioctls);
    // socket: only the families syscall/sockets.rs passes through; socketpair: AF_UNIX.
    let mut families = Vec::new();
    for fam in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ] {
        families.push(rule(vec![dword(0, SeccompCmpOp::Eq, fam as u64)?])?);
    }
    m.insert(libc::SYS_socket, families);
    m.insert(
        libc::SYS_socketpair,
        vec![rule(vec![dword(
            0,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    // tgkill: vCPU kicks to threads of this process only.
    m.insert(
        libc::SYS_tgkill,
        vec![rule(vec![dword(0, SeccompCmpOp::Eq, pid as u32 as u64)?])?],
    );
    // clone: threads only (std::thread after clone3's ENOSYS).
    let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    m.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(thread),
            thread,
        )?])?],
    );
    // rt_sigaction: only glibc's own SIGSETXID (33) handler, which glibc installs on the
    // first pthread_create of a process (the first vCPU thread is created after the drop).
    // Every other handler (the vCPU kick, SIGSYS) is installed before the filter.
    m.insert(
        libc::SYS_rt_sigaction,
        vec![rule(vec![dword(0, SeccompCmpOp::Eq, GLIBC_SIGSETXID)?])?],
    );
    // clone3 passes this filter; the ENOSYS filter answers it.
    m.insert(libc::SYS_clone3, Vec::new());
    // prctl: naming threads (std::thread::Builder::name) only.
    m.insert(
        libc::SYS_prctl,
        vec![
            rule(vec![dword(0, SeccompCmpOp::Eq, libc::PR_SET_NAME as u64)?])?,
            rule(vec![dword(0, SeccompCmpOp::Eq, libc::PR_GET_NAME as u64)?])?,
        ],
    );
    Ok(m)
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

/// The two BPF programs of the jail, in the order they are installed: clone3 -> ENOSYS, then
/// the allow-list (trap on anything else). The kernel runs both on every call and takes the
/// stricter verdict, so the order only matters for installing: seccompiler sets
/// `no_new_privs` with a prctl before each filter, which the allow-list forbids.
pub fn filters(pid: i32) -> Result<Vec<BpfProgram>, SeccompError> {
    let allow = SeccompFilter::new(
        rules(pid)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
        arch(),
    )
    .map_err(SeccompError::Build)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .map_err(SeccompError::Build)?;
    Ok(vec![
        clone3.try_into().map_err(SeccompError::Compile)?,
        allow.try_into().map_err(SeccompError::Compile)?,
    ])
}

/// Where the SIGSYS handler reports (-1: stderr).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Offset of `si_syscall` in x86-64 `siginfo_t` (after signo, errno, code, padding and
/// `si_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only async-signal-safe work here: read one int, format into a stack buffer, write, exit.
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for SIGSYS from
    // seccomp si_syscall lives at this offset.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    let mut buf = [0u8; 96];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        for &c in b {
            if n < buf.len() {
                buf[n] = c;
                n += 1;
            }
        }
    };
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        put(b"dualstack: the jailed VMM made a forbidden system call: ");
    }
    put(REPORT_PREFIX.as_bytes());
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = nr.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if nr < 0 {
        put(b"-");
    }
    put(&digits[d..]);
    if let Some(name) = crate::syscall::table::name(nr as u64) {
        put(b" ");
        put(name.as_bytes());
    }
    put(b"\n");
    let out = if fd < 0 { 2 } else { fd };
    // SAFETY: write and exit_group are async-signal-safe and allowed by the filter.
    unsafe {
        libc::write(out, buf.as_ptr().cast(), n);
        libc::syscall(libc::SYS_exit_group, EXIT_SECCOMP);
    }
}

/// Install the SIGSYS reporter; `report_fd` receives the `seccomp-violation NR NAME` line
/// (`None`: a human sentence on stderr).
pub fn install_reporter(report_fd: Option<i32>) -> Result<(), SeccompError> {
    REPORT_FD.store(report_fd.unwrap_or(-1), Ordering::Relaxed);
    // SAFETY: sigaction is plain data; all zeroes is a valid empty mask and no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa` is a valid sigaction whose handler only does async-signal-safe work.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    // The handler must run: SIGSYS unblocked on this thread (inherited by later threads).
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// Install `filters` on every thread of the process (TSYNC); threads created later inherit them.
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for f in filters {
        seccompiler::apply_filter_all_threads(f).map_err(SeccompError::Install)?;
    }
    Ok(())
}

/// A violation the supervisor read from the report descriptor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    pub nr: i64,
    pub name: String,
}

/// Parse the handler's report line(s); the first violation wins.
pub fn parse_report(text: &str) -> Option<Violation> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(REPORT_PREFIX))?;
    let nr: i64 = line.split_whitespace().next()?.parse().ok()?;
    let name = u64::try_from(nr)
        .ok()
        .and_then(crate::syscall::table::name)
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall {nr}"));
    Some(Violation { nr, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_ioctl_numbers_match_the_kernel_headers() {
        // Values from <linux/kvm.h> on x86-64.
        let get = |n: &str| KVM_IOCTLS.iter().find(|(k, _)| *k == n).unwrap().1;
        assert_eq!(get("KVM_RUN"), 0xae80);
        assert_eq!(get("KVM_CREATE_VCPU"), 0xae41);
        assert_eq!(get("KVM_GET_REGS"), 0x8090_ae81);
        assert_eq!(get("KVM_SET_REGS"), 0x4090_ae82);
        assert_eq!(get("KVM_GET_SREGS"), 0x8138_ae83);
        assert_eq!(get("KVM_SET_MSRS"), 0x4008_ae89);
        assert_eq!(get("KVM_SET_FPU"), 0x41a0_ae8d);
        assert_eq!(get("KVM_SET_CPUID2"), 0x4008_ae90);
    }

    #[test]
    fn the_allow_list_has_no_process_or_privilege_calls() {
        let m = rules(1).unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_process_vm_writev,
            libc::SYS_process_vm_readv,
            libc::SYS_setuid,
            libc::SYS_setresuid,
            libc::SYS_capset,
            libc::SYS_mount,
            libc::SYS_kill,
            libc::SYS_seccomp,
            libc::SYS_bpf,
            libc::SYS_open_by_handle_at,
        ] {
            assert!(!m.contains_key(&nr), "syscall {nr} must not be allowed");
        }
        // Sockets only for the families the syscall layer passes through (no AF_PACKET...).
        assert_eq!(m[&libc::SYS_socket].len(), 4);
        assert_eq!(m[&libc::SYS_socketpair].len(), 1);
        let progs = filters(1).unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs[1].len() > ALLOWED.len());
    }

    #[test]
    fn report_lines_parse() {
        assert_eq!(
            parse_report("seccomp-violation 101 ptrace\n"),
            Some(Violation {
                nr: 101,
                name: "ptrace".into()
            })
        );
        assert_eq!(
            parse_report("noise\nseccomp-violation 59\n").unwrap().name,
            "execve"
        );
        assert_eq!(
            parse_report("seccomp-violation 9999\n").unwrap().name,
            "syscall 9999"
        );
        assert_eq!(parse_report(""), None);
    }
}
