//! `/v1/vms`: commodity VMs through `dualstack-commodity`'s `VmManager` (what `dualstack vm`
//! calls).

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dualstack_commodity::spec::SpecError;
use dualstack_commodity::state::StateError;
use dualstack_commodity::{
    AccelChoice, BootSource, CreateOptions, ManagerError, VmDetails, VmInfo, VmSpec, Workload,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{blocking, require_admin, AppState};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};

/// A VM as asked for: the fields mirror `dualstack vm create`'s flags.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    /// VM name (letters, digits, '-', '_').
    pub name: String,
    /// vCPUs (`--vcpus`, default 1).
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Guest memory (`--memory`, default `256M`).
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Kernel to boot instead of the built-in guest (`--kernel`).
    pub kernel: Option<String>,
    /// Initramfs for `kernel` (`--initrd`).
    pub initrd: Option<String>,
    /// Raw disk image to boot (`--disk`).
    pub disk: Option<String>,
    /// `build` or `idle` (default) (`--workload`).
    pub workload: Option<String>,
    /// Extra kernel command line (`--cmdline`).
    pub cmdline: Option<String>,
    /// `kvm`, `tcg` or `auto` (default) (`--accel`).
    pub accel: Option<String>,
    /// Seconds to wait for the guest (`--timeout`, default 90).
    pub timeout: Option<u64>,
}

fn one() -> u32 {
    1
}
fn default_memory() -> String {
    "256M".into()
}

/// Body of `POST /v1/vms/{name}/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmStop {
    /// Ask the guest to power off and wait this many seconds first (`--graceful`).
    #[serde(default)]
    pub graceful: u64,
}

fn vm_error(e: ManagerError) -> ApiError {
    let msg = crate::error::chain(&e);
    match &e {
        ManagerError::Spec(s) => match s {
            SpecError::BadName(_) => ApiError::bad("name", msg),
            SpecError::OutOfRange { what, .. } => ApiError::unprocessable(
                if what.starts_with("memory") {
                    "memory"
                } else {
                    "vcpus"
                },
                msg,
            ),
            SpecError::BootSource(_) => ApiError::bad("disk", msg),
            SpecError::BadChoice { what, .. } => ApiError::bad(
                if *what == "accelerator" {
                    "accel"
                } else {
                    what
                },
                msg,
            ),
            SpecError::Transition { .. } => ApiError::conflict(None, msg),
        },
        ManagerError::State(StateError::Exists(_)) => ApiError::conflict(Some("name"), msg),
        ManagerError::State(StateError::NotFound(_)) => ApiError::not_found("name", msg),
        ManagerError::Input { what, .. } => ApiError::unprocessable(what, msg),
        ManagerError::WrongState { .. } => ApiError::conflict(None, msg),
        _ => ApiError::internal(msg),
    }
}

impl VmCreate {
    fn to_spec(&self) -> Result<VmSpec, ApiError> {
        let boot = match (&self.kernel, &self.initrd, &self.disk) {
            (Some(k), i, None) => BootSource::Kernel {
                kernel: PathBuf::from(k),
                initrd: i.as_ref().map(PathBuf::from),
            },
            (None, None, Some(d)) => BootSource::Disk {
                image: PathBuf::from(d),
            },
            (None, None, None) => BootSource::Builtin,
            (None, Some(_), _) => return Err(ApiError::bad("initrd", "initrd needs kernel")),
            (Some(_), _, Some(_)) => {
                return Err(ApiError::bad("disk", "give kernel or disk, not both"))
            }
        };
        let workload: Workload = self
            .workload
            .as_deref()
            .unwrap_or("idle")
            .parse()
            .map_err(|e: SpecError| ApiError::bad("workload", e.to_string()))?;
        let accel: AccelChoice = self
            .accel
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(|e: SpecError| ApiError::bad("accel", e.to_string()))?;
        let memory_mib = dualstack_topology::parse_size_mib(&self.memory)
            .map_err(|e| ApiError::bad("memory", e.to_string()))?;
        let spec = VmSpec {
            name: self.name.clone(),
            vcpus: self.vcpus,
            memory_mib,
            boot,
            workload,
            cmdline: self.cmdline.clone(),
            accel,
        };
        spec.validate()
            .map_err(|e| vm_error(ManagerError::Spec(e)))?;
        Ok(spec)
    }
}

/// Create and boot a commodity VM (answers once it is up).
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = VmCreate,
    responses((status = 201, description = "running", body = Object),
              (status = 400, description = "malformed request", body = ErrorBody),
              (status = 403, description = "not an admin", body = ErrorBody),
              (status = 409, description = "name taken", body = ErrorBody),
              (status = 422, description = "impossible", body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<VmCreate>,
) -> Result<(StatusCode, Json<VmInfo>), ApiError> {
    require_admin(&caller)?;
    let spec = body.to_spec()?;
    let opts = CreateOptions {
        timeout: Duration::from_secs(body.timeout.unwrap_or(90)),
        ..CreateOptions::default()
    };
    let _guard = app.vm_lock.lock().await;
    let app2 = app.clone();
    app.events.emit("vm", &spec.name, "starting", None);
    let info = blocking(move || app2.vms.create(&spec, &opts).map_err(vm_error)).await?;
    app.events.emit("vm", &info.name, info.state.as_str(), None);
    Ok((StatusCode::CREATED, Json(info)))
}

/// Every commodity VM.
#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "VMs", body = [Object])))]
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<VmInfo>>, ApiError> {
    blocking(move || app.vms.list().map_err(vm_error))
        .await
        .map(Json)
}

/// One VM with its QEMU threads' CPUs.
#[utoipa::path(get, path = "/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "the VM", body = Object),
              (status = 404, description = "no such VM", body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VmDetails>, ApiError> {
    blocking(move || app.vms.show(&name).map_err(vm_error))
        .await
        .map(Json)
}

/// Stop a VM (the record stays until DELETE).
#[utoipa::path(post, path = "/v1/vms/{name}/stop", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    request_body(content = Option<VmStop>, description = "optional"),
    responses((status = 200, description = "stopped", body = Object),
              (status = 403, description = "not an admin", body = ErrorBody),
              (status = 404, description = "no such VM", body = ErrorBody),
              (status = 409, description = "not running", body = ErrorBody)))]
pub async fn stop(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<VmInfo>, ApiError> {
    require_admin(&caller)?;
    let stop: VmStop = if body.is_empty() {
        VmStop::default()
    } else {
        crate::body::parse(&body)?
    };
    let _guard = app.vm_lock.lock().await;
    let app2 = app.clone();
    let info = blocking(move || {
        app2.vms
            .stop(&name, Duration::from_secs(stop.graceful))
            .map_err(vm_error)
    })
    .await?;
    app.events.emit("vm", &info.name, info.state.as_str(), None);
    Ok(Json(info))
}

/// Stop (if running) and forget a VM.
#[utoipa::path(delete, path = "/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 204, description = "deleted"),
              (status = 403, description = "not an admin", body = ErrorBody),
              (status = 404, description = "no such VM", body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let _guard = app.vm_lock.lock().await;
    let app2 = app.clone();
    let n = name.clone();
    blocking(move || app2.vms.delete(&n).map_err(vm_error)).await?;
    app.events.emit("vm", &name, "deleted", None);
    Ok(StatusCode::NO_CONTENT)
}
