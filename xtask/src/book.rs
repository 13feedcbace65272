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
//!
//! After mdBook, headless Chromium opens every page of the built book,
//! saves a screenshot of each into `target/book/screenshots/`, and checks
//! that every picture loaded and is drawn and that no include was left
//! unexpanded (see `book/look.rs`). `--check` stops before mdBook and
//! needs no browser.

mod browser;
mod check;
mod commands;
mod diagram;
mod links;
mod look;
mod mdbook;
mod svg;

use crate::{doctor, paths};
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
/// (installing it first if needed), then looks at every page in Chromium.
/// Fails on any error or warning mdBook prints and on any problem the
/// browser shows.
pub fn build() -> Result<()> {
    check()?;
    doctor::require(doctor::BOOK)?;
    let mdbook = mdbook::ensure_installed()?;
    let book = paths::root().join("book");
    mdbook::build(&mdbook, &book)?;
    println!("book: built into book/book/ (open book/book/index.html)");
    look::all(&mdbook, &book)
}
