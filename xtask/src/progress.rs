//! Progress for long steps: a build's output goes to a log file (or is
//! kept for its errors), and the reader sees what the step is doing and for
//! how long it has been at it, even while the build itself prints nothing
//! (one crate compiled with LTO, a linker): on a terminal one status line
//! rewritten every second, elsewhere (a pipe, a log) a line every ten
//! seconds.

use anyhow::Result;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Where progress goes, and how often.
struct Status {
    tty: bool,
    every: Duration,
    shown: bool,
}

impl Status {
    fn new() -> Status {
        let tty = std::io::stdout().is_terminal();
        Status { tty, every: Duration::from_secs(if tty { 1 } else { 10 }), shown: false }
    }

    fn show(&mut self, text: &str) {
        if self.tty {
            print!("\r{text}\x1b[K");
            let _ = std::io::stdout().flush();
            self.shown = true;
        } else {
            println!("{text}");
        }
    }

    /// Removes the status line, so that what follows starts clean.
    fn clear(&mut self) {
        if self.shown {
            print!("\r\x1b[K");
            let _ = std::io::stdout().flush();
            self.shown = false;
        }
    }
}

/// Reads `child`'s stdout and stderr line by line, giving each line to
/// `on_line`, and shows what `status` says, given the time elapsed, every
/// so often until the child ends; returns its status.
fn follow(child: &mut Child, mut on_line: impl FnMut(&str) -> Result<()>, mut status: impl FnMut(Duration) -> String) -> Result<ExitStatus> {
    let (tx, rx) = mpsc::channel::<String>();
    let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ];
    let readers: Vec<_> = streams
        .into_iter()
        .flatten()
        .map(|stream| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            })
        })
        .collect();
    drop(tx);
    let (start, mut last, mut shown) = (Instant::now(), Instant::now(), Status::new());
    loop {
        match rx.recv_timeout(shown.every.saturating_sub(last.elapsed())) {
            Ok(line) => on_line(&line)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last.elapsed() >= shown.every {
            last = Instant::now();
            shown.show(&status(start.elapsed()));
        }
    }
    shown.clear();
    for r in readers {
        let _ = r.join();
    }
    Ok(child.wait()?)
}

/// Waits for a Kbuild `make`, copying its output to `log` and printing how
/// many files it compiled so far against about `expected`.
pub fn follow_build(child: &mut Child, log: &Path, label: &str, expected: usize) -> Result<ExitStatus> {
    let mut out = File::create(log)?;
    let files = std::cell::Cell::new(0usize);
    follow(
        child,
        |line| {
            writeln!(out, "{line}")?;
            if line.starts_with("  CC") {
                files.set(files.get() + 1);
            }
            Ok(())
        },
        |elapsed| {
            let pct = (files.get() * 100 / expected.max(1)).min(99);
            format!("{label}: {} files compiled (about {pct}%), {}", files.get(), elapsed_text(elapsed))
        },
    )
}

/// What a cargo build said, beside its own progress lines.
pub struct CargoOutput {
    pub status: ExitStatus,
    /// Everything but the `Compiling`, `Downloaded`, ... lines: warnings
    /// and errors.
    pub messages: String,
    /// How many crates it compiled.
    pub crates: usize,
}

/// Waits for a cargo command started with its stderr piped and without
/// `--quiet`, printing every few seconds `{label}: {what}` with the crate
/// being compiled, how many so far (of about `expected`, if known) and the
/// time elapsed.
pub fn follow_cargo(child: &mut Child, label: &str, expected: Option<usize>) -> Result<CargoOutput> {
    let mut messages = String::new();
    let (crates, current) = (std::cell::Cell::new(0usize), std::cell::RefCell::new(String::new()));
    let status = follow(
        child,
        |line| {
            match cargo_progress(line) {
                Some(("Compiling", what)) => {
                    crates.set(crates.get() + 1);
                    *current.borrow_mut() = what.split(" (").next().unwrap_or(what).to_string();
                }
                // Another cargo holds a lock: say what we wait for.
                Some(("Blocking", what)) => *current.borrow_mut() = what.to_string(),
                // `cargo test` starts a test binary.
                Some(("Running", _)) => *current.borrow_mut() = "running the tests".into(),
                Some(_) => {}
                None => {
                    messages.push_str(line);
                    messages.push('\n');
                }
            }
            Ok(())
        },
        |elapsed| format!("{label}: {}", tick(&current.borrow(), crates.get(), expected, elapsed)),
    )?;
    Ok(CargoOutput { status, messages, crates: crates.get() })
}

/// A progress line's text: what is compiling, how far, for how long.
fn tick(current: &str, crates: usize, expected: Option<usize>, elapsed: Duration) -> String {
    let so_far = match expected {
        Some(total) => format!("{crates} of about {total} crates"),
        None => format!("{} so far", crates_text(crates)),
    };
    let doing = match current {
        "" => "starting".to_string(),
        waiting if waiting.starts_with("waiting") || waiting.starts_with("running") => waiting.to_string(),
        crate_name => format!("compiling {crate_name}"),
    };
    format!("{doing} ({so_far}), {}", elapsed_text(elapsed))
}

/// `1 crate`, `2 crates`.
pub fn crates_text(n: usize) -> String {
    if n == 1 { "1 crate".into() } else { format!("{n} crates") }
}

/// `42s` or `3m05s`.
pub fn elapsed_text(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    if s < 60 { format!("{s}s") } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// A cargo status line, `   Compiling foo v1.0 (path)`: (verb, rest).
fn cargo_progress(line: &str) -> Option<(&str, &str)> {
    const VERBS: &[&str] = &[
        "Compiling", "Checking", "Downloading", "Downloaded", "Updating", "Locking", "Adding", "Blocking",
        "Finished", "Fresh", "Installing", "Installed", "Replacing", "Replaced", "Building", "Running",
    ];
    let (verb, rest) = line.trim_start().split_once(' ')?;
    VERBS.contains(&verb).then_some((verb, rest.trim()))
}

/// The last `n` lines of a text file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn cargo_status_lines_are_told_from_messages() {
        assert_eq!(cargo_progress("   Compiling core v0.0.0 (/rust/library/core)"), Some(("Compiling", "core v0.0.0 (/rust/library/core)")));
        assert_eq!(cargo_progress("    Finished `kmod` profile [optimized] target(s) in 1m 02s").map(|p| p.0), Some("Finished"));
        assert_eq!(cargo_progress("warning: unused variable: `x`"), None);
        assert_eq!(cargo_progress("error[E0425]: cannot find value `y`"), None);
    }

    #[test]
    fn a_progress_line_says_what_how_far_and_how_long() {
        assert_eq!(tick("core v0.0.0", 3, Some(9), Duration::from_secs(75)), "compiling core v0.0.0 (3 of about 9 crates), 1m15s");
        assert_eq!(tick("", 1, None, Duration::from_secs(10)), "starting (1 crate so far), 10s");
        let waiting = tick("waiting for file lock on package cache", 0, None, Duration::from_secs(3));
        assert_eq!(waiting, "waiting for file lock on package cache (0 crates so far), 3s");
        assert_eq!(tick("running the tests", 2, None, Duration::from_secs(4)), "running the tests (2 crates so far), 4s");
    }

    #[test]
    fn a_followed_command_keeps_its_messages_and_counts_its_crates() {
        let script = "echo '   Compiling a v1.0 (x)' >&2; echo 'warning: w' >&2; echo '   Compiling b v1.0' >&2; exit 3";
        let mut child = Command::new("sh").args(["-c", script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let out = follow_cargo(&mut child, "test", None).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!((out.crates, out.messages.as_str()), (2, "warning: w\n"));
    }
}
