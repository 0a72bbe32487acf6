//! The HPC VMM's jail: after the privileged set-up (KVM, guest memory, pinning) the process that
//! serves the guest becomes the guest's user for good, with no capability, `no_new_privs`, its
//! file access limited by Landlock to the guest's root, and a seccomp allow-list on every
//! thread. A small supervisor parent ([`supervisor`]) keeps what must outlive the drop (giving
//! back reservations, reporting a seccomp kill) and never serves guest requests.
//!
//! Order of [`Jail::apply`] (each step needs what the previous ones still allow):
//! 1. prepare the Landlock rules (open their paths while still privileged) and compile the
//!    seccomp filters;
//! 2. drop identity and capabilities ([`privs::drop_to`]: bounding set, ambient, groups, gid,
//!    uid, capsets, not dumpable, `no_new_privs`);
//! 3. enforce Landlock;
//! 4. parent-death signal (cleared by a credential change, so only now);
//! 5. install the SIGSYS reporter and the seccomp filters (last: they forbid what 1-4 used).

pub mod fsrules;
pub mod identity;
pub mod privs;
pub mod procfs;
pub mod run;
pub mod seccomp;
pub mod supervisor;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use fsrules::{Enforcement, LandlockReport};
pub use identity::{Caller, Identity, IdentityError, UserSpec};
pub use seccomp::{Violation, EXIT_SECCOMP};
pub use supervisor::{run_in_child, ChildEnd, ChildRun, ChildSide, SuperviseOptions, Supervised};

/// Why the jail could not be applied. A process that got this must not serve a guest.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("dropping privileges failed")]
    Privileges(#[from] privs::PrivError),
    #[error(transparent)]
    Landlock(#[from] fsrules::LandlockError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("the jail supervisor failed ({what})")]
    Supervisor {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the jail of one run is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jail {
    /// Who the VMM becomes.
    pub identity: Identity,
    /// Host directory the guest sees as `/` (Landlock's main rule).
    pub root: PathBuf,
    /// Paths the VMM itself keeps reading after set-up (read-only rules).
    #[serde(default)]
    pub extra_read: Vec<PathBuf>,
    /// Host device nodes the VMM may still open for the guest (never /dev/kvm, /dev/mem...).
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// Install the seccomp allow-list (off only for tests of the other layers).
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// Where the SIGSYS reporter writes (the supervisor's pipe); `None`: stderr.
    #[serde(skip)]
    pub report_fd: Option<i32>,
    /// Signal this process gets when its supervisor dies (PR_SET_PDEATHSIG).
    #[serde(default)]
    pub parent_death_signal: Option<i32>,
}

fn yes() -> bool {
    true
}

/// What the jail enforced, for the run's statistics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailReport {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub landlock: LandlockReport,
    pub seccomp: bool,
    pub no_new_privs: bool,
    /// Capabilities left (always 0 after a successful apply).
    pub capabilities: u64,
}

impl JailReport {
    /// One line for `--summary`.
    pub fn summary(&self) -> String {
        format!(
            "jail: {} (uid {} gid {} groups {:?}), no capabilities, {}, seccomp {}",
            self.user,
            self.uid,
            self.gid,
            self.groups,
            self.landlock,
            if self.seccomp { "on" } else { "off" }
        )
    }
}

impl Jail {
    /// The jail for `identity` confined to `root`, with the paths the VMM reads after set-up.
    pub fn new(identity: Identity, root: impl Into<PathBuf>) -> Jail {
        Jail {
            identity,
            root: root.into(),
            extra_read: vec![
                PathBuf::from("/proc"),
                PathBuf::from("/sys/devices/system/cpu"),
            ],
            devices: fsrules::host_devices(),
            seccomp: true,
            report_fd: None,
            parent_death_signal: None,
        }
    }

    /// Apply the jail to this process for good. Must run while the process has one thread.
    pub fn apply(&self) -> Result<JailReport, JailError> {
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let landlock = fsrules::prepare(&root, &self.extra_read, &self.devices)?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let filters = if self.seccomp {
            Some(seccomp::filters(pid)?)
        } else {
            None
        };
        privs::drop_to(&self.identity)?;
        let landlock = landlock.enforce()?;
        if let Some(sig) = self.parent_death_signal {
            // SAFETY: PR_SET_PDEATHSIG takes a signal number.
            let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
            if rc < 0 {
                return Err(JailError::Supervisor {
                    what: "prctl(PR_SET_PDEATHSIG)",
                    source: std::io::Error::last_os_error(),
                });
            }
            // The supervisor may already be gone (then the signal never comes).
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } == 1 {
                // SAFETY: raising a signal on ourselves.
                unsafe { libc::raise(sig) };
            }
        }
        let (eff, _, _) = privs::current_caps().unwrap_or((u64::MAX, 0, 0));
        if let Some(f) = &filters {
            seccomp::install_reporter(self.report_fd)?;
            seccomp::install(f)?;
        }
        Ok(JailReport {
            user: self.identity.user.clone(),
            uid: self.identity.uid,
            gid: self.identity.gid,
            groups: self.identity.groups.clone(),
            landlock,
            seccomp: filters.is_some(),
            no_new_privs: true,
            capabilities: eff,
        })
    }
}
