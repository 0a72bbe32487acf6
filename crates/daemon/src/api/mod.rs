//! The HTTP API: state, router, authentication and metrics middleware, and the small
//! endpoints (node, events, metrics, dashboard, OpenAPI document).

pub mod jobs;
pub mod vms;
pub mod zones;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dualstack_commodity::VmManager;
use dualstack_topology::Node;
use dualstack_zones::HostPaths;
use futures_util::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::OpenApi;

use crate::auth::{self, Caller, Peer};
use crate::error::ApiError;
use crate::events::Events;
use crate::jobs::Jobs;

/// Everything a handler needs.
pub struct App {
    pub paths: HostPaths,
    /// The node's topology, read once at start (huge page pools are re-read per request).
    pub node: Node,
    pub jobs: Jobs,
    pub events: Events,
    pub vms: VmManager,
    /// Zone changes one at a time (the zones library also takes the state lock).
    pub zone_lock: tokio::sync::Mutex<()>,
    pub vm_lock: tokio::sync::Mutex<()>,
    /// Bearer token of the TCP listener.
    pub token: Option<String>,
    pub admin_gid: Option<u32>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Where `dualstack bench isolation` results live (one folder per run).
    pub results_dir: std::path::PathBuf,
    pub user_quota: UserQuota,
    /// A non-admin's transient-zone submissions one at a time (check and record together).
    pub quota_lock: std::sync::Mutex<()>,
}

/// What one non-admin user may hold at once in transient zones (`zone: auto`), counted over
/// their queued and running jobs. Admins (root, the admin group, TCP clients) are not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserQuota {
    /// Cores (0: no transient zones for non-admins).
    pub cpus: u32,
    /// Huge page memory, bytes.
    pub memory: u64,
}

impl Default for UserQuota {
    /// One core and 1 GiB.
    fn default() -> Self {
        UserQuota {
            cpus: 1,
            memory: 1 << 30,
        }
    }
}

pub type AppState = Arc<App>;

/// Run blocking library code off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} (uid {}) may not manage zones or VMs: that needs root or the admin group",
            caller.name, caller.uid
        )))
    }
}

/// Bucket counts, sum of seconds, count.
type Histogram = (Vec<u64>, f64, u64);

/// API request counts and latencies, for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> (bucket counts, sum seconds, count).
    latency: Mutex<BTreeMap<String, Histogram>>,
}

/// Latency histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

impl Metrics {
    fn record(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((method.into(), route.into(), status)).or_default() += 1;
        drop(r);
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let e = l
            .entry(route.into())
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                e.0[i] += 1;
            }
        }
        e.1 += secs;
        e.2 += 1;
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP dualstack_api_requests_total API requests by method, route and status.\n# TYPE dualstack_api_requests_total counter\n");
        for ((m, p, s), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "dualstack_api_requests_total{{method=\"{m}\",route=\"{p}\",status=\"{s}\"}} {n}"
            );
        }
        out.push_str("# HELP dualstack_api_request_duration_seconds API request latency by route.\n# TYPE dualstack_api_request_duration_seconds histogram\n");
        for (p, (b, sum, count)) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "dualstack_api_request_duration_seconds_bucket{{route=\"{p}\",le=\"{bound}\"}} {}", b[i]);
            }
            let _ = writeln!(out, "dualstack_api_request_duration_seconds_bucket{{route=\"{p}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "dualstack_api_request_duration_seconds_sum{{route=\"{p}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "dualstack_api_request_duration_seconds_count{{route=\"{p}\"}} {count}"
            );
        }
    }
}

fn bearer(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    // EventSource cannot send headers: the dashboard passes the token in the query.
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .map(str::to_string)
}

/// Who is calling; TCP needs the token (the dashboard's static files excepted).
async fn authenticate(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match peer {
        Peer::Unix { uid, gid } => auth::unix_caller(uid, gid, app.admin_gid),
        Peer::Tcp(_) => {
            let public = matches!(req.uri().path(), "/" | "/dashboard.js" | "/dashboard.css");
            let given = bearer(req.headers(), req.uri().query());
            let ok = match (&app.token, given) {
                (Some(t), Some(g)) => auth::same_secret(t.as_bytes(), g.as_bytes()),
                _ => false,
            };
            if !ok && !public {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "TCP clients need `Authorization: Bearer <token>` (the daemon's --token-file)",
                    None,
                )
                .into_response();
            }
            Caller {
                uid: 0,
                name: "token".into(),
                admin: ok,
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn measure(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    app.metrics.record(
        &method,
        &route,
        resp.status().as_u16(),
        t.elapsed().as_secs_f64(),
    );
    resp
}

/// The node: topology, zones, commodity cpuset, free cores and huge pages.
#[utoipa::path(get, path = "/v1/node", tag = "node",
    responses((status = 200, description = "what `dualstack node --json` prints", body = Object)))]
pub async fn node(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(move || {
        let mut node = app.node.clone();
        node.read_hugepages(&app.paths.node_dir);
        let s = dualstack_zones::node_status(&app.paths, node)
            .map_err(|e| ApiError::internal(crate::error::chain(&e)))?;
        serde_json::to_value(s).map_err(ApiError::internal)
    })
    .await
    .map(Json)
}

/// Server-sent events: one `zone`, `job` or `vm` event per change (data: an Event as JSON).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    responses((status = 200, description = "text/event-stream of Event", body = crate::events::Event, content_type = "text/event-stream")))]
pub async fn events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let hello =
        futures_util::stream::once(async { Ok(SseEvent::default().event("hello").data("{}")) });
    let rx = BroadcastStream::new(app.events.subscribe());
    let stream = rx.filter_map(move |ev| {
        let caller = caller.clone();
        async move {
            let ev = ev.ok()?;
            if ev.kind == "job" && !caller.admin && ev.owner_uid != Some(caller.uid) {
                return None;
            }
            Some(Ok(SseEvent::default()
                .event(ev.kind.clone())
                .data(serde_json::to_string(&ev).unwrap_or_default())))
        }
    });
    Sse::new(hello.chain(stream)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// Prometheus text: zones, cores and huge pages by state, jobs by state, per-job figures from
/// the run statistics, VMs, API requests and latencies.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let text = blocking(move || Ok(crate::metrics::render(&app))).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The newest `figure4.svg` under `dir/*/` (folders are named by timestamp).
pub fn latest_figure(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut runs: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("figure4.svg"))
        .filter(|p| p.is_file())
        .collect();
    runs.sort();
    runs.pop()
}

/// The chart of the latest isolation experiment (`dualstack bench isolation`'s Figure 4).
#[utoipa::path(get, path = "/v1/isolation/latest", tag = "dashboard",
    responses((status = 200, description = "SVG chart; header X-Dualstack-Results names its folder", body = String, content_type = "image/svg+xml"),
              (status = 404, description = "no results yet", body = crate::error::ErrorBody)))]
pub async fn isolation_latest(State(app): State<AppState>) -> Result<Response, ApiError> {
    let dir = app.results_dir.clone();
    let path = latest_figure(&dir).ok_or_else(|| {
        ApiError::not_found(
            "results",
            format!(
                "no isolation results under {}: run `dualstack bench isolation --out {}/<name>` (or start the daemon with --results DIR)",
                dir.display(),
                dir.display()
            ),
        )
    })?;
    let svg = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let folder = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml".to_string()),
            (
                header::HeaderName::from_static("x-dualstack-results"),
                folder,
            ),
        ],
        svg,
    )
        .into_response())
}

const INDEX: &str = include_str!("../../static/index.html");
const JS: &str = include_str!("../../static/dashboard.js");
const CSS: &str = include_str!("../../static/dashboard.css");

/// The node dashboard (HTML; its script and style sheet are `/dashboard.js`, `/dashboard.css`).
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
pub async fn dashboard() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn dashboard_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

async fn dashboard_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dualstackd",
        description = "The dualstack control plane: HPC zones, HPC jobs, commodity VMs, events and metrics of one node. Over the Unix socket the caller is identified by SO_PEERCRED; over TCP by a bearer token."
    ),
    paths(
        node,
        events,
        metrics,
        openapi,
        dashboard,
        isolation_latest,
        zones::list,
        zones::show,
        zones::put,
        zones::delete,
        jobs::submit,
        jobs::list,
        jobs::show,
        jobs::cancel,
        jobs::output,
        vms::create,
        vms::list,
        vms::show,
        vms::stop,
        vms::delete,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::events::Event,
        zones::ZoneSpec,
        zones::HostTasksArg,
        crate::jobs::JobSpec,
        crate::jobs::Job,
        crate::jobs::LiveStats,
        crate::jobs::JobState,
        vms::VmCreate,
        vms::VmStop,
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON (what `/v1/openapi.json` serves and `contrib/` holds).
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("OpenAPI serializes");
    text.push('\n');
    text
}

/// The router. Requests that return at once get `timeout`; streams and VM boots do not.
pub fn router(app: AppState, timeout: Duration) -> Router {
    let quick = Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/node", get(node))
        .route("/v1/isolation/latest", get(isolation_latest))
        .route("/metrics", get(metrics))
        .route("/v1/zones", get(zones::list))
        .route(
            "/v1/zones/{name}",
            get(zones::show).put(zones::put).delete(zones::delete),
        )
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    let long = Router::new()
        .route("/v1/events", get(events))
        .route("/v1/jobs/{id}/output", get(jobs::output))
        .route("/v1/vms", post(vms::create).get(vms::list))
        .route("/v1/vms/{name}/stop", post(vms::stop))
        .route("/v1/vms/{name}", get(vms::show).delete(vms::delete));
    quick
        .merge(long)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /v1/openapi.json",
                None,
            )
        })
        .route_layer(middleware::from_fn_with_state(app.clone(), measure))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(DefaultBodyLimit::max(crate::BODY_LIMIT))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::BODY_LIMIT,
        ))
        .with_state(app)
}
