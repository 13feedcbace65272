//! `cargo xtask test-stage N [--solution]`: runs one stage's tests.
//!
//! A stage's test plan is its crate's host tests (`cargo test` on
//! `stages/NN-slug/`), then, from stage 03 on, its tests in L1: the stage's
//! module loaded in a small Linux under QEMU, running the test guests. With
//! `--solution` the same plan runs on a copy of the stage with
//! `solutions/NN-slug/` laid over its exercise holes. Each test is printed as
//! it finishes; a failing test of an exercise's `eN_k` module names the
//! exercise and the command that shows its hint. An L1 check that did not
//! run (its program stopped at an unsolved exercise's panic, say) is listed
//! with the reason, so that a solved and an unsolved run count the same
//! checks; the last line is `N passed, M failed`, with `, K not run` when
//! some did not run.

pub mod libtest;
mod scratch;

pub use libtest::{Outcome, Run, TestResult};
#[cfg(test)]
pub use scratch::copy_tree;

use crate::kernel::Choice;
use crate::l1::Check;
use crate::paths;
use crate::stages::{self, ExerciseId, LAST_STAGE, dir_name};
use anyhow::{Result, bail, ensure};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// The stage to test, 1 to 13.
    pub stage: u32,
    /// Test the stage with its exercises solved (solutions/NN-slug/ laid over
    /// a copy of stages/NN-slug/ under target/).
    #[arg(long)]
    pub solution: bool,
    /// The L1 platform for stages 03 and later (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub kernel: Choice,
}

pub fn run(args: Args) -> Result<()> {
    let tally = test_stage(args.stage, args.solution, args.platform.as_deref(), &args.kernel, None)?;
    println!("{}", tally.totals());
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// What a stage's test plan counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    /// Checks in L1 that were announced and did not run, because something
    /// before them stopped (a failure counted in `failed`) or because they
    /// cannot run on this machine.
    pub not_run: u32,
    /// The exercises with at least one failing test.
    pub unsolved: BTreeSet<ExerciseId>,
}

impl Tally {
    /// The closing line: `N passed, M failed`, and `, K not run` when some
    /// did not. A solved and an unsolved run count the same checks.
    pub fn totals(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.not_run > 0 {
            line.push_str(&format!(", {} not run", self.not_run));
        }
        line
    }
}

/// Runs stage `stage`'s test plan, printing every test, and returns the
/// counts; prints no closing line (callers add up several plans). `platform`
/// chooses L1's platform (`None`: the default), `choice` its kernel;
/// `chaos_seeds` adds the seeded guests, with that many seeds each.
pub fn test_stage(stage: u32, solution: bool, platform: Option<&str>, choice: &Choice, chaos_seeds: Option<u32>) -> Result<Tally> {
    let dir = stage_crate(stage, solution)?;
    let form = if solution { "with its solutions" } else { "as generated" };
    println!("== stage {stage:02} ({}) {form}: host tests", stages::slug(stage));
    let solved = (dir != stages::stage_dir(stage)).then_some(dir.as_path());
    let mut tally = host_tests(stage, solved)?;
    if stage >= 3 {
        println!("== stage {stage:02}: tests in L1");
        for check in l1_tests(stage, &dir, platform, choice, chaos_seeds) {
            match (check.passed, check.not_run) {
                (true, _) => tally.passed += 1,
                (false, true) => tally.not_run += 1,
                (false, false) => tally.failed += 1,
            }
            tally.unsolved.extend(crate::report::exercise_in(&check.detail).and_then(ExerciseId::parse));
        }
    }
    print_unsolved(&tally.unsolved);
    Ok(tally)
}

/// The directory whose crate is tested: the stage itself, or its solved
/// copy under `target/`.
pub fn stage_crate(stage: u32, solution: bool) -> Result<PathBuf> {
    ensure!((1..=LAST_STAGE).contains(&stage), "there is no stage {stage}: stages are 1 to {LAST_STAGE}");
    let dir = stages::stage_dir(stage);
    if !dir.is_dir() && !paths::root().join("kmod").is_dir() {
        let present: Vec<u32> = (1..=LAST_STAGE).filter(|&n| stages::stage_dir(n).is_dir()).collect();
        bail!("stages/{}/ is not in this tree; {}", dir_name(stage), crate::course::listed(&present));
    }
    if !dir.is_dir() {
        bail!(
            "stages/{}/ does not exist: kmod/ does not reach stage {stage} yet, or the stages were \
             not generated (run `cargo xtask stages`)",
            dir_name(stage)
        );
    }
    if solution && stages::solution_dir(stage).is_dir() {
        return scratch::prepare(stage);
    }
    if solution && dir.join(stages::hints::FILE).is_file() {
        bail!(
            "solutions/{}/ is not in this tree, so stage {stage} cannot be run with its solutions; \
             run it as it is, without --solution",
            dir_name(stage)
        );
    }
    if solution {
        println!("stage {stage} has no exercises: its crate is its own solution");
    }
    Ok(dir)
}

/// The stage's tests in L1: its module (built from `stage_dir`, the stage
/// or its solved copy) and the test guests of stages up to it. A run that
/// cannot start (no QEMU, no L1 kernel) is one failed check, with the
/// reason.
fn l1_tests(stage: u32, stage_dir: &Path, platform: Option<&str>, choice: &Choice, chaos_seeds: Option<u32>) -> Vec<Check> {
    match crate::jobs::run_stage_tests(stage, stage_dir, platform, choice, chaos_seeds) {
        Ok(checks) => checks,
        Err(e) => {
            println!("  FAILED  stage {stage}'s L1 tests could not run: {e:#}");
            vec![Check::new(format!("stage {stage}'s L1 tests"), false, format!("{e:#}"))]
        }
    }
}

/// `cargo test` on a stage crate (`solved` names its solved copy), printing
/// each test as it finishes and then what the failed ones printed.
fn host_tests(stage: u32, solved: Option<&Path>) -> Result<Tally> {
    let run = libtest::run(cargo_test(stage, solved), true, print_test)?;
    let mut tally = Tally { passed: run.count(Outcome::Passed), failed: run.count(Outcome::Failed), ..Tally::default() };
    if !run.compiled {
        println!("  FAILED  stage {stage:02} does not compile (cargo's errors are above)");
        tally.failed += 1;
        return Ok(tally);
    }
    let failed: Vec<&TestResult> = run.tests.iter().filter(|t| t.outcome == Outcome::Failed).collect();
    print_failures(&failed);
    tally.unsolved = failed.iter().filter_map(|t| t.exercise()).collect();
    Ok(tally)
}

/// The `cargo test` command for a stage crate or its solved copy. Every
/// test binary runs even if an earlier one fails.
pub fn cargo_test(stage: u32, solved: Option<&Path>) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(paths::root()).args(["test", "--no-fail-fast"]);
    match solved {
        None => command.args(["-p", &stages::package(stage)]),
        Some(dir) => command.arg("--manifest-path").arg(dir.join("Cargo.toml")).env("CARGO_TARGET_DIR", paths::target()),
    };
    command
}

/// The host tests of stage `stage` (its solved copy if `solution`), run
/// quietly: for checks that judge the results themselves.
pub fn host_run(stage: u32, solution: bool) -> Result<Run> {
    let solved = if solution { Some(scratch::prepare(stage)?) } else { None };
    libtest::run(cargo_test(stage, solved.as_deref()), false, |_| {})
}

fn print_test(test: &TestResult) {
    let status = match test.outcome {
        Outcome::Passed => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Ignored => "ignored",
    };
    match test.exercise().filter(|_| test.outcome == Outcome::Failed) {
        Some(id) => println!("  {status:<7} {}   (exercise {id}: `cargo xtask hint {id}`)", test.display_name()),
        None => println!("  {status:<7} {}", test.display_name()),
    }
}

/// Prints what each failed test printed, a few lines each, except for
/// tests that merely reached their exercise's `todo!()`.
fn print_failures(failed: &[&TestResult]) {
    let telling: Vec<&&TestResult> = failed.iter().filter(|t| !reached_hole(t)).collect();
    if telling.is_empty() {
        return;
    }
    println!("== what the failed tests said");
    for test in telling {
        println!("  {}:", test.display_name());
        for line in test.output.iter().take(12) {
            println!("      {}", without_thread(line));
        }
    }
}

/// Whether a failed test stopped at its exercise's unsolved hole.
fn reached_hole(test: &TestResult) -> bool {
    let Some(id) = test.exercise() else { return false };
    let hole = format!("not yet implemented: {id}");
    test.output.iter().any(|line| line.trim_end() == hole)
}

/// `thread 'name' (1234) panicked at ...` without the thread: the test's
/// name is already printed above it.
fn without_thread(line: &str) -> &str {
    match line.strip_prefix("thread '") {
        Some(_) => line.find(" panicked at ").map_or(line, |at| &line[at + 1..]),
        None => line,
    }
}

fn print_unsolved(unsolved: &BTreeSet<ExerciseId>) {
    if unsolved.is_empty() {
        return;
    }
    println!("== exercises not solved yet");
    for id in unsolved {
        println!("  {id}: `cargo xtask hint {id}` shows its instruction and first hint");
    }
}
