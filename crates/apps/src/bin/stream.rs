//! STREAM mini-app binary (see `dualstack_apps::stream`).
use dualstack_apps::{cli, stream};

fn main() -> std::process::ExitCode {
    cli::main(stream::USAGE, stream::Config::from_args, |cfg, common| {
        stream::run(cfg, common.threads).report()
    })
}
