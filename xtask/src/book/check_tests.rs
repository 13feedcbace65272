//! Tests of the book checks, on a small book made in a temporary directory.

use super::*;

/// A repository with a kmod file, a generated stage file and a book.
struct Fixture {
    root: PathBuf,
}

/// A picture that is well-formed SVG.
const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>ok</text></svg>\n";

impl Fixture {
    /// A book whose chapter is `chapter` and then a picture.
    fn new(chapter: &str) -> Fixture {
        Fixture::bare(&format!("{chapter}\n![A picture](images/ok.svg)\n"))
    }

    /// A book whose chapter is `chapter` alone.
    fn bare(chapter: &str) -> Fixture {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("rkvm-book-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let files = [
            ("kmod/src/a.rs", KMOD),
            ("stages/01-segments/src/a.rs", "// ANCHOR: sel\npub fn selector() {}\n// ANCHOR_END: sel\n// ANCHOR: open\n"),
            ("book/src/SUMMARY.md", "# Summary\n\n- [One](ch01.md)\n"),
            ("book/src/ch01.md", chapter),
            ("book/src/images/ok.svg", SVG),
        ];
        for (path, text) in files {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), text).unwrap();
        }
        Fixture { root }
    }

    fn problems(&self) -> Vec<String> {
        all(&self.root).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const KMOD: &str = "//@ stage 1\npub fn selector(index: u16) -> u16 {\n    let shifted = index << 3;\n    \
                    shifted | requested_privilege_level\n}\n";

#[test]
fn a_clean_book_has_no_problems() {
    let book = Fixture::new("# One\n\n```rust\n{{#include ../../stages/01-segments/src/a.rs:sel}}\n```\n");
    assert_eq!(book.problems(), Vec::<String>::new());
}

#[test]
fn names_missing_files_and_anchors() {
    let chapter = "# One\n{{#include ../../stages/01-segments/src/b.rs:sel}}\n\
                   {{#include ../../stages/01-segments/src/a.rs:nope}}\n\
                   {{#include ../../stages/01-segments/src/a.rs:open}}\n";
    let problems = Fixture::new(chapter).problems().join("\n");
    assert!(problems.contains("ch01.md:2: include of `../../stages/01-segments/src/b.rs`: the file does not exist"), "{problems}");
    assert!(problems.contains("ch01.md:3: include of `../../stages/01-segments/src/a.rs`: the file has no `ANCHOR: nope` line"), "{problems}");
    assert!(problems.contains("ch01.md:4: include of `../../stages/01-segments/src/a.rs`: the file has no `ANCHOR_END: open` line"), "{problems}");
}

#[test]
fn refuses_line_numbers_and_kmod_includes() {
    let chapter = "# One\n{{#include ../../stages/01-segments/src/a.rs:1:2}}\n{{#include ../../kmod/src/a.rs}}\n\\{{#include nothing.rs}}\n";
    let problems = Fixture::new(chapter).problems().join("\n");
    assert!(problems.contains("`:1:2` selects lines by number"), "{problems}");
    assert!(problems.contains("ch01.md:3: include of `../../kmod/src/a.rs`: kmod/'s marker lines would show"), "{problems}");
    assert!(!problems.contains("nothing.rs"), "an escaped include is text: {problems}");
}

#[test]
fn finds_code_pasted_from_kmod() {
    let chapter = "# One\n\n```rust\npub fn selector(index: u16) -> u16 {\n    let shifted = index << 3;\n    \
                   shifted | requested_privilege_level\n}\n```\n\n```rust\nlet x = other_code_entirely();\n```\n";
    let problems = Fixture::new(chapter).problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("ch01.md:3: this code block repeats code from kmod/"), "{problems:?}");
}

#[test]
fn pages_missing_from_the_summary_are_named() {
    let book = Fixture::new("# One\n");
    std::fs::write(book.root.join("book/src/extra.md"), "# Extra\n").unwrap();
    let problems = book.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("extra.md is not listed in book/src/SUMMARY.md"), "{problems:?}");
}

#[test]
fn parses_include_directives() {
    let text = "a {{#include x.rs:anc}} b {{ #rustdoc_include y.rs }}\n\\{{#include z.rs}}";
    let found = parse_includes(text);
    assert_eq!(
        found,
        [
            Include { line: 1, path: "x.rs".into(), selector: Some("anc".into()) },
            Include { line: 1, path: "y.rs".into(), selector: None },
        ]
    );
}

#[test]
fn a_course_chapter_without_a_picture_is_named() {
    let problems = Fixture::bare("# One\n\nNo picture here; `![not](one.svg)` is code.\n").problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("ch01.md: a course chapter shows no picture"), "{problems:?}");
}

#[test]
fn pages_outside_the_course_need_no_picture() {
    let book = Fixture::new("# One\n");
    std::fs::write(book.root.join("book/src/SUMMARY.md"), "# Summary\n\n- [One](ch01.md)\n- [Setup](setup.md)\n- [Fourteen](ch14-x.md)\n").unwrap();
    std::fs::write(book.root.join("book/src/setup.md"), "# Setup\n").unwrap();
    std::fs::write(book.root.join("book/src/ch14-x.md"), "# Fourteen\n").unwrap();
    assert_eq!(book.problems(), Vec::<String>::new());
}

#[test]
fn missing_and_broken_pictures_are_named() {
    let chapter = "# One\n\n![Gone](images/gone.svg)\n\n![Broken\nover two lines](images/bad.svg)\n\n\
                   ![](images/ok.svg)\n\nA [link to a picture](images/gone.png).\n";
    let book = Fixture::bare(chapter);
    std::fs::write(book.root.join("book/src/images/bad.svg"), "<svg><g></svg>\n").unwrap();
    let problems = book.problems().join("\n");
    assert!(problems.contains("ch01.md:3: picture `images/gone.svg`: the file does not exist in book/src/"), "{problems}");
    assert!(problems.contains("ch01.md:5: picture `images/bad.svg` is not a well-formed SVG: line 1: </svg> closes <g>"), "{problems}");
    assert!(problems.contains("ch01.md:8: picture `images/ok.svg` has no alt text"), "{problems}");
    assert!(problems.contains("ch01.md:10: picture `images/gone.png`: the file does not exist"), "{problems}");
    assert_eq!(book.problems().len(), 4, "{problems}");
}

#[test]
fn drawn_pictures_no_page_shows_are_named() {
    let book = Fixture::new("# One\n");
    let drawn = crate::book::diagram::drawn_dir(&book.root);
    std::fs::create_dir_all(&drawn).unwrap();
    std::fs::write(drawn.join("lonely.svg"), SVG).unwrap();
    assert_eq!(book.problems(), ["book/diagrams/lonely.txt is drawn, but no page shows it"]);
}

#[test]
fn parses_pictures_over_lines() {
    let text = "# A\n\n![The first,\nin two lines](images/a.svg \"title\")\n```\n![code](x.svg)\n```\n\
                text ![b](<images/b.svg>) and [not a picture](c.md)\n\n![no\n\nparagraph](d.svg)\n";
    let found = parse_pictures(text);
    assert_eq!(
        found,
        [
            Picture { line: 3, alt: "The first, in two lines".into(), target: "images/a.svg".into() },
            Picture { line: 8, alt: "b".into(), target: "images/b.svg".into() },
        ]
    );
    assert!(is_picture("images/a.SVG") && is_picture("x.png#frag") && !is_picture("a.md"));
}
