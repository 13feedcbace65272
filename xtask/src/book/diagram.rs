//! The book's drawn pictures: each `book/diagrams/NAME.txt` is a picture
//! described in text, which `cargo xtask book` draws as
//! `book/src/images/drawn/NAME.svg` before anything else checks the book.
//! The SVGs are not kept in the repository (`.gitignore`): the text is the
//! source, and every build draws it again.
//!
//! A description is a list of statements. A statement is a line that
//! starts in the first column, with the indented lines after it as its
//! continuation; blank lines and lines starting with `#` are skipped. The
//! first statement says the kind and the title, `desc:` a description for
//! readers who do not see the picture (the SVG's `<desc>`), and `note:` a
//! line of text under the picture. Two kinds exist:
//!
//! - `bits: TITLE`, a register or a structure by bit ranges, in rows of 32
//!   bits (`bits.rs`);
//! - `flow: TITLE`, labelled boxes on a grid, with arrows (`flow.rs`).
//!
//! Whatever cannot be drawn well (a name wider than its field, a field
//! missing, an arrow to no box) is an error naming the file and line, so a
//! picture that builds is a picture that reads.

mod bits;
mod flow;

use super::svg;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// One statement of a description: its line (1-based), its first line
/// and its indented continuation lines, trimmed.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    pub line: usize,
    pub head: &'a str,
    pub more: Vec<&'a str>,
}

impl Statement<'_> {
    /// The head and the continuation as one line of text.
    pub fn joined(&self, head: &str) -> String {
        std::iter::once(head.trim()).chain(self.more.iter().copied()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
    }

    pub fn error(&self, message: impl std::fmt::Display) -> String {
        format!("line {}: {message}", self.line)
    }
}

/// The statements of `text`.
pub fn statements(text: &str) -> Result<Vec<Statement<'_>>, String> {
    let mut found: Vec<Statement> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match found.last_mut() {
                Some(statement) => statement.more.push(trimmed),
                None => return Err(format!("line {}: an indented line continues no statement", index + 1)),
            }
        } else {
            found.push(Statement { line: index + 1, head: trimmed, more: Vec::new() });
        }
    }
    Ok(found)
}

/// The value of a `key: value` statement, if `statement` is one.
pub fn keyed<'a>(statement: &Statement<'a>, key: &str) -> Option<&'a str> {
    statement.head.strip_prefix(key)?.strip_prefix(':').map(str::trim)
}

/// The title and description every picture has, from its first
/// statements.
pub struct Header {
    pub title: String,
    pub desc: String,
    pub notes: Vec<String>,
}

impl Header {
    /// Takes `desc:` and `note:` statements out of `statements`.
    fn take(title: &str, statements: &mut Vec<Statement>) -> Result<Header, String> {
        let mut desc = None;
        let mut notes = Vec::new();
        let mut kept = Vec::new();
        for statement in statements.drain(..) {
            if let Some(text) = keyed(&statement, "desc") {
                desc = Some(statement.joined(text));
            } else if let Some(text) = keyed(&statement, "note") {
                notes.push(statement.joined(text));
            } else {
                kept.push(statement);
            }
        }
        *statements = kept;
        let desc = desc.filter(|d| !d.is_empty()).ok_or("no `desc:`: say in words what the picture shows")?;
        Ok(Header { title: title.to_string(), desc, notes })
    }
}

/// Draws one description: the SVG text, or the first problem found. `name`
/// is the description's path for the generated file's first line.
pub fn draw(name: &str, text: &str) -> Result<String, String> {
    let mut statements = statements(text)?;
    if statements.is_empty() {
        return Err("the description is empty".into());
    }
    let first = statements.remove(0);
    let (kind, title) = first.head.split_once(':').ok_or(first.error("the first line must be `bits: TITLE` or `flow: TITLE`"))?;
    let header = Header::take(title.trim(), &mut statements)?;
    let (width, height, body) = match kind.trim() {
        "bits" => bits::Bits::parse(&statements)?.render(&header.notes)?,
        "flow" => flow::Flow::parse(&statements)?.render(&header.notes)?,
        other => return Err(first.error(format!("`{other}` is no kind of picture; `bits` or `flow`"))),
    };
    Ok(document(name, &header, width, height, &body))
}

/// The SVG document around a picture's body.
fn document(name: &str, header: &Header, width: f64, height: f64, body: &str) -> String {
    let (w, h) = (svg::num(width), svg::num(height));
    format!(
        "<!-- Drawn by `cargo xtask book` from {name}; edit that file, not this one. -->\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"\n     \
         font-family=\"{sans}\" font-size=\"14\">\n  \
         <title>{title}</title>\n  <desc>{desc}</desc>\n  \
         <defs>\n    <marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\"\n            \
         orient=\"auto-start-reverse\">\n      <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#333333\"/>\n    </marker>\n  </defs>\n  \
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n  \
         <text x=\"{cx}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{title}</text>\n\
         {body}</svg>\n",
        sans = svg::SANS,
        title = svg::escape(&header.title),
        desc = svg::escape(&header.desc),
        cx = svg::num(width / 2.0),
    )
}

/// The notes under a picture from `y` down, wrapped to `width`; returns
/// the SVG and the height they take.
pub fn notes(notes: &[String], x: f64, y: f64, width: f64) -> (String, f64) {
    let mut out = String::new();
    let mut at = y;
    for note in notes {
        for line in wrap(note, width, 12.0) {
            at += 17.0;
            out.push_str(&format!("  <text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>\n", svg::num(x), svg::num(at), svg::escape(&line)));
        }
        at += 3.0;
    }
    (out, at - y)
}

/// `text` cut into lines no wider than `width` at `size`, at spaces.
pub fn wrap(text: &str, width: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
        if !line.is_empty() && svg::text_width(&candidate, size, false, false) > width {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    lines.extend((!line.is_empty()).then_some(line));
    lines
}

/// Where the drawn SVGs go, under `root`.
pub fn drawn_dir(root: &Path) -> PathBuf {
    root.join("book").join("src").join("images").join("drawn")
}

/// Draws every description of `book/diagrams/` under `root` into
/// `book/src/images/drawn/`, removing SVGs whose description is gone;
/// returns how many it drew. Fails naming every description that cannot
/// be drawn.
pub fn draw_all(root: &Path) -> Result<usize> {
    let sources = root.join("book").join("diagrams");
    let out = drawn_dir(root);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut names = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&sources)
        .with_context(|| format!("listing {}", sources.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "txt")) {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let shown = format!("book/diagrams/{stem}.txt");
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match draw(&shown, &text) {
            Ok(svg) => {
                let target = out.join(format!("{stem}.svg"));
                if std::fs::read_to_string(&target).ok().as_deref() != Some(svg.as_str()) {
                    std::fs::write(&target, svg).with_context(|| format!("writing {}", target.display()))?;
                }
                names.push(format!("{stem}.svg"));
            }
            Err(problem) => problems.push(format!("{shown}: {problem}")),
        }
    }
    for stale in std::fs::read_dir(&out)?.flatten().map(|e| e.path()) {
        if !names.iter().any(|n| stale.file_name().is_some_and(|f| f == n.as_str())) {
            std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    if !problems.is_empty() {
        bail!("{} pictures cannot be drawn:\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_take_their_indented_lines() {
        let text = "# a comment\nflow: A\n\ndesc: one\n  two\n\n  three\nbox a 1,1: x\n";
        let found = statements(text).unwrap();
        assert_eq!(
            found,
            [
                Statement { line: 2, head: "flow: A", more: vec![] },
                Statement { line: 4, head: "desc: one", more: vec!["two", "three"] },
                Statement { line: 8, head: "box a 1,1: x", more: vec![] },
            ]
        );
        assert_eq!(found[1].joined("one"), "one two three");
        assert!(statements("  orphan\n").unwrap_err().contains("line 1: an indented line continues no statement"));
    }

    #[test]
    fn draws_both_kinds_as_well_formed_svg() {
        let bits = "bits: B\ndesc: a register\nwidth: 32\n31:1 high\n0 low\nnote: low is bit 0\n";
        let flow = "flow: F\ndesc: two boxes\ncolumns: 2\nbox a 1,1: A\nbox b 2,1 guest: B\n  more\narrow a -> b: go\n";
        for text in [bits, flow] {
            let drawn = draw("book/diagrams/x.txt", text).unwrap();
            assert!(drawn.starts_with("<!-- Drawn by `cargo xtask book` from book/diagrams/x.txt"), "{drawn}");
            assert_eq!(svg::well_formed(&drawn), Ok(()), "{drawn}");
        }
    }

    #[test]
    fn the_header_is_required() {
        assert_eq!(draw("x", "").unwrap_err(), "the description is empty");
        assert!(draw("x", "bits: B\nwidth: 32\n31:0 all\n").unwrap_err().contains("no `desc:`"));
        assert!(draw("x", "pie: B\ndesc: d\n").unwrap_err().contains("line 1: `pie` is no kind of picture"));
    }

    #[test]
    fn text_is_escaped() {
        let drawn = draw("x", "bits: a <b> & c\ndesc: \"d\"\nwidth: 32\n31:0 x&y\n").unwrap();
        assert!(drawn.contains("<title>a &lt;b&gt; &amp; c</title>"), "{drawn}");
        assert!(drawn.contains("x&amp;y"), "{drawn}");
    }

    #[test]
    fn wraps_at_spaces() {
        let lines = wrap("one two three four five six", 60.0, 12.0);
        assert!(lines.len() > 1, "{lines:?}");
        assert_eq!(lines.join(" "), "one two three four five six");
        assert!(lines.iter().all(|l| svg::text_width(l, 12.0, false, false) <= 60.0 || !l.contains(' ')));
    }

    #[test]
    fn draws_a_directory_and_removes_stale_pictures() {
        let root = std::env::temp_dir().join(format!("rkvm-diagram-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("book/diagrams")).unwrap();
        std::fs::create_dir_all(drawn_dir(&root)).unwrap();
        std::fs::write(drawn_dir(&root).join("old.svg"), "<svg/>").unwrap();
        std::fs::write(root.join("book/diagrams/reg.txt"), "bits: R\ndesc: d\nwidth: 32\n31:0 all\n").unwrap();
        assert_eq!(draw_all(&root).unwrap(), 1);
        assert!(drawn_dir(&root).join("reg.svg").is_file());
        assert!(!drawn_dir(&root).join("old.svg").exists());
        std::fs::write(root.join("book/diagrams/bad.txt"), "bits: R\ndesc: d\nwidth: 32\n31:1 all\n").unwrap();
        let error = draw_all(&root).unwrap_err().to_string();
        assert!(error.contains("book/diagrams/bad.txt: "), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
