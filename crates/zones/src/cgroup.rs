//! Small, checked file operations on cgroup (and sysfs/procfs) files, and the shared cgroup
//! layout: `<cpuset root>/<instance>/{commodity, zone-<name>}`.
//!
//! On a fake tree (a plain directory in tests), files that were never written read as empty and
//! directories holding written files are removed with their files; on a real cgroup filesystem
//! only `rmdir` is ever used.

use std::io::Write;
use std::path::{Path, PathBuf};

use dualstack_topology::CpuList;

use crate::paths::{CgroupMount, HostPaths};

/// Errors touching cgroup, sysfs or procfs files.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}")]
    Rmdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} still holds processes {pids:?}; stop them (or move them out) first")]
    Busy { path: PathBuf, pids: Vec<u32> },
    #[error("{path} holds {value:?}, not a CPU list: {source}")]
    Parse {
        path: PathBuf,
        value: String,
        #[source]
        source: dualstack_topology::CpuListError,
    },
}

/// Read a file, trimmed. A missing file reads as empty (fresh fake-tree directories).
pub fn read(path: &Path) -> Result<String, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write a value in one `write(2)`, as kernel files expect.
pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{value}\n").as_bytes()).map_err(err)
}

pub fn read_list(path: &Path) -> Result<CpuList, CgroupError> {
    let value = read(path)?;
    CpuList::parse_list(&value).map_err(|source| CgroupError::Parse {
        path: path.to_path_buf(),
        value,
        source,
    })
}

pub fn read_mask(path: &Path) -> Result<CpuList, CgroupError> {
    let value = read(path)?;
    CpuList::parse_mask(&value).map_err(|source| CgroupError::Parse {
        path: path.to_path_buf(),
        value,
        source,
    })
}

/// Create a directory (not its parents). Returns false when it already existed.
pub fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// True when `path` is on a cgroup (v1 or v2) filesystem.
pub fn is_cgroupfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a properly sized out-parameter.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs only writes into `buf`.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    rc == 0
        && (buf.f_type == libc::CGROUP_SUPER_MAGIC as libc::c_long
            || buf.f_type == libc::CGROUP2_SUPER_MAGIC as libc::c_long)
}

/// Remove a cgroup directory if it exists. Fails with [`CgroupError::Busy`] while it holds
/// processes. Returns false when it did not exist.
pub fn rmdir(path: &Path) -> Result<bool, CgroupError> {
    if !path.exists() {
        return Ok(false);
    }
    let pids = procs(path)?;
    if !pids.is_empty() {
        return Err(CgroupError::Busy {
            path: path.to_path_buf(),
            pids,
        });
    }
    let err = |source| CgroupError::Rmdir {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(path) => {
            // A fake tree: remove the plain files we wrote, never subdirectories.
            for entry in std::fs::read_dir(path).map_err(err)? {
                let entry = entry.map_err(err)?;
                if entry.file_type().map_err(err)?.is_file() {
                    std::fs::remove_file(entry.path()).map_err(err)?;
                }
            }
            std::fs::remove_dir(path).map_err(err)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(err(source)),
    }
}

/// Processes (thread group ids) in a cgroup; none when it does not exist.
pub fn procs(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    Ok(read(&dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Move a whole process (all its threads) into a cgroup.
pub fn attach(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// CPUs the cpuset root offers.
pub fn root_cpus(paths: &HostPaths) -> Result<CpuList, CgroupError> {
    match &paths.cgroup {
        CgroupMount::V1 { root } => read_list(&root.join("cpuset.cpus")),
        CgroupMount::V2 { root } => read_list(&root.join("cpuset.cpus.effective")),
    }
}

/// Memory nodes the cpuset root offers.
pub fn root_mems(paths: &HostPaths) -> Result<CpuList, CgroupError> {
    match &paths.cgroup {
        CgroupMount::V1 { root } => read_list(&root.join("cpuset.mems")),
        CgroupMount::V2 { root } => read_list(&root.join("cpuset.mems.effective")),
    }
}

/// The cpuset cgroup directory a process is in (from `/proc/<pid>/cgroup`), or the root.
pub fn cgroup_of(paths: &HostPaths, pid: u32) -> Result<PathBuf, CgroupError> {
    let file = paths.procfs.join(format!("{pid}/cgroup"));
    let text = read(&file)?;
    let v2 = paths.cgroup.is_v2();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let hit = if v2 {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == "cpuset")
        };
        if hit {
            return Ok(paths.cgroup.root().join(rel.trim_start_matches('/')));
        }
    }
    Ok(paths.cgroup.root().to_path_buf())
}
