//! Relative links in the book's Markdown: each must name a file inside
//! `book/src/`, and a `#fragment` into a chapter must name one of its
//! headings, with the ids mdBook gives them.

use std::path::{Component, Path, PathBuf};

/// A link found in a page: its line (1-based) and target as written.
#[derive(Debug, PartialEq, Eq)]
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// The links of a Markdown page: inline `[text](target)` (and images) and
/// reference definitions `[label]: target`, outside code blocks and code
/// spans.
pub fn links(text: &str) -> Vec<Link> {
    let mut found = Vec::new();
    for (index, line) in prose_lines(text) {
        let line_no = index + 1;
        let prose = without_code_spans(line);
        if let Some(target) = reference_definition(&prose) {
            found.push(Link { line: line_no, target });
            continue;
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].trim().trim_start_matches('<');
            let target = target.split_whitespace().next().unwrap_or("").trim_end_matches('>');
            found.push(Link { line: line_no, target: target.to_string() });
        }
    }
    found
}

/// The lines of `text` outside fenced code blocks, with their indexes.
pub fn prose_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fence: Option<&str> = None;
    text.lines().enumerate().filter(move |(_, line)| {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => {
                fence = Some(m);
                false
            }
            (Some(open), Some(m)) if open == m => {
                fence = None;
                false
            }
            (Some(_), _) => false,
            (None, None) => true,
        }
    })
}

/// `line` with every `` `code` `` span removed.
pub fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The target of a reference definition: `[label]: target`.
fn reference_definition(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (_, after) = rest.split_once("]:")?;
    let target = after.split_whitespace().next()?;
    Some(target.trim_matches(['<', '>']).to_string())
}

/// The ids mdBook gives a page's headings, in order, duplicates numbered
/// as mdBook numbers them (`-1`, `-2`, ...).
pub fn heading_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut counts = std::collections::HashMap::new();
    for (_, line) in prose_lines(text) {
        let Some(title) = heading_text(line) else { continue };
        let base = match title.rsplit_once("{#") {
            Some((_, custom)) if custom.ends_with('}') => custom.trim_end_matches('}').to_string(),
            _ => normalize_id(&title),
        };
        let repeats = counts.entry(base.clone()).or_insert(0);
        ids.push(if *repeats == 0 { base } else { format!("{base}-{repeats}") });
        *repeats += 1;
    }
    ids
}

/// The text of an ATX heading line, without its markup.
fn heading_text(line: &str) -> Option<String> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
        return None;
    }
    let text = line[hashes..].trim().trim_end_matches('#').trim();
    let mut plain = String::new();
    let mut rest = text;
    // A link in a heading contributes its text only.
    while let Some(open) = rest.find('[') {
        plain.push_str(&rest[..open]);
        let Some((label, after)) = rest[open + 1..].split_once("](") else { break };
        plain.push_str(label);
        rest = after.split_once(')').map_or("", |(_, r)| r);
    }
    plain.push_str(rest);
    Some(plain.replace(['`', '*'], ""))
}

/// mdBook's `normalize_id`: alphanumerics, `_` and `-` kept (lowercased),
/// whitespace made `-`, everything else dropped.
fn normalize_id(text: &str) -> String {
    text.trim()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// Checks the links of `page` (inside `src`); returns the problems found.
pub fn check(src: &Path, page: &Path, text: &str, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for link in links(text) {
        if let Some(problem) = check_link(src, page, text, &link.target) {
            problems.push(format!("{name}:{}: link `{}` {problem}", link.line, link.target));
        }
    }
    problems
}

fn check_link(src: &Path, page: &Path, text: &str, target: &str) -> Option<String> {
    // Pictures have a check of their own (`check::pictures`).
    let picture = super::check::is_picture(target);
    if picture || target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
    if path.is_empty() {
        return missing_heading(text, fragment);
    }
    let resolved = normalize(&page.parent().unwrap_or(src).join(path));
    if !resolved.starts_with(normalize(src)) {
        return Some("points outside book/src/, where the rendered book cannot follow it".into());
    }
    if !resolved.exists() {
        return Some("points to a file that does not exist".into());
    }
    if fragment.is_empty() || resolved.extension().is_none_or(|e| e != "md") {
        return None;
    }
    missing_heading(&std::fs::read_to_string(&resolved).unwrap_or_default(), fragment)
}

fn missing_heading(text: &str, fragment: &str) -> Option<String> {
    let ids = heading_ids(text);
    (!fragment.is_empty() && !ids.iter().any(|id| id == fragment))
        .then(|| format!("names heading `#{fragment}`, which does not exist (headings: {})", ids.join(", ")))
}

/// `path` with `.` and `..` resolved lexically.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_links_outside_code() {
        let text = "See [a](a.md) and ![b](img/b.png \"title\").\n`[not](x.md)`\n```\n[no](y.md)\n```\n[ref]: c.md#top\n";
        let found: Vec<(usize, String)> = links(text).into_iter().map(|l| (l.line, l.target)).collect();
        let want = [(1, "a.md"), (1, "img/b.png"), (6, "c.md#top")].map(|(n, t)| (n, t.to_string()));
        assert_eq!(found, want);
    }

    #[test]
    fn heading_ids_follow_mdbook() {
        let text = "# The ABI\n## `kvm_run`: the shared page\n## Setting up\n## Setting up\n```\n# not a heading\n```\n\
                    ## Custom {#mine}\n## See [the SDM](https://x)\n";
        assert_eq!(
            heading_ids(text),
            ["the-abi", "kvm_run-the-shared-page", "setting-up", "setting-up-1", "mine", "see-the-sdm"]
        );
    }

    #[test]
    fn checks_files_and_fragments() {
        let src = std::env::temp_dir().join(format!("rkvm-links-test-{}", std::process::id()));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.md"), "# A\n## Part two\n").unwrap();
        let page = src.join("b.md");
        let text = "[ok](a.md#part-two) [bad](a.md#part-three) [gone](c.md) [out](../x.md) [web](https://x.org)\n[self](#b)\n# B\n";
        let problems = check(&src, &page, text, "b.md");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("`a.md#part-three` names heading `#part-three`, which does not exist"));
        assert!(problems[1].contains("`c.md` points to a file that does not exist"));
        assert!(problems[2].contains("`../x.md` points outside book/src/"));
        std::fs::remove_dir_all(&src).unwrap();
    }
}
