//! Run statistics as structured data: exits by reason, system calls by name, per-vCPU figures,
//! and KVM's own binary statistics (KVM_GET_STATS_FD) before and after the run.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use crate::syscall::table as names;

vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// A KVM binary statistics file (one per VM, one per vCPU).
#[derive(Debug)]
pub struct KvmStatsFile {
    file: File,
    descs: Vec<(String, u64, u16)>, // name, data offset (absolute), element count
}

impl KvmStatsFile {
    /// Open the statistics of a VM or vCPU fd. `None` when the kernel lacks KVM_GET_STATS_FD.
    pub fn open(fd: &impl AsRawFd) -> Option<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1; `fd` is a KVM
        // VM or vCPU fd owned by the caller.
        let raw = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_GET_STATS_FD() as _, 0) };
        if raw < 0 {
            return None;
        }
        // SAFETY: the kernel just gave us this fd; we own it from here.
        let file = unsafe { File::from_raw_fd(raw) };
        let mut hdr = [0u8; 24];
        file.read_exact_at(&mut hdr, 0).ok()?;
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let name_size = u32_at(&hdr, 4) as usize;
        let num_desc = u32_at(&hdr, 8) as usize;
        let desc_offset = u32_at(&hdr, 16) as u64;
        let data_offset = u32_at(&hdr, 20) as u64;
        if name_size > 4096 || num_desc > 4096 {
            return None;
        }
        let desc_size = 16 + name_size;
        let mut raw_desc = vec![0u8; desc_size * num_desc];
        file.read_exact_at(&mut raw_desc, desc_offset).ok()?;
        let descs = raw_desc
            .chunks(desc_size)
            .map(|d| {
                let size = u16::from_le_bytes([d[6], d[7]]);
                let offset = u32_at(d, 8) as u64;
                let name = &d[16..];
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                (
                    String::from_utf8_lossy(&name[..end]).into_owned(),
                    data_offset + offset,
                    size,
                )
            })
            .collect();
        Some(KvmStatsFile { file, descs })
    }

    /// One statistic by name (a histogram summed); `None` when KVM has no such statistic.
    pub fn value(&self, name: &str) -> Option<u64> {
        let (_, off, count) = self.descs.iter().find(|d| d.0 == name)?;
        let mut buf = vec![0u8; 8 * *count as usize];
        self.file.read_exact_at(&mut buf, *off).ok()?;
        Some(
            buf.chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .fold(0u64, u64::wrapping_add),
        )
    }

    /// Read every scalar statistic (histograms are summed).
    pub fn read(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (name, off, count) in &self.descs {
            let mut buf = vec![0u8; 8 * *count as usize];
            if self.file.read_exact_at(&mut buf, *off).is_ok() {
                let v = buf
                    .chunks(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .fold(0u64, u64::wrapping_add);
                out.insert(name.clone(), v);
            }
        }
        out
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `after - before`, per key.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.wrapping_sub(*before.get(k).unwrap_or(&0))))
        .collect()
}

fn add_into(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Count and total service time of one system call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SyscallStat {
    pub count: u64,
    pub time_s: f64,
}

/// What one vCPU did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VcpuStats {
    pub index: usize,
    pub tid: i32,
    /// Host CPUs this vCPU's thread was pinned to.
    pub host_cpus: Vec<usize>,
    pub exits: BTreeMap<String, u64>,
    pub syscalls: u64,
    pub enosys: u64,
    /// Time inside KVM_RUN (guest execution, plus in-kernel exit handling).
    pub guest_time_s: f64,
    /// Time in the VMM serving exits.
    pub vmm_time_s: f64,
    /// Time blocked in futex waits.
    pub futex_wait_s: f64,
    pub futex_waits: u64,
    /// KVM's vCPU statistics accumulated while this vCPU ran.
    pub kvm: BTreeMap<String, u64>,
    #[serde(skip)]
    pub per_syscall: Vec<(u64, f64)>,
    /// The live counters of this vCPU ([`crate::live`]), bumped with the figures above.
    #[serde(skip)]
    pub live: Option<std::sync::Arc<crate::live::LiveVcpu>>,
}

impl VcpuStats {
    pub fn new(index: usize, tid: i32, host_cpus: Vec<usize>) -> Self {
        VcpuStats {
            index,
            tid,
            host_cpus,
            per_syscall: vec![(0, 0.0); names::MAX_NR + 1],
            ..Default::default()
        }
    }

    pub fn exit(&mut self, reason: &'static str) {
        // Every VM exit passes here: allocate the key only the first time a reason is seen.
        match self.exits.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.exits.insert(reason.to_string(), 1);
            }
        }
        if let Some(l) = &self.live {
            l.exit();
        }
    }

    pub fn syscall(&mut self, nr: u64, secs: f64) {
        self.syscalls += 1;
        if let Some(l) = &self.live {
            l.syscall();
        }
        if let Some(s) = self.per_syscall.get_mut(nr as usize) {
            s.0 += 1;
            s.1 += secs;
        }
    }
}

/// Memory figures of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryStats {
    pub size_bytes: u64,
    pub backing: crate::memory::Backing,
    pub guest_page_size: crate::layout::GuestPageSize,
    /// Time to map, populate and lock guest memory.
    pub setup_s: f64,
    /// How the memory was obtained: `warm_zone` (mapped from a zone's populated, pre-zeroed
    /// memory), `cold_hugetlb` (allocated and zeroed for this run) or `lazy`.
    #[serde(default)]
    pub source: crate::memory::MemorySource,
    /// Time the job waited before launch for zone pages still being zeroed after an earlier
    /// job (0 when the pages were clean), and how many bytes it waited for.
    #[serde(default)]
    pub zero_wait_s: f64,
    #[serde(default)]
    pub zero_wait_bytes: u64,
    /// Most memory the guest had mapped at once.
    pub peak_mapped_bytes: u64,
}

/// Where and why the guest faulted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultReport {
    /// Linux signal number the fault maps to (SIGSEGV, SIGILL, SIGFPE...).
    pub signal: i32,
    pub signal_name: String,
    /// What happened, e.g. "page fault (#PF) writing a not-present page".
    pub what: String,
    /// Guest thread id and vCPU index that faulted.
    pub tid: i32,
    pub vcpu: usize,
    /// Guest instruction pointer at the fault.
    pub rip: u64,
    /// Faulting address (CR2 for #PF), when the fault has one.
    pub addr: Option<u64>,
    pub error_code: Option<u64>,
}

/// How the run ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExitReport {
    /// The program exited with this status.
    Exited { status: i32 },
    /// The guest took a fault or a fatal signal.
    Faulted(FaultReport),
    /// --timeout expired.
    TimedOut { after_s: f64 },
    /// The VMM itself failed while the guest ran.
    VmmError { message: String },
}

/// Everything measured about one run; `--stats FILE` writes it as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunStats {
    pub program: String,
    pub argv: Vec<String>,
    pub exit: ExitReport,
    /// The status `dualstack run` exits with.
    pub exit_status: i32,
    /// From `run` being called to the guest's first instruction.
    pub launch_s: f64,
    /// From the guest's first instruction to the last vCPU stopping.
    pub guest_wall_s: f64,
    /// Whole run, setup and teardown included.
    pub wall_s: f64,
    pub memory: MemoryStats,
    /// Host CPUs the run owns.
    pub cpus: Vec<usize>,
    pub threads_created: u64,
    pub max_live_threads: u64,
    /// More guest threads than cores at some point: some vCPUs shared cores.
    pub oversubscribed: bool,
    pub exits: BTreeMap<String, u64>,
    pub exits_total: u64,
    pub syscalls_total: u64,
    /// FUTEX_WAKE calls the syscall stub answered inside the guest (no waiter, no VM exit).
    pub futex_wakes_without_exit: u64,
    /// System calls the fast entry answered inside the guest (getrusage, clock_gettime of the
    /// CPU clocks, times, gettid, getpid, getcpu, sched_yield): no exit.
    #[serde(default)]
    pub calls_answered_in_guest: u64,
    pub syscalls: BTreeMap<String, SyscallStat>,
    /// Calls answered -ENOSYS, by name.
    pub enosys: BTreeMap<String, u64>,
    /// KVM VM statistics: before the guest ran, and the change during the run.
    pub kvm_vm_before: BTreeMap<String, u64>,
    pub kvm_vm_delta: BTreeMap<String, u64>,
    /// KVM vCPU statistics summed over all vCPUs during the run (pf_taken, pf_fixed, exits...).
    pub kvm_vcpu_delta: BTreeMap<String, u64>,
    /// KVM vCPU statistics after guest setup, before the first instruction (summed).
    pub kvm_vcpu_at_launch: BTreeMap<String, u64>,
    pub vcpus: Vec<VcpuStats>,
    /// Guest attempts the kernel refused, by kind (see [`crate::kernel::run::refusal`]):
    /// the VMM's own /proc entries, devices, the user's permissions, other processes.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// What the jail enforced (identity, capabilities, Landlock, seccomp); `None` when the
    /// run was not jailed (`--no-jail`, or a library caller of [`crate::run`]).
    #[serde(default)]
    pub jail: Option<crate::jail::JailReport>,
}

impl RunStats {
    /// Fold per-vCPU figures into the totals.
    pub fn aggregate(&mut self, enosys: &BTreeMap<u64, u64>) {
        let mut per: Vec<(u64, f64)> = vec![(0, 0.0); names::MAX_NR + 1];
        self.exits.clear();
        self.kvm_vcpu_delta.clear();
        for v in &self.vcpus {
            for (k, n) in &v.exits {
                *self.exits.entry(k.clone()).or_default() += n;
            }
            add_into(&mut self.kvm_vcpu_delta, &v.kvm);
            for (i, s) in v.per_syscall.iter().enumerate() {
                per[i].0 += s.0;
                per[i].1 += s.1;
            }
        }
        self.exits_total = self.exits.values().sum();
        self.syscalls = per
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0 > 0)
            .map(|(i, s)| {
                (
                    names::name(i as u64)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("syscall_{i}")),
                    SyscallStat {
                        count: s.0,
                        time_s: s.1,
                    },
                )
            })
            .collect();
        self.syscalls_total = self.syscalls.values().map(|s| s.count).sum();
        self.enosys = enosys
            .iter()
            .map(|(nr, n)| {
                (
                    names::name(*nr)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("syscall_{nr}")),
                    *n,
                )
            })
            .collect();
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let pf = self.kvm_vcpu_delta.get("pf_taken").copied().unwrap_or(0);
        format!(
            "dualstack: {} {} | launch {:.1} ms, guest {:.3} s, wall {:.3} s | {} thread(s) on cpus {:?} | exits {} ({} syscalls, {} ENOSYS) | pf_taken {} | memory {} MiB {}",
            self.program,
            match &self.exit {
                ExitReport::Exited { status } => format!("exited {status}"),
                ExitReport::Faulted(f) => format!("faulted ({})", f.signal_name),
                ExitReport::TimedOut { after_s } => format!("timed out after {after_s:.1} s"),
                ExitReport::VmmError { .. } => "VMM error".to_string(),
            },
            self.launch_s * 1e3,
            self.guest_wall_s,
            self.wall_s,
            self.vcpus.len(),
            self.cpus,
            self.exits_total,
            self.syscalls_total,
            self.enosys.values().sum::<u64>(),
            pf,
            self.memory.size_bytes >> 20,
            match self.memory.backing {
                crate::memory::Backing::Hugetlb { page_size, .. } => format!("hugetlb {page_size}"),
                crate::memory::Backing::Lazy => "lazy 4K".to_string(),
            }
        ) + &self.security_summary()
    }

    /// " | refused ... | jail ..." for the summary line.
    fn security_summary(&self) -> String {
        let mut s = String::new();
        if !self.refusals.is_empty() {
            let kinds: Vec<String> = self
                .refusals
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            s.push_str(&format!(" | refused: {}", kinds.join(", ")));
        }
        match &self.jail {
            Some(j) => s.push_str(&format!(" | {}", j.summary())),
            None => s.push_str(" | jail: off"),
        }
        s
    }
}
