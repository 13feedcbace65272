//! `cargo xtask exercises [--check]` and `cargo xtask hint EN.k`.
//!
//! An exercise is honest when its stage's skeleton compiles, every test in
//! its `eN_k` test module fails on the skeleton, every other test passes
//! there, and everything passes with the solutions in place. `--check`
//! proves that for every generated stage, by running each stage's host
//! tests twice (skeleton, then solved copy); from stage 03 on it also builds
//! the skeleton for the kernel target. `hint` prints what an exercise asks
//! and the hint its author left, read from the markers in `kmod/`.

mod judge;

use crate::paths;
use crate::stages::{self, Exercise, ExerciseId, dir_name};
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

#[derive(clap::Args)]
pub struct HintArgs {
    /// The exercise, for example E1.2.
    pub id: String,
}

pub fn run(args: Args) -> Result<()> {
    if args.check { check_all() } else { list() }
}

/// Lists every exercise with its instruction.
fn list() -> Result<()> {
    for exercise in stages::exercises()? {
        println!("{} (stage {}): {}", exercise.id, dir_name(exercise.id.stage), exercise.instruction.join(" "));
    }
    println!("`cargo xtask hint EN.k` shows one exercise's hint; `--check` proves every exercise honest.");
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

/// Prints one exercise's instruction and hint.
pub fn hint(args: HintArgs) -> Result<()> {
    let exercises = stages::exercises()?;
    let Some(exercise) = find(&exercises, &args.id) else {
        let known: Vec<String> = exercises.iter().map(|e| e.id.to_string()).collect();
        bail!("there is no exercise `{}`; the exercises are: {}", args.id, known.join(", "));
    };
    print!("{}", describe(exercise, hole_location(exercise).as_deref()));
    Ok(())
}

fn find<'a>(exercises: &'a [Exercise], text: &str) -> Option<&'a Exercise> {
    let id = ExerciseId::parse(text)?;
    exercises.iter().find(|e| e.id == id)
}

/// Where the exercise's hole is in its stage's crate: `path:line`.
fn hole_location(exercise: &Exercise) -> Option<String> {
    let stage = exercise.id.stage;
    let path = format!("stages/{}/{}", dir_name(stage), exercise.file);
    let text = std::fs::read_to_string(paths::root().join(&path)).ok()?;
    let marks = [format!("todo!(\"{}\")", exercise.id), format!("not yet implemented: {}\"", exercise.id)];
    let line = text.lines().position(|l| marks.iter().any(|m| l.contains(m.as_str())))?;
    Some(format!("{path}:{}", line + 1))
}

/// The text `hint` prints.
fn describe(exercise: &Exercise, location: Option<&str>) -> String {
    let id = exercise.id;
    let mut text = format!("Exercise {id}, stage {}", dir_name(id.stage));
    if let Some(location) = location {
        text.push_str(&format!(", at {location}"));
    }
    text.push_str("\n\nInstruction:\n");
    exercise.instruction.iter().for_each(|l| text.push_str(&format!("    {l}\n")));
    text.push_str("\nHint:\n");
    exercise.hint.iter().for_each(|l| text.push_str(&format!("    {l}\n")));
    text.push_str(&format!(
        "\nIts tests are in the `{}` test modules; `cargo xtask test-stage {}` runs them.\n",
        id.test_module(),
        id.stage
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise() -> Exercise {
        Exercise {
            id: ExerciseId { stage: 2, number: 1 },
            file: "src/abi.rs".into(),
            line: 10,
            indent: String::new(),
            instruction: vec!["Decode the number.".into(), "All four fields.".into()],
            hint: vec!["Shift, then mask.".into()],
            body: vec!["x".into()],
            in_const_fn: false,
        }
    }

    #[test]
    fn finds_exercises_by_any_spelling_of_their_id() {
        let all = [exercise()];
        for text in ["E2.1", "e2.1", "2.1", "E2_1"] {
            assert!(find(&all, text).is_some(), "{text}");
        }
        assert!(find(&all, "E2.2").is_none());
        assert!(find(&all, "nonsense").is_none());
    }

    #[test]
    fn a_hint_shows_the_instruction_the_hint_and_the_tests() {
        let text = describe(&exercise(), Some("stages/02-abi/src/abi.rs:42"));
        assert!(text.starts_with("Exercise E2.1, stage 02-abi, at stages/02-abi/src/abi.rs:42\n"), "{text}");
        assert!(text.contains("Instruction:\n    Decode the number.\n    All four fields.\n"), "{text}");
        assert!(text.contains("Hint:\n    Shift, then mask.\n"), "{text}");
        assert!(text.contains("`e2_1` test modules; `cargo xtask test-stage 2`"), "{text}");
    }
}
