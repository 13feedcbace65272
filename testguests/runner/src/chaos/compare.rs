//! Two hypervisors, one seed: `rkvm-run chaos --save DIR` on one keeps
//! each run's trace in `DIR/GUEST-SEED.trace`; `--compare DIR` on the
//! other compares each of its runs with the trace kept there. Linux's KVM
//! is the reference.
//!
//! A program guest's trace holds every MMIO access and the end of every
//! step with what it changed (undefined flags left out), so two correct
//! hypervisors give the same trace, but where they legitimately differ.
//! The first differing line is put down to a step (its `step` line, or
//! the mark of the step whose accesses it is among), and some steps are
//! expected to differ:
//!
//! - a step that is not an instruction the emulator knows: Linux's
//!   emulator knows many more, and random bytes may be any of them;
//! - an access across a page edge: rkvm, as 2006 did, hands an MMIO access
//!   that crosses a page to userspace whole at its first address (and
//!   reads or writes none of it in RAM), where Linux splits it in two;
//! - an access through a segment rkvm checks by its limit alone, as if it
//!   expanded up (an expand-down, read-only, code or null segment), or a
//!   stack access at a non-canonical address, which rkvm makes `#GP`
//!   rather than `#SS`.
//!
//! These are the known differences of chapter 10 ("Where rkvm differs
//! from the processor and from 2006"). Any other is unexplained, and
//! printed.

use super::Run;
use crate::program::{Program, STEP_MARK, What};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    pub line: usize,
    pub step: Option<usize>,
    pub reason: Option<&'static str>,
}

/// The first line where `ours` and `theirs` differ (`None` if they do
/// not), put down to a step of `program`.
pub fn difference(ours: &str, theirs: &str, program: Option<&Program>) -> Option<Difference> {
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    let line = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let mark = format!("out 0x00e8 4 {:#06x}", STEP_MARK >> 16);
    let step_of = |l: &str| l.strip_prefix("step ").and_then(|r| r.get(..2)).and_then(|n| n.parse::<usize>().ok());
    let step = [a.get(line), b.get(line)].into_iter().flatten().find_map(|l| step_of(l)).or_else(|| {
        a[..line.min(a.len())].iter().rev().find_map(|l| l.strip_prefix(&mark).and_then(|n| usize::from_str_radix(n, 16).ok()))
    });
    let reason = match step.and_then(|s| program?.steps.get(s)) {
        Some(s) if s.what != What::Known => Some("a step that is not a known instruction"),
        Some(s) if s.frame.crosses() => Some("an access across a page edge"),
        Some(s) if s.frame.checked_differently() => Some("a segment check rkvm does not make"),
        _ => None,
    };
    Some(Difference { line, step, reason })
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
        writeln!(out, "    here:  {}", run.trace.lines().nth(d.line).unwrap_or("(the trace ends)"))?;
        writeln!(out, "    there: {}", theirs.lines().nth(d.line).unwrap_or("(the trace ends)"))?;
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
