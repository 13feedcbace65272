//! The stage-marker parser: one file of `kmod/` in, a tree of regions out.
//!
//! The syntax is specified in `kmod/README.md`. A marker is a line whose
//! text, after leading whitespace, starts with the file's comment leader and
//! `@` (`//@`, `#@`, `;@`). This module only parses and validates; turning the
//! tree into the text of one stage is `project.rs`'s job.

use super::LAST_STAGE;
use anyhow::{Context, Result, bail, ensure};
use std::fmt;

/// One parsed source file of `kmod/`.
#[derive(Debug)]
pub struct SourceFile {
    /// The path relative to `kmod/`, with `/` separators.
    pub path: String,
    /// The comment leader of the file's language: `//`, `#` or `;`.
    pub comment: &'static str,
    /// A `#!` first line, kept first in every generated copy.
    pub shebang: Option<String>,
    /// The stage the file appears in (`//@ stage N`).
    pub stage: u32,
    pub body: Vec<Node>,
}

/// A piece of a file: a plain line or a marked region.
#[derive(Debug)]
pub enum Node {
    Line(String),
    Region { range: StageRange, body: Vec<Node> },
    Exercise(Exercise),
}

/// The stages a region exists in: `from..until` (`until` excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageRange {
    pub from: u32,
    pub until: Option<u32>,
}

impl StageRange {
    pub fn contains(self, stage: u32) -> bool {
        stage >= self.from && self.until.is_none_or(|until| stage < until)
    }
}

/// An exercise id, `EN.k`: the k-th exercise of stage N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExerciseId {
    pub stage: u32,
    pub number: u32,
}

impl ExerciseId {
    /// Parses `E1.2`; also accepts `e1.2`, `1.2` and `E1_2`.
    pub fn parse(text: &str) -> Option<ExerciseId> {
        let text = text.trim();
        let text = text.strip_prefix(['E', 'e']).unwrap_or(text);
        let (stage, number) = text.split_once(['.', '_'])?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(stage) || !all_digits(number) {
            return None;
        }
        Some(ExerciseId { stage: stage.parse().ok()?, number: number.parse().ok()? })
    }

    /// The name of the test module that holds this exercise's tests: `e1_2`.
    pub fn test_module(self) -> String {
        format!("e{}_{}", self.stage, self.number)
    }
}

impl fmt::Display for ExerciseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{}.{}", self.stage, self.number)
    }
}

/// An exercise region: its solution lines and what the reader is told.
#[derive(Clone, Debug)]
pub struct Exercise {
    pub id: ExerciseId,
    /// The file (relative to `kmod/`) and 1-based line of the marker.
    pub file: String,
    pub line: usize,
    /// The marker line's indentation, reused for the stub.
    pub indent: String,
    pub instruction: Vec<String>,
    /// The hints, from a nudge to nearly the answer: one entry per `hint:`
    /// marker, each the lines of that marker and its `+` lines.
    pub hints: Vec<Vec<String>>,
    /// The solution: the lines between the text markers and `end`.
    pub body: Vec<String>,
    /// Whether the region sits in a `const fn`, where the hole cannot be
    /// `todo!("EN.k")` (see `project::stub`).
    pub in_const_fn: bool,
}

/// One marker line, decoded.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    Stage(u32),
    Begin(StageRange),
    Exercise(ExerciseId),
    Instruction(String),
    Hint(String),
    More(String),
    End,
}

/// The comment leader of a file, chosen from its name; `None` if the
/// generator does not know the file's language.
pub fn comment_leader(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if matches!(name, "Kbuild" | "Makefile" | ".gitignore" | "dkms.conf") {
        return Some("#");
    }
    match name.rsplit_once('.')?.1 {
        "rs" | "c" | "h" | "S" => Some("//"),
        "toml" | "sh" | "mk" | "s" => Some("#"),
        "asm" | "nasm" => Some(";"),
        _ => None,
    }
}

/// Parses one file of `kmod/`. `path` is relative to `kmod/` and is used in
/// every error message.
pub fn parse(path: &str, text: &str) -> Result<SourceFile> {
    let comment = comment_leader(path).with_context(|| {
        format!(
            "kmod/{path}: the stage generator does not know this file's comment syntax; \
             add its extension to `comment_leader` in xtask/src/stages/marker.rs"
        )
    })?;
    let mut lines = text.lines().enumerate().peekable();
    let shebang = lines.next_if(|(_, l)| l.starts_with("#!")).map(|(_, l)| l.to_string());
    let first = lines.next().map(|(_, l)| decode(comment, l));
    let stage = match first {
        Some(Some(Ok(Marker::Stage(n)))) => n,
        Some(Some(Err(e))) => return Err(e.context(format!("kmod/{path}:1"))),
        _ => bail!(
            "kmod/{path}: the file must start with a stage marker, for example `{comment}@ stage 1` \
             (see kmod/README.md)"
        ),
    };
    let mut parser = Parser::new(path, comment, stage);
    for (index, line) in lines {
        parser.line(index + 1, line).with_context(|| format!("kmod/{path}:{}", index + 1))?;
    }
    let body = parser.finish()?;
    Ok(SourceFile { path: path.to_string(), comment, shebang, stage, body })
}

/// Decodes `line` as a marker: `None` if it is not one, `Some(Err)` if it
/// is a malformed one.
fn decode(comment: &str, line: &str) -> Option<Result<Marker>> {
    let rest = line.trim_start().strip_prefix(comment)?.strip_prefix('@')?;
    if let Some(more) = rest.strip_prefix('+') {
        return Some(Ok(Marker::More(more.trim().to_string())));
    }
    Some(decode_keyword(rest.trim()))
}

fn decode_keyword(text: &str) -> Result<Marker> {
    let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let args = args.trim();
    match keyword {
        "stage" => Ok(Marker::Stage(stage_number(args)?)),
        "begin" => decode_begin(args),
        "exercise" => {
            let id = ExerciseId::parse(args)
                .filter(|id| id.to_string() == args && id.number > 0)
                .with_context(|| format!("`exercise {args}`: an exercise id looks like E1.2"))?;
            check_stage(id.stage)?;
            Ok(Marker::Exercise(id))
        }
        "instruction:" => Ok(Marker::Instruction(args.to_string())),
        "hint:" => Ok(Marker::Hint(args.to_string())),
        "end" if args.is_empty() => Ok(Marker::End),
        _ => bail!(
            "`@{text}` is not a stage marker; markers are `stage N`, `begin N [until M]`, \
             `exercise EN.k`, `instruction:`, `hint:`, `+` and `end` (see kmod/README.md)"
        ),
    }
}

fn decode_begin(args: &str) -> Result<Marker> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let range = match words.as_slice() {
        [from] => StageRange { from: stage_number(from)?, until: None },
        [from, "until", until] => {
            let (from, until) = (stage_number(from)?, stage_number(until)?);
            ensure!(until > from, "`begin {from} until {until}`: the region would exist in no stage");
            StageRange { from, until: Some(until) }
        }
        _ => bail!("`begin {args}`: expected `begin N` or `begin N until M`"),
    };
    Ok(Marker::Begin(range))
}

fn stage_number(text: &str) -> Result<u32> {
    let n: u32 = text.parse().with_context(|| format!("`{text}` is not a stage number"))?;
    check_stage(n)
}

fn check_stage(n: u32) -> Result<u32> {
    ensure!((1..=LAST_STAGE).contains(&n), "stage {n} does not exist: stages are 1 to {LAST_STAGE}");
    Ok(n)
}

/// A region being read: its range, where it opened, and its lines so far.
struct Frame {
    range: StageRange,
    opened_at: usize,
    exercise: Option<Exercise>,
    body: Vec<Node>,
}

/// Where an exercise's text markers are in the reading of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TextState {
    Instruction,
    Hint,
    Body,
}

struct Parser<'a> {
    path: &'a str,
    comment: &'static str,
    stack: Vec<Frame>,
    text: TextState,
    /// Every line read so far, to find the function around an exercise.
    seen: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(path: &'a str, comment: &'static str, stage: u32) -> Self {
        let file = Frame {
            range: StageRange { from: stage, until: None },
            opened_at: 1,
            exercise: None,
            body: Vec::new(),
        };
        Parser { path, comment, stack: vec![file], text: TextState::Body, seen: Vec::new() }
    }

    fn top(&mut self) -> &mut Frame {
        self.stack.last_mut().expect("the file's own frame is never popped")
    }

    fn line(&mut self, number: usize, line: &str) -> Result<()> {
        self.seen.push(line.to_string());
        let marker = decode(self.comment, line).transpose()?;
        if self.text != TextState::Body {
            return self.exercise_text(marker, line);
        }
        match marker {
            None => self.plain(line),
            Some(Marker::Begin(range)) => self.open(number, range, None),
            Some(Marker::Exercise(id)) => self.open_exercise(number, line, id),
            Some(Marker::End) => self.close(),
            Some(Marker::Stage(_)) => bail!("`stage` may only be the first marker of a file"),
            Some(_) => bail!("`instruction:`, `hint:` and `+` belong right after an `exercise` marker"),
        }
    }

    fn plain(&mut self, line: &str) -> Result<()> {
        let top = self.top();
        match &mut top.exercise {
            Some(exercise) => exercise.body.push(line.to_string()),
            None => top.body.push(Node::Line(line.to_string())),
        }
        Ok(())
    }

    fn open(&mut self, number: usize, range: StageRange, exercise: Option<Exercise>) -> Result<()> {
        let outer = self.top();
        ensure!(outer.exercise.is_none(), "regions cannot sit inside an exercise");
        let what = if exercise.is_some() { "the exercise" } else { "the region" };
        ensure!(
            range.from >= outer.range.from,
            "{what} begins at stage {}, before the region or file around it (stage {}); \
             an exercise's id names the stage its lines appear in",
            range.from,
            outer.range.from
        );
        if let Some(outer_until) = outer.range.until {
            ensure!(
                range.from < outer_until,
                "{what} begins at stage {}, when the region around it is already gone (until {outer_until})",
                range.from
            );
            ensure!(
                range.until.is_none_or(|u| u <= outer_until),
                "{what} ends after the region around it (until {outer_until})"
            );
        }
        self.stack.push(Frame { range, opened_at: number, exercise, body: Vec::new() });
        Ok(())
    }

    fn open_exercise(&mut self, number: usize, line: &str, id: ExerciseId) -> Result<()> {
        ensure!(self.path.ends_with(".rs"), "exercises can only be Rust: their skeleton is `todo!()`");
        let indent = line[..line.len() - line.trim_start().len()].to_string();
        let in_const_fn = in_const_fn(&self.seen, indent.len());
        let exercise = Exercise {
            id,
            file: self.path.to_string(),
            line: number,
            indent,
            instruction: Vec::new(),
            hints: Vec::new(),
            body: Vec::new(),
            in_const_fn,
        };
        self.open(number, StageRange { from: id.stage, until: None }, Some(exercise))?;
        self.text = TextState::Instruction;
        Ok(())
    }

    /// Reads the `instruction:`, `hint:` and `+` lines after `exercise`,
    /// then the first solution line. Each `hint:` starts the next hint.
    fn exercise_text(&mut self, marker: Option<Marker>, line: &str) -> Result<()> {
        let (comment, state) = (self.comment, self.text);
        let exercise = self.top().exercise.as_mut().expect("text markers follow an exercise");
        let id = exercise.id;
        let has_instruction = !exercise.instruction.is_empty();
        self.text = match (state, marker) {
            (TextState::Instruction, Some(Marker::Instruction(text))) if !has_instruction => {
                exercise.instruction.push(text);
                TextState::Instruction
            }
            (TextState::Instruction, Some(Marker::More(text))) if has_instruction => {
                exercise.instruction.push(text);
                TextState::Instruction
            }
            (TextState::Instruction | TextState::Hint, Some(Marker::Hint(text))) if has_instruction => {
                exercise.hints.push(vec![text]);
                TextState::Hint
            }
            (TextState::Hint, Some(Marker::More(text))) => {
                exercise.hints.last_mut().expect("a hint was started").push(text);
                TextState::Hint
            }
            (TextState::Hint, None) => {
                exercise.body.push(line.to_string());
                TextState::Body
            }
            (TextState::Hint, Some(Marker::End)) => bail!("exercise {id} has no solution lines"),
            (TextState::Hint, Some(_)) => {
                bail!("exercise {id}: markers cannot sit inside an exercise, only its solution lines")
            }
            _ => bail!(
                "exercise {id} must be followed by exactly one `{comment}@ instruction: ...` and then \
                 one or more `{comment}@ hint: ...` (hint 1, hint 2, ...), each continued by \
                 `{comment}@+ ...` lines"
            ),
        };
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        ensure!(self.stack.len() > 1, "`end` without an open `begin` or `exercise`");
        let frame = self.stack.pop().expect("checked above");
        if let (Some(until), None) = (frame.range.until, &frame.exercise) {
            let comment = self.comment;
            if let Some(line) = frame.body.iter().find_map(|node| match node {
                Node::Line(line) if !without_effect(comment, line) => Some(line.trim()),
                Node::Line(_) => None,
                _ => Some("a nested region"),
            }) {
                bail!(
                    "kmod/{}:{}: the region `begin {} until {until}` holds `{line}`: kmod builds every line, so the \
                     full module would run it beside the code of stage {until} that replaces it; such a region may \
                     hold only comments, `#[allow(...)]` and `let _ = name;`",
                    self.path,
                    frame.opened_at,
                    frame.range.from
                );
            }
        }
        let node = match frame.exercise {
            Some(exercise) => Node::Exercise(exercise),
            None => Node::Region { range: frame.range, body: frame.body },
        };
        self.top().body.push(node);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Node>> {
        if self.stack.len() > 1 {
            let open = self.stack.last().expect("checked above");
            let what = match &open.exercise {
                Some(exercise) => format!("exercise {}", exercise.id),
                None => format!("`begin {}`", open.range.from),
            };
            bail!("kmod/{}:{}: {what} is never closed with `end`", self.path, open.opened_at);
        }
        Ok(self.stack.pop().expect("the file's own frame").body)
    }
}

/// Whether a line of a `begin N until M` region does nothing when run: a
/// comment, an `#[allow(...)]`, or `let _ = name;` (which only keeps a
/// parameter that later stages use from being called unused).
fn without_effect(comment: &str, line: &str) -> bool {
    let line = line.trim();
    let ignored_name = line
        .strip_prefix("let _ = ")
        .and_then(|rest| rest.strip_suffix(';'))
        .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'));
    line.is_empty() || line.starts_with(comment) || line.starts_with("#[allow(") || ignored_name
}

/// Whether the nearest function signature above a line indented by
/// `indent` (the nearest less-indented line with the word `fn`) is a
/// `const fn`.
fn in_const_fn(previous: &[String], indent: usize) -> bool {
    let is_fn = |line: &str| line.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| w == "fn");
    previous
        .iter()
        .rev()
        .map(|line| (line.len() - line.trim_start().len(), line.trim()))
        .filter(|&(depth, text)| depth < indent && !text.is_empty() && !text.starts_with("//"))
        .find(|&(_, text)| is_fn(text))
        .is_some_and(|(_, text)| text.contains("const fn"))
}

#[cfg(test)]
#[path = "marker_tests.rs"]
mod tests;
