//! Progress for long steps: a build's output goes to a log file, and the
//! terminal gets one line every few seconds saying how far it got.

use anyhow::Result;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a progress line is printed.
const EVERY: Duration = Duration::from_secs(10);

/// Waits for a Kbuild `make`, copying its output to `log` and printing how
/// many files it compiled so far against about `expected`.
pub fn follow_build(child: &mut Child, log: &Path, label: &str, expected: usize) -> Result<ExitStatus> {
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>), child
        .stderr
        .take()
        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>)]
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
    let mut out = File::create(log)?;
    let (start, mut last, mut files) = (Instant::now(), Instant::now(), 0usize);
    for line in rx {
        writeln!(out, "{line}")?;
        if line.starts_with("  CC") {
            files += 1;
        }
        if last.elapsed() >= EVERY {
            last = Instant::now();
            let pct = (files * 100 / expected.max(1)).min(99);
            println!("{label}: {files} files compiled (about {pct}%), {}s", start.elapsed().as_secs());
        }
    }
    for r in readers {
        let _ = r.join();
    }
    Ok(child.wait()?)
}

/// The last `n` lines of a text file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
