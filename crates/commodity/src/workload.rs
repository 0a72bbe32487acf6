//! Reading the built-in guest's console: the ready marker and the `build` workload's progress,
//! and a small API for the evaluation harness to run N build VMs and measure their throughput.
//!
//! The guest prints, per worker (one per vCPU) and per round of `dualstack.jobs` compile jobs:
//! `dualstack-workload: round <R> done worker=<W> jobs=<cumulative jobs of W> uptime=<s>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::manager::{CreateOptions, ManagerError, VmManager};
use crate::spec::{VmSpec, Workload};

/// Progress of the build workload as reported on one VM's console.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildProgress {
    /// Whether the guest printed its ready marker.
    pub ready: bool,
    /// Workers that reported at least one round.
    pub workers: u32,
    /// Rounds completed, all workers together.
    pub rounds: u64,
    /// Compile jobs completed, all workers together.
    pub jobs: u64,
    /// Latest guest uptime seen in a progress line (seconds).
    pub guest_uptime_s: f64,
}

/// Parses a console log (lossy UTF-8; partial last lines are ignored).
pub fn parse_progress(log: &str) -> BuildProgress {
    let mut per_worker: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut p = BuildProgress::default();
    let complete = match log.rfind('\n') {
        Some(i) => &log[..i],
        None => "",
    };
    for line in complete.lines() {
        if line.contains(crate::guest::READY_MARKER) {
            p.ready = true;
        }
        let Some(rest) = line.split("dualstack-workload: round ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(round)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let (mut worker, mut jobs, mut uptime) = (None, None, None);
        for w in words {
            if let Some(v) = w.strip_prefix("worker=") {
                worker = v.parse::<u32>().ok();
            } else if let Some(v) = w.strip_prefix("jobs=") {
                jobs = v.parse::<u64>().ok();
            } else if let Some(v) = w.strip_prefix("uptime=") {
                uptime = v.parse::<f64>().ok();
            }
        }
        let (Some(worker), Some(jobs)) = (worker, jobs) else {
            continue;
        };
        let e = per_worker.entry(worker).or_default();
        *e = (e.0.max(round), e.1.max(jobs));
        if let Some(u) = uptime {
            p.guest_uptime_s = p.guest_uptime_s.max(u);
        }
    }
    p.workers = per_worker.len() as u32;
    p.rounds = per_worker.values().map(|v| v.0).sum();
    p.jobs = per_worker.values().map(|v| v.1).sum();
    p
}

/// Reads and parses a serial log file (missing file: no progress).
pub fn read_progress(serial_log: &Path) -> BuildProgress {
    let bytes = std::fs::read(serial_log).unwrap_or_default();
    parse_progress(&String::from_utf8_lossy(&bytes))
}

/// Throughput of one VM over a measurement interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmThroughput {
    /// VM name.
    pub name: String,
    /// Jobs completed during the interval.
    pub jobs: u64,
    /// Jobs per second of host wall-clock time.
    pub jobs_per_s: f64,
}

/// Throughput of a fleet over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetThroughput {
    /// Interval length (host wall clock), seconds.
    pub seconds: f64,
    /// Per VM.
    pub vms: Vec<VmThroughput>,
    /// All VMs together, jobs per second.
    pub total_jobs_per_s: f64,
}

/// N commodity VMs running the `build` workload on the commodity cores, for benchmarks.
///
/// ```no_run
/// # use dualstack_commodity::{VmManager, BuildFleet};
/// # fn demo(mgr: VmManager) -> Result<(), Box<dyn std::error::Error>> {
/// let fleet = BuildFleet::start(mgr, "bench", 2, 1, 256)?; // 2 VMs, 1 vCPU, 256 MiB each
/// fleet.wait_for_work(std::time::Duration::from_secs(60))?; // every VM reported a round
/// let t = fleet.measure(std::time::Duration::from_secs(10))?;
/// println!("{:.1} jobs/s", t.total_jobs_per_s);
/// fleet.stop_all()?; // also done (best effort) on drop
/// # Ok(()) }
/// ```
pub struct BuildFleet {
    manager: VmManager,
    names: Vec<String>,
}

impl BuildFleet {
    /// Creates `count` VMs named `<prefix>-<i>` with the built-in guest and the build workload.
    /// If one fails, the ones already created are deleted and the error is returned.
    pub fn start(
        manager: VmManager,
        prefix: &str,
        count: u32,
        vcpus: u32,
        memory_mib: u64,
    ) -> Result<Self, ManagerError> {
        let mut fleet = Self {
            manager,
            names: Vec::new(),
        };
        for i in 0..count {
            let spec =
                VmSpec::builtin(&format!("{prefix}-{i}"), vcpus, memory_mib, Workload::Build);
            fleet.manager.create(&spec, &CreateOptions::default())?;
            fleet.names.push(spec.name);
        }
        Ok(fleet)
    }

    /// The VMs' names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The manager the fleet uses.
    pub fn manager(&self) -> &VmManager {
        &self.manager
    }

    /// Current progress of every VM, by name.
    pub fn progress(&self) -> Result<Vec<(String, BuildProgress)>, ManagerError> {
        self.names
            .iter()
            .map(|n| {
                Ok((
                    n.clone(),
                    read_progress(&self.manager.record(n)?.serial_log()),
                ))
            })
            .collect()
    }

    /// Waits until every VM has completed at least one round.
    pub fn wait_for_work(&self, timeout: Duration) -> Result<(), ManagerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let progress = self.progress()?;
            if progress.iter().all(|(_, p)| p.rounds > 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let idle: Vec<_> = progress
                    .iter()
                    .filter(|(_, p)| p.rounds == 0)
                    .map(|(n, _)| n.clone())
                    .collect();
                return Err(ManagerError::NoProgress {
                    names: idle.join(", "),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Counts jobs completed during `interval` (host wall clock).
    pub fn measure(&self, interval: Duration) -> Result<FleetThroughput, ManagerError> {
        let before = self.progress()?;
        let t0 = Instant::now();
        std::thread::sleep(interval);
        let after = self.progress()?;
        let seconds = t0.elapsed().as_secs_f64();
        let vms: Vec<VmThroughput> = before
            .iter()
            .zip(&after)
            .map(|((name, b), (_, a))| {
                let jobs = a.jobs.saturating_sub(b.jobs);
                VmThroughput {
                    name: name.clone(),
                    jobs,
                    jobs_per_s: jobs as f64 / seconds,
                }
            })
            .collect();
        let total_jobs_per_s = vms.iter().map(|v| v.jobs_per_s).sum();
        Ok(FleetThroughput {
            seconds,
            vms,
            total_jobs_per_s,
        })
    }

    /// Stops and deletes every VM of the fleet.
    pub fn stop_all(mut self) -> Result<(), ManagerError> {
        self.delete_all()
    }

    fn delete_all(&mut self) -> Result<(), ManagerError> {
        let mut first_err = None;
        for name in std::mem::take(&mut self.names) {
            if let Err(e) = self.manager.delete(&name) {
                tracing::warn!(vm = %name, "deleting fleet VM failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for BuildFleet {
    fn drop(&mut self) {
        let _ = self.delete_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_progress_lines() {
        let log = "SeaBIOS\r\ndualstack-guest: ready vcpus=2 workload=build kernel=6.1\n\
            dualstack-workload: started workers=2 jobs_per_round=16\n\
            dualstack-workload: round 1 done worker=0 jobs=16 uptime=3.10\n\
            dualstack-workload: round 1 done worker=1 jobs=16 uptime=3.20\n\
            dualstack-workload: round 2 done worker=0 jobs=32 uptime=3.90\r\n\
            garbage dualstack-workload: round x done\n\
            dualstack-workload: round 3 done worker=0 jobs=48 upt";
        let p = parse_progress(log);
        assert!(p.ready);
        assert_eq!(p.workers, 2);
        assert_eq!(p.rounds, 3);
        assert_eq!(p.jobs, 48);
        assert!((p.guest_uptime_s - 3.9).abs() < 1e-9);
        assert_eq!(parse_progress(""), BuildProgress::default());
    }
}
