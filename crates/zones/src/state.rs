//! The state database (one SQLite file in the state directory, shared with the commodity VM
//! driver, which keeps its own tables there) and the locks: an exclusive `flock` on
//! `<state dir>/lock` so two dualstack commands never race, and the host-wide huge page lock.
//!
//! This crate's tables are `zones` (one row per zone: its life-cycle state and its JSON record)
//! and `zone_journal` (every step of a create, each recorded with its old and new value before it
//! is applied, then marked applied / undone), and `zone_infra` (what the shared cgroup layout
//! changed outside any one zone, e.g. enabling the v2 cpuset controller at the root),
//! `zone_extents` (which parts of a zone's warm memory jobs hold or are being zeroed, see
//! [`crate::memory`]) and `zone_zeroing` (a log of zeroing passes and their throughput).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// File name of the state database inside the state directory.
pub const DB_FILE: &str = "dualstack.db";
/// File name of the command lock inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Errors opening the state or taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {source} (pass --state-dir or DUALSTACK_STATE_DIR to use another)")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}")]
    LockOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is locked by another dualstack command; wait for it to finish")]
    Busy { path: PathBuf },
    #[error("state database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// An exclusive `flock` held until dropped (the kernel drops it if the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Block until the lock on `path` (created if needed) is ours.
    pub fn acquire(path: &Path) -> Result<Self, StateError> {
        Self::lock(path, true)
    }

    /// Take the lock if it is free, or fail with [`StateError::Busy`].
    pub fn try_acquire(path: &Path) -> Result<Self, StateError> {
        Self::lock(path, false)
    }

    fn lock(path: &Path, block: bool) -> Result<Self, StateError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Dir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| StateError::LockOpen {
                path: path.to_path_buf(),
                source,
            })?;
        let op = if block {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => {
                    return Err(StateError::Busy {
                        path: path.to_path_buf(),
                    })
                }
                _ => {
                    return Err(StateError::Lock {
                        path: path.to_path_buf(),
                        source: err,
                    })
                }
            }
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing it would unlock too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The command lock of a state directory: hold it for the whole of any command that changes
/// zones, the commodity cpuset or VM records. `flock` locks belong to the open file, so taking
/// it twice in one process blocks: pass the guard around instead.
#[derive(Debug)]
pub struct StateLock(FileLock);

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<Self, StateError> {
        FileLock::acquire(&state_dir.join(LOCK_FILE)).map(Self)
    }
    pub fn try_acquire(state_dir: &Path) -> Result<Self, StateError> {
        FileLock::try_acquire(&state_dir.join(LOCK_FILE)).map(Self)
    }
    /// The lock file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Open (creating if needed) the state database of `state_dir`, with this crate's tables.
/// Other crates open the same file with this function and create their own tables.
pub fn open_db(state_dir: &Path) -> Result<Connection, StateError> {
    std::fs::create_dir_all(state_dir).map_err(|source| StateError::Dir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(DB_FILE);
    let db_err = |source| StateError::Db {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(db_err)?;
    // WAL + NORMAL: a committed row survives the process being killed at any point (what the
    // journal needs: partition state itself does not survive a reboot, see `boot_id`).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA busy_timeout=10000;
         CREATE TABLE IF NOT EXISTS zones (
             name TEXT PRIMARY KEY,
             state TEXT NOT NULL,
             boot_id TEXT NOT NULL,
             record TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS zone_journal (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             zone TEXT NOT NULL,
             seq INTEGER NOT NULL,
             step TEXT NOT NULL,
             status TEXT NOT NULL,
             detail TEXT
         );
         CREATE TABLE IF NOT EXISTS zone_infra (
             key TEXT PRIMARY KEY,
             value TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS zone_extents (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             zone TEXT NOT NULL,
             start INTEGER NOT NULL,
             len INTEGER NOT NULL,
             state TEXT NOT NULL,
             owner TEXT,
             clean_to INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS zone_zeroing (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             zone TEXT NOT NULL,
             bytes INTEGER NOT NULL,
             seconds REAL NOT NULL,
             pid INTEGER NOT NULL
         );",
    )
    .map_err(db_err)?;
    Ok(conn)
}

/// This boot's id (`<procfs>/sys/kernel/random/boot_id`); zones recorded under another boot id
/// are gone with the reboot that reset cgroups and huge pages.
pub fn boot_id(procfs: &Path) -> String {
    std::fs::read_to_string(procfs.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            StateLock::try_acquire(dir.path()),
            Err(StateError::Busy { .. })
        ));
        drop(first);
        StateLock::try_acquire(dir.path()).unwrap();
    }

    #[test]
    fn db_opens_twice_with_tables() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_db(dir.path()).unwrap();
        let b = open_db(dir.path()).unwrap();
        a.execute("INSERT INTO zones VALUES ('x','active','b','{}',0)", [])
            .unwrap();
        let n: i64 = b
            .query_row("SELECT count(*) FROM zones", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
