//! Options shared by every command, error printing and logging setup.

use std::path::PathBuf;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Directory holding dualstack's state database and journal.
    #[arg(
        long,
        global = true,
        env = "DUALSTACK_STATE_DIR",
        default_value = "/var/lib/dualstack"
    )]
    pub state_dir: PathBuf,
    /// Send the command to the dualstackd listening on this Unix socket instead of acting
    /// locally (run, zone list, show, create and release), with the same output.
    #[arg(long, global = true, env = "DUALSTACK_API", value_name = "SOCKET")]
    pub api: Option<PathBuf>,
    /// Log verbosity (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// (internal) Skip the recovery every start does: the daemon's jobs, whose daemon
    /// recovered before it served and whose supervisor gives back a killed run's leases.
    #[arg(long, global = true, hide = true)]
    pub no_recover: bool,
}

pub fn init_tracing(global: &GlobalOpts) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&global.log));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Print an error and its whole cause chain once, on stderr.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("dualstack: error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// A non-empty CPU list given with `flag` (e.g. `0-3,8`), as the CPU numbers the VMM takes.
/// Parsed by the workspace's one CPU-list parser, [`dualstack_topology::CpuList`].
pub fn cpus_arg(flag: &str, text: &str) -> anyhow::Result<Vec<usize>> {
    let list = dualstack_topology::CpuList::parse_list(text)
        .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))?;
    if list.is_empty() {
        anyhow::bail!("{flag} {text:?}: the CPU list is empty (example: 0-3,8)");
    }
    Ok(list.iter().map(|c| c as usize).collect())
}

/// Where the bundled static mini-apps live: $DUALSTACK_APPS_DIR, or the static build next to
/// this binary's target directory.
pub fn apps_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DUALSTACK_APPS_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?; // target/release
    let target = dir.parent()?; // target
    let candidate = target
        .join("x86_64-unknown-linux-gnu")
        .join(dir.file_name()?);
    candidate.is_dir().then_some(candidate)
}

/// Roll back or finish half-done zone operations left by a killed dualstack, if a state
/// database exists. Problems are reported, never fatal: the command itself may still work.
pub fn recover_at_start(global: &GlobalOpts) {
    // Recovery changes root's host state (cpusets, huge page pools, the journal): a user's
    // command (a Slurm job step running as its user) leaves it to root's next command.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    if !global
        .state_dir
        .join(dualstack_zones::state::DB_FILE)
        .exists()
    {
        return;
    }
    let paths = dualstack_zones::HostPaths::from_env(&global.state_dir);
    let report = paths
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|p| Ok(dualstack_zones::recover(p)?));
    dualstack_jobs::trace::mark("cli.recovered_zones");
    // Runs killed while they held huge pages or a transient zone: give those back too.
    if let Ok(p) = &paths {
        match dualstack_jobs::lease::recover(p) {
            Ok(l) => {
                for g in &l.given_back {
                    eprintln!("dualstack: recovered from a killed run: gave back {g}");
                }
                for w in &l.warnings {
                    eprintln!("dualstack: warning: {w}");
                }
            }
            Err(e) => eprintln!("dualstack: warning: could not check the run leases: {e}"),
        }
    }
    match report {
        Ok(r) if !r.is_clean() => eprintln!(
            "dualstack: recovered from an interrupted operation: rolled back {:?}, finished releasing {:?}, dropped stale {:?}, removed {:?}, zeroed memory left dirty {:?}",
            r.rolled_back, r.finished_release, r.dropped_stale, r.removed_orphans, r.zeroed
        ),
        Ok(r) => {
            for w in r.warnings {
                eprintln!("dualstack: warning: {w}");
            }
        }
        Err(e) => eprintln!("dualstack: warning: could not check the zone journal: {e:#}"),
    }
}
