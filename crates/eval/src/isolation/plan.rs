//! What an isolation experiment runs, and in which order.
//!
//! Fairness rules the schedule follows: every configuration runs the same static binary with
//! the same `--threads` and `--size`; within one repetition, at one load level, the
//! configurations of an app run back to back in an order that rotates with the repetition and
//! the app (each configuration goes first equally often), so slow drift of the machine hits all
//! of them alike. Load levels go up in even repetitions and down in odd ones (ABBA), so the
//! competing load changes one step at a time and time-of-run effects cancel across levels.

use serde::{Deserialize, Serialize};

/// The three ways of running an HPC app the experiment compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// HPC zone (exclusive cpuset + huge pages) and the HPC VMM inside it: hugetlb memory,
    /// pinned vCPUs.
    DualStack,
    /// A stand-in for single stack: the same HPC VMM configured like a commodity VMM (lazy
    /// 4 KiB memory, 4 KiB guest pages, vCPU threads floating over every core, no zone). Called
    /// `single-stack` before issue 16 (still accepted).
    #[serde(rename = "hpcvmm-commodity", alias = "single-stack")]
    SingleStack,
    /// A plain host process pinned to the zone's cores.
    Native,
    /// Native, with transparent huge pages set to `always` for the run (the fair baseline for
    /// a VM on huge pages).
    NativeThp,
    /// The real single-stack baseline: the commodity guest image (stock Linux kernel) under
    /// QEMU/KVM, vCPUs pinned, memory on huge pages, the program on an initramfs.
    Kvm,
}

impl Config {
    /// The configurations the experiment runs by default.
    pub const ALL: [Config; 3] = [Config::DualStack, Config::SingleStack, Config::Native];
    /// Every configuration there is.
    pub const KNOWN: [Config; 5] = [
        Config::DualStack,
        Config::SingleStack,
        Config::Native,
        Config::NativeThp,
        Config::Kvm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Config::DualStack => "dual-stack",
            Config::SingleStack => "hpcvmm-commodity",
            Config::Native => "native",
            Config::NativeThp => "native-thp",
            Config::Kvm => "kvm",
        }
    }

    pub fn parse(s: &str) -> Option<Config> {
        if s == "single-stack" {
            return Some(Config::SingleStack);
        }
        Config::KNOWN.into_iter().find(|c| c.as_str() == s)
    }

    /// Runs in the HPC VMM (and so has VMM and KVM figures).
    pub fn is_vm(self) -> bool {
        matches!(self, Config::DualStack | Config::SingleStack)
    }

    /// A plain host process on the zone's cores.
    pub fn is_native(self) -> bool {
        matches!(self, Config::Native | Config::NativeThp)
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the competing load is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// Commodity QEMU VMs (1 vCPU each) running the built-in guest's `build` workload.
    Vm,
    /// Native `stress-ng --cpu 1` processes confined to the commodity cores (hosts without QEMU).
    Stress,
}

impl LoadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadKind::Vm => "vm",
            LoadKind::Stress => "stress",
        }
    }
}

/// The apps' `--size` preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppSize {
    Small,
    Default,
    Large,
}

impl AppSize {
    pub fn as_str(self) -> &'static str {
        match self {
            AppSize::Small => "small",
            AppSize::Default => "default",
            AppSize::Large => "large",
        }
    }
}

/// Every mini-app the experiment knows, in report order.
pub const ALL_APPS: [&str; 7] = [
    "hpccg", "minife", "minimd", "amg", "phdmesh", "stream", "fwq",
];

/// The `--quick` subset: one of each character (stencil CG, particles, multigrid, bandwidth,
/// noise), at full size so interference is still measurable.
pub const QUICK_APPS: [&str; 5] = ["hpccg", "minimd", "amg", "stream", "fwq"];

/// The whole experiment, fixed before the first run and stored with the results (resume reads
/// it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub apps: Vec<String>,
    pub size: AppSize,
    /// Extra arguments for every app (after `--threads` and `--size`).
    #[serde(default)]
    pub app_args: Vec<String>,
    pub configs: Vec<Config>,
    pub load: LoadKind,
    /// Competing cores at each level (0 = idle).
    pub levels: Vec<u32>,
    pub reps: u32,
    /// Cores of the HPC zone; also every configuration's thread count.
    pub zone_cores: u32,
    /// Memory of the zone (huge pages) and of every VM run.
    pub memory_bytes: u64,
    /// Memory of each commodity VM, MiB.
    pub load_vm_memory_mib: u64,
    /// One unrecorded native run of each app before the first measured run.
    pub warmup: bool,
    /// Steer IRQs and the unbound workqueue mask off the zone (real dual stack).
    pub steer: bool,
    /// The zones crate's host-task policy name (`leave`, `project-only`, `move`).
    pub host_tasks: String,
    /// The user's own programs, run after the built-in apps in every configuration.
    #[serde(default)]
    pub programs: Vec<super::program::UserProgram>,
    /// Configurations asked for but left out, with the reason (e.g. `kvm` where a stock Linux
    /// guest cannot boot under KVM).
    #[serde(default)]
    pub left_out: Vec<(Config, String)>,
    /// `kvm` runs under QEMU TCG: correctness only, never a performance figure.
    #[serde(default)]
    pub kvm_tcg: bool,
}

/// Identifies one measured run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    pub app: String,
    pub config: Config,
    /// Competing cores.
    pub level: u32,
    /// Repetition, from 0.
    pub rep: u32,
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} load {} rep {}",
            self.app,
            self.config,
            self.level,
            self.rep + 1
        )
    }
}

/// Problems with a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown app {0:?}; the apps are {apps}, and the MPI app {mpi}", apps = ALL_APPS.join(", "), mpi = super::mpi_app::MPI_APPS.join(", "))]
    UnknownApp(String),
    #[error(transparent)]
    Program(#[from] super::program::ProgramError),
    #[error("program name {0:?} is given twice")]
    Duplicate(String),
    #[error("the plan has no {0}; give at least one")]
    Empty(&'static str),
    #[error("load level {level} asks for more competing cores than the {commodity} commodity cores this node has left beside a {zone}-core zone")]
    LevelTooHigh {
        level: u32,
        commodity: u32,
        zone: u32,
    },
}

impl Plan {
    /// Checks names and ranges. `commodity_cores` is what the node leaves beside the zone.
    pub fn validate(&self, commodity_cores: Option<u32>) -> Result<(), PlanError> {
        if self.apps.is_empty() && self.programs.is_empty() {
            return Err(PlanError::Empty("apps"));
        }
        for (i, p) in self.programs.iter().enumerate() {
            p.validate()?;
            if self.programs[..i].iter().any(|q| q.name == p.name) {
                return Err(PlanError::Duplicate(p.name.clone()));
            }
        }
        if let Some(a) = self
            .apps
            .iter()
            .find(|a| !ALL_APPS.contains(&a.as_str()) && !super::mpi_app::is_mpi_app(a))
        {
            return Err(PlanError::UnknownApp(a.clone()));
        }
        if self.configs.is_empty() {
            return Err(PlanError::Empty("configurations"));
        }
        if self.levels.is_empty() {
            return Err(PlanError::Empty("load levels"));
        }
        if self.reps == 0 {
            return Err(PlanError::Empty("repetitions"));
        }
        if let Some(c) = commodity_cores {
            if let Some(&l) = self.levels.iter().find(|&&l| l > c) {
                return Err(PlanError::LevelTooHigh {
                    level: l,
                    commodity: c,
                    zone: self.zone_cores,
                });
            }
        }
        Ok(())
    }

    /// Number of measured runs.
    pub fn total_runs(&self) -> usize {
        self.all_apps().len() * self.configs.len() * self.levels.len() * self.reps as usize
    }

    /// Load levels in the order repetition `rep` visits them (up, then down, then up...).
    pub fn levels_for_rep(&self, rep: u32) -> Vec<u32> {
        let mut l = self.levels.clone();
        l.sort_unstable();
        l.dedup();
        if rep % 2 == 1 {
            l.reverse();
        }
        l
    }

    /// Configurations of `app_index` at repetition `rep`, rotated so each goes first equally
    /// often.
    pub fn configs_for(&self, rep: u32, app_index: usize) -> Vec<Config> {
        let n = self.configs.len();
        let shift = (rep as usize + app_index) % n;
        (0..n).map(|i| self.configs[(i + shift) % n]).collect()
    }

    /// Every run, in execution order.
    pub fn schedule(&self) -> Vec<RunKey> {
        let mut out = Vec::with_capacity(self.total_runs());
        for rep in 0..self.reps {
            for level in self.levels_for_rep(rep) {
                for (ai, app) in self.all_apps().iter().enumerate() {
                    for config in self.configs_for(rep, ai) {
                        out.push(RunKey {
                            app: app.clone(),
                            config,
                            level,
                            rep,
                        });
                    }
                }
            }
        }
        out
    }

    /// Built-in apps, then the user's programs: every name the tables have a row for.
    pub fn all_apps(&self) -> Vec<String> {
        let mut v = self.apps.clone();
        v.extend(self.programs.iter().map(|p| p.name.clone()));
        v
    }

    /// The user program called `name`.
    pub fn program(&self, name: &str) -> Option<&super::program::UserProgram> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The highest load level (the "full load" of the targets).
    pub fn full_level(&self) -> u32 {
        self.levels.iter().copied().max().unwrap_or(0)
    }

    /// The lowest load level (normally 0, idle).
    pub fn idle_level(&self) -> u32 {
        self.levels.iter().copied().min().unwrap_or(0)
    }

    /// The arguments every configuration gives `app`.
    pub fn app_argv(&self) -> Vec<String> {
        let mut v = vec![
            "--threads".to_string(),
            self.zone_cores.to_string(),
            "--size".to_string(),
            self.size.as_str().to_string(),
        ];
        v.extend(self.app_args.iter().cloned());
        v
    }
}

#[cfg(test)]
pub(crate) fn test_plan() -> Plan {
    Plan {
        apps: vec!["hpccg".into(), "stream".into()],
        size: AppSize::Small,
        app_args: vec![],
        configs: Config::ALL.to_vec(),
        load: LoadKind::Stress,
        levels: vec![0, 1],
        reps: 3,
        zone_cores: 1,
        memory_bytes: 256 << 20,
        load_vm_memory_mib: 256,
        warmup: false,
        steer: false,
        host_tasks: "leave".into(),
        programs: vec![],
        left_out: vec![],
        kvm_tcg: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn schedule_covers_every_run_once() {
        let p = test_plan();
        let s = p.schedule();
        assert_eq!(s.len(), p.total_runs());
        assert_eq!(s.len(), 2 * 3 * 2 * 3);
        let set: BTreeSet<_> = s.iter().cloned().collect();
        assert_eq!(set.len(), s.len());
    }

    #[test]
    fn configurations_rotate_so_each_goes_first_equally_often() {
        let mut p = test_plan();
        p.apps = vec!["hpccg".into()];
        p.levels = vec![0];
        p.reps = 6;
        let mut first: BTreeMap<Config, u32> = BTreeMap::new();
        for rep in 0..p.reps {
            let c = p.configs_for(rep, 0);
            assert_eq!(
                c.iter().collect::<BTreeSet<_>>().len(),
                3,
                "every configuration once"
            );
            *first.entry(c[0]).or_default() += 1;
        }
        assert_eq!(first.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn levels_go_up_then_down() {
        let mut p = test_plan();
        p.levels = vec![2, 0, 1];
        assert_eq!(p.levels_for_rep(0), vec![0, 1, 2]);
        assert_eq!(p.levels_for_rep(1), vec![2, 1, 0]);
        assert_eq!(p.full_level(), 2);
        assert_eq!(p.idle_level(), 0);
        // Consecutive runs never jump more than one level step: the load changes gradually.
        let s = p.schedule();
        for w in s.windows(2) {
            assert!(w[0].level.abs_diff(w[1].level) <= 1, "{} -> {}", w[0], w[1]);
        }
    }

    #[test]
    fn validation_explains() {
        let mut p = test_plan();
        assert!(p.validate(Some(1)).is_ok());
        assert!(matches!(
            p.validate(Some(0)),
            Err(PlanError::LevelTooHigh { level: 1, .. })
        ));
        p.apps.push("linpack".into());
        assert!(matches!(p.validate(None), Err(PlanError::UnknownApp(a)) if a == "linpack"));
        p.apps.clear();
        assert!(matches!(p.validate(None), Err(PlanError::Empty("apps"))));
    }

    #[test]
    fn same_arguments_for_every_configuration() {
        let p = test_plan();
        assert_eq!(p.app_argv(), ["--threads", "1", "--size", "small"]);
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
