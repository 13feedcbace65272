//! Tests of the projection: which lines each stage keeps, and the holes.

use super::*;
use crate::stages::marker::parse;

const SOURCE: &str = "//@ stage 1
//! A file.
// ANCHOR: all
fn one() {}
//@ begin 2
fn two() {}
//@ begin 3
fn three() {}
//@ end
//@ end

//@ begin 1 until 3
// old
//@ end
//@ begin 3
fn new() {}
//@ end

fn answer() -> u32 {
    //@ exercise E2.1
    //@ instruction: return the answer.
    //@ hint: six times seven.
    //@+ Or ask.
    42
    //@ end
}
// ANCHOR_END: all
";

fn stage(n: u32, form: Form) -> String {
    let file = parse("src/a.rs", SOURCE).unwrap();
    project(&file, n, form).map(|lines| lines.join("\n")).unwrap_or_else(|| "<absent>".into())
}

#[test]
fn stage_one_has_only_stage_one_lines_and_no_markers() {
    let text = stage(1, Form::Skeleton);
    assert_eq!(
        text,
        "//! A file.\n// ANCHOR: all\nfn one() {}\n\n// old\n\nfn answer() -> u32 {\n}\n// ANCHOR_END: all"
    );
}

#[test]
fn a_stage_skeleton_replaces_its_own_exercise_with_a_hole() {
    let text = stage(2, Form::Skeleton);
    assert!(text.contains("fn two() {}\n\n// old"), "{text}");
    assert!(!text.contains("three") && !text.contains("42") && !text.contains("//@"), "{text}");
    let hole = "    // Exercise E2.1.\n    // Instruction: return the answer.\n    // Hint: `cargo xtask hint E2.1`.\n    \
                todo!(\"E2.1\")\n}";
    assert!(text.contains(hole), "{text}");
    assert!(!text.contains("six times seven"), "the hints stay out of the source: {text}");
}

#[test]
fn a_hole_with_several_hints_says_how_many() {
    let graduated = SOURCE.replace("    //@+ Or ask.\n", "    //@ hint: or ask.\n");
    let file = parse("src/a.rs", &graduated).unwrap();
    let text = project(&file, 2, Form::Skeleton).unwrap().join("\n");
    assert!(text.contains("    // Hints: `cargo xtask hint E2.1`, then `--more` for the next (2 in all).\n    todo!"), "{text}");
}

#[test]
fn the_solved_form_and_later_stages_have_the_solution() {
    assert!(stage(2, Form::Solved).contains("fn answer() -> u32 {\n    42\n}"));
    let three = stage(3, Form::Skeleton);
    assert!(three.contains("fn three() {}") && three.contains("fn new() {}") && three.contains("    42\n"), "{three}");
    assert!(!three.contains("old") && !three.contains("todo!"), "{three}");
}

#[test]
fn a_file_is_absent_before_its_stage() {
    let file = parse("src/b.rs", "//@ stage 3\nfn b() {}\n").unwrap();
    assert_eq!(project(&file, 2, Form::Skeleton), None);
    assert_eq!(project(&file, 3, Form::Skeleton), Some(vec!["fn b() {}".to_string()]));
}

#[test]
fn exercises_of_names_only_the_stage_own_exercises() {
    let file = parse("src/a.rs", SOURCE).unwrap();
    assert!(exercises_of(&file, 1).is_empty());
    assert_eq!(exercises_of(&file, 2).iter().map(|e| e.id.to_string()).collect::<Vec<_>>(), ["E2.1"]);
    assert!(exercises_of(&file, 3).is_empty());
}

#[test]
fn a_hole_in_a_const_fn_is_a_const_panic() {
    let text = "//@ stage 1\nconst fn f() -> u8 {\n    //@ exercise E1.1\n    //@ instruction: a\n    //@ hint: b\n    1\n    //@ end\n}\n";
    let file = parse("src/c.rs", text).unwrap();
    let lines = project(&file, 1, Form::Skeleton).unwrap();
    assert!(lines.contains(&"    panic!(\"not yet implemented: E1.1\")".to_string()), "{lines:?}");
}
