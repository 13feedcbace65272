//! Projection: the text one parsed file has in one stage.
//!
//! A stage keeps the lines of every region whose range contains it. An
//! exercise of an earlier stage appears solved; an exercise of the stage
//! itself becomes, in the skeleton, a `todo!()` under its instruction and
//! a pointer to its hints (which `hints.rs` writes to the stage's
//! `HINTS.md`). Marker lines never appear; mdBook `ANCHOR` lines are plain
//! lines and pass through.

use super::marker::{Exercise, Node, SourceFile};

/// Which form a stage's own exercises take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The reader's starting point: exercises are `todo!()` holes.
    Skeleton,
    /// Every exercise solved: the text of `solutions/`.
    Solved,
}

/// The lines `file` has in `stage`, or `None` if the file does not exist
/// there yet. The generated-file header is not included.
pub fn project(file: &SourceFile, stage: u32, form: Form) -> Option<Vec<String>> {
    if stage < file.stage {
        return None;
    }
    let mut out = Output::default();
    out.nodes(&file.body, stage, form);
    out.lines.truncate(out.lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1));
    Some(out.lines)
}

/// The exercises of `file` that belong to `stage` itself.
pub fn exercises_of(file: &SourceFile, stage: u32) -> Vec<&Exercise> {
    let mut found = Vec::new();
    collect(&file.body, stage, &mut found);
    found
}

fn collect<'a>(nodes: &'a [Node], stage: u32, found: &mut Vec<&'a Exercise>) {
    for node in nodes {
        match node {
            Node::Line(_) => {}
            Node::Region { range, body } if range.contains(stage) => collect(body, stage, found),
            Node::Region { .. } => {}
            Node::Exercise(exercise) if exercise.id.stage == stage => found.push(exercise),
            Node::Exercise(_) => {}
        }
    }
}

/// The lines of a projection, with the blank lines that a removed region
/// leaves doubled collapsed to one.
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    after_removal: bool,
}

impl Output {
    fn push(&mut self, line: &str) {
        let blank = line.trim().is_empty();
        let previous_blank = self.lines.last().is_none_or(|l| l.trim().is_empty());
        if !(blank && previous_blank && self.after_removal) {
            self.lines.push(line.to_string());
        }
        if !blank {
            self.after_removal = false;
        }
    }

    fn nodes(&mut self, nodes: &[Node], stage: u32, form: Form) {
        for node in nodes {
            match node {
                Node::Line(line) => self.push(line),
                Node::Region { range, body } if range.contains(stage) => self.nodes(body, stage, form),
                Node::Region { .. } => self.after_removal = true,
                Node::Exercise(e) if e.id.stage > stage => self.after_removal = true,
                Node::Exercise(e) if e.id.stage == stage && form == Form::Skeleton => {
                    for line in stub(e) {
                        self.push(&line);
                    }
                }
                Node::Exercise(e) => e.body.iter().for_each(|line| self.push(line)),
            }
        }
    }
}

/// The skeleton's hole for one exercise: its instruction as comments, a
/// line saying where its hints are (they are not in the source, so that
/// the reader takes them one at a time), then `todo!("EN.k")`. Inside a
/// `const fn`, where `todo!` with a message does not compile, the hole is
/// the `panic!` that `todo!` would have raised.
pub fn stub(exercise: &Exercise) -> Vec<String> {
    let (indent, id) = (&exercise.indent, exercise.id);
    let mut lines = vec![format!("{indent}// Exercise {id}.")];
    for (i, part) in exercise.instruction.iter().enumerate() {
        let lead = if i == 0 { "Instruction: " } else { "" };
        lines.push(format!("{indent}// {lead}{part}").trim_end().to_string());
    }
    lines.push(format!("{indent}// {}", hints_line(exercise)));
    let hole = if exercise.in_const_fn {
        format!("panic!(\"not yet implemented: {id}\")")
    } else {
        format!("todo!(\"{id}\")")
    };
    lines.push(format!("{indent}{hole}"));
    lines
}

/// The stub's pointer to the hints in `HINTS.md`.
fn hints_line(exercise: &Exercise) -> String {
    let id = exercise.id;
    match exercise.hints.len() {
        1 => format!("Hint: `cargo xtask hint {id}`."),
        n => format!("Hints: `cargo xtask hint {id}`, then `--more` for the next ({n} in all)."),
    }
}

#[cfg(test)]
#[path = "project_tests.rs"]
mod tests;
