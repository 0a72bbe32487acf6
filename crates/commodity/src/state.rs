//! VM records in the shared dualstack state database (table `vms`), so VMs outlive the process
//! that created them: `vm list` and `vm delete` from a later process find and manage them.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::process::ProcessIdentity;
use crate::spec::{Accel, VmSpec, VmState};

/// Errors reading or writing VM records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state database: {what}")]
    Sql {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A VM with this name is already recorded.
    #[error(
        "a VM named {0:?} already exists; pick another name or `dualstack vm delete {0}` first"
    )]
    Exists(String),
    /// No VM with this name.
    #[error("no VM named {0:?}; `dualstack vm list` shows the VMs")]
    NotFound(String),
    /// A record that does not parse (written by an incompatible version or edited by hand).
    #[error("the state record of VM {name:?} is unreadable: {detail}")]
    Corrupt { name: String, detail: String },
}

fn sql(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StateError {
    let what = what.into();
    move |source| StateError::Sql { what, source }
}

/// Everything dualstack remembers about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    /// The configuration it was created with.
    pub spec: VmSpec,
    /// Last recorded life-cycle state.
    pub state: VmState,
    /// Accelerator in use.
    pub accel: Accel,
    /// Why that accelerator was chosen.
    pub accel_reason: String,
    /// The QEMU process, while one is expected to run.
    pub process: Option<ProcessIdentity>,
    /// Directory holding the VM's QMP socket, serial log and QEMU log.
    pub dir: PathBuf,
    /// The cpuset cgroup directory QEMU was placed in.
    pub cgroup: PathBuf,
    /// Kernel actually booted (direct kernel boot).
    pub kernel: Option<PathBuf>,
    /// Initramfs actually booted.
    pub initrd: Option<PathBuf>,
    /// Kernel command line given to QEMU.
    pub cmdline: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Why the VM exited, if it did on its own.
    pub note: Option<String>,
}

impl VmRecord {
    /// The QMP control socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The guest's serial console output.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// QEMU's own stdout/stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
}

/// The `vms` table of the state database.
pub struct VmStore<'c> {
    conn: &'c Connection,
}

impl<'c> VmStore<'c> {
    /// Uses `conn`, creating the table if needed.
    pub fn new(conn: &'c Connection) -> Result<Self, StateError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS vms (
                name   TEXT PRIMARY KEY,
                state  TEXT NOT NULL,
                record TEXT NOT NULL
            );",
        )
        .map_err(sql("creating table vms"))?;
        Ok(Self { conn })
    }

    /// Adds a new VM; fails if the name is taken.
    pub fn insert(&self, rec: &VmRecord) -> Result<(), StateError> {
        let json = serde_json::to_string(rec).unwrap_or_default();
        match self.conn.execute(
            "INSERT INTO vms (name, state, record) VALUES (?1, ?2, ?3)",
            params![rec.spec.name, rec.state.as_str(), json],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StateError::Exists(rec.spec.name.clone()))
            }
            Err(e) => Err(sql(format!("inserting VM {}", rec.spec.name))(e)),
        }
    }

    /// Replaces an existing VM's record.
    pub fn update(&self, rec: &VmRecord) -> Result<(), StateError> {
        let json = serde_json::to_string(rec).unwrap_or_default();
        let n = self
            .conn
            .execute(
                "UPDATE vms SET state = ?2, record = ?3 WHERE name = ?1",
                params![rec.spec.name, rec.state.as_str(), json],
            )
            .map_err(sql(format!("updating VM {}", rec.spec.name)))?;
        if n == 0 {
            return Err(StateError::NotFound(rec.spec.name.clone()));
        }
        Ok(())
    }

    /// One VM.
    pub fn get(&self, name: &str) -> Result<VmRecord, StateError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT record FROM vms WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(format!("reading VM {name}")))?;
        let json = json.ok_or_else(|| StateError::NotFound(name.to_string()))?;
        parse(name, &json)
    }

    /// Every VM, by name.
    pub fn list(&self) -> Result<Vec<VmRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, record FROM vms ORDER BY name")
            .map_err(sql("listing VMs"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("listing VMs"))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row.map_err(sql("listing VMs"))?;
            out.push(parse(&name, &json)?);
        }
        Ok(out)
    }

    /// Names of VMs whose recorded state expects a QEMU process (used to decide whether the
    /// commodity cpuset is still needed).
    pub fn names_with_process(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM vms WHERE state IN ('starting', 'running', 'stopping') ORDER BY name")
            .map_err(sql("listing VMs"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("listing VMs"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("listing VMs"))
    }

    /// Forgets a VM.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let n = self
            .conn
            .execute("DELETE FROM vms WHERE name = ?1", params![name])
            .map_err(sql(format!("deleting VM {name}")))?;
        if n == 0 {
            return Err(StateError::NotFound(name.to_string()));
        }
        Ok(())
    }
}

fn parse(name: &str, json: &str) -> Result<VmRecord, StateError> {
    serde_json::from_str(json).map_err(|e| StateError::Corrupt {
        name: name.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Workload;

    fn record(name: &str) -> VmRecord {
        VmRecord {
            spec: VmSpec::builtin(name, 1, 256, Workload::Idle),
            state: VmState::Starting,
            accel: Accel::Tcg,
            accel_reason: "test".into(),
            process: None,
            dir: PathBuf::from("/tmp/x"),
            cgroup: PathBuf::from("/sys/fs/cgroup/cpuset/t/commodity"),
            kernel: None,
            initrd: None,
            cmdline: None,
            created_unix: 1,
            note: None,
        }
    }

    #[test]
    fn crud_and_restart_survival() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("state.db");
        {
            let conn = Connection::open(&db).unwrap();
            let store = VmStore::new(&conn).unwrap();
            store.insert(&record("b")).unwrap();
            store.insert(&record("a")).unwrap();
            assert!(matches!(
                store.insert(&record("a")),
                Err(StateError::Exists(_))
            ));
            let mut a = store.get("a").unwrap();
            a.state = VmState::Running;
            store.update(&a).unwrap();
        }
        // A new process (connection) sees the same VMs.
        let conn = Connection::open(&db).unwrap();
        let store = VmStore::new(&conn).unwrap();
        let names: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.spec.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.get("a").unwrap().state, VmState::Running);
        assert_eq!(store.names_with_process().unwrap(), ["a", "b"]);
        store.remove("b").unwrap();
        assert!(matches!(store.get("b"), Err(StateError::NotFound(_))));
        assert!(matches!(store.remove("b"), Err(StateError::NotFound(_))));
        assert!(matches!(
            store.update(&record("zz")),
            Err(StateError::NotFound(_))
        ));
    }

    #[test]
    fn corrupt_record_is_reported() {
        let conn = Connection::open_in_memory().unwrap();
        let store = VmStore::new(&conn).unwrap();
        conn.execute("INSERT INTO vms VALUES ('x', 'running', '{not json')", [])
            .unwrap();
        assert!(matches!(store.get("x"), Err(StateError::Corrupt { .. })));
    }
}
