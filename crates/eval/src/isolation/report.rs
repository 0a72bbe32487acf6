//! From raw runs to the paper's tables: Figure 5 (mean / stdev per app, configuration and load
//! level), Figure 2 (shadow/nested page faults, their share of exits, exits by reason), FWQ
//! noise, and the targets as ratios with plain statements of what the data shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::fwq::{bin_label, EDGES_US};
use super::plan::{Config, Plan};
use super::record::{RunRecord, VmFigures};
use crate::stats::{summarize, Summary};

/// Runtime of one app in one configuration at one load level.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cell {
    pub app: String,
    pub config: Config,
    pub level: u32,
    /// Of the app's measured phase (`time_s`), successful runs only.
    pub time_s: Summary,
    pub failures: usize,
    /// `kvm` under QEMU TCG (`--kvm-tcg`): the answer was checked, the time is emulation and
    /// no performance figure.
    #[serde(default)]
    pub correctness_only: bool,
}

/// Whether `config`'s runs in `plan` check correctness only (`kvm` forced onto QEMU TCG).
pub fn correctness_only(plan: &Plan, config: Config) -> bool {
    config == Config::Kvm && plan.kvm_tcg
}

/// `config`'s name in tables and legends, marked when its runs are correctness-only.
pub fn config_label(plan: &Plan, config: Config) -> String {
    if correctness_only(plan, config) {
        format!("{config} (TCG, correctness only)")
    } else {
        config.to_string()
    }
}

/// Figure 2: page faults and exits of one app in one VM configuration (means per run).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fig2Row {
    pub app: String,
    pub config: Config,
    pub runs: usize,
    /// KVM `pf_taken`: shadow (here) or nested page faults.
    pub pf_taken: f64,
    /// Every exit KVM took (KVM `exits`).
    pub kvm_exits: f64,
    /// pf_taken / kvm_exits.
    pub pf_share: f64,
    /// Exits the VMM handled, by reason.
    pub vmm_exits: BTreeMap<String, f64>,
    /// Other KVM exit kinds worth seeing (irq_exits, halt_exits, ...), means.
    pub kvm_other: BTreeMap<String, f64>,
}

/// FWQ noise of one configuration at one level, over its runs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FwqRow {
    pub config: Config,
    pub level: u32,
    pub runs: usize,
    /// Largest detour of any run, us.
    pub max_detour_us: f64,
    /// Mean over runs of each run's 99.9th percentile detour, us.
    pub p999_detour_us: f64,
    pub median_detour_us: f64,
    pub noise_fraction: f64,
    /// Summed over runs, bins of [`EDGES_US`].
    pub histogram: Vec<u64>,
}

/// One target of issue 6, measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

/// Everything computed from the runs.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    pub cells: Vec<Cell>,
    pub figure2: Vec<Fig2Row>,
    pub fwq: Vec<FwqRow>,
    pub checks: Vec<Check>,
    /// Plain sentences: how each configuration fared, and why where a target was missed.
    pub statements: Vec<String>,
    /// Mean commodity build jobs/s during the runs, by (config, level).
    pub commodity_jobs_per_s: Vec<(Config, u32, f64)>,
}

fn ok_runs<'a>(
    records: &'a [RunRecord],
    app: &'a str,
    config: Config,
    level: u32,
) -> impl Iterator<Item = &'a RunRecord> + 'a {
    records
        .iter()
        .filter(move |r| r.ok && r.app == app && r.config == config && r.level == level)
}

fn levels(plan: &Plan) -> Vec<u32> {
    let mut l = plan.levels.clone();
    l.sort_unstable();
    l.dedup();
    l
}

/// Runtime summaries for every (app, configuration, level) of the plan.
pub fn cells(plan: &Plan, records: &[RunRecord]) -> Vec<Cell> {
    let mut out = vec![];
    for app in &plan.all_apps() {
        for &config in &plan.configs {
            for level in levels(plan) {
                let times: Vec<f64> = ok_runs(records, app, config, level)
                    .filter_map(|r| r.time_s)
                    .collect();
                let failures = records
                    .iter()
                    .filter(|r| !r.ok && &r.app == app && r.config == config && r.level == level)
                    .count();
                out.push(Cell {
                    app: app.clone(),
                    config,
                    level,
                    time_s: summarize(&times),
                    failures,
                    correctness_only: correctness_only(plan, config),
                });
            }
        }
    }
    out
}

fn cell<'a>(cells: &'a [Cell], app: &str, config: Config, level: u32) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.app == app && c.config == config && c.level == level && c.time_s.n > 0)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Figure 2 rows, all levels together (page faults do not depend on the load).
pub fn figure2(plan: &Plan, records: &[RunRecord]) -> Vec<Fig2Row> {
    const OTHER: [&str; 5] = [
        "irq_exits",
        "halt_exits",
        "insn_emulation",
        "preemption_reported",
        "preemption_other",
    ];
    let mut out = vec![];
    for app in &plan.all_apps() {
        for &config in plan.configs.iter().filter(|c| c.is_vm()) {
            let runs: Vec<_> = records
                .iter()
                .filter(|r| r.ok && &r.app == app && r.config == config)
                .filter_map(|r| r.vm.as_ref())
                .collect();
            if runs.is_empty() {
                continue;
            }
            let pf = mean(runs.iter().map(|v| v.kvm("pf_taken") as f64));
            let exits = mean(runs.iter().map(|v| v.kvm("exits") as f64));
            let mut reasons: BTreeMap<String, f64> = BTreeMap::new();
            for v in &runs {
                for (k, n) in &v.exits {
                    *reasons.entry(k.clone()).or_default() += *n as f64 / runs.len() as f64;
                }
            }
            let kvm_other = OTHER
                .iter()
                .map(|k| (k.to_string(), mean(runs.iter().map(|v| v.kvm(k) as f64))))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            out.push(Fig2Row {
                app: app.clone(),
                config,
                runs: runs.len(),
                pf_taken: pf,
                kvm_exits: exits,
                pf_share: if exits > 0.0 { pf / exits } else { 0.0 },
                vmm_exits: reasons,
                kvm_other,
            });
        }
    }
    out
}

/// FWQ noise per configuration and level.
pub fn fwq_rows(plan: &Plan, records: &[RunRecord]) -> Vec<FwqRow> {
    let mut out = vec![];
    for &config in &plan.configs {
        for level in levels(plan) {
            let runs: Vec<_> = records
                .iter()
                .filter(|r| r.ok && r.config == config && r.level == level)
                .filter_map(|r| r.fwq.as_ref())
                .collect();
            if runs.is_empty() {
                continue;
            }
            let mut histogram = vec![0u64; EDGES_US.len()];
            for n in &runs {
                for (h, c) in histogram.iter_mut().zip(&n.histogram) {
                    *h += c;
                }
            }
            out.push(FwqRow {
                config,
                level,
                runs: runs.len(),
                max_detour_us: runs.iter().map(|n| n.max_detour_us).fold(0.0, f64::max),
                p999_detour_us: mean(runs.iter().map(|n| n.p999_detour_us)),
                median_detour_us: mean(runs.iter().map(|n| n.median_detour_us)),
                noise_fraction: mean(runs.iter().map(|n| n.noise_fraction)),
                histogram,
            });
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:+.2}%", x * 100.0)
}

/// Slowdown at full load vs idle and CV at full load of `config`, per app with data.
fn load_effect(plan: &Plan, cells: &[Cell], config: Config) -> Vec<(String, f64, f64)> {
    let (idle, full) = (plan.idle_level(), plan.full_level());
    plan.all_apps()
        .iter()
        .filter_map(|app| {
            let i = cell(cells, app, config, idle)?;
            let f = cell(cells, app, config, full)?;
            Some((
                app.clone(),
                f.time_s.mean / i.time_s.mean - 1.0,
                f.time_s.cv,
            ))
        })
        .collect()
}

/// Half-width of the 95% confidence interval of the mean (over apps) full-vs-idle slowdown of
/// `config`, from each app's run-to-run spread (normal approximation).
pub fn slowdown_ci95(plan: &Plan, cells: &[Cell], config: Config) -> f64 {
    let (idle, full) = (plan.idle_level(), plan.full_level());
    let var: Vec<f64> = plan
        .all_apps()
        .iter()
        .filter_map(|app| {
            let i = cell(cells, app, config, idle)?;
            let f = cell(cells, app, config, full)?;
            Some(f.time_s.cv.powi(2) / f.time_s.n as f64 + i.time_s.cv.powi(2) / i.time_s.n as f64)
        })
        .collect();
    if var.is_empty() {
        return 0.0;
    }
    1.96 * var.iter().sum::<f64>().sqrt() / var.len() as f64
}

/// The targets of issue 6 and what the data says about each configuration.
pub fn targets(
    plan: &Plan,
    cells: &[Cell],
    fig2: &[Fig2Row],
    records: &[RunRecord],
) -> (Vec<Check>, Vec<String>) {
    let mut checks = vec![];
    let mut say = vec![];
    let (idle, full) = (plan.idle_level(), plan.full_level());
    let has = |c: Config| plan.configs.contains(&c);

    if has(Config::DualStack) && full != idle {
        let eff = load_effect(plan, cells, Config::DualStack);
        if !eff.is_empty() {
            let m = mean(eff.iter().map(|e| e.1));
            let worst_cv = eff.iter().map(|e| e.2).fold(0.0, f64::max);
            checks.push(Check {
                name: format!("dual-stack, {full} competing cores vs idle: mean slowdown"),
                target: "<= 1%".into(),
                measured: format!(
                    "{} +/- {:.2}% (95% confidence of the mean; per app: {})",
                    pct(m),
                    slowdown_ci95(plan, cells, Config::DualStack) * 100.0,
                    eff.iter()
                        .map(|(a, s, _)| format!("{a} {}", pct(*s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                pass: m <= 0.01,
            });
            checks.push(Check {
                name: format!("dual-stack, {full} competing cores: coefficient of variation"),
                target: "<= 1% (every app)".into(),
                measured: format!(
                    "max {:.2}% ({})",
                    worst_cv * 100.0,
                    eff.iter()
                        .map(|(a, _, cv)| format!("{a} {:.2}%", cv * 100.0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                pass: worst_cv <= 0.01,
            });
            explain_dual_load(plan, cells, records, &eff, &mut say);
        }
    }
    if has(Config::DualStack) && has(Config::Native) {
        let ratios: Vec<(String, f64)> = plan
            .all_apps()
            .iter()
            .filter_map(|a| {
                let d = cell(cells, a, Config::DualStack, idle)?;
                let n = cell(cells, a, Config::Native, idle)?;
                Some((a.clone(), d.time_s.mean / n.time_s.mean))
            })
            .collect();
        if !ratios.is_empty() {
            let worst = ratios.iter().map(|r| r.1).fold(0.0, f64::max);
            checks.push(Check {
                name: "dual-stack vs native, idle: runtime ratio".into(),
                target: "<= 1.01 (every app)".into(),
                measured: format!(
                    "max {worst:.3} ({})",
                    ratios
                        .iter()
                        .map(|(a, r)| format!("{a} {r:.3}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                pass: worst <= 1.01,
            });
            for (a, r) in ratios.iter().filter(|r| r.1 > 1.01) {
                let vm = fig2
                    .iter()
                    .find(|f| &f.app == a && f.config == Config::DualStack);
                if let Some(f) = vm {
                    say.push(format!(
                        "{a}: dual-stack is {:.1}% slower than native when idle; its VM took {:.0} KVM exits per run ({:.0} handled by the VMM: {}), {:.0} of them page faults. Each exit costs ~65 us on this nested host (1-2 us on bare metal), so exits explain about {:.3} s of the difference.",
                        (r - 1.0) * 100.0,
                        f.kvm_exits,
                        f.vmm_exits.values().sum::<f64>(),
                        reasons(&f.vmm_exits),
                        f.pf_taken,
                        f.kvm_exits * 65e-6
                    ));
                }
            }
        }
    }
    if has(Config::DualStack) && has(Config::NativeThp) {
        let ratios: Vec<String> = plan
            .all_apps()
            .iter()
            .filter_map(|a| {
                let d = cell(cells, a, Config::DualStack, idle)?;
                let t = cell(cells, a, Config::NativeThp, idle)?;
                let n = cell(cells, a, Config::Native, idle);
                Some(format!(
                    "{a} {:.3}{}",
                    d.time_s.mean / t.time_s.mean,
                    n.map(|n| format!(" (native-thp/native {:.3})", t.time_s.mean / n.time_s.mean))
                        .unwrap_or_default()
                ))
            })
            .collect();
        if !ratios.is_empty() {
            say.push(format!(
                "dual-stack / native-thp when idle (the VM's huge pages against native huge pages): {}.",
                ratios.join(", ")
            ));
        }
    }
    for (c, why) in &plan.left_out {
        say.push(format!("configuration {c} left out: {why}"));
    }
    if plan.kvm_tcg && has(Config::Kvm) {
        say.push("kvm ran under QEMU TCG (--kvm-tcg): its runs check correctness only; their times are emulation, not a performance figure, and no ratio quotes them.".into());
    }
    if has(Config::Kvm) && !plan.kvm_tcg {
        // The real single stack: a stock guest kernel under QEMU/KVM, pinned, on huge pages.
        let ratios: Vec<String> = plan
            .all_apps()
            .iter()
            .filter_map(|a| {
                let k = cell(cells, a, Config::Kvm, idle)?;
                let parts: Vec<String> = [Config::DualStack, Config::Native, Config::NativeThp]
                    .into_iter()
                    .filter_map(|c| {
                        let x = cell(cells, a, c, idle)?;
                        Some(format!("{c}/kvm {:.3}", x.time_s.mean / k.time_s.mean))
                    })
                    .collect();
                (!parts.is_empty()).then(|| format!("{a} {}", parts.join(", ")))
            })
            .collect();
        if !ratios.is_empty() {
            say.push(format!(
                "against the real single stack (kvm: a stock Linux guest under QEMU/KVM, pinned vCPUs, huge pages) when idle: {}.",
                ratios.join("; ")
            ));
        }
    }
    if has(Config::DualStack) && has(Config::SingleStack) {
        let pairs: Vec<(String, f64, f64)> = plan
            .all_apps()
            .iter()
            .filter_map(|a| {
                let d = fig2
                    .iter()
                    .find(|f| &f.app == a && f.config == Config::DualStack)?;
                let s = fig2
                    .iter()
                    .find(|f| &f.app == a && f.config == Config::SingleStack)?;
                Some((a.clone(), d.pf_taken, s.pf_taken))
            })
            .collect();
        if !pairs.is_empty() {
            let d: f64 = pairs.iter().map(|p| p.1).sum();
            let s: f64 = pairs.iter().map(|p| p.2).sum();
            let ratio = if s > 0.0 { d / s } else { 0.0 };
            checks.push(Check {
                name: "page faults (KVM pf_taken per run), dual-stack / hpcvmm-commodity (single-stack stand-in)".into(),
                target: "<= 1%".into(),
                measured: format!(
                    "{:.3}% ({:.0} vs {:.0} per run summed over apps)",
                    ratio * 100.0,
                    d,
                    s
                ),
                pass: ratio <= 0.01,
            });
        }
    }
    for config in [
        Config::SingleStack,
        Config::Native,
        Config::NativeThp,
        Config::Kvm,
    ] {
        if !has(config) || full == idle || correctness_only(plan, config) {
            continue;
        }
        let eff = load_effect(plan, cells, config);
        if eff.is_empty() {
            continue;
        }
        let m = mean(eff.iter().map(|e| e.1));
        let worst = eff
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("non-empty");
        let worst_cv = eff.iter().map(|e| e.2).fold(0.0, f64::max);
        say.push(format!(
            "{config} under {full} competing cores: mean slowdown {} vs idle (worst {} {}), coefficient of variation up to {:.2}%.",
            pct(m),
            worst.0,
            pct(worst.1),
            worst_cv * 100.0
        ));
    }
    let pinned: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.ok && r.config == Config::SingleStack)
        .filter(|r| {
            r.vm.as_ref()
                .is_some_and(|v| v.vcpu_cpus.iter().any(|c| c.len() < r.cpus.len()))
        })
        .collect();
    if let Some(r) = pinned.first() {
        say.push(format!(
            "in {} hpcvmm-commodity run(s) the VMM pinned the vCPU threads (e.g. to {:?}) instead of letting them float over {:?}: the HPC VMM did not honour pin_vcpus = false, so those runs show a pinned commodity-memory VM.",
            pinned.len(),
            r.vm.as_ref().map(|v| v.vcpu_cpus.clone()).unwrap_or_default(),
            r.cpus
        ));
    }
    if has(Config::SingleStack) && has(Config::DualStack) && full != idle {
        let d = load_effect(plan, cells, Config::DualStack);
        let s = load_effect(plan, cells, Config::SingleStack);
        if !d.is_empty() && !s.is_empty() {
            let (dm, sm) = (mean(d.iter().map(|e| e.1)), mean(s.iter().map(|e| e.1)));
            say.push(if dm < sm {
                format!(
                    "dual-stack keeps its runtime better under load than the single-stack stand-in hpcvmm-commodity ({} vs {} mean slowdown).",
                    pct(dm),
                    pct(sm)
                )
            } else {
                format!(
                    "dual-stack does not hold up better than the single-stack stand-in hpcvmm-commodity here ({} vs {} mean slowdown): the stand-in VM's floating vCPU mostly lands on the idle HPC core anyway, so the load reaches both the same way (see the native row: the same cores, no VM).",
                    pct(dm),
                    pct(sm)
                )
            });
        }
    }
    (checks, say)
}

fn reasons(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why dual-stack slowed down under load, from the data: compare with native on the same
/// cores (no VM at all) and with the VM's own exits idle vs loaded.
fn explain_dual_load(
    plan: &Plan,
    cells: &[Cell],
    records: &[RunRecord],
    eff: &[(String, f64, f64)],
    say: &mut Vec<String>,
) {
    let (idle, full) = (plan.idle_level(), plan.full_level());
    let native = load_effect(plan, cells, Config::Native);
    let kvm_mean = |app: &str, level: u32, key: &str| {
        mean(
            ok_runs(records, app, Config::DualStack, level)
                .filter_map(|r| r.vm.as_ref())
                .map(|v| v.kvm(key) as f64),
        )
    };
    for (app, slow, cv) in eff.iter().filter(|e| e.1 > 0.01 || e.2 > 0.01) {
        let mut parts = vec![];
        if *slow > 0.01 {
            let mut s = format!(
                "dual-stack is {} slower at {full} competing cores than idle",
                pct(*slow)
            );
            if let Some((_, ns, _)) = native.iter().find(|n| &n.0 == app) {
                let _ = write!(s, " (native on the same cores: {})", pct(*ns));
                if *ns > 0.5 * slow {
                    s += ", so the load reaches the zone's cores without any VM involved (shared caches, memory bandwidth, host work), which partitioning cores cannot remove";
                }
            }
            let _ = write!(
                s,
                "; its VM took {:.0} KVM exits per run idle and {:.0} loaded ({:.0} vs {:.0} for host interrupts)",
                kvm_mean(app, idle, "exits"),
                kvm_mean(app, full, "exits"),
                kvm_mean(app, idle, "irq_exits"),
                kvm_mean(app, full, "irq_exits")
            );
            parts.push(s);
        }
        if *cv > 0.01 {
            let idle_cv = cell(cells, app, Config::DualStack, idle).map_or(0.0, |c| c.time_s.cv);
            let native_cv = cell(cells, app, Config::Native, idle).map_or(0.0, |c| c.time_s.cv);
            parts.push(if idle_cv >= 0.5 * cv {
                format!(
                    "run-to-run CV {:.2}% loaded vs {:.2}% idle (native idle {:.2}%): the variation is there without competing load, so it comes from the host itself (other work on the node, the hardware, an outer hypervisor), not from the commodity VMs",
                    cv * 100.0,
                    idle_cv * 100.0,
                    native_cv * 100.0
                )
            } else {
                format!(
                    "run-to-run CV grows from {:.2}% idle to {:.2}% loaded (native idle {:.2}%)",
                    idle_cv * 100.0,
                    cv * 100.0,
                    native_cv * 100.0
                )
            });
        }
        say.push(format!("{app}: {}.", parts.join("; ")));
    }
}

/// Commodity build throughput during the runs.
pub fn commodity_throughput(plan: &Plan, records: &[RunRecord]) -> Vec<(Config, u32, f64)> {
    let mut out = vec![];
    for &config in &plan.configs {
        for level in levels(plan).into_iter().filter(|&l| l > 0) {
            let v: Vec<f64> = records
                .iter()
                .filter(|r| r.ok && r.config == config && r.level == level)
                .filter_map(|r| r.load_jobs_per_s)
                .collect();
            if !v.is_empty() {
                out.push((config, level, mean(v.into_iter())));
            }
        }
    }
    out
}

/// How the dual-stack runs got their memory: the zone's warm memory (mapped, not populated),
/// with the mean launch and the mean wait for zeroing after the previous run.
fn memory_statement(records: &[RunRecord]) -> Option<String> {
    let dual: Vec<&VmFigures> = records
        .iter()
        .filter(|r| r.config == Config::DualStack)
        .filter_map(|r| r.vm.as_ref())
        .collect();
    if dual.is_empty() {
        return None;
    }
    let warm = dual
        .iter()
        .filter(|v| v.memory_source == "warm_zone")
        .count();
    let n = dual.len() as f64;
    Some(format!(
        "dual-stack memory: {warm} of {} runs mapped the zone's warm, pre-zeroed memory; mean launch {:.1} ms, mean wait for zeroing {:.2} ms",
        dual.len(),
        dual.iter().map(|v| v.launch_s).sum::<f64>() / n * 1e3,
        dual.iter().map(|v| v.memory_zero_wait_s).sum::<f64>() / n * 1e3
    ))
}

/// Everything, computed.
pub fn analyze(plan: &Plan, records: &[RunRecord]) -> Analysis {
    let cells = cells(plan, records);
    let figure2 = figure2(plan, records);
    let (checks, mut statements) = targets(plan, &cells, &figure2, records);
    statements.extend(memory_statement(records));
    Analysis {
        fwq: fwq_rows(plan, records),
        commodity_jobs_per_s: commodity_throughput(plan, records),
        cells,
        figure2,
        checks,
        statements,
    }
}

/// Figure 5: one table per load level, mean / stdev of the measured phase per app and
/// configuration, and the change vs the same configuration idle.
pub fn figure5_markdown(plan: &Plan, cells: &[Cell]) -> String {
    let mut s = String::new();
    let idle = plan.idle_level();
    for level in levels(plan) {
        let _ = writeln!(
            s,
            "\n**{level} competing core{}** ({} load), runtime of the measured phase in seconds, mean / stdev over repetitions{}\n",
            if level == 1 { "" } else { "s" },
            plan.load.as_str(),
            if level == idle { "" } else { "; change vs the same configuration idle" }
        );
        let mut head = String::from("| app |");
        let mut rule = String::from("| --- |");
        for &c in &plan.configs {
            let _ = write!(head, " {} mean | stdev | CV |", config_label(plan, c));
            rule += " ---: | ---: | ---: |";
            if level != idle {
                head += " vs idle |";
                rule += " ---: |";
            }
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for app in &plan.all_apps() {
            let mut row = format!("| {app} |");
            for &c in &plan.configs {
                match cell(cells, app, c, level) {
                    Some(x) => {
                        let _ = write!(
                            row,
                            " {:.4} | {:.4} | {:.2}% |",
                            x.time_s.mean,
                            x.time_s.stdev,
                            x.time_s.cv * 100.0
                        );
                        if level != idle {
                            match cell(cells, app, c, idle) {
                                // Emulation: no ratio of its times is a figure.
                                Some(_) if correctness_only(plan, c) => row += " - |",
                                Some(i) => {
                                    let _ = write!(
                                        row,
                                        " {} |",
                                        pct(x.time_s.mean / i.time_s.mean - 1.0)
                                    );
                                }
                                None => row += " - |",
                            }
                        }
                    }
                    None => {
                        row += " - | - | - |";
                        if level != idle {
                            row += " - |";
                        }
                    }
                }
            }
            let _ = writeln!(s, "{row}");
        }
    }
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| c.failures > 0)
        .map(|c| format!("{} {} load {}: {}", c.app, c.config, c.level, c.failures))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed runs (left out above): {}", failed.join("; "));
    }
    s
}

/// Figure 2: page faults and exits, dual vs single stack.
pub fn figure2_markdown(rows: &[Fig2Row]) -> String {
    let mut s = String::from(
        "| app | configuration | runs | page faults (pf_taken) | KVM exits | page-fault share of exits | VMM exits by reason | other KVM exits |\n| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {:.1}% | {} | {} |",
            r.app,
            r.config,
            r.runs,
            r.pf_taken,
            r.kvm_exits,
            r.pf_share * 100.0,
            reasons(&r.vmm_exits),
            reasons(&r.kvm_other)
        );
    }
    s
}

/// FWQ noise: a summary table and the detour histogram.
pub fn fwq_markdown(rows: &[FwqRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| configuration | competing cores | runs | max detour (us) | 99.9th pct detour (us) | median detour (us) | noise |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.2} | {:.3} | {:.4}% |",
            r.config,
            r.level,
            r.runs,
            r.max_detour_us,
            r.p999_detour_us,
            r.median_detour_us,
            r.noise_fraction * 100.0
        );
    }
    s += "\nDetour histogram (quanta per bin, all runs):\n\n| detour |";
    for r in rows {
        let _ = write!(s, " {} @{} |", r.config, r.level);
    }
    s += "\n| --- |";
    for _ in rows {
        s += " ---: |";
    }
    s += "\n";
    let last = rows
        .iter()
        .filter_map(|r| r.histogram.iter().rposition(|&c| c > 0))
        .max()
        .unwrap_or(0);
    for b in 0..=last {
        let _ = write!(s, "| {} |", bin_label(b));
        for r in rows {
            let _ = write!(s, " {} |", r.histogram.get(b).copied().unwrap_or(0));
        }
        s += "\n";
    }
    s
}

/// The targets as printed at the end of a run.
pub fn targets_text(a: &Analysis) -> String {
    let mut s = String::new();
    for c in &a.checks {
        let _ = writeln!(
            s,
            "[{}] {}: {} (target {})",
            if c.pass { "met" } else { "MISSED" },
            c.name,
            c.measured,
            c.target
        );
    }
    for t in &a.statements {
        let _ = writeln!(s, "- {t}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::plan::test_plan;
    use super::super::record::{synthetic, VmFigures};
    use super::*;

    /// Dual-stack flat under load, single-stack 10% slower and noisy, native flat.
    fn data(plan: &Plan) -> Vec<RunRecord> {
        let mut v = vec![];
        for rep in 0..plan.reps {
            let jitter = [0.0, 0.001, -0.001][rep as usize % 3];
            for app in &plan.all_apps() {
                for level in [0, 1] {
                    let mut d = synthetic(app, Config::DualStack, level, rep, 1.0 + jitter);
                    d.vm = Some(VmFigures {
                        kvm: [("pf_taken".to_string(), 10), ("exits".to_string(), 100)].into(),
                        exits: [("syscall".to_string(), 50)].into(),
                        ..Default::default()
                    });
                    v.push(d);
                    let slow = if level == 1 { 1.1 + 5.0 * jitter } else { 1.0 };
                    let mut s = synthetic(app, Config::SingleStack, level, rep, slow);
                    s.vm = Some(VmFigures {
                        kvm: [
                            ("pf_taken".to_string(), 10_000),
                            ("exits".to_string(), 12_000),
                        ]
                        .into(),
                        exits: [("syscall".to_string(), 50)].into(),
                        ..Default::default()
                    });
                    v.push(s);
                    v.push(synthetic(app, Config::Native, level, rep, 0.995 + jitter));
                }
            }
        }
        v
    }

    #[test]
    fn cells_summarize_successful_runs_only() {
        let p = test_plan();
        let mut d = data(&p);
        let mut bad = synthetic("hpccg", Config::Native, 0, 9, 100.0);
        bad.ok = false;
        d.push(bad);
        let c = cells(&p, &d);
        assert_eq!(c.len(), 2 * 3 * 2);
        let x = cell(&c, "hpccg", Config::Native, 0).unwrap();
        assert_eq!(x.time_s.n, 3);
        assert!((x.time_s.mean - 0.995).abs() < 1e-12);
        assert_eq!(x.failures, 1);
        let md = figure5_markdown(&p, &c);
        assert!(md.contains("| hpccg | 1.0000 | 0.0010 | 0.10% |"), "{md}");
        assert!(md.contains("+10.00%"), "single-stack slowdown shown: {md}");
        assert!(md.contains("Failed runs"), "{md}");
    }

    #[test]
    fn targets_pass_and_fail_as_the_data_says() {
        let p = test_plan();
        let a = analyze(&p, &data(&p));
        let by_name = |n: &str| a.checks.iter().find(|c| c.name.contains(n)).unwrap();
        assert!(by_name("mean slowdown").pass);
        assert!(by_name("coefficient of variation").pass);
        // 1.0 / 0.995 = 1.005 <= 1.01.
        assert!(by_name("vs native").pass);
        let pf = by_name("page faults");
        assert!(pf.pass, "{pf:?}");
        assert!(pf.measured.starts_with("0.100%"), "{pf:?}");
        assert!(
            a.statements
                .iter()
                .any(|s| s
                    .starts_with("hpcvmm-commodity under 1 competing cores: mean slowdown +10.")),
            "{:?}",
            a.statements
        );
        assert!(a
            .statements
            .iter()
            .any(|s| s.contains("keeps its runtime better")));

        // Make dual-stack slow under load: the check fails and a reason is given.
        let mut d = data(&p);
        for r in d
            .iter_mut()
            .filter(|r| r.config == Config::DualStack && r.level == 1)
        {
            r.time_s = Some(r.time_s.unwrap() * 1.05);
        }
        let a = analyze(&p, &d);
        assert!(
            !a.checks
                .iter()
                .find(|c| c.name.contains("mean slowdown"))
                .unwrap()
                .pass
        );
        assert!(
            a.statements
                .iter()
                .any(|s| s.contains("dual-stack is +5.00% slower")),
            "{:?}",
            a.statements
        );
    }

    #[test]
    fn confidence_interval_shrinks_with_quieter_runs() {
        let p = test_plan();
        let c = cells(&p, &data(&p));
        // Dual-stack: 3 runs of CV 0.1% at each level, 2 apps.
        let ci = slowdown_ci95(&p, &c, Config::DualStack);
        let cv = 0.001f64;
        let expect = 1.96 * (2.0 * 2.0 * cv * cv / 3.0).sqrt() / 2.0;
        assert!((ci - expect).abs() < 1e-4, "{ci} vs {expect}");
        assert!(slowdown_ci95(&p, &c, Config::SingleStack) > ci);
    }

    #[test]
    fn figure2_reports_page_fault_share() {
        let p = test_plan();
        let rows = figure2(&p, &data(&p));
        assert_eq!(rows.len(), 4);
        let s = rows
            .iter()
            .find(|r| r.config == Config::SingleStack)
            .unwrap();
        assert_eq!(s.runs, 6);
        assert_eq!(s.pf_taken, 10_000.0);
        assert!((s.pf_share - 10_000.0 / 12_000.0).abs() < 1e-12);
        let md = figure2_markdown(&rows);
        assert!(
            md.contains("| hpccg | hpcvmm-commodity | 6 | 10000 | 12000 | 83.3% | syscall 50 |"),
            "{md}"
        );
    }

    #[test]
    fn fwq_histograms_add_up_over_runs() {
        let p = test_plan();
        let mut d = data(&p);
        for (i, r) in d
            .iter_mut()
            .filter(|r| r.config == Config::Native && r.level == 0)
            .enumerate()
        {
            let mut h = vec![0; EDGES_US.len()];
            h[0] = 100;
            h[5] = i as u64;
            r.fwq = Some(super::super::fwq::FwqNoise {
                samples: 100 + i as u64,
                max_detour_us: 10.0 * (i + 1) as f64,
                p999_detour_us: 2.0,
                histogram: h,
                ..Default::default()
            });
        }
        let rows = fwq_rows(&p, &d);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].runs, 6);
        assert_eq!(rows[0].histogram[0], 600);
        assert_eq!(rows[0].histogram[5], 15);
        assert_eq!(rows[0].max_detour_us, 60.0);
        let md = fwq_markdown(&rows);
        assert!(md.contains("| 20us-50us | 15 |"), "{md}");
    }
}
