//! Tests of the browser check's decisions, on reports made up as
//! `look.js` writes them.

use super::*;

/// A picture that loaded and is drawn, as mdBook shows it.
fn drawn(src: &str) -> Shown {
    Shown { kind: "img".into(), src: src.into(), loaded: true, natural: (1000.0, 335.0), visible: true, drawn: (750.0, 251.0) }
}

/// A page whose pictures are `pictures`, with two code blocks.
fn page(pictures: Vec<Shown>) -> Report {
    Report { url: "file:///b/ch01.html".into(), main: true, pictures, code_blocks: 2, ..Report::default() }
}

#[test]
fn a_page_whose_pictures_loaded_and_are_drawn_passes() {
    let hidden_copy = Shown { visible: false, drawn: (0.0, 0.0), ..drawn("images/a.svg") };
    let report = page(vec![drawn("images/a.svg"), hidden_copy]);
    assert_eq!(judge("ch01", &report, &[]), Vec::<String>::new());
}

#[test]
fn a_picture_that_did_not_load_is_named_once() {
    let missing = Shown { loaded: false, natural: (0.0, 0.0), drawn: (16.0, 16.0), ..drawn("images/gone.svg") };
    let hidden = Shown { visible: false, drawn: (0.0, 0.0), ..missing.clone() };
    let problems = judge("ch01", &page(vec![drawn("images/a.svg"), missing, hidden]), &[]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("ch01: picture `images/gone.svg` did not load"), "{problems:?}");
}

#[test]
fn a_picture_with_no_size_of_its_own_is_broken() {
    // An SVG whose width="0": the browser reads it and has nothing to draw.
    let flat = Shown { natural: (0.0, 540.0), ..drawn("images/flat.svg") };
    assert_eq!(
        judge("ch02", &page(vec![flat]), &[]),
        ["ch02: picture `images/flat.svg` loaded but has no size to draw at: it says it is 0 by 540 px"]
    );
}

#[test]
fn a_shown_picture_drawn_zero_wide_is_a_problem_and_a_hidden_one_is_not() {
    let flat = Shown { drawn: (0.0, 251.0), ..drawn("images/flat.svg") };
    let problems = judge("ch03", &page(vec![flat.clone()]), &[]);
    assert_eq!(problems, ["ch03: picture `images/flat.svg` loaded but is drawn 0 by 251 px"]);
    assert!(judge("ch03", &page(vec![Shown { visible: false, ..flat }]), &[]).is_empty());
}

#[test]
fn inline_svg_and_linked_pictures_are_named_by_kind() {
    let svg = Shown { kind: "svg".into(), src: "The world switch".into(), drawn: (0.0, 0.0), ..drawn("") };
    let link = Shown { kind: "link".into(), loaded: false, natural: (0.0, 0.0), visible: false, ..drawn("images/big.png") };
    let problems = judge("ch04", &page(vec![svg, link]), &[]);
    assert_eq!(
        problems,
        [
            "ch04: SVG in the page, `The world switch`, loaded but is drawn 0 by 0 px",
            "ch04: linked picture `images/big.png` did not load in the browser (a missing file, or not a picture it can read)",
        ]
    );
}

#[test]
fn an_include_left_as_text_is_named_unless_the_page_escapes_it() {
    let report = Report {
        directives: vec!["{{#include file:anchor}}".into(), "{{#include ../../stages/05-vmx-entry/src/run.rs:enter}}".into()],
        ..page(vec![])
    };
    let escaped = escaped_directives("- `\\{{#include file:anchor}}` names an existing file");
    assert_eq!(
        judge("appendix", &report, &escaped),
        ["appendix: `{{#include ../../stages/05-vmx-entry/src/run.rs:enter}}` shows as text: mdBook could not expand this include"]
    );
    // An escape covers one occurrence: the same include left twice is one too many.
    let twice = Report { directives: vec!["{{#include file:anchor}}".into(); 2], ..page(vec![]) };
    assert_eq!(judge("appendix", &twice, &escaped).len(), 1);
}

#[test]
fn an_empty_code_block_is_named_by_its_heading() {
    let report = Report { empty: vec!["Entering VMX operation".into(), String::new()], ..page(vec![]) };
    assert_eq!(
        judge("ch04", &report, &[]),
        [
            "ch04: a code block under “Entering VMX operation” is empty: its include selected nothing",
            "ch04: a code block is empty: its include selected nothing",
        ]
    );
}

#[test]
fn a_page_without_main_is_a_problem() {
    let report = Report { main: false, ..page(vec![]) };
    assert_eq!(judge("ch05", &report, &[]).len(), 1);
}

#[test]
fn escaped_directives_are_found_as_the_reader_sees_them() {
    let markdown = "text \\{{#include a.rs:x}} and {{#include b.rs:y}}\n`\\{{#rustdoc_include c.rs}}` \\{{#title";
    assert_eq!(escaped_directives(markdown), ["{{#include a.rs:x}}", "{{#rustdoc_include c.rs}}", "{{#title"]);
}

#[test]
fn the_report_look_js_writes_is_read_in_full() {
    let json = r#"{"url":"file:///b/ch01.html","main":true,
        "pictures":[{"kind":"img","src":"images/a.svg","loaded":true,"natural":[1000,335],"visible":true,"drawn":[750,251.25]}],
        "code_blocks":3,"empty":["A heading"],"directives":["{{#include x.rs:y}}"]}"#;
    let expected = Report {
        url: "file:///b/ch01.html".into(),
        main: true,
        pictures: vec![Shown { drawn: (750.0, 251.25), ..drawn("images/a.svg") }],
        code_blocks: 3,
        empty: vec!["A heading".into()],
        directives: vec!["{{#include x.rs:y}}".into()],
    };
    assert_eq!(parse_report(json).unwrap(), expected);
    assert!(parse_report("not json").is_err());
}

#[test]
fn pictures_are_counted_once_each() {
    let report = page(vec![drawn("images/a.svg"), drawn("images/a.svg"), drawn("images/b.svg")]);
    assert_eq!(pictures_shown(&report), 2);
}

#[test]
fn file_urls_encode_what_a_url_cannot_hold() {
    assert_eq!(file_url(Path::new("/work/book/book/ch01-segments.html")), "file:///work/book/book/ch01-segments.html");
    assert_eq!(file_url(Path::new("/a b/c#d%e.html")), "file:///a%20b/c%23d%25e.html");
}

#[test]
fn counts_are_spelled_out() {
    assert_eq!(counted(1, "picture"), "1 picture");
    assert_eq!(counted(0, "code block"), "0 code blocks");
}
