//! The one x86-64 system call table: for every number its name, handler and how completely
//! the HPC VMM supports it. Numbers and names are checked against the host's
//! `asm/unistd_64.h` by a unit test. To add a call: write the handler in its area module and
//! replace the `unsupported(...)` line of its number here.

use super::{cma, events, files, futex, memory, shm, signals, sockets, system, threads, time};
use super::{Args, Ctx, Errno, SysOutcome, SysResult};

/// How completely a system call is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// As Linux does it.
    Supported,
    /// Works for what programs use; the string says what is missing or different.
    Partial(&'static str),
    /// Not implemented: the call fails with this errno (and is counted as such in the stats).
    Unsupported(i32),
}

/// A system call handler.
#[derive(Clone, Copy)]
pub enum Handler {
    /// No handler (an unsupported call).
    None,
    /// Returns a value (or errno) for RAX.
    Value(fn(&mut Ctx<'_>, &Args) -> SysResult),
    /// Returns what the vCPU loop does next (exit, clone, signal...).
    Control(fn(&mut Ctx<'_>, &Args) -> Result<SysOutcome, Errno>),
}

/// One table entry.
#[derive(Clone, Copy)]
pub struct Entry {
    pub nr: u16,
    pub name: &'static str,
    pub support: Support,
    pub handler: Handler,
}

/// Highest system call number in the table.
pub const MAX_NR: usize = TABLE.len() - 1;

/// The entry of system call `nr`, if the number exists on x86-64.
pub fn lookup(nr: u64) -> Option<&'static Entry> {
    TABLE.get(nr as usize).and_then(Option::as_ref)
}

/// Name of system call `nr`, if it has one.
pub fn name(nr: u64) -> Option<&'static str> {
    lookup(nr).map(|e| e.name)
}

/// Every entry, in number order.
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    TABLE.iter().flatten()
}

const fn value(
    nr: u16,
    name: &'static str,
    support: Support,
    f: fn(&mut Ctx<'_>, &Args) -> SysResult,
) -> Option<Entry> {
    Some(Entry {
        nr,
        name,
        support,
        handler: Handler::Value(f),
    })
}

const fn control(
    nr: u16,
    name: &'static str,
    support: Support,
    f: fn(&mut Ctx<'_>, &Args) -> Result<SysOutcome, Errno>,
) -> Option<Entry> {
    Some(Entry {
        nr,
        name,
        support,
        handler: Handler::Control(f),
    })
}

const fn unsupported(nr: u16, name: &'static str, errno: i32) -> Option<Entry> {
    Some(Entry {
        nr,
        name,
        support: Support::Unsupported(errno),
        handler: Handler::None,
    })
}

use Support::{Partial, Supported};

#[rustfmt::skip]
static TABLE: [Option<Entry>; 451] = [
    value(0, "read", Supported, files::read),
    value(1, "write", Supported, files::write),
    value(2, "open", Supported, files::open),
    value(3, "close", Supported, files::close),
    value(4, "stat", Supported, files::stat),
    value(5, "fstat", Supported, files::fstat),
    value(6, "lstat", Supported, files::lstat),
    value(7, "poll", Supported, files::poll),
    value(8, "lseek", Supported, files::lseek),
    value(9, "mmap", Partial("MAP_PRIVATE file mappings are private copies; MAP_SHARED file mappings share the host pages in the window above guest RAM (MAP_FIXED only there)"), memory::mmap),
    value(10, "mprotect", Partial("recorded, not enforced: user memory is mapped RWX with large pages"), memory::mprotect),
    value(11, "munmap", Supported, memory::munmap),
    value(12, "brk", Supported, memory::brk),
    value(13, "rt_sigaction", Supported, signals::rt_sigaction),
    value(14, "rt_sigprocmask", Supported, signals::rt_sigprocmask),
    control(15, "rt_sigreturn", Supported, signals::rt_sigreturn),
    value(16, "ioctl", Partial("no terminal or device ioctls (ENOTTY); on sockets the pointer-free SIOCGIF* queries, FIONREAD, SIOCOUTQ, FIONBIO"), files::ioctl),
    value(17, "pread64", Supported, files::pread64),
    value(18, "pwrite64", Supported, files::pwrite64),
    value(19, "readv", Supported, files::readv),
    value(20, "writev", Supported, files::writev),
    value(21, "access", Supported, files::access),
    value(22, "pipe", Supported, files::pipe),
    value(23, "select", Partial("no signal mask; readiness through the host's poll"), events::select),
    value(24, "sched_yield", Supported, threads::sched_yield),
    value(25, "mremap", Supported, memory::mremap),
    value(26, "msync", Partial("file mappings are copies: nothing is written back"), memory::accept),
    value(27, "mincore", Partial("every mapped page is resident (memory is preallocated)"), memory::mincore),
    value(28, "madvise", Partial("only MADV_DONTNEED acts (zeroes); other advice is accepted and ignored"), memory::madvise),
    value(29, "shmget", Supported, shm::shmget),
    value(30, "shmat", Partial("attached in the shared window above guest RAM; the address hint must lie there"), shm::shmat),
    value(31, "shmctl", Supported, shm::shmctl),
    value(32, "dup", Supported, files::dup),
    value(33, "dup2", Supported, files::dup2),
    value(34, "pause", Supported, signals::pause),
    value(35, "nanosleep", Supported, time::nanosleep),
    value(36, "getitimer", Supported, time::getitimer),
    value(37, "alarm", Supported, time::alarm),
    value(38, "setitimer", Partial("ITIMER_VIRTUAL and ITIMER_PROF count the VMM process's CPU time"), time::setitimer),
    value(39, "getpid", Supported, system::getpid),
    value(40, "sendfile", Supported, files::sendfile),
    value(41, "socket", Partial("AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK/NETLINK_ROUTE host sockets; other families EAFNOSUPPORT"), sockets::socket),
    value(42, "connect", Supported, sockets::connect),
    value(43, "accept", Supported, sockets::accept),
    value(44, "sendto", Supported, sockets::sendto),
    value(45, "recvfrom", Supported, sockets::recvfrom),
    value(46, "sendmsg", Partial("at most 64 KiB of ancillary data"), sockets::sendmsg),
    value(47, "recvmsg", Partial("at most 64 KiB of ancillary data"), sockets::recvmsg),
    value(48, "shutdown", Supported, sockets::shutdown),
    value(49, "bind", Supported, sockets::bind),
    value(50, "listen", Supported, sockets::listen),
    value(51, "getsockname", Partial("a Unix socket bound by path reports the VMM's /proc/self/fd name for it"), sockets::getsockname),
    value(52, "getpeername", Supported, sockets::getpeername),
    value(53, "socketpair", Supported, sockets::socketpair),
    value(54, "setsockopt", Supported, sockets::setsockopt),
    value(55, "getsockopt", Supported, sockets::getsockopt),
    control(56, "clone", Partial("threads only (CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD); processes are ENOSYS"), threads::clone),
    unsupported(57, "fork", libc::ENOSYS),
    unsupported(58, "vfork", libc::ENOSYS),
    unsupported(59, "execve", libc::ENOSYS),
    control(60, "exit", Supported, threads::exit),
    unsupported(61, "wait4", libc::ENOSYS),
    control(62, "kill", Partial("only the guest itself: its pid, its group, -1"), signals::kill),
    value(63, "uname", Supported, system::uname),
    unsupported(64, "semget", libc::ENOSYS),
    unsupported(65, "semop", libc::ENOSYS),
    unsupported(66, "semctl", libc::ENOSYS),
    value(67, "shmdt", Supported, shm::shmdt),
    unsupported(68, "msgget", libc::ENOSYS),
    unsupported(69, "msgsnd", libc::ENOSYS),
    unsupported(70, "msgrcv", libc::ENOSYS),
    unsupported(71, "msgctl", libc::ENOSYS),
    value(72, "fcntl", Supported, files::fcntl),
    value(73, "flock", Supported, files::flock),
    value(74, "fsync", Supported, files::fsync),
    value(75, "fdatasync", Partial("a full fsync"), files::fsync),
    unsupported(76, "truncate", libc::ENOSYS),
    value(77, "ftruncate", Supported, files::ftruncate),
    unsupported(78, "getdents", libc::ENOSYS),
    value(79, "getcwd", Supported, files::getcwd),
    value(80, "chdir", Supported, files::chdir),
    value(81, "fchdir", Supported, files::fchdir),
    value(82, "rename", Supported, files::rename),
    value(83, "mkdir", Supported, files::mkdir),
    value(84, "rmdir", Supported, files::rmdir),
    value(85, "creat", Supported, files::creat),
    value(86, "link", Supported, files::link),
    value(87, "unlink", Supported, files::unlink),
    value(88, "symlink", Supported, files::symlink),
    value(89, "readlink", Supported, files::readlink),
    value(90, "chmod", Supported, files::chmod),
    value(91, "fchmod", Supported, files::fchmod),
    value(92, "chown", Supported, files::chown),
    value(93, "fchown", Supported, files::fchown),
    value(94, "lchown", Supported, files::lchown),
    value(95, "umask", Supported, files::umask),
    value(96, "gettimeofday", Supported, time::gettimeofday),
    value(97, "getrlimit", Supported, system::getrlimit),
    value(98, "getrusage", Partial("guest time as user time, the VMM serving the thread as system time, maxrss = peak mapped memory; other counters 0 but nvcsw; answered in the guest"), time::getrusage),
    value(99, "sysinfo", Partial("memory figures only; no load averages or swap"), system::sysinfo),
    value(100, "times", Partial("as getrusage; answered in the guest"), time::times),
    unsupported(101, "ptrace", libc::ENOSYS),
    value(102, "getuid", Supported, system::getuid),
    unsupported(103, "syslog", libc::ENOSYS),
    value(104, "getgid", Supported, system::getgid),
    unsupported(105, "setuid", libc::ENOSYS),
    unsupported(106, "setgid", libc::ENOSYS),
    value(107, "geteuid", Supported, system::geteuid),
    value(108, "getegid", Supported, system::getegid),
    unsupported(109, "setpgid", libc::ENOSYS),
    value(110, "getppid", Supported, system::getppid),
    value(111, "getpgrp", Supported, system::getpid),
    unsupported(112, "setsid", libc::ENOSYS),
    unsupported(113, "setreuid", libc::ENOSYS),
    unsupported(114, "setregid", libc::ENOSYS),
    value(115, "getgroups", Supported, system::getgroups),
    unsupported(116, "setgroups", libc::ENOSYS),
    unsupported(117, "setresuid", libc::ENOSYS),
    unsupported(118, "getresuid", libc::ENOSYS),
    unsupported(119, "setresgid", libc::ENOSYS),
    unsupported(120, "getresgid", libc::ENOSYS),
    value(121, "getpgid", Supported, system::getpid),
    unsupported(122, "setfsuid", libc::ENOSYS),
    unsupported(123, "setfsgid", libc::ENOSYS),
    value(124, "getsid", Supported, system::getpid),
    unsupported(125, "capget", libc::ENOSYS),
    unsupported(126, "capset", libc::ENOSYS),
    value(127, "rt_sigpending", Supported, signals::rt_sigpending),
    value(128, "rt_sigtimedwait", Supported, signals::rt_sigtimedwait),
    control(129, "rt_sigqueueinfo", Supported, signals::rt_sigqueueinfo),
    value(130, "rt_sigsuspend", Supported, signals::rt_sigsuspend),
    value(131, "sigaltstack", Supported, signals::sigaltstack),
    unsupported(132, "utime", libc::ENOSYS),
    unsupported(133, "mknod", libc::ENOSYS),
    unsupported(134, "uselib", libc::ENOSYS),
    value(135, "personality", Partial("PER_LINUX with ADDR_NO_RANDOMIZE/READ_IMPLIES_EXEC/ADDR_COMPAT_LAYOUT only (no-ops here); other domains EINVAL"), system::personality),
    unsupported(136, "ustat", libc::ENOSYS),
    value(137, "statfs", Supported, files::statfs),
    value(138, "fstatfs", Supported, files::fstatfs),
    unsupported(139, "sysfs", libc::ENOSYS),
    unsupported(140, "getpriority", libc::ENOSYS),
    unsupported(141, "setpriority", libc::ENOSYS),
    unsupported(142, "sched_setparam", libc::ENOSYS),
    value(143, "sched_getparam", Supported, threads::sched_getparam),
    unsupported(144, "sched_setscheduler", libc::ENOSYS),
    value(145, "sched_getscheduler", Supported, threads::sched_getscheduler),
    value(146, "sched_get_priority_max", Supported, threads::sched_get_priority_max),
    value(147, "sched_get_priority_min", Supported, threads::sched_get_priority_min),
    unsupported(148, "sched_rr_get_interval", libc::ENOSYS),
    value(149, "mlock", Partial("all guest memory is already resident and locked"), memory::accept),
    value(150, "munlock", Partial("all guest memory stays resident and locked"), memory::accept),
    value(151, "mlockall", Partial("all guest memory is already resident and locked"), memory::accept),
    value(152, "munlockall", Partial("all guest memory stays resident and locked"), memory::accept),
    unsupported(153, "vhangup", libc::ENOSYS),
    unsupported(154, "modify_ldt", libc::ENOSYS),
    unsupported(155, "pivot_root", libc::ENOSYS),
    unsupported(156, "_sysctl", libc::ENOSYS),
    value(157, "prctl", Partial("names, PDEATHSIG (never sent: the parent is the VMM), dumpable, no_new_privs, timer slack, capability queries; others EINVAL"), system::prctl),
    value(158, "arch_prctl", Partial("ARCH_SET/GET_FS/GS only"), system::arch_prctl),
    unsupported(159, "adjtimex", libc::ENOSYS),
    value(160, "setrlimit", Supported, system::setrlimit),
    unsupported(161, "chroot", libc::ENOSYS),
    unsupported(162, "sync", libc::ENOSYS),
    unsupported(163, "acct", libc::ENOSYS),
    unsupported(164, "settimeofday", libc::ENOSYS),
    unsupported(165, "mount", libc::ENOSYS),
    unsupported(166, "umount2", libc::ENOSYS),
    unsupported(167, "swapon", libc::ENOSYS),
    unsupported(168, "swapoff", libc::ENOSYS),
    unsupported(169, "reboot", libc::ENOSYS),
    unsupported(170, "sethostname", libc::ENOSYS),
    unsupported(171, "setdomainname", libc::ENOSYS),
    unsupported(172, "iopl", libc::ENOSYS),
    unsupported(173, "ioperm", libc::ENOSYS),
    unsupported(174, "create_module", libc::ENOSYS),
    unsupported(175, "init_module", libc::ENOSYS),
    unsupported(176, "delete_module", libc::ENOSYS),
    unsupported(177, "get_kernel_syms", libc::ENOSYS),
    unsupported(178, "query_module", libc::ENOSYS),
    unsupported(179, "quotactl", libc::ENOSYS),
    unsupported(180, "nfsservctl", libc::ENOSYS),
    unsupported(181, "getpmsg", libc::ENOSYS),
    unsupported(182, "putpmsg", libc::ENOSYS),
    unsupported(183, "afs_syscall", libc::ENOSYS),
    unsupported(184, "tuxcall", libc::ENOSYS),
    unsupported(185, "security", libc::ENOSYS),
    value(186, "gettid", Supported, threads::gettid),
    unsupported(187, "readahead", libc::ENOSYS),
    unsupported(188, "setxattr", libc::ENOSYS),
    unsupported(189, "lsetxattr", libc::ENOSYS),
    unsupported(190, "fsetxattr", libc::ENOSYS),
    unsupported(191, "getxattr", libc::ENOSYS),
    unsupported(192, "lgetxattr", libc::ENOSYS),
    unsupported(193, "fgetxattr", libc::ENOSYS),
    unsupported(194, "listxattr", libc::ENOSYS),
    unsupported(195, "llistxattr", libc::ENOSYS),
    unsupported(196, "flistxattr", libc::ENOSYS),
    unsupported(197, "removexattr", libc::ENOSYS),
    unsupported(198, "lremovexattr", libc::ENOSYS),
    unsupported(199, "fremovexattr", libc::ENOSYS),
    control(200, "tkill", Supported, signals::tkill),
    value(201, "time", Supported, time::time),
    value(202, "futex", Partial("no PI futexes (FUTEX_LOCK_PI...): ENOSYS"), futex::futex),
    value(203, "sched_setaffinity", Partial("other threads' masks cannot be changed"), threads::sched_setaffinity),
    value(204, "sched_getaffinity", Supported, threads::sched_getaffinity),
    unsupported(205, "set_thread_area", libc::ENOSYS),
    unsupported(206, "io_setup", libc::ENOSYS),
    unsupported(207, "io_destroy", libc::ENOSYS),
    unsupported(208, "io_getevents", libc::ENOSYS),
    unsupported(209, "io_submit", libc::ENOSYS),
    unsupported(210, "io_cancel", libc::ENOSYS),
    unsupported(211, "get_thread_area", libc::ENOSYS),
    unsupported(212, "lookup_dcookie", libc::ENOSYS),
    value(213, "epoll_create", Supported, events::epoll_create),
    unsupported(214, "epoll_ctl_old", libc::ENOSYS),
    unsupported(215, "epoll_wait_old", libc::ENOSYS),
    unsupported(216, "remap_file_pages", libc::ENOSYS),
    value(217, "getdents64", Supported, files::getdents64),
    value(218, "set_tid_address", Supported, threads::set_tid_address),
    unsupported(219, "restart_syscall", libc::ENOSYS),
    unsupported(220, "semtimedop", libc::ENOSYS),
    value(221, "fadvise64", Supported, files::fadvise64),
    value(222, "timer_create", Partial("SIGEV_SIGNAL, SIGEV_THREAD_ID, SIGEV_NONE; no thread CPU-time clocks"), time::timer_create),
    value(223, "timer_settime", Supported, time::timer_settime),
    value(224, "timer_gettime", Supported, time::timer_gettime),
    value(225, "timer_getoverrun", Supported, time::timer_getoverrun),
    value(226, "timer_delete", Supported, time::timer_delete),
    unsupported(227, "clock_settime", libc::ENOSYS),
    value(228, "clock_gettime", Supported, time::clock_gettime),
    value(229, "clock_getres", Supported, time::clock_getres),
    value(230, "clock_nanosleep", Supported, time::clock_nanosleep),
    control(231, "exit_group", Supported, threads::exit_group),
    value(232, "epoll_wait", Supported, events::epoll_wait),
    value(233, "epoll_ctl", Partial("two guest descriptors dup'ed from one description are one host fd: the second EPOLL_CTL_ADD is EEXIST"), events::epoll_ctl),
    control(234, "tgkill", Supported, signals::tgkill),
    unsupported(235, "utimes", libc::ENOSYS),
    unsupported(236, "vserver", libc::ENOSYS),
    unsupported(237, "mbind", libc::ENOSYS),
    unsupported(238, "set_mempolicy", libc::ENOSYS),
    unsupported(239, "get_mempolicy", libc::ENOSYS),
    unsupported(240, "mq_open", libc::ENOSYS),
    unsupported(241, "mq_unlink", libc::ENOSYS),
    unsupported(242, "mq_timedsend", libc::ENOSYS),
    unsupported(243, "mq_timedreceive", libc::ENOSYS),
    unsupported(244, "mq_notify", libc::ENOSYS),
    unsupported(245, "mq_getsetattr", libc::ENOSYS),
    unsupported(246, "kexec_load", libc::ENOSYS),
    unsupported(247, "waitid", libc::ENOSYS),
    unsupported(248, "add_key", libc::ENOSYS),
    unsupported(249, "request_key", libc::ENOSYS),
    unsupported(250, "keyctl", libc::ENOSYS),
    unsupported(251, "ioprio_set", libc::ENOSYS),
    unsupported(252, "ioprio_get", libc::ENOSYS),
    unsupported(253, "inotify_init", libc::ENOSYS),
    unsupported(254, "inotify_add_watch", libc::ENOSYS),
    unsupported(255, "inotify_rm_watch", libc::ENOSYS),
    unsupported(256, "migrate_pages", libc::ENOSYS),
    value(257, "openat", Supported, files::openat),
    value(258, "mkdirat", Supported, files::mkdirat),
    unsupported(259, "mknodat", libc::ENOSYS),
    value(260, "fchownat", Supported, files::fchownat),
    unsupported(261, "futimesat", libc::ENOSYS),
    value(262, "newfstatat", Supported, files::newfstatat),
    value(263, "unlinkat", Supported, files::unlinkat),
    value(264, "renameat", Supported, files::renameat),
    value(265, "linkat", Supported, files::linkat),
    value(266, "symlinkat", Supported, files::symlinkat),
    value(267, "readlinkat", Supported, files::readlinkat),
    value(268, "fchmodat", Supported, files::fchmodat),
    value(269, "faccessat", Supported, files::faccessat),
    value(270, "pselect6", Partial("the signal mask argument is not applied"), events::pselect6),
    value(271, "ppoll", Partial("the signal mask argument is ignored (no signal delivery)"), files::ppoll),
    unsupported(272, "unshare", libc::ENOSYS),
    value(273, "set_robust_list", Supported, threads::set_robust_list),
    value(274, "get_robust_list", Partial("only the calling thread"), threads::get_robust_list),
    unsupported(275, "splice", libc::ENOSYS),
    unsupported(276, "tee", libc::ENOSYS),
    unsupported(277, "sync_file_range", libc::ENOSYS),
    unsupported(278, "vmsplice", libc::ENOSYS),
    unsupported(279, "move_pages", libc::ENOSYS),
    value(280, "utimensat", Supported, files::utimensat),
    value(281, "epoll_pwait", Partial("the signal mask argument is not applied"), events::epoll_pwait),
    value(282, "signalfd", Supported, signals::signalfd),
    value(283, "timerfd_create", Supported, time::timerfd_create),
    value(284, "eventfd", Supported, events::eventfd),
    value(285, "fallocate", Supported, files::fallocate),
    value(286, "timerfd_settime", Supported, time::timerfd_settime),
    value(287, "timerfd_gettime", Supported, time::timerfd_gettime),
    value(288, "accept4", Supported, sockets::accept4),
    value(289, "signalfd4", Partial("poll(2) sees a signalfd become readable within 10 ms"), signals::signalfd4),
    value(290, "eventfd2", Supported, events::eventfd2),
    value(291, "epoll_create1", Supported, events::epoll_create1),
    value(292, "dup3", Supported, files::dup3),
    value(293, "pipe2", Supported, files::pipe2),
    unsupported(294, "inotify_init1", libc::ENOSYS),
    unsupported(295, "preadv", libc::ENOSYS),
    unsupported(296, "pwritev", libc::ENOSYS),
    control(297, "rt_tgsigqueueinfo", Supported, signals::rt_tgsigqueueinfo),
    unsupported(298, "perf_event_open", libc::ENOSYS),
    unsupported(299, "recvmmsg", libc::ENOSYS),
    unsupported(300, "fanotify_init", libc::ENOSYS),
    unsupported(301, "fanotify_mark", libc::ENOSYS),
    value(302, "prlimit64", Supported, system::prlimit64),
    unsupported(303, "name_to_handle_at", libc::ENOSYS),
    unsupported(304, "open_by_handle_at", libc::ENOSYS),
    unsupported(305, "clock_adjtime", libc::ENOSYS),
    unsupported(306, "syncfs", libc::ENOSYS),
    unsupported(307, "sendmmsg", libc::ENOSYS),
    unsupported(308, "setns", libc::ENOSYS),
    value(309, "getcpu", Supported, threads::getcpu),
    value(310, "process_vm_readv", Partial("between dualstack VMs of the guest's user (served by their VMMs) and on the guest itself; other processes EPERM; stops at the first bad remote iovec"), cma::process_vm_readv),
    value(311, "process_vm_writev", Partial("between dualstack VMs of the guest's user (served by their VMMs) and on the guest itself; other processes EPERM; stops at the first bad remote iovec"), cma::process_vm_writev),
    unsupported(312, "kcmp", libc::ENOSYS),
    unsupported(313, "finit_module", libc::ENOSYS),
    unsupported(314, "sched_setattr", libc::ENOSYS),
    unsupported(315, "sched_getattr", libc::ENOSYS),
    value(316, "renameat2", Supported, files::renameat2),
    unsupported(317, "seccomp", libc::ENOSYS),
    value(318, "getrandom", Supported, system::getrandom),
    value(319, "memfd_create", Partial("MFD_HUGETLB memfds are ordinary ones (never mapped shared)"), files::memfd_create),
    unsupported(320, "kexec_file_load", libc::ENOSYS),
    unsupported(321, "bpf", libc::ENOSYS),
    unsupported(322, "execveat", libc::ENOSYS),
    unsupported(323, "userfaultfd", libc::ENOSYS),
    unsupported(324, "membarrier", libc::ENOSYS),
    unsupported(325, "mlock2", libc::ENOSYS),
    value(326, "copy_file_range", Supported, files::copy_file_range),
    unsupported(327, "preadv2", libc::ENOSYS),
    unsupported(328, "pwritev2", libc::ENOSYS),
    unsupported(329, "pkey_mprotect", libc::ENOSYS),
    unsupported(330, "pkey_alloc", libc::ENOSYS),
    unsupported(331, "pkey_free", libc::ENOSYS),
    value(332, "statx", Supported, files::statx),
    unsupported(333, "io_pgetevents", libc::ENOSYS),
    value(334, "rseq", Partial("answered ENOSYS on purpose: glibc works without restartable sequences"), system::rseq),
    None, // 335: no system call
    None, // 336: no system call
    None, // 337: no system call
    None, // 338: no system call
    None, // 339: no system call
    None, // 340: no system call
    None, // 341: no system call
    None, // 342: no system call
    None, // 343: no system call
    None, // 344: no system call
    None, // 345: no system call
    None, // 346: no system call
    None, // 347: no system call
    None, // 348: no system call
    None, // 349: no system call
    None, // 350: no system call
    None, // 351: no system call
    None, // 352: no system call
    None, // 353: no system call
    None, // 354: no system call
    None, // 355: no system call
    None, // 356: no system call
    None, // 357: no system call
    None, // 358: no system call
    None, // 359: no system call
    None, // 360: no system call
    None, // 361: no system call
    None, // 362: no system call
    None, // 363: no system call
    None, // 364: no system call
    None, // 365: no system call
    None, // 366: no system call
    None, // 367: no system call
    None, // 368: no system call
    None, // 369: no system call
    None, // 370: no system call
    None, // 371: no system call
    None, // 372: no system call
    None, // 373: no system call
    None, // 374: no system call
    None, // 375: no system call
    None, // 376: no system call
    None, // 377: no system call
    None, // 378: no system call
    None, // 379: no system call
    None, // 380: no system call
    None, // 381: no system call
    None, // 382: no system call
    None, // 383: no system call
    None, // 384: no system call
    None, // 385: no system call
    None, // 386: no system call
    None, // 387: no system call
    None, // 388: no system call
    None, // 389: no system call
    None, // 390: no system call
    None, // 391: no system call
    None, // 392: no system call
    None, // 393: no system call
    None, // 394: no system call
    None, // 395: no system call
    None, // 396: no system call
    None, // 397: no system call
    None, // 398: no system call
    None, // 399: no system call
    None, // 400: no system call
    None, // 401: no system call
    None, // 402: no system call
    None, // 403: no system call
    None, // 404: no system call
    None, // 405: no system call
    None, // 406: no system call
    None, // 407: no system call
    None, // 408: no system call
    None, // 409: no system call
    None, // 410: no system call
    None, // 411: no system call
    None, // 412: no system call
    None, // 413: no system call
    None, // 414: no system call
    None, // 415: no system call
    None, // 416: no system call
    None, // 417: no system call
    None, // 418: no system call
    None, // 419: no system call
    None, // 420: no system call
    None, // 421: no system call
    None, // 422: no system call
    None, // 423: no system call
    unsupported(424, "pidfd_send_signal", libc::ENOSYS),
    unsupported(425, "io_uring_setup", libc::ENOSYS),
    unsupported(426, "io_uring_enter", libc::ENOSYS),
    unsupported(427, "io_uring_register", libc::ENOSYS),
    unsupported(428, "open_tree", libc::ENOSYS),
    unsupported(429, "move_mount", libc::ENOSYS),
    unsupported(430, "fsopen", libc::ENOSYS),
    unsupported(431, "fsconfig", libc::ENOSYS),
    unsupported(432, "fsmount", libc::ENOSYS),
    unsupported(433, "fspick", libc::ENOSYS),
    unsupported(434, "pidfd_open", libc::ENOSYS),
    control(435, "clone3", Partial("threads only; processes are ENOSYS"), threads::clone3),
    unsupported(436, "close_range", libc::ENOSYS),
    unsupported(437, "openat2", libc::ENOSYS),
    unsupported(438, "pidfd_getfd", libc::ENOSYS),
    value(439, "faccessat2", Supported, files::faccessat2),
    unsupported(440, "process_madvise", libc::ENOSYS),
    unsupported(441, "epoll_pwait2", libc::ENOSYS),
    unsupported(442, "mount_setattr", libc::ENOSYS),
    unsupported(443, "quotactl_fd", libc::ENOSYS),
    unsupported(444, "landlock_create_ruleset", libc::ENOSYS),
    unsupported(445, "landlock_add_rule", libc::ENOSYS),
    unsupported(446, "landlock_restrict_self", libc::ENOSYS),
    unsupported(447, "memfd_secret", libc::ENOSYS),
    unsupported(448, "process_mrelease", libc::ENOSYS),
    unsupported(449, "futex_waitv", libc::ENOSYS),
    unsupported(450, "set_mempolicy_home_node", libc::ENOSYS),
];

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";

    #[test]
    fn numbers_and_names_match_the_system_header() {
        let text = std::fs::read_to_string(HEADER)
            .unwrap_or_else(|e| panic!("{HEADER} is needed to check the syscall table: {e}"));
        let mut from_header = std::collections::BTreeMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("#define"), Some(sym), Some(num)) = (w.next(), w.next(), w.next()) {
                if let (Some(name), Ok(nr)) = (sym.strip_prefix("__NR_"), num.parse::<u64>()) {
                    from_header.insert(nr, name.to_string());
                }
            }
        }
        assert!(
            from_header.len() > 300,
            "parsed too few entries from {HEADER}"
        );
        for (nr, name) in &from_header {
            if *nr as usize > MAX_NR {
                continue; // newer than this table: unknown numbers answer ENOSYS
            }
            assert_eq!(
                lookup(*nr).map(|e| e.name),
                Some(name.as_str()),
                "syscall {nr}"
            );
        }
        for e in entries() {
            assert_eq!(
                from_header.get(&u64::from(e.nr)),
                Some(&e.name.to_string()),
                "entry {}",
                e.nr
            );
        }
    }

    #[test]
    fn entries_are_in_number_order_and_consistent() {
        for (i, e) in TABLE.iter().enumerate() {
            if let Some(e) = e {
                assert_eq!(e.nr as usize, i);
                let unsupported = matches!(e.support, Support::Unsupported(_));
                assert_eq!(
                    unsupported,
                    matches!(e.handler, Handler::None),
                    "{}",
                    e.name
                );
            }
        }
        assert_eq!(name(0), Some("read"));
        assert_eq!(name(231), Some("exit_group"));
        assert_eq!(name(100_000), None);
    }
}
