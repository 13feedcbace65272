//! The command line of `rkvm-run`.

use crate::backend::Backend;
use anyhow::{Context, Result, bail};
use std::time::Duration;

pub const USAGE: &str = "\
usage: rkvm-run [OPTIONS] GUEST    run one guest and print its trace
       rkvm-run [OPTIONS] all      run every built-in guest, printing each trace
       rkvm-run [OPTIONS] check    compare every built-in guest with its golden trace
       rkvm-run [OPTIONS] chaos    run each seeded guest once per seed; say how each run ended
       rkvm-run [OPTIONS] migrate  move each migration guest to a second VM while it runs,
                                   with the dirty log, and compare with an unmoved run
       rkvm-run --list             list the built-in guests (but the seeded ones)
GUEST is the name of a built-in guest or the path of an .asm file (needs nasm).
A seeded guest (header `seed:`) has no golden trace: all, check and --list leave it
out, and chaos classifies each run's end as complete (it ran to its end), stopped
(hlt, or the exit port early), exception-exit, unknown-instruction (the emulator does
not know an instruction), shutdown, or failed (a timeout, a failed entry, another
unknown exit, an error; for a generated program also a known instruction ending the
run, or RIP wrong after one): a failure prints its seed.
options:
  --backend rkvm|linux-kvm   the hypervisor: /dev/rkvm (2006 ABI, the default) or /dev/kvm
  --timeout SECS             stop a guest that has not stopped after SECS seconds (default 10)
  --max-stage N              with all, check and --list: only guests whose first stage is <= N
  --except A,B               with all, check, chaos and migrate: leave out these guests
  --platform P               the L1 platform this runs on (tcg-svm, kvm, bochs-vmx): all, check,
                             migrate and --list leave out the guests whose header says
                             `not-on: P: REASON`, and check reports each as not run, with REASON
  --verbose                  print every exit on stderr
  --repeat N                 run one guest N times, each in a new VM, printing on stderr
                             how long each run took and how many exits it made (N may be 1)
  --seed S                   with GUEST: the seed a seeded guest gets (default 0)
  --program                  with GUEST: print the steps the runner generates for a guest
                             with a generated program (header `program:`), and do not run it
  --seeds N                  with chaos: how many seeds (default 100)
  --first S                  with chaos: the first seed (default 1): seeds S to S+N-1
  --save DIR                 with chaos: keep each run's trace in DIR/GUEST-SEED.trace
  --compare DIR              with chaos: compare each run's trace with the one kept in DIR
                             (by a run on another hypervisor) and print unexplained differences
exit status: 0 if the guest stopped by itself (or every check passed, or no chaos run
failed), 1 on an error or a failed check or chaos run, 3 if a guest timed out.";

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(String),
    All,
    Check,
    Chaos,
    Migrate,
    List,
    Help,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub backend: Backend,
    pub timeout: Duration,
    pub max_stage: Option<u32>,
    pub verbose: bool,
    /// `--repeat N`: run one guest N times and report each run's timing.
    pub repeat: Option<u32>,
    /// `--program`: print the generated program instead of running it.
    pub program: bool,
    /// `--except A,B`: guests that `all`, `check`, `chaos` and `migrate` leave out.
    pub except: Vec<String>,
    /// `--platform P`: the L1 platform, whose guests left out (header
    /// `not-on:`) are not run.
    pub platform: Option<&'static str>,
    /// `--seed S`: the seed of one run of a seeded guest.
    pub seed: Option<u32>,
    /// `--seeds N`: how many seeds `chaos` runs.
    pub seeds: Option<u32>,
    /// `--first S`: the first seed `chaos` runs.
    pub first: Option<u32>,
    /// `--save DIR` and `--compare DIR`: where `chaos` keeps traces, or
    /// finds another hypervisor's.
    pub traces: crate::chaos::Traces,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli> {
    let mut cli = Cli {
        command: Command::Help,
        backend: Backend::Rkvm,
        timeout: Duration::from_secs(10),
        max_stage: None,
        verbose: false,
        repeat: None,
        program: false,
        except: Vec::new(),
        platform: None,
        seed: None,
        seeds: None,
        first: None,
        traces: crate::chaos::Traces::default(),
    };
    let mut command = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value; see rkvm-run --help"));
        match arg.as_str() {
            "--backend" => cli.backend = Backend::parse(&value("--backend")?)?,
            "--timeout" => cli.timeout = Duration::from_secs(positive("--timeout", &value("--timeout")?)?),
            "--max-stage" => cli.max_stage = Some(positive("--max-stage", &value("--max-stage")?)? as u32),
            "--verbose" => cli.verbose = true,
            "--except" => cli.except.extend(value("--except")?.split(',').map(str::to_string)),
            "--platform" => cli.platform = Some(platform(&value("--platform")?)?),
            "--repeat" => cli.repeat = Some(positive("--repeat", &value("--repeat")?)? as u32),
            "--program" => cli.program = true,
            "--seed" => cli.seed = Some(seed("--seed", &value("--seed")?)?),
            "--seeds" => cli.seeds = Some(positive("--seeds", &value("--seeds")?)? as u32),
            "--first" => cli.first = Some(seed("--first", &value("--first")?)?),
            "--save" => cli.traces.save = Some(value("--save")?.into()),
            "--compare" => cli.traces.compare = Some(value("--compare")?.into()),
            "--list" => command = set(command, Command::List)?,
            "--help" | "-h" => command = set(command, Command::Help)?,
            option if option.starts_with("--") => bail!("unknown option `{option}`; see rkvm-run --help"),
            "all" => command = set(command, Command::All)?,
            "check" => command = set(command, Command::Check)?,
            "chaos" => command = set(command, Command::Chaos)?,
            "migrate" => command = set(command, Command::Migrate)?,
            guest => command = set(command, Command::Run(guest.to_string()))?,
        }
    }
    cli.command = command.unwrap_or(Command::Help);
    if cli.program && !matches!(cli.command, Command::Run(_)) {
        bail!("--program prints one guest's program: give its name; see rkvm-run --help");
    }
    if cli.repeat.is_some() && !matches!(cli.command, Command::Run(_)) {
        bail!("--repeat runs one guest: give its name; see rkvm-run --help");
    }
    if cli.seed.is_some() && !matches!(cli.command, Command::Run(_)) {
        bail!("--seed goes with one guest's name (chaos takes --first and --seeds); see rkvm-run --help");
    }
    let traces = cli.traces.save.is_some() || cli.traces.compare.is_some();
    if (cli.seeds.is_some() || cli.first.is_some() || traces) && cli.command != Command::Chaos {
        bail!("--seeds, --first, --save and --compare go with chaos; see rkvm-run --help");
    }
    if let Some(first) = cli.first {
        let count = cli.seeds.unwrap_or(DEFAULT_SEEDS);
        if first.checked_add(count - 1).is_none() {
            bail!("--first {first} with {count} seeds goes past the last seed, {}", u32::MAX);
        }
    }
    Ok(cli)
}

/// How many seeds `chaos` runs without `--seeds`.
pub const DEFAULT_SEEDS: u32 = 100;
/// The first seed `chaos` runs without `--first`.
pub const DEFAULT_FIRST_SEED: u32 = 1;

impl Cli {
    /// The seeds `chaos` runs.
    pub fn seed_range(&self) -> std::ops::RangeInclusive<u32> {
        let first = self.first.unwrap_or(DEFAULT_FIRST_SEED);
        let count = self.seeds.unwrap_or(DEFAULT_SEEDS);
        first..=first.saturating_add(count - 1)
    }
}

/// A seed: a 32-bit number, decimal or `0x` hexadecimal, 0 allowed.
fn seed(name: &str, text: &str) -> Result<u32> {
    match crate::header::parse_number(text).map(u32::try_from) {
        Some(Ok(n)) => Ok(n),
        _ => bail!("{name} `{text}`: give a number from 0 to {}", u32::MAX),
    }
}

/// One of the platforms a header's `not-on:` may name.
fn platform(text: &str) -> Result<&'static str> {
    match crate::header::PLATFORMS.iter().find(|p| **p == text) {
        Some(platform) => Ok(platform),
        None => bail!("unknown platform `{text}`: use {}", crate::header::PLATFORMS.join(", ")),
    }
}

fn set(current: Option<Command>, new: Command) -> Result<Option<Command>> {
    match current {
        None => Ok(Some(new)),
        Some(old) => bail!("give one command, not both {old:?} and {new:?}; see rkvm-run --help"),
    }
}

fn positive(name: &str, text: &str) -> Result<u64> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(n),
        _ => bail!("{name} `{text}`: give a whole number above 0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Cli> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn the_l1_check_command() {
        let cli = parse_line("check --backend linux-kvm --max-stage 6 --timeout 20").unwrap();
        assert_eq!(cli.command, Command::Check);
        assert_eq!((cli.backend, cli.max_stage, cli.timeout), (Backend::LinuxKvm, Some(6), Duration::from_secs(20)));
    }

    #[test]
    fn defaults_run_one_guest_on_rkvm_for_ten_seconds() {
        let cli = parse_line("io-sizes").unwrap();
        assert_eq!(cli.command, Command::Run("io-sizes".into()));
        assert_eq!((cli.backend, cli.timeout, cli.max_stage, cli.verbose), (Backend::Rkvm, Duration::from_secs(10), None, false));
        assert_eq!(parse_line("").unwrap().command, Command::Help);
        assert_eq!(parse_line("--list --verbose").unwrap().command, Command::List);
    }

    #[test]
    fn repeat_runs_one_guest_several_times() {
        let cli = parse_line("--repeat 5 --backend linux-kvm out-loop").unwrap();
        assert_eq!((cli.command, cli.repeat), (Command::Run("out-loop".into()), Some(5)));
        assert_eq!(parse_line("hlt").unwrap().repeat, None);
        let error = parse_line("--repeat 3 check").unwrap_err().to_string();
        assert_eq!(error, "--repeat runs one guest: give its name; see rkvm-run --help");
    }

    #[test]
    fn except_names_guests_to_leave_out() {
        let cli = parse_line("check --except spin,hlt --except ud").unwrap();
        assert_eq!(cli.except, vec!["spin", "hlt", "ud"]);
    }

    #[test]
    fn platform_names_where_the_guests_run() {
        assert_eq!(parse_line("check --platform bochs-vmx").unwrap().platform, Some("bochs-vmx"));
        assert_eq!(parse_line("check").unwrap().platform, None);
        let error = parse_line("check --platform qemu").unwrap_err().to_string();
        assert_eq!(error, "unknown platform `qemu`: use tcg-svm, kvm, bochs-vmx");
    }

    #[test]
    fn chaos_runs_a_range_of_seeds() {
        let cli = parse_line("chaos --backend linux-kvm --seeds 500 --first 0x10").unwrap();
        assert_eq!((&cli.command, cli.seed_range()), (&Command::Chaos, 0x10..=0x10 + 499));
        assert_eq!(parse_line("chaos").unwrap().seed_range(), 1..=100);
        assert_eq!(parse_line("--seed 0 chaos-paging").unwrap().seed, Some(0));
        let error = |line| parse_line(line).unwrap_err().to_string();
        assert!(error("--seeds 5 check").starts_with("--seeds, --first, --save and --compare go with chaos"));
        assert!(error("--save /tmp/x hlt").starts_with("--seeds, --first, --save and --compare go with chaos"));
        let cli = parse_line("chaos --save /tmp/a --compare /tmp/b").unwrap();
        assert_eq!((cli.traces.save.unwrap(), cli.traces.compare.unwrap()), ("/tmp/a".into(), "/tmp/b".into()));
        assert!(error("--seed 5 chaos").starts_with("--seed goes with one guest's name"));
        assert_eq!(error("chaos --first 4294967295 --seeds 2"), "--first 4294967295 with 2 seeds goes past the last seed, 4294967295");
        assert_eq!(parse_line("chaos --first 4294967295 --seeds 1").unwrap().seed_range(), u32::MAX..=u32::MAX);
        assert_eq!(error("chaos --seeds 0"), "--seeds `0`: give a whole number above 0");
        assert_eq!(error("--seed -1 x"), "--seed `-1`: give a number from 0 to 4294967295");
    }

    #[test]
    fn mistakes_are_explained() {
        let error = |line| parse_line(line).unwrap_err().to_string();
        assert_eq!(error("--timeout"), "--timeout needs a value; see rkvm-run --help");
        assert_eq!(error("--timeout 0 hlt"), "--timeout `0`: give a whole number above 0");
        assert_eq!(error("--backend xen hlt"), "unknown backend `xen`: use rkvm or linux-kvm");
        assert_eq!(error("--fast hlt"), "unknown option `--fast`; see rkvm-run --help");
        assert!(error("hlt console").starts_with("give one command"));
    }
}
