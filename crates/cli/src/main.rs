//! `dualstack`: the command-line front end. All logic lives in the library crates; each command
//! group is one module here that parses its arguments and calls them.

mod cmd_api;
mod cmd_bench;
mod cmd_daemon;
mod cmd_demo;
mod cmd_node;
mod cmd_run;
mod cmd_slurm;
mod cmd_vm;
mod cmd_zone;
mod common;

use clap::{Parser, Subcommand};

/// Dual stack virtualization: carve HPC zones out of a node at run time, run HPC jobs in a
/// dedicated HPC VMM there, and keep commodity KVM/QEMU VMs on the remaining cores.
#[derive(Parser, Debug)]
#[command(name = "dualstack", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: common::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a static Linux x86-64 program in the HPC VMM.
    Run(cmd_run::RunArgs),
    /// Show the node: topology, zones and free resources.
    Node(cmd_node::NodeArgs),
    /// Create, list, show and release HPC zones.
    #[command(subcommand)]
    Zone(cmd_zone::ZoneCmd),
    /// Bring the host back to a consistent state from the journal after a crash.
    Recover(cmd_zone::RecoverArgs),
    /// Commodity VMs (QEMU) confined to the commodity zone.
    #[command(subcommand)]
    Vm(cmd_vm::VmCmd),
    /// Benchmarks and the isolation experiment.
    #[command(subcommand)]
    Bench(cmd_bench::BenchCmd),
    /// A short isolation experiment with a printed summary (the README's main job).
    Demo(cmd_demo::DemoArgs),
    /// Slurm integration: Prolog/Epilog that give each node of a job an HPC zone.
    #[command(subcommand)]
    Slurm(cmd_slurm::SlurmCmd),
    /// The control plane daemon: HTTP API, jobs, metrics and dashboard on a Unix socket.
    Daemon(cmd_daemon::DaemonArgs),
}

fn main() {
    // Die quietly on a closed pipe (`dualstack vm list --json | head`), like other CLI tools,
    // instead of panicking in println!.
    // SAFETY: resetting SIGPIPE to its default action before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    dualstack_jobs::trace::mark("cli.main");
    let cli = Cli::parse();
    common::init_tracing(&cli.global);
    // Every start brings the host back to a consistent state from the journal, in case an
    // earlier dualstack was killed halfway (`recover` does this explicitly and reports).
    // (The daemon recovers before it serves; its job supervisors need not.)
    if cli.global.api.is_none()
        && !cli.global.no_recover
        && !matches!(cli.command, Command::Recover(_) | Command::Daemon(_))
    {
        common::recover_at_start(&cli.global);
    }
    dualstack_jobs::trace::mark("cli.dispatch");
    let result = match (&cli.global.api, cli.command) {
        // Commands the API covers (cmd_run and cmd_zone send them when --api is set).
        (_, c @ (Command::Run(_) | Command::Zone(_))) | (None, c) => dispatch(c, &cli.global),
        (Some(sock), _) => Err(anyhow::anyhow!(
            "--api {} (DUALSTACK_API): this command only runs locally (the API covers run and zone create, list, show and release); leave --api out",
            sock.display()
        )),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            common::print_error(&err);
            std::process::exit(1);
        }
    }
}

fn dispatch(command: Command, global: &common::GlobalOpts) -> anyhow::Result<i32> {
    match command {
        Command::Run(args) => cmd_run::run(args, global),
        Command::Node(args) => cmd_node::run(args, global),
        Command::Zone(cmd) => cmd_zone::run(cmd, global),
        Command::Recover(args) => cmd_zone::recover(args, global),
        Command::Vm(cmd) => cmd_vm::run(cmd, global),
        Command::Bench(cmd) => cmd_bench::run(cmd, global),
        Command::Demo(args) => cmd_demo::run(args, global),
        Command::Slurm(cmd) => cmd_slurm::run(cmd),
        Command::Daemon(args) => cmd_daemon::run(args, global),
    }
}
