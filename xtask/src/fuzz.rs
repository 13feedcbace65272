//! `cargo xtask fuzz`: `rkvm-fuzz` in L1 against rkvm.ko from kmod/.
//!
//! One boot: the job script `xtask/l1/jobs-fuzz.sh` loads the module, runs
//! the fuzzer (`testguests/fuzz`) for the time asked, and judges the
//! kernel's side afterwards: its log, the debugfs counters, `rmmod`, and
//! MemFree. `cargo xtask test` runs one minute of it; the long form is
//! `cargo xtask fuzz --minutes 20`. Every run prints its seed, and every
//! round's seed is in the console log: `--seed S` replays from that round.

use crate::kernel::{Choice, L1Kernel};
use crate::l1::{self, Check, Job};
use crate::{jobs, paths, platform};
use anyhow::{Context, Result, bail};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz, in minutes (boot and checks come on top).
    #[arg(long, default_value_t = 20)]
    pub minutes: u64,
    /// The first round's seed (decimal or 0x hex); default: from the clock.
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub kernel: Choice,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("a seed is a number, decimal or 0x hex: {e}"))
}

/// A seed from the clock, for runs not given one.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id())
}

/// The fuzz job: the module, the fuzzer, and the script that judges them.
pub fn job(seconds: u64, seed: u64, choice: &Choice) -> Result<(Job, L1Kernel)> {
    let (mut job, kernel) = jobs::module_job("fuzz", &paths::root().join("kmod"), jobs::kmod_stage()?, choice)?;
    let script = std::fs::read_to_string(paths::l1_sources().join("jobs-fuzz.sh"))?;
    job.script = format!("FUZZ_SECONDS={seconds}\nFUZZ_SEED={seed:#x}\n{script}");
    job.files.retain(|(dest, _, _)| dest == "rkvm/rkvm.ko" || dest == "rkvm/procs.sh");
    job.files.push(("rkvm/rkvm-fuzz".into(), l1::static_binary("rkvm-fuzz")?, 0o755));
    // Boot, the fuzzer's slack for a round under way, and the checks after.
    job.timeout = Duration::from_secs(seconds + 420);
    Ok((job, kernel))
}

/// Fuzzes for `seconds` on the kernel `choice` names and returns the
/// checks (one failing check for the whole job if L1 did not get to the
/// end).
pub fn checks(platform: Option<&str>, seconds: u64, seed: Option<u64>, choice: &Choice) -> Result<Vec<Check>> {
    let platform = platform::select(platform)?;
    let seed = seed.unwrap_or_else(clock_seed);
    let (mut job, kernel) = job(seconds, seed, choice)?;
    if platform.name() == "bochs-vmx" {
        // Bochs's clock counts instructions (10 million a second), and
        // under the fuzzer's load Bochs runs fewer than that: 1,200 s of
        // L1's time took more than 1,620 s of the host's.
        job.timeout = Duration::from_secs(seconds * 3 + 420);
    }
    let debug = if choice.debug_kernel { " --debug-kernel" } else { "" };
    println!("  fuzzing {seconds} s from seed {seed:#x} (replay: cargo xtask fuzz --seed {seed:#x}{debug})");
    let checks = jobs::run_checks(platform.as_ref(), &kernel, &job)?;
    if checks.iter().any(Check::failed) {
        let log = paths::target().join("l1").join("fuzz.log");
        let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        match last_round(&text) {
            Some(round) => println!(
                "  the last round the fuzzer started: {round}; replay from it with `cargo xtask fuzz --seed {}{debug}`",
                round.split_whitespace().nth(3).unwrap_or("SEED").trim_end_matches(':')
            ),
            None => println!("  the fuzzer started no round; see {}", log.display()),
        }
    }
    Ok(checks)
}

/// The last `rkvm-fuzz: round N seed S: KIND` line of a console log, from
/// "round" on.
fn last_round(log: &str) -> Option<&str> {
    const MARK: &str = "rkvm-fuzz: ";
    log.lines().rev().find_map(|l| {
        let at = l.find("rkvm-fuzz: round ")?;
        Some(l[at + MARK.len()..].trim_end())
    })
}

pub fn run(args: Args) -> Result<()> {
    let debug = if args.kernel.debug_kernel { ", on the debug kernel" } else { "" };
    println!("== fuzz: rkvm.ko from kmod/ in L1, {} min{debug}", args.minutes);
    let checks = checks(args.platform.as_deref(), args.minutes * 60, args.seed, &args.kernel)?;
    let failed = checks.iter().filter(|c| c.failed()).count();
    println!("{} passed, {} failed", checks.len() - failed, failed);
    if failed > 0 {
        bail!("the fuzz run found problems (see above and target/l1/fuzz.log)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0xff"), Ok(255));
        assert!(parse_seed("0xzz").is_err() && parse_seed("").is_err());
    }

    #[test]
    fn the_last_round_is_found_in_a_console_log() {
        let log = "[ 1.0] rkvm-fuzz: round 0 seed 0x1: Race\nrkvm-fuzz: round 1 seed 0xab: Kill\r\nRKVM-END rc=1\n";
        assert_eq!(last_round(log), Some("round 1 seed 0xab: Kill"));
        assert_eq!(last_round("nothing here\n"), None);
    }
}
