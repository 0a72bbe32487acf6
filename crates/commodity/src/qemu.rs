//! Building QEMU's command line and starting QEMU detached, inside the commodity cpuset.
//!
//! QEMU is spawned in its own session (so it survives the creating command and its terminal),
//! with stdout/stderr appended to the VM's `qemu.log`. Before `exec`, the still single-threaded
//! child writes its own pid into the cpuset's `cgroup.procs`, so every thread QEMU ever creates
//! starts inside the commodity cpuset and follows it when its CPUs change.

use std::ffi::{CString, OsString};
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::spec::Accel;

/// Errors starting QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The log file could not be created.
    #[error("cannot create QEMU log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path with a NUL byte.
    #[error("path {0} contains a NUL byte")]
    Nul(PathBuf),
    /// Spawning failed (binary missing, or the child could not join the cgroup).
    #[error("cannot start {binary} (placing it into {cgroup_procs})")]
    Spawn {
        binary: PathBuf,
        cgroup_procs: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the guest boots, with every path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedBoot {
    /// Direct kernel boot.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// Firmware boot from a raw image on a virtio disk.
    Disk { image: PathBuf },
}

/// Everything QEMU's command line is made of.
#[derive(Debug, Clone)]
pub struct QemuLaunch {
    /// qemu-system-x86_64 binary.
    pub binary: PathBuf,
    /// VM name.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Accelerator.
    pub accel: Accel,
    /// Boot source.
    pub boot: ResolvedBoot,
    /// QMP control socket (also the marker identifying the process as ours).
    pub qmp_socket: PathBuf,
    /// Serial console output file.
    pub serial_log: PathBuf,
}

impl QemuLaunch {
    /// The arguments after the binary.
    ///
    /// Memory is plain anonymous memory (`-m`, no `-mem-path`, no `-mem-prealloc`): pages are
    /// allocated on first touch and may be overcommitted, as commodity VMs are.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-name");
        push(&format!("dualstack-{},debug-threads=on", self.name));
        push("-no-user-config");
        push("-nodefaults");
        push("-machine");
        // graphics=off makes SeaBIOS print to the serial port too (boot errors end up in the log).
        push("pc,graphics=off");
        push("-accel");
        push(match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        });
        push("-cpu");
        push(match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        push("-smp");
        push(&self.vcpus.to_string());
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-display");
        push("none");
        push("-nic");
        push("none");
        push("-no-reboot");
        push("-chardev");
        push(&format!(
            "file,id=serial0,path={}",
            escape_opt(&self.serial_log)
        ));
        push("-serial");
        push("chardev:serial0");
        push("-qmp");
        push(&format!(
            "unix:{},server=on,wait=off",
            escape_opt(&self.qmp_socket)
        ));
        match &self.boot {
            ResolvedBoot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                a.push("-kernel".into());
                a.push(kernel.clone().into());
                if let Some(initrd) = initrd {
                    a.push("-initrd".into());
                    a.push(initrd.clone().into());
                }
                a.push("-append".into());
                a.push(cmdline.into());
            }
            ResolvedBoot::Disk { image } => {
                a.push("-drive".into());
                a.push(format!("file={},format=raw,if=virtio", escape_opt(image)).into());
            }
        }
        a
    }

    /// The string identifying this QEMU in `/proc/PID/cmdline`.
    pub fn marker(&self) -> String {
        self.qmp_socket.display().to_string()
    }

    /// Starts QEMU detached, inside the cgroup whose `cgroup.procs` file is given, and returns
    /// its pid. QEMU's output goes to `qemu_log`.
    pub fn spawn(&self, qemu_log: &Path, cgroup_procs: &Path) -> Result<i32, QemuError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(qemu_log)
            .map_err(|source| QemuError::Log {
                path: qemu_log.to_path_buf(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| QemuError::Log {
            path: qemu_log.to_path_buf(),
            source,
        })?;
        let procs = CString::new(cgroup_procs.as_os_str().as_bytes())
            .map_err(|_| QemuError::Nul(cgroup_procs.to_path_buf()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (setsid, getpid, open, write, close) on memory prepared
        // before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                join_cgroup(&procs)
            });
        }
        let child = cmd.spawn().map_err(|source| QemuError::Spawn {
            binary: self.binary.clone(),
            cgroup_procs: cgroup_procs.to_path_buf(),
            source,
        })?;
        // The Child handle is dropped without waiting: QEMU keeps running. Whoever notices it
        // exited reaps it (process::reap) if it is still our child.
        Ok(child.id() as i32)
    }
}

/// Writes the calling process's pid into `procs` (a cgroup's `cgroup.procs`). Async-signal-safe.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut buf = [0u8; 20];
    let text = format_decimal(pid as u32, &mut buf);
    // SAFETY: `procs` is a valid NUL-terminated path; open returns an fd or -1.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: writes `text.len()` bytes from a live stack buffer to the fd we just opened.
    let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closes the fd we opened above, once.
    unsafe { libc::close(fd) };
    if n != text.len() as isize {
        return Err(err);
    }
    Ok(())
}

/// Formats `n` in decimal into `buf` without allocating; returns the digits.
fn format_decimal(mut n: u32, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// QEMU option values separate sub-options with ',': a literal comma is written ",,".
fn escape_opt(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The kernel command line of a directly booted guest.
pub fn kernel_cmdline(workload: &str, extra: Option<&str>) -> String {
    let mut c = format!("console=ttyS0 panic=-1 quiet loglevel=4 dualstack.workload={workload}");
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        c.push(' ');
        c.push_str(extra.trim());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(boot: ResolvedBoot) -> QemuLaunch {
        QemuLaunch {
            binary: "qemu-system-x86_64".into(),
            name: "vm1".into(),
            vcpus: 2,
            memory_mib: 256,
            accel: Accel::Tcg,
            boot,
            qmp_socket: "/state/vms/vm1/qmp.sock".into(),
            serial_log: "/state/vms/vm1/a,b/serial.log".into(),
        }
    }

    fn joined(l: &QemuLaunch) -> String {
        l.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn kernel_boot_command_line() {
        let l = launch(ResolvedBoot::Kernel {
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: kernel_cmdline("build", Some(" dualstack.jobs=4 ")),
        });
        let s = joined(&l);
        assert!(s.contains("-accel tcg,thread=multi"), "{s}");
        assert!(s.contains("-smp 2 -m 256M"), "{s}");
        assert!(
            s.contains("-kernel /k -initrd /i -append console=ttyS0"),
            "{s}"
        );
        assert!(
            s.contains("dualstack.workload=build dualstack.jobs=4"),
            "{s}"
        );
        assert!(s.contains("path=/state/vms/vm1/a,,b/serial.log"), "{s}");
        assert!(
            s.contains("-qmp unix:/state/vms/vm1/qmp.sock,server=on,wait=off"),
            "{s}"
        );
        // Commodity memory: nothing that reserves or pins it.
        assert!(
            !s.contains("mem-path") && !s.contains("prealloc") && !s.contains("hugepages"),
            "{s}"
        );
        assert_eq!(l.marker(), "/state/vms/vm1/qmp.sock");
    }

    #[test]
    fn disk_boot_and_kvm() {
        let mut l = launch(ResolvedBoot::Disk {
            image: "/img.raw".into(),
        });
        l.accel = Accel::Kvm;
        let s = joined(&l);
        assert!(
            s.contains("-drive file=/img.raw,format=raw,if=virtio"),
            "{s}"
        );
        assert!(s.contains("-accel kvm -cpu host"), "{s}");
        assert!(!s.contains("-kernel"), "{s}");
    }

    #[test]
    fn decimal() {
        let mut b = [0u8; 20];
        assert_eq!(format_decimal(0, &mut b), b"0");
        assert_eq!(format_decimal(4194304, &mut b), b"4194304");
    }

    #[test]
    fn spawn_joins_the_cgroup_file_before_exec() {
        // With a plain file standing in for cgroup.procs, the child writes its own pid there.
        let tmp = tempfile::tempdir().unwrap();
        let procs = tmp.path().join("cgroup.procs");
        std::fs::write(&procs, b"").unwrap();
        let mut l = launch(ResolvedBoot::Disk {
            image: "/img.raw".into(),
        });
        l.binary = "/bin/true".into();
        let pid = l.spawn(&tmp.path().join("qemu.log"), &procs).unwrap();
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), pid.to_string());
        let mut status = 0;
        // SAFETY: waiting for our own child; writes only `status`.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // A missing cgroup file makes spawning fail instead of running QEMU unconfined.
        let err = l
            .spawn(
                &tmp.path().join("qemu.log"),
                &tmp.path().join("nope/cgroup.procs"),
            )
            .unwrap_err();
        assert!(matches!(err, QemuError::Spawn { .. }), "{err}");
    }
}
