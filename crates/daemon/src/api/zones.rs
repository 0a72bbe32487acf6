//! `/v1/zones`: carve and release HPC zones through `dualstack-zones` (what `dualstack zone`
//! calls). PUT is idempotent: the same spec again returns the zone, a different one is 409.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dualstack_topology::{
    CpuList, CpuRequest, PlanError, ZoneRequest, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB,
};
use dualstack_zones::{HostTasks, Zone, ZoneError, ZoneOptions};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{blocking, require_admin, AppState};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};

/// Host tasks policy (`--host-tasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostTasksArg {
    Move,
    #[default]
    Leave,
    ProjectOnly,
}

/// A zone as asked for: the fields mirror `dualstack zone create`'s flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// Number of whole cores (`--cpus`), placed by the planner.
    pub cpus: Option<u32>,
    /// Exactly these CPUs (`--cpuset-cpus`, e.g. `6-11`).
    pub cpuset_cpus: Option<String>,
    /// Memory reserved as huge pages on the zone's NUMA node (`--memory`, e.g. `256M`).
    pub memory: String,
    /// NUMA node (`--numa-node`).
    pub numa_node: Option<u32>,
    /// Huge page size (`--hugepage-size`): `2M` (default) or `1G`.
    #[serde(alias = "hugepages")]
    pub hugepage_size: Option<String>,
    /// `move`, `leave` (default) or `project-only` (`--host-tasks`).
    #[serde(default)]
    pub host_tasks: HostTasksArg,
    /// Leave IRQ affinities alone (`--no-irqs`).
    #[serde(default)]
    pub no_irqs: bool,
    /// Leave the unbound workqueue mask alone (`--no-workqueue`).
    #[serde(default)]
    pub no_workqueue: bool,
    /// Try to offline memory blocks (`--offline-memory`).
    #[serde(default)]
    pub offline_memory: bool,
}

/// Parse a size with the workspace's one size parser, naming `field`.
pub fn size_bytes(text: &str, field: &str) -> Result<u64, ApiError> {
    dualstack_topology::parse_size(text).map_err(|e| {
        ApiError::bad(
            field,
            format!("{field}: {e} (examples: 256M, 4G; whole MiB)"),
        )
    })
}

impl ZoneSpec {
    /// The library's request and options (what `dualstack zone create` builds from its flags).
    pub fn to_request(&self) -> Result<(ZoneRequest, ZoneOptions), ApiError> {
        let hugepage_kib = match self
            .hugepage_size
            .as_deref()
            .unwrap_or("2M")
            .to_ascii_uppercase()
            .as_str()
        {
            "2M" | "2MB" | "2MIB" => HUGEPAGE_2M_KIB,
            "1G" | "1GB" | "1GIB" => HUGEPAGE_1G_KIB,
            other => {
                return Err(ApiError::bad(
                    "hugepage_size",
                    format!("hugepage_size {other:?}: use 2M or 1G"),
                ))
            }
        };
        let cpus = match (self.cpus, &self.cpuset_cpus) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(
                    "cpuset_cpus",
                    "give cpus or cpuset_cpus, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::bad(
                    "cpus",
                    "give cpus (a core count) or cpuset_cpus (a CPU list)",
                ))
            }
            (Some(0), None) => {
                return Err(ApiError::unprocessable(
                    "cpus",
                    "cpus 0: a zone needs at least one whole core",
                ))
            }
            (Some(n), None) => CpuRequest::Cores(n),
            (None, Some(l)) => CpuRequest::List(
                CpuList::parse_list(l)
                    .map_err(|e| ApiError::bad("cpuset_cpus", format!("cpuset_cpus {l:?}: {e}")))?,
            ),
        };
        let req = ZoneRequest {
            cpus,
            memory_bytes: size_bytes(&self.memory, "memory")?,
            numa_node: self.numa_node,
            hugepage_kib,
        };
        let opts = ZoneOptions {
            host_tasks: match self.host_tasks {
                HostTasksArg::Move => HostTasks::Move,
                HostTasksArg::Leave => HostTasks::Leave,
                HostTasksArg::ProjectOnly => HostTasks::ProjectOnly,
            },
            steer_irqs: !self.no_irqs,
            narrow_workqueue: !self.no_workqueue,
            offline_memory: self.offline_memory,
        };
        Ok((req, opts))
    }
}

/// Whether an existing zone is what `req`/`opts` would make.
pub fn same_zone(z: &Zone, req: &ZoneRequest, opts: &ZoneOptions) -> bool {
    let cpus = match &req.cpus {
        CpuRequest::Cores(n) => z.cores.len() == *n as usize,
        CpuRequest::List(l) => &z.cpus == l,
    };
    let page = req.hugepage_kib * 1024;
    let memory = z.memory_bytes == req.memory_bytes.div_ceil(page) * page;
    cpus && memory
        && z.hugepage_kib == req.hugepage_kib
        && req.numa_node.is_none_or(|n| n == z.numa_node)
        && z.options == *opts
}

fn plan_field(e: &PlanError, list: bool) -> &'static str {
    match e {
        PlanError::NoMemory | PlanError::MemoryDoesNotFit { .. } => "memory",
        PlanError::BadPageSize(_) => "hugepage_size",
        PlanError::NoSuchNumaNode { .. } => "numa_node",
        _ if list => "cpuset_cpus",
        _ => "cpus",
    }
}

/// Map a zones error to an answer.
pub fn zone_error(e: ZoneError, list: bool) -> ApiError {
    let msg = crate::error::chain(&e);
    match &e {
        ZoneError::BadName(_) => ApiError::bad("name", msg),
        ZoneError::Unknown { .. } => ApiError::not_found("name", msg),
        ZoneError::Plan { source, .. } => ApiError::unprocessable(plan_field(source, list), msg),
        ZoneError::Duplicate { .. } | ZoneError::Leftover { .. } | ZoneError::NotActive { .. } => {
            ApiError::conflict(Some("name"), msg)
        }
        ZoneError::Busy { .. } => ApiError::conflict(None, msg),
        ZoneError::State(dualstack_zones::StateError::Busy { .. }) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg, None)
        }
        _ => ApiError::internal(msg),
    }
}

/// All zones.
#[utoipa::path(get, path = "/v1/zones", tag = "zones",
    responses((status = 200, description = "every zone, oldest first", body = [Object])))]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<Zone>>, ApiError> {
    let paths = app.paths.clone();
    blocking(move || dualstack_zones::list(&paths).map_err(|e| zone_error(e, false)))
        .await
        .map(Json)
}

/// One zone.
#[utoipa::path(get, path = "/v1/zones/{name}", tag = "zones",
    params(("name" = String, Path, description = "zone name")),
    responses((status = 200, description = "the zone", body = Object),
              (status = 404, description = "no such zone", body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Zone>, ApiError> {
    let paths = app.paths.clone();
    blocking(move || dualstack_zones::get(&paths, &name).map_err(|e| zone_error(e, false)))
        .await
        .map(Json)
}

/// Create a zone, or return it when it already exists with the same spec.
/// Query of `PUT /v1/zones/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// `1`: answer a creation with what `dualstack zone create --json` prints (the zone, its
    /// plan and the time per step) instead of the zone alone.
    pub report: Option<u8>,
}

#[utoipa::path(put, path = "/v1/zones/{name}", tag = "zones",
    params(("name" = String, Path, description = "zone name: 1-64 letters, digits, '-', '_'"), PutQuery),
    request_body = ZoneSpec,
    responses((status = 201, description = "created", body = Object),
              (status = 200, description = "already there with this spec", body = Object),
              (status = 400, description = "malformed request", body = ErrorBody),
              (status = 403, description = "not an admin", body = ErrorBody),
              (status = 409, description = "exists with another spec", body = ErrorBody),
              (status = 422, description = "does not fit this node", body = ErrorBody)))]
pub async fn put(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<PutQuery>,
    JsonBody(spec): JsonBody<ZoneSpec>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let with_report = query.report == Some(1);
    require_admin(&caller)?;
    let (req, opts) = spec.to_request()?;
    let list = spec.cpuset_cpus.is_some();
    let _guard = app.zone_lock.lock().await;
    let app2 = app.clone();
    let result = blocking(move || {
        let paths = &app2.paths;
        match dualstack_zones::get(paths, &name) {
            Ok(z) if same_zone(&z, &req, &opts) => return Ok((StatusCode::OK, z, None)),
            Ok(z) => {
                return Err(ApiError::conflict(
                    Some("name"),
                    format!(
                        "zone {name:?} exists with another spec (CPUs {}, {} MiB of {} KiB pages, state {}); DELETE it first or use another name",
                        z.cpus, z.memory_bytes >> 20, z.hugepage_kib, z.state
                    ),
                ))
            }
            Err(ZoneError::Unknown { .. }) => {}
            Err(e) => return Err(zone_error(e, list)),
        }
        let mut node = app2.node.clone();
        node.read_hugepages(&paths.node_dir);
        dualstack_zones::create(paths, &node, &name, &req, &opts)
            .map(|r| (StatusCode::CREATED, r.zone.clone(), Some(r)))
            .map_err(|e| zone_error(e, list))
    })
    .await?;
    let (status, zone, report) = result;
    if status == StatusCode::CREATED {
        app.events
            .emit("zone", &zone.name, zone.state.as_str(), None);
    }
    let body = match report.filter(|_| with_report) {
        Some(r) => serde_json::to_value(r),
        None => serde_json::to_value(zone),
    }
    .map_err(ApiError::internal)?;
    Ok((status, Json(body)))
}

/// Release a zone: every step undone in reverse.
#[utoipa::path(delete, path = "/v1/zones/{name}", tag = "zones",
    params(("name" = String, Path, description = "zone name")),
    responses((status = 200, description = "released, with time per step", body = Object),
              (status = 403, description = "not an admin", body = ErrorBody),
              (status = 404, description = "no such zone", body = ErrorBody),
              (status = 409, description = "processes still run in it", body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let _guard = app.zone_lock.lock().await;
    let paths = app.paths.clone();
    let n = name.clone();
    let report =
        blocking(move || dualstack_zones::release(&paths, &n).map_err(|e| zone_error(e, false)))
            .await?;
    app.events.emit("zone", &name, "deleted", None);
    Ok(Json(
        serde_json::to_value(report).map_err(ApiError::internal)?,
    ))
}
