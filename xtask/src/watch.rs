//! `cargo xtask watch [--stage N]`: a stage's exercise tests, again on
//! every save.
//!
//! The stage is the one given; or else, in a stage's handout, the
//! handout's own stage (as for `cargo xtask progress`); or else the first
//! stage of the tree with an exercise still open (as `progress` judges
//! them, running the stages in order until one has). Each time a Rust
//! file under the stage's `src/` is saved, its exercise tests run again on
//! the host, and the screen shows the stage's report as `progress` prints
//! it, what the failing tests of the exercises being worked on said (or
//! cargo's errors), and what to do next. A burst of saves (an editor
//! writing a file and its backup, formatting on save, several files saved
//! at once) is one run: the run starts once no save has come for a moment.
//! Ctrl-C stops.

use crate::course::{self, Course, Report, Stage};
use crate::stages::dir_name;
use anyhow::{Context, Result, bail};
use notify::event::{AccessKind, EventKind};
use notify::{Event, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long the saves must have stopped before the tests run.
const QUIET: Duration = Duration::from_millis(400);

/// Lines shown of each failing test's output.
const LINES_PER_TEST: usize = 12;

#[derive(clap::Args)]
pub struct Args {
    /// Watch stage N (by default, in a stage's handout its own stage, else
    /// the first stage with an exercise still open).
    #[arg(long)]
    pub stage: Option<u32>,
}

pub fn run(args: Args) -> Result<()> {
    let course = Course::here();
    let (stage, mut report) = choose(&course, args.stage)?;
    let src = course.root.join(stage.dir()).join("src");
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).context("starting to watch files")?;
    watcher.watch(&src, RecursiveMode::Recursive).with_context(|| format!("watching {}", src.display()))?;
    let mut saved = Vec::new();
    loop {
        print!("{}", screen(&course.root, &stage, &report, &saved, course::on_terminal()));
        saved = next_change(&rx, QUIET)?.into_iter().map(|p| relative(&course.root.join(stage.dir()), &p)).collect();
        if course::on_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        println!("saved: {}; running stage {}'s exercise tests", saved.join(", "), dir_name(stage.number));
        report = course.check(&stage)?;
    }
}

/// The stage to watch and its first report: stage `given`, or a
/// handout's own stage, or the first with an exercise open (the last one
/// if none has).
fn choose(course: &Course, given: Option<u32>) -> Result<(Stage, Report)> {
    let given = given.or_else(|| course.default_stage());
    let stages = course.stages(given)?;
    let mut last = None;
    for stage in stages {
        let report = course.check(&stage)?;
        if given.is_some() || course::current(std::slice::from_ref(&report)).is_some() {
            return Ok((stage, report));
        }
        println!("stage {}: every exercise passes its host tests", dir_name(stage.number));
        last = Some((stage, report));
    }
    match last {
        Some(found) => Ok(found),
        None => bail!("this tree has no stage crate under stages/"),
    }
}

/// What one run shows: the stage's report, what its failing tests said,
/// what to do next, and that it is watching.
fn screen(root: &Path, stage: &Stage, report: &Report, saved: &[String], terminal: bool) -> String {
    let mut text = String::new();
    if terminal {
        text.push_str("\x1b[2J\x1b[H");
    }
    if !saved.is_empty() {
        text.push_str(&format!("saved: {}\n", saved.join(", ")));
    }
    text.push_str(&report.render());
    let failures = report.failures(LINES_PER_TEST);
    if !failures.is_empty() {
        text.push_str("== what the failing tests said\n");
        text.push_str(&failures);
    }
    text.push_str(&course::next_step(root, std::slice::from_ref(report), true));
    text.push_str(&format!("watching {}/src/ for saves; Ctrl-C stops\n", stage.dir()));
    text
}

/// `src/x.rs` for `.../stages/NN-slug/src/x.rs`.
fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// Waits for the save of a Rust file, then for `quiet` to pass without
/// another; returns the files saved, in order. Fails only if the watcher
/// is gone.
fn next_change(rx: &Receiver<notify::Result<Event>>, quiet: Duration) -> Result<Vec<PathBuf>> {
    let mut saved = BTreeSet::new();
    loop {
        let event = if saved.is_empty() {
            rx.recv().context("the file watcher stopped")?
        } else {
            match rx.recv_timeout(quiet) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => return Ok(saved.into_iter().collect()),
                Err(RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
            }
        };
        match event {
            Ok(event) => saved.extend(changed_sources(&event)),
            Err(e) => eprintln!("watch: {e}"),
        }
    }
}

/// The Rust files an event changed: a write, a creation, a removal or a
/// rename (editors save by renaming), not a read; editors' lock files
/// (`.#x.rs`) are not sources.
fn changed_sources(event: &Event) -> Vec<PathBuf> {
    let changes = match event.kind {
        EventKind::Access(AccessKind::Close(notify::event::AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other | EventKind::Any => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    };
    if !changes {
        return Vec::new();
    }
    let source = |path: &&PathBuf| {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        name.ends_with(".rs") && !name.starts_with(".#")
    };
    event.paths.iter().filter(source).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
    use std::time::Instant;

    fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(path)))
    }

    fn written(path: &str) -> notify::Result<Event> {
        event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), path)
    }

    #[test]
    fn only_changes_of_rust_sources_count() {
        let paths = |e: notify::Result<Event>| changed_sources(&e.unwrap());
        assert_eq!(paths(written("/s/src/vcpu.rs")), [PathBuf::from("/s/src/vcpu.rs")]);
        assert_eq!(paths(event(EventKind::Create(CreateKind::File), "/s/src/new.rs")).len(), 1);
        assert_eq!(paths(event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/s/src/vcpu.rs")).len(), 1);
        assert!(paths(event(EventKind::Access(AccessKind::Read), "/s/src/vcpu.rs")).is_empty());
        assert!(paths(written("/s/src/.vcpu.rs.swp")).is_empty());
        assert!(paths(written("/s/src/.#vcpu.rs")).is_empty());
        assert!(paths(written("/s/src/4913")).is_empty());
    }

    #[test]
    fn a_burst_of_saves_is_one_change() {
        let (tx, rx) = mpsc::channel();
        tx.send(event(EventKind::Access(AccessKind::Read), "/s/src/lib.rs")).unwrap();
        tx.send(written("/s/src/b.rs")).unwrap();
        tx.send(written("/s/src/a.rs")).unwrap();
        tx.send(written("/s/src/b.rs")).unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(written("/s/src/c.rs")).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            tx.send(written("/s/src/d.rs")).unwrap();
            tx
        });
        let start = Instant::now();
        let first = next_change(&rx, Duration::from_millis(200)).unwrap();
        assert_eq!(first, ["/s/src/a.rs", "/s/src/b.rs", "/s/src/c.rs"].map(PathBuf::from));
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
        assert_eq!(next_change(&rx, Duration::from_millis(100)).unwrap(), [PathBuf::from("/s/src/d.rs")]);
        drop(sender.join().unwrap());
        assert!(next_change(&rx, Duration::from_millis(100)).is_err());
    }

    #[test]
    fn the_screen_shows_the_report_what_failed_and_what_next() {
        use crate::course::TestOutput;
        use crate::stages::ExerciseId;
        use crate::stages::hints::ExerciseHints;
        let exercise = |number| ExerciseHints {
            id: ExerciseId { stage: 1, number },
            file: "src/segments.rs".into(),
            instruction: vec!["Encode it.".into()],
            hints: vec![vec!["SDM 3.4.5.".into()]],
        };
        let stage = Stage { number: 1, exercises: vec![exercise(1), exercise(2)] };
        let output = "test segments::tests::e1_1::encodes ... FAILED\ntest segments::tests::e1_2::decodes ... FAILED\n\n\
                      ---- segments::tests::e1_1::encodes stdout ----\n\nthread 'segments::tests::e1_1::encodes' (7) panicked at src/segments.rs:9:5:\n\
                      wrong limit\n\nfailures:\n";
        let report = Report::new(&stage, TestOutput::parse(output, false), vec![None, Some(30)], Duration::from_secs(1));
        let text = screen(Path::new("/nonexistent"), &stage, &report, &["src/segments.rs".into()], false);
        assert!(text.starts_with("saved: src/segments.rs\n== stage 01-segments  [----------]  0 of 2 exercises solved (1s)\n"), "{text}");
        assert!(text.contains("\n== what the failing tests said\n  segments::tests::e1_1::encodes:\n      panicked at src/segments.rs:9:5:\n      wrong limit\n"), "{text}");
        assert!(text.contains("\nnext: E1.1 in stages/01-segments/src/segments.rs\n"), "{text}");
        assert!(!text.contains("cargo xtask watch"), "{text}");
        assert!(text.ends_with("watching stages/01-segments/src/ for saves; Ctrl-C stops\n"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(screen(Path::new("/nonexistent"), &stage, &report, &[], true).starts_with("\x1b[2J\x1b[H== stage 01-segments"));
    }
}
