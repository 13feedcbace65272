//! `cargo xtask book`: checks the book's sources, then builds it with mdBook.
//!
//! The checks run before mdBook, which only warns about most of these
//! mistakes: every `{{#include path:anchor}}` names an existing file and
//! anchor (in a generated stage, never in `kmod/`, whose marker lines
//! would show); every relative link names an existing file and, for a
//! chapter, an existing heading; no code block repeats code from `kmod/`
//! that should be included instead; every course chapter shows a picture,
//! and every picture is there and, for an SVG, well-formed; every
//! `$ cargo xtask` command the book shows is one the harness accepts, and
//! an `l1 --stage N` command runs only guests stage N can run (see
//! `book/commands.rs`). Before the
//! checks, the pictures described in `book/diagrams/` are drawn (see
//! `book/diagram.rs`). mdBook itself is a pinned version that
//! this command installs under `target/tools/` the first time it is needed.

mod check;
mod commands;
mod diagram;
mod links;
mod mdbook;
mod svg;

use crate::paths;
use anyhow::{Result, bail};

/// The mdBook release the book is built with.
pub const MDBOOK_VERSION: &str = "0.5.4";

#[derive(clap::Args)]
pub struct Args {
    /// Check includes, anchors and links only; do not build.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.check { check() } else { build() }
}

/// Checks the book's sources without building it (fast; needs no mdBook).
pub fn check() -> Result<()> {
    let drawn = diagram::draw_all(&paths::root())?;
    println!("book: {drawn} pictures drawn from book/diagrams/ into book/src/images/drawn/");
    let problems = check::all(&paths::root())?;
    if problems.is_empty() {
        println!("book: includes, anchors, links, pictures and commands check out");
        return Ok(());
    }
    eprintln!("book/src has problems:");
    for problem in &problems {
        eprintln!("  {problem}");
    }
    bail!("{} problems in book/src; fix them and run `cargo xtask book` again", problems.len())
}

/// Checks the book, then builds it into `book/book/` with the pinned mdBook
/// (installing it first if needed). Fails on any error or warning mdBook
/// prints.
pub fn build() -> Result<()> {
    check()?;
    let mdbook = mdbook::ensure_installed()?;
    mdbook::build(&mdbook, &paths::root().join("book"))?;
    println!("book: built into book/book/ (open book/book/index.html)");
    Ok(())
}
