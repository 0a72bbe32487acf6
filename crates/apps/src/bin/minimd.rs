//! MiniMD mini-app binary (see `dualstack_apps::minimd`).
use dualstack_apps::{cli, minimd};

fn main() -> std::process::ExitCode {
    cli::main(minimd::USAGE, minimd::Config::from_args, |cfg, common| {
        minimd::run(cfg, common.threads).report()
    })
}
