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
/// after. When the kernel gives fewer than asked, what it gave is given back and the error says so.
pub fn reserve(
    lock_path: &Path,
    path: &Path,
    numa: u32,
    page_kib: u64,
    count: u64,
) -> Result<(u64, u64), HugePageError> {
    reserve_with(lock_path, path, numa, page_kib, count, |p, n| {
        cgroup::write(p, &n.to_string())?;
        read_count(p)
    })
}

/// [`reserve`] with the kernel's side (`write` sets the pool size and returns what the kernel
/// then reports) as a parameter, so the short-allocation path is testable.
pub(crate) fn reserve_with(
    lock_path: &Path,
    path: &Path,
    numa: u32,
    page_kib: u64,
    count: u64,
    mut write: impl FnMut(&Path, u64) -> Result<u64, HugePageError>,
) -> Result<(u64, u64), HugePageError> {
    let _lock = FileLock::acquire(lock_path)?;
    let before = check_pool(path, numa, page_kib)?;
    let want = before + count;
    let got = write(path, want)?;
    if got < want {
        // Give back exactly what we got (still under the lock: nobody else changed it).
        write(path, got - (got.saturating_sub(before)))?;
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

/// Add up to `count` pages to the pool at `path`, keeping what the kernel gives (maybe none).
/// Returns (before, after).
pub fn reserve_up_to(
    lock_path: &Path,
    path: &Path,
    numa: u32,
    page_kib: u64,
    count: u64,
) -> Result<(u64, u64), HugePageError> {
    let _lock = FileLock::acquire(lock_path)?;
    let before = check_pool(path, numa, page_kib)?;
    if count == 0 {
        return Ok((before, before));
    }
    // A refused write (EINVAL/ENOMEM for gigantic pages) means none were given.
    let _ = cgroup::write(path, &(before + count).to_string());
    let got = read_count(path)?;
    if got < before {
        return Ok((before, before));
    }
    Ok((before, got.min(before + count)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_allocation_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("nr_hugepages");
        let lock = dir.path().join("lock");
        std::fs::write(&pool, "10\n").unwrap();
        // A fragmented "kernel": never more than 50 pages in this pool.
        let kernel = |p: &Path, n: u64| {
            let n = n.min(50);
            cgroup::write(p, &n.to_string())?;
            read_count(p)
        };
        let err = reserve_with(&lock, &pool, 0, 2048, 128, kernel).unwrap_err();
        match err {
            HugePageError::Short {
                before, want, got, ..
            } => {
                assert_eq!((before, want, got), (10, 138, 50))
            }
            other => panic!("{other:?}"),
        }
        assert!(err_text_mentions_fragmentation());
        assert_eq!(read_count(&pool).unwrap(), 10);
        // And a kernel that gives everything: delta in, delta out.
        assert_eq!(reserve(&lock, &pool, 0, 2048, 5).unwrap(), (10, 15));
        std::fs::write(&pool, "20\n").unwrap(); // someone else added 5 meanwhile
        give_back(&lock, &pool, 5).unwrap();
        assert_eq!(read_count(&pool).unwrap(), 15);
    }

    fn err_text_mentions_fragmentation() -> bool {
        HugePageError::Short {
            numa: 0,
            page_kib: 2048,
            asked: 1,
            before: 0,
            want: 1,
            got: 0,
        }
        .to_string()
        .contains("fragmented")
    }

    #[test]
    fn unknown_outcome_is_decided_from_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("nr_hugepages");
        let lock = dir.path().join("lock");
        std::fs::write(&pool, "4").unwrap();
        assert_eq!(undo_unknown(&lock, &pool, 4, 8).unwrap(), None);
        assert_eq!(read_count(&pool).unwrap(), 4);
        std::fs::write(&pool, "7").unwrap();
        assert_eq!(undo_unknown(&lock, &pool, 4, 8).unwrap(), None);
        assert_eq!(read_count(&pool).unwrap(), 4);
        std::fs::write(&pool, "30").unwrap();
        assert!(undo_unknown(&lock, &pool, 4, 8).unwrap().is_some());
        assert_eq!(read_count(&pool).unwrap(), 30);
        let missing = dir.path().join("nope");
        assert!(matches!(
            check_pool(&missing, 3, 2048),
            Err(HugePageError::NoPool { numa: 3, .. })
        ));
    }
}
