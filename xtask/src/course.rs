//! `cargo xtask progress [--stage N | --all]`: which exercises are solved.
//!
//! For each stage crate under `stages/` (or the one `--stage` names), the
//! stage's exercise tests run on the host: `cargo test` on the crate,
//! filtered to its `eN_k` test modules, in a target directory of its own
//! (`target/progress/`, so that a warm run takes seconds and does not wait
//! for another build). An exercise is solved when every test of its module
//! passes; it is not started while its `todo!()` is still in place. The
//! exercises come from each stage's `HINTS.md` and the holes from its
//! source, as `cargo xtask hint` reads them, so this works in a reader's
//! tree that has neither `kmod/` nor `solutions/`. The last lines say what
//! to do next. `cargo xtask watch` (see `watch.rs`) runs one stage's report
//! again on each save.
//!
//! Without `--stage` or `--all`, the full repository reports on every
//! stage, for a reader who works through the course from stage 01; a
//! stage's handout (a tree without `kmod/`, see `handout.rs`), handed to a
//! reader for that one stage, reports on its own stage, the last it holds,
//! and its first line says how to see the others.
//!
//! Only host tests are run: from stage 03 on, `cargo xtask test-stage N`
//! also runs the stage's tests in L1, which the report points at.

use crate::hint;
use crate::paths;
use crate::progress;
use crate::stages::hints::ExerciseHints;
use crate::stages::{ExerciseId, LAST_STAGE, dir_name};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Report on stage N only.
    #[arg(long, conflicts_with = "all")]
    pub stage: Option<u32>,
    /// Report on every stage in the tree: the default in the full
    /// repository; a stage's handout reports on its own stage unless told.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args) -> Result<()> {
    let course = Course::here();
    let present = course.present();
    let only = chosen(args.stage, args.all, course.is_handout(), &present);
    if args.stage.is_none() && !args.all {
        print!("{}", handout_note(only, &present));
    }
    let stages = course.stages(only)?;
    let mut reports = Vec::new();
    for stage in &stages {
        let report = course.check(stage)?;
        print!("{}", report.render());
        reports.push(report);
    }
    if let Some(judged) = reports.iter().find_map(Report::next).filter(|j| matches!(j.state, State::Failing { .. })) {
        let id = judged.exercise.id;
        let said = reports.iter().map(|r| r.failures_of(id, 6)).collect::<String>();
        print!("== what {id}'s failing tests said\n{said}");
    }
    print!("{}", summary(&course.root, &reports));
    Ok(())
}

/// The tree whose stages are judged, and where their tests are built.
pub struct Course {
    pub root: PathBuf,
    pub target: PathBuf,
}

/// One stage crate of the tree and its exercises, in id order.
#[derive(Clone, Debug)]
pub struct Stage {
    pub number: u32,
    pub exercises: Vec<ExerciseHints>,
}

impl Stage {
    /// `stages/NN-slug`, relative to the root.
    pub fn dir(&self) -> String {
        format!("stages/{}", dir_name(self.number))
    }
}

impl Course {
    /// This checkout, its tests built in `target/progress/`.
    pub fn here() -> Course {
        Course { root: paths::root(), target: paths::target().join("progress") }
    }

    /// Whether this tree is a stage's handout: it has no `kmod/` (and
    /// `HANDOUT.md` at the top says what it is), where the full repository
    /// has.
    pub fn is_handout(&self) -> bool {
        !self.root.join("kmod").is_dir()
    }

    /// The numbers of the stage crates in this tree, in order.
    pub fn present(&self) -> Vec<u32> {
        (1..=LAST_STAGE).filter(|&n| self.root.join("stages").join(dir_name(n)).is_dir()).collect()
    }

    /// The stage that `progress` and `watch` work on when not told: in a
    /// handout its own stage, the last it holds; in the full repository
    /// none (`progress` reports on every stage, `watch` finds the first
    /// with work left).
    pub fn default_stage(&self) -> Option<u32> {
        chosen(None, false, self.is_handout(), &self.present())
    }

    /// The stage crates in this tree (only stage `only`, if given), with
    /// their exercises.
    pub fn stages(&self, only: Option<u32>) -> Result<Vec<Stage>> {
        let exercises = hint::all(&self.root)?;
        let present = self.present();
        let wanted: Vec<u32> = match only {
            None => present.clone(),
            Some(n) if present.contains(&n) => vec![n],
            Some(n) if !(1..=LAST_STAGE).contains(&n) => bail!("there is no stage {n}: stages are 1 to {LAST_STAGE}"),
            Some(n) => bail!("stages/{}/ is not in this tree; {}", dir_name(n), listed(&present)),
        };
        if wanted.is_empty() {
            bail!("this tree has no stage crate under stages/");
        }
        let stage = |number| Stage { number, exercises: exercises.iter().filter(|e| e.id.stage == number).cloned().collect() };
        Ok(wanted.into_iter().map(stage).collect())
    }

    /// Runs stage `stage`'s exercise tests and judges each exercise.
    pub fn check(&self, stage: &Stage) -> Result<Report> {
        let start = Instant::now();
        let holes = stage.exercises.iter().map(|e| hint::hole_line(&self.root, e)).collect();
        if stage.exercises.is_empty() {
            return Ok(Report::new(stage, TestOutput::default(), holes, start.elapsed()));
        }
        let mut child = self
            .command(stage)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running cargo test: is cargo on PATH?")?;
        let label = format!("stage {}", dir_name(stage.number));
        let out = progress::follow_cargo(&mut child, &label, None)?;
        let output = TestOutput::parse(&out.messages, out.status.success());
        Ok(Report::new(stage, output, holes, start.elapsed()))
    }

    /// `cargo test` on the stage crate, filtered to its exercises' test
    /// modules; integration tests included, doc tests not.
    fn command(&self, stage: &Stage) -> Command {
        let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        command
            .current_dir(&self.root)
            .arg("test")
            .arg("--manifest-path")
            .arg(self.root.join(stage.dir()).join("Cargo.toml"))
            .args(["--tests", "--no-fail-fast"])
            .env("CARGO_TARGET_DIR", &self.target)
            .env("CARGO_TERM_COLOR", "never")
            .env("RUST_BACKTRACE", "0")
            .arg("--")
            .args(stage.exercises.iter().map(|e| format!("{}::", e.id.test_module())));
        command
    }
}

/// The stages `progress` reports on, from its flags and the tree:
/// `Some(n)` for stage n alone, `None` for every stage `present`. Without
/// `--stage` or `--all`, a handout reports on its own stage (the last it
/// holds) and the full repository on every stage.
pub fn chosen(stage: Option<u32>, all: bool, handout: bool, present: &[u32]) -> Option<u32> {
    match stage {
        Some(n) => Some(n),
        None if all || !handout => None,
        None => present.last().copied(),
    }
}

/// The line `progress` starts with when, not told which stages, it
/// reports on a handout's own stage (`only`) of the stages `present`: how
/// to see the others. Empty when it reports on every stage anyway.
pub fn handout_note(only: Option<u32>, present: &[u32]) -> String {
    match (only, present) {
        (Some(stage), [first, .., _]) => format!(
            "this is stage {stage:02}'s handout, so `progress` reports on stage {stage:02}; \
             `cargo xtask progress --all` reports on stages {first:02} to {stage:02}, `--stage N` on one\n"
        ),
        _ => String::new(),
    }
}

/// `the stages in this tree are 01, 07`, for error messages.
pub fn listed(present: &[u32]) -> String {
    match present {
        [] => "this tree has no stage crate under stages/".into(),
        _ => {
            let names: Vec<String> = present.iter().map(|n| format!("{n:02}")).collect();
            format!("the stages in this tree are {}", names.join(", "))
        }
    }
}

/// What a filtered `cargo test` run said: each test's outcome, what each
/// failed test printed, and cargo's messages if it did not compile.
#[derive(Debug, Default)]
pub struct TestOutput {
    /// (test path, passed), ignored tests left out.
    pub tests: Vec<(String, bool)>,
    /// What each failed test printed (its panic message), by test path.
    pub failures: BTreeMap<String, Vec<String>>,
    /// Cargo's errors (with their warnings) when the crate did not build;
    /// `None` when it did.
    pub build_errors: Option<Vec<String>>,
    /// Whether a test binary was killed by a signal before it reported
    /// every test (an abort, a stack overflow).
    pub crashed: bool,
}

impl TestOutput {
    /// Reads libtest's plain output (`test NAME ... ok`, `---- NAME stdout
    /// ----` blocks) from `text`, everything cargo printed besides its status
    /// lines; `success` is cargo's exit status.
    pub fn parse(text: &str, success: bool) -> TestOutput {
        let mut output = TestOutput::default();
        let mut capturing: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
                capturing = Some(name.to_string());
                output.failures.entry(name.to_string()).or_default();
            } else if line == "failures:" || line.starts_with("test result: ") || line.starts_with("running ") {
                capturing = None;
            } else if let Some((name, passed)) = test_line(line) {
                output.tests.extend(passed.map(|p| (name.to_string(), p)));
            } else if let Some(name) = capturing.as_ref().filter(|_| !line.starts_with("note: ")) {
                output.failures.entry(name.clone()).or_default().push(without_thread(line).to_string());
            }
        }
        for lines in output.failures.values_mut() {
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            while lines.first().is_some_and(|l| l.trim().is_empty()) {
                lines.remove(0);
            }
        }
        output.crashed = text.lines().any(|l| l.contains("didn't exit successfully") && l.contains("(signal: "));
        let broke = text.lines().any(|l| l.starts_with("error: could not compile"));
        if broke || (!success && output.tests.is_empty()) {
            let lines: Vec<&str> = text.lines().collect();
            let first = lines.iter().position(|l| l.starts_with("error")).unwrap_or(0);
            output.build_errors = Some(lines[first..].iter().map(|l| l.to_string()).collect());
        }
        output
    }
}

/// `test NAME ... ok|FAILED|ignored`: the name, and whether it passed
/// (`None` if ignored).
fn test_line(line: &str) -> Option<(&str, Option<bool>)> {
    let (name, result) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
    match result {
        "ok" => Some((name, Some(true))),
        "FAILED" => Some((name, Some(false))),
        r if r.starts_with("ignored") => Some((name, None)),
        _ => None,
    }
}

/// `thread 'name' (1234) panicked at src/x.rs:1:2:` without the thread.
fn without_thread(line: &str) -> &str {
    match line.strip_prefix("thread '") {
        Some(_) => line.find(" panicked at ").map_or(line, |at| &line[at + 1..]),
        None => line,
    }
}

/// The exercise whose test module (`eN_k`) holds the test at `path`.
pub fn exercise_of(path: &str) -> Option<ExerciseId> {
    path.split("::").find_map(|part| ExerciseId::parse(part).filter(|id| id.test_module() == part))
}

/// Where one exercise stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Every one of its host tests passes.
    Solved { passed: usize },
    /// Its `todo!()` is still in place (at `line`).
    NotStarted { line: usize },
    /// Its hole is filled, and `failed` of its `total` host tests fail.
    Failing { failed: usize, total: usize },
    /// Its hole is filled and it has no host test: only the stage's tests
    /// in L1 check it.
    L1Only,
    /// The stage does not compile, or its tests did not report (a test
    /// binary crashed).
    Unknown,
}

impl State {
    pub fn solved(&self) -> bool {
        matches!(self, State::Solved { .. })
    }

    /// Whether the reader still has work to do on it, as far as the host
    /// tests can tell.
    pub fn open(&self) -> bool {
        matches!(self, State::NotStarted { .. } | State::Failing { .. } | State::Unknown)
    }
}

/// One exercise's standing.
#[derive(Clone, Debug)]
pub struct Judged {
    pub exercise: ExerciseHints,
    pub state: State,
}

/// One stage's run: every exercise judged, and what the tests said.
#[derive(Debug)]
pub struct Report {
    pub stage: u32,
    pub exercises: Vec<Judged>,
    pub output: TestOutput,
    pub elapsed: Duration,
}

impl Report {
    /// Judges each exercise of `stage` from `output`; `holes` holds the
    /// line of each exercise's `todo!()`, if still in place.
    pub fn new(stage: &Stage, output: TestOutput, holes: Vec<Option<usize>>, elapsed: Duration) -> Report {
        let exercises = stage
            .exercises
            .iter()
            .zip(holes)
            .map(|(exercise, hole)| {
                let results: Vec<bool> =
                    output.tests.iter().filter(|(name, _)| exercise_of(name) == Some(exercise.id)).map(|t| t.1).collect();
                let failed = results.iter().filter(|passed| !**passed).count();
                let state = match (hole, &output.build_errors) {
                    (Some(line), _) => State::NotStarted { line },
                    (None, Some(_)) => State::Unknown,
                    (None, None) if results.is_empty() && output.crashed => State::Unknown,
                    (None, None) if results.is_empty() => State::L1Only,
                    (None, None) if failed == 0 => State::Solved { passed: results.len() },
                    (None, None) => State::Failing { failed, total: results.len() },
                };
                Judged { exercise: exercise.clone(), state }
            })
            .collect();
        Report { stage: stage.number, exercises, output, elapsed }
    }

    pub fn solved(&self) -> usize {
        self.exercises.iter().filter(|e| e.state.solved()).count()
    }

    /// The first exercise still to work on, in id order.
    pub fn next(&self) -> Option<&Judged> {
        self.exercises.iter().find(|e| e.state.open())
    }

    /// The stage's lines: a heading with a bar and one line per exercise;
    /// cargo's errors if the stage does not compile.
    pub fn render(&self) -> String {
        let name = dir_name(self.stage);
        let (solved, total) = (self.solved(), self.exercises.len());
        if total == 0 {
            return format!("== stage {name}: no exercises\n");
        }
        let took = progress::elapsed_text(self.elapsed);
        let mut text = format!("== stage {name}  {}  {solved} of {total} {} solved ({took})\n", bar(solved, total), exercises(total));
        for judged in &self.exercises {
            text.push_str(&format!("  {:<9} {:<6} {}\n", mark(&judged.state), judged.exercise.id.to_string(), self.detail(judged)));
        }
        if let Some(errors) = &self.output.build_errors {
            text.push_str(&format!("  stage {name} does not compile, so its tests did not run; cargo said:\n"));
            for line in errors.iter().take(40) {
                text.push_str(&format!("      {line}\n"));
            }
            if errors.len() > 40 {
                text.push_str(&format!("      ... ({} more lines: `cargo xtask test-stage {}` shows them all)\n", errors.len() - 40, self.stage));
            }
        }
        text
    }

    fn detail(&self, judged: &Judged) -> String {
        let file = hint::hole_file(&judged.exercise);
        match &judged.state {
            State::Solved { passed: 1 } => "its test passes".into(),
            State::Solved { passed } => format!("its {passed} tests pass"),
            State::NotStarted { line } => format!("its todo!() is at {file}:{line}"),
            State::Failing { total: 1, .. } => format!("its test fails, in {file}"),
            State::Failing { failed, total } => format!("{failed} of its {total} tests fail, in {file}"),
            State::L1Only => format!("no host test: `cargo xtask test-stage {}` checks it in L1", self.stage),
            State::Unknown if self.output.build_errors.is_some() => format!("not tested: the stage does not compile ({file})"),
            State::Unknown => format!(
                "not known: its tests did not finish, in {file} (`cargo xtask test-stage {}` shows why)",
                self.stage
            ),
        }
    }

    /// What the failed tests of the exercises being worked on (hole filled,
    /// tests failing) printed: at most `per_test` lines of at most three
    /// tests each.
    pub fn failures(&self, per_test: usize) -> String {
        let failing = self.exercises.iter().filter(|e| matches!(e.state, State::Failing { .. }));
        failing.map(|judged| self.failures_of(judged.exercise.id, per_test)).collect()
    }

    /// What the first three failed tests of exercise `id` printed, at most
    /// `per_test` lines each, and how many more failed, if any.
    pub fn failures_of(&self, id: ExerciseId, per_test: usize) -> String {
        const SHOWN: usize = 3;
        let mut text = String::new();
        let failed: Vec<&String> =
            self.output.tests.iter().filter(|(name, passed)| !passed && exercise_of(name) == Some(id)).map(|(name, _)| name).collect();
        for name in failed.iter().take(SHOWN) {
            text.push_str(&format!("  {name}:\n"));
            for line in self.output.failures.get(*name).into_iter().flatten().take(per_test) {
                text.push_str(&format!("      {line}\n"));
            }
        }
        if let Some(more) = failed.len().checked_sub(SHOWN).filter(|&n| n > 0) {
            let tests = if more == 1 { "test" } else { "tests" };
            text.push_str(&format!(
                "  and {more} more failing {tests} of {id} (`cargo xtask test-stage {}` lists every test)\n",
                self.stage
            ));
        }
        text
    }
}

/// `exercise` or `exercises`, after a count.
fn exercises(count: usize) -> &'static str {
    if count == 1 { "exercise" } else { "exercises" }
}

/// `[####------]`: `done` of `total`, ten wide.
pub fn bar(done: usize, total: usize) -> String {
    let filled = (done * 10).checked_div(total).unwrap_or(10);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(10 - filled))
}

fn mark(state: &State) -> &'static str {
    match state {
        State::Solved { .. } => "solved",
        State::NotStarted { .. } => "todo",
        State::Failing { .. } => "FAILING",
        State::L1Only => "in L1",
        State::Unknown => "?",
    }
}

/// The closing lines of `progress`: the count over every stage reported
/// and what to do next.
pub fn summary(root: &Path, reports: &[Report]) -> String {
    let total: usize = reports.iter().map(|r| r.exercises.len()).sum();
    let solved: usize = reports.iter().map(Report::solved).sum();
    let stages = if reports.len() == 1 { "1 stage".to_string() } else { format!("{} stages", reports.len()) };
    format!("{solved} of {total} {} solved in {stages} {}\n{}", exercises(total), bar(solved, total), next_step(root, reports, false))
}

/// `next: ...`: the first exercise still open, where its hole is and the
/// commands to use; or, when all pass, the stage's tests in L1.
/// `watching`: said by `watch`, which need not suggest itself.
pub fn next_step(root: &Path, reports: &[Report], watching: bool) -> String {
    let Some((report, judged)) = reports.iter().find_map(|r| r.next().map(|j| (r, j))) else {
        let l1: Vec<String> = reports.iter().filter(|r| r.stage >= 3).map(|r| r.stage.to_string()).collect();
        return match l1.last() {
            Some(last) => format!(
                "every exercise here passes its host tests; `cargo xtask test-stage {last}` also runs stage {last}'s tests in L1\n"
            ),
            None => "every exercise here passes its tests\n".into(),
        };
    };
    let (id, stage) = (judged.exercise.id, report.stage);
    let what = match judged.state {
        State::Unknown if report.output.build_errors.is_some() => {
            format!("make stage {} compile again (cargo's errors are above), then {id}", dir_name(stage))
        }
        _ => format!("{id} {}", hint::hole_location(root, &judged.exercise)),
    };
    let watch = if watching { "" } else { ", `cargo xtask watch` to rerun its tests on every save" };
    format!(
        "next: {what}\n      `cargo xtask hint {id}` for its instruction and first hint{watch},\n      \
         then `cargo xtask test-stage {stage}` for all of stage {stage}'s tests{}\n",
        if stage >= 3 { " (host and L1)" } else { "" }
    )
}

/// The first of `reports` (in stage order) with an exercise still open.
pub fn current(reports: &[Report]) -> Option<u32> {
    reports.iter().find(|r| r.next().is_some()).map(|r| r.stage)
}

/// Whether standard output is a terminal (the status lines and `watch`'s
/// redraws are for one).
pub fn on_terminal() -> bool {
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "warning: unused variable: `x`
running 5 tests
test arch::svm::vmcb::tests::e7_1::packs_flat_code ... ok
test arch::svm::vmcb::tests::e7_1::packs_null ... ok
test arch::svm::exit::tests::e7_2::decodes ... FAILED
test arch::svm::exit::tests::e7_2::refuses ... ok
test arch::svm::exit::tests::e7_2::slow ... ignored, takes long

failures:

---- arch::svm::exit::tests::e7_2::decodes stdout ----

thread 'arch::svm::exit::tests::e7_2::decodes' (29799) panicked at stages/07-svm/src/arch/svm/exit.rs:68:5:
assertion `left == right` failed
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    arch::svm::exit::tests::e7_2::decodes

test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 20 filtered out; finished in 0.01s

running 1 test
test e7_3::integration ... ok
error: 1 target failed:
    `--lib`
";

    fn exercise(stage: u32, number: u32, file: &str) -> ExerciseHints {
        ExerciseHints {
            id: ExerciseId { stage, number },
            file: file.into(),
            instruction: vec!["Do it.".into()],
            hints: vec![vec!["Read the manual.".into()]],
        }
    }

    fn svm() -> Stage {
        Stage {
            number: 7,
            exercises: vec![
                exercise(7, 1, "src/arch/svm/vmcb.rs"),
                exercise(7, 2, "src/arch/svm/exit.rs"),
                exercise(7, 3, "src/arch/svm.rs"),
                exercise(7, 4, "src/arch/svm.rs"),
            ],
        }
    }

    #[test]
    fn test_results_are_read_with_what_failures_printed() {
        let output = TestOutput::parse(OUTPUT, false);
        let names: Vec<(&str, bool)> = output.tests.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        assert_eq!(
            names,
            [
                ("arch::svm::vmcb::tests::e7_1::packs_flat_code", true),
                ("arch::svm::vmcb::tests::e7_1::packs_null", true),
                ("arch::svm::exit::tests::e7_2::decodes", false),
                ("arch::svm::exit::tests::e7_2::refuses", true),
                ("e7_3::integration", true),
            ]
        );
        assert_eq!(
            output.failures["arch::svm::exit::tests::e7_2::decodes"],
            ["panicked at stages/07-svm/src/arch/svm/exit.rs:68:5:", "assertion `left == right` failed", "  left: 1", " right: 2"]
        );
        assert!(output.build_errors.is_none());
    }

    #[test]
    fn tests_belong_to_the_exercise_their_module_names() {
        assert_eq!(exercise_of("a::tests::e7_2::decodes"), Some(ExerciseId { stage: 7, number: 2 }));
        assert_eq!(exercise_of("e2_10::layout"), Some(ExerciseId { stage: 2, number: 10 }));
        assert_eq!(exercise_of("a::tests::e7_2_extra::decodes"), None);
        assert_eq!(exercise_of("a::tests::decodes_e7_2"), None);
    }

    #[test]
    fn each_exercise_is_judged_from_its_tests_and_its_hole() {
        let output = TestOutput::parse(OUTPUT, false);
        let report = Report::new(&svm(), output, vec![None, None, None, Some(40)], Duration::from_secs(3));
        let states: Vec<State> = report.exercises.iter().map(|e| e.state.clone()).collect();
        assert_eq!(
            states,
            [State::Solved { passed: 2 }, State::Failing { failed: 1, total: 2 }, State::Solved { passed: 1 }, State::NotStarted { line: 40 }]
        );
        assert_eq!(report.solved(), 2);
        assert_eq!(report.next().map(|j| j.exercise.id.to_string()), Some("E7.2".into()));
        let text = report.render();
        assert!(text.starts_with("== stage 07-svm  [#####-----]  2 of 4 exercises solved (3s)\n"), "{text}");
        assert!(text.contains("\n  solved    E7.1   its 2 tests pass\n"), "{text}");
        assert!(text.contains("\n  FAILING   E7.2   1 of its 2 tests fail, in stages/07-svm/src/arch/svm/exit.rs\n"), "{text}");
        assert!(text.contains("\n  todo      E7.4   its todo!() is at stages/07-svm/src/arch/svm.rs:40\n"), "{text}");
        let failures = report.failures(12);
        assert!(failures.starts_with("  arch::svm::exit::tests::e7_2::decodes:\n      panicked at stages/07-svm/"), "{failures}");
        assert!(failures.contains("       right: 2\n"), "{failures}");
    }

    #[test]
    fn past_three_failing_tests_the_rest_are_counted() {
        let failing = |n: usize| -> String {
            (1..=n).map(|i| format!("test a::e7_2::t{i} ... FAILED\n---- a::e7_2::t{i} stdout ----\nsaid {i}\n")).collect()
        };
        let report = |n| Report::new(&svm(), TestOutput::parse(&failing(n), false), vec![None; 4], Duration::ZERO);
        let e7_2 = ExerciseId { stage: 7, number: 2 };
        let text = report(5).failures_of(e7_2, 6);
        assert!(text.starts_with("  a::e7_2::t1:\n      said 1\n  a::e7_2::t2:\n      said 2\n  a::e7_2::t3:\n      said 3\n"), "{text}");
        assert!(!text.contains("t4") && !text.contains("said 5"), "{text}");
        assert!(text.ends_with("  and 2 more failing tests of E7.2 (`cargo xtask test-stage 7` lists every test)\n"), "{text}");
        assert!(report(4).failures(12).ends_with("  and 1 more failing test of E7.2 (`cargo xtask test-stage 7` lists every test)\n"));
        assert!(!report(3).failures_of(e7_2, 6).contains("more failing"));
    }

    #[test]
    fn an_exercise_without_host_tests_is_left_to_l1() {
        let report = Report::new(&svm(), TestOutput::parse("test a::e1_1::x ... FAILED\n", false), vec![None; 4], Duration::ZERO);
        assert!(report.exercises.iter().all(|e| e.state == State::L1Only));
        assert!(report.next().is_none());
        assert!(report.render().contains("  in L1     E7.1   no host test: `cargo xtask test-stage 7` checks it in L1\n"));
    }

    #[test]
    fn tests_that_never_reported_leave_their_exercise_unknown() {
        let text = "test e7_1::packs ... ok\nerror: test failed, to rerun pass `--lib`\n\nCaused by:\n  process didn't exit successfully: `/t/rkvm-0123` (signal: 6, SIGABRT: process abort signal)\n";
        let report = Report::new(&svm(), TestOutput::parse(text, false), vec![None; 4], Duration::ZERO);
        let states: Vec<State> = report.exercises.iter().map(|e| e.state.clone()).collect();
        assert_eq!(states, [State::Solved { passed: 1 }, State::Unknown, State::Unknown, State::Unknown]);
        assert!(report.render().contains("  ?         E7.2   not known: its tests did not finish, in stages/07-svm/src/arch/svm/exit.rs"), "{}", report.render());
        let next = next_step(Path::new("/nonexistent"), &[report], false);
        assert!(next.starts_with("next: E7.2 in stages/07-svm/src/arch/svm/exit.rs\n"), "{next}");
    }

    #[test]
    fn a_stage_that_does_not_compile_shows_cargos_errors() {
        let text = "   warning: unused\nerror[E0308]: mismatched types\n --> src/arch/svm/exit.rs:70:9\nerror: could not compile `rkvm-stage07` (lib test)\n";
        let output = TestOutput::parse(text, false);
        assert_eq!(output.build_errors.as_ref().map(Vec::len), Some(3));
        let report = Report::new(&svm(), output, vec![None, Some(9), None, None], Duration::ZERO);
        assert_eq!(report.exercises[0].state, State::Unknown);
        assert_eq!(report.exercises[1].state, State::NotStarted { line: 9 });
        let rendered = report.render();
        assert!(rendered.contains("does not compile, so its tests did not run; cargo said:\n      error[E0308]: mismatched types\n"), "{rendered}");
        let next = next_step(Path::new("/nonexistent"), &[report], false);
        assert!(next.starts_with("next: make stage 07-svm compile again (cargo's errors are above), then E7.1\n"), "{next}");
    }

    #[test]
    fn the_current_stage_is_the_first_with_work_left() {
        let done = |number| {
            let stage = Stage { number, exercises: vec![exercise(number, 1, "src/lib.rs")] };
            let output = TestOutput::parse(&format!("test e{number}_1::works ... ok\n"), true);
            Report::new(&stage, output, vec![None], Duration::ZERO)
        };
        let open = |number| {
            let stage = Stage { number, exercises: vec![exercise(number, 1, "src/lib.rs")] };
            Report::new(&stage, TestOutput::parse("", true), vec![Some(3)], Duration::ZERO)
        };
        assert_eq!(current(&[done(1), open(2), open(3)]), Some(2));
        assert_eq!(current(&[done(1), done(2)]), None);
        assert_eq!(current(&[]), None);
        let all = summary(Path::new("/nonexistent"), &[done(1), done(4)]);
        assert!(all.starts_with("2 of 2 exercises solved in 2 stages [##########]\nevery exercise here passes its host tests; `cargo xtask test-stage 4`"), "{all}");
        let next = summary(Path::new("/nonexistent"), &[done(1), open(2)]);
        assert!(next.contains("\nnext: E2.1 in stages/02-abi/src/lib.rs\n"), "{next}");
        assert!(next.contains("`cargo xtask hint E2.1`"), "{next}");
        assert!(next.contains("then `cargo xtask test-stage 2` for all of stage 2's tests\n"), "{next}");
    }

    #[test]
    fn a_handout_reports_on_its_own_stage_unless_told() {
        let twelve: Vec<u32> = (1..=12).collect();
        // A handout: its own stage, the last it holds; `--all` for every
        // stage, `--stage N` for one.
        assert_eq!(chosen(None, false, true, &twelve), Some(12));
        assert_eq!(chosen(None, true, true, &twelve), None);
        assert_eq!(chosen(Some(3), false, true, &twelve), Some(3));
        assert_eq!(chosen(None, false, true, &[]), None, "no stage at all: `stages` says so");
        // The full repository: every stage, as before.
        let all: Vec<u32> = (1..=LAST_STAGE).collect();
        assert_eq!(chosen(None, false, false, &all), None);
        assert_eq!(chosen(None, true, false, &all), None);
        assert_eq!(chosen(Some(12), false, false, &all), Some(12));

        let note = handout_note(Some(12), &twelve);
        assert_eq!(
            note,
            "this is stage 12's handout, so `progress` reports on stage 12; \
             `cargo xtask progress --all` reports on stages 01 to 12, `--stage N` on one\n"
        );
        assert_eq!(handout_note(Some(1), &[1]), "", "a stage 01 handout has no other stage");
        assert_eq!(handout_note(None, &all), "", "every stage is reported");
    }

    #[test]
    fn a_tree_without_kmod_is_a_handout() {
        let root = std::env::temp_dir().join(format!("rkvm-progress-handout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for stage in [1, 2, 12] {
            std::fs::create_dir_all(root.join("stages").join(dir_name(stage))).unwrap();
        }
        let course = Course { root: root.clone(), target: root.join("target/progress") };
        assert_eq!(course.present(), [1, 2, 12]);
        assert!(course.is_handout());
        assert_eq!(course.default_stage(), Some(12));
        std::fs::create_dir_all(root.join("kmod")).unwrap();
        assert!(!course.is_handout());
        assert_eq!(course.default_stage(), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bars_fill_by_tenths() {
        assert_eq!(bar(0, 5), "[----------]");
        assert_eq!(bar(2, 5), "[####------]");
        assert_eq!(bar(5, 5), "[##########]");
        assert_eq!(bar(0, 0), "[##########]");
    }

    /// A reader's tree: a tiny stage crate with two exercises, one solved
    /// and one still a hole, its `HINTS.md`, and no `kmod/` or `solutions/`;
    /// its tests really run.
    #[test]
    fn a_tree_without_kmod_or_solutions_reports_its_exercises() {
        let root = std::env::temp_dir().join(format!("rkvm-progress-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let stage = root.join("stages/07-svm");
        std::fs::create_dir_all(stage.join("src")).unwrap();
        std::fs::write(
            stage.join("Cargo.toml"),
            "[package]\nname = \"rkvm-stage07\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\nname = \"rkvm\"\n\n[workspace]\n",
        )
        .unwrap();
        let lib = "pub fn pack() -> u16 {\n    3\n}\n\npub fn decode() -> u16 {\n    // Exercise E7.2.\n    todo!(\"E7.2\")\n}\n\n\
                   #[cfg(test)]\nmod tests {\n    mod e7_1 {\n        #[test]\n        fn packs() {\n            assert_eq!(crate::pack(), 3);\n        }\n    }\n\
                   \n    mod e7_2 {\n        #[test]\n        fn decodes() {\n            assert_eq!(crate::decode(), 2);\n        }\n    }\n\n\
                   \n    #[test]\n    fn other() {}\n}\n";
        std::fs::write(stage.join("src/lib.rs"), lib).unwrap();
        let exercises = [exercise(7, 1, "src/lib.rs"), exercise(7, 2, "src/lib.rs")];
        std::fs::write(stage.join(crate::stages::hints::FILE), crate::stages::hints::render(7, &exercises)).unwrap();
        assert!(!root.join("kmod").exists() && !root.join("solutions").exists());

        let course = Course { root: root.clone(), target: root.join("target/progress") };
        let stages = course.stages(None).unwrap();
        assert_eq!(stages.len(), 1);
        assert_eq!(format!("{:#}", course.stages(Some(3)).unwrap_err()), "stages/03-device/ is not in this tree; the stages in this tree are 07");
        let report = course.check(&stages[0]).unwrap();
        assert_eq!(report.exercises[0].state, State::Solved { passed: 1 });
        assert_eq!(report.exercises[1].state, State::NotStarted { line: 7 });
        let text = summary(&root, std::slice::from_ref(&report));
        assert!(text.starts_with("1 of 2 exercises solved in 1 stage [#####-----]\nnext: E7.2 at stages/07-svm/src/lib.rs:7\n"), "{text}");

        // Filled in wrongly, then rightly.
        std::fs::write(stage.join("src/lib.rs"), lib.replace("todo!(\"E7.2\")", "1")).unwrap();
        let report = course.check(&stages[0]).unwrap();
        assert_eq!(report.exercises[1].state, State::Failing { failed: 1, total: 1 });
        assert!(report.failures(12).contains("  left: 1\n"), "{}", report.failures(12));
        std::fs::write(stage.join("src/lib.rs"), lib.replace("todo!(\"E7.2\")", "2")).unwrap();
        let report = course.check(&stages[0]).unwrap();
        assert_eq!(report.exercises[1].state, State::Solved { passed: 1 });
        assert_eq!(current(&[report]), None);

        // A compile error is reported, not taken for failing tests.
        std::fs::write(stage.join("src/lib.rs"), lib.replace("todo!(\"E7.2\")", "\"two\"")).unwrap();
        let report = course.check(&stages[0]).unwrap();
        assert_eq!(report.exercises[1].state, State::Unknown);
        assert!(report.render().contains("error[E0308]"), "{}", report.render());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
