//! What a commodity VM is: its configuration ([`VmSpec`]), its accelerator and its life cycle
//! ([`VmState`] with an explicit transition table).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors in a VM specification or a state change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// A VM name we cannot use in paths, sockets and cgroups.
    #[error("VM name {0:?} is invalid: use 1-32 characters from a-z, A-Z, 0-9, '-' and '_', starting with a letter or digit")]
    BadName(String),
    /// Zero vCPUs or memory, or absurd amounts.
    #[error("{what} = {value} is out of range ({range})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        range: &'static str,
    },
    /// An initrd without a kernel, or a kernel/initrd together with a disk.
    #[error("{0}")]
    BootSource(String),
    /// A word that names no accelerator or workload.
    #[error("{what} {value:?} is not one of {choices}")]
    BadChoice {
        what: &'static str,
        value: String,
        choices: &'static str,
    },
    /// A state change the life cycle does not allow.
    #[error("VM cannot go from {from} to {to}")]
    Transition { from: VmState, to: VmState },
}

/// What the VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum BootSource {
    /// The built-in guest (`dualstack vm image build`): Debian cloud kernel + busybox initramfs.
    Builtin,
    /// A Linux kernel (bzImage) and optionally an initramfs, booted directly by QEMU.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
    },
    /// A raw disk image booted by the firmware (SeaBIOS) from a virtio disk.
    Disk { image: PathBuf },
}

/// What the built-in guest runs once booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Stand-in for a parallel kernel build: one worker per vCPU forking small programs, doing
    /// tmpfs file I/O and compute, reporting `dualstack-workload: round N done ...` lines.
    Build,
    /// Boot and wait.
    #[default]
    Idle,
}

impl Workload {
    /// The name used on the guest kernel command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Build => "build",
            Workload::Idle => "idle",
        }
    }
}

impl FromStr for Workload {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "build" => Ok(Workload::Build),
            "idle" => Ok(Workload::Idle),
            _ => Err(SpecError::BadChoice {
                what: "workload",
                value: s.into(),
                choices: "build, idle",
            }),
        }
    }
}

/// The accelerator QEMU runs a VM with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's binary translator (multi-threaded TCG: one host thread per vCPU).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AccelChoice {
    /// Use KVM.
    Kvm,
    /// Use TCG.
    Tcg,
    /// KVM if this host's KVM can boot a stock Linux guest, else TCG (see [`crate::accel`]).
    #[default]
    Auto,
}

impl FromStr for AccelChoice {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            "auto" => Ok(AccelChoice::Auto),
            _ => Err(SpecError::BadChoice {
                what: "accelerator",
                value: s.into(),
                choices: "kvm, tcg, auto",
            }),
        }
    }
}

/// A commodity VM's configuration, as given to `dualstack vm create` or the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB (plain anonymous host memory, overcommittable).
    pub memory_mib: u64,
    /// What to boot.
    pub boot: BootSource,
    /// Workload for the built-in guest (passed as `dualstack.workload=` on the command line of
    /// any directly booted kernel).
    #[serde(default)]
    pub workload: Workload,
    /// Extra kernel command line appended to ours (direct kernel boot only).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Accelerator choice.
    #[serde(default)]
    pub accel: AccelChoice,
}

/// Largest vCPU count we accept (QEMU's pc machine limit).
pub const MAX_VCPUS: u32 = 255;

impl VmSpec {
    /// A spec for the built-in guest.
    pub fn builtin(name: &str, vcpus: u32, memory_mib: u64, workload: Workload) -> Self {
        Self {
            name: name.to_string(),
            vcpus,
            memory_mib,
            boot: BootSource::Builtin,
            workload,
            cmdline: None,
            accel: AccelChoice::Auto,
        }
    }

    /// Checks everything that does not need the file system.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(SpecError::OutOfRange {
                what: "vcpus",
                value: self.vcpus.into(),
                range: "1..=255",
            });
        }
        if !(16..=(1 << 24)).contains(&self.memory_mib) {
            return Err(SpecError::OutOfRange {
                what: "memory (MiB)",
                value: self.memory_mib,
                range: "16 MiB ..= 16 TiB",
            });
        }
        if self.cmdline.is_some() && matches!(self.boot, BootSource::Disk { .. }) {
            return Err(SpecError::BootSource(
                "--cmdline needs a directly booted kernel; a disk image's boot loader owns its command line".into(),
            ));
        }
        Ok(())
    }
}

/// Checks a VM name (it becomes a directory, a socket path component and a QEMU `-name`).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_string()))
    }
}

/// A VM's life cycle.
///
/// ```text
/// starting -> running -> stopping -> stopped
///     |          |           |          |
///     +----------+-----------+--> exited (QEMU died or the guest shut down)
/// stopped | exited -> starting   (vm start)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// QEMU was spawned; waiting for it (and the built-in guest) to come up.
    Starting,
    /// QEMU runs.
    Running,
    /// A stop was requested and QEMU has not exited yet.
    Stopping,
    /// Stopped on request; the record, logs and config remain until `vm delete`.
    Stopped,
    /// QEMU exited without being asked to (crash, guest power-off or panic, killed).
    Exited,
}

impl VmState {
    /// Every state, for exhaustive tests and listings.
    pub const ALL: [VmState; 5] = [
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Exited,
    ];

    /// Whether `self -> to` is allowed.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        matches!(
            (self, to),
            (Starting, Running)
                | (Starting, Exited)
                | (Running, Stopping)
                | (Running, Exited)
                | (Stopping, Stopped)
                | (Stopping, Exited)
                | (Stopped, Starting)
                | (Exited, Starting)
        )
    }

    /// `Ok(to)` if the transition is allowed.
    pub fn transition(self, to: VmState) -> Result<VmState, SpecError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(SpecError::Transition { from: self, to })
        }
    }

    /// Whether a QEMU process is expected to exist in this state.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping
        )
    }

    /// The lower-case name used in the database and output.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Exited => "exited",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        VmState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| SpecError::BadChoice {
                what: "VM state",
                value: s.into(),
                choices: "starting, running, stopping, stopped, exited",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_pair() {
        use VmState::*;
        let allowed = [
            (Starting, Running),
            (Starting, Exited),
            (Running, Stopping),
            (Running, Exited),
            (Stopping, Stopped),
            (Stopping, Exited),
            (Stopped, Starting),
            (Exited, Starting),
        ];
        for from in VmState::ALL {
            for to in VmState::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        for st in VmState::ALL {
            assert_eq!(st.as_str().parse::<VmState>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("zombie".parse::<VmState>().is_err());
    }

    #[test]
    fn names() {
        for good in ["a", "vm-1", "Build_2", "0abc"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a/b", "a b", "ü", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_validation() {
        let mut s = VmSpec::builtin("vm1", 2, 256, Workload::Build);
        assert!(s.validate().is_ok());
        s.vcpus = 0;
        assert!(matches!(s.validate(), Err(SpecError::OutOfRange { .. })));
        s.vcpus = 1;
        s.memory_mib = 1;
        assert!(matches!(s.validate(), Err(SpecError::OutOfRange { .. })));
        s.memory_mib = 256;
        s.boot = BootSource::Disk {
            image: "x.raw".into(),
        };
        s.cmdline = Some("quiet".into());
        assert!(matches!(s.validate(), Err(SpecError::BootSource(_))));
    }

    #[test]
    fn spec_json_rejects_unknown_fields() {
        let s = VmSpec::builtin("vm1", 1, 256, Workload::Idle);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<VmSpec>(&json).unwrap(), s);
        let bad = json.replacen('{', "{\"surprise\":1,", 1);
        assert!(serde_json::from_str::<VmSpec>(&bad).is_err());
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse::<AccelChoice>(), Ok(AccelChoice::Auto));
        assert!("hvf".parse::<AccelChoice>().is_err());
        assert_eq!("build".parse::<Workload>(), Ok(Workload::Build));
        assert!("compile".parse::<Workload>().is_err());
    }
}
