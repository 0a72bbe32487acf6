//! `dualstack node`. (Owned by the topology/zones work, issue 4.)

use crate::common::GlobalOpts;

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: NodeArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let paths = crate::cmd_zone::paths(global)?;
    let node = dualstack_zones::load_node(&paths)?;
    let s = dualstack_zones::node_status(&paths, node)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    let t = &s.topology;
    println!(
        "node ({}): {} package(s), {} NUMA node(s), {} core(s), CPUs {}",
        t.source,
        t.packages.len(),
        t.numa_nodes.len(),
        t.cores.len(),
        t.cpus()
    );
    for p in &t.packages {
        println!(
            "  package {}: CPUs {} (NUMA {:?})",
            p.index, p.cpus, p.numa_nodes
        );
    }
    for n in &t.numa_nodes {
        let pools: Vec<String> = n
            .hugepages
            .iter()
            .map(|h| format!("{}x{}K ({} free)", h.total, h.page_kib, h.free))
            .collect();
        println!(
            "  NUMA {}: CPUs {}, {} MiB{}, huge pages {}",
            n.os_index,
            n.cpus,
            n.memory_bytes >> 20,
            n.free_bytes
                .map(|f| format!(" ({} MiB free)", f >> 20))
                .unwrap_or_default(),
            if pools.is_empty() {
                "none".into()
            } else {
                pools.join(", ")
            }
        );
    }
    let smt = t.cores.iter().any(|c| c.pus.len() > 1);
    println!(
        "  SMT: {}",
        if smt {
            "yes (siblings stay together)"
        } else {
            "no"
        }
    );
    println!(
        "cpusets: {:?} at {}, instance {:?}, root CPUs {}",
        if s.cgroup.is_v2() {
            "cgroup v2"
        } else {
            "cgroup v1"
        },
        s.cgroup.root().display(),
        s.instance,
        s.cpuset_root_cpus
    );
    match &s.commodity {
        Some(c) => println!(
            "commodity: CPUs {} mems {} ({})",
            c.cpus,
            c.mems,
            c.cgroup_dir.display()
        ),
        None => println!("commodity: not created"),
    }
    if s.zones.is_empty() {
        println!("zones: none");
    }
    for z in &s.zones {
        println!(
            "zone {}: {} CPUs {} NUMA {} {} MiB",
            z.name,
            z.state,
            z.cpus,
            z.numa_node,
            z.memory_bytes >> 20
        );
    }
    println!("free CPUs (no zone): {}", s.free_cpus);
    for f in &s.numa_free {
        println!(
            "  NUMA {}: free CPUs {}, zones hold {} of {} MiB",
            f.numa_node,
            f.free_cpus,
            f.zone_memory_bytes >> 20,
            f.memory_bytes >> 20
        );
    }
    Ok(0)
}
