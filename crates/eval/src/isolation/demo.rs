//! `dualstack demo`: the README's main job, a short version of the isolation experiment.
//!
//! HPCCG (a 64^3 grid, 150 CG iterations: ~1 s a run) on a 1-core HPC zone, idle and with the
//! commodity cores fully loaded (at most 4 competing cores, so it stays short on big nodes),
//! dual-stack vs single-stack vs native, 3 repetitions. The competing load is commodity VMs when
//! QEMU is installed (the first run builds their guest image), stress-ng otherwise. It takes a
//! few minutes on a 2-core machine and prints the runtime table and the targets.

use super::plan::{AppSize, Config, LoadKind, Plan};

/// Most competing cores the demo loads.
pub const MAX_DEMO_LOAD: u32 = 4;

/// The demo's plan for a node with `cpus` usable CPUs.
pub fn plan(cpus: usize, load: LoadKind) -> Plan {
    let zone_cores = 1;
    let commodity = (cpus as u32).saturating_sub(zone_cores);
    let full = commodity.min(MAX_DEMO_LOAD);
    let mut levels = vec![0];
    if full > 0 {
        levels.push(full);
    }
    Plan {
        apps: vec!["hpccg".into()],
        size: AppSize::Default,
        app_args: [
            "--nx",
            "64",
            "--ny",
            "64",
            "--nz",
            "64",
            "--iterations",
            "150",
        ]
        .map(String::from)
        .to_vec(),
        configs: Config::ALL.to_vec(),
        load,
        levels,
        reps: 3,
        zone_cores,
        memory_bytes: 512 << 20,
        load_vm_memory_mib: 256,
        warmup: true,
        steer: true,
        host_tasks: "leave".into(),
        programs: vec![],
        left_out: vec![],
        kvm_tcg: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_plan_fits_the_node() {
        let p = plan(2, LoadKind::Vm);
        assert_eq!(p.levels, vec![0, 1]);
        assert!(p.validate(Some(1)).is_ok());
        assert_eq!(p.total_runs(), 3 * 2 * 3);
        assert_eq!(plan(64, LoadKind::Stress).levels, vec![0, MAX_DEMO_LOAD]);
        assert_eq!(plan(1, LoadKind::Stress).levels, vec![0]);
    }
}
