//! `dualstack bench vmm`: the HPC VMM's own figures (issues 2 and 3), each measured side by
//! side in one run: VM vs native runtime of compute-bound CG (1 and 2 threads), page faults
//! during the run with hugetlb vs lazy memory, launch time, exits per system call, futex
//! hand-off latency, the cost of a barrier, and the start-up of a dynamically linked program
//! (the loader's many small system calls are each one exit).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dualstack_hpcvmm::{Backing, HugePageSize, RunConfig, RunStats};
use serde::Serialize;

use crate::guests::{self, field, GuestSource};
use crate::native::{run_native, run_vm, Outcome};
use crate::stats::{summarize, Summary};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repetitions of each timed comparison (interleaved native, VM, native, VM...).
    pub reps: usize,
    /// Host CPUs to use (the 2-thread runs use the first two).
    pub cpus: Vec<usize>,
    /// The `dualstack` executable, for timing `dualstack run` launches.
    pub dualstack_exe: PathBuf,
    /// CG grid edge and iteration cap.
    pub cg_n: u32,
    pub cg_iters: u32,
    pub scratch: PathBuf,
    /// The state database the THP change of the native-THP runs is journaled in.
    pub paths: dualstack_zones::HostPaths,
}

/// Runtime of one program natively and in the VM.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub what: String,
    pub native_s: Summary,
    pub vm_s: Summary,
    /// Median of per-repetition VM/native ratios.
    pub ratio: f64,
    /// VM exits per second of guest compute.
    pub vm_exits_per_s: f64,
    pub vm_syscalls: u64,
    /// Native with transparent huge pages `always` (the fair baseline for a VM on huge pages);
    /// None where the THP mode cannot be set (then `thp_note` says why).
    pub native_thp_s: Option<Summary>,
    /// Median of per-repetition VM/native-thp ratios.
    pub ratio_thp: Option<f64>,
    pub thp_note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PageFaults {
    /// Shadow/nested page faults (KVM pf_taken) while the program ran, hugetlb backing.
    pub hugetlb_run: u64,
    /// ... during launch (prefaulting every large page before the program starts).
    pub hugetlb_launch: u64,
    /// ... while the program ran, lazy 4 KiB backing (what a commodity VMM does).
    pub lazy_run: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub native_us: Summary,
    pub vm_us: Summary,
    /// VM exits per operation (hand-off or barrier).
    pub vm_exits_per_op: f64,
}

/// Start-up of a dynamically linked hello world: spawn to exit, natively and in the VM (the
/// VMM in this process, guest root `/`, 64 MiB of huge pages), and the exits it costs.
#[derive(Clone, Debug, Serialize)]
pub struct DynamicStart {
    pub native_ms: Summary,
    pub vm_ms: Summary,
    /// Median of per-repetition VM/native ratios.
    pub ratio: f64,
    /// Guest time only (first guest instruction to exit), VM.
    pub vm_guest_ms: Summary,
    /// VM exits of one dynamic start, and of the same program linked statically.
    pub exits_dynamic: u64,
    pub exits_static: u64,
    /// The dynamic start's system calls by name, most frequent first.
    pub syscalls: Vec<(String, u64)>,
}

/// Everything `bench vmm` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub reps: usize,
    pub cpus: Vec<usize>,
    pub cg_1thread: Comparison,
    pub cg_2threads: Option<Comparison>,
    pub page_faults: PageFaults,
    /// Wall time of `dualstack run --memory 64M hello`, spawn to exit.
    pub launch_ms: Summary,
    pub exits_per_syscall: f64,
    pub futex_handoff: Option<Latency>,
    pub barrier: Option<Latency>,
    pub dynamic_start: DynamicStart,
    /// The jail's cost: `dualstack run` with the jail (the default) vs `--no-jail`.
    pub jail: Option<JailCost>,
    /// raise(SIGUSR1) + handler + rt_sigreturn.
    pub signal_round_trip: Latency,
    pub timed_cg: TimedCg,
}

/// The jail vs `--no-jail`, interleaved in one run (issue 10's targets: syscall cost ratio
/// <= 1.05, launch <= +2 ms).
#[derive(Clone, Debug, Serialize)]
pub struct JailCost {
    /// Wall time of `dualstack run --memory 64M hello`, spawn to exit.
    pub launch_jail_ms: Summary,
    pub launch_no_jail_ms: Summary,
    /// Median jailed minus median unjailed launch.
    pub launch_extra_ms: f64,
    /// Microseconds per `getppid` (a call served by the VMM with no host call).
    pub getppid_jail_us: Summary,
    pub getppid_no_jail_us: Summary,
    pub getppid_ratio: f64,
    /// Microseconds per 4 KiB `read` of /dev/zero (a call the VMM passes to the host).
    pub read_jail_us: Summary,
    pub read_no_jail_us: Summary,
    pub read_ratio: f64,
    /// Microseconds per `getppid` (jailed) with the live counters published
    /// (`--live-stats`, what a daemon job does), and its ratio to the run without.
    pub getppid_live_us: Summary,
    pub live_ratio: f64,
}

/// An OpenMP CG timing every kernel with getrusage: are the timers free of exits?
#[derive(Clone, Debug, Serialize)]
pub struct TimedCg {
    pub threads: usize,
    pub comparison: Comparison,
    /// Timing calls the program made (getrusage, clock_gettime, times).
    pub timer_calls: u64,
    /// VM exits those calls caused (median over repetitions).
    pub timer_exits: u64,
    pub timer_exits_per_s: f64,
    /// System calls answered inside the guest.
    pub answered_in_guest: u64,
}

/// Failure of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Guest(#[from] guests::GuestError),
    #[error(transparent)]
    Vmm(#[from] dualstack_hpcvmm::VmmError),
    #[error(transparent)]
    HugePages(#[from] dualstack_zones::hugepages::HugePageError),
    #[error("{what} failed: {detail}")]
    Run { what: String, detail: String },
    #[error("cannot run {0}")]
    Io(String, #[source] std::io::Error),
}

fn vm_config(
    program: &Path,
    args: &[String],
    cpus: &[usize],
    env: &[(String, String)],
    backing: Backing,
) -> RunConfig {
    let mut argv = vec![program.display().to_string()];
    argv.extend(args.iter().cloned());
    let mut cfg = RunConfig::new(program, argv);
    cfg.cpus = cpus.to_vec();
    cfg.backing = backing;
    cfg.memory = 512 << 20;
    cfg.env = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    cfg.root = PathBuf::from("/tmp");
    cfg
}

fn hugetlb() -> Backing {
    Backing::Hugetlb {
        page_size: HugePageSize::Size2M,
        numa_node: None,
    }
}

fn check(what: &str, o: &Outcome) -> Result<(), BenchError> {
    if o.status != 0 {
        let detail = match &o.stats {
            Some(s) => format!("exit status {}: {:?}", o.status, s.exit),
            None => format!("exit status {}", o.status),
        };
        return Err(BenchError::Run {
            what: what.into(),
            detail: format!("{detail}; output: {}", o.stdout.trim()),
        });
    }
    Ok(())
}

fn time_of(what: &str, o: &Outcome, key: &str) -> Result<f64, BenchError> {
    check(what, o)?;
    field(&o.stdout, key).ok_or_else(|| BenchError::Run {
        what: what.into(),
        detail: format!("no {key}= in its output: {}", o.stdout.trim()),
    })
}

fn compare(
    what: &str,
    g: &GuestSource,
    args: &[String],
    cpus: &[usize],
    env: &[(String, String)],
    o: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<(Comparison, Vec<RunStats>), BenchError> {
    let bin = guests::build(g, &guests::cache_dir())?;
    let (mut native, mut vm, mut ratios, mut stats) = (vec![], vec![], vec![], vec![]);
    let (mut thp, mut thp_ratios, mut thp_note) = (vec![], vec![], None);
    for rep in 0..o.reps {
        progress(&format!("{what}: repetition {}/{}", rep + 1, o.reps));
        let n = run_native(&bin, args, cpus, env)
            .map_err(|e| BenchError::Io(bin.display().to_string(), e))?;
        let tn = time_of(what, &n, "time_s")?;
        let mut tt = None;
        if thp_note.is_none() {
            match crate::isolation::thp::ThpGuard::set(
                &o.paths,
                std::path::Path::new(crate::isolation::thp::THP_ENABLED),
                "always",
            ) {
                Ok(_guard) => {
                    let t = run_native(&bin, args, cpus, env)
                        .map_err(|e| BenchError::Io(bin.display().to_string(), e))?;
                    tt = Some(time_of(what, &t, "time_s")?);
                }
                Err(e) => thp_note = Some(e),
            }
        }
        let v = run_vm(vm_config(&bin, args, cpus, env, hugetlb()), &o.scratch)?;
        let tv = time_of(what, &v, "time_s")?;
        native.push(tn);
        vm.push(tv);
        ratios.push(tv / tn);
        if let Some(t) = tt {
            thp.push(t);
            thp_ratios.push(tv / t);
        }
        stats.extend(v.stats);
    }
    let exits: f64 = stats.iter().map(|s| s.exits_total as f64).sum::<f64>() / stats.len() as f64;
    let guest: f64 = stats.iter().map(|s| s.guest_wall_s).sum::<f64>() / stats.len() as f64;
    let sys = stats.last().map(|s| s.syscalls_total).unwrap_or(0);
    Ok((
        Comparison {
            what: what.into(),
            native_s: summarize(&native),
            vm_s: summarize(&vm),
            ratio: summarize(&ratios).median,
            vm_exits_per_s: exits / guest.max(1e-9),
            vm_syscalls: sys,
            native_thp_s: (!thp.is_empty()).then(|| summarize(&thp)),
            ratio_thp: (!thp_ratios.is_empty()).then(|| summarize(&thp_ratios).median),
            thp_note,
        },
        stats,
    ))
}

fn latency(
    what: &str,
    g: &GuestSource,
    ops: u64,
    cpus: &[usize],
    o: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Latency, BenchError> {
    let bin = guests::build(g, &guests::cache_dir())?;
    let args = vec![ops.to_string()];
    let env = vec![("OMP_NUM_THREADS".to_string(), cpus.len().to_string())];
    let key = if g.name == "barrier" {
        "us_per_barrier"
    } else {
        "us_per_handoff"
    };
    let key = if g.name == "sigrt" {
        "us_per_signal"
    } else {
        key
    };
    let ops_per_run = if g.name == "futexpp" { 2 * ops } else { ops };
    let (mut n, mut v, mut exits) = (vec![], vec![], vec![]);
    for rep in 0..o.reps {
        progress(&format!("{what}: repetition {}/{}", rep + 1, o.reps));
        let a = run_native(&bin, &args, cpus, &env)
            .map_err(|e| BenchError::Io(bin.display().to_string(), e))?;
        n.push(time_of(what, &a, key)?);
        let b = run_vm(vm_config(&bin, &args, cpus, &env, hugetlb()), &o.scratch)?;
        v.push(time_of(what, &b, key)?);
        if let Some(s) = &b.stats {
            exits.push(s.exits_total as f64 / ops_per_run as f64);
        }
    }
    Ok(Latency {
        native_us: summarize(&n),
        vm_us: summarize(&v),
        vm_exits_per_op: summarize(&exits).median,
    })
}

fn dynamic_start(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<DynamicStart, BenchError> {
    progress("start-up of a dynamically linked hello world");
    let dynamic = guests::build_dynamic(&guests::HELLO, &guests::cache_dir())?;
    let fixed = guests::build(&guests::HELLO, &guests::cache_dir())?;
    let one = vec![o.cpus[0]];
    let cfg = |bin: &Path| {
        let mut c = vm_config(bin, &[], &one, &[], hugetlb());
        c.memory = 64 << 20;
        c.root = PathBuf::from("/");
        c
    };
    let (mut native, mut vm, mut guest, mut ratios) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for _ in 0..o.reps.max(5) {
        let n = run_native(&dynamic, &[], &one, &[])
            .map_err(|e| BenchError::Io(dynamic.display().to_string(), e))?;
        check("dynamic hello (native)", &n)?;
        let v = run_vm(cfg(&dynamic), &o.scratch)?;
        check("dynamic hello (VM)", &v)?;
        native.push(n.wall_s * 1e3);
        vm.push(v.wall_s * 1e3);
        ratios.push(v.wall_s / n.wall_s);
        if let Some(s) = &v.stats {
            guest.push(s.guest_wall_s * 1e3);
        }
        last = v.stats;
    }
    let s = run_vm(cfg(&fixed), &o.scratch)?;
    check("static hello (VM)", &s)?;
    let last = last.expect("at least one repetition");
    let mut syscalls: Vec<(String, u64)> = last
        .syscalls
        .iter()
        .map(|(k, v)| (k.clone(), v.count))
        .collect();
    syscalls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(DynamicStart {
        native_ms: summarize(&native),
        vm_ms: summarize(&vm),
        ratio: summarize(&ratios).median,
        vm_guest_ms: summarize(&guest),
        exits_dynamic: last.exits_total,
        exits_static: s.stats.map(|s| s.exits_total).unwrap_or(0),
        syscalls,
    })
}

/// One `dualstack run` of `program args` (with `extra` options before `--`): its wall time in
/// ms and its stdout.
fn cli_run(
    o: &Options,
    extra: &[&str],
    program: &Path,
    args: &[String],
) -> Result<(f64, String), BenchError> {
    let t = Instant::now();
    let out = Command::new(&o.dualstack_exe)
        .args(["run", "--memory", "64M", "--clear-env", "--cpuset-cpus"])
        .arg(o.cpus[0].to_string())
        .args(extra)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| BenchError::Io(o.dualstack_exe.display().to_string(), e))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(BenchError::Run {
            what: format!("dualstack run {} {}", extra.join(" "), program.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok((ms, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The jail vs `--no-jail`: launch time and the cost of a VMM-served and a host-passed
/// system call, interleaved (jail, no jail, jail, ...) so drift hits both alike.
pub fn jail_cost(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<JailCost, BenchError> {
    // The 64 MiB hugetlb guests; only the shortfall is added, and given back after.
    let _pages = crate::hugepages::Reservation::ensure_free_2m(32)?;
    let hello = guests::build(&guests::HELLO, &guests::cache_dir())?;
    let sysloop = guests::build(&guests::SYSLOOP, &guests::cache_dir())?;
    let readloop = guests::build(&guests::READLOOP, &guests::cache_dir())?;
    let reps = o.reps.max(5);
    let per_call = |out: &str, what: &str| {
        field(out, "us_per_call").ok_or_else(|| BenchError::Run {
            what: what.into(),
            detail: format!("no us_per_call= in its output: {}", out.trim()),
        })
    };
    let (mut lj, mut ln, mut gj, mut gn, mut rj, mut rn) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut gr, mut rr) = (vec![], vec![]);
    let (mut gl, mut lr) = (vec![], vec![]);
    let calls = vec!["20000".to_string()];
    std::fs::create_dir_all(&o.scratch)
        .map_err(|e| BenchError::Io(o.scratch.display().to_string(), e))?;
    let live_file = o.scratch.join("live.json").display().to_string();
    for rep in 0..reps {
        progress(&format!("jail vs --no-jail: repetition {}/{reps}", rep + 1));
        lj.push(cli_run(o, &[], &hello, &[])?.0);
        ln.push(cli_run(o, &["--no-jail"], &hello, &[])?.0);
        let a = per_call(&cli_run(o, &[], &sysloop, &calls)?.1, "sysloop (jail)")?;
        let b = per_call(&cli_run(o, &["--no-jail"], &sysloop, &calls)?.1, "sysloop")?;
        let l = per_call(
            &cli_run(o, &["--live-stats", &live_file], &sysloop, &calls)?.1,
            "sysloop (live stats)",
        )?;
        gj.push(a);
        gn.push(b);
        gr.push(a / b);
        gl.push(l);
        lr.push(l / a);
        let a = per_call(&cli_run(o, &[], &readloop, &calls)?.1, "readloop (jail)")?;
        let b = per_call(
            &cli_run(o, &["--no-jail"], &readloop, &calls)?.1,
            "readloop",
        )?;
        rj.push(a);
        rn.push(b);
        rr.push(a / b);
    }
    let (launch_jail_ms, launch_no_jail_ms) = (summarize(&lj), summarize(&ln));
    Ok(JailCost {
        launch_extra_ms: launch_jail_ms.median - launch_no_jail_ms.median,
        launch_jail_ms,
        launch_no_jail_ms,
        getppid_jail_us: summarize(&gj),
        getppid_no_jail_us: summarize(&gn),
        getppid_ratio: summarize(&gr).median,
        read_jail_us: summarize(&rj),
        read_no_jail_us: summarize(&rn),
        read_ratio: summarize(&rr).median,
        getppid_live_us: summarize(&gl),
        live_ratio: summarize(&lr).median,
    })
}

/// The jail's lines of the report.
pub fn render_jail(j: &JailCost) -> String {
    format!(
        "jail launch              jail {:.1} ms  --no-jail {:.1} ms  extra {:+.1} ms (target <= +2 ms; min jail {:.1} ms, --no-jail {:.1} ms)\n\
         jail getppid             jail {:.3} us  --no-jail {:.3} us  jail/no-jail {:.3} (target <= 1.05)\n\
         jail read 4 KiB          jail {:.3} us  --no-jail {:.3} us  jail/no-jail {:.3} (target <= 1.05)\n\
         live counters getppid    --live-stats {:.3} us  without {:.3} us  ratio {:.3} (jailed; the daemon's jobs publish them)\n",
        j.launch_jail_ms.median,
        j.launch_no_jail_ms.median,
        j.launch_extra_ms,
        j.launch_jail_ms.min,
        j.launch_no_jail_ms.min,
        j.getppid_jail_us.median,
        j.getppid_no_jail_us.median,
        j.getppid_ratio,
        j.read_jail_us.median,
        j.read_no_jail_us.median,
        j.read_ratio,
        j.getppid_live_us.median,
        j.getppid_jail_us.median,
        j.live_ratio
    )
}

/// Run every VMM benchmark. `progress` receives one line per step.
pub fn run(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    std::fs::create_dir_all(&o.scratch)
        .map_err(|e| BenchError::Io(o.scratch.display().to_string(), e))?;
    // 512 MiB guests plus the 64 MiB launch runs, in 2 MiB pages; only the shortfall is added.
    let _pages = crate::hugepages::Reservation::ensure_free_2m(256 + 32)?;
    let one = vec![o.cpus[0]];
    let cg_args = vec![o.cg_n.to_string(), o.cg_iters.to_string()];
    let env1 = vec![("OMP_NUM_THREADS".to_string(), "1".to_string())];
    let (cg1, _) = compare(
        "CG, 1 thread",
        &guests::CG,
        &cg_args,
        &one,
        &env1,
        o,
        progress,
    )?;
    let two: Vec<usize> = o.cpus.iter().copied().take(2).collect();
    let cg2 = if two.len() == 2 {
        let env2 = vec![("OMP_NUM_THREADS".to_string(), "2".to_string())];
        Some(
            compare(
                "CG (OpenMP), 2 threads",
                &guests::CG,
                &cg_args,
                &two,
                &env2,
                o,
                progress,
            )?
            .0,
        )
    } else {
        None
    };

    progress("page faults: hugetlb vs lazy");
    let cg = guests::build(&guests::CG, &guests::cache_dir())?;
    let h = run_vm(vm_config(&cg, &cg_args, &one, &env1, hugetlb()), &o.scratch)?;
    check("CG hugetlb", &h)?;
    let l = run_vm(
        vm_config(&cg, &cg_args, &one, &env1, Backing::Lazy),
        &o.scratch,
    )?;
    check("CG lazy", &l)?;
    let pf = |s: &Option<RunStats>, launch: bool| {
        s.as_ref()
            .and_then(|s| {
                if launch {
                    &s.kvm_vcpu_at_launch
                } else {
                    &s.kvm_vcpu_delta
                }
                .get("pf_taken")
                .copied()
            })
            .unwrap_or(0)
    };
    let page_faults = PageFaults {
        hugetlb_run: pf(&h.stats, false),
        hugetlb_launch: pf(&h.stats, true),
        lazy_run: pf(&l.stats, false),
    };

    progress("launch: dualstack run --memory 64M hello");
    let hello = guests::build(&guests::HELLO, &guests::cache_dir())?;
    let mut launch = vec![];
    for _ in 0..o.reps.max(5) {
        let t = Instant::now();
        let out = Command::new(&o.dualstack_exe)
            .args(["run", "--memory", "64M", "--clear-env", "--cpuset-cpus"])
            .arg(o.cpus[0].to_string())
            .arg("--")
            .arg(&hello)
            .output()
            .map_err(|e| BenchError::Io(o.dualstack_exe.display().to_string(), e))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !out.status.success() {
            return Err(BenchError::Run {
                what: "dualstack run hello".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        launch.push(ms);
    }

    progress("exits per system call");
    let sl = guests::build(&guests::SYSLOOP, &guests::cache_dir())?;
    let calls = 2000u64;
    let base = run_vm(
        vm_config(&sl, &["0".into()], &one, &[], hugetlb()),
        &o.scratch,
    )?;
    let full = run_vm(
        vm_config(&sl, &[calls.to_string()], &one, &[], hugetlb()),
        &o.scratch,
    )?;
    check("sysloop", &full)?;
    let exits = |x: &Outcome| x.stats.as_ref().map(|s| s.exits_total).unwrap_or(0);
    let exits_per_syscall = (exits(&full) - exits(&base)) as f64 / calls as f64;

    let (futex_handoff, barrier) = if two.len() == 2 {
        (
            Some(latency(
                "futex hand-off",
                &guests::FUTEXPP,
                500,
                &two,
                o,
                progress,
            )?),
            Some(latency(
                "OpenMP barrier",
                &guests::BARRIER,
                2000,
                &two,
                o,
                progress,
            )?),
        )
    } else {
        (None, None)
    };
    let dynamic_start = dynamic_start(o, progress)?;
    let signal_round_trip = latency(
        "signal round trip",
        &guests::SIGRT,
        20_000,
        &one,
        o,
        progress,
    )?;

    let tcpus = if two.len() == 2 {
        two.clone()
    } else {
        one.clone()
    };
    let tenv = vec![("OMP_NUM_THREADS".to_string(), tcpus.len().to_string())];
    let targs = vec![o.cg_n.to_string(), o.cg_iters.min(200).to_string()];
    let (tcmp, tstats) = compare(
        "CG timed with getrusage",
        &guests::CG_TIMED,
        &targs,
        &tcpus,
        &tenv,
        o,
        progress,
    )?;
    let timer_exits: Vec<f64> = tstats
        .iter()
        .map(|s| {
            ["getrusage", "clock_gettime", "times", "clock_getres"]
                .iter()
                .filter_map(|n| s.syscalls.get(*n))
                .map(|c| c.count as f64)
                .sum()
        })
        .collect();
    let guest_s = tstats.iter().map(|s| s.guest_wall_s).sum::<f64>() / tstats.len().max(1) as f64;
    let timer_exits = summarize(&timer_exits).median;
    let timed_cg = TimedCg {
        threads: tcpus.len(),
        comparison: tcmp,
        timer_calls: 11 * u64::from(o.cg_iters.min(200)),
        timer_exits: timer_exits as u64,
        // (0 exits prints as 0, not -0)
        timer_exits_per_s: if timer_exits > 0.0 {
            timer_exits / guest_s.max(1e-9)
        } else {
            0.0
        },
        answered_in_guest: tstats
            .last()
            .map(|s| s.calls_answered_in_guest)
            .unwrap_or(0),
    };
    Ok(Report {
        reps: o.reps,
        cpus: o.cpus.clone(),
        cg_1thread: cg1,
        cg_2threads: cg2,
        page_faults,
        launch_ms: summarize(&launch),
        exits_per_syscall,
        futex_handoff,
        barrier,
        dynamic_start,
        jail: Some(jail_cost(o, progress)?),
        signal_round_trip,
        timed_cg,
    })
}

/// The report as the lines `bench vmm` prints.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let cmp = |c: &Comparison| {
        let thp = match (&c.native_thp_s, c.ratio_thp, &c.thp_note) {
            (Some(t), Some(r), _) => format!(
                "\n{:<24} native-thp {:>7.3} s (cv {:.1}%)  VM/native-thp {r:.3}",
                "",
                t.median,
                t.cv * 100.0
            ),
            (_, _, Some(n)) => format!("\n{:<24} native-thp not measured: {n}", ""),
            _ => String::new(),
        };
        format!(
            "{:<24} native {:>7.3} s (cv {:.1}%)  VM {:>7.3} s (cv {:.1}%)  VM/native {:.3}  exits/s {:.1}{thp}\n",
            c.what,
            c.native_s.median,
            c.native_s.cv * 100.0,
            c.vm_s.median,
            c.vm_s.cv * 100.0,
            c.ratio,
            c.vm_exits_per_s
        )
    };
    s += &format!(
        "HPC VMM benchmark: {} repetitions, cpus {:?}, medians\n",
        r.reps, r.cpus
    );
    s += &cmp(&r.cg_1thread);
    if let Some(c) = &r.cg_2threads {
        s += &cmp(c);
    }
    s += &format!(
        "page faults (pf_taken)   during run: hugetlb {}  lazy {}   (hugetlb prefaulted {} at launch)\n",
        r.page_faults.hugetlb_run, r.page_faults.lazy_run, r.page_faults.hugetlb_launch
    );
    s += &format!(
        "launch                   `dualstack run --memory 64M hello`: median {:.1} ms (min {:.1}, max {:.1})\n",
        r.launch_ms.median, r.launch_ms.min, r.launch_ms.max
    );
    s += &format!("exits per system call    {:.3}\n", r.exits_per_syscall);
    for (name, l) in [
        ("futex hand-off", &r.futex_handoff),
        ("OpenMP barrier", &r.barrier),
        ("signal round trip", &Some(r.signal_round_trip.clone())),
    ] {
        if let Some(l) = l {
            s += &format!(
                "{:<24} native {:>8.2} us  VM {:>8.2} us  VM exits per op {:.3}\n",
                name, l.native_us.median, l.vm_us.median, l.vm_exits_per_op
            );
        }
    }
    let d = &r.dynamic_start;
    s += &format!(
        "dynamic start            hello (gcc default link) native {:.2} ms  VM {:.2} ms (guest {:.2} ms)  VM/native {:.2}\n",
        d.native_ms.median, d.vm_ms.median, d.vm_guest_ms.median, d.ratio
    );
    let top: Vec<String> = d
        .syscalls
        .iter()
        .take(8)
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    s += &format!(
        "dynamic start exits      {} (static build: {}); calls: {}\n",
        d.exits_dynamic,
        d.exits_static,
        top.join(", ")
    );
    if let Some(j) = &r.jail {
        s += &render_jail(j);
    }
    let t = &r.timed_cg;
    s += &cmp(&t.comparison);
    s += &format!(
        "{:<24} {} timing calls, {} of them VM exits ({:.1} timer exits/s); {} calls answered in the guest\n",
        "  timers",
        t.timer_calls,
        t.timer_exits,
        t.timer_exits_per_s,
        t.answered_in_guest
    );
    s
}
