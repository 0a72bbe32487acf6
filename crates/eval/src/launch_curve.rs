//! `dualstack bench vmm --launch-curve`: launch time vs guest memory size for the three ways the
//! HPC VMM gets memory, measured side by side in one run (issue 15):
//!
//! - **warm zone**: a zone holding the largest size as populated hugetlbfs files; each job maps
//!   a claimed extent (no allocation, no zeroing);
//! - **cold hugetlb**: huge pages from the host pool, populated (allocated + zeroed by the
//!   kernel) and locked for each job;
//! - **lazy**: anonymous 4 KiB pages faulted in by the guest.
//!
//! Launch = the VMM's `launch_s` (from the start of the run to the guest's first instruction)
//! plus any wait for zone pages still being zeroed. Also: the zone's background zeroing
//! throughput (as logged by its zeroers) vs `memset` bandwidth of one core.

use std::path::Path;
use std::time::Instant;

use dualstack_jobs::{Host, JobSpec, MemoryBacking, ZoneSel};
use dualstack_zones::{CpuRequest, HostPaths, HostTasks, ZoneOptions, ZoneRequest};
use serde::Serialize;

use crate::guests;
use crate::stats::{summarize, Summary};

/// What to measure.
#[derive(Clone, Debug)]
pub struct CurveOptions {
    pub paths: HostPaths,
    /// Guest memory sizes, ascending.
    pub sizes: Vec<u64>,
    pub reps: usize,
}

/// Failure of the curve benchmark.
#[derive(Debug, thiserror::Error)]
pub enum CurveError {
    #[error(transparent)]
    Guest(#[from] guests::GuestError),
    #[error("creating the benchmark zone")]
    Zone(#[source] Box<dualstack_zones::ZoneError>),
    #[error("loading the node topology")]
    Node(#[source] Box<dualstack_zones::StatusError>),
    #[error("{what}")]
    Job {
        what: String,
        #[source]
        source: Box<dualstack_jobs::JobError>,
    },
    #[error("{what}: the job did not use {expected} memory (stats say {got})")]
    Source {
        what: String,
        expected: &'static str,
        got: String,
    },
    #[error(transparent)]
    HugePages(#[from] dualstack_zones::hugepages::HugePageError),
    #[error(transparent)]
    Memory(#[from] dualstack_zones::MemError),
}

/// Launch times at one size (milliseconds).
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub memory_mib: u64,
    pub warm_ms: Summary,
    pub cold_ms: Summary,
    pub lazy_ms: Summary,
    /// Of the warm launches: time spent waiting for zeroing (0 when the zeroer was done).
    pub warm_zero_wait_ms: Summary,
}

/// The whole curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurveReport {
    pub points: Vec<Point>,
    /// Largest / smallest median warm launch.
    pub warm_flatness: f64,
    /// Median warm launch at 2 GiB (when measured).
    pub warm_2g_ms: Option<f64>,
    /// Background zeroing throughput (bytes zeroed / seconds, over the zeroers' passes).
    pub zeroing_gbps: f64,
    /// `memset` of a populated 2 MiB-page buffer on one core.
    pub memset_gbps: f64,
    pub zeroing_vs_memset: f64,
    /// 1 GiB pages in the benchmark zone (the rest are 2 MiB pages).
    pub zone_1g_pages: u64,
}

fn spec(guest: &Path, memory: u64) -> JobSpec {
    let mut s = JobSpec::new(guest.display().to_string(), vec![]);
    s.memory = Some(memory);
    s.cpus = Some(1);
    s.stdout = Some("/dev/null".into());
    s
}

fn launch_ms(r: &dualstack_jobs::JobResult) -> f64 {
    (r.stats.launch_s + r.stats.memory.zero_wait_s) * 1e3
}

fn source_name(r: &dualstack_jobs::JobResult) -> String {
    serde_json::to_value(r.stats.memory.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn run_one(
    host: &Host,
    spec: &JobSpec,
    what: &str,
    expected: &'static str,
) -> Result<dualstack_jobs::JobResult, CurveError> {
    let r = dualstack_jobs::run(spec, host).map_err(|e| CurveError::Job {
        what: what.into(),
        source: Box::new(e),
    })?;
    let got = source_name(&r);
    if got != expected {
        return Err(CurveError::Source {
            what: what.into(),
            expected,
            got,
        });
    }
    Ok(r)
}

/// Release the benchmark zone on every path out.
struct ZoneGuard<'a>(&'a HostPaths, String);
impl Drop for ZoneGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = dualstack_zones::release(self.0, &self.1) {
            eprintln!(
                "dualstack: could not release zone {} ({e}); run `dualstack recover`",
                self.1
            );
        }
    }
}

/// Measure the curve. `progress` gets one line per step.
pub fn run(o: &CurveOptions, progress: &mut dyn FnMut(&str)) -> Result<CurveReport, CurveError> {
    let hello = guests::build(&guests::HELLO, &guests::cache_dir())?;
    let max = o.sizes.iter().copied().max().unwrap_or(64 << 20);
    let reps = o.reps.max(1);
    let mut warm: Vec<Vec<f64>> = vec![Vec::new(); o.sizes.len()];
    let mut waits: Vec<Vec<f64>> = vec![Vec::new(); o.sizes.len()];
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); o.sizes.len()];
    let mut lazy: Vec<Vec<f64>> = vec![Vec::new(); o.sizes.len()];

    // Warm zone: one core, the largest size.
    let name = format!("curve{}", std::process::id());
    progress(&format!(
        "creating zone {name} with {} MiB of warm memory",
        max >> 20
    ));
    let node = dualstack_zones::load_node(&o.paths).map_err(|e| CurveError::Node(Box::new(e)))?;
    let req = ZoneRequest {
        cpus: CpuRequest::Cores(1),
        memory_bytes: max,
        numa_node: None,
        hugepage_kib: 2048,
    };
    let opts = ZoneOptions {
        host_tasks: HostTasks::Leave,
        steer_irqs: false,
        narrow_workqueue: false,
        offline_memory: false,
    };
    let created = dualstack_zones::create(&o.paths, &node, &name, &req, &opts)
        .map_err(|e| CurveError::Zone(Box::new(e)))?;
    let guard = ZoneGuard(&o.paths, name.clone());
    let mem = created.zone.memory.clone();
    let zone_1g_pages = mem
        .as_ref()
        .map(|m| {
            m.segments
                .iter()
                .filter(|s| s.page_kib == 1 << 20)
                .map(|s| s.size >> 30)
                .sum()
        })
        .unwrap_or(0);
    let host = Host::new(o.paths.clone());
    // One unrecorded job first: the program, KVM and the zone's files are then cached as they
    // are for every later job.
    let mut s = spec(&hello, o.sizes[0]);
    s.zone = ZoneSel::Named(name.clone());
    run_one(&host, &s, "warm-up job", "warm_zone")?;
    for (i, &size) in o.sizes.iter().enumerate() {
        progress(&format!("warm zone: {} MiB x {reps}", size >> 20));
        for _ in 0..reps {
            // A job arriving once the previous job's pages are zeroed (the normal case).
            if let Some(m) = &mem {
                dualstack_zones::memory::finish(&o.paths, &name, m)?;
            }
            let mut s = spec(&hello, size);
            s.zone = ZoneSel::Named(name.clone());
            let r = run_one(&host, &s, "warm zone job", "warm_zone")?;
            warm[i].push(launch_ms(&r));
            waits[i].push(r.stats.memory.zero_wait_s * 1e3);
        }
    }
    if let Some(m) = &mem {
        dualstack_zones::memory::finish(&o.paths, &name, m)?;
    }
    let log = dualstack_zones::memory::zeroing_log(&o.paths, &name)?;
    let (zb, zs) = log
        .iter()
        .filter(|(b, _)| *b >= 64 << 20)
        .fold((0u64, 0f64), |(b, s), (bb, ss)| (b + bb, s + ss));
    let zeroing_gbps = if zs > 0.0 { zb as f64 / zs / 1e9 } else { 0.0 };
    drop(guard);

    // Cold hugetlb and lazy, interleaved per size, on the same core the zone had.
    let _pool = crate::hugepages::Reservation::ensure_free_2m(max / (2 << 20))?;
    let host = Host::new(o.paths.clone());
    for (i, &size) in o.sizes.iter().enumerate() {
        progress(&format!(
            "cold hugetlb and lazy: {} MiB x {reps}",
            size >> 20
        ));
        for _ in 0..reps {
            let s = spec(&hello, size);
            let r = run_one(&host, &s, "cold hugetlb job", "cold_hugetlb")?;
            cold[i].push(launch_ms(&r));
            let mut s = spec(&hello, size);
            s.memory_backing = MemoryBacking::Lazy;
            let r = run_one(&host, &s, "lazy job", "lazy")?;
            lazy[i].push(launch_ms(&r));
        }
    }
    let memset_gbps = memset_bandwidth(512 << 20);
    let points: Vec<Point> = o
        .sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| Point {
            memory_mib: size >> 20,
            warm_ms: summarize(&warm[i]),
            cold_ms: summarize(&cold[i]),
            lazy_ms: summarize(&lazy[i]),
            warm_zero_wait_ms: summarize(&waits[i]),
        })
        .collect();
    let medians: Vec<f64> = points.iter().map(|p| p.warm_ms.median).collect();
    let lo = medians.iter().copied().fold(f64::MAX, f64::min);
    let hi = medians.iter().copied().fold(0.0, f64::max);
    Ok(CurveReport {
        warm_2g_ms: points
            .iter()
            .find(|p| p.memory_mib == 2048)
            .map(|p| p.warm_ms.median),
        warm_flatness: if lo > 0.0 { hi / lo } else { 0.0 },
        points,
        zeroing_gbps,
        memset_gbps,
        zeroing_vs_memset: if memset_gbps > 0.0 {
            zeroing_gbps / memset_gbps
        } else {
            0.0
        },
        zone_1g_pages,
    })
}

/// `memset` bandwidth of one core over a populated, 2 MiB-page buffer of `len` bytes (best of
/// 5 passes, after one pass that faults the pages in).
pub fn memset_bandwidth(len: usize) -> f64 {
    // SAFETY: a new private anonymous mapping of our own, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return 0.0;
    }
    // SAFETY: advice and writes on the mapping made above, which nothing else uses.
    unsafe {
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
        std::ptr::write_bytes(p.cast::<u8>(), 1, len);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len) };
        best = best.min(t.elapsed().as_secs_f64());
    }
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, len) };
    len as f64 / best / 1e9
}

/// The report as text.
pub fn render(r: &CurveReport) -> String {
    let mut s = String::from(
        "launch time vs guest memory (median ms over the repetitions; launch = VMM start to the guest's first instruction, plus any wait for zeroing)\n",
    );
    s += &format!(
        "{:>9} {:>12} {:>14} {:>10} {:>12} {:>12}\n",
        "memory", "warm zone", "cold hugetlb", "lazy", "cold/warm", "warm wait"
    );
    for p in &r.points {
        s += &format!(
            "{:>5} MiB {:>12.2} {:>14.2} {:>10.2} {:>11.1}x {:>12.2}\n",
            p.memory_mib,
            p.warm_ms.median,
            p.cold_ms.median,
            p.lazy_ms.median,
            p.cold_ms.median / p.warm_ms.median.max(1e-9),
            p.warm_zero_wait_ms.median
        );
    }
    s += &format!(
        "warm zone: largest/smallest median launch {:.2}x (target <= 2x){}; zone had {} x 1 GiB pages\n",
        r.warm_flatness,
        r.warm_2g_ms
            .map(|m| format!(", {m:.2} ms at 2 GiB (target <= 20 ms)"))
            .unwrap_or_default(),
        r.zone_1g_pages
    );
    s += &format!(
        "zeroing between jobs: {:.2} GB/s on a housekeeping core vs memset {:.2} GB/s on one core = {:.0}% (target >= 80%)\n",
        r.zeroing_gbps,
        r.memset_gbps,
        r.zeroing_vs_memset * 100.0
    );
    s
}
