//! `dualstack bench mpi`: MPI ping-pong latency and bandwidth (1 B .. 4 MiB) between two ranks,
//! MPI_Allreduce latency on every rank, and an MPI HPCCG (conjugate gradients with a halo
//! exchange, verified against its known solution), natively and with one HPC VM per rank, under
//! the same launcher (MPICH's `mpiexec.hydra`), alternating the two configurations in one run.
//! The programs (`mpi/mpi_bench.c`, `mpi/hpccg_mpi.c`, written for this project) are linked
//! statically against Debian's libmpich.a when the benchmark starts.
//!
//! Both configurations bind each rank to its own core (`-bind-to core`) and run with the
//! same UCX settings: `UCX_TLS=self,sm` (the ranks share a
//! node: shared memory only; UCX's TCP transport would otherwise poll its epoll set on every
//! progress call, one system call per poll) and `UCX_POSIX_USE_PROC_LINK=n` (named /dev/shm
//! segments instead of `/proc/<pid>/fd` links, which do not cross VMs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

const SOURCE: &str = include_str!("mpi/mpi_bench.c");
/// The MPI HPCCG (also the isolation experiment's `hpccg-mpi` app).
pub const HPCCG_SOURCE: &str = include_str!("mpi/hpccg_mpi.c");
const NOUDEV: &str = include_str!("mpi/noudev.c");
const MPIEXEC: &str = "mpiexec.hydra";
pub const LIBMPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.a";

/// The UCX settings both configurations run with (see the module docs).
pub const UCX_ENV: [(&str, &str); 2] = [("UCX_TLS", "self,sm"), ("UCX_POSIX_USE_PROC_LINK", "n")];

#[derive(Debug, thiserror::Error)]
pub enum MpiBenchError {
    #[error("MPICH is not installed ({0} missing): run scripts/install-deps")]
    NoMpich(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("building the MPI benchmark failed:\n{0}")]
    Build(String),
    #[error("the {config} MPI run failed (exit {status}):\n{output}")]
    Run {
        config: &'static str,
        status: i32,
        output: String,
    },
    #[error("the {0} MPI run printed no {1} figures")]
    Parse(&'static str, &'static str),
    #[error("the {config} MPI HPCCG run got a wrong answer:\n{output}")]
    Verify {
        config: &'static str,
        output: String,
    },
}

pub struct Options {
    /// The `dualstack` executable (each rank runs `dualstack run`).
    pub dualstack_exe: PathBuf,
    pub scratch: PathBuf,
    /// Runs of each configuration (alternating); per size the best is kept.
    pub reps: usize,
    /// Iteration count scale of the benchmark program (1.0: 20000 small messages per size).
    pub scale: f64,
    /// Guest memory of each rank's VM, as `dualstack run --memory` takes it.
    pub memory: String,
    /// Problem of the MPI HPCCG.
    pub hpccg: HpccgSize,
}

/// Problem of the MPI HPCCG: points per rank (blocks stacked along z) and CG iterations.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct HpccgSize {
    pub nx: u32,
    pub ny: u32,
    pub nz: u32,
    pub iterations: u32,
}

impl HpccgSize {
    /// The bench's problem: 64^3 points per rank (about 90 MB), or 32^3 with `quick`.
    pub fn bench(quick: bool) -> Self {
        let n = if quick { 32 } else { 64 };
        Self {
            nx: n,
            ny: n,
            nz: n,
            iterations: 150,
        }
    }

    /// The program's arguments.
    pub fn args(&self) -> [String; 4] {
        [self.nx, self.ny, self.nz, self.iterations].map(|v| v.to_string())
    }
}

/// What one MPI HPCCG run printed (rank 0's summary line and verdict).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HpccgRun {
    /// Solve seconds of the slowest rank.
    pub time_s: f64,
    pub mflops: f64,
    pub iterations: u64,
    /// Final residual norm / initial residual norm.
    pub residual: f64,
    /// Largest deviation of the solution from all ones.
    pub max_error: f64,
    /// The program's own check (its PASS line).
    pub passed: bool,
}

impl HpccgRun {
    /// The figures of `out` (the program's stdout); None without its summary line and verdict.
    pub fn parse(out: &str) -> Option<Self> {
        let mut run = None;
        let mut verdict = None;
        for l in out.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["hpccg-mpi", t, m, it, r, e] => {
                    run = (|| {
                        Some(HpccgRun {
                            time_s: t.parse().ok()?,
                            mflops: m.parse().ok()?,
                            iterations: it.parse().ok()?,
                            residual: r.parse().ok()?,
                            max_error: e.parse().ok()?,
                            passed: false,
                        })
                    })();
                }
                ["PASS"] => verdict = Some(true),
                ["FAIL"] => verdict = Some(false),
                _ => {}
            }
        }
        let mut run = run?;
        run.passed = verdict?;
        Some(run)
    }
}

/// MPI HPCCG, native vs one VM per rank (best run of each).
#[derive(Clone, Debug, Serialize)]
pub struct Hpccg {
    pub size: HpccgSize,
    pub native_s: f64,
    pub vm_s: f64,
    /// vm_s / native_s (target <= 1.01).
    pub ratio: f64,
    pub native_mflops: f64,
    pub vm_mflops: f64,
    /// Residual reduction and largest error of the VM run (the native run's are the same).
    pub residual: f64,
    pub max_error: f64,
}

/// One message size of the ping-pong.
#[derive(Clone, Debug, Serialize)]
pub struct PingPong {
    pub bytes: u64,
    pub native_us: f64,
    pub vm_us: f64,
    /// vm_us / native_us (target <= 1.10 for small messages).
    pub latency_ratio: f64,
    pub native_mb_s: f64,
    pub vm_mb_s: f64,
    /// vm / native bandwidth (target >= 0.95 for large messages).
    pub bandwidth_ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Allreduce {
    pub doubles: u64,
    /// The slowest rank's latency (a collective is as fast as its slowest member).
    pub native_us: f64,
    pub vm_us: f64,
    pub ratio: f64,
    /// Each rank's own latency, in rank order.
    pub native_us_per_rank: Vec<f64>,
    pub vm_us_per_rank: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ranks: usize,
    pub reps: usize,
    pub ucx_env: Vec<(String, String)>,
    pub pingpong: Vec<PingPong>,
    pub allreduce: Vec<Allreduce>,
    pub hpccg: Hpccg,
    /// All VM exits of rank 0's VM (start-up included) per message it sent or received.
    pub vm_exits_per_message: f64,
}

/// Figures of one run: per size, (latency us, MB/s) and allreduce us of every rank; rank 0's
/// messages.
#[derive(Default)]
struct Figures {
    pingpong: BTreeMap<u64, (f64, f64)>,
    allreduce: BTreeMap<u64, Vec<f64>>,
    messages: f64,
}

fn parse(out: &str) -> Figures {
    let mut f = Figures::default();
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["pingpong", b, it, us, mbs] => {
                if let (Ok(b), Ok(it), Ok(us), Ok(mbs)) =
                    (b.parse(), it.parse::<f64>(), us.parse(), mbs.parse())
                {
                    f.pingpong.insert(b, (us, mbs));
                    f.messages += 2.0 * it;
                }
            }
            ["allreduce", n, it, us @ ..] if !us.is_empty() => {
                let us: Result<Vec<f64>, _> = us.iter().map(|u| u.parse()).collect();
                if let (Ok(n), Ok(it), Ok(us)) = (n.parse(), it.parse::<f64>(), us) {
                    f.allreduce.insert(n, us);
                    f.messages += it;
                }
            }
            _ => {}
        }
    }
    f
}

/// Build the MPI program `name` from `source` in `scratch`, statically against libmpich.a;
/// returns the executable.
pub fn build(scratch: &Path, name: &str, source: &str) -> Result<PathBuf, MpiBenchError> {
    if !Path::new(LIBMPICH).exists() {
        return Err(MpiBenchError::NoMpich(LIBMPICH.into()));
    }
    let io = |what: &Path| {
        let w = what.display().to_string();
        move |e| MpiBenchError::Io(w, e)
    };
    let src = scratch.join(format!("{name}.c"));
    let stub = scratch.join("noudev.c");
    std::fs::write(&src, source).map_err(io(&src))?;
    std::fs::write(&stub, NOUDEV).map_err(io(&stub))?;
    let out = scratch.join(name);
    // libucs/libucm first and whole: UCX's constructors must run in order in a static link.
    let o = Command::new("gcc")
        .args(["-static", "-O2", "-I/usr/include/x86_64-linux-gnu/mpich"])
        .arg(&src)
        .arg(&stub)
        .arg("-o")
        .arg(&out)
        .args([
            "-Wl,--whole-archive",
            "-lucs",
            "-lucm",
            "-Wl,--no-whole-archive",
        ])
        .args([
            "-lmpich", "-lucp", "-luct", "-lucs", "-lucm", "-lhwloc", "-lnuma",
        ])
        .args(["-lz", "-lm", "-lpthread", "-ldl"])
        .output()
        .map_err(io(Path::new("gcc")))?;
    if !o.status.success() {
        return Err(MpiBenchError::Build(
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    Ok(out)
}

fn config_name(vm: bool) -> &'static str {
    if vm {
        "one-VM-per-rank"
    } else {
        "native"
    }
}

/// Run `argv` on 2 ranks under Hydra, natively or with one VM per rank (rank 0's VM writes
/// its statistics to `stats`); its stdout, or the failure.
fn mpiexec(o: &Options, argv: &[String], vm: bool, stats: &Path) -> Result<String, MpiBenchError> {
    let config = config_name(vm);
    let mut c = Command::new(MPIEXEC);
    // Each rank bound to its own core in both configurations (a VM rank's vCPU then runs on
    // the core Hydra bound its VMM to).
    c.args(["-bind-to", "core", "-n", "2"]);
    if vm {
        // Rank 0 writes its VM's statistics (the exit count); `sh -c exec` keeps the
        // launcher's descriptors and environment.
        let script = format!(
            "if [ \"$PMI_RANK\" = 0 ]; then set -- --stats '{}' \"$@\"; fi; \
             exec '{}' run --memory-backing lazy --memory {} \"$@\"",
            stats.display(),
            o.dualstack_exe.display(),
            o.memory
        );
        c.args(["sh", "-c", &script, "sh"]);
        c.arg("--");
    }
    c.args(argv);
    c.current_dir(&o.scratch);
    for (k, v) in UCX_ENV {
        c.env(k, v);
    }
    let segments = MpiShmSegments::snapshot();
    let out = c.output();
    segments.remove_new();
    let out = out.map_err(|e| MpiBenchError::Io(MPIEXEC.into(), e))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(MpiBenchError::Run {
            config,
            status: out.status.code().unwrap_or(-1),
            output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(text)
}

fn run_hpccg(o: &Options, hpccg: &Path, vm: bool, rep: usize) -> Result<HpccgRun, MpiBenchError> {
    let config = config_name(vm);
    let mut argv = vec![hpccg.display().to_string()];
    argv.extend(o.hpccg.args());
    let stats = o.scratch.join(format!("hpccg-rank0-{rep}.json"));
    let text = mpiexec(o, &argv, vm, &stats)?;
    let run = HpccgRun::parse(&text).ok_or(MpiBenchError::Parse(config, "HPCCG"))?;
    if !run.passed {
        return Err(MpiBenchError::Verify {
            config,
            output: text,
        });
    }
    Ok(run)
}

fn run_once(
    o: &Options,
    bench: &Path,
    vm: bool,
    rep: usize,
) -> Result<(Figures, Option<u64>), MpiBenchError> {
    let config = config_name(vm);
    let stats = o.scratch.join(format!("rank0-{rep}.json"));
    let text = mpiexec(
        o,
        &[bench.display().to_string(), o.scale.to_string()],
        vm,
        &stats,
    )?;
    let f = parse(&text);
    if f.pingpong.is_empty() {
        return Err(MpiBenchError::Parse(config, "ping-pong"));
    }
    let exits = if vm {
        std::fs::read_to_string(&stats)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["exits_total"].as_u64())
    } else {
        None
    };
    Ok((f, exits))
}

/// Run the comparison. `progress` receives one line per run.
pub fn run(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, MpiBenchError> {
    if Command::new(MPIEXEC).arg("--version").output().is_err() {
        return Err(MpiBenchError::NoMpich(MPIEXEC.into()));
    }
    std::fs::create_dir_all(&o.scratch)
        .map_err(|e| MpiBenchError::Io(o.scratch.display().to_string(), e))?;
    let bench = build(&o.scratch, "mpi_bench", SOURCE)?;
    let hpccg = build(&o.scratch, "hpccg_mpi", HPCCG_SOURCE)?;
    let reps = o.reps.max(1);
    let mut native: Vec<Figures> = Vec::new();
    let mut vm: Vec<Figures> = Vec::new();
    let mut exits_per_msg = Vec::new();
    let (mut hpccg_native, mut hpccg_vm): (Vec<HpccgRun>, Vec<HpccgRun>) = (vec![], vec![]);
    for rep in 0..reps {
        progress(&format!("run {}/{reps}: native", rep + 1));
        native.push(run_once(o, &bench, false, rep)?.0);
        progress(&format!("run {}/{reps}: one VM per rank", rep + 1));
        let (f, exits) = run_once(o, &bench, true, rep)?;
        if let Some(e) = exits {
            exits_per_msg.push(e as f64 / f.messages.max(1.0));
        }
        vm.push(f);
        progress(&format!("run {}/{reps}: MPI HPCCG native", rep + 1));
        hpccg_native.push(run_hpccg(o, &hpccg, false, rep)?);
        progress(&format!(
            "run {}/{reps}: MPI HPCCG one VM per rank",
            rep + 1
        ));
        hpccg_vm.push(run_hpccg(o, &hpccg, true, rep)?);
    }
    // Per size the best run of each configuration: noise only ever adds time.
    let best_pp = |runs: &[Figures], b: u64| {
        runs.iter()
            .filter_map(|f| f.pingpong.get(&b))
            .fold((f64::INFINITY, 0.0f64), |(us, mbs), &(u, m)| {
                (us.min(u), mbs.max(m))
            })
    };
    // Per rank the best of its runs.
    let best_ar = |runs: &[Figures], n: u64| -> Vec<f64> {
        runs.iter()
            .filter_map(|f| f.allreduce.get(&n))
            .fold(Vec::new(), |best: Vec<f64>, us| {
                us.iter()
                    .enumerate()
                    .map(|(r, &u)| best.get(r).map_or(u, |&b| b.min(u)))
                    .collect()
            })
    };
    let slowest = |us: &[f64]| us.iter().copied().fold(f64::NAN, f64::max);
    let pingpong = native[0]
        .pingpong
        .keys()
        .map(|&b| {
            let (nu, nm) = best_pp(&native, b);
            let (vu, vmb) = best_pp(&vm, b);
            PingPong {
                bytes: b,
                native_us: nu,
                vm_us: vu,
                latency_ratio: vu / nu,
                native_mb_s: nm,
                vm_mb_s: vmb,
                bandwidth_ratio: vmb / nm,
            }
        })
        .collect();
    let allreduce = native[0]
        .allreduce
        .keys()
        .map(|&n| {
            let (nr, vr) = (best_ar(&native, n), best_ar(&vm, n));
            let (nu, vu) = (slowest(&nr), slowest(&vr));
            Allreduce {
                doubles: n,
                native_us: nu,
                vm_us: vu,
                ratio: vu / nu,
                native_us_per_rank: nr,
                vm_us_per_rank: vr,
            }
        })
        .collect();
    let fastest = |runs: &[HpccgRun]| {
        *runs
            .iter()
            .min_by(|a, b| a.time_s.total_cmp(&b.time_s))
            .expect("at least one run")
    };
    let (hn, hv) = (fastest(&hpccg_native), fastest(&hpccg_vm));
    let hpccg = Hpccg {
        size: o.hpccg,
        native_s: hn.time_s,
        vm_s: hv.time_s,
        ratio: hv.time_s / hn.time_s,
        native_mflops: hn.mflops,
        vm_mflops: hv.mflops,
        residual: hv.residual,
        max_error: hv.max_error,
    };
    Ok(Report {
        ranks: 2,
        reps,
        ucx_env: UCX_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        pingpong,
        allreduce,
        hpccg,
        vm_exits_per_message: exits_per_msg.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let env: Vec<String> = r.ucx_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s += &format!(
        "MPI (MPICH ch4:ucx, static), {} ranks on one node, one HPC VM per rank vs native; \
         best of {} runs; {}\n",
        r.ranks,
        r.reps,
        env.join(" ")
    );
    s += "ping-pong      native us    VM us  VM/native   native MB/s    VM MB/s  VM/native\n";
    for p in &r.pingpong {
        s += &format!(
            "{:>9} {:>14.3} {:>8.3} {:>10.3} {:>13.1} {:>10.1} {:>10.3}\n",
            size(p.bytes),
            p.native_us,
            p.vm_us,
            p.latency_ratio,
            p.native_mb_s,
            p.vm_mb_s,
            p.bandwidth_ratio
        );
    }
    s += "allreduce      native us    VM us  VM/native   (slowest rank; each rank: native | VM)\n";
    let ranks = |us: &[f64]| -> String {
        us.iter()
            .map(|u| format!("{u:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for a in &r.allreduce {
        s += &format!(
            "{:>9} {:>14.3} {:>8.3} {:>10.3}   {} | {}\n",
            format!("{} dbl", a.doubles),
            a.native_us,
            a.vm_us,
            a.ratio,
            ranks(&a.native_us_per_rank),
            ranks(&a.vm_us_per_rank)
        );
    }
    let h = &r.hpccg;
    s += &format!(
        "MPI HPCCG {}x{}x{} per rank, {} iterations, verified (residual {:.1e}, max error {:.1e})\n",
        h.size.nx, h.size.ny, h.size.nz, h.size.iterations, h.residual, h.max_error
    );
    s += "              native s     VM s  VM/native   native MFLOPS  VM MFLOPS\n";
    s += &format!(
        "{:>9} {:>14.3} {:>8.3} {:>10.3} {:>15.1} {:>10.1}   (target <= 1.01)\n",
        "solve", h.native_s, h.vm_s, h.ratio, h.native_mflops, h.vm_mflops
    );
    s += &format!(
        "VM exits per message (rank 0, start-up included): {:.4}\n",
        r.vm_exits_per_message
    );
    s
}

/// Prefixes of the /dev/shm files MPI stacks make: UCX's posix segments (MPICH ch4:ucx and
/// Open MPI's pml ucx) and Open MPI's vader BTL segments.
const MPI_SHM_PREFIXES: [&str; 2] = ["ucx_shm_posix_", "vader_segment."];

/// The MPI shared-memory files (`/dev/shm/ucx_shm_posix_*`, `vader_segment.*`) a job leaves
/// behind when a rank dies or aborts (natively too): [`MpiShmSegments::snapshot`] before the
/// job, [`MpiShmSegments::remove_new`] after it removes the ones that appeared meanwhile and
/// belong to this user.
pub struct MpiShmSegments(std::collections::BTreeSet<std::path::PathBuf>);

impl MpiShmSegments {
    fn list() -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                MPI_SHM_PREFIXES.iter().any(|p| n.starts_with(p))
            })
            .map(|e| e.path())
            .collect()
    }

    pub fn snapshot() -> Self {
        Self(Self::list())
    }

    pub fn remove_new(&self) {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        for p in Self::list().difference(&self.0) {
            if std::fs::metadata(p).is_ok_and(|m| m.uid() == me) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_output_parses() {
        let f = parse(
            "pingpong 1 100 0.5 2.0\npingpong 4194304 20 600.0 7000.0\nallreduce 1 50 0.7 0.8\n\
             noise\nerrors 0\n",
        );
        assert_eq!(f.pingpong[&1], (0.5, 2.0));
        assert_eq!(f.pingpong[&4194304], (600.0, 7000.0));
        assert_eq!(f.allreduce[&1], vec![0.7, 0.8]);
        assert_eq!(f.messages, 2.0 * 120.0 + 50.0);
    }

    #[test]
    fn hpccg_output_parses_with_its_verdict() {
        let out = "hpccg-mpi: grid 8x8x16 (1024 rows, 22264 nonzeros), 2 ranks\n\
                   hpccg-mpi 0.239724 2511.04 150 3.017e-31 4.330e-15\nPASS\n";
        let r = HpccgRun::parse(out).unwrap();
        assert_eq!(r.time_s, 0.239724);
        assert_eq!(r.mflops, 2511.04);
        assert_eq!(r.iterations, 150);
        assert!(r.passed && r.max_error < 1e-14);
        assert!(
            !HpccgRun::parse(&out.replace("PASS", "FAIL"))
                .unwrap()
                .passed
        );
        assert!(
            HpccgRun::parse("hpccg-mpi 1 2 3 4 5\n").is_none(),
            "no verdict"
        );
    }
}
