//! `dualstack bench slurm`: what a dualstack zone costs a Slurm job, measured side by side on one
//! cluster in one run.
//!
//! Each repetition submits two `sbatch -N<nodes> --wait` jobs, one asking for a zone
//! (`--comment=dualstack:memory=...`) and one not, whose single step is
//! `srun dualstack run -- stamp`: the guest's first act prints the wall clock, so
//! *submission -> first guest instruction* is read per node. The zone job's steps run in the
//! zone's huge pages; the other's with lazy memory (`DUALSTACK_SLURM_NO_ZONE=1`), which is what a
//! job that does not ask gets. Prolog and Epilog durations come from each node's hook log
//! (`<state dir>/slurm/hooks.log`). The cluster is `contrib/slurm/test-cluster`, brought up and
//! taken down by the benchmark unless an existing one is named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::guests;

/// The guest that prints its start time.
pub const STAMP: guests::GuestSource = guests::GuestSource {
    name: "stamp",
    source: include_str!("../guests/stamp.c"),
    openmp: false,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repetitions (one zone job and one plain job each).
    pub reps: usize,
    /// Nodes per job.
    pub nodes: u32,
    /// Zone memory each node's zone gets.
    pub zone_memory: String,
    /// The `dualstack` executable the jobs' steps run.
    pub dualstack_exe: PathBuf,
    /// An existing cluster's `slurm.conf` (and its dualstack site config); `None`: bring up
    /// `test_cluster` for the run.
    pub existing: Option<(PathBuf, PathBuf)>,
    /// `contrib/slurm/test-cluster`.
    pub test_cluster: PathBuf,
    /// Scratch directory for the guest and the jobs' output (readable by slurmstepd).
    pub scratch: PathBuf,
}

/// Failure of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Guest(#[from] guests::GuestError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Slurm(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Median, min and max of a sample, in ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(xs: &[f64]) -> Self {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self::default();
        }
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Self {
            n: v.len(),
            median_ms: median,
            min_ms: v[0],
            max_ms: v[v.len() - 1],
        }
    }
}

/// The figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub nodes: u32,
    pub reps: usize,
    /// Submission -> first guest instruction, one sample per node and job.
    pub start_with_zone: Summary,
    pub start_without_zone: Summary,
    /// Median with minus median without.
    pub zone_adds_ms: f64,
    /// Prolog and Epilog of the zone jobs, one sample per node and job.
    pub prolog: Summary,
    pub epilog: Summary,
    /// Prolog and Epilog of the jobs that did not ask (nothing to do).
    pub prolog_no_zone: Summary,
    pub epilog_no_zone: Summary,
    /// The zone prologs' time per step (in the order they run).
    pub prolog_steps: Vec<(String, Summary)>,
}

/// Target of issue 14: the zone adds at most this per node.
pub const TARGET_MS_PER_NODE: f64 = 50.0;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The `stamp_ns=` values of a job's output (`srun -l` prefixes each with its task).
pub fn stamps(output: &str) -> Vec<i128> {
    output
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("stamp_ns="))
        })
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// `prolog job 12: ok in 17.3 ms, ...` -> 17.3 for job 12 (`what` = "prolog" | "epilog").
pub fn hook_ms(log: &str, what: &str, job: u64) -> Vec<f64> {
    let head = format!("{what} job {job}: ok in ");
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find(&head)? + head.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The per-step times of job `job`'s prolog lines (` | steps: label=ms; ...`).
pub fn hook_steps(log: &str, job: u64) -> Vec<(String, f64)> {
    let head = format!("prolog job {job}: ok in ");
    log.lines()
        .filter(|l| l.contains(&head))
        .filter_map(|l| l.split_once(" | steps: ").map(|(_, s)| s))
        .flat_map(|s| s.split("; "))
        .filter_map(|kv| {
            let (k, v) = kv.rsplit_once('=')?;
            Some((step_label(k), v.trim().parse().ok()?))
        })
        .collect()
}

/// A step's label with the job and node taken out (`mkdir <instance>/zone-slurm-12` and
/// `write zone-slurm-12/cpuset.cpus` are one step of every job).
fn step_label(label: &str) -> String {
    label
        .split(' ')
        .map(|w| {
            let w = match w.split_once('/') {
                Some((inst, rest)) if inst.starts_with("dualstack-") => {
                    format!("<instance>/{rest}")
                }
                _ => w.to_string(),
            };
            match w.find("zone-slurm-") {
                Some(i) => {
                    let head = &w[..i + "zone-slurm-".len()];
                    let tail = w[head.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
                    format!("{head}<job>{tail}")
                }
                None => w,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Cluster {
    conf: PathBuf,
    site: PathBuf,
    /// `Some(script)`: ours, taken down on drop.
    ours: Option<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let (Some(script), Some(dir)) = (&self.ours, self.conf.parent()) {
            let _ = Command::new(script).arg("down").arg(dir).status();
        }
    }
}

fn cluster(o: &Options) -> Result<Cluster, BenchError> {
    if let Some((conf, site)) = &o.existing {
        return Ok(Cluster {
            conf: conf.clone(),
            site: site.clone(),
            ours: None,
        });
    }
    let out = Command::new(&o.test_cluster)
        .args(["up", "--nodes", &o.nodes.to_string(), "--dualstack"])
        .arg(&o.dualstack_exe)
        .env_remove("SLURM_CONF")
        .output()
        .map_err(io(format!("running {}", o.test_cluster.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let conf = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("export SLURM_CONF="))
        .map(PathBuf::from);
    match (out.status.success(), conf) {
        (true, Some(conf)) => {
            let site = conf.with_file_name("dualstack-slurm.toml");
            Ok(Cluster {
                conf,
                site,
                ours: Some(o.test_cluster.clone()),
            })
        }
        _ => Err(BenchError::Slurm(format!(
            "the test cluster did not come up: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Run one job to its end; returns (job id, submission time, its output).
fn job(
    c: &Cluster,
    o: &Options,
    guest: &Path,
    zone: bool,
) -> Result<(u64, i128, String), BenchError> {
    let exe = o.dualstack_exe.display();
    let guest = guest.display();
    let step = if zone {
        format!("srun -l {exe} run --memory 32M -- {guest}")
    } else {
        format!(
            "DUALSTACK_SLURM_NO_ZONE=1 srun -l {exe} run --memory 32M --memory-backing lazy -- {guest}"
        )
    };
    let out_file = o.scratch.join("job-%j.out");
    let mut cmd = Command::new("sbatch");
    cmd.env("SLURM_CONF", &c.conf)
        .env("DUALSTACK_SLURM_CONFIG", &c.site)
        .arg("--parsable")
        .arg("--wait")
        .arg(format!("-N{}", o.nodes))
        .arg(format!("--output={}", out_file.display()))
        .arg(format!("--chdir={}", o.scratch.display()));
    if zone {
        cmd.arg(format!("--comment=dualstack:memory={}", o.zone_memory));
    }
    cmd.arg(format!("--wrap={step}"));
    let t0 = now_ns();
    let out = cmd.output().map_err(io("running sbatch"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id: u64 = stdout
        .trim()
        .split(';')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            BenchError::Slurm(format!(
                "sbatch gave no job id: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
    let path = o.scratch.join(format!("job-{id}.out"));
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    if !out.status.success() {
        return Err(BenchError::Slurm(format!(
            "job {id} (zone: {zone}) failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((id, t0, text))
}

/// Run the benchmark; `progress` gets one line per job.
pub fn run(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    std::fs::create_dir_all(&o.scratch).map_err(io(format!("creating {}", o.scratch.display())))?;
    // slurmstepd runs the steps as the job's user: the guest and the output must be reachable.
    let _ = std::fs::set_permissions(
        &o.scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    let guest = guests::build(&STAMP, &o.scratch)?;
    progress("bringing the cluster up");
    let c = cluster(o)?;
    let site = dualstack_slurm::SiteConfig::load_from(&c.site)
        .map_err(|e| BenchError::Slurm(format!("{}: {e}", c.site.display())))?;
    let mut start = BTreeMap::from([(true, vec![]), (false, vec![])]);
    let mut jobs: Vec<(u64, bool)> = vec![];
    // One unrecorded pair first: page cache, slurmd's first fork of slurmstepd.
    for rep in 0..=o.reps {
        for zone in [true, false] {
            let (id, t0, text) = job(&c, o, &guest, zone)?;
            let s = stamps(&text);
            if s.len() != o.nodes as usize {
                return Err(BenchError::Slurm(format!(
                    "job {id}: {} of {} nodes printed a start time:\n{text}",
                    s.len(),
                    o.nodes
                )));
            }
            let ms: Vec<f64> = s.iter().map(|t| (t - t0) as f64 / 1e6).collect();
            progress(&format!(
                "rep {rep}{} job {id} zone={zone}: first guest instruction after {:?} ms",
                if rep == 0 { " (warm-up)" } else { "" },
                ms.iter().map(|m| m.round()).collect::<Vec<_>>()
            ));
            if rep > 0 {
                start.get_mut(&zone).expect("both keys").extend(ms);
                jobs.push((id, zone));
            }
        }
    }
    let mut hooks: BTreeMap<(&str, bool), Vec<f64>> = BTreeMap::new();
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    for name in site.node.keys() {
        let Ok(s) = site.node(name) else { continue };
        let log = std::fs::read_to_string(dualstack_slurm::hook_log_path(&s)).unwrap_or_default();
        for &(id, zone) in &jobs {
            if zone {
                for (label, ms) in hook_steps(&log, id) {
                    match steps.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, v)) => v.push(ms),
                        None => steps.push((label, vec![ms])),
                    }
                }
            }
            for what in ["prolog", "epilog"] {
                hooks
                    .entry((what, zone))
                    .or_default()
                    .extend(hook_ms(&log, what, id));
            }
        }
    }
    drop(c);
    let with = Summary::of(&start[&true]);
    let without = Summary::of(&start[&false]);
    let h = |what, zone| Summary::of(hooks.get(&(what, zone)).map_or(&[][..], Vec::as_slice));
    Ok(Report {
        nodes: o.nodes,
        reps: o.reps,
        zone_adds_ms: with.median_ms - without.median_ms,
        start_with_zone: with,
        start_without_zone: without,
        prolog: h("prolog", true),
        epilog: h("epilog", true),
        prolog_no_zone: h("prolog", false),
        epilog_no_zone: h("epilog", false),
        prolog_steps: steps
            .iter()
            .map(|(l, v)| (l.clone(), Summary::of(v)))
            .collect(),
    })
}

/// The report as a table.
pub fn render(r: &Report) -> String {
    let row = |name: &str, s: &Summary| {
        format!(
            "  {name:<44} {:>9.1} {:>9.1} {:>9.1} {:>4}\n",
            s.median_ms, s.min_ms, s.max_ms, s.n
        )
    };
    let mut out = format!(
        "Slurm job start with and without a dualstack zone ({} nodes, {} reps)\n  {:<44} {:>9} {:>9} {:>9} {:>4}\n",
        r.nodes, r.reps, "ms", "median", "min", "max", "n"
    );
    out += &row(
        "submission -> first guest instruction, zone",
        &r.start_with_zone,
    );
    out += &row(
        "submission -> first guest instruction, none",
        &r.start_without_zone,
    );
    out += &row("prolog (creates the zone)", &r.prolog);
    out += &row("epilog (releases the zone)", &r.epilog);
    out += &row("prolog, job without a zone", &r.prolog_no_zone);
    out += &row("epilog, job without a zone", &r.epilog_no_zone);
    let per_node = r.prolog.median_ms - r.prolog_no_zone.median_ms;
    out += &format!(
        "  the zone adds {:.1} ms to job start (medians; nodes run their prologs in parallel)\n  \
         prolog cost of the zone per node: {per_node:.1} ms (target <= {TARGET_MS_PER_NODE:.0} ms: {})\n",
        r.zone_adds_ms,
        if per_node <= TARGET_MS_PER_NODE { "met" } else { "MISSED" }
    );
    if !r.prolog_steps.is_empty() {
        out += "  prolog with a zone, per step:\n";
        for (label, s) in &r.prolog_steps {
            out += &row(&format!("  {label}"), s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prolog_steps_parse() {
        let log = "1.0 prolog job 7: ok in 17.3 ms, zone slurm-7 on CPUs 0 | steps: configuration=0.10; create: a + b=3.50\n\
                   1.1 prolog job 8: ok in 1.0 ms, no zone | steps: configuration=0.20\n";
        assert_eq!(
            hook_steps(log, 7),
            vec![("configuration".into(), 0.1), ("create: a + b".into(), 3.5)]
        );
        assert_eq!(hook_ms(log, "prolog", 7), vec![17.3]);
        assert_eq!(
            step_label("create: mkdir dualstack-slurm-ab-n1/zone-slurm-12"),
            "create: mkdir <instance>/zone-slurm-<job>"
        );
        assert_eq!(
            step_label("create: write zone-slurm-3/cpuset.cpus"),
            "create: write zone-slurm-<job>/cpuset.cpus"
        );
    }

    #[test]
    fn stamps_and_hook_lines_parse() {
        let out = "0: stamp_ns=1700000000123456789\n1: stamp_ns=1700000000223456789\nnoise\n";
        assert_eq!(
            stamps(out),
            [1_700_000_000_123_456_789, 1_700_000_000_223_456_789]
        );
        let log = "1733.1 prolog job 7: ok in 17.3 ms, zone slurm-7 on CPUs 0\n\
                   1733.2 prolog job 8: ok in 1.0 ms, no zone\n\
                   1733.9 epilog job 7: ok in 9.5 ms, zone released\n\
                   1734.0 prolog job 7: FAILED: whatever\n";
        assert_eq!(hook_ms(log, "prolog", 7), [17.3]);
        assert_eq!(hook_ms(log, "epilog", 7), [9.5]);
        assert!(hook_ms(log, "epilog", 8).is_empty());
    }

    #[test]
    fn summaries() {
        let s = Summary::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.n, s.median_ms, s.min_ms, s.max_ms), (3, 2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 2.0]).median_ms, 1.5);
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
