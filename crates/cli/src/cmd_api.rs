//! `dualstack --api SOCKET ...` (or `DUALSTACK_API=SOCKET`): the same commands, sent to a
//! running `dualstackd` instead of acting locally, with the same output. Covered: `run`,
//! `zone create`, `zone list`, `zone show`, `zone release`; other commands refuse `--api` and
//! say so.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use dualstack_daemon::client;
use dualstack_zones::Zone;

use crate::cmd_run::RunArgs;

/// `zone list` / `zone show` through the daemon.
pub fn zones(socket: &Path, name: Option<&str>) -> anyhow::Result<Vec<Zone>> {
    let path = match name {
        Some(n) => format!("/v1/zones/{n}"),
        None => "/v1/zones".to_string(),
    };
    let v = client::call(socket, "GET", &path, None, &[200])?;
    Ok(match name {
        Some(_) => vec![serde_json::from_value(v).context("the daemon's zone")?],
        None => serde_json::from_value(v).context("the daemon's zone list")?,
    })
}

/// `zone create` through the daemon (`PUT /v1/zones/NAME?report=1`). A zone of that name
/// already there is refused as the local command refuses it (PUT itself is idempotent).
pub fn create_zone(
    socket: &Path,
    a: &crate::cmd_zone::CreateArgs,
) -> anyhow::Result<dualstack_zones::CreateReport> {
    let host_tasks = match a.host_tasks {
        crate::cmd_zone::TasksArg::Move => "move",
        crate::cmd_zone::TasksArg::Leave => "leave",
        crate::cmd_zone::TasksArg::ProjectOnly => "project-only",
    };
    let mut spec = serde_json::json!({
        "memory": a.memory,
        "hugepage_size": a.hugepage_size,
        "host_tasks": host_tasks,
        "no_irqs": a.no_irqs,
        "no_workqueue": a.no_workqueue,
        "offline_memory": a.offline_memory,
    });
    if let Some(c) = a.cpus {
        spec["cpus"] = c.into();
    }
    if let Some(l) = &a.cpuset_cpus {
        spec["cpuset_cpus"] = l.clone().into();
    }
    if let Some(n) = a.numa_node {
        spec["numa_node"] = n.into();
    }
    let path = format!("/v1/zones/{}?report=1", a.name);
    let v = client::call(socket, "PUT", &path, Some(&spec.to_string()), &[200, 201])?;
    if v.get("plan").is_none() {
        // 200: it was there already.
        let z: Zone = serde_json::from_value(v).context("the daemon's zone")?;
        anyhow::bail!(
            "zone {:?} already exists (CPUs {}, state {}); release it first or pick another name",
            z.name,
            z.cpus,
            z.state
        );
    }
    serde_json::from_value(v).context("the daemon's zone report")
}

/// `zone release` through the daemon (`DELETE /v1/zones/NAME`).
pub fn release_zone(socket: &Path, name: &str) -> anyhow::Result<dualstack_zones::ReleaseReport> {
    let v = client::call(socket, "DELETE", &format!("/v1/zones/{name}"), None, &[200])?;
    serde_json::from_value(v).context("the daemon's release report")
}

/// The flags `dualstack run --api` cannot pass on (the daemon's job spec has no field for them).
fn unsupported(a: &RunArgs) -> Option<&'static str> {
    [
        (a.cpuset_cpus.is_some(), "--cpuset-cpus"),
        (a.hugepages.is_some(), "--hugepages"),
        (
            a.memory_backing != crate::cmd_run::BackingArg::Hugetlb,
            "--memory-backing",
        ),
        (a.guest_pages.is_some(), "--guest-pages"),
        (a.numa_node.is_some(), "--numa-node"),
        (a.no_vdso, "--no-vdso"),
        (a.summary, "--summary"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

fn absolute(p: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    Ok(abs.display().to_string())
}

/// `dualstack run` as a daemon job: submit, stream its stdout here, then its stderr, write
/// `--stats`, and exit with the job's status (what `dualstack run` itself would exit with).
pub fn run(a: &RunArgs, socket: &Path) -> anyhow::Result<i32> {
    if let Some(flag) = unsupported(a) {
        anyhow::bail!("{flag} cannot be sent with --api (the daemon's job spec has no such field); run without --api");
    }
    let spec = crate::cmd_run::job_spec(a);
    let program = &a.program[0];
    let mut job = serde_json::json!({
        "program": if program.contains('/') { absolute(Path::new(program))? } else { program.clone() },
        "args": &a.program[1..],
        "env": spec.env,
        "root": absolute(&a.root)?,
    });
    if let Some(z) = &a.zone {
        job["zone"] = z.clone().into();
    }
    if let Some(c) = a.cpus {
        job["cpus"] = c.into();
    }
    if let Some(m) = a.memory {
        job["memory"] = m.to_string().into();
    }
    if let Some(t) = a.timeout {
        job["timeout"] = t.into();
    }
    let j = client::call(socket, "POST", "/v1/jobs", Some(&job.to_string()), &[202])?;
    let id = j["id"].as_i64().context("the daemon's job has no id")?;
    let mut out = std::io::stdout().lock();
    client::stream(socket, &format!("/v1/jobs/{id}/output?follow=1"), &mut out)?;
    drop(out);
    let (_, err) = client::request(
        socket,
        "GET",
        &format!("/v1/jobs/{id}/output?stream=stderr"),
        None,
    )
    .context("reading the job's stderr")?;
    let _ = std::io::stderr().write_all(&err);
    let job = client::call(socket, "GET", &format!("/v1/jobs/{id}"), None, &[200])?;
    if let Some(path) = &a.stats {
        if !job["stats"].is_null() {
            std::fs::write(path, serde_json::to_string_pretty(&job["stats"])?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    match job["exit_status"].as_i64() {
        Some(s) => Ok(s as i32),
        None => anyhow::bail!(
            "job {id} ended {} without an exit status: {}",
            job["state"].as_str().unwrap_or("?"),
            job["reason"].as_str().unwrap_or("no reason given")
        ),
    }
}
