//! Judging one stage's test results against its exercises: pure functions
//! of a finished `cargo test` run, so they are tested on made-up runs.

use crate::stages::ExerciseId;
use crate::test_stage::{Outcome, Run, TestResult};
use std::collections::BTreeMap;

/// The verdict on a stage's skeleton.
pub struct Judgement {
    pub summary: String,
    pub violations: Vec<String>,
}

/// Judges the skeleton of stage `stage`: it compiles; each of the stage's
/// exercises has tests and all of them fail; every other test passes; no
/// test is ignored and no test module names an exercise that does not
/// exist. `all` is every exercise of the course.
pub fn skeleton(stage: u32, all: &[ExerciseId], run: &Run) -> Judgement {
    if !run.compiled {
        let summary = "does not compile".to_string();
        return Judgement { summary, violations: vec![compile_error(run)] };
    }
    let mut violations = Vec::new();
    let mut tests_of: BTreeMap<ExerciseId, u32> =
        all.iter().filter(|id| id.stage == stage).map(|id| (*id, 0)).collect();
    let mut others = 0;
    for test in &run.tests {
        match judge_test(stage, all, test) {
            Ok(Some(id)) => *tests_of.entry(id).or_default() += 1,
            Ok(None) => others += 1,
            Err(violation) => violations.push(violation),
        }
    }
    for (id, count) in &tests_of {
        if *count == 0 {
            violations.push(format!("exercise {id} has no test: add one in a test module named `{}`", id.test_module()));
        }
    }
    let exercises: Vec<String> = tests_of.iter().map(|(id, n)| format!("{id} ({n} failing)")).collect();
    let summary = match exercises.is_empty() {
        true => format!("compiles; no exercises; {others} tests pass"),
        false => format!("compiles; {}; {others} other tests pass", exercises.join(", ")),
    };
    Judgement { summary, violations }
}

/// One skeleton test: `Ok(Some(id))` if it is a (failing) test of this
/// stage's exercise `id`, `Ok(None)` if it is another (passing) test, and
/// `Err` naming what is wrong otherwise.
fn judge_test(stage: u32, all: &[ExerciseId], test: &TestResult) -> Result<Option<ExerciseId>, String> {
    let name = test.display_name();
    if test.outcome == Outcome::Ignored {
        return Err(format!("test `{name}` is ignored; every test must run"));
    }
    let failed = test.outcome == Outcome::Failed;
    match test.exercise() {
        Some(id) if !all.contains(&id) => Err(format!("test `{name}` is in module `{}`, but there is no exercise {id}", id.test_module())),
        Some(id) if id.stage == stage && !failed => {
            Err(format!("test `{name}` of exercise {id} passes on the skeleton: it does not test the exercise"))
        }
        Some(id) if id.stage == stage => Ok(Some(id)),
        Some(id) if failed => Err(format!("test `{name}` of exercise {id}, solved in this stage, fails")),
        _ if failed => Err(format!("test `{name}` fails on the skeleton but belongs to no exercise of this stage")),
        _ => Ok(None),
    }
}

/// Judges a stage with its solutions in place: everything compiles and
/// passes. Returns a summary and the violations.
pub fn solution(run: &Run) -> (String, Vec<String>) {
    if !run.compiled {
        return ("does not compile".into(), vec![compile_error(run)]);
    }
    let failed: Vec<String> = run
        .tests
        .iter()
        .filter(|t| t.outcome != Outcome::Passed)
        .map(|t| format!("test `{}` does not pass", t.display_name()))
        .collect();
    let summary = format!("{} of {} tests pass", run.count(Outcome::Passed), run.tests.len());
    (summary, failed)
}

/// A compile failure, with the first error cargo printed.
fn compile_error(run: &Run) -> String {
    let first = run.log.iter().find(|l| l.starts_with("error")).map_or("", String::as_str);
    format!("does not compile: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(stage: u32, number: u32) -> ExerciseId {
        ExerciseId { stage, number }
    }

    fn run(tests: &[(&str, Outcome)]) -> Run {
        let tests = tests
            .iter()
            .map(|(name, outcome)| TestResult {
                binary: "src/lib.rs".into(),
                name: name.to_string(),
                outcome: *outcome,
                output: Vec::new(),
            })
            .collect();
        Run { tests, compiled: true, log: Vec::new() }
    }

    use Outcome::{Failed, Ignored, Passed};

    #[test]
    fn an_honest_skeleton_has_no_violations() {
        let all = [id(1, 1), id(2, 1), id(2, 2)];
        let r = run(&[("a::e1_1::x", Passed), ("b::e2_1::y", Failed), ("b::e2_2::z", Failed), ("b::tests::w", Passed)]);
        let judged = skeleton(2, &all, &r);
        assert!(judged.violations.is_empty(), "{:?}", judged.violations);
        assert_eq!(judged.summary, "compiles; E2.1 (1 failing), E2.2 (1 failing); 2 other tests pass");
    }

    #[test]
    fn names_every_kind_of_dishonest_test() {
        let all = [id(1, 1), id(2, 1), id(2, 2)];
        let r = run(&[
            ("a::e1_1::x", Failed),
            ("b::e2_1::y", Passed),
            ("b::e2_9::z", Failed),
            ("b::tests::w", Failed),
            ("b::tests::v", Ignored),
        ]);
        let v = skeleton(2, &all, &r).violations.join("\n");
        assert!(v.contains("`a::e1_1::x` of exercise E1.1, solved in this stage, fails"), "{v}");
        assert!(v.contains("`b::e2_1::y` of exercise E2.1 passes on the skeleton"), "{v}");
        assert!(v.contains("module `e2_9`, but there is no exercise E2.9"), "{v}");
        assert!(v.contains("`b::tests::w` fails on the skeleton but belongs to no exercise"), "{v}");
        assert!(v.contains("`b::tests::v` is ignored"), "{v}");
        assert!(v.contains("exercise E2.2 has no test: add one in a test module named `e2_2`"), "{v}");
    }

    #[test]
    fn a_skeleton_that_does_not_compile_is_a_violation() {
        let mut r = run(&[]);
        r.compiled = false;
        r.log = vec!["   Compiling x".into(), "error[E0425]: cannot find value `y`".into()];
        let judged = skeleton(1, &[], &r);
        assert_eq!(judged.violations, ["does not compile: error[E0425]: cannot find value `y`"]);
    }

    #[test]
    fn a_solution_must_pass_everything() {
        let (summary, v) = solution(&run(&[("a::e1_1::x", Passed), ("b", Failed)]));
        assert_eq!(summary, "1 of 2 tests pass");
        assert_eq!(v, ["test `b` does not pass"]);
        assert!(solution(&run(&[("a", Passed)])).1.is_empty());
    }
}
