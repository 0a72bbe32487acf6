//! FWQ mini-app binary (see `dualstack_apps::fwq`).
use dualstack_apps::{cli, fwq};

fn main() -> std::process::ExitCode {
    cli::main(fwq::USAGE, fwq::Config::from_args, |cfg, common| {
        fwq::run(cfg, common.threads).report()
    })
}
