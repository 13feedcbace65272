//! What many runs of one seeded guest did, counted: how each run ended
//! (and its stop line), how many MMIO exits there were and in which steps,
//! which steps ran, and which exceptions the guest caught.

use super::{End, Run};
use crate::program::{STEP_MARK, What};
use crate::run::Options;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::time::Duration;

#[derive(Default)]
pub struct Tally {
    runs: u32,
    /// For each end, how many runs stopped with each stop line.
    ends: BTreeMap<End, BTreeMap<String, u32>>,
    mmio_exits: u64,
    runs_with_mmio: u32,
    /// For each kind of step: how many ran to an end, and how many of
    /// those made an MMIO exit.
    steps: BTreeMap<&'static str, (u32, u32)>,
    /// Exceptions the guest caught, by name.
    faults: BTreeMap<String, u32>,
    flavours: BTreeMap<&'static str, u32>,
}

/// The MMIO exits of a trace: how many in all, and how many after each
/// step's mark (the `out` of `STEP_MARK` plus its number).
pub fn mmio_exits(trace: &str) -> (u64, BTreeMap<usize, u64>) {
    let mark = format!("out 0x00e8 4 {:#06x}", STEP_MARK >> 16);
    let mut step = None;
    let mut total = 0;
    let mut per_step = BTreeMap::new();
    for line in trace.lines() {
        if let Some(n) = line.strip_prefix(&mark).and_then(|rest| usize::from_str_radix(rest, 16).ok()) {
            step = Some(n);
        } else if line.starts_with("mmio-") {
            // A folded line: `mmio-write 0xc0000000 1 0x00 (x8)`.
            let n = line.rsplit_once(" (x").and_then(|(_, n)| n.strip_suffix(')')?.parse().ok()).unwrap_or(1);
            total += n;
            if let Some(s) = step {
                *per_step.entry(s).or_default() += n;
            }
        }
    }
    (total, per_step)
}

impl Tally {
    pub fn add(&mut self, run: &Run) {
        self.runs += 1;
        *self.ends.entry(run.end).or_default().entry(run.line.clone()).or_default() += 1;
        let (mmio, per_step) = mmio_exits(&run.trace);
        self.mmio_exits += mmio;
        self.runs_with_mmio += u32::from(mmio > 0);
        let Some((program, results)) = &run.steps else {
            // chaos-paging's exit value counts the faults it caught.
            if let Some(n) = run.line.strip_prefix("exit 0x").and_then(|v| u32::from_str_radix(v, 16).ok()) {
                *self.faults.entry("caught".into()).or_default() += n;
            }
            return;
        };
        *self.flavours.entry(program.flavour.name()).or_default() += 1;
        for (i, (step, result)) in program.steps.iter().zip(results).enumerate() {
            let counts = self.steps.entry(step.what.name()).or_default();
            counts.0 += 1;
            counts.1 += u32::from(per_step.get(&i).is_some_and(|&n| n > 0));
            if let Some(v) = result.vector {
                *self.faults.entry(crate::program::vector_name(v)).or_default() += 1;
            }
        }
    }

    /// The runs that ended as `end`.
    pub fn count(&self, end: End) -> u32 {
        self.ends.get(&end).map_or(0, |lines| lines.values().sum())
    }

    /// `rkvm-run chaos (BACKEND): GUEST, seeds A to B: N runs: ...`, the
    /// MMIO exits and the faults, then one line per end that happened,
    /// with its stop lines, the most frequent first, then the steps.
    pub fn write(&self, name: &str, seeds: &RangeInclusive<u32>, options: &Options, took: Duration, out: &mut dyn Write) -> io::Result<()> {
        let counts: Vec<String> = End::ALL.iter().map(|&end| format!("{} {}", self.count(end), end.name())).collect();
        let faults: u32 = self.faults.values().sum();
        writeln!(
            out,
            "rkvm-run chaos ({}): {name}, seeds {} to {}: {} runs: {}; {} MMIO exits in {} runs; {faults} faults caught; {:.1} s",
            options.backend.name(),
            seeds.start(),
            seeds.end(),
            self.runs,
            counts.join(", "),
            self.mmio_exits,
            self.runs_with_mmio,
            took.as_secs_f64(),
        )?;
        for (end, lines) in &self.ends {
            writeln!(out, "  {}: {}", end.name(), most_first(lines).join(", "))?;
        }
        if !self.steps.is_empty() {
            let steps: Vec<String> = [What::Known, What::Random, What::Unknown, What::Undefined]
                .iter()
                .filter_map(|w| self.steps.get(w.name()).map(|(ran, mmio)| format!("{} {ran} ({mmio} with MMIO exits)", w.name())))
                .collect();
            writeln!(out, "  steps that ran: {}", steps.join(", "))?;
            let flavours: Vec<String> = self.flavours.iter().map(|(f, n)| format!("{f} {n}")).collect();
            writeln!(out, "  seeds: {}", flavours.join(", "))?;
        }
        if !self.faults.is_empty() {
            writeln!(out, "  faults: {}", most_first(&self.faults).join(", "))?;
        }
        Ok(())
    }
}

/// `KEY xN` for each entry, the most frequent first.
fn most_first(counts: &BTreeMap<String, u32>) -> Vec<String> {
    let mut entries: Vec<(&String, &u32)> = counts.iter().collect();
    entries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    entries.iter().map(|(key, n)| format!("{key} x{n}")).collect()
}
