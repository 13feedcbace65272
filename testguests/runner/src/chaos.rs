//! `rkvm-run chaos`: each seeded guest, run again and again with a new
//! seed each time, must end every run in a way a guest may end.
//!
//! A seeded guest (header `seed: REG`) finds its seed in that register and
//! draws everything it does from it; `chaos-paging` writes random values
//! into its own page tables and control registers and then touches memory.
//! Such a trace changes with the seed, so there is no golden one to compare
//! with. Instead, each run's end is classified:
//!
//! - `caught`: the guest stopped at the exit port with a value above 0, by
//!   the convention of seeded guests the number of faults its own handlers
//!   caught and reported;
//! - `clean`: the guest stopped by itself otherwise: at the exit port with
//!   0 (no fault), with `hlt`, or on an exception or an exit the runner does
//!   not know, which the hypervisor gave to userspace;
//! - `shutdown`: the guest triple-faulted;
//! - `failed`: anything else, which is the hypervisor's fault or the
//!   runner's: a timeout, a failed entry, an error of an ioctl, a panic.
//!
//! Each failure is printed as it happens, with its seed and the trace; at
//! the end, how many runs ended each way, with their stop lines counted.

use crate::exit::Stop;
use crate::guests::EmbeddedGuest;
use crate::run::{Options, run_seeded};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Caught,
    Clean,
    Shutdown,
    Failed,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Caught => "caught",
            End::Clean => "clean",
            End::Shutdown => "shutdown",
            End::Failed => "failed",
        }
    }
}

/// The end of a run that stopped with `stop`, whose trace's stop line is
/// `line` (`exit 0x03`, `hlt`, `timeout 10`, ...).
pub fn classify(stop: Stop, line: &str) -> End {
    match stop {
        Stop::ExitPort if exit_value(line) == Some(0) => End::Clean,
        Stop::ExitPort => End::Caught,
        Stop::Hlt | Stop::Exception | Stop::Unknown => End::Clean,
        Stop::Shutdown => End::Shutdown,
        Stop::FailEntry | Stop::Timeout => End::Failed,
    }
}

/// The value of an `exit VALUE` line.
fn exit_value(line: &str) -> Option<u32> {
    u32::from_str_radix(line.strip_prefix("exit 0x")?, 16).ok()
}

/// A trace's stop line: its last line before the dump and the registers.
pub fn stop_line(trace: &str) -> &str {
    trace.lines().rfind(|l| !l.starts_with("reg ") && !l.starts_with("dump ")).unwrap_or("")
}

/// One run of `guest` with `seed`: how it ended, its stop line (or what
/// went wrong) and its trace, if it has one.
fn one_run(guest: &EmbeddedGuest, options: &Options, seed: u32) -> (End, String, String) {
    let result = catch_unwind(AssertUnwindSafe(|| guest.guest().and_then(|g| run_seeded(&g, options, seed))));
    match result {
        Ok(Ok(outcome)) => {
            let line = stop_line(&outcome.trace).to_string();
            (classify(outcome.stop, &line), line, outcome.trace)
        }
        Ok(Err(e)) => (End::Failed, format!("error: {e:#}"), String::new()),
        Err(_) => (End::Failed, "the runner panicked".to_string(), String::new()),
    }
}

/// Runs each of `guests` once with every seed of `seeds`, writing each
/// failure as it happens and a summary per guest. Returns whether no run
/// failed.
pub fn chaos<'a>(
    guests: impl Iterator<Item = &'a EmbeddedGuest>,
    seeds: RangeInclusive<u32>,
    options: &Options,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut no_failure = true;
    for guest in guests {
        // For each end, how many runs stopped with each stop line.
        let mut tally: BTreeMap<End, BTreeMap<String, u32>> = BTreeMap::new();
        for seed in seeds.clone() {
            let (end, line, trace) = one_run(guest, options, seed);
            if end == End::Failed {
                no_failure = false;
                writeln!(out, "rkvm-run chaos: {} seed {seed} failed: {line}", guest.name)?;
                for l in trace.lines() {
                    writeln!(out, "    {l}")?;
                }
                out.flush()?;
            }
            *tally.entry(end).or_default().entry(line).or_default() += 1;
        }
        summary(guest.name, &seeds, options, &tally, out)?;
    }
    Ok(no_failure)
}

/// `rkvm-run chaos (BACKEND): GUEST, seeds A to B: N caught, ...`, then one
/// line per end that happened, with its stop lines, the most frequent first.
fn summary(
    name: &str,
    seeds: &RangeInclusive<u32>,
    options: &Options,
    tally: &BTreeMap<End, BTreeMap<String, u32>>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let ends = [End::Caught, End::Clean, End::Shutdown, End::Failed];
    let count = |end| tally.get(&end).map_or(0, |lines| lines.values().sum::<u32>());
    let counts: Vec<String> = ends.iter().map(|&end| format!("{} {}", count(end), end.name())).collect();
    writeln!(
        out,
        "rkvm-run chaos ({}): {name}, seeds {} to {}: {}",
        options.backend.name(),
        seeds.start(),
        seeds.end(),
        counts.join(", ")
    )?;
    for (end, lines) in tally {
        let mut lines: Vec<(&String, &u32)> = lines.iter().collect();
        lines.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let lines: Vec<String> = lines.iter().map(|(line, n)| format!("{line} x{n}")).collect();
        writeln!(out, "  {}: {}", end.name(), lines.join(", "))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use std::time::Duration;

    #[test]
    fn ends_are_classified_by_the_stop() {
        assert_eq!(classify(Stop::ExitPort, "exit 0x03"), End::Caught);
        assert_eq!(classify(Stop::ExitPort, "exit 0x00"), End::Clean);
        assert_eq!(classify(Stop::Hlt, "hlt"), End::Clean);
        assert_eq!(classify(Stop::Unknown, "unknown-exit 17 0x1"), End::Clean);
        assert_eq!(classify(Stop::Exception, "exception 14 0x0"), End::Clean);
        assert_eq!(classify(Stop::Shutdown, "shutdown"), End::Shutdown);
        assert_eq!(classify(Stop::Timeout, "timeout 10"), End::Failed);
        assert_eq!(classify(Stop::FailEntry, "fail-entry 0x21"), End::Failed);
    }

    #[test]
    fn the_stop_line_comes_before_dump_and_registers() {
        assert_eq!(stop_line("guest a\nout 0x00e8 4 0x1\nexit 0x02\n"), "exit 0x02");
        assert_eq!(stop_line("guest a\nhlt\ndump 0x00010000 00\nreg rax 0x0\nreg rip 0x8001\n"), "hlt");
        assert_eq!(stop_line(""), "");
    }

    #[test]
    fn a_run_that_cannot_start_fails_with_its_seed() {
        let guest = EmbeddedGuest { name: "broken", source: "; guest: broken\n", image: &[0xF4], golden: None };
        let options = Options { backend: Backend::Rkvm, timeout: Duration::from_secs(1), verbose: false };
        let mut out = Vec::new();
        assert!(!chaos([&guest].into_iter(), 7..=8, &options, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("rkvm-run chaos: broken seed 7 failed: error: embedded guest broken"), "{text}");
        assert!(text.contains("\nrkvm-run chaos: broken seed 8 failed: "), "{text}");
        assert!(text.contains("\nrkvm-run chaos (rkvm): broken, seeds 7 to 8: 0 caught, 0 clean, 0 shutdown, 2 failed\n"), "{text}");
    }
}
