//! What a run takes from the host for its lifetime only, and gives back however it ends: the
//! huge page shortfall of a run without a zone, and the transient zone of `--zone auto`.
//!
//! Each lease is journaled in the state database (table `run_leases`) under the state lock
//! *before* the host changes, with the holder's pid and start time and the boot id, like a
//! zone's steps. The holder gives it back when the run ends ([`Lease::give_back`], or on drop);
//! when the holder died first (kill -9), [`recover`] gives back every lease whose holder is gone
//! (`dualstack recover` and every `dualstack` start call it, and so does the daemon's job
//! supervisor when its run ended). A lease of an earlier boot is simply forgotten: the reboot
//! reset the pools and cgroups.

use std::path::{Path, PathBuf};

use dualstack_topology::{Housekeeping, ZoneRequest};
use dualstack_zones::{hugepages, HostPaths, StateLock, Zone, ZoneError, ZoneOptions};
use rusqlite::{params, Connection, OptionalExtension};

use crate::JobError;

/// Errors of the lease journal.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    State(#[from] dualstack_zones::StateError),
    #[error("lease journal: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("reserving {count} huge pages in {} for the run", pool.display())]
    Reserve {
        pool: PathBuf,
        count: u64,
        #[source]
        source: Box<hugepages::HugePageError>,
    },
    #[error("giving back {count} huge pages to {}", pool.display())]
    GiveBack {
        pool: PathBuf,
        count: u64,
        #[source]
        source: Box<hugepages::HugePageError>,
    },
}

fn table(conn: &Connection) -> Result<(), LeaseError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS run_leases (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             kind TEXT NOT NULL,
             pid INTEGER NOT NULL,
             pid_start INTEGER NOT NULL,
             boot_id TEXT NOT NULL,
             pool TEXT,
             count INTEGER,
             seen INTEGER,
             before INTEGER,
             zone TEXT
         );",
    )?;
    // `pages`: what a run without a zone maps in all (its lease `count` is only the part the
    // pool lacked). Added after the first journals were written.
    let has_pages = conn
        .prepare("SELECT 1 FROM pragma_table_info('run_leases') WHERE name = 'pages'")?
        .exists([])?;
    if !has_pages {
        conn.execute_batch("ALTER TABLE run_leases ADD COLUMN pages INTEGER;")?;
    }
    Ok(())
}

fn open(paths: &HostPaths) -> Result<Connection, LeaseError> {
    let conn = dualstack_zones::open_db(&paths.state_dir)?;
    table(&conn)?;
    Ok(conn)
}

/// `(state, start time)` of a process, from `<procfs>/<pid>/stat`.
fn stat(procfs: &Path, pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(procfs.join(format!("{pid}/stat"))).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.nth(18)?.parse().ok()?))
}

/// Whether the process that started at `start` still runs as `pid` (a zombie has ended).
fn alive(procfs: &Path, pid: u32, start: u64) -> bool {
    matches!(stat(procfs, pid), Some((s, t)) if t == start && s != 'Z' && s != 'X')
}

fn me(procfs: &Path) -> (u32, u64) {
    let pid = std::process::id();
    (pid, stat(procfs, pid).map_or(0, |(_, t)| t))
}

#[derive(Debug)]
enum What {
    HugePages { pool: PathBuf, count: u64 },
    Zone { name: String },
}

/// A lease held by this process: given back by [`Lease::give_back`] or when dropped.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    paths: HostPaths,
    what: What,
    done: bool,
}

/// The pool a run without a zone takes its huge pages from: the node's pool when a NUMA node
/// is asked for, else the host-wide one (`<sys>/kernel/mm/hugepages/hugepages-<K>kB`).
pub fn pool_dir(paths: &HostPaths, page_kib: u64, numa_node: Option<u32>) -> PathBuf {
    match numa_node {
        Some(n) => paths
            .node_dir
            .join(format!("node{n}/hugepages/hugepages-{page_kib}kB")),
        None => {
            // node_dir is <sys>/devices/system/node.
            let sys = paths
                .node_dir
                .ancestors()
                .nth(3)
                .unwrap_or(Path::new("/sys"));
            sys.join(format!("kernel/mm/hugepages/hugepages-{page_kib}kB"))
        }
    }
}

fn read_count(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How many more pages of the pool in `dir` a run of `pages` pages needs when `pending` of its
/// free pages are promised to other runs that have not mapped them yet: free pages not already
/// promised to a mapping (`resv_hugepages`, host-wide pools only) or to such a run count as
/// available.
pub fn shortfall(dir: &Path, pages: u64, pending: u64) -> Option<u64> {
    let free = read_count(&dir.join("free_hugepages"))?;
    let resv = read_count(&dir.join("resv_hugepages")).unwrap_or(0);
    let available = free.saturating_sub(resv).saturating_sub(pending);
    Some(pages.saturating_sub(available))
}

/// Huge pages (of `page_kib`) mapped by `pid` and its descendants now: the sum of their
/// `HugetlbPages` (`/proc/PID/status`, counted as pages are faulted in; the VMM populates all
/// of its memory before the guest starts).
pub fn mapped_pages(procfs: &Path, pid: u32, page_kib: u64) -> u64 {
    let mut kib = 0u64;
    let mut todo = vec![pid];
    let mut seen = std::collections::HashSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(procfs.join(format!("{p}/status"))) {
            kib += status
                .lines()
                .find_map(|l| l.strip_prefix("HugetlbPages:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        let Ok(tasks) = std::fs::read_dir(procfs.join(format!("{p}/task"))) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    kib / page_kib.max(1)
}

/// Whether pages taken from pool file `a` may be pages of pool file `b`: the same pool, or
/// pools of one page size where one is the host-wide pool (which holds every node's pages).
fn pools_overlap(a: &Path, b: &Path) -> bool {
    let size = |p: &Path| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned());
    let global = |p: &Path| {
        p.parent()
            .and_then(Path::parent)
            .is_some_and(|d| d.ends_with("kernel/mm/hugepages"))
    };
    a == b || (size(a) == size(b) && (global(a) || global(b)))
}

/// Pages of pool `pool` that other live runs without a zone have claimed but not mapped yet
/// (read with the state lock held: claims are only made under it).
fn pending_pages(
    conn: &Connection,
    paths: &HostPaths,
    pool: &Path,
    page_kib: u64,
) -> Result<u64, LeaseError> {
    let boot = dualstack_zones::state::boot_id(&paths.procfs);
    let mut stmt = conn.prepare(
        "SELECT pid, pid_start, pool, pages FROM run_leases WHERE kind = 'hugepages' AND boot_id = ?1 AND pages IS NOT NULL",
    )?;
    let rows = stmt.query_map([boot], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut pending = 0u64;
    for row in rows {
        let (pid, start, row_pool, pages) = row?;
        let Some(row_pool) = row_pool else { continue };
        if !pools_overlap(Path::new(&row_pool), pool) || !alive(&paths.procfs, pid, start as u64) {
            continue;
        }
        let mapped = mapped_pages(&paths.procfs, pid, page_kib);
        pending += (pages.max(0) as u64).saturating_sub(mapped);
    }
    Ok(pending)
}

/// Whether this process may grow the pool (`nr_hugepages` writable: root, normally).
pub fn may_reserve(pool: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(pool.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path; no memory is written.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Claim the huge pages of a run without a zone that maps `pages` pages from the pool in `dir`
/// (NUMA node `numa`, `page_kib` pages) for this process's lifetime, reserving what the pool
/// lacks.
///
/// Under the state lock (host-wide) the claim is journaled with the run's whole need, and the
/// shortfall counts the free pages other live claims have not mapped yet as taken, so runs
/// started at the same moment (the ranks of `mpiexec`) each get their pages: each reserves
/// what the pool lacks beyond the others' promised pages, or fails here, naming the pool, when
/// the node cannot give that many. The claim stays in the journal (with its reserved part,
/// maybe 0) until the run ends.
pub fn hugepages(
    paths: &HostPaths,
    dir: &Path,
    numa: u32,
    page_kib: u64,
    pages: u64,
) -> Result<Lease, LeaseError> {
    let pool = dir.join("nr_hugepages");
    let _lock = StateLock::acquire(&paths.state_dir)?;
    let conn = open(paths)?;
    let seen =
        hugepages::check_pool(&pool, numa, page_kib).map_err(|source| LeaseError::Reserve {
            pool: pool.clone(),
            count: pages,
            source: Box::new(source),
        })?;
    // The others' mapped pages are read before the pool's free count: a run mapping in
    // between is then counted twice (reserving a little too much), never not at all.
    let pending = pending_pages(&conn, paths, &pool, page_kib)?;
    let count = shortfall(dir, pages, pending).unwrap_or(0);
    let (pid, start) = me(&paths.procfs);
    conn.execute(
        "INSERT INTO run_leases (kind, pid, pid_start, boot_id, pool, count, seen, pages, before) VALUES ('hugepages', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            pid,
            start as i64,
            dualstack_zones::state::boot_id(&paths.procfs),
            pool.display().to_string(),
            count as i64,
            seen as i64,
            pages as i64,
            // Nothing to reserve: the outcome is known already.
            (count == 0).then_some(seen as i64),
        ],
    )?;
    let id = conn.last_insert_rowid();
    let lease = |count| Lease {
        id,
        paths: paths.clone(),
        what: What::HugePages {
            pool: pool.clone(),
            count,
        },
        done: false,
    };
    if count == 0 {
        tracing::debug!(
            "claimed {pages} free huge pages of {} ({pending} promised to other runs)",
            pool.display()
        );
        return Ok(lease(0));
    }
    match hugepages::reserve(&paths.hugepage_lock, &pool, numa, page_kib, count) {
        Ok((before, _)) => {
            conn.execute(
                "UPDATE run_leases SET before = ?2 WHERE id = ?1",
                params![id, before as i64],
            )?;
            tracing::info!(
                "reserved {count} huge pages in {} for the run ({pending} promised to other runs)",
                pool.display()
            );
            Ok(lease(count))
        }
        Err(source) => {
            conn.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
            Err(LeaseError::Reserve {
                pool: pool.clone(),
                count,
                source: Box::new(source),
            })
        }
    }
}

/// The name of this process's transient zone.
pub fn auto_zone_name() -> String {
    format!("auto-{}", std::process::id())
}

/// Carve a transient zone for this process's run (journaled first, so a crash at any point is
/// undone by [`recover`] together with the zones' own recovery).
pub fn zone(
    paths: &HostPaths,
    request: &ZoneRequest,
    options: &ZoneOptions,
) -> Result<(Lease, Zone), JobError> {
    let name = auto_zone_name();
    let id = {
        let _lock = StateLock::acquire(&paths.state_dir).map_err(LeaseError::from)?;
        let conn = open(paths)?;
        let (pid, start) = me(&paths.procfs);
        conn.execute(
            "INSERT INTO run_leases (kind, pid, pid_start, boot_id, zone) VALUES ('zone', ?1, ?2, ?3, ?4)",
            params![pid, start as i64, dualstack_zones::state::boot_id(&paths.procfs), name],
        )
        .map_err(LeaseError::from)?;
        conn.last_insert_rowid()
    };
    let lease = Lease {
        id,
        paths: paths.clone(),
        what: What::Zone { name: name.clone() },
        done: false,
    };
    let node = dualstack_zones::load_node(paths).map_err(|e| JobError::AutoZoneNode {
        reason: e.to_string(),
    })?;
    match dualstack_zones::create_with(paths, &node, &name, request, options, Housekeeping::KeepOne)
    {
        Ok(report) => Ok((lease, report.zone)),
        Err(e) => {
            // Nothing was made (a failed create rolls back): only the record goes.
            let mut lease = lease;
            lease.done = true;
            forget(paths, id)?;
            Err(JobError::AutoZoneCreate {
                name,
                source: Box::new(e),
            })
        }
    }
}

fn forget(paths: &HostPaths, id: i64) -> Result<(), LeaseError> {
    let _lock = StateLock::acquire(&paths.state_dir)?;
    open(paths)?.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
    Ok(())
}

impl Lease {
    /// What it holds, for messages.
    pub fn describe(&self) -> String {
        match &self.what {
            What::HugePages { pool, count } => format!("{count} huge pages of {}", pool.display()),
            What::Zone { name } => format!("transient zone {name}"),
        }
    }

    /// Whether it holds something of the host that must be given back when the run ends
    /// (pages added to a pool, a zone), not only a claim in the journal.
    pub fn holds_host_resources(&self) -> bool {
        !matches!(self.what, What::HugePages { count: 0, .. })
    }

    /// Give it back now.
    pub fn give_back(mut self) -> Result<(), JobError> {
        self.done = true;
        give_back(&self.paths, self.id, &self.what)
    }
}

fn give_back(paths: &HostPaths, id: i64, what: &What) -> Result<(), JobError> {
    match what {
        What::HugePages { pool, count } => {
            let _lock = StateLock::acquire(&paths.state_dir).map_err(LeaseError::from)?;
            hugepages::give_back(&paths.hugepage_lock, pool, *count).map_err(|source| {
                LeaseError::GiveBack {
                    pool: pool.clone(),
                    count: *count,
                    source: Box::new(source),
                }
            })?;
            open(paths)?
                .execute("DELETE FROM run_leases WHERE id = ?1", [id])
                .map_err(LeaseError::from)?;
        }
        What::Zone { name } => {
            match dualstack_zones::release(paths, name) {
                Ok(_) | Err(ZoneError::Unknown { .. }) => {}
                Err(e) => {
                    return Err(JobError::AutoZoneRelease {
                        name: name.clone(),
                        source: Box::new(e),
                    })
                }
            }
            forget(paths, id)?;
        }
    }
    Ok(())
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = give_back(&self.paths, self.id, &self.what) {
                eprintln!(
                    "dualstack: warning: could not give back {}: {e}; `dualstack recover` retries",
                    self.describe()
                );
            }
        }
    }
}

/// What [`recover`] gave back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseReport {
    /// One line per lease of a dead holder that was given back.
    pub given_back: Vec<String>,
    /// Leases of an earlier boot, forgotten.
    pub dropped_stale: usize,
    pub warnings: Vec<String>,
}

impl LeaseReport {
    pub fn is_clean(&self) -> bool {
        self.given_back.is_empty() && self.dropped_stale == 0 && self.warnings.is_empty()
    }
}

type LeaseRow = (
    i64,
    String,
    u32,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// Give back every lease whose holder is gone (see the module docs). Zones' own recovery
/// ([`dualstack_zones::recover`]) should run first, so a half-made transient zone is already
/// rolled back.
pub fn recover(paths: &HostPaths) -> Result<LeaseReport, LeaseError> {
    let mut report = LeaseReport::default();
    if !paths
        .state_dir
        .join(dualstack_zones::state::DB_FILE)
        .exists()
    {
        return Ok(report);
    }
    let boot = dualstack_zones::state::boot_id(&paths.procfs);
    let mut zones = Vec::new();
    {
        let _lock = StateLock::acquire(&paths.state_dir)?;
        let conn = open(paths)?;
        let rows: Vec<LeaseRow> = {
            let mut stmt = conn.prepare(
                "SELECT id, kind, pid, pid_start, boot_id, pool, count, seen, before, zone FROM run_leases ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, kind, pid, start, row_boot, pool, count, seen, before, zone) in rows {
            if row_boot != boot {
                conn.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
                report.dropped_stale += 1;
                continue;
            }
            if alive(&paths.procfs, pid, start as u64) {
                continue;
            }
            match (kind.as_str(), pool, zone) {
                ("hugepages", Some(_), _) if count == Some(0) => {
                    // A claim of free pages only: nothing to give back.
                    conn.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
                }
                ("hugepages", Some(pool), _) => {
                    let pool = PathBuf::from(pool);
                    let count = count.unwrap_or(0).max(0) as u64;
                    let r = match before {
                        Some(_) => {
                            hugepages::give_back(&paths.hugepage_lock, &pool, count).map(|()| None)
                        }
                        // Killed between journaling and recording the write: decide from the
                        // pool (as zone recovery does).
                        None => {
                            let seen = seen.unwrap_or(0).max(0) as u64;
                            hugepages::undo_unknown(&paths.hugepage_lock, &pool, seen, seen + count)
                        }
                    };
                    match r {
                        Ok(warning) => {
                            report.warnings.extend(warning);
                            report.given_back.push(format!(
                                "{count} huge pages of {} (run pid {pid} is gone)",
                                pool.display()
                            ));
                            conn.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
                        }
                        Err(e) => report.warnings.push(e.to_string()),
                    }
                }
                ("zone", _, Some(name)) => zones.push((id, name, pid)),
                _ => {
                    conn.execute("DELETE FROM run_leases WHERE id = ?1", [id])?;
                }
            }
        }
    }
    // Released outside the state lock: the zones library takes it itself.
    for (id, name, pid) in zones {
        match dualstack_zones::release(paths, &name) {
            Ok(_) => report
                .given_back
                .push(format!("transient zone {name} (run pid {pid} is gone)")),
            Err(ZoneError::Unknown { .. }) => {}
            Err(e) => {
                report.warnings.push(format!("transient zone {name}: {e}"));
                continue;
            }
        }
        forget(paths, id)?;
    }
    Ok(report)
}

/// Leases recorded now (any holder), for tests and `dualstack node`.
pub fn count(paths: &HostPaths) -> Result<usize, LeaseError> {
    let conn = open(paths)?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM run_leases", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, v: u64) {
        std::fs::write(path, format!("{v}\n")).unwrap();
    }

    #[test]
    fn a_claim_counts_the_pages_other_live_runs_have_not_mapped_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let mut paths = HostPaths::fake(tmp.path(), true);
        // This process is the holder of every claim: it is alive and maps no huge pages.
        paths.procfs = PathBuf::from("/proc");
        std::fs::create_dir_all(&paths.state_dir).unwrap();
        let dir = pool_dir(&paths, 2048, None);
        std::fs::create_dir_all(&dir).unwrap();
        let (nr, free) = (dir.join("nr_hugepages"), dir.join("free_hugepages"));
        write(&nr, 10);
        write(&free, 10);

        // The first run of 30 pages lacks 20.
        let a = hugepages(&paths, &dir, 0, 2048, 30).unwrap();
        assert!(a.holds_host_resources());
        assert_eq!(read_count(&nr), Some(30));
        // (The kernel's free count grows with the pool; the fake's is set by hand.)
        write(&free, 30);
        // The second, at the same moment: the 30 free pages are the first run's, not yet
        // mapped, so it reserves all of its own.
        let b = hugepages(&paths, &dir, 0, 2048, 30).unwrap();
        assert_eq!(read_count(&nr), Some(60));
        write(&free, 60);
        // A third small one fits into nothing left over either.
        let c = hugepages(&paths, &dir, 0, 2048, 5).unwrap();
        assert_eq!(read_count(&nr), Some(65));
        assert_eq!(count(&paths).unwrap(), 3);
        // Each gives back exactly its own reservation.
        c.give_back().unwrap();
        b.give_back().unwrap();
        assert_eq!(read_count(&nr), Some(30));
        drop(a);
        assert_eq!(read_count(&nr), Some(10));
        assert_eq!(count(&paths).unwrap(), 0);

        // Enough free pages: a claim without a reservation, still journaled while it runs,
        // and dropped silently by recovery once its holder is gone.
        write(&free, 10);
        let d = hugepages(&paths, &dir, 0, 2048, 4).unwrap();
        assert!(!d.holds_host_resources());
        assert_eq!(read_count(&nr), Some(10));
        let e = hugepages(&paths, &dir, 0, 2048, 8).unwrap();
        assert_eq!(read_count(&nr), Some(12), "4 of the 10 free are promised");
        {
            let conn = open(&paths).unwrap();
            conn.execute("UPDATE run_leases SET pid_start = pid_start + 1", [])
                .unwrap();
        }
        let r = recover(&paths).unwrap();
        assert_eq!(r.given_back.len(), 1, "{r:?}");
        assert!(r.given_back[0].starts_with("2 huge pages"), "{r:?}");
        assert_eq!(read_count(&nr), Some(10));
        assert_eq!(count(&paths).unwrap(), 0);
        std::mem::forget(d);
        std::mem::forget(e);
    }

    #[test]
    fn pools_of_one_size_overlap_through_the_host_wide_pool() {
        let g = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
        let n0 =
            Path::new("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
        let n1 =
            Path::new("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
        let g1 = Path::new("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages");
        assert!(pools_overlap(g, n0) && pools_overlap(n1, g) && pools_overlap(n0, n0));
        assert!(!pools_overlap(n0, n1) && !pools_overlap(g, g1));
    }
}
