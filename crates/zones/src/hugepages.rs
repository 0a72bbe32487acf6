//! Per-NUMA-node huge page reservations, always by delta under the host-wide huge page lock
//! (`/run/lock/dualstack-hugepages.lock`), because the pools are shared with every other user.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupError};
use crate::state::{FileLock, StateError};

/// Errors reserving or returning huge pages.
#[derive(Debug, thiserror::Error)]
pub enum HugePageError {
    #[error(transparent)]
    Lock(#[from] StateError),
    #[error(transparent)]
    File(#[from] CgroupError),
    #[error("{path} does not exist: NUMA node {numa} has no {page_kib} KiB huge page pool")]
    NoPool {
        path: PathBuf,
        numa: u32,
        page_kib: u64,
    },
    #[error("{path} holds {value:?}, not a page count")]
    Parse { path: PathBuf, value: String },
    #[error("asked the kernel for {asked} more {page_kib} KiB huge pages on NUMA node {numa} ({before} -> {want}), it gave only {got} (memory too fragmented or too little free); gave them back. Free memory on that node (e.g. drop caches, compact with /proc/sys/vm/compact_memory) or ask for less")]
    Short {
        numa: u32,
        page_kib: u64,
        asked: u64,
        before: u64,
        want: u64,
        got: u64,
    },
}

fn read_count(path: &Path) -> Result<u64, HugePageError> {
    let value = cgroup::read(path)?;
    value.parse().map_err(|_| HugePageError::Parse {
        path: path.to_path_buf(),
        value,
    })
}

/// The pool count file must exist (its absence means no such node or page size).
pub fn check_pool(path: &Path, numa: u32, page_kib: u64) -> Result<u64, HugePageError> {
    if !path.exists() {
        return Err(HugePageError::NoPool {
            path: path.to_path_buf(),
            numa,
            page_kib,
        });
    }
    read_count(path)
}

/// Add `count` pages to the pool at `path`. Returns (before, got): the pool size before and
/// after. When the kernel gives fewer than asked, what it gave is returned and the error says so.
pub fn reserve(
    lock_path: &Path,
    path: &Path,
    numa: u32,
    page_kib: u64,
    count: u64,
) -> Result<(u64, u64), HugePageError> {
    let _lock = FileLock::acquire(lock_path)?;
    let before = check_pool(path, numa, page_kib)?;
    let want = before + count;
    cgroup::write(path, &want.to_string())?;
    let got = read_count(path)?;
    if got < want {
        // Give back exactly what we got (still under the lock: nobody else changed it).
        let now = read_count(path)?;
        cgroup::write(path, &now.saturating_sub(got - before).to_string())?;
        return Err(HugePageError::Short {
            numa,
            page_kib,
            asked: count,
            before,
            want,
            got,
        });
    }
    Ok((before, got))
}

/// Give back `count` pages to the pool at `path` (subtract from its current size).
pub fn give_back(lock_path: &Path, path: &Path, count: u64) -> Result<(), HugePageError> {
    if count == 0 || !path.exists() {
        return Ok(());
    }
    let _lock = FileLock::acquire(lock_path)?;
    let now = read_count(path)?;
    cgroup::write(path, &now.saturating_sub(count).to_string())?;
    Ok(())
}

/// Undo a reservation whose outcome was not recorded (crash between the write and the journal):
/// if the pool is still at `before` nothing happened; if it lies in (before, want] the pages are
/// ours. Anything else means another user changed the pool too: leave it and say so.
pub fn undo_unknown(
    lock_path: &Path,
    path: &Path,
    before: u64,
    want: u64,
) -> Result<Option<String>, HugePageError> {
    if !path.exists() {
        return Ok(None);
    }
    let _lock = FileLock::acquire(lock_path)?;
    let now = read_count(path)?;
    if now == before {
        return Ok(None);
    }
    if now > before && now <= want {
        cgroup::write(path, &before.to_string())?;
        return Ok(None);
    }
    Ok(Some(format!(
        "{}: pool is {now}, expected {before}..={want}; another user changed it, left as is",
        path.display()
    )))
}
