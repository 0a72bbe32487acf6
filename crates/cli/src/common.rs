//! Options shared by every command, error printing and logging setup.

use std::path::PathBuf;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Directory holding dualstack's state database and journal.
    #[arg(long, global = true, env = "DUALSTACK_STATE_DIR", default_value = "/var/lib/dualstack")]
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
