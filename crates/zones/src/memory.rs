//! Warm zone memory: a zone owns its guest memory as populated hugetlbfs files, so a job only
//! has to map it.
//!
//! - `zone create` mounts one hugetlbfs per page size under `<state dir>/memory/<zone>/` and
//!   makes one file per page size there (1 GiB pages for the bulk when the kernel gives them,
//!   2 MiB pages for the rest), bound to the zone's NUMA node and populated up front. Files on a
//!   hugetlbfs mount outlive the process that made them (a memfd would not), so the zone, not any
//!   one process, holds the memory between jobs. Both are journal steps: recovery unmounts and
//!   deletes what a crashed create left.
//! - A job claims a disjoint extent of the zone's address space (`zone_extents` rows: `job`
//!   with the owner's pid), maps it, and hands it back as `dirty` when it ends. A background
//!   zeroer (a detached process on a housekeeping core) zeroes dirty extents in order, moving a
//!   `clean_to` watermark; a job that needs pages still dirty waits for exactly those (or, if no
//!   zeroer lives, zeroes them itself). Space covered by no row is always zero.
//! - Owners are `pid:starttime`, so a dead owner (kill -9 of a job or of the zeroer) is seen as
//!   dead: its extent becomes dirty / unowned again and the next claim, `dualstack recover` or
//!   a new zeroer finishes the zeroing. No job ever maps a page that is not zero.
//! - Release deletes the files and unmounts: the pages go back to the pool at once, unzeroed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::paths::HostPaths;
use crate::state::{open_db, StateError};

/// Bytes zeroed between two watermark updates (a waiting job waits at most one chunk more than
/// the pages it needs; larger chunks keep the database off the zeroing's critical path).
const CHUNK: u64 = 128 << 20;
/// Populate chunk (progress granularity).
const POPULATE_CHUNK: u64 = 256 << 20;
const GIB: u64 = 1 << 30;

/// Errors of zone memory.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot populate zone memory {path}: it needs {needed} free {page_kib} KiB huge pages on NUMA node {numa}, but only {free} are free (another user took pages after they were reserved); nothing was changed. Free huge pages or ask for less memory")]
    Shortfall {
        path: PathBuf,
        needed: u64,
        free: u64,
        page_kib: u64,
        numa: u32,
    },
    #[error("zone {zone} has no room for {} MiB: its {} MiB are held by running jobs ({in_use}); wait for them or ask for less memory", need >> 20, total >> 20)]
    Full {
        zone: String,
        need: u64,
        total: u64,
        in_use: String,
    },
    #[error("zone {zone}'s memory is still used by running jobs {pids:?}; stop them first")]
    InUse { zone: String, pids: Vec<u32> },
}

/// One file of a zone's memory: zone addresses `[start, start+size)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub start: u64,
    pub size: u64,
    pub page_kib: u64,
    pub path: PathBuf,
}

impl Segment {
    fn page(&self) -> u64 {
        self.page_kib * 1024
    }
    fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// A zone's warm memory: its segments in address order (1 GiB pages first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneMemory {
    pub segments: Vec<Segment>,
    pub numa_node: u32,
}

/// A piece of a file that backs part of an extent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub path: PathBuf,
    pub file_offset: u64,
    pub len: u64,
    pub page_kib: u64,
}

impl ZoneMemory {
    pub fn size(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    fn segment_at(&self, addr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| addr >= s.start && addr < s.end())
    }

    /// The file pieces behind zone addresses `[start, start+len)`.
    pub fn parts(&self, start: u64, len: u64) -> Vec<Part> {
        let end = start + len;
        self.segments
            .iter()
            .filter(|s| s.start < end && s.end() > start)
            .map(|s| {
                let a = start.max(s.start);
                let b = end.min(s.end());
                Part {
                    path: s.path.clone(),
                    file_offset: a - s.start,
                    len: b - a,
                    page_kib: s.page_kib,
                }
            })
            .collect()
    }
}

/// An extent a job holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub id: i64,
    pub zone: String,
    pub start: u64,
    pub len: u64,
    pub parts: Vec<Part>,
    /// Time spent waiting for (or doing) the zeroing of pages this job needed.
    pub zero_wait_s: f64,
    /// Bytes this job had to wait for.
    pub zero_wait_bytes: u64,
}

/// A row of `zone_extents`, as `zone show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub id: i64,
    pub start: u64,
    pub len: u64,
    /// `job` (in use) or `dirty` (waiting for / being zeroed).
    pub state: String,
    pub owner: Option<String>,
    pub owner_alive: bool,
    pub clean_to: u64,
}

impl Extent {
    fn end(&self) -> u64 {
        self.start + self.len
    }
    /// Pid of the owner, when it lives.
    pub fn live_pid(&self) -> Option<u32> {
        if !self.owner_alive {
            return None;
        }
        self.owner.as_deref()?.split(':').next()?.parse().ok()
    }
}

// ---- owners ----

/// `pid:starttime` of a process, from `<procfs>/<pid>/stat`.
fn owner_of(procfs: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(procfs.join(format!("{pid}/stat"))).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

fn me(paths: &HostPaths) -> String {
    owner_of(&paths.procfs, std::process::id())
        .unwrap_or_else(|| format!("{}:0", std::process::id()))
}

fn alive(paths: &HostPaths, owner: &str) -> bool {
    let Some(pid) = owner.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_of(&paths.procfs, pid).as_deref() == Some(owner)
}

// ---- rows ----

fn rows(paths: &HostPaths, conn: &Connection, zone: &str) -> Result<Vec<Extent>, MemError> {
    let mut stmt = conn.prepare(
        "SELECT id, start, len, state, owner, clean_to FROM zone_extents WHERE zone = ?1 ORDER BY start",
    )?;
    let out = stmt
        .query_map([zone], |r| {
            Ok(Extent {
                id: r.get(0)?,
                start: r.get::<_, i64>(1)? as u64,
                len: r.get::<_, i64>(2)? as u64,
                state: r.get(3)?,
                owner: r.get(4)?,
                owner_alive: false,
                clean_to: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(out
        .into_iter()
        .map(|mut e| {
            e.owner_alive = e.owner.as_deref().is_some_and(|o| alive(paths, o));
            e
        })
        .collect())
}

/// The extents of zone `zone` (for `zone show`).
pub fn extents(paths: &HostPaths, zone: &str) -> Result<Vec<Extent>, MemError> {
    let conn = open_db(&paths.state_dir)?;
    rows(paths, &conn, zone)
}

/// Jobs whose process died keep their extent as `job`: make it dirty (unowned).
fn reap(paths: &HostPaths, conn: &Connection, zone: &str) -> Result<usize, MemError> {
    let mut n = 0;
    for e in rows(paths, conn, zone)? {
        if e.state == "job" && !e.owner_alive {
            n += conn.execute(
                "UPDATE zone_extents SET state = 'dirty', owner = NULL, clean_to = start WHERE id = ?1",
                [e.id],
            )?;
        }
    }
    Ok(n)
}

// ---- placement ----

struct Placement {
    start: u64,
    end: u64,
    /// Dirty rows that must be clean up to the given address first: (row, until, owner alive).
    waits: Vec<(Extent, u64)>,
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Where `need` bytes go: never over a job's extent; over dirty space only when the clean space
/// does not suffice (then the claim waits for those pages). Small jobs prefer the 2 MiB segment
/// (least waste).
fn place(mem: &ZoneMemory, rows: &[Extent], need: u64) -> Option<Placement> {
    let total = mem.size();
    let mut cands: Vec<u64> = vec![0];
    cands.extend(mem.segments.iter().map(|s| s.start));
    cands.extend(rows.iter().map(Extent::end));
    cands.sort_unstable();
    cands.dedup();
    let inside = |x: u64| rows.iter().any(|r| r.start < x && x < r.end());
    let mut best: Option<((bool, u64, u64), Placement)> = None;
    for c in cands {
        let Some(seg) = mem.segment_at(c) else {
            continue;
        };
        let s = seg.start + align_up(c - seg.start, seg.page());
        if s >= total || inside(s) {
            continue;
        }
        let mut end = s + need;
        if end > total {
            continue;
        }
        if let Some(es) = mem.segment_at(end - 1) {
            end = (es.start + align_up(end - es.start, es.page())).min(es.end());
        }
        if rows
            .iter()
            .any(|r| r.state == "job" && r.start < end && r.end() > s)
        {
            continue;
        }
        let waits: Vec<(Extent, u64)> = rows
            .iter()
            .filter(|r| r.state == "dirty" && r.start < end && r.end() > s)
            .filter_map(|r| {
                let until = end.min(r.end());
                (r.clean_to < until).then(|| (r.clone(), until))
            })
            .collect();
        let score = (!waits.is_empty(), end - s - need, s);
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((
                score,
                Placement {
                    start: s,
                    end,
                    waits,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, MemError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Claim `need` bytes (rounded up to 2 MiB, and to 1 GiB inside the 1 GiB segment) of `zone`'s
/// memory for the calling process. Waits for pages still being zeroed, and zeroes pages whose
/// zeroer died.
pub fn claim(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
    need: u64,
) -> Result<Claim, MemError> {
    let need = align_up(need.max(1), 2 << 20);
    let owner = me(paths);
    let mut conn = open_db(&paths.state_dir)?;
    let t0 = Instant::now();
    let mut waited = false;
    let mut wait_bytes = 0u64;
    loop {
        let tx = immediate(&mut conn)?;
        reap(paths, &tx, zone)?;
        let rs = rows(paths, &tx, zone)?;
        let Some(p) = place(mem, &rs, need) else {
            let in_use = rs
                .iter()
                .filter(|r| r.state == "job")
                .map(|r| {
                    format!(
                        "{} MiB at {} MiB by {}",
                        r.len >> 20,
                        r.start >> 20,
                        r.owner.as_deref().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(MemError::Full {
                zone: zone.into(),
                need,
                total: mem.size(),
                in_use,
            });
        };
        if p.waits.is_empty() {
            tx.execute(
                "INSERT INTO zone_extents (zone, start, len, state, owner, clean_to) VALUES (?1, ?2, ?3, 'job', ?4, ?2)",
                params![zone, p.start as i64, (p.end - p.start) as i64, owner],
            )?;
            let id = tx.last_insert_rowid();
            for r in rs
                .iter()
                .filter(|r| r.state == "dirty" && r.start < p.end && r.end() > p.start)
            {
                if p.end >= r.end() {
                    tx.execute("DELETE FROM zone_extents WHERE id = ?1", [r.id])?;
                } else {
                    tx.execute(
                        "UPDATE zone_extents SET start = ?2, len = ?3 WHERE id = ?1",
                        params![r.id, p.end as i64, (r.end() - p.end) as i64],
                    )?;
                }
            }
            tx.commit()?;
            // Extents a killed job or zeroer left dirty: zero them in the background now.
            if let Err(e) = spawn_zeroer(paths, zone, mem, None) {
                tracing::warn!("zone {zone}: cannot start a zeroer: {e}");
            }
            return Ok(Claim {
                id,
                zone: zone.into(),
                start: p.start,
                len: p.end - p.start,
                parts: mem.parts(p.start, p.end - p.start),
                zero_wait_s: if waited {
                    t0.elapsed().as_secs_f64()
                } else {
                    0.0
                },
                zero_wait_bytes: wait_bytes,
            });
        }
        // Pages this job needs are still dirty.
        waited = true;
        let mut mine = Vec::new();
        for (r, until) in &p.waits {
            wait_bytes += until - r.clean_to.max(r.start);
            if !r.owner_alive {
                tx.execute(
                    "UPDATE zone_extents SET owner = ?2 WHERE id = ?1",
                    params![r.id, owner],
                )?;
                mine.push((r.id, *until));
            }
        }
        tx.commit()?;
        for (id, until) in mine {
            zero_row(&conn, mem, id, &owner, until)?;
            conn.execute(
                "UPDATE zone_extents SET owner = NULL WHERE id = ?1 AND owner = ?2",
                params![id, owner],
            )?;
        }
        for (r, until) in p.waits.iter().filter(|(r, _)| r.owner_alive) {
            wait_for(paths, &conn, r, *until)?;
        }
    }
}

/// Poll a dirty row until it is clean up to `until`, is gone, or its owner died.
fn wait_for(paths: &HostPaths, conn: &Connection, r: &Extent, until: u64) -> Result<(), MemError> {
    loop {
        let row: Option<(i64, i64, Option<String>)> = conn
            .query_row(
                "SELECT clean_to, start + len, owner FROM zone_extents WHERE id = ?1",
                [r.id],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
            )
            .optional()?;
        match row {
            None => return Ok(()),
            Some((c, _, _)) if c as u64 >= until => return Ok(()),
            Some((_, _, o)) if !o.as_deref().is_some_and(|o| alive(paths, o)) => return Ok(()),
            _ => std::thread::sleep(Duration::from_micros(500)),
        }
    }
}

/// The job holding `claim` ended: its extent becomes dirty, and a zeroer is started in the
/// background (on a housekeeping core).
pub fn release_claim(paths: &HostPaths, claim: &Claim, mem: &ZoneMemory) -> Result<(), MemError> {
    // Still ours (a live owner) until the zeroer takes it over: nobody else zeroes it meanwhile,
    // and if no zeroer ever starts, the extent is reclaimed once this process is gone.
    let owner = me(paths);
    let conn = open_db(&paths.state_dir)?;
    conn.execute(
        "UPDATE zone_extents SET state = 'dirty', owner = ?2, clean_to = start WHERE id = ?1",
        params![claim.id, owner],
    )?;
    drop(conn);
    spawn_zeroer(paths, &claim.zone, mem, Some(&owner))?;
    Ok(())
}

// ---- zeroing ----

/// Zero dirty row `id` from its watermark up to `until` (or its end), as its owner `owner`.
/// Returns the bytes zeroed. Stops early when the row is gone or no longer ours.
fn zero_row(
    conn: &Connection,
    mem: &ZoneMemory,
    id: i64,
    owner: &str,
    until: u64,
) -> Result<u64, MemError> {
    let row: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT start, start + len, clean_to FROM zone_extents WHERE id = ?1 AND owner = ?2",
            params![id, owner],
            |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
        )
        .optional()?;
    let Some((start, end, clean)) = row else {
        return Ok(0);
    };
    let from = (clean.max(start)) as u64;
    let to = until.min(end as u64);
    if from >= to {
        return Ok(0);
    }
    let delay = test_delay();
    let t = Instant::now();
    let mut done = 0u64;
    for seg in mem
        .segments
        .iter()
        .filter(|s| s.start < to && s.end() > from)
    {
        let a = from.max(seg.start);
        let b = to.min(seg.end());
        // Map whole pages of the file; write only [a, b).
        let ma = seg.start + (a - seg.start) / seg.page() * seg.page();
        let mb = (seg.start + align_up(b - seg.start, seg.page())).min(seg.end());
        let map = FileMap::open(&seg.path, ma - seg.start, mb - ma, libc::MAP_POPULATE)?;
        let mut c = a;
        while c < b {
            let n = CHUNK.min(b - c);
            // SAFETY: [c, c+n) lies inside the mapping [ma, mb); this process owns the row, so
            // no job maps these pages and no other zeroer writes them.
            unsafe { std::ptr::write_bytes(map.ptr.add((c - ma) as usize), 0, n as usize) };
            c += n;
            done += n;
            let changed = conn.execute(
                "UPDATE zone_extents SET clean_to = max(clean_to, ?3) WHERE id = ?1 AND owner = ?2",
                params![id, owner, c as i64],
            )?;
            if changed == 0 {
                return Ok(done);
            }
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    conn.execute(
        "INSERT INTO zone_zeroing (zone, bytes, seconds, pid) SELECT zone, ?2, ?3, ?4 FROM zone_extents WHERE id = ?1",
        params![id, done as i64, secs, std::process::id()],
    )?;
    Ok(done)
}

fn test_delay() -> Option<Duration> {
    static D: OnceLock<Option<Duration>> = OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("DUALSTACK_TEST_ZERO_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

/// What a foreground zeroing did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ZeroReport {
    pub bytes: u64,
    pub seconds: f64,
}

/// Zero every dirty extent of `zone` that no live process is zeroing, in this process. Returns
/// what was zeroed.
pub fn zero_pending(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
) -> Result<ZeroReport, MemError> {
    zero_pending_from(paths, zone, mem, None, None)
}

/// Tell the spawning process that the extents handed over are ours now (or that there were
/// none): one byte on the pipe, which is then closed.
fn signal_ready(ready: &mut Option<i32>) {
    if let Some(fd) = ready.take() {
        // SAFETY: writing one byte from a local to, then closing, the zeroer's own pipe end.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// [`zero_pending`], also taking over extents `handoff` (the job that spawned this zeroer)
/// still owns.
fn zero_pending_from(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
    handoff: Option<&str>,
    mut ready: Option<i32>,
) -> Result<ZeroReport, MemError> {
    let owner = me(paths);
    let mut conn = open_db(&paths.state_dir)?;
    let t = Instant::now();
    let mut report = ZeroReport::default();
    loop {
        let tx = immediate(&mut conn)?;
        reap(paths, &tx, zone)?;
        let next = rows(paths, &tx, zone)?
            .into_iter()
            .find(|r| r.state == "dirty" && (!r.owner_alive || r.owner.as_deref() == handoff));
        let Some(r) = next else {
            tx.commit()?;
            signal_ready(&mut ready);
            break;
        };
        tx.execute(
            "UPDATE zone_extents SET owner = ?2 WHERE id = ?1",
            params![r.id, owner],
        )?;
        tx.commit()?;
        signal_ready(&mut ready);
        report.bytes += zero_row(&conn, mem, r.id, &owner, u64::MAX)?;
        conn.execute(
            "DELETE FROM zone_extents WHERE id = ?1 AND owner = ?2 AND clean_to >= start + len",
            params![r.id, owner],
        )?;
        conn.execute(
            "UPDATE zone_extents SET owner = NULL WHERE id = ?1 AND owner = ?2",
            params![r.id, owner],
        )?;
    }
    report.seconds = t.elapsed().as_secs_f64();
    Ok(report)
}

/// Whether `zone` has dirty extents nobody is zeroing (or that `handoff` hands over).
fn has_pending(paths: &HostPaths, zone: &str, handoff: Option<&str>) -> Result<bool, MemError> {
    Ok(extents(paths, zone)?.iter().any(|r| {
        r.state == "dirty"
            && (!r.owner_alive || (handoff.is_some() && r.owner.as_deref() == handoff))
    }))
}

/// Start a detached zeroer process for `zone` (when something is left to zero): it runs on the
/// housekeeping CPUs (those no zone holds) at low priority, zeroes every unowned dirty extent
/// and exits. Returns its pid.
pub fn spawn_zeroer(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
    handoff: Option<&str>,
) -> Result<Option<u32>, MemError> {
    if !has_pending(paths, zone, handoff)? {
        return Ok(None);
    }
    let housekeeping = crate::cgroup::read_list(&paths.commodity_dir().join("cpuset.cpus")).ok();
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("pipe", Path::new("zeroer")));
    }
    // SAFETY: fork; the child only calls fork again, writes the grandchild's pid and exits; the
    // grandchild (a fresh process as far as this crate is concerned) opens its own database
    // connection and files. glibc keeps malloc usable in the child.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io_err("fork", Path::new("zeroer")));
    }
    if child == 0 {
        // SAFETY: second fork, so the zeroer is re-parented to init and never a zombie of ours.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            let code = zeroer_main(paths, zone, mem, housekeeping.as_ref(), handoff, fds[1]);
            // SAFETY: leaving the zeroer process without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let pid = grandchild.to_ne_bytes();
        // SAFETY: writing 4 bytes from a local array into our pipe, then exiting at once.
        unsafe {
            libc::write(fds[1], pid.as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: reaping the intermediate child we just forked.
    unsafe {
        libc::close(fds[1]);
        libc::waitpid(child, &mut status, 0);
    }
    let mut buf = [0u8; 4];
    // SAFETY: reading 4 bytes into a local array from our pipe.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) };
    // Wait until the zeroer owns what was handed over (one byte), or is gone (end of file): a
    // recovery running meanwhile must not take the extent for a dead job's.
    let mut one = [0u8; 1];
    // SAFETY: reading 1 byte into a local array, then closing our read end.
    unsafe {
        while libc::read(fds[0], one.as_mut_ptr().cast(), 1) < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        libc::close(fds[0]);
    }
    let pid = i32::from_ne_bytes(buf);
    Ok((n == 4 && pid > 0).then_some(pid as u32))
}

fn zeroer_main(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
    housekeeping: Option<&dualstack_topology::CpuList>,
    handoff: Option<&str>,
    ready: i32,
) -> i32 {
    // SAFETY: plain syscalls on this fresh process: new session, the ready pipe moved to fd 3,
    // stdio to /dev/null (so the parent's pipes close when it exits), every other inherited
    // descriptor closed, lower priority.
    unsafe {
        libc::setsid();
        if ready != 3 {
            libc::dup2(ready, 3);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    if let Some(cpus) = housekeeping.filter(|c| !c.is_empty()) {
        let _ = crate::steer::set_affinity(std::process::id(), cpus);
    }
    match std::panic::catch_unwind(|| zero_pending_from(paths, zone, mem, handoff, Some(3))) {
        Ok(Ok(_)) => 0,
        _ => 1,
    }
}

fn io_err(what: &'static str, path: &Path) -> MemError {
    MemError::Io {
        what,
        path: path.to_path_buf(),
        source: std::io::Error::last_os_error(),
    }
}

/// A shared mapping of part of a file.
struct FileMap {
    ptr: *mut u8,
    len: usize,
}

impl FileMap {
    fn open(path: &Path, offset: u64, len: u64, flags: i32) -> Result<Self, MemError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| MemError::Io {
                what: "open zone memory file",
                path: path.to_path_buf(),
                source,
            })?;
        Self::map(&file, path, offset, len, flags)
    }

    fn map(
        file: &std::fs::File,
        path: &Path,
        offset: u64,
        len: u64,
        flags: i32,
    ) -> Result<Self, MemError> {
        use std::os::fd::AsRawFd;
        // SAFETY: a new shared mapping of a file we opened; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | flags,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io_err("map zone memory file", path));
        }
        Ok(FileMap {
            ptr: p.cast(),
            len: len as usize,
        })
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value made.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// ---- create / undo (journal steps call these) ----

/// Progress reporter for populating large zones: (bytes done, bytes total).
pub type Progress = fn(&Path, u64, u64);
static PROGRESS: OnceLock<Progress> = OnceLock::new();

/// Report populate progress of zones of 1 GiB or more through `f` (the CLI prints a line).
pub fn set_progress(f: Progress) {
    let _ = PROGRESS.set(f);
}

fn free_pages(paths: &HostPaths, numa: u32, page_kib: u64) -> u64 {
    let f = paths
        .nr_hugepages(numa, page_kib)
        .with_file_name("free_hugepages");
    std::fs::read_to_string(f)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `dir` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Mount a hugetlbfs of `page_kib` pages at `dir` (created), mode 0700.
pub fn mount(dir: &Path, page_kib: u64) -> Result<(), MemError> {
    std::fs::create_dir_all(dir).map_err(|source| MemError::Io {
        what: "create mount point",
        path: dir.to_path_buf(),
        source,
    })?;
    if is_mounted(dir) {
        return Ok(());
    }
    let opts = CString::new(format!("pagesize={}K,mode=0700", page_kib)).unwrap_or_default();
    let d = cstr(dir);
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"dualstack-zone".as_ptr(),
            d.as_ptr(),
            c"hugetlbfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io_err("mount hugetlbfs at", dir));
    }
    Ok(())
}

/// Unmount `dir` (if mounted) and remove it (and its parent when empty).
pub fn unmount(dir: &Path) -> Result<(), MemError> {
    if is_mounted(dir) {
        let d = cstr(dir);
        // SAFETY: umount2 of a path string that outlives the call.
        if unsafe { libc::umount2(d.as_ptr(), 0) } != 0 {
            // Still mapped by someone: detach now, the kernel frees it when unmapped.
            // SAFETY: as above.
            if unsafe { libc::umount2(d.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(io_err("unmount", dir));
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// Create the zone memory file `path` of `size` bytes, bound to `numa`, every page allocated
/// (and zeroed by the kernel) now. A shortage is reported before anything is kept: the file is
/// removed again.
pub fn make_file(
    paths: &HostPaths,
    path: &Path,
    size: u64,
    page_kib: u64,
    numa: u32,
) -> Result<(), MemError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| MemError::Io {
            what: "create zone memory file",
            path: path.to_path_buf(),
            source,
        })?;
    let result = (|| {
        file.set_len(size).map_err(|source| MemError::Io {
            what: "size zone memory file",
            path: path.to_path_buf(),
            source,
        })?;
        steal_for_test(page_kib);
        let map = FileMap::map(&file, path, 0, size, 0).map_err(|e| match e {
            MemError::Io { ref source, .. } if source.raw_os_error() == Some(libc::ENOMEM) => {
                MemError::Shortfall {
                    path: path.to_path_buf(),
                    needed: size / (page_kib * 1024),
                    free: free_pages(paths, numa, page_kib),
                    page_kib,
                    numa,
                }
            }
            e => e,
        })?;
        dualstack_sys::mbind_node(map.ptr, map.len, numa).map_err(|source| MemError::Io {
            what: "bind zone memory to its NUMA node",
            path: path.to_path_buf(),
            source,
        })?;
        let mut done = 0;
        while done < size {
            let n = POPULATE_CHUNK.min(size - done);
            // SAFETY: `done < size <= map.len`: the offset stays inside our own mapping.
            let at = unsafe { map.ptr.add(done as usize) };
            if dualstack_sys::madvise(at, n as usize, libc::MADV_POPULATE_WRITE).is_err() {
                return Err(MemError::Shortfall {
                    path: path.to_path_buf(),
                    needed: size / (page_kib * 1024),
                    free: free_pages(paths, numa, page_kib),
                    page_kib,
                    numa,
                });
            }
            done += n;
            if size >= GIB {
                if let Some(p) = PROGRESS.get() {
                    p(path, done, size);
                }
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Tests: `DUALSTACK_TEST_STEAL_HUGEPAGES=<n>` makes this process take `n` huge pages of the
/// pool (as another user would) right before a zone memory file is mapped.
fn steal_for_test(page_kib: u64) {
    let Some(n) = std::env::var("DUALSTACK_TEST_STEAL_HUGEPAGES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let len = (n * page_kib * 1024) as usize;
    let flag = if page_kib == 2048 {
        libc::MAP_HUGE_2MB
    } else {
        libc::MAP_HUGE_1GB
    };
    // SAFETY: a new private anonymous mapping, populated and leaked for the process lifetime.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | flag | libc::MAP_POPULATE,
            -1,
            0,
        );
        let _ = p;
    }
}

/// Before a zone's memory goes: refuse while a live job holds an extent; stop (SIGKILL) its
/// live zeroers and wait for them to go; forget every extent. Nothing is zeroed.
pub(crate) fn stop_and_forget(
    paths: &HostPaths,
    conn: &Connection,
    zone: &str,
    force: bool,
) -> Result<(), MemError> {
    let rs = rows(paths, conn, zone)?;
    let jobs: Vec<u32> = rs
        .iter()
        .filter(|r| r.state == "job")
        .filter_map(Extent::live_pid)
        .collect();
    if !jobs.is_empty() && !force {
        return Err(MemError::InUse {
            zone: zone.into(),
            pids: jobs,
        });
    }
    for r in rs.iter().filter(|r| r.state == "dirty") {
        if let Some(pid) = r.live_pid() {
            // SAFETY: SIGKILL to a zeroer this crate started (pid and start time match).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while r.owner.as_deref().is_some_and(|o| alive(paths, o)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    conn.execute("DELETE FROM zone_extents WHERE zone = ?1", [zone])?;
    Ok(())
}

/// Recovery of an active zone: extents of dead jobs become dirty, and a background zeroer takes
/// over every dirty extent no live process works on. Returns the bytes it took over.
pub(crate) fn recover_zone(
    paths: &HostPaths,
    zone: &str,
    mem: &ZoneMemory,
) -> Result<u64, MemError> {
    let conn = open_db(&paths.state_dir)?;
    reap(paths, &conn, zone)?;
    let left: u64 = rows(paths, &conn, zone)?
        .iter()
        .filter(|r| r.state == "dirty" && !r.owner_alive)
        .map(|r| r.end() - r.clean_to.max(r.start))
        .sum();
    drop(conn);
    if left > 0 {
        spawn_zeroer(paths, zone, mem, None)?;
    }
    Ok(left)
}

/// Zero every dirty extent of `zone` here and now, then wait until live zeroers have finished
/// theirs: afterwards every page not held by a running job is zero.
pub fn finish(paths: &HostPaths, zone: &str, mem: &ZoneMemory) -> Result<ZeroReport, MemError> {
    let t = Instant::now();
    let mut report = ZeroReport::default();
    loop {
        report.bytes += zero_pending(paths, zone, mem)?.bytes;
        if !extents(paths, zone)?.iter().any(|r| r.state == "dirty") {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    report.seconds = t.elapsed().as_secs_f64();
    Ok(report)
}

/// Zeroing throughput recorded by zeroers of `zone` (bytes, seconds), newest first.
pub fn zeroing_log(paths: &HostPaths, zone: &str) -> Result<Vec<(u64, f64)>, MemError> {
    let conn = open_db(&paths.state_dir)?;
    let mut stmt =
        conn.prepare("SELECT bytes, seconds FROM zone_zeroing WHERE zone = ?1 ORDER BY id DESC")?;
    let out = stmt
        .query_map([zone], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(out)
}

/// How a zone's memory of `bytes` is split: (1 GiB pages, 2 MiB pages).
pub fn split(bytes: u64, gigantic: u64) -> (u64, u64) {
    let g = gigantic.min(bytes / GIB);
    (g, (bytes - g * GIB).div_ceil(2 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> ZoneMemory {
        ZoneMemory {
            segments: vec![
                Segment {
                    start: 0,
                    size: 2 * GIB,
                    page_kib: 1 << 20,
                    path: "/a".into(),
                },
                Segment {
                    start: 2 * GIB,
                    size: 512 << 20,
                    page_kib: 2048,
                    path: "/b".into(),
                },
            ],
            numa_node: 0,
        }
    }

    fn ext(start: u64, len: u64, state: &str, clean_to: u64, alive: bool) -> Extent {
        Extent {
            id: start as i64,
            start,
            len,
            state: state.into(),
            owner: Some("1:1".into()),
            owner_alive: alive,
            clean_to,
        }
    }

    #[test]
    fn small_jobs_go_to_the_2m_segment_and_big_ones_straddle() {
        let m = mem();
        let p = place(&m, &[], 64 << 20).unwrap();
        assert_eq!((p.start, p.end), (2 * GIB, 2 * GIB + (64 << 20)));
        let p = place(&m, &[], 2 * GIB + (100 << 20)).unwrap();
        assert_eq!((p.start, p.end), (0, 2 * GIB + (100 << 20)));
        assert_eq!(
            m.parts(p.start, p.end - p.start)
                .iter()
                .map(|x| x.len)
                .collect::<Vec<_>>(),
            vec![2 * GIB, 100 << 20]
        );
        // Inside the 1 GiB segment extents are whole pages.
        let busy = [ext(2 * GIB, 512 << 20, "job", 0, true)];
        let p = place(&m, &busy, 100 << 20).unwrap();
        assert_eq!((p.start, p.end), (0, GIB));
        let full = [ext(0, 2 * GIB + (512 << 20), "job", 0, true)];
        assert!(place(&m, &full, 2 << 20).is_none());
    }

    #[test]
    fn clean_space_is_preferred_and_dirty_space_waits_for_its_prefix() {
        let m = mem();
        let rows = [ext(2 * GIB, 256 << 20, "dirty", 2 * GIB, false)];
        // Fits in the clean rest of the 2M segment: no wait.
        let p = place(&m, &rows, 128 << 20).unwrap();
        assert!(p.waits.is_empty());
        assert_eq!(p.start, 2 * GIB + (256 << 20));
        // Needs the dirty part: waits for exactly its first 300-256... of the row.
        let rows = [
            ext(0, 2 * GIB, "job", 0, true),
            ext(2 * GIB, 512 << 20, "dirty", 2 * GIB + (64 << 20), true),
        ];
        let p = place(&m, &rows, 128 << 20).unwrap();
        assert_eq!(p.start, 2 * GIB);
        assert_eq!(p.waits.len(), 1);
        assert_eq!(p.waits[0].1, 2 * GIB + (128 << 20));
        assert_eq!(split(5 * GIB + (6 << 20), 3), (3, 1027));
        assert_eq!(split(5 * GIB, 0), (0, 2560));
    }
}
