//! One measured run as stored, and the raw store: `runs.jsonl` in the results folder, one JSON
//! object per line, appended and flushed after every run so an interrupted experiment loses at
//! most the run in flight. Resume reads it back and skips every run recorded as successful.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fwq::FwqNoise;
use super::plan::{Config, LoadKind, RunKey};

/// VMM and KVM figures of a run in the HPC VMM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFigures {
    /// Exits the VMM saw, by reason (syscall, launch, exception...).
    pub exits: BTreeMap<String, u64>,
    pub exits_total: u64,
    pub syscalls_total: u64,
    /// KVM's own vCPU statistics during the run (zeros left out): `exits` counts every exit
    /// KVM took, `pf_taken` the shadow/nested page faults.
    pub kvm: BTreeMap<String, u64>,
    pub guest_wall_s: f64,
    pub launch_s: f64,
    pub memory_setup_s: f64,
    /// How guest memory was obtained: `warm_zone` (dual stack: the zone's populated,
    /// pre-zeroed memory, only mapped), `cold_hugetlb` or `lazy` (single stack).
    #[serde(default)]
    pub memory_source: String,
    /// Time the run waited for zone pages still being zeroed after the previous run.
    #[serde(default)]
    pub memory_zero_wait_s: f64,
    /// Host CPUs each vCPU thread was allowed on.
    pub vcpu_cpus: Vec<Vec<usize>>,
}

impl VmFigures {
    pub fn kvm(&self, key: &str) -> u64 {
        self.kvm.get(key).copied().unwrap_or(0)
    }
}

/// One run of one app in one configuration at one load level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub app: String,
    pub config: Config,
    pub level: u32,
    pub rep: u32,
    pub load: LoadKind,
    /// The run finished, exited 0 and the app verified its answer.
    pub ok: bool,
    pub error: Option<String>,
    /// The app's measured phase (setup excluded), seconds: the runtime every table uses.
    pub time_s: Option<f64>,
    /// Spawn (or VM creation) to exit.
    pub wall_s: f64,
    pub verified: bool,
    /// Seconds since the epoch when the run started.
    pub started_unix: f64,
    /// Host CPUs the run was given.
    pub cpus: Vec<usize>,
    /// Commodity build jobs per second completed while the run ran (VM load only).
    pub load_jobs_per_s: Option<f64>,
    pub vm: Option<VmFigures>,
    pub fwq: Option<FwqNoise>,
    /// The app's RESULT object (every field).
    pub result: Option<serde_json::Value>,
    /// A user program's figure of merit as read (its regex's number, or the wall time);
    /// `time_s` holds it too, as its reciprocal when higher is better.
    #[serde(default)]
    pub figure: Option<f64>,
    /// The end of a failed run's stdout and stderr, kept for the report.
    #[serde(default)]
    pub output: Option<String>,
    /// How a `kvm` run's guest ran (accelerator, `correctness_only` under TCG, boot time,
    /// huge pages, vCPU pinning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<super::kvm::KvmFigures>,
}

impl RunRecord {
    /// The record of run `key` under `load` before it runs: not ok, nothing measured yet.
    pub fn unstarted(key: &RunKey, load: LoadKind, started_unix: f64) -> Self {
        Self {
            app: key.app.clone(),
            config: key.config,
            level: key.level,
            rep: key.rep,
            load,
            ok: false,
            error: None,
            time_s: None,
            wall_s: 0.0,
            verified: false,
            started_unix,
            cpus: vec![],
            load_jobs_per_s: None,
            vm: None,
            fwq: None,
            result: None,
            figure: None,
            output: None,
            kvm: None,
        }
    }

    pub fn key(&self) -> RunKey {
        RunKey {
            app: self.app.clone(),
            config: self.config,
            level: self.level,
            rep: self.rep,
        }
    }
}

/// Failure of the raw store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} line {line} is not a run record ({source}); fix or remove that line to resume"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// The append-only raw run log.
#[derive(Debug)]
pub struct RunStore {
    path: PathBuf,
    file: std::fs::File,
}

pub const RUNS_FILE: &str = "runs.jsonl";

impl RunStore {
    /// Opens (creating) `dir/runs.jsonl` for appending.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(RUNS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                what: "open",
                path: path.clone(),
                source,
            })?;
        Ok(Self { path, file })
    }

    /// Appends one record and flushes it to disk.
    pub fn append(&mut self, rec: &RunRecord) -> Result<(), StoreError> {
        let mut line = serde_json::to_string(rec).expect("run records serialize");
        line.push('\n');
        let io = |source| StoreError::Io {
            what: "append to",
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(|source| StoreError::Io {
            what: "flush",
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads every record of `dir/runs.jsonl` (none when the file does not exist). A later record
/// of the same run replaces an earlier one (a failed run that was retried). A final line cut
/// short by a crash is ignored; a damaged line elsewhere is an error.
pub fn load(dir: &Path) -> Result<Vec<RunRecord>, StoreError> {
    let path = dir.join(RUNS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(StoreError::Io {
                what: "read",
                path,
                source,
            })
        }
    };
    parse(&text, &path)
}

pub(crate) fn parse(text: &str, path: &Path) -> Result<Vec<RunRecord>, StoreError> {
    let lines: Vec<&str> = text.lines().collect();
    let complete = text.ends_with('\n');
    let mut out: Vec<RunRecord> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RunRecord>(line) {
            Ok(r) => {
                if let Some(old) = out.iter_mut().find(|o| o.key() == r.key()) {
                    *old = r;
                } else {
                    out.push(r);
                }
            }
            Err(_) if i + 1 == lines.len() && !complete => {
                tracing::warn!("ignoring the unfinished last line of {}", path.display());
            }
            Err(source) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
            }
        }
    }
    Ok(out)
}

/// Runs that need not run again: recorded and successful.
pub fn done_keys(records: &[RunRecord]) -> HashSet<RunKey> {
    records
        .iter()
        .filter(|r| r.ok)
        .map(RunRecord::key)
        .collect()
}

#[cfg(test)]
pub(crate) fn synthetic(app: &str, config: Config, level: u32, rep: u32, t: f64) -> RunRecord {
    RunRecord {
        app: app.into(),
        config,
        level,
        rep,
        load: LoadKind::Stress,
        ok: true,
        error: None,
        time_s: Some(t),
        wall_s: t + 0.1,
        verified: true,
        started_unix: 0.0,
        cpus: vec![1],
        load_jobs_per_s: None,
        vm: config.is_vm().then(VmFigures::default),
        fwq: None,
        result: None,
        figure: None,
        output: None,
        kvm: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_then_load_round_trips_and_resume_skips_only_successes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RunStore::open(dir.path()).unwrap();
        let a = synthetic("hpccg", Config::DualStack, 0, 0, 1.0);
        let mut b = synthetic("hpccg", Config::Native, 1, 0, 2.0);
        b.ok = false;
        b.error = Some("boom".into());
        s.append(&a).unwrap();
        s.append(&b).unwrap();
        drop(s);
        let back = load(dir.path()).unwrap();
        assert_eq!(back, vec![a.clone(), b.clone()]);
        let done = done_keys(&back);
        assert!(done.contains(&a.key()));
        assert!(!done.contains(&b.key()), "failed runs are retried");

        // The retry succeeds: it replaces the failure.
        let mut s = RunStore::open(dir.path()).unwrap();
        let b2 = synthetic("hpccg", Config::Native, 1, 0, 2.5);
        s.append(&b2).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], b2);
        assert_eq!(done_keys(&back).len(), 2);
    }

    #[test]
    fn truncated_last_line_is_ignored_but_damage_elsewhere_is_not() {
        let a = serde_json::to_string(&synthetic("amg", Config::Native, 0, 0, 1.0)).unwrap();
        let p = Path::new("runs.jsonl");
        let cut = format!("{a}\n{}", &a[..a.len() / 2]);
        assert_eq!(parse(&cut, p).unwrap().len(), 1);
        let bad = format!("{}\n{a}\n", &a[..a.len() / 2]);
        assert!(matches!(
            parse(&bad, p),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
        assert!(load(Path::new("/nonexistent-dualstack-dir"))
            .unwrap()
            .is_empty());
    }
}
