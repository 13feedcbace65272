//! Running `cargo test` on one crate and reading libtest's plain output.
//!
//! libtest's machine-readable output is unstable, so this reads the stable
//! human one: a `Running <target>` or `Doc-tests` line from cargo per test
//! binary, a `test <name> ... ok|FAILED|ignored` line per test, and a
//! `---- <name> stdout ----` block per failure. Cargo's stderr and stdout go
//! through one pipe so those lines arrive in order.

use crate::stages::ExerciseId;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// How one test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
}

/// One test of one test binary.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// The test binary: `src/lib.rs`, `tests/abi.rs`, or `doc-tests`.
    pub binary: String,
    /// The test's path inside its binary, for example `segments::e1_2::encodes`.
    pub name: String,
    pub outcome: Outcome,
    /// What a failed test printed (its panic message).
    pub output: Vec<String>,
}

impl TestResult {
    /// The exercise whose test module (`eN_k`) holds this test, if any.
    pub fn exercise(&self) -> Option<ExerciseId> {
        self.name
            .split("::")
            .filter(|part| part.starts_with('e'))
            .find_map(|part| ExerciseId::parse(part).filter(|id| id.test_module() == part))
    }

    /// The name shown to the reader: the binary is named unless it is the
    /// library's own unit tests.
    pub fn display_name(&self) -> String {
        match self.binary.as_str() {
            "src/lib.rs" => self.name.clone(),
            binary => format!("{binary}: {}", self.name),
        }
    }
}

/// What one `cargo test` run did.
#[derive(Debug, Default)]
pub struct Run {
    pub tests: Vec<TestResult>,
    /// False if cargo stopped on a compile error: then no test ran.
    pub compiled: bool,
    /// Every line cargo and the tests printed, for diagnosis.
    pub log: Vec<String>,
}

impl Run {
    pub fn count(&self, outcome: Outcome) -> u32 {
        self.tests.iter().filter(|t| t.outcome == outcome).count() as u32
    }
}

/// Runs `command` (a `cargo test` invocation), calling `on_test` as each
/// test finishes. Until the first test binary starts, cargo's own output
/// (compilation, warnings, errors) is echoed if `echo_build` is set.
pub fn run(mut command: Command, echo_build: bool, mut on_test: impl FnMut(&TestResult)) -> Result<Run> {
    let (reader, writer) = std::io::pipe().context("creating a pipe for cargo's output")?;
    command
        .env("CARGO_TERM_COLOR", "never")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("duplicating the pipe")?)
        .stderr(writer);
    let mut child = command.spawn().with_context(|| format!("running {command:?}: is cargo on PATH?"))?;
    drop(command);
    let mut parser = Parser::default();
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading cargo test's output")?;
        let result = parser.line(&line);
        if echo_build && !parser.testing && !line.trim().is_empty() {
            println!("{line}");
        }
        if let Some(result) = result {
            on_test(&result);
        }
    }
    child.wait().context("waiting for cargo test")?;
    Ok(parser.finish())
}

/// The reading of cargo test's output, line by line.
#[derive(Default)]
struct Parser {
    run: Run,
    binary: String,
    /// Set at the first test binary: from then on lines are libtest's.
    testing: bool,
    /// The failed test whose output is being read: (binary, name).
    capturing: Option<(String, String)>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Option<TestResult> {
        self.run.log.push(line.to_string());
        let trimmed = line.trim_start();
        if let Some(target) = trimmed.strip_prefix("Running ") {
            self.start_binary(target.strip_prefix("unittests ").unwrap_or(target));
        } else if trimmed.starts_with("Doc-tests ") {
            self.start_binary("doc-tests");
        } else if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.capturing = Some((self.binary.clone(), name.to_string()));
        } else if line == "failures:" || line.starts_with("test result: ") {
            self.capturing = None;
        } else if let Some(result) = self.test_line(line) {
            self.run.tests.push(result.clone());
            return Some(result);
        } else if let Some(key) = &self.capturing {
            let test = self.run.tests.iter_mut().rev().find(|t| (&t.binary, &t.name) == (&key.0, &key.1));
            if let Some(test) = test.filter(|_| !line.starts_with("note: run with `RUST_BACKTRACE")) {
                test.output.push(line.to_string());
            }
        }
        None
    }

    fn start_binary(&mut self, target: &str) {
        self.testing = true;
        self.capturing = None;
        self.binary = target.split(" (").next().unwrap_or(target).to_string();
    }

    /// `test <name> ... <result>`, as libtest prints it.
    fn test_line(&self, line: &str) -> Option<TestResult> {
        let (name, result) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
        let outcome = match result {
            "ok" => Outcome::Passed,
            "FAILED" => Outcome::Failed,
            r if r.starts_with("ignored") => Outcome::Ignored,
            _ => return None,
        };
        Some(TestResult { binary: self.binary.clone(), name: name.to_string(), outcome, output: Vec::new() })
    }

    fn finish(mut self) -> Run {
        self.run.compiled = !self.run.log.iter().any(|l| l.starts_with("error: could not compile"));
        for test in &mut self.run.tests {
            while test.output.last().is_some_and(|l| l.trim().is_empty()) {
                test.output.pop();
            }
            while test.output.first().is_some_and(|l| l.trim().is_empty()) {
                test.output.remove(0);
            }
        }
        self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "   Compiling rkvm-stage01 v0.1.0 (/r/stages/01-segments)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.50s
     Running unittests src/lib.rs (target/debug/deps/rkvm-0123)

running 3 tests
test segments::tests::null ... ok
test segments::e1_2::encodes ... FAILED
test segments::tests::slow ... ignored, takes long

failures:

---- segments::e1_2::encodes stdout ----

thread 'segments::e1_2::encodes' panicked at src/segments.rs:40:5:
not yet implemented: E1.2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    segments::e1_2::encodes

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/abi.rs (target/debug/deps/abi-4567)

running 1 test
test e2_10::layout ... ok

   Doc-tests rkvm

running 1 test
test src/segments.rs - segments::Selector (line 12) ... ok

error: 1 target failed:
    `-p rkvm-stage01 --lib`
";

    fn parse(text: &str) -> Run {
        let mut parser = Parser::default();
        text.lines().for_each(|l| {
            parser.line(l);
        });
        parser.finish()
    }

    #[test]
    fn reads_each_test_with_its_binary_and_outcome() {
        let run = parse(OUTPUT);
        let seen: Vec<(&str, &str, Outcome)> =
            run.tests.iter().map(|t| (t.binary.as_str(), t.name.as_str(), t.outcome)).collect();
        assert_eq!(
            seen,
            [
                ("src/lib.rs", "segments::tests::null", Outcome::Passed),
                ("src/lib.rs", "segments::e1_2::encodes", Outcome::Failed),
                ("src/lib.rs", "segments::tests::slow", Outcome::Ignored),
                ("tests/abi.rs", "e2_10::layout", Outcome::Passed),
                ("doc-tests", "src/segments.rs - segments::Selector (line 12)", Outcome::Passed),
            ]
        );
        assert!(run.compiled);
        assert_eq!((run.count(Outcome::Passed), run.count(Outcome::Failed)), (3, 1));
    }

    #[test]
    fn keeps_what_a_failed_test_printed() {
        let run = parse(OUTPUT);
        assert_eq!(
            run.tests[1].output,
            ["thread 'segments::e1_2::encodes' panicked at src/segments.rs:40:5:", "not yet implemented: E1.2"]
        );
        assert!(run.tests[0].output.is_empty());
    }

    #[test]
    fn finds_the_exercise_of_a_test_by_its_module() {
        let run = parse(OUTPUT);
        let ids: Vec<Option<String>> = run.tests.iter().map(|t| t.exercise().map(|e| e.to_string())).collect();
        assert_eq!(ids, [None, Some("E1.2".into()), None, Some("E2.10".into()), None]);
        assert_eq!(run.tests[3].display_name(), "tests/abi.rs: e2_10::layout");
        assert_eq!(run.tests[1].display_name(), "segments::e1_2::encodes");
    }

    #[test]
    fn a_compile_error_is_noticed() {
        let run = parse("error[E0425]: cannot find value `x`\nerror: could not compile `rkvm-stage01` (lib)\n");
        assert!(!run.compiled);
        assert!(run.tests.is_empty());
    }
}
