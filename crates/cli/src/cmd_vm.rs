//! `dualstack vm ...`. (Owned by the commodity stack work, issue 5.)

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum VmCmd {
    /// List commodity VMs.
    List,
}

pub fn run(_cmd: VmCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack vm` is not implemented yet")
}
