//! Jobs in L1: boot the small Linux with a job script and the files it
//! needs, follow its console, and collect the checks it reports.
//!
//! A job reports through lines on the serial console (see
//! `xtask/l1/init.sh`): `RKVM-CHECK ok NAME`, `RKVM-CHECK fail NAME: why`,
//! `RKVM-INFO text`, and finally `RKVM-END rc=N`. Each check is printed as
//! it arrives. A job may announce its checks first (`RKVM-PLAN PART NAME`)
//! and say when a part of it stopped early (`RKVM-STOPPED PART: why`);
//! `report.rs` turns those into checks that did not run. A job whose
//! machine ends without `RKVM-END` (a kernel panic, a timeout) fails as a
//! whole, with the end of its console log. The kernel's own messages of
//! trouble (a panic, an oops, a warning) are not mixed with the checks:
//! they are gathered, and [`print_kernel_messages`] shows them apart.

use crate::initramfs::Initramfs;
use crate::kernel::L1Kernel;
use crate::paths;
use crate::report::{KernelLog, Planned};
use crate::platform::{BootImage, Ending, Platform};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One boot of L1 running one script.
pub struct Job {
    /// A short name, used for the log file: `target/l1/<name>.log`.
    pub name: String,
    /// The shell script L1 runs, in `/rkvm` as working directory.
    pub script: String,
    /// Files to put into the initramfs: (path in L1, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub cpus: u32,
    pub timeout: Duration,
    /// Show every console line, not only checks and notes.
    pub verbose: bool,
}

/// One check a job reported, or one it announced and never reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Why it failed, or why it did not run.
    pub detail: String,
    /// The check never ran (`passed` is then false, but it is no failure
    /// of its own: what stopped it is reported elsewhere).
    pub not_run: bool,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
        Check { name: name.into(), passed, detail: detail.into(), not_run: false }
    }

    pub fn not_run(name: impl Into<String>, reason: impl Into<String>) -> Check {
        Check { name: name.into(), passed: false, detail: reason.into(), not_run: true }
    }

    /// Failed, as opposed to passed or not run.
    pub fn failed(&self) -> bool {
        !self.passed && !self.not_run
    }
}

/// What a job did.
pub struct Outcome {
    pub checks: Vec<Check>,
    /// How long each check took to come, in the order of `checks`: the
    /// time since the check before it (since L1 started, for the first).
    pub waits: Vec<Duration>,
    /// The checks the job announced, in order.
    pub plan: Vec<Planned>,
    /// The parts of the job that stopped early: (part, why).
    pub stopped: Vec<(String, String)>,
    /// The job's `RKVM-INFO` lines.
    pub infos: Vec<String>,
    /// The kernel's messages of trouble.
    pub kernel: KernelLog,
    /// Set when the job ran to its end (`RKVM-END`); holds its exit status.
    pub job_status: Option<i32>,
    pub ending: Ending,
    pub elapsed: Duration,
    /// How long L1 was given: the job's time limit, stretched on a debug
    /// kernel.
    pub timeout: Duration,
    /// How many lines the console printed.
    pub console_lines: usize,
    pub log: PathBuf,
}

/// A line of L1's console, as the harness understands it.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Check(Check),
    Plan(Planned),
    Stopped(String, String),
    Info(String),
    End(i32),
    /// A kernel message that means trouble, shown at once.
    Alarm(String),
    Other,
}

fn parse(line: &str) -> Line {
    if let Some(rest) = line.strip_prefix("RKVM-CHECK ") {
        let (verdict, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        return Line::Check(Check::new(name.trim(), verdict == "ok", detail));
    }
    if let Some(rest) = line.strip_prefix("RKVM-PLAN ") {
        let (part, name) = rest.split_once(' ').unwrap_or(("job", rest));
        return Line::Plan(Planned { part: part.into(), name: name.trim().into() });
    }
    if let Some(rest) = line.strip_prefix("RKVM-STOPPED ") {
        let (part, why) = rest.split_once(": ").unwrap_or((rest, ""));
        return Line::Stopped(part.trim().into(), why.trim().into());
    }
    if let Some(rest) = line.strip_prefix("RKVM-INFO ") {
        return Line::Info(rest.into());
    }
    if let Some(rc) = line.strip_prefix("RKVM-END rc=") {
        return Line::End(rc.trim().parse().unwrap_or(-1));
    }
    if crate::report::is_alarm(line) {
        return Line::Alarm(line.into());
    }
    Line::Other
}

/// L1's kernel command line. `tsc_early_khz` spares the kernel calibrating
/// the TSC against the PIT, which often fails under emulation ("Marking TSC
/// unstable"); with an unstable TSC, Linux's KVM in L1 loops inside KVM_RUN
/// without ever entering its guest.
const KERNEL_COMMAND_LINE: &str = "console=ttyS0 panic=-1 quiet cryptomgr.notests tsc_early_khz=2000000";

/// L1's kernel command line, with `extra` (the environment's
/// `RKVM_L1_CMDLINE`, for example `loglevel=7` to see a boot that
/// `quiet` hides) after it: the kernel takes the last of repeated words.
fn command_line(extra: Option<&str>) -> String {
    match extra.map(str::trim).filter(|e| !e.is_empty()) {
        Some(extra) => format!("{KERNEL_COMMAND_LINE} {extra}"),
        None => KERNEL_COMMAND_LINE.to_string(),
    }
}

/// Boots L1 on `platform` and runs `job` there.
pub fn run(platform: &dyn Platform, kernel: &L1Kernel, job: &Job) -> Result<Outcome> {
    let dir = paths::target().join("l1");
    std::fs::create_dir_all(&dir)?;
    let mut fs = Initramfs::base()?;
    fs.add_file("job.sh", job.script.clone().into_bytes(), 0o755);
    for (dest, data, mode) in &job.files {
        fs.add_file(dest, data.clone(), *mode);
    }
    let initramfs = dir.join(format!("{}.cpio", job.name));
    fs.write(&initramfs)?;
    let image = BootImage {
        vmlinux: kernel.vmlinux(),
        bzimage: kernel.bzimage(),
        initramfs,
        cmdline: command_line(std::env::var("RKVM_L1_CMDLINE").ok().as_deref()),
        cpus: job.cpus,
        memory_mib: kernel.memory_mib(),
        timeout: job.timeout * kernel.slowdown(),
        log: dir.join(format!("{}.log", job.name)),
    };
    let start = Instant::now();
    let (mut checks, mut plan, mut stopped, mut infos, mut job_status) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), None);
    let mut kernel = KernelLog::default();
    let mut console_lines = 0;
    let (mut waits, mut last) = (Vec::new(), start);
    let ending = platform.boot(&image, &mut |line| {
        console_lines += 1;
        kernel.line(line);
        match parse(line) {
            Line::Check(c) => {
                print_check(&c);
                checks.push(c);
                waits.push(last.elapsed());
                last = Instant::now();
            }
            Line::Plan(p) => plan.push(p),
            Line::Stopped(part, why) => stopped.push((part, why)),
            Line::Info(text) => {
                println!("       {text}");
                infos.push(text);
            }
            Line::End(rc) => job_status = Some(rc),
            Line::Alarm(_) | Line::Other if job.verbose => println!("  L1 | {line}"),
            Line::Alarm(_) | Line::Other => {}
        }
    })?;
    let (elapsed, timeout, log) = (start.elapsed(), image.timeout, image.log);
    Ok(Outcome { checks, waits, plan, stopped, infos, kernel, job_status, ending, elapsed, timeout, console_lines, log })
}

/// The `n` checks that took longest to come (see [`Outcome::waits`]),
/// longest first, as `name 12.3 s` each: where a job's time goes.
pub fn slowest_checks(outcome: &Outcome, n: usize) -> Vec<String> {
    slowest(&outcome.checks, &outcome.waits, n)
}

fn slowest(checks: &[Check], waits: &[Duration], n: usize) -> Vec<String> {
    let mut timed: Vec<(&str, Duration)> = checks.iter().map(|c| c.name.as_str()).zip(waits.iter().copied()).collect();
    timed.sort_by_key(|t| std::cmp::Reverse(t.1));
    timed.iter().take(n).map(|(name, wait)| format!("{name} {:.1} s", wait.as_secs_f64())).collect()
}

/// Shows the kernel's messages of trouble that a job's run gathered, apart
/// from its checks; nothing if there were none. The whole console is in
/// the job's log file.
pub fn print_kernel_messages(outcome: &Outcome) {
    let lines = outcome.kernel.summary();
    if lines.is_empty() {
        return;
    }
    println!("  kernel messages in L1 (the whole console: {}):", outcome.log.display());
    for line in lines {
        println!("    {line}");
    }
}

pub fn print_check(c: &Check) {
    if c.not_run {
        println!("  not run  {}", c.name);
    } else if c.passed {
        println!("  ok   {}", c.name);
    } else if c.detail.is_empty() {
        println!("  FAIL {}", c.name);
    } else {
        println!("  FAIL {}: {}", c.name, c.detail);
    }
}

/// A check that stands for the job as a whole: it passes when the machine
/// ran the job to its end and left with the job's verdict.
pub fn completion_check(job: &Job, outcome: &Outcome) -> Check {
    let detail = match (outcome.job_status, outcome.ending) {
        (Some(0), Ending::Verdict(0)) => String::new(),
        (Some(rc), _) if rc != 0 => format!("the job script exited with status {rc}"),
        (_, Ending::TimedOut) => format!("L1 did not finish within {:?}", outcome.timeout),
        (_, Ending::SilentAfterBug(quiet)) => format!(
            "L1 hung after a kernel BUG: its console printed nothing for {} s after it, so it was stopped \
             (the BUG and the panic that caused it are in the kernel's messages)",
            quiet.as_secs()
        ),
        (None, _) if outcome.console_lines == 0 => {
            "L1 printed nothing: the machine stopped before the kernel's console started (a fault at its entry?)".into()
        }
        (None, _) => format!(
            "L1 stopped before the job finished (kernel panic?); last lines of {}:\n{}",
            outcome.log.display(),
            crate::progress::tail(&outcome.log, 15)
        ),
        (Some(_), ending) => format!("L1 ended with {ending:?}"),
    };
    Check::new(format!("{}: L1 ran the job to its end", job.name), detail.is_empty(), detail)
}

/// Builds a workspace binary for L1: statically linked, because L1's
/// userspace is a busybox initramfs with no C library. Shows progress while
/// cargo works. In a tree without `kmod/` (a stage's handout), whose
/// programs cannot be built, the handout's prebuilt one is taken.
pub fn static_binary(package: &str) -> Result<Vec<u8>> {
    if !paths::root().join("kmod").is_dir() {
        return prebuilt(package);
    }
    let target_dir = paths::target().join("l1-user");
    println!("l1: cargo builds {package}, linked statically for L1's busybox");
    let start = Instant::now();
    let mut child = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(paths::root())
        .args(["build", "--release", "--color", "never", "-p", package, "--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running cargo build")?;
    let output = crate::progress::follow_cargo(&mut child, &format!("l1: building {package}"), None)?;
    eprint!("{}", output.messages);
    if !output.status.success() {
        anyhow::bail!("building {package} for L1 failed (cargo's errors are above)");
    }
    if output.crates > 0 {
        let took = crate::progress::elapsed_text(start.elapsed());
        println!("l1: {package} took {took} ({} compiled)", crate::progress::crates_text(output.crates));
    }
    let path = target_dir.join("x86_64-unknown-linux-gnu/release").join(package);
    Ok(std::fs::read(&path)?)
}

/// The prebuilt `package` of a stage's handout (see `handout.rs`).
fn prebuilt(package: &str) -> Result<Vec<u8>> {
    let shown = format!("{}/{package}", crate::handout::PREBUILT);
    let data = std::fs::read(paths::root().join(&shown))
        .with_context(|| format!("this tree has no kmod/ to build {package} from, and no prebuilt {shown}"))?;
    println!("l1: {package} is the prebuilt {shown}: its source needs kmod/, which this tree does not have");
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_kernel_words_come_after_the_usual_ones() {
        assert_eq!(command_line(None), KERNEL_COMMAND_LINE);
        assert_eq!(command_line(Some("  ")), KERNEL_COMMAND_LINE);
        assert!(command_line(Some("loglevel=7")).ends_with(" quiet cryptomgr.notests tsc_early_khz=2000000 loglevel=7"));
    }

    #[test]
    fn the_slowest_checks_come_longest_first() {
        let checks = [Check::new("a", true, ""), Check::new("b", true, ""), Check::new("c", false, "x")];
        let waits = [Duration::from_millis(3_000), Duration::from_millis(250), Duration::from_millis(41_050)];
        assert_eq!(slowest(&checks, &waits, 2), ["c 41.0 s", "a 3.0 s"]);
        assert!(slowest(&checks, &[], 5).is_empty());
    }

    #[test]
    fn console_lines_are_parsed() {
        assert_eq!(parse("RKVM-CHECK ok api-version"), Line::Check(Check::new("api-version", true, "")));
        assert_eq!(
            parse("RKVM-CHECK fail rmmod: module in use: yes"),
            Line::Check(Check::new("rmmod", false, "module in use: yes"))
        );
        assert_eq!(
            parse("RKVM-PLAN rkvm-run guest/hlt"),
            Line::Plan(Planned { part: "rkvm-run".into(), name: "guest/hlt".into() })
        );
        assert_eq!(
            parse("RKVM-STOPPED rkvm-devtest: killed by a panic in rkvm: x: y"),
            Line::Stopped("rkvm-devtest".into(), "killed by a panic in rkvm: x: y".into())
        );
        assert_eq!(parse("RKVM-END rc=3"), Line::End(3));
        assert_eq!(parse("RKVM-INFO boot 1.2 s"), Line::Info("boot 1.2 s".into()));
        assert!(matches!(parse("[ 1.0] BUG: kernel NULL pointer dereference"), Line::Alarm(_)));
        assert_eq!(parse("[ 0.5] Run /init as init process"), Line::Other);
    }
}
