//! `dualstackd`, the dualstack control plane: an HTTP/1.1 + JSON API over a Unix socket (and
//! optionally TCP with a bearer token) for zones, HPC jobs and commodity VMs, server-sent events,
//! Prometheus metrics and a node dashboard. It is built on the same libraries as the CLI
//! (`dualstack-zones`, `dualstack-commodity`), and each HPC job is `dualstack run` itself, in a
//! process of its own that outlives the daemon (see [`jobs`] and [`supervise`]).
//!
//! Entry points: [`serve`] (the daemon), [`supervise::supervise`] (the per-job supervisor that
//! `dualstack daemon supervise` runs) and [`api::openapi_json`].

pub mod api;
pub mod auth;
pub mod bench;
pub mod body;
pub mod client;
pub mod db;
pub mod error;
pub mod events;
pub mod jobs;
pub mod metrics;
pub mod proc;
pub mod supervise;
pub mod zygote;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{App, AppState};
use auth::Peer;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;
/// Default Unix socket.
pub const DEFAULT_SOCKET: &str = "/run/dualstack/api.sock";

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] dualstack_zones::StateError),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Paths(#[from] dualstack_zones::PathsError),
    #[error(transparent)]
    Status(#[from] dualstack_zones::StatusError),
    #[error("recovering zones at start: {0}")]
    Recover(#[source] dualstack_zones::ZoneError),
    #[error(transparent)]
    Jobs(#[from] jobs::JobError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another daemon already listens on {0}; stop it or pass another --socket")]
    SocketInUse(PathBuf),
    #[error("--listen needs --token-file: TCP clients authenticate with its bearer token")]
    NoToken,
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("admin group {0:?} does not exist")]
    NoGroup(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Optional TCP listener (needs `token_file`).
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// Members of this group manage zones and VMs like root.
    pub admin_group: Option<String>,
    /// The `dualstack` binary jobs run with.
    pub exe: PathBuf,
    /// Jobs running at once; more wait queued.
    pub max_running: usize,
    /// Between SIGTERM and SIGKILL when a job is cancelled.
    pub grace: Duration,
    /// Timeout of requests that answer at once.
    pub request_timeout: Duration,
    /// Results of `dualstack bench isolation` (the dashboard shows the latest chart).
    pub results_dir: PathBuf,
    /// What each non-admin user may hold at once in transient zones (`zone: auto`).
    pub user_quota: api::UserQuota,
}

impl Config {
    pub fn new(state_dir: &Path, exe: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            socket: DEFAULT_SOCKET.into(),
            listen: None,
            token_file: None,
            admin_group: None,
            exe: exe.to_path_buf(),
            max_running: 16,
            grace: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            results_dir: state_dir.join("results"),
            user_quota: api::UserQuota::default(),
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `exe run --help` offers `--user` (the jail).
fn run_has_user(exe: &Path) -> bool {
    std::process::Command::new(exe)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--user"))
        .unwrap_or(false)
}

/// Bind the Unix socket: refuse when a daemon answers there, replace a stale socket file.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the socket directory", dir))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::SocketInUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io("removing the stale socket", path))?;
        } else {
            return Err(DaemonError::Io {
                what: "socket path",
                path: path.to_path_buf(),
                source: std::io::Error::other("exists and is not a socket"),
            });
        }
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io("binding", path))?;
    // Anyone may connect: who they are comes from SO_PEERCRED on each connection.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io("setting the mode of", path))?;
    Ok(l)
}

/// Recover zones from the journal and reconcile jobs with the processes that exist, before
/// serving anything.
fn reconcile(app: &App) -> Result<(), DaemonError> {
    let report = dualstack_zones::recover(&app.paths).map_err(DaemonError::Recover)?;
    if !report.is_clean() {
        tracing::warn!(?report, "recovered interrupted zone operations");
    }
    match dualstack_jobs::lease::recover(&app.paths) {
        Ok(l) if !l.is_clean() => tracing::warn!(?l, "gave back what killed runs held"),
        Ok(_) => {}
        Err(e) => tracing::warn!("checking run leases: {e}"),
    }
    app.jobs.tick(&app.events)?;
    Ok(())
}

/// Emit events for zone and VM changes made outside this daemon (the CLI side by side).
fn watch_outside(
    app: &App,
    zones: &mut BTreeMap<String, String>,
    vms: &mut BTreeMap<String, String>,
) {
    if let Ok(list) = dualstack_zones::list(&app.paths) {
        let now: BTreeMap<_, _> = list
            .into_iter()
            .map(|z| (z.name, z.state.to_string()))
            .collect();
        diff(app, "zone", zones, now);
    }
    if let Ok(list) = app.vms.list() {
        let now: BTreeMap<_, _> = list
            .into_iter()
            .map(|v| (v.name, v.state.as_str().to_string()))
            .collect();
        diff(app, "vm", vms, now);
    }
}

fn diff(app: &App, kind: &str, old: &mut BTreeMap<String, String>, now: BTreeMap<String, String>) {
    for (name, state) in &now {
        if old.get(name) != Some(state) {
            app.events.emit(kind, name, state, None);
        }
    }
    for name in old.keys() {
        if !now.contains_key(name) {
            app.events.emit(kind, name, "deleted", None);
        }
    }
    *old = now;
}

/// Run the daemon until SIGTERM or SIGINT. Jobs keep running when it stops.
pub fn serve(config: Config) -> Result<(), DaemonError> {
    // Before any thread exists: the job launcher (see [`zygote`]).
    let zygote = match zygote::Zygote::start() {
        Ok(z) => Some(Arc::new(z)),
        Err(e) => {
            tracing::warn!("no job launcher ({e}): each job's supervisor is exec'd");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("starting the runtime", Path::new("-")))?;
    rt.block_on(serve_async(config, zygote))
}

async fn serve_async(
    config: Config,
    zygote: Option<Arc<zygote::Zygote>>,
) -> Result<(), DaemonError> {
    let paths = dualstack_zones::HostPaths::from_env(&config.state_dir)?;
    let node = dualstack_zones::load_node(&paths)?;
    let token = match (&config.listen, &config.token_file) {
        (Some(_), None) => return Err(DaemonError::NoToken),
        (_, Some(f)) => {
            let t = std::fs::read_to_string(f).map_err(io("reading the token file", f))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(DaemonError::EmptyToken(f.clone()));
            }
            Some(t)
        }
        (None, None) => None,
    };
    let admin_gid = match &config.admin_group {
        Some(g) => Some(auth::group_id(g).ok_or_else(|| DaemonError::NoGroup(g.clone()))?),
        None => None,
    };
    let launcher = jobs::Launcher {
        exe: config.exe.clone(),
        state_dir: config.state_dir.clone(),
        run_has_user: run_has_user(&config.exe),
        max_running: config.max_running.max(1),
        grace: config.grace,
        zygote,
    };
    let app: AppState = Arc::new(App {
        vms: dualstack_commodity::VmManager::new(paths.clone()),
        paths,
        node,
        jobs: jobs::Jobs::open(launcher)?,
        events: Default::default(),
        zone_lock: Default::default(),
        vm_lock: Default::default(),
        token,
        admin_gid,
        metrics: Default::default(),
        started: Instant::now(),
        results_dir: config.results_dir.clone(),
        user_quota: config.user_quota,
        quota_lock: Default::default(),
    });
    {
        let app = app.clone();
        tokio::task::spawn_blocking(move || reconcile(&app))
            .await
            .map_err(|e| io("reconciling", Path::new("-"))(std::io::Error::other(e)))??;
    }
    // Supervise jobs (5 Hz) and watch for outside changes (1 Hz).
    {
        let app = app.clone();
        tokio::spawn(async move {
            let mut zones = BTreeMap::new();
            let mut vms = BTreeMap::new();
            let mut n = 0u64;
            loop {
                let a = app.clone();
                let outside = n % 5 == 0;
                let (z, v) = (std::mem::take(&mut zones), std::mem::take(&mut vms));
                let r = tokio::task::spawn_blocking(move || {
                    let (mut z, mut v) = (z, v);
                    if let Err(e) = a.jobs.tick(&a.events) {
                        tracing::warn!("job supervision: {e}");
                    }
                    if outside {
                        watch_outside(&a, &mut z, &mut v);
                    }
                    // Leases of runs that died without giving them back (and whose
                    // supervisor could not either): retried every 10 s.
                    if n % 50 == 25 {
                        if let Err(e) = dualstack_jobs::lease::recover(&a.paths) {
                            tracing::warn!("checking run leases: {e}");
                        }
                    }
                    (z, v)
                })
                .await;
                if let Ok((z, v)) = r {
                    zones = z;
                    vms = v;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let router = api::router(app.clone(), config.request_timeout);
    let unix = bind_unix(&config.socket)?;
    tracing::info!("listening on {}", config.socket.display());
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    {
        let mut rx = stop_rx.clone();
        let svc = router.clone().into_make_service_with_connect_info::<Peer>();
        servers.spawn(async move {
            axum::serve(unix, svc)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
    }
    if let Some(addr) = config.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(
            "listening on http://{}",
            tcp.local_addr().map_or(addr, |a| a)
        );
        let mut rx = stop_rx.clone();
        let svc = router.into_make_service_with_connect_info::<Peer>();
        servers.spawn(async move {
            axum::serve(tcp, svc)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    // Streams (events, followed output) never end on their own: give the rest a moment.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}
