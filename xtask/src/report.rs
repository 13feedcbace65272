//! What an L1 job's report means beyond its checks: the checks it
//! announced and never reported, and the kernel's messages of trouble.
//!
//! A job announces its checks before it runs them (`RKVM-PLAN PART NAME`),
//! so that a check that never reports is listed as not run, with the reason,
//! instead of vanishing: an unsolved stage's run counts the same checks as
//! its solved run. The reason is, in this order, what the check's program
//! said (`NAME not run: why`, a check that cannot run on this machine), why
//! its part of the job stopped (`RKVM-STOPPED PART: why`), why the job as a
//! whole stopped (part `job`), or that L1 ended first. A reason that quotes
//! the panic of an unsolved exercise (`not yet implemented: EN.k`) names the
//! exercise and its hint.
//!
//! The kernel's messages (a Rust panic of rkvm, an oops, a warning, call
//! traces) are gathered from the console and summed up apart from the
//! checks: the line that matters, once, with how often it came.

use crate::l1::Check;
use std::collections::HashSet;

/// A check a job announced: the part of the job that reports it, its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub part: String,
    pub name: String,
}

/// What the job said about why checks did not run.
pub struct Stops<'a> {
    /// (part, why) of each `RKVM-STOPPED` line.
    pub stopped: &'a [(String, String)],
    /// The job's `RKVM-INFO` lines.
    pub infos: &'a [String],
    /// Whether the job ran to its end (`RKVM-END`).
    pub job_ended: bool,
}

/// The checks of `plan` that are not among `reported`, in plan order, each
/// with the reason it did not run.
pub fn not_run(plan: &[Planned], reported: &[Check], stops: &Stops) -> Vec<Check> {
    let seen: HashSet<&str> = reported.iter().map(|c| c.name.as_str()).collect();
    plan.iter()
        .filter(|p| !seen.contains(p.name.as_str()))
        .map(|p| Check::not_run(&p.name, with_exercise(&reason(p, stops))))
        .collect()
}

/// The name of the check [`unannounced`] adds to a job with a plan.
pub const REPORTED_AS_PLANNED: &str = "reported-checks-were-announced";

/// For a job that announced a plan: one check, failed when the job
/// reported a check it never announced, or one check twice. A check
/// outside the plan is a script that runs more than it says (and inflates
/// the count), so it fails rather than counting as passed. `None` for a
/// job without a plan.
pub fn unannounced(plan: &[Planned], reported: &[Check]) -> Option<Check> {
    if plan.is_empty() {
        return None;
    }
    let planned: HashSet<&str> = plan.iter().map(|p| p.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut odd: Vec<String> = Vec::new();
    for check in reported {
        if !planned.contains(check.name.as_str()) {
            odd.push(format!("{} (not announced)", check.name));
        } else if !seen.insert(check.name.as_str()) {
            odd.push(format!("{} (reported twice)", check.name));
        }
    }
    let detail = match odd.len() {
        0 => String::new(),
        1..=3 => odd.join(", "),
        n => format!("{} and {} more", odd[..3].join(", "), n - 3),
    };
    Some(Check::new(REPORTED_AS_PLANNED, odd.is_empty(), detail))
}

fn reason(planned: &Planned, stops: &Stops) -> String {
    let said = format!("{} not run: ", planned.name);
    if let Some(why) = stops.infos.iter().find_map(|i| i.strip_prefix(&said)) {
        return why.to_string();
    }
    let stop = |part: &str| stops.stopped.iter().find(|(p, _)| p == part).map(|(_, why)| why);
    if let Some(why) = stop(&planned.part).filter(|_| planned.part != "job") {
        return format!("{} stopped: {why}", planned.part);
    }
    if let Some(why) = stop("job") {
        return why.to_string();
    }
    if stops.job_ended {
        format!("{} ended without reporting it", planned.part)
    } else {
        "L1 stopped before it ran (see the job's own check)".into()
    }
}

/// `why`, and if it quotes an unsolved exercise's panic, the exercise and
/// the command that shows its hint.
fn with_exercise(why: &str) -> String {
    let why = why.trim_end();
    match exercise_in(why) {
        Some(id) => format!("{why} (exercise {id}: `cargo xtask hint {id}`)"),
        None => why.to_string(),
    }
}

/// The exercise id in `... not yet implemented: E7.1 ...`.
pub fn exercise_in(text: &str) -> Option<&str> {
    let rest = &text[text.find("not yet implemented: ")? + "not yet implemented: ".len()..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(rest.len());
    let id = rest[..end].trim_end_matches('.');
    crate::stages::ExerciseId::parse(id).map(|_| id)
}

/// The checks that did not run, grouped by reason in order of first
/// appearance: (reason, names).
pub fn by_reason(not_run: &[Check]) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for check in not_run {
        match groups.iter_mut().find(|(why, _)| *why == check.detail) {
            Some((_, names)) => names.push(&check.name),
            None => groups.push((&check.detail, vec![&check.name])),
        }
    }
    groups
}

/// Kernel messages that mean trouble.
const ALARMS: &[&str] = &[
    "Kernel panic",
    "BUG:",
    "kernel BUG at",
    "Oops",
    "WARNING:",
    "general protection fault",
    "Call Trace",
    "rkvm: Rust panic",
];

/// Whether a console line is a kernel message of trouble.
pub fn is_alarm(line: &str) -> bool {
    !line.starts_with("RKVM-") && ALARMS.iter().any(|a| line.contains(a))
}

/// The kernel's messages of trouble in one run, gathered line by line.
#[derive(Debug, Default)]
pub struct KernelLog {
    /// Distinct messages in order of first appearance, with their count.
    messages: Vec<(String, usize)>,
    /// A Rust panic's first line, waiting for the line with its message.
    panic: Option<String>,
    call_traces: usize,
}

/// How many distinct messages the summary shows.
const SHOWN: usize = 8;

impl KernelLog {
    /// Takes one console line.
    pub fn line(&mut self, line: &str) {
        if line.starts_with("RKVM-") {
            return;
        }
        let text = without_timestamp(line);
        if let Some(first) = self.panic.take() {
            self.add(format!("{first} {text}"));
        } else if text.contains("rkvm: Rust panic") {
            self.panic = Some(text.to_string());
        } else if text.contains("Call Trace") {
            self.call_traces += 1;
        } else if is_alarm(line) {
            self.add(text.to_string());
        }
    }

    fn add(&mut self, message: String) {
        match self.messages.iter_mut().find(|(m, _)| *m == message) {
            Some((_, count)) => *count += 1,
            None => self.messages.push((message, 1)),
        }
    }

    /// The lines to show: each message once (with how often it came), then
    /// how many call traces the log holds.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .messages
            .iter()
            .take(SHOWN)
            .map(|(m, n)| if *n > 1 { format!("{m} ({n} times)") } else { m.clone() })
            .collect();
        if self.messages.len() > SHOWN {
            lines.push(format!("... and {} other messages", self.messages.len() - SHOWN));
        }
        if let Some(first) = &self.panic {
            lines.push(first.clone());
        }
        match self.call_traces {
            0 => {}
            1 => lines.push("1 call trace".into()),
            n => lines.push(format!("{n} call traces")),
        }
        lines
    }
}

/// A kernel line without its `[    1.234567] ` prefix.
fn without_timestamp(line: &str) -> &str {
    let trimmed = line.trim_end();
    match trimmed.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((stamp, text)) if stamp.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') => text,
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(items: &[(&str, &str)]) -> Vec<Planned> {
        items.iter().map(|(part, name)| Planned { part: part.to_string(), name: name.to_string() }).collect()
    }

    #[test]
    fn a_check_outside_the_plan_or_reported_twice_fails_the_plan_check() {
        let plan = plan(&[("job", "module-loads"), ("rkvm-run", "guest/hlt")]);
        let fine = [Check::new("module-loads", true, ""), Check::new("guest/hlt", false, "x")];
        assert!(unannounced(&plan, &fine).is_some_and(|c| c.passed));
        let extra = [Check::new("module-loads", true, ""), Check::new("naive/guest/hlt", true, ""), Check::new("module-loads", true, "")];
        let check = unannounced(&plan, &extra).expect("the job has a plan");
        assert!(check.failed());
        assert_eq!(check.detail, "naive/guest/hlt (not announced), module-loads (reported twice)");
        assert!(unannounced(&[], &extra).is_none());
    }

    const PANIC: &str = "killed by a panic in rkvm: panicked at stages/07-svm/src/arch/svm/vmcb.rs:233:5: not yet implemented: E7.1";

    #[test]
    fn every_planned_check_that_did_not_report_is_not_run_with_its_reason() {
        let plan = plan(&[
            ("job", "module-loads"),
            ("rkvm-devtest", "api-version"),
            ("rkvm-devtest", "create-vcpu-errors"),
            ("rkvm-devtest", "memcg"),
            ("rkvm-run", "guest/hlt"),
            ("job", "dmesg-clean"),
        ]);
        let reported = [Check::new("module-loads", true, ""), Check::new("api-version", true, ""), Check::new("dmesg-clean", false, "x")];
        let stopped = [("rkvm-devtest".to_string(), PANIC.to_string())];
        let infos = ["memcg not run: this kernel has no cgroup v2".to_string()];
        let stops = Stops { stopped: &stopped, infos: &infos, job_ended: true };
        let missing = not_run(&plan, &reported, &stops);
        let names: Vec<&str> = missing.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["create-vcpu-errors", "memcg", "guest/hlt"]);
        assert!(missing.iter().all(|c| c.not_run && !c.passed && !c.failed()));
        assert_eq!(
            missing[0].detail,
            "rkvm-devtest stopped: killed by a panic in rkvm: panicked at stages/07-svm/src/arch/svm/vmcb.rs:233:5: \
             not yet implemented: E7.1 (exercise E7.1: `cargo xtask hint E7.1`)"
        );
        assert_eq!(missing[1].detail, "this kernel has no cgroup v2");
        assert_eq!(missing[2].detail, "rkvm-run ended without reporting it");
        let groups = by_reason(&missing);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].1, ["create-vcpu-errors"]);
    }

    #[test]
    fn a_stopped_job_or_l1_explains_the_rest() {
        let plan = plan(&[("job", "module-loads"), ("rkvm-devtest", "api-version"), ("rkvm-run", "guest/hlt"), ("job", "dmesg-clean")]);
        let reported = [Check::new("module-loads", false, "insmod failed")];
        let stopped = [("job".to_string(), "the module did not load".to_string())];
        let stops = Stops { stopped: &stopped, infos: &[], job_ended: true };
        let missing = not_run(&plan, &reported, &stops);
        assert_eq!(by_reason(&missing), [("the module did not load", vec!["api-version", "guest/hlt", "dmesg-clean"])]);
        let lost = Stops { stopped: &[], infos: &[], job_ended: false };
        assert!(not_run(&plan, &[], &lost).iter().all(|c| c.detail.starts_with("L1 stopped before it ran")));
    }

    #[test]
    fn the_exercise_is_found_in_a_panic_message() {
        assert_eq!(exercise_in("panicked at x.rs:1:2: not yet implemented: E10.2 more"), Some("E10.2"));
        assert_eq!(exercise_in("not yet implemented: E3.4."), Some("E3.4"));
        assert_eq!(exercise_in("not yet implemented"), None);
        assert_eq!(exercise_in("stuck after 240 s"), None);
    }

    #[test]
    fn kernel_messages_are_summed_up_once_each() {
        let mut log = KernelLog::default();
        for line in [
            "RKVM-CHECK ok device-node",
            "[    1.336926] rkvm: Rust panic: panicked at stages/07-svm/src/arch/svm/vmcb.rs:233:5:",
            "[    1.336926] not yet implemented: E7.1",
            "[    1.337717] kernel BUG at /work/target/kmod/rkvm-stage07/kbuild/glue/rkvm_glue.c:81!",
            "[    1.340556] Call Trace:",
            "[    1.340600]  <TASK>",
            "[    2.232546] rkvm: Rust panic: panicked at stages/07-svm/src/arch/svm/vmcb.rs:233:5:",
            "[    2.232546] not yet implemented: E7.1",
            "[    2.233911] Call Trace:",
            "RKVM-CHECK fail dmesg-clean: rkvm: Rust panic: x",
        ] {
            log.line(line);
        }
        assert_eq!(
            log.summary(),
            [
                "rkvm: Rust panic: panicked at stages/07-svm/src/arch/svm/vmcb.rs:233:5: not yet implemented: E7.1 (2 times)",
                "kernel BUG at /work/target/kmod/rkvm-stage07/kbuild/glue/rkvm_glue.c:81!",
                "2 call traces",
            ]
        );
        assert!(KernelLog::default().summary().is_empty());
    }
}
