//! HPCCG mini-app binary (see `dualstack_apps::hpccg`).
use dualstack_apps::{cli, hpccg};

fn main() -> std::process::ExitCode {
    cli::main(hpccg::USAGE, hpccg::Config::from_args, |cfg, common| {
        hpccg::run(cfg, common.threads).report()
    })
}
