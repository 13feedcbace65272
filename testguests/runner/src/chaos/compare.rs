//! Two hypervisors, one seed: `rkvm-run chaos --save DIR` on one keeps
//! each run's trace in `DIR/GUEST-SEED.trace`; `--compare DIR` on the
//! other compares each of its runs with the trace kept there. Linux's KVM
//! is the reference.
//!
//! A program guest's trace holds every MMIO access and the end of every
//! step with what it changed (undefined flags left out), so two correct
//! hypervisors give the same trace, but where they legitimately differ.
//! Each line belongs to a step (a `step` line to its own, an access to
//! the step whose mark came last before it); the earliest step whose
//! lines differ is the difference, and some steps are expected to
//! differ:
//!
//! - a step that is not an instruction the emulator knows: Linux's
//!   emulator knows many more, and random bytes may be any of them;
//! - an access across a page edge: rkvm, as 2006 did, hands an MMIO access
//!   that crosses a page to userspace whole at its first address (and
//!   reads or writes none of it in RAM), where Linux splits it in two;
//! - a stack access at a non-canonical address in 64-bit mode, which rkvm
//!   makes `#GP` rather than `#SS`;
//! - a write to the read-only alias of the window: Linux's emulator reads
//!   the device before the write faults (a read the processor would not
//!   make) and, with nested paging, writes through the read-only page
//!   with the guest-physical address of the read's fault (the processor
//!   QEMU emulates reads first, so the fault is a read's); rkvm walks the
//!   guest's tables again for the write and gives the guest its #PF.
//!
//! - an exception in real mode under rkvm's VMX backend, which runs real
//!   mode as 16-bit protected mode and gives every exception to userspace
//!   (chapter 05), or refuses the entry for one the emulator raised.
//!
//! The first three are known differences of chapter 10 ("Where rkvm
//! differs from the processor and from 2006"), the fourth one Linux's,
//! the last chapter 05's. Any other is unexplained, and printed.

use super::Run;
use crate::header::Mode;
use crate::program::{Program, STEP_MARK, What};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The stop line of rkvm's VMX backend when an event is due for a guest
/// in real mode (`FAIL_REAL_MODE_EVENT`).
const FAIL_REAL_MODE_EVENT: &str = "fail-entry 0xfffffffe";

/// The file that keeps `guest`'s trace with `seed`.
fn path(dir: &Path, guest: &str, seed: u32) -> PathBuf {
    dir.join(format!("{guest}-{seed}.trace"))
}

pub fn save(dir: &Path, guest: &str, seed: u32, trace: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(path(dir, guest, seed), trace)
}

/// How the runs compared with the kept traces.
#[derive(Default)]
pub struct Comparison {
    same: u32,
    missing: u32,
    /// Differences a step explains, by reason.
    expected: BTreeMap<&'static str, u32>,
    unexplained: u32,
}

/// Where two traces first differ, and what explains it, if anything.
#[derive(Debug, PartialEq, Eq)]
pub struct Difference {
    pub step: Option<usize>,
    pub ours: String,
    pub theirs: String,
    pub reason: Option<&'static str>,
}

/// The step each line of a trace belongs to: a `step NN` line to step NN,
/// any other line to the step whose mark came last before it (`None`
/// before the first mark).
fn steps_of(trace: &str) -> Vec<(Option<usize>, &str)> {
    let mark = format!("out 0x00e8 4 {:#06x}", STEP_MARK >> 16);
    let mut current = None;
    trace
        .lines()
        .map(|l| {
            if let Some(n) = l.strip_prefix(&mark).and_then(|n| usize::from_str_radix(n, 16).ok()) {
                current = Some(n);
            }
            let own = l.strip_prefix("step ").and_then(|r| r.get(..2)).and_then(|n| n.parse().ok());
            (own.or(current), l)
        })
        .collect()
}

/// The lines of `trace` that belong to `step`.
fn lines_of<'t>(trace: &[(Option<usize>, &'t str)], step: Option<usize>) -> Vec<&'t str> {
    trace.iter().filter(|(s, _)| *s == step).map(|(_, l)| *l).collect()
}

/// Where `ours` and `theirs` first differ (`None` if they do not): the
/// earliest step whose lines (its accesses and its `step` line) differ,
/// its first differing line on each side, and what explains it.
pub fn difference(ours: &str, theirs: &str, program: Option<&Program>) -> Option<Difference> {
    if ours == theirs {
        return None;
    }
    let (a, b) = (steps_of(ours), steps_of(theirs));
    let steps: BTreeSet<Option<usize>> = a.iter().chain(&b).map(|(s, _)| *s).collect();
    let step = steps.into_iter().find(|&s| lines_of(&a, s) != lines_of(&b, s)).flatten();
    let (x, y) = (lines_of(&a, step), lines_of(&b, step));
    let first = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i)).unwrap_or(0);
    // The step in progress when our run stopped, if it stopped on an
    // exception exit or a refused entry: under rkvm's VMX, real mode runs
    // as protected mode, and every exception of a real-mode guest goes to
    // userspace (or, raised by the emulator, fails the entry) instead of
    // through the guest's interrupt vectors.
    let stop = super::stop_line(ours);
    let in_progress = a.iter().filter(|(_, l)| l.starts_with("step ")).count();
    let refused = (stop.starts_with("exception ") || stop == FAIL_REAL_MODE_EVENT) && step == Some(in_progress);
    let reason = match step.and_then(|s| program?.steps.get(s)) {
        _ if refused && program.is_some_and(|p| p.config.mode == Mode::Real) => Some("an exception in real mode under VMX"),
        Some(s) if s.what != What::Known => Some("a step that is not a known instruction"),
        Some(s) if s.frame.crosses() => Some("an access across a page edge"),
        Some(s) if s.frame.checked_differently() => Some("a non-canonical stack access"),
        Some(s) if s.frame.writes_read_only(program?.config) => Some("a write to a read-only page"),
        _ => None,
    };
    let line = |l: &[&str]| l.get(first).map_or("(nothing)".to_string(), |l| l.to_string());
    Some(Difference { step, ours: line(&x), theirs: line(&y), reason })
}

impl Comparison {
    /// Compares `run` with the trace kept in `dir`; an unexplained
    /// difference is printed at once.
    pub fn add(&mut self, dir: &Path, guest: &str, run: &Run, out: &mut dyn Write) -> io::Result<()> {
        let Ok(theirs) = std::fs::read_to_string(path(dir, guest, run.seed)) else {
            self.missing += 1;
            return Ok(());
        };
        let program = run.steps.as_ref().map(|(p, _)| p);
        let Some(d) = difference(&run.trace, &theirs, program) else {
            self.same += 1;
            return Ok(());
        };
        if let Some(reason) = d.reason {
            *self.expected.entry(reason).or_default() += 1;
            return Ok(());
        }
        self.unexplained += 1;
        let step = d.step.and_then(|s| Some((s, program?.steps.get(s)?)));
        let about = step.map_or(String::new(), |(s, st)| format!(" at step {s:02} ({} {} {:02x?})", st.what.name(), st.name, st.bytes));
        writeln!(out, "rkvm-run chaos: {guest} seed {} differs from {}{about}:", run.seed, dir.display())?;
        writeln!(out, "    here:  {}", d.ours)?;
        writeln!(out, "    there: {}", d.theirs)?;
        Ok(())
    }

    /// `  compared with DIR: S the same, D differ (E expected: ...; U unexplained), M missing`.
    pub fn write(&self, dir: &Path, out: &mut dyn Write) -> io::Result<()> {
        let expected: u32 = self.expected.values().sum();
        let reasons: Vec<String> = self.expected.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let reasons = if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join(", ")) };
        writeln!(
            out,
            "  compared with {}: {} the same, {} differ ({expected} expected{reasons}; {} unexplained), {} missing",
            dir.display(),
            self.same,
            expected + self.unexplained,
            self.unexplained,
            self.missing
        )
    }
}
