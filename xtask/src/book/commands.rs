//! The commands the book tells the reader to run: every `$ cargo xtask ...`
//! line of a `console` block must be a command this harness accepts, as
//! written, and an `l1 --stage N` command may only run guests that stage
//! N's module can run, and only a stage the chapter's reader has reached.
//! A chapter that names a flag since renamed, or a guest of a later stage,
//! fails the book check instead of the reader.

use std::path::Path;

/// One command of the book: where it is, and its words after `cargo xtask`.
#[derive(Debug, PartialEq, Eq)]
pub struct BookCommand {
    pub line: usize,
    pub words: Vec<String>,
}

/// The `$ cargo xtask` lines of the page's `console` blocks, with their
/// `# comments` dropped and their words split as a shell splits them.
pub fn commands(text: &str) -> Vec<BookCommand> {
    let mut in_console = false;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_console = !in_console && fence.trim() == "console";
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("$ cargo xtask") else { continue };
        if in_console && (rest.is_empty() || rest.starts_with(' ')) {
            found.push(BookCommand { line: n + 1, words: split(rest) });
        }
    }
    found
}

/// A command line's words, as `sh` splits them: blanks separate words,
/// single and double quotes group them, so does a `$(...)`, and an
/// unquoted `#` after a blank starts a comment.
pub fn split(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => (quote, in_word) = (Some(c), true),
            (None, '\\') => (word, in_word) = (word + &chars.next().map(String::from).unwrap_or_default(), true),
            (None, '#') if !in_word => break,
            (None, '$') if chars.peek() == Some(&'(') => {
                // A command substitution is one word, blanks and all.
                let mut depth = 0;
                word.push(c);
                for c in chars.by_ref() {
                    word.push(c);
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        break;
                    }
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => (word, in_word) = (word + &c.to_string(), true),
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Options of `rkvm-run` that take a value (its `cli.rs`).
const RUNNER_VALUES: [&str; 11] =
    ["--backend", "--timeout", "--max-stage", "--except", "--platform", "--repeat", "--seed", "--seeds", "--first", "--save", "--compare"];

/// `rkvm-run`'s commands that are not guests, with the first stage whose
/// module runs them.
const RUNNER_COMMANDS: [(&str, u32); 5] = [("all", 3), ("check", 3), ("chaos", 10), ("migrate", 11), ("--list", 3)];

/// What `rkvm-run` runs in each of its calls in an L1 script: its first
/// word that is neither an option nor an option's value.
pub fn runner_targets(script: &str) -> Vec<String> {
    let words = split(&script.replace([';', '&', '|'], " ; "));
    let mut targets = Vec::new();
    let mut at = 0;
    while let Some(start) = words.iter().skip(at).position(|w| w == "./rkvm-run").map(|p| p + at + 1) {
        let mut i = start;
        while let Some(w) = words.get(i).filter(|w| w.as_str() != ";") {
            if RUNNER_VALUES.contains(&w.as_str()) {
                i += 2;
            } else if w.starts_with("--") && w != "--list" {
                i += 1;
            } else {
                targets.push(w.clone());
                break;
            }
        }
        at = start;
    }
    targets
}

/// The first stage whose module runs `target` (a guest's header `stage:`,
/// or a runner command's), or why it is not known.
fn first_stage(root: &Path, target: &str) -> Result<u32, String> {
    if let Some((_, stage)) = RUNNER_COMMANDS.iter().find(|(name, _)| *name == target) {
        return Ok(*stage);
    }
    let path = root.join("testguests/guests").join(format!("{target}.asm"));
    let text = std::fs::read_to_string(&path).map_err(|_| format!("`{target}` is no guest of testguests/guests/"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("; stage:"))
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("{} has no `; stage:` line", path.display()))
}

/// The problems of the commands on page `name` (chapter `chapter`, if it
/// is a course chapter): a command the harness refuses, or an L1 command
/// whose stage is past the chapter or cannot run what it asks for.
pub fn check(root: &Path, text: &str, name: &str, chapter: Option<u32>) -> Vec<String> {
    let mut problems = Vec::new();
    for command in commands(text) {
        let shown = format!("{name}:{}: `cargo xtask {}`", command.line, command.words.join(" "));
        if let Err(e) = crate::parse_args(&command.words) {
            let why = e.to_string();
            let first = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("refused").to_string();
            problems.push(format!("{shown}: the harness refuses it: {first}"));
            continue;
        }
        if command.words.first().map(String::as_str) != Some("l1") {
            continue;
        }
        let stage = command.words.windows(2).find(|w| w[0] == "--stage").and_then(|w| w[1].parse::<u32>().ok());
        let Some(stage) = stage else { continue };
        if let Some(chapter) = chapter.filter(|&c| stage > c) {
            problems.push(format!("{shown}: chapter {chapter:02} asks for stage {stage}, which its reader has not reached"));
        }
        let Some(script) = command.words.iter().skip(1).find(|w| !w.starts_with("--") && w.parse::<u32>().is_err())
        else {
            continue;
        };
        for target in runner_targets(script) {
            match first_stage(root, &target) {
                Ok(first) if first > stage => problems.push(format!(
                    "{shown}: `rkvm-run {target}` needs stage {first}'s module, and the command loads stage {stage}'s"
                )),
                Ok(_) => {}
                Err(why) => problems.push(format!("{shown}: {why}")),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_a_shell_splits_them() {
        assert_eq!(split(" test-stage 4 --platform bochs-vmx  # a comment"), ["test-stage", "4", "--platform", "bochs-vmx"]);
        assert_eq!(
            split(r#" l1 --stage 9 'insmod rkvm.ko && ./rkvm-run pt-edit # not a comment' "x y\"z""#),
            ["l1", "--stage", "9", "insmod rkvm.ko && ./rkvm-run pt-edit # not a comment", "x y\"z"]
        );
        assert_eq!(split(" a#b"), ["a#b"]);
        assert_eq!(split(" kmod --kdir /lib/modules/$(uname -r)/build"), ["kmod", "--kdir", "/lib/modules/$(uname -r)/build"]);
    }

    #[test]
    fn only_console_blocks_count() {
        let page = "```console\n$ cargo xtask hint E1.1\n```\n\n$ cargo xtask nothing\n```rust\n$ cargo xtask no\n```\n";
        assert_eq!(commands(page), [BookCommand { line: 2, words: vec!["hint".into(), "E1.1".into()] }]);
    }

    #[test]
    fn the_runner_targets_skip_options_and_their_values() {
        let script = "insmod rkvm.ko shadow_cache=0 && ./rkvm-run --repeat 3 --verbose mmu-switch; ./rkvm-run --list & wait";
        assert_eq!(runner_targets(script), ["mmu-switch", "--list"]);
        assert_eq!(runner_targets("./rkvm-run --timeout 5 spin&sleep 1"), ["spin"]);
    }

    #[test]
    fn a_refused_flag_a_later_stage_and_a_later_guest_are_problems() {
        let root = crate::paths::root();
        let page = "```console\n\
                    $ cargo xtask test-stage 4 --platfrom bochs-vmx\n\
                    $ cargo xtask l1 --stage 9 'insmod rkvm.ko && ./rkvm-run mmu-switch'\n\
                    $ cargo xtask l1 --stage 8 'insmod rkvm.ko && ./rkvm-run --verbose mmu-switch'\n\
                    $ cargo xtask l1 --stage 8 './rkvm-run no-such-guest'\n\
                    $ cargo xtask l1 --stage 8 './rkvm-run paging32'\n\
                    ```\n";
        let problems = check(&root, page, "ch08", Some(8));
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains(":2:") && problems[0].contains("refuses"), "{}", problems[0]);
        assert!(problems[1].contains("stage 9, which its reader has not reached"), "{}", problems[1]);
        assert!(problems[2].contains("`rkvm-run mmu-switch` needs stage 9's module"), "{}", problems[2]);
        assert!(problems[3].contains("`no-such-guest` is no guest"), "{}", problems[3]);
    }
}
