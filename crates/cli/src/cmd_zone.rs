//! `dualstack zone ...` and `dualstack recover`. (Owned by the zones work, issue 4.)
//! Argument parsing and printing only; the logic is in `dualstack-zones`.

use std::time::Instant;

use anyhow::Context;
use dualstack_topology::{CpuList, CpuRequest, ZoneRequest, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB};
use dualstack_zones::{HostPaths, HostTasks, Zone, ZoneOptions};

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum ZoneCmd {
    /// Carve an HPC zone out of the node: whole cores, huge pages on their NUMA node.
    Create(CreateArgs),
    /// List zones.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one zone.
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a zone's warm memory: its files, the extents jobs hold or that are being zeroed,
    /// and the zeroing throughput measured so far.
    Memory {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a zone: undo every step in reverse, restoring the previous values.
    Release {
        name: String,
        /// Print JSON (with time per step).
        #[arg(long)]
        json: bool,
    },
    /// Time create + release round trips, split by step.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Zone name (letters, digits, '-', '_').
    pub name: String,
    /// Number of whole cores (with all their SMT siblings), placed by the planner.
    #[arg(
        long,
        conflicts_with = "cpuset_cpus",
        required_unless_present = "cpuset_cpus"
    )]
    pub cpus: Option<u32>,
    /// Exactly these CPUs (list format, e.g. 6-11); they must form whole cores.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory, reserved as huge pages on the zone's NUMA node (e.g. 256M, 4G).
    #[arg(long)]
    pub memory: String,
    /// NUMA node for the cores and the memory.
    #[arg(long)]
    pub numa_node: Option<u32>,
    /// Huge page size: 2M or 1G.
    #[arg(long, default_value = "2M")]
    pub hugepage_size: String,
    /// Host tasks: `move` them off the zone (real nodes), `leave` them, or move only processes
    /// the project started (`project-only`: those with DUALSTACK_MOVABLE=<instance>).
    #[arg(long, value_enum, default_value = "leave")]
    pub host_tasks: TasksArg,
    /// Leave IRQ affinities alone.
    #[arg(long)]
    pub no_irqs: bool,
    /// Leave the unbound workqueue cpumask alone.
    #[arg(long)]
    pub no_workqueue: bool,
    /// Also try to offline memory blocks of the node (reported when the kernel refuses).
    #[arg(long)]
    pub offline_memory: bool,
    /// Print JSON (with time per step).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    #[arg(long, default_value = "256M")]
    pub memory: String,
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Leave IRQs and the workqueue mask alone (as on shared test machines).
    #[arg(long)]
    pub no_steering: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TasksArg {
    Move,
    Leave,
    ProjectOnly,
}

impl From<TasksArg> for HostTasks {
    fn from(t: TasksArg) -> Self {
        match t {
            TasksArg::Move => HostTasks::Move,
            TasksArg::Leave => HostTasks::Leave,
            TasksArg::ProjectOnly => HostTasks::ProjectOnly,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn paths(global: &GlobalOpts) -> anyhow::Result<HostPaths> {
    Ok(HostPaths::from_env(&global.state_dir)?)
}

fn request(
    cpus: Option<u32>,
    list: Option<&str>,
    memory: &str,
    numa: Option<u32>,
    page: &str,
) -> anyhow::Result<ZoneRequest> {
    let hugepage_kib = match page.to_ascii_uppercase().as_str() {
        "2M" | "2MB" | "2MIB" => HUGEPAGE_2M_KIB,
        "1G" | "1GB" | "1GIB" => HUGEPAGE_1G_KIB,
        other => anyhow::bail!("--hugepage-size {other}: use 2M or 1G"),
    };
    let cpus = match (cpus, list) {
        (_, Some(l)) => CpuRequest::List(CpuList::parse_list(l)?),
        (Some(n), None) => CpuRequest::Cores(n),
        (None, None) => anyhow::bail!("give --cpus N or --cpuset-cpus LIST"),
    };
    Ok(ZoneRequest {
        cpus,
        memory_bytes: dualstack_topology::parse_size(memory)
            .with_context(|| format!("--memory {memory}"))?,
        numa_node: numa,
        hugepage_kib,
    })
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn print_zone(z: &Zone) {
    println!("zone {}: {}", z.name, z.state);
    println!("  cpus        {} (cores {:?})", z.cpus, z.cores);
    println!(
        "  numa node   {} (cores on {:?})",
        z.numa_node, z.numa_nodes
    );
    match &z.memory {
        Some(m) => {
            let parts: Vec<String> = m
                .segments
                .iter()
                .map(|s| format!("{} x {} KiB", s.size / (s.page_kib * 1024), s.page_kib))
                .collect();
            println!(
                "  memory      {} warm (populated, zeroed between jobs): {} huge pages",
                mib(z.memory_bytes),
                parts.join(" + ")
            );
        }
        None => println!(
            "  memory      {} = {} x {} KiB huge pages (reserved; each job populates its own)",
            mib(z.memory_bytes),
            z.hugepages,
            z.hugepage_kib
        ),
    }
    println!("  cgroup      {}", z.cgroup_dir.display());
    println!(
        "  host tasks  {:?}, irqs {}, workqueue {}, offline memory {}",
        z.options.host_tasks,
        if z.options.steer_irqs {
            "steered"
        } else {
            "left"
        },
        if z.options.narrow_workqueue {
            "narrowed"
        } else {
            "left"
        },
        z.options.offline_memory
    );
    for n in &z.notes {
        println!("  note: {n}");
    }
}

fn print_list(zones: Vec<Zone>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&zones)?);
    } else if zones.is_empty() {
        println!("no zones");
    } else {
        println!(
            "{:<16} {:<10} {:<12} {:>5} {:>12}",
            "NAME", "STATE", "CPUS", "NUMA", "MEMORY"
        );
        for z in zones {
            println!(
                "{:<16} {:<10} {:<12} {:>5} {:>12}",
                z.name,
                z.state.as_str(),
                z.cpus.to_list(),
                z.numa_node,
                mib(z.memory_bytes)
            );
        }
    }
    Ok(())
}

fn print_timings(t: &dualstack_zones::journal::Timings) {
    let total: f64 = t.0.iter().map(|(_, ms)| ms).sum();
    for (label, ms) in &t.0 {
        println!("  {ms:8.3} ms  {label}");
    }
    println!("  {total:8.3} ms  total");
}

/// What `zone create` prints (locally and through the daemon alike).
fn print_created(report: &dualstack_zones::CreateReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_zone(&report.zone);
        println!("steps:");
        print_timings(&report.timings);
    }
    Ok(())
}

/// What `zone release` prints (locally and through the daemon alike).
fn print_released(report: &dualstack_zones::ReleaseReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("released zone {}", report.name);
        for w in &report.warnings {
            println!("  warning: {w}");
        }
        print_timings(&report.timings);
    }
    Ok(())
}

pub fn run(cmd: ZoneCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    if let Some(socket) = &global.api {
        // Through the daemon: the same printing as below.
        match cmd {
            ZoneCmd::List { json } => print_list(crate::cmd_api::zones(socket, None)?, json)?,
            ZoneCmd::Show { name, json } => {
                let z = crate::cmd_api::zones(socket, Some(&name))?.remove(0);
                if json {
                    println!("{}", serde_json::to_string_pretty(&z)?);
                } else {
                    print_zone(&z);
                }
            }
            ZoneCmd::Create(a) => {
                let report = crate::cmd_api::create_zone(socket, &a)?;
                print_created(&report, a.json)?;
            }
            ZoneCmd::Release { name, json } => {
                let report = crate::cmd_api::release_zone(socket, &name)?;
                print_released(&report, json)?;
            }
            _ => anyhow::bail!(
                "--api {}: `zone memory` and `zone bench` only run locally; leave --api out",
                socket.display()
            ),
        }
        return Ok(0);
    }
    let paths = paths(global)?;
    match cmd {
        ZoneCmd::Create(a) => {
            let req = request(
                a.cpus,
                a.cpuset_cpus.as_deref(),
                &a.memory,
                a.numa_node,
                &a.hugepage_size,
            )?;
            let opts = ZoneOptions {
                host_tasks: a.host_tasks.into(),
                steer_irqs: !a.no_irqs,
                narrow_workqueue: !a.no_workqueue,
                offline_memory: a.offline_memory,
            };
            let node = dualstack_zones::load_node(&paths)?;
            if !a.json {
                dualstack_zones::memory::set_progress(progress);
            }
            let report = dualstack_zones::create(&paths, &node, &a.name, &req, &opts)?;
            print_created(&report, a.json)?;
        }
        ZoneCmd::List { json } => {
            recover_quietly(&paths);
            print_list(dualstack_zones::list(&paths)?, json)?;
        }
        ZoneCmd::Show { name, json } => {
            let z = dualstack_zones::get(&paths, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&z)?);
            } else {
                print_zone(&z);
            }
        }
        ZoneCmd::Memory { name, json } => {
            let z = dualstack_zones::get(&paths, &name)?;
            let extents = dualstack_zones::memory::extents(&paths, &name)?;
            let log = dualstack_zones::memory::zeroing_log(&paths, &name)?;
            if json {
                let log: Vec<_> = log
                    .iter()
                    .map(|(b, s)| serde_json::json!({"bytes": b, "seconds": s}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "zone": name,
                        "memory": z.memory,
                        "extents": extents,
                        "zeroing": log,
                    }))?
                );
            } else {
                print_zone(&z);
                if extents.is_empty() {
                    println!("  all memory free and zeroed");
                }
                for e in &extents {
                    println!(
                        "  extent {:>8} MiB at {:>8} MiB: {}{}, owner {} ({})",
                        e.len >> 20,
                        e.start >> 20,
                        e.state,
                        if e.state == "dirty" {
                            format!(" (zeroed {} MiB)", e.clean_to.saturating_sub(e.start) >> 20)
                        } else {
                            String::new()
                        },
                        e.owner.as_deref().unwrap_or("none"),
                        if e.owner_alive { "alive" } else { "gone" }
                    );
                }
                if let Some((b, s)) = log.first() {
                    println!(
                        "  last zeroing pass: {} MiB in {:.3} s ({:.2} GB/s)",
                        b >> 20,
                        s,
                        *b as f64 / s.max(1e-9) / 1e9
                    );
                }
            }
        }
        ZoneCmd::Release { name, json } => {
            let report = dualstack_zones::release(&paths, &name)?;
            print_released(&report, json)?;
        }
        ZoneCmd::Bench(a) => return bench(&paths, &a),
    }
    Ok(0)
}

/// The populate progress line of `zone create` (zones of 1 GiB or more).
fn progress(path: &std::path::Path, done: u64, total: u64) {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\rpopulating {}: {} / {} MiB",
        path.display(),
        done >> 20,
        total >> 20
    );
    if done >= total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// Recovery at the start of read-only commands; problems are reported, not fatal.
fn recover_quietly(paths: &HostPaths) {
    match dualstack_zones::recover(paths) {
        Ok(r) if !r.is_clean() => eprintln!(
            "dualstack: recovered from an interrupted command: rolled back {:?}, finished releasing {:?}, dropped {:?}",
            r.rolled_back, r.finished_release, r.dropped_stale
        ),
        Ok(_) => {}
        Err(e) => eprintln!("dualstack: warning: recovery failed: {e}"),
    }
}

pub fn recover(args: RecoverArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let paths = paths(global)?;
    let mut report = dualstack_zones::recover(&paths)?;
    dualstack_zones::finish_zeroing(&paths, &mut report)?;
    // Then what runs took for their lifetime only (huge pages, transient zones) and whose
    // process is gone.
    let leases = dualstack_jobs::lease::recover(&paths)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    if report.is_clean() && leases.is_clean() {
        println!("nothing to recover");
    }
    for l in &leases.given_back {
        println!("gave back {l}");
    }
    for w in &leases.warnings {
        println!("warning: {w}");
    }
    for z in &report.rolled_back {
        println!("rolled back half-made zone {z}");
    }
    for z in &report.finished_release {
        println!("finished releasing zone {z}");
    }
    for z in &report.dropped_stale {
        println!("dropped zone {z} recorded before the last reboot");
    }
    for p in &report.removed_orphans {
        println!("removed orphan cgroup {}", p.display());
    }
    for z in &report.zeroed {
        println!("zeroed warm memory a killed job or zeroer left dirty: {z}");
    }
    if report.layout_removed {
        println!("no zone and no commodity process left: instance cgroups removed");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    Ok(0)
}

fn bench(paths: &HostPaths, a: &BenchArgs) -> anyhow::Result<i32> {
    let req = request(Some(a.cpus), None, &a.memory, None, "2M")?;
    let opts = ZoneOptions {
        host_tasks: HostTasks::Leave,
        steer_irqs: !a.no_steering,
        narrow_workqueue: !a.no_steering,
        offline_memory: false,
    };
    let node = dualstack_zones::load_node(paths)?;
    // Per step label: the sum over a round (many IRQs fold into one line), one entry per round.
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    let mut totals = Vec::new();
    for i in 0..a.rounds {
        let name = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let c = dualstack_zones::create(paths, &node, &name, &req, &opts)?;
        let tc = t.elapsed().as_secs_f64() * 1e3;
        let r = dualstack_zones::release(paths, &name)?;
        let total = t.elapsed().as_secs_f64() * 1e3;
        let mut round: Vec<(String, f64)> = vec![
            ("create, end to end".into(), tc),
            ("release, end to end".into(), total - tc),
        ];
        for (l, ms) in c.timings.0.iter().chain(r.timings.0.iter()) {
            let l = l.replace(&format!("zone-{name}"), "zone-Z");
            let l = if l.contains("smp_affinity_list") {
                if l.starts_with("undo") {
                    "undo irq affinities".to_string()
                } else {
                    "irq affinities".to_string()
                }
            } else {
                l
            };
            match round.iter_mut().find(|(x, _)| *x == l) {
                Some((_, v)) => *v += ms,
                None => round.push((l, *ms)),
            }
        }
        for (l, ms) in round {
            match steps.iter_mut().find(|(x, _)| *x == l) {
                Some((_, v)) => v.push(ms),
                None => steps.push((l, vec![ms])),
            }
        }
        totals.push(total);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    if a.json {
        let out: Vec<_> = steps
            .iter()
            .map(
                |(l, v)| serde_json::json!({"step": l, "median_ms": median(v), "mean_ms": mean(v)}),
            )
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rounds": a.rounds,
                "round_trip_median_ms": median(&totals),
                "round_trip_mean_ms": mean(&totals),
                "round_trip_min_ms": min(&totals),
                "steps": out
            }))?
        );
    } else {
        println!(
            "zone create + release, {} core(s) + {}, {} rounds (per round: median / mean ms)",
            a.cpus, a.memory, a.rounds
        );
        for (l, v) in &steps {
            println!("  {:8.3} {:8.3}  {l}", median(v), mean(v));
        }
        println!(
            "  round trip: median {:.3} ms, mean {:.3} ms, min {:.3} ms",
            median(&totals),
            mean(&totals),
            min(&totals)
        );
    }
    Ok(0)
}
