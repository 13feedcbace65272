//! The pinned mdBook: installed once under `target/tools/`, then run.
//!
//! mdBook is a program, not a library of the harness: linking it in would
//! make every cold build of `cargo xtask` compile a web server. It is built
//! without its `serve` and `watch` features, which the course does not use.

use super::MDBOOK_VERSION;
use crate::{paths, progress};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// How many crates `cargo install` compiles for the pinned mdBook with its
/// features (measured: 123 for 0.5.4), for the progress line.
const MDBOOK_CRATES: usize = 123;

/// Where `cargo install --root` puts the tools.
fn tools_root() -> PathBuf {
    paths::target().join("tools")
}

/// The path of the pinned mdBook, installing it if it is missing or of
/// another version.
pub fn ensure_installed() -> Result<PathBuf> {
    let mdbook = tools_root().join("bin").join("mdbook");
    if installed_version(&mdbook).as_deref() == Some(MDBOOK_VERSION) {
        return Ok(mdbook);
    }
    println!(
        "book: building mdBook {MDBOOK_VERSION}, the book's pinned builder, from the Rust package registry into {} \
         (once; on two cores it takes several minutes)",
        tools_root().display()
    );
    let start = Instant::now();
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "mdbook", "--version", MDBOOK_VERSION, "--locked", "--color", "never"])
        .args(["--no-default-features", "--features", "search", "--root"])
        .arg(tools_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo install mdbook")?;
    let label = format!("book: building mdBook {MDBOOK_VERSION}");
    let output = progress::follow_cargo(&mut child, &label, Some(MDBOOK_CRATES))?;
    if !output.status.success() {
        eprint!("{}", output.messages);
        bail!("installing mdBook {MDBOOK_VERSION} failed (see cargo's output above); the Rust package registry must be reachable");
    }
    println!(
        "book: mdBook {MDBOOK_VERSION} built in {} ({} compiled)",
        progress::elapsed_text(start.elapsed()),
        progress::crates_text(output.crates)
    );
    Ok(mdbook)
}

/// The version `mdbook --version` reports, if it runs.
fn installed_version(mdbook: &Path) -> Option<String> {
    let output = Command::new(mdbook).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().strip_prefix("mdbook v")?.to_string())
}

/// Builds the book in `book_dir`; fails if mdBook fails or reports an error
/// or warning (a missing include is only a warning to mdBook).
pub fn build(mdbook: &Path, book_dir: &Path) -> Result<()> {
    let output = Command::new(mdbook)
        .arg("build")
        .arg(book_dir)
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("running {}", mdbook.display()))?;
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let complaints: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
    if !output.status.success() || !complaints.is_empty() {
        eprintln!("{log}");
        bail!("mdBook did not build the book cleanly: {}", complaints.first().copied().unwrap_or("see its output above"));
    }
    if !book_dir.join("book").join("index.html").is_file() {
        bail!("mdBook finished but wrote no book/book/index.html; check book/book.toml's build-dir");
    }
    Ok(())
}
