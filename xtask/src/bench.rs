//! `cargo xtask bench`: the exit benchmark, rkvm against Linux's KVM.
//!
//! One L1 boot runs the `out-loop` guest (1000 `out`s, each an exit to
//! userspace) on rkvm and on Linux's KVM (kvm-amd on `tcg-svm`, kvm-intel
//! on `bochs-vmx`), in turns: rkvm is loaded for its run and unloaded
//! before Linux's KVM runs, since only one hypervisor can own SVM or VMX on
//! a CPU at a time (Linux 6.1's KVM turns it on only while a VM exists).
//! Each round runs the guest several times on each side with
//! `rkvm-run --repeat`, which times every run and reads each hypervisor's
//! own exit counter from debugfs; a round's sample is its exits divided by
//! its time, which spans enough clock ticks of L1 to be precise. The
//! report gives the median of each side's samples, in exits per second,
//! and their ratio.
//!
//! Under an emulator the absolute numbers measure the emulator (a world
//! switch is thousands of emulated instructions); the ratio and the exit
//! counts are what carry over.

use crate::l1::{self, Job};
use crate::{jobs, paths, platform};
use anyhow::{Context, Result, bail};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// What to measure: `exits` (the exit round trip, with `out-loop`),
    /// `mmu` (the naive and the cached shadow MMU, with `mmu-switch`) or
    /// `linux` (Linux as a guest of rkvm-vmm, on four MMUs; see
    /// `bench_linux.rs`).
    #[arg(default_value = "exits")]
    pub what: String,
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Rounds: samples of each hypervisor, taken in turns (at least 3).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Runs of the guest in each sample.
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// For `linux`: how many processes the guest forks and execs.
    #[arg(long, default_value_t = 100)]
    pub forks: u32,
    /// For `linux`: seconds each configuration may run before it is stopped.
    #[arg(long, default_value_t = 360)]
    pub limit: u64,
    /// For `linux`: the table and picture from a kept L1 log, without booting L1.
    #[arg(long)]
    pub from_log: Option<std::path::PathBuf>,
}

/// The guest: one `out` per exit, nothing else.
const GUEST: &str = "out-loop";

/// One timed run, as `rkvm-run --repeat` reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    pub exits_to_userspace: u64,
    pub hypervisor_exits: Option<u64>,
    pub seconds: f64,
}

/// Parses `rkvm-run: run I of N: E exits to userspace, H hypervisor exits, S s`.
pub fn parse_run(line: &str) -> Option<Run> {
    let (_, rest) = line.split_once(": run ")?;
    let (_, rest) = rest.split_once(": ")?;
    let mut fields = rest.split(", ");
    let exits_to_userspace = fields.next()?.strip_suffix(" exits to userspace")?.parse().ok()?;
    let hypervisor = fields.next()?.strip_suffix(" hypervisor exits")?;
    let hypervisor_exits = hypervisor.parse().ok();
    let seconds: f64 = fields.next()?.strip_suffix(" s")?.trim().parse().ok()?;
    (seconds > 0.0).then_some(Run { exits_to_userspace, hypervisor_exits, seconds })
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The L1 script: Linux's KVM modules stay loaded (they hold nothing
/// without a VM); rkvm is loaded only for its own runs. Each report line
/// is tagged with its side and round.
fn script(rounds: u32, repeat: u32, vendor_modules: &[String]) -> String {
    let mut s = String::from("status=0\n");
    for m in vendor_modules {
        s += &format!("insmod ./{m} || {{ echo 'RKVM-CHECK fail load-{m}: insmod failed'; exit 1; }}\n");
    }
    s += &format!(
        "for i in $(seq {rounds}); do\n\
         \tinsmod ./rkvm.ko || {{ echo 'RKVM-CHECK fail load-rkvm: insmod failed'; exit 1; }}\n\
         \t./rkvm-run --repeat {repeat} --backend rkvm {GUEST} 2>&1 >/dev/null | sed \"s/^/RKVM-BENCH rkvm $i /\"\n\
         \trmmod rkvm\n\
         \t./rkvm-run --repeat {repeat} --backend linux-kvm {GUEST} 2>&1 >/dev/null | sed \"s/^/RKVM-BENCH linux-kvm $i /\"\n\
         done\n"
    );
    s += "echo 'RKVM-CHECK ok bench-ran'\nexit $status\n";
    s
}

pub fn run(args: Args) -> Result<()> {
    if args.rounds < 3 {
        bail!("--rounds {}: give at least 3, for a median", args.rounds);
    }
    match args.what.as_str() {
        "exits" => {}
        "mmu" => return crate::bench_mmu::run(args.platform.as_deref(), args.rounds, args.repeat),
        "linux" => {
            let linux = crate::bench_linux::Args {
                platform: args.platform,
                forks: args.forks,
                limit: args.limit,
                from_log: args.from_log,
            };
            return crate::bench_linux::run(linux);
        }
        other => bail!("`cargo xtask bench {other}`: measure `exits`, `mmu` or `linux`"),
    }
    let platform = platform::select(args.platform.as_deref())?;
    let vendor = platform.vendor().kvm_module();
    let default = crate::kernel::Choice::default();
    let (mut job, kernel) = jobs::module_job("bench", &paths::root().join("kmod"), jobs::kmod_stage()?, &default)?;
    let mut names = Vec::new();
    for module in kernel.kvm_modules(vendor) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        job.files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        names.push(name);
    }
    let job = Job { script: script(args.rounds, args.repeat, &names), cpus: 1, timeout: Duration::from_secs(900), ..job };
    println!(
        "== bench: {GUEST} on rkvm and on Linux's kvm-{vendor}, {} rounds of {} runs each, in turns ({})",
        args.rounds,
        args.repeat,
        platform.name()
    );
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    let done = l1::completion_check(&job, &outcome);
    l1::print_check(&done);
    l1::print_kernel_messages(&outcome);
    let log = std::fs::read_to_string(&outcome.log).with_context(|| format!("reading {}", outcome.log.display()))?;
    let samples = parse_log(&log);
    let rkvm = report("rkvm", samples.iter().filter(|s| s.side == "rkvm"));
    let linux = report(&format!("kvm-{vendor}"), samples.iter().filter(|s| s.side == "linux-kvm"));
    match (rkvm, linux) {
        (Some(a), Some(b)) => println!("  ratio rkvm / Linux KVM, in exits per second (medians): {:.2}", a / b),
        _ => bail!("no timings from L1 (see its console log: {})", outcome.log.display()),
    }
    Ok(())
}

/// One round of one side: the runs it made.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub side: String,
    pub round: u32,
    pub runs: Vec<Run>,
}

impl Sample {
    /// Exits to userspace per second over the whole round.
    pub fn exits_per_second(&self) -> f64 {
        let exits: u64 = self.runs.iter().map(|r| r.exits_to_userspace).sum();
        let seconds: f64 = self.runs.iter().map(|r| r.seconds).sum();
        exits as f64 / seconds
    }
}

/// The samples in L1's console log: lines `RKVM-BENCH SIDE ROUND REPORT`.
pub fn parse_log(log: &str) -> Vec<Sample> {
    let mut samples: Vec<Sample> = Vec::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("RKVM-BENCH ") else { continue };
        let mut parts = rest.splitn(3, ' ');
        let (Some(side), Some(round), Some(report)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(round), Some(run)) = (round.parse(), parse_run(report)) else {
            println!("  (from L1) {rest}");
            continue;
        };
        match samples.iter_mut().find(|s| s.side == side && s.round == round) {
            Some(sample) => sample.runs.push(run),
            None => samples.push(Sample { side: side.to_string(), round, runs: vec![run] }),
        }
    }
    samples
}

/// Prints one side's samples and returns its median exits per second.
fn report<'a>(name: &str, samples: impl Iterator<Item = &'a Sample>) -> Option<f64> {
    let samples: Vec<&Sample> = samples.collect();
    let rates: Vec<f64> = samples.iter().map(|s| s.exits_per_second()).collect();
    let median_rate = median(&rates)?;
    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!("  {name:<10} median {median_rate:>8.0} exits/s; per round: {}", shown.join(" "));
    let counted = |s: &Sample| -> String {
        let each: Vec<String> = s.runs.iter().map(|r| r.hypervisor_exits.map_or("?".into(), |n| n.to_string())).collect();
        each.join(" ")
    };
    let userspace = samples.first().and_then(|s| s.runs.first()).map_or(0, |r| r.exits_to_userspace);
    println!("  {name:<10} exits to userspace per run: {userspace}; exits in its own debugfs, per run:");
    for s in &samples {
        println!("  {:<10}   round {}: {}", "", s.round, counted(s));
    }
    Some(median_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_lines_parse() {
        let line = "rkvm-run: run 1 of 1: 1001 exits to userspace, 1003 hypervisor exits, 0.064004 s";
        let r = parse_run(line).expect("parses");
        assert_eq!((r.exits_to_userspace, r.hypervisor_exits), (1001, Some(1003)));
        assert!((r.seconds - 0.064004).abs() < 1e-9);
        let unknown = parse_run("rkvm-run: run 2 of 3: 1001 exits to userspace, ? hypervisor exits, 0.5 s").expect("parses");
        assert_eq!(unknown.hypervisor_exits, None);
        assert_eq!(parse_run("rkvm-run: guest out-loop: KVM_RUN: ..."), None);
        assert_eq!(parse_run("rkvm-run: run 1 of 1: 1 exits to userspace, 1 hypervisor exits, 0 s"), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn log_lines_group_into_rounds() {
        let log = "RKVM-BENCH rkvm 1 rkvm-run: run 1 of 2: 1000 exits to userspace, 1002 hypervisor exits, 0.1 s\n\
                   noise\n\
                   RKVM-BENCH rkvm 1 rkvm-run: run 2 of 2: 1000 exits to userspace, 1003 hypervisor exits, 0.3 s\n\
                   RKVM-BENCH linux-kvm 1 rkvm-run: run 1 of 2: 1000 exits to userspace, 1009 hypervisor exits, 0.5 s\n";
        let samples = parse_log(log);
        assert_eq!(samples.len(), 2);
        assert_eq!((samples[0].side.as_str(), samples[0].round, samples[0].runs.len()), ("rkvm", 1, 2));
        assert!((samples[0].exits_per_second() - 5000.0).abs() < 1e-6, "2000 exits in 0.4 s");
        assert_eq!(samples[1].runs[0].hypervisor_exits, Some(1009));
    }

    #[test]
    fn the_script_unloads_rkvm_before_linux_kvm_runs() {
        let s = script(3, 5, &["irqbypass.ko".into(), "kvm.ko".into(), "kvm-amd.ko".into()]);
        let rkvm = s.find("--backend rkvm").unwrap();
        let rmmod = s.find("rmmod rkvm").unwrap();
        let linux = s.find("--backend linux-kvm").unwrap();
        assert!(rkvm < rmmod && rmmod < linux);
        assert!(s.contains("seq 3") && s.contains("--repeat 5"));
        assert!(s.find("insmod ./kvm-amd.ko").unwrap() < s.find("for i").unwrap());
    }
}
