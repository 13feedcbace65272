//! `rkvm-fuzz`: a structured fuzzer of `/dev/rkvm`, run in L1 by
//! `cargo xtask fuzz` (and, for a minute, by `cargo xtask test`).
//!
//! The run is a sequence of rounds until the time is up. Each round has a
//! seed, from which everything it does is drawn, and is one of:
//!
//! - an ioctl storm (`ioctls.rs`): every command, and numbers near them,
//!   with random and boundary arguments at good, bad and hostile addresses,
//!   on several VMs, with mappings made, moved and dropped in between;
//! - a race (`race.rs`): threads running guests, changing slots, mapping
//!   and unmapping, using registers and closing the file, all on one VM;
//! - a kill round (`kill.rs`): children doing those things, killed with
//!   SIGKILL at a random moment;
//! - a guest round (`guest.rs`): random bytes run as guest code in real,
//!   32-bit and 64-bit start states with random registers. TR is always a
//!   present, available 32-bit TSS (type 9), never the busy TSS of the
//!   reset state: QEMU's TCG aborts L1 ("invalid tss type") when a nested
//!   guest with a busy TSS takes an exception that switches stacks.
//!
//! The first round's seed is `--seed` (default: from the clock); each next
//! seed is derived from the one before. Every round's seed is printed
//! before it starts, so `--seed S` replays the run from the round whose
//! seed is S (the threads of races and kills interleave differently each
//! time; what they do does not).
//!
//! After every round no VM, vCPU or guest page may be left (the debugfs
//! counters), and the module's answers that hold whatever the arguments
//! must hold. Findings are printed with the round's seed; the run stops at
//! the first round with one. The job script judges the kernel's side: its
//! log, `rmmod`, and MemFree.
//!
//! Output: `rkvm-fuzz: round N seed S: KIND` per round, on the console and
//! in the kernel's log (so that a warning there follows the round that
//! caused it), then `RKVM-INFO` counts and an `RKVM-CHECK` verdict.

mod guest;
mod ioctls;
mod kill;
mod race;
mod rng;
mod stats;
mod sys;

use stats::STATS;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ioctls,
    Race,
    Kill,
    Guests,
}

struct Args {
    seconds: u64,
    seed: u64,
    rounds: u64,
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seconds: 60, seed: clock_seed(), rounds: u64::MAX };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n = parse_number(&value).ok_or_else(|| format!("{flag} wants a number, not {value:?}"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = n,
            "--seed" => args.seed = n,
            "--rounds" => args.rounds = n,
            _ => return Err(format!("usage: rkvm-fuzz [--seconds N] [--seed S] [--rounds N], not {flag:?}")),
        }
    }
    Ok(args)
}

fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rng::mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
}

/// The kind of the round with `seed`, and its generator.
fn round_kind(seed: u64) -> (Kind, rng::Rng) {
    let mut r = rng::Rng::new(seed);
    let kind = match r.below(8) {
        0 | 1 => Kind::Ioctls,
        2 | 3 => Kind::Race,
        4 => Kind::Kill,
        _ => Kind::Guests,
    };
    (kind, r)
}

/// The VMs, vCPUs and guest pages left over, if any.
fn leftovers() -> Option<String> {
    let names = ["vms", "vcpus", "guest_pages"];
    let values: Vec<String> = names
        .iter()
        .filter_map(|n| match sys::counter(n) {
            Ok(0) => None,
            Ok(v) => Some(format!("{n} = {v}")),
            Err(e) => Some(e),
        })
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("rkvm-fuzz: {why}");
            std::process::exit(2);
        }
    };
    sys::install_alarm_handler();
    println!("RKVM-INFO fuzz: seed {:#x}, {} s; replay with --seed {:#x}", args.seed, args.seconds, args.seed);
    let start = Instant::now();
    let budget = Duration::from_secs(args.seconds);
    let (mut seed, mut round) = (args.seed, 0u64);
    let mut kinds = [0u32; 4];
    let mut bad_round = None;
    while start.elapsed() < budget && round < args.rounds {
        let (kind, mut r) = round_kind(seed);
        let line = format!("rkvm-fuzz: round {round} seed {seed:#x}: {kind:?}");
        println!("{line}");
        sys::log_to_kernel(&line);
        let findings_before = STATS.findings().len();
        match kind {
            Kind::Ioctls => ioctls::round(&mut r, 2000),
            Kind::Race => race::round(&mut r, 24),
            Kind::Kill => kill::round(&mut r, 6, seed),
            Kind::Guests => guest::round(&mut r, 24),
        }
        kinds[kind as usize] += 1;
        let mut left = leftovers();
        for _ in 0..20 {
            if left.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            left = leftovers();
        }
        if let Some(left) = left {
            STATS.finding(format!("after the round, with every file closed and every mapping gone: {left}"));
        }
        if STATS.findings().len() > findings_before {
            bad_round = Some((round, seed, kind));
            break;
        }
        seed = rng::mix(seed);
        round += 1;
    }
    println!(
        "RKVM-INFO fuzz: {round} rounds in {:.0?} ({} ioctl storms, {} races, {} kill rounds, {} guest rounds)",
        start.elapsed(),
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3]
    );
    STATS.report();
    match bad_round {
        None => println!("RKVM-CHECK ok fuzz-finds-nothing-from-userspace"),
        Some((n, seed, kind)) => {
            let all = STATS.findings().join(" | ");
            println!(
                "RKVM-CHECK fail fuzz-finds-nothing-from-userspace: round {n} ({kind:?}, seed {seed:#x}): {all}; \
                 replay it with `cargo xtask fuzz --seed {seed:#x}` and read target/l1/fuzz.log"
            );
            std::process::exit(1);
        }
    }
}
