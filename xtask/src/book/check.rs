//! The book's source checks: includes and anchors, links, chapters missing
//! from `SUMMARY.md`, and code pasted where it should be included.

use super::links;
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
    for (path, text) in &pages {
        let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
        problems.extend(includes(root, path, text, &name));
        problems.extend(links::check(&src, path, text, &name));
        problems.extend(pasted(text, &name, &kmod));
    }
    problems.extend(unlisted(&src, &pages));
    Ok(problems)
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
