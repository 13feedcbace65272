//! `cargo xtask exercises [--check]` and `cargo xtask hint EN.k`.
//!
//! An exercise is honest when its stage's skeleton compiles, every test in
//! its `eN_k` test module fails on the skeleton, every other test passes
//! there, and everything passes with the solutions in place. `--check`
//! proves that for every generated stage, by running each stage's host
//! tests twice (skeleton, then solved copy); from stage 03 on it also builds
//! the skeleton for the kernel target. Without `--check` it lists the
//! exercises of the stages in this tree, from their `HINTS.md`.

mod judge;

use crate::paths;
use crate::stages::{self, ExerciseId, dir_name};
use crate::test_stage;
use anyhow::{Context, Result, bail};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Prove, for every stage, that its skeleton compiles and fails exactly
    /// its exercises' tests, and that its solutions pass everything.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.check { check_all() } else { list() }
}

/// Lists every exercise of the stage crates in this tree with its
/// instruction (read as `hint` reads them, so no `kmod/` is needed).
fn list() -> Result<()> {
    for exercise in crate::hint::all(&paths::root())? {
        println!("{} (stage {}): {}", exercise.id, dir_name(exercise.id.stage), exercise.instruction.join(" "));
    }
    println!("`cargo xtask hint EN.k` shows one exercise's first hint; `--check` proves every exercise honest.");
    Ok(())
}

/// Checks every generated stage's exercises (see the module docs); prints a
/// summary per stage and fails naming every violation.
pub fn check_all() -> Result<()> {
    let all: Vec<ExerciseId> = stages::exercises()?.iter().map(|e| e.id).collect();
    let mut violations = Vec::new();
    for stage in stages::generated_stages()? {
        violations.extend(check_stage(stage, &all)?);
    }
    if violations.is_empty() {
        println!("every stage's skeleton fails exactly its exercises' tests, and its solutions pass");
        return Ok(());
    }
    eprintln!("exercise checks failed:");
    for violation in &violations {
        eprintln!("  {violation}");
    }
    bail!("{} exercise checks failed; fix kmod/ (markers or tests), then run `cargo xtask stages`", violations.len())
}

/// Checks one stage and prints its summary line; returns its violations.
fn check_stage(stage: u32, all: &[ExerciseId]) -> Result<Vec<String>> {
    let name = format!("stage {}", dir_name(stage));
    println!("== {name}");
    let skeleton = test_stage::host_run(stage, false)?;
    let judged = judge::skeleton(stage, all, &skeleton);
    let mut violations: Vec<String> = judged.violations.iter().map(|v| format!("{name}: {v}")).collect();
    println!("  skeleton: {}", judged.summary);
    if all.iter().any(|id| id.stage == stage) {
        let solved = test_stage::host_run(stage, true)?;
        let (summary, problems) = judge::solution(&solved);
        println!("  solution: {summary}");
        violations.extend(problems.iter().map(|v| format!("{name} with its solutions: {v}")));
    }
    if stage >= 3 {
        let built = kernel_build(stage)?;
        println!("  kernel target: {}", if built { "builds" } else { "does not build" });
        if !built {
            violations.push(format!("{name}: the skeleton does not build for x86_64-unknown-none"));
        }
    }
    Ok(violations)
}

/// Builds stage `stage`'s skeleton for the kernel's target, as the module
/// build does; returns whether it built.
fn kernel_build(stage: u32) -> Result<bool> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(paths::root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["build", "--quiet", "-p", &stages::package(stage)])
        .args(["--target", "x86_64-unknown-none", "-Zbuild-std=core,alloc"])
        .status()
        .context("running cargo build for x86_64-unknown-none")?;
    Ok(status.success())
}
