//! `dualstack bench ...`. (Owned by the evaluation work, issue 6.)

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// The paper's isolation experiment.
    Isolation,
}

pub fn run(_cmd: BenchCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack bench` is not implemented yet")
}
