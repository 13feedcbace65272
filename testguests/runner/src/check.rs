//! `rkvm-run check`: every embedded guest against its golden trace.
//!
//! One line per guest, for the L1 harness to parse:
//! `RKVM-CHECK ok guest/NAME`, or `RKVM-CHECK fail guest/NAME: REASON`
//! with the first line that differs, followed on failure by the trace the
//! guest gave, indented. A closing line counts them. A guest that counts
//! its interrupts also gets an `RKVM-INFO guest/NAME: ...` line with its
//! counts and the hypervisor's. A guest whose header leaves it out on the
//! L1 platform (`not-on:`) is not run: `RKVM-INFO guest/NAME not run:
//! REASON` says why, and the L1 harness lists it as not run.

use crate::guests::EmbeddedGuest;
use crate::run::{Options, run};
use std::io::{self, Write};

/// Why a trace is not its golden one: the first line that differs.
pub fn first_difference(golden: &str, got: &str) -> Option<String> {
    let (mut golden_lines, mut got_lines) = (golden.lines(), got.lines());
    for number in 1.. {
        match (golden_lines.next(), got_lines.next()) {
            (None, None) => return None,
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => return Some(format!("line {number}: expected `{a}`, got `{b}`")),
            (Some(a), None) => return Some(format!("line {number}: expected `{a}`, got the end of the trace")),
            (None, Some(b)) => return Some(format!("line {number}: expected the end of the trace, got `{b}`")),
        }
    }
    unreachable!("the loop returns when both traces end")
}

/// The verdict on one guest: `None` if it passed, else why not, and the
/// trace it gave if it gave one. A guest that counts its interrupts
/// (header `irq-counts:`) passes only if the hypervisor counted at least
/// as many in debugfs; what both counted goes to `info`.
fn verdict(guest: &EmbeddedGuest, options: &Options, info: &mut Option<String>) -> Option<(String, Option<String>)> {
    let Some(golden) = guest.golden else {
        return Some((format!("no golden trace testguests/golden/{}.trace was built in", guest.name), None));
    };
    let outcome = match guest.guest().and_then(|g| run(&g, options)) {
        Ok(outcome) => outcome,
        Err(e) => return Some((format!("error: {e:#}"), None)),
    };
    *info = outcome.irq_counts.map(|c| c.to_string());
    let why = first_difference(golden, &outcome.trace).or_else(|| outcome.irq_counts.and_then(|c| c.shortfall()));
    why.map(|why| (why, Some(outcome.trace)))
}

/// Checks `guests`, but those left out on `platform`, writing the
/// verdicts to `out`. Returns whether all that ran passed.
pub fn check<'a>(
    guests: impl Iterator<Item = &'a EmbeddedGuest>,
    options: &Options,
    platform: Option<&str>,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let (mut passed, mut failed, mut not_run) = (0, 0, 0);
    for guest in guests {
        if let Some((platform, why)) = platform.and_then(|p| guest.left_out_on(p).map(|why| (p, why))) {
            not_run += 1;
            writeln!(out, "RKVM-INFO guest/{} not run: not on {platform}: {why}", guest.name)?;
            continue;
        }
        let mut info = None;
        let verdict = verdict(guest, options, &mut info);
        if let Some(info) = info {
            writeln!(out, "RKVM-INFO guest/{}: {info}", guest.name)?;
        }
        match verdict {
            None => {
                passed += 1;
                writeln!(out, "RKVM-CHECK ok guest/{}", guest.name)?;
            }
            Some((why, trace)) => {
                failed += 1;
                writeln!(out, "RKVM-CHECK fail guest/{}: {why}", guest.name)?;
                for line in trace.iter().flat_map(|t| t.lines()) {
                    writeln!(out, "    {line}")?;
                }
            }
        }
        out.flush()?;
    }
    let not_run = if not_run > 0 { format!(", {not_run} not run") } else { String::new() };
    writeln!(out, "rkvm-run check ({}): {passed} passed, {failed} failed{not_run}", options.backend.name())?;
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use std::time::Duration;

    #[test]
    fn identical_traces_have_no_difference() {
        assert_eq!(first_difference("guest a\nhlt\n", "guest a\nhlt\n"), None);
    }

    #[test]
    fn the_first_differing_line_is_named_with_both_versions() {
        let why = first_difference("guest a\nout 0x00e0 1 0x5a\nhlt\n", "guest a\nout 0x00e0 1 0x00\nhlt\n");
        assert_eq!(why.unwrap(), "line 2: expected `out 0x00e0 1 0x5a`, got `out 0x00e0 1 0x00`");
    }

    #[test]
    fn a_shorter_or_longer_trace_is_a_difference() {
        let short = first_difference("guest a\nhlt\n", "guest a\n").unwrap();
        assert_eq!(short, "line 2: expected `hlt`, got the end of the trace");
        let long = first_difference("guest a\n", "guest a\nshutdown\n").unwrap();
        assert_eq!(long, "line 2: expected the end of the trace, got `shutdown`");
    }

    #[test]
    fn interrupt_counts_fall_short_when_the_hypervisor_counted_fewer() {
        use crate::run::IrqCounts;
        let counts = IrqCounts { taken: 10, waited: 2, injections: Some(10), window_exits: Some(3) };
        assert_eq!(counts.shortfall(), None);
        assert_eq!(counts.to_string(), "the guest took 10 interrupts, 2 of them after waiting for the window; \
                                        debugfs irq_injections +10, irq_window_exits +3");
        let few = IrqCounts { injections: Some(9), ..counts };
        assert_eq!(few.shortfall().unwrap(), "irq_injections moved by 9, fewer than the 10 interrupts the guest took");
        let no_window = IrqCounts { window_exits: Some(1), ..counts };
        assert_eq!(
            no_window.shortfall().unwrap(),
            "irq_window_exits moved by 1, fewer than the 2 interrupts that waited for the window, less 0 that another exit may have found the window open for"
        );
        let storm = IrqCounts { taken: 10_000, waited: 2_000, injections: Some(10_000), window_exits: Some(1_999) };
        assert_eq!(storm.shortfall(), None, "one in a hundred may find the window open after another exit");
        assert!(IrqCounts { window_exits: Some(1_979), ..storm }.shortfall().is_some());
        let unseen = IrqCounts { injections: None, ..counts };
        assert!(unseen.shortfall().unwrap().starts_with("debugfs does not show irq_injections and irq_window_exits"));
        assert!(unseen.to_string().ends_with("irq_injections +?, irq_window_exits +3"));
    }

    #[test]
    fn a_guest_without_golden_fails_with_a_reason() {
        let guest = EmbeddedGuest { name: "lonely", source: "", image: &[0xF4], golden: None };
        let options = Options { backend: Backend::Rkvm, timeout: Duration::from_secs(1), verbose: false };
        let mut out = Vec::new();
        assert!(!check([&guest].into_iter(), &options, None, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "RKVM-CHECK fail guest/lonely: no golden trace testguests/golden/lonely.trace was built in\n\
                          rkvm-run check (rkvm): 0 passed, 1 failed\n");
    }

    #[test]
    fn a_guest_left_out_on_the_platform_is_not_run_with_its_reason() {
        let source = "; guest: far\n; stage: 12\n; mode: prot32\n; not-on: tcg-svm: no breakpoint fires\n; demonstrates: x\n";
        // An image that would fail the check if it ran: its trace is not "".
        let guest = EmbeddedGuest { name: "far", source, image: &[0xF4], golden: Some("") };
        let options = Options { backend: Backend::Rkvm, timeout: Duration::from_secs(1), verbose: false };
        let mut out = Vec::new();
        assert!(check([&guest].into_iter(), &options, Some("tcg-svm"), &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "RKVM-INFO guest/far not run: not on tcg-svm: no breakpoint fires\n\
                          rkvm-run check (rkvm): 0 passed, 0 failed, 1 not run\n");
        assert_eq!(guest.left_out_on("bochs-vmx"), None);
    }

    #[test]
    fn a_guest_whose_header_is_broken_fails_with_the_error() {
        let guest = EmbeddedGuest { name: "broken", source: "; guest: broken\n", image: &[0xF4], golden: Some("") };
        let options = Options { backend: Backend::Rkvm, timeout: Duration::from_secs(1), verbose: false };
        let mut out = Vec::new();
        assert!(!check([&guest].into_iter(), &options, None, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("RKVM-CHECK fail guest/broken: error: embedded guest broken: guest header"), "{text}");
    }
}
