//! The daemon's tables in the shared state database (`dualstack_zones::open_db`): jobs, and a
//! schema version. The migration is idempotent: every start runs it.

use rusqlite::Connection;

/// Schema version of the daemon's tables.
pub const SCHEMA_VERSION: i64 = 1;

/// Create (or bring up to date) the daemon's tables.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS daemon_meta (
             key TEXT PRIMARY KEY,
             value TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS daemon_jobs (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             owner_uid INTEGER NOT NULL,
             owner TEXT NOT NULL,
             spec TEXT NOT NULL,
             state TEXT NOT NULL,
             submitted_unix REAL NOT NULL,
             started_unix REAL,
             ended_unix REAL,
             pid INTEGER,
             pid_start INTEGER,
             run_pid INTEGER,
             run_pid_start INTEGER,
             exit_status INTEGER,
             signal INTEGER,
             reason TEXT,
             cancel_unix REAL
         );
         CREATE INDEX IF NOT EXISTS daemon_jobs_state ON daemon_jobs(state);",
    )?;
    conn.execute(
        "INSERT INTO daemon_meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = ?1",
        [SCHEMA_VERSION.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_is_idempotent_and_shares_the_zones_db() {
        let dir = tempfile::tempdir().unwrap();
        let a = dualstack_zones::open_db(dir.path()).unwrap();
        super::migrate(&a).unwrap();
        a.execute(
            "INSERT INTO daemon_jobs (owner_uid, owner, spec, state, submitted_unix) VALUES (0,'root','{}','queued',0)",
            [],
        )
        .unwrap();
        let b = dualstack_zones::open_db(dir.path()).unwrap();
        super::migrate(&b).unwrap();
        let n: i64 = b
            .query_row("SELECT count(*) FROM daemon_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let zones: i64 = b
            .query_row("SELECT count(*) FROM zones", [], |r| r.get(0))
            .unwrap();
        assert_eq!(zones, 0);
    }
}
