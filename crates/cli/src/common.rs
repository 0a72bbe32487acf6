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
    /// Log verbosity (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
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

/// Parse a size such as `512M`, `4G`, `1048576`, `64MiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512M, 4G)"))?;
    let mul: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use K, M, G or T)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parse a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>()?, b.trim().parse::<usize>()?),
            None => {
                let v = part
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("'{s}' is not a CPU list (example: 0-3,8)"))?;
                (v, v)
            }
        };
        if a > b || b > 4095 {
            anyhow::bail!("'{part}' in CPU list '{s}' is not a valid range");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        anyhow::bail!("CPU list '{s}' is empty");
    }
    Ok(out)
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
    if !global
        .state_dir
        .join(dualstack_zones::state::DB_FILE)
        .exists()
    {
        return;
    }
    let report = dualstack_zones::HostPaths::from_env(&global.state_dir)
        .map_err(anyhow::Error::from)
        .and_then(|p| Ok(dualstack_zones::recover(&p)?));
    match report {
        Ok(r) if !r.is_clean() => eprintln!(
            "dualstack: recovered from an interrupted operation: rolled back {:?}, finished releasing {:?}, dropped stale {:?}, removed {:?}",
            r.rolled_back, r.finished_release, r.dropped_stale, r.removed_orphans
        ),
        Ok(r) => {
            for w in r.warnings {
                eprintln!("dualstack: warning: {w}");
            }
        }
        Err(e) => eprintln!("dualstack: warning: could not check the zone journal: {e:#}"),
    }
}
