//! `dualstack zone ...` and `dualstack recover`. (Owned by the zones work, issue 4.)

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum ZoneCmd {
    /// List zones.
    List,
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {}

pub fn run(_cmd: ZoneCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack zone` is not implemented yet")
}

pub fn recover(_args: RecoverArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack recover` is not implemented yet")
}
