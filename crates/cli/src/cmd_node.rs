//! `dualstack node`. (Owned by the topology/zones work, issue 4.)

use crate::common::GlobalOpts;

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: NodeArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack node` is not implemented yet")
}
