//! The competing load on the commodity cores: one unit per competing core, either a commodity
//! VM (1 vCPU, the built-in guest's `build` workload, confined to the commodity cpuset by the
//! commodity crate) or a native `stress-ng --cpu 1` process pinned to the commodity cores.
//!
//! Every unit stops itself when dropped (VMs through [`BuildFleet`]'s own drop, stress-ng by
//! killing the process group this harness created for it), so an error or a panic anywhere
//! never leaves load behind. Nothing here touches a process it did not start.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_commodity::{BuildFleet, ManagerError, VmManager};

use super::plan::LoadKind;

/// Failure to start or stop load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("starting commodity VM {name} for the competing load")]
    Vm {
        name: String,
        #[source]
        source: Box<ManagerError>,
    },
    #[error("commodity VM {name} booted but its build workload reported no progress")]
    NoProgress {
        name: String,
        #[source]
        source: Box<ManagerError>,
    },
    #[error("cannot start stress-ng for the competing load (install it: scripts/install-deps, or use --load vm)")]
    Stress(#[source] std::io::Error),
    #[error("stress-ng exited at once ({0}); is it installed and working?")]
    StressDied(String),
}

/// One competing core's worth of load.
enum Unit {
    Vm(Box<BuildFleet>),
    Stress(StressProc),
}

/// A `stress-ng` process in its own process group, killed with its workers on drop.
pub struct StressProc {
    child: Child,
}

impl StressProc {
    /// `stress-ng --cpu 1`, allowed only on `cpus`.
    pub fn start(cpus: &[usize]) -> Result<Self, LoadError> {
        let mut cmd = Command::new("stress-ng");
        cmd.args(["--cpu", "1", "--timeout", "0", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let cpus = cpus.to_vec();
        // SAFETY: runs in the forked child before exec and makes only async-signal-safe calls
        // (setpgid, sched_setaffinity) on the child itself.
        unsafe {
            cmd.pre_exec(move || {
                // Own process group: Ctrl-C at the terminal does not reach it (the harness stops
                // it), and stopping it reaches its workers and nothing else.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                dualstack_hpcvmm::set_thread_affinity(&cpus)
            });
        }
        let mut child = cmd.spawn().map_err(LoadError::Stress)?;
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LoadError::StressDied(status.to_string()));
        }
        Ok(Self { child })
    }

    fn signal_group(&self, sig: libc::c_int) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the group id is the pid of a child this
        // process spawned into its own new group and has not reaped yet (or whose orphaned
        // workers still hold the group), so only our processes are signalled.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }

    /// SIGTERM to the group, then SIGKILL after 3 s; reaps the leader.
    pub fn stop(&mut self) {
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers that outlived their parent still hold the group: take them down too.
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for StressProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What changed when the level changed (for progress messages).
pub type Notify<'a> = &'a mut dyn FnMut(&str);

/// The load units running now.
pub struct LoadSet {
    kind: LoadKind,
    manager: Option<VmManager>,
    /// Cores the load may use (the commodity cores).
    cpus: Vec<usize>,
    prefix: String,
    units: Vec<Unit>,
    vm_memory_mib: u64,
    started: u32,
    boot_timeout: Duration,
}

impl LoadSet {
    pub fn new(
        kind: LoadKind,
        manager: Option<VmManager>,
        cpus: Vec<usize>,
        prefix: &str,
        vm_memory_mib: u64,
    ) -> Self {
        Self {
            kind,
            manager,
            cpus,
            prefix: prefix.to_string(),
            units: Vec::new(),
            vm_memory_mib,
            started: 0,
            boot_timeout: Duration::from_secs(180),
        }
    }

    pub fn level(&self) -> u32 {
        self.units.len() as u32
    }

    /// Starts or stops units until `level` run. VMs are waited for until their workload has
    /// reported a round, so the load is at steady state when this returns.
    pub fn set_level(&mut self, level: u32, notify: Notify<'_>) -> Result<(), LoadError> {
        while self.level() > level {
            notify(&format!(
                "stopping competing load unit {} ({})",
                self.level(),
                self.kind.as_str()
            ));
            if let Some(u) = self.units.pop() {
                stop_unit(u);
            }
        }
        while self.level() < level {
            let n = self.level() + 1;
            let unit = match self.kind {
                LoadKind::Stress => {
                    notify(&format!(
                        "starting stress-ng {n}/{level} on cpus {:?}",
                        self.cpus
                    ));
                    Unit::Stress(StressProc::start(&self.cpus)?)
                }
                LoadKind::Vm => {
                    let name = format!("{}-{}", self.prefix, self.started);
                    notify(&format!(
                        "booting commodity VM {n}/{level} ({name}, 1 vCPU, build workload)"
                    ));
                    let mgr = self
                        .manager
                        .clone()
                        .expect("a VM load set is created with a manager");
                    let fleet = BuildFleet::start(mgr, &name, 1, 1, self.vm_memory_mib).map_err(
                        |source| LoadError::Vm {
                            name: name.clone(),
                            source: Box::new(source),
                        },
                    )?;
                    notify(&format!("waiting for {name}'s build workload to get going"));
                    fleet.wait_for_work(self.boot_timeout).map_err(|source| {
                        LoadError::NoProgress {
                            name,
                            source: Box::new(source),
                        }
                    })?;
                    Unit::Vm(Box::new(fleet))
                }
            };
            self.started += 1;
            self.units.push(unit);
        }
        Ok(())
    }

    /// Build jobs completed so far by every running VM (None for stress load).
    pub fn jobs(&self) -> Option<u64> {
        if self.kind != LoadKind::Vm || self.units.is_empty() {
            return None;
        }
        let mut total = 0;
        for u in &self.units {
            if let Unit::Vm(f) = u {
                total += f.progress().ok()?.iter().map(|(_, p)| p.jobs).sum::<u64>();
            }
        }
        Some(total)
    }

    /// Stops everything (also done on drop).
    pub fn stop_all(&mut self) {
        while let Some(u) = self.units.pop() {
            stop_unit(u);
        }
    }
}

fn stop_unit(u: Unit) {
    match u {
        Unit::Vm(f) => {
            if let Err(e) = f.stop_all() {
                tracing::warn!("stopping a commodity load VM: {e}");
            }
        }
        Unit::Stress(mut s) => s.stop(),
    }
}

impl Drop for LoadSet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn our_stress_children(pgid: u32) -> usize {
        // Processes in the group we created (only ours can be in it).
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(')')?.1.to_string();
                        rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                    })
                    == Some(pgid)
            })
            .count()
    }

    #[test]
    fn stress_units_start_and_leave_nothing_behind() {
        if Command::new("stress-ng").arg("--version").output().is_err() {
            return dualstack_testutil::missing(
                "stress-ng is not installed (run scripts/install-deps)",
            );
        }
        let cpus = dualstack_hpcvmm::host_affinity().unwrap();
        let mut set = LoadSet::new(LoadKind::Stress, None, vec![cpus[0]], "t", 0);
        let mut msgs = vec![];
        set.set_level(2, &mut |m| msgs.push(m.to_string())).unwrap();
        assert_eq!(set.level(), 2);
        let pgids: Vec<u32> = set
            .units
            .iter()
            .map(|u| match u {
                Unit::Stress(s) => s.child.id(),
                Unit::Vm(_) => unreachable!(),
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        for &g in &pgids {
            assert!(our_stress_children(g) >= 2, "parent and worker run");
        }
        set.set_level(1, &mut |m| msgs.push(m.to_string())).unwrap();
        assert_eq!(our_stress_children(pgids[1]), 0);
        drop(set);
        assert_eq!(our_stress_children(pgids[0]), 0);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
    }
}
