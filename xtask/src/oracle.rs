//! (not built yet)

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

#[derive(clap::Args)]
pub struct BlessArgs {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`oracle` is not built yet")
}

pub fn bless(_args: BlessArgs) -> Result<()> {
    bail!("`bless` is not built yet")
}
