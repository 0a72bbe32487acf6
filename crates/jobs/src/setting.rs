//! Host settings a run changes for its lifetime only, and puts back however it ends: e.g. the
//! transparent huge page mode `bench isolation`'s `native-thp` configuration sets to `always`.
//!
//! Like the [`crate::lease`] journal: the previous value is journaled in the state database
//! (table `run_settings`, with the holder's pid, start time and the boot id) under the state
//! lock *before* the file is written. The holder restores it when its run ends
//! ([`SettingLease::restore`], or on drop, which covers errors and a graceful Ctrl-C); when the
//! holder died first (SIGKILL), [`recover`] restores every setting whose holder is gone
//! (`dualstack recover` and every `dualstack` start call it through [`crate::lease::recover`]).
//!
//! Several live holders of one file (two experiments at once) share the oldest previous value:
//! a later holder journals what the first one found, and only the last holder to end writes it
//! back. Settings of an earlier boot are forgotten (the files meant here live in sysfs/procfs,
//! which a reboot resets).

use std::path::{Path, PathBuf};

use dualstack_zones::{HostPaths, StateLock};
use rusqlite::{params, Connection, OptionalExtension};

use crate::lease::{alive, me, LeaseError};

fn open(paths: &HostPaths) -> Result<Connection, LeaseError> {
    let conn = dualstack_zones::open_db(&paths.state_dir)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS run_settings (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             pid INTEGER NOT NULL,
             pid_start INTEGER NOT NULL,
             boot_id TEXT NOT NULL,
             file TEXT NOT NULL,
             previous TEXT NOT NULL,
             value TEXT NOT NULL
         );",
    )?;
    Ok(conn)
}

/// Errors of a setting itself (the file).
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error(transparent)]
    Journal(#[from] LeaseError),
    #[error("setting journal: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("writing {value:?} to {}", file.display())]
    Write {
        file: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// A setting this process changed: restored by [`SettingLease::restore`] or when dropped.
#[derive(Debug)]
pub struct SettingLease {
    id: i64,
    paths: HostPaths,
    file: PathBuf,
    previous: String,
    done: bool,
}

fn write(file: &Path, value: &str) -> Result<(), SettingError> {
    std::fs::write(file, value).map_err(|source| SettingError::Write {
        file: file.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Writes `value` to `file` for this process's lifetime; `previous` is what to write back (the
/// caller reads it: a mode file such as THP's shows more than the value it accepts).
pub fn set(
    paths: &HostPaths,
    file: &Path,
    previous: &str,
    value: &str,
) -> Result<SettingLease, SettingError> {
    let _lock = StateLock::acquire(&paths.state_dir).map_err(LeaseError::from)?;
    let conn = open(paths)?;
    let boot = dualstack_zones::state::boot_id(&paths.procfs);
    let name = file.display().to_string();
    // Another live holder of the same file already journaled the host's own value.
    let rows: Vec<(u32, i64, String)> = {
        let mut stmt = conn.prepare(
            "SELECT pid, pid_start, previous FROM run_settings WHERE file = ?1 AND boot_id = ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![name, boot], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let previous = rows
        .iter()
        .find(|(pid, start, _)| alive(&paths.procfs, *pid, *start as u64))
        .map_or(previous.to_string(), |r| r.2.clone());
    let (pid, start) = me(&paths.procfs);
    conn.execute(
        "INSERT INTO run_settings (pid, pid_start, boot_id, file, previous, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![pid, start as i64, boot, name, previous, value],
    )?;
    let id = conn.last_insert_rowid();
    if let Err(e) = write(file, value) {
        conn.execute("DELETE FROM run_settings WHERE id = ?1", [id])?;
        return Err(e);
    }
    tracing::info!("set {name} to {value} for the run (was {previous})");
    Ok(SettingLease {
        id,
        paths: paths.clone(),
        file: file.to_path_buf(),
        previous,
        done: false,
    })
}

/// Whether another live holder (not row `id`) still holds `file`.
fn others(conn: &Connection, paths: &HostPaths, file: &str, id: i64) -> Result<bool, LeaseError> {
    let mut stmt =
        conn.prepare("SELECT pid, pid_start FROM run_settings WHERE file = ?1 AND id != ?2")?;
    let rows: Vec<(u32, i64)> = stmt
        .query_map(params![file, id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .iter()
        .any(|(pid, start)| alive(&paths.procfs, *pid, *start as u64)))
}

fn restore(paths: &HostPaths, id: i64, file: &Path, previous: &str) -> Result<(), SettingError> {
    let _lock = StateLock::acquire(&paths.state_dir).map_err(LeaseError::from)?;
    let conn = open(paths)?;
    if !others(&conn, paths, &file.display().to_string(), id)? {
        write(file, previous)?;
    }
    conn.execute("DELETE FROM run_settings WHERE id = ?1", [id])?;
    Ok(())
}

impl SettingLease {
    /// The value that will be written back.
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// Puts the previous value back now.
    pub fn restore(mut self) -> Result<(), SettingError> {
        self.done = true;
        restore(&self.paths, self.id, &self.file, &self.previous)
    }
}

impl Drop for SettingLease {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = restore(&self.paths, self.id, &self.file, &self.previous) {
                tracing::error!(
                    "could not restore {} to {}: {e}",
                    self.file.display(),
                    self.previous
                );
                eprintln!(
                    "dualstack: warning: could not restore {} to {} ({e}); `dualstack recover` retries",
                    self.file.display(),
                    self.previous
                );
            }
        }
    }
}

/// What [`recover`] did: one line per setting restored, and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettingReport {
    pub restored: Vec<String>,
    pub warnings: Vec<String>,
}

/// Restores every setting whose holder is gone (see the module docs). Call under no state lock.
pub fn recover(paths: &HostPaths) -> Result<SettingReport, LeaseError> {
    let mut report = SettingReport::default();
    if !paths
        .state_dir
        .join(dualstack_zones::state::DB_FILE)
        .exists()
    {
        return Ok(report);
    }
    let boot = dualstack_zones::state::boot_id(&paths.procfs);
    let _lock = StateLock::acquire(&paths.state_dir)?;
    let conn = open(paths)?;
    type Row = (i64, u32, i64, String, String, String);
    let rows: Vec<Row> = {
        let mut stmt = conn.prepare(
            "SELECT id, pid, pid_start, boot_id, file, previous FROM run_settings ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, pid, start, row_boot, file, previous) in rows {
        if row_boot != boot {
            conn.execute("DELETE FROM run_settings WHERE id = ?1", [id])?;
            continue;
        }
        if alive(&paths.procfs, pid, start as u64) {
            continue;
        }
        if others(&conn, paths, &file, id)? {
            // A live holder restores it when it ends.
            conn.execute("DELETE FROM run_settings WHERE id = ?1", [id])?;
            continue;
        }
        match write(Path::new(&file), &previous) {
            Ok(()) => {
                report
                    .restored
                    .push(format!("{file} to {previous} (run pid {pid} is gone)"));
                conn.execute("DELETE FROM run_settings WHERE id = ?1", [id])?;
            }
            Err(e) => report.warnings.push(match std::error::Error::source(&e) {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }),
        }
    }
    Ok(report)
}

/// Settings recorded now (any holder), for tests.
pub fn count(paths: &HostPaths) -> Result<usize, LeaseError> {
    let conn = open(paths)?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM run_settings", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_restore_share_and_recover_a_dead_holders_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = HostPaths::fake(dir.path(), false);
        // The real procfs: this process is alive, pid 1's start time is not 12345.
        paths.procfs = PathBuf::from("/proc");
        std::fs::create_dir_all(&paths.state_dir).unwrap();
        let f = dir.path().join("enabled");
        std::fs::write(&f, "madvise").unwrap();
        let a = set(&paths, &f, "madvise", "always").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "always");
        // A second holder inherits the host's own value and the first does not restore under it.
        let b = set(&paths, &f, "always", "always").unwrap();
        assert_eq!(b.previous(), "madvise");
        a.restore().unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "always");
        drop(b);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "madvise");
        assert_eq!(count(&paths).unwrap(), 0);

        // A holder that died (its pid is not alive with that start time): recover restores.
        let c = set(&paths, &f, "madvise", "always").unwrap();
        std::mem::forget(c);
        let conn = open(&paths).unwrap();
        conn.execute("UPDATE run_settings SET pid = 1, pid_start = 12345", [])
            .unwrap();
        let r = recover(&paths).unwrap();
        assert_eq!(r.restored.len(), 1, "{r:?}");
        assert!(r.restored[0].contains("to madvise"), "{r:?}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "madvise");
        assert_eq!(count(&paths).unwrap(), 0);
    }
}
