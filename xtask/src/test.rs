//! (being built)

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

#[derive(clap::Args)]
pub struct DemoArgs {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`test` is not built yet")
}

pub fn demo(_args: DemoArgs) -> Result<()> {
    bail!("`demo` is not built yet")
}
