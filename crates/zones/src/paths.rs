//! Where everything lives: sysfs, procfs, the cpuset cgroup mount, the state directory and the
//! instance name. Every function of this crate takes a [`HostPaths`], so the same logic runs on
//! the real host and on temporary fake trees in tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors finding the host's paths.
#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cpuset controller found in {mountinfo}: neither a cgroup v1 hierarchy with cpuset nor a cgroup2 mount whose cgroup.controllers lists cpuset; mount one (e.g. `mount -t cgroup -o cpuset none /sys/fs/cgroup/cpuset`)")]
    NoCpuset { mountinfo: PathBuf },
    #[error(
        "bad instance name {0:?}: use letters, digits, '-' and '_' (it names a cgroup directory)"
    )]
    BadInstance(String),
}

/// Which cgroup version holds the cpuset controller, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "version", deny_unknown_fields)]
pub enum CgroupMount {
    /// cgroup v1: the cpuset hierarchy's mount point (e.g. `/sys/fs/cgroup/cpuset`).
    V1 { root: PathBuf },
    /// cgroup v2: the unified mount point (e.g. `/sys/fs/cgroup`).
    V2 { root: PathBuf },
}

impl CgroupMount {
    pub fn root(&self) -> &Path {
        match self {
            CgroupMount::V1 { root } | CgroupMount::V2 { root } => root,
        }
    }
    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupMount::V2 { .. })
    }
}

/// The default instance name: the parent cgroup directory of the commodity and zone cpusets.
pub const DEFAULT_INSTANCE: &str = "dualstack";
/// The host-wide huge page lock every dualstack user shares (see the helper rules).
pub const HUGEPAGE_LOCK: &str = "/run/lock/dualstack-hugepages.lock";

/// All host locations this crate touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPaths {
    pub procfs: PathBuf,
    pub cgroup: CgroupMount,
    /// `/sys/devices/system/node` (per-node huge pages, meminfo, memory block links).
    pub node_dir: PathBuf,
    /// `/sys/devices/system/memory` (memory blocks for offlining).
    pub memory_dir: PathBuf,
    /// `/proc/irq` (IRQ affinities).
    pub irq_dir: PathBuf,
    /// `/sys/devices/virtual/workqueue/cpumask` (unbound workqueue CPUs).
    pub workqueue_cpumask: PathBuf,
    /// Directory of the state database and its lock.
    pub state_dir: PathBuf,
    /// Parent cgroup directory name (default `dualstack`); tests use a unique one.
    pub instance: String,
    /// Huge page pool lock file, shared host-wide.
    pub hugepage_lock: PathBuf,
    /// Where zones mount the hugetlbfs that holds their warm memory (`<state dir>/memory` on a
    /// real host); `None` (fake trees, `DUALSTACK_WARM_MEMORY=0`): zones only reserve huge
    /// pages and each job populates its own.
    #[serde(default)]
    pub zone_memory_dir: Option<PathBuf>,
    /// Use 1 GiB pages for the bulk of a zone's memory when the kernel gives them
    /// (`DUALSTACK_ZONE_1G=0` turns it off).
    #[serde(default = "yes")]
    pub zone_1g_pages: bool,
}

fn yes() -> bool {
    true
}

fn check_instance(name: &str) -> Result<(), PathsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PathsError::BadInstance(name.to_string()));
    }
    Ok(())
}

impl HostPaths {
    /// The real host: `/sys`, `/proc`, the cpuset mount found in `/proc/self/mountinfo`.
    pub fn host(state_dir: &Path) -> Result<Self, PathsError> {
        let procfs = PathBuf::from("/proc");
        let cgroup = detect_cgroup(&procfs.join("self/mountinfo"))?;
        Ok(Self {
            cgroup,
            node_dir: "/sys/devices/system/node".into(),
            memory_dir: "/sys/devices/system/memory".into(),
            irq_dir: procfs.join("irq"),
            workqueue_cpumask: "/sys/devices/virtual/workqueue/cpumask".into(),
            procfs,
            state_dir: state_dir.to_path_buf(),
            instance: DEFAULT_INSTANCE.into(),
            hugepage_lock: HUGEPAGE_LOCK.into(),
            zone_memory_dir: Some(state_dir.join("memory")),
            zone_1g_pages: true,
        })
    }

    /// [`HostPaths::host`] with overrides from the environment, so tests and the CLI can point
    /// single knobs elsewhere: `DUALSTACK_INSTANCE`, `DUALSTACK_IRQ_DIR`,
    /// `DUALSTACK_WORKQUEUE_CPUMASK`, `DUALSTACK_MEMORY_DIR`, `DUALSTACK_HUGEPAGE_LOCK`,
    /// `DUALSTACK_WARM_MEMORY=0` (zones without warm memory), `DUALSTACK_ZONE_1G=0` (2 MiB
    /// pages only).
    ///
    /// `DUALSTACK_FAKE_ROOT=<dir>` (with `DUALSTACK_FAKE_CGROUP=v1|v2`) uses a fake tree laid out
    /// as [`HostPaths::fake`] instead of the host, for tests of the binary.
    pub fn from_env(state_dir: &Path) -> Result<Self, PathsError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut paths = match var("DUALSTACK_FAKE_ROOT") {
            Some(root) => {
                let v2 = var("DUALSTACK_FAKE_CGROUP").is_some_and(|v| v == "v2");
                let mut p = Self::fake(Path::new(&root), v2);
                p.state_dir = state_dir.to_path_buf();
                p
            }
            None => Self::host(state_dir)?,
        };
        if let Some(v) = var("DUALSTACK_INSTANCE") {
            let v = v.to_string_lossy().into_owned();
            check_instance(&v)?;
            paths.instance = v;
        }
        if let Some(v) = var("DUALSTACK_IRQ_DIR") {
            paths.irq_dir = v.into();
        }
        if let Some(v) = var("DUALSTACK_WORKQUEUE_CPUMASK") {
            paths.workqueue_cpumask = v.into();
        }
        if let Some(v) = var("DUALSTACK_MEMORY_DIR") {
            paths.memory_dir = v.into();
        }
        if let Some(v) = var("DUALSTACK_HUGEPAGE_LOCK") {
            paths.hugepage_lock = v.into();
        }
        if var("DUALSTACK_WARM_MEMORY").is_some_and(|v| v == "0") {
            paths.zone_memory_dir = None;
        }
        if var("DUALSTACK_ZONE_1G").is_some_and(|v| v == "0") {
            paths.zone_1g_pages = false;
        }
        Ok(paths)
    }

    /// Everything under one fake root (tests): `root/proc`, `root/cgroup`, `root/sys/...`,
    /// `root/state`, `root/hugepages.lock`. The caller fills the trees.
    pub fn fake(root: &Path, v2: bool) -> Self {
        let cg = root.join("cgroup");
        Self {
            procfs: root.join("proc"),
            cgroup: if v2 {
                CgroupMount::V2 { root: cg }
            } else {
                CgroupMount::V1 { root: cg }
            },
            node_dir: root.join("sys/devices/system/node"),
            memory_dir: root.join("sys/devices/system/memory"),
            irq_dir: root.join("proc/irq"),
            workqueue_cpumask: root.join("sys/devices/virtual/workqueue/cpumask"),
            state_dir: root.join("state"),
            instance: DEFAULT_INSTANCE.into(),
            hugepage_lock: root.join("hugepages.lock"),
            zone_memory_dir: None,
            zone_1g_pages: false,
        }
    }

    pub fn with_instance(mut self, instance: &str) -> Result<Self, PathsError> {
        check_instance(instance)?;
        self.instance = instance.to_string();
        Ok(self)
    }

    /// `<cpuset root>/<instance>`.
    pub fn instance_dir(&self) -> PathBuf {
        self.cgroup.root().join(&self.instance)
    }
    /// `<cpuset root>/<instance>/commodity`.
    pub fn commodity_dir(&self) -> PathBuf {
        self.instance_dir().join("commodity")
    }
    /// `<cpuset root>/<instance>/zone-<name>`.
    pub fn zone_dir(&self, zone: &str) -> PathBuf {
        self.instance_dir().join(format!("zone-{zone}"))
    }
    /// `<node_dir>/node<N>/hugepages/hugepages-<K>kB/nr_hugepages`.
    pub fn nr_hugepages(&self, numa: u32, page_kib: u64) -> PathBuf {
        self.node_dir.join(format!(
            "node{numa}/hugepages/hugepages-{page_kib}kB/nr_hugepages"
        ))
    }
}

/// Find the cpuset controller in a mountinfo file: cgroup v2 when its cgroup.controllers lists
/// cpuset, otherwise the cgroup v1 cpuset hierarchy.
pub fn detect_cgroup(mountinfo: &Path) -> Result<CgroupMount, PathsError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| PathsError::Read {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut right = right.split_whitespace();
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        if fstype == "cgroup" && options.split(',').any(|o| o == "cpuset") && v1.is_none() {
            v1 = Some(mount_point);
        } else if fstype == "cgroup2" && v2.is_none() {
            let controllers =
                std::fs::read_to_string(mount_point.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpuset") {
                v2 = Some(mount_point);
            }
        }
    }
    match (v2, v1) {
        (Some(root), _) => Ok(CgroupMount::V2 { root }),
        (None, Some(root)) => Ok(CgroupMount::V1 { root }),
        (None, None) => Err(PathsError::NoCpuset {
            mountinfo: mountinfo.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_hosts_cpuset() {
        let m = detect_cgroup(Path::new("/proc/self/mountinfo")).unwrap();
        assert!(
            m.root().join("cpuset.cpus").exists() || m.root().join("cgroup.controllers").exists()
        );
    }

    #[test]
    fn detects_v1_and_v2_from_fake_mountinfo() {
        let dir = tempfile::tempdir().unwrap();
        let v2root = dir.path().join("unified");
        std::fs::create_dir_all(&v2root).unwrap();
        std::fs::write(v2root.join("cgroup.controllers"), "").unwrap();
        let info = dir.path().join("mountinfo");
        let v1line = "35 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset\n";
        let v2line = format!(
            "30 25 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            v2root.display()
        );
        std::fs::write(&info, format!("{v2line}{v1line}")).unwrap();
        assert_eq!(
            detect_cgroup(&info).unwrap(),
            CgroupMount::V1 {
                root: "/sys/fs/cgroup/cpuset".into()
            }
        );
        std::fs::write(v2root.join("cgroup.controllers"), "cpuset cpu io memory").unwrap();
        assert_eq!(
            detect_cgroup(&info).unwrap(),
            CgroupMount::V2 { root: v2root }
        );
        std::fs::write(&info, "1 0 0:1 / / rw - ext4 /dev/vda rw\n").unwrap();
        assert!(matches!(
            detect_cgroup(&info),
            Err(PathsError::NoCpuset { .. })
        ));
    }

    #[test]
    fn instance_names_are_checked() {
        let p = HostPaths::fake(Path::new("/tmp/x"), false);
        assert!(p.clone().with_instance("dualstack-test-1").is_ok());
        assert!(p.clone().with_instance("../evil").is_err());
        assert!(p.with_instance("").is_err());
    }
}
