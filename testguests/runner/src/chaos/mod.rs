//! `rkvm-run chaos`: each seeded guest, run again and again with a new
//! seed each time, must end every run in a way a guest may end.
//!
//! A seeded guest (header `seed: REG`) finds its seed in that register and
//! draws everything it does from it; `chaos-paging` writes random values
//! into its own page tables and control registers and then touches memory.
//! The MMIO chaos guests (header `program:`) run steps the runner draws
//! from the seed (`crate::program`). Such a trace changes with the seed,
//! so there is no golden one to compare with. Instead, each run's end is
//! classified:
//!
//! - `complete`: the guest ran to its end and stopped at the exit port
//!   (a program guest after its last step);
//! - `stopped`: the guest stopped early by itself: `hlt`, or the exit port
//!   from random bytes;
//! - `exception-exit`: the hypervisor gave an exception to userspace
//!   (2006's `KVM_EXIT_EXCEPTION`: a fetch outside memory, or real mode
//!   under rkvm's VMX, where every exception goes to userspace);
//! - `unknown-instruction`: the hypervisor's emulator met an instruction
//!   it does not know (rkvm's `KVM_EXIT_UNKNOWN` with `EMULATION_FAILED`,
//!   Linux's emulation internal error); and, in a program guest, any exit
//!   the runner does not know while the step is not an instruction the
//!   emulator knows: rkvm leaves some intercepted instructions to
//!   userspace as `KVM_EXIT_UNKNOWN` with the hardware's exit reason
//!   (`smsw`, `lmsw` from memory, `rdmsr` of an MSR it does not know);
//! - `shutdown`: the guest triple-faulted;
//! - `failed`: anything else, which is the hypervisor's fault or the
//!   runner's: a timeout, a failed entry, any other unknown exit, an error
//!   of an ioctl, a panic; and for a program guest, a step the emulator
//!   knows that ended the run as unknown, or an instruction that completed
//!   with RIP anywhere but right after it.
//!
//! Each failure is printed as it happens, with its seed and the trace; at
//! the end, how many runs ended each way (`tally`). With `--save DIR` each
//! trace is kept; with `--compare DIR` each is compared with the one a
//! run on another hypervisor kept there (`compare`).

pub mod compare;
pub mod tally;

use crate::exit::Stop;
use crate::guests::EmbeddedGuest;
use crate::program::{Program, StepResult, What};
use crate::run::{Options, run_seeded};
use crate::trace::Event;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Complete,
    Stopped,
    Exception,
    Unknown,
    Shutdown,
    Failed,
}

impl End {
    pub const ALL: [End; 6] = [End::Complete, End::Stopped, End::Exception, End::Unknown, End::Shutdown, End::Failed];

    pub fn name(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Stopped => "stopped",
            End::Exception => "exception-exit",
            End::Unknown => "unknown-instruction",
            End::Shutdown => "shutdown",
            End::Failed => "failed",
        }
    }
}

/// Whether a stop line is the exit that says the emulator does not know
/// the instruction: rkvm's `KVM_EXIT_UNKNOWN` with `EMULATION_FAILED`, or
/// Linux's `KVM_EXIT_INTERNAL_ERROR` with `KVM_INTERNAL_ERROR_EMULATION`.
pub fn is_emulation_failure(line: &str) -> bool {
    let rkvm = Event::UnknownExit { reason: 0, detail: rkvm::exit::mmio::EMULATION_FAILED.into() };
    let linux = Event::UnknownExit { reason: kvm_bindings::KVM_EXIT_INTERNAL_ERROR, detail: kvm_bindings::KVM_INTERNAL_ERROR_EMULATION.into() };
    line == rkvm.to_string() || line == linux.to_string()
}

/// The end of a run that stopped with `stop`, whose trace's stop line is
/// `line` (`exit 0x03`, `hlt`, `timeout 10`, ...).
pub fn classify(stop: Stop, line: &str) -> End {
    match stop {
        Stop::ExitPort => End::Complete,
        Stop::Hlt => End::Stopped,
        Stop::Exception => End::Exception,
        Stop::Unknown if is_emulation_failure(line) => End::Unknown,
        Stop::Shutdown => End::Shutdown,
        Stop::Unknown | Stop::FailEntry | Stop::Timeout => End::Failed,
    }
}

/// A trace's stop line: its last line before the steps, the dump and the
/// registers.
pub fn stop_line(trace: &str) -> &str {
    trace.lines().rfind(|l| !l.starts_with("reg ") && !l.starts_with("dump ") && !l.starts_with("step ")).unwrap_or("")
}

/// What one run gave.
pub struct Run {
    pub seed: u32,
    pub end: End,
    /// The stop line, or what went wrong.
    pub line: String,
    /// Why a run that stopped in a way a guest may stop still failed.
    pub problem: Option<String>,
    pub trace: String,
    pub steps: Option<(Program, Vec<StepResult>)>,
}

/// Judges a program guest's run by its steps: it is complete only if every
/// step ran; a known step must not end it as unknown; an exit the runner
/// does not know names the instruction of any other step; a known
/// instruction that completed must leave RIP right after itself.
///
/// Random bytes may write anywhere, the guest's own code, program and
/// results included (in real mode all of them are within reach of a
/// 16-bit address): once a step of random bytes has begun, no step is
/// judged, those before it neither.
pub fn judge_steps(end: End, stop: Stop, program: &Program, results: &[StepResult]) -> (End, Option<String>) {
    let mode = program.config.mode;
    // Random bytes ran, or began to, if one came at or before the step
    // in progress.
    let before_random = program.steps.iter().take_while(|s| s.what != What::Random).count();
    let judged = if results.len() >= before_random { 0 } else { results.len() };
    for (i, (step, result)) in program.steps.iter().zip(&results[..judged]).enumerate() {
        if step.what == What::Known && result.vector.is_none() && result.rip != step.completed_at(mode) {
            let at = result.rip.wrapping_sub(step.frame.code);
            let want = step.completed_at(mode) - step.frame.code;
            return (End::Failed, Some(format!("step {i:02} ({}) completed with rip at +{at:#x}, not +{want:#x}", step.name)));
        }
    }
    let current = program.steps.get(results.len());
    let trusted = results.len() < before_random;
    let unknown = end == End::Unknown || stop == Stop::Unknown;
    match (end, current) {
        (End::Complete, Some(_)) => (End::Stopped, None),
        (_, Some(step)) if unknown && trusted && step.what == What::Known => {
            let problem = format!("step {:02} ({} {:02x?}) is an instruction the emulator knows, yet it ended the run", results.len(), step.name, step.bytes);
            (End::Failed, Some(problem))
        }
        (End::Failed, Some(_)) if stop == Stop::Unknown => (End::Unknown, None),
        _ => (end, None),
    }
}

/// One run of `guest` with `seed`.
fn one_run(guest: &EmbeddedGuest, options: &Options, seed: u32) -> Run {
    let result = catch_unwind(AssertUnwindSafe(|| guest.guest().and_then(|g| run_seeded(&g, options, seed))));
    let failed = |line: String| Run { seed, end: End::Failed, line, problem: None, trace: String::new(), steps: None };
    match result {
        Ok(Ok(outcome)) => {
            let line = stop_line(&outcome.trace).to_string();
            let mut end = classify(outcome.stop, &line);
            let mut problem = None;
            if let Some((program, results)) = &outcome.steps {
                (end, problem) = judge_steps(end, outcome.stop, program, results);
            }
            Run { seed, end, line, problem, trace: outcome.trace, steps: outcome.steps }
        }
        Ok(Err(e)) => failed(format!("error: {e:#}")),
        Err(_) => failed("the runner panicked".to_string()),
    }
}

/// Where `chaos` keeps traces, or finds another hypervisor's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traces {
    pub save: Option<PathBuf>,
    pub compare: Option<PathBuf>,
}

/// How often a run of many seeds says how far it got.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs each of `guests` once with every seed of `seeds`, writing each
/// failure as it happens and a summary per guest. Returns whether no run
/// failed.
pub fn chaos<'a>(
    guests: impl Iterator<Item = &'a EmbeddedGuest>,
    seeds: RangeInclusive<u32>,
    options: &Options,
    traces: &Traces,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut no_failure = true;
    for guest in guests {
        let mut tally = tally::Tally::default();
        let mut comparison = compare::Comparison::default();
        let started = std::time::Instant::now();
        let mut said = started;
        let (mut done, mut failed) = (0u32, 0u32);
        let total = seeds.end().saturating_sub(*seeds.start()).saturating_add(1);
        for seed in seeds.clone() {
            // A long run says every minute that it is alive, on stderr.
            if said.elapsed() >= PROGRESS_EVERY {
                said = std::time::Instant::now();
                let secs = started.elapsed().as_secs();
                eprintln!("rkvm-run chaos: {}: {done} of {total} seeds in {secs} s, {failed} failed", guest.name);
            }
            let run = one_run(guest, options, seed);
            done += 1;
            failed += u32::from(run.end == End::Failed);
            if run.end == End::Failed {
                no_failure = false;
                let problem = run.problem.as_deref().map_or(String::new(), |p| format!(" ({p})"));
                writeln!(out, "rkvm-run chaos: {} seed {seed} failed: {}{problem}", guest.name, run.line)?;
                for l in run.trace.lines() {
                    writeln!(out, "    {l}")?;
                }
                out.flush()?;
            }
            if let Some(dir) = &traces.save {
                compare::save(dir, guest.name, seed, &run.trace)?;
            }
            if let Some(dir) = &traces.compare {
                comparison.add(dir, guest.name, &run, out)?;
            }
            tally.add(&run);
        }
        tally.write(guest.name, &seeds, options, started.elapsed(), out)?;
        if let Some(dir) = &traces.compare {
            comparison.write(dir, out)?;
        }
        out.flush()?;
    }
    Ok(no_failure)
}

#[cfg(test)]
mod tests;
