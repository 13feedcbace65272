//! Live migration: what the dirty log is for.
//!
//! A guest runs in one VM (the source) whose memory logs the pages it
//! writes. While it runs, its memory is copied to a second VM (the
//! destination): first all of it, then, round after round, only the pages
//! the log says changed since the last copy. When a round is small, the
//! source is stopped at the next interruption (between two instructions),
//! the last changed pages and the registers are copied, and the
//! destination runs the guest to its end. The trace of the two halves must
//! equal the trace of a run that never moved: any page the log missed
//! would show in the guest's checksums.
//!
//! Rounds end at the guest's own reports (an `out` to the report port), so
//! the page counts of all but the last copy do not depend on timing.

use crate::backend::Vcpu;
use crate::devices::{Devices, REPORT_PORT};
use crate::exit::{Action, Exit, Stop, handle};
use crate::guests::Guest;
use crate::layout;
use crate::run::{Options, run};
use crate::timer::Timer;
use crate::trace::{self, Event};
use anyhow::{Result, bail};
use std::time::Duration;

/// The guests made to be moved while they run.
pub const GUESTS: [&str; 3] = ["migrate-mem", "migrate-paging", "migrate-long"];

/// A round that copies at most this many pages is small enough to stop.
const SMALL_ROUND: usize = 4;
/// Stop after this many rounds even if they stay large (the guest then
/// dirties memory faster than it is copied, and only stopping helps).
const MAX_ROUNDS: usize = 30;

const PAGE: usize = 4096;

/// How a migration went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The pages each copy moved: the whole memory first, the last one
    /// after the source stopped.
    pub rounds: Vec<usize>,
    /// The trace of the migrated run, and of a run that never moved.
    pub migrated: String,
    pub unmoved: String,
}

impl Migration {
    /// The first line where the traces differ, if they do.
    pub fn difference(&self) -> Option<String> {
        let (a, b) = (self.unmoved.lines(), self.migrated.lines());
        let mut pairs = a.map(Some).chain(std::iter::repeat(None)).zip(b.map(Some).chain(std::iter::repeat(None)));
        let (n, (x, y)) = pairs.by_ref().take_while(|(x, y)| x.is_some() || y.is_some()).enumerate().find(|(_, (x, y))| x != y)?;
        Some(format!("line {}: unmoved `{}`, migrated `{}`", n + 1, x.unwrap_or("(end)"), y.unwrap_or("(end)")))
    }
}

// ANCHOR: migrate
/// Moves `guest` from one VM to another while it runs, and runs it once
/// more unmoved to compare.
pub fn migrate(guest: &Guest, options: &Options) -> Result<Migration> {
    let plain = run(guest, options)?;
    if plain.stop == Stop::Timeout {
        bail!("{}: the guest did not stop by itself within {:?}, even unmoved", guest.header.name, options.timeout);
    }
    let unmoved = plain.trace;
    let header = &guest.header;
    let mut source = options.backend.open(header.memory, true)?;
    layout::prepare(source.memory(), header, &guest.image)?;
    source.set_state(&layout::start_state(header.mode))?;
    let mut destination = options.backend.open(header.memory, false)?;
    let mut devices = Devices::default();

    // Round 0: everything, before the guest first runs (what userspace
    // wrote is not in any log, and nothing else has been written yet).
    let _ = source.dirty_log()?;
    destination.memory().copy_from_slice(source.memory());
    let mut rounds = vec![source.memory().len() / PAGE];

    let mut stopping: Option<Timer> = None;
    loop {
        let exit = source.run()?;
        if exit == Exit::Interrupted && stopping.is_some() {
            rounds.push(copy_dirty(source.as_mut(), destination.as_mut())?);
            let (regs, sregs) = source.save()?;
            destination.restore(&regs, &sregs)?;
            break;
        }
        if stopping.is_none() && matches!(exit, Exit::IoOut { port: REPORT_PORT, .. }) {
            let copied = copy_dirty(source.as_mut(), destination.as_mut())?;
            rounds.push(copied);
            if copied <= SMALL_ROUND || rounds.len() > MAX_ROUNDS {
                // Stop at the next interruption: a signal every millisecond.
                stopping = Some(Timer::start_repeating(Duration::from_millis(1), Duration::from_millis(1))?);
            }
        }
        match handle(exit, &mut devices) {
            Action::Resume(reply) => source.reply(reply)?,
            Action::Stop(stop) => bail!(
                "{}: the guest stopped ({stop:?}) before it could be moved, after {} rounds: it must run longer",
                header.name,
                rounds.len()
            ),
        }
    }
    drop(stopping);
    drop(source);
    // ANCHOR_END: migrate

    let timer = Timer::start(options.timeout)?;
    let stop = loop {
        let exit = destination.run()?;
        if timer.expired() {
            devices.record_stop(Event::Timeout(options.timeout.as_secs()));
            break Stop::Timeout;
        }
        match handle(exit, &mut devices) {
            Action::Resume(reply) => destination.reply(reply)?,
            Action::Stop(stop) => break stop,
        }
    };
    if let Some(region) = header.dump {
        let bytes = &destination.memory()[region.addr as usize..(region.addr + region.len) as usize];
        devices.trace.extend(trace::dump(region.addr, bytes));
    }
    if stop.shows_registers() {
        devices.trace.extend(trace::registers(&destination.regs()?));
    }
    Ok(Migration { rounds, migrated: trace::render(&header.name, &devices.trace), unmoved })
}

/// Copies the pages the source's log names to the destination; returns
/// how many.
fn copy_dirty(source: &mut dyn Vcpu, destination: &mut dyn Vcpu) -> Result<usize> {
    let frames = source.dirty_log()?;
    for &frame in &frames {
        let at = frame as usize * PAGE;
        let Some(page) = source.memory().get(at..at + PAGE).map(<[u8]>::to_vec) else {
            bail!("the dirty log names frame {frame:#x}, beyond guest memory");
        };
        destination.memory()[at..at + PAGE].copy_from_slice(&page);
    }
    Ok(frames.len())
}

/// The rounds as the runner prints them: `256 65 65 2 then 1`.
pub fn describe(rounds: &[usize]) -> String {
    match rounds.split_last() {
        Some((last, before)) => {
            let before: Vec<String> = before.iter().map(usize::to_string).collect();
            format!("{} pages, then {last} with the registers", before.join(" "))
        }
        None => "nothing copied".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_read_in_order_with_the_last_copy_apart() {
        assert_eq!(describe(&[256, 65, 2, 1]), "256 65 2 pages, then 1 with the registers");
    }

    #[test]
    fn the_first_difference_is_named() {
        let m = |migrated: &str| Migration { rounds: vec![], migrated: migrated.into(), unmoved: "a\nb\nc\n".into() };
        assert_eq!(m("a\nb\nc\n").difference(), None);
        assert_eq!(m("a\nx\nc\n").difference().as_deref(), Some("line 2: unmoved `b`, migrated `x`"));
        assert_eq!(m("a\nb\n").difference().as_deref(), Some("line 3: unmoved `c`, migrated `(end)`"));
    }
}
