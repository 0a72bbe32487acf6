//! MiniFE mini-app binary (see `dualstack_apps::minife`).
use dualstack_apps::{cli, minife};

fn main() -> std::process::ExitCode {
    cli::main(minife::USAGE, minife::Config::from_args, |cfg, common| {
        minife::run(cfg, common.threads).report()
    })
}
