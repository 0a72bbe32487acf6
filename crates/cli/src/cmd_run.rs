//! `dualstack run`. (Issue 2.)

use crate::common::GlobalOpts;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub program: Vec<String>,
}

pub fn run(_args: RunArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::bail!("`dualstack run` is not implemented yet")
}
