//! `/metrics` in the Prometheus text format.

use std::fmt::Write;

use crate::api::App;

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn counter(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// Live figures of the running jobs (what their VMMs last published).
fn running_jobs(out: &mut String, jobs: &[crate::jobs::Job]) {
    let live: Vec<(i64, &crate::jobs::LiveStats)> = jobs
        .iter()
        .filter_map(|j| j.live.as_ref().map(|l| (j.id, l)))
        .collect();
    type Field = fn(&crate::jobs::LiveStats) -> f64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "dualstack_job_vm_exits_total",
            "VM exits a running job's VMM served so far.",
            |l| l.exits as f64,
        ),
        (
            "dualstack_job_syscalls_total",
            "System calls a running job's VMM served so far.",
            |l| l.syscalls as f64,
        ),
        (
            "dualstack_job_page_faults_total",
            "KVM page faults (pf_taken) of a running job so far.",
            |l| l.page_faults as f64,
        ),
        (
            "dualstack_job_kvm_exits_total",
            "KVM's exits (in-kernel ones included) of a running job so far.",
            |l| l.kvm_exits as f64,
        ),
    ];
    for (name, help, f) in counters {
        counter(out, name, help);
        for (id, l) in &live {
            let _ = writeln!(out, "{name}{{job=\"{id}\"}} {}", f(l));
        }
    }
    let gauges: [(&str, &str, Field); 2] = [
        (
            "dualstack_job_vm_exits_per_second",
            "VM exits per second of a running job (between its VMM's last two samples).",
            |l| l.exits_per_s,
        ),
        (
            "dualstack_job_runtime_seconds",
            "Seconds since a running job's first guest instruction.",
            |l| l.runtime_s,
        ),
    ];
    for (name, help, f) in gauges {
        gauge(out, name, help);
        for (id, l) in &live {
            let _ = writeln!(out, "{name}{{job=\"{id}\"}} {}", f(l));
        }
    }
}

/// Render every metric. Problems reading one source leave its metrics out (and say so in a
/// comment) rather than failing the scrape.
pub fn render(app: &App) -> String {
    let mut out = String::new();
    match dualstack_zones::list(&app.paths) {
        Ok(zones) => {
            gauge(&mut out, "dualstack_zones", "Zones by life-cycle state.");
            for st in dualstack_zones::ZoneState::ALL {
                let n = zones.iter().filter(|z| z.state == st).count();
                let _ = writeln!(out, "dualstack_zones{{state=\"{st}\"}} {n}");
            }
            let all = app.node.cpus();
            let held = zones
                .iter()
                .fold(dualstack_topology::CpuList::new(), |a, z| a.union(&z.cpus));
            gauge(
                &mut out,
                "dualstack_cpus",
                "CPUs by owner: held by a zone, or free (commodity and housekeeping).",
            );
            let _ = writeln!(out, "dualstack_cpus{{owner=\"zone\"}} {}", held.len());
            let _ = writeln!(
                out,
                "dualstack_cpus{{owner=\"free\"}} {}",
                all.difference(&held).len()
            );
            gauge(&mut out, "dualstack_zone_cpus", "CPUs of each zone.");
            for z in &zones {
                let _ = writeln!(
                    out,
                    "dualstack_zone_cpus{{zone=\"{}\"}} {}",
                    z.name,
                    z.cpus.len()
                );
            }
            let mut node = app.node.clone();
            node.read_hugepages(&app.paths.node_dir);
            gauge(&mut out, "dualstack_hugepages", "Huge pages per NUMA node and size: total in the pool, free, and reserved for zones.");
            for n in &node.numa_nodes {
                for h in &n.hugepages {
                    let zone: u64 = zones
                        .iter()
                        .filter(|z| z.numa_node == n.os_index && z.hugepage_kib == h.page_kib)
                        .map(|z| z.hugepages)
                        .sum();
                    for (state, v) in [("total", h.total), ("free", h.free), ("zone", zone)] {
                        let _ = writeln!(out, "dualstack_hugepages{{numa=\"{}\",page_kib=\"{}\",state=\"{state}\"}} {v}", n.os_index, h.page_kib);
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "# zones unavailable: {e}");
        }
    }
    match app.jobs.counts() {
        Ok(counts) => {
            gauge(&mut out, "dualstack_jobs", "HPC jobs by state.");
            for (s, n) in counts {
                let _ = writeln!(out, "dualstack_jobs{{state=\"{}\"}} {n}", s.as_str());
            }
        }
        Err(e) => {
            let _ = writeln!(out, "# jobs unavailable: {e}");
        }
    }
    // Per-job figures from the run statistics of the latest 50 jobs.
    if let Ok(jobs) = app.jobs.list(None) {
        running_jobs(&mut out, &jobs);
        let mut rows = Vec::new();
        for j in jobs.iter().take(50) {
            let Ok(bytes) = std::fs::read(app.jobs.job_dir(j.id).join("stats.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let num = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap_or(0.0);
            rows.push((
                j.id,
                num("/exits_total"),
                num("/syscalls_total"),
                num("/kvm_vcpu_delta/pf_taken"),
                num("/guest_wall_s"),
            ));
        }
        for (name, help, idx) in [
            ("dualstack_job_vm_exits", "VM exits of a job's run.", 1),
            ("dualstack_job_syscalls", "System calls of a job's run.", 2),
            (
                "dualstack_job_page_faults",
                "KVM page faults (pf_taken) of a job's run.",
                3,
            ),
            (
                "dualstack_job_guest_seconds",
                "Guest wall time of a job's run.",
                4,
            ),
        ] {
            gauge(&mut out, name, help);
            for r in &rows {
                let v = [0.0, r.1, r.2, r.3, r.4][idx];
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {v}", r.0);
            }
        }
    }
    match app.vms.list() {
        Ok(vms) => {
            gauge(&mut out, "dualstack_vms", "Commodity VMs by state.");
            for st in dualstack_commodity::VmState::ALL {
                let n = vms.iter().filter(|v| v.state == st).count();
                let _ = writeln!(out, "dualstack_vms{{state=\"{}\"}} {n}", st.as_str());
            }
        }
        Err(e) => {
            let _ = writeln!(out, "# vms unavailable: {e}");
        }
    }
    app.metrics.render(&mut out);
    gauge(
        &mut out,
        "dualstack_daemon_uptime_seconds",
        "Seconds since the daemon started.",
    );
    let _ = writeln!(
        out,
        "dualstack_daemon_uptime_seconds {}",
        app.started.elapsed().as_secs_f64()
    );
    out
}
