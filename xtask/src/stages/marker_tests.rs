//! Tests of the marker parser: what it accepts, and every error it names.

use super::*;

fn err(path: &str, text: &str) -> String {
    format!("{:#}", parse(path, text).unwrap_err())
}

fn region_ranges(nodes: &[Node]) -> Vec<StageRange> {
    let mut out = Vec::new();
    for node in nodes {
        if let Node::Region { range, body } = node {
            out.push(*range);
            out.extend(region_ranges(body));
        }
    }
    out
}

#[test]
fn reads_the_stage_of_a_file_in_each_comment_syntax() {
    assert_eq!(parse("src/a.rs", "//@ stage 2\nfn f() {}\n").unwrap().stage, 2);
    assert_eq!(parse("Cargo.toml", "#@ stage 1\n[package]\n").unwrap().comment, "#");
    assert_eq!(parse("guest.asm", ";@ stage 5\nhlt\n").unwrap().stage, 5);
    assert_eq!(parse("Kbuild", "#@ stage 3\nobj-m += rkvm.o\n").unwrap().stage, 3);
}

#[test]
fn a_file_without_a_stage_marker_is_named_in_the_error() {
    let e = err("src/x.rs", "//! docs\n//@ stage 1\n");
    assert!(e.contains("kmod/src/x.rs") && e.contains("must start with a stage marker"), "{e}");
    assert!(err("src/x.rs", "").contains("must start with a stage marker"));
}

#[test]
fn an_unknown_file_type_is_an_error() {
    assert!(err("data.bin", "#@ stage 1\n").contains("comment syntax"));
}

#[test]
fn a_shebang_may_precede_the_stage_marker() {
    let file = parse("run.sh", "#!/bin/sh\n#@ stage 3\necho hi\n").unwrap();
    assert_eq!(file.shebang.as_deref(), Some("#!/bin/sh"));
    assert_eq!(file.stage, 3);
}

#[test]
fn regions_nest() {
    let text = "//@ stage 1\na\n//@ begin 2\nb\n//@ begin 3 until 5\n// c\n//@ end\n//@ end\nd\n";
    let file = parse("src/a.rs", text).unwrap();
    let ranges = region_ranges(&file.body);
    assert_eq!(ranges, [StageRange { from: 2, until: None }, StageRange { from: 3, until: Some(5) }]);
}

#[test]
fn unbalanced_markers_are_errors_with_their_line() {
    let e = err("src/a.rs", "//@ stage 1\n//@ end\n");
    assert!(e.contains("kmod/src/a.rs:2") && e.contains("without an open"), "{e}");
    let e = err("src/a.rs", "//@ stage 1\nx\n//@ begin 2\ny\n");
    assert!(e.contains("kmod/src/a.rs:3") && e.contains("never closed"), "{e}");
}

#[test]
fn a_region_cannot_begin_before_the_file_or_region_around_it() {
    let e = err("src/a.rs", "//@ stage 3\n//@ begin 2\nx\n//@ end\n");
    assert!(e.contains("before the region or file around it (stage 3)"), "{e}");
    let e = err("src/a.rs", "//@ stage 1\n//@ begin 1 until 3\n//@ begin 3\nx\n//@ end\n//@ end\n");
    assert!(e.contains("already gone"), "{e}");
    let e = err("src/a.rs", "//@ stage 1\n//@ begin 1 until 3\n//@ begin 2 until 4\nx\n//@ end\n//@ end\n");
    assert!(e.contains("ends after"), "{e}");
}

#[test]
fn a_region_that_later_stages_replace_holds_nothing_the_full_module_would_run() {
    let ok = "//@ stage 1\n//@ begin 2 until 4\n/// Docs.\n#[allow(dead_code)]\nlet _ = len;\n\n//@ end\n";
    assert!(parse("src/a.rs", ok).is_ok());
    let e = err("src/a.rs", "//@ stage 1\nfn f() {\n//@ begin 2 until 4\n    zap();\n//@ end\n}\n");
    assert!(e.contains("kmod/src/a.rs:3") && e.contains("`zap();`") && e.contains("stage 4"), "{e}");
    assert!(err("src/a.rs", "//@ stage 1\n//@ begin 2 until 4\nlet _ = f(x);\n//@ end\n").contains("let _ = f(x);"));
}

#[test]
fn malformed_markers_are_errors() {
    assert!(err("src/a.rs", "//@ stage 1\n//@ begin 4 until 4\n").contains("no stage"));
    assert!(err("src/a.rs", "//@ stage 1\n//@ begin 14\n").contains("stage 14 does not exist"));
    assert!(err("src/a.rs", "//@ stage 0\n").contains("stage 0 does not exist"));
    assert!(err("src/a.rs", "//@ stage 1\n//@ begn 2\n").contains("not a stage marker"));
    assert!(err("src/a.rs", "//@ stage 1\n//@ stage 2\n").contains("first marker"));
    assert!(err("src/a.rs", "//@ stage 1\n//@ exercise 1.2\n").contains("looks like E1.2"));
    assert!(err("src/a.rs", "//@ stage 1\n//@ hint: x\n").contains("right after an `exercise`"));
}

const EXERCISE: &str = "//@ stage 1
fn f() -> u8 {
    //@ exercise E1.2
    //@ instruction: return the answer,
    //@+ as a byte.
    //@ hint: it is 42.
    42
    //@ end
}
";

#[test]
fn an_exercise_keeps_its_text_solution_and_place() {
    let file = parse("src/a.rs", EXERCISE).unwrap();
    let Node::Exercise(e) = &file.body[1] else { panic!("expected an exercise: {:?}", file.body) };
    assert_eq!(e.id, ExerciseId { stage: 1, number: 2 });
    assert_eq!((e.file.as_str(), e.line, e.indent.as_str()), ("src/a.rs", 3, "    "));
    assert_eq!(e.instruction, ["return the answer,", "as a byte."]);
    assert_eq!(e.hints, [["it is 42."]]);
    assert_eq!(e.body, ["    42"]);
    assert!(!e.in_const_fn);
}

#[test]
fn each_hint_marker_starts_the_next_hint() {
    let graduated = EXERCISE.replace(
        "    //@ hint: it is 42.\n",
        "    //@ hint: it is a number.\n    //@ hint: six times seven,\n    //@+ in decimal.\n    //@ hint: it is 42.\n",
    );
    let file = parse("src/a.rs", &graduated).unwrap();
    let Node::Exercise(e) = &file.body[1] else { panic!("expected an exercise: {:?}", file.body) };
    assert_eq!(e.hints, [vec!["it is a number."], vec!["six times seven,", "in decimal."], vec!["it is 42."]]);
    assert_eq!(e.body, ["    42"]);
    let hint_first = EXERCISE.replace("    //@ instruction: return the answer,\n    //@+ as a byte.\n", "");
    assert!(err("src/a.rs", &hint_first).contains("one or more"));
}

#[test]
fn an_exercise_needs_an_instruction_then_a_hint_then_lines() {
    let no_hint = EXERCISE.replace("    //@ hint: it is 42.\n", "");
    assert!(err("src/a.rs", &no_hint).contains("must be followed by"));
    let no_text = "//@ stage 1\n//@ exercise E1.1\nx\n//@ end\n";
    assert!(err("src/a.rs", no_text).contains("must be followed by"));
    let no_body = "//@ stage 1\n//@ exercise E1.1\n//@ instruction: a\n//@ hint: b\n//@ end\n";
    assert!(err("src/a.rs", no_body).contains("no solution lines"));
}

#[test]
fn an_exercise_whose_stage_does_not_match_its_region_is_an_error() {
    let e = err("src/a.rs", &EXERCISE.replace("//@ stage 1", "//@ stage 2"));
    assert!(e.contains("the exercise begins at stage 1, before the region or file around it (stage 2)"), "{e}");
    let inside = "//@ stage 1\n//@ begin 1 until 2\n//@ exercise E2.1\n//@ instruction: a\n//@ hint: b\nx\n//@ end\n//@ end\n";
    assert!(err("src/a.rs", inside).contains("already gone"));
}

#[test]
fn an_exercise_holds_no_markers_and_lives_in_rust() {
    let nested = EXERCISE.replace("    42\n", "    //@ begin 2\n    42\n    //@ end\n");
    assert!(err("src/a.rs", &nested).contains("cannot sit inside an exercise"));
    let c = "//@ stage 1\n//@ exercise E1.1\n//@ instruction: a\n//@ hint: b\nx;\n//@ end\n";
    assert!(err("glue/x.c", c).contains("only be Rust"));
}

#[test]
fn finds_whether_an_exercise_sits_in_a_const_fn() {
    let text = "//@ stage 1\nimpl S {\n    pub const fn new(\n        x: u8,\n    ) -> u8 {\n        // a fn note\n        \
                if x > 0 {\n            //@ exercise E1.1\n            //@ instruction: a\n            //@ hint: b\n            \
                x\n            //@ end\n        } else { 0 }\n    }\n}\n";
    let file = parse("src/a.rs", text).unwrap();
    assert!(matches!(&file.body[6], Node::Exercise(e) if e.in_const_fn), "{:?}", file.body);
    let plain = parse("src/a.rs", EXERCISE).unwrap();
    assert!(matches!(&plain.body[1], Node::Exercise(e) if !e.in_const_fn));
}

#[test]
fn exercise_ids_parse_leniently_and_print_canonically() {
    let id = ExerciseId { stage: 12, number: 3 };
    for text in ["E12.3", "e12.3", "12.3", "E12_3", " E12.3 "] {
        assert_eq!(ExerciseId::parse(text), Some(id), "{text}");
    }
    for text in ["E", "E1", "E1.", "Ex.1", "E1.2.3"] {
        assert_eq!(ExerciseId::parse(text), None, "{text}");
    }
    assert_eq!(id.to_string(), "E12.3");
    assert_eq!(id.test_module(), "e12_3");
}
