//! `/v1/jobs`: HPC jobs, each run by `dualstack run` in its own process (see `crate::jobs`).

use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use utoipa::IntoParams;

use super::{blocking, AppState};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::jobs::{Job, JobError, JobSpec};

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Unknown(id) => ApiError::not_found("id", format!("no job {id}")),
        other => ApiError::internal(crate::error::chain(&other)),
    }
}

/// Check a spec against the node and the caller; returns it as it will run.
fn validate(app: &AppState, caller: &Caller, mut spec: JobSpec) -> Result<JobSpec, ApiError> {
    if spec.program.is_empty() {
        return Err(ApiError::bad("program", "program is empty"));
    }
    let root = match &spec.root {
        Some(r) => {
            let p = PathBuf::from(r);
            if !p.is_absolute() {
                return Err(ApiError::bad(
                    "root",
                    format!("root {r:?} must be an absolute path"),
                ));
            }
            if !p.is_dir() {
                return Err(ApiError::unprocessable(
                    "root",
                    format!("root {r:?} is not a directory"),
                ));
            }
            Some(
                p.canonicalize()
                    .map_err(|e| ApiError::unprocessable("root", format!("root {r:?}: {e}")))?,
            )
        }
        None => None,
    };
    if spec.program.contains('/') {
        let p = FsPath::new(&spec.program);
        if !p.is_absolute() {
            return Err(ApiError::bad(
                "program",
                format!(
                    "program {:?} must be an absolute path (or a bundled mini-app name)",
                    spec.program
                ),
            ));
        }
        let real = p.canonicalize().map_err(|e| {
            ApiError::unprocessable("program", format!("program {:?}: {e}", spec.program))
        })?;
        if !real.is_file() {
            return Err(ApiError::unprocessable(
                "program",
                format!("program {:?} is not a file", spec.program),
            ));
        }
        if let Some(root) = &root {
            if !real.starts_with(root) {
                return Err(ApiError::unprocessable(
                    "program",
                    format!(
                        "program {:?} is outside the job's root {}",
                        spec.program,
                        root.display()
                    ),
                ));
            }
        }
    }
    for (i, e) in spec.env.iter().enumerate() {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(ApiError::bad(
                    &format!("env[{i}]"),
                    format!("env[{i}] {e:?}: expected KEY=VALUE"),
                ))
            }
        }
    }
    let node_cpus = app.node.cpus().len() as u32;
    if let Some(c) = spec.cpus {
        // In a named zone the job runs on the zone's cores; `auto` carves `cpus` cores for it.
        if spec.zone.as_deref().is_some_and(|z| z != "auto") {
            return Err(ApiError::bad(
                "cpus",
                "cpus and zone exclude each other: a job in a zone runs on the zone's cores",
            ));
        }
        if c == 0 || c > node_cpus {
            return Err(ApiError::unprocessable(
                "cpus",
                format!("cpus {c}: this node has {node_cpus} CPUs"),
            ));
        }
    }
    if let Some(m) = &spec.memory {
        let bytes = super::zones::size_bytes(m, "memory")?;
        let total: u64 = app.node.numa_nodes.iter().map(|n| n.memory_bytes).sum();
        if bytes > total {
            return Err(ApiError::unprocessable(
                "memory",
                format!("memory {m}: this node has {} MiB", total >> 20),
            ));
        }
    }
    if let Some(t) = spec.timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(ApiError::bad(
                "timeout",
                "timeout must be a positive number of seconds",
            ));
        }
    }
    if let Some(z) = spec.zone.as_deref().filter(|z| *z != "auto") {
        if let Err(e) = dualstack_zones::get(&app.paths, z) {
            let mut err = super::zones::zone_error(e, false);
            err.body.field = Some("zone".into());
            if err.status == StatusCode::NOT_FOUND {
                err.status = StatusCode::UNPROCESSABLE_ENTITY;
            }
            return Err(err);
        }
    }
    if !caller.admin {
        match &spec.user {
            Some(u) if *u != caller.name => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("user {u:?}: your jobs run as yourself ({})", caller.name),
                    Some("user"),
                ))
            }
            _ => spec.user = Some(caller.name.clone()),
        }
    }
    if let Some(u) = &spec.user {
        if crate::auth::user_ids(u).is_none() {
            return Err(ApiError::unprocessable(
                "user",
                format!("user {u:?} does not exist"),
            ));
        }
        if !app.jobs.launcher.run_has_user {
            return Err(ApiError::new(
                if caller.admin { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::FORBIDDEN },
                format!(
                    "running a job as {u:?} needs `dualstack run --user` (the privilege-dropping jail), which {} does not have; {}",
                    app.jobs.launcher.exe.display(),
                    if caller.admin { "leave user out to run as root" } else { "jobs of users other than root are refused rather than run as root" }
                ),
                Some("user"),
            ));
        }
    }
    Ok(spec)
}

/// Cores and huge page memory of a `zone: auto` job (what its transient zone takes).
fn auto_size(spec: &JobSpec) -> Result<(u32, u64), ApiError> {
    let page = dualstack_topology::HUGEPAGE_2M_KIB << 10;
    let memory = match &spec.memory {
        Some(m) => super::zones::size_bytes(m, "memory")?,
        None => dualstack_jobs::DEFAULT_MEMORY,
    };
    Ok((spec.cpus.unwrap_or(1), memory.div_ceil(page) * page))
}

/// A non-admin's `zone: auto` job must fit their quota beside their queued and running ones.
fn check_quota(app: &AppState, caller: &Caller, spec: &JobSpec) -> Result<(), ApiError> {
    if caller.admin || spec.zone.as_deref() != Some("auto") {
        return Ok(());
    }
    let (cpus, memory) = auto_size(spec)?;
    let (mut held_cpus, mut held_memory) = (0u32, 0u64);
    for j in app.jobs.list(Some(caller.uid)).map_err(job_error)? {
        if j.state.is_terminal() || j.spec.zone.as_deref() != Some("auto") {
            continue;
        }
        if let Ok((c, m)) = auto_size(&j.spec) {
            held_cpus += c;
            held_memory += m;
        }
    }
    let q = app.user_quota;
    let refuse =
        |field: &str, text: String| ApiError::new(StatusCode::FORBIDDEN, text, Some(field));
    if held_cpus + cpus > q.cpus {
        return Err(refuse(
            "cpus",
            format!(
                "cpus {cpus}: your quota for transient zones (zone: auto) is {} core(s) and your queued or running jobs hold {held_cpus}; ask for fewer, wait for them to end, or ask the operator (--user-cpus)",
                q.cpus
            ),
        ));
    }
    if held_memory + memory > q.memory {
        return Err(refuse(
            "memory",
            format!(
                "memory {} MiB: your quota for transient zones (zone: auto) is {} MiB and your queued or running jobs hold {} MiB; ask for less, wait for them to end, or ask the operator (--user-memory)",
                memory >> 20,
                q.memory >> 20,
                held_memory >> 20
            ),
        ));
    }
    Ok(())
}

fn visible(caller: &Caller, job: &Job) -> Result<(), ApiError> {
    if caller.admin || job.owner_uid == caller.uid {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("job {} belongs to {}", job.id, job.owner),
            Some("id"),
        ))
    }
}

/// Submit an HPC job; it is queued and started by the daemon.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobSpec,
    responses((status = 202, description = "accepted", body = Job),
              (status = 400, description = "malformed request", body = ErrorBody),
              (status = 403, description = "not allowed for this caller", body = ErrorBody),
              (status = 422, description = "impossible on this node", body = ErrorBody)))]
pub async fn submit(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    dualstack_jobs::trace::mark("api.received");
    let app2 = app.clone();
    let job = blocking(move || {
        dualstack_jobs::trace::mark("api.blocking");
        let spec = validate(&app2, &caller, spec)?;
        // Checked and recorded together: two submissions cannot both take the last core.
        let _quota = app2.quota_lock.lock().unwrap_or_else(|e| e.into_inner());
        check_quota(&app2, &caller, &spec)?;
        let job = app2
            .jobs
            .submit(caller.uid, &caller.name, &spec)
            .map_err(job_error)?;
        app2.events.emit(
            "job",
            &job.id.to_string(),
            job.state.as_str(),
            Some(job.owner_uid),
        );
        dualstack_jobs::trace::mark("api.recorded");
        // Start it now rather than at the next tick.
        app2.jobs.tick(&app2.events).map_err(job_error)?;
        dualstack_jobs::trace::mark("api.ticked");
        app2.jobs.get(job.id).map_err(job_error)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Jobs (a non-admin sees their own), newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, description = "jobs", body = [Job])))]
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Job>>, ApiError> {
    let owner = (!caller.admin).then_some(caller.uid);
    blocking(move || app.jobs.list(owner).map_err(job_error))
        .await
        .map(Json)
}

/// One job, with the run's statistics once it ended.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, description = "the job", body = Job),
              (status = 403, description = "another user's job", body = ErrorBody),
              (status = 404, description = "no such job", body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<Job>, ApiError> {
    blocking(move || {
        let job = app.jobs.show(id).map_err(job_error)?;
        visible(&caller, &job)?;
        Ok(job)
    })
    .await
    .map(Json)
}

/// Cancel: SIGTERM to the run's process group, SIGKILL after the grace period.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 202, description = "cancel under way (or the job had ended)", body = Job),
              (status = 403, description = "another user's job", body = ErrorBody),
              (status = 404, description = "no such job", body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    blocking(move || {
        let job = app.jobs.get(id).map_err(job_error)?;
        visible(&caller, &job)?;
        app.jobs.cancel(id, &app.events).map_err(job_error)
    })
    .await
    .map(|j| (StatusCode::ACCEPTED, Json(j)))
}

/// Query of `GET /v1/jobs/{id}/output`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// `stdout` (default) or `stderr`.
    pub stream: Option<String>,
    /// `1`: keep the response open and stream new output until the job ends.
    pub follow: Option<u8>,
}

/// The job's stdout or stderr as text; `?follow=1` streams until the job ends.
#[utoipa::path(get, path = "/v1/jobs/{id}/output", tag = "jobs",
    params(("id" = i64, Path, description = "job id"), OutputQuery),
    responses((status = 200, description = "output text", body = String, content_type = "text/plain"),
              (status = 403, description = "another user's job", body = ErrorBody),
              (status = 404, description = "no such job", body = ErrorBody)))]
pub async fn output(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    let name = match q.stream.as_deref().unwrap_or("stdout") {
        s @ ("stdout" | "stderr") => s.to_string(),
        other => {
            return Err(ApiError::bad(
                "stream",
                format!("stream {other:?}: use stdout or stderr"),
            ))
        }
    };
    let follow = match q.follow {
        None | Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(ApiError::bad("follow", "follow takes 0 or 1")),
    };
    let app2 = app.clone();
    let job = blocking(move || {
        let job = app2.jobs.get(id).map_err(job_error)?;
        visible(&caller, &job)?;
        Ok(job)
    })
    .await?;
    let path = app.jobs.job_dir(id).join(&name);
    let text = |b: Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(b)
            .expect("valid response")
    };
    if !follow {
        let bytes = tokio::fs::read(&path).await.unwrap_or_default();
        return Ok(text(Body::from(bytes)));
    }
    let file = tokio::fs::File::open(&path).await.ok();
    let _ = job;
    let stream = futures_util::stream::unfold(
        (file, app, false, path),
        move |(mut file, app, mut done, path)| async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if file.is_none() {
                    file = tokio::fs::File::open(&path).await.ok();
                }
                if let Some(f) = file.as_mut() {
                    match f.read(&mut buf).await {
                        Ok(n) if n > 0 => {
                            buf.truncate(n);
                            return Some((
                                Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                                (file, app, done, path),
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => return Some((Err(e), (None, app, true, path))),
                    }
                }
                if done {
                    return None;
                }
                // Ended? Read once more after seeing it, so nothing written last is lost.
                let jobs_app = app.clone();
                let ended = tokio::task::spawn_blocking(move || {
                    jobs_app
                        .jobs
                        .get(id)
                        .map(|j| j.state.is_terminal())
                        .unwrap_or(true)
                })
                .await
                .unwrap_or(true);
                if ended {
                    done = true;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    );
    Ok(text(Body::from_stream(stream)))
}
