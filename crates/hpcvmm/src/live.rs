//! Live counters of a running guest: VM exits, system calls and page faults, published to a
//! file while the guest runs (`dualstack run --live-stats FILE`, set by the daemon's job
//! supervisor) so a control plane can show a job's progress before it ends.
//!
//! The vCPU loops bump per-vCPU counters ([`LiveVcpu`], one cache line each, one writer at a
//! time: a plain load and store with `Relaxed` ordering, no lock, no locked instruction, no VM
//! exit). A publisher thread of the VMM sums them every [`PERIOD`] together with KVM's own
//! per-vCPU statistics (`pf_taken`, `exits`, read through the KVM binary stats fds) and writes
//! one fixed-size record with a single `pwrite` at offset 0 of a file the VMM opened before
//! the jail (so Landlock never has to allow the path, and the guest's fd table never holds it).
//!
//! The record is a JSON object padded with spaces to [`RECORD_LEN`] bytes; its `check` field
//! is a hash of the other fields, so a reader that raced a write (and saw parts of two records)
//! rejects it and reads again ([`read`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::KvmStatsFile;

/// How often the publisher writes.
pub const PERIOD: Duration = Duration::from_millis(250);

/// Size of the record in the file (JSON, padded with spaces, ending in a newline).
pub const RECORD_LEN: usize = 512;

/// One vCPU's counters (a cache line of its own: vCPUs on different cores never share one).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LiveVcpu {
    exits: AtomicU64,
    syscalls: AtomicU64,
    /// KVM's statistics of this vCPU (opened by its thread), and `pf_taken`/`exits` when the
    /// program started (vCPU 0's launch faults are not the program's).
    kvm: OnceLock<KvmStatsFile>,
    pf_base: AtomicU64,
    kvm_exits_base: AtomicU64,
}

/// Add one without a locked instruction: only the thread running this vCPU writes it.
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

impl LiveVcpu {
    pub fn exit(&self) {
        bump(&self.exits);
    }
    pub fn syscall(&self) {
        bump(&self.syscalls);
    }
    /// Attach this vCPU's KVM statistics (once; a reused vCPU keeps its first file).
    pub fn attach_kvm(&self, f: impl FnOnce() -> Option<KvmStatsFile>) {
        if self.kvm.get().is_none() {
            if let Some(f) = f() {
                let _ = self.kvm.set(f);
            }
        }
    }
    /// The program starts now: KVM's counts so far belong to launch.
    pub fn mark_launch(&self) {
        if let Some(f) = self.kvm.get() {
            self.pf_base
                .store(f.value("pf_taken").unwrap_or(0), Ordering::Relaxed);
            self.kvm_exits_base
                .store(f.value("exits").unwrap_or(0), Ordering::Relaxed);
        }
    }
}

/// Every vCPU's counters, indexed by vCPU.
#[derive(Debug)]
pub struct LiveBoard {
    slots: Vec<Arc<LiveVcpu>>,
}

impl Default for LiveBoard {
    fn default() -> Self {
        Self::new(crate::layout::MAX_VCPUS)
    }
}

/// The sums over all vCPUs at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub exits: u64,
    pub syscalls: u64,
    pub page_faults: u64,
    pub kvm_exits: u64,
}

impl LiveBoard {
    pub fn new(n: usize) -> Self {
        LiveBoard {
            slots: (0..n).map(|_| Arc::new(LiveVcpu::default())).collect(),
        }
    }
    /// The counters of vCPU `index` (shared with its thread's [`crate::stats::VcpuStats`]).
    pub fn slot(&self, index: usize) -> Option<Arc<LiveVcpu>> {
        self.slots.get(index).cloned()
    }
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.slots {
            t.exits += s.exits.load(Ordering::Relaxed);
            t.syscalls += s.syscalls.load(Ordering::Relaxed);
            if let Some(f) = s.kvm.get() {
                t.page_faults += f
                    .value("pf_taken")
                    .unwrap_or(0)
                    .saturating_sub(s.pf_base.load(Ordering::Relaxed));
                t.kvm_exits += f
                    .value("exits")
                    .unwrap_or(0)
                    .saturating_sub(s.kvm_exits_base.load(Ordering::Relaxed));
            }
        }
        t
    }
}

/// One published sample, and the previous one (for rates).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveRecord {
    /// Format version (1).
    pub v: u32,
    /// Samples written so far.
    pub seq: u64,
    /// The VMM's host pid.
    pub pid: u32,
    /// The guest's first instruction has run.
    pub started: bool,
    /// The guest has ended (the last sample).
    pub ended: bool,
    /// Wall time of this sample (seconds since the epoch).
    pub unix: f64,
    /// Seconds since the guest's first instruction (0 before it).
    pub runtime_s: f64,
    /// VM exits the VMM served, system calls, KVM's page faults (`pf_taken`) and KVM's own
    /// exit count (in-kernel exits included), since the program started.
    pub exits: u64,
    pub syscalls: u64,
    pub page_faults: u64,
    pub kvm_exits: u64,
    /// The previous sample's runtime, exits and system calls (equal to this one's at first).
    pub prev_runtime_s: f64,
    pub prev_exits: u64,
    pub prev_syscalls: u64,
    /// Hash of the fields above ([`LiveRecord::checksum`]).
    pub check: u64,
}

impl LiveRecord {
    /// FNV-1a over the fields but `check`.
    pub fn checksum(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for x in [
            self.v as u64,
            self.seq,
            self.pid as u64,
            self.started as u64,
            self.ended as u64,
            self.unix.to_bits(),
            self.runtime_s.to_bits(),
            self.exits,
            self.syscalls,
            self.page_faults,
            self.kvm_exits,
            self.prev_runtime_s.to_bits(),
            self.prev_exits,
            self.prev_syscalls,
        ] {
            eat(x);
        }
        h
    }

    /// Exits per second between the last two samples (0 when they are the same moment).
    pub fn exits_per_s(&self) -> f64 {
        let dt = self.runtime_s - self.prev_runtime_s;
        if dt > 0.0 {
            self.exits.saturating_sub(self.prev_exits) as f64 / dt
        } else {
            0.0
        }
    }

    /// System calls per second between the last two samples.
    pub fn syscalls_per_s(&self) -> f64 {
        let dt = self.runtime_s - self.prev_runtime_s;
        if dt > 0.0 {
            self.syscalls.saturating_sub(self.prev_syscalls) as f64 / dt
        } else {
            0.0
        }
    }

    /// The record as written: JSON padded to [`RECORD_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.clone();
        r.check = r.checksum();
        let mut b = serde_json::to_vec(&r).expect("the record serializes");
        assert!(b.len() < RECORD_LEN, "live record too long");
        b.resize(RECORD_LEN - 1, b' ');
        b.push(b'\n');
        b
    }

    /// A record read back; `None` when torn or not a record.
    pub fn decode(b: &[u8]) -> Option<LiveRecord> {
        let r: LiveRecord = serde_json::from_slice(b).ok()?;
        (r.check == r.checksum()).then_some(r)
    }
}

/// Read the live record at `path` (a few tries when a read races a write).
pub fn read(path: &Path) -> Option<LiveRecord> {
    for _ in 0..4 {
        let b = std::fs::read(path).ok()?;
        if let Some(r) = LiveRecord::decode(&b) {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The publisher: owns the file and the previous sample.
pub struct Publisher {
    file: File,
    board: Arc<LiveBoard>,
    last: LiveRecord,
}

impl Publisher {
    /// Create (or truncate) `path`, readable by its owner only (the VMM's user before the
    /// jail: the daemon's): call before the jail (the jailed VMM keeps only the descriptor,
    /// and a guest whose root holds the path, running as the job's user, cannot open it).
    pub fn create(path: &Path, board: Arc<LiveBoard>) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let p = Publisher {
            file,
            board,
            last: LiveRecord {
                v: 1,
                pid: std::process::id(),
                ..Default::default()
            },
        };
        p.write_record(&p.last.clone())?;
        Ok(p)
    }

    fn write_record(&self, r: &LiveRecord) -> std::io::Result<()> {
        self.file.write_all_at(&r.encode(), 0)
    }

    /// Take and write one sample; `started` is when the guest's first instruction ran.
    pub fn sample(&mut self, started: Option<Instant>, ended: bool) -> std::io::Result<()> {
        let t = self.board.totals();
        let prev = &self.last;
        let r = LiveRecord {
            v: 1,
            seq: prev.seq + 1,
            pid: prev.pid,
            started: started.is_some(),
            ended,
            unix: crate::stats::unix_now(),
            runtime_s: started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            exits: t.exits,
            syscalls: t.syscalls,
            page_faults: t.page_faults,
            kvm_exits: t.kvm_exits,
            prev_runtime_s: if prev.seq == 0 { 0.0 } else { prev.runtime_s },
            prev_exits: prev.exits,
            prev_syscalls: prev.syscalls,
            check: 0,
        };
        self.write_record(&r)?;
        self.last = r;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_and_published_with_rates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.json");
        let board = Arc::new(LiveBoard::new(4));
        let mut p = Publisher::create(&path, board.clone()).unwrap();
        let first = read(&path).unwrap();
        assert_eq!((first.seq, first.exits, first.started), (0, 0, false));
        let (a, b) = (board.slot(0).unwrap(), board.slot(3).unwrap());
        assert!(board.slot(4).is_none());
        let t0 = Instant::now() - Duration::from_secs(1);
        for _ in 0..10 {
            a.exit();
            a.syscall();
        }
        b.exit();
        p.sample(Some(t0), false).unwrap();
        let r1 = read(&path).unwrap();
        assert_eq!((r1.seq, r1.exits, r1.syscalls), (1, 11, 10));
        assert!(r1.started && !r1.ended && r1.runtime_s >= 1.0);
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..100 {
            b.exit();
        }
        p.sample(Some(t0), true).unwrap();
        let r2 = read(&path).unwrap();
        assert_eq!((r2.exits, r2.prev_exits, r2.prev_syscalls), (111, 11, 10));
        assert!(r2.ended);
        let dt = r2.runtime_s - r2.prev_runtime_s;
        assert!(dt >= 0.1, "{dt}");
        assert!((r2.exits_per_s() - 100.0 / dt).abs() < 1e-6);
        assert_eq!(r2.syscalls_per_s(), 0.0);
        // Fixed size: every write replaces the whole record.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_LEN as u64);
    }

    #[test]
    fn a_torn_or_foreign_record_is_rejected() {
        let r = LiveRecord {
            v: 1,
            seq: 7,
            exits: 123456,
            ..Default::default()
        };
        let good = r.encode();
        assert_eq!(LiveRecord::decode(&good).unwrap().exits, 123456);
        // Half of a newer record over an older one: same length, different digits.
        let newer = LiveRecord {
            exits: 123999,
            seq: 8,
            ..r.clone()
        }
        .encode();
        let mut torn = good.clone();
        torn[..40].copy_from_slice(&newer[..40]);
        assert!(LiveRecord::decode(&torn).is_none());
        assert!(LiveRecord::decode(b"{}").is_none());
    }
}
