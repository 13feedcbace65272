//! The L1 jobs the harness runs: the module with its checks and test guests
//! (for `cargo xtask test`, `test-stage N` and `demo`).
//!
//! One script, `xtask/l1/jobs-device.sh`, serves them all: it loads the
//! module, runs the device checks and the test guests whose first stage is
//! at most `MAX_STAGE`, unloads the module and inspects the kernel log.

use crate::kernel::{Choice, L1Kernel};
use crate::l1::{self, Check, Job};
use crate::platform::{Platform, Vendor};
use crate::{kmod, paths, report};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Duration;

/// The module of `crate_dir` (kmod/ or a stage crate) and the programs that
/// exercise it, checking what stages up to `max_stage` promise, on the
/// kernel `choice` names.
pub fn module_job(name: &str, crate_dir: &Path, max_stage: u32, choice: &Choice) -> Result<(Job, L1Kernel)> {
    let kernel = choice.kernel()?;
    let job = module_job_on(name, crate_dir, max_stage, &kernel)?;
    Ok((job, kernel))
}

/// Like [`module_job`], for the kernel `kernel`: the module is built
/// against its build tree (or its headers).
pub fn module_job_on(name: &str, crate_dir: &Path, max_stage: u32, kernel: &L1Kernel) -> Result<Job> {
    // The default L1 kernel's builds keep the package's directory; the
    // others (a distribution's headers, the debug kernel) get their own.
    let build = match kernel.image.is_some() || kernel.debug {
        true => kmod::Build::for_crate_and_kernel(kernel.build.clone(), crate_dir.to_path_buf())?,
        false => kmod::Build::for_crate(kernel.build.clone(), crate_dir.to_path_buf())?,
    };
    let ko = kmod::build_module(&build)?;
    let script = std::fs::read_to_string(paths::l1_sources().join("jobs-device.sh"))?;
    let job = Job {
        name: name.into(),
        script: format!("MAX_STAGE={max_stage}\n{script}"),
        files: vec![
            ("rkvm/rkvm.ko".into(), std::fs::read(&ko)?, 0o644),
            ("rkvm/rkvm-devtest".into(), l1::static_binary("rkvm-devtest")?, 0o755),
            ("rkvm/rkvm-run".into(), l1::static_binary("rkvm-run")?, 0o755),
            ("rkvm/stress.sh".into(), std::fs::read(paths::l1_sources().join("stress.sh"))?, 0o644),
            ("rkvm/procs.sh".into(), std::fs::read(paths::l1_sources().join("procs.sh"))?, 0o644),
        ],
        cpus: 2,
        timeout: Duration::from_secs(300),
        verbose: false,
    };
    Ok(job)
}

/// Runs `job` and returns every check it reported, plus one for the job
/// running to its end, one for its reporting only what it announced (for
/// a job with a plan), plus every check it announced and never reported
/// (as not run, with the reason). Prints the checks that did not run and
/// then the kernel's messages, after the checks that did.
pub fn run_checks(platform: &dyn Platform, kernel: &L1Kernel, job: &Job) -> Result<Vec<Check>> {
    let debug = if kernel.debug { ", the debug kernel" } else { "" };
    println!("  booting L1 on {} ({} CPUs{debug})", platform.name(), job.cpus);
    let outcome = l1::run(platform, kernel, job)?;
    let done = l1::completion_check(job, &outcome);
    l1::print_check(&done);
    let stops = report::Stops { stopped: &outcome.stopped, infos: &outcome.infos, job_ended: outcome.job_status.is_some() };
    let not_run = report::not_run(&outcome.plan, &outcome.checks, &stops);
    let as_planned = report::unannounced(&outcome.plan, &outcome.checks);
    if let Some(check) = &as_planned {
        l1::print_check(check);
    }
    print_not_run(&not_run);
    l1::print_kernel_messages(&outcome);
    println!("  L1 run took {:.1?}; console log: {}", outcome.elapsed, outcome.log.display());
    let slowest = l1::slowest_checks(&outcome, 5);
    if !slowest.is_empty() {
        // The first check's time includes L1's boot.
        println!("  the checks that took longest to come: {}", slowest.join(", "));
    }
    let mut checks = outcome.checks;
    checks.push(done);
    checks.extend(as_planned);
    checks.extend(not_run);
    Ok(checks)
}

/// The checks that did not run, under their reasons.
fn print_not_run(not_run: &[Check]) {
    if not_run.is_empty() {
        return;
    }
    let n = not_run.len();
    println!("  {n} {} not run:", if n == 1 { "check did" } else { "checks did" });
    for (why, names) in report::by_reason(not_run) {
        println!("  {why}:");
        for name in names {
            println!("    not run  {name}");
        }
    }
}

/// Seconds of SMP stress in a stage's run without the seeded guests.
const STAGE_STRESS_SECONDS: u32 = 10;

/// Stage `stage`'s tests in L1: its module (from `stage_dir`, the stage
/// crate or its solved copy) with the checks and guests of stages up to it.
/// With `chaos_seeds`, the seeded guests too (`rkvm-run chaos`), with that
/// many seeds each. Returns every check, run or not.
pub fn run_stage_tests(
    stage: u32,
    stage_dir: &Path,
    platform: Option<&str>,
    choice: &Choice,
    chaos_seeds: Option<u32>,
) -> Result<Vec<Check>> {
    let select = || match stage_vendor(stage) {
        Some(vendor) => crate::platform::select_for(platform, vendor),
        None => crate::platform::select(platform),
    };
    let platform = select()?;
    let (mut job, kernel) = module_job(&format!("stage-{stage:02}"), stage_dir, stage, choice)?;
    // A run with the seeded guests stands for the device checks (`cargo
    // xtask test`): 20 s of SMP stress from stage 13 on. A student's run
    // of a stage gets 10, to stay within a minute; `cargo xtask stress`
    // runs for minutes.
    match chaos_seeds {
        Some(seeds) => job.script = format!("CHAOS_SEEDS={seeds}\n{}", job.script),
        None => job.script = format!("STRESS_SECONDS={STAGE_STRESS_SECONDS}\n{}", job.script),
    }
    fit_to_platform(&mut job, platform.as_ref());
    if stage < 13 {
        return run_checks(platform.as_ref(), &kernel, &job);
    }
    // From stage 13, the reboot check boots an L1 of its own, with one
    // CPU, for a few seconds: it runs beside the job's, on a platform of
    // its own, and its lines come among the job's (each named `reboot/`).
    std::thread::scope(|scope| {
        let reboot = scope.spawn(|| crate::smp::reboot_checks(stage_dir, select()?.as_ref(), choice));
        let mut checks = run_checks(platform.as_ref(), &kernel, &job);
        let reboot = reboot.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the reboot check's thread panicked")));
        if let Ok(checks) = &mut checks {
            checks.extend(reboot?);
        }
        checks
    })
}

/// The job learns its platform's name (`PLATFORM`), so that `rkvm-run`
/// leaves out the guests whose header says `not-on:` it, and lists each as
/// not run, with the header's reason. Bochs runs L1 tens of times slower
/// than QEMU: its jobs get more time, each guest [`guest_timeout`]'s
/// seconds, and the leak checks run fewer VMs: `rkvm-devtest`'s 250 per
/// round instead of 1,000, the paging one 100 instead of 200. Both also
/// compare the module's own allocations (debugfs `allocations`), exactly;
/// what fewer VMs lose is MemFree's reach beyond them, to kernel memory
/// held per VM on the module's behalf: 2 pages per VM rather than 1.
pub fn fit_to_platform(job: &mut Job, platform: &dyn Platform) {
    job.script = format!("PLATFORM={}\n{}", platform.name(), job.script);
    if let Some(seconds) = guest_timeout(platform.name()) {
        job.script = format!("GUEST_TIMEOUT={seconds}\n{}", job.script);
    }
    if platform.name() == "bochs-vmx" {
        job.script = format!("PAGING_VMS=100\nLEAK_VMS=250\n{}", job.script);
        job.timeout = job.timeout.max(Duration::from_secs(900));
    }
}

/// The seconds a guest may run on `platform` before rkvm-run stops it,
/// where its default of 10 is too short: under Bochs, `irq-storm`'s 14,000
/// exits took 7.5 s of L1's time on rkvm and 15.6 s on Linux's kvm_intel.
pub fn guest_timeout(platform: &str) -> Option<u64> {
    (platform == "bochs-vmx").then_some(30)
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Load stage N's module, built from your own `stages/NN-slug/`,
    /// instead of the complete module of `kmod/`.
    #[arg(long)]
    pub stage: Option<u32>,
    /// With `--stage N`: stage N with its exercises solved (its
    /// `solutions/NN-slug/` laid over a copy, as `test-stage N --solution`).
    #[arg(long, requires = "stage")]
    pub solution: bool,
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Seconds before L1 is stopped (three times as many on the debug kernel).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub kernel: Choice,
    /// Shell commands to run in L1, in /rkvm, where rkvm.ko, rkvm-run,
    /// rkvm-devtest and Linux's KVM modules wait (nothing is loaded yet).
    pub commands: String,
}

/// `cargo xtask l1 [--stage N [--solution]] 'commands'`: boots L1 with the
/// module (stage N's, or kmod/'s), the programs and Linux's KVM modules,
/// runs the commands and shows the whole console.
pub fn run_commands(args: RunArgs) -> Result<()> {
    let (crate_dir, max_stage) = match args.stage {
        Some(stage) => (crate::test_stage::stage_crate(stage, args.solution)?, stage),
        None => {
            let kmod = paths::root().join("kmod");
            if !kmod.is_dir() {
                bail!("this tree has no kmod/: name the stage whose module L1 loads, with `--stage N`");
            }
            (kmod, kmod_stage()?)
        }
    };
    let platform = match args.stage.and_then(stage_vendor) {
        Some(vendor) => crate::platform::select_for(args.platform.as_deref(), vendor)?,
        None => crate::platform::select(args.platform.as_deref())?,
    };
    let shown = crate_dir.strip_prefix(paths::root()).unwrap_or(&crate_dir).display().to_string();
    println!("l1: rkvm.ko is built from {shown}/");
    let (mut job, kernel) = module_job("l1", &crate_dir, max_stage, &args.kernel)?;
    for module in kernel.kvm_modules(platform.vendor().kvm_module()) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        job.files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
    }
    job.script = format!("set -x\n{}\n", args.commands);
    job.verbose = true;
    job.timeout = Duration::from_secs(args.timeout);
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    let done = l1::completion_check(&job, &outcome);
    l1::print_check(&done);
    Ok(())
}

/// The virtualization a stage's module needs: stages 04 to 06 know only
/// Intel VMX; from stage 07 on the module chooses VMX or SVM at load time.
pub fn stage_vendor(stage: u32) -> Option<Vendor> {
    (4..=6).contains(&stage).then_some(Vendor::Intel)
}

/// The last stage kmod/ reaches: the module built from it passes the checks
/// and guests of every stage up to this one.
pub fn kmod_stage() -> Result<u32> {
    Ok(crate::stages::generated_stages()?.last().copied().unwrap_or(1))
}
