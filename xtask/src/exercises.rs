//! (not built yet)

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

#[derive(clap::Args)]
pub struct HintArgs {
    /// The exercise, for example E1.2.
    pub id: String,
}

pub fn run(_args: Args) -> Result<()> {
    bail!("`exercises` is not built yet")
}

pub fn hint(_args: HintArgs) -> Result<()> {
    bail!("`hint` is not built yet")
}
