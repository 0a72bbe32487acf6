//! The commodity VM manager: create, start, list, show, stop and delete QEMU VMs confined to
//! the commodity cpuset, with their records in the shared state database.
//!
//! Every state-changing operation holds the dualstack state lock (shared with the zones) while
//! it reads and writes records and the commodity cpuset; the lock is released while a new VM
//! boots, so zones can be created meanwhile (the VM's threads follow the cpuset either way).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dualstack_zones::commodity::{self, CommodityError};
use dualstack_zones::paths::HostPaths;
use dualstack_zones::state::{open_db, StateLock};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::accel::{self, AccelDecision};
use crate::guest::{GuestBuilder, GuestError, READY_MARKER};
use crate::process::{self, Liveness, ProcessError, ProcessIdentity, ThreadAffinity};
use crate::qemu::{kernel_cmdline, QemuError, QemuLaunch, ResolvedBoot};
use crate::qmp::{Qmp, QmpError};
use crate::spec::{Accel, BootSource, SpecError, VmSpec, VmState, Workload};
use crate::state::{StateError, VmRecord, VmStore};
use crate::workload::{read_progress, BuildProgress};

/// Errors of VM operations.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Invalid specification.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// VM records.
    #[error(transparent)]
    State(#[from] StateError),
    /// The shared state directory, lock or database.
    #[error(transparent)]
    ZonesState(#[from] dualstack_zones::state::StateError),
    /// The zones recorded in the state database could not be read.
    #[error("reading the HPC zones recorded in the state database")]
    Zones(#[from] Box<dualstack_zones::ZoneError>),
    /// The commodity cpuset.
    #[error("commodity cpuset")]
    Commodity(#[from] CommodityError),
    /// The built-in guest.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// Starting QEMU.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// Signalling QEMU.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Talking to QEMU.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// A kernel, initrd or disk image that cannot be used.
    #[error("{what} {path}: {problem}")]
    Input {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// QEMU did not come up, or the guest did not boot.
    #[error(
        "VM {name:?} failed to start: {reason}{}{}",
        section("QEMU's output", qemu_output),
        section("last serial console lines", serial_tail)
    )]
    BootFailed {
        name: String,
        reason: String,
        qemu_output: String,
        serial_tail: String,
    },
    /// A state that does not allow the operation.
    #[error("VM {name:?} is {state}: {hint}")]
    WrongState {
        name: String,
        state: VmState,
        hint: &'static str,
    },
    /// Build VMs that report no progress.
    #[error("VMs {names} reported no build-workload round within {seconds} s; see `dualstack vm console NAME`")]
    NoProgress { names: String, seconds: u64 },
    /// A file operation on the VM's directory.
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn section(title: &str, body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- {title} ---\n{}", body.trim_end())
    }
}

/// Options of [`VmManager::create`] and [`VmManager::start`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// How long to wait for the guest. The built-in guest must print its ready marker within
    /// it; other guests must keep QEMU running and show no firmware boot error for
    /// `settle` (which must be shorter).
    pub timeout: Duration,
    /// Observation period for guests without a ready marker.
    pub settle: Duration,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(90),
            settle: Duration::from_secs(5),
        }
    }
}

/// A VM as `vm list` / `vm show` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    /// Name.
    pub name: String,
    /// Observed state (a recorded `running` whose QEMU is gone shows as `exited`).
    pub state: VmState,
    /// Accelerator in use.
    pub accel: Accel,
    /// Why that accelerator.
    pub accel_reason: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Boot source.
    pub boot: BootSource,
    /// Workload (built-in guest).
    pub workload: Workload,
    /// QEMU's pid while it runs.
    pub pid: Option<i32>,
    /// The cpuset QEMU lives in.
    pub cgroup: PathBuf,
    /// The commodity cpuset's CPUs now (empty if it does not exist).
    pub commodity_cpus: String,
    /// More vCPUs than commodity CPUs (allowed: overcommit).
    pub overcommitted: bool,
    /// Serial console log.
    pub serial_log: PathBuf,
    /// QEMU's own output.
    pub qemu_log: PathBuf,
    /// QMP socket.
    pub qmp_socket: PathBuf,
    /// Why it exited, if it did on its own.
    pub note: Option<String>,
    /// Build workload progress read from the console.
    pub progress: BuildProgress,
}

/// [`VmInfo`] plus every QEMU thread's allowed CPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDetails {
    /// Summary.
    #[serde(flatten)]
    pub info: VmInfo,
    /// Kernel command line (direct kernel boot).
    pub cmdline: Option<String>,
    /// Kernel booted.
    pub kernel: Option<PathBuf>,
    /// Initramfs booted.
    pub initrd: Option<PathBuf>,
    /// QEMU's threads and their `Cpus_allowed_list` (empty unless running).
    pub threads: Vec<ThreadAffinity>,
}

/// Manages commodity VMs on one host (or fake host tree).
#[derive(Debug, Clone)]
pub struct VmManager {
    paths: HostPaths,
    cache_dir: PathBuf,
    qemu_binary: PathBuf,
    sys_root: PathBuf,
    dev_kvm: PathBuf,
}

impl VmManager {
    /// A manager for the host described by `paths` (state directory, cpuset root, instance,
    /// procfs), with the default guest cache and `qemu-system-x86_64` from `PATH`.
    pub fn new(paths: HostPaths) -> Self {
        Self {
            paths,
            cache_dir: crate::guest::default_cache_dir(),
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            sys_root: PathBuf::from("/sys"),
            dev_kvm: PathBuf::from("/dev/kvm"),
        }
    }

    /// Uses another cache directory for the built-in guest.
    pub fn with_cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = dir.to_path_buf();
        self
    }

    /// Uses another QEMU binary.
    pub fn with_qemu(mut self, binary: &Path) -> Self {
        self.qemu_binary = binary.to_path_buf();
        self
    }

    /// The host paths.
    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    /// The built-in guest builder this manager uses.
    pub fn guest_builder(&self) -> GuestBuilder {
        GuestBuilder::new(&self.cache_dir)
    }

    /// The accelerator `choice` resolves to on this host.
    pub fn decide_accel(&self, choice: crate::spec::AccelChoice) -> AccelDecision {
        accel::decide(choice, &self.sys_root, &self.dev_kvm)
    }

    fn vm_dir(&self, name: &str) -> PathBuf {
        self.paths.state_dir.join("vms").join(name)
    }

    fn locked(&self) -> Result<(StateLock, Connection), ManagerError> {
        let lock = StateLock::acquire(&self.paths.state_dir)?;
        let conn = open_db(&self.paths.state_dir)?;
        VmStore::new(&conn)?;
        Ok((lock, conn))
    }

    /// One VM's record as stored (not refreshed).
    pub fn record(&self, name: &str) -> Result<VmRecord, ManagerError> {
        let conn = open_db(&self.paths.state_dir)?;
        Ok(VmStore::new(&conn)?.get(name)?)
    }

    /// Creates and boots a VM. Returns once the guest is up (see [`CreateOptions`]); on any
    /// failure QEMU is killed and no record or file is left behind.
    pub fn create(&self, spec: &VmSpec, opts: &CreateOptions) -> Result<VmInfo, ManagerError> {
        spec.validate()?;
        let (boot, kernel, initrd) = self.resolve_boot(spec)?;
        let decision = self.decide_accel(spec.accel);
        let dir = self.vm_dir(&spec.name);
        let record = {
            let (_lock, conn) = self.locked()?;
            let store = VmStore::new(&conn)?;
            if store.get(&spec.name).is_ok() {
                return Err(StateError::Exists(spec.name.clone()).into());
            }
            // A directory without a record is debris of a crashed create: nothing runs there.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|source| ManagerError::Io {
                what: "creating VM directory",
                path: dir.clone(),
                source,
            })?;
            let cmdline = match &boot {
                ResolvedBoot::Kernel { cmdline, .. } => Some(cmdline.clone()),
                ResolvedBoot::Disk { .. } => None,
            };
            let record = VmRecord {
                spec: spec.clone(),
                state: VmState::Starting,
                accel: decision.accel,
                accel_reason: decision.reason.clone(),
                process: None,
                dir: dir.clone(),
                cgroup: PathBuf::new(),
                kernel,
                initrd,
                cmdline,
                created_unix: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                note: None,
            };
            if let Err(e) = store.insert(&record) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
            record
        };
        self.launch(record, boot, opts, true)
    }

    /// Boots a stopped or exited VM again with its recorded configuration.
    pub fn start(&self, name: &str, opts: &CreateOptions) -> Result<VmInfo, ManagerError> {
        let (boot, _, _) = self.resolve_boot(&self.record(name)?.spec)?;
        let record = {
            let (_lock, conn) = self.locked()?;
            let store = VmStore::new(&conn)?;
            let mut rec = self.refresh(&store, store.get(name)?)?;
            if rec.state.has_process() {
                return Err(ManagerError::WrongState {
                    name: name.into(),
                    state: rec.state,
                    hint: "it already runs",
                });
            }
            rec.state = rec.state.transition(VmState::Starting)?;
            rec.note = None;
            store.update(&rec)?;
            rec
        };
        self.launch(record, boot, opts, false)
    }

    /// Spawns QEMU for a `starting` record and waits for the guest. On failure: a new VM's
    /// record and directory are removed; a restarted VM goes back to `exited`.
    fn launch(
        &self,
        mut record: VmRecord,
        boot: ResolvedBoot,
        opts: &CreateOptions,
        new_vm: bool,
    ) -> Result<VmInfo, ManagerError> {
        let name = record.spec.name.clone();
        let launch = QemuLaunch {
            binary: self.qemu_binary.clone(),
            name: name.clone(),
            vcpus: record.spec.vcpus,
            memory_mib: record.spec.memory_mib,
            accel: record.accel,
            boot,
            qmp_socket: record.qmp_socket(),
            serial_log: record.serial_log(),
        };
        // Spawn under the lock: the commodity cpuset must exist and must not be released
        // between ensuring it and QEMU joining it.
        let spawned = (|| -> Result<ProcessIdentity, ManagerError> {
            let (lock, conn) = self.locked()?;
            let store = VmStore::new(&conn)?;
            let cpuset = commodity::ensure_locked(&self.paths, &lock)?;
            record.cgroup = cpuset.cgroup_dir.clone();
            let _ = std::fs::remove_file(record.qmp_socket());
            let _ = std::fs::remove_file(record.serial_log());
            let pid = launch.spawn(&record.qemu_log(), &cpuset.cgroup_dir.join("cgroup.procs"))?;
            let ident = ProcessIdentity::capture(&self.paths.procfs, pid, &launch.marker())
                .unwrap_or(
                    // Already gone: keep the pid so the boot wait reports QEMU's output.
                    ProcessIdentity {
                        pid,
                        start_ticks: 0,
                        cmdline_marker: launch.marker(),
                    },
                );
            record.process = Some(ident.clone());
            store.update(&record)?;
            if record.spec.vcpus as usize > cpuset.cpus.len() {
                tracing::info!(vm = %name, vcpus = record.spec.vcpus, cpus = %cpuset.cpus, "vCPUs overcommit the commodity CPUs");
            }
            Ok(ident)
        })();
        let outcome = match spawned {
            Ok(ident) => self.wait_boot(&record, &ident, opts).map(|()| ident),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(_) => {
                let (_lock, conn) = self.locked()?;
                let store = VmStore::new(&conn)?;
                let mut rec = store.get(&name)?;
                if rec.state == VmState::Starting {
                    rec.state = rec.state.transition(VmState::Running)?;
                    store.update(&rec)?;
                }
                self.info(&rec)
            }
            Err(err) => {
                self.abort_launch(&record, new_vm);
                Err(err)
            }
        }
    }

    /// Kills a failed launch's QEMU and removes or resets its record.
    fn abort_launch(&self, record: &VmRecord, new_vm: bool) {
        if let Some(ident) = &record.process {
            if let Err(e) = ident.kill_and_wait(&self.paths.procfs) {
                tracing::warn!(vm = %record.spec.name, "killing QEMU after a failed start: {e}");
            }
            process::reap(ident.pid);
        }
        let Ok((lock, conn)) = self.locked() else {
            return;
        };
        let Ok(store) = VmStore::new(&conn) else {
            return;
        };
        if new_vm {
            let _ = store.remove(&record.spec.name);
            let _ = std::fs::remove_dir_all(&record.dir);
        } else if let Ok(mut rec) = store.get(&record.spec.name) {
            rec.state = VmState::Exited;
            rec.process = None;
            rec.note = Some("failed to start; see qemu.log".into());
            let _ = store.update(&rec);
        }
        self.release_cpuset(&lock);
    }

    /// Remove the commodity cpuset when nothing needs it. A QEMU we just killed can stay in
    /// the cgroup's process list for a moment after it stopped counting as running, so when
    /// no VM record holds a process any more, retry briefly instead of leaving it behind.
    fn release_cpuset(&self, lock: &StateLock) {
        for _ in 0..40 {
            match commodity::release_if_unused_locked(&self.paths, lock) {
                Ok(true) => return,
                Ok(false) => {
                    match self.locked_any_vm_with_process() {
                        Ok(false) => {}
                        Ok(true) => return,
                        Err(e) => {
                            tracing::warn!(
                                "cannot tell whether the commodity cpuset is still needed ({}); left in place",
                                crate::util::error_chain(&e)
                            );
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::warn!("releasing the commodity cpuset: {e}");
                    return;
                }
            }
        }
        tracing::warn!(
            "the commodity cpuset still holds processes after its last VM stopped; left in place"
        );
    }

    /// Whether the commodity cpuset is still legitimately needed: a VM record with a QEMU
    /// process, or any zone (called with the state lock held).
    fn locked_any_vm_with_process(&self) -> Result<bool, ManagerError> {
        let zones = dualstack_zones::zone_count(&self.paths).map_err(Box::new)?;
        let conn = dualstack_zones::open_db(&self.paths.state_dir)?;
        let store = VmStore::new(&conn)?;
        Ok(zones > 0 || store.list()?.iter().any(|r| r.state.has_process()))
    }

    /// Waits until the guest is up, or returns [`ManagerError::BootFailed`].
    fn wait_boot(
        &self,
        rec: &VmRecord,
        ident: &ProcessIdentity,
        opts: &CreateOptions,
    ) -> Result<(), ManagerError> {
        let builtin = matches!(rec.spec.boot, BootSource::Builtin);
        let start = Instant::now();
        let mut qmp: Option<Qmp> = None;
        let fail = |reason: String| ManagerError::BootFailed {
            name: rec.spec.name.clone(),
            reason,
            qemu_output: tail(&rec.qemu_log(), 40),
            serial_tail: tail(&rec.serial_log(), 25),
        };
        loop {
            let serial =
                String::from_utf8_lossy(&std::fs::read(rec.serial_log()).unwrap_or_default())
                    .into_owned();
            if builtin && serial.contains(READY_MARKER) {
                return Ok(());
            }
            if let Some(line) = serial.lines().find(|l| {
                // Not "Boot failed": SeaBIOS says that per device and may still boot another.
                l.contains("No bootable device") || l.contains("Kernel panic")
            }) {
                return Err(fail(format!("the guest reported: {}", line.trim())));
            }
            if ident.liveness(&self.paths.procfs) != Liveness::Alive {
                return Err(fail("QEMU exited".into()));
            }
            if qmp.is_none() {
                qmp = Qmp::connect(&rec.qmp_socket(), Duration::from_secs(5)).ok();
            }
            if let Some(q) = qmp.as_mut() {
                match q.query_status() {
                    Ok(st)
                        if matches!(
                            st.status.as_str(),
                            "internal-error" | "guest-panicked" | "shutdown" | "io-error"
                        ) =>
                    {
                        return Err(fail(format!("QEMU reports run state {:?}", st.status)));
                    }
                    Ok(st) if !builtin && st.running && start.elapsed() >= opts.settle => {
                        return Ok(())
                    }
                    Ok(_) => {}
                    Err(_) => qmp = None,
                }
            }
            if start.elapsed() >= opts.timeout {
                let hint = if rec.accel == Accel::Kvm {
                    " (with --accel kvm: this host's KVM may not boot a stock Linux guest; try --accel tcg)"
                } else {
                    ""
                };
                let what = if builtin {
                    "the guest printed no ready marker"
                } else {
                    "QEMU did not report running"
                };
                return Err(fail(format!(
                    "{what} within {} s{hint}",
                    opts.timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn resolve_boot(
        &self,
        spec: &VmSpec,
    ) -> Result<(ResolvedBoot, Option<PathBuf>, Option<PathBuf>), ManagerError> {
        match &spec.boot {
            BootSource::Builtin => {
                let guest = self.guest_builder().ensure(false)?;
                let cmdline = kernel_cmdline(spec.workload.as_str(), spec.cmdline.as_deref());
                let boot = ResolvedBoot::Kernel {
                    kernel: guest.kernel.clone(),
                    initrd: Some(guest.initrd.clone()),
                    cmdline,
                };
                Ok((boot, Some(guest.kernel), Some(guest.initrd)))
            }
            BootSource::Kernel { kernel, initrd } => {
                let kernel = check_input("kernel", kernel)?;
                check_kernel(&kernel)?;
                let initrd = initrd
                    .as_deref()
                    .map(|i| check_input("initrd", i))
                    .transpose()?;
                let cmdline = kernel_cmdline(spec.workload.as_str(), spec.cmdline.as_deref());
                let boot = ResolvedBoot::Kernel {
                    kernel: kernel.clone(),
                    initrd: initrd.clone(),
                    cmdline,
                };
                Ok((boot, Some(kernel), initrd))
            }
            BootSource::Disk { image } => {
                let image = check_input("disk image", image)?;
                Ok((ResolvedBoot::Disk { image }, None, None))
            }
        }
    }

    /// Observes a record's process and records `exited` if QEMU is gone.
    fn refresh(&self, store: &VmStore<'_>, mut rec: VmRecord) -> Result<VmRecord, ManagerError> {
        if !rec.state.has_process() {
            return Ok(rec);
        }
        let liveness = rec
            .process
            .as_ref()
            .map_or(Liveness::Exited, |p| p.liveness(&self.paths.procfs));
        if liveness == Liveness::Alive {
            return Ok(rec);
        }
        let pid = rec.process.as_ref().map_or(0, |p| p.pid);
        let next = if rec.state == VmState::Stopping {
            VmState::Stopped
        } else {
            VmState::Exited
        };
        rec.state = rec.state.transition(next)?;
        if next == VmState::Exited {
            let last = tail(&rec.qemu_log(), 1);
            rec.note = Some(match liveness {
                Liveness::Replaced => {
                    format!("QEMU (pid {pid}) is gone; the pid now belongs to another process")
                }
                _ if last.trim().is_empty() => format!("QEMU (pid {pid}) exited"),
                _ => format!("QEMU (pid {pid}) exited: {}", last.trim()),
            });
        }
        rec.process = None;
        store.update(&rec)?;
        Ok(rec)
    }

    fn info(&self, rec: &VmRecord) -> Result<VmInfo, ManagerError> {
        let cpus = commodity::current(&self.paths)?.map(|c| c.cpus);
        let ncpus = cpus.as_ref().map_or(0, |c| c.len());
        Ok(VmInfo {
            name: rec.spec.name.clone(),
            state: rec.state,
            accel: rec.accel,
            accel_reason: rec.accel_reason.clone(),
            vcpus: rec.spec.vcpus,
            memory_mib: rec.spec.memory_mib,
            boot: rec.spec.boot.clone(),
            workload: rec.spec.workload,
            pid: rec.process.as_ref().map(|p| p.pid),
            cgroup: rec.cgroup.clone(),
            commodity_cpus: cpus.map(|c| c.to_list()).unwrap_or_default(),
            overcommitted: ncpus > 0 && rec.spec.vcpus as usize > ncpus,
            serial_log: rec.serial_log(),
            qemu_log: rec.qemu_log(),
            qmp_socket: rec.qmp_socket(),
            note: rec.note.clone(),
            progress: read_progress(&rec.serial_log()),
        })
    }

    /// Every VM, refreshed.
    pub fn list(&self) -> Result<Vec<VmInfo>, ManagerError> {
        let (_lock, conn) = self.locked()?;
        let store = VmStore::new(&conn)?;
        let mut out = Vec::new();
        for rec in store.list()? {
            let rec = self.refresh(&store, rec)?;
            out.push(self.info(&rec)?);
        }
        Ok(out)
    }

    /// One VM, refreshed, with its threads.
    pub fn show(&self, name: &str) -> Result<VmDetails, ManagerError> {
        let (_lock, conn) = self.locked()?;
        let store = VmStore::new(&conn)?;
        let rec = self.refresh(&store, store.get(name)?)?;
        let threads = match &rec.process {
            Some(p) => process::thread_affinities(&self.paths.procfs, p.pid).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(VmDetails {
            info: self.info(&rec)?,
            cmdline: rec.cmdline.clone(),
            kernel: rec.kernel.clone(),
            initrd: rec.initrd.clone(),
            threads,
        })
    }

    /// Stops a VM: with `graceful > 0` an ACPI power-down first, then QMP `quit`, then SIGKILL
    /// (only ever to the recorded, re-verified process). The record stays (`stopped`).
    pub fn stop(&self, name: &str, graceful: Duration) -> Result<VmInfo, ManagerError> {
        let (lock, conn) = self.locked()?;
        let store = VmStore::new(&conn)?;
        let mut rec = self.refresh(&store, store.get(name)?)?;
        match rec.state {
            VmState::Stopped | VmState::Exited => return self.info(&rec),
            VmState::Starting => {
                return Err(ManagerError::WrongState {
                    name: name.into(),
                    state: rec.state,
                    hint: "wait for it to boot, or `dualstack vm delete` it",
                })
            }
            VmState::Running => {
                rec.state = rec.state.transition(VmState::Stopping)?;
                store.update(&rec)?;
            }
            VmState::Stopping => {}
        }
        if let Some(ident) = rec.process.clone() {
            self.terminate(&rec, &ident, graceful)?;
        }
        rec.state = rec.state.transition(VmState::Stopped)?;
        rec.process = None;
        store.update(&rec)?;
        self.release_cpuset(&lock);
        self.info(&rec)
    }

    fn terminate(
        &self,
        rec: &VmRecord,
        ident: &ProcessIdentity,
        graceful: Duration,
    ) -> Result<(), ManagerError> {
        let procfs = &self.paths.procfs;
        if ident.liveness(procfs) != Liveness::Alive {
            return Ok(());
        }
        if !graceful.is_zero() {
            if let Ok(mut q) = Qmp::connect(&rec.qmp_socket(), Duration::from_secs(5)) {
                if q.system_powerdown().is_ok() && ident.wait_gone(procfs, graceful) {
                    return Ok(());
                }
            }
        }
        if let Ok(mut q) = Qmp::connect(&rec.qmp_socket(), Duration::from_secs(5)) {
            let _ = q.quit();
            if ident.wait_gone(procfs, Duration::from_secs(10)) {
                return Ok(());
            }
        }
        tracing::warn!(vm = %rec.spec.name, pid = ident.pid, "QEMU did not quit over QMP; sending SIGKILL");
        ident.kill_and_wait(procfs)?;
        Ok(())
    }

    /// Stops (if needed) and forgets a VM, removing its files. Works on VMs started by any
    /// earlier dualstack process.
    pub fn delete(&self, name: &str) -> Result<(), ManagerError> {
        let (lock, conn) = self.locked()?;
        let store = VmStore::new(&conn)?;
        let rec = store.get(name)?;
        if let Some(ident) = rec.process.clone() {
            self.terminate(&rec, &ident, Duration::ZERO)?;
        }
        store.remove(name)?;
        if let Err(e) = std::fs::remove_dir_all(&rec.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(vm = %name, "removing {}: {e}", rec.dir.display());
            }
        }
        self.release_cpuset(&lock);
        Ok(())
    }
}

/// Checks that a user-given file exists, is a regular file, is readable and is not empty.
fn check_input(what: &'static str, path: &Path) -> Result<PathBuf, ManagerError> {
    let err = |problem: String| ManagerError::Input {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("{e}")))?;
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(err("is empty".into()));
    }
    std::fs::File::open(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    std::fs::canonicalize(path).map_err(|e| err(format!("{e}")))
}

/// Rejects files that are not complete bzImages (see [`crate::guest::bzimage_problem`]).
fn check_kernel(path: &Path) -> Result<(), ManagerError> {
    use std::io::Read;
    let err = |problem: String| ManagerError::Input {
        what: "kernel",
        path: path.to_path_buf(),
        problem,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    let len = f.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut header = Vec::with_capacity(4096);
    f.by_ref()
        .take(4096)
        .read_to_end(&mut header)
        .map_err(|e| err(format!("cannot be read: {e}")))?;
    match crate::guest::bzimage_problem(&header, len) {
        Some(problem) => Err(err(problem)),
        None => Ok(()),
    }
}

/// The last `n` lines of a text file (lossy), empty if unreadable.
pub fn tail(path: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
