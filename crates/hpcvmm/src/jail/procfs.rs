//! The guest's own /proc: which procfs paths describe the guest (and so are answered by the VMM
//! from its own bookkeeping, never passed to the host), which are refused, and what the virtual
//! files contain. Pure functions: the syscall layer gives the path and a [`GuestView`], and
//! serves the bytes as a virtual file.
//!
//! `/proc/self`, `/proc/thread-self`, `/proc/<guest pid>` and `/proc/<VMM host pid>` (plus their
//! `task/<tid>` entries) are the guest. Paths are classified twice: lexically on the guest's path
//! (before any host call), and on the host path the kernel resolved when a guest path led into
//! procfs some other way (a symlink into /proc): the second catches what the first cannot see.

use std::fmt::Write as _;

/// How a guest path below /proc is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcPath {
    /// A file of the guest's own process (or of one of its threads): `rest` is what follows
    /// `/proc/<pid>/` (or `/proc/<pid>/task/<tid>/`), e.g. "status", "fd/3", "".
    Guest { tid: Option<i32>, rest: String },
    /// A host-wide file the VMM answers for the run (cpuinfo, meminfo).
    Global(GlobalFile),
    /// Anything else in procfs (other processes, /proc/version...): the host's, opened with the
    /// guest's user's rights (the jailed VMM is that user) and read-only (Landlock).
    Host,
}

/// Host-wide /proc and /sys files that describe the run instead of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalFile {
    CpuInfo,
    MemInfo,
    CpuOnline,
}

/// Classify `path` (absolute, normalised: no `.`/`..`/`//`), which lies in procfs. `pids`
/// are the numbers that mean "the guest": the guest pid and the VMM's host pid; `tids` the
/// guest's thread ids.
pub fn classify(path: &str, pids: &[i32], tids: &[i32]) -> ProcPath {
    let Some(rest) = path.strip_prefix("/proc") else {
        return match path {
            "/sys/devices/system/cpu/online"
            | "/sys/devices/system/cpu/possible"
            | "/sys/devices/system/cpu/present" => ProcPath::Global(GlobalFile::CpuOnline),
            _ => ProcPath::Host,
        };
    };
    let rest = rest.trim_start_matches('/');
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let is_guest_pid = |s: &str| s.parse::<i32>().is_ok_and(|p| pids.contains(&p));
    match first {
        "cpuinfo" if tail.is_empty() => ProcPath::Global(GlobalFile::CpuInfo),
        "meminfo" if tail.is_empty() => ProcPath::Global(GlobalFile::MemInfo),
        "self" => guest_rest(tail, tids),
        "thread-self" => ProcPath::Guest {
            tid: tids.first().copied(),
            rest: tail.to_string(),
        },
        p if is_guest_pid(p) => guest_rest(tail, tids),
        // A guest thread id used as a pid (Linux lets /proc/<tid> name a thread).
        p if p.parse::<i32>().is_ok_and(|t| tids.contains(&t)) => ProcPath::Guest {
            tid: p.parse().ok(),
            rest: tail.to_string(),
        },
        _ => ProcPath::Host,
    }
}

fn guest_rest(tail: &str, tids: &[i32]) -> ProcPath {
    if let Some(t) = tail.strip_prefix("task/") {
        let (tid, rest) = t.split_once('/').unwrap_or((t, ""));
        if let Ok(tid) = tid.parse::<i32>() {
            if tids.contains(&tid) {
                return ProcPath::Guest {
                    tid: Some(tid),
                    rest: rest.to_string(),
                };
            }
        }
        // An unknown thread: nothing there (ENOENT from render).
        return ProcPath::Guest {
            tid: Some(-1),
            rest: rest.to_string(),
        };
    }
    ProcPath::Guest {
        tid: None,
        rest: tail.to_string(),
    }
}

/// Entries of /proc/<pid>/ the guest can never reach: they would be the VMM's (its memory,
/// page map, registers, host root and working directory) and no virtual answer makes sense.
pub const REFUSED: &[&str] = &[
    "mem",
    "pagemap",
    "syscall",
    "root",
    "cwd",
    "stack",
    "personality",
    "map_files",
    "clear_refs",
    "timerslack_ns",
    "ns",
    "attr",
    "io",
    "smaps",
    "smaps_rollup",
    "numa_maps",
    "mountinfo",
    "mounts",
    "mountstats",
    "setgroups",
    "uid_map",
    "gid_map",
    "projid_map",
    "oom_adj",
    "oom_score_adj",
    "coredump_filter",
    "sched",
    "wchan",
    "environ_raw",
];

/// One guest mapping, as /proc/PID/maps shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// "[heap]", "[stack]", the program's guest path, or "".
    pub name: String,
}

/// What the VMM knows about its guest, for the virtual files.
#[derive(Clone, Debug, Default)]
pub struct GuestView {
    pub pid: i32,
    pub tids: Vec<i32>,
    /// Program name (comm, 15 bytes at most).
    pub comm: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// The auxiliary vector as the guest's stack holds it (pairs of u64).
    pub auxv: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: u32,
    pub mappings: Vec<Mapping>,
    /// Guest memory (MemTotal) and what the guest has mapped (VmRSS-like).
    pub mem_total: u64,
    pub mem_mapped: u64,
    pub peak_mapped: u64,
    /// Cores of the run.
    pub cpus: usize,
    /// The guest's open descriptors.
    pub fds: Vec<i32>,
}

/// The answer to a guest file of /proc/<pid>/.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestFile {
    /// Serve these bytes as a read-only virtual file.
    Bytes(Vec<u8>),
    /// `fd/N`: the guest's descriptor N (re-open it from the guest's table, never the VMM's).
    Fd(i32),
    /// `exe`: the program, at this guest path.
    Exe,
    /// Refused with this errno.
    Errno(i32),
}

fn nul_joined(items: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in items {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    v
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

/// /proc/PID/maps of the guest.
pub fn maps(g: &GuestView) -> String {
    let mut s = String::new();
    for m in &g.mappings {
        let _ = writeln!(
            s,
            "{:08x}-{:08x} {}{}{}p 00000000 00:00 0{}{}",
            m.start,
            m.end,
            if m.read { 'r' } else { '-' },
            if m.write { 'w' } else { '-' },
            if m.exec { 'x' } else { '-' },
            if m.name.is_empty() {
                ""
            } else {
                "                          "
            },
            m.name
        );
    }
    s
}

/// /proc/PID/status of the guest (or of thread `tid`).
pub fn status(g: &GuestView, tid: Option<i32>) -> String {
    let id = tid.unwrap_or(g.pid);
    let groups: Vec<String> = g.groups.iter().map(u32::to_string).collect();
    let cpus = if g.cpus <= 1 {
        "0".to_string()
    } else {
        format!("0-{}", g.cpus - 1)
    };
    let mask = if g.cpus >= 64 {
        u64::MAX
    } else {
        (1u64 << g.cpus) - 1
    };
    let zero = "0000000000000000";
    format!(
        "Name:\t{comm}\nUmask:\t{umask:04o}\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{id}\n\
         PPid:\t1\nTracerPid:\t0\nUid:\t{u}\t{u}\t{u}\t{u}\nGid:\t{gg}\t{gg}\t{gg}\t{gg}\n\
         FDSize:\t{fdsize}\nGroups:\t{groups}\nVmPeak:\t{peak:8} kB\nVmSize:\t{size:8} kB\n\
         VmHWM:\t{peak:8} kB\nVmRSS:\t{size:8} kB\nThreads:\t{threads}\n\
         SigQ:\t0/0\nSigPnd:\t{zero}\nShdPnd:\t{zero}\nSigBlk:\t{zero}\nSigIgn:\t{zero}\n\
         SigCgt:\t{zero}\nCapInh:\t{zero}\nCapPrm:\t{zero}\nCapEff:\t{zero}\nCapBnd:\t{zero}\n\
         CapAmb:\t{zero}\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n\
         Cpus_allowed:\t{mask:x}\nCpus_allowed_list:\t{cpus}\nMems_allowed_list:\t0\n",
        comm = g.comm,
        umask = g.umask,
        pid = g.pid,
        u = g.uid,
        gg = g.gid,
        fdsize = 64.max(g.fds.len().next_power_of_two()),
        groups = groups.join(" "),
        peak = kib(g.peak_mapped),
        size = kib(g.mem_mapped),
        threads = g.tids.len().max(1),
    )
}

/// /proc/PID/stat of the guest (the fields tools read: pid, comm, state, ppid, threads, vsize,
/// rss; the rest zero).
pub fn stat(g: &GuestView, tid: Option<i32>) -> String {
    let id = tid.unwrap_or(g.pid);
    let rss_pages = g.mem_mapped / 4096;
    // Fields 1..=52 of proc(5); 20 is num_threads, 23 vsize, 24 rss.
    let mut f: Vec<String> = vec!["0".into(); 52];
    f[0] = id.to_string();
    f[1] = format!("({})", g.comm);
    f[2] = "R".into();
    f[3] = "1".into();
    f[4] = g.pid.to_string();
    f[5] = g.pid.to_string();
    f[19] = g.tids.len().max(1).to_string();
    // starttime: the VMM process's own (the guest is that process to the host: an MPI
    // library checks a peer by pid and start time, reading the host's /proc/<pid>/stat).
    f[21] = host_starttime().to_string();
    f[22] = g.mem_mapped.to_string();
    f[23] = rss_pages.to_string();
    f[24] = u64::MAX.to_string();
    let mut s = f.join(" ");
    s.push('\n');
    s
}

/// Field 22 (starttime, clock ticks after boot) of this process's host /proc/self/stat.
fn host_starttime() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| {
            let rest = t.rsplit_once(')')?.1.to_string();
            // Fields after "(comm)" start at field 3: starttime (22) is the 20th of them.
            rest.split_whitespace().nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

/// /proc/PID/statm (in pages).
pub fn statm(g: &GuestView) -> String {
    let p = g.mem_mapped / 4096;
    format!("{p} {p} 0 0 0 {p} 0\n")
}

/// Whether `rest` below the guest's /proc/<pid>/ names the network namespace's files
/// (`net`, `net/route`, `net/if_inet6`, ...): they describe the namespace every process of the
/// user shares, not the VMM, so the host's are shown (UCX and Open MPI read `/proc/net/route`
/// and `/proc/net/if_inet6`, a symlink to `self/net`).
pub fn is_netns(rest: &str) -> bool {
    rest == "net" || rest.starts_with("net/")
}

/// The answer for `rest` below the guest's /proc/<pid>/ (or task/<tid>/).
pub fn render(g: &GuestView, tid: Option<i32>, rest: &str) -> GuestFile {
    if tid == Some(-1) {
        return GuestFile::Errno(libc::ENOENT);
    }
    let first = rest.split('/').next().unwrap_or("");
    if REFUSED.contains(&first) {
        return GuestFile::Errno(libc::EACCES);
    }
    let bytes = |s: String| GuestFile::Bytes(s.into_bytes());
    match rest {
        "maps" => bytes(maps(g)),
        "status" => bytes(status(g, tid)),
        "stat" => bytes(stat(g, tid)),
        "statm" => bytes(statm(g)),
        "cmdline" => GuestFile::Bytes(nul_joined(&g.argv)),
        "environ" => GuestFile::Bytes(nul_joined(&g.env)),
        "auxv" => GuestFile::Bytes(g.auxv.clone()),
        "cgroup" => bytes("0::/\n".into()),
        "comm" => bytes(format!("{}\n", g.comm)),
        "exe" => GuestFile::Exe,
        "loginuid" => bytes(format!("{}", g.uid)),
        // Directories (the pid dir, fd/, task/) are not listable in the guest's view.
        "" | "fd" | "fdinfo" | "task" => GuestFile::Errno(libc::EACCES),
        r => match r.strip_prefix("fd/").map(str::parse::<i32>) {
            Some(Ok(n)) if g.fds.contains(&n) => GuestFile::Fd(n),
            Some(_) => GuestFile::Errno(libc::ENOENT),
            None => GuestFile::Errno(libc::ENOENT),
        },
    }
}

/// `0-N` list of the run's cores as the guest numbers them.
pub fn cpu_list(n: usize) -> String {
    if n <= 1 {
        "0\n".into()
    } else {
        format!("0-{}\n", n - 1)
    }
}

/// /proc/cpuinfo with only the run's cores (`host_cpus`, host numbering), renumbered 0..n.
pub fn cpuinfo(host_text: &str, host_cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut next = 0;
    for block in host_text.split("\n\n") {
        let nr = block
            .lines()
            .find_map(|l| l.strip_prefix("processor"))
            .and_then(|r| {
                r.trim_start_matches([' ', '\t', ':'])
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        let Some(nr) = nr else { continue };
        if !host_cpus.contains(&nr) {
            continue;
        }
        for line in block.lines() {
            let key = line.split(':').next().unwrap_or("").trim();
            match key {
                "processor" => {
                    let _ = writeln!(out, "processor\t: {next}");
                }
                "siblings" | "cpu cores" => {
                    let _ = writeln!(out, "{key}\t: {}", host_cpus.len());
                }
                "core id" | "apicid" | "initial apicid" => {
                    let _ = writeln!(out, "{key}\t\t: {next}");
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
        next += 1;
    }
    out
}

/// /proc/meminfo for a guest of `total` bytes of which `mapped` are in use.
pub fn meminfo(total: u64, mapped: u64) -> String {
    let free = total.saturating_sub(mapped);
    format!(
        "MemTotal:       {:8} kB\nMemFree:        {:8} kB\nMemAvailable:   {:8} kB\n\
         Buffers:               0 kB\nCached:                0 kB\nSwapCached:            0 kB\n\
         SwapTotal:             0 kB\nSwapFree:              0 kB\nShmem:                 0 kB\n\
         HugePages_Total:       0\nHugePages_Free:        0\nHugepagesize:       2048 kB\n",
        kib(total),
        kib(free),
        kib(free)
    )
}

/// The bytes of a [`GlobalFile`].
pub fn global(file: GlobalFile, g: &GuestView, host_cpus: &[usize]) -> Vec<u8> {
    match file {
        GlobalFile::CpuOnline => cpu_list(g.cpus).into_bytes(),
        GlobalFile::MemInfo => meminfo(g.mem_total, g.mem_mapped).into_bytes(),
        GlobalFile::CpuInfo => {
            let host = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            cpuinfo(&host, host_cpus).into_bytes()
        }
    }
}

/// Whether a device node (`rdev`, char or block) may be opened by the guest: only the
/// harmless character devices (null, zero, full, random, urandom, tty, ptmx, pseudo
/// terminals). Never /dev/kvm, /dev/mem, /dev/port, block devices or anything else.
pub fn device_allowed(is_block: bool, rdev: u64) -> bool {
    if is_block {
        return false;
    }
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    matches!(
        (major, minor),
        (1, 3) | (1, 5) | (1, 7) | (1, 8) | (1, 9) | (5, 0) | (5, 2)
    ) || (136..=143).contains(&major)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> GuestView {
        GuestView {
            pid: 1000,
            tids: vec![1000, 1001],
            comm: "prog".into(),
            argv: vec!["prog".into(), "-x".into()],
            env: vec!["A=1".into()],
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            umask: 0o022,
            mappings: vec![
                Mapping {
                    start: 0x400000,
                    end: 0x401000,
                    read: true,
                    write: false,
                    exec: true,
                    name: "/prog".into(),
                },
                Mapping {
                    start: 0x7000_0000,
                    end: 0x7080_0000,
                    read: true,
                    write: true,
                    exec: false,
                    name: "[stack]".into(),
                },
            ],
            mem_total: 512 << 20,
            mem_mapped: 16 << 20,
            peak_mapped: 20 << 20,
            cpus: 2,
            fds: vec![0, 1, 2, 3],
            ..Default::default()
        }
    }

    #[test]
    fn self_pid_threads_and_the_vmm_pid_are_the_guest() {
        let pids = [1000, 4242];
        let tids = [1000, 1001];
        let g = |rest: &str, tid| ProcPath::Guest {
            tid,
            rest: rest.into(),
        };
        assert_eq!(classify("/proc/self/mem", &pids, &tids), g("mem", None));
        assert_eq!(classify("/proc/4242/maps", &pids, &tids), g("maps", None));
        assert_eq!(classify("/proc/1000", &pids, &tids), g("", None));
        assert_eq!(
            classify("/proc/self/task/1001/status", &pids, &tids),
            g("status", Some(1001))
        );
        assert_eq!(
            classify("/proc/thread-self/stat", &pids, &tids),
            g("stat", Some(1000))
        );
        assert_eq!(
            classify("/proc/1001/comm", &pids, &tids),
            g("comm", Some(1001))
        );
        assert_eq!(classify("/proc/1/status", &pids, &tids), ProcPath::Host);
        assert_eq!(classify("/proc/version", &pids, &tids), ProcPath::Host);
        assert_eq!(
            classify("/proc/cpuinfo", &pids, &tids),
            ProcPath::Global(GlobalFile::CpuInfo)
        );
        assert_eq!(
            classify("/sys/devices/system/cpu/online", &pids, &tids),
            ProcPath::Global(GlobalFile::CpuOnline)
        );
    }

    #[test]
    fn the_vmm_s_own_files_are_refused() {
        let v = view();
        for f in [
            "mem",
            "pagemap",
            "syscall",
            "root",
            "cwd",
            "map_files/400000-401000",
        ] {
            assert_eq!(render(&v, None, f), GuestFile::Errno(libc::EACCES), "{f}");
        }
        assert_eq!(
            render(&v, Some(-1), "status"),
            GuestFile::Errno(libc::ENOENT)
        );
        assert_eq!(render(&v, None, "fd/3"), GuestFile::Fd(3));
        assert_eq!(render(&v, None, "fd/9"), GuestFile::Errno(libc::ENOENT));
        assert_eq!(render(&v, None, "exe"), GuestFile::Exe);
    }

    #[test]
    fn status_and_maps_describe_the_guest() {
        let v = view();
        let GuestFile::Bytes(s) = render(&v, None, "status") else {
            panic!()
        };
        let s = String::from_utf8(s).unwrap();
        assert!(s.contains("Uid:\t65534\t65534\t65534\t65534\n"), "{s}");
        assert!(s.contains("CapEff:\t0000000000000000\n"));
        assert!(s.contains("Threads:\t2\n"));
        assert!(s.contains("Pid:\t1000\n"));
        assert!(s.contains("Cpus_allowed_list:\t0-1\n"));
        let m = maps(&v);
        assert!(
            m.starts_with("00400000-00401000 r-xp 00000000 00:00 0"),
            "{m}"
        );
        assert!(m.contains("[stack]"));
        assert!(!m.contains("dualstack"));
        let st = stat(&v, None);
        let fields: Vec<&str> = st.split_whitespace().collect();
        assert_eq!((fields[0], fields[1], fields[19]), ("1000", "(prog)", "2"));
        assert_eq!(
            render(&v, None, "cmdline"),
            GuestFile::Bytes(b"prog\0-x\0".to_vec())
        );
    }

    #[test]
    fn cpuinfo_keeps_the_run_s_cores_renumbered() {
        let host = "processor\t: 0\nmodel name\t: X\ncpu cores\t: 4\n\n\
                    processor\t: 1\nmodel name\t: X\n\nprocessor\t: 2\nmodel name\t: X\n\n";
        let c = cpuinfo(host, &[2]);
        assert_eq!(c.matches("processor").count(), 1);
        assert!(c.starts_with("processor\t: 0\n"), "{c}");
        let m = meminfo(512 << 20, 16 << 20);
        assert!(m.starts_with("MemTotal:         524288 kB\n"), "{m}");
        assert_eq!(cpu_list(1), "0\n");
        assert_eq!(cpu_list(4), "0-3\n");
    }

    #[test]
    fn only_harmless_devices_open() {
        let dev = |ma, mi| libc::makedev(ma, mi);
        assert!(device_allowed(false, dev(1, 3))); // null
        assert!(device_allowed(false, dev(1, 9))); // urandom
        assert!(device_allowed(false, dev(136, 4))); // pts/4
        assert!(!device_allowed(false, dev(10, 232))); // kvm
        assert!(!device_allowed(false, dev(1, 1))); // mem
        assert!(!device_allowed(false, dev(1, 4))); // port
        assert!(!device_allowed(true, dev(8, 0))); // sda
    }
}
