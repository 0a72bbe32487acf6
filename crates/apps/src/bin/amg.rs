//! AMG mini-app binary (see `dualstack_apps::amg`).
use dualstack_apps::{amg, cli};

fn main() -> std::process::ExitCode {
    cli::main(amg::USAGE, amg::Config::from_args, |cfg, common| {
        amg::run(cfg, common.threads).report()
    })
}
