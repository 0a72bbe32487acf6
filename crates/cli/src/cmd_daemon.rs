//! `dualstack daemon`: the control plane daemon (issue 13). Argument parsing only; the daemon is
//! `dualstack-daemon`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::GlobalOpts;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub cmd: Option<DaemonCmd>,
    /// Unix socket to serve the API on (peer credentials identify callers).
    #[arg(long, env = "DUALSTACK_API_SOCKET", default_value = dualstack_daemon::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Also serve on this TCP address (e.g. 127.0.0.1:8470); needs --token-file.
    #[arg(long, env = "DUALSTACK_API_LISTEN", requires = "token_file")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must send (they act as admin).
    #[arg(long, env = "DUALSTACK_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Members of this group may manage zones and VMs, like root.
    #[arg(long, env = "DUALSTACK_API_ADMIN_GROUP")]
    pub admin_group: Option<String>,
    /// Jobs running at once; more wait queued.
    #[arg(long, env = "DUALSTACK_API_MAX_JOBS", default_value_t = 16)]
    pub max_jobs: usize,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Results of `dualstack bench isolation`: the dashboard shows the latest chart
    /// [default: <state-dir>/results].
    #[arg(long, env = "DUALSTACK_RESULTS_DIR")]
    pub results: Option<PathBuf>,
    /// Cores each non-admin user may hold at once in transient zones (`zone: auto`); 0
    /// allows them none.
    #[arg(long, env = "DUALSTACK_API_USER_CPUS", default_value_t = 1)]
    pub user_cpus: u32,
    /// Huge page memory each non-admin user may hold at once in transient zones, e.g. 4G.
    #[arg(long, env = "DUALSTACK_API_USER_MEMORY", default_value = "1G", value_parser = dualstack_topology::parse_size)]
    pub user_memory: u64,
    /// The dualstack binary jobs run with [default: this one].
    #[arg(long)]
    pub dualstack: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum DaemonCmd {
    /// Print the API's OpenAPI 3 document.
    Openapi,
    /// (internal) Supervise one job: run the command, write its exit status to the job dir.
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        job_dir: PathBuf,
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

pub fn run(args: DaemonArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    match args.cmd {
        Some(DaemonCmd::Openapi) => {
            print!("{}", dualstack_daemon::api::openapi_json());
            Ok(0)
        }
        Some(DaemonCmd::Supervise { job_dir, command }) => Ok(
            dualstack_daemon::supervise::supervise(&global.state_dir, &job_dir, &command),
        ),
        None => {
            let exe = match args.dualstack {
                Some(p) => p,
                None => std::env::current_exe()?,
            };
            let mut cfg = dualstack_daemon::Config::new(&global.state_dir, &exe);
            cfg.socket = args.socket;
            cfg.listen = args.listen;
            cfg.token_file = args.token_file;
            cfg.admin_group = args.admin_group;
            cfg.max_running = args.max_jobs;
            cfg.user_quota = dualstack_daemon::api::UserQuota {
                cpus: args.user_cpus,
                memory: args.user_memory,
            };
            if let Some(r) = args.results {
                cfg.results_dir = r;
            }
            cfg.grace = Duration::from_secs_f64(args.grace.max(0.0));
            dualstack_daemon::serve(cfg)?;
            Ok(0)
        }
    }
}
