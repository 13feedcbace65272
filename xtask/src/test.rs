//! `cargo xtask test` and `cargo xtask demo`.
//!
//! `test` runs everything a change must pass: the workspace's host unit
//! tests, the generated trees, the exercises, every stage with its
//! solutions, `progress` and `hint` in a stage's handout, the book; then
//! the device checks in L1 (load `rkvm.ko`, talk to `/dev/rkvm`, run the
//! test guests and a hundred seeds of each seeded guest, unload), then
//! Linux booted by `rkvm-vmm` on Linux's KVM and on rkvm with their
//! consoles compared, a minute of `rkvm-fuzz` in L1, and the device
//! checks again on Debian's stock kernel (`cargo xtask distro`). When L1
//! runs, it runs in two lanes: the stages of VMX (under Bochs, which keeps
//! one core busy), the exercises, the book and the fuzzing in a second
//! lane of `cargo xtask` processes, whose output is shown when the first
//! lane is done. It prints every check as it goes and ends with the line
//! `N passed, M failed`.

use crate::kernel::Choice;
use crate::l1::{self, Check};
use crate::test_stage::libtest::{self, Outcome};
use crate::{book, distro, exercises, handout, jobs, paths, platform, stages, test_stage};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Instant;

/// How long `cargo xtask test` fuzzes, in minutes (`cargo xtask fuzz`
/// runs longer).
const FUZZ_MINUTES: u64 = 1;

#[derive(clap::Args)]
pub struct Args {
    /// The L1 platform: tcg-svm, kvm or bochs-vmx (default: kvm where the
    /// host offers nested virtualization, else tcg-svm). Stages 04 to 06,
    /// which know only Intel VMX, choose kvm or bochs-vmx themselves.
    #[arg(long)]
    pub platform: Option<String>,
    /// Run only the host tests, not the L1 checks.
    #[arg(long)]
    pub host_only: bool,
    // The kernel of the device checks, the Linux guest's L1 and the fuzzing;
    // the stages' own runs keep the default L1 kernel (`cargo xtask
    // test-stage N` takes the same flags).
    #[command(flatten)]
    pub kernel: Choice,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// The hypervisor the Linux guest runs on: rkvm (rkvm.ko from kmod/)
    /// or linux-kvm (Linux's own KVM, with nested paging).
    #[arg(long, default_value = "rkvm")]
    pub backend: String,
    /// How many processes the guest's workload forks and execs.
    #[arg(long, default_value_t = 100)]
    pub forks: u32,
    /// Instead of booting Linux: load rkvm.ko and show it answering on
    /// /dev/rkvm (`rkvm-devtest`), the demo of the course's first stages.
    #[arg(long)]
    pub device: bool,
    /// With `--device`: boot this kernel build tree as L1 (see `cargo xtask test --help`).
    #[arg(long, requires = "device")]
    pub l1_tree: Option<PathBuf>,
}

/// Checks counted so far.
#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
    /// Announced checks that did not run (see `report.rs`).
    not_run: u32,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, check: &Check) {
        if check.passed {
            self.passed += 1;
        } else if check.not_run {
            self.not_run += 1;
        } else {
            self.failed += 1;
            self.failures.push(check.name.clone());
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut parts = Parts::default();
    // Two lanes. This one runs the host tests, the stages QEMU runs and the
    // checks after them; the other, started first, runs the stages of one
    // vendor's virtualization (VMX under Bochs, which keeps one of the
    // host's two cores busy), then the exercises, the book, the fuzzing and
    // the Linux guest, each as a `cargo xtask` process whose output is
    // shown when this lane is done.
    let vendor_stages: Vec<u32> = match args.host_only {
        true => Vec::new(),
        false => stages::generated_stages()?.into_iter().filter(|&s| s >= 3 && jobs::stage_vendor(s).is_some()).collect(),
    };
    // The Linux guest goes there when `cargo xtask vmm --compare` runs it
    // as this run would: on the default L1 kernel, not under Bochs.
    let default_kernel = args.kernel.l1_tree.is_none() && !args.kernel.debug_kernel;
    let linux_beside = default_kernel && args.platform.as_deref() != Some("bochs-vmx");
    if !args.host_only {
        // Both lanes boot L1. On a fresh machine its kernel is built here,
        // once, into the shared cache, before they start: two builds at
        // once in one tree would break it. The stages boot the default one.
        crate::kernel::ensure()?;
        args.kernel.kernel()?;
    }
    let beside = match args.host_only {
        true => None,
        false => Some(Beside::start(second_lane(&vendor_stages, &args, linux_beside))?),
    };
    // The first lane; whatever stops it, the second is waited for (its
    // processes would outlive this one) and shown before the error.
    let first = (|| -> Result<()> {
        println!("== host unit tests");
        parts.time("host unit tests", || host_tests(&mut tally))?;
        // With the default L1 kernel, the last stage's run is the device checks
        // of kmod/: its solved crate is kmod/ without its markers. It runs the
        // seeded guests too, and the device job does not run again.
        let last_is_device = !args.host_only && default_kernel;
        course_checks(&mut tally, &mut parts, args.platform.as_deref(), args.host_only, &vendor_stages, last_is_device)?;
        if !args.host_only {
            let asked = match (&args.kernel.l1_tree, args.kernel.debug_kernel) {
                (Some(tree), _) => Some(tree.display().to_string()),
                (None, true) => Some("the debug L1 kernel".to_string()),
                (None, false) => None,
            };
            if let Some(kernel) = asked {
                println!("== the checks below boot {kernel} (the stages' runs above booted the default L1 kernel)");
            }
            println!("== L1: rkvm.ko on /dev/rkvm");
            if last_is_device {
                println!(
                    "  ran above, as stage {}'s run with its solutions: that crate is kmod/ without its markers \
                     (`stages --check`), and its run added the seeded guests ({CHAOS_SEEDS} seeds each)",
                    jobs::kmod_stage()?
                );
            } else {
                parts.time("L1: device checks", || device_checks(args.platform.as_deref(), &args.kernel, &mut tally))?;
            }
            println!("== L1: Linux as a guest of rkvm-vmm, on Linux's KVM and on rkvm, their consoles compared");
            let linux = match linux_beside {
                true => {
                    println!("  runs in the second lane (`cargo xtask vmm --compare`)");
                    Ok(())
                }
                false => parts.time("L1: Linux guest", || linux_checks(args.platform.as_deref(), &args.kernel, &mut tally)),
            };
            if let Err(e) = linux {
                let check = Check::new("vmm: Linux as a guest on Linux's KVM and on rkvm", false, format!("{e:#}"));
                l1::print_check(&check);
                tally.add(&check);
            }
            println!("== Debian's stock kernel: rkvm.ko built against its headers, the device checks on it");
            match parts.time("Debian's stock kernel", || distro::checks(args.platform.as_deref())) {
                Ok(checks) => checks.iter().for_each(|c| tally.add(c)),
                Err(e) => {
                    let check = Check::new("debian: the device checks on Debian's stock kernel", false, format!("{e:#}"));
                    l1::print_check(&check);
                    tally.add(&check);
                }
            }
        }
        Ok(())
    })();
    if let Some(beside) = beside {
        beside.finish(&mut tally, &mut parts);
    }
    first?;
    parts.report();
    println!("== finished in {:.0?}", start.elapsed());
    for name in &tally.failures {
        println!("failed: {name}");
    }
    let not_run = if tally.not_run > 0 { format!(", {} not run", tally.not_run) } else { String::new() };
    println!("{} passed, {} failed{not_run}", tally.passed, tally.failed);
    if tally.failed > 0 {
        bail!("{} checks failed", tally.failed);
    }
    Ok(())
}

/// `cargo test` over the workspace, except the stage crates (their
/// skeletons fail by design; `cargo xtask exercises --check` judges them).
/// Every test counts as one check.
fn host_tests(tally: &mut Tally) -> Result<()> {
    let mut command = std::process::Command::new("cargo");
    command.current_dir(paths::root()).args(["test", "--workspace", "--exclude", "rkvm-stage*", "--no-fail-fast"]);
    let run = libtest::run(command, false, |_| {})?;
    for test in &run.tests {
        let passed = test.outcome == Outcome::Passed;
        if !passed {
            // What it printed says why, where the failure is reported.
            println!("  FAIL host: {}", test.display_name());
            for line in test.output.iter().take(40) {
                println!("       {line}");
            }
        }
        tally.add(&Check::new(format!("host: {}", test.display_name()), passed, ""));
    }
    println!("  host: {} tests ran", run.tests.len());
    if !run.compiled {
        let tail: Vec<&str> = run.log.iter().rev().take(30).rev().map(String::as_str).collect();
        println!("{}", tail.join("\n"));
        tally.add(&Check::new("host: cargo test builds", false, ""));
    }
    Ok(())
}

/// The second lane's `cargo xtask` processes, in order: the stages
/// `stages` (those of one vendor), `exercises --check`, `book`, a minute of
/// `fuzz` on the platform and kernel of the device checks, and with
/// `linux`, `vmm --compare`.
fn second_lane(stages: &[u32], args: &Args, linux: bool) -> Vec<BesideJob> {
    let job = |name: String, part: &str, args: Vec<String>, file: &str, counted: bool| BesideJob {
        name,
        part: part.into(),
        args,
        file: file.into(),
        counted,
    };
    let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<String>>();
    let mut lane: Vec<BesideJob> = stages
        .iter()
        .map(|&n| {
            let args = words(&format!("test-stage {n} --solution"));
            job(format!("test-stage {n} --solution"), &format!("test-stage {n}"), args, &format!("stage-{n:02}.log"), true)
        })
        .collect();
    lane.push(job(EXERCISES.into(), "exercises --check", words("exercises --check"), "exercises.log", false));
    lane.push(job(BOOK.into(), "book", words("book"), "book.log", false));
    let mut fuzz = words(&format!("fuzz --minutes {FUZZ_MINUTES}"));
    let mut vmm = words("vmm --compare");
    if let Some(platform) = &args.platform {
        fuzz.extend(["--platform".into(), platform.clone()]);
        vmm.extend(["--platform".into(), platform.clone()]);
    }
    if let Some(tree) = &args.kernel.l1_tree {
        fuzz.extend(["--l1-tree".into(), tree.display().to_string()]);
    }
    if args.kernel.debug_kernel {
        fuzz.push("--debug-kernel".into());
    }
    lane.push(job(format!("fuzz: {FUZZ_MINUTES} min of rkvm-fuzz on /dev/rkvm in L1"), "L1: fuzzing", fuzz, "fuzz.log", true));
    if linux {
        let name = "vmm: Linux as a guest of rkvm-vmm on Linux's KVM and on rkvm, consoles compared".to_string();
        lane.push(job(name, "L1: Linux guest", vmm, "vmm.log", true));
    }
    lane
}

/// The course itself: generated trees in step with kmod/, honest
/// exercises, every stage passing with its solutions, and the book. The
/// stages in `elsewhere` run in the other lane (see [`Beside`]), and so do
/// the exercises and the book when L1 runs. With `last_is_device`, the
/// last stage's run adds the seeded guests of the device checks.
fn course_checks(
    tally: &mut Tally,
    parts: &mut Parts,
    platform: Option<&str>,
    host_only: bool,
    elsewhere: &[u32],
    last_is_device: bool,
) -> Result<()> {
    println!("== stages/ and solutions/ against kmod/");
    parts.time("stages --check", || step(tally, "stages --check: the generated trees match kmod/", stages::check));
    if host_only {
        println!("== exercises: skeletons fail exactly their exercises, solutions pass");
        parts.time("exercises --check", || step(tally, "exercises --check", exercises::check_all));
    }
    let last = jobs::kmod_stage()?;
    // From stage 03 on a stage's tests boot L1.
    let order = stages::generated_stages()?;
    for stage in order.into_iter().filter(|s| (*s < 3 || !host_only) && !elsewhere.contains(s)) {
        let chaos = (last_is_device && stage == last).then_some(CHAOS_SEEDS);
        let t = parts.time(&format!("test-stage {stage}"), || {
            test_stage::test_stage(stage, true, platform, &Choice::default(), chaos)
        })?;
        let check = Check::new(format!("test-stage {stage} --solution ({})", t.totals()), t.failed == 0 && t.passed > 0, "");
        l1::print_check(&check);
        tally.add(&check);
    }
    println!("== a stage's handout: the tree a course hands out, without kmod/ and solutions/");
    // The L1 programs are in it when the stages' L1 runs above built them.
    let name = format!("handout {}: `progress` and `hint` work in it", handout::CHECK_STAGE);
    parts.time("handout", || step(tally, &name, || handout::check(!host_only)));
    if host_only {
        println!("== the book");
        parts.time("book", || step(tally, BOOK, book::build));
    }
    Ok(())
}

const EXERCISES: &str = "exercises --check";
const BOOK: &str = "book: builds, every include and link resolves, every picture shows in Chromium";

/// The other lane of `cargo xtask test`: the stages that need one
/// vendor's virtualization, then `cargo xtask exercises --check` and
/// `cargo xtask book`, one after the other in a thread of their own, each
/// a `cargo xtask` process whose output goes to a file under
/// `target/test-beside/` and is shown when the first lane is done.
struct Beside {
    thread: std::thread::JoinHandle<Vec<BesideRun>>,
}

/// One `cargo xtask` process of the other lane.
struct BesideJob {
    /// The check's name; for a stage, its totals follow.
    name: String,
    part: String,
    args: Vec<String>,
    file: String,
    /// Its closing line holds its totals (a stage's run, the fuzzing).
    counted: bool,
}

/// One of them, when it is done.
struct BesideRun {
    job: BesideJob,
    passed: bool,
    why: String,
    seconds: f64,
    log: PathBuf,
}

impl Beside {
    fn start(jobs: Vec<BesideJob>) -> Result<Beside> {
        let dir = paths::target().join("test-beside");
        std::fs::create_dir_all(&dir)?;
        let xtask = std::env::current_exe()?;
        let listed: Vec<String> = jobs.iter().map(|j| format!("`cargo xtask {}`", j.args.join(" "))).collect();
        println!("== in a second lane, one after the other: {} (output in {}, shown at the end)", listed.join(", "), dir.display());
        let thread = std::thread::spawn(move || {
            jobs.into_iter()
                .map(|job| {
                    let log = dir.join(&job.file);
                    let start = Instant::now();
                    let status = std::fs::File::create(&log).and_then(|out| {
                        let err = out.try_clone()?;
                        std::process::Command::new(&xtask).args(&job.args).stdout(out).stderr(err).current_dir(paths::root()).status()
                    });
                    let (passed, why) = match status {
                        Ok(s) if s.success() => (true, String::new()),
                        Ok(s) => (false, format!("`cargo xtask {}` ended with {s} (its output is above)", job.args.join(" "))),
                        Err(e) => (false, format!("`cargo xtask {}` could not run: {e}", job.args.join(" "))),
                    };
                    BesideRun { job, passed, why, seconds: start.elapsed().as_secs_f64(), log }
                })
                .collect()
        });
        Ok(Beside { thread })
    }

    /// Waits for them, prints what each printed, and counts each as a
    /// check: a stage's run passes when it ends well with no test failed.
    fn finish(self, tally: &mut Tally, parts: &mut Parts) {
        let start = Instant::now();
        let runs = match self.thread.join() {
            Ok(runs) => runs,
            Err(_) => {
                let check = Check::new("the checks of the second lane", false, "their thread panicked");
                l1::print_check(&check);
                tally.add(&check);
                return;
            }
        };
        parts.list.push(("waiting for the second lane".into(), start.elapsed().as_secs_f64()));
        for run in runs {
            println!("== {} (ran in the second lane, {:.0} s)", run.job.part, run.seconds);
            let text = std::fs::read_to_string(&run.log).unwrap_or_default();
            for line in text.lines() {
                println!("  | {line}");
            }
            parts.beside.push((format!("{} (second lane)", run.job.part), run.seconds));
            let check = match run.job.counted {
                true => counted_check(&run.job.name, &text, run.passed, run.why),
                false => Check::new(run.job.name, run.passed, run.why),
            };
            l1::print_check(&check);
            tally.add(&check);
        }
    }
}

/// The check of a `cargo xtask` process that ends with its totals (a
/// stage's run, the fuzzing): named with its closing line, passed when the
/// process ended well and that line counts passes and no failure.
fn counted_check(name: &str, output: &str, ended_well: bool, why: String) -> Check {
    let totals = output.lines().rev().find(|l| l.contains(" passed, ") && l.contains(" failed")).map(str::trim);
    let count = |word: &str| -> Option<u32> {
        totals?.split(", ").find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
    };
    let (passed, failed) = (count(" passed").unwrap_or(0), count(" failed"));
    match totals {
        Some(line) => Check::new(format!("{name} ({line})"), ended_well && failed == Some(0) && passed > 0, why),
        None => Check::new(name, false, format!("it printed no closing line with its totals. {why}")),
    }
}

/// How long each part of the run took, printed at the end beside the
/// time of the same part in the last run that got that far (kept in
/// `target/test-parts.txt`), so that a part that grew shows.
#[derive(Default)]
struct Parts {
    list: Vec<(String, f64)>,
    /// Parts that ran at the same time as others: shown, not summed.
    beside: Vec<(String, f64)>,
}

impl Parts {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = f();
        self.list.push((name.to_string(), start.elapsed().as_secs_f64()));
        result
    }

    fn report(&self) {
        let file = paths::root().join("target/test-parts.txt");
        let before = std::fs::read_to_string(&file).unwrap_or_default();
        let earlier = |name: &str| {
            before.lines().filter_map(|l| l.split_once('\t')).find(|(n, _)| *n == name).and_then(|(_, s)| s.parse::<f64>().ok())
        };
        println!("== time by part (the last run's beside it, from {})", file.display());
        for (name, seconds) in &self.list {
            let then = earlier(name).map_or(String::new(), |s| format!("  (last run {s:.0} s)"));
            println!("  {name:<24} {seconds:>6.0} s{then}");
        }
        let total: f64 = self.list.iter().map(|(_, s)| s).sum();
        println!("  {:<24} {total:>6.0} s", "all parts");
        for (name, seconds) in &self.beside {
            let then = earlier(name).map_or(String::new(), |s| format!("  (last run {s:.0} s)"));
            println!("  {name:<24} {seconds:>6.0} s{then}, at the same time as the L1 runs");
        }
        let lines: String = self.list.iter().chain(&self.beside).map(|(n, s)| format!("{n}\t{s:.1}\n")).collect();
        let _ = std::fs::write(&file, lines);
    }
}

/// Runs one check that either succeeds or fails with an error.
fn step(tally: &mut Tally, name: &str, f: impl FnOnce() -> Result<()>) {
    let check = match f() {
        Ok(()) => Check::new(name, true, ""),
        Err(e) => Check::new(name, false, format!("{e:#}")),
    };
    l1::print_check(&check);
    tally.add(&check);
}

/// Seeds of each seeded guest (`rkvm-run chaos`) in the device checks:
/// about 20 s under QEMU's emulation for the four of them.
const CHAOS_SEEDS: u32 = 100;

/// rkvm.ko from kmod/ in L1: every device check and guest of every stage,
/// and the seeded guests with [`CHAOS_SEEDS`] seeds each.
fn device_checks(platform: Option<&str>, choice: &Choice, tally: &mut Tally) -> Result<()> {
    let platform = platform::select(platform)?;
    let (mut job, kernel) = jobs::module_job("device", &paths::root().join("kmod"), jobs::kmod_stage()?, choice)?;
    job.script = format!("CHAOS_SEEDS={CHAOS_SEEDS}\n{}", job.script);
    jobs::fit_to_platform(&mut job, platform.as_ref());
    for check in jobs::run_checks(platform.as_ref(), &kernel, &job)? {
        tally.add(&check);
    }
    Ok(())
}

/// `cargo xtask demo`: Linux boots on rkvm. L1 boots, loads rkvm.ko (or
/// Linux's KVM), and `rkvm-vmm` boots L1's own kernel as its guest; the
/// guest's console streams as it comes. With `--device`, the older demo:
/// rkvm.ko loaded and answering on /dev/rkvm.
/// The Linux guest boots, runs [`crate::vmm::TEST_FORKS`] fork+exec and
/// powers off on Linux's KVM and on rkvm in one L1 boot, and rkvm's
/// console must equal Linux KVM's (about a minute of L1 under tcg-svm).
/// Under Bochs the guest on rkvm took 1,716 s of its own clock to reach
/// init, and Linux's kvm-intel did not get past the 8259's set-up in
/// 1,800 s (chapter 14): `cargo xtask vmm --compare --platform bochs-vmx`
/// runs it on its own.
/// On the debug kernel the guest is still the default L1 kernel: the debug
/// one would take many times as long to boot as a guest.
fn linux_checks(platform: Option<&str>, choice: &Choice, tally: &mut Tally) -> Result<()> {
    let platform = platform::select(platform)?;
    if platform.name() == "bochs-vmx" {
        println!("  left out under bochs-vmx (too slow there); run `cargo xtask vmm --compare --platform bochs-vmx`");
        return Ok(());
    }
    let kernel = choice.kernel()?;
    let guest = if choice.debug_kernel { crate::kernel::ensure()?.bzimage() } else { kernel.bzimage() };
    for check in crate::vmm::console_checks(platform.as_ref(), &kernel, &guest, crate::vmm::TEST_FORKS)? {
        tally.add(&check);
    }
    Ok(())
}

pub fn demo(args: DemoArgs) -> Result<()> {
    if !args.device {
        let timeout = if args.platform.as_deref() == Some("bochs-vmx") { 3600 } else { 600 };
        return crate::vmm::run(crate::vmm::Args {
            backend: args.backend,
            platform: args.platform,
            nested_paging: 1,
            forks: args.forks,
            append: String::new(),
            timeout,
            l1_cpus: 2,
            watch: false,
            compare: false,
        });
    }
    let platform = platform::select(args.platform.as_deref())?;
    let choice = Choice { l1_tree: args.l1_tree, debug_kernel: false };
    let (mut job, kernel) = jobs::module_job("demo", &paths::root().join("kmod"), jobs::kmod_stage()?, &choice)?;
    job.script = DEMO_SCRIPT.into();
    job.verbose = true;
    println!("booting L1 on {}; everything below is L1's console", platform.name());
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    let done = l1::completion_check(&job, &outcome);
    l1::print_check(&done);
    if !done.passed {
        bail!("the demo did not run to its end");
    }
    Ok(())
}

const DEMO_SCRIPT: &str = r#"
set -x
insmod ./rkvm.ko
dmesg | grep rkvm
ls -l /dev/rkvm
./rkvm-devtest
cat /sys/kernel/debug/rkvm/vms
rmmod rkvm
"#;

#[cfg(test)]
mod tests {
    use super::counted_check;

    #[test]
    fn a_stage_run_in_the_second_lane_counts_by_its_closing_line() {
        let solved = "== stage 04\n  ok   x\n167 passed, 0 failed, 1 not run\n";
        let check = counted_check("test-stage 4 --solution", solved, true, String::new());
        assert!(check.passed);
        assert_eq!(check.name, "test-stage 4 --solution (167 passed, 0 failed, 1 not run)");
        let failing = "150 passed, 3 failed\n";
        assert!(!counted_check("test-stage 5 --solution", failing, false, "ended with 1".into()).passed);
        // A process that ended well but counted a failure, or nothing, fails too.
        assert!(!counted_check("s", "10 passed, 1 failed\n", true, String::new()).passed);
        assert!(!counted_check("s", "0 passed, 0 failed\n", true, String::new()).passed);
        let silent = counted_check("test-stage 6 --solution", "error: no QEMU\n", false, "ended with 1".into());
        assert!(!silent.passed);
        assert!(silent.detail.contains("no closing line"), "{}", silent.detail);
    }
}
