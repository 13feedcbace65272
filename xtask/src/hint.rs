//! `cargo xtask hint EN.k [--more]`: an exercise's instruction and its
//! hints, one at a time.
//!
//! Everything comes from the stage crate itself: its `HINTS.md` (generated
//! with the stage, see `stages/hints.rs`) and the hole in its source. So
//! the command works in a reader's tree that has neither `kmod/` nor
//! `solutions/`. `hint EN.k` prints the instruction and the first hint;
//! each `hint EN.k --more` prints the next one. The last hint reached is
//! kept per exercise in `target/hints-shown`.

use crate::paths;
use crate::stages::hints::{self, ExerciseHints};
use crate::stages::{ExerciseId, LAST_STAGE, dir_name};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The exercise, for example E7.1.
    pub id: String,
    /// Show the next hint after the last one shown.
    #[arg(long)]
    pub more: bool,
}

pub fn run(args: Args) -> Result<()> {
    print!("{}", show(&paths::root(), &state_file(), &args.id, args.more)?);
    Ok(())
}

/// Where the last hint shown of each exercise is remembered.
fn state_file() -> PathBuf {
    paths::target().join("hints-shown")
}

/// Every exercise of the stage crates in the tree under `root`, in id order.
pub fn all(root: &Path) -> Result<Vec<ExerciseHints>> {
    let mut all = Vec::new();
    for stage in 1..=LAST_STAGE {
        let path = hints_path(root, stage);
        if path.is_file() {
            all.extend(read(root, &path)?);
        }
    }
    Ok(all)
}

fn hints_path(root: &Path, stage: u32) -> PathBuf {
    root.join("stages").join(dir_name(stage)).join(hints::FILE)
}

fn read(root: &Path, path: &Path) -> Result<Vec<ExerciseHints>> {
    let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    hints::parse(&name, &text)
}

/// The text `hint` prints for exercise `text` (`E7.1`), with `more` the
/// next hint; records the hint shown in `state`.
pub fn show(root: &Path, state: &Path, text: &str, more: bool) -> Result<String> {
    let exercise = find(root, text)?;
    let id = exercise.id;
    let count = exercise.hints.len();
    let before = shown(state, id);
    let level = if more { (before + 1).min(count) } else { 1 };
    remember(state, id, level)?;
    if !more {
        return Ok(describe(&exercise, &hole_location(root, &exercise)));
    }
    let heading = match (before >= count, count) {
        (false, _) => format!("Exercise {id}, hint {level} of {count}:"),
        (true, 1) => format!("Exercise {id} has one hint only:"),
        (true, _) => format!("Exercise {id} has no more hints; the last, hint {count} of {count}:"),
    };
    Ok(format!("{heading}\n{}\n{}", indented(&exercise.hints[level - 1]), after_hint(id, level, count)))
}

/// The exercise named `text`, read from its stage's `HINTS.md`, or an error
/// that says what this tree does have.
fn find(root: &Path, text: &str) -> Result<ExerciseHints> {
    let Some(id) = ExerciseId::parse(text) else {
        bail!("`{text}` is not an exercise id: ids look like E7.1. {}", known(root));
    };
    if !(1..=LAST_STAGE).contains(&id.stage) {
        bail!("there is no stage {}: stages are 1 to {LAST_STAGE}. {}", id.stage, known(root));
    }
    let dir = format!("stages/{}", dir_name(id.stage));
    if !root.join(&dir).is_dir() {
        bail!("{dir}/ is not in this tree, so neither is exercise {id}. {}", known(root));
    }
    let path = hints_path(root, id.stage);
    if !path.is_file() {
        bail!("stage {:02} has no exercises ({dir}/ has no {}). {}", id.stage, hints::FILE, known(root));
    }
    let exercises = read(root, &path)?;
    let ids: Vec<String> = exercises.iter().map(|e| e.id.to_string()).collect();
    match exercises.into_iter().find(|e| e.id == id) {
        Some(exercise) => Ok(exercise),
        None => bail!("stage {:02} has no exercise {id}; its exercises are {}", id.stage, ids.join(", ")),
    }
}

/// `The exercises in this tree are ...`, for error messages.
fn known(root: &Path) -> String {
    match all(root) {
        Ok(all) if !all.is_empty() => {
            let ids: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
            format!("The exercises in this tree are {}.", ids.join(", "))
        }
        _ => "This tree has no stage with exercises under stages/.".into(),
    }
}

/// Where the exercise's hole is: `stages/NN-slug/FILE:LINE`, or only the
/// file once the reader has replaced the `todo!()`.
pub fn hole_location(root: &Path, exercise: &ExerciseHints) -> String {
    let path = hole_file(exercise);
    match hole_line(root, exercise) {
        Some(line) => format!("at {path}:{line}"),
        None => format!("in {path}"),
    }
}

/// `stages/NN-slug/FILE`: the file of the exercise's hole.
pub fn hole_file(exercise: &ExerciseHints) -> String {
    format!("stages/{}/{}", dir_name(exercise.id.stage), exercise.file)
}

/// The line (from 1) of the exercise's `todo!()`, or `None` once the reader
/// has replaced it.
pub fn hole_line(root: &Path, exercise: &ExerciseHints) -> Option<usize> {
    let text = std::fs::read_to_string(root.join(hole_file(exercise))).unwrap_or_default();
    let marks = [format!("todo!(\"{}\")", exercise.id), format!("not yet implemented: {}\"", exercise.id)];
    text.lines().position(|l| marks.iter().any(|m| l.contains(m.as_str()))).map(|line| line + 1)
}

/// What `hint EN.k` prints: where, the instruction, the first hint, and
/// what to do next.
fn describe(exercise: &ExerciseHints, location: &str) -> String {
    let (id, count) = (exercise.id, exercise.hints.len());
    format!(
        "Exercise {id}, stage {}, {location}\n\nInstruction:\n{}\nHint 1 of {count}:\n{}\n{}\
         Its tests are in the `{module}` test modules: `cargo xtask progress --stage {stage}` runs them on the host \
         (`cargo xtask watch --stage {stage}`: at every save), and `cargo xtask test-stage {stage}` runs every test \
         of the stage.\n",
        dir_name(id.stage),
        indented(&exercise.instruction),
        indented(&exercise.hints[0]),
        after_hint(id, 1, count),
        module = id.test_module(),
        stage = id.stage
    )
}

/// The line after hint `level`: how to get the next one, if any.
fn after_hint(id: ExerciseId, level: usize, count: usize) -> String {
    match (level < count, count) {
        (true, _) => format!("`cargo xtask hint {id} --more` shows hint {} of {count}.\n", level + 1),
        (false, 1) => String::new(),
        (false, _) => "That was the last hint: it is nearly the answer.\n".into(),
    }
}

fn indented(lines: &[String]) -> String {
    lines.iter().map(|l| if l.is_empty() { "\n".to_string() } else { format!("    {l}\n") }).collect()
}

/// The last hint shown of `id` (1 if none was).
fn shown(state: &Path, id: ExerciseId) -> usize {
    let text = std::fs::read_to_string(state).unwrap_or_default();
    let key = id.to_string();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(1)
}

fn remember(state: &Path, id: ExerciseId, level: usize) -> Result<()> {
    let key = id.to_string();
    let text = std::fs::read_to_string(state).unwrap_or_default();
    let mut lines: Vec<String> =
        text.lines().filter(|l| l.split_once(' ').is_none_or(|(k, _)| k != key)).map(str::to_string).collect();
    lines.push(format!("{key} {level}"));
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(state, lines.join("\n") + "\n").with_context(|| format!("writing {}", state.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader's tree: one stage crate with a hole and its `HINTS.md`, and
    /// no `kmod/` or `solutions/`.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let root = std::env::temp_dir().join(format!("rkvm-hint-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let stage = root.join("stages/07-svm");
            std::fs::create_dir_all(stage.join("src")).unwrap();
            std::fs::write(stage.join("src/vmcb.rs"), "fn pack() -> u16 {\n    // Exercise E7.1.\n    todo!(\"E7.1\")\n}\n")
                .unwrap();
            let exercises = [
                ExerciseHints {
                    id: ExerciseId { stage: 7, number: 1 },
                    file: "src/vmcb.rs".into(),
                    instruction: vec!["Pack the attributes.".into()],
                    hints: vec![vec!["APM 15.5.1.".into()], vec!["Bits 40-47,".into(), "moved down.".into()]],
                },
                ExerciseHints {
                    id: ExerciseId { stage: 7, number: 2 },
                    file: "src/exit.rs".into(),
                    instruction: vec!["Decode it.".into()],
                    hints: vec![vec!["Shift, then mask.".into()]],
                },
            ];
            std::fs::write(stage.join(hints::FILE), hints::render(7, &exercises)).unwrap();
            Tree(root)
        }

        fn hint(&self, id: &str, more: bool) -> Result<String> {
            show(&self.0, &self.0.join("target/hints-shown"), id, more)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_first_hint_comes_with_the_instruction_and_the_hole() {
        let tree = Tree::new("first");
        assert!(!tree.0.join("kmod").exists() && !tree.0.join("solutions").exists());
        let text = tree.hint("e7.1", false).unwrap();
        assert!(text.starts_with("Exercise E7.1, stage 07-svm, at stages/07-svm/src/vmcb.rs:3\n"), "{text}");
        assert!(text.contains("\nInstruction:\n    Pack the attributes.\n\nHint 1 of 2:\n    APM 15.5.1.\n"), "{text}");
        assert!(!text.contains("Bits 40-47"), "{text}");
        assert!(text.contains("`cargo xtask hint E7.1 --more` shows hint 2 of 2."), "{text}");
        assert!(text.contains("`e7_1` test modules: `cargo xtask progress --stage 7` runs them"), "{text}");
    }

    #[test]
    fn more_shows_the_next_hint_until_the_last() {
        let tree = Tree::new("more");
        tree.hint("E7.1", false).unwrap();
        let second = tree.hint("E7.1", true).unwrap();
        assert_eq!(second, "Exercise E7.1, hint 2 of 2:\n    Bits 40-47,\n    moved down.\n\nThat was the last hint: it is nearly the answer.\n");
        let again = tree.hint("E7.1", true).unwrap();
        assert!(again.starts_with("Exercise E7.1 has no more hints; the last, hint 2 of 2:\n    Bits 40-47,"), "{again}");
        // Each exercise keeps its own place; asking again starts over.
        assert!(tree.hint("E7.2", true).unwrap().starts_with("Exercise E7.2 has one hint only:\n    Shift, then mask."));
        assert!(tree.hint("E7.1", false).unwrap().contains("Hint 1 of 2:"));
        assert!(tree.hint("E7.1", true).unwrap().starts_with("Exercise E7.1, hint 2 of 2:"));
    }

    #[test]
    fn a_solved_hole_still_names_its_file() {
        let tree = Tree::new("solved");
        std::fs::write(tree.0.join("stages/07-svm/src/vmcb.rs"), "fn pack() -> u16 { 0 }\n").unwrap();
        assert!(tree.hint("E7.1", false).unwrap().starts_with("Exercise E7.1, stage 07-svm, in stages/07-svm/src/vmcb.rs\n"));
    }

    #[test]
    fn errors_say_what_the_tree_has() {
        let tree = Tree::new("errors");
        let err = |id: &str| format!("{:#}", tree.hint(id, false).unwrap_err());
        assert_eq!(err("E7.9"), "stage 07 has no exercise E7.9; its exercises are E7.1, E7.2");
        assert!(err("E3.1").starts_with("stages/03-device/ is not in this tree, so neither is exercise E3.1."));
        assert!(err("E3.1").ends_with("The exercises in this tree are E7.1, E7.2."));
        assert!(err("hello").starts_with("`hello` is not an exercise id"));
        assert!(err("E14.1").starts_with("there is no stage 14"));
        std::fs::create_dir_all(tree.0.join("stages/01-segments")).unwrap();
        assert!(err("E1.1").starts_with("stage 01 has no exercises (stages/01-segments/ has no HINTS.md)."));
    }

    /// A reader's tree made from this checkout's own `stages/` alone: every
    /// exercise's instruction, hints and hole are found there.
    #[test]
    fn every_exercise_of_this_checkout_has_its_hints_in_the_stages_alone() {
        let tree = Tree::new("checkout");
        std::fs::remove_dir_all(tree.0.join("stages")).unwrap();
        crate::test_stage::copy_tree(&paths::root().join("stages"), &tree.0.join("stages")).unwrap();
        let all = all(&tree.0).unwrap();
        assert!(all.len() >= 20, "{} exercises", all.len());
        for exercise in &all {
            let id = exercise.id.to_string();
            let text = tree.hint(&id, false).unwrap();
            assert!(text.starts_with(&format!("Exercise {id}, stage {}, at stages/", dir_name(exercise.id.stage))), "{text}");
            assert!(text.contains("\nHint 1 of "), "{text}");
            let count = exercise.hints.len();
            for _ in 1..count {
                assert!(tree.hint(&id, true).unwrap().starts_with(&format!("Exercise {id}, hint ")));
            }
            assert!(!tree.hint(&id, true).unwrap().contains("--more"), "{id}: hint {count} is the last");
        }
    }
}
