use super::*;
use crate::backend::Backend;
use crate::header::Mode;
use crate::program::{self, generate};
use std::time::Duration;

#[test]
fn ends_are_classified_by_the_stop() {
    assert_eq!(classify(Stop::ExitPort, "exit 0x03"), End::Complete);
    assert_eq!(classify(Stop::Hlt, "hlt"), End::Stopped);
    assert_eq!(classify(Stop::Unknown, "unknown-exit 0 0xeeee0001"), End::Unknown);
    assert_eq!(classify(Stop::Unknown, "unknown-exit 17 0x1"), End::Unknown);
    assert_eq!(classify(Stop::Unknown, "unknown-exit 17 0x3"), End::Failed);
    assert_eq!(classify(Stop::Unknown, "unknown-exit 0 0x7b"), End::Failed);
    assert_eq!(classify(Stop::Exception, "exception 14 0x00000000"), End::Exception);
    assert_eq!(classify(Stop::Shutdown, "shutdown"), End::Shutdown);
    assert_eq!(classify(Stop::Timeout, "timeout 10"), End::Failed);
    assert_eq!(classify(Stop::FailEntry, "fail-entry 0x21"), End::Failed);
}

#[test]
fn the_stop_line_comes_before_steps_dump_and_registers() {
    assert_eq!(stop_line("guest a\nout 0x00e8 4 0x1\nexit 0x02\nstep 00 x\n"), "exit 0x02");
    assert_eq!(stop_line("guest a\nhlt\ndump 0x00010000 00\nreg rax 0x0\nreg rip 0x8001\n"), "hlt");
    assert_eq!(stop_line(""), "");
}

/// A result for `step` that completed it, with its registers unchanged.
fn completed(program: &Program, i: usize) -> StepResult {
    let step = &program.steps[i];
    StepResult {
        vector: None,
        error_code: 0,
        rip: step.completed_at(program.config.mode),
        cr2: 0,
        rflags: step.frame.rflags,
        regs: step.frame.regs,
    }
}

#[test]
fn a_program_run_is_judged_by_its_steps() {
    // A mixed program: a known step first, random bytes later, and a known
    // step after them.
    let fits = |p: &Program| {
        let random = p.steps.iter().position(|s| s.what == What::Random);
        p.steps[0].what == What::Known && random.is_some_and(|r| r >= 2 && p.steps[r..].iter().any(|s| s.what == What::Known))
    };
    let program = (0..).map(|s| generate(Mode::Prot32, s)).find(fits).unwrap();
    let all: Vec<StepResult> = (0..program.steps.len()).map(|i| completed(&program, i)).collect();
    assert_eq!(judge_steps(End::Complete, Stop::ExitPort, &program, &all), (End::Complete, None));
    // The exit port before the last step: random bytes wrote it.
    assert_eq!(judge_steps(End::Complete, Stop::ExitPort, &program, &all[..3]), (End::Stopped, None));
    // An instruction the emulator knows must not end a run as unknown,
    // nor with an exit the runner does not know.
    let known = program.steps.iter().position(|s| s.what == What::Known).unwrap();
    for (end, stop) in [(End::Unknown, Stop::Unknown), (End::Failed, Stop::Unknown)] {
        let (end, problem) = judge_steps(end, stop, &program, &all[..known]);
        assert_eq!(end, End::Failed);
        assert!(problem.unwrap().contains("is an instruction the emulator knows"));
    }
    // Any other step may be an instruction the hypervisor leaves to
    // userspace (rkvm's `smsw`: KVM_EXIT_UNKNOWN, SVM exit code 0).
    let other = program.steps.iter().position(|s| s.what != What::Known).unwrap();
    assert_eq!(judge_steps(End::Failed, Stop::Unknown, &program, &all[..other]), (End::Unknown, None));
    assert_eq!(judge_steps(End::Failed, Stop::Timeout, &program, &all[..other]), (End::Failed, None));
    // After random bytes ran, nothing is judged: they may have written
    // over the guest's code, program or results.
    let random = program.steps.iter().position(|s| s.what == What::Random).unwrap();
    let mut moved = all.clone();
    moved.iter_mut().for_each(|r| r.rip += 1);
    assert_eq!(judge_steps(End::Complete, Stop::ExitPort, &program, &moved), (End::Complete, None));
    let later = random + 1 + program.steps[random + 1..].iter().position(|s| s.what == What::Known).unwrap();
    assert_eq!(judge_steps(End::Unknown, Stop::Unknown, &program, &all[..later]), (End::Unknown, None));
    // A completed known instruction leaves RIP right after itself.
    let mut moved = all[..known + 1].to_vec();
    moved[known].rip += 1;
    let (end, problem) = judge_steps(End::Stopped, Stop::Hlt, &program, &moved);
    assert_eq!(end, End::Failed);
    assert!(problem.unwrap().contains("completed with rip at"), "{moved:?}");
}

#[test]
fn mmio_exits_are_put_down_to_their_steps() {
    let trace = "guest g\nout 0x00e8 4 0x5eed0000\nmmio-read 0xc0000000 4 0x03020100\nout 0x00e8 4 0x5eed0001\n\
                 out 0x00e8 4 0x5eed0002\nmmio-write 0xc0000010 1 0x00 (x8)\nexit 0x00\n";
    let (total, per_step) = tally::mmio_exits(trace);
    assert_eq!(total, 9);
    assert_eq!(per_step.into_iter().collect::<Vec<_>>(), [(0, 1), (2, 8)]);
}

#[test]
fn a_difference_is_put_down_to_a_step() {
    let program = generate(Mode::Long64, 2);
    let ours = "guest g\nout 0x00e8 4 0x5eed0000\nout 0x00e8 4 0x5eed0001\nmmio-read 0xc0000000 1 0x00\nexit 0x00\n";
    let theirs = ours.replace("0x00\nexit", "0x01\nexit");
    let d = compare::difference(ours, &theirs, Some(&program)).unwrap();
    assert_eq!((d.step, d.ours.as_str(), d.theirs.as_str()), (Some(1), "mmio-read 0xc0000000 1 0x00", "mmio-read 0xc0000000 1 0x01"));
    assert_eq!(compare::difference(ours, ours, Some(&program)), None);
    // The earliest step that differs, even if its `step` line comes after
    // a later step's accesses.
    let with_steps = format!("{ours}step 00 a\nstep 01 b\n");
    let both = with_steps.replace("step 00 a", "step 00 z").replace("0x00\nexit", "0x01\nexit");
    let d = compare::difference(&with_steps, &both, None).unwrap();
    assert_eq!((d.step, d.ours.as_str(), d.theirs.as_str(), d.reason), (Some(0), "step 00 a", "step 00 z", None));
    let d = compare::difference(&with_steps, &with_steps.replace("step 01 b\n", ""), None).unwrap();
    assert_eq!((d.step, d.theirs.as_str()), (Some(1), "(nothing)"));
    // A real-mode run that rkvm's VMX ended on an exception: expected.
    let real = generate(Mode::Real, 2);
    let ours = "guest g\nout 0x00e8 4 0x5eed0000\nout 0x00e8 4 0x5eed0001\nexception 13 0x00000000\nstep 00 a\n";
    let theirs = "guest g\nout 0x00e8 4 0x5eed0000\nout 0x00e8 4 0x5eed0001\nout 0x00e8 4 0x5eed0002\nexit 0x00\nstep 00 a\nstep 01 b\n";
    let d = compare::difference(ours, theirs, Some(&real)).unwrap();
    assert_eq!((d.step, d.reason), (Some(1), Some("an exception in real mode under VMX")));
    assert_ne!(compare::difference(ours, theirs, Some(&program)).unwrap().reason, Some("an exception in real mode under VMX"));
}

#[test]
fn a_run_that_cannot_start_fails_with_its_seed() {
    let guest = EmbeddedGuest { name: "broken", source: "; guest: broken\n", image: &[0xF4], golden: None };
    let options = Options { backend: Backend::Rkvm, timeout: Duration::from_secs(1), verbose: false };
    let mut out = Vec::new();
    assert!(!chaos([&guest].into_iter(), 7..=8, &options, &Traces::default(), &mut out).unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("rkvm-run chaos: broken seed 7 failed: error: embedded guest broken"), "{text}");
    assert!(text.contains("\nrkvm-run chaos: broken seed 8 failed: "), "{text}");
    assert!(
        text.contains("\nrkvm-run chaos (rkvm): broken, seeds 7 to 8: 2 runs: 0 complete, 0 stopped, 0 exception-exit, \
                       0 unknown-instruction, 0 shutdown, 2 failed; 0 MMIO exits in 0 runs; 0 faults caught; "),
        "{text}"
    );
    let _ = program::STEPS;
}
