//! Landlock: the jailed VMM's own file access, limited to the guest's root (best effort by the
//! running kernel's ABI).
//!
//! The guest root gets every file-system right, except where it holds the host's special
//! trees: a `proc` or `sysfs` mount directly below it is read-only (the syscall layer serves the
//! guest's own /proc virtually; these rules are the second line), and a `dev` directory grants
//! only the harmless devices (`null`, `zero`, `full`, `random`, `urandom`, the tty, `pts`,
//! `shm`), so `/dev/kvm`, `/dev/mem`, `/dev/port` and block devices cannot be opened even if the
//! syscall layer let a path through. Descriptors opened before the restriction (KVM, guest
//! memory, stats) keep working: Landlock checks opens, not open files.
//!
//! The rules are prepared (paths opened with O_PATH) while still privileged, so a root the
//! guest's user cannot search still gets its rule, and enforced after the identity drop.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

/// The newest Landlock ABI whose rights the jail asks for (fs rights up to IOCTL_DEV, signal
/// scoping); older kernels get what they support.
const TARGET_ABI: ABI = ABI::V6;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// Devices a guest may open below a `dev` directory of its root.
pub const DEVICES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
];

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("cannot list the guest root {path} for its Landlock rules")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Landlock rule set failed")]
    Ruleset(#[source] landlock::RulesetError),
}

/// What access one path gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Everything (read, write, create, remove, execute, device ioctls).
    Full,
    /// Read files and list directories.
    ReadOnly,
    /// Open for reading and writing, truncate, ioctl (devices); no create/remove.
    Device,
}

/// The rules for a guest root: (path, grant) pairs.
pub fn plan(root: &Path) -> Result<Vec<(PathBuf, Grant)>, LandlockError> {
    let list_err = |source| LandlockError::List {
        path: root.display().to_string(),
        source,
    };
    let entries = std::fs::read_dir(root).map_err(list_err)?;
    let mut special = Vec::new();
    let mut normal = Vec::new();
    for e in entries {
        let e = e.map_err(list_err)?;
        let path = e.path();
        let name = e.file_name();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name == "dev" {
            special.push((path, Grant::ReadOnly));
            continue;
        }
        match fs_type(&path) {
            Some(PROC_SUPER_MAGIC) | Some(SYSFS_MAGIC) if is_dir => {
                special.push((path, Grant::ReadOnly))
            }
            _ => normal.push((path, Grant::Full)),
        }
    }
    if special.is_empty() {
        return Ok(vec![(root.to_path_buf(), Grant::Full)]);
    }
    // The root itself: read its listing; its other entries one by one.
    let mut rules = vec![(root.to_path_buf(), Grant::ReadOnly)];
    rules.extend(normal);
    for (path, grant) in special {
        if path.file_name().is_some_and(|n| n == "dev") {
            for d in DEVICES {
                let p = path.join(d);
                if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.file_type().is_block_device()) {
                    let g = if *d == "shm" {
                        Grant::Full
                    } else {
                        Grant::Device
                    };
                    rules.push((p, g));
                }
            }
            rules.push((path, Grant::ReadOnly));
        } else {
            rules.push((path, grant));
        }
    }
    Ok(rules)
}

fn fs_type(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain data; statfs writes one into `st`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` is writable.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type)
}

fn access(grant: Grant, is_dir: bool) -> BitFlags<AccessFs> {
    let all = AccessFs::from_all(TARGET_ABI);
    let a = match grant {
        Grant::Full => all,
        Grant::ReadOnly => AccessFs::ReadFile | AccessFs::ReadDir,
        Grant::Device => {
            AccessFs::ReadFile
                | AccessFs::WriteFile
                | AccessFs::Truncate
                | AccessFs::IoctlDev
                | AccessFs::ReadDir
        }
    };
    if is_dir {
        a
    } else {
        a & AccessFs::from_file(TARGET_ABI)
    }
}

/// How much of the Landlock restriction the kernel enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    Fully,
    Partially,
    Not,
}

/// Landlock's part of the jail report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    pub enforced: Enforcement,
    /// The kernel's Landlock ABI (0: none).
    pub abi: i32,
    /// Paths with rules (for the stats).
    pub rules: usize,
}

impl std::fmt::Display for LandlockReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = match self.enforced {
            Enforcement::Fully => "fully enforced",
            Enforcement::Partially => "partially enforced",
            Enforcement::Not => "not enforced",
        };
        write!(f, "landlock: {e}, ABI {}", self.abi)
    }
}

/// The kernel's Landlock ABI version (0 when Landlock is absent or disabled).
pub fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    v.max(0) as i32
}

/// A rule set ready to enforce (its paths opened while privileged).
pub struct Prepared {
    ruleset: RulesetCreated,
    rules: usize,
}

/// The host's harmless devices ([`DEVICES`] below /dev), granted whatever the guest root is.
pub fn host_devices() -> Vec<PathBuf> {
    DEVICES.iter().map(|d| Path::new("/dev").join(d)).collect()
}

/// Open the rule set's paths: the guest root's plan plus `extra_read` (paths the VMM itself
/// keeps reading after set-up) and `devices` (device nodes, or `shm`, it may open).
/// Paths that do not exist are skipped.
pub fn prepare(
    root: &Path,
    extra_read: &[PathBuf],
    devices: &[PathBuf],
) -> Result<Prepared, LandlockError> {
    let mut plan = plan(root)?;
    plan.extend(extra_read.iter().map(|p| (p.clone(), Grant::ReadOnly)));
    for d in devices {
        let is_block = std::fs::metadata(d).is_ok_and(|m| m.file_type().is_block_device());
        if !is_block {
            let g = if d.ends_with("shm") {
                Grant::Full
            } else {
                Grant::Device
            };
            plan.push((d.clone(), g));
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(LandlockError::Ruleset)?
        .scope(Scope::Signal)
        .map_err(LandlockError::Ruleset)?
        .create()
        .map_err(LandlockError::Ruleset)?;
    let mut rules = 0;
    for (path, grant) in plan {
        let Ok(fd) = PathFd::new(&path) else { continue };
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access(grant, is_dir)))
            .map_err(LandlockError::Ruleset)?;
        rules += 1;
    }
    Ok(Prepared { ruleset, rules })
}

impl Prepared {
    /// Restrict this thread (and every thread it creates later) to the rules.
    pub fn enforce(self) -> Result<LandlockReport, LandlockError> {
        let status = self
            .ruleset
            .restrict_self()
            .map_err(LandlockError::Ruleset)?;
        let enforced = match status.ruleset {
            RulesetStatus::FullyEnforced => Enforcement::Fully,
            RulesetStatus::PartiallyEnforced => Enforcement::Partially,
            RulesetStatus::NotEnforced => Enforcement::Not,
        };
        Ok(LandlockReport {
            enforced,
            abi: kernel_abi(),
            rules: self.rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_one_full_rule() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        assert_eq!(
            plan(d.path()).unwrap(),
            vec![(d.path().to_path_buf(), Grant::Full)]
        );
    }

    #[test]
    fn the_host_root_keeps_proc_sys_and_dev_narrow() {
        let rules = plan(Path::new("/")).unwrap();
        let grant = |p: &str| {
            rules
                .iter()
                .find(|(q, _)| q == Path::new(p))
                .map(|(_, g)| *g)
        };
        assert_eq!(grant("/"), Some(Grant::ReadOnly));
        assert_eq!(grant("/proc"), Some(Grant::ReadOnly));
        assert_eq!(grant("/sys"), Some(Grant::ReadOnly));
        assert_eq!(grant("/dev"), Some(Grant::ReadOnly));
        assert_eq!(grant("/dev/null"), Some(Grant::Device));
        assert_eq!(grant("/dev/shm"), Some(Grant::Full));
        assert_eq!(grant("/tmp"), Some(Grant::Full));
        assert_eq!(grant("/etc"), Some(Grant::Full));
        assert_eq!(grant("/dev/kvm"), None);
        assert!(rules.iter().all(|(p, _)| !p.starts_with("/dev/mem")));
    }

    #[test]
    fn a_dev_directory_in_a_private_root_is_narrowed_too() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/null"), "").unwrap();
        std::fs::write(d.path().join("dev/kvm"), "").unwrap();
        let rules = plan(d.path()).unwrap();
        assert!(rules.contains(&(d.path().join("dev/null"), Grant::Device)));
        assert!(!rules.iter().any(|(p, _)| p.ends_with("kvm")));
    }

    #[test]
    fn report_reads_like_the_stats_line() {
        let r = LandlockReport {
            enforced: Enforcement::Partially,
            abi: 3,
            rules: 4,
        };
        assert_eq!(r.to_string(), "landlock: partially enforced, ABI 3");
    }
}
