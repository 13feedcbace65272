//! `cargo xtask test` and `cargo xtask demo`.
//!
//! `test` runs everything a change must pass: the workspace's host unit
//! tests, the generated trees, the exercises, every stage with its
//! solutions, `progress` and `hint` in a stage's handout, the book; then
//! the device checks in L1 (load `rkvm.ko`, talk to `/dev/rkvm`, run the
//! test guests and a hundred seeds of each seeded guest, unload), then
//! Linux booted by `rkvm-vmm` on Linux's KVM and on rkvm with their
//! consoles compared, then a minute of `rkvm-fuzz` in L1, then the device
//! checks again on Debian's stock kernel (`cargo xtask distro`). When L1
//! runs, the exercises and the book are checked beside the stages' L1 runs
//! (the stages of VMX first: Bochs keeps one core busy, QEMU two), and
//! their output is shown when the stages are done. It prints every check
//! as it goes and ends with the line `N passed, M failed`.

use crate::kernel::Choice;
use crate::l1::{self, Check};
use crate::test_stage::libtest::{self, Outcome};
use crate::{book, distro, exercises, fuzz, handout, jobs, paths, platform, stages, test_stage};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Instant;

/// How long `cargo xtask test` fuzzes (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u64 = 60;

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
    println!("== host unit tests");
    parts.time("host unit tests", || host_tests(&mut tally))?;
    course_checks(&mut tally, &mut parts, args.platform.as_deref(), args.host_only)?;
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
        parts.time("L1: device checks", || device_checks(args.platform.as_deref(), &args.kernel, &mut tally))?;
        println!("== L1: Linux as a guest of rkvm-vmm, on Linux's KVM and on rkvm, their consoles compared");
        let linux = parts.time("L1: Linux guest", || linux_checks(args.platform.as_deref(), &args.kernel, &mut tally));
        if let Err(e) = linux {
            let check = Check::new("vmm: Linux as a guest on Linux's KVM and on rkvm", false, format!("{e:#}"));
            l1::print_check(&check);
            tally.add(&check);
        }
        println!("== L1: a minute of fuzzing /dev/rkvm");
        let fuzzed = parts.time("L1: fuzzing", || fuzz::checks(args.platform.as_deref(), FUZZ_SECONDS, None, &args.kernel))?;
        for check in fuzzed {
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

/// The course itself: generated trees in step with kmod/, honest
/// exercises, every stage passing with its solutions, and the book.
fn course_checks(tally: &mut Tally, parts: &mut Parts, platform: Option<&str>, host_only: bool) -> Result<()> {
    println!("== stages/ and solutions/ against kmod/");
    parts.time("stages --check", || step(tally, "stages --check: the generated trees match kmod/", stages::check));
    // The exercises and the book need only the host. When L1 runs, they run
    // beside the stages' runs in L1, as `cargo xtask` processes of their
    // own, their output kept until the stages are done: the stages of VMX
    // come first, under Bochs, which keeps one of the host's cores busy.
    let beside = if host_only { None } else { Some(Beside::start()?) };
    if beside.is_none() {
        println!("== exercises: skeletons fail exactly their exercises, solutions pass");
        parts.time("exercises --check", || step(tally, "exercises --check", exercises::check_all));
    }
    // From stage 03 on a stage's tests boot L1.
    let mut order = stages::generated_stages()?;
    order.sort_by_key(|&s| (jobs::stage_vendor(s).is_none(), s));
    for stage in order.into_iter().filter(|&s| s < 3 || !host_only) {
        // Stages that need one vendor's virtualization pick their own platform.
        let stage_platform = if jobs::stage_vendor(stage).is_some() { None } else { platform };
        let t = parts.time(&format!("test-stage {stage}"), || {
            test_stage::test_stage(stage, true, stage_platform, &Choice::default())
        })?;
        let check = Check::new(format!("test-stage {stage} --solution ({})", t.totals()), t.failed == 0 && t.passed > 0, "");
        l1::print_check(&check);
        tally.add(&check);
    }
    if let Some(beside) = beside {
        beside.finish(tally, parts);
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

/// The host's checks that run beside L1: `cargo xtask exercises --check`,
/// then `cargo xtask book`, one after the other in a thread of their own,
/// each a process whose output goes to a file under `target/test-beside/`.
struct Beside {
    thread: std::thread::JoinHandle<Vec<BesideRun>>,
}

/// One of them, when it is done.
struct BesideRun {
    name: &'static str,
    part: &'static str,
    passed: bool,
    why: String,
    seconds: f64,
    log: PathBuf,
}

impl Beside {
    fn start() -> Result<Beside> {
        let dir = paths::target().join("test-beside");
        std::fs::create_dir_all(&dir)?;
        let xtask = std::env::current_exe()?;
        println!("== beside the L1 runs: `cargo xtask exercises --check`, then `cargo xtask book` (output in {})", dir.display());
        let runs: [(&'static str, &'static str, &'static [&'static str], &'static str); 2] =
            [(EXERCISES, "exercises --check", &["exercises", "--check"], "exercises.log"), (BOOK, "book", &["book"], "book.log")];
        let thread = std::thread::spawn(move || {
            runs.iter()
                .map(|&(name, part, args, file)| {
                    let log = dir.join(file);
                    let start = Instant::now();
                    let status = std::fs::File::create(&log).and_then(|out| {
                        let err = out.try_clone()?;
                        std::process::Command::new(&xtask).args(args).stdout(out).stderr(err).current_dir(paths::root()).status()
                    });
                    let (passed, why) = match status {
                        Ok(s) if s.success() => (true, String::new()),
                        Ok(s) => (false, format!("`cargo xtask {}` ended with {s} (its output is above)", args.join(" "))),
                        Err(e) => (false, format!("`cargo xtask {}` could not run: {e}", args.join(" "))),
                    };
                    BesideRun { name, part, passed, why, seconds: start.elapsed().as_secs_f64(), log }
                })
                .collect()
        });
        Ok(Beside { thread })
    }

    /// Waits for them, prints what each printed, and counts each as a check.
    fn finish(self, tally: &mut Tally, parts: &mut Parts) {
        let start = Instant::now();
        let runs = match self.thread.join() {
            Ok(runs) => runs,
            Err(_) => {
                let check = Check::new("the host's checks beside L1", false, "their thread panicked");
                l1::print_check(&check);
                tally.add(&check);
                return;
            }
        };
        parts.list.push(("waiting for those beside L1".into(), start.elapsed().as_secs_f64()));
        for run in runs {
            println!("== {} (ran beside L1, {:.0} s)", run.part, run.seconds);
            let text = std::fs::read_to_string(&run.log).unwrap_or_default();
            for line in text.lines() {
                println!("  | {line}");
            }
            parts.beside.push((format!("{} (beside L1)", run.part), run.seconds));
            let check = Check::new(run.name, run.passed, run.why);
            l1::print_check(&check);
            tally.add(&check);
        }
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
