//! `cargo xtask stages`: generates `stages/` and `solutions/` from `kmod/`.
//!
//! `kmod/` holds the whole hypervisor once; stage markers in its files
//! (specified in `kmod/README.md`) say in which stage each line appears and
//! which regions are exercises. Stage N's crate, `stages/NN-slug/`, holds
//! exactly the code of stages 1 to N with stage N's exercises as `todo!()`
//! holes; `solutions/NN-slug/` holds the solved form of the files that have
//! those holes. Both trees are committed; `--check` proves they match
//! `kmod/`.
//!
//! Other commands use this module's view of the course: [`generated_stages`],
//! [`exercises`], [`stage_dir`], [`solution_dir`], [`package`], [`hints`]
//! (the format of a stage's `HINTS.md`, which `cargo xtask hint` reads),
//! and [`check`] for `cargo xtask test`.

pub mod hints;
mod manifest;
mod marker;
mod project;
mod sources;
mod tree;

pub use manifest::standalone_manifest;
pub use marker::{Exercise, ExerciseId};

use crate::paths::root;
use anyhow::{Result, bail};
use std::path::PathBuf;

/// The number of the last stage of the course.
pub const LAST_STAGE: u32 = 13;

/// The stages' slugs, in order: stage N is `SLUGS[N - 1]`.
const SLUGS: [&str; LAST_STAGE as usize] = [
    "segments",
    "abi",
    "device",
    "vmx-on",
    "vmx-entry",
    "io-exits",
    "svm",
    "shadow-paging",
    "shadow-cache",
    "mmio",
    "dirty-log",
    "events",
    "full-module",
];

#[derive(clap::Args)]
pub struct Args {
    /// Compare the trees on disk with what kmod/ generates, write nothing,
    /// and fail if any file differs.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.check { check() } else { generate() }
}

/// The slug of stage `stage`, for example `segments` for stage 1.
pub fn slug(stage: u32) -> &'static str {
    SLUGS[(stage.clamp(1, LAST_STAGE) - 1) as usize]
}

/// The directory name of a stage, for example `01-segments`.
pub fn dir_name(stage: u32) -> String {
    format!("{stage:02}-{}", slug(stage))
}

/// The Cargo package of a stage crate, for example `rkvm-stage01`. Its
/// library is still called `rkvm`, so code and tests read alike in every
/// stage.
pub fn package(stage: u32) -> String {
    manifest::package_name(stage)
}

/// `stages/NN-slug/`: the crate of stage `stage`.
pub fn stage_dir(stage: u32) -> PathBuf {
    root().join("stages").join(dir_name(stage))
}

/// `solutions/NN-slug/`: the solved files of stage `stage`'s exercises.
pub fn solution_dir(stage: u32) -> PathBuf {
    root().join("solutions").join(dir_name(stage))
}

/// The stages that `kmod/` defines: 1 up to the highest stage any marker
/// names.
pub fn generated_stages() -> Result<Vec<u32>> {
    let sources = sources::load(&root())?;
    Ok((1..=sources.last_stage).collect())
}

/// Every exercise in `kmod/`, ordered by id.
pub fn exercises() -> Result<Vec<Exercise>> {
    Ok(sources::load(&root())?.exercises())
}

/// Regenerates `stages/` and `solutions/`, writing only files that changed
/// and removing files that `kmod/` no longer produces.
pub fn generate() -> Result<()> {
    let root = checkout_root()?;
    let sources = sources::load(&root)?;
    let want = tree::build(&sources)?;
    let have = tree::read_disk(&root)?;
    let report = tree::write(&root, &want, &have)?;
    println!(
        "stages 01 to {:02} and their solutions: {} files, {} written, {} removed",
        sources.last_stage,
        want.len(),
        report.written,
        report.removed
    );
    Ok(())
}

/// Fails, naming every drifted file, if `stages/` or `solutions/` differ
/// from what `kmod/` generates. Writes nothing.
pub fn check() -> Result<()> {
    let root = checkout_root()?;
    let sources = sources::load(&root)?;
    let want = tree::build(&sources)?;
    let have = tree::read_disk(&root)?;
    let drift = tree::diff(&want, &have);
    if drift.is_empty() {
        println!("stages/ and solutions/ match kmod/ ({} files, stages 01 to {:02})", want.len(), sources.last_stage);
        return Ok(());
    }
    eprintln!("stages/ and solutions/ differ from what kmod/ generates:");
    for line in drift.lines() {
        eprintln!("  {line}");
    }
    bail!("generated trees are out of date: run `cargo xtask stages` and commit stages/ and solutions/")
}

/// The repository this binary was built from, refusing to act if the
/// command was started in another checkout: two checkouts that share a
/// target directory can leave one's `xtask` binary in the other's place.
fn checkout_root() -> Result<PathBuf> {
    let root = root();
    let here = std::env::current_dir().and_then(|d| d.canonicalize());
    let ours = root.canonicalize().unwrap_or_else(|_| root.clone());
    match here {
        Ok(here) if !here.starts_with(&ours) => bail!(
            "this xtask was built from {} but runs in {}: the checkouts share a target directory. \
             Rebuild it here (`touch xtask/src/main.rs`, then run the command again) or give each \
             checkout its own CARGO_TARGET_DIR",
            ours.display(),
            here.display()
        ),
        _ => Ok(root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_stage_table() {
        assert_eq!(dir_name(1), "01-segments");
        assert_eq!(dir_name(8), "08-shadow-paging");
        assert_eq!(dir_name(13), "13-full-module");
        assert_eq!(package(3), "rkvm-stage03");
        assert!(stage_dir(2).ends_with("stages/02-abi"));
        assert!(solution_dir(2).ends_with("solutions/02-abi"));
    }
}
