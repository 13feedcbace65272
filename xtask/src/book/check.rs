//! The book's source checks: includes and anchors, links, pictures,
//! chapters missing from `SUMMARY.md`, and code pasted where it should be
//! included.

use super::{diagram, links, svg};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every problem in `book/src/` under `root`, one line each, naming the
/// page and line.
pub fn all(root: &Path) -> Result<Vec<String>> {
    let src = root.join("book").join("src");
    let pages = pages(&src)?;
    let kmod = kmod_windows(&root.join("kmod"));
    let mut problems = Vec::new();
    let mut shown = HashSet::new();
    for (path, text) in &pages {
        let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
        problems.extend(includes(root, path, text, &name));
        problems.extend(links::check(&src, path, text, &name));
        problems.extend(pictures(&src, path, text, &name, &mut shown));
        problems.extend(pasted(text, &name, &kmod));
        problems.extend(super::commands::check(root, text, &name, chapter(path)));
    }
    problems.extend(unlisted(&src, &pages));
    problems.extend(unshown(root, &shown));
    Ok(problems)
}

/// The course chapter a page is, from its file name (`ch08-...`): 1 to 13.
fn chapter(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let n: u32 = name.strip_prefix("ch")?.get(..2)?.parse().ok()?;
    (1..=13).contains(&n).then_some(n)
}

/// Whether a link's target is a picture, by its extension.
pub fn is_picture(target: &str) -> bool {
    let path = target.split(['#', '?']).next().unwrap_or(target).to_ascii_lowercase();
    [".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp"].iter().any(|e| path.ends_with(e))
}

/// One picture a page shows: `![alt](target)`, whose alt text may run over
/// several lines.
#[derive(Debug, PartialEq, Eq)]
pub struct Picture {
    pub line: usize,
    pub alt: String,
    pub target: String,
}

/// The pictures of a page, outside code blocks and code spans.
pub fn parse_pictures(text: &str) -> Vec<Picture> {
    let mut prose = String::new();
    let mut starts = Vec::new();
    for (index, line) in links::prose_lines(text) {
        starts.push((prose.len(), index + 1));
        prose.push_str(&links::without_code_spans(line));
        prose.push('\n');
    }
    let line_at = |offset: usize| starts.iter().rev().find(|(start, _)| *start <= offset).map_or(1, |(_, line)| *line);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = prose[from..].find("![").map(|a| a + from) {
        from = at + 2;
        let Some(close) = prose[from..].find("](").map(|c| c + from) else { break };
        let alt = &prose[from..close];
        if alt.contains("\n\n") {
            continue;
        }
        let rest = &prose[close + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = rest[..end].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']);
        found.push(Picture { line: line_at(at), alt: alt.split_whitespace().collect::<Vec<_>>().join(" "), target: target.to_string() });
        from = close + 2;
    }
    found
}

/// The number of a course chapter (`chNN-slug.md`, 01 to 13), if `page` is
/// one.
fn course_chapter(page: &Path) -> Option<u32> {
    let name = page.file_name()?.to_str()?;
    let number: u32 = name.strip_prefix("ch")?.get(..2)?.parse().ok()?;
    (name.get(4..5).is_some_and(|c| c == "-" || c == ".") && (1..=13).contains(&number)).then_some(number)
}

/// Checks the pictures of a page: each has alt text, exists in `src`, and
/// is a well-formed SVG if it is one; a course chapter shows at least one.
/// Adds every picture found to `shown`.
fn pictures(src: &Path, page: &Path, text: &str, name: &str, shown: &mut HashSet<PathBuf>) -> Vec<String> {
    let mut problems = Vec::new();
    let found = parse_pictures(text);
    if course_chapter(page).is_some() && found.is_empty() {
        problems.push(format!("{name}: a course chapter shows no picture; describe one in book/diagrams/ and show it with ![alt text](images/drawn/NAME.svg)"));
    }
    let linked = links::links(text).into_iter().filter(|l| is_picture(&l.target) && !found.iter().any(|p| p.target == l.target));
    let all = found.iter().map(|p| (p.line, p.target.clone(), Some(&p.alt))).chain(linked.map(|l| (l.line, l.target, None)));
    for (line, target, alt) in all {
        let at = format!("{name}:{line}: picture `{target}`");
        if alt.is_some_and(|a| a.is_empty()) {
            problems.push(format!("{at} has no alt text; say what it shows for readers who cannot see it"));
        }
        if target.contains("://") {
            problems.push(format!("{at} is not in book/src/; the book is read offline"));
            continue;
        }
        let file = links::normalize(&page.parent().unwrap_or(src).join(&target));
        if !file.starts_with(links::normalize(src)) || !file.is_file() {
            problems.push(format!("{at}: the file does not exist in book/src/"));
            continue;
        }
        shown.insert(file.clone());
        if file.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
            let checked = std::fs::read_to_string(&file).map_err(|e| e.to_string()).and_then(|svg| svg::well_formed(&svg));
            if let Err(why) = checked {
                problems.push(format!("{at} is not a well-formed SVG: {why}"));
            }
        }
    }
    problems
}

/// Pictures drawn from `book/diagrams/` that no page shows.
fn unshown(root: &Path, shown: &HashSet<PathBuf>) -> Vec<String> {
    let drawn = diagram::drawn_dir(root);
    let Ok(entries) = std::fs::read_dir(&drawn) else { return Vec::new() };
    let mut problems: Vec<String> = entries
        .flatten()
        .map(|e| links::normalize(&e.path()))
        .filter(|path| !shown.contains(path))
        .map(|path| format!("book/diagrams/{}.txt is drawn, but no page shows it", path.file_stem().unwrap_or_default().to_string_lossy()))
        .collect();
    problems.sort();
    problems
}

/// Every Markdown page under `src`, sorted, with its text.
fn pages(src: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                found.push((path, text));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// One `{{#include ...}}` (or `#rustdoc_include`) directive.
#[derive(Debug, PartialEq, Eq)]
pub struct Include {
    pub line: usize,
    pub path: String,
    /// After the first `:`: an anchor name, line numbers, or nothing.
    pub selector: Option<String>,
}

/// The include directives of a page, escaped ones (`\{{#include`) excepted.
/// mdBook expands them everywhere, code blocks included.
pub fn parse_includes(text: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{{") {
            let escaped = rest[..at].ends_with('\\');
            let after = rest[at + 2..].trim_start();
            rest = &rest[at + 2..];
            let Some(body) = ["#include ", "#rustdoc_include "].iter().find_map(|d| after.strip_prefix(d)) else {
                continue;
            };
            let Some((args, _)) = body.split_once("}}") else { continue };
            if escaped {
                continue;
            }
            let (path, selector) = match args.trim().split_once(':') {
                Some((path, selector)) => (path, Some(selector.to_string())),
                None => (args.trim(), None),
            };
            found.push(Include { line: index + 1, path: path.to_string(), selector });
        }
    }
    found
}

/// Checks each include of a page: the file exists outside `kmod/`, and
/// the anchor exists in it. Line-number includes are refused: they break
/// silently when the code moves.
fn includes(root: &Path, page: &Path, text: &str, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let kmod = root.join("kmod").canonicalize().unwrap_or_else(|_| root.join("kmod"));
    for include in parse_includes(text) {
        let at = format!("{name}:{}: include of `{}`", include.line, include.path);
        let file = page.parent().unwrap_or(root).join(&include.path);
        if file.canonicalize().is_ok_and(|f| f.starts_with(&kmod)) {
            problems.push(format!("{at}: kmod/'s marker lines would show; include the generated copy in stages/NN-slug/"));
            continue;
        }
        let Ok(source) = std::fs::read_to_string(&file) else {
            problems.push(format!("{at}: the file does not exist"));
            continue;
        };
        match include.selector.as_deref().map(str::trim) {
            None | Some("") => {}
            Some(s) if s.starts_with(|c: char| c.is_ascii_digit() || c == ':') => {
                problems.push(format!("{at}: `:{s}` selects lines by number; include by anchor (`ANCHOR: name` in the source)"))
            }
            Some(anchor) => {
                for missing in missing_anchor(&source, anchor) {
                    problems.push(format!("{at}: the file has no `{missing}: {anchor}` line"));
                }
            }
        }
    }
    problems
}

/// Which of `ANCHOR: name` and `ANCHOR_END: name` `source` lacks.
fn missing_anchor(source: &str, name: &str) -> Vec<&'static str> {
    let has = |tag: &str| {
        source.lines().any(|line| {
            line.split_once(&format!("{tag}:")).is_some_and(|(_, after)| {
                let word: String = after.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-').collect();
                word == name
            })
        })
    };
    ["ANCHOR", "ANCHOR_END"].into_iter().filter(|tag| !has(tag)).collect()
}

/// Pages in `src` that `SUMMARY.md` does not list: mdBook would skip them.
fn unlisted(src: &Path, pages: &[(PathBuf, String)]) -> Vec<String> {
    let Some((_, summary)) = pages.iter().find(|(p, _)| p == &src.join("SUMMARY.md")) else {
        return vec!["book/src/SUMMARY.md does not exist".into()];
    };
    let listed: HashSet<PathBuf> = links::links(summary).iter().map(|l| src.join(&l.target)).collect();
    pages
        .iter()
        .map(|(path, _)| path)
        .filter(|path| path.file_name().is_some_and(|n| n != "SUMMARY.md") && !listed.contains(*path))
        .map(|path| format!("{} is not listed in book/src/SUMMARY.md, so the book leaves it out", path.display()))
        .collect()
}

/// Three consecutive code lines, trimmed, as one key.
type Window = String;

/// Lines of code worth comparing: trimmed, not blank, not a marker or
/// anchor line, and long enough to be specific.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.len() >= 8 && !l.contains("ANCHOR") && !["//@", "#@", ";@"].iter().any(|m| l.starts_with(m)))
        .collect()
}

/// Every window of three code lines in the files of `kmod/`.
fn kmod_windows(kmod: &Path) -> HashSet<Window> {
    let mut windows = HashSet::new();
    let mut dirs = vec![kmod.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.extend((path.file_name().is_some_and(|n| n != "target")).then_some(path));
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                windows.extend(code_lines(&text).windows(3).map(|w| w.join("\n")));
            }
        }
    }
    windows
}

/// Code blocks of a page that repeat three or more lines of `kmod/`.
fn pasted(text: &str, name: &str, kmod: &HashSet<Window>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut block: Option<(usize, Vec<&str>)> = None;
    for (index, line) in text.lines().enumerate() {
        let fence = ["```", "~~~"].iter().any(|f| line.trim_start().starts_with(f));
        match (&mut block, fence) {
            (None, true) => block = Some((index + 1, Vec::new())),
            (Some((start, lines)), true) => {
                let code = lines.join("\n");
                if code_lines(&code).windows(3).any(|w| kmod.contains(&w.join("\n"))) {
                    problems.push(format!(
                        "{name}:{start}: this code block repeats code from kmod/; include it by anchor from stages/NN-slug/ instead"
                    ));
                }
                block = None;
            }
            (Some((_, lines)), false) if !line.contains("{{#") => lines.push(line),
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
