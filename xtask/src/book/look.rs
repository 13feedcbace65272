//! The built book, looked at in a browser: headless Chromium opens every
//! page of `book/book/`, takes a screenshot of the whole page into
//! `target/book/screenshots/<page>.png`, and reports what it shows (the
//! script `look.js`), and [`judge`] finds the problems in that report:
//!
//! - a picture (`<img>`, SVG in the page, or a link to a picture) that did
//!   not load or has no size, and one that loaded but is drawn 0 px wide
//!   or high;
//! - an include mdBook could not expand: its `{{#include ...}}` is left in
//!   the text (unless the page escapes it to show it, `\{{#include`);
//! - a code block with no text: an include whose anchor selected nothing.
//!
//! The source checks catch most of these before mdBook runs; this one sees
//! what a reader's browser sees. Before the book, it looks at a page built
//! with one of each of these mistakes ([`PLANTED`]) and fails unless it
//! finds them all: every run proves that the check can fail.

use super::browser::Browser;
use super::links;
use crate::paths;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What the browser shows of one page (the JSON `look.js` returns).
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub url: String,
    /// Whether the page has mdBook's `<main>`, the chapter's text.
    pub main: bool,
    pub pictures: Vec<Shown>,
    pub code_blocks: usize,
    /// For each code block with no text, the heading above it.
    pub empty: Vec<String>,
    /// Text that starts like an mdBook directive, `{{#...}}`.
    pub directives: Vec<String>,
}

/// One picture of a page as the browser shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shown {
    /// `img`, `svg` (written into the page) or `link` (a link to a picture).
    pub kind: String,
    /// The `src` or link target as written, or an SVG's title.
    pub src: String,
    pub loaded: bool,
    /// The picture's own size in px, as its file gives it.
    pub natural: (f64, f64),
    /// Whether the page shows it (mdBook hides the enlarged copy).
    pub visible: bool,
    /// The size it is drawn at in the page, in CSS px.
    pub drawn: (f64, f64),
}

/// Reads `look.js`'s answer.
pub fn parse_report(json: &str) -> Result<Report> {
    let value: Value = serde_json::from_str(json).context("reading the page's report")?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    let pair = |v: &Value, key: &str| {
        let at = |i: usize| v.get(key).and_then(|p| p.get(i)).and_then(Value::as_f64).unwrap_or(0.0);
        (at(0), at(1))
    };
    let list = |key: &str| value.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let strings = |key: &str| list(key).iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect();
    let pictures = list("pictures")
        .iter()
        .map(|p| Shown {
            kind: text(p, "kind"),
            src: text(p, "src"),
            loaded: flag(p, "loaded"),
            natural: pair(p, "natural"),
            visible: flag(p, "visible"),
            drawn: pair(p, "drawn"),
        })
        .collect();
    Ok(Report {
        url: text(&value, "url"),
        main: flag(&value, "main"),
        pictures,
        code_blocks: value.get("code_blocks").and_then(Value::as_u64).unwrap_or(0) as usize,
        empty: strings("empty"),
        directives: strings("directives"),
    })
}

/// The directives a page's Markdown escapes (`\{{#include x}}`) to show
/// them as text, as the reader sees them (`{{#include x}}`).
pub fn escaped_directives(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in markdown.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("\\{{") {
            rest = &rest[at + 1..];
            let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
            found.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    found
}

/// The problems of one page, one line each, naming `page` and the picture
/// or include. `escaped` are the directives the page's Markdown shows on
/// purpose ([`escaped_directives`]).
pub fn judge(page: &str, report: &Report, escaped: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !report.main {
        problems.push(format!("{page}: the page has no <main> element, where mdBook puts the chapter's text"));
    }
    for shown in &report.pictures {
        let what = match shown.kind.as_str() {
            "svg" if shown.src.is_empty() => "SVG in the page".to_string(),
            "svg" => format!("SVG in the page, `{}`,", shown.src),
            "link" => format!("linked picture `{}`", shown.src),
            _ => format!("picture `{}`", shown.src),
        };
        let (width, height) = shown.natural;
        let problem = if !shown.loaded {
            format!("{page}: {what} did not load in the browser (a missing file, or not a picture it can read)")
        } else if width <= 0.0 || height <= 0.0 {
            format!("{page}: {what} loaded but has no size to draw at: it says it is {width} by {height} px")
        } else if shown.visible && (shown.drawn.0 <= 0.0 || shown.drawn.1 <= 0.0) {
            format!("{page}: {what} loaded but is drawn {} by {} px", shown.drawn.0, shown.drawn.1)
        } else {
            continue;
        };
        // mdBook shows each picture twice (see look.js): say it once.
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    let mut expected: Vec<&String> = escaped.iter().collect();
    for directive in &report.directives {
        match expected.iter().position(|e| *e == directive) {
            Some(at) => _ = expected.remove(at),
            None => problems.push(format!("{page}: `{directive}` shows as text: mdBook could not expand this include")),
        }
    }
    for heading in &report.empty {
        let under = if heading.is_empty() { String::new() } else { format!(" under “{heading}”") };
        problems.push(format!("{page}: a code block{under} is empty: its include selected nothing"));
    }
    problems
}

/// The number of pictures a report shows, each counted once.
fn pictures_shown(report: &Report) -> usize {
    let mut seen: Vec<(&str, &str)> = report.pictures.iter().map(|p| (p.kind.as_str(), p.src.as_str())).collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

/// `1 picture`, `2 pictures`.
fn counted(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// A `file://` URL for an absolute path, with every byte outside RFC 3986's
/// unreserved set (and `/`) percent-encoded.
pub fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => url.push(char::from(*byte)),
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// The pages of the book in `book_dir`, in the order `SUMMARY.md` lists
/// them: (name, Markdown source, built HTML page).
fn pages(book_dir: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let src = book_dir.join("src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).context("reading book/src/SUMMARY.md")?;
    let mut pages = Vec::new();
    for link in links::links(&summary) {
        let Some(stem) = link.target.strip_suffix(".md") else { continue };
        if pages.iter().any(|(name, _, _)| name == stem) {
            continue;
        }
        let path = src.join(&link.target);
        let markdown = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        pages.push((stem.to_string(), markdown, book_dir.join("book").join(format!("{stem}.html"))));
    }
    Ok(pages)
}

/// Where the screenshots go.
fn screenshots_dir() -> PathBuf {
    paths::target().join("book").join("screenshots")
}

/// Opens `page` in the browser, saves its screenshot to `png`, and returns
/// what the browser shows of it.
fn look_at(browser: &mut Browser, page: &Path, png: &Path) -> Result<Report> {
    let url = file_url(page);
    browser.open(&url)?;
    let report = parse_report(&browser.evaluate(include_str!("look.js"))?)?;
    if report.url != url {
        bail!("the browser reported on {} instead of {url}", report.url);
    }
    let shot = browser.screenshot()?;
    std::fs::write(png, shot).with_context(|| format!("writing {}", png.display()))?;
    Ok(report)
}

/// Looks at every page of the book built in `book_dir/book/` (see the
/// module's comment), after proving on a planted broken page that the
/// check fails there. Fails naming each page and picture or include.
pub fn all(mdbook: &Path, book_dir: &Path) -> Result<()> {
    let work = paths::target().join("book");
    let shots = screenshots_dir();
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).with_context(|| format!("creating {}", shots.display()))?;
    let start = Instant::now();
    let mut browser = Browser::launch(&work.join("chromium-profile"), &work.join("chromium.log"))?;
    catches_planted(&mut browser, mdbook, &work.join("planted"))?;
    let pages = pages(book_dir)?;
    let (mut problems, mut pictures) = (Vec::new(), 0);
    for (index, (name, markdown, html)) in pages.iter().enumerate() {
        let page_start = Instant::now();
        let png = shots.join(format!("{name}.png"));
        let report = look_at(&mut browser, html, &png).with_context(|| format!("looking at {name}"))?;
        let found = judge(name, &report, &escaped_directives(markdown));
        pictures += pictures_shown(&report);
        println!(
            "book: [{}/{}] {name}: {}, {}, {}{:.1} s",
            index + 1,
            pages.len(),
            counted(pictures_shown(&report), "picture"),
            counted(report.code_blocks, "code block"),
            if found.is_empty() { String::new() } else { format!("{}, ", counted(found.len(), "problem")) },
            page_start.elapsed().as_secs_f64()
        );
        problems.extend(found);
    }
    drop(browser);
    println!(
        "book: {} ({}) looked at in Chromium in {:.1} s; screenshots in {}",
        counted(pages.len(), "page"),
        counted(pictures, "picture"),
        start.elapsed().as_secs_f64(),
        shots.display()
    );
    if problems.is_empty() {
        return Ok(());
    }
    eprintln!("the built book has problems in a browser:");
    for problem in &problems {
        eprintln!("  {problem}");
    }
    bail!("{} in the built book; fix them and run `cargo xtask book` again", counted(problems.len(), "problem"))
}

/// The planted page: a missing picture, a link to a missing picture, an
/// SVG with no width, an include of a missing file, and an include of an
/// anchor its file lacks.
const PLANTED: &str = "# Planted\n\n![A missing picture](images/missing.svg)\n\n\
    [The picture, enlarged](images/missing-too.png)\n\n\
    <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"20\"><title>A flat picture</title></svg>\n\n\
    ```rust\n{{#include missing.rs:anchor}}\n```\n\n\
    ## Missing anchor\n\n```rust\n{{#include there.rs:anchor}}\n```\n";

/// What the check must say of the planted page: a part of each problem.
const PLANTED_PROBLEMS: [&str; 5] = [
    "picture `images/missing.svg` did not load",
    "linked picture `images/missing-too.png` did not load",
    "SVG in the page, `A flat picture`, loaded but has no size",
    "`{{#include missing.rs:anchor}}` shows as text",
    "code block under “Missing anchor” is empty",
];

/// Builds a one-page book with [`PLANTED`] in `dir` and fails unless the
/// browser check finds each of [`PLANTED_PROBLEMS`] there.
fn catches_planted(browser: &mut Browser, mdbook: &Path, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let files = [
        ("book.toml", "[book]\ntitle = \"planted\"\n"),
        ("src/SUMMARY.md", "# Summary\n\n- [Planted](planted.md)\n"),
        ("src/planted.md", PLANTED),
        ("src/there.rs", "fn there() {}\n"),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // mdBook complains about the include, and is meant to here.
    let built = Command::new(mdbook).arg("build").arg(dir).output().with_context(|| format!("running {}", mdbook.display()))?;
    if !built.status.success() {
        bail!("mdBook did not build the planted page in {}: {}", dir.display(), String::from_utf8_lossy(&built.stderr));
    }
    let report = look_at(browser, &dir.join("book").join("planted.html"), &dir.join("planted.png"))?;
    let found = judge("planted", &report, &[]);
    let missed: Vec<&str> = PLANTED_PROBLEMS.into_iter().filter(|p| !found.iter().any(|f| f.contains(p))).collect();
    if !missed.is_empty() || found.len() != PLANTED_PROBLEMS.len() {
        bail!(
            "the browser check is not to be trusted: on the page planted in {}/src/planted.md it should find {PLANTED_PROBLEMS:?} \
             and found {found:?}. The browser or mdBook must have changed how it shows these",
            dir.display()
        );
    }
    println!("book: the browser check finds the {} problems planted in {}/src/planted.md", PLANTED_PROBLEMS.len(), dir.display());
    Ok(())
}

#[cfg(test)]
#[path = "look_tests.rs"]
mod tests;
