//! `cargo xtask bench`: the exit benchmark, rkvm against Linux's KVM.
//!
//! One L1 boot runs the `out-loop` guest (1000 `out`s, each an exit to
//! userspace) on rkvm and on Linux's KVM (kvm-amd on `tcg-svm`, kvm-intel
//! on `bochs-vmx`), in turns: rkvm is loaded for its run and unloaded
//! before Linux's KVM runs, since only one hypervisor can own SVM or VMX on
//! a CPU at a time (Linux 6.1's KVM turns it on only while a VM exists).
//! Each run is timed by `rkvm-run --repeat`, which also reads each
//! hypervisor's own exit counter from debugfs. The report gives the median
//! of each side's runs, in exits per second, and their ratio.
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
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Runs of the guest on each hypervisor (at least 3).
    #[arg(long, default_value_t = 7)]
    pub runs: u32,
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

impl Run {
    pub fn exits_per_second(&self) -> f64 {
        self.exits_to_userspace as f64 / self.seconds
    }
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
/// without a VM); rkvm is loaded only for its own runs.
fn script(runs: u32, vendor_modules: &[String]) -> String {
    let mut s = String::from("status=0\n");
    for m in vendor_modules {
        s += &format!("insmod ./{m} || {{ echo 'RKVM-CHECK fail load-{m}: insmod failed'; exit 1; }}\n");
    }
    s += &format!(
        "for i in $(seq {runs}); do\n\
         \tinsmod ./rkvm.ko || {{ echo 'RKVM-CHECK fail load-rkvm: insmod failed'; exit 1; }}\n\
         \t./rkvm-run --repeat 1 --backend rkvm {GUEST} 2>&1 >/dev/null | sed 's/^/RKVM-BENCH rkvm /'\n\
         \trmmod rkvm\n\
         \t./rkvm-run --repeat 1 --backend linux-kvm {GUEST} 2>&1 >/dev/null | sed 's/^/RKVM-BENCH linux-kvm /'\n\
         done\n"
    );
    s += "echo 'RKVM-CHECK ok bench-ran'\nexit $status\n";
    s
}

pub fn run(args: Args) -> Result<()> {
    if args.runs < 3 {
        bail!("--runs {}: give at least 3, for a median", args.runs);
    }
    let platform = platform::select(args.platform.as_deref())?;
    let vendor = platform.vendor().kvm_module();
    let (mut job, kernel) = jobs::module_job("bench", &paths::root().join("kmod"), jobs::kmod_stage()?, None)?;
    let mut names = Vec::new();
    for module in kernel.kvm_modules(vendor) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        job.files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        names.push(name);
    }
    let job = Job { script: script(args.runs, &names), cpus: 1, timeout: Duration::from_secs(600), ..job };
    println!("== bench: {GUEST} on rkvm and on Linux's kvm-{vendor}, {} runs each, interleaved ({})", args.runs, platform.name());
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    let done = l1::completion_check(&job, &outcome);
    l1::print_check(&done);
    let log = std::fs::read_to_string(&outcome.log).with_context(|| format!("reading {}", outcome.log.display()))?;
    let mut rkvm = Vec::new();
    let mut linux = Vec::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("RKVM-BENCH ") else { continue };
        let (side, report) = rest.split_once(' ').unwrap_or((rest, ""));
        match (side, parse_run(report)) {
            ("rkvm", Some(r)) => rkvm.push(r),
            ("linux-kvm", Some(r)) => linux.push(r),
            _ => println!("  (unparsed) {rest}"),
        }
    }
    if rkvm.is_empty() || linux.is_empty() {
        bail!("no timings from L1 (see its console log: {})", outcome.log.display());
    }
    let a = report("rkvm", &rkvm);
    let b = report(&format!("kvm-{vendor}"), &linux);
    if let (Some(a), Some(b)) = (a, b) {
        println!("  ratio rkvm / Linux KVM, in exits per second (medians): {:.2}", a / b);
    }
    Ok(())
}

/// Prints one side's runs and returns its median exits per second.
fn report(name: &str, runs: &[Run]) -> Option<f64> {
    let rates: Vec<f64> = runs.iter().map(Run::exits_per_second).collect();
    let times: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.seconds * 1000.0)).collect();
    let counted: Vec<String> = runs.iter().map(|r| r.hypervisor_exits.map_or("?".into(), |n| n.to_string())).collect();
    let median_rate = median(&rates)?;
    let median_ms = median(&runs.iter().map(|r| r.seconds * 1000.0).collect::<Vec<_>>())?;
    println!(
        "  {name:<10} median {median_rate:>8.0} exits/s ({median_ms:.1} ms for {} exits to userspace); runs (ms): {}",
        runs[0].exits_to_userspace,
        times.join(" ")
    );
    println!("  {name:<10} exits counted in its debugfs, per run: {}", counted.join(" "));
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
        assert!((r.exits_per_second() - 1001.0 / 0.064004).abs() < 1e-6);
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
    fn the_script_unloads_rkvm_before_linux_kvm_runs() {
        let s = script(3, &["irqbypass.ko".into(), "kvm.ko".into(), "kvm-amd.ko".into()]);
        let rkvm = s.find("--backend rkvm").unwrap();
        let rmmod = s.find("rmmod rkvm").unwrap();
        let linux = s.find("--backend linux-kvm").unwrap();
        assert!(rkvm < rmmod && rmmod < linux);
        assert!(s.contains("seq 3"));
        assert!(s.find("insmod ./kvm-amd.ko").unwrap() < s.find("for i").unwrap());
    }
}
