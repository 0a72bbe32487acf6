//! phdMesh mini-app binary (see `dualstack_apps::phdmesh`).
use dualstack_apps::{cli, phdmesh};

fn main() -> std::process::ExitCode {
    cli::main(phdmesh::USAGE, phdmesh::Config::from_args, |cfg, common| {
        phdmesh::run(cfg, common.threads).report()
    })
}
